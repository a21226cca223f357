//! The `weir` binary.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use weir_cluster::cli::{Cli, Command, RunJob};
use weir_cluster::run::{run_bids_job, RunSummary};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(RunJob::Bids(args)) => {
            let options = match args.to_options() {
                Ok(options) => options,
                Err(error) => return fail(&error.to_string()),
            };
            let cpu_before = weir_core::rt::process_cpu_ms();
            match run_bids_job(options) {
                Ok(summary) => {
                    print_summary(&summary, cpu_before);
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error.to_string()),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn print_summary(summary: &RunSummary, cpu_before: Option<u64>) {
    let restored = summary.restored_from.map_or("none".to_string(), |c| format!("checkpoint {c}"));
    if summary.already_finished {
        println!("job {}: already finished (final checkpoint {restored}); output is committed", summary.job_id);
        return;
    }
    let seconds = summary.elapsed_ms.max(1) as f64 / 1000.0;
    let cpu_seconds = match (cpu_before, weir_core::rt::process_cpu_ms()) {
        (Some(before), Some(after)) => Some((after - before).max(1) as f64 / 1000.0),
        _ => None,
    };
    println!("job {} finished", summary.job_id);
    println!("  restored from:      {restored}");
    println!("  events read:        {}", summary.records_read);
    println!("  counted in windows: {}", summary.records_on_time);
    println!("  late (to late/):    {}", summary.records_late);
    println!("  malformed (errors/): {}", summary.records_bad);
    println!("  result rows:        {}", summary.rows_emitted);
    println!(
        "  checkpoints:        {} completed (last {}), {} declined, {} state bytes",
        summary.coordinator.checkpoints_completed,
        summary.coordinator.last_checkpoint.map_or("-".into(), |c| c.to_string()),
        summary.coordinator.checkpoints_declined,
        summary.coordinator.state_bytes
    );
    println!("  wall time:          {seconds:.3} s ({:.0} events/s)", summary.records_read as f64 / seconds);
    if let Some(cpu) = cpu_seconds {
        println!("  cpu time:           {cpu:.3} s ({:.0} events per cpu-second)", summary.records_read as f64 / cpu);
    }
    if let Some(rss) = weir_core::rt::peak_rss_kib() {
        println!("  peak memory:        {:.1} MiB", rss as f64 / 1024.0);
    }
}
