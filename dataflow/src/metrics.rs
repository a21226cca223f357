//! Counters a slot publishes for progress reports, the summary and (later) Prometheus.
//!
//! Updated once per batch, never per record, with relaxed atomics: they inform people, they
//! never decide anything.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A slot's counters, shared with the coordinator.
#[derive(Debug)]
pub struct SlotMetrics {
    /// Input records read (valid, late and malformed).
    pub records_read: AtomicU64,
    /// Records a pipeline's first stateful step (a window, a join, an aggregate) took in time.
    pub records_on_time: AtomicU64,
    /// Records written to the late output.
    pub records_late: AtomicU64,
    /// Malformed lines written to the error output.
    pub records_bad: AtomicU64,
    /// Result rows that reached this slot's sinks (in this run: a restored epoch's rows are
    /// counted again when they are recomputed).
    pub rows_emitted: AtomicU64,
    /// Minimum watermark over this slot's splits (`i64::MAX` when all finished).
    pub watermark: AtomicI64,
    /// Splits of this slot that reached their end.
    pub splits_finished: AtomicU64,
    /// The most this slot's sources ran ahead of their group's aligned frontier the slot had
    /// seen (ms of event time; see [`crate::alignment`]): an upper bound on their lead over
    /// the slowest source of the group feeding aligned receivers, as that frontier may be stale.
    pub watermark_lead_max_ms: AtomicI64,
}

impl Default for SlotMetrics {
    fn default() -> Self {
        SlotMetrics {
            records_read: AtomicU64::new(0),
            records_on_time: AtomicU64::new(0),
            records_late: AtomicU64::new(0),
            records_bad: AtomicU64::new(0),
            rows_emitted: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            splits_finished: AtomicU64::new(0),
            watermark_lead_max_ms: AtomicI64::new(0),
        }
    }
}

impl SlotMetrics {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
