//! Weir's dataflow: the public DataStream API and the operators under it, built on timely, one
//! slot at a time.
//!
//! Users write jobs against [`api`] (sources, `map`/`filter`/`key_by`, windows, sinks) and
//! register them in a [`registry`]. A slot is one single-threaded timely worker, and [`job`]
//! builds a registered job's dataflow in it: sources that read splits and move between
//! checkpoint epochs on command ([`source`]), Weir's own exchange layer that carries data and
//! frontiers between slots with credits ([`exchange`]), stateful operators on one scaffold that
//! aligns epochs, follows event time and snapshots by operator id and key group
//! ([`stateful`]; windows in [`window`]), and exactly-once sinks that stage per epoch and commit
//! after checkpoints ([`sink`]). Operators hand their snapshot parts to the slot's [`snapshot`]
//! collector; the cluster's slot driver uploads them. Nothing here knows about processes or
//! the network.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alignment;
pub mod api;
pub mod exchange;
pub mod job;
pub mod join;
pub mod keyed;
pub mod metrics;
pub mod process;
pub mod record;
mod record_log;
pub mod registry;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod stateful;
pub mod updating;
pub mod window;

pub use api::{
    BroadcastConnectedStreams, BroadcastStream, BuildError, ConnectedStreams, DataStream, JobBuilder, JobPlan,
    KeyedStream, WindowOutput, WindowedStream,
};
pub use job::{build_slot, plan_job, SlotControl, SlotSetup};
pub use process::{
    BroadcastKey, Context, Either, KeyedBroadcastProcessFunction, KeyedCoProcessFunction, KeyedProcessFunction,
    OutputTag, TimeDomain,
};
pub use record::{Data, Record};
pub use registry::{EngineDefaults, JobDef, JobRegistry};
pub use source::{CollectionSource, FileSource, GeneratorSource, LineFormat, WatermarkStrategy};
pub use state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
pub use updating::{Change, ChangeKind, GroupFold, Sums, UpdatingStream};
pub use weir_core::job::{ParamDef, ParamKind, Params};
pub use window::{
    AggregateFunction, CountTrigger, CumulativeEventTimeWindows, EventTimeSessionWindows, SlidingEventTimeWindows,
    TimeWindow, Trigger, TriggerResult, TumblingEventTimeWindows,
};

use std::cell::Cell;
use std::rc::Rc;

use timely::dataflow::operators::InputCapability;
use weir_core::time::Time;

/// Counts work done by a slot's operators. The slot driver parks only after steps that did
/// none, so it never sleeps while records are moving and never spins while nothing is.
#[derive(Clone, Debug, Default)]
pub struct Activity(Rc<Cell<u64>>);

impl Activity {
    /// Records that an operator did something.
    #[inline]
    pub fn note(&self) {
        self.0.set(self.0.get().wrapping_add(1));
    }
    /// The number of notes so far.
    pub fn count(&self) -> u64 {
        self.0.get()
    }
}

/// The timestamp of a received message. Every Weir operator sends under a single capability,
/// so each message's stamp has exactly one element.
#[inline]
pub(crate) fn message_time(capability: &InputCapability<Time>) -> Time {
    let elements = capability.stamp().elements();
    assert_eq!(elements.len(), 1, "a Weir message carries exactly one timestamp, got {elements:?}");
    elements[0]
}
