//! `weir run`: the embedded cluster — coordinator and every slot in one process.
//!
//! Validates the job before touching anything, claims the output directory for the job,
//! restores the newest valid checkpoint (rolling sinks forward or back to it), wires the
//! in-process exchange channels, starts one OS thread per slot and runs the coordinator on
//! the calling thread until the job finishes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use weir_core::checkpoint::{CheckpointError, CheckpointStore};
use weir_core::fs;
use weir_core::job::{JobSpec, SpecError};
use weir_core::rt;
use weir_core::time::Epoch;
use weir_dataflow::exchange::{Batch, BatchRx, BatchTx, Doorbell, ExchangeChannels, LocalChannel};
use weir_dataflow::metrics::SlotMetrics;
use weir_dataflow::JobRegistry;

use crate::coordinator::{coordinate, CoordinatorConfig, CoordinatorOutcome, CrashPoint, JobError};
use crate::deploy::{
    fence_output, launch_slot, next_generation, plan_restore, recover_sinks, restore_point, PlannedJob, SlotLaunch,
    StartingSavepoint,
};
use crate::slot::{SlotDoorbell, SlotLink};

/// How to run a job on the embedded cluster.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The job.
    pub spec: JobSpec,
    /// Checkpoint storage: a path, `file://` URL or `memory://`; `None` for `_checkpoints` in
    /// the job's first sink directory.
    pub checkpoint_location: Option<String>,
    /// Time between checkpoints; `None` for only the final one.
    pub checkpoint_interval: Option<Duration>,
    /// A checkpoint not complete this long after its trigger is declined.
    pub checkpoint_timeout: Duration,
    /// Complete checkpoints to keep.
    pub retained_checkpoints: usize,
    /// Progress lines on stderr every this often.
    pub progress_interval: Option<Duration>,
    /// Exchange channel credit, in batches.
    pub exchange_credits: usize,
    /// Stop dead at this point (tests of recovery).
    pub crash_at: Option<CrashPoint>,
    /// Throttle the sources to this many records per second in total.
    pub rate_limit: Option<u64>,
    /// Start from this savepoint (the first time it is given: after that the checkpoints the
    /// job took since win, so that a rerun resumes).
    pub from_savepoint: Option<String>,
    /// Drop restored state of operators the job no longer has, instead of refusing to start.
    pub allow_non_restored_state: bool,
    /// Where slots keep local state (RocksDB instances).
    pub local_state_dir: PathBuf,
    /// The memory each slot's RocksDB instances share, in bytes (`--state-memory-per-slot`).
    pub state_memory_per_slot_bytes: u64,
}

impl RunOptions {
    /// Defaults for `spec`: checkpoints every second next to the output, 3 kept, no progress lines.
    pub fn new(spec: JobSpec) -> Self {
        RunOptions {
            spec,
            checkpoint_location: None,
            checkpoint_interval: Some(Duration::from_secs(1)),
            checkpoint_timeout: DEFAULT_CHECKPOINT_TIMEOUT,
            retained_checkpoints: 3,
            progress_interval: None,
            exchange_credits: 16,
            crash_at: None,
            rate_limit: None,
            from_savepoint: None,
            local_state_dir: crate::deploy::default_local_state_dir(),
            state_memory_per_slot_bytes: weir_dataflow::state::DEFAULT_SLOT_MEMORY_BYTES,
            allow_non_restored_state: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// The job's id.
    pub job_id: String,
    /// The checkpoint this run started from.
    pub restored_from: Option<Epoch>,
    /// The job had already finished in an earlier run; nothing was recomputed.
    pub already_finished: bool,
    /// Records read in this run.
    pub records_read: u64,
    /// Records taken in time by a pipeline's first stateful step, in this run.
    pub records_on_time: u64,
    /// Late records in this run.
    pub records_late: u64,
    /// Malformed lines in this run.
    pub records_bad: u64,
    /// Result rows emitted in this run.
    pub rows_emitted: u64,
    /// The coordinator's figures.
    pub coordinator: CoordinatorOutcome,
    /// Wall-clock milliseconds of the run.
    pub elapsed_ms: u64,
    /// The most any slot's sources ran ahead of the aligned frontier of their group their slot
    /// had seen (ms of event time; an upper bound on the lead over the slowest source of the
    /// group that feeds aligned receivers; see `weir_dataflow::alignment`).
    pub watermark_lead_max_ms: i64,
}

/// Why a run failed.
#[derive(Debug, Error)]
pub enum RunError {
    /// The job spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The job is unknown, or its parameters or graph are wrong.
    #[error("{0}")]
    Build(String),
    /// The output directory cannot be used.
    #[error("output {path}: {reason}")]
    Output {
        /// The directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Checkpoint storage failed or is unusable.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The job failed while running.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A checkpoint that verified cannot be restored into this job.
    #[error("checkpoint {checkpoint}: {reason}")]
    Restore {
        /// The checkpoint.
        checkpoint: Epoch,
        /// Why.
        reason: String,
    },
}

const JOB_MARKER: &str = "_weir_job.json";

/// How long a checkpoint may take before it is declined (Flink's default, 10 minutes).
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// Claims the job's sink directories: creates them, and records the job's id in a hidden
/// marker in each (the output's owner), so that another job's run into the same directory is
/// refused. A directory may hold the job's other sink directories (`late/` inside the main
/// output) but nothing else. A job started from a savepoint of job `taking_over` may take that
/// job's output over: the marker then names the new job, and the old job's deployments are
/// fenced out (see [`crate::deploy::fence_output`]).
pub(crate) fn claim_output(job: &PlannedJob, job_id: &str, taking_over: Option<&str>) -> Result<(), RunError> {
    let dirs = job.sink_dirs();
    for output in &dirs {
        claim_dir(output, &dirs, &job.spec, job_id, taking_over)?;
    }
    Ok(())
}

/// The job that owns output directory `output` (its marker's job id), if any.
pub(crate) fn output_owner(output: &Path) -> Result<Option<String>, RunError> {
    let output_error = |reason: String| RunError::Output { path: output.to_path_buf(), reason };
    match fs::read_to_string(&output.join(JOB_MARKER)) {
        Ok(content) => {
            let recorded: serde_json::Value = serde_json::from_str(&content).map_err(|e| {
                output_error(format!("{JOB_MARKER} is unreadable ({e}); use an empty output directory"))
            })?;
            Ok(Some(recorded.get("job_id").and_then(|v| v.as_str()).unwrap_or("?").to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(output_error(format!("cannot read {JOB_MARKER}: {e}"))),
    }
}

fn claim_dir(
    output: &Path,
    sinks: &[PathBuf],
    spec: &JobSpec,
    job_id: &str,
    taking_over: Option<&str>,
) -> Result<(), RunError> {
    let output_error = |reason: String| RunError::Output { path: output.to_path_buf(), reason };
    fs::create_dir_all_durable(output).map_err(|e| output_error(format!("cannot create directory: {e}")))?;
    let marker = output.join(JOB_MARKER);
    let write_marker = || {
        let content = serde_json::json!({ "job_id": job_id, "spec": spec });
        fs::write_durable(&marker, &serde_json::to_vec_pretty(&content).expect("json"))
            .map_err(|e| output_error(format!("is not writable: {e}")))
    };
    match output_owner(output)? {
        Some(owner) if owner == job_id => {}
        Some(owner) if Some(owner.as_str()) == taking_over => {
            tracing::info!(output = %output.display(), from = owner, "taking the output over from the savepoint's job");
            write_marker()?;
        }
        Some(owner) => {
            return Err(output_error(format!(
                "holds the output of another job ({owner}); use an empty output directory, rerun that job's exact command to resume it, or start from a savepoint of it (--from-savepoint)"
            )));
        }
        None => {
            let has_visible = fs::read_dir(output)
                .map_err(|e| output_error(format!("cannot list directory: {e}")))?
                .iter()
                .any(|entry| !entry.name.starts_with(['.', '_']) && !sinks.contains(&entry.path));
            if has_visible {
                return Err(output_error("is not empty; use an empty or new output directory".into()));
            }
            write_marker()?;
        }
    }
    Ok(())
}

/// Runs a job of `registry` on the embedded cluster, resuming from its newest valid checkpoint.
pub fn run_job(registry: &JobRegistry, options: RunOptions) -> Result<RunSummary, RunError> {
    rt::block_on(run_job_async(registry, options))
}

async fn run_job_async(registry: &JobRegistry, options: RunOptions) -> Result<RunSummary, RunError> {
    let started = rt::now();
    options.spec.validate()?;
    let job = Arc::new(PlannedJob::new(registry, options.spec.clone()).map_err(RunError::Build)?);
    let spec = job.spec.clone();
    let job_id = spec.fingerprint();
    // A savepoint is read (and verified) and the job planned against it before anything is
    // touched: a wrong path, or a savepoint this job cannot start from, changes nothing.
    let from_savepoint = match &options.from_savepoint {
        Some(path) => {
            let savepoint = weir_core::savepoint::read_savepoint(path).await?;
            plan_restore(Some(&savepoint), &job, options.allow_non_restored_state)
                .map_err(|error| RunError::Build(format!("savepoint {path}: {error}")))?;
            Some(StartingSavepoint { path, read: Some(savepoint) })
        }
        None => None,
    };
    let taking_over = from_savepoint.as_ref().and_then(|from| from.read.as_ref()).map(|s| s.metadata.job_id.clone());
    claim_output(&job, &job_id, taking_over.as_deref())?;
    let location = match (&options.checkpoint_location, job.fence_dir()) {
        (Some(location), _) => location.clone(),
        (None, Some(dir)) => dir.join("_checkpoints").display().to_string(),
        (None, None) => {
            return Err(RunError::Build(format!(
                "job {} writes no files, so it has no default checkpoint directory; pass --checkpoint-dir",
                spec.job
            )))
        }
    };
    let store = CheckpointStore::open(&location, &job_id)?;
    let generation = next_generation(&store).await?;
    let (restored, skipped) = restore_point(&store, generation, from_savepoint).await?;
    for error in &skipped {
        eprintln!("warning: {error}; falling back to an older checkpoint");
    }
    let plan = plan_restore(restored.as_ref(), &job, options.allow_non_restored_state)?;
    let parallelism = spec.parallelism;
    fence_output(&job, generation)?;
    for slot in 0..parallelism {
        recover_sinks(&job, slot, plan.epoch, plan.attempt, plan.restored_parallelism, generation)?;
    }
    let attempt = rt::attempt_token();
    let mut summary = RunSummary {
        job_id: job_id.clone(),
        restored_from: (plan.epoch > 0).then_some(plan.epoch),
        ..Default::default()
    };
    if plan.finished {
        summary.already_finished = true;
        summary.elapsed_ms = rt::elapsed_ms(started);
        return Ok(summary);
    }
    let start_epoch = plan.start_epoch();
    if plan.epoch > 0 {
        tracing::info!(checkpoint = plan.epoch, "restored from checkpoint");
    }

    // Exchange channels: for every exchange of the job, channels[from][to].
    let doorbells: Vec<Arc<SlotDoorbell>> = (0..parallelism).map(|_| Arc::new(SlotDoorbell::default())).collect();
    let mut slot_exchanges: Vec<Vec<ExchangeChannels>> = (0..parallelism).map(|_| Vec::new()).collect();
    if parallelism > 1 {
        for _exchange in 0..job.plan.exchanges {
            let mut senders: Vec<Vec<BatchTx>> = (0..parallelism).map(|_| Vec::new()).collect();
            let mut receivers: Vec<Vec<BatchRx>> = (0..parallelism).map(|_| Vec::new()).collect();
            for (from, sender_list) in senders.iter_mut().enumerate() {
                for (to, receiver_list) in receivers.iter_mut().enumerate() {
                    let to_bell: Arc<dyn Doorbell> = doorbells[to].clone();
                    let from_bell: Arc<dyn Doorbell> = doorbells[from].clone();
                    let channel = LocalChannel::<Batch>::new(options.exchange_credits, to_bell, from_bell);
                    sender_list.push(Box::new(channel.clone()));
                    receiver_list.push(Box::new(channel));
                }
            }
            for (slot, (senders, receivers)) in senders.into_iter().zip(receivers).enumerate() {
                slot_exchanges[slot].push(ExchangeChannels { senders, receivers });
            }
        }
    }

    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut links = Vec::new();
    let mut handles = Vec::new();
    let mut metrics = Vec::new();
    for ((slot, exchanges), snapshot) in slot_exchanges.into_iter().enumerate().zip(plan.slots) {
        let slot_metrics = Arc::new(SlotMetrics::default());
        metrics.push(slot_metrics.clone());
        let (commands_tx, commands_rx) = tokio::sync::mpsc::unbounded_channel();
        links.push(SlotLink::new(commands_tx, doorbells[slot].clone()));
        handles.push(launch_slot(SlotLaunch {
            job: job.clone(),
            slot,
            attempt,
            generation,
            start_epoch,
            snapshot,
            restored_attempt: plan.attempt,
            exchanges,
            metrics: slot_metrics,
            commands: commands_rx,
            events: events_tx.clone(),
            doorbell: doorbells[slot].clone(),
            rate_limit: options.rate_limit.map(|rate| (rate / parallelism as u64).max(1)),
            store: store.clone(),
            local_state_dir: options.local_state_dir.clone(),
            state_memory_per_slot_bytes: options.state_memory_per_slot_bytes,
        })?);
    }
    drop(events_tx);

    let config = CoordinatorConfig {
        job_id,
        parallelism,
        checkpoint_interval: options.checkpoint_interval,
        checkpoint_timeout: options.checkpoint_timeout,
        retained_checkpoints: options.retained_checkpoints,
        progress_interval: options.progress_interval,
        crash_at: options.crash_at,
        attempt,
        generation,
        last_checkpoint: None,
    };
    let result = coordinate(config, store, links, events_rx, metrics.clone(), start_epoch, None).await;
    let mut panics = Vec::new();
    for (slot, handle) in handles.into_iter().enumerate() {
        if let Err(panic) = handle.join().await {
            panics.push(format!("slot {slot} panicked: {panic}"));
        }
    }
    if let Some(panic) = panics.into_iter().next() {
        return Err(JobError::SlotFailed { slot: 0, message: panic }.into());
    }
    summary.coordinator = result?;
    let total =
        |f: fn(&SlotMetrics) -> &std::sync::atomic::AtomicU64| metrics.iter().map(|m| SlotMetrics::get(f(m))).sum();
    summary.records_read = total(|m| &m.records_read);
    summary.records_on_time = total(|m| &m.records_on_time);
    summary.records_late = total(|m| &m.records_late);
    summary.records_bad = total(|m| &m.records_bad);
    summary.rows_emitted = total(|m| &m.rows_emitted);
    summary.elapsed_ms = rt::elapsed_ms(started);
    summary.watermark_lead_max_ms =
        metrics.iter().map(|m| m.watermark_lead_max_ms.load(std::sync::atomic::Ordering::Relaxed)).max().unwrap_or(0);
    Ok(summary)
}

/// Absolute form of `path` (which need not exist yet), for stable job fingerprints.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
