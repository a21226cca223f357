//! `bids`: windowed bid statistics — per tumbling event-time window and auction, the count,
//! sum and maximum of prices; late bids and malformed lines to their own outputs.
//!
//! Written on the public DataStream API like any user's job; the stage-1 engine hand-wrote
//! it. Its output is unchanged: the same rows, the same late records (a bid is late iff its
//! window's end is `<=` its split's watermark when it is read), the same error rows.

use weir_core::bid::write_integer;
use weir_core::bid::{parse_bid_line, BID_HEADER};
use weir_core::generator::{BidGenerator, GeneratorConfig};
use weir_core::time::EventTime;
use weir_core::Bid;
use weir_dataflow::api::BuildError;
use weir_dataflow::sink::CsvRow;
use weir_dataflow::source::{Generator, GeneratorSource};
use weir_dataflow::{
    AggregateFunction, FileSource, JobBuilder, JobDef, LineFormat, ParamDef, ParamKind, Params, TimeWindow,
    TumblingEventTimeWindows, WatermarkStrategy,
};

/// The job's definition.
pub fn job() -> JobDef {
    JobDef::new(
        "bids",
        "windowed bid statistics: per tumbling event-time window and auction, count, sum and max of prices; \
         late bids to OUTPUT/late/, malformed lines to OUTPUT/errors/",
        vec![
            ParamDef::optional(
                "input",
                ParamKind::Files { extension: "csv" },
                "input CSV file, or directory of *.csv files (one split each), with header \
                 `auction,bidder,price,date_time`; without it, a deterministic Nexmark-style generator",
            ),
            ParamDef::required(
                "output",
                ParamKind::Path,
                "output directory: committed part files in it, late data in late/, malformed lines in errors/",
            ),
            ParamDef::new("window", ParamKind::Duration, "10s", "tumbling window size"),
            ParamDef::new(
                "out-of-orderness",
                ParamKind::Duration,
                "4s",
                "bounded out-of-orderness: watermark = max event time seen in a split minus this",
            ),
            ParamDef::new("events", ParamKind::UInt, "1000000", "generator only: number of events"),
            ParamDef::new("seed", ParamKind::UInt, "0", "generator only: seed"),
            ParamDef::new("auctions", ParamKind::UInt, "10000", "generator only: number of distinct auctions (keys)"),
        ],
        build,
    )
}

fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let window_ms = params.duration_ms("window")?;
    let out_of_orderness_ms = params.duration_ms("out-of-orderness")?;
    if window_ms <= 0 {
        return Err(BuildError::Job(format!("--window must be positive, got {window_ms} ms")));
    }
    let timestamps = |bid: &Bid| bid.date_time;
    let bids = if params.has("input") {
        let source = FileSource::new(params.files("input")?, BidCsv);
        job.source("bids", source, WatermarkStrategy::bounded_out_of_orderness(out_of_orderness_ms, timestamps))
    } else {
        let mut config = GeneratorConfig::new(params.u64("events")?, params.u64("seed")?);
        config.auctions = params.u64("auctions")?;
        if config.auctions == 0 {
            return Err(BuildError::Job("--auctions must be at least 1".into()));
        }
        let source = GeneratorSource::new(Bids::new(config));
        job.source("bids", source, WatermarkStrategy::bounded_out_of_orderness(out_of_orderness_ms, timestamps))
    };
    let windows = bids
        .records
        .key_by(|bid: &Bid| bid.auction)
        .window(TumblingEventTimeWindows::of(window_ms))
        .uid("bids-per-auction")
        .aggregate(BidStats, |&auction, window: TimeWindow, stats: Stats| WindowResult {
            window_start: window.start,
            window_end: window.end,
            auction,
            bids: stats.bids,
            sum_price: stats.sum_price,
            max_price: stats.max_price,
        });
    windows.results.sink_csv("results", &output);
    windows.late.sink_csv("late", output.join("late"));
    bids.errors.sink_csv("errors", output.join("errors"));
    Ok(())
}

/// The bid CSV format: `auction,bidder,price,date_time`, signed 64-bit integers.
pub struct BidCsv;

impl LineFormat for BidCsv {
    type Record = Bid;
    fn header(&self) -> Option<&str> {
        Some(BID_HEADER)
    }
    #[inline]
    fn parse(&self, line: &[u8]) -> Result<Bid, String> {
        parse_bid_line(line).map_err(|bad| bad.to_string())
    }
}

/// The bid generator as a source: split `s` of `n` generates the global indices `s, s + n, …`.
pub struct Bids {
    config: GeneratorConfig,
    generator: BidGenerator,
}

impl Bids {
    /// Generates `config`'s workload.
    pub fn new(config: GeneratorConfig) -> Self {
        Bids { config, generator: config.generator() }
    }
}

impl Generator for Bids {
    type Record = Bid;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        self.config.split_len(split, splits)
    }
    #[inline]
    fn generate(&self, split: usize, splits: usize, position: u64) -> Bid {
        self.generator.bid(GeneratorConfig::global_index(split, splits, position))
    }
}

/// Count, sum and maximum of prices.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Number of bids.
    pub bids: u64,
    /// Sum of prices (128-bit: cannot overflow for any input this engine can read).
    pub sum_price: i128,
    /// Highest price.
    pub max_price: i64,
}

/// Aggregates bids into [`Stats`].
pub struct BidStats;

impl AggregateFunction<Bid> for BidStats {
    type Acc = Stats;
    #[inline]
    fn create_accumulator(&self) -> Stats {
        Stats { bids: 0, sum_price: 0, max_price: i64::MIN }
    }
    #[inline]
    fn add(&self, stats: &mut Stats, bid: &Bid) {
        stats.bids += 1;
        stats.sum_price += bid.price as i128;
        stats.max_price = stats.max_price.max(bid.price);
    }
}

/// One result row.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct WindowResult {
    /// Window start (inclusive), ms.
    pub window_start: EventTime,
    /// Window end (exclusive), ms.
    pub window_end: EventTime,
    /// The auction.
    pub auction: i64,
    /// Number of bids.
    pub bids: u64,
    /// Sum of prices.
    pub sum_price: i128,
    /// Highest price.
    pub max_price: i64,
}

impl CsvRow for WindowResult {
    const HEADER: &'static str = "window_start,window_end,auction,bids,sum_price,max_price";
    #[inline]
    fn write_csv(&self, out: &mut Vec<u8>) {
        write_integer(self.window_start, out);
        out.push(b',');
        write_integer(self.window_end, out);
        out.push(b',');
        write_integer(self.auction, out);
        out.push(b',');
        write_integer(self.bids, out);
        out.push(b',');
        // 128-bit formatting divides by a 128-bit constant; sums nearly always fit 64 bits.
        match i64::try_from(self.sum_price) {
            Ok(sum) => write_integer(sum, out),
            Err(_) => write_integer(self.sum_price, out),
        }
        out.push(b',');
        write_integer(self.max_price, out);
        out.push(b'\n');
    }
}

/// A bids job's parameters, typed: for tests, the simulator and benchmarks, which build specs
/// without flags and compute the job's reference from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BidsParams {
    /// Input files (`None`: the generator).
    pub input: Option<Vec<std::path::PathBuf>>,
    /// The generator's workload (events, seed and auctions are parameters; the rest defaults).
    pub generator: GeneratorConfig,
    /// The output directory.
    pub output: std::path::PathBuf,
    /// Window size.
    pub window_ms: i64,
    /// Bounded out-of-orderness.
    pub out_of_orderness_ms: i64,
}

impl BidsParams {
    /// A generated job writing to `output`, with the default window and bound.
    pub fn generated(events: u64, seed: u64, output: &std::path::Path) -> Self {
        BidsParams {
            input: None,
            generator: GeneratorConfig::new(events, seed),
            output: weir_core::job::absolute(output),
            window_ms: 10_000,
            out_of_orderness_ms: 4_000,
        }
    }

    /// A job over `files` writing to `output`.
    pub fn files(
        files: Vec<std::path::PathBuf>,
        output: &std::path::Path,
        window_ms: i64,
        out_of_orderness_ms: i64,
    ) -> Self {
        BidsParams {
            input: Some(files.iter().map(|f| weir_core::job::absolute(f)).collect()),
            generator: GeneratorConfig::new(0, 0),
            output: weir_core::job::absolute(output),
            window_ms,
            out_of_orderness_ms,
        }
    }

    /// The job spec at `parallelism`.
    pub fn spec(&self, parallelism: usize, on_bad_record: weir_core::job::BadRecordPolicy) -> weir_core::job::JobSpec {
        let mut given = std::collections::BTreeMap::new();
        let mut set = |name: &str, value: String| given.insert(name.to_string(), value);
        set("output", self.output.display().to_string());
        set("window", format!("{}ms", self.window_ms));
        set("out-of-orderness", format!("{}ms", self.out_of_orderness_ms));
        set("events", self.generator.events.to_string());
        set("seed", self.generator.seed.to_string());
        set("auctions", self.generator.auctions.to_string());
        let mut spec = job().spec(&given, parallelism, on_bad_record).expect("typed bids parameters are valid");
        if let Some(files) = &self.input {
            // Already resolved: recorded as the canonical file list.
            let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let mut values = spec.params.values().clone();
            values.insert("input".into(), serde_json::to_string(&list).expect("strings serialize"));
            spec.params = Params::from_canonical(values);
        }
        spec
    }

    /// The parameters of a bids spec.
    pub fn from_spec(spec: &weir_core::job::JobSpec) -> Result<Self, BuildError> {
        assert_eq!(spec.job, "bids", "not a bids job");
        let params = &spec.params;
        let mut generator = GeneratorConfig::new(params.u64("events")?, params.u64("seed")?);
        generator.auctions = params.u64("auctions")?;
        Ok(BidsParams {
            input: if params.has("input") { Some(params.files("input")?) } else { None },
            generator,
            output: params.path("output")?,
            window_ms: params.duration_ms("window")?,
            out_of_orderness_ms: params.duration_ms("out-of-orderness")?,
        })
    }
}
