//! The interactive SQL shell (`weir sql` without a file), driven through a pseudo-terminal as
//! a user would: line editing and history, `SHOW TABLES`, `DESCRIBE`, `EXPLAIN`, errors that
//! leave the session as it was, a query whose result is checked against an independent
//! reference, a query over an unbounded table whose table is redrawn in place as checkpoints
//! commit and which Ctrl-C stops, and the history kept across sessions.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

use std::collections::BTreeMap;
use std::process::Command;

use rexpect::session::PtySession;

const TIMEOUT_MS: u64 = 60_000;

fn open_shell(home: &std::path::Path) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.args(["sql", "--parallelism", "2"]).env("HOME", home).env("TERM", "xterm").env_remove("WEIR_LOG");
    let mut session = rexpect::session::spawn_command(command, Some(TIMEOUT_MS)).expect("the shell starts");
    session.exp_string("QUIT; leaves.").expect("the banner");
    session.exp_string("weir> ").expect("the prompt");
    session
}

/// The rows of the last table drawn in `text` (after the last in-place redraw), cell by cell.
fn last_table(text: &str) -> Vec<Vec<String>> {
    let last = text.rsplit("\x1b[J").next().unwrap_or(text);
    last.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.starts_with('|'))
        .skip(1) // the header
        .map(|line| line.trim_matches('|').split('|').map(|cell| cell.trim().to_owned()).collect())
        .collect()
}

#[test]
fn the_shell_declares_describes_explains_runs_and_remembers() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("bids");
    std::fs::create_dir_all(&input).unwrap();
    // 300 bids on 12 auctions over 5 minutes, and their counts and sums computed here.
    let mut csv = String::new();
    let mut reference: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for i in 0..300u64 {
        let (auction, price) = (1000 + (i * 7) % 12, 1 + (i * 37) % 101);
        csv.push_str(&format!("{auction},{price},2024-01-01 00:{:02}:{:02}\n", i / 60, i % 60));
        let entry = reference.entry(auction).or_default();
        entry.0 += 1;
        entry.1 += price;
    }
    std::fs::write(input.join("part-0.csv"), csv).unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut shell = open_shell(&home);

    // A declaration over two lines: the second prompt says the statement goes on.
    shell.send_line("CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3),").unwrap();
    shell.exp_string("   -> ").unwrap();
    shell
        .send_line(&format!(
            "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'filesystem', 'path' = '{}', \
             'format' = 'csv');",
            input.display()
        ))
        .unwrap();
    shell.exp_string("[INFO] table created").unwrap();

    shell.send_line("SHOW TABLES;").unwrap();
    shell.exp_string("| bid        |").unwrap();
    shell.exp_string("1 row in set").unwrap();
    // Up recalls the last statement from the history.
    shell.send("\x1b[A").unwrap();
    shell.send_line("").unwrap();
    shell.exp_string("| bid        |").unwrap();

    shell.send_line("DESCRIBE bid;").unwrap();
    shell.exp_string("TIMESTAMP(3) *ROWTIME*").unwrap();
    shell.exp_string("ts - INTERVAL '1' SECOND").unwrap();

    // A wrong statement is an error with its position, and changes nothing.
    shell.send_line("CREATE VIEW broken AS SELECT nope FROM bid;").unwrap();
    shell.exp_string("[ERROR] line 1, column 30: column nope not found").unwrap();
    shell.send_line("SHOW VIEWS;").unwrap();
    shell.exp_string("0 rows in set").unwrap();

    shell.send_line("EXPLAIN SELECT auction, COUNT(*) FROM bid GROUP BY auction;").unwrap();
    shell.exp_string("[updating]").unwrap();

    // An updating query: the table shows the end state of its changelog.
    shell.send_line("SELECT auction, COUNT(*) AS bids, SUM(price) AS total FROM bid GROUP BY auction;").unwrap();
    let (drawn, _) = shell.exp_regex(r"12 rows \(\d+ changes\), finished").unwrap();
    let expected: Vec<Vec<String>> = reference
        .iter()
        .map(|(auction, (bids, total))| vec![auction.to_string(), bids.to_string(), total.to_string()])
        .collect();
    assert_eq!(last_table(&drawn), expected, "the shell's table:\n{drawn}");

    // An unbounded table: the result is redrawn in place as checkpoints commit, until Ctrl-C.
    shell.send_line("SET 'execution.checkpointing.interval' = '200ms';").unwrap();
    shell.exp_string("[INFO]").unwrap();
    shell
        .send_line(
            "CREATE TABLE ticks (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = \
             'datagen', 'rows-per-second' = '50', \
             'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000');",
        )
        .unwrap();
    shell.exp_string("[INFO] table created").unwrap();
    shell.send_line("SELECT COUNT(*) AS n FROM ticks;").unwrap();
    shell.exp_string("running").unwrap();
    // Cursor up over the table drawn before, then a count that has grown past one.
    shell.exp_regex(r"\x1b\[\d+A").unwrap();
    shell.exp_regex(r"\|\s+[1-9]\d+ \|").unwrap();
    shell.send_control('c').unwrap();
    shell.exp_string("stopped after").unwrap();
    shell.exp_string("weir> ").unwrap();

    // An INSERT runs as `weir sql -f` does.
    let output = root.path().join("out");
    shell
        .send_line(&format!(
            "CREATE TABLE expensive (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = \
             '{}', 'format' = 'csv');",
            output.display()
        ))
        .unwrap();
    shell.exp_string("[INFO] table created").unwrap();
    shell.send_line("INSERT INTO expensive SELECT auction, price FROM bid WHERE price > 90;").unwrap();
    shell.exp_string("finished").unwrap();
    shell.exp_string("weir> ").unwrap();

    shell.send_line("QUIT;").unwrap();
    shell.exp_eof().unwrap();

    let mut written = 0;
    for entry in std::fs::read_dir(&output).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            written += std::fs::read_to_string(output.join(name)).unwrap().lines().count();
        }
    }
    let reference_expensive = (0..300u64).filter(|i| 1 + (i * 37) % 101 > 90).count();
    assert_eq!(written, reference_expensive);

    // The history outlives the session.
    let history = std::fs::read_to_string(home.join(".weir_sql_history")).unwrap();
    assert!(history.contains("SHOW TABLES;"), "{history}");
    let mut again = open_shell(&home);
    again.send("\x1b[A").unwrap();
    again.flush().unwrap();
    again.exp_string("QUIT;").unwrap();
}

/// A hang-up or termination while a query runs stops the query's process before the shell
/// ends: nothing is left running, though the query's process is in a group of its own.
#[test]
fn terminating_the_shell_stops_its_running_query() {
    let root = tempfile::tempdir().unwrap();
    let mut shell = open_shell(root.path());
    // A table name no other process has, to find the query's process by its command line.
    let table = format!("ticks_{}", std::process::id());
    shell
        .send_line(&format!(
            "CREATE TABLE {table} (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = \
             'datagen', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000');"
        ))
        .unwrap();
    shell.exp_string("[INFO] table created").unwrap();
    shell.send_line(&format!("SELECT COUNT(*) FROM {table};")).unwrap();
    shell.exp_string("running").unwrap();
    let running = || -> usize {
        let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
        entries
            .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(&format!("FROM {table}")))
            .count()
    };
    assert_eq!(running(), 1, "the query runs in a process of its own");
    shell.process_mut().signal(rexpect::process::Signal::SIGTERM).unwrap();
    shell.exp_eof().unwrap();
    assert_eq!(running(), 0, "the query's process is gone with the shell");
}
