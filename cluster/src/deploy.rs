//! Deploying a job's slots — restore planning, sink recovery, starting slot threads — shared by
//! the embedded cluster (`weir run`) and by workers of a multi-process cluster.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use weir_core::checkpoint::{CheckpointError, RestoredCheckpoint};
use weir_core::job::{BidsJobSpec, SplitSpec};
use weir_core::keygroup::slot_of_key_group;
use weir_core::rt;
use weir_core::time::{Epoch, FIRST_EPOCH};
use weir_dataflow::job::{sink_dirs, ExchangeEndpoints, SlotSetup};
use weir_dataflow::metrics::SlotMetrics;
use weir_dataflow::sink::{self, OutputFence};
use weir_dataflow::snapshot::SlotSnapshot;

use crate::coordinator::JobError;
use crate::run::RunError;
use crate::slot::{drive_slot, SlotCommand, SlotDoorbell, SlotEvent};

/// What a job restarts from: a checkpoint (or nothing), split into per-slot snapshots.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// The restored checkpoint, 0 for none.
    pub epoch: Epoch,
    /// The restored checkpoint was the final one: the job is done.
    pub finished: bool,
    /// The attempt that took the restored checkpoint.
    pub attempt: u64,
    /// Per slot: the split states of its splits and the window entries of its key groups.
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

/// Splits a verified checkpoint (or none) into per-slot snapshots for `spec`'s parallelism.
pub fn plan_restore(restored: Option<&RestoredCheckpoint>, spec: &BidsJobSpec) -> Result<RestorePlan, RunError> {
    let parallelism = spec.parallelism;
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
    let split_count = spec.splits().len();
    let mut seen = vec![false; split_count];
    for (entry, bytes) in restored.metadata.files.iter().zip(&restored.files) {
        let (_, snapshot) =
            SlotSnapshot::decode(bytes, checkpoint).map_err(|e| restore_error(format!("{}: {e}", entry.name)))?;
        for split in snapshot.splits {
            if split.split >= split_count || std::mem::replace(&mut seen[split.split], true) {
                return Err(restore_error(format!("split {} is unknown or appears twice", split.split)));
            }
            plan.slots[split.split % parallelism].splits.push(split);
        }
        for entry in snapshot.window {
            plan.slots[slot_of_key_group(entry.key_group, parallelism)].window.push(entry);
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

/// The splits slot `slot` reads: split `i` runs on slot `i % parallelism`.
pub fn slot_splits(spec: &BidsJobSpec, slot: usize) -> Vec<(usize, SplitSpec)> {
    spec.splits().into_iter().enumerate().filter(|(index, _)| index % spec.parallelism == slot).collect()
}

/// Claims the job's output directory for deployment generation `generation` before any sink is
/// recovered: a deployment older than one already seen is refused, so a stale `Deploy` that
/// reaches a worker late (after a partition heals) can neither roll back nor retract output a
/// newer attempt has committed (see [`OutputFence`]).
pub fn fence_output(spec: &BidsJobSpec, generation: u64) -> Result<(), RunError> {
    OutputFence::new(&spec.output_dir, generation)
        .claim()
        .map_err(|e| RunError::Output { path: spec.output_dir.join(weir_dataflow::sink::FENCE), reason: e.to_string() })
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
    spec: &BidsJobSpec,
    slot: usize,
    epoch: Epoch,
    attempt: u64,
    generation: u64,
) -> Result<(), RunError> {
    let held = OutputFence::new(&spec.output_dir, generation).hold().map_err(|e| RunError::Output {
        path: spec.output_dir.join(sink::FENCE),
        reason: format!("recovery refused: {e}"),
    })?;
    for dir in sink_dirs(spec) {
        sink::prepare(&dir)
            .map_err(|e| RunError::Output { path: dir.clone(), reason: format!("cannot create: {e}") })?;
        let report = sink::recover(&dir, slot, epoch, attempt, &held).map_err(|e| RunError::Output {
            path: dir.clone(),
            reason: format!("recovery of staged output failed: {e}"),
        })?;
        if report.retracted > 0 {
            eprintln!(
                "warning: {}: retracted {} part file(s) of slot {slot} committed after checkpoint {epoch}; they will be recomputed",
                dir.display(),
                report.retracted
            );
        }
    }
    Ok(())
}

/// Everything needed to start one slot.
pub struct SlotLaunch {
    /// The job.
    pub spec: Arc<BidsJobSpec>,
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
    /// Its exchange channels (`None` at parallelism 1).
    pub exchange: Option<ExchangeEndpoints>,
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
        spec,
        slot,
        attempt,
        generation,
        start_epoch,
        snapshot,
        exchange,
        metrics,
        commands,
        events,
        doorbell,
        rate_limit,
    } = launch;
    let splits = slot_splits(&spec, slot);
    let restored_splits = snapshot.splits.into_iter().map(|s| (s.split, s)).collect();
    rt::spawn_slot(format!("weir-slot-{slot}"), move || async move {
        let setup = SlotSetup {
            slot,
            attempt,
            generation,
            spec,
            start_epoch,
            splits,
            restored_splits,
            restored_window: snapshot.window,
            exchange,
            metrics,
            rate_limit: rate_limit.map(|records_per_second| {
                let started = rt::now();
                weir_dataflow::source::RateLimit {
                    records_per_second,
                    clock_ms: Box::new(move || rt::elapsed_ms(started)),
                }
            }),
        };
        let slot_events = events.clone();
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(drive_slot(
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
