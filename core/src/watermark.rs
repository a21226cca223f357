//! Per-split watermarks and the lateness rule.
//!
//! A split's watermark is `max event time seen so far in that split − out-of-orderness`. A
//! record is *late* iff the end of its window is `<=` its split's watermark at the moment it
//! is read (the watermark before the record). Because the rule looks only at the split's own
//! history, lateness never depends on parallelism, timing or failures: the sequential
//! reference and the distributed engine agree on it record by record.

use serde::{Deserialize, Serialize};

use crate::time::EventTime;
use crate::window::TumblingWindows;

/// The event-time clock of one source split.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitClock {
    /// Largest event time read so far, if any record was read.
    max_event_time: Option<EventTime>,
    out_of_orderness_ms: i64,
    /// Set when the split reached its end: the watermark is then `+∞`.
    finished: bool,
    /// The watermark is at least this (raised when the split comes back from idleness).
    #[serde(default = "no_floor")]
    floor: EventTime,
}

fn no_floor() -> EventTime {
    EventTime::MIN
}

/// What the lateness rule decided about one record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The record counts in its window.
    OnTime,
    /// The record's window may already have fired: it goes to the late-data output.
    Late,
}

impl SplitClock {
    /// A clock for a split that has read nothing yet.
    pub fn new(out_of_orderness_ms: i64) -> Self {
        assert!(out_of_orderness_ms >= 0, "out-of-orderness must not be negative");
        SplitClock { max_event_time: None, out_of_orderness_ms, finished: false, floor: EventTime::MIN }
    }

    /// The current watermark (`i64::MIN` before the first record, `i64::MAX` after the end).
    #[inline]
    pub fn watermark(&self) -> EventTime {
        if self.finished {
            return EventTime::MAX;
        }
        let read = match self.max_event_time {
            None => EventTime::MIN,
            Some(max) => max.saturating_sub(self.out_of_orderness_ms),
        };
        read.max(self.floor)
    }

    /// Applies the lateness rule to a record read now, then advances the clock past it.
    #[inline]
    pub fn admit(&mut self, event_time: EventTime, windows: &TumblingWindows) -> Admission {
        assert!(!self.finished, "a finished split reads no more records");
        let watermark = self.watermark();
        // A record after the watermark is in a window that ends after it: no division needed.
        let verdict = if event_time > watermark || windows.end_for(event_time) > watermark {
            Admission::OnTime
        } else {
            Admission::Late
        };
        self.max_event_time = Some(self.max_event_time.map_or(event_time, |max| max.max(event_time)));
        verdict
    }

    /// Advances the clock past a record at `event_time` read now; returns the watermark before
    /// it (the record's lateness horizon, see `weir_dataflow::record`).
    #[inline]
    pub fn observe(&mut self, event_time: EventTime) -> EventTime {
        assert!(!self.finished, "a finished split reads no more records");
        let watermark = self.watermark();
        self.max_event_time = Some(self.max_event_time.map_or(event_time, |max| max.max(event_time)));
        watermark
    }

    /// Raises the watermark to at least `watermark` (a split coming back from idleness: event
    /// time moved on without it, so what it reads behind that is late).
    pub fn raise_to(&mut self, watermark: EventTime) {
        self.floor = self.floor.max(watermark);
    }

    /// Marks the split as exhausted: its watermark becomes `+∞` so every window can fire.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Whether the split has reached its end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn late_iff_window_end_not_after_previous_watermark() {
        let windows = TumblingWindows::new(10);
        let mut clock = SplitClock::new(4);
        assert_eq!(clock.admit(25, &windows), Admission::OnTime); // watermark was -inf
        assert_eq!(clock.watermark(), 21);
        // Window [20,30) ends after 21: on time although 19 < 21 would be below the watermark? no: 19 is in [10,20).
        assert_eq!(clock.admit(19, &windows), Admission::Late); // [10,20) ends at 20 <= 21
        assert_eq!(clock.admit(20, &windows), Admission::OnTime); // below watermark, window still open
        clock.finish();
        assert_eq!(clock.watermark(), i64::MAX);
    }

    proptest! {
        /// The watermark never goes backwards, and a record is late exactly by the rule.
        #[test]
        fn watermark_monotone_and_rule_exact(times in proptest::collection::vec(-1_000i64..1_000, 0..200),
                                            ooo in 0i64..50, size in 1i64..100) {
            let windows = TumblingWindows::new(size);
            let mut clock = SplitClock::new(ooo);
            let mut max_seen: Option<i64> = None;
            let mut last_wm = clock.watermark();
            for t in times {
                let wm_before = max_seen.map_or(i64::MIN, |m| m - ooo);
                prop_assert_eq!(clock.watermark(), wm_before);
                let expected = if windows.end_for(t) <= wm_before { Admission::Late } else { Admission::OnTime };
                prop_assert_eq!(clock.admit(t, &windows), expected);
                max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
                prop_assert!(clock.watermark() >= last_wm);
                last_wm = clock.watermark();
            }
        }
    }
}
