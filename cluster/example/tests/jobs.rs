//! The example jobs against their sequential references, at parallelism 1, 2 and 4.
//!
//! Method: each job runs on the embedded cluster (the user's registry, as the binary has it)
//! over generated input with frequent checkpoints; its committed output is read back and
//! compared, as a sorted multiset of typed records, with what the independent reference in
//! `weir_example::reference` computes from the same input splits. The binary itself is run
//! once, to show that a user's crate gets the whole CLI.
#![allow(clippy::disallowed_methods)] // tests inspect real directories with std::fs

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use weir_cluster::coordinator::{CrashPoint, JobError};
use weir_cluster::run::{run_job, RunError, RunOptions, RunSummary};
use weir_core::job::BadRecordPolicy;
use weir_dataflow::source::Generator;
use weir_example::dedup::{Dedup, Payment, Payments, PAYMENT_HEADER};
use weir_example::enrichment::{Click, ClickGenerator, EnrichedClick, ProfileGenerator, Streams};
use weir_example::fraud::{Alert, Transaction, Transactions};
use weir_example::reference::{self, Input};
use weir_example::sessions::Session;

fn registry() -> weir_dataflow::JobRegistry {
    let mut registry = weir_cluster::jobs::builtin();
    weir_example::register(&mut registry);
    registry.register(two_pipelines_job());
    registry
}

/// A job of two unrelated pipelines, each `dedup`'s on the same generated payments, the second
/// with event time an hour earlier: their sources never meet, so neither waits for the other.
fn two_pipelines_job() -> weir_dataflow::JobDef {
    use weir_dataflow::source::{GeneratorSource, WatermarkStrategy};
    use weir_dataflow::{JobDef, ParamDef, ParamKind};
    const HOUR_MS: i64 = 3_600_000;
    JobDef::new(
        "two-pipelines",
        "test job: two unrelated dedup pipelines, the second an hour behind in event time",
        vec![
            ParamDef::required("output", ParamKind::Path, "output directory"),
            ParamDef::new("events", ParamKind::UInt, "1000", "deliveries per pipeline"),
        ],
        |job, params| {
            let output = params.path("output")?;
            let events = params.u64("events")?;
            let now = WatermarkStrategy::bounded_out_of_orderness(1_000, |p: &Payment| p.time);
            let earlier = WatermarkStrategy::bounded_out_of_orderness(1_000, |p: &Payment| p.time - HOUR_MS);
            let pipelines = [
                ("now", job.source("now", GeneratorSource::new(Payments::new(events, 10, 0)?), now)),
                ("earlier", job.source("earlier", GeneratorSource::new(Payments::new(events, 10, 0)?), earlier)),
            ];
            for (name, payments) in pipelines {
                let unique = payments.records.key_by(|p: &Payment| p.id).process(name, Dedup::new(HOUR_MS));
                unique.results.sink_serde_csv(&format!("{name}-payments"), output.join(name), PAYMENT_HEADER);
                unique.late.sink_serde_csv(
                    &format!("{name}-late"),
                    output.join(format!("{name}-late")),
                    PAYMENT_HEADER,
                );
                payments.errors.sink_csv(&format!("{name}-errors"), output.join(format!("{name}-errors")));
            }
            Ok(())
        },
    )
}

fn options(job: &str, params: &[(&str, String)], parallelism: usize) -> RunOptions {
    options_on(job, params, parallelism, &Backend::Memory)
}

/// Where a test keeps keyed state: in memory, or in RocksDB under a directory.
enum Backend {
    Memory,
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    RocksDb(std::path::PathBuf),
}

fn options_on(job: &str, params: &[(&str, String)], parallelism: usize, backend: &Backend) -> RunOptions {
    let registry = registry();
    let given = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let mut spec = registry.get(job).unwrap().spec(&given, parallelism, BadRecordPolicy::Skip).unwrap();
    let local_state_dir = match backend {
        Backend::Memory => None,
        Backend::RocksDb(dir) => {
            spec.state_backend = weir_core::job::StateBackendKind::RocksDb;
            Some(dir.clone())
        }
    };
    let mut options = RunOptions::new(spec);
    if let Some(dir) = local_state_dir {
        options.local_state_dir = dir;
    }
    options.checkpoint_interval = Some(Duration::from_millis(5));
    // Slow enough for dozens of checkpoints in every run.
    options.rate_limit = Some(400_000);
    options
}

/// The committed rows of a sink directory (files not hidden), parsed.
fn committed_csv<T: DeserializeOwned + Ord>(dir: &Path) -> Vec<T> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(['.', '_']) || path.is_dir() {
            continue;
        }
        let mut reader = csv::Reader::from_path(&path).unwrap();
        rows.extend(reader.deserialize::<T>().map(Result::unwrap));
    }
    rows.sort();
    rows
}

fn committed_json<T: DeserializeOwned + Ord>(dir: &Path) -> Vec<T> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(['.', '_']) || path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        rows.extend(text.lines().map(|line| serde_json::from_str::<T>(line).unwrap()));
    }
    rows.sort();
    rows
}

fn generated<G: Generator>(generator: &G, splits: usize) -> Vec<Vec<G::Record>> {
    (0..splits)
        .map(|split| (0..generator.split_len(split, splits)).map(|i| generator.generate(split, splits, i)).collect())
        .collect()
}

#[test]
fn fraud_alerts_equal_the_reference_at_every_parallelism() {
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("out");
        let params = [
            ("output", output.display().to_string()),
            ("events", "60000".to_string()),
            ("accounts", "40".to_string()),
            ("seed", "7".to_string()),
        ];
        let summary = run_job(&registry(), options("fraud", &params, parallelism)).expect("runs");
        assert!(summary.coordinator.checkpoints_completed > 1, "checkpoints were taken");
        let generator = Transactions::new(60_000, 40, 7).unwrap();
        let (alerts, late) = reference::fraud(&generated(&generator, parallelism), 2_000);
        assert!(alerts.len() > 10 && !late.is_empty(), "the input exercises alerts and lateness");
        assert_eq!(committed_csv::<Alert>(&output.join("alerts")), alerts, "alerts at parallelism {parallelism}");
        let small = reference::fraud_small(&generated(&generator, parallelism), 2_000);
        assert!(!small.is_empty());
        assert_eq!(
            committed_csv::<Transaction>(&output.join("small")),
            small,
            "side output at parallelism {parallelism}"
        );
        assert_eq!(committed_csv::<Transaction>(&output.join("late")), late, "late at parallelism {parallelism}");
        // Generated input has one split per slot, so each parallelism reads other splits:
        // the reference is computed per run. Over files, one reference serves all (below).
    }
}

/// Runs `job` until it crashes at checkpoint 3 (after its `_metadata`, before any commit: the
/// state of every operator must restore exactly), then again to the end.
fn crash_and_resume(job: &str, params: &[(&str, String)], parallelism: usize, backend: &Backend) {
    let mut options = options_on(job, params, parallelism, backend);
    // Slower still: checkpoint 3 must come before the end of the input even when checkpoints
    // are slow (a loaded machine; the mix job once finished after 2 of them at 400 000/s, and
    // on RocksDB after 2 at 50 000/s beside the SIGKILL test, and once after 2 at 20 000/s).
    options.rate_limit = Some(20_000);
    // A run whose input ended first proves nothing about restoring: it is run again from
    // nothing (its output and checkpoints removed), reading at half the rate. So is one whose
    // input ended just as checkpoint 3 was taken (its last): the resumed run finds the job
    // finished and only commits.
    let output = params.iter().find(|(name, _)| *name == "output").map(|(_, dir)| Path::new(dir)).expect("output");
    let mut rate = 20_000;
    loop {
        let mut crashing = options.clone();
        crashing.rate_limit = Some(rate);
        crashing.crash_at = Some(CrashPoint::BeforeCommit { checkpoint: 3 });
        let ended_after = match run_job(&registry(), crashing) {
            Err(RunError::Job(JobError::Crashed(_))) => {
                let summary = run_job(&registry(), options.clone()).expect("the resumed job finishes");
                assert_eq!(summary.restored_from, Some(3), "{job} resumed from checkpoint 3");
                if !summary.already_finished {
                    return;
                }
                3
            }
            Ok(summary)
                if summary.coordinator.checkpoints_completed < 3 && summary.coordinator.checkpoints_declined == 0 =>
            {
                summary.coordinator.checkpoints_completed
            }
            other => panic!("{job}: expected a crash, got {other:?}"),
        };
        assert!(rate > 1_000, "{job}: the input ended after {ended_after} checkpoints even at {rate} records/s");
        eprintln!("{job}: the input ended after {ended_after} checkpoints; again at {} records/s", rate / 2);
        std::fs::remove_dir_all(output).unwrap();
        rate /= 2;
    }
}

#[test]
fn every_example_job_restores_its_state_exactly_after_a_crash() {
    example_jobs_restore_exactly(&Backend::Memory);
}

/// The same on RocksDB: process functions, a time to live, interval joins, broadcast state, a
/// count window, event-time windows, sessions and a window join keep their state on disk and
/// restore it exactly.
#[cfg(feature = "rocksdb")]
#[test]
fn every_example_job_restores_its_state_exactly_after_a_crash_on_rocksdb() {
    let local = tempfile::tempdir().unwrap();
    example_jobs_restore_exactly(&Backend::RocksDb(local.path().to_path_buf()));
    // Every instance went with its slot: what is left is empty directories at most.
    let files = walk(local.path()).into_iter().filter(|path| path.is_file()).count();
    assert_eq!(files, 0, "RocksDB instances left files behind");
}

/// RocksDB checkpoints are incremental: each slot uploads only the SST files no earlier
/// checkpoint uploaded and names the rest again; a damaged shared file invalidates the
/// checkpoint that names it — found by the coordinator if its size is wrong, by the slot that
/// downloads it if only its content is — and the restore falls back to an older one;
/// retention and the restore's sweep leave exactly the shared files the remaining checkpoints
/// name.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_checkpoints_upload_only_new_files_and_fall_back_past_a_damaged_one() {
    use std::collections::BTreeSet;
    use weir_core::checkpoint::{decode_metadata, CheckpointMetadata};

    let root = tempfile::tempdir().unwrap();
    let local = root.path().join("local");
    let checkpoints = root.path().join("checkpoints");
    let out = root.path().join("fraud");
    let params = [
        ("output", out.display().to_string()),
        ("events", "40000".into()),
        ("accounts", "25".into()),
        ("seed", "9".into()),
    ];
    let mut options = options_on("fraud", &params, 2, &Backend::RocksDb(local.clone()));
    options.checkpoint_location = Some(checkpoints.display().to_string());
    options.rate_limit = Some(50_000);
    let mut crashing = options.clone();
    crashing.crash_at = Some(CrashPoint::BeforeCommit { checkpoint: 6 });
    match run_job(&registry(), crashing) {
        Err(RunError::Job(JobError::Crashed(_))) => {}
        other => panic!("expected a crash, got {other:?}"),
    }
    let job_dir = std::fs::read_dir(&checkpoints).unwrap().next().unwrap().unwrap().path();
    let metadata = |id: u64| -> Option<CheckpointMetadata> {
        let raw = std::fs::read(job_dir.join(format!("chk-{id}")).join("_metadata")).ok()?;
        Some(decode_metadata(&raw).unwrap())
    };
    let shared_dir = job_dir.join("shared");
    let (newest, before) = (metadata(6).unwrap(), metadata(5).expect("checkpoint 5 is retained"));
    let oldest = metadata(4).expect("checkpoint 4 is retained");
    assert!(!newest.shared.is_empty(), "a RocksDB checkpoint names shared files");
    for file in newest.shared.iter().chain(&before.shared) {
        assert_eq!(std::fs::metadata(shared_dir.join(&file.name)).unwrap().len(), file.size, "{}", file.name);
    }
    assert!(
        newest.shared.iter().any(|file| before.shared.contains(file)),
        "checkpoint 6 names files checkpoint 5 uploaded, without uploading them again"
    );
    let own = newest.shared.iter().find(|file| !before.shared.contains(file)).expect("checkpoint 6 uploaded files");
    // Damaged: shorter than `_metadata` says.
    std::fs::write(shared_dir.join(&own.name), b"damaged").unwrap();
    // Damaged at its size: one byte changed.
    let own = before.shared.iter().find(|file| !oldest.shared.contains(file)).expect("checkpoint 5 uploaded files");
    let path = shared_dir.join(&own.name);
    let mut content = std::fs::read(&path).unwrap();
    let middle = content.len() / 2;
    content[middle] ^= 0xff;
    std::fs::write(&path, content).unwrap();

    // The coordinator skips checkpoint 6; a slot finds checkpoint 5's file damaged, deletes
    // checkpoint 5 and fails; the next run restores checkpoint 4.
    match run_job(&registry(), options.clone()) {
        Err(RunError::Job(JobError::SlotFailed { message, .. })) => {
            assert!(message.contains(&own.name) && message.contains("checkpoint 5 is damaged"), "{message}")
        }
        other => panic!("expected the damaged checkpoint 5 to fail its restore, got {other:?}"),
    }
    assert!(metadata(6).is_none() && metadata(5).is_none(), "damaged checkpoints are deleted");
    let summary = run_job(&registry(), options).expect("the resumed job finishes");
    assert_eq!(summary.restored_from, Some(4), "the restore fell back past both damaged checkpoints");
    let (alerts, late) = reference::fraud(&generated(&Transactions::new(40_000, 25, 9).unwrap(), 2), 2_000);
    assert_eq!(committed_csv::<Alert>(&out.join("alerts")), alerts);
    assert_eq!(committed_csv::<Transaction>(&out.join("late")), late);

    let mut named = BTreeSet::new();
    for entry in std::fs::read_dir(&job_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(metadata) = name.strip_prefix("chk-").and_then(|id| metadata(id.parse().unwrap())) {
            named.extend(metadata.shared.into_iter().map(|file| file.name));
        }
    }
    let present: BTreeSet<String> = std::fs::read_dir(&shared_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!named.is_empty());
    assert_eq!(present, named, "the shared directory holds exactly what the remaining checkpoints name");
    assert_eq!(walk(&local).into_iter().filter(|path| path.is_file()).count(), 0, "instances left files behind");
}

/// A process killed with SIGKILL mid-run leaves its RocksDB instances on the node's disk; run
/// again, it restores their SST files from there (local recovery: here the store's copy of one
/// of them is damaged, so only the local copy can restore the newest checkpoint) and the
/// output is exactly the reference's.
#[cfg(feature = "rocksdb")]
#[test]
fn a_killed_process_restores_its_rocksdb_files_from_local_disk() {
    use weir_core::checkpoint::{decode_metadata, FileEntry};

    let root = tempfile::tempdir().unwrap();
    let (out, local, checkpoints) = (root.path().join("out"), root.path().join("local"), root.path().join("chk"));
    let binary = env!("CARGO_BIN_EXE_weir-example");
    let command = || {
        let mut command = std::process::Command::new(binary);
        command
            .args(["run", "fraud", "--events", "100000", "--accounts", "25", "--seed", "9", "--parallelism", "2"])
            .args([
                "--state-backend",
                "rocksdb",
                "--checkpoint-interval",
                "10ms",
                "--rate",
                "40000",
                "--progress",
                "off",
            ])
            .arg("--output")
            .arg(&out)
            .arg("--local-state-dir")
            .arg(&local)
            .arg("--checkpoint-dir")
            .arg(&checkpoints);
        command
    };
    let complete = || -> Vec<(u64, std::path::PathBuf)> {
        let Ok(jobs) = std::fs::read_dir(&checkpoints) else { return Vec::new() };
        let mut found = Vec::new();
        for job in jobs {
            for entry in std::fs::read_dir(job.unwrap().path()).unwrap() {
                let path = entry.unwrap().path();
                let id = path.file_name().unwrap().to_string_lossy().strip_prefix("chk-").map(|id| id.parse().unwrap());
                if let (Some(id), true) = (id, path.join("_metadata").exists()) {
                    found.push((id, path));
                }
            }
        }
        found.sort();
        found
    };
    let mut first = command().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let pid = first.id().to_string();
    let signal =
        |name: &str| assert!(std::process::Command::new("kill").args([name, &pid]).status().unwrap().success());
    // A file the newest checkpoint names that the process has on disk now, with its content.
    let left_on_disk = || {
        let (newest, dir) = complete().pop()?;
        let metadata = decode_metadata(&std::fs::read(dir.join("_metadata")).ok()?).ok()?;
        let files = walk(&local);
        let shared = metadata.shared.iter().find(|file| {
            let local_name = file.name.rsplit('-').next().unwrap();
            files.iter().any(|path| {
                path.file_name().unwrap() == local_name
                    && std::fs::read(path).is_ok_and(|content| {
                        content.len() as u64 == file.size && FileEntry::of("", &content).crc32 == file.crc32
                    })
            })
        })?;
        Some((newest, dir, shared.clone()))
    };
    let started = std::time::Instant::now();
    // Frozen (SIGSTOP) while looking, so that what is found is what the kill leaves.
    let (newest, dir, shared) = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint to kill after within a minute");
        assert!(first.try_wait().unwrap().is_none(), "the job ended before it could be killed");
        if complete().last().is_some_and(|(id, _)| *id >= 5) {
            signal("-STOP");
            if let Some(found) = left_on_disk() {
                break found;
            }
            signal("-CONT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let stored = dir.parent().unwrap().join("shared").join(&shared.name);
    let mut content = std::fs::read(&stored).unwrap();
    content[0] ^= 0xff;
    std::fs::write(&stored, content).unwrap();

    let again = command().output().unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains(&format!("restored from:      checkpoint {newest}\n")), "{stdout}");
    let (alerts, late) = reference::fraud(&generated(&Transactions::new(100_000, 25, 9).unwrap(), 2), 2_000);
    assert_eq!(committed_csv::<Alert>(&out.join("alerts")), alerts);
    assert_eq!(committed_csv::<Transaction>(&out.join("late")), late);
    let left = walk(&local).into_iter().filter(|path| path.is_file()).count();
    assert_eq!(left, 0, "the restore removed what the killed process left, and the run its own");
}

#[cfg(feature = "rocksdb")]
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

fn example_jobs_restore_exactly(backend: &Backend) {
    let parallelism = 2;
    let root = tempfile::tempdir().unwrap();
    let out = |job: &str| root.path().join(job);

    let params = [
        ("output", out("fraud").display().to_string()),
        ("events", "40000".into()),
        ("accounts", "25".into()),
        ("seed", "9".into()),
    ];
    crash_and_resume("fraud", &params, parallelism, backend);
    let (alerts, late) = reference::fraud(&generated(&Transactions::new(40_000, 25, 9).unwrap(), parallelism), 2_000);
    assert_eq!(committed_csv::<Alert>(&out("fraud").join("alerts")), alerts);
    assert_eq!(committed_csv::<Transaction>(&out("fraud").join("late")), late);

    let streams = Streams::new(30_000, 40, 4).unwrap();
    let params = [
        ("output", out("enrichment").display().to_string()),
        ("events", "30000".into()),
        ("users", "40".into()),
        ("seed", "4".into()),
        ("profile-ttl", "5s".into()),
    ];
    crash_and_resume("enrichment", &params, parallelism, backend);
    let (enriched, late) = reference::enrichment(
        &generated(&ProfileGenerator(streams.clone()), parallelism),
        &generated(&ClickGenerator(streams.clone()), parallelism),
        1_000,
        5_000,
    );
    assert_eq!(committed_csv::<EnrichedClick>(&out("enrichment").join("clicks")), enriched);
    assert_eq!(committed_json::<Input>(&out("enrichment").join("late")), late);

    let params = [
        ("output", out("sessions").display().to_string()),
        ("events", "30000".into()),
        ("users", "40".into()),
        ("seed", "4".into()),
    ];
    crash_and_resume("sessions", &params, parallelism, backend);
    let (sessions, late) = reference::sessions(&generated(&ClickGenerator(streams), parallelism), 1_000, 2_000);
    assert_eq!(committed_csv::<Session>(&out("sessions").join("sessions")), sessions);
    assert_eq!(committed_csv::<Click>(&out("sessions").join("late")), late);

    let params = [
        ("output", out("dedup").display().to_string()),
        ("events", "40000".into()),
        ("retry-percent", "20".into()),
        ("seed", "6".into()),
        ("ttl", "400ms".into()),
    ];
    crash_and_resume("dedup", &params, parallelism, backend);
    let (unique, late) = reference::dedup(&generated(&Payments::new(40_000, 20, 6).unwrap(), parallelism), 1_000, 400);
    assert_eq!(committed_csv::<Payment>(&out("dedup").join("payments")), unique);
    assert_eq!(committed_csv::<Payment>(&out("dedup").join("late")), late);

    use weir_example::mix::{AlarmGenerator, Pair, ReadingGenerator, Sensors};
    let params = [
        ("output", out("mix").display().to_string()),
        ("events", "20000".into()),
        ("sensors", "20".into()),
        ("seed", "8".into()),
    ];
    crash_and_resume("mix", &params, parallelism, backend);
    use weir_example::mix::{Reading, WindowFigure};
    let sensors = Sensors::new(20_000, 20, 8).unwrap();
    let expected = reference::mix(
        &generated(&ReadingGenerator(sensors.clone()), parallelism),
        &generated(&AlarmGenerator(sensors), parallelism),
        1_000,
    );
    assert_eq!(committed_csv::<Pair>(&out("mix").join("interval-join")), expected.interval);
    assert_eq!(committed_csv::<Pair>(&out("mix").join("window-join")), expected.window_join);
    assert_eq!(
        committed_csv::<Pair>(&out("mix").join("flagged")),
        expected.flagged,
        "broadcast state restored to every slot"
    );
    assert_eq!(committed_csv::<(i64, i64)>(&out("mix").join("count-window")), expected.count_window);
    assert_eq!(
        committed_csv::<Reading>(&out("mix").join("batched")),
        expected.batched,
        "buffers and processing-time timers restored"
    );
    // Windows (on RocksDB: in its keyed store, on disk), late records and allowed lateness.
    let figures = |name: &str| committed_csv::<WindowFigure>(&out("mix").join(name));
    let late = |name: &str| committed_json::<Reading>(&out("mix").join(name));
    assert_eq!(figures("sliding"), expected.sliding, "sliding windows");
    assert_eq!(late("late-sliding"), expected.sliding_late);
    assert_eq!(figures("cumulate"), expected.cumulate, "cumulating windows");
    assert_eq!(late("late-cumulate"), expected.cumulate_late);
    assert_eq!(figures("lenient"), expected.lenient, "allowed lateness");
    assert_eq!(late("late-lenient"), expected.lenient_late);
}

#[test]
fn fraud_over_files_is_the_same_at_every_parallelism() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let generator = Transactions::new(20_000, 15, 3).unwrap();
    let splits = generated(&generator, 3);
    for (index, split) in splits.iter().enumerate() {
        let mut text = String::from("account,amount_cents,time\n");
        for t in split {
            text.push_str(&format!("{},{},{}\n", t.account, t.amount_cents, t.time));
        }
        if index == 1 {
            text.push_str("7,not-a-number,1\n");
        }
        std::fs::write(input.join(format!("part-{index}.csv")), text).unwrap();
    }
    let (alerts, late) = reference::fraud(&splits, 2_000);
    for parallelism in [1, 2, 4] {
        let output = root.path().join(format!("out-{parallelism}"));
        let params = [("output", output.display().to_string()), ("input", input.display().to_string())];
        run_job(&registry(), options("fraud", &params, parallelism)).expect("runs");
        assert_eq!(committed_csv::<Alert>(&output.join("alerts")), alerts, "parallelism {parallelism}");
        assert_eq!(committed_csv::<Transaction>(&output.join("late")), late, "parallelism {parallelism}");
        let errors = std::fs::read_dir(output.join("errors")).unwrap().count();
        assert!(errors > 1, "the malformed line is committed to errors/");
    }
}

#[test]
fn enrichment_equals_the_reference_at_every_parallelism() {
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("out");
        let params = [
            ("output", output.display().to_string()),
            ("events", "30000".to_string()),
            ("users", "60".to_string()),
            ("seed", "11".to_string()),
            ("profile-ttl", "20s".to_string()),
        ];
        run_job(&registry(), options("enrichment", &params, parallelism)).expect("runs");
        let streams = Streams::new(30_000, 60, 11).unwrap();
        let profiles = generated(&ProfileGenerator(streams.clone()), parallelism);
        let clicks = generated(&ClickGenerator(streams), parallelism);
        let (enriched, late) = reference::enrichment(&profiles, &clicks, 1_000, 20_000);
        assert!(enriched.iter().any(|c| c.country == "unknown") && enriched.iter().any(|c| c.country != "unknown"));
        assert_eq!(committed_csv::<EnrichedClick>(&output.join("clicks")), enriched, "parallelism {parallelism}");
        assert_eq!(committed_json::<Input>(&output.join("late")), late, "parallelism {parallelism}");
    }
}

#[test]
fn dedup_equals_the_reference_at_every_parallelism() {
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("out");
        let params = [
            ("output", output.display().to_string()),
            ("events", "40000".to_string()),
            ("retry-percent", "30".to_string()),
            ("seed", "5".to_string()),
            ("ttl", "400ms".to_string()),
        ];
        run_job(&registry(), options("dedup", &params, parallelism)).expect("runs");
        let deliveries = generated(&Payments::new(40_000, 30, 5).unwrap(), parallelism);
        let (unique, late) = reference::dedup(&deliveries, 1_000, 400);
        let on_time = deliveries.iter().flatten().count() - late.len();
        assert!(unique.len() < on_time * 8 / 10 && !late.is_empty(), "the input has retries and late payments");
        let (remembered_forever, _) = reference::dedup(&deliveries, 1_000, 3_600_000);
        assert!(unique.len() > remembered_forever.len(), "some retries come after the time to live");
        assert_eq!(committed_csv::<Payment>(&output.join("payments")), unique, "parallelism {parallelism}");
        assert_eq!(committed_csv::<Payment>(&output.join("late")), late, "parallelism {parallelism}");
    }
}

/// No source of the run got further ahead of the slowest source of its group than the
/// alignment's drift, plus one batch of a generated split (its records are 2 ms of event time
/// apart, and a source checks the bound between batches) and a second for the receivers' report.
fn assert_lead_within_alignment(summary: &RunSummary) {
    let batch_span_ms = weir_dataflow::source::BATCH_RECORDS as i64 * 2;
    let allowed = weir_dataflow::alignment::MAX_DRIFT_MS + batch_span_ms + 1_000;
    assert!(summary.watermark_lead_max_ms > 0, "the lead was measured");
    assert!(
        summary.watermark_lead_max_ms <= allowed,
        "a source ran {} ms of event time ahead of the slowest of its group (allowed {allowed})",
        summary.watermark_lead_max_ms
    );
}

/// Unthrottled at 2 slots, a slot whose records all wait for the other slot's watermark has
/// time to spare and its source ran ahead — a million records (300 MB) waiting in the stateful
/// operators. Watermark alignment keeps every source within the drift (plus the batch it was
/// reading) of the slowest.
#[test]
fn sources_run_no_further_ahead_of_the_slowest_than_the_alignment_allows() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let params =
        [("output", output.display().to_string()), ("events", "600000".to_string()), ("ttl", "1h".to_string())];
    let mut options = options("dedup", &params, 2);
    options.rate_limit = None;
    options.checkpoint_interval = Some(Duration::from_millis(100));
    let summary = run_job(&registry(), options).expect("runs");
    assert_lead_within_alignment(&summary);
    let deliveries = generated(&Payments::new(600_000, 10, 0).unwrap(), 2);
    let (unique, _) = reference::dedup(&deliveries, 1_000, 3_600_000);
    assert_eq!(committed_csv::<Payment>(&output.join("payments")), unique);
}

/// Alignment holds a source back only for the sources its records meet: here the second
/// pipeline's source is an hour behind in event time, and the first must not wait for it
/// (before sources were grouped, it waited until the second had finished: an hour's lead).
#[test]
fn unrelated_pipelines_do_not_hold_each_other_back() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let params = [("output", output.display().to_string()), ("events", "200000".to_string())];
    let mut options = options("two-pipelines", &params, 2);
    options.rate_limit = None;
    let registry = registry();
    let plan = weir_dataflow::plan_job(registry.get("two-pipelines").unwrap(), &options.spec).unwrap();
    assert_ne!(plan.sources[0].alignment_group, plan.sources[1].alignment_group, "two groups: {:?}", plan.sources);
    let summary = run_job(&registry, options).expect("runs");
    assert_lead_within_alignment(&summary);
    let deliveries = generated(&Payments::new(200_000, 10, 0).unwrap(), 2);
    let (unique, late) = reference::dedup(&deliveries, 1_000, 3_600_000);
    for name in ["now", "earlier"] {
        assert_eq!(committed_csv::<Payment>(&output.join(name)), unique, "{name}");
        assert_eq!(committed_csv::<Payment>(&output.join(format!("{name}-late"))), late, "{name}");
    }
}

#[test]
fn sessions_equal_the_reference_at_every_parallelism() {
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("out");
        let params = [
            ("output", output.display().to_string()),
            ("events", "30000".to_string()),
            ("users", "300".to_string()),
            ("seed", "5".to_string()),
            ("gap", "900ms".to_string()),
        ];
        run_job(&registry(), options("sessions", &params, parallelism)).expect("runs");
        let clicks = generated(&ClickGenerator(Streams::new(30_000, 300, 5).unwrap()), parallelism);
        let (sessions, late) = reference::sessions(&clicks, 1_000, 900);
        assert!(sessions.iter().any(|s| s.clicks > 1) && sessions.iter().any(|s| s.clicks == 1), "sessions merge");
        assert_eq!(committed_csv::<Session>(&output.join("sessions")), sessions, "parallelism {parallelism}");
        assert_eq!(committed_csv::<Click>(&output.join("late")), late, "parallelism {parallelism}");
    }
}

#[test]
fn the_mix_of_windows_and_joins_equals_the_reference_at_every_parallelism() {
    use weir_example::mix::{AlarmGenerator, Pair, Reading, ReadingGenerator, Sensors, WindowFigure};
    use weir_example::reference::Side;
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("out");
        let params = [
            ("output", output.display().to_string()),
            ("events", "20000".to_string()),
            ("sensors", "30".to_string()),
            ("seed", "3".to_string()),
        ];
        run_job(&registry(), options("mix", &params, parallelism)).expect("runs");
        let sensors = Sensors::new(20_000, 30, 3).unwrap();
        let expected = reference::mix(
            &generated(&ReadingGenerator(sensors.clone()), parallelism),
            &generated(&AlarmGenerator(sensors), parallelism),
            1_000,
        );
        let context = format!("parallelism {parallelism}");
        assert!(!expected.interval.is_empty() && !expected.window_join.is_empty() && !expected.sliding_late.is_empty());
        assert_eq!(committed_csv::<WindowFigure>(&output.join("sliding")), expected.sliding, "sliding, {context}");
        assert_eq!(committed_json::<Reading>(&output.join("late-sliding")), expected.sliding_late, "{context}");
        assert_eq!(committed_csv::<WindowFigure>(&output.join("cumulate")), expected.cumulate, "cumulate, {context}");
        assert!(
            expected.lenient.len()
                > expected.lenient.iter().map(|f| (f.sensor, f.start)).collect::<std::collections::BTreeSet<_>>().len(),
            "late updates happen"
        );
        assert_eq!(
            committed_csv::<WindowFigure>(&output.join("lenient")),
            expected.lenient,
            "allowed lateness, {context}"
        );
        assert_eq!(committed_json::<Reading>(&output.join("late-lenient")), expected.lenient_late, "{context}");
        assert!(!expected.count_window.is_empty() && !expected.spikes.is_empty() && !expected.global_late.is_empty());
        assert_eq!(
            committed_csv::<(i64, i64)>(&output.join("count-window")),
            expected.count_window,
            "count window, {context}"
        );
        assert_eq!(committed_csv::<(i64, i64)>(&output.join("spikes")), expected.spikes, "custom trigger, {context}");
        assert_eq!(committed_json::<Reading>(&output.join("late-count-window")), expected.global_late, "{context}");
        assert_eq!(committed_json::<Reading>(&output.join("late-spikes")), expected.global_late, "{context}");
        assert_eq!(committed_csv::<Reading>(&output.join("batched")), expected.batched, "batched, {context}");
        assert_eq!(committed_json::<Reading>(&output.join("late-batched")), expected.global_late, "{context}");
        assert!(!expected.flagged.is_empty());
        assert_eq!(committed_csv::<Pair>(&output.join("flagged")), expected.flagged, "broadcast state, {context}");
        assert_eq!(
            committed_json::<weir_example::reference::Either2>(&output.join("late-flagged")),
            expected.flagged_late,
            "{context}"
        );
        assert_eq!(committed_json::<Reading>(&output.join("late-cumulate")), expected.cumulate_late, "{context}");
        assert_eq!(committed_csv::<Pair>(&output.join("interval-join")), expected.interval, "interval, {context}");
        assert_eq!(committed_json::<Side>(&output.join("late-interval")), expected.interval_late, "{context}");
        assert_eq!(committed_csv::<Pair>(&output.join("window-join")), expected.window_join, "window join, {context}");
        assert_eq!(committed_json::<Side>(&output.join("late-window-join")), expected.window_join_late, "{context}");
    }
}

#[test]
fn a_users_binary_has_the_whole_cli() {
    let binary = env!("CARGO_BIN_EXE_weir-example");
    let jobs = std::process::Command::new(binary).arg("jobs").output().unwrap();
    let listing = String::from_utf8_lossy(&jobs.stdout);
    for job in ["bids", "fraud", "enrichment", "sessions", "mix"] {
        assert!(listing.lines().any(|line| line == job), "`weir-example jobs` lists {job}:\n{listing}");
    }
    let help = std::process::Command::new(binary).args(["run", "fraud", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--accounts"));
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let run = std::process::Command::new(binary)
        .args(["run", "fraud", "--events", "5000", "--progress", "off", "--parallelism", "2", "--output"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let wrong = std::process::Command::new(binary)
        .args(["run", "fraud", "--output", "/tmp/x", "--events", "many"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && message.contains("--events") && message.trim().lines().count() == 1,
        "{message}"
    );
    for sub in ["coordinator", "worker", "job", "certs"] {
        let help = std::process::Command::new(binary).args([sub, "--help"]).output().unwrap();
        assert!(help.status.success(), "`weir-example {sub} --help`");
    }
}
