//! The end-to-end benchmark: the main job on the embedded cluster, from the generator or a CSV
//! file, with checkpointing off or on.

use std::path::Path;
use std::time::Duration;

use weir_cluster::jobs::bids::BidsParams;
use weir_cluster::run::{run_job, RunOptions, RunSummary};
use weir_core::job::BadRecordPolicy;

/// One end-to-end measurement.
#[derive(Debug, Clone)]
pub struct E2eResult {
    /// What the run reported.
    pub summary: RunSummary,
    /// CPU seconds the process used during the run.
    pub cpu_seconds: Option<f64>,
}

impl E2eResult {
    /// Events per wall-clock second.
    pub fn events_per_second(&self) -> f64 {
        self.summary.records_read as f64 * 1000.0 / self.summary.elapsed_ms.max(1) as f64
    }
    /// Events per CPU-second.
    pub fn events_per_cpu_second(&self) -> Option<f64> {
        self.cpu_seconds.map(|cpu| self.summary.records_read as f64 / cpu.max(0.001))
    }
}

/// Runs the job over `input` (generator when `None`) into a fresh directory under `scratch`.
pub fn run(
    scratch: &Path,
    events: u64,
    input: Option<&Path>,
    parallelism: usize,
    checkpoint_interval: Option<Duration>,
) -> anyhow::Result<E2eResult> {
    let output = scratch.join(format!("out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&output);
    let params = match input {
        Some(path) => BidsParams::files(weir_core::job::resolve_input_files(path, "csv")?, &output, 10_000, 4_000),
        None => BidsParams::generated(events, 1, &output),
    };
    let mut options = RunOptions::new(params.spec(parallelism, BadRecordPolicy::Skip));
    options.checkpoint_interval = checkpoint_interval;
    let registry = weir_cluster::jobs::builtin();
    let cpu_before = weir_core::rt::process_cpu_ms();
    let summary = run_job(&registry, options)?;
    let cpu_after = weir_core::rt::process_cpu_ms();
    let cpu_seconds = cpu_before.zip(cpu_after).map(|(before, after)| (after - before) as f64 / 1000.0);
    std::fs::remove_dir_all(&output)?;
    Ok(E2eResult { summary, cpu_seconds })
}
