//! The checkpoint coordinator: triggers checkpoints, assembles them, completes them, and tells
//! the sinks to commit.
//!
//! Checkpoint `n` closes epoch `n`. The coordinator triggers it (every slot's sources move to
//! epoch `n + 1` at their next record boundary), waits until every slot has uploaded its state
//! file to the checkpoint store — slots upload their own state, so that none is uploaded
//! through the coordinator, which sees only each file's name, size and checksum — writes
//! `_metadata` last, and only then sends `Complete(n)`, on which sinks commit what they staged
//! for epochs `<= n`. At most one checkpoint is in flight. A checkpoint a slot cannot upload
//! its state of, or that does not complete within the checkpoint timeout, is declined: the
//! next one covers its epoch too. When every split has been read to its end, a
//! final checkpoint closes the last epoch and the job ends.
//!
//! Events come from slots that may run in other processes: a slot number out of range, or a
//! second snapshot of one checkpoint from one slot, is a protocol violation that ends the
//! attempt (never an index out of bounds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc::UnboundedReceiver;

use weir_core::checkpoint::{
    slot_state_file, with_retries, CheckpointError, CheckpointMetadata, CheckpointStore, FileEntry, FORMAT_VERSION,
};
use weir_core::faultpoint::{self, Moment, PlantedBug};
use weir_core::rt;
use weir_core::time::Epoch;
use weir_dataflow::metrics::SlotMetrics;

use crate::slot::{SavepointTarget, SlotCommand, SlotEvent, SlotLink};
use weir_core::savepoint::{savepoint_name, savepoint_state_file};

/// A point at which tests make the embedded cluster stop dead, as if the process were killed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// When the report of the `slots + 1`-th slot's state file of checkpoint `checkpoint`
    /// arrives, before `_metadata` (at least that many files are stored: slots upload their own).
    DuringUpload {
        /// The checkpoint.
        checkpoint: Epoch,
        /// State files the coordinator had taken in before the crash.
        slots: usize,
    },
    /// After checkpoint `checkpoint`'s `_metadata` is written, before any sink commits.
    BeforeCommit {
        /// The checkpoint.
        checkpoint: Epoch,
    },
    /// When checkpoint `checkpoint` is triggered (output of its epoch is staged, not committed).
    AtTrigger {
        /// The checkpoint.
        checkpoint: Epoch,
    },
}

/// Why a job did not finish.
#[derive(Debug, Error)]
pub enum JobError {
    /// A slot failed.
    #[error("slot {slot}: {message}")]
    SlotFailed {
        /// The slot.
        slot: usize,
        /// Its error.
        message: String,
    },
    /// A worker running slots of the job was lost; the job can restart from its latest checkpoint.
    #[error("{0}")]
    WorkerLost(String),
    /// A connection between two workers of the attempt failed; the job can restart from its
    /// latest checkpoint.
    #[error("{0}")]
    LinkFailed(String),
    /// A slot's events broke the protocol (a slot number out of range, a duplicate snapshot).
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
    /// The final checkpoint did not complete within the checkpoint timeout.
    #[error("the final checkpoint {checkpoint} did not complete within {timeout:?}")]
    FinalCheckpointTimedOut {
        /// The checkpoint.
        checkpoint: Epoch,
        /// The timeout.
        timeout: Duration,
    },
    /// A slot could not commit its output; a restart from the latest checkpoint commits again.
    #[error("slot {slot}: {message}")]
    CommitFailed {
        /// The slot.
        slot: usize,
        /// Its error.
        message: String,
    },
    /// Checkpoint storage failed persistently.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A slot could not upload its state of the final checkpoint; a restart takes it again.
    #[error("{0}")]
    StateUpload(String),
    /// Too many checkpoints in a row failed.
    #[error("{failures} checkpoints in a row failed, the last with: {last}")]
    CheckpointsFailing {
        /// How many.
        failures: u32,
        /// The last error.
        last: String,
    },
    /// A crash point was reached (tests only).
    #[error("crashed at {0:?}")]
    Crashed(CrashPoint),
}

/// How the coordinator runs a job.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// The job's id.
    pub job_id: String,
    /// Number of slots.
    pub parallelism: usize,
    /// Time between checkpoint triggers; `None` takes only the final checkpoint.
    pub checkpoint_interval: Option<Duration>,
    /// A checkpoint not complete this long after its trigger is declined.
    pub checkpoint_timeout: Duration,
    /// Complete checkpoints to keep.
    pub retained_checkpoints: usize,
    /// Print progress lines to stderr every this often.
    pub progress_interval: Option<Duration>,
    /// Stop dead at this point (tests).
    pub crash_at: Option<CrashPoint>,
    /// The deployment attempt, recorded in every checkpoint's metadata.
    pub attempt: u64,
    /// The deployment generation, recorded in every checkpoint's metadata.
    pub generation: u64,
    /// Updated with the id of every completed checkpoint (for status reports).
    pub last_checkpoint: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// What the coordinator reports at the end.
#[derive(Clone, Debug, Default)]
pub struct CoordinatorOutcome {
    /// Checkpoints completed in this run (including the final one).
    pub checkpoints_completed: u64,
    /// The last completed checkpoint.
    pub last_checkpoint: Option<Epoch>,
    /// Checkpoints declined after storage failures.
    pub checkpoints_declined: u64,
    /// Bytes of state uploaded.
    pub state_bytes: u64,
    /// The job was stopped with a savepoint, written here.
    pub stopped_with_savepoint: Option<String>,
}

/// The job record that marks a job stopped with a savepoint; it holds the savepoint's path. It
/// is written before the stop is reported, so that a restarted coordinator never resumes a job
/// whose savepoint a client may already be starting another job from.
pub const STOPPED_RECORD: &str = "_stopped";

/// A savepoint a client asked for: taken as the next checkpoint, whose slots upload their state
/// files to `dir` too ([`weir_core::savepoint`]). With `stop`, the job stops once the savepoint is
/// written and every slot has committed the output it covers, so that a job started from it
/// duplicates nothing.
#[derive(Debug)]
pub struct SavepointRequest {
    /// Where to write the savepoint (a directory location: path, `file://` or `memory://`).
    pub dir: String,
    /// Stop the job after it.
    pub stop: bool,
    /// The savepoint's path, or why it could not be taken.
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

impl SavepointRequest {
    fn refuse(self, reason: String) {
        tracing::warn!(%reason, "savepoint not taken");
        let _ = self.reply.send(Err(reason));
    }
}

/// Consecutive failed checkpoints after which the job fails.
const TOLERABLE_CHECKPOINT_FAILURES: u32 = 5;

struct Pending {
    checkpoint: Epoch,
    last: bool,
    files: BTreeMap<usize, FileEntry>,
    /// The shared files the slots' state files name (an incremental checkpoint's), by name.
    shared: BTreeMap<String, FileEntry>,
    /// For a savepoint's checkpoint: the savepoint's part.
    savepoint: Option<PendingSavepoint>,
    /// Declined if not complete by then.
    deadline: rt::Instant,
}

/// A savepoint's checkpoint in flight: where the savepoint goes, each slot's file there, and
/// whether a slot could not write its file (the savepoint is refused then; the checkpoint goes
/// on).
struct PendingSavepoint {
    target: SavepointTarget,
    files: BTreeMap<usize, FileEntry>,
    failed: bool,
}

/// Gives up `pending`'s savepoint: refuses the request for it (unless refused already) with
/// `reason`, and deletes what its slots uploaded (best effort: a slot still uploading may leave
/// a file behind, in a directory no `_metadata` completes).
async fn abandon_savepoint(pending: PendingSavepoint, request: &mut Option<SavepointRequest>, reason: String) {
    if !pending.failed {
        if let Some(request) = request.take() {
            request.refuse(reason);
        }
    }
    let PendingSavepoint { target, .. } = pending;
    if let Err(error) = weir_core::savepoint::delete_savepoint(&target.dir, &target.name).await {
        tracing::warn!(dir = target.dir, name = target.name, %error, "cannot delete an abandoned savepoint's files");
    }
}

impl Pending {
    fn new(checkpoint: Epoch, last: bool, timeout: Duration) -> Self {
        Pending {
            checkpoint,
            last,
            files: BTreeMap::new(),
            shared: BTreeMap::new(),
            savepoint: None,
            deadline: rt::now() + timeout,
        }
    }
}

/// A protocol violation by whoever sent an event (recorded for the simulator, whose peers are
/// all honest).
fn violation(message: String) -> JobError {
    faultpoint::protocol_violation(&message);
    JobError::ProtocolViolation(message)
}

/// Checks that the slot an event names exists: events may come from other processes.
fn check_slot(event: &SlotEvent, parallelism: usize) -> Result<(), JobError> {
    let slot = match event {
        SlotEvent::Snapshot { slot, .. }
        | SlotEvent::SnapshotFailed { slot, .. }
        | SlotEvent::Failed { slot, .. }
        | SlotEvent::CommitFailed { slot, .. }
        | SlotEvent::InputDone { slot }
        | SlotEvent::Committed { slot, .. } => *slot,
        SlotEvent::WorkerLost { .. } | SlotEvent::LinkFailed { .. } => return Ok(()),
    };
    if slot < parallelism {
        Ok(())
    } else {
        Err(violation(format!("an event names slot {slot}; the job has {parallelism} slots")))
    }
}

/// Runs the coordinator until the job finishes, fails, or is stopped with a savepoint.
/// `start_epoch` is the first epoch of this run (restored checkpoint + 1). Savepoints are asked
/// for on `requests` (a client's; `None` where nobody can ask).
pub async fn coordinate(
    config: CoordinatorConfig,
    store: CheckpointStore,
    slots: Vec<SlotLink>,
    mut events: UnboundedReceiver<SlotEvent>,
    metrics: Vec<Arc<SlotMetrics>>,
    start_epoch: Epoch,
    mut requests: Option<&mut UnboundedReceiver<SavepointRequest>>,
) -> Result<CoordinatorOutcome, JobError> {
    assert_eq!(slots.len(), config.parallelism);
    let broadcast = |command: SlotCommand| slots.iter().for_each(|slot| slot.send(command.clone()));
    let stop_all = || slots.iter().for_each(|slot| slot.send(SlotCommand::Stop));
    let mut outcome = CoordinatorOutcome::default();
    let mut next_checkpoint = start_epoch;
    let mut pending: Option<Pending> = None;
    let mut input_done = vec![false; config.parallelism];
    let mut final_commits: Option<Vec<bool>> = None;
    let mut consecutive_failures = 0u32;
    let far_future = Duration::from_secs(365 * 24 * 3600);
    let interval = config.checkpoint_interval.unwrap_or(far_future);
    let mut next_trigger = rt::now() + interval;
    let progress_every = config.progress_interval.unwrap_or(far_future);
    let mut next_progress = rt::now() + progress_every;
    let mut progress = ProgressReporter::new(&metrics);
    // A savepoint asked for: waiting for its checkpoint, or taking it (`pending` is its).
    let mut savepoint: Option<SavepointRequest> = None;
    // Stopping with the savepoint written here, once every slot has committed its checkpoint.
    let mut stopping: Option<(String, SavepointRequest)> = None;

    loop {
        if pending.is_none() && final_commits.is_none() && input_done.iter().all(|&d| d) {
            if let Some(request) = savepoint.take() {
                request.refuse("the job has read all its input and is finishing: it needs no savepoint".into());
            }
            tracing::info!(checkpoint = next_checkpoint, "all input read; taking the final checkpoint");
            pending = Some(Pending::new(next_checkpoint, true, config.checkpoint_timeout));
            broadcast(SlotCommand::Trigger { checkpoint: next_checkpoint, last: true, savepoint: None });
        }
        // A savepoint waiting for its checkpoint triggers it at once.
        let trigger_at = if savepoint.is_some() && pending.is_none() { rt::now() } else { next_trigger };
        tokio::select! {
            biased;
            Some(request) = next_request(&mut requests) => {
                if savepoint.is_some() || stopping.is_some() {
                    request.refuse("a savepoint of this job is being taken already; ask again when it is done".into());
                } else if final_commits.is_some() || pending.as_ref().is_some_and(|p| p.last) {
                    request.refuse("the job has read all its input and is finishing: it needs no savepoint".into());
                } else {
                    tracing::info!(dir = request.dir, stop = request.stop, "savepoint asked for");
                    savepoint = Some(request);
                }
            }
            event = events.recv() => {
                let Some(event) = event else {
                    panic!("every slot hung up without failing or finishing");
                };
                if let Err(violation) = check_slot(&event, config.parallelism) {
                    stop_all();
                    return Err(violation);
                }
                match event {
                    SlotEvent::Failed { slot, message } => {
                        stop_all();
                        return Err(JobError::SlotFailed { slot, message });
                    }
                    SlotEvent::WorkerLost { message } => {
                        stop_all();
                        return Err(JobError::WorkerLost(message));
                    }
                    SlotEvent::CommitFailed { slot, message } => {
                        stop_all();
                        return Err(JobError::CommitFailed { slot, message });
                    }
                    SlotEvent::LinkFailed { message } => {
                        stop_all();
                        return Err(JobError::LinkFailed(message));
                    }
                    SlotEvent::InputDone { slot } => input_done[slot] = true,
                    SlotEvent::Committed { slot, checkpoint } => {
                        if let Some(commits) = final_commits.as_mut() {
                            if Some(checkpoint) == outcome.last_checkpoint {
                                commits[slot] = true;
                                if commits.iter().all(|&c| c) {
                                    stop_all();
                                    if config.progress_interval.is_some() {
                                        progress.report(outcome.last_checkpoint);
                                    }
                                    if let Some((path, request)) = stopping.take() {
                                        if let Err(error) = record_stop(&store, &path).await {
                                            request.refuse(format!("the job stopped, but its stop could not be recorded ({error}); it resumes from its checkpoint {checkpoint}"));
                                            return Err(error.into());
                                        }
                                        tracing::info!(checkpoint, path, "stopped with a savepoint");
                                        let _ = request.reply.send(Ok(path.clone()));
                                        outcome.stopped_with_savepoint = Some(path);
                                    }
                                    return Ok(outcome);
                                }
                            }
                        }
                    }
                    SlotEvent::SnapshotFailed { slot, checkpoint, message } => {
                        let Some(current) = pending.as_mut().filter(|p| p.checkpoint == checkpoint) else {
                            tracing::debug!(slot, checkpoint, "ignoring a failed upload of a declined checkpoint");
                            continue;
                        };
                        let error = format!("slot {slot} could not upload its state of checkpoint {checkpoint}: {message}");
                        if current.last {
                            stop_all();
                            return Err(JobError::StateUpload(error));
                        }
                        consecutive_failures += 1;
                        outcome.checkpoints_declined += 1;
                        tracing::warn!(checkpoint, %error, "checkpoint declined; the next one will cover its epoch");
                        if let Some(part) = current.savepoint.take() {
                            abandon_savepoint(part, &mut savepoint, format!("its checkpoint was declined: {error}")).await;
                        }
                        if consecutive_failures >= TOLERABLE_CHECKPOINT_FAILURES {
                            stop_all();
                            return Err(JobError::CheckpointsFailing { failures: consecutive_failures, last: error });
                        }
                        pending = None;
                        next_checkpoint += 1;
                        next_trigger = rt::now() + interval;
                    }
                    SlotEvent::Snapshot { slot, checkpoint, file, shared, uploaded, savepoint_file, records_read } => {
                        if let Some(slot_metrics) = metrics.get(slot) {
                            slot_metrics.records_read.fetch_max(records_read, std::sync::atomic::Ordering::Relaxed);
                        }
                        let Some(current) = pending.as_mut().filter(|p| p.checkpoint == checkpoint) else {
                            tracing::debug!(slot, checkpoint, "ignoring state of a declined checkpoint");
                            continue;
                        };
                        if current.files.contains_key(&slot) {
                            stop_all();
                            return Err(violation(format!("slot {slot} sent its state of checkpoint {checkpoint} twice")));
                        }
                        // The slot uploaded the file itself; what `_metadata` will name must be
                        // the file of this attempt (and of this savepoint), nothing else.
                        let expected = slot_state_file(slot, config.attempt);
                        if file.name != expected {
                            stop_all();
                            return Err(violation(format!(
                                "slot {slot} reported state file {:?} for checkpoint {checkpoint}; this attempt's is {expected:?}",
                                file.name
                            )));
                        }
                        match (current.savepoint.as_mut(), savepoint_file) {
                            (None, None) => {}
                            (Some(part), Some(Ok(entry))) if entry.name == savepoint_state_file(slot) => {
                                part.files.insert(slot, entry);
                            }
                            (Some(part), Some(Err(message))) => {
                                if !part.failed {
                                    part.failed = true;
                                    if let Some(request) = savepoint.take() {
                                        request.refuse(format!("slot {slot} could not write its state file: {message}"));
                                    }
                                }
                            }
                            _ => {
                                stop_all();
                                return Err(violation(format!(
                                    "slot {slot}'s state of checkpoint {checkpoint} does not match whether its trigger asked for a savepoint"
                                )));
                            }
                        }
                        if let Some(CrashPoint::DuringUpload { checkpoint: c, slots: n }) = config.crash_at {
                            if c == checkpoint && current.files.len() == n {
                                stop_all();
                                return Err(JobError::Crashed(config.crash_at.expect("set")));
                            }
                        }
                        // A shared file is named by the slot, operator and attempt that uploaded
                        // it (or an earlier attempt's, restored): one name is one content.
                        for entry in shared {
                            let valid = !entry.name.is_empty() && !entry.name.contains('/') && !entry.name.starts_with('.');
                            let clash = current.shared.get(&entry.name).is_some_and(|known| known != &entry);
                            if !valid || clash {
                                stop_all();
                                return Err(violation(format!(
                                    "slot {slot} reported shared file {:?} for checkpoint {checkpoint}, which is not a valid name or was reported otherwise",
                                    entry.name
                                )));
                            }
                            current.shared.insert(entry.name.clone(), entry);
                        }
                        outcome.state_bytes += file.size + uploaded;
                        current.files.insert(slot, file);
                        faultpoint::reached(Moment::StateUploaded).await;
                        let mut acks_needed = config.parallelism;
                        if faultpoint::planted(PlantedBug::CheckpointCompleteEarly) && acks_needed > 1 {
                            acks_needed -= 1;
                        }
                        if current.files.len() < acks_needed {
                            continue;
                        }
                        let current = pending.take().expect("pending checkpoint");
                        let metadata = CheckpointMetadata {
                            format_version: FORMAT_VERSION,
                            job_id: config.job_id.clone(),
                            checkpoint_id: checkpoint,
                            parallelism: config.parallelism,
                            finished: current.last,
                            files: current.files.into_values().collect(),
                            attempt: config.attempt,
                            generation: config.generation,
                            savepoint: false,
                            shared: current.shared.into_values().collect(),
                        };
                        // `_metadata` completes the checkpoint; the newest-checkpoint record
                        // lets a restore find it even where listings lag, and must be stored
                        // before any sink commits output the checkpoint covers.
                        let completed = match store.complete(&metadata).await {
                            Ok(()) => store.record_latest(checkpoint).await,
                            Err(error) => Err(error),
                        };
                        if let Err(error) = completed {
                            if current.last {
                                stop_all();
                                return Err(error.into());
                            }
                            consecutive_failures += 1;
                            outcome.checkpoints_declined += 1;
                            tracing::warn!(checkpoint, %error, "checkpoint declined at _metadata; the next one will cover its epoch");
                            if let Some(part) = current.savepoint {
                                abandon_savepoint(part, &mut savepoint, format!("its checkpoint {checkpoint} was declined: {error}")).await;
                            }
                            if consecutive_failures >= TOLERABLE_CHECKPOINT_FAILURES {
                                stop_all();
                                return Err(JobError::CheckpointsFailing { failures: consecutive_failures, last: error.to_string() });
                            }
                            next_checkpoint += 1;
                            continue;
                        }
                        consecutive_failures = 0;
                        outcome.checkpoints_completed += 1;
                        outcome.last_checkpoint = Some(checkpoint);
                        if let Some(last) = &config.last_checkpoint {
                            last.store(checkpoint, std::sync::atomic::Ordering::Relaxed);
                        }
                        tracing::info!(checkpoint, last = current.last, "checkpoint complete");
                        rt::trace(&format!("{} checkpoint {checkpoint} complete (final: {})", config.job_id, current.last));
                        faultpoint::reached(Moment::CheckpointCompleted).await;
                        if config.crash_at == Some(CrashPoint::BeforeCommit { checkpoint }) {
                            stop_all();
                            return Err(JobError::Crashed(CrashPoint::BeforeCommit { checkpoint }));
                        }
                        // A savepoint given up is deleted after the sinks are told to commit.
                        let mut abandoned = None;
                        match current.savepoint {
                            Some(part) if part.failed => abandoned = Some(part),
                            Some(part) => {
                                let request = savepoint.take().expect("a savepoint's checkpoint");
                                match complete_savepoint(&config, checkpoint, &part.target, &part.files).await {
                                    Ok(path) if request.stop => stopping = Some((path, request)),
                                    Ok(path) => {
                                        tracing::info!(checkpoint, path, "savepoint written");
                                        let _ = request.reply.send(Ok(path));
                                    }
                                    Err(reason) => {
                                        request.refuse(reason);
                                        abandoned = Some(part);
                                    }
                                }
                            }
                            None => {}
                        }
                        broadcast(SlotCommand::Complete { checkpoint });
                        if let Some(part) = abandoned {
                            // Refused already.
                            abandon_savepoint(part, &mut None, String::new()).await;
                        }
                        if let Err(error) = store.retain(config.retained_checkpoints, checkpoint).await {
                            tracing::warn!(%error, "could not delete old checkpoints");
                        }
                        if current.last || stopping.is_some() {
                            // The job ends once every slot has committed this checkpoint.
                            final_commits = Some(vec![false; config.parallelism]);
                        } else {
                            next_checkpoint += 1;
                        }
                    }
                }
            }
            _ = rt::sleep_until(trigger_at) => {
                next_trigger = rt::now() + interval;
                if pending.is_none() && final_commits.is_none() && !input_done.iter().all(|&d| d) {
                    if config.crash_at == Some(CrashPoint::AtTrigger { checkpoint: next_checkpoint }) {
                        stop_all();
                        return Err(JobError::Crashed(CrashPoint::AtTrigger { checkpoint: next_checkpoint }));
                    }
                    tracing::debug!(checkpoint = next_checkpoint, savepoint = savepoint.is_some(), "triggering checkpoint");
                    rt::trace(&format!("{} checkpoint {next_checkpoint} triggered", config.job_id));
                    let mut triggered = Pending::new(next_checkpoint, false, config.checkpoint_timeout);
                    let target = savepoint.as_ref().map(|request| SavepointTarget {
                        dir: request.dir.clone(),
                        name: savepoint_name(&config.job_id, next_checkpoint, config.attempt),
                    });
                    triggered.savepoint =
                        target.clone().map(|target| PendingSavepoint { target, files: BTreeMap::new(), failed: false });
                    pending = Some(triggered);
                    broadcast(SlotCommand::Trigger { checkpoint: next_checkpoint, last: false, savepoint: target });
                }
            }
            _ = rt::sleep_until(pending.as_ref().map_or(next_progress, |p| p.deadline)), if pending.is_some() => {
                let expired = pending.take().expect("guarded");
                if expired.last {
                    stop_all();
                    return Err(JobError::FinalCheckpointTimedOut { checkpoint: expired.checkpoint, timeout: config.checkpoint_timeout });
                }
                consecutive_failures += 1;
                outcome.checkpoints_declined += 1;
                tracing::warn!(checkpoint = expired.checkpoint, timeout = ?config.checkpoint_timeout, "checkpoint declined: not complete in time; the next one will cover its epoch");
                if let Some(part) = expired.savepoint {
                    let reason =
                        format!("its checkpoint {} did not complete within {:?}", expired.checkpoint, config.checkpoint_timeout);
                    abandon_savepoint(part, &mut savepoint, reason).await;
                }
                rt::trace(&format!("{} checkpoint {} timed out", config.job_id, expired.checkpoint));
                if consecutive_failures >= TOLERABLE_CHECKPOINT_FAILURES {
                    stop_all();
                    return Err(JobError::CheckpointsFailing {
                        failures: consecutive_failures,
                        last: format!("checkpoint {} did not complete within {:?}", expired.checkpoint, config.checkpoint_timeout),
                    });
                }
                next_checkpoint += 1;
                next_trigger = rt::now() + interval;
            }
            _ = rt::sleep_until(next_progress) => {
                next_progress = rt::now() + progress_every;
                progress.report(outcome.last_checkpoint);
            }
        }
    }
}

/// Records that the job stopped with savepoint `path`, retrying a failed put.
async fn record_stop(store: &CheckpointStore, path: &str) -> Result<(), CheckpointError> {
    with_retries("recording the stop", || store.put_job_record(STOPPED_RECORD, path.as_bytes().to_vec())).await
}

/// The next savepoint request, or never (no requests: nobody can ask).
async fn next_request(requests: &mut Option<&mut UnboundedReceiver<SavepointRequest>>) -> Option<SavepointRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

/// Completes the savepoint of complete checkpoint `checkpoint`, whose slots uploaded `files`
/// to `target`: writes its `_metadata`. Returns its path, or why it could not be written.
async fn complete_savepoint(
    config: &CoordinatorConfig,
    checkpoint: Epoch,
    target: &SavepointTarget,
    files: &BTreeMap<usize, FileEntry>,
) -> Result<String, String> {
    // Every slot's file (a checkpoint may complete without one only with a planted bug).
    if files.len() != config.parallelism {
        return Err(format!(
            "checkpoint {checkpoint} completed with {} of {} slots' savepoint files",
            files.len(),
            config.parallelism
        ));
    }
    // The slots wrote the files where they see the directory; the savepoint is complete only
    // if the coordinator sees them there too (a directory not shared with the workers is not).
    for file in files.values() {
        match weir_core::savepoint::savepoint_file_size(&target.dir, &target.name, &file.name).await {
            Ok(Some(size)) if size == file.size => {}
            Ok(found) => {
                return Err(format!(
                    "the coordinator finds {} of savepoint {}/{} {}: the savepoint directory must be shared by the coordinator and every worker",
                    file.name,
                    target.dir,
                    target.name,
                    found.map_or("missing".to_string(), |size| format!("{size} bytes long, not {}", file.size))
                ))
            }
            Err(error) => return Err(format!("cannot check the savepoint's files: {error}")),
        }
    }
    let metadata = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: config.job_id.clone(),
        checkpoint_id: checkpoint,
        parallelism: config.parallelism,
        finished: false,
        files: files.values().cloned().collect(),
        attempt: config.attempt,
        generation: config.generation,
        savepoint: true,
        shared: Vec::new(),
    };
    weir_core::savepoint::complete_savepoint(&target.dir, &target.name, metadata)
        .await
        .map_err(|error| format!("cannot write the savepoint of checkpoint {checkpoint}: {error}"))
}

/// Prints progress lines: events read, rate, watermark, last checkpoint.
struct ProgressReporter {
    metrics: Vec<Arc<SlotMetrics>>,
    last_at: rt::Instant,
    last_read: u64,
}

impl ProgressReporter {
    fn new(metrics: &[Arc<SlotMetrics>]) -> Self {
        ProgressReporter { metrics: metrics.to_vec(), last_at: rt::now(), last_read: 0 }
    }

    fn report(&mut self, last_checkpoint: Option<Epoch>) {
        let read: u64 = self.metrics.iter().map(|m| SlotMetrics::get(&m.records_read)).sum();
        let watermark = self.metrics.iter().map(|m| m.watermark.load(std::sync::atomic::Ordering::Relaxed)).min();
        let elapsed_ms = rt::elapsed_ms(self.last_at).max(1);
        let rate = (read - self.last_read) as f64 * 1000.0 / elapsed_ms as f64;
        self.last_at = rt::now();
        self.last_read = read;
        let watermark = crate::app::describe_watermark(watermark);
        let checkpoint = last_checkpoint.map_or("-".to_string(), |c| c.to_string());
        eprintln!(
            "progress: {read} events read, {rate:.0} events/s, watermark {watermark}, last checkpoint {checkpoint}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::{self, UnboundedSender};

    fn config(parallelism: usize, checkpoint_timeout: Duration) -> CoordinatorConfig {
        CoordinatorConfig {
            job_id: "job".into(),
            parallelism,
            checkpoint_interval: Some(Duration::from_millis(5)),
            checkpoint_timeout,
            retained_checkpoints: 3,
            progress_interval: None,
            crash_at: None,
            attempt: 1,
            generation: 1,
            last_checkpoint: None,
        }
    }

    /// Slots that answer every trigger with `answer(slot, checkpoint)`'s events.
    fn slots(
        parallelism: usize,
        events: UnboundedSender<SlotEvent>,
        answer: impl Fn(usize, Epoch) -> Vec<SlotEvent> + Send + Sync + Clone + 'static,
    ) -> Vec<SlotLink> {
        (0..parallelism)
            .map(|slot| {
                let (events, answer) = (events.clone(), answer.clone());
                SlotLink::from_fn(move |command| {
                    if let SlotCommand::Trigger { checkpoint, .. } = command {
                        for event in answer(slot, checkpoint) {
                            let _ = events.send(event);
                        }
                    }
                })
            })
            .collect()
    }

    fn snapshot(slot: usize, checkpoint: Epoch) -> SlotEvent {
        let file = FileEntry { name: slot_state_file(slot, 1), size: 3, crc32: 0 };
        SlotEvent::Snapshot {
            slot,
            checkpoint,
            file,
            shared: Vec::new(),
            uploaded: 0,
            savepoint_file: None,
            records_read: 0,
        }
    }

    fn run(
        parallelism: usize,
        answer: impl Fn(usize, Epoch) -> Vec<SlotEvent> + Send + Sync + Clone + 'static,
    ) -> JobError {
        rt::block_on(async move {
            let store = CheckpointStore::open("memory://", "job").unwrap();
            let (events, queue) = mpsc::unbounded_channel();
            let links = slots(parallelism, events.clone(), answer);
            let metrics = (0..parallelism).map(|_| Arc::new(SlotMetrics::default())).collect();
            let config = config(parallelism, Duration::from_millis(20));
            coordinate(config, store, links, queue, metrics, 1, None).await.expect_err("the attempt cannot succeed")
        })
    }

    #[test]
    fn checkpoints_that_do_not_complete_in_time_are_declined_until_the_attempt_gives_up() {
        // Slot 1 never answers: every checkpoint times out, and five in a row end the attempt.
        let error = run(2, |slot, checkpoint| if slot == 0 { vec![snapshot(slot, checkpoint)] } else { vec![] });
        assert!(
            matches!(&error, JobError::CheckpointsFailing { failures: TOLERABLE_CHECKPOINT_FAILURES, last } if last.contains("did not complete within 20ms")),
            "{error}"
        );
    }

    #[test]
    fn slot_numbers_from_elsewhere_are_checked_not_trusted() {
        let error = run(2, |_, checkpoint| vec![snapshot(9, checkpoint)]);
        assert!(matches!(&error, JobError::ProtocolViolation(m) if m.contains("slot 9")), "{error}");
        let error = run(2, |slot, checkpoint| vec![snapshot(slot, checkpoint), snapshot(slot, checkpoint)]);
        assert!(matches!(&error, JobError::ProtocolViolation(m) if m.contains("twice")), "{error}");
        let error = run(2, |_, _| vec![SlotEvent::InputDone { slot: usize::MAX }]);
        assert!(matches!(error, JobError::ProtocolViolation(_)), "{error}");
        let error = run(1, |_, _| vec![SlotEvent::LinkFailed { message: "link".into() }]);
        assert!(matches!(&error, JobError::LinkFailed(m) if m == "link"), "{error}");
    }
}
