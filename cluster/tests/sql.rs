//! SQL jobs end to end: Flink SQL scripts declaring Nexmark's generator table and its views run
//! as the built-in `sql` job, at parallelism 1, 2 and 4 and through a crash, and their committed
//! CSV output equals what `weir_chaos::nexmark`'s sequential references compute from the same
//! events. `weir_chaos::nexmark::sql_stateless` holds Nexmark q0, q1, q2, q21 and q22;
//! `weir_chaos::nexmark::sql_stateful` window aggregations (q11 among them) and joins (q3, q7, q8,
//! q20); `weir_chaos::nexmark::sql_updating` updating results (q4, q9, q15, q17, q18, q19), whose
//! changelogs are compared line by line.
//! The simulator runs all three. q12's windows of processing time are checked by what they
//! must add up to. Bad scripts fail before anything runs, with the line and column of the problem.
#![allow(clippy::disallowed_methods)] // tests inspect real directories with std::fs

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir_chaos::nexmark;
use weir_cluster::coordinator::{CrashPoint, JobError};
use weir_cluster::run::{run_job, RunError, RunOptions};
use weir_core::job::BadRecordPolicy;

const EVENTS: u64 = 50_000;
const SEED: u64 = 3;

fn script(out: &Path) -> String {
    nexmark::sql_stateless(out, EVENTS, SEED)
}

fn options(script: String, parallelism: usize) -> RunOptions {
    let registry = weir_cluster::jobs::builtin();
    let given = [("script".to_string(), script)].into_iter().collect();
    let spec = registry.get("sql").unwrap().spec(&given, parallelism, BadRecordPolicy::Skip).unwrap();
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(5));
    options.rate_limit = Some(1_000_000);
    options
}

/// The committed lines of a sink directory, sorted.
fn committed(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with(['.', '_']) && path.is_file() {
            lines.extend(std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned));
        }
    }
    lines.sort();
    lines
}

fn check(out: &Path, context: &str) {
    let [q0, q1, q2, q21, q22] = nexmark::sql_stateless_expected(EVENTS, SEED, 10_000);
    assert!(q2.len() > 10, "q2 selects some bids");
    assert_eq!(committed(&out.join("q0")), q0, "q0, {context}");
    assert_eq!(committed(&out.join("q1")), q1, "q1, {context}");
    assert_eq!(committed(&out.join("q2")), q2, "q2, {context}");
    assert_eq!(committed(&out.join("q21")), q21, "q21, {context}");
    assert_eq!(committed(&out.join("q22")), q22, "q22, {context}");
}

#[test]
fn nexmark_stateless_queries_in_sql_equal_their_references_at_every_parallelism() {
    let registry = weir_cluster::jobs::builtin();
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        run_job(&registry, options(script(&out), parallelism)).expect("the script runs");
        check(&out, &format!("parallelism {parallelism}"));
    }
}

/// Runs a job at `rate_limit` events a second, with checkpoints under `root`, until it crashes
/// before checkpoint 3 commits; then again, resuming from checkpoint 3, to the end.
fn crash_before_checkpoint_3_and_resume(mut options: RunOptions, rate_limit: u64, root: &Path) {
    let registry = weir_cluster::jobs::builtin();
    options.rate_limit = Some(rate_limit);
    options.checkpoint_location = Some(root.join("checkpoints").display().to_string());
    let mut crashing = options.clone();
    crashing.crash_at = Some(CrashPoint::BeforeCommit { checkpoint: 3 });
    match run_job(&registry, crashing) {
        Err(RunError::Job(JobError::Crashed(_))) => {}
        other => panic!("expected the crash, got {other:?}"),
    }
    let summary = run_job(&registry, options).expect("resumes");
    assert_eq!(summary.restored_from, Some(3));
}

#[test]
fn a_sql_job_is_exactly_once_through_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    // Slow enough that checkpoint 3 comes before the end even when checkpoints are slow.
    crash_before_checkpoint_3_and_resume(options(script(&out), 2), 100_000, root.path());
    check(&out, "after a crash before checkpoint 3 committed");
}

/// Windows and joins (`nexmark::sql_stateful`): 20 000 events at 200 a second span 100 s of event
/// time.
const STATEFUL_EVENTS: u64 = 20_000;
const STATEFUL_RATE: u64 = 200;

fn check_stateful(out: &Path, context: &str) {
    let expected = nexmark::sql_stateful_expected(STATEFUL_EVENTS, SEED, STATEFUL_RATE);
    for (table, lines) in
        ["tumbling", "hopping", "sessions", "cumulating", "q8", "q3", "q7", "q20", "q5"].iter().zip(expected)
    {
        assert!(lines.len() >= 10, "{table}: the reference has results ({})", lines.len());
        assert_eq!(committed(&out.join(table)), lines, "{table}, {context}");
    }
}

#[test]
fn windows_and_joins_in_sql_equal_their_references_at_every_parallelism() {
    let registry = weir_cluster::jobs::builtin();
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let script = nexmark::sql_stateful(&out, STATEFUL_EVENTS, SEED, STATEFUL_RATE);
        run_job(&registry, options(script, parallelism)).expect("the script runs");
        check_stateful(&out, &format!("parallelism {parallelism}"));
    }
}

#[test]
fn windows_and_joins_in_sql_are_exactly_once_through_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    // Slow enough for several checkpoints, even slow ones (each table is read once).
    let script = nexmark::sql_stateful(&out, STATEFUL_EVENTS, SEED, STATEFUL_RATE);
    crash_before_checkpoint_3_and_resume(options(script, 2), 50_000, root.path());
    check_stateful(&out, "after a crash before checkpoint 3 committed");
}

/// The updating results (`nexmark::sql_updating`): q4, q9, q18, q19, q15, q17 and top3.
const UPDATING: [&str; 7] = ["q4", "q9", "q18", "q19", "q15", "q17", "top3"];

fn check_updating(out: &Path, events_per_second: u64, context: &str) {
    let expected = nexmark::sql_updating_expected(STATEFUL_EVENTS, SEED, events_per_second);
    for (table, lines) in UPDATING.iter().zip(expected) {
        assert!(lines.len() >= 10, "{table}: the reference has changes ({})", lines.len());
        assert_eq!(committed(&out.join(table)), lines, "{table}'s changelog, {context}");
    }
}

#[test]
fn updating_results_in_sql_equal_their_references_at_every_parallelism() {
    let registry = weir_cluster::jobs::builtin();
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let script = nexmark::sql_updating(&out, STATEFUL_EVENTS, SEED, STATEFUL_RATE);
        run_job(&registry, options(script, parallelism)).expect("the script runs");
        check_updating(&out, STATEFUL_RATE, &format!("parallelism {parallelism}"));
    }
}

#[test]
fn updating_results_are_exactly_once_through_a_crash() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    // 20 events a second of event time, read over 4 s: every updating result has committed
    // changes by checkpoint 8 (some 400 events in, past the watermark's delay), and more come
    // after it.
    let script = nexmark::sql_updating(&out, STATEFUL_EVENTS, SEED, 20);
    let mut options = options(script, 2);
    options.rate_limit = Some(5_000);
    options.checkpoint_location = Some(root.path().join("checkpoints").display().to_string());
    let mut crashing = options.clone();
    crashing.crash_at = Some(CrashPoint::BeforeCommit { checkpoint: 8 });
    assert!(matches!(run_job(&registry, crashing), Err(RunError::Job(JobError::Crashed(_)))), "the crash");
    let before: Vec<usize> = UPDATING.iter().map(|table| committed(&out.join(table)).len()).collect();
    assert!(before.iter().all(|&lines| lines > 0), "each committed changes before the crash: {before:?}");
    assert_eq!(run_job(&registry, options).expect("resumes").restored_from, Some(8));
    let expected = nexmark::sql_updating_expected(STATEFUL_EVENTS, SEED, 20);
    for ((table, expected), before) in UPDATING.iter().zip(&expected).zip(before) {
        assert!(expected.len() > before, "{table} changes after the crash too ({before} of {})", expected.len());
        assert_eq!(&committed(&out.join(table)), expected, "{table}'s changelog after a crash");
    }
}

/// q12's committed windows: each bidder's bids add up to the bids it made (every bid in
/// exactly one window), each bidder's window comes once, and each window is 10 s of processing
/// time, aligned.
fn check_q12(out: &Path, events_per_second: u64, context: &str) {
    let mut counted: std::collections::BTreeMap<i64, u64> = Default::default();
    let mut windows = std::collections::BTreeSet::new();
    for line in committed(&out.join("q12")) {
        let fields: Vec<&str> = line.split(',').collect();
        let [bidder, count, start, end] = fields.as_slice() else { panic!("q12 line {line}") };
        assert!(windows.insert((bidder.to_string(), start.to_string())), "q12: a bidder's window twice: {line}");
        *counted.entry(bidder.parse().unwrap()).or_default() += count.parse::<u64>().unwrap();
        let seconds = |ts: &str| -> u64 {
            let time = ts.trim_matches('"').split(' ').nth(1).unwrap();
            let parts: Vec<u64> = time.split(':').map(|p| p.parse().unwrap()).collect();
            parts[0] * 3600 + parts[1] * 60 + parts[2]
        };
        assert_eq!(seconds(start) % 10, 0, "q12 window aligned to 10 s: {line}");
        assert_eq!((seconds(end) + 86_400 - seconds(start)) % 86_400, 10, "q12 window of 10 s: {line}");
    }
    assert_eq!(counted, nexmark::bids_per_bidder(STATEFUL_EVENTS, SEED, events_per_second), "q12, {context}");
}

#[test]
fn processing_time_windows_count_every_bid_once_through_a_crash() {
    let registry = weir_cluster::jobs::builtin();
    for parallelism in [1, 2] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        run_job(&registry, options(nexmark::sql_q12(&out, STATEFUL_EVENTS, SEED, 200), parallelism)).expect("runs");
        check_q12(&out, 200, &format!("parallelism {parallelism}"));
    }
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    crash_before_checkpoint_3_and_resume(
        options(nexmark::sql_q12(&out, STATEFUL_EVENTS, SEED, 200), 2),
        20_000,
        root.path(),
    );
    check_q12(&out, 200, "after a crash before checkpoint 3 committed");
}

/// A script reading bids from CSV files (three, each in time order) into the tumbling window
/// and q7 of `nexmark::sql_stateful`, and `errors_path` for malformed lines, if given.
fn files_script(input: &Path, out: &Path, errors_path: Option<&Path>) -> String {
    files_script_in(input, "csv", out, errors_path)
}

/// [`files_script`] over input files of `format`.
fn files_script_in(input: &Path, format: &str, out: &Path, errors_path: Option<&Path>) -> String {
    let (input, out) = (input.display(), out.display());
    let errors = errors_path.map(|p| format!(", 'errors.path' = '{}'", p.display())).unwrap_or_default();
    format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), extra VARCHAR,
           WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{input}', 'format' = '{format}'{errors});
         CREATE TABLE tumbling (auction BIGINT, bids BIGINT, low BIGINT, high BIGINT, total BIGINT, mean BIGINT,
           bidders BIGINT, dear BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3))
         WITH ('connector' = 'filesystem', 'path' = '{out}/tumbling', 'format' = 'csv');
         CREATE TABLE q7 (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), extra VARCHAR)
         WITH ('connector' = 'filesystem', 'path' = '{out}/q7', 'format' = 'csv');
         INSERT INTO tumbling
         SELECT auction, COUNT(*) AS bids, MIN(price), MAX(price), SUM(price), AVG(price), COUNT(DISTINCT bidder),
                COUNT(*) FILTER (WHERE price > 10000), window_start, window_end
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
         GROUP BY auction, window_start, window_end HAVING COUNT(*) >= 2;
         INSERT INTO q7
         SELECT B.auction, B.price, B.bidder, B.`dateTime`, B.extra FROM bid B
         JOIN (SELECT MAX(price) AS maxprice, window_end as `dateTime`
               FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
               GROUP BY window_start, window_end) B1
         ON B.price = B1.maxprice
         WHERE B.`dateTime` BETWEEN B1.`dateTime` - INTERVAL '10' SECOND AND B1.`dateTime`;"
    )
}

/// Writes the bids of the stateful script's input as three CSV files under `dir`, with `bad`
/// lines inserted after the first line of the second file.
fn write_bids(dir: &Path, bad: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let lines = nexmark::bids_as_csv(STATEFUL_EVENTS, SEED, STATEFUL_RATE);
    let third = lines.len().div_ceil(3);
    for (index, chunk) in lines.chunks(third).enumerate() {
        let mut chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        if index == 1 {
            chunk.splice(1..1, bad.iter().copied());
        }
        std::fs::write(dir.join(format!("bids-{index}.csv")), chunk.join("\n") + "\n").unwrap();
    }
}

#[test]
fn sql_reads_csv_files_and_their_windows_and_joins_equal_the_references() {
    let registry = weir_cluster::jobs::builtin();
    let expected = nexmark::sql_stateful_expected(STATEFUL_EVENTS, SEED, STATEFUL_RATE);
    for parallelism in [1, 2] {
        let root = tempfile::tempdir().unwrap();
        let (input, out) = (root.path().join("bids"), root.path().join("out"));
        write_bids(&input, &[]);
        run_job(&registry, options(files_script(&input, &out, None), parallelism)).expect("the script runs");
        assert_eq!(committed(&out.join("tumbling")), expected[0], "tumbling, parallelism {parallelism}");
        assert_eq!(committed(&out.join("q7")), expected[6], "q7, parallelism {parallelism}");
    }
}

/// JSON both ways: the bids written by a JSON sink (one slot, one file in time order), read
/// back by a JSON source at parallelism 2, give the references' windows and joins; a line that
/// is not JSON stops the job with its place.
#[test]
fn sql_writes_and_reads_json_files_and_their_windows_and_joins_equal_the_references() {
    let registry = weir_cluster::jobs::builtin();
    let expected = nexmark::sql_stateful_expected(STATEFUL_EVENTS, SEED, STATEFUL_RATE);
    let root = tempfile::tempdir().unwrap();
    // One CSV file in time order, read by one slot: the JSON file it writes is in time order too.
    let (csv, json) = (root.path().join("bids.csv"), root.path().join("bids-json"));
    std::fs::write(&csv, nexmark::bids_as_csv(STATEFUL_EVENTS, SEED, STATEFUL_RATE).join("\n") + "\n").unwrap();
    let export = format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), extra VARCHAR)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         CREATE TABLE bid_json (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), extra VARCHAR)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         INSERT INTO bid_json SELECT * FROM bid;",
        csv.display(),
        json.display()
    );
    run_job(&registry, options(export, 1)).expect("the export runs");
    let lines = committed(&json);
    assert_eq!(lines.len(), nexmark::bids_as_csv(STATEFUL_EVENTS, SEED, STATEFUL_RATE).len());
    assert!(
        lines.iter().all(|l| l.starts_with("{\"auction\":") && l.contains(",\"dateTime\":\"20")),
        "{:?}",
        &lines[..2]
    );
    let out = root.path().join("out");
    run_job(&registry, options(files_script_in(&json, "json", &out, None), 2)).expect("the script runs");
    assert_eq!(committed(&out.join("tumbling")), expected[0], "tumbling over JSON");
    assert_eq!(committed(&out.join("q7")), expected[6], "q7 over JSON");

    let broken = root.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("bids.json"), format!("{}\n{{\"auction\": 1, \"price\": \n", lines[0])).unwrap();
    let error = run_job(&registry, options(files_script_in(&broken, "json", &root.path().join("out-2"), None), 1))
        .expect_err("stops")
        .to_string();
    assert!(error.contains("bids.json, line 2: not a JSON object"), "{error}");
}

/// A `datagen` table is reproducible: the same rows at parallelism 1 and 3, each sequence value
/// once, and a window over its event time counts each row once.
#[test]
fn datagen_rows_are_the_same_at_every_parallelism_and_windows_over_them_count_each_once() {
    let registry = weir_cluster::jobs::builtin();
    let script = |out: &Path| {
        format!(
            "CREATE TABLE orders (id BIGINT, customer INT, amount DECIMAL(10, 2), note VARCHAR, ts TIMESTAMP(3),
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'datagen', 'number-of-rows' = '3000', 'rows-per-second' = '200',
                   'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000',
                   'fields.customer.min' = '1', 'fields.customer.max' = '20', 'fields.amount.min' = '1',
                   'fields.amount.max' = '500', 'fields.note.length' = '8', 'fields.note.null-rate' = '0.1',
                   'fields.ts.max-past' = '500 ms');
             CREATE TABLE everything (id BIGINT, customer INT, amount DECIMAL(10, 2), note VARCHAR, ts TIMESTAMP(3))
             WITH ('connector' = 'filesystem', 'path' = '{out}/everything', 'format' = 'csv');
             CREATE TABLE per_second (n BIGINT, window_end TIMESTAMP(3))
             WITH ('connector' = 'filesystem', 'path' = '{out}/per_second', 'format' = 'csv');
             INSERT INTO everything SELECT * FROM orders;
             INSERT INTO per_second SELECT COUNT(*), window_end
             FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;",
            out = out.display()
        )
    };
    let root = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for parallelism in [1, 3] {
        let out = root.path().join(format!("p{parallelism}"));
        run_job(&registry, options(script(&out), parallelism)).expect("the script runs");
        runs.push((committed(&out.join("everything")), committed(&out.join("per_second"))));
    }
    assert_eq!(runs[0], runs[1], "the same rows and windows at parallelism 1 and 3");
    let (rows, windows) = &runs[0];
    let mut ids: Vec<i64> = rows.iter().map(|row| row.split(',').next().unwrap().parse().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (1..=3000).collect::<Vec<i64>>(), "each sequence value once");
    let counted: i64 = windows.iter().map(|w| w.split(',').next().unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(counted, 3000, "each row in one window: {windows:?}");
}

#[test]
fn a_malformed_csv_line_stops_the_job_with_its_place_or_goes_to_the_errors_directory() {
    let registry = weir_cluster::jobs::builtin();
    let bad = ["1000,1001,lots,\"2023-11-14 22:13:21\",", "1000,1001,5", "1000,1001,5,,"];
    let root = tempfile::tempdir().unwrap();
    let (input, out) = (root.path().join("bids"), root.path().join("out"));
    write_bids(&input, &bad);
    let error = run_job(&registry, options(files_script(&input, &out, None), 1)).expect_err("stops").to_string();
    assert!(
        error.contains("bids-1.csv, line 2: column price: `lots` is not a BIGINT; the job stops on a malformed line"),
        "{error}"
    );
    // With an errors directory: the bad lines are there, with file, line and reason, and the
    // results are those of the good lines.
    let out = root.path().join("out-2");
    let errors = root.path().join("errors");
    let summary = run_job(&registry, options(files_script(&input, &out, Some(&errors)), 1)).expect("runs");
    let rejected: Vec<String> = committed(&errors).into_iter().filter(|l| !l.starts_with("file,")).collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    // Result rows are the tables' rows; the rejected lines are not among them.
    let results = committed(&out.join("tumbling")).len() + committed(&out.join("q7")).len();
    assert_eq!(summary.rows_emitted, results as u64, "result rows");
    assert_eq!(summary.records_bad, 3);
    assert!(rejected
        .iter()
        .any(|l| l.contains("bids-1.csv,3,") && l.contains("3 fields, but the table has 5 columns")));
    assert!(rejected
        .iter()
        .any(|l| l.contains("bids-1.csv,4,") && l.contains("time attribute (its WATERMARK column) is NULL")));
    let expected = nexmark::sql_stateful_expected(STATEFUL_EVENTS, SEED, STATEFUL_RATE);
    assert_eq!(committed(&out.join("tumbling")), expected[0]);

    // Text with a line break splits its record over lines, whose rest could pass for a row:
    // the job stops even with an errors directory.
    let broken = root.path().join("broken");
    write_bids(&broken, &["1000,1001,5,\"2023-11-14 22:13:21\",\"two", "lines\""]);
    let out = root.path().join("out-3");
    let error = run_job(&registry, options(files_script(&broken, &out, Some(&root.path().join("errors-3"))), 1))
        .expect_err("stops")
        .to_string();
    assert!(
        error.contains("bids-1.csv, line 2: not CSV: a quoted field is not closed; a text field holding a line break"),
        "{error}"
    );
    // A directory among the files is refused, not skipped.
    std::fs::create_dir(broken.join("more")).unwrap();
    let error = run_job(&registry, options(files_script(&broken, &out, None), 1)).expect_err("refused").to_string();
    assert!(error.contains("is a directory; subdirectories are not read yet"), "{error}");
}

#[test]
fn a_bad_script_is_refused_with_its_line_and_column() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let cases = [
        // An unknown column: named, placed, with the near miss.
        (
            script(&out).replace("SELECT auction, price FROM bid", "SELECT auction, Price FROM bid"),
            "line 34, column 32: column Price not found; did you mean price?",
        ),
        // A type the sink cannot take.
        (
            script(&out).replace(
                "CREATE TABLE q2 (auction BIGINT, price BIGINT)",
                "CREATE TABLE q2 (auction BIGINT, price VARCHAR)",
            ),
            "cannot write a value of type BIGINT into a column of type VARCHAR",
        ),
        // An updating result into an append-only sink: refused, naming what updates.
        (
            script(&out).replace("FROM bid WHERE MOD", "FROM bid GROUP BY auction, price HAVING MOD"),
            "line 34, column 1: table q2 is append-only ('connector' = 'filesystem', 'format' = 'csv'), but the \
             query's result updates: the GROUP BY at line 34, column 56 (an aggregate without a window) produces \
             updates",
        ),
        (
            script(&out).replace("'format' = 'csv');\n\nINSERT", "'format' = 'parquet');\n\nINSERT"),
            "format 'parquet' is not supported yet",
        ),
        (script(&out).replace("'nexmark'", "'kafka'"), "connector 'kafka' is not supported as a source yet"),
    ];
    for (script, expected) in cases {
        let error = run_job(&registry, options(script, 1)).expect_err("refused").to_string();
        assert!(error.contains(expected), "expected {expected:?} in: {error}");
    }
}

/// Outer joins update: an order waits with `NULL`s for its customer, and the pair replaces it
/// when the customer arrives; a customer's rows go when the `ON` condition no longer holds for
/// it. The changelog is the same at parallelism 1 and 2, and what it builds equals a reference
/// computed from the inputs directly.
#[test]
fn outer_joins_keep_partnerless_rows_until_a_partner_arrives_and_equal_the_reference() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let at = |ms: i64| weir_sql::types::format_timestamp(1_700_000_000_000 + ms);
    // Customers 0..25 arrive over the run (some after their orders); every seventh is blocked.
    let customers: Vec<(i64, String, i64)> =
        (0..25).map(|id| (id, if id % 7 == 3 { "blocked".to_owned() } else { format!("c{id}") }, id * 400)).collect();
    // Orders of customers 0..30 (25..30 never arrive), one every 50 ms.
    let orders: Vec<(i64, i64, i64, i64)> =
        (0..200).map(|oid| (oid, (oid * 7) % 30, 10 + oid % 13, oid * 50)).collect();
    let write = |name: &str, lines: Vec<String>| {
        let path = root.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path.display().to_string()
    };
    let customers_csv =
        write("customers.csv", customers.iter().map(|(id, name, t)| format!("{id},{name},\"{}\"", at(*t))).collect());
    let orders_csv = write(
        "orders.csv",
        orders.iter().map(|(oid, c, amount, t)| format!("{oid},{c},{amount},\"{}\"", at(*t))).collect(),
    );
    let script = |out: &Path| {
        let out = out.display();
        format!(
            "CREATE TABLE customers (id BIGINT, name VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{customers_csv}', 'format' = 'csv');
             CREATE TABLE orders (oid BIGINT, customer BIGINT, amount BIGINT, ts TIMESTAMP(3),
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{orders_csv}', 'format' = 'csv');
             CREATE TABLE enriched (oid BIGINT, amount BIGINT, name VARCHAR)
             WITH ('connector' = 'filesystem', 'path' = '{out}/enriched', 'format' = 'changelog-csv');
             CREATE TABLE everyone (oid BIGINT, id BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/everyone', 'format' = 'changelog-csv');
             INSERT INTO enriched SELECT o.oid, o.amount, c.name
             FROM orders o LEFT JOIN customers c ON o.customer = c.id AND c.name <> 'blocked';
             INSERT INTO everyone SELECT o.oid, c.id FROM orders o FULL OUTER JOIN customers c ON o.customer = c.id;"
        )
    };
    let mut changelogs = Vec::new();
    for parallelism in [1, 2] {
        let out = root.path().join(format!("out-{parallelism}"));
        run_job(&registry, options(script(&out), parallelism)).expect("the script runs");
        changelogs.push((committed(&out.join("enriched")), committed(&out.join("everyone"))));
    }
    assert_eq!(changelogs[0], changelogs[1], "the same changelogs at parallelism 1 and 2");
    let name = |id: i64| customers.iter().find(|c| c.0 == id).map(|c| c.1.clone());
    let mut enriched: Vec<String> = orders
        .iter()
        .map(|(oid, c, amount, _)| match name(*c).filter(|n| n != "blocked") {
            Some(n) => format!("{oid},{amount},{n}"),
            None => format!("{oid},{amount},"),
        })
        .collect();
    enriched.sort();
    assert_eq!(end_state(&changelogs[0].0), enriched, "LEFT JOIN");
    let mut everyone: Vec<String> = orders
        .iter()
        .map(|(oid, c, _, _)| if *c < 25 { format!("{oid},{c}") } else { format!("{oid},") })
        .chain(
            customers.iter().filter(|(id, _, _)| !orders.iter().any(|o| o.1 == *id)).map(|(id, _, _)| format!(",{id}")),
        )
        .collect();
    everyone.sort();
    assert_eq!(end_state(&changelogs[0].1), everyone, "FULL OUTER JOIN");
    // Orders placed before their customer arrived waited with NULLs, then were replaced.
    assert!(changelogs[0].0.iter().any(|line| line.starts_with("-D,") || line.starts_with("-U,")), "retractions");
}

/// A window join may be outer and stays append-only, as in Flink: each window's rows without
/// a partner (a NULL key has none) come out once, with NULLs, when the window closes — into a
/// plain CSV sink, equal to the reference at parallelism 1 and 2.
#[test]
fn outer_window_joins_write_each_windows_partnerless_rows_once_and_equal_the_reference() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let at = |ms: i64| weir_sql::types::format_timestamp(1_700_000_000_000 + ms);
    // Clicks of users 0..11 (every 37th without a user), buys of users 0..13, over some 11 s.
    let clicks: Vec<(Option<i64>, i64)> = (0..300).map(|i| ((i % 37 != 5).then_some(i % 11), i * 37)).collect();
    let buys: Vec<(Option<i64>, i64)> = (0..120).map(|i| (Some((i * 3) % 13), i * 90)).collect();
    let write = |name: &str, rows: &[(Option<i64>, i64)]| {
        let path = root.path().join(name);
        let lines: Vec<String> = rows
            .iter()
            .map(|(user, t)| format!("{},\"{}\"", user.map(|u| u.to_string()).unwrap_or_default(), at(*t)))
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path.display().to_string()
    };
    let (clicks_csv, buys_csv) = (write("clicks.csv", &clicks), write("buys.csv", &buys));
    let windowed = |table: &str| {
        format!(
            "(SELECT usr, window_start, window_end, COUNT(*) AS n \
             FROM TABLE(TUMBLE(TABLE {table}, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY usr, window_start, window_end)"
        )
    };
    let (c, b) = (windowed("clicks"), windowed("buys"));
    let script = |out: &Path| {
        let out = out.display();
        format!(
            "CREATE TABLE clicks (usr BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{clicks_csv}', 'format' = 'csv');
             CREATE TABLE buys (usr BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{buys_csv}', 'format' = 'csv');
             CREATE TABLE left_joined (usr BIGINT, clicks BIGINT, buys BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/left', 'format' = 'csv');
             CREATE TABLE full_joined (click_usr BIGINT, buy_usr BIGINT, clicks BIGINT, buys BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/full', 'format' = 'csv');
             INSERT INTO left_joined SELECT c.usr, c.n, b.n FROM {c} c LEFT JOIN {b} b
             ON c.usr = b.usr AND c.window_start = b.window_start AND c.window_end = b.window_end AND c.n >= b.n;
             INSERT INTO full_joined SELECT c.usr, b.usr, c.n, b.n FROM {c} c FULL OUTER JOIN {b} b
             ON c.usr = b.usr AND c.window_start = b.window_start AND c.window_end = b.window_end;"
        )
    };
    let explained = script(root.path()).replace("INSERT INTO left_joined", "EXPLAIN INSERT INTO left_joined");
    let plan = weir_sql::explain_script(&explained).unwrap().0.join("\n");
    assert!(plan.contains("WindowJoin: LEFT OUTER window by window") && !plan.contains("[updating]"), "{plan}");
    let mut results = Vec::new();
    for parallelism in [1, 2] {
        let out = root.path().join(format!("out-{parallelism}"));
        run_job(&registry, options(script(&out), parallelism)).expect("an outer window join into a CSV sink runs");
        results.push((committed(&out.join("left")), committed(&out.join("full"))));
    }
    assert_eq!(results[0], results[1], "the same rows at parallelism 1 and 2");
    // The reference: each side's count per window and user, then the joins by hand.
    let count = |rows: &[(Option<i64>, i64)]| {
        let mut counts: BTreeMap<(i64, Option<i64>), i64> = BTreeMap::new();
        for (user, t) in rows {
            *counts.entry((t / 1000, *user)).or_default() += 1;
        }
        counts
    };
    let (click_counts, buy_counts) = (count(&clicks), count(&buys));
    let shown = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    let partner = |window: i64, user: Option<i64>| user.and_then(|u| buy_counts.get(&(window, Some(u))).copied());
    let mut left: Vec<String> = click_counts
        .iter()
        .map(|(&(window, user), &n)| {
            let bought = partner(window, user).filter(|&m| n >= m);
            format!("{},{n},{}", shown(user), shown(bought))
        })
        .collect();
    left.sort();
    let mut full: Vec<String> = click_counts
        .iter()
        .map(|(&(window, user), &n)| match partner(window, user) {
            Some(m) => format!("{0},{0},{n},{m}", shown(user)),
            None => format!("{},,{n},", shown(user)),
        })
        .chain(
            buy_counts
                .iter()
                .filter(|(&(window, user), _)| !click_counts.contains_key(&(window, user)))
                .map(|(&(_, user), &m)| format!(",{},,{m}", shown(user))),
        )
        .collect();
    full.sort();
    assert!(left.iter().any(|l| l.ends_with(',')) && left.iter().any(|l| !l.ends_with(',')), "both kinds");
    assert!(left.iter().any(|l| l.starts_with(',')), "a click without a user is kept");
    assert!(full.iter().any(|l| l.starts_with(",")), "buys without clicks");
    assert_eq!(results[0].0, left, "LEFT JOIN of windows");
    assert_eq!(results[0].1, full, "FULL OUTER JOIN of windows");
}

/// A window table function's `window_time` is a time attribute of its aggregate's rows, as in
/// Flink: windows over it cascade. Per-second counts summed over 5-second windows equal the
/// 5-second counts taken directly, at parallelism 1 and 2; and a HOP over the cascade's
/// `window_time` slides over the per-second windows.
#[test]
fn windows_over_a_window_aggregates_window_time_cascade_and_equal_the_direct_windows() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("bids.csv");
    let bids: Vec<(i64, i64)> = (0..2000).map(|i| ((i * 7) % 5, i * 17 + (i % 3) * 40)).collect();
    let lines: Vec<String> = bids
        .iter()
        .map(|(auction, t)| format!("{auction},\"{}\"", weir_sql::types::format_timestamp(1_700_000_000_000 + t)))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let script = |out: &Path| {
        let (input, out) = (input.display(), out.display());
        format!(
            "CREATE TABLE bids (auction BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{input}', 'format' = 'csv');
             CREATE VIEW per_second AS
               SELECT auction, window_start AS second_start, window_time AS rowtime, COUNT(*) AS n
               FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND))
               GROUP BY auction, window_start, window_end, window_time;
             CREATE TABLE cascaded (auction BIGINT, total BIGINT, seconds BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/cascaded', 'format' = 'csv');
             CREATE TABLE direct (auction BIGINT, total BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/direct', 'format' = 'csv');
             CREATE TABLE hopped (auction BIGINT, total BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/hopped', 'format' = 'csv');
             INSERT INTO cascaded SELECT auction, SUM(n), COUNT(*)
               FROM TABLE(TUMBLE(TABLE per_second, DESCRIPTOR(rowtime), INTERVAL '5' SECOND))
               GROUP BY auction, window_start, window_end;
             INSERT INTO direct SELECT auction, COUNT(*)
               FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))
               GROUP BY auction, window_start, window_end;
             INSERT INTO hopped SELECT auction, SUM(n)
               FROM TABLE(HOP(TABLE per_second, DESCRIPTOR(rowtime), INTERVAL '2' SECOND, INTERVAL '4' SECOND))
               GROUP BY auction, window_start, window_end;"
        )
    };
    let mut results = Vec::new();
    for parallelism in [1, 2] {
        let out = root.path().join(format!("out-{parallelism}"));
        run_job(&registry, options(script(&out), parallelism)).expect("cascading windows run");
        results.push([&"cascaded", &"direct", &"hopped"].map(|table| committed(&out.join(table))));
    }
    assert_eq!(results[0], results[1], "the same rows at parallelism 1 and 2");
    let [cascaded, direct, hopped] = &results[0];
    // The reference: counts per auction and 5-second window, and per 4-second window every 2.
    let count = |size: i64, slide: i64| {
        let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for &(auction, t) in &bids {
            let mut start = t - t.rem_euclid(slide);
            while start > t - size {
                *counts.entry((auction, start)).or_default() += 1;
                start -= slide;
            }
        }
        let mut rows: Vec<String> = counts.iter().map(|(&(auction, _), n)| format!("{auction},{n}")).collect();
        rows.sort();
        rows
    };
    assert_eq!(direct, &count(5000, 5000), "the direct 5-second windows");
    let mut summed: Vec<String> = cascaded.iter().map(|row| row.rsplit_once(',').unwrap().0.to_owned()).collect();
    summed.sort();
    assert_eq!(summed, count(5000, 5000), "per-second counts summed over 5 seconds");
    assert!(cascaded.iter().any(|row| row.ends_with(",5")), "a 5-second window of five 1-second windows");
    assert_eq!(hopped, &count(4000, 2000), "per-second counts summed over hopping windows");
}

/// What a changelog builds, sorted: `+I`/`+U` add a row, `-U`/`-D` take one away. (Sorted
/// changelog lines have every addition before the retractions.)
fn end_state(changelog: &[String]) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for line in changelog {
        let (kind, row) = line.split_once(',').unwrap();
        match kind {
            "+I" | "+U" => rows.push(row.to_owned()),
            _ => {
                let at = rows.iter().position(|r| r == row).unwrap_or_else(|| panic!("retracts {row} never added"));
                rows.remove(at);
            }
        }
    }
    rows.sort();
    rows
}

/// Aggregates without a `GROUP BY` make all rows one group (Flink's global aggregate): one
/// row, updated as rows arrive, equal to the reference at parallelism 1 and 3.
#[test]
fn a_global_aggregate_keeps_one_row_equal_to_the_reference() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("orders.csv");
    let orders: Vec<(i64, i64)> = (0..500).map(|i| ((i * 7) % 31, 5 + (i * 13) % 97)).collect();
    let lines: Vec<String> = orders
        .iter()
        .enumerate()
        .map(|(i, (customer, amount))| {
            format!("{customer},{amount},\"{}\"", weir_sql::types::format_timestamp(1_700_000_000_000 + i as i64 * 40))
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut ends = Vec::new();
    for parallelism in [1, 3] {
        let out = root.path().join(format!("out-{parallelism}"));
        let script = format!(
            "CREATE TABLE orders (customer BIGINT, amount BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL \
             '1' SECOND) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             CREATE TABLE totals (n BIGINT, total BIGINT, biggest BIGINT, customers BIGINT, small BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'changelog-csv');
             INSERT INTO totals SELECT COUNT(*), SUM(amount), MAX(amount), COUNT(DISTINCT customer),
               COUNT(*) FILTER (WHERE amount < 20) FROM orders WHERE customer <> 3;",
            input.display(),
            out.display()
        );
        let summary = run_job(&registry, options(script, parallelism)).expect("the script runs");
        let changelog = committed(&out);
        assert!(changelog.iter().any(|line| line.starts_with("-U,")), "the row is updated");
        // The summary's result rows are the rows the sink got, not every operator's output; its
        // records on time, those the first stateful step took (not again at the next one).
        assert_eq!(summary.rows_emitted, changelog.len() as u64, "result rows, parallelism {parallelism}");
        let kept = orders.iter().filter(|(customer, _)| *customer != 3).count();
        assert_eq!(summary.records_on_time, kept as u64, "records on time, parallelism {parallelism}");
        ends.push(end_state(&changelog));
    }
    let kept: Vec<&(i64, i64)> = orders.iter().filter(|(customer, _)| *customer != 3).collect();
    let customers: std::collections::BTreeSet<i64> = kept.iter().map(|(customer, _)| *customer).collect();
    let reference = format!(
        "{},{},{},{},{}",
        kept.len(),
        kept.iter().map(|(_, amount)| amount).sum::<i64>(),
        kept.iter().map(|(_, amount)| *amount).max().unwrap(),
        customers.len(),
        kept.iter().filter(|(_, amount)| *amount < 20).count()
    );
    assert_eq!(ends[0], vec![reference], "parallelism 1");
    assert_eq!(ends[1], ends[0], "parallelism 3");
}

/// `SESSION` as a window table function, partitioned and not: each session's count and sum
/// equal a reference that cuts each partition's rows where they are a gap apart, at
/// parallelism 1 and 2 (Flink 2.3 gave the same rows on such an input).
#[test]
fn session_table_functions_equal_the_reference_sessions() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("bids.csv");
    // 400 bids of 5 bidders, 0.1 s to 12 s apart, arriving in time order.
    let mut t = 0i64;
    let bids: Vec<(i64, i64, i64)> = (0..400i64)
        .map(|i| {
            t += [100, 300, 900, 4_000, 12_000][(i * 7 % 5) as usize] + i % 3;
            (1 + (i * 13) % 5, 1 + (i * 31) % 100, t)
        })
        .collect();
    let at = |ms: i64| weir_sql::types::format_timestamp(1_700_000_000_000 + ms);
    let lines: Vec<String> = bids.iter().map(|(b, p, t)| format!("{b},{p},\"{}\"", at(*t))).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    const GAP: i64 = 10_000;
    // Sessions of the rows of each partition: (partition, start, end, count, sum).
    let sessions = |partition: &dyn Fn(i64) -> i64| -> Vec<String> {
        let mut open: BTreeMap<i64, (i64, i64, i64, i64)> = BTreeMap::new();
        let mut done = Vec::new();
        for (bidder, price, t) in &bids {
            let key = partition(*bidder);
            match open.get_mut(&key) {
                Some(session) if *t < session.1 + GAP => {
                    *session = (session.0, *t, session.2 + 1, session.3 + price);
                }
                _ => {
                    if let Some((start, last, n, sum)) = open.insert(key, (*t, *t, 1, *price)) {
                        done.push((key, start, last + GAP, n, sum));
                    }
                }
            }
        }
        done.extend(open.into_iter().map(|(key, (start, last, n, sum))| (key, start, last + GAP, n, sum)));
        let mut rows: Vec<String> =
            done.into_iter().map(|(k, s, e, n, sum)| format!("{k},\"{}\",\"{}\",{n},{sum}", at(s), at(e))).collect();
        rows.sort();
        rows
    };
    for parallelism in [1, 2] {
        let out = root.path().join(format!("out-{parallelism}"));
        let script = format!(
            "CREATE TABLE bid (bidder BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' \
             SECOND) WITH ('connector' = 'filesystem', 'path' = '{input}', 'format' = 'csv');
             CREATE TABLE per_bidder (bidder BIGINT, s TIMESTAMP(3), e TIMESTAMP(3), n BIGINT, total BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/per_bidder', 'format' = 'csv');
             CREATE TABLE everyone (k BIGINT, s TIMESTAMP(3), e TIMESTAMP(3), n BIGINT, total BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/everyone', 'format' = 'csv');
             INSERT INTO per_bidder SELECT bidder, window_start, window_end, COUNT(*), SUM(price)
             FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '10' SECOND))
             GROUP BY bidder, window_start, window_end;
             INSERT INTO everyone SELECT 0, window_start, window_end, COUNT(*), SUM(price)
             FROM TABLE(SESSION(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
             GROUP BY window_start, window_end;",
            input = input.display(),
            out = out.display()
        );
        run_job(&registry, options(script, parallelism)).expect("the script runs");
        let per_bidder = sessions(&|bidder| bidder);
        assert!(per_bidder.len() > 50, "many sessions: {}", per_bidder.len());
        assert_eq!(committed(&out.join("per_bidder")), per_bidder, "partitioned, parallelism {parallelism}");
        assert_eq!(committed(&out.join("everyone")), sessions(&|_| 0), "global, parallelism {parallelism}");
    }
}

/// 300 events `(key, id, time)` of 20 keys, 0 to 1.9 s apart (a key's some 0 to 40 s apart),
/// also written to `path` as CSV (`key,id,"timestamp"`).
fn keyed_events(path: &Path) -> Vec<(i64, i64, i64)> {
    let mut t = 0i64;
    let events: Vec<(i64, i64, i64)> = (0..300i64)
        .map(|i| {
            t += (i * 733) % 1_900;
            ((i * 7) % 20, i, t)
        })
        .collect();
    let lines: Vec<String> = events
        .iter()
        .map(|(key, id, t)| format!("{key},{id},\"{}\"", weir_sql::types::format_timestamp(1_700_000_000_000 + t)))
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    events
}

/// `SET 'table.exec.state.ttl'` bounds a regular join's state: each row is kept for the TTL in
/// event time, so exactly the rows less than the TTL apart pair — the same at parallelism 1 and
/// 2, and fewer pairs than without the TTL.
#[test]
fn a_state_ttl_keeps_a_regular_joins_rows_for_that_long_in_event_time() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("events.csv");
    let events = keyed_events(&input);
    let script = |out: &Path, ttl: &str| {
        format!(
            "SET 'table.exec.state.ttl' = '{ttl}';
             CREATE TABLE events (k BIGINT, id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             CREATE TABLE pairs (a BIGINT, b BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/pairs', 'format' = 'csv');
             CREATE TABLE later (a BIGINT, b BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/later', 'format' = 'csv');
             CREATE TABLE wide (a BIGINT, b BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/wide', 'format' = 'csv');
             CREATE TABLE beyond (a BIGINT, b BIGINT) WITH ('connector' = 'filesystem', 'path' = '{out}/beyond', 'format' = 'csv');
             INSERT INTO pairs SELECT x.id, y.id FROM events x JOIN events y ON x.k = y.k;
             INSERT INTO later SELECT x.id, y.id FROM events x JOIN events y ON x.k = y.k AND y.ts >= x.ts;
             INSERT INTO wide SELECT x.id, y.id FROM events x JOIN events y ON x.k = y.k
               AND y.ts BETWEEN x.ts - INTERVAL '10' SECOND AND x.ts + INTERVAL '10' SECOND;
             INSERT INTO beyond SELECT x.id, y.id FROM events x JOIN events y ON x.k = y.k
               AND y.ts >= x.ts + INTERVAL '5' SECOND;",
            input.display(),
            out = out.display()
        )
    };
    // The pairs of one key whose difference of times (y's minus x's) `keep` takes.
    let pairs = |keep: &dyn Fn(i64) -> bool| -> Vec<String> {
        let mut pairs = Vec::new();
        for x in &events {
            for y in &events {
                if x.0 == y.0 && keep(y.2 - x.2) {
                    pairs.push(format!("{},{}", x.1, y.1));
                }
            }
        }
        pairs.sort();
        pairs
    };
    let within_ttl = pairs(&|d| d.abs() < 3_000);
    for parallelism in [1, 2] {
        let out = root.path().join(format!("ttl-{parallelism}"));
        run_job(&registry, options(script(&out, "3 s"), parallelism)).expect("the script runs");
        let context = format!("TTL 3 s, parallelism {parallelism}");
        assert_eq!(committed(&out.join("pairs")), within_ttl, "{context}");
        // A one-sided bound narrows the TTL's range.
        assert_eq!(committed(&out.join("later")), pairs(&|d| (0..3_000).contains(&d)), "{context}");
        // Both bounds make an interval join, which the TTL leaves alone (as in Flink).
        assert_eq!(committed(&out.join("wide")), pairs(&|d| d.abs() <= 10_000), "{context}");
        // A bound beyond the TTL leaves nothing to pair.
        assert_eq!(committed(&out.join("beyond")), Vec::<String>::new(), "{context}");
    }
    let out = root.path().join("no-ttl");
    run_job(&registry, options(script(&out, "0"), 2)).expect("the script runs");
    let all = pairs(&|_| true);
    assert!(all.len() > within_ttl.len() * 2, "the TTL matters: {} pairs without it", all.len());
    assert_eq!(committed(&out.join("pairs")), all, "no TTL ('0')");
    assert!(!committed(&out.join("beyond")).is_empty(), "without the TTL, pairs 5 s apart and more");
}

/// Under `SET 'table.exec.state.ttl'`, an aggregate and a Top-N over append-only rows forget a
/// group once event time is the TTL past its last row; its next row starts it afresh, as an
/// insertion (Flink's behavior, in event time). Their changelogs equal a reference that forgets
/// the same way, at parallelism 1 and 2.
#[test]
fn a_state_ttl_makes_aggregates_and_top_ns_forget_idle_groups() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("events.csv");
    let events = keyed_events(&input);
    let script = |out: &Path| {
        format!(
            "SET 'table.exec.state.ttl' = '20 s';
             CREATE TABLE events (k BIGINT, id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             CREATE TABLE counts (k BIGINT, n BIGINT, last_id BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/counts', 'format' = 'changelog-csv');
             CREATE TABLE latest (k BIGINT, id BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{out}/latest', 'format' = 'changelog-csv');
             INSERT INTO counts SELECT k, COUNT(*), MAX(id) FROM events GROUP BY k;
             INSERT INTO latest SELECT k, id FROM
               (SELECT k, id, ROW_NUMBER() OVER (PARTITION BY k ORDER BY id DESC) AS rn FROM events) WHERE rn <= 2;",
            input.display(),
            out = out.display()
        )
    };
    // The reference: per key, its rows before and after each event (none once the key has been
    // idle 20 s), as the changelog's lines: removals paired with additions as -U/+U.
    let changelog = |rows_of: &dyn Fn(&[i64]) -> Vec<String>| -> Vec<String> {
        let mut lines = Vec::new();
        let mut live: BTreeMap<i64, (Vec<i64>, i64)> = BTreeMap::new();
        for &(key, id, t) in &events {
            let (ids, touched) = live.entry(key).or_insert((Vec::new(), t));
            if t - *touched >= 20_000 {
                ids.clear();
            }
            let before = rows_of(ids);
            ids.push(id);
            *touched = t;
            let after = rows_of(ids);
            let removed: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
            let added: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
            let paired = removed.len().min(added.len());
            lines.extend(
                removed[..paired]
                    .iter()
                    .zip(&added[..paired])
                    .flat_map(|(r, a)| [format!("-U,{r}"), format!("+U,{a}")]),
            );
            lines.extend(removed[paired..].iter().map(|r| format!("-D,{r}")));
            lines.extend(added[paired..].iter().map(|a| format!("+I,{a}")));
        }
        lines.sort();
        lines
    };
    let key_of = |ids: &[i64]| events[ids[0] as usize].0;
    let counts = changelog(&|ids| {
        if ids.is_empty() {
            vec![]
        } else {
            vec![format!("{},{},{}", key_of(ids), ids.len(), ids.iter().max().unwrap())]
        }
    });
    let latest = changelog(&|ids| {
        let mut top: Vec<i64> = ids.to_vec();
        top.sort_unstable_by(|a, b| b.cmp(a));
        top.truncate(2);
        top.sort_unstable();
        top.iter().map(|id| format!("{},{id}", key_of(ids))).collect()
    });
    let explained = script(root.path()).replace("INSERT INTO counts", "EXPLAIN INSERT INTO counts");
    let plan = weir_sql::explain_script(&explained).unwrap().0.join("\n");
    assert!(plan.contains("each for 20 s of event time after its group's last row"), "{plan}");
    let restarts = counts.iter().filter(|line| line.starts_with("+I,")).count();
    assert!(restarts > 20, "groups forgotten and started afresh: {restarts} insertions for 20 keys");
    for parallelism in [1, 2] {
        let out = root.path().join(format!("out-{parallelism}"));
        run_job(&registry, options(script(&out), parallelism)).expect("an aggregate and a Top-N run under a TTL");
        assert_eq!(committed(&out.join("counts")), counts, "the aggregate, parallelism {parallelism}");
        assert_eq!(committed(&out.join("latest")), latest, "the Top-N, parallelism {parallelism}");
    }
}

/// A join whose condition bounds the difference of the two sides' times is an interval join:
/// each side's rows are kept only while a partner may come. Its pairs equal a reference
/// computed from the bids directly, at parallelism 1 and 2.
#[test]
fn an_interval_join_pairs_rows_within_its_bounds_and_equals_the_reference() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let lines = nexmark::bids_as_csv(STATEFUL_EVENTS, SEED, STATEFUL_RATE);
    let input = root.path().join("bids.csv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let script = |out: &Path| {
        format!(
            "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), extra VARCHAR,
               WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND)
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             CREATE TABLE pairs (auction BIGINT, first BIGINT, second BIGINT)
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO pairs SELECT a.auction, a.price, b.price FROM bid a JOIN bid b ON a.auction = b.auction
             AND b.`dateTime` BETWEEN a.`dateTime` - INTERVAL '1' SECOND AND a.`dateTime` + INTERVAL '2' SECOND
             AND a.bidder <> b.bidder;",
            input.display(),
            out.display()
        )
    };
    // The reference: every pair of bids of one auction, by different bidders, the second's time
    // within [-1 s, +2 s] of the first's.
    let parse = |line: &String| {
        let fields: Vec<&str> = line.split(',').collect();
        let ms = {
            let text = fields[3].trim_matches('"');
            let (date, time) = text.split_once(' ').unwrap();
            let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
            let hms: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
            let millis: i64 = format!("{fraction:0<3}").parse().unwrap();
            (date.to_owned(), hms[0] * 3_600_000 + hms[1] * 60_000 + hms[2] * 1000 + millis)
        };
        (fields[0].parse::<i64>().unwrap(), fields[1].parse::<i64>().unwrap(), fields[2].parse::<i64>().unwrap(), ms)
    };
    let bids: Vec<(i64, i64, i64, (String, i64))> = lines.iter().map(parse).collect();
    assert!(bids.iter().all(|b| b.3 .0 == bids[0].3 .0), "the bids fit one day");
    let mut expected = Vec::new();
    for a in &bids {
        for b in &bids {
            let difference = b.3 .1 - a.3 .1;
            if a.0 == b.0 && a.1 != b.1 && (-1000..=2000).contains(&difference) {
                expected.push(format!("{},{},{}", a.0, a.2, b.2));
            }
        }
    }
    expected.sort();
    assert!(expected.len() > 100, "the reference has pairs: {}", expected.len());
    for parallelism in [1, 2] {
        let out = root.path().join(format!("out-{parallelism}"));
        run_job(&registry, options(script(&out), parallelism)).expect("the script runs");
        assert_eq!(committed(&out), expected, "parallelism {parallelism}");
    }
}

/// Watermark alignment holds a source back only for the sources its records meet: in SQL, the
/// two sides of a join of an updating result (a concatenation of updating streams)
/// meet, and a table read by an unrelated statement meets neither. (Before updating streams
/// carried their sources' group, the sides of such a join were two groups, and one side could
/// read far ahead of the other, its records waiting in the join's arrangements.)
#[test]
fn the_sources_of_a_join_of_updating_results_pause_for_each_other_and_no_other() {
    let registry = weir_cluster::jobs::builtin();
    let root = tempfile::tempdir().unwrap();
    let at = |ms: i64| weir_sql::types::format_timestamp(1_700_000_000_000 + ms);
    let write = |name: &str, lines: Vec<String>| {
        let path = root.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path.display().to_string()
    };
    let customers = write("customers.csv", (0..5).map(|id| format!("{id},c{id},\"{}\"", at(id * 100))).collect());
    let orders = write("orders.csv", (0..20).map(|oid| format!("{oid},{},\"{}\"", oid % 5, at(oid * 50))).collect());
    let refunds = write("refunds.csv", (0..20).map(|oid| format!("{oid},\"{}\"", at(oid * 70))).collect());
    let out = root.path().join("out");
    let out = out.display();
    let script = format!(
        "CREATE TABLE customers (id BIGINT, name VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{customers}', 'format' = 'csv');
         CREATE TABLE orders (oid BIGINT, customer BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{orders}', 'format' = 'csv');
         CREATE TABLE refunds (oid BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{refunds}', 'format' = 'csv');
         CREATE TABLE per_customer (name VARCHAR, orders BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{out}/per_customer', 'format' = 'changelog-csv');
         CREATE TABLE refunded (oid BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{out}/refunded', 'format' = 'csv');
         INSERT INTO per_customer SELECT c.name, o.orders
         FROM (SELECT customer, COUNT(*) AS orders FROM orders GROUP BY customer) o
         JOIN customers c ON o.customer = c.id;
         INSERT INTO refunded SELECT oid FROM refunds;"
    );
    let given = [("script".to_string(), script)].into_iter().collect();
    let job = registry.get("sql").unwrap();
    let spec = job.spec(&given, 2, BadRecordPolicy::Skip).unwrap();
    let plan = weir_dataflow::plan_job(job, &spec).expect("the script plans");
    let group = |name: &str| plan.sources.iter().find(|s| s.name.contains(name)).expect(name).alignment_group;
    assert_eq!(group("customers"), group("orders"), "the sides of the join are one group: {:?}", plan.sources);
    assert_ne!(group("refunds"), group("orders"), "an unrelated table is a group of its own: {:?}", plan.sources);
}
