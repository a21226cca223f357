//! `weir-bench nexmark`: the Nexmark queries in SQL on Weir and on Flink, over the same files.
//!
//! Weir's Nexmark generator writes the input once — the bids (twice: with the columns q0–q2
//! read, and with all of them) and the auctions — as one CSV file each, in time order. Then
//! every query of `bench/sql/` runs over those files, on Weir in this process (the `sql` job on
//! the embedded cluster, parallelism 1) and on Flink 2.3 through PyFlink's `run_sql.py` (also
//! parallelism 1), both into `blackhole`. The SQL is the same text for both.
//!
//! Weir's figures are its own run summary: rows read over wall time, and over the CPU time of
//! this process during the run (the slot thread and the mostly idle coordinator). Flink's is its
//! net runtime (without JVM start and planning). "Per core" is per slot: Flink at parallelism 1
//! runs a reader thread beside its task thread, so its figure is, if anything, flattered.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use weir_cluster::run::{run_job, RunOptions};

use crate::median;
use weir_core::job::BadRecordPolicy;

/// The queries of `bench/sql/`, in the order they are reported.
pub const QUERIES: [&str; 13] =
    ["q0", "q1", "q2", "tumble", "q5hop", "q7", "q11", "q4", "q9", "q15", "q17", "q18", "q19"];

/// How to run the comparison.
#[derive(Clone, Debug)]
pub struct NexmarkConfig {
    /// Nexmark events to generate (about 92 % of them bids, 6 % auctions).
    pub events: u64,
    /// The queries (names of files in `bench/sql/`).
    pub queries: Vec<String>,
    /// Runs of each query on Weir (the median is reported).
    pub weir_runs: usize,
    /// Runs of each query on Flink; `0` leaves Flink out.
    pub flink_runs: usize,
    /// Weir's checkpoint interval; `None` for only the final checkpoint.
    pub checkpoint_interval: Option<Duration>,
    /// The Python with PyFlink 2.3.
    pub flink_python: PathBuf,
    /// `../shared/peers/flink/run_sql.py`.
    pub run_sql: PathBuf,
    /// Where the run's directory (input, checkpoints; removed at the end) is made.
    pub scratch: PathBuf,
}

/// One query's figures.
#[derive(Clone, Debug)]
pub struct QueryFigures {
    /// The query.
    pub query: String,
    /// Rows the query read (its tables' rows).
    pub rows: u64,
    /// Weir's wall seconds, each run.
    pub weir_seconds: Vec<f64>,
    /// Weir's CPU seconds, each run.
    pub weir_cpu_seconds: Vec<f64>,
    /// Flink's net runtime, each run.
    pub flink_seconds: Vec<f64>,
}

impl QueryFigures {
    /// The table row: rows/s on Weir by wall and CPU time, on Flink, and Weir's speed over
    /// Flink's (medians).
    pub fn markdown(&self) -> String {
        let rate = |seconds: f64| self.rows as f64 / seconds / 1e6;
        let (weir, cpu, flink) =
            (median(&self.weir_seconds), median(&self.weir_cpu_seconds), median(&self.flink_seconds));
        let flink_cell = if self.flink_seconds.is_empty() {
            "-".to_owned()
        } else {
            format!("{flink:.2} s, {:.2} M/s", rate(flink))
        };
        let ratio = if self.flink_seconds.is_empty() { "-".to_owned() } else { format!("{:.1}×", flink / weir) };
        format!(
            "| {} | {} | {weir:.2} s, {:.2} M/s | {:.2} M | {flink_cell} | {ratio} |",
            self.query,
            self.rows,
            rate(weir),
            rate(cpu)
        )
    }
}

/// The table's header.
pub const HEADER: &str = "| query | rows read | Weir (median): wall, rows/s | Weir rows per CPU-second | \
                          Flink 2.3 (median): net runtime, rows/s | Weir's speed over Flink's |\n|---|---|---|---|---|---|";

/// Generates the input, then runs each query; calls `report` with each query's figures.
pub fn run(config: &NexmarkConfig, mut report: impl FnMut(&QueryFigures)) -> anyhow::Result<()> {
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    for query in &config.queries {
        if !sql.join(format!("{query}.sql")).exists() {
            bail!("no query {query}: the queries are {}", QUERIES.join(", "));
        }
    }
    if config.flink_runs > 0 {
        for (path, what) in [(&config.flink_python, "--flink-python"), (&config.run_sql, "--run-sql")] {
            if !path.exists() {
                bail!("{what} {} does not exist (or pass --flink-runs 0 to leave Flink out)", path.display());
            }
        }
    }
    // A directory of this run's own, so that nothing else under the scratch directory goes.
    let work = config.scratch.join(format!("weir-bench-nexmark-{}", std::process::id()));
    weir_core::fs::create_dir_all(&work)?;
    let result = run_in(config, &sql, &work, &mut report);
    let cleanup = std::fs::remove_dir_all(&work);
    result?;
    Ok(cleanup?)
}

fn run_in(
    config: &NexmarkConfig,
    sql: &Path,
    work: &Path,
    report: &mut impl FnMut(&QueryFigures),
) -> anyhow::Result<()> {
    let files = generate(config, sql, work)?;
    for query in &config.queries {
        let script = query_script(sql, query, &files)?;
        let script_path = work.join(format!("{query}.sql"));
        weir_core::fs::write(&script_path, script.as_bytes())?;
        let mut figures = QueryFigures {
            query: query.clone(),
            rows: 0,
            weir_seconds: Vec::new(),
            weir_cpu_seconds: Vec::new(),
            flink_seconds: Vec::new(),
        };
        // Alternately, so that both see the machine in the same state.
        for run in 0..config.weir_runs.max(config.flink_runs) {
            if run < config.weir_runs {
                let (rows, seconds, cpu) = run_weir(config, work, &script)?;
                figures.rows = rows;
                figures.weir_seconds.push(seconds);
                figures.weir_cpu_seconds.push(cpu);
            }
            if run < config.flink_runs {
                figures.flink_seconds.push(run_flink(config, &script_path)?);
            }
        }
        report(&figures);
    }
    Ok(())
}

/// The generated files: `(placeholder, path)` for `${BIDS}`, `${BIDS_FULL}` and `${AUCTIONS}`.
type InputFiles = Vec<(&'static str, PathBuf)>;

/// Writes the input with Weir's Nexmark generator (one slot, so that each file is in time
/// order), each table's part files joined into one file.
fn generate(config: &NexmarkConfig, sql: &Path, work: &Path) -> anyhow::Result<InputFiles> {
    let out = work.join("generated");
    let export = weir_core::fs::read_to_string(&sql.join("export_bids.sql"))?
        .replace("${OUT}", &out.display().to_string())
        .replace("${EVENTS}", &config.events.to_string());
    let mut options = sql_options(export)?;
    options.checkpoint_location = Some(work.join("export-checkpoints").display().to_string());
    run_job(&weir_cluster::jobs::builtin(), options).context("generating the input")?;
    let mut files = Vec::new();
    for (placeholder, table) in [("${BIDS}", "bids"), ("${BIDS_FULL}", "bids_full"), ("${AUCTIONS}", "auctions")] {
        let mut parts: Vec<PathBuf> = weir_core::fs::read_dir(&out.join(table))?
            .into_iter()
            .filter(|entry| entry.name.starts_with("part-"))
            .map(|entry| entry.path)
            .collect();
        parts.sort();
        let mut joined = Vec::new();
        for part in parts {
            joined.extend(weir_core::fs::read(&part)?);
        }
        let file = work.join(format!("{table}.csv"));
        weir_core::fs::write(&file, &joined)?;
        files.push((placeholder, file));
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(files)
}

/// A query's script: the shared tables its first line names (`-- over: FILE`), then the query,
/// with the input files put in.
fn query_script(sql: &Path, query: &str, files: &InputFiles) -> anyhow::Result<String> {
    let text = weir_core::fs::read_to_string(&sql.join(format!("{query}.sql")))?;
    let mut script = match text.lines().next().and_then(|line| line.strip_prefix("-- over: ")) {
        Some(over) => weir_core::fs::read_to_string(&sql.join(over.trim()))? + &text,
        None => text,
    };
    for (placeholder, file) in files {
        script = script.replace(placeholder, &file.display().to_string());
    }
    Ok(script)
}

fn sql_options(script: String) -> anyhow::Result<RunOptions> {
    let registry = weir_cluster::jobs::builtin();
    let given = [("script".to_owned(), script)].into_iter().collect();
    let def = registry.get("sql").map_err(anyhow::Error::msg)?;
    let spec = def.spec(&given, 1, BadRecordPolicy::Fail).map_err(anyhow::Error::msg)?;
    Ok(RunOptions::new(spec))
}

/// One run on Weir: rows read, wall seconds, CPU seconds.
fn run_weir(config: &NexmarkConfig, work: &Path, script: &str) -> anyhow::Result<(u64, f64, f64)> {
    let checkpoints = work.join("checkpoints");
    let _ = std::fs::remove_dir_all(&checkpoints);
    let mut options = sql_options(script.to_owned())?;
    options.checkpoint_location = Some(checkpoints.display().to_string());
    options.checkpoint_interval = config.checkpoint_interval;
    let cpu_before = weir_core::rt::process_cpu_ms().context("this platform reports no CPU time")?;
    let summary = run_job(&weir_cluster::jobs::builtin(), options)?;
    let cpu = weir_core::rt::process_cpu_ms().context("this platform reports no CPU time")? - cpu_before;
    Ok((summary.records_read, summary.elapsed_ms as f64 / 1000.0, cpu as f64 / 1000.0))
}

/// One run on Flink: its net runtime in seconds.
fn run_flink(config: &NexmarkConfig, script: &Path) -> anyhow::Result<f64> {
    let output = Command::new(&config.flink_python)
        .arg(&config.run_sql)
        .arg(script)
        .output()
        .with_context(|| format!("running {}", config.flink_python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let runtime = last
        .split("\"net_runtime_s\":")
        .nth(1)
        .and_then(|rest| rest.trim_start().split([',', '}']).next())
        .and_then(|number| number.trim().parse::<f64>().ok());
    match runtime {
        Some(seconds) if output.status.success() => Ok(seconds),
        _ => bail!(
            "Flink did not report a net runtime for {} (its last lines: {last} / {})",
            script.display(),
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_file_composes_with_its_shared_tables_and_plans() {
        let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let files: InputFiles = vec![
            ("${BIDS}", PathBuf::from("/data/bids.csv")),
            ("${BIDS_FULL}", PathBuf::from("/data/bids_full.csv")),
            ("${AUCTIONS}", PathBuf::from("/data/auctions.csv")),
        ];
        for query in QUERIES {
            let script = query_script(&sql, query, &files).unwrap();
            assert!(!script.contains("${"), "{query}: every placeholder is filled");
            weir_sql::plan_script(&script).unwrap_or_else(|error| panic!("{query}: {error}"));
            sql_options(script).unwrap_or_else(|error| panic!("{query}: {error}"));
        }
        let figures = QueryFigures {
            query: "q0".into(),
            rows: 4_000_000,
            weir_seconds: vec![1.0, 2.0, 0.5],
            weir_cpu_seconds: vec![1.0, 1.0, 1.0],
            flink_seconds: vec![4.0, 6.0],
        };
        assert_eq!(figures.markdown(), "| q0 | 4000000 | 1.00 s, 4.00 M/s | 4.00 M | 4.00 s, 1.00 M/s | 4.0× |");
    }
}
