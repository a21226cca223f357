//! Weir's dataflow: the operators of a job, built on timely, one slot at a time.
//!
//! A slot is one single-threaded timely worker. This crate builds the main job's dataflow in a
//! slot ([`job`]): sources that read splits and move between checkpoint epochs on command
//! ([`source`]), Weir's own exchange layer that carries data and frontiers between slots with
//! credits ([`exchange`]), event-time windows that fire from frontiers and snapshot per epoch
//! ([`window`]), and exactly-once sinks that stage per epoch and commit after checkpoints
//! ([`sink`]). Operators hand their snapshot parts to the slot's [`snapshot`] collector; the
//! cluster's slot driver uploads them. Nothing here knows about processes or the network.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod exchange;
pub mod job;
pub mod metrics;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod window;

pub use job::{build_bids_dataflow, SlotControl, SlotSetup};

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
