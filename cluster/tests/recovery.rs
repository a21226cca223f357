//! Recovery tests: a job stopped dead at any point and run again commits exactly what an
//! uninterrupted run commits.
//!
//! Method: the embedded cluster is stopped at chosen points through `RunOptions::crash_at`
//! (when a checkpoint is triggered, i.e. with output staged but not committed; after some
//! slots' state is uploaded but before `_metadata`; after `_metadata` but before any sink
//! commits), which leaves on disk exactly what a `kill -9` at that moment leaves. The same
//! job then runs again and the committed output is compared with the sequential reference.
//! Corrupt and truncated checkpoints must be detected and skipped for an older one. The
//! last test runs the real `weir` binary and kills it with SIGKILL at several moments.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::run as run_bids_job;
use common::*;
use weir_cluster::coordinator::{CrashPoint, JobError};
use weir_cluster::run::RunError;
use weir_core::checkpoint::{CheckpointStore, METADATA};

fn crash_then_resume(parallelism: usize, crash: CrashPoint, expect_restored: u64) {
    let root = tempfile::tempdir().unwrap();
    let mut options = generated_job(400_000, 7, &root.path().join("out"), parallelism);
    options.checkpoint_interval = Some(Duration::from_millis(5));
    options.rate_limit = Some(500_000);
    let mut crashing = options.clone();
    crashing.crash_at = Some(crash);
    match run_bids_job(crashing) {
        Err(RunError::Job(JobError::Crashed(point))) => assert_eq!(point, crash),
        other => panic!("expected a crash at {crash:?}, got {other:?}"),
    }
    let summary = run_bids_job(options.clone()).expect("resumed job finishes");
    assert_eq!(summary.restored_from, Some(expect_restored), "resumed from the wrong checkpoint after {crash:?}");
    assert!(summary.records_read < 400_000, "a resumed job must not re-read everything");
    assert_exactly_once(&options);
    // Running the finished job again changes nothing.
    let again = run_bids_job(options.clone()).expect("finished job reruns");
    assert!(again.already_finished);
    assert_exactly_once(&options);
}

#[test]
fn crash_with_output_staged_but_not_committed() {
    for parallelism in [1, 2, 4] {
        crash_then_resume(parallelism, CrashPoint::AtTrigger { checkpoint: 4 }, 3);
    }
}

#[test]
fn crash_during_checkpoint_upload() {
    crash_then_resume(1, CrashPoint::DuringUpload { checkpoint: 3, slots: 0 }, 2);
    crash_then_resume(2, CrashPoint::DuringUpload { checkpoint: 3, slots: 1 }, 2);
    crash_then_resume(4, CrashPoint::DuringUpload { checkpoint: 5, slots: 3 }, 4);
}

#[test]
fn crash_between_metadata_and_commit() {
    for parallelism in [1, 2, 4] {
        crash_then_resume(parallelism, CrashPoint::BeforeCommit { checkpoint: 3 }, 3);
    }
}

#[test]
fn repeated_crashes_converge() {
    let root = tempfile::tempdir().unwrap();
    let mut options = generated_job(500_000, 11, &root.path().join("out"), 2);
    options.checkpoint_interval = Some(Duration::from_millis(5));
    options.rate_limit = Some(500_000);
    let mut crashes = 0;
    for (i, checkpoint) in [2u64, 4, 5, 8, 9].into_iter().enumerate() {
        let mut crashing = options.clone();
        crashing.crash_at = Some(match i % 3 {
            0 => CrashPoint::AtTrigger { checkpoint },
            1 => CrashPoint::DuringUpload { checkpoint, slots: 1 },
            _ => CrashPoint::BeforeCommit { checkpoint },
        });
        match run_bids_job(crashing) {
            Err(RunError::Job(JobError::Crashed(_))) => crashes += 1,
            Ok(_) => break,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(crashes >= 3, "too few crashes happened ({crashes}) for the test to mean anything");
    run_bids_job(options.clone()).expect("finishes");
    assert_exactly_once(&options);
}

fn corrupt_newest_checkpoint(corrupt: impl Fn(&CheckpointStore, u64)) {
    let root = tempfile::tempdir().unwrap();
    let mut options = generated_job(400_000, 3, &root.path().join("out"), 2);
    options.checkpoint_interval = Some(Duration::from_millis(5));
    // At most 500 000 records/s: the input lasts long enough (0.8 s) for checkpoint 6 to come
    // before its end on a loaded machine (at 2 M/s it sometimes did not).
    options.rate_limit = Some(500_000);
    let mut crashing = options.clone();
    crashing.crash_at = Some(CrashPoint::AtTrigger { checkpoint: 6 });
    assert!(matches!(run_bids_job(crashing), Err(RunError::Job(JobError::Crashed(_)))));
    // Checkpoints 3, 4, 5 are retained and epochs through 5 are committed.
    let job_id = options.spec.fingerprint();
    let store = CheckpointStore::open(&root.path().join("out/_checkpoints").display().to_string(), &job_id).unwrap();
    corrupt(&store, 5);
    let summary = run_bids_job(options.clone()).expect("falls back and finishes");
    assert_eq!(summary.restored_from, Some(4), "must fall back to the previous complete checkpoint");
    assert_exactly_once(&options);
}

fn put(store: &CheckpointStore, checkpoint: u64, name: &str, content: Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(store.object_store().put(&store.object_path(checkpoint, name), content.into())).unwrap();
}

fn get(store: &CheckpointStore, checkpoint: u64, name: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        store.object_store().get(&store.object_path(checkpoint, name)).await.unwrap().bytes().await.unwrap().to_vec()
    })
}

/// The name of slot `slot`'s state file in `checkpoint`, as its `_metadata` lists it (state
/// files are named by the attempt that uploaded them).
fn state_file(store: &CheckpointStore, checkpoint: u64, slot: usize) -> String {
    let metadata = weir_core::checkpoint::decode_metadata(&get(store, checkpoint, METADATA)).unwrap();
    let prefix = format!("slot-{slot}-");
    metadata.files.into_iter().map(|file| file.name).find(|name| name.starts_with(&prefix)).expect("listed")
}

#[test]
fn corrupt_state_file_falls_back() {
    corrupt_newest_checkpoint(|store, checkpoint| {
        let name = state_file(store, checkpoint, 1);
        let mut state = get(store, checkpoint, &name);
        let middle = state.len() / 2;
        state[middle] ^= 0x55;
        put(store, checkpoint, &name, state);
    });
}

#[test]
fn truncated_metadata_falls_back() {
    corrupt_newest_checkpoint(|store, checkpoint| {
        let metadata = get(store, checkpoint, METADATA);
        put(store, checkpoint, METADATA, metadata[..metadata.len() / 2].to_vec());
    });
}

#[test]
fn missing_state_file_falls_back() {
    corrupt_newest_checkpoint(|store, checkpoint| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let name = state_file(store, checkpoint, 0);
        runtime.block_on(store.object_store().delete(&store.object_path(checkpoint, &name))).unwrap();
    });
}

/// The real binary, killed with SIGKILL mid-run, again and again, then run to completion.
#[test]
fn sigkill_of_the_weir_process_loses_and_duplicates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let events: u64 = 2_000_000;
    let args = |output: &std::path::Path| {
        vec![
            "run".to_string(),
            "bids".into(),
            "--output".into(),
            output.display().to_string(),
            "--events".into(),
            events.to_string(),
            "--seed".into(),
            "5".into(),
            "--parallelism".into(),
            "2".into(),
            "--checkpoint-interval".into(),
            "20ms".into(),
            "--rate".into(),
            "1000000".into(),
            "--progress".into(),
            "off".into(),
        ]
    };
    let mut kills = 0;
    for delay_ms in [150u64, 300, 450, 600, 750] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args(&output))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weir starts");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            // SIGKILL: no destructor, no flush, no cleanup runs.
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 2, "the job finished too fast for the kills to mean anything ({kills} kills)");
    let status = Command::new(env!("CARGO_BIN_EXE_weir")).args(args(&output)).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    assert_exactly_once(&generated_job(events, 5, &output, 2));
}
