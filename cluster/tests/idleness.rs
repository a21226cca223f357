//! A silent split holds every window back — unless the source has an idleness timeout.
//!
//! Method: a job whose source has two splits: one reads its records at once, the other stays
//! silent for a second of processing time (as a quiet Kafka partition would) and then yields
//! records from early event time. Without idleness the windows wait for the silent split and
//! count its records; with a 100 ms idleness timeout the busy split's end lets the windows fire
//! without it, and its records, now behind the source's watermark, go to the late output —
//! none is lost.
#![allow(clippy::disallowed_methods)] // tests inspect real directories with std::fs

use std::io;
use std::path::Path;
use std::time::Duration;

use weir_cluster::run::{run_job, RunOptions};
use weir_core::job::{BadRecordPolicy, ParamDef, ParamKind, Params};
use weir_core::rt;
use weir_dataflow::api::BuildError;
use weir_dataflow::sink::ErrorRow;
use weir_dataflow::source::{Position, Source, SplitReader};
use weir_dataflow::{AggregateFunction, JobBuilder, JobDef, JobRegistry, TumblingEventTimeWindows, WatermarkStrategy};

/// Split 0: 100 records at event times 0..100 000 (ms), at once. Split 1: silent for a second,
/// then 10 records at event times 0..10.
struct Quiet;

struct QuietSplit {
    split: usize,
    opened: rt::Instant,
}

impl Source for Quiet {
    type Record = (i64, i64);
    type Reader = QuietSplit;
    fn splits(&self, _parallelism: usize) -> Vec<String> {
        vec!["busy".into(), "quiet".into()]
    }
    fn open(&self, split: usize, _splits: usize, _position: &mut Position) -> io::Result<QuietSplit> {
        Ok(QuietSplit { split, opened: rt::now() })
    }
}

impl SplitReader for QuietSplit {
    type Record = (i64, i64);
    fn read(
        &mut self,
        position: &mut Position,
        _max: usize,
        mut each: impl FnMut((i64, i64)),
        _bad: impl FnMut(ErrorRow),
    ) -> io::Result<(usize, bool)> {
        let (count, spacing) = if self.split == 0 { (100, 1_000) } else { (10, 1) };
        if self.split == 1 && rt::now().saturating_duration_since(self.opened) < Duration::from_secs(1) {
            return Ok((0, false));
        }
        for index in position.offset..count {
            each((self.split as i64, index as i64 * spacing));
        }
        let read = (count - position.offset) as usize;
        position.offset = count;
        Ok((read, true))
    }
}

struct Count;

impl AggregateFunction<(i64, i64)> for Count {
    type Acc = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, count: &mut u64, _record: &(i64, i64)) {
        *count += 1;
    }
}

fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let mut strategy = WatermarkStrategy::bounded_out_of_orderness(5, |r: &(i64, i64)| r.1);
    if params.bool("idleness")? {
        strategy = strategy.with_idleness(100);
    }
    let records = job.source("quiet", Quiet, strategy);
    records.errors.discard();
    let counts = records
        .records
        .key_by(|_: &(i64, i64)| 0i64)
        .window(TumblingEventTimeWindows::of(10_000))
        .uid("count")
        .aggregate(Count, |_: &i64, _w, count: u64| count);
    counts.results.sink_serde_csv("counts", output.join("counts"), "count");
    counts.late.sink_serde_csv("late", output.join("late"), "split,time");
    Ok(())
}

fn run(output: &Path, idleness: bool) -> (Vec<u64>, usize) {
    let mut registry = JobRegistry::new();
    let params = vec![
        ParamDef::required("output", ParamKind::Path, "output"),
        ParamDef::new("idleness", ParamKind::Bool, "false", "idleness timeout of 100 ms"),
    ];
    registry.register(JobDef::new("quiet", "a silent split", params, build));
    let given = [("output", output.display().to_string()), ("idleness", idleness.to_string())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let spec = registry.get("quiet").unwrap().spec(&given, 1, BadRecordPolicy::Skip).unwrap();
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(20));
    run_job(&registry, options).expect("runs");
    let read = |dir: &str| -> Vec<String> {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(output.join(dir)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with(['.', '_']) && entry.path().is_file() {
                lines.extend(std::fs::read_to_string(entry.path()).unwrap().lines().skip(1).map(str::to_string));
            }
        }
        lines
    };
    let counts = read("counts").iter().map(|line| line.parse().unwrap()).collect();
    (counts, read("late").len())
}

#[test]
fn a_silent_split_holds_windows_back_unless_idleness_lets_them_go() {
    let root = tempfile::tempdir().unwrap();
    let (counts, late) = run(&root.path().join("held"), false);
    assert_eq!((counts.iter().sum::<u64>(), late), (110, 0), "without idleness the window waits for the silent split");
    let (counts, late) = run(&root.path().join("idle"), true);
    assert_eq!(
        (counts.iter().sum::<u64>(), late),
        (100, 10),
        "with idleness the window fires without it, and its records are late, not lost"
    );
}
