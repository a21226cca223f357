//! The slot driver: one timely worker, stepped by an async loop, steered by commands.
//!
//! Timely's own scheduling would park the OS thread (`step_or_park`), which the simulator
//! cannot see; instead the driver calls `worker.step()` while operators report work, and
//! otherwise awaits the slot's doorbell (rung by exchange channels and by commands) with a
//! short timeout. Commands arrive between steps, so an epoch boundary always falls between
//! two operator activations.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use timely::communication::allocator::Thread;
use timely::communication::Allocator;
use timely::worker::{Config, Worker};

use weir_core::checkpoint::{slot_state_file, with_retries, CheckpointStore, FileEntry};
use weir_core::faultpoint::{self, Moment, PlantedBug};
use weir_core::rt;
use weir_core::savepoint::put_savepoint_file;
use weir_core::time::Epoch;
use weir_dataflow::exchange::Doorbell;
use weir_dataflow::job::{build_slot, SlotSetup};
use weir_dataflow::metrics::SlotMetrics;
use weir_dataflow::snapshot::{OperatorFiles, PendingSnapshot, SlotSnapshot};

use crate::state_files::{
    discard_downloads, download, remove_other_attempts, shared_entries, DownloadError, SharedFiles,
};

/// Wakes a slot's driver: a flag the busy loop polls without blocking, and a notification an
/// idle driver awaits.
#[derive(Debug, Default)]
pub struct SlotDoorbell {
    notify: Notify,
    rung: std::sync::atomic::AtomicBool,
}

impl Doorbell for SlotDoorbell {
    fn ring(&self) {
        self.rung.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_one();
    }
}

impl SlotDoorbell {
    /// Whether the bell rang since the last call.
    fn take(&self) -> bool {
        self.rung.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// What the coordinator tells a slot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SlotCommand {
    /// Start checkpoint `checkpoint`: sources move to the next epoch. A final checkpoint is
    /// taken once all input is read: sources then release everything.
    Trigger {
        /// The checkpoint id (= the epoch it closes).
        checkpoint: Epoch,
        /// Whether this is the final checkpoint.
        last: bool,
        /// The checkpoint is a savepoint's: the slot uploads its state there too.
        savepoint: Option<SavepointTarget>,
    },
    /// Checkpoint `checkpoint` is complete: commit staged output through it.
    Complete {
        /// The checkpoint id.
        checkpoint: Epoch,
    },
    /// Stop the slot.
    Stop,
}

/// Where a savepoint's state files go: savepoint `name` in directory `dir`
/// ([`weir_core::savepoint`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavepointTarget {
    /// The directory (a path, `file://` or `memory://` location).
    pub dir: String,
    /// The savepoint's name in it.
    pub name: String,
}

/// What a slot tells the coordinator.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum SlotEvent {
    /// The slot's state for a checkpoint is uploaded: the state file's entry for `_metadata`.
    Snapshot {
        /// The slot.
        slot: usize,
        /// The checkpoint id.
        checkpoint: Epoch,
        /// The state file in the checkpoint.
        file: FileEntry,
        /// The shared files the state file names (an incremental checkpoint's instances).
        shared: Vec<FileEntry>,
        /// Bytes of shared files uploaded for this checkpoint (not named by an earlier one).
        uploaded: u64,
        /// For a savepoint's checkpoint, the state file in the savepoint — or why it could not
        /// be written (the savepoint is refused; the checkpoint goes on).
        savepoint_file: Option<Result<FileEntry, String>>,
        /// Input records the slot had read when it took the snapshot (with the checkpoint, not
        /// a later heartbeat, so that the coordinator knows the checkpoint moved the input).
        records_read: u64,
    },
    /// The slot's state for a checkpoint could not be uploaded (after retries): the checkpoint
    /// is declined; the slot goes on.
    SnapshotFailed {
        /// The slot.
        slot: usize,
        /// The checkpoint id.
        checkpoint: Epoch,
        /// What went wrong.
        message: String,
    },
    /// The slot failed and stopped.
    Failed {
        /// The slot.
        slot: usize,
        /// What went wrong.
        message: String,
    },
    /// The slot could not commit its staged output (an I/O error in the output directory): the
    /// attempt stops and the job restarts from its latest checkpoint, whose recovery commits
    /// again.
    CommitFailed {
        /// The slot.
        slot: usize,
        /// What went wrong.
        message: String,
    },
    /// The worker hosting some slot of the attempt was lost (reported by the coordinator).
    WorkerLost {
        /// Which worker and why.
        message: String,
    },
    /// A connection between two workers of the attempt failed (reported by a worker), or a
    /// worker broke the protocol.
    LinkFailed {
        /// Which workers and why.
        message: String,
    },
    /// Every split of the slot has been read to its end.
    InputDone {
        /// The slot.
        slot: usize,
    },
    /// The slot committed output through a checkpoint.
    Committed {
        /// The slot.
        slot: usize,
        /// The checkpoint id.
        checkpoint: Epoch,
    },
}

/// The coordinator's end of a slot: in-process, or through a worker's control connection.
#[derive(Clone)]
pub struct SlotLink {
    deliver: Arc<dyn Fn(SlotCommand) + Send + Sync>,
}

impl std::fmt::Debug for SlotLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotLink")
    }
}

impl SlotLink {
    /// A link to an in-process slot over `commands` that rings `doorbell`.
    pub fn new(commands: UnboundedSender<SlotCommand>, doorbell: Arc<SlotDoorbell>) -> Self {
        SlotLink::from_fn(move |command| {
            let _ = commands.send(command);
            doorbell.ring();
        })
    }
    /// A link that hands commands to `deliver` (e.g. a remote worker's connection).
    pub fn from_fn(deliver: impl Fn(SlotCommand) + Send + Sync + 'static) -> Self {
        SlotLink { deliver: Arc::new(deliver) }
    }
    /// Sends a command (a slot that already stopped ignores it).
    pub fn send(&self, command: SlotCommand) {
        (self.deliver)(command)
    }
}

/// Finishes a slot's snapshots off the slot's thread, in checkpoint order: makes the sinks'
/// staged output durable, encodes the state copies, uploads the state file to the checkpoint
/// store (and to a savepoint's directory) itself — no state travels to the coordinator —
/// and reports each checkpoint with the file's entry ([`SlotEvent::Snapshot`]). If a sink
/// cannot make its output durable the writer stops and the slot fails with its error; an
/// upload that fails after retries declines the checkpoint ([`SlotEvent::SnapshotFailed`]).
/// Stopped with the slot: a snapshot it had not reported belongs to no checkpoint.
struct SnapshotWriter {
    queue: UnboundedSender<(PendingSnapshot, u64, Option<SavepointTarget>)>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A slot's snapshot encoded for its checkpoint (and savepoint), its instances' files still to
/// upload.
struct EncodedSnapshot {
    /// The checkpoint's state file, if complete: no operator holds state in files.
    whole: Option<Vec<u8>>,
    /// Otherwise the state beside the files, and each operator's files.
    beside: Option<(SlotSnapshot, OperatorFiles)>,
    /// A savepoint's state file when it differs from the checkpoint's (the canonical form of
    /// state the checkpoint keeps in files).
    savepoint: Option<Vec<u8>>,
}

impl SnapshotWriter {
    fn start(
        slot: usize,
        attempt: u64,
        key_groups: std::ops::Range<usize>,
        store: CheckpointStore,
        mut shared: SharedFiles,
        events: UnboundedSender<SlotEvent>,
    ) -> Self {
        let (queue, mut pending) =
            tokio::sync::mpsc::unbounded_channel::<(PendingSnapshot, u64, Option<SavepointTarget>)>();
        let failure = Arc::new(std::sync::Mutex::new(None));
        let failed = failure.clone();
        let task = tokio::spawn(async move {
            let fail = |message: String| *failed.lock().expect("not poisoned") = Some(message);
            while let Some((snapshot, records_read, savepoint)) = pending.recv().await {
                let checkpoint = snapshot.epoch;
                let for_savepoint = savepoint.is_some();
                // A blocking-pool thread in production (fsync may wait); inline in simulation. A
                // panic (a bug, or a user type that does not serialize) fails the slot as it
                // would have on the slot's own thread.
                let encoded = rt::blocking(move || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let finished = snapshot.finish()?;
                        if !finished.has_files() {
                            let whole = finished.into_canonical()?.encode(slot, checkpoint);
                            return Ok(EncodedSnapshot { whole: Some(whole), beside: None, savepoint: None });
                        }
                        let savepoint = match for_savepoint {
                            true => Some(finished.canonical()?.encode(slot, checkpoint)),
                            false => None,
                        };
                        Ok(EncodedSnapshot { whole: None, beside: Some(finished.beside_files()?), savepoint })
                    }))
                    .unwrap_or_else(|panic| Err(format!("internal error (bug): {}", rt::panic_message(&*panic))))
                })
                .await;
                let encoded = match encoded {
                    Ok(encoded) => encoded,
                    Err(message) => return fail(message),
                };
                // The instances' files go up first: the state file names them.
                let (state, manifests, uploaded) = match (encoded.whole, encoded.beside) {
                    (Some(whole), _) => (whole, Vec::new(), 0),
                    (None, Some((mut beside, files))) => {
                        let mut uploaded = 0;
                        let mut failure = None;
                        for (operator, files) in &files {
                            match shared.upload(&store, slot, attempt, operator, key_groups.clone(), files).await {
                                Ok((manifest, bytes)) => {
                                    beside.instances.push(manifest);
                                    uploaded += bytes;
                                }
                                Err(error) => {
                                    failure = Some(format!("operator {operator}: {error}"));
                                    break;
                                }
                            }
                        }
                        // Their checkpoint directories go now (the files are up, or the
                        // checkpoint is declined).
                        drop(files);
                        if let Some(message) = failure {
                            tracing::warn!(
                                slot,
                                checkpoint,
                                message,
                                "state upload failed; the checkpoint is declined"
                            );
                            let _ = events.send(SlotEvent::SnapshotFailed { slot, checkpoint, message });
                            continue;
                        }
                        shared.keep_only(&beside.instances);
                        let manifests = beside.instances.clone();
                        (beside.encode(slot, checkpoint), manifests, uploaded)
                    }
                    (None, None) => unreachable!("a snapshot is encoded whole or beside its files"),
                };
                let state = bytes::Bytes::from(state);
                let savepoint_state = encoded.savepoint.map(bytes::Bytes::from).unwrap_or_else(|| state.clone());
                let name = slot_state_file(slot, attempt);
                let to_checkpoint = with_retries("state upload", || store.put_file(checkpoint, &name, state.clone()));
                // A savepoint's copy goes up at the same time; its failure refuses the savepoint
                // only, not the checkpoint.
                let to_savepoint = async {
                    match &savepoint {
                        Some(target) => Some(
                            with_retries("savepoint upload", || {
                                put_savepoint_file(&target.dir, &target.name, slot, savepoint_state.clone())
                            })
                            .await
                            .map_err(|error| error.to_string()),
                        ),
                        None => None,
                    }
                };
                let (stored, savepoint_file) = futures::join!(to_checkpoint, to_savepoint);
                match stored {
                    Ok(file) => {
                        let shared = shared_entries(&manifests);
                        let shared_bytes: u64 = shared.iter().map(|entry| entry.size).sum();
                        tracing::debug!(
                            slot,
                            checkpoint,
                            bytes = file.size,
                            shared_bytes,
                            uploaded,
                            "slot snapshot uploaded"
                        );
                        faultpoint::reached(Moment::StateStored).await;
                        let _ = events.send(SlotEvent::Snapshot {
                            slot,
                            checkpoint,
                            file,
                            shared,
                            uploaded,
                            savepoint_file,
                            records_read,
                        });
                    }
                    Err(error) => {
                        tracing::warn!(slot, checkpoint, %error, "state upload failed; the checkpoint is declined");
                        let message = error.to_string();
                        let _ = events.send(SlotEvent::SnapshotFailed { slot, checkpoint, message });
                    }
                }
            }
        });
        SnapshotWriter { queue, failure, task }
    }

    /// Why the writer stopped, if it failed.
    fn failure(&self) -> Option<String> {
        let failure = self.failure.lock().expect("not poisoned").clone();
        // Stopped without saying why: it can only have panicked outside the guarded work.
        failure.or_else(|| self.task.is_finished().then(|| "internal error (bug): the snapshot writer stopped".into()))
    }

    /// Queues a snapshot the slot took, with the input records it had read by then and where
    /// its savepoint goes, if it is one (a writer that stopped has failed, which
    /// [`SnapshotWriter::failure`] reports).
    fn write(&self, snapshot: PendingSnapshot, records_read: u64, savepoint: Option<SavepointTarget>) {
        let _ = self.queue.send((snapshot, records_read, savepoint));
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long an idle slot waits for its doorbell before stepping anyway.
const IDLE_WAIT: Duration = Duration::from_millis(2);
/// Steps without work before the driver waits.
const IDLE_STEPS_BEFORE_WAIT: u32 = 2;

/// Runs one slot until it is told to stop or fails. `restored_attempt` took the checkpoint the
/// slot restores (0 for none).
pub async fn drive_slot(
    job: Arc<crate::deploy::PlannedJob>,
    setup: SlotSetup,
    restored_attempt: u64,
    store: CheckpointStore,
    mut commands: UnboundedReceiver<SlotCommand>,
    events: UnboundedSender<SlotEvent>,
    doorbell: Arc<SlotDoorbell>,
) {
    let slot = setup.slot;
    let attempt = setup.attempt;
    let generation = setup.generation;
    let metrics = setup.metrics.clone();
    let mut input_done_sent = false;
    let committers = job.committers();
    let dirs = job.sink_names();
    let mut worker = Worker::new(Config::default(), Allocator::Thread(Thread::default()), None);
    let span = tracing::debug_span!("slot", slot);
    let _entered = span.enter();
    let fail = |message: String| {
        let _ = events.send(SlotEvent::Failed { slot, message });
    };
    // The files of the instances restored from an incremental checkpoint, in place before the
    // job is built (its operators open them).
    let restored_instances = setup.restored.instances.clone();
    let downloaded = download(&store, &restored_instances, &setup.state_dir).await;
    if downloaded.is_err() {
        discard_downloads(&restored_instances, &setup.state_dir).await;
    }
    // Files taken from the node's disk are not known to be sound in the store: the next
    // checkpoint uploads them again rather than naming the store's copy.
    let from_disk = match downloaded {
        Ok(local) => local,
        Err(DownloadError::Failed(reason)) => {
            return fail(format!("job {}: cannot restore its state files: {reason}", job.spec.job))
        }
        Err(DownloadError::Damaged { file, reason }) => {
            // As a restore does with a checkpoint it finds corrupt: deleted, `_metadata` first,
            // with every other naming the damaged file, so that the next attempt falls back
            // past them — while no newer deployment runs.
            let checkpoint = setup.start_epoch - 1;
            let invalidated = match crate::deploy::hold_as_newest(&job, generation, &store).await {
                Ok(_held) => {
                    store.invalidate(checkpoint, restored_attempt, file.as_deref()).await.map_err(|e| e.to_string())
                }
                Err(reason) => Err(reason),
            };
            let outcome = match invalidated {
                Ok(deleted) if !deleted.is_empty() => {
                    format!("deleted checkpoints {deleted:?}: the job restarts from an older checkpoint")
                }
                Ok(_) => "it had been replaced already".to_string(),
                Err(error) => format!("could not delete it ({error}): delete its _metadata to fall back"),
            };
            return fail(format!("job {}: checkpoint {checkpoint} is damaged ({reason}); {outcome}", job.spec.job));
        }
    };
    let key_groups = weir_core::keygroup::key_groups_of_slot(slot, job.parallelism());
    let state_dir = setup.state_dir.clone();
    let control = match build_slot(&mut worker, setup) {
        Ok(control) => control,
        Err(error) => {
            // Files of instances no operator opened (or closed with the dataflow) go too.
            drop(worker);
            discard_downloads(&restored_instances, &state_dir).await;
            return fail(format!("job {}: {error}", job.spec.job));
        }
    };
    let split_count = control.split_count as u64;
    if !restored_instances.is_empty() {
        // Restored: what killed processes left of the slot here is no longer needed.
        if let Ok(_held) = crate::deploy::hold_as_newest(&job, generation, &store).await {
            remove_other_attempts(&state_dir).await;
        }
    }
    let shared = SharedFiles::restored(&restored_instances, &from_disk);
    let snapshot_writer = SnapshotWriter::start(slot, attempt, key_groups, store, shared, events.clone());
    // The checkpoints triggered as savepoints, and where each goes.
    let mut savepoints: std::collections::BTreeMap<Epoch, SavepointTarget> = Default::default();
    // Commits (and the planted early commit) hold the job's output fence across every sink.
    let hold = || job.hold_fence(generation);
    let mut idle_steps = 0u32;
    let mut dataflow_running = true;
    loop {
        while let Ok(command) = commands.try_recv() {
            match command {
                SlotCommand::Trigger { checkpoint, last: false, savepoint } => {
                    assert!(checkpoint + 1 > control.target_epoch.get(), "checkpoint {checkpoint} triggered twice");
                    control.target_epoch.set(checkpoint + 1);
                    if let Some(target) = savepoint {
                        savepoints.insert(checkpoint, target);
                    }
                }
                SlotCommand::Trigger { checkpoint, last: true, .. } => {
                    assert_eq!(checkpoint, control.target_epoch.get(), "final checkpoint must close the current epoch");
                    control.final_checkpoint.set(Some(checkpoint));
                }
                SlotCommand::Complete { checkpoint } => {
                    let committed = hold().and_then(|held| {
                        committers.iter().zip(&dirs).try_for_each(|(committer, sink)| {
                            committer
                                .commit(slot, attempt, checkpoint, &held)
                                .map(drop)
                                .map_err(|error| std::io::Error::new(error.kind(), format!("{sink}: {error}")))
                        })
                    });
                    if let Err(error) = committed {
                        let message = format!("output: commit of checkpoint {checkpoint} failed: {error}");
                        let _ = events.send(SlotEvent::CommitFailed { slot, message });
                        return;
                    }
                    faultpoint::reached(Moment::SinkCommitted).await;
                    let _ = events.send(SlotEvent::Committed { slot, checkpoint });
                }
                SlotCommand::Stop => return,
            }
            control.wake_all();
        }
        // Something arrived from outside (exchange data, credit): wake the operators that wait
        // on it even while the slot is busy, so receivers drain and senders regain credit.
        if doorbell.take() {
            control.wake_all();
        }
        let before = control.activity.count();
        if dataflow_running {
            dataflow_running = worker.step();
        }
        if let Some(message) = control.fatal.borrow().clone().or_else(|| snapshot_writer.failure()) {
            return fail(message);
        }
        while let Some(snapshot) = control.snapshots.borrow_mut().take_ready() {
            tracing::debug!(slot, checkpoint = snapshot.epoch, "slot snapshot taken");
            if faultpoint::planted(PlantedBug::SinkCommitsEarly) {
                if let Ok(held) = hold() {
                    for committer in &committers {
                        let _ = committer.commit(slot, attempt, snapshot.epoch, &held);
                    }
                }
            }
            let records_read = SlotMetrics::get(&metrics.records_read);
            // A savepoint's target is kept until its checkpoint's snapshot (a checkpoint the
            // sources skipped past, declined, takes its target with it).
            let savepoint = savepoints.remove(&snapshot.epoch);
            savepoints.retain(|&checkpoint, _| checkpoint > snapshot.epoch);
            snapshot_writer.write(snapshot, records_read, savepoint);
        }
        if !input_done_sent && SlotMetrics::get(&metrics.splits_finished) == split_count {
            input_done_sent = true;
            let _ = events.send(SlotEvent::InputDone { slot });
        }
        if control.activity.count() != before {
            idle_steps = 0;
            tokio::task::yield_now().await;
            continue;
        }
        idle_steps += 1;
        if idle_steps < IDLE_STEPS_BEFORE_WAIT && dataflow_running {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            biased;
            _ = doorbell.notify.notified() => {}
            _ = rt::sleep(IDLE_WAIT) => {}
        }
        control.wake_all();
    }
}
