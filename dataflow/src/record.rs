//! A record in flight: the user's value with its event time and its lateness horizon.
//!
//! Flink carries a timestamp with every record; Weir also carries the *watermark of the
//! record's split when it was read*. That is what makes lateness exact: an event-time operator
//! judges a record late by comparing its result's end with this watermark — a function of the
//! split's own history — never with the operator's current frontier, which depends on
//! scheduling, parallelism and failures. So a record is late, or not, identically in every run
//! (the rule of `weir_core::watermark`, generalised to every window kind and join).

use serde::{Deserialize, Serialize};

use weir_core::time::EventTime;

/// A value with its event time and the watermark it was read under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record<T> {
    /// The user's value.
    pub value: T,
    /// Event time (milliseconds), from the source's timestamp assigner or the operator that
    /// produced the record (a window result's time is the window's last millisecond).
    pub time: EventTime,
    /// The watermark of the record's split just before it was read. Stateless operators and
    /// process functions pass it on with what they derive from the record; results of windows
    /// and timers carry `EventTime::MIN` (never late downstream: an operator emits them before
    /// its output frontier passes their time).
    pub watermark: EventTime,
}

impl<T> Record<T> {
    /// A record an operator derived at event time `time`.
    #[inline]
    pub fn derived(value: T, time: EventTime) -> Self {
        Record { value, time, watermark: EventTime::MIN }
    }

    /// The same stamps around another value.
    #[inline]
    pub fn with<U>(&self, value: U) -> Record<U> {
        Record { value, time: self.time, watermark: self.watermark }
    }
}

/// A timely stream of records of `T` (what a [`crate::DataStream`] wraps).
pub type RecordStream<'scope, T> = timely::dataflow::Stream<'scope, weir_core::time::Time, Vec<Record<T>>>;

/// What a record type must be to flow through a Weir job: cloneable (a stream may feed several
/// operators), sendable and shareable between threads (slots are threads, and a snapshot being
/// encoded on another thread shares the state it reads), serializable (exchanges between
/// processes and snapshots encode it) and owned.
pub trait Data: Clone + Send + Sync + Serialize + for<'de> Deserialize<'de> + 'static {}

impl<T: Clone + Send + Sync + Serialize + for<'de> Deserialize<'de> + 'static> Data for T {}
