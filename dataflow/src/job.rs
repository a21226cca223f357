//! A job's dataflow in one slot: built from its registered builder, with the slot's
//! epoch control, restored state and exchange channels; and the job's plan.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::communication::allocator::Thread;
use timely::communication::Allocator;
use timely::scheduling::Activator;
use timely::worker::{Config, Worker};

use weir_core::job::JobSpec;
use weir_core::time::{Epoch, FIRST_EPOCH};

use crate::api::{BuildError, JobBuilder, JobPlan, PlanState, Shared, SlotContext};
use crate::exchange::ExchangeChannels;
use crate::metrics::SlotMetrics;
use crate::registry::JobDef;
use crate::snapshot::{SnapshotCollector, SplitState};
use crate::source::RateLimit;
use crate::stateful::KeyGroupStates;

/// What a slot restores: split positions by global split index, keyed state by operator id.
#[derive(Clone, Debug, Default)]
pub struct RestoredSlot {
    /// Split states of the slot's splits.
    pub splits: HashMap<usize, SplitState>,
    /// Keyed state of the key groups the slot owns, by operator id.
    pub state: HashMap<String, KeyGroupStates>,
    /// State instances restored from files (an incremental checkpoint's), by operator id: the
    /// slot puts each one's files in its directory before the job is built.
    pub instances: Vec<crate::snapshot::InstanceManifest>,
}

/// Everything a slot needs to build its part of the job.
pub struct SlotSetup {
    /// This slot's index.
    pub slot: usize,
    /// The deployment attempt (fences staged output of lost attempts).
    pub attempt: u64,
    /// The deployment generation (fences commits of stale deployments).
    pub generation: u64,
    /// The job's definition.
    pub job: JobDef,
    /// The job's spec.
    pub spec: Arc<JobSpec>,
    /// The first epoch (restored checkpoint + 1, or 1).
    pub start_epoch: Epoch,
    /// Restored state.
    pub restored: RestoredSlot,
    /// Channels of every exchange of the job, in `key_by` order (empty at parallelism 1).
    pub exchanges: Vec<ExchangeChannels>,
    /// Counters shared with the coordinator.
    pub metrics: Arc<SlotMetrics>,
    /// Optional source throttle.
    pub rate_limit: Option<RateLimit>,
    /// This slot's directory for local state (a RocksDB instance per stateful operator); the
    /// slot owns it for as long as it runs.
    pub state_dir: std::path::PathBuf,
    /// The memory its state instances share, in bytes ([`crate::state::set_slot_memory`]).
    pub state_memory_bytes: u64,
}

/// The shared cells through which the slot driver steers a running dataflow.
pub struct SlotControl {
    /// Sources move to this epoch at their next record boundary.
    pub target_epoch: Rc<Cell<Epoch>>,
    /// The final checkpoint's id, once all input is read everywhere.
    pub final_checkpoint: Rc<Cell<Option<Epoch>>>,
    /// Snapshot parts reported by the operators.
    pub snapshots: Rc<RefCell<SnapshotCollector>>,
    /// A fatal error reported by an operator.
    pub fatal: Rc<RefCell<Option<String>>>,
    /// Operators to wake when something arrives from outside the slot.
    pub activators: Vec<Activator>,
    /// Work done by the slot's operators.
    pub activity: crate::Activity,
    /// The number of splits this slot reads.
    pub split_count: usize,
    /// The job's plan (sinks to commit, among others).
    pub plan: JobPlan,
}

impl SlotControl {
    /// Wakes every operator that waits on the outside world.
    pub fn wake_all(&self) {
        for activator in &self.activators {
            activator.activate();
        }
    }
}

/// Builds the job's dataflow for one slot in `worker`.
pub fn build_slot(worker: &mut Worker, setup: SlotSetup) -> Result<SlotControl, BuildError> {
    let SlotSetup {
        slot,
        attempt,
        generation: _,
        job,
        spec,
        start_epoch,
        restored,
        exchanges,
        metrics,
        rate_limit,
        state_dir,
        state_memory_bytes,
    } = setup;
    assert!(slot < spec.parallelism, "slot {slot} of a job at parallelism {}", spec.parallelism);
    // The slot runs on this thread: its state instances share this budget.
    crate::state::set_slot_memory(state_memory_bytes);
    let ctx = SlotContext {
        slot,
        parallelism: spec.parallelism,
        attempt,
        start_epoch,
        planning: false,
        on_bad_record: spec.on_bad_record,
        state_backend: spec.state_backend,
        state_dir: Some(state_dir),
        target_epoch: Rc::new(Cell::new(start_epoch)),
        final_checkpoint: Rc::new(Cell::new(None)),
        snapshots: Rc::new(RefCell::new(SnapshotCollector::new(start_epoch))),
        fatal: Rc::new(RefCell::new(None)),
        pressure: Rc::new(Cell::new(0)),
        alignment: Default::default(),
        activity: crate::Activity::default(),
        metrics,
        rate_limit: Rc::new(rate_limit),
        restored_splits: RefCell::new(restored.splits),
        restored_state: RefCell::new(restored.state),
        restored_instances: RefCell::new(restored.instances.into_iter().map(|instance| instance.operator).collect()),
        exchanges: RefCell::new(exchanges.into()),
        activators: RefCell::new(Vec::new()),
    };
    let shared = Rc::new(Shared { ctx, plan: RefCell::new(PlanState::default()) });
    let plan = build_in(worker, &job, &spec, shared.clone())?;
    let ctx = &shared.ctx;
    assert!(ctx.exchanges.borrow().is_empty(), "every exchange channel is used");
    let leftover_instance = ctx.restored_instances.borrow().iter().next().cloned();
    if let Some(uid) = ctx.restored_state.borrow().keys().next().or(leftover_instance.as_ref()) {
        return Err(BuildError::Operator {
            operator: uid.clone(),
            reason: "the checkpoint holds state of this operator, which the job no longer has; \
                     restore the operator (same uid) or start the job afresh"
                .into(),
        });
    }
    let split_count = shared.plan.borrow().slot_splits;
    let activators = ctx.activators.borrow().clone();
    Ok(SlotControl {
        target_epoch: ctx.target_epoch.clone(),
        final_checkpoint: ctx.final_checkpoint.clone(),
        snapshots: ctx.snapshots.clone(),
        fatal: ctx.fatal.clone(),
        activators,
        activity: ctx.activity.clone(),
        split_count,
        plan,
    })
}

/// Plans a job: builds it once without running it, to learn its splits, sinks, exchanges and
/// stateful operators and to check it (sources validated, the graph wired right).
pub fn plan_job(job: &JobDef, spec: &JobSpec) -> Result<JobPlan, BuildError> {
    if spec.state_backend == weir_core::job::StateBackendKind::RocksDb && !crate::state::HAS_ROCKSDB {
        return Err(BuildError::Job(crate::state::NO_ROCKSDB.into()));
    }
    let ctx = SlotContext {
        slot: 0,
        parallelism: spec.parallelism,
        attempt: 0,
        start_epoch: FIRST_EPOCH,
        planning: true,
        on_bad_record: spec.on_bad_record,
        state_backend: spec.state_backend,
        state_dir: None,
        target_epoch: Rc::new(Cell::new(FIRST_EPOCH)),
        final_checkpoint: Rc::new(Cell::new(None)),
        snapshots: Rc::new(RefCell::new(SnapshotCollector::new(FIRST_EPOCH))),
        fatal: Rc::new(RefCell::new(None)),
        pressure: Rc::new(Cell::new(0)),
        alignment: Default::default(),
        activity: crate::Activity::default(),
        metrics: Arc::new(SlotMetrics::default()),
        rate_limit: Rc::new(None),
        restored_splits: RefCell::new(HashMap::new()),
        restored_state: RefCell::new(HashMap::new()),
        restored_instances: RefCell::new(Default::default()),
        exchanges: RefCell::new(Default::default()),
        activators: RefCell::new(Vec::new()),
    };
    let shared = Rc::new(Shared { ctx, plan: RefCell::new(PlanState::default()) });
    let mut worker = Worker::new(Config::default(), Allocator::Thread(Thread::default()), None);
    build_in(&mut worker, job, spec, shared)
}

fn build_in(worker: &mut Worker, job: &JobDef, spec: &JobSpec, shared: Rc<Shared>) -> Result<JobPlan, BuildError> {
    worker.dataflow::<weir_core::time::Time, _, _>(|scope| {
        let mut builder = JobBuilder::new(scope, shared);
        // A builder that panics (an API constructor refusing an argument, say) is a job built
        // wrong: an error for whoever submitted it, not the end of the coordinator or worker.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.build)(&mut builder, &spec.params)));
        match built {
            Ok(result) => result?,
            Err(panic) => {
                let message = weir_core::rt::panic_message(&*panic);
                return Err(BuildError::Job(format!("job {} could not be built: {message}", job.name)));
            }
        }
        if builder.shared().plan.borrow().plan.sources.is_empty() {
            return Err(BuildError::Job(format!("job {} has no source", job.name)));
        }
        builder.finish()
    })
}
