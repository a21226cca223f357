//! `weir sql` without a file: the interactive SQL shell.
//!
//! Line editing and history come from `rustyline`; statements end at a `;` outside quotes and
//! comments and may span lines. What each statement means is [`weir_sql::session`]'s business:
//! this module is the terminal around it.
//!
//! Queries run as jobs in a child process — this binary's own `weir sql --script …`, on an
//! embedded cluster — rather than on threads of the shell: stopping a query (Ctrl-C) is killing
//! a process, which a job survives by design (its output is exactly-once), and a query that
//! fails cannot take the shell with it. A `SELECT` writes an exactly-once changelog into a
//! directory of the shell's; the shell reads each committed file as it appears and redraws the
//! result table in place, so what it shows is always what the job has committed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

use weir_dataflow::JobRegistry;
use weir_sql::session::{Reply, ResultTable, SelectJob, Session};
use weir_sql::types::SqlType;

use crate::cli::{parse_invocation, Invocation, InvocationKind, JobInvocation};

/// The flag the shell sets itself for each query (every other flag is passed on; a script's
/// flags make `weir sql` run the script instead of the shell: `SqlInvocation::opens_shell`).
const OWN_FLAG: &str = "--checkpoint-dir";

/// The widest a cell is shown (Flink's `sql-client.display.max-column-width`).
const MAX_CELL_WIDTH: usize = 30;

/// Rows shown of a finished query's result.
const MAX_FINAL_ROWS: usize = 1000;

/// How often a running query's result is read and redrawn.
const REFRESH: Duration = Duration::from_millis(100);

const HELP: &str = "\
Statements end with ';' and may span lines. Up and down recall earlier statements.
  CREATE TABLE … WITH (…);  CREATE [TEMPORARY] VIEW v AS …;  SET 'key' = 'value';
                        declare, for the statements that follow (docs/sql.md)
  SHOW TABLES;  SHOW VIEWS;  DESCRIBE name;
  EXPLAIN SELECT …;     the operator graph
  SELECT …;             run the query; its result is shown as a table, updated in place as
                        checkpoints commit; Ctrl-C stops it
  INSERT INTO t SELECT …;  run a job into a declared table, as `weir sql -f` does
  HELP;  QUIT;  (or Ctrl-D)";

/// Runs the shell. `flags` are engine flags (`--parallelism 2`, …) for every query.
pub fn run(registry: &JobRegistry, flags: Vec<String>) -> ExitCode {
    if let Some(flag) = flags.iter().find(|flag| flag.split('=').next() == Some(OWN_FLAG)) {
        return fail(&format!("the SQL shell sets {flag} itself for each query; leave it out"));
    }
    // The flags are checked once, before the first prompt.
    let mut checked = flags.clone();
    checked.extend(["--script".to_owned(), String::new()]);
    match parse_invocation(registry, &JobInvocation { job: "sql".into(), flags: checked }, InvocationKind::Run) {
        Ok(Invocation::Job(_)) => {}
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => return fail(&error),
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let terminated = Arc::new(AtomicBool::new(false));
    let at_prompt = Arc::new(AtomicBool::new(true));
    // Ctrl-C at the prompt reaches rustyline as a key; while a query runs it is a signal,
    // which stops the query, not the shell. A hang-up, termination or Ctrl-\ ends the shell at
    // once at the prompt; while a query runs, it stops the query first (the query's process is
    // in a group of its own, which the terminal does not reach), then ends the shell.
    let handlers = || -> std::io::Result<()> {
        signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())?;
        for signal in [signal_hook::consts::SIGHUP, signal_hook::consts::SIGTERM, signal_hook::consts::SIGQUIT] {
            signal_hook::flag::register(signal, terminated.clone())?;
            signal_hook::flag::register_conditional_default(signal, at_prompt.clone())?;
        }
        Ok(())
    };
    if let Err(error) = handlers() {
        return fail(&format!("cannot handle signals: {error}"));
    }
    // The queries' directories (results, checkpoints), removed when the shell ends.
    let scratch = match tempfile::Builder::new().prefix("weir-shell-").tempdir() {
        Ok(scratch) => scratch,
        Err(error) => return fail(&format!("cannot create a directory for the queries: {error}")),
    };
    let config =
        Config::builder().auto_add_history(false).history_ignore_dups(true).and_then(|c| c.max_history_size(1000));
    let mut editor: Editor<(), DefaultHistory> = match config.map(|c| c.build()).map(Editor::with_config) {
        Ok(Ok(editor)) => editor,
        Ok(Err(error)) => return fail(&format!("cannot open the terminal: {error}")),
        Err(error) => return fail(&format!("cannot open the terminal: {error}")),
    };
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("Weir SQL shell. Statements end with ';'. HELP; lists the commands, QUIT; leaves.");
    let mut session = Session::new();
    let mut shell = Shell { flags, interrupted, terminated, at_prompt, scratch: scratch.path().to_owned(), queries: 0 };
    let mut pending = String::new();
    loop {
        let prompt = if pending.trim().is_empty() { "weir> " } else { "   -> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => {
                if !pending.trim().is_empty() {
                    println!("[WARN] the last statement has no ';' and was not run: {}", pending.trim());
                }
                break;
            }
            Err(error) => return fail(&format!("cannot read the terminal: {error}")),
        };
        pending.push_str(&line);
        pending.push('\n');
        let (statements, rest) = weir_sql::parser::split_statements(&pending);
        pending = rest;
        for statement in statements {
            let _ = editor.add_history_entry(format!("{statement};"));
            if let Some(path) = &history {
                let _ = editor.save_history(path);
            }
            match session.execute(&statement) {
                Ok(Reply::Quit) => return ExitCode::SUCCESS,
                Ok(reply) => shell.reply(reply),
                Err(error) => println!("[ERROR] {error}"),
            }
            if shell.terminated.load(Ordering::SeqCst) {
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// `$HOME/.weir_sql_history`, where there is a home.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|home| !home.is_empty()).map(|home| Path::new(&home).join(".weir_sql_history"))
}

struct Shell {
    /// Engine flags for every query.
    flags: Vec<String>,
    /// Set by Ctrl-C.
    interrupted: Arc<AtomicBool>,
    /// Set by a hang-up or termination.
    terminated: Arc<AtomicBool>,
    /// Whether no query runs: a hang-up or termination then ends the shell at once.
    at_prompt: Arc<AtomicBool>,
    /// The shell's own directory, with one per query.
    scratch: PathBuf,
    /// Queries run, to name their directories.
    queries: u64,
}

/// A query's process: killed (and waited for) when it is dropped while it runs, however the
/// shell leaves the query.
struct Job(Child);

impl Drop for Job {
    fn drop(&mut self) {
        // Killing a process that has exited but is not waited for yet does nothing (its id is
        // not free for reuse before the wait).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Shell {
    fn reply(&mut self, reply: Reply) {
        match reply {
            Reply::Info(message) => println!("[INFO] {message}"),
            Reply::Help => println!("{HELP}"),
            Reply::Explained(plan) => println!("{plan}"),
            Reply::Table { header, rows } => {
                let left = vec![false; header.len()];
                for line in render(&header, &rows, &left, usize::MAX) {
                    println!("{line}");
                }
                println!("{} row{} in set", rows.len(), if rows.len() == 1 { "" } else { "s" });
            }
            Reply::Insert { script, writes_files } => {
                self.at_prompt.store(false, Ordering::SeqCst);
                self.run_insert(&script, writes_files);
                self.at_prompt.store(true, Ordering::SeqCst);
            }
            Reply::Select(job) => {
                self.at_prompt.store(false, Ordering::SeqCst);
                self.run_select(&job);
                self.at_prompt.store(true, Ordering::SeqCst);
            }
            Reply::Quit => unreachable!("the loop leaves on QUIT"),
        }
    }

    /// Runs an `INSERT` as `weir sql -f` would, its progress and summary on the terminal. Its
    /// checkpoints go next to its files, as `weir sql -f` puts them; a table of no files (print,
    /// blackhole) gets a directory of the shell's.
    fn run_insert(&mut self, script: &str, writes_files: bool) {
        self.queries += 1;
        let checkpoints = (!writes_files).then(|| self.scratch.join(format!("insert-{}", self.queries)));
        self.interrupted.store(false, Ordering::SeqCst);
        // Its progress, summary and errors go to the terminal as they come.
        let Some(mut job) = self.spawn(script, checkpoints.as_deref(), Stdio::inherit(), Stdio::inherit()) else {
            return;
        };
        let message = loop {
            if self.terminated.load(Ordering::SeqCst) {
                // The terminal may be gone: nothing to say.
                break None;
            }
            if self.interrupted.swap(false, Ordering::SeqCst) {
                break Some("[INFO] stopped; what its checkpoints had committed stays in the table".to_owned());
            }
            match job.0.try_wait() {
                Ok(Some(_)) => break None,
                Ok(None) => std::thread::sleep(REFRESH),
                Err(error) => break Some(format!("[ERROR] the job's process: {error}")),
            }
        };
        drop(job);
        if let Some(dir) = &checkpoints {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(message) = message {
            println!("{message}");
        }
    }

    /// Runs a `SELECT` and shows its result as it is committed.
    fn run_select(&mut self, job: &SelectJob) {
        self.queries += 1;
        let dir = self.scratch.join(format!("select-{}", self.queries));
        let result_dir = dir.join("result");
        let checkpoints = dir.join("checkpoints");
        let script = job.script(&result_dir);
        // The job's standard error, for its error message.
        let errors = dir.join("stderr");
        let stderr = match weir_core::fs::create_dir_all(&dir).and_then(|()| stderr_file(&errors)) {
            Ok(file) => file,
            Err(error) => return println!("[ERROR] cannot create {}: {error}", errors.display()),
        };
        self.interrupted.store(false, Ordering::SeqCst);
        let Some(mut child) = self.spawn(&script, Some(&checkpoints), Stdio::null(), Stdio::from(stderr)) else {
            let _ = std::fs::remove_dir_all(&dir);
            return;
        };
        let mut table = job.result();
        let live = std::io::stdout().is_terminal();
        let numeric: Vec<bool> =
            job.columns.iter().map(|(_, ty)| ty.is_numeric() || *ty == SqlType::Timestamp).collect();
        let started = weir_core::rt::now();
        let mut drawn = 0;
        let outcome = loop {
            if self.interrupted.swap(false, Ordering::SeqCst) || self.terminated.load(Ordering::SeqCst) {
                break Outcome::Stopped;
            }
            let exited = match child.0.try_wait() {
                Ok(exited) => exited,
                Err(error) => break Outcome::Failed(format!("the job's process: {error}")),
            };
            // A job commits its last files before it exits: read them after it has.
            if let Err(error) = table.poll(&result_dir) {
                break Outcome::Failed(format!("reading the result: {error}"));
            }
            if let Some(status) = exited {
                break if status.success() { Outcome::Finished } else { Outcome::Exited };
            }
            // The table, its borders, the count of rows not shown and the status line fit the
            // screen with a line to spare (a full screen would scroll at every redraw); a
            // terminal too short for that shows only the end.
            let (width, height) = terminal();
            if live && height >= 10 {
                let status = format!("{}, running {:.1} s (Ctrl-C stops)", counts(&table), seconds(started));
                drawn = redraw(drawn, &table, &numeric, height - 7, width, &status);
            }
            std::thread::sleep(REFRESH);
        };
        // Stopped, or no longer followed: the process goes.
        drop(child);
        if self.terminated.load(Ordering::SeqCst) {
            // The terminal may be gone: nothing to draw.
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let status = match &outcome {
            Outcome::Finished => format!("{}, finished in {:.1} s", counts(&table), seconds(started)),
            Outcome::Stopped => format!("{}, stopped after {:.1} s", counts(&table), seconds(started)),
            Outcome::Exited | Outcome::Failed(_) => {
                format!("{}, failed after {:.1} s", counts(&table), seconds(started))
            }
        };
        let width = if live { terminal().0 } else { usize::MAX };
        redraw(drawn, &table, &numeric, MAX_FINAL_ROWS, width, &status);
        match outcome {
            Outcome::Exited => report_failure(&errors),
            Outcome::Failed(message) => println!("[ERROR] {message}"),
            Outcome::Finished | Outcome::Stopped => {}
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Starts `weir sql --script SCRIPT` with the shell's flags, in a process group of its own
    /// (so that Ctrl-C on the terminal reaches the shell, which decides).
    fn spawn(&self, script: &str, checkpoints: Option<&Path>, stdout: Stdio, stderr: Stdio) -> Option<Job> {
        use std::os::unix::process::CommandExt;
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(error) => {
                println!("[ERROR] cannot find this program to run the job: {error}");
                return None;
            }
        };
        let mut command = Command::new(program);
        command.arg("sql").arg("--script").arg(script);
        if let Some(dir) = checkpoints {
            command.arg("--checkpoint-dir").arg(dir);
        }
        command.args(&self.flags).stdin(Stdio::null()).stdout(stdout).stderr(stderr).process_group(0);
        match command.spawn() {
            Ok(child) => Some(Job(child)),
            Err(error) => {
                println!("[ERROR] cannot start the job: {error}");
                None
            }
        }
    }
}

/// How a query ended.
enum Outcome {
    Finished,
    /// Stopped with Ctrl-C.
    Stopped,
    /// The job failed (its error is on its standard error).
    Exited,
    /// The shell could not follow it.
    Failed(String),
}

/// A file for a child process's standard error. (The child writes it, not the engine: it is
/// outside the storage seam, whose files cannot be handed to a process.)
#[allow(clippy::disallowed_methods)]
fn stderr_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

/// The failed job's own error lines (`error: …`), or all it wrote.
fn report_failure(errors: &Path) {
    let text = weir_core::fs::read_to_string(errors).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|line| line.starts_with("error: ")).collect();
    if lines.is_empty() {
        println!("[ERROR] the job failed: {}", text.trim());
    }
    for line in lines {
        println!("[ERROR] {}", line.trim_start_matches("error: "));
    }
}

fn counts(table: &ResultTable) -> String {
    let rows = table.len();
    format!("{rows} row{} ({} changes)", if rows == 1 { "" } else { "s" }, table.changes())
}

fn seconds(since: Instant) -> f64 {
    weir_core::rt::elapsed_ms(since) as f64 / 1000.0
}

/// The terminal's width and height, or 80 × 24.
fn terminal() -> (usize, usize) {
    match terminal_size::terminal_size() {
        Some((terminal_size::Width(w), terminal_size::Height(h))) if w > 0 && h > 0 => (w as usize, h as usize),
        _ => (80, 24),
    }
}

/// Draws the table over the `drawn` lines drawn last time; returns how many lines it drew.
/// Lines are cut to the terminal's width so that none wraps, which would throw the count off.
fn redraw(drawn: usize, table: &ResultTable, numeric: &[bool], limit: usize, width: usize, status: &str) -> usize {
    let rows = table.rows(limit);
    let mut lines = render(&table.header(), &rows, numeric, width);
    let hidden = table.len().saturating_sub(rows.len() as u64);
    if hidden > 0 {
        lines.push(format!("({hidden} more rows not shown)"));
    }
    lines.push(status.to_owned());
    let mut out = std::io::stdout().lock();
    if drawn > 0 {
        // Up to the first line drawn, and clear from there down.
        let _ = write!(out, "\x1b[{drawn}A\r\x1b[J");
    }
    for line in &lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    lines.len()
}

/// A table in Flink's tableau style; cells wider than [`MAX_CELL_WIDTH`] end in `...`, lines
/// are cut at `width` characters; `right[i]` aligns column `i` to the right (numbers).
fn render(header: &[String], rows: &[Vec<String>], right: &[bool], width: usize) -> Vec<String> {
    let cut = |cell: &str| -> String {
        // Control characters are shown escaped: a line break would throw the redraw's count of
        // lines off, and an escape sequence in the data must not reach the terminal.
        let mut shown = String::with_capacity(cell.len());
        for c in cell.chars() {
            if c.is_control() {
                shown.extend(c.escape_debug());
            } else {
                shown.push(c);
            }
        }
        let cell = shown;
        if cell.chars().count() <= MAX_CELL_WIDTH {
            cell
        } else {
            cell.chars().take(MAX_CELL_WIDTH - 3).chain("...".chars()).collect()
        }
    };
    let header: Vec<String> = header.iter().map(|cell| cut(cell)).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|cell| cut(cell)).collect()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|row| row[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let border: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+";
    let line = |cells: &[String]| -> String {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            let (before, after) = if right[i] { (pad, 0) } else { (0, pad) };
            text.push_str(&format!("| {}{cell}{} ", " ".repeat(before), " ".repeat(after)));
        }
        text + "|"
    };
    let mut lines = vec![border.clone(), line(&header), border.clone()];
    lines.extend(rows.iter().map(|row| line(row)));
    lines.push(border);
    lines.into_iter().map(|l| if l.chars().count() > width { l.chars().take(width).collect() } else { l }).collect()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_numbers_right_and_cut_long_cells() {
        let header = vec!["auction".to_string(), "name".to_string()];
        let rows = vec![vec!["7".to_string(), "x".repeat(40)]];
        let lines = render(&header, &rows, &[true, false], usize::MAX);
        assert_eq!(lines[1], format!("| auction | name{} |", " ".repeat(26)));
        assert_eq!(lines[3], format!("|       7 | {}... |", "x".repeat(27)));
        assert!(render(&header, &rows, &[true, false], 10).iter().all(|line| line.chars().count() <= 10));
        let rows = vec![vec!["1".to_string(), "it's\n\u{1b}[2J".to_string()]];
        assert_eq!(render(&header, &rows, &[true, false], usize::MAX)[3], "|       1 | it's\\n\\u{1b}[2J |");
    }
}
