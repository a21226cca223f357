//! `weir-bench`: end-to-end figures for docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release -p weir-bench -- e2e --events 10000000      # matrix: 1,2 slots × checkpoints off/1s
//! cargo run --release -p weir-bench -- baseline --events 10000000  # hand-written timely ceiling
//! cargo run --release -p weir-bench -- nexmark --events 4000000     # SQL on Weir and Flink 2.3
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use weir_bench::median;
use weir_core::generator::GeneratorConfig;

/// The allocator of the `weir` binary, so that jobs run here as they run there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Weir end-to-end benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on the embedded cluster: slots × checkpointing matrix.
    E2e {
        /// Events to generate.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Read this CSV file or directory instead of generating.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Slot counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        parallelism: Vec<usize>,
        /// Checkpoint intervals in ms (0 = only the final checkpoint).
        #[arg(long, value_delimiter = ',', default_value = "0,1000")]
        checkpoint_ms: Vec<u64>,
        /// Repetitions of each configuration (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Scratch directory for output and checkpoints.
        #[arg(long, default_value = "/tmp/weir-bench")]
        scratch: PathBuf,
    },
    /// The hand-written single-worker timely program.
    Baseline {
        /// Events to generate.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Parse CSV (pre-rendered in memory) instead of generating in place.
        #[arg(long)]
        csv: bool,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// The Nexmark queries in SQL (`bench/sql/`) on Weir and on Flink 2.3 (PyFlink), over the
    /// same generated files, at parallelism 1: rows per second and Weir's speed over Flink's.
    Nexmark {
        /// Nexmark events to generate.
        #[arg(long, default_value_t = 4_000_000)]
        events: u64,
        /// The queries (default: all of `bench/sql/`).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<String>,
        /// Runs of each query on Weir.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        weir_runs: u64,
        /// Runs of each query on Flink (0 leaves Flink out).
        #[arg(long, default_value_t = 2)]
        flink_runs: usize,
        /// Weir's checkpoint interval in ms (0 = only the final checkpoint; Flink takes none).
        #[arg(long, default_value_t = 1000)]
        checkpoint_ms: u64,
        /// The Python with PyFlink 2.3 (`pip install apache-flink==2.3.0`).
        #[arg(long, default_value = "/tmp/venv-flink/bin/python")]
        flink_python: PathBuf,
        /// Flink's SQL runner (`../shared/peers/flink/run_sql.py`).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/peers/flink/run_sql.py"))]
        run_sql: PathBuf,
        /// Where the run makes its directory (input and checkpoints; removed at the end).
        #[arg(long, default_value = "/tmp")]
        scratch: PathBuf,
    },
    /// State larger than memory: the `dedup` job keyed on tens of millions of ids, in a memory
    /// cgroup below its state, SIGKILLed after a checkpoint and resumed; output checked
    /// against the reference. Needs root (it makes the cgroup) and a binary with RocksDB.
    LargerThanMemory {
        /// The binary with the example jobs, built with RocksDB
        /// (`cargo build --release -p weir-example --features rocksdb`).
        #[arg(long, default_value = "target/release/weir-example")]
        weir: PathBuf,
        /// Deliveries to generate (a tenth are retries; the rest are distinct ids).
        #[arg(long, default_value_t = 40_000_000)]
        events: u64,
        /// Slots.
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        /// The memory limit, in MiB.
        #[arg(long, default_value_t = 1024)]
        memory_limit_mib: u64,
        /// `rocksdb`, or `memory` to see the kernel kill the same job.
        #[arg(long, default_value = "rocksdb")]
        backend: String,
        /// SIGKILL the first run once this checkpoint has completed.
        #[arg(long, default_value_t = 20)]
        kill_after_checkpoint: u64,
        /// Scratch directory (removed first).
        #[arg(long, default_value = "/tmp/weir-larger-than-memory")]
        scratch: PathBuf,
    },
    /// Writes `events` generated bids as a CSV file (for `e2e --input`).
    WriteCsv {
        /// Events to generate.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// The file to write.
        #[arg(long)]
        path: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::E2e { events, input, parallelism, checkpoint_ms, repeat, scratch } => {
            weir_core::fs::create_dir_all(&scratch)?;
            println!("| slots | checkpoints | events | events/s (median of {repeat}) | events per CPU-second | checkpoints completed |");
            println!("|---|---|---|---|---|---|");
            for &slots in &parallelism {
                for &interval in &checkpoint_ms {
                    let mut rates = Vec::new();
                    let mut cpu_rates = Vec::new();
                    let mut completed = 0;
                    let mut read = 0;
                    for _ in 0..repeat {
                        let interval_option = (interval > 0).then(|| Duration::from_millis(interval));
                        let result = weir_bench::e2e::run(&scratch, events, input.as_deref(), slots, interval_option)?;
                        rates.push(result.events_per_second());
                        cpu_rates.push(result.events_per_cpu_second().unwrap_or(f64::NAN));
                        completed = result.summary.coordinator.checkpoints_completed;
                        read = result.summary.records_read;
                    }
                    let label =
                        if interval == 0 { "off (final only)".to_string() } else { format!("every {interval} ms") };
                    println!(
                        "| {slots} | {label} | {read} | {:.2} M | {:.2} M | {completed} |",
                        median(&rates) / 1e6,
                        median(&cpu_rates) / 1e6
                    );
                }
            }
            if let Some(rss) = weir_core::rt::peak_rss_kib() {
                println!("\npeak RSS of the benchmark process: {:.1} MiB", rss as f64 / 1024.0);
            }
        }
        Command::Baseline { events, csv, repeat } => {
            let config = GeneratorConfig::new(events, 1);
            let rendered = csv.then(|| weir_bench::baseline::generated_csv(&config));
            let mut rates = Vec::new();
            let mut rows = 0;
            for _ in 0..repeat {
                let result = weir_bench::baseline::run(config, rendered.as_deref(), 10_000, 4_000);
                rates.push(result.events as f64 / result.seconds);
                rows = result.rows;
            }
            println!(
                "baseline ({}): {events} events, {rows} rows, {:.2} M events/s (median of {repeat})",
                if csv { "parse CSV" } else { "generator" },
                median(&rates) / 1e6
            );
        }
        Command::Nexmark { events, queries, weir_runs, flink_runs, checkpoint_ms, flink_python, run_sql, scratch } => {
            use weir_bench::nexmark::{NexmarkConfig, HEADER, QUERIES};
            let queries = if queries.is_empty() { QUERIES.iter().map(|q| q.to_string()).collect() } else { queries };
            let config = NexmarkConfig {
                events,
                queries,
                weir_runs: weir_runs as usize,
                flink_runs,
                checkpoint_interval: (checkpoint_ms > 0).then(|| Duration::from_millis(checkpoint_ms)),
                flink_python,
                run_sql,
                scratch,
            };
            println!(
                "{events} Nexmark events; parallelism 1; Weir checkpoints every {checkpoint_ms} ms (0: final only)\n"
            );
            println!("{HEADER}");
            weir_bench::nexmark::run(&config, |figures| println!("{}", figures.markdown()))?;
        }
        Command::LargerThanMemory {
            weir,
            events,
            parallelism,
            memory_limit_mib,
            backend,
            kill_after_checkpoint,
            scratch,
        } => {
            weir_bench::larger_than_memory::run(&weir_bench::larger_than_memory::Config {
                weir,
                events,
                parallelism,
                memory_limit: memory_limit_mib << 20,
                backend,
                kill_after_checkpoint,
                scratch,
            })?;
        }
        Command::WriteCsv { events, path } => {
            let config = GeneratorConfig::new(events, 1);
            let mut content = format!("{}\n", weir_core::bid::BID_HEADER).into_bytes();
            content.extend(weir_bench::baseline::generated_csv(&config));
            weir_core::fs::write(&path, &content)?;
            println!("wrote {} bids to {}", events, path.display());
        }
    }
    Ok(())
}
