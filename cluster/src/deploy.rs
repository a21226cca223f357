//! Deploying a job's slots — restore planning, sink recovery, starting slot threads — shared by
//! the embedded cluster (`weir run`) and by workers of a multi-process cluster.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use std::path::{Path, PathBuf};

use weir_core::checkpoint::{CheckpointError, RestoredCheckpoint};
use weir_core::job::JobSpec;
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
}

impl PlannedJob {
    /// Looks the job up in `registry`, checks its parameters and plans it (which validates its
    /// sources and its graph). The error names the job and says what is wrong.
    pub fn new(registry: &JobRegistry, spec: JobSpec) -> Result<Self, String> {
        let def = registry.check(&spec)?.clone();
        let plan = plan_job(&def, &spec).map_err(|e| format!("job {}: {e}", spec.job))?;
        Ok(PlannedJob { def, spec: Arc::new(spec), plan })
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
        self.fence_dir().map(|dir| OutputFence::new(dir, generation))
    }
}

/// What a job restarts from: a checkpoint (or nothing), split into per-slot snapshots.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// The restored checkpoint, 0 for none.
    pub epoch: Epoch,
    /// The restored checkpoint was the final one: the job is done.
    pub finished: bool,
    /// The attempt that took the restored checkpoint.
    pub attempt: u64,
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

/// Splits a verified checkpoint (or none) into per-slot snapshots for the job's parallelism:
/// split `i` to slot `i % parallelism`, keyed state by key group to the slot that owns it.
pub fn plan_restore(restored: Option<&RestoredCheckpoint>, job: &PlannedJob) -> Result<RestorePlan, RunError> {
    let parallelism = job.parallelism();
    let mut plan = RestorePlan { slots: vec![SlotSnapshot::default(); parallelism], ..Default::default() };
    let Some(restored) = restored else { return Ok(plan) };
    let checkpoint = restored.metadata.checkpoint_id;
    let restore_error = |reason: String| RunError::Restore { checkpoint, reason };
    if restored.metadata.parallelism != parallelism {
        return Err(restore_error(format!(
            "was taken at parallelism {}, the job runs at {parallelism}",
            restored.metadata.parallelism
        )));
    }
    let split_count = job.plan.split_count();
    let mut seen = vec![false; split_count];
    for (entry, bytes) in restored.metadata.files.iter().zip(&restored.files) {
        let (file_slot, snapshot) =
            SlotSnapshot::decode(bytes, checkpoint).map_err(|e| restore_error(format!("{}: {e}", entry.name)))?;
        for split in snapshot.splits {
            if split.split >= split_count || std::mem::replace(&mut seen[split.split], true) {
                return Err(restore_error(format!("split {} is unknown or appears twice", split.split)));
            }
            plan.slots[split.split % parallelism].splits.push(split);
        }
        for entry in snapshot.state {
            if !job.plan.operators.contains(&entry.operator) {
                return Err(restore_error(format!(
                    "holds state of operator {:?}, which job {} does not have",
                    entry.operator, job.spec.job
                )));
            }
            if entry.key_group == weir_dataflow::process::REPLICATED_GROUP {
                // Replicated (broadcast) state is per slot: each slot holds its own copy, at
                // its own progress; it goes back to the slot that took it (same parallelism).
                if file_slot >= parallelism {
                    return Err(restore_error(format!(
                        "replicated state of slot {file_slot} at parallelism {parallelism}"
                    )));
                }
                plan.slots[file_slot].state.push(entry);
                continue;
            }
            plan.slots[slot_of_key_group(entry.key_group, parallelism)].state.push(entry);
        }
    }
    if let Some(missing) = seen.iter().position(|seen| !seen) {
        return Err(restore_error(format!("has no state for split {missing}")));
    }
    plan.epoch = checkpoint;
    plan.finished = restored.metadata.finished;
    plan.attempt = restored.metadata.attempt;
    Ok(plan)
}

/// A slot's restored state in the form its dataflow takes.
pub fn restored_slot(snapshot: SlotSnapshot) -> RestoredSlot {
    let mut restored =
        RestoredSlot { splits: snapshot.splits.into_iter().map(|s| (s.split, s)).collect(), ..Default::default() };
    for entry in snapshot.state {
        restored.state.entry(entry.operator).or_default().push((entry.key_group, entry.bytes));
    }
    restored
}

/// Claims the job's output for deployment generation `generation` before any sink is
/// recovered: a deployment older than one already seen is refused, so a stale `Deploy` that
/// reaches a worker late (after a partition heals) can neither roll back nor retract output a
/// newer attempt has committed (see [`OutputFence`]).
pub fn fence_output(job: &PlannedJob, generation: u64) -> Result<(), RunError> {
    let Some(fence) = job.fence(generation) else { return Ok(()) };
    let dir = job.fence_dir().expect("a fence has a directory");
    sink::prepare(dir)
        .map_err(|e| RunError::Output { path: dir.to_path_buf(), reason: format!("cannot create: {e}") })?;
    fence.claim().map_err(|e| RunError::Output { path: dir.join(sink::FENCE), reason: e.to_string() })
}

/// The job record holding the latest deployment generation.
pub const GENERATION_RECORD: &str = "_generation";

/// The next deployment generation of a job, kept in its checkpoint store so that it grows
/// across coordinator restarts. It is taken with a compare-and-swap (a conditional put), so
/// that two deployments racing for the next generation never both get it: one wins, the other
/// reads again and takes the one after.
pub async fn next_generation(store: &weir_core::checkpoint::CheckpointStore) -> Result<u64, CheckpointError> {
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
/// attempt `attempt` took, for deployment generation `generation` (refused if fenced out).
pub fn recover_sinks(
    job: &PlannedJob,
    slot: usize,
    epoch: Epoch,
    attempt: u64,
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
        let report = committer.recover(slot, epoch, attempt, &held).map_err(|e| RunError::Output {
            path: dir.clone(),
            reason: format!("recovery of staged output failed: {e}"),
        })?;
        if report.retracted > 0 {
            tracing::warn!(
                dir = %dir.display(),
                slot,
                retracted = report.retracted,
                "retracted part files committed after checkpoint {epoch}; they will be recomputed"
            );
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
        exchanges,
        metrics,
        commands,
        events,
        doorbell,
        rate_limit,
    } = launch;
    let restored = restored_slot(snapshot);
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
        };
        let slot_events = events.clone();
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(drive_slot(
            job,
            setup,
            commands,
            slot_events,
            doorbell,
        )))
        .await;
        if let Err(panic) = outcome {
            let message = rt::panic_message(&*panic);
            let _ = events.send(SlotEvent::Failed { slot, message: format!("internal error (bug): {message}") });
        }
    })
    .map_err(|e| RunError::Job(JobError::SlotFailed { slot, message: format!("cannot start slot thread: {e}") }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::checkpoint::CheckpointStore;

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
