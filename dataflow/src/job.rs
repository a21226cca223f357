//! The main job's dataflow in one slot: source → (exchange by auction) → window → sinks.
//!
//! ```text
//!  BidSource ──bids──► ExchangeSend ═══► other slots ═══► ExchangeReceive ──► WindowAggregate ──► sink DIR/
//!      │                        (parallelism 1: the source feeds the window directly)
//!      ├──late───► sink DIR/late/
//!      └──errors─► sink DIR/errors/
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::scheduling::Activator;
use timely::worker::Worker;

use weir_core::job::{BidsJobSpec, SplitSpec};
use weir_core::keygroup::slot_of_key;
use weir_core::time::{Epoch, Time};
use weir_core::window::TumblingWindows;
use weir_core::Bid;

use crate::exchange::{ExchangeReceive, ExchangeRx, ExchangeSend, ExchangeTx};
use crate::metrics::SlotMetrics;
use crate::sink::{EpochFileSink, SinkSetup};
use crate::snapshot::{SnapshotCollector, SplitState, WindowEntry};
use crate::source::{bid_source, SourceSetup};
use crate::window::{WindowAggregate, WindowSetup, WindowState};

/// Everything a slot needs to build its part of the job.
pub struct SlotSetup {
    /// This slot's index.
    pub slot: usize,
    /// The deployment attempt (fences staged output of lost attempts).
    pub attempt: u64,
    /// The deployment generation (fences commits of stale deployments).
    pub generation: u64,
    /// The job.
    pub spec: Arc<BidsJobSpec>,
    /// The first epoch (restored checkpoint + 1, or 1).
    pub start_epoch: Epoch,
    /// The splits this slot reads.
    pub splits: Vec<(usize, SplitSpec)>,
    /// Restored split states.
    pub restored_splits: HashMap<usize, SplitState>,
    /// Restored window entries of the key groups this slot owns.
    pub restored_window: Vec<WindowEntry>,
    /// Channels to every slot (index = target) and from every slot; `None` at parallelism 1.
    pub exchange: Option<ExchangeEndpoints>,
    /// Counters shared with the coordinator.
    pub metrics: Arc<SlotMetrics>,
    /// Optional source throttle.
    pub rate_limit: Option<crate::source::RateLimit>,
}

/// A slot's exchange channels: senders to every slot (index = target), receivers from every slot.
pub type ExchangeEndpoints = (Vec<Box<dyn ExchangeTx<Bid>>>, Vec<Box<dyn ExchangeRx<Bid>>>);

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
}

impl SlotControl {
    /// Wakes every operator that waits on the outside world.
    pub fn wake_all(&self) {
        for activator in &self.activators {
            activator.activate();
        }
    }
}

/// Builds the main job's dataflow for one slot in `worker`.
pub fn build_bids_dataflow(worker: &mut Worker, setup: SlotSetup) -> SlotControl {
    let SlotSetup {
        slot,
        attempt,
        generation: _,
        spec,
        start_epoch,
        splits,
        restored_splits,
        restored_window,
        exchange,
        metrics,
        rate_limit,
    } = setup;
    let target_epoch = Rc::new(Cell::new(start_epoch));
    let final_checkpoint = Rc::new(Cell::new(None));
    let snapshots = Rc::new(RefCell::new(SnapshotCollector::new(start_epoch)));
    let fatal = Rc::new(RefCell::new(None));
    let pressure = Rc::new(Cell::new(0));
    let activity = crate::Activity::default();
    let windows = TumblingWindows::new(spec.window_ms);
    let parallelism = spec.parallelism;

    let activators = worker.dataflow::<Time, _, _>(|scope| {
        let source = bid_source(
            scope,
            SourceSetup {
                splits,
                restored: restored_splits,
                windows,
                out_of_orderness_ms: spec.out_of_orderness_ms,
                on_bad_record: spec.on_bad_record,
                start_epoch,
                target_epoch: target_epoch.clone(),
                final_checkpoint: final_checkpoint.clone(),
                pressure: pressure.clone(),
                snapshots: snapshots.clone(),
                fatal: fatal.clone(),
                metrics: metrics.clone(),
                activity: activity.clone(),
                rate_limit,
            },
        );
        let mut activators = vec![source.activator];
        let keyed = match exchange {
            None => {
                assert_eq!(parallelism, 1, "slots of a parallel job need exchange channels");
                source.bids
            }
            Some((senders, receivers)) => {
                assert_eq!(senders.len(), parallelism);
                assert_eq!(receivers.len(), parallelism);
                let send = source.bids.exchange_send(
                    senders,
                    move |bid: &Bid| slot_of_key(bid.auction, parallelism),
                    pressure.clone(),
                    activity.clone(),
                );
                let (received, receive) = ExchangeReceive::build(scope, receivers, activity.clone());
                activators.push(send);
                activators.push(receive);
                received
            }
        };
        let results = keyed.window_aggregate(WindowSetup {
            windows,
            start_epoch,
            restored: WindowState::from_entries(restored_window),
            snapshots: snapshots.clone(),
            metrics: metrics.clone(),
            activity: activity.clone(),
        });
        let sink = |dir: std::path::PathBuf, index: usize| SinkSetup {
            dir,
            slot,
            attempt,
            index,
            snapshots: snapshots.clone(),
            fatal: fatal.clone(),
            activity: activity.clone(),
        };
        results.epoch_file_sink(sink(spec.output_dir.clone(), 0));
        source.late.epoch_file_sink(sink(spec.output_dir.join("late"), 1));
        source.errors.epoch_file_sink(sink(spec.output_dir.join("errors"), 2));
        activators
    });

    SlotControl { target_epoch, final_checkpoint, snapshots, fatal, activators, activity }
}

/// The sink directories of a job: main output, late data, errors.
pub fn sink_dirs(spec: &BidsJobSpec) -> [std::path::PathBuf; 3] {
    [spec.output_dir.clone(), spec.output_dir.join("late"), spec.output_dir.join("errors")]
}
