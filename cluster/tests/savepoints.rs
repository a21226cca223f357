//! Savepoints, stop-with-savepoint and rescaling on a real multi-process cluster.
//!
//! Method: the main job reads four CSV files (four splits), throttled so that it runs for
//! seconds, at parallelism 2 on a coordinator and two worker processes. It is stopped with a
//! savepoint, started from that savepoint at parallelism 3 (another job: the parallelism is
//! part of a job's identity), savepointed while it runs, stopped with a savepoint again, and
//! started from that one at parallelism 1, which runs to the end. The output directory is the
//! same throughout: each job takes it over from the one whose savepoint it starts from. What
//! is committed in the end must equal the sequential reference exactly — nothing lost, nothing
//! duplicated across the stops and the rescaling.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

mod common;

use std::path::Path;
use std::time::Duration;

use common::processes::*;
use common::*;

/// Four files of `per_file` bids each: 50 auctions, event times 10 ms apart with some disorder.
fn bids_input(root: &Path, per_file: usize) -> std::path::PathBuf {
    let files: Vec<Vec<String>> = (0..4)
        .map(|file| {
            (0..per_file)
                .map(|i| {
                    let n = i * 4 + file;
                    let time = 1_700_000_000_000i64 + n as i64 * 10 - (n % 7) as i64 * 300;
                    format!("{},{},{},{time}", n % 50, n % 97, (n * 7919) % 1000)
                })
                .collect()
        })
        .collect();
    write_input(root, &files)
}

/// `weir job submit bids` over `input` into `output`, throttled to run for seconds.
fn try_submit_bids(
    cluster: &Cluster,
    input: &Path,
    output: &Path,
    parallelism: usize,
    savepoint: Option<&str>,
) -> std::process::Output {
    let parallelism = parallelism.to_string();
    let mut args = vec![
        "job",
        "submit",
        "bids",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--window",
        "2s",
        "--out-of-orderness",
        "1s",
        "--parallelism",
        &parallelism,
        "--checkpoint-interval",
        "100ms",
        "--rate",
        "20000",
    ];
    if let Some(savepoint) = savepoint {
        args.extend(["--from-savepoint", savepoint]);
    }
    cluster.client(&args)
}

/// [`try_submit_bids`], which must be accepted: the job's id.
fn submit_bids(cluster: &Cluster, input: &Path, output: &Path, parallelism: usize, savepoint: Option<&str>) -> String {
    let result = try_submit_bids(cluster, input, output, parallelism, savepoint);
    assert!(result.status.success(), "submit failed: {}\n{}", String::from_utf8_lossy(&result.stderr), cluster.logs());
    String::from_utf8_lossy(&result.stdout).trim().to_string()
}

/// How many part files are committed in `output`.
fn committed_parts(output: &Path) -> usize {
    std::fs::read_dir(output)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
        .count()
}

/// Runs `weir job ARGS…` and returns its one line of output (a savepoint's path).
fn savepoint_path(cluster: &Cluster, args: &[&str]) -> String {
    let result = cluster.client(args);
    assert!(
        result.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&result.stderr),
        cluster.logs()
    );
    String::from_utf8_lossy(&result.stdout).trim().to_string()
}

#[test]
fn stop_with_savepoint_rescale_two_three_one_commits_exactly_the_reference() {
    let cluster = Cluster::start(2);
    let input = bids_input(cluster.root.path(), 50_000);
    let output = cluster.root.path().join("out");
    let savepoints = cluster.root.path().join("savepoints");
    let savepoints = savepoints.to_str().unwrap();

    let first = submit_bids(&cluster, &input, &output, 2, None);
    cluster.wait_for_state(&first, &["Running"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    let stopped_at_two = savepoint_path(&cluster, &["job", "stop", &first, "--savepoint", "--dir", savepoints]);
    assert!(stopped_at_two.starts_with(savepoints), "{stopped_at_two}");
    let status = cluster.wait_for_state(&first, &["Stopped"], Duration::from_secs(10));
    assert!(status.contains(&stopped_at_two), "{status}");

    let committed_at_two = committed_parts(&output);
    assert!(committed_at_two > 0, "the stop commits the output its savepoint covers");

    let second = submit_bids(&cluster, &input, &output, 3, Some(&stopped_at_two));
    assert_ne!(second, first, "another parallelism is another job");
    cluster.wait_for_state(&second, &["Running"], Duration::from_secs(60));
    let checkpoint = stopped_at_two.rsplit('-').nth(1).unwrap();
    let started = format!("from checkpoint {checkpoint}");
    // The line is logged once every worker has deployed, a little after the job is Running.
    let started_there = || {
        let log = std::fs::read_to_string(cluster.root.path().join("coordinator.log")).unwrap();
        log.lines()
            .any(|line| line.contains(&second) && line.contains(" running on workers ") && line.ends_with(&started))
    };
    let mut polls = 100;
    while !started_there() {
        polls -= 1;
        assert!(polls > 0, "job {second} never logged that it runs {started}:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    // A savepoint of a running job leaves it running.
    let taken = savepoint_path(&cluster, &["job", "savepoint", &second, "--dir", savepoints]);
    assert_ne!(taken, stopped_at_two);
    cluster.wait_for_state(&second, &["Running"], Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at_three = savepoint_path(&cluster, &["job", "stop", &second, "--savepoint", "--dir", savepoints]);
    cluster.wait_for_state(&second, &["Stopped"], Duration::from_secs(10));
    assert!(committed_parts(&output) > committed_at_two, "the job at parallelism 3 committed output too");

    let inspected = weir(&["savepoint", "inspect", &stopped_at_three]);
    let report = String::from_utf8_lossy(&inspected.stdout);
    assert!(inspected.status.success(), "{}", String::from_utf8_lossy(&inspected.stderr));
    assert!(report.contains("taken at:    parallelism 3") && report.contains(&second), "{report}");
    // Each slot uploaded its own file straight to the savepoint: three files, no merge.
    for slot in 0..3 {
        assert!(std::path::Path::new(&stopped_at_three).join(format!("slot-{slot}.state")).exists(), "slot {slot}");
    }
    assert!(report.contains("bids-per-auction"), "the window operator's state is listed:\n{report}");
    for split in 0..4 {
        assert!(report.lines().any(|line| line.starts_with(&format!("{split} "))), "split {split}:\n{report}");
    }

    // The last job starts from the savepoint taken while the job ran, not from the stop: what
    // the job at parallelism 3 committed after it is retracted and computed again.
    let last = submit_bids(&cluster, &input, &output, 1, Some(&taken));
    let status = cluster.wait_for_state(&last, &["Finished", "Failed"], Duration::from_secs(120));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    let mut reference = file_job(&input, &output, 1, 2_000, 1_000);
    reference.checkpoint_interval = None;
    assert_exactly_once(&reference);
    let logs = cluster.logs();
    assert!(logs.contains("retracted part files committed after checkpoint"), "nothing was retracted:\n{logs}");

    // A damaged savepoint is refused, naming it and the damage.
    let state = std::path::Path::new(&stopped_at_three).join("slot-1.state");
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&state, bytes).unwrap();
    let inspected = weir(&["savepoint", "inspect", &stopped_at_three]);
    let error = String::from_utf8_lossy(&inspected.stderr);
    assert!(!inspected.status.success() && error.contains(&stopped_at_three), "{error}");
    assert!(error.contains("does not match its checksum"), "{error}");

    // The first job lost its output to the second: resubmitted, it is refused there.
    let stale = try_submit_bids(&cluster, &input, &output, 2, None);
    let error = String::from_utf8_lossy(&stale.stderr);
    assert!(!stale.status.success() && error.contains("holds the output of another job"), "{error}");
}

#[test]
fn a_savepoint_that_is_not_there_is_refused_with_its_path_and_nothing_is_touched() {
    let cluster = Cluster::start(0);
    let input = bids_input(cluster.root.path(), 10);
    let output = cluster.root.path().join("out");
    let missing = cluster.root.path().join("savepoints/savepoint-none");
    let result = try_submit_bids(&cluster, &input, &output, 1, Some(missing.to_str().unwrap()));
    let error = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{error}");
    assert!(error.contains(missing.to_str().unwrap()) && error.contains("has no _metadata"), "{error}");
    assert!(!output.exists(), "a refused submission touches no output");

    let inspected = weir(&["savepoint", "inspect", missing.to_str().unwrap()]);
    assert!(!inspected.status.success());
    assert!(String::from_utf8_lossy(&inspected.stderr).contains("has no _metadata"));
}
