//! Deploying a job's slots — restore planning, sink recovery, starting slot threads — shared by
//! the embedded cluster (`weir run`) and by workers of a multi-process cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use std::path::{Path, PathBuf};

use weir_core::checkpoint::{CheckpointError, CheckpointStore, RestoredCheckpoint};
use weir_core::job::{JobSpec, StateBackendKind};
use weir_core::keygroup::slot_of_key_group;
use weir_core::rt;
use weir_core::time::{Epoch, FIRST_EPOCH};
use weir_dataflow::exchange::ExchangeChannels;
use weir_dataflow::job::{RestoredSlot, SlotSetup};
use weir_dataflow::metrics::SlotMetrics;
use weir_dataflow::sink::{self, EpochCommitter, OutputFence};
use weir_dataflow::snapshot::SlotSnapshot;
use weir_dataflow::{plan_job, JobDef, JobPlan, JobRegistry};

use crate::coordinator::JobError;
use crate::run::RunError;
use crate::slot::{drive_slot, SlotCommand, SlotDoorbell, SlotEvent};

/// A job ready to deploy: its definition (from this binary's registry), its spec and its plan.
#[derive(Clone, Debug)]
pub struct PlannedJob {
    /// The registered job.
    pub def: JobDef,
    /// Its spec.
    pub spec: Arc<JobSpec>,
    /// What planning learned: splits, sinks, exchanges, stateful operators.
    pub plan: JobPlan,
    /// The job's id (its spec's fingerprint).
    pub job_id: String,
}

impl PlannedJob {
    /// Looks the job up in `registry`, checks its parameters and plans it (which validates its
    /// sources and its graph). The error names the job and says what is wrong.
    pub fn new(registry: &JobRegistry, spec: JobSpec) -> Result<Self, String> {
        let def = registry.check(&spec)?.clone();
        let plan = plan_job(&def, &spec).map_err(|e| format!("job {}: {e}", spec.job))?;
        let job_id = spec.fingerprint();
        Ok(PlannedJob { def, spec: Arc::new(spec), plan, job_id })
    }

    /// The job's parallelism.
    pub fn parallelism(&self) -> usize {
        self.spec.parallelism
    }

    /// The file sinks' directories, in build order.
    pub fn sink_dirs(&self) -> Vec<PathBuf> {
        self.plan.sink_dirs()
    }

    /// Each sink's name and (file sinks) directory, for messages.
    pub fn sink_names(&self) -> Vec<String> {
        self.plan
            .sinks
            .iter()
            .map(|s| s.dir.as_ref().map_or_else(|| s.name.clone(), |dir| dir.display().to_string()))
            .collect()
    }

    /// Holds the job's output fence for a commit or recovery: refused (an error) if a newer
    /// deployment claimed the output; unfenced for a job without file sinks.
    pub fn hold_fence(&self, generation: u64) -> std::io::Result<sink::FenceHold> {
        match self.fence(generation) {
            Some(fence) => fence.hold(),
            None => Ok(sink::FenceHold::unfenced()),
        }
    }

    /// The sinks' second phases (commit and recovery), in build order.
    pub fn committers(&self) -> Vec<Arc<dyn EpochCommitter>> {
        self.plan.sinks.iter().map(|sink| sink.committer.clone()).collect()
    }

    /// Where the job's output fence lives: its first sink's directory (one fence covers every
    /// sink of the job, since every commit and recovery holds it). `None` for a job without
    /// file sinks, which has no output to fence.
    pub fn fence_dir(&self) -> Option<&Path> {
        self.plan.sinks.iter().find_map(|sink| sink.dir.as_deref())
    }

    /// The output fence of deployment generation `generation`.
    pub fn fence(&self, generation: u64) -> Option<OutputFence> {
        self.fence_dir().map(|dir| OutputFence::new(dir, &self.job_id, generation))
    }
}

/// What a job restarts from: a checkpoint or savepoint (or nothing), split into per-slot
/// snapshots.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// The restored checkpoint, 0 for none.
    pub epoch: Epoch,
    /// The restored checkpoint was the final one: the job is done.
    pub finished: bool,
    /// The attempt that took the restored checkpoint.
    pub attempt: u64,
    /// The parallelism that took the restored checkpoint (0 for none): its slots' output is
    /// recovered, whatever the parallelism now.
    pub restored_parallelism: usize,
    /// Per slot: the split states of its splits and the keyed state of its key groups.
    pub slots: Vec<SlotSnapshot>,
}

impl RestorePlan {
    /// The first epoch of the restarted job.
    pub fn start_epoch(&self) -> Epoch {
        if self.epoch == 0 {
            FIRST_EPOCH
        } else {
            self.epoch + 1
        }
    }
}

/// The slots whose sink output slot `slot` recovers at `parallelism`, after a checkpoint taken
/// at `restored_parallelism`: itself, and the slots of the old parallelism that no longer exist
/// and fall to it (`slot + k * parallelism`), so that a job scaled down still commits, aborts
/// and retracts every old slot's output.
pub fn slots_recovered_by(slot: usize, parallelism: usize, restored_parallelism: usize) -> impl Iterator<Item = usize> {
    assert!(slot < parallelism, "slot {slot} of {parallelism}");
    (slot..parallelism.max(restored_parallelism)).step_by(parallelism)
}

/// Splits a verified checkpoint or savepoint (or none) into per-slot snapshots for the job's
/// parallelism, which may differ from the one that took it (rescaling): split `i` goes to slot
/// `i % parallelism`, keyed state by key group to the slot that owns the group, and replicated
/// state (alike in every slot) to every slot. State of an operator the job no longer has is an
/// error, unless `allow_non_restored_state` drops it (Flink's `--allowNonRestoredState`).
pub fn plan_restore(
    restored: Option<&RestoredCheckpoint>,
    job: &PlannedJob,
    allow_non_restored_state: bool,
) -> Result<RestorePlan, RunError> {
    let parallelism = job.parallelism();
    let mut plan = RestorePlan { slots: vec![SlotSnapshot::default(); parallelism], ..Default::default() };
    let Some(restored) = restored else { return Ok(plan) };
    let checkpoint = restored.metadata.checkpoint_id;
    let restore_error = |reason: String| RunError::Restore { checkpoint, reason };
    let split_count = job.plan.split_count();
    let mut seen = vec![false; split_count];
    // Per operator, each old slot's copy of its replicated state, in slot order.
    let mut replicated: BTreeMap<String, Vec<weir_dataflow::snapshot::StateEntry>> = BTreeMap::new();
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    // Each keyed group of each operator comes from exactly one file.
    let mut placed: std::collections::BTreeSet<(String, usize)> = Default::default();
    let mut snapshots = Vec::with_capacity(restored.files.len());
    for (entry, bytes) in restored.metadata.files.iter().zip(&restored.files) {
        let (_, snapshot) =
            SlotSnapshot::decode(bytes, checkpoint).map_err(|e| restore_error(format!("{}: {e}", entry.name)))?;
        snapshots.push(snapshot);
    }
    let restored_splits: usize = snapshots.iter().map(|snapshot| snapshot.splits.len()).sum();
    if restored_splits != split_count {
        let taken_at = restored.metadata.parallelism;
        let generated =
            job.plan.sources.iter().flat_map(|source| &source.splits).any(|split| split.starts_with("generator"));
        let hint = if generated && taken_at != parallelism {
            format!(
                "; a generated source has one split per slot, so a job over one restores only at the parallelism that took it ({taken_at}) — file sources rescale"
            )
        } else {
            "; the job must read the input the state was taken from (the same files)".to_string()
        };
        return Err(restore_error(format!(
            "holds {restored_splits} source splits, but job {} at parallelism {parallelism} reads {split_count}{hint}",
            job.spec.job
        )));
    }
    for snapshot in snapshots {
        for split in snapshot.splits {
            if split.split >= split_count || std::mem::replace(&mut seen[split.split], true) {
                return Err(restore_error(format!(
                    "split {} is unknown or appears twice (the job reads {split_count} splits; a savepoint restores into a job reading the same input)",
                    split.split
                )));
            }
            plan.slots[split.split % parallelism].splits.push(split);
        }
        // Whether state of `operator` (`bytes` of it) is restored: the job must have the
        // operator, or the state is dropped if allowed.
        let mut restores = |operator: &String, bytes: usize| -> Result<bool, RunError> {
            if job.plan.operators.contains(operator) {
                return Ok(true);
            }
            if allow_non_restored_state {
                *dropped.entry(operator.clone()).or_default() += bytes;
                return Ok(false);
            }
            Err(restore_error(format!(
                "holds state of operator {operator:?}, which job {} does not have (its operators: {}); pass --allow-non-restored-state to start without that state",
                job.spec.job,
                job.plan.operators.join(", ")
            )))
        };
        for entry in snapshot.state {
            if !restores(&entry.operator, entry.bytes.len())? {
                continue;
            }
            if entry.key_group == weir_dataflow::process::REPLICATED_GROUP {
                replicated.entry(entry.operator.clone()).or_default().push(entry);
                continue;
            }
            if !placed.insert((entry.operator.clone(), entry.key_group)) {
                return Err(restore_error(format!(
                    "holds key group {} of operator {:?} twice",
                    entry.key_group, entry.operator
                )));
            }
            plan.slots[slot_of_key_group(entry.key_group, parallelism)].state.push(entry);
        }
        for instance in snapshot.instances {
            if !restores(&instance.operator, instance.files.iter().map(|f| f.size as usize).sum())? {
                continue;
            }
            // An instance's files hold its slot's key groups: they restore whole, into the
            // slot that owns the same range (a checkpoint's parallelism is its job's).
            let (start, end) = instance.key_groups;
            let slot = (start < weir_core::keygroup::MAX_PARALLELISM).then(|| slot_of_key_group(start, parallelism));
            let range = slot.map(|slot| weir_core::keygroup::key_groups_of_slot(slot, parallelism));
            let (Some(slot), Some(range)) = (slot, range) else {
                return Err(restore_error(format!(
                    "holds files of operator {:?} for key groups out of range",
                    instance.operator
                )));
            };
            if range != (start..end) {
                return Err(restore_error(format!(
                    "holds files of operator {:?} for key groups {start}..{end}, which no slot owns at parallelism {parallelism}: files restore only at the parallelism that took them ({}); rescale through a savepoint",
                    instance.operator, restored.metadata.parallelism
                )));
            }
            let target = &mut plan.slots[slot];
            if target.instances.iter().any(|other| other.operator == instance.operator) {
                return Err(restore_error(format!(
                    "holds files of operator {:?} for key groups {start}..{end} twice",
                    instance.operator
                )));
            }
            target.instances.push(instance);
        }
    }
    if let Some(missing) = seen.iter().position(|seen| !seen) {
        return Err(restore_error(format!("has no state for split {missing}")));
    }
    for (operator, bytes) in dropped {
        tracing::warn!(checkpoint, operator, bytes, "dropping state of an operator the job no longer has");
    }
    // Each old slot's copy of replicated state, in slot order: at the same parallelism each slot
    // gets its own back; at another, slot `i` takes old slot `i % old`'s.
    for copies in replicated.into_values() {
        for (slot, snapshot) in plan.slots.iter_mut().enumerate() {
            snapshot.state.push(copies[slot % copies.len()].clone());
        }
    }
    plan.epoch = checkpoint;
    plan.finished = restored.metadata.finished;
    plan.attempt = restored.metadata.attempt;
    plan.restored_parallelism = restored.metadata.parallelism;
    Ok(plan)
}

/// A slot's restored state in the form its dataflow takes.
pub fn restored_slot(snapshot: SlotSnapshot) -> RestoredSlot {
    let mut restored = RestoredSlot {
        splits: snapshot.splits.into_iter().map(|s| (s.split, s)).collect(),
        instances: snapshot.instances,
        ..Default::default()
    };
    for entry in snapshot.state {
        restored.state.entry(entry.operator).or_default().push((entry.key_group, entry.bytes));
    }
    restored
}

/// The job record naming the savepoint the job was last started from (its identity: the job,
/// checkpoint and attempt that took it, however its path is spelled).
pub const SAVEPOINT_RECORD: &str = "_from_savepoint";

/// What deployment `generation` restores: the job's newest valid checkpoint — or, when it is
/// started from savepoint `from_savepoint` for the first time (a submission from a savepoint
/// clears the record of the last one), that savepoint, with every checkpoint the job took
/// before ruled out (they descend from another start; restoring one would resume from before
/// the savepoint). Once the job has checkpoints of its own since the savepoint, they win, as in
/// Flink: a restart — or `weir run` again after a kill — resumes, it does not go back to the
/// savepoint. Also returns the corrupt checkpoints skipped.
pub async fn restore_point(
    store: &CheckpointStore,
    generation: u64,
    from_savepoint: Option<StartingSavepoint<'_>>,
) -> Result<(Option<RestoredCheckpoint>, Vec<CheckpointError>), CheckpointError> {
    let Some(StartingSavepoint { path, mut read }) = from_savepoint else {
        return store.restore_for(generation).await;
    };
    let metadata = match &read {
        Some(savepoint) => savepoint.metadata.clone(),
        None => weir_core::savepoint::read_savepoint_metadata(path).await?,
    };
    let identity = weir_core::savepoint::savepoint_name(&metadata.job_id, metadata.checkpoint_id, metadata.attempt);
    let fresh = store.get_job_record(SAVEPOINT_RECORD).await?.as_deref() != Some(identity.as_bytes());
    if fresh && read.is_none() {
        // Read (and verified) before the job's records change.
        read = Some(weir_core::savepoint::read_savepoint(path).await?);
    }
    let (restored, skipped) = if fresh {
        store.start_afresh(generation).await?;
        store.put_job_record(SAVEPOINT_RECORD, identity.into_bytes()).await?;
        (None, Vec::new())
    } else {
        store.restore_for(generation).await?
    };
    let restored = match (restored, read) {
        (Some(own), _) => own,
        (None, Some(savepoint)) => savepoint,
        (None, None) => weir_core::savepoint::read_savepoint(path).await?,
    };
    Ok((Some(restored), skipped))
}

/// A savepoint a job is started from (`--from-savepoint`): its path, and its content when the
/// caller has read it already (it is read once).
#[derive(Debug)]
pub struct StartingSavepoint<'a> {
    /// Its path.
    pub path: &'a str,
    /// Its content, if read.
    pub read: Option<RestoredCheckpoint>,
}

impl<'a> StartingSavepoint<'a> {
    /// The savepoint at `path`, not read yet.
    pub fn at(path: &'a str) -> Self {
        StartingSavepoint { path, read: None }
    }
}

/// Claims the job's output for deployment generation `generation` before any sink is
/// recovered: a deployment older than one already seen is refused, so a stale `Deploy` that
/// reaches a worker late (after a partition heals) can neither roll back nor retract output a
/// newer attempt has committed (see [`OutputFence`]).
pub fn fence_output(job: &PlannedJob, generation: u64) -> Result<(), RunError> {
    let Some(fence) = job.fence(generation) else { return Ok(()) };
    let dir = job.fence_dir().expect("a fence has a directory");
    let fence_error = |e: std::io::Error| RunError::Output { path: dir.join(sink::FENCE), reason: e.to_string() };
    sink::prepare(dir)
        .map_err(|e| RunError::Output { path: dir.to_path_buf(), reason: format!("cannot create: {e}") })?;
    // The output's owner record names the job that took it over from a savepoint (see
    // `run::claim_output`): its first deployment moves the fence over too.
    if fence.held_by_another_job().map_err(fence_error)?.is_some()
        && crate::run::output_owner(dir)?.as_deref() == Some(job.job_id.as_str())
    {
        fence.take_over().map_err(fence_error)?;
    }
    fence.claim().map_err(fence_error)
}

/// The job record holding the latest deployment generation.
pub const GENERATION_RECORD: &str = "_generation";

/// Holds off newer deployments of `job` while deployment `generation` changes what they would
/// restore (deletes checkpoints, or local state of other attempts): the output fence, held,
/// for a job with file sinks; otherwise the job's generation record must still name
/// `generation` (a newer deployment takes the next one before it restores). `Err` says why
/// this deployment is not (or cannot be shown to be) the newest.
pub async fn hold_as_newest(
    job: &PlannedJob,
    generation: u64,
    store: &CheckpointStore,
) -> Result<sink::FenceHold, String> {
    if job.fence(generation).is_some() {
        return job.hold_fence(generation).map_err(|error| format!("a newer deployment holds the output ({error})"));
    }
    let record = store.get_job_record(GENERATION_RECORD).await.map_err(|error| error.to_string())?;
    let newest = record.as_deref().and_then(|bytes| std::str::from_utf8(bytes).ok()?.trim().parse::<u64>().ok());
    match newest {
        Some(newest) if newest == generation => Ok(sink::FenceHold::unfenced()),
        Some(newest) => Err(format!("deployment generation {newest} replaced this one ({generation})")),
        None => Err(format!("the job's {GENERATION_RECORD} record does not name a generation")),
    }
}

/// The next deployment generation of a job, kept in its checkpoint store so that it grows
/// across coordinator restarts. It is taken with a compare-and-swap (a conditional put), so
/// that two deployments racing for the next generation never both get it: one wins, the other
/// reads again and takes the one after.
pub async fn next_generation(store: &CheckpointStore) -> Result<u64, CheckpointError> {
    /// Lost races before giving up (each loser saw a newer generation: someone is deploying).
    const RACES_MAX: u32 = 64;
    let mut races = 0;
    loop {
        let (current, version) = match store.get_job_record_versioned(GENERATION_RECORD).await? {
            // Never guessed: a generation that went back would let a stale deployment through the
            // output fence and confuse the restore lineage.
            Some((bytes, version)) => {
                let current =
                    std::str::from_utf8(&bytes).ok().and_then(|t| t.trim().parse::<u64>().ok()).ok_or_else(|| {
                        CheckpointError::CorruptRecord {
                            path: store.record_path(GENERATION_RECORD),
                            reason: format!("not a generation number: {:?}", String::from_utf8_lossy(&bytes)),
                        }
                    })?;
                (current, Some(version))
            }
            None => (0, None),
        };
        let next = current + 1;
        match store.put_job_record_if(GENERATION_RECORD, next.to_string().into_bytes(), version).await {
            Ok(()) => return Ok(next),
            Err(CheckpointError::Conflict { path }) if races < RACES_MAX => {
                tracing::debug!(%path, next, "lost the race for a generation; reading again");
                races += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Brings slot `slot`'s sink files in line with restored checkpoint `epoch` (0 for none), which
/// attempt `attempt` took at parallelism `restored_parallelism`, for deployment generation
/// `generation` (refused if fenced out) — with those of the old slots that fall to it
/// ([`slots_recovered_by`]).
pub fn recover_sinks(
    job: &PlannedJob,
    slot: usize,
    epoch: Epoch,
    attempt: u64,
    restored_parallelism: usize,
    generation: u64,
) -> Result<(), RunError> {
    let held = job.hold_fence(generation).map_err(|e| RunError::Output {
        path: job.fence_dir().map_or_else(PathBuf::new, |dir| dir.join(sink::FENCE)),
        reason: format!("recovery refused: {e}"),
    })?;
    for (committer, dir) in job.committers().into_iter().zip(job.sink_names().into_iter().map(PathBuf::from)) {
        committer
            .prepare_destination()
            .map_err(|e| RunError::Output { path: dir.clone(), reason: format!("cannot create: {e}") })?;
        for recovered in slots_recovered_by(slot, job.parallelism(), restored_parallelism) {
            let report = committer.recover(recovered, epoch, attempt, &held).map_err(|e| RunError::Output {
                path: dir.clone(),
                reason: format!("recovery of staged output failed: {e}"),
            })?;
            if report.retracted > 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    slot = recovered,
                    retracted = report.retracted,
                    "retracted part files committed after checkpoint {epoch}; they will be recomputed"
                );
            }
        }
    }
    Ok(())
}

/// Everything needed to start one slot.
pub struct SlotLaunch {
    /// The job.
    pub job: Arc<PlannedJob>,
    /// The slot.
    pub slot: usize,
    /// The deployment attempt.
    pub attempt: u64,
    /// The deployment generation (fences its commits).
    pub generation: u64,
    /// The first epoch.
    pub start_epoch: Epoch,
    /// The slot's restored state.
    pub snapshot: SlotSnapshot,
    /// The attempt that took the restored checkpoint (0 for none).
    pub restored_attempt: u64,
    /// Its channels of every exchange of the job (empty at parallelism 1).
    pub exchanges: Vec<ExchangeChannels>,
    /// Its counters.
    pub metrics: Arc<SlotMetrics>,
    /// Commands from the coordinator.
    pub commands: UnboundedReceiver<SlotCommand>,
    /// Events to the coordinator.
    pub events: UnboundedSender<SlotEvent>,
    /// The slot's doorbell.
    pub doorbell: Arc<SlotDoorbell>,
    /// Source throttle for this slot, records per second.
    pub rate_limit: Option<u64>,
    /// The job's checkpoint store, which the slot uploads its state files to.
    pub store: CheckpointStore,
    /// The node's directory for local state (`--local-state-dir`).
    pub local_state_dir: PathBuf,
    /// The memory each slot's state instances share (`--state-memory-per-slot`), in bytes.
    pub state_memory_per_slot_bytes: u64,
}

/// A slot's directory for local state: one per job, slot and deployment attempt, so that a
/// slot of a lost attempt still closing never shares files with its successor.
pub fn slot_state_dir(local_state_dir: &Path, job_id: &str, slot: usize, attempt: u64) -> PathBuf {
    local_state_dir.join(job_id).join(format!("slot-{slot}-attempt-{attempt:016x}"))
}

/// The default `--local-state-dir`: a directory of the system's temporary directory (Flink's
/// `io.tmp.dirs`).
pub fn default_local_state_dir() -> PathBuf {
    std::env::temp_dir().join("weir-local-state")
}

/// Starts a slot on its own thread. A panic in the slot becomes a `Failed` event.
pub fn launch_slot(launch: SlotLaunch) -> Result<rt::SlotHandle, RunError> {
    let SlotLaunch {
        job,
        slot,
        attempt,
        generation,
        start_epoch,
        snapshot,
        restored_attempt,
        exchanges,
        metrics,
        commands,
        events,
        doorbell,
        rate_limit,
        store,
        local_state_dir,
        state_memory_per_slot_bytes,
    } = launch;
    let restored = restored_slot(snapshot);
    let state_dir = slot_state_dir(&local_state_dir, &job.job_id, slot, attempt);
    let local_state = job.spec.state_backend == StateBackendKind::RocksDb;
    let slot_dir = state_dir.clone();
    rt::spawn_slot(format!("weir-slot-{slot}"), move || async move {
        let setup = SlotSetup {
            slot,
            attempt,
            generation,
            job: job.def.clone(),
            spec: job.spec.clone(),
            start_epoch,
            restored,
            exchanges,
            metrics,
            rate_limit: rate_limit.map(|records_per_second| {
                let started = rt::now();
                weir_dataflow::source::RateLimit {
                    records_per_second,
                    clock_ms: Box::new(move || rt::elapsed_ms(started)),
                    emitted: Default::default(),
                }
            }),
            state_dir,
            state_memory_bytes: state_memory_per_slot_bytes,
        };
        let slot_events = events.clone();
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(drive_slot(
            job,
            setup,
            restored_attempt,
            store,
            commands,
            slot_events,
            doorbell,
        )))
        .await;
        if let Err(panic) = outcome {
            let message = rt::panic_message(&*panic);
            let _ = events.send(SlotEvent::Failed { slot, message: format!("internal error (bug): {message}") });
        }
        if local_state {
            // Each operator's instance removes its own directory once no snapshot reads it;
            // this removes the slot's, and the job's, if nothing is left in them.
            let _ = std::fs::remove_dir(&slot_dir);
            if let Some(job_dir) = slot_dir.parent() {
                let _ = std::fs::remove_dir(job_dir);
            }
        }
    })
    .map_err(|e| RunError::Job(JobError::SlotFailed { slot, message: format!("cannot start slot thread: {e}") }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::checkpoint::{CheckpointMetadata, FileEntry, FORMAT_VERSION};
    use weir_dataflow::snapshot::{SplitState, StateEntry};

    fn bids_job(parallelism: usize) -> PlannedJob {
        let spec = crate::jobs::bids::BidsParams::generated(1000, 1, std::path::Path::new("/tmp/weir-plan-test"))
            .spec(parallelism, weir_core::job::BadRecordPolicy::Skip);
        PlannedJob::new(&crate::jobs::builtin(), spec).unwrap()
    }

    fn entry(operator: &str, key_group: usize, byte: u8) -> StateEntry {
        StateEntry { operator: operator.into(), key_group, bytes: vec![byte] }
    }

    /// A checkpoint of the generated bids job at parallelism 2 whose slots hold `state`.
    fn checkpoint(state: [Vec<StateEntry>; 2]) -> RestoredCheckpoint {
        let mut metadata = CheckpointMetadata {
            format_version: FORMAT_VERSION,
            job_id: "bids-old".into(),
            checkpoint_id: 5,
            parallelism: 2,
            finished: false,
            files: Vec::new(),
            attempt: 1,
            generation: 1,
            savepoint: false,
            shared: Vec::new(),
        };
        let mut files = Vec::new();
        for (slot, state) in state.into_iter().enumerate() {
            let clock = weir_core::watermark::SplitClock::new(0);
            let snapshot = SlotSnapshot {
                splits: vec![SplitState { split: slot, position: 10, line: 0, clock }],
                state,
                instances: Vec::new(),
            };
            let bytes = snapshot.encode(slot, 5);
            metadata.files.push(FileEntry { name: format!("slot-{slot}.state"), size: bytes.len() as u64, crc32: 0 });
            files.push(bytes::Bytes::from(bytes));
        }
        RestoredCheckpoint { metadata, files }
    }

    #[test]
    fn a_restore_places_key_groups_by_owner_copies_replicated_state_and_drops_unknown_state_only_when_allowed() {
        let replicated = weir_dataflow::process::REPLICATED_GROUP;
        let restored = checkpoint([
            vec![entry("bids-per-auction", 3, 1), entry("bids-per-auction", replicated, 7), entry("gone", 4, 9)],
            vec![entry("bids-per-auction", 100, 2), entry("bids-per-auction", replicated, 8)],
        ]);
        let job = bids_job(2);
        let error = plan_restore(Some(&restored), &job, false).unwrap_err().to_string();
        assert!(error.contains("\"gone\"") && error.contains("--allow-non-restored-state"), "{error}");
        let plan = plan_restore(Some(&restored), &job, true).unwrap();
        assert_eq!(plan.restored_parallelism, 2);
        let groups = |slot: usize| -> Vec<(usize, u8)> {
            plan.slots[slot].state.iter().map(|entry| (entry.key_group, entry.bytes[0])).collect()
        };
        assert_eq!(slot_of_key_group(3, 2), 0);
        assert_eq!(groups(0), vec![(3, 1), (replicated, 7)], "each slot keeps its own replicated copy");
        assert_eq!(groups(1), vec![(100, 2), (replicated, 8)]);
        // Recovering output at parallelism 1 after 2: slot 0 recovers both old slots.
        assert_eq!(slots_recovered_by(0, 1, 2).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(slots_recovered_by(1, 3, 2).collect::<Vec<_>>(), vec![1]);
        assert_eq!(slots_recovered_by(0, 2, 5).collect::<Vec<_>>(), vec![0, 2, 4]);
    }

    /// Completes checkpoint `id` of `store`, taken by deployment `generation`.
    async fn complete_checkpoint(store: &CheckpointStore, id: u64, generation: u64) {
        let entry = store.put_file(id, "slot-0.state", bytes::Bytes::from_static(b"state")).await.unwrap();
        let mut metadata = checkpoint([vec![], vec![]]).metadata;
        (metadata.checkpoint_id, metadata.generation, metadata.files, metadata.parallelism) =
            (id, generation, vec![entry], 1);
        store.complete(&metadata).await.unwrap();
        store.record_latest(id).await.unwrap();
    }

    #[test]
    fn a_start_from_a_savepoint_rules_out_older_checkpoints_and_later_restarts_resume() {
        rt::block_on(async {
            let store = CheckpointStore::open("memory://restore-point-test", "job").unwrap();
            let mut metadata = checkpoint([vec![], vec![]]).metadata;
            metadata.checkpoint_id = 5;
            let name = weir_core::savepoint::savepoint_name("other", 5, 1);
            let dir = "memory://restore-point-test-savepoints";
            let file =
                weir_core::savepoint::put_savepoint_file(dir, &name, 0, bytes::Bytes::from_static(b"s")).await.unwrap();
            metadata.files = vec![file];
            let path = weir_core::savepoint::complete_savepoint(dir, &name, metadata).await.unwrap();
            let restored_id = |restored: &Option<RestoredCheckpoint>| {
                restored.as_ref().map(|r| (r.metadata.checkpoint_id, r.metadata.savepoint))
            };
            // The job ran before (generation 1, checkpoint 7), then is started from the savepoint.
            complete_checkpoint(&store, 7, 1).await;
            let (restored, _) = restore_point(&store, 2, Some(StartingSavepoint::at(&path))).await.unwrap();
            assert_eq!(restored_id(&restored), Some((5, true)), "the savepoint, not the older checkpoint 7");
            // A restart before the job took a checkpoint of its own: the savepoint again, and
            // checkpoint 7 is ruled out (deleted) for good.
            let (restored, _) = restore_point(&store, 3, Some(StartingSavepoint::at(&path))).await.unwrap();
            assert_eq!(restored_id(&restored), Some((5, true)));
            assert!(store.load(7).await.is_err(), "checkpoint 7 was deleted");
            // Once the job has a checkpoint since, a restart resumes from it.
            complete_checkpoint(&store, 6, 3).await;
            let (restored, _) = restore_point(&store, 4, Some(StartingSavepoint::at(&path))).await.unwrap();
            assert_eq!(restored_id(&restored), Some((6, false)));
            // The same savepoint, spelled differently, is the same start.
            let respelled = format!("{path}/");
            let (restored, _) = restore_point(&store, 5, Some(StartingSavepoint::at(&respelled))).await.unwrap();
            assert_eq!(restored_id(&restored), Some((6, false)));
            // A new submission from it (which clears the record) starts from it again.
            store.delete_job_record(SAVEPOINT_RECORD).await.unwrap();
            let (restored, _) = restore_point(&store, 6, Some(StartingSavepoint::at(&path))).await.unwrap();
            assert_eq!(restored_id(&restored), Some((5, true)));
            let (restored, _) = restore_point(&store, 7, None).await.unwrap();
            assert_eq!(restored_id(&restored), None, "checkpoint 6 descends from the earlier start");
        });
    }

    #[test]
    fn a_generated_source_restores_only_at_the_parallelism_that_took_it() {
        let restored = checkpoint([vec![], vec![]]);
        let error = plan_restore(Some(&restored), &bids_job(3), false).unwrap_err().to_string();
        assert!(error.contains("holds 2 source splits, but job bids at parallelism 3 reads 3"), "{error}");
        assert!(error.contains("a generated source has one split per slot"), "{error}");
    }

    /// Two deployments taking the next generation at the same moment, on a store whose every
    /// operation takes a while (so that both read before either writes): they must get two
    /// different generations, or both would pass the output fence.
    #[test]
    fn racing_deployments_never_share_a_generation() {
        rt::block_on(async {
            let (store, faults) =
                weir_chaos::storage::FaultyStore::new(Arc::new(object_store::memory::InMemory::new()), 1);
            faults.set_latency(5);
            let store = CheckpointStore::with_store(store, "job");
            for round in 0..5u64 {
                let (a, b) = futures::join!(next_generation(&store), next_generation(&store));
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_ne!(a, b, "round {round}: both deployments took generation {a}");
                assert_eq!(a.max(b), 2 * round + 2);
            }
        });
    }
}
