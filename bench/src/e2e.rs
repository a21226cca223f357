//! The end-to-end benchmark: the main job on the embedded cluster, from the generator or a CSV
//! file, with checkpointing off or on.

use std::path::Path;
use std::time::Duration;

use weir_cluster::run::{run_bids_job, RunOptions, RunSummary};
use weir_core::generator::GeneratorConfig;
use weir_core::job::{BadRecordPolicy, BidsJobSpec, InputSpec};

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
    let input = match input {
        Some(path) => InputSpec::Files(weir_core::job::resolve_input_files(path)?),
        None => InputSpec::Generator(GeneratorConfig::new(events, 1)),
    };
    let spec = BidsJobSpec {
        input,
        output_dir: output.clone(),
        parallelism,
        window_ms: 10_000,
        out_of_orderness_ms: 4_000,
        on_bad_record: BadRecordPolicy::Skip,
    };
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = checkpoint_interval;
    let cpu_before = weir_core::rt::process_cpu_ms();
    let summary = run_bids_job(options)?;
    let cpu_after = weir_core::rt::process_cpu_ms();
    let cpu_seconds = cpu_before.zip(cpu_after).map(|(before, after)| (after - before) as f64 / 1000.0);
    std::fs::remove_dir_all(&output)?;
    Ok(E2eResult { summary, cpu_seconds })
}
