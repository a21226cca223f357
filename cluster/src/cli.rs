//! The `weir` command line: one parser for the binary, the tests and (later) the simulator.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use weir_core::generator::GeneratorConfig;
use weir_core::job::{resolve_input_files, BadRecordPolicy, BidsJobSpec, InputSpec, SpecError};

use crate::run::{absolute, RunOptions};

/// Weir: exactly-once stream processing on timely dataflow.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job on an embedded local cluster (coordinator and slots in this process).
    #[command(subcommand)]
    Run(RunJob),
    /// Run a coordinator: accepts workers and clients over mutual TLS.
    Coordinator(CoordinatorArgs),
    /// Run a worker: offers slots to a coordinator.
    Worker(WorkerArgs),
    /// Submit, list, inspect and cancel jobs on a running cluster.
    #[command(subcommand)]
    Job(JobCommand),
    /// Create TLS certificates for a development cluster.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// Where the cluster's TLS material lives.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Directory with ca.pem and this role's certificate and key (see `weir certs init`).
    #[arg(long, value_name = "DIR")]
    pub certs: PathBuf,
}

/// Flags of `weir coordinator`.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    /// Address to listen on for workers and clients.
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: String,
    /// Checkpoint storage root: a local directory or file:///path (jobs live in <root>/<job-id>/).
    #[arg(long, default_value = "weir-checkpoints", value_name = "URL")]
    pub checkpoint_dir: String,
    /// A worker silent this long is lost; workers give up on a coordinator silent this long
    /// (the coordinator tells them at registration).
    #[arg(long, default_value = "3s", value_parser = parse_positive_duration_ms, value_name = "DURATION")]
    pub heartbeat_timeout: i64,
    /// Restarts of a job in a row without progress (input read and a checkpoint completed)
    /// before it fails.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub restarts: u32,
    /// First restart delay (doubles each restart, at most 10 s).
    #[arg(long, default_value = "500ms", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub restart_backoff: i64,
    /// TLS material.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Flags of `weir worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long, value_name = "ADDR")]
    pub coordinator: String,
    /// Slots this worker offers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=128), value_name = "N")]
    pub slots: u64,
    /// Address for data connections from other workers (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: String,
    /// TLS material.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `weir job …`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job.
    #[command(subcommand)]
    Submit(SubmitJob),
    /// List jobs.
    List(ClientArgs),
    /// Show one job.
    Status {
        /// The job id.
        job_id: String,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        job_id: String,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Jobs `weir job submit` knows.
#[derive(Debug, Subcommand)]
pub enum SubmitJob {
    /// Windowed bid statistics (same flags as `weir run bids`).
    Bids {
        /// The job's flags.
        #[command(flatten)]
        job: BidsArgs,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// How a client reaches the coordinator.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The coordinator's address.
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub coordinator: String,
    /// TLS material.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `weir certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a development CA and coordinator, worker and client certificates in DIR.
    Init {
        /// Output directory.
        dir: PathBuf,
        /// Host names and IP addresses the certificates are valid for.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
    },
}

/// Jobs `weir run` knows.
#[derive(Debug, Subcommand)]
pub enum RunJob {
    /// Windowed bid statistics: per tumbling event-time window and auction, count, sum and max
    /// of prices; late records to DIR/late/, malformed lines to DIR/errors/. Re-running the same
    /// command resumes from the latest complete checkpoint.
    Bids(RunBidsArgs),
}

/// Flags of `weir run bids`: the job's flags plus those of the embedded run.
#[derive(Debug, Clone, Args)]
pub struct RunBidsArgs {
    /// The job.
    #[command(flatten)]
    pub job: BidsArgs,
    /// Progress line interval on stderr; 0 or `off` for none.
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    pub progress: Interval,
}

/// What to do with a malformed input line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnBadRecord {
    /// Write it to DIR/errors/ with file, line and reason, count it, go on.
    Skip,
    /// Stop the job with the line's error.
    Fail,
}

/// Flags of the bids job, shared by `weir run bids` and `weir job submit bids`.
#[derive(Debug, Clone, Args)]
pub struct BidsArgs {
    /// Input CSV file, or directory of *.csv files (one split each), with header
    /// `auction,bidder,price,date_time` (signed 64-bit integers, date_time in epoch ms).
    /// Without it, a deterministic Nexmark-style generator is used (see --events, --seed).
    #[arg(long, value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Output directory: committed part files directly in it, late data in late/, malformed lines in errors/.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Number of slots (parallel single-threaded workers), 1..=128.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub parallelism: usize,
    /// Tumbling window size (units: ms, s, m, h).
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub window: i64,
    /// Bounded out-of-orderness: watermark = max event time seen in a split minus this.
    #[arg(long, default_value = "4s", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub out_of_orderness: i64,
    /// Checkpoint storage: a local directory, file:///path, or memory:// (lost at exit).
    /// Default: DIR/_checkpoints.
    #[arg(long, value_name = "URL")]
    pub checkpoint_dir: Option<String>,
    /// Time between checkpoints; 0 or `off` takes only the final checkpoint at end of input.
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    pub checkpoint_interval: Interval,
    /// A checkpoint that has not completed this long after it was triggered is declined (the
    /// next one covers its epochs; five declined in a row restart the job).
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration_ms, value_name = "DURATION")]
    pub checkpoint_timeout: i64,
    /// Complete checkpoints to keep (older ones are deleted).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub retained_checkpoints: u64,
    /// What to do with a malformed input line.
    #[arg(long, value_enum, default_value_t = OnBadRecord::Skip)]
    pub on_bad_record: OnBadRecord,
    /// Generator only: number of events.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub events: u64,
    /// Generator only: seed.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Generator only: number of distinct auctions (keys).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub auctions: u64,
    /// Throttle the sources to at most this many events per second in total (unlimited by default).
    #[arg(long, value_name = "EVENTS_PER_SECOND", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
}

/// An optional interval (`off` or `0` is none).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Interval(pub Option<Duration>);

/// Parses `500ms`, `10s`, `2m`, `1h` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: i64 =
        digits.parse().map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 10s, 2m or 1h"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("`{text}` has no unit; write e.g. {text}s or {text}ms")),
        other => return Err(format!("unknown unit `{other}` in `{text}`; use ms, s, m or h")),
    };
    value.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration that must be positive.
fn parse_positive_duration_ms(text: &str) -> Result<i64, String> {
    match parse_duration_ms(text)? {
        0 => Err(format!("`{text}` must be more than zero")),
        ms => Ok(ms),
    }
}

fn parse_interval(text: &str) -> Result<Interval, String> {
    if text == "off" || text == "0" {
        return Ok(Interval(None));
    }
    let ms = parse_duration_ms(text)?;
    Ok(Interval((ms > 0).then(|| Duration::from_millis(ms as u64))))
}

impl CoordinatorArgs {
    /// The coordinator's options (loads its TLS material).
    pub fn to_options(&self) -> Result<crate::server::CoordinatorOptions, crate::tls::TlsError> {
        Ok(crate::server::CoordinatorOptions {
            listen: self.listen.clone(),
            tls: crate::tls::TlsContext::load(&self.tls.certs, crate::tls::Role::Coordinator)?,
            checkpoint_dir: self.checkpoint_dir.clone(),
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout as u64),
            restarts_max: self.restarts,
            restart_backoff: Duration::from_millis(self.restart_backoff as u64),
        })
    }
}

impl WorkerArgs {
    /// The worker's options (loads its TLS material).
    pub fn to_options(&self) -> Result<crate::worker::WorkerOptions, crate::tls::TlsError> {
        Ok(crate::worker::WorkerOptions {
            coordinator: self.coordinator.clone(),
            slots: self.slots as usize,
            listen: self.listen.clone(),
            tls: crate::tls::TlsContext::load(&self.tls.certs, crate::tls::Role::Worker)?,
        })
    }
}

impl BidsArgs {
    /// The validated job and run options these flags describe.
    pub fn to_options(&self) -> Result<RunOptions, SpecError> {
        let input = match &self.input {
            Some(path) => InputSpec::Files(resolve_input_files(path)?.iter().map(|p| absolute(p)).collect()),
            None => {
                let mut config = GeneratorConfig::new(self.events, self.seed);
                config.auctions = self.auctions;
                InputSpec::Generator(config)
            }
        };
        let spec = BidsJobSpec {
            input,
            output_dir: absolute(&self.output),
            parallelism: self.parallelism,
            window_ms: self.window,
            out_of_orderness_ms: self.out_of_orderness,
            on_bad_record: match self.on_bad_record {
                OnBadRecord::Skip => BadRecordPolicy::Skip,
                OnBadRecord::Fail => BadRecordPolicy::Fail,
            },
        };
        spec.validate()?;
        let mut options = RunOptions::new(spec);
        options.checkpoint_location = self.checkpoint_dir.clone();
        options.checkpoint_interval = self.checkpoint_interval.0;
        options.checkpoint_timeout = Duration::from_millis(self.checkpoint_timeout as u64);
        options.retained_checkpoints = self.retained_checkpoints as usize;
        options.rate_limit = self.rate;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert!(parse_duration_ms("10").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("ten").is_err());
        assert!(parse_duration_ms("5d").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_interval("off"), Ok(Interval(None)));
    }
}
