//! Tumbling event-time windows `[k·w, (k+1)·w)`.
//!
//! Window assignment is pure arithmetic shared by the dataflow operator and the sequential
//! reference, so both sides of every oracle test use the very same rule.

use crate::time::EventTime;

/// A tumbling window assigner of a fixed, positive size in milliseconds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TumblingWindows {
    size_ms: i64,
}

impl TumblingWindows {
    /// Windows of `size_ms` milliseconds. Panics if the size is not positive (the CLI rejects it first).
    pub fn new(size_ms: i64) -> Self {
        assert!(size_ms > 0, "window size must be positive, got {size_ms} ms");
        TumblingWindows { size_ms }
    }

    /// The window size in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The start of the window containing `event_time` (floor division, also for negative
    /// times). The first window of the time line is clamped to start at `i64::MIN`.
    #[inline]
    pub fn start_of(&self, event_time: EventTime) -> EventTime {
        let offset = event_time.rem_euclid(self.size_ms);
        event_time.checked_sub(offset).unwrap_or(EventTime::MIN)
    }

    /// The exclusive end of the window that starts at `start`. Saturates at `i64::MAX`: the
    /// last window of the time line is `[start, i64::MAX)` and fires only at end of input.
    #[inline]
    pub fn end_of(&self, start: EventTime) -> EventTime {
        if start == EventTime::MIN {
            // The clamped first window ends where its unclamped self does.
            let true_start = EventTime::MIN as i128 - (EventTime::MIN as i128).rem_euclid(self.size_ms as i128);
            return (true_start + self.size_ms as i128).min(EventTime::MAX as i128) as EventTime;
        }
        start.saturating_add(self.size_ms)
    }

    /// The exclusive end of the window containing `event_time`.
    #[inline]
    pub fn end_for(&self, event_time: EventTime) -> EventTime {
        self.end_of(self.start_of(event_time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every event time lies in exactly the window assigned to it, and windows tile the line.
        #[test]
        fn assignment_contains_time(t in any::<i64>(), size in 1i64..1_000_000_000) {
            let windows = TumblingWindows::new(size);
            let start = windows.start_of(t);
            prop_assert!(start <= t);
            prop_assert!(t < windows.end_of(start) || windows.end_of(start) == i64::MAX);
            prop_assert!(start.rem_euclid(size) == 0 || start == i64::MIN);
            prop_assert_eq!(windows.start_of(start), start);
        }
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let windows = TumblingWindows::new(10_000);
        assert_eq!(windows.start_of(i64::MIN), i64::MIN);
        assert_eq!(windows.start_of(i64::MIN + 3), i64::MIN);
        let end = windows.end_for(i64::MIN);
        assert!(end > i64::MIN && end <= i64::MIN + 10_000);
        assert_eq!(windows.start_of(end), end);
        assert_eq!(windows.end_for(i64::MAX), i64::MAX);
    }

    #[test]
    fn negative_times_floor() {
        let windows = TumblingWindows::new(10);
        assert_eq!(windows.start_of(-1), -10);
        assert_eq!(windows.start_of(-10), -10);
        assert_eq!(windows.start_of(9), 0);
        assert_eq!(windows.end_for(10), 20);
    }
}
