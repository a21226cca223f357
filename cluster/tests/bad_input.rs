//! Bad-input tests: every kind of bad input gets a clear error and loses nothing.
//!
//! Method: the real `weir` binary runs as a child process. Malformed lines go to `errors/`
//! with file, line and reason while the job goes on (or stop it under `--on-bad-record fail`);
//! a missing input, a wrong header, an unusable output directory and bad flags end the
//! process with a one-line error and a non-zero status, leaving nothing that looks committed.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output().expect("weir runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn committed_files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Err(_) => Vec::new(),
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with(['.', '_']))
            .collect(),
    }
}

#[test]
fn malformed_lines_go_to_errors_with_file_line_and_reason() {
    let root = tempfile::tempdir().unwrap();
    let lines: Vec<String> = vec![
        "1,10,100,1000".into(),
        "1,10,100".into(),                         // line 3: field count
        "2,x,100,1000".into(),                     // line 4: not an integer
        "3,10,100,99999999999999999999".into(),    // line 5: overflow
        "".into(),                                 // line 6: blank, ignored
        "4,10,\"quoted, with comma\",1000".into(), // line 7: five fields
        "5,11,101,1001".into(),
    ];
    let input = write_input(root.path(), &[lines]);
    let output = root.path().join("out");
    let result = weir(&["run", "bids", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    assert!(result.status.success(), "{}", stderr(&result));
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("malformed (errors): 4"), "{stdout}");
    let options = file_job(&input, &output, 1, 10_000, 4_000);
    assert_exactly_once(&options);
    let errors: String = committed_files(&output.join("errors"))
        .iter()
        .map(|name| std::fs::read_to_string(output.join("errors").join(name)).unwrap())
        .collect();
    for expected in ["split-00.csv,3,", "expected 4 fields", ",4,", "is not an integer", ",5,", "overflows", ",7,"] {
        assert!(errors.contains(expected), "errors/ lacks {expected:?}:\n{errors}");
    }
}

#[test]
fn fail_policy_stops_with_the_record_error() {
    let root = tempfile::tempdir().unwrap();
    let input = write_input(root.path(), &[vec!["1,10,100,1000".into(), "1,ten,100,1000".into()]]);
    let output = root.path().join("out");
    let result = weir(&[
        "run",
        "bids",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--on-bad-record",
        "fail",
    ]);
    assert!(!result.status.success());
    let message = stderr(&result);
    assert!(
        message.contains("line 3") && message.contains("bidder") && message.contains("is not an integer"),
        "{message}"
    );
    assert!(committed_files(&output).is_empty(), "nothing may be committed: {:?}", committed_files(&output));
}

#[test]
fn missing_input_is_a_clear_error_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let result = weir(&["run", "bids", "--input", "/definitely/not/here.csv", "--output", output.to_str().unwrap()]);
    assert!(!result.status.success());
    let message = stderr(&result);
    assert!(message.contains("/definitely/not/here.csv") && message.contains("cannot read"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "one-line error expected: {message}");
    assert!(!output.exists(), "the output directory must not be created for an invalid job");
}

#[test]
fn wrong_header_is_rejected_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("bad.csv");
    std::fs::write(&input, "auction,price,bidder,date_time\n1,2,3,4\n").unwrap();
    let output = root.path().join("out");
    let result = weir(&["run", "bids", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    assert!(!result.status.success());
    let message = stderr(&result);
    assert!(message.contains("line 1") && message.contains("auction,bidder,price,date_time"), "{message}");
    assert!(!output.exists());
}

#[test]
fn empty_input_directory_is_rejected() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("empty");
    std::fs::create_dir(&input).unwrap();
    let result =
        weir(&["run", "bids", "--input", input.to_str().unwrap(), "--output", root.path().join("o").to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(stderr(&result).contains("no *.csv files"), "{}", stderr(&result));
}

#[test]
fn unwritable_output_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let blocker = root.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let output = blocker.join("out");
    let result = weir(&["run", "bids", "--events", "1000", "--output", output.to_str().unwrap()]);
    assert!(!result.status.success());
    let message = stderr(&result);
    assert!(message.contains("output") && message.contains("cannot create directory"), "{message}");
}

#[test]
fn output_of_another_job_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let first = weir(&["run", "bids", "--events", "1000", "--output", output.to_str().unwrap()]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = committed_files(&output);
    let second = weir(&["run", "bids", "--events", "2000", "--output", output.to_str().unwrap()]);
    assert!(!second.status.success());
    assert!(stderr(&second).contains("another job"), "{}", stderr(&second));
    assert_eq!(committed_files(&output), before, "the refused run must not touch the output");
    // The same command again is a resume of a finished job: success, nothing changes.
    let again = weir(&["run", "bids", "--events", "1000", "--output", output.to_str().unwrap()]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already finished"));
    assert_eq!(committed_files(&output), before);
}

#[test]
fn non_empty_output_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    std::fs::create_dir(&output).unwrap();
    std::fs::write(output.join("precious.txt"), "keep me").unwrap();
    let result = weir(&["run", "bids", "--events", "1000", "--output", output.to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(stderr(&result).contains("not empty"), "{}", stderr(&result));
    assert_eq!(std::fs::read_to_string(output.join("precious.txt")).unwrap(), "keep me");
}

#[test]
fn bad_flags_are_rejected_with_usage() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let out = output.to_str().unwrap();
    for (args, expected) in [
        (vec!["run", "bids", "--output", out, "--window", "10"], "no unit"),
        (vec!["run", "bids", "--output", out, "--window", "0s"], "--window must be positive"),
        (vec!["run", "bids", "--output", out, "--parallelism", "0"], "--parallelism 0 is out of range"),
        (vec!["run", "bids", "--output", out, "--parallelism", "500"], "out of range"),
        (vec!["run", "bids", "--output", out, "--checkpoint-interval", "soon"], "not a duration"),
        (vec!["run", "bids", "--output", out, "--on-bad-record", "ignore"], "invalid value"),
        (vec!["run", "bids", "--output", out, "--checkpoint-dir", "s3://bucket/x"], "unsupported scheme"),
        (vec!["run", "bids"], "--output"),
        (vec!["run", "bids", "--output", out, "--bogus"], "unexpected argument"),
    ] {
        let result = weir(&args);
        assert!(!result.status.success(), "{args:?} must fail");
        assert!(stderr(&result).contains(expected), "{args:?}: expected {expected:?} in:\n{}", stderr(&result));
    }
    assert!(committed_files(&output).is_empty());
}

#[test]
fn help_documents_every_flag() {
    let result = weir(&["run", "bids", "--help"]);
    assert!(result.status.success());
    let help = String::from_utf8_lossy(&result.stdout);
    for flag in [
        "--input",
        "--output",
        "--parallelism",
        "--window",
        "--out-of-orderness",
        "--checkpoint-dir",
        "--checkpoint-interval",
        "--on-bad-record",
        "--events",
        "--seed",
        "--rate",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn a_damaged_job_record_stops_the_resume_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let checkpoints = root.path().join("checkpoints");
    let args = [
        "run",
        "bids",
        "--events",
        "20000000",
        "--rate",
        "2000000",
        "--checkpoint-interval",
        "100ms",
        "--output",
        output.to_str().unwrap(),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
    ];
    // A run killed part-way (after some checkpoints), so that the next one resumes.
    let mut first = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    first.kill().unwrap();
    first.wait().unwrap();
    let job_dir = std::fs::read_dir(&checkpoints).unwrap().flatten().next().expect("a job directory").path();
    let generation = job_dir.join("_generation");
    let mut bytes = std::fs::read(&generation).expect("the job recorded its generation");
    bytes[0] ^= 1; // '1' → '0': still a number, only the checksum can tell
    std::fs::write(&generation, bytes).unwrap();
    let before = committed_files(&output);
    let resumed = weir(&args);
    assert!(!resumed.status.success(), "a damaged record must stop the job");
    let message = stderr(&resumed);
    assert!(message.contains("_generation") && message.contains("damaged") && message.contains("backup"), "{message}");
    assert_eq!(committed_files(&output), before, "the refused resume must not touch the output");
}

/// `weir sql -f` prints the plans of a script's `EXPLAIN`s; a script of `EXPLAIN`s only runs
/// nothing, and a `SET` Weir cannot honour stops the script before anything runs.
#[test]
fn weir_sql_prints_explained_plans_and_refuses_a_set_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    let table = "CREATE TABLE datagen (event_type INT,\n\
                 bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR>,\n\
                 ts AS bid.`dateTime`, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n\
                 WITH ('connector' = 'nexmark', 'events.num' = '200');\n\
                 CREATE TABLE out (auction BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\n";
    let query =
        "INSERT INTO out SELECT bid.auction, COUNT(*) FROM datagen WHERE event_type = 2 GROUP BY bid.auction;\n";
    let script = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let stdout = |output: &Output| String::from_utf8_lossy(&output.stdout).into_owned();

    let only = script("explain.sql", format!("{table}EXPLAIN {query}"));
    let output = weir(&["sql", "-f", &only]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("== EXPLAIN INSERT INTO out (line 6) =="), "{}", stdout(&output));
    assert!(stdout(&output).contains("GroupAggregate (a fold over append-only input"), "{}", stdout(&output));
    assert!(!stdout(&output).contains("wall time"), "an EXPLAIN alone runs nothing: {}", stdout(&output));

    let both = script("both.sql", format!("{table}EXPLAIN {query}{query}"));
    let checkpoints = dir.path().join("checkpoints");
    let output =
        weir(&["sql", "-f", &both, "--checkpoint-dir", &checkpoints.display().to_string(), "--progress", "off"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("== EXPLAIN INSERT INTO out") && stdout(&output).contains("wall time"));

    // A state TTL bounds the aggregate (over append-only rows, written to the sink) …
    let ttl = script("ttl.sql", format!("SET 'table.exec.state.ttl' = '1 h';\n{table}{query}"));
    let checkpoints = dir.path().join("checkpoints-ttl");
    let output =
        weir(&["sql", "-f", &ttl, "--checkpoint-dir", &checkpoints.display().to_string(), "--progress", "off"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // … but not an aggregate of its updating result, whose state it cannot bound yet.
    let over_updating = "INSERT INTO out SELECT n, COUNT(*) FROM (SELECT bid.auction, COUNT(*) AS n FROM datagen \
                         WHERE event_type = 2 GROUP BY bid.auction) GROUP BY n;\n";
    let ttl = script("ttl-updating.sql", format!("SET 'table.exec.state.ttl' = '1 h';\n{table}{over_updating}"));
    let output = weir(&["sql", "-f", &ttl]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("(SET at line 1, column 1) bounds regular joins of append-only rows, and"), "{error}");
    assert!(error.contains("an aggregate without a window of an updating result keeps its state whole"), "{error}");
}
