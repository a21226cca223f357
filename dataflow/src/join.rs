//! Joins of two keyed streams: interval joins and window joins, both written on the
//! building blocks the API already has — a co-process function over the stateful scaffold
//! (interval join) and windows over the union of both sides (window join) — so they inherit
//! event-time ordering, exactly-once snapshots and lateness from them.
//!
//! **Interval join** (`a.interval_join(b).between(lower, upper)`, Flink's): `a` and `b` with
//! equal keys join iff `a.time + lower <= b.time <= a.time + upper`; the pair is emitted at
//! `max(a.time, b.time)`, when the later of the two is handled. Each side's records wait in
//! keyed state only as long as a partner may still come, and a timer drops them after.
//!
//! **Window join**: records of both sides with equal keys in the same window join pairwise
//! when the window fires.

use serde::{Deserialize, Serialize};

use weir_core::time::EventTime;

use crate::process::{Context, Either, KeyedCoProcessFunction, TimeDomain};
use crate::record::Data;
use crate::state::{Key, ListState};

/// The co-process function of an interval join (public for benchmarks).
pub struct IntervalJoinFunction<A, B, F> {
    lower_ms: i64,
    upper_ms: i64,
    join: F,
    left: ListState<Timed<A>>,
    right: ListState<Timed<B>>,
}

/// A record kept with its event time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timed<T> {
    time: EventTime,
    value: T,
}

impl<A, B, F> IntervalJoinFunction<A, B, F> {
    /// Joins `b` to `a` iff `a.time + lower_ms <= b.time <= a.time + upper_ms`, emitting `join(a, b)`.
    pub fn new(lower_ms: i64, upper_ms: i64, join: F) -> Self {
        IntervalJoinFunction {
            lower_ms,
            upper_ms,
            join,
            left: ListState::new("interval-join-left"),
            right: ListState::new("interval-join-right"),
        }
    }
}

impl<K, A, B, O, F> KeyedCoProcessFunction<K, A, B, O> for IntervalJoinFunction<A, B, F>
where
    K: Key,
    A: Data,
    B: Data,
    O: Data,
    F: Fn(&A, &B) -> O + 'static,
{
    fn process_element1(&mut self, a: A, ctx: &mut Context<'_, K, O>) {
        let time = ctx.timestamp();
        for partner in self.right.get(ctx.state()) {
            // Saturating: a bound near the ends of time must not wrap around them.
            if time.saturating_add(self.lower_ms) <= partner.time && partner.time <= time.saturating_add(self.upper_ms)
            {
                let joined = (self.join)(&a, &partner.value);
                ctx.collect(joined);
            }
        }
        // Partners still to come are at or after `time`; they match up to `time + upper`.
        if self.upper_ms >= 0 {
            self.left.add(ctx.state(), Timed { time, value: a });
            ctx.register_event_time_timer(time.saturating_add(self.upper_ms));
        }
    }

    fn process_element2(&mut self, b: B, ctx: &mut Context<'_, K, O>) {
        let time = ctx.timestamp();
        for partner in self.left.get(ctx.state()) {
            if partner.time.saturating_add(self.lower_ms) <= time && time <= partner.time.saturating_add(self.upper_ms)
            {
                let joined = (self.join)(&partner.value, &b);
                ctx.collect(joined);
            }
        }
        if self.lower_ms <= 0 {
            self.right.add(ctx.state(), Timed { time, value: b });
            ctx.register_event_time_timer(time.saturating_sub(self.lower_ms));
        }
    }

    fn on_timer(&mut self, timestamp: EventTime, _domain: TimeDomain, ctx: &mut Context<'_, K, O>) {
        // Every record at or before `timestamp` has been handled: drop those no partner can
        // still reach.
        let (lower, upper) = (self.lower_ms, self.upper_ms);
        let left: Vec<Timed<A>> =
            self.left.get(ctx.state()).into_iter().filter(|a| a.time.saturating_add(upper) > timestamp).collect();
        self.left.update(ctx.state(), left);
        let right: Vec<Timed<B>> =
            self.right.get(ctx.state()).into_iter().filter(|b| b.time.saturating_sub(lower) > timestamp).collect();
        self.right.update(ctx.state(), right);
    }
}

/// Joins the records of one window pairwise: every left with every right, in a fixed order
/// (public for benchmarks).
pub fn join_window<A: Clone, B: Clone, O>(records: Vec<Either<A, B>>, join: impl Fn(&A, &B) -> O) -> Vec<O> {
    co_group_window(records, |lefts, rights| {
        lefts.iter().flat_map(|a| rights.iter().map(|b| join(a, b)).collect::<Vec<_>>()).collect()
    })
}

/// Hands the records of one window to `co_group` as its two sides, each in the order they came.
pub fn co_group_window<A, B, O>(records: Vec<Either<A, B>>, co_group: impl Fn(&[A], &[B]) -> Vec<O>) -> Vec<O> {
    let (mut lefts, mut rights) = (Vec::new(), Vec::new());
    for record in records {
        match record {
            Either::Left(a) => lefts.push(a),
            Either::Right(b) => rights.push(b),
        }
    }
    co_group(&lefts, &rights)
}
