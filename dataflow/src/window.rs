//! Event-time windows: assigners (tumbling, sliding) and incremental aggregation on the
//! stateful scaffold.
//!
//! **Firing.** A window `[start, end)` fires when event time passes `end` (see
//! [`crate::stateful`]): every on-time record of it has then arrived, because a source emits
//! a record at an event time no later than its split's watermark, and a record is on time
//! only if that watermark was below the window's end.
//!
//! **Lateness.** A record is late for a window iff the window's end is `<=` the watermark the
//! record was read under ([`Record::watermark`]) — the rule of stage 1, now per window. A record
//! whose every window is late goes to the operator's late output, never silently dropped; one
//! that is late for only some of its (sliding) windows counts in the others, as in Flink.
//!
//! **State** in memory is a map per open window from key to accumulator (for sessions: per key,
//! its open sessions), fired in order of window end and snapshotted by key group. On a job whose keyed state is on disk (RocksDB), windows keep
//! it in the operator's keyed store instead, so that state larger than memory stays on disk:
//! - tumbling, sliding and cumulating windows are keyed by key and window ([`WindowKey`]): per
//!   window a value, its accumulator (and one of late records, under allowed lateness), and a
//!   timer at its end in the store's timer queues. A record costs a read and a write per window
//!   and batch, as in Flink's RocksDB windows;
//! - sessions are keyed by key: per key its open sessions (a key has few; they are read and
//!   written once per batch, merged in memory), and a timer at each session's end.
//!
//! Both forms snapshot to the same canonical encoding (the in-memory one's), so a savepoint
//! moves between backends. In memory the windows keep their own maps: a record then costs one
//! hash lookup, where the keyed store would encode and look up its key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hash};

use serde::{Deserialize, Serialize};

use weir_core::time::EventTime;
use weir_core::window::TumblingWindows;

use crate::keyed::KeySelector;
use crate::keyed::{key_group_of, KeyHasher};
use crate::record::{Data, Record};
use crate::state::{Key, KeyedState, StateBackend, Store, TimerQueue, ValueState};
use crate::stateful::{Form, KeyGroupStates, StateImage, StatefulLogic};

/// A time window `[start, end)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: EventTime,
    /// First millisecond after the window.
    pub end: EventTime,
}

impl TimeWindow {
    /// The window's last millisecond: the event time of its results (Flink's `maxTimestamp`).
    pub fn max_timestamp(&self) -> EventTime {
        self.end.saturating_sub(1)
    }
}

/// Assigns records to windows by event time.
pub trait WindowAssigner: 'static {
    /// Calls `each` for every window containing `time`.
    fn assign(&self, time: EventTime, each: impl FnMut(TimeWindow));
    /// The one window containing `time`, for assigners that have exactly one (a fast path).
    fn single(&self, time: EventTime) -> Option<TimeWindow>;
    /// The assigner, described for people.
    fn describe(&self) -> String;
}

/// Tumbling windows `[k·size, (k+1)·size)`.
#[derive(Copy, Clone, Debug)]
pub struct TumblingEventTimeWindows(TumblingWindows);

impl TumblingEventTimeWindows {
    /// Windows of `size_ms` milliseconds (positive).
    pub fn of(size_ms: i64) -> Self {
        TumblingEventTimeWindows(TumblingWindows::new(size_ms))
    }
}

impl WindowAssigner for TumblingEventTimeWindows {
    #[inline]
    fn assign(&self, time: EventTime, mut each: impl FnMut(TimeWindow)) {
        each(self.single(time).expect("one window"))
    }
    #[inline]
    fn single(&self, time: EventTime) -> Option<TimeWindow> {
        let start = self.0.start_of(time);
        Some(TimeWindow { start, end: self.0.end_of(start) })
    }
    fn describe(&self) -> String {
        format!("tumbling {} ms", self.0.size_ms())
    }
}

/// Sliding (hopping) windows of `size` every `slide`: `[k·slide, k·slide + size)`.
#[derive(Copy, Clone, Debug)]
pub struct SlidingEventTimeWindows {
    size_ms: i64,
    slide_ms: i64,
}

impl SlidingEventTimeWindows {
    /// Windows of `size_ms` starting every `slide_ms` (both positive).
    pub fn of(size_ms: i64, slide_ms: i64) -> Self {
        assert!(size_ms > 0 && slide_ms > 0, "sliding windows need a positive size and slide");
        SlidingEventTimeWindows { size_ms, slide_ms }
    }
}

impl WindowAssigner for SlidingEventTimeWindows {
    fn assign(&self, time: EventTime, mut each: impl FnMut(TimeWindow)) {
        let last_start = time as i128 - (time as i128).rem_euclid(self.slide_ms as i128);
        let mut start = last_start;
        while start > time as i128 - self.size_ms as i128 {
            let clamp = |t: i128| t.clamp(EventTime::MIN as i128, EventTime::MAX as i128) as EventTime;
            each(TimeWindow { start: clamp(start), end: clamp(start + self.size_ms as i128) });
            start -= self.slide_ms as i128;
        }
    }
    fn single(&self, _time: EventTime) -> Option<TimeWindow> {
        None
    }
    fn describe(&self) -> String {
        format!("sliding {} ms every {} ms", self.size_ms, self.slide_ms)
    }
}

/// Cumulating windows (Flink SQL's `CUMULATE`): within each window of `max_size`, windows
/// `[start, start + step)`, `[start, start + 2·step)`, … `[start, start + max_size)`.
#[derive(Copy, Clone, Debug)]
pub struct CumulativeEventTimeWindows {
    step_ms: i64,
    max_size_ms: i64,
}

impl CumulativeEventTimeWindows {
    /// Windows growing by `step_ms` up to `max_size_ms` (a multiple of the step).
    pub fn of(step_ms: i64, max_size_ms: i64) -> Self {
        assert!(step_ms > 0 && max_size_ms > 0, "cumulating windows need a positive step and size");
        assert!(max_size_ms % step_ms == 0, "the size of cumulating windows must be a multiple of their step");
        CumulativeEventTimeWindows { step_ms, max_size_ms }
    }
}

impl WindowAssigner for CumulativeEventTimeWindows {
    fn assign(&self, time: EventTime, mut each: impl FnMut(TimeWindow)) {
        let (t, step, size) = (time as i128, self.step_ms as i128, self.max_size_ms as i128);
        let start = t - t.rem_euclid(size);
        let first_end = start + (t - start) / step * step + step;
        let clamp = |t: i128| t.clamp(EventTime::MIN as i128, EventTime::MAX as i128) as EventTime;
        let mut end = first_end;
        while end <= start + size {
            each(TimeWindow { start: clamp(start), end: clamp(end) });
            end += step;
        }
    }
    fn single(&self, _time: EventTime) -> Option<TimeWindow> {
        None
    }
    fn describe(&self) -> String {
        format!("cumulating by {} ms up to {} ms", self.step_ms, self.max_size_ms)
    }
}

/// Incremental aggregation (Flink's `AggregateFunction`): an accumulator per key and window.
///
/// Records reach `add` in arrival order, which varies with parallelism and failures: for
/// results that do not, `add` (and `merge`) must not depend on the order — counts, sums of
/// integers, minima and maxima, sets — as for a combiner in any parallel engine. Where order
/// matters, use a window's `process` (records in a fixed order) or a process function.
pub trait AggregateFunction<T>: 'static {
    /// The accumulator.
    type Acc: Data;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds a value.
    fn add(&self, accumulator: &mut Self::Acc, value: &T);
    /// Merges `other` into `accumulator` (session windows merge). Functions used with merging
    /// windows must implement it.
    fn merge(&self, accumulator: &mut Self::Acc, other: Self::Acc) {
        let _ = (accumulator, other);
        panic!("this AggregateFunction does not implement merge, which session windows need");
    }
}

/// A boxed window result function: key, window and accumulator to the output record.
pub type BoxedResult<K, A, R> = Box<dyn Fn(&K, TimeWindow, A) -> R>;

/// Folds a window's records with a reduce function (Flink's `reduce` on windows); the function
/// must be commutative and associative (see [`AggregateFunction`]).
pub struct Reduce<F>(pub F);

impl<T: Data, F: Fn(T, T) -> T + 'static> AggregateFunction<T> for Reduce<F> {
    type Acc = Option<T>;
    fn create_accumulator(&self) -> Option<T> {
        None
    }
    fn add(&self, accumulator: &mut Option<T>, value: &T) {
        *accumulator = Some(match accumulator.take() {
            Some(current) => (self.0)(current, value.clone()),
            None => value.clone(),
        });
    }
    fn merge(&self, accumulator: &mut Option<T>, other: Option<T>) {
        if let Some(other) = other {
            *accumulator = Some(match accumulator.take() {
                Some(current) => (self.0)(current, other),
                None => other,
            });
        }
    }
}

/// Keeps a window's records for a function over the whole window (Flink's
/// `ProcessWindowFunction`; the records are put in a fixed order when the window fires).
pub struct CollectAll;

impl<T: Data> AggregateFunction<T> for CollectAll {
    type Acc = Vec<T>;
    fn create_accumulator(&self) -> Self::Acc {
        Vec::new()
    }
    fn add(&self, accumulator: &mut Self::Acc, value: &T) {
        accumulator.push(value.clone());
    }
    fn merge(&self, accumulator: &mut Self::Acc, other: Self::Acc) {
        accumulator.extend(other);
    }
}

/// Session windows: a key's records closer than `gap` in event time form one window
/// `[first, last + gap)` (merging windows).
#[derive(Copy, Clone, Debug)]
pub struct EventTimeSessionWindows {
    gap_ms: i64,
}

impl EventTimeSessionWindows {
    /// Sessions that close after `gap_ms` without records.
    pub fn with_gap(gap_ms: i64) -> Self {
        assert!(gap_ms > 0, "a session gap must be positive");
        EventTimeSessionWindows { gap_ms }
    }
}

/// How an assigner becomes window logic: fixed windows ([`WindowAssigner`]s) aggregate in
/// place; sessions merge.
pub trait WindowKind<K, T, F: AggregateFunction<T>, R, KF, RF>: 'static {
    /// The logic.
    type Logic: StatefulLogic<In = T, Out = R>;
    /// The logic of this kind with `function`, `key` and `result`.
    fn logic(self, function: F, key: KF, result: RF) -> Self::Logic;
    /// The logic with an allowed lateness, or why this kind has none.
    fn logic_with_lateness(
        self,
        function: F,
        key: KF,
        result: RF,
        allowed_lateness_ms: i64,
    ) -> Result<Self::Logic, String>
    where
        Self: Sized,
    {
        if allowed_lateness_ms > 0 {
            return Err(format!("{} take no allowed lateness", self.description()));
        }
        Ok(self.logic(function, key, result))
    }
    /// The windows, described for people.
    fn description(&self) -> String;
    /// The logic keeping its state in the operator's keyed store (opened by `store`) where the
    /// job's state is on disk (see the module docs).
    fn with_store(logic: Self::Logic, store: impl OpenStore) -> Self::Logic
    where
        Self: Sized;
}

/// Opens an operator's keyed store, keyed by the type its state needs.
pub trait OpenStore {
    /// The store, keyed by `S`.
    fn open<S: Key>(self) -> Store<S>;
}

impl<K, T, W, F, R, KF, RF> WindowKind<K, T, F, R, KF, RF> for W
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    W: WindowAssigner,
    F: AggregateFunction<T>,
    R: Data,
    KF: KeySelector<T, K>,
    RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
{
    type Logic = WindowAggregate<K, T, W, F, R, KF, RF>;
    fn logic(self, function: F, key: KF, result: RF) -> Self::Logic {
        WindowAggregate::new(self, function, key, result)
    }
    fn logic_with_lateness(
        self,
        function: F,
        key: KF,
        result: RF,
        allowed_lateness_ms: i64,
    ) -> Result<Self::Logic, String> {
        Ok(WindowAggregate::new(self, function, key, result).with_allowed_lateness(allowed_lateness_ms))
    }
    fn description(&self) -> String {
        self.describe()
    }
    fn with_store(logic: Self::Logic, store: impl OpenStore) -> Self::Logic {
        logic.with_store(store.open())
    }
}

impl<K, T, F, R, KF, RF> WindowKind<K, T, F, R, KF, RF> for EventTimeSessionWindows
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    F: AggregateFunction<T>,
    R: Data,
    KF: KeySelector<T, K>,
    RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
{
    type Logic = SessionAggregate<K, T, F, R, KF, RF>;
    fn logic(self, function: F, key: KF, result: RF) -> Self::Logic {
        SessionAggregate {
            gap_ms: self.gap_ms,
            function,
            key,
            result,
            sessions: KeyMap::default(),
            ends: BTreeSet::new(),
            store: None,
            first_end: None,
            _types: std::marker::PhantomData,
        }
    }
    fn description(&self) -> String {
        format!("sessions with a gap of {} ms", self.gap_ms)
    }
    fn with_store(logic: Self::Logic, store: impl OpenStore) -> Self::Logic {
        logic.with_store(store.open())
    }
}

/// Session windows of a keyed stream, merged incrementally.
///
/// **Lateness.** A session can still grow when a record arrives, so a record is on time only
/// if it is not behind the watermark it was read under (`time >= watermark`); then no session
/// it could touch has fired (sessions fire once event time is *past* their end, and the
/// record's time is at least the firing bound). Records behind it go to the late output.
/// Sessions merge when they touch, as in Flink: `[a, b)` and `[c, d)` with `c <= b`.
pub struct SessionAggregate<K, T, F: AggregateFunction<T>, R, KF, RF> {
    gap_ms: i64,
    function: F,
    key: KF,
    result: RF,
    /// Per key, open sessions by start: `(end, accumulator)`.
    sessions: KeyMap<K, BTreeMap<EventTime, (EventTime, F::Acc)>>,
    /// Every open session by `(end, key, start)`: the order they fire in.
    ends: BTreeSet<(EventTime, K, EventTime)>,
    /// The keyed store holding the sessions instead of `sessions` and `ends`, if the job's state
    /// is on disk: per key its open sessions (a key has few), and a timer at each one's end.
    store: Option<Store<K>>,
    /// In the store: the end of the first session to fire (its timer's time), if one is open;
    /// read from the store after each restore, apply and advance (see `output_hold`).
    first_end: Option<EventTime>,
    _types: std::marker::PhantomData<fn(T) -> R>,
}

/// A key's open sessions, by start: `(end, accumulator)`. Sessions are disjoint.
type Sessions<A> = BTreeMap<EventTime, (EventTime, A)>;

/// Adds `value`, at `time`, to a key's open `sessions`: it opens a session `[time, time + gap)`
/// of its own, merged with every session it touches. Returns the sessions `(start, end)` merged
/// into it, and the session it made.
fn add_to_sessions<T, F: AggregateFunction<T>>(
    function: &F,
    gap_ms: i64,
    sessions: &mut Sessions<F::Acc>,
    time: EventTime,
    value: &T,
) -> (Vec<(EventTime, EventTime)>, (EventTime, EventTime)) {
    let (mut start, mut end) = (time, time.saturating_add(gap_ms));
    let mut accumulator = function.create_accumulator();
    function.add(&mut accumulator, value);
    // Sessions are disjoint and sorted by start: the ones touching [start, end] start at or
    // before `end` and end at or after `start`.
    let touching: Vec<EventTime> = sessions
        .range(..=end)
        .rev()
        .take_while(|(_, (session_end, _))| *session_end >= start)
        .map(|(session_start, _)| *session_start)
        .collect();
    let mut merged = Vec::with_capacity(touching.len());
    for session_start in touching {
        let (session_end, other) = sessions.remove(&session_start).expect("present");
        merged.push((session_start, session_end));
        function.merge(&mut accumulator, other);
        start = start.min(session_start);
        end = end.max(session_end);
    }
    sessions.insert(start, (end, accumulator));
    (merged, (start, end))
}

/// Whether a key's sessions are apart, as merging leaves them: each ends before the next starts
/// (sessions that touch merge). A restored snapshot is checked: each session fires at its end,
/// found by it.
fn disjoint<A>(sessions: &Sessions<A>) -> bool {
    sessions.iter().zip(sessions.iter().skip(1)).all(|((_, (end, _)), (next_start, _))| end < next_start)
}

impl<K, T, F: AggregateFunction<T>, R, KF, RF> SessionAggregate<K, T, F, R, KF, RF> {
    /// Keeps the sessions in `store`, unless it is in memory (see the module docs).
    pub fn with_store(self, store: Store<K>) -> Self {
        if store.in_memory() {
            self
        } else {
            self.in_keyed_store(store)
        }
    }

    /// Keeps the sessions in `store`, whatever its backend (tests run the keyed store's form on
    /// the memory backend this way).
    pub fn in_keyed_store(mut self, store: Store<K>) -> Self {
        self.store = Some(store);
        self
    }
}

impl<K, T, F, R, KF, RF> StatefulLogic for SessionAggregate<K, T, F, R, KF, RF>
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    F: AggregateFunction<T>,
    R: Data,
    KF: KeySelector<T, K>,
    RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
{
    type In = T;
    type Out = R;

    fn apply(&mut self, records: &mut Vec<Record<T>>, _out: &mut Vec<Record<R>>, late: &mut Vec<Record<T>>) {
        if self.store.is_some() {
            return self.apply_to_store(records, late);
        }
        for record in records.drain(..) {
            if record.time < record.watermark {
                late.push(record);
                continue;
            }
            let key = self.key.key(&record.value);
            let sessions = self.sessions.entry(key.clone()).or_default();
            let (merged, (start, end)) =
                add_to_sessions(&self.function, self.gap_ms, sessions, record.time, &record.value);
            for (merged_start, merged_end) in merged {
                self.ends.remove(&(merged_end, key.clone(), merged_start));
            }
            self.ends.insert((end, key, start));
        }
    }

    fn advance(&mut self, bound: EventTime, out: &mut Vec<Record<R>>) {
        if self.store.is_some() {
            return self.advance_store(bound, out);
        }
        while let Some((end, _, _)) = self.ends.first() {
            // Strictly past the end: a record at exactly `end` would still touch the session.
            if *end >= bound {
                break;
            }
            let (end, key, start) = self.ends.pop_first().expect("present");
            let sessions = self.sessions.get_mut(&key).expect("an open session has its key");
            let (_, accumulator) = sessions.remove(&start).expect("an open session is in its key's map");
            if sessions.is_empty() {
                self.sessions.remove(&key);
            }
            let window = TimeWindow { start, end };
            out.push(Record::derived((self.result)(&key, window, accumulator), window.max_timestamp()));
        }
    }

    fn output_hold(&self) -> EventTime {
        // A session ending at the bound may still grow; its result will be stamped `end - 1`.
        let first_end = match &self.store {
            Some(_) => self.first_end,
            None => self.ends.first().map(|(end, _, _)| *end),
        };
        first_end.map_or(EventTime::MAX, |end| end.saturating_sub(1))
    }

    fn snapshot(&self) -> StateImage {
        if let Some(store) = &self.store {
            return image_of_store(store, sessions_from_store::<K, F::Acc>);
        }
        let sessions = self.sessions.clone();
        StateImage::deferred(move || encode_sessions(&sessions))
    }

    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (group, bytes) in states {
            let entries: Vec<(K, EventTime, EventTime, F::Acc)> =
                crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {e}"))?;
            if self.store.is_some() {
                self.restore_into_store(group, entries)?;
                continue;
            }
            for (key, start, end, accumulator) in entries {
                if self.sessions.entry(key.clone()).or_default().insert(start, (end, accumulator)).is_some() {
                    return Err(format!("key group {group}: a session appears twice"));
                }
                self.ends.insert((end, key, start));
            }
        }
        if !self.sessions.values().all(disjoint) {
            return Err("sessions of one key overlap".into());
        }
        if let Some(store) = &mut self.store {
            // Restored from the canonical encoding, or from the store's own files.
            self.first_end = store.next_timer(&SESSION_ENDS);
        }
        Ok(())
    }
}

/// The snapshot of windows kept in a keyed store: the store's snapshot, written out in the
/// windows' own canonical encoding by `canonical` (so that a savepoint is the same whatever form
/// the windows took); a checkpoint on RocksDB uploads the store's files and encodes nothing
/// beside them.
fn image_of_store<S: Key>(
    store: &Store<S>,
    canonical: fn(KeyGroupStates) -> Result<KeyGroupStates, String>,
) -> StateImage {
    match store.snapshot().into_files() {
        Ok((files, encode)) => StateImage::with_files(files, move |form| match form {
            Form::BesideFiles => encode(Form::BesideFiles),
            Form::Canonical => canonical(encode(Form::Canonical)?),
        }),
        Err(image) => StateImage::fallible(move || canonical(image.try_encode()?)),
    }
}

/// The keyed store's value state of a key's open sessions ([`Sessions`]).
const OPEN_SESSIONS: &str = "session/open";
/// Per key, a timer at each open session's end: it fires once event time is past it.
const SESSION_ENDS: TimerQueue = TimerQueue::new("session-end");

fn open_sessions<A: Data>() -> ValueState<Sessions<A>> {
    ValueState::new(OPEN_SESSIONS)
}

impl<K, T, F, R, KF, RF> SessionAggregate<K, T, F, R, KF, RF>
where
    K: Key,
    T: Data,
    F: AggregateFunction<T>,
    R: Data,
    KF: KeySelector<T, K>,
    RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
{
    /// [`StatefulLogic::apply`] on the keyed store: the batch's records are grouped by key (in
    /// arrival order within each, so that sessions merge as in memory), and each key's sessions
    /// are read and written once per batch; a session's timer moves when its end does.
    fn apply_to_store(&mut self, records: &mut Vec<Record<T>>, late: &mut Vec<Record<T>>) {
        let mut by_key: BTreeMap<K, Vec<Record<T>>> = BTreeMap::new();
        for record in records.drain(..) {
            if record.time < record.watermark {
                late.push(record);
            } else {
                by_key.entry(self.key.key(&record.value)).or_default().push(record);
            }
        }
        let store = self.store.as_mut().expect("sessions in a store");
        let open = open_sessions::<F::Acc>();
        for (key, records) in by_key {
            let mut state = KeyedState::new(store, &key, EventTime::MIN);
            let mut sessions = open.get(&mut state).unwrap_or_default();
            let ends_before: BTreeSet<EventTime> = sessions.values().map(|(end, _)| *end).collect();
            for record in &records {
                add_to_sessions(&self.function, self.gap_ms, &mut sessions, record.time, &record.value);
            }
            let ends_after: BTreeSet<EventTime> = sessions.values().map(|(end, _)| *end).collect();
            open.set(&mut state, sessions);
            // A key's sessions are disjoint: each has an end of its own, and its timer is there.
            for end in ends_before.difference(&ends_after) {
                store.delete_timer(&SESSION_ENDS, &key, *end);
            }
            for end in ends_after.difference(&ends_before) {
                store.register_timer(&SESSION_ENDS, &key, *end);
            }
        }
        self.first_end = store.next_timer(&SESSION_ENDS);
    }

    /// [`StatefulLogic::advance`] on the keyed store: each session whose end event time is
    /// past fires, in order of end, as in memory.
    fn advance_store(&mut self, bound: EventTime, out: &mut Vec<Record<R>>) {
        let store = self.store.as_mut().expect("sessions in a store");
        let open = open_sessions::<F::Acc>();
        while let Some((end, key)) = store.pop_timer(&SESSION_ENDS, bound) {
            let mut state = KeyedState::new(store, &key, EventTime::MIN);
            let mut sessions = open.get(&mut state).expect("a session's timer fires while it is open");
            let start = sessions
                .iter()
                .find(|(_, (session_end, _))| *session_end == end)
                .map(|(start, _)| *start)
                .expect("a session's timer fires at its end");
            let (_, accumulator) = sessions.remove(&start).expect("found");
            if sessions.is_empty() {
                open.clear(&mut state);
            } else {
                open.set(&mut state, sessions);
            }
            let window = TimeWindow { start, end };
            out.push(Record::derived((self.result)(&key, window, accumulator), window.max_timestamp()));
        }
        self.first_end = store.next_timer(&SESSION_ENDS);
    }

    /// Loads one key group of the sessions' canonical encoding into the keyed store, with a
    /// timer at each session's end.
    fn restore_into_store(
        &mut self,
        group: usize,
        entries: Vec<(K, EventTime, EventTime, F::Acc)>,
    ) -> Result<(), String> {
        let mut by_key: BTreeMap<K, Sessions<F::Acc>> = BTreeMap::new();
        for (key, start, end, accumulator) in entries {
            if by_key.entry(key).or_default().insert(start, (end, accumulator)).is_some() {
                return Err(format!("key group {group}: a session appears twice"));
            }
        }
        if !by_key.values().all(disjoint) {
            return Err(format!("key group {group}: sessions of one key overlap"));
        }
        let store = self.store.as_mut().expect("sessions in a store");
        let open = open_sessions::<F::Acc>();
        for (key, sessions) in by_key {
            let mut state = KeyedState::new(store, &key, EventTime::MIN);
            if open.get(&mut state).is_some() {
                return Err(format!("key group {group}: a session appears twice"));
            }
            let ends: Vec<EventTime> = sessions.values().map(|(end, _)| *end).collect();
            open.set(&mut state, sessions);
            for end in ends {
                store.register_timer(&SESSION_ENDS, &key, end);
            }
        }
        Ok(())
    }
}

/// The sessions' canonical encoding ([`encode_sessions`]) of a keyed store's snapshot: its
/// sessions read back; its timers left out (a restore sets them again from the sessions).
fn sessions_from_store<K: Key, A: Data>(states: KeyGroupStates) -> Result<KeyGroupStates, String> {
    let mut sessions: KeyMap<K, Sessions<A>> = KeyMap::default();
    for (group, name, bytes) in crate::state::split_groups(states)? {
        if name == OPEN_SESSIONS {
            let entries: Vec<(K, crate::state::Stamped<Sessions<A>>)> =
                crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {name}: {e}"))?;
            sessions.extend(entries.into_iter().map(|(key, stamped)| (key, stamped.value)));
        }
    }
    Ok(encode_sessions(&sessions))
}

/// Windows within their allowed lateness, by `(end, start)`, per key.
type Retained<K, A, T> = BTreeMap<(EventTime, EventTime), KeyMap<K, Lateness<A, T>>>;

/// One key group of a window operator's canonical encoding: open windows `(start, end, key,
/// accumulator)` and windows within their allowed lateness (see [`encode_windows`]).
type DecodedWindows<K, A, T> = (Vec<(EventTime, EventTime, K, A)>, Vec<(EventTime, EventTime, K, Lateness<A, T>)>);

/// Windows within their allowed lateness `(start, end, key, lateness)` of one key group.
type RetainedEntries<'a, K, A, T> = Vec<(EventTime, EventTime, &'a K, &'a Lateness<A, T>)>;

/// Window state entries `(start, end, key, accumulator)` by key group, for snapshots.
type GroupEntries<'a, K, A> = BTreeMap<usize, Vec<(EventTime, EventTime, &'a K, &'a A)>>;

/// Session state entries `(key, start, end, accumulator)` by key group, for snapshots.
type SessionEntries<'a, K, A> = BTreeMap<usize, Vec<(&'a K, EventTime, EventTime, &'a A)>>;

type KeyMap<K, A> = HashMap<K, A, BuildHasherDefault<KeyHasher>>;

/// Windowed incremental aggregation of a keyed stream: the logic behind
/// [`crate::api::WindowedStream::aggregate`] (public for benchmarks).
pub struct WindowAggregate<K, T, W, F: AggregateFunction<T>, R, KF, RF> {
    assigner: W,
    function: F,
    key: KF,
    result: RF,
    /// Open windows by `(end, start)`, each a map from key to accumulator.
    windows: BTreeMap<(EventTime, EventTime), KeyMap<K, F::Acc>>,
    fired: Vec<(K, F::Acc)>,
    /// How long after its end a window still takes late records (0: none).
    allowed_lateness_ms: i64,
    /// Windows within their allowed lateness, by `(end, start)`: per key the on-time
    /// accumulator (once fired) and the late records to fold into the final result.
    retained: Retained<K, F::Acc, T>,
    /// The bound event time last passed (for the output hold under allowed lateness).
    passed: EventTime,
    /// The keyed store holding the windows instead of `windows` and `retained`, if the job's
    /// state is on disk (see the module docs).
    store: Option<Store<WindowKey<K>>>,
    /// In the store: the least last millisecond of the windows that took late records since
    /// event time last passed a bound (see `output_hold`).
    retained_hold: EventTime,
    _types: std::marker::PhantomData<fn(T) -> R>,
}

/// Encodes a window operator's state by key group: open windows and windows within their
/// allowed lateness, each sorted, so that equal states encode equally.
fn encode_windows<K: Data + Hash + Eq + Ord, T: Data, A: Data>(
    windows: &BTreeMap<(EventTime, EventTime), KeyMap<K, A>>,
    retained_windows: &Retained<K, A, T>,
) -> KeyGroupStates {
    let mut groups: GroupEntries<'_, K, A> = BTreeMap::new();
    for (&(end, start), keys) in windows {
        for (key, accumulator) in keys {
            groups.entry(key_group_of(key)).or_default().push((start, end, key, accumulator));
        }
    }
    let mut retained: BTreeMap<usize, RetainedEntries<'_, K, A, T>> = BTreeMap::new();
    for (&(end, start), keys) in retained_windows {
        for (key, lateness) in keys {
            retained.entry(key_group_of(key)).or_default().push((start, end, key, lateness));
        }
    }
    let groups_with_state: std::collections::BTreeSet<usize> = groups.keys().chain(retained.keys()).copied().collect();
    groups_with_state
        .into_iter()
        .map(|group| {
            let mut open = groups.remove(&group).unwrap_or_default();
            open.sort_unstable_by(|a, b| (a.1, a.0, a.2).cmp(&(b.1, b.0, b.2)));
            let mut late = retained.remove(&group).unwrap_or_default();
            late.sort_unstable_by(|a, b| (a.1, a.0, a.2).cmp(&(b.1, b.0, b.2)));
            // Late records in arrival order would make equal states encode differently.
            let late: Vec<_> = late
                .into_iter()
                .map(|(start, end, key, lateness)| {
                    let mut records: Vec<&T> = lateness.late.iter().collect();
                    records.sort_by_cached_key(|r| bincode::serialize(r).expect("records serialize"));
                    (start, end, key, lateness.on_time.as_ref(), records)
                })
                .collect();
            (group, bincode::serialize(&(open, late)).expect("window state serializes"))
        })
        .collect()
}

/// Encodes open sessions by key group, each group's sessions in the order they fire
/// (`(end, key, start)`), so that equal states encode equally.
fn encode_sessions<K: Data + Hash + Eq + Ord, A: Data>(
    sessions: &KeyMap<K, BTreeMap<EventTime, (EventTime, A)>>,
) -> KeyGroupStates {
    let mut groups: SessionEntries<'_, K, A> = BTreeMap::new();
    for (key, by_start) in sessions {
        for (start, (end, accumulator)) in by_start {
            groups.entry(key_group_of(key)).or_default().push((key, *start, *end, accumulator));
        }
    }
    groups
        .into_iter()
        .map(|(group, mut entries)| {
            entries.sort_unstable_by(|a, b| (a.2, a.0, a.1).cmp(&(b.2, b.0, b.1)));
            (group, bincode::serialize(&entries).expect("session state serializes"))
        })
        .collect()
}

/// A key's window within its allowed lateness.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lateness<A, T> {
    /// The accumulator of the on-time records, once the window fired with it.
    on_time: Option<A>,
    /// Records that came after the window fired but within its allowed lateness.
    late: Vec<T>,
}

impl<A, T> Lateness<A, T> {
    /// The window's final accumulator — the on-time one (or a fresh one) with every late record
    /// added — or `None` if no late record came (its on-time result stands).
    fn final_accumulator<F: AggregateFunction<T, Acc = A>>(self, function: &F) -> Option<A> {
        if self.late.is_empty() {
            return None;
        }
        let mut accumulator = self.on_time.unwrap_or_else(|| function.create_accumulator());
        for record in &self.late {
            function.add(&mut accumulator, record);
        }
        Some(accumulator)
    }
}

impl<A, T> Default for Lateness<A, T> {
    fn default() -> Self {
        Lateness { on_time: None, late: Vec::new() }
    }
}

impl<K, T, W, F, R, KF, RF> WindowAggregate<K, T, W, F, R, KF, RF>
where
    F: AggregateFunction<T>,
{
    /// Windows by `assigner`, aggregated by `function` per key (`key`), emitted by `result`.
    pub fn new(assigner: W, function: F, key: KF, result: RF) -> Self {
        WindowAggregate {
            assigner,
            function,
            key,
            result,
            windows: BTreeMap::new(),
            fired: Vec::new(),
            allowed_lateness_ms: 0,
            retained: BTreeMap::new(),
            passed: EventTime::MIN,
            store: None,
            retained_hold: EventTime::MAX,
            _types: std::marker::PhantomData,
        }
    }

    /// Keeps the windows in `store`, unless it is in memory (see the module docs).
    pub fn with_store(self, store: Store<WindowKey<K>>) -> Self {
        if store.in_memory() {
            self
        } else {
            self.in_keyed_store(store)
        }
    }

    /// Keeps the windows in `store`, whatever its backend (tests run the keyed store's form
    /// on the memory backend this way).
    pub fn in_keyed_store(mut self, store: Store<WindowKey<K>>) -> Self {
        self.store = Some(store);
        self
    }

    /// Windows take late records for `ms` after their end (see [`crate::api::WindowedStream::allowed_lateness`]).
    pub fn with_allowed_lateness(mut self, ms: i64) -> Self {
        assert!(ms >= 0, "allowed lateness must not be negative");
        self.allowed_lateness_ms = ms;
        self
    }
}

/// What the lateness rule says about a record for one window.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Verdict {
    OnTime,
    /// After the window fired, within its allowed lateness.
    LateAllowed,
    TooLate,
}

fn verdict(window: TimeWindow, watermark: EventTime, allowed_lateness_ms: i64) -> Verdict {
    if window.end > watermark {
        Verdict::OnTime
    } else if window.end.saturating_add(allowed_lateness_ms) > watermark {
        Verdict::LateAllowed
    } else {
        Verdict::TooLate
    }
}

impl<K, T, W, F, R, KF, RF> StatefulLogic for WindowAggregate<K, T, W, F, R, KF, RF>
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    W: WindowAssigner,
    F: AggregateFunction<T>,
    R: Data,
    KF: KeySelector<T, K>,
    RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
{
    type In = T;
    type Out = R;

    #[inline]
    fn apply(&mut self, records: &mut Vec<Record<T>>, _out: &mut Vec<Record<R>>, late: &mut Vec<Record<T>>) {
        if self.store.is_some() {
            return self.apply_to_store(records, late);
        }
        let mut index = 0;
        while index < records.len() {
            let record = &records[index];
            let Some(window) = self.assigner.single(record.time) else {
                // Several windows per record.
                let mut counted = false;
                let key = self.key.key(&record.value);
                let (windows, retained, function) = (&mut self.windows, &mut self.retained, &self.function);
                let allowed = self.allowed_lateness_ms;
                self.assigner.assign(record.time, |window| match verdict(window, record.watermark, allowed) {
                    Verdict::OnTime => {
                        counted = true;
                        let accumulator = windows
                            .entry((window.end, window.start))
                            .or_default()
                            .entry(key.clone())
                            .or_insert_with(|| function.create_accumulator());
                        function.add(accumulator, &record.value);
                    }
                    Verdict::LateAllowed => {
                        counted = true;
                        let keys = retained.entry((window.end, window.start)).or_default();
                        keys.entry(key.clone()).or_default().late.push(record.value.clone());
                    }
                    Verdict::TooLate => {}
                });
                if !counted {
                    late.push(record.clone());
                }
                index += 1;
                continue;
            };
            // Runs of consecutive records usually share a window: look it up once per run,
            // then test membership by comparison.
            let keys = self.windows.entry((window.end, window.start)).or_default();
            while let Some(record) = records.get(index).filter(|r| window.start <= r.time && r.time < window.end) {
                if window.end > record.watermark || record.time > record.watermark {
                    let accumulator =
                        keys.entry(self.key.key(&record.value)).or_insert_with(|| self.function.create_accumulator());
                    self.function.add(accumulator, &record.value);
                } else if verdict(window, record.watermark, self.allowed_lateness_ms) == Verdict::LateAllowed {
                    let retained = self.retained.entry((window.end, window.start)).or_default();
                    retained.entry(self.key.key(&record.value)).or_default().late.push(record.value.clone());
                } else {
                    late.push(record.clone());
                }
                index += 1;
            }
            if keys.is_empty() {
                self.windows.remove(&(window.end, window.start));
            }
        }
    }

    fn advance(&mut self, bound: EventTime, out: &mut Vec<Record<R>>) {
        self.passed = self.passed.max(bound);
        if self.store.is_some() {
            return self.advance_store(bound, out);
        }
        while let Some(entry) = self.windows.first_entry() {
            let (end, start) = *entry.key();
            if end > bound {
                break;
            }
            let keys = entry.remove();
            self.fired.extend(keys);
            self.fired.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let window = TimeWindow { start, end };
            let time = window.max_timestamp();
            if self.allowed_lateness_ms > 0 {
                let retained = self.retained.entry((end, start)).or_default();
                for (key, accumulator) in &self.fired {
                    retained.entry(key.clone()).or_default().on_time = Some(accumulator.clone());
                }
            }
            out.extend(
                self.fired
                    .drain(..)
                    .map(|(key, accumulator)| Record::derived((self.result)(&key, window, accumulator), time)),
            );
        }
        self.fire_late(bound, out);
    }

    fn output_hold(&self) -> EventTime {
        if self.allowed_lateness_ms == 0 {
            return EventTime::MAX;
        }
        if self.store.is_some() {
            // Once event time passes a bound, every retained window left ends after
            // `passed − lateness` (the others fired their updates); windows that took late
            // records since may end earlier, and are held apart until the next bound.
            return self.retained_hold.min(self.passed.saturating_sub(self.allowed_lateness_ms));
        }
        // A window within its allowed lateness may still emit its final result, stamped with
        // its last millisecond — also one that has no state yet: a late record can still come
        // for any window ending after `passed − lateness`.
        let retained = self.retained.keys().next().map_or(EventTime::MAX, |(end, _)| end.saturating_sub(1));
        retained.min(self.passed.saturating_sub(self.allowed_lateness_ms))
    }

    fn snapshot(&self) -> StateImage {
        if let Some(store) = &self.store {
            return image_of_store(store, windows_from_store::<K, T, F::Acc>);
        }
        let (windows, retained) = (self.windows.clone(), self.retained.clone());
        StateImage::deferred(move || encode_windows::<K, T, F::Acc>(&windows, &retained))
    }

    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (group, bytes) in states {
            let windows: DecodedWindows<K, F::Acc, T> =
                crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {e}"))?;
            if self.store.is_some() {
                self.restore_into_store(group, windows)?;
                continue;
            }
            let (entries, retained) = windows;
            for (start, end, key, accumulator) in entries {
                let previous = self.windows.entry((end, start)).or_default().insert(key, accumulator);
                if previous.is_some() {
                    return Err(format!("key group {group}: a window entry appears twice"));
                }
            }
            for (start, end, key, lateness) in retained {
                if self.retained.entry((end, start)).or_default().insert(key, lateness).is_some() {
                    return Err(format!("key group {group}: a late window entry appears twice"));
                }
            }
        }
        Ok(())
    }
}

/// A key's window `[start, end)`: what windows in the keyed store are keyed by, so that a
/// window's accumulator is one entry of a value state — read once and written once per batch,
/// no other window of its key read with it — and its timer names it. It hashes as its key
/// alone, so that a key's windows are in the key's group, and in the slot its records go to
/// (in a hash map, a key's windows therefore share a hash: jobs keep windows in the store only
/// on RocksDB, which finds a key by its encoding).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowKey<K> {
    /// The key.
    pub key: K,
    /// The window's end.
    pub end: EventTime,
    /// The window's start.
    pub start: EventTime,
}

impl<K: Hash> Hash for WindowKey<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

impl<K> WindowKey<K> {
    fn new(key: K, window: TimeWindow) -> Self {
        WindowKey { key, end: window.end, start: window.start }
    }
    fn window(&self) -> TimeWindow {
        TimeWindow { start: self.start, end: self.end }
    }
}

/// The keyed store's value state, per key and open window, of the window's accumulator.
const OPEN_WINDOWS: &str = "window/open";
/// The keyed store's value state, per key and window within its allowed lateness, of the
/// window's on-time accumulator and late records.
const RETAINED_WINDOWS: &str = "window/retained";
/// Per key and open window, a timer at the window's last millisecond: it fires once event time
/// passes the window's end.
const WINDOW_ENDS: TimerQueue = TimerQueue::new("window-end");
/// Per key and retained window, a timer a millisecond before its allowed lateness runs out.
const RETAINED_ENDS: TimerQueue = TimerQueue::new("window-retained-end");

fn open_windows<A: Data>() -> ValueState<A> {
    ValueState::new(OPEN_WINDOWS)
}

fn retained_windows<A: Data, T: Data>() -> ValueState<Lateness<A, T>> {
    ValueState::new(RETAINED_WINDOWS)
}

/// A keyed store's access for one window of a key: windows carry no time to live, so their
/// accesses carry no event time.
fn window_state<'a, K: Key>(
    store: &'a mut Store<WindowKey<K>>,
    window: &'a WindowKey<K>,
) -> KeyedState<'a, WindowKey<K>, Store<WindowKey<K>>> {
    KeyedState::new(store, window, EventTime::MIN)
}

/// The timer at which window `window`'s allowed lateness of `lateness_ms` runs out: a
/// millisecond before event time passes its end plus the lateness.
fn retained_end(window: TimeWindow, lateness_ms: i64) -> EventTime {
    window.end.saturating_add(lateness_ms).saturating_sub(1)
}

impl<K, T, W, F, R, KF, RF> WindowAggregate<K, T, W, F, R, KF, RF>
where
    K: Key,
    T: Data,
    W: WindowAssigner,
    F: AggregateFunction<T>,
    R: Data,
    KF: KeySelector<T, K>,
    RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
{
    /// [`StatefulLogic::apply`] on the keyed store: the batch's records are grouped by key and
    /// window (in arrival order within each), so that a window's state is read and written once
    /// per batch, not once per record.
    fn apply_to_store(&mut self, records: &[Record<T>], late: &mut Vec<Record<T>>) {
        type Batch<K> = BTreeMap<WindowKey<K>, Vec<usize>>;
        let (mut on_time, mut allowed): (Batch<K>, Batch<K>) = (BTreeMap::new(), BTreeMap::new());
        let lateness_ms = self.allowed_lateness_ms;
        for (index, record) in records.iter().enumerate() {
            let key = self.key.key(&record.value);
            let mut counted = false;
            self.assigner.assign(record.time, |window| {
                let batch = match verdict(window, record.watermark, lateness_ms) {
                    Verdict::OnTime => &mut on_time,
                    Verdict::LateAllowed => &mut allowed,
                    Verdict::TooLate => return,
                };
                counted = true;
                batch.entry(WindowKey::new(key.clone(), window)).or_default().push(index);
            });
            if !counted {
                late.push(record.clone());
            }
        }
        let store = self.store.as_mut().expect("windows in a store");
        let open = open_windows::<F::Acc>();
        for (window, indices) in on_time {
            let mut state = window_state(store, &window);
            let stored = open.get(&mut state);
            let opened = stored.is_none();
            let mut accumulator = stored.unwrap_or_else(|| self.function.create_accumulator());
            for index in indices {
                self.function.add(&mut accumulator, &records[index].value);
            }
            open.set(&mut state, accumulator);
            if opened {
                store.register_timer(&WINDOW_ENDS, &window, window.window().max_timestamp());
            }
        }
        let retained = retained_windows::<F::Acc, T>();
        for (window, indices) in allowed {
            self.retained_hold = self.retained_hold.min(window.window().max_timestamp());
            let mut state = window_state(store, &window);
            let stored = retained.get(&mut state);
            let first = stored.is_none();
            let mut entry = stored.unwrap_or_default();
            entry.late.extend(indices.into_iter().map(|index| records[index].value.clone()));
            retained.set(&mut state, entry);
            if first {
                store.register_timer(&RETAINED_ENDS, &window, retained_end(window.window(), lateness_ms));
            }
        }
    }

    /// [`StatefulLogic::advance`] on the keyed store: each due timer fires the window it names
    /// — in order of window end, as in memory — then each retained window whose allowed
    /// lateness ran out by `bound` fires its update, if it took late records. Only the windows
    /// due are read: every other window stays on disk.
    fn advance_store(&mut self, bound: EventTime, out: &mut Vec<Record<R>>) {
        let lateness_ms = self.allowed_lateness_ms;
        let store = self.store.as_mut().expect("windows in a store");
        let (open, retained) = (open_windows::<F::Acc>(), retained_windows::<F::Acc, T>());
        while let Some((_, window)) = store.pop_timer(&WINDOW_ENDS, bound) {
            let mut state = window_state(store, &window);
            let accumulator = open.get(&mut state).expect("an open window's timer fires while it is open");
            open.clear(&mut state);
            if lateness_ms > 0 {
                // Kept until its allowed lateness runs out, for the late records' update.
                let stored = retained.get(&mut state);
                let first = stored.is_none();
                let mut entry = stored.unwrap_or_default();
                entry.on_time = Some(accumulator.clone());
                retained.set(&mut state, entry);
                if first {
                    store.register_timer(&RETAINED_ENDS, &window, retained_end(window.window(), lateness_ms));
                }
            }
            let WindowKey { key, .. } = &window;
            out.push(Record::derived(
                (self.result)(key, window.window(), accumulator),
                window.window().max_timestamp(),
            ));
        }
        while let Some((_, window)) = store.pop_timer(&RETAINED_ENDS, bound) {
            let mut state = window_state(store, &window);
            let entry = retained.get(&mut state).expect("a retained window's timer fires while it is retained");
            retained.clear(&mut state);
            if let Some(accumulator) = entry.final_accumulator(&self.function) {
                let time = window.window().max_timestamp();
                out.push(Record::derived((self.result)(&window.key, window.window(), accumulator), time));
            }
        }
        // Every retained window left ends after `bound − lateness` (see `output_hold`).
        self.retained_hold = EventTime::MAX;
    }

    /// Loads one key group of the canonical encoding into the keyed store, with the timers
    /// its windows need.
    fn restore_into_store(&mut self, group: usize, windows: DecodedWindows<K, F::Acc, T>) -> Result<(), String> {
        let (entries, retained_entries) = windows;
        let store = self.store.as_mut().expect("windows in a store");
        let (open, retained) = (open_windows::<F::Acc>(), retained_windows::<F::Acc, T>());
        for (start, end, key, accumulator) in entries {
            let window = WindowKey { key, end, start };
            let mut state = window_state(store, &window);
            if open.get(&mut state).is_some() {
                return Err(format!("key group {group}: a window entry appears twice"));
            }
            open.set(&mut state, accumulator);
            store.register_timer(&WINDOW_ENDS, &window, window.window().max_timestamp());
        }
        for (start, end, key, entry) in retained_entries {
            let window = WindowKey { key, end, start };
            let mut state = window_state(store, &window);
            if retained.get(&mut state).is_some() {
                return Err(format!("key group {group}: a late window entry appears twice"));
            }
            retained.set(&mut state, entry);
            store.register_timer(&RETAINED_ENDS, &window, retained_end(window.window(), self.allowed_lateness_ms));
        }
        Ok(())
    }
}

/// The windows' canonical encoding ([`encode_windows`]) of a keyed store's snapshot: its
/// window states read back; its timers left out (a restore sets them again from the windows).
fn windows_from_store<K: Key, T: Data, A: Data>(states: KeyGroupStates) -> Result<KeyGroupStates, String> {
    type Entries<K, V> = Vec<(WindowKey<K>, crate::state::Stamped<V>)>;
    let mut windows: BTreeMap<(EventTime, EventTime), KeyMap<K, A>> = BTreeMap::new();
    let mut retained: Retained<K, A, T> = BTreeMap::new();
    for (group, name, bytes) in crate::state::split_groups(states)? {
        let context = |e: String| format!("key group {group}: {name}: {e}");
        match name.as_str() {
            OPEN_WINDOWS => {
                let entries: Entries<K, A> = crate::keyed::decode_state(&bytes).map_err(context)?;
                for (WindowKey { key, end, start }, stamped) in entries {
                    windows.entry((end, start)).or_default().insert(key, stamped.value);
                }
            }
            RETAINED_WINDOWS => {
                let entries: Entries<K, Lateness<A, T>> = crate::keyed::decode_state(&bytes).map_err(context)?;
                for (WindowKey { key, end, start }, stamped) in entries {
                    retained.entry((end, start)).or_default().insert(key, stamped.value);
                }
            }
            _ => {}
        }
    }
    Ok(encode_windows::<K, T, A>(&windows, &retained))
}

impl<K, T, W, F, R, KF, RF> WindowAggregate<K, T, W, F, R, KF, RF>
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    F: AggregateFunction<T>,
    R: Data,
    RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
{
    /// Emits the final result of every window whose allowed lateness has passed and that
    /// received late records: the on-time accumulator with every late record folded in.
    fn fire_late(&mut self, bound: EventTime, out: &mut Vec<Record<R>>) {
        while let Some(entry) = self.retained.first_entry() {
            let (end, start) = *entry.key();
            if end.saturating_add(self.allowed_lateness_ms) > bound {
                break;
            }
            let mut keys: Vec<(K, Lateness<F::Acc, T>)> = entry.remove().into_iter().collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let window = TimeWindow { start, end };
            for (key, lateness) in keys {
                if let Some(accumulator) = lateness.final_accumulator(&self.function) {
                    out.push(Record::derived((self.result)(&key, window, accumulator), window.max_timestamp()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stateful::StateFiles;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Counts and sums `(key, value)` records.
    struct CountSum;

    impl AggregateFunction<(u64, i64)> for CountSum {
        type Acc = (u64, i64);
        fn create_accumulator(&self) -> (u64, i64) {
            (0, 0)
        }
        fn add(&self, accumulator: &mut (u64, i64), value: &(u64, i64)) {
            accumulator.0 += 1;
            accumulator.1 += value.1;
        }
    }

    type Row = (u64, EventTime, EventTime, u64, i64);

    /// What happens to a window operator: records read under the current watermark (at times
    /// around it: some late), the watermark rising, event time passing it, a snapshot restored
    /// (into the other form of windows).
    #[derive(Clone, Debug)]
    enum Step {
        Records(Vec<(u64, i64, i64)>),
        Rise(i64),
        Pass,
        SnapshotRestore,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => proptest::collection::vec((0u64..5, -60i64..50, -5i64..5), 1..8).prop_map(Step::Records),
            2 => (0i64..40).prop_map(Step::Rise),
            2 => Just(Step::Pass),
            1 => Just(Step::SnapshotRestore),
        ]
    }

    type Logic<W> = WindowAggregate<
        u64,
        (u64, i64),
        W,
        CountSum,
        Row,
        fn(&(u64, i64)) -> u64,
        fn(&u64, TimeWindow, (u64, i64)) -> Row,
    >;

    fn logic<W: WindowAssigner + Copy>(
        assigner: W,
        lateness_ms: i64,
        store: Option<Store<WindowKey<u64>>>,
    ) -> Logic<W> {
        let key: fn(&(u64, i64)) -> u64 = |record| record.0;
        let result: fn(&u64, TimeWindow, (u64, i64)) -> Row =
            |key, window, (count, sum)| (*key, window.start, window.end, count, sum);
        let logic = WindowAggregate::new(assigner, CountSum, key, result).with_allowed_lateness(lateness_ms);
        match store {
            Some(store) => logic.in_keyed_store(store),
            None => logic,
        }
    }

    /// [`both_forms_agree`] for windows of kind `kind` (tumbling, sliding, cumulating).
    fn every_kind_agrees(
        kind: usize,
        lateness_ms: i64,
        steps: &[Step],
        store: MakeStore<'_, WindowKey<u64>>,
    ) -> Result<(), TestCaseError> {
        match kind {
            0 => both_forms_agree(TumblingEventTimeWindows::of(20), lateness_ms, steps, store),
            1 => both_forms_agree(SlidingEventTimeWindows::of(30, 10), lateness_ms, steps, store),
            _ => both_forms_agree(CumulativeEventTimeWindows::of(10, 40), lateness_ms, steps, store),
        }
    }

    /// Makes a keyed store for a test: a fresh one, or one reopened on a snapshot's files.
    type MakeStore<'a, S> = &'a dyn Fn(Option<&StateFiles>) -> Store<S>;

    /// A store form's snapshot: its canonical encoding, and its files if it has any (then
    /// with nothing beside them).
    fn snapshot_of(image: StateImage) -> Result<(KeyGroupStates, Option<Arc<StateFiles>>), TestCaseError> {
        match image.into_files() {
            Ok((files, encode)) => {
                prop_assert_eq!(encode(Form::BesideFiles).map_err(TestCaseError::fail)?, Vec::new());
                Ok((encode(Form::Canonical).map_err(TestCaseError::fail)?, Some(files)))
            }
            Err(image) => Ok((image.encode(), None)),
        }
    }

    /// Runs `steps` on windows in their own maps and in keyed stores made by `store`.
    fn both_forms_agree<W: WindowAssigner + Copy>(
        assigner: W,
        lateness_ms: i64,
        steps: &[Step],
        store: MakeStore<'_, WindowKey<u64>>,
    ) -> Result<(), TestCaseError> {
        let carry_over = |restored: &mut Logic<W>, was: &Logic<W>| restored.passed = was.passed;
        forms_agree(|store| logic(assigner, lateness_ms, store), store, steps, 1, carry_over)
    }

    /// Runs `steps` on a window operator in its own maps (`make(None)`) and in keyed stores
    /// made by `store`: records at `offset / spread` from the watermark, event time passing it,
    /// snapshots restored into the other form (or the store form reopened on its files) with
    /// `carry_over` of what the scaffold would restore beside. Outputs, late outputs, output
    /// holds and snapshots must be equal throughout.
    fn forms_agree<S, L>(
        make: impl Fn(Option<Store<S>>) -> L,
        store: MakeStore<'_, S>,
        steps: &[Step],
        spread: i64,
        carry_over: impl Fn(&mut L, &L),
    ) -> Result<(), TestCaseError>
    where
        L: StatefulLogic<In = (u64, i64)>,
        L::Out: Ord + std::fmt::Debug,
    {
        let mut forms = [make(None), make(Some(store(None)))];
        let mut watermark: EventTime = 0;
        for step in steps.iter().chain([&Step::Rise(10_000), &Step::Pass]) {
            // Per form: results with their times, and late records.
            type Outputs<O> = (Vec<(O, EventTime)>, Vec<Record<(u64, i64)>>);
            let mut outputs: Vec<Outputs<L::Out>> = Vec::new();
            for form in &mut forms {
                let (mut out, mut late) = (Vec::new(), Vec::new());
                match step {
                    Step::Records(records) => {
                        let mut records: Vec<Record<(u64, i64)>> = records
                            .iter()
                            .map(|&(key, offset, value)| Record {
                                value: (key, value),
                                time: watermark + offset / spread,
                                watermark,
                            })
                            .collect();
                        form.apply(&mut records, &mut out, &mut late);
                    }
                    Step::Rise(by) => watermark += by,
                    Step::Pass => form.advance(watermark, &mut out),
                    Step::SnapshotRestore => {}
                }
                let mut rows: Vec<(L::Out, EventTime)> =
                    out.into_iter().map(|record| (record.value, record.time)).collect();
                rows.sort();
                late.sort();
                outputs.push((rows, late));
            }
            prop_assert_eq!(&outputs[0], &outputs[1], "at {:?}", step);
            prop_assert_eq!(forms[0].output_hold(), forms[1].output_hold());
            if let Step::SnapshotRestore = step {
                let in_memory = forms[0].snapshot().encode();
                let (in_store, files) = snapshot_of(forms[1].snapshot())?;
                prop_assert_eq!(&in_memory, &in_store, "equal state, equal snapshots");
                // Each restores the other's snapshot — or the store form, reopened on its files,
                // what is beside them (nothing) — and goes on from where it was.
                let mut restored = [make(None), make(Some(store(files.as_deref())))];
                restored[0].restore(in_store).map_err(TestCaseError::fail)?;
                restored[1]
                    .restore(if files.is_some() { Vec::new() } else { in_memory })
                    .map_err(TestCaseError::fail)?;
                for (form, was) in restored.iter_mut().zip(&forms) {
                    carry_over(form, was);
                }
                prop_assert_eq!(restored[0].output_hold(), restored[1].output_hold());
                forms = restored;
            }
        }
        Ok(())
    }

    /// RocksDB stores in directories of their own under `root`: fresh, or reopened on a
    /// snapshot's files (as a slot restores an incremental checkpoint).
    #[cfg(feature = "rocksdb")]
    fn rocksdb_stores<S: Key>(root: &std::path::Path) -> impl Fn(Option<&StateFiles>) -> Store<S> + '_ {
        let next = std::cell::Cell::new(0);
        move |files| {
            next.set(next.get() + 1);
            let dir = root.join(next.get().to_string());
            Store::RocksDb(match files {
                Some(files) => crate::state::rocksdb::reopened_from(files, &dir),
                None => crate::state::rocksdb::RocksDbBackend::open(&dir).unwrap(),
            })
        }
    }

    #[cfg(feature = "rocksdb")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The same on RocksDB: windows on disk, restored from their checkpoint's files.
        #[test]
        fn windows_on_rocksdb_equal_windows_in_memory(
            kind in 0..3usize,
            lateness_ms in prop_oneof![Just(0i64), 1i64..80],
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let root = tempfile::tempdir().unwrap();
            let store = rocksdb_stores(root.path());
            every_kind_agrees(kind, lateness_ms, &steps, &store)?;
        }
    }

    type SessionRow = (u64, EventTime, EventTime, Vec<i64>);

    type Sessions = SessionAggregate<
        u64,
        (u64, i64),
        CollectAll,
        SessionRow,
        fn(&(u64, i64)) -> u64,
        fn(&u64, TimeWindow, Vec<(u64, i64)>) -> SessionRow,
    >;

    /// Sessions with a gap of 10 ms, collecting their records (in the order they merged: the
    /// forms must merge alike), in their own maps or in `store`.
    fn sessions(store: Option<Store<u64>>) -> Sessions {
        let key: fn(&(u64, i64)) -> u64 = |record| record.0;
        let result: fn(&u64, TimeWindow, Vec<(u64, i64)>) -> SessionRow =
            |key, window, records| (*key, window.start, window.end, records.into_iter().map(|r| r.1).collect());
        let logic = EventTimeSessionWindows::with_gap(10).logic(CollectAll, key, result);
        match store {
            Some(store) => logic.in_keyed_store(store),
            None => logic,
        }
    }

    /// Runs `steps` on sessions in their own maps and in keyed stores made by `store`.
    fn sessions_agree(steps: &[Step], store: MakeStore<'_, u64>) -> Result<(), TestCaseError> {
        forms_agree(sessions, store, steps, 2, |_, _| {})
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Sessions in the keyed store fire what sessions in their own maps fire — merged in
        /// the same order, late records alike — with the same output hold, and snapshot to the
        /// same bytes; each restores the other's snapshot.
        #[test]
        fn sessions_in_a_keyed_store_equal_sessions_in_memory(steps in proptest::collection::vec(step(), 1..60)) {
            sessions_agree(&steps, &|_| Store::default())?;
        }
    }

    #[cfg(feature = "rocksdb")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The same on RocksDB: sessions on disk, restored from their checkpoint's files.
        #[test]
        fn sessions_on_rocksdb_equal_sessions_in_memory(steps in proptest::collection::vec(step(), 1..60)) {
            let root = tempfile::tempdir().unwrap();
            let store = rocksdb_stores(root.path());
            sessions_agree(&steps, &store)?;
        }
    }

    /// On RocksDB a checkpoint carries the windows in the store's files, and encodes nothing
    /// beside them; a savepoint encodes them canonically, as windows in memory do.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn windows_on_rocksdb_are_in_the_checkpoints_files() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::RocksDb(crate::state::rocksdb::RocksDbBackend::open(&root.path().join("db")).unwrap());
        let mut on_disk = logic(SlidingEventTimeWindows::of(30, 10), 0, None).with_store(store);
        let mut in_memory = logic(SlidingEventTimeWindows::of(30, 10), 0, None).with_store(Store::default());
        assert!(on_disk.store.is_some() && in_memory.store.is_none(), "in memory, windows keep their own maps");
        for form in [&mut on_disk, &mut in_memory] {
            let mut records: Vec<Record<(u64, i64)>> = (0..1_000u64)
                .map(|i| Record { value: (i % 97, i as i64), time: i as EventTime, watermark: 0 })
                .collect();
            form.apply(&mut records, &mut Vec::new(), &mut Vec::new());
        }
        let (_files, encode) = on_disk.snapshot().into_files().map_err(|_| "files").unwrap();
        assert_eq!(encode(Form::BesideFiles).unwrap(), Vec::new(), "nothing beside the files");
        assert_eq!(encode(Form::Canonical).unwrap(), in_memory.snapshot().encode());
    }

    fn windows_of(assigner: &impl WindowAssigner, time: EventTime) -> Vec<TimeWindow> {
        let mut windows = Vec::new();
        assigner.assign(time, |w| windows.push(w));
        windows
    }

    proptest! {
        /// Every window an assigner gives contains the time; sliding windows are exactly the
        /// `size / slide` windows of their grid that contain it.
        #[test]
        fn sliding_windows_contain_the_time_and_are_all_there(time in -1_000_000i64..1_000_000, slide in 1i64..500, factor in 1i64..6) {
            let size = slide * factor;
            let windows = windows_of(&SlidingEventTimeWindows::of(size, slide), time);
            prop_assert_eq!(windows.len() as i64, factor);
            for w in &windows {
                prop_assert!(w.start <= time && time < w.end && w.end - w.start == size && w.start.rem_euclid(slide) == 0);
            }
        }

        /// Cumulating windows share their start (a multiple of the size), grow by the step, and
        /// are exactly those of that start that contain the time.
        #[test]
        fn cumulating_windows_grow_from_one_start(time in -1_000_000i64..1_000_000, step in 1i64..300, steps in 1i64..8) {
            let size = step * steps;
            let windows = windows_of(&CumulativeEventTimeWindows::of(step, size), time);
            let start = time - time.rem_euclid(size);
            let expected: Vec<TimeWindow> = (1..=steps)
                .map(|i| TimeWindow { start, end: start + i * step })
                .filter(|w| w.end > time)
                .collect();
            prop_assert_eq!(windows, expected);
        }

        /// Windows in the keyed store fire what windows in their own maps fire, late records
        /// and allowed lateness included, and snapshot to the same bytes; each restores the
        /// other's snapshot.
        #[test]
        fn windows_in_a_keyed_store_equal_windows_in_memory(
            kind in 0..3usize,
            lateness_ms in prop_oneof![Just(0i64), 1i64..80],
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            every_kind_agrees(kind, lateness_ms, &steps, &|_| Store::default())?;
        }

        /// A tumbling assigner's one window contains the time.
        #[test]
        fn a_tumbling_window_contains_the_time(time in any::<i64>(), size in 1i64..100_000) {
            let window = TumblingEventTimeWindows::of(size).single(time).unwrap();
            prop_assert!(window.start <= time && (time < window.end || window.end == EventTime::MAX));
        }
    }
}

/// What a trigger decides after a record joined a global window.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TriggerResult {
    /// Keep collecting.
    Continue,
    /// Emit the window's result and keep its contents.
    Fire,
    /// Emit the window's result and start afresh.
    FireAndPurge,
}

/// Decides when a key's global window fires (Flink's `Trigger`, for global windows). Records
/// reach it in event-time order (see [`crate::process`]), so its decisions are the same in
/// every run.
pub trait Trigger<T, A>: 'static {
    /// `record` has just been added; the window now holds `count` records and `accumulator`.
    fn on_element(&self, record: &T, time: EventTime, count: u64, accumulator: &A) -> TriggerResult;
}

/// Fires and purges every `n` records (Flink's `countWindow(n)`).
#[derive(Copy, Clone, Debug)]
pub struct CountTrigger(pub u64);

impl<T, A> Trigger<T, A> for CountTrigger {
    fn on_element(&self, _record: &T, _time: EventTime, count: u64, _accumulator: &A) -> TriggerResult {
        if count >= self.0 {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        }
    }
}

/// Any closure `Fn(&T, time, count, &A) -> TriggerResult` is a trigger.
impl<T, A, F: Fn(&T, EventTime, u64, &A) -> TriggerResult + 'static> Trigger<T, A> for F {
    fn on_element(&self, record: &T, time: EventTime, count: u64, accumulator: &A) -> TriggerResult {
        self(record, time, count, accumulator)
    }
}

/// A key's global window: one window for all of the key's records, fired by a trigger — a
/// process function over the key's state.
pub struct GlobalAggregate<F: AggregateFunction<T>, T, Tr, RF> {
    function: F,
    trigger: Tr,
    result: RF,
    window: crate::state::ValueState<(u64, F::Acc)>,
}

impl<F: AggregateFunction<T>, T, Tr, RF> GlobalAggregate<F, T, Tr, RF> {
    /// Aggregates with `function`, fires when `trigger` says, emits `result(key, accumulator)`.
    pub fn new(function: F, trigger: Tr, result: RF) -> Self {
        GlobalAggregate { function, trigger, result, window: crate::state::ValueState::new("global-window") }
    }
}

impl<K, T, R, F, Tr, RF> crate::process::KeyedProcessFunction<K, T, R> for GlobalAggregate<F, T, Tr, RF>
where
    K: crate::state::Key,
    T: Data,
    R: Data,
    F: AggregateFunction<T>,
    Tr: Trigger<T, F::Acc>,
    RF: Fn(&K, F::Acc) -> R + 'static,
{
    fn process_element(&mut self, value: T, ctx: &mut crate::process::Context<'_, K, R>) {
        let (count, mut accumulator) =
            self.window.get(ctx.state()).unwrap_or_else(|| (0, self.function.create_accumulator()));
        self.function.add(&mut accumulator, &value);
        let count = count + 1;
        match self.trigger.on_element(&value, ctx.timestamp(), count, &accumulator) {
            TriggerResult::Continue => self.window.set(ctx.state(), (count, accumulator)),
            TriggerResult::Fire => {
                let result = (self.result)(ctx.key(), accumulator.clone());
                ctx.collect(result);
                self.window.set(ctx.state(), (count, accumulator));
            }
            TriggerResult::FireAndPurge => {
                let result = (self.result)(ctx.key(), accumulator);
                ctx.collect(result);
                self.window.clear(ctx.state());
            }
        }
    }
}
