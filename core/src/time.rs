//! The time model: a timely timestamp that is a pair `(epoch, event_time)`.
//!
//! Epochs are checkpoints: every record read between the trigger of checkpoint `n - 1` and
//! the trigger of checkpoint `n` carries epoch `n`, and checkpoint `n` covers exactly the
//! records of epochs `<= n`. Event time is the user's clock (epoch milliseconds). The two
//! coordinates are ordered as a *product*: `(e1, t1) <= (e2, t2)` iff `e1 <= e2` and `t1 <= t2`.
//! Timely's progress tracking then answers both questions the engine asks — "has event time
//! passed the end of this window?" and "is epoch `n` complete?" — from one frontier, exactly,
//! without heuristics.

use serde::{Deserialize, Serialize};
use timely::order::PartialOrder;
use timely::progress::timestamp::{PathSummary, Refines, Timestamp};

/// Event time in milliseconds since the Unix epoch (signed: any `i64` is a valid event time).
pub type EventTime = i64;

/// A checkpoint epoch. Epoch `n` is closed by checkpoint `n`; the first epoch of a fresh job is 1.
pub type Epoch = u64;

/// The first epoch of a job that starts without a checkpoint.
pub const FIRST_EPOCH: Epoch = 1;

/// The timely timestamp of every Weir dataflow: `(epoch, event_time)`, product-ordered.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time {
    /// The checkpoint epoch (major coordinate of the total order used for sorting).
    pub epoch: Epoch,
    /// Event time in milliseconds.
    pub event_time: EventTime,
}

impl Time {
    /// A timestamp at `epoch` and `event_time`.
    pub const fn new(epoch: Epoch, event_time: EventTime) -> Self {
        Time { epoch, event_time }
    }
}

impl PartialOrder for Time {
    #[inline]
    fn less_equal(&self, other: &Self) -> bool {
        self.epoch <= other.epoch && self.event_time <= other.event_time
    }
}

impl Timestamp for Time {
    type Summary = TimeSummary;
    fn minimum() -> Self {
        Time { epoch: 0, event_time: EventTime::MIN }
    }
}

/// The product order is a lattice: the least upper bound of two times takes each coordinate's
/// maximum, the greatest lower bound each coordinate's minimum. Differential dataflow needs it to
/// compact updates (see `weir_dataflow::updating`).
impl differential_dataflow::lattice::Lattice for Time {
    #[inline]
    fn join(&self, other: &Self) -> Self {
        Time { epoch: self.epoch.max(other.epoch), event_time: self.event_time.max(other.event_time) }
    }
    #[inline]
    fn meet(&self, other: &Self) -> Self {
        Time { epoch: self.epoch.min(other.epoch), event_time: self.event_time.min(other.event_time) }
    }
}

impl Refines<()> for Time {
    fn to_inner(_: ()) -> Self {
        Self::minimum()
    }
    fn to_outer(self) {}
    fn summarize(_: TimeSummary) {}
}

/// Path summary for [`Time`]: Weir dataflows are acyclic, so the only summary is the identity.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeSummary;

impl PartialOrder for TimeSummary {
    fn less_equal(&self, _other: &Self) -> bool {
        true
    }
}

impl PathSummary<Time> for TimeSummary {
    fn results_in(&self, src: &Time) -> Option<Time> {
        Some(*src)
    }
    fn followed_by(&self, _other: &Self) -> Option<Self> {
        Some(TimeSummary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The total order must extend the partial order, as timely requires.
        #[test]
        fn total_order_extends_product_order(a in any::<(u64, i64)>(), b in any::<(u64, i64)>()) {
            let (x, y) = (Time::new(a.0, a.1), Time::new(b.0, b.1));
            if x.less_equal(&y) { prop_assert!(x <= y); }
            prop_assert!(Time::minimum().less_equal(&x));
        }
    }
}
