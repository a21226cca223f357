//! A sink that is not a file plugs into the same exactly-once protocol.
//!
//! Method: a job writes a collection through a custom two-phase sink that keeps its staged and
//! committed epochs in memory (a stand-in for a database or a broker: no directory, no file
//! fence). The job is stopped dead after checkpoint 2's `_metadata` is written and before any
//! commit, then run again: its recovery must commit what checkpoint 2 covers, drop what the
//! dead attempt staged after it, and the committed rows must be the input, each exactly once.
#![allow(clippy::disallowed_methods)] // tests arrange real directories with std::fs

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use weir_cluster::coordinator::{CrashPoint, JobError};
use weir_cluster::run::{run_job, RunError, RunOptions};
use weir_core::job::{BadRecordPolicy, ParamDef, ParamKind, Params};
use weir_core::time::Epoch;
use weir_dataflow::api::BuildError;
use weir_dataflow::sink::{Durability, EpochCommitter, FenceHold, Recovery, TransactionalSink};
use weir_dataflow::{CollectionSource, JobBuilder, JobDef, JobRegistry, Record, WatermarkStrategy};

/// Staged rows by (slot, attempt, epoch); committed rows by (slot, epoch).
#[derive(Debug, Default)]
struct Table {
    staged: BTreeMap<(usize, u64, Epoch), Vec<i64>>,
    committed: BTreeMap<(usize, Epoch), Vec<i64>>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

struct MemorySink {
    slot: usize,
    attempt: u64,
    pending: BTreeMap<Epoch, Vec<i64>>,
}

impl TransactionalSink<Record<i64>> for MemorySink {
    fn write(&mut self, epoch: Epoch, rows: &[Record<i64>]) -> io::Result<()> {
        self.pending.entry(epoch).or_default().extend(rows.iter().map(|r| r.value));
        Ok(())
    }
    fn prepare(&mut self, through: Epoch) -> io::Result<Durability> {
        let mut table = table().lock().unwrap();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > through {
                break;
            }
            let (epoch, rows) = entry.remove_entry();
            table.staged.entry((self.slot, self.attempt, epoch)).or_default().extend(rows);
        }
        Ok(Durability::done())
    }
    fn describe(&self) -> String {
        "memory table".into()
    }
}

#[derive(Debug)]
struct MemoryCommitter;

impl EpochCommitter for MemoryCommitter {
    fn prepare_destination(&self) -> io::Result<()> {
        Ok(())
    }
    fn commit(&self, slot: usize, attempt: u64, through: Epoch, _fence: &FenceHold) -> io::Result<usize> {
        let mut table = table().lock().unwrap();
        let keys: Vec<_> =
            table.staged.keys().copied().filter(|&(s, a, e)| s == slot && a == attempt && e <= through).collect();
        for key in &keys {
            let rows = table.staged.remove(key).unwrap();
            table.committed.insert((slot, key.2), rows);
        }
        Ok(keys.len())
    }
    fn recover(&self, slot: usize, epoch: Epoch, attempt: u64, fence: &FenceHold) -> io::Result<Recovery> {
        let committed = self.commit(slot, attempt, epoch, fence)?;
        let mut table = table().lock().unwrap();
        let before = table.staged.len();
        table.staged.retain(|&(s, _, e), _| s != slot || e <= epoch);
        let aborted = before - table.staged.len();
        let before = table.committed.len();
        table.committed.retain(|&(s, e), _| s != slot || e <= epoch);
        let retracted = before - table.committed.len();
        Ok(Recovery { committed, aborted, retracted })
    }
    fn directory(&self) -> Option<&Path> {
        None
    }
}

fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
    let source = job.source(
        "numbers",
        CollectionSource::new((0..20_000i64).collect()),
        WatermarkStrategy::bounded_out_of_orderness(0, |n: &i64| *n),
    );
    source.errors.discard();
    source.records.map(|n| n * 2).sink(
        "memory",
        |slot, attempt| MemorySink { slot, attempt, pending: BTreeMap::new() },
        Arc::new(MemoryCommitter),
    );
    Ok(())
}

#[test]
fn a_custom_transactional_sink_is_exactly_once_through_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let mut registry = JobRegistry::new();
    registry.register(JobDef::new(
        "memory",
        "a custom sink",
        vec![ParamDef::new("x", ParamKind::UInt, "0", "unused")],
        build,
    ));
    let spec = registry.get("memory").unwrap().spec(&BTreeMap::new(), 1, BadRecordPolicy::Skip).unwrap();
    let mut options = RunOptions::new(spec);
    options.checkpoint_location = Some(root.path().join("checkpoints").display().to_string());
    options.checkpoint_interval = Some(Duration::from_millis(2));
    options.rate_limit = Some(200_000);
    let mut crashing = options.clone();
    crashing.crash_at = Some(CrashPoint::BeforeCommit { checkpoint: 2 });
    match run_job(&registry, crashing) {
        Err(RunError::Job(JobError::Crashed(_))) => {}
        other => panic!("expected a crash, got {other:?}"),
    }
    let summary = run_job(&registry, options).expect("resumes");
    assert_eq!(summary.restored_from, Some(2));
    let table = table().lock().unwrap();
    assert!(table.staged.is_empty(), "nothing left staged: {:?}", table.staged.keys().collect::<Vec<_>>());
    let mut rows: Vec<i64> = table.committed.values().flatten().copied().collect();
    rows.sort();
    assert_eq!(rows, (0..20_000i64).map(|n| n * 2).collect::<Vec<_>>(), "every row once");
}
