//! Keyed process functions: per-key logic with keyed state and timers (Flink's
//! `KeyedProcessFunction` and `KeyedCoProcessFunction`), on the stateful scaffold.
//!
//! A function sees one record (or one firing timer) at a time, for its key, with the key's
//! state ([`crate::state`]) and a timer service.
//!
//! **Records arrive in event-time order.** Flink hands a process function its records in
//! arrival order, which depends on how the inputs' splits interleave — so its results change
//! with parallelism and with failures. Weir holds each record until event time passes it and
//! then hands it over in order of event time (ties: by key, then by the record's encoding),
//! interleaved with the timers due at the same moment (records first). Results are therefore
//! the same in every run, at any parallelism, with or without failures; the price is latency
//! up to the watermark's delay, as for a window. A record already behind the watermark it was
//! read under (`time < watermark`: later than the source's out-of-orderness bound) cannot be
//! put in order: it goes to the operator's late output, never silently dropped.
//!
//! **Event-time timers** fire when event time passes them; a timer set at or before the
//! current time fires right after the current record. **Processing-time timers** fire when the
//! node's clock — read through the runtime seam, so that the simulator drives it — reaches
//! them; their results depend on timing, as in Flink. Timers and records waiting for their
//! turn are keyed state: checkpointed with their key group and restored with it. Timers live in
//! the keyed store's timer queues ([`crate::state::TimerQueue`]) — on disk with RocksDB, where a
//! timer per key would not fit in memory — except the broadcast side's, which every slot holds
//! alike and which the operator keeps with the broadcast state.
//!
//! Outputs carry the event time of the record or event-time timer being processed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use weir_core::time::EventTime;

use crate::keyed::key_group_of;
use crate::keyed::KeySelector;
use crate::record::{Data, Record};
pub use crate::state::Store;
use crate::state::{Key, KeyedState, StateBackend, TimerQueue};
use crate::stateful::{KeyGroupStates, StateImage, StatefulLogic};

/// Which clock a timer follows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimeDomain {
    /// Event time: fires when event time passes the timer.
    EventTime,
    /// Processing time: fires when the node's clock reaches the timer.
    ProcessingTime,
}

/// Names a side output of a process function and the type of its records (Flink's
/// `OutputTag`): `ctx.output(&TAG, value)` emits to it, `outputs.side_output(&TAG)` reads it.
pub struct OutputTag<S> {
    name: &'static str,
    _records: std::marker::PhantomData<fn() -> S>,
}

impl<S> OutputTag<S> {
    /// A side output called `name` (unique per operator).
    pub const fn new(name: &'static str) -> Self {
        OutputTag { name, _records: std::marker::PhantomData }
    }
    /// The side output's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What a process function emits: a main-output record, or a side-output record (encoded: side
/// outputs of any types share one stream until they are split by tag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Emitted<O> {
    /// To the main output.
    Main(O),
    /// To the side output `tag`, encoded.
    Side {
        /// The tag's name.
        tag: String,
        /// The record, encoded.
        bytes: Vec<u8>,
    },
}

/// What a process function can do while it handles one record or timer.
pub struct Context<'a, K: Key, O> {
    state: KeyedState<'a, K, Store<K>>,
    key: &'a K,
    timestamp: EventTime,
    watermark: EventTime,
    /// The replicated key's timers, if the current key is that key (every other key's are in
    /// the keyed store).
    replicated_timers: Option<&'a mut ReplicatedTimers>,
    out: &'a mut Vec<Record<Emitted<O>>>,
    processing_time: EventTime,
    /// Handling a timer: a timer set now for the current time or earlier fires a millisecond
    /// later (never again in the same moment, which would not end).
    in_timer: bool,
}

impl<'a, K: Key, O> Context<'a, K, O> {
    /// The time a timer set for `time` now fires at.
    fn timer_time(&self, time: EventTime) -> EventTime {
        let earliest = if self.in_timer { self.timestamp.saturating_add(1) } else { self.timestamp };
        time.max(earliest)
    }

    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }
    /// Event time of the record (or timer) being processed.
    pub fn timestamp(&self) -> EventTime {
        self.timestamp
    }
    /// The watermark the record was read under (its lateness horizon; `i64::MIN` in timers
    /// and for records an operator derived): the record is late for anything that ended at or
    /// before it.
    pub fn watermark(&self) -> EventTime {
        self.watermark
    }
    /// The key's state: pass it to a state handle (`self.count.get(ctx.state())`).
    pub fn state(&mut self) -> &mut KeyedState<'a, K, Store<K>> {
        &mut self.state
    }
    /// Emits a record at the current event time, with the current record's lateness horizon
    /// (a timer's outputs: none).
    pub fn collect(&mut self, value: O) {
        self.out.push(Record { value: Emitted::Main(value), time: self.timestamp, watermark: self.watermark });
    }
    /// Emits a record to the side output `tag`, at the current event time.
    pub fn output<S: Serialize>(&mut self, tag: &OutputTag<S>, value: S) {
        let bytes = bincode::serialize(&value).expect("side-output records serialize");
        let value = Emitted::Side { tag: tag.name.to_owned(), bytes };
        self.out.push(Record { value, time: self.timestamp, watermark: self.watermark });
    }
    /// Fires [`KeyedProcessFunction::on_timer`] for this key once event time passes `time`
    /// (right after the current record if `time` is not after it; in a timer, a millisecond
    /// after the current one).
    pub fn register_event_time_timer(&mut self, time: EventTime) {
        let time = self.timer_time(time);
        self.set_timer(TimeDomain::EventTime, time, true);
    }
    /// Cancels an event-time timer of this key (registered for `time` now, or earlier with the
    /// same effective time).
    pub fn delete_event_time_timer(&mut self, time: EventTime) {
        let time = self.timer_time(time);
        self.set_timer(TimeDomain::EventTime, time, false);
    }
    /// Fires [`KeyedProcessFunction::on_timer`] for this key once the node's clock reaches
    /// `time` (milliseconds since the Unix epoch).
    pub fn register_processing_time_timer(&mut self, time: EventTime) {
        self.set_timer(TimeDomain::ProcessingTime, time, true);
    }
    /// Cancels a processing-time timer of this key.
    pub fn delete_processing_time_timer(&mut self, time: EventTime) {
        self.set_timer(TimeDomain::ProcessingTime, time, false);
    }
    /// Registers (`on`) or deletes this key's timer at `time` in `domain`.
    fn set_timer(&mut self, domain: TimeDomain, time: EventTime, on: bool) {
        if let Some(replicated) = &mut self.replicated_timers {
            let timers = replicated.of(domain);
            if on {
                timers.insert(time);
            } else {
                timers.remove(&time);
            }
            return;
        }
        let (queue, key) = (timer_queue(domain), self.key);
        if on {
            self.state.backend().register_timer(queue, key, time);
        } else {
            self.state.backend().delete_timer(queue, key, time);
        }
    }
    /// The node's clock, in milliseconds since the Unix epoch (simulated under the simulator).
    pub fn current_processing_time(&self) -> EventTime {
        self.processing_time
    }
}

/// Per-key logic over one keyed stream (Flink's `KeyedProcessFunction`).
pub trait KeyedProcessFunction<K: Key, I, O>: 'static {
    /// Handles one record of the current key.
    fn process_element(&mut self, value: I, ctx: &mut Context<'_, K, O>);
    /// A timer of the current key fired at `timestamp`.
    fn on_timer(&mut self, timestamp: EventTime, domain: TimeDomain, ctx: &mut Context<'_, K, O>) {
        let _ = (timestamp, domain, ctx);
    }
    /// State the function keeps for every key at once and replicates in every slot (broadcast
    /// state), encoded for a checkpoint; `None` if it keeps none.
    fn snapshot_replicated(&self) -> Option<Vec<u8>> {
        None
    }
    /// Loads replicated state from a checkpoint.
    fn restore_replicated(&mut self, bytes: &[u8]) -> Result<(), String> {
        let _ = bytes;
        Err("this function keeps no replicated state".into())
    }
}

/// The key of a record of a keyed stream connected with a broadcast stream: a key, or the
/// broadcast side (which comes first at equal event times).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BroadcastKey<K> {
    /// A broadcast record: applies to every key.
    Broadcast,
    /// A keyed record.
    Key(K),
}

/// `Key(k)` hashes exactly as `k`, so that a key's state lands in the key group — and the
/// slot — its records are routed to.
impl<K: std::hash::Hash> std::hash::Hash for BroadcastKey<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            BroadcastKey::Key(key) => key.hash(state),
            BroadcastKey::Broadcast => state.write_u64(0xB40A_DCA5_7B40_ADCA),
        }
    }
}

/// Logic over a keyed stream and a broadcast stream (Flink's `KeyedBroadcastProcessFunction`):
/// broadcast records update state that every slot holds alike (`State`: rules, thresholds,
/// reference data), keyed records read it. Both sides arrive in event-time order, broadcast
/// first at equal times, so every slot applies the same updates before the same records.
pub trait KeyedBroadcastProcessFunction<K: Key, T, B, O>: 'static {
    /// The broadcast state.
    type State: crate::record::Data + Default;
    /// Handles a keyed record, reading the broadcast state.
    fn process_element(&mut self, value: T, broadcast: &Self::State, ctx: &mut Context<'_, BroadcastKey<K>, O>);
    /// Handles a broadcast record (in every slot), updating the broadcast state.
    fn process_broadcast_element(
        &mut self,
        value: B,
        broadcast: &mut Self::State,
        ctx: &mut Context<'_, BroadcastKey<K>, O>,
    );
    /// A timer of the current key fired.
    fn on_timer(&mut self, timestamp: EventTime, domain: TimeDomain, ctx: &mut Context<'_, BroadcastKey<K>, O>) {
        let _ = (timestamp, domain, ctx);
    }
}

/// A broadcast process function seen as a process function over [`Either`], holding the
/// replicated state. (Keyed state is for the keyed side: while handling a broadcast record,
/// use the broadcast state.) Every slot handles every broadcast record; what that emits (directly or
/// from a timer of the broadcast side) is kept in slot 0 only, so it appears once.
pub struct Broadcasting<F, S> {
    function: F,
    state: S,
    /// Whether this slot keeps the broadcast side's outputs (slot 0).
    emits_broadcast_outputs: bool,
}

impl<F, S: Default> Broadcasting<F, S> {
    /// `function` with empty broadcast state, in slot `slot`.
    pub fn new(function: F, slot: usize) -> Self {
        Broadcasting { function, state: S::default(), emits_broadcast_outputs: slot == 0 }
    }
}

impl<K, T, B, O, F> KeyedProcessFunction<BroadcastKey<K>, Either<T, B>, O> for Broadcasting<F, F::State>
where
    K: Key,
    F: KeyedBroadcastProcessFunction<K, T, B, O>,
{
    fn process_element(&mut self, value: Either<T, B>, ctx: &mut Context<'_, BroadcastKey<K>, O>) {
        match value {
            Either::Left(record) => self.function.process_element(record, &self.state, ctx),
            Either::Right(update) => {
                let before = ctx.out.len();
                self.function.process_broadcast_element(update, &mut self.state, ctx);
                if !self.emits_broadcast_outputs {
                    ctx.out.truncate(before);
                }
            }
        }
    }
    fn on_timer(&mut self, timestamp: EventTime, domain: TimeDomain, ctx: &mut Context<'_, BroadcastKey<K>, O>) {
        let before = ctx.out.len();
        self.function.on_timer(timestamp, domain, ctx);
        if *ctx.key() == BroadcastKey::Broadcast && !self.emits_broadcast_outputs {
            ctx.out.truncate(before);
        }
    }
    fn snapshot_replicated(&self) -> Option<Vec<u8>> {
        Some(bincode::serialize(&self.state).expect("broadcast state serializes"))
    }
    fn restore_replicated(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.state = crate::keyed::decode_state(bytes)?;
        Ok(())
    }
}

/// Per-key logic over two keyed streams with the same key type (Flink's
/// `KeyedCoProcessFunction`): both sides share the key's state and timers.
pub trait KeyedCoProcessFunction<K: Key, A, B, O>: 'static {
    /// Handles a record of the first stream.
    fn process_element1(&mut self, value: A, ctx: &mut Context<'_, K, O>);
    /// Handles a record of the second stream.
    fn process_element2(&mut self, value: B, ctx: &mut Context<'_, K, O>);
    /// A timer of the current key fired.
    fn on_timer(&mut self, timestamp: EventTime, domain: TimeDomain, ctx: &mut Context<'_, K, O>) {
        let _ = (timestamp, domain, ctx);
    }
}

/// A record of either of two connected streams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Either<A, B> {
    /// From the first stream.
    Left(A),
    /// From the second stream.
    Right(B),
}

/// A co-process function seen as a process function over [`Either`].
pub struct CoProcess<F>(pub F);

impl<K: Key, A, B, O, F: KeyedCoProcessFunction<K, A, B, O>> KeyedProcessFunction<K, Either<A, B>, O> for CoProcess<F> {
    fn process_element(&mut self, value: Either<A, B>, ctx: &mut Context<'_, K, O>) {
        match value {
            Either::Left(a) => self.0.process_element1(a, ctx),
            Either::Right(b) => self.0.process_element2(b, ctx),
        }
    }
    fn on_timer(&mut self, timestamp: EventTime, domain: TimeDomain, ctx: &mut Context<'_, K, O>) {
        self.0.on_timer(timestamp, domain, ctx)
    }
}

/// The keyed store's queues of a process function's timers.
const EVENT_TIMERS: TimerQueue = TimerQueue::new("event");
const PROCESSING_TIMERS: TimerQueue = TimerQueue::new("processing");

fn timer_queue(domain: TimeDomain) -> &'static TimerQueue {
    match domain {
        TimeDomain::EventTime => &EVENT_TIMERS,
        TimeDomain::ProcessingTime => &PROCESSING_TIMERS,
    }
}

/// The replicated key's timers (see [`ProcessOperator::with_replicated_key`]), by time.
#[derive(Clone, Default)]
struct ReplicatedTimers {
    event: BTreeSet<EventTime>,
    processing: BTreeSet<EventTime>,
}

impl ReplicatedTimers {
    fn of(&mut self, domain: TimeDomain) -> &mut BTreeSet<EventTime> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }
}

/// What one key group of a process operator's snapshot holds.
#[derive(Serialize, Deserialize)]
struct GroupState<K, R> {
    /// The keyed store's part, timers included.
    state: Option<Vec<u8>>,
    /// Timers, in snapshots taken before timers moved into the keyed store (restored into it;
    /// empty in later snapshots).
    event_timers: Vec<(EventTime, K)>,
    processing_timers: Vec<(EventTime, K)>,
    /// Records waiting for event time to pass them.
    waiting: Vec<R>,
}

/// A process operator's state copied for a snapshot, to encode off the slot's thread (its
/// keyed store's image apart: see [`StatefulLogic::snapshot`] below).
struct OperatorCopy<K, I> {
    replicated_timers: ReplicatedTimers,
    waiting: Vec<(K, Record<I>)>,
    replicated_key: Option<K>,
    function_state: Option<Vec<u8>>,
}

impl<K: Key, I: Data> OperatorCopy<K, I> {
    /// The operator's key groups with the store's encoded groups `store` (and its replicated
    /// state).
    fn encode(&self, store: KeyGroupStates) -> Result<KeyGroupStates, String> {
        let mut groups: BTreeMap<usize, GroupState<&K, &Record<I>>> = BTreeMap::new();
        let empty =
            || GroupState { state: None, event_timers: Vec::new(), processing_timers: Vec::new(), waiting: Vec::new() };
        for (group, bytes) in store {
            groups.entry(group).or_insert_with(empty).state = Some(bytes);
        }
        let replicated = self.replicated_key.as_ref();
        let mut waiting: Vec<&(K, Record<I>)> =
            self.waiting.iter().filter(|(key, _)| Some(key) != replicated).collect();
        sort_records(&mut waiting);
        for (key, record) in waiting {
            groups.entry(key_group_of(key)).or_insert_with(empty).waiting.push(record);
        }
        let mut states: KeyGroupStates = groups
            .into_iter()
            .map(|(group, part)| (group, bincode::serialize(&part).expect("state serializes")))
            .collect();
        if let Some(function_state) = &self.function_state {
            // The function's replicated state, with the replicated key's waiting records and
            // timers: what this slot alone holds of the broadcast side, restored to it alone.
            let mut waiting: Vec<&(K, Record<I>)> =
                self.waiting.iter().filter(|(key, _)| Some(key) == replicated).collect();
            sort_records(&mut waiting);
            let waiting: Vec<&Record<I>> = waiting.into_iter().map(|(_, record)| record).collect();
            let times = |set: &BTreeSet<EventTime>| -> Vec<EventTime> { set.iter().copied().collect() };
            let timers = &self.replicated_timers;
            let blob = (function_state, waiting, times(&timers.event), times(&timers.processing));
            states.push((REPLICATED_GROUP, bincode::serialize(&blob).expect("replicated state serializes")));
        }
        Ok(states)
    }
}

/// The logic behind [`crate::api::KeyedStream::process`] (public for benchmarks).
pub struct ProcessOperator<K: Key, I, O, F, KF> {
    function: F,
    key: KF,
    store: Store<K>,
    /// The replicated key's timers (every other key's are in `store`).
    replicated_timers: ReplicatedTimers,
    /// Records waiting for event time to pass them, with their keys.
    waiting: Vec<(K, Record<I>)>,
    /// Event time has passed this bound.
    passed: EventTime,
    /// A key whose records and timers every slot holds alike (the broadcast side): snapshotted
    /// with the replicated state, restored to the same slot.
    replicated_key: Option<K>,
    /// The node's clock in epoch milliseconds.
    clock: Box<dyn Fn() -> EventTime>,
    _types: std::marker::PhantomData<fn(I) -> O>,
}

impl<K: Key, I, O, F, KF> ProcessOperator<K, I, O, F, KF> {
    /// Records and timers of `key` are replicated (see [`ProcessOperator::replicated_key`]).
    pub fn with_replicated_key(mut self, key: K) -> Self {
        self.replicated_key = Some(key);
        self
    }

    /// Keeps the keyed state in `store` (the job's backend; memory by default).
    pub fn with_store(mut self, store: Store<K>) -> Self {
        self.store = store;
        self
    }

    /// `function` per key (`key`), processing time from `clock`.
    pub fn new(function: F, key: KF, clock: Box<dyn Fn() -> EventTime>) -> Self {
        ProcessOperator {
            function,
            key,
            store: Store::default(),
            replicated_timers: ReplicatedTimers::default(),
            waiting: Vec::new(),
            passed: EventTime::MIN,
            replicated_key: None,
            clock,
            _types: std::marker::PhantomData,
        }
    }
}

impl<K, I, O, F, KF> ProcessOperator<K, I, O, F, KF>
where
    K: Key,
    I: Data,
    O: Data,
    F: KeyedProcessFunction<K, I, O>,
{
    fn fire(&mut self, time: EventTime, key: K, domain: TimeDomain, out: &mut Vec<Record<Emitted<O>>>) {
        let processing_time = (self.clock)();
        // A processing-time timer's outputs are stamped at the event time already passed.
        let timestamp = if domain == TimeDomain::EventTime { time } else { self.passed };
        let replicated = self.replicated_key.as_ref() == Some(&key);
        let mut ctx = Context {
            state: KeyedState::new(&mut self.store, &key, timestamp),
            key: &key,
            timestamp,
            watermark: EventTime::MIN,
            replicated_timers: replicated.then_some(&mut self.replicated_timers),
            out,
            processing_time,
            in_timer: true,
        };
        self.function.on_timer(time, domain, &mut ctx);
    }

    fn process(&mut self, key: K, record: Record<I>, processing_time: EventTime, out: &mut Vec<Record<Emitted<O>>>) {
        let replicated = self.replicated_key.as_ref() == Some(&key);
        let mut ctx = Context {
            state: KeyedState::new(&mut self.store, &key, record.time),
            key: &key,
            timestamp: record.time,
            watermark: record.watermark,
            replicated_timers: replicated.then_some(&mut self.replicated_timers),
            out,
            processing_time,
            in_timer: false,
        };
        self.function.process_element(record.value, &mut ctx);
    }

    /// Removes the first timer of `domain` and returns it, `(time, key)`, if its time is before
    /// `before`: the replicated key's (the broadcast side, first at equal times) or the store's.
    fn pop_timer(&mut self, domain: TimeDomain, before: EventTime) -> Option<(EventTime, K)> {
        let queue = timer_queue(domain);
        let replicated = self.replicated_timers.of(domain);
        if let Some(time) = replicated.first().copied().filter(|time| *time < before) {
            if self.store.next_timer(queue).is_none_or(|stored| time <= stored) {
                replicated.remove(&time);
                let key = self.replicated_key.clone().expect("replicated timers belong to the replicated key");
                return Some((time, key));
            }
        }
        self.store.pop_timer(queue, before)
    }
}

/// Sorts records into the order they are handed over in: event time, key, then — only within
/// the rare runs of equal time and key — the record's encoding (equal encodings are equal
/// records, whose order cannot matter; `Either::Left` encodes first, so a connected stream's
/// first input goes first at equal times).
fn sort_records<K: Ord, I: Serialize, E: std::borrow::Borrow<(K, Record<I>)>>(records: &mut [E]) {
    fn parts<'a, K, I: 'a, E: std::borrow::Borrow<(K, Record<I>)>>(e: &'a E) -> (EventTime, &'a K) {
        let (key, record) = e.borrow();
        (record.time, key)
    }
    records.sort_unstable_by(|a, b| parts(a).cmp(&parts(b)));
    let mut start = 0;
    while start < records.len() {
        let mut end = start + 1;
        while end < records.len() && parts(&records[end]) == parts(&records[start]) {
            end += 1;
        }
        if end - start > 1 {
            records[start..end]
                .sort_by_cached_key(|e| bincode::serialize(&e.borrow().1.value).expect("records serialize"));
        }
        start = end;
    }
}

impl<K, I, O, F, KF> StatefulLogic for ProcessOperator<K, I, O, F, KF>
where
    K: Key,
    I: Data,
    O: Data,
    F: KeyedProcessFunction<K, I, O>,
    KF: KeySelector<I, K>,
{
    type In = I;
    type Out = Emitted<O>;

    fn apply(&mut self, records: &mut Vec<Record<I>>, _out: &mut Vec<Record<Emitted<O>>>, late: &mut Vec<Record<I>>) {
        for record in records.drain(..) {
            if record.time < record.watermark {
                late.push(record);
            } else {
                debug_assert!(record.time >= self.passed, "an in-order record arrived after event time passed it");
                self.waiting.push((self.key.key(&record.value), record));
            }
        }
    }

    fn advance(&mut self, bound: EventTime, out: &mut Vec<Record<Emitted<O>>>) {
        let processing_time = (self.clock)();
        let (mut ready, waiting): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|(_, r)| r.time < bound);
        self.waiting = waiting;
        sort_records(&mut ready);
        let mut ready = ready.into_iter().peekable();
        // Records and timers due before `bound`, in event-time order (records first on ties);
        // timers set meanwhile (also at the current time) join in.
        loop {
            // Every ready record is before `bound`.
            let before = ready.peek().map_or(bound, |(_, record)| record.time);
            if let Some((time, key)) = self.pop_timer(TimeDomain::EventTime, before) {
                self.fire(time, key, TimeDomain::EventTime, out);
            } else if let Some((key, record)) = ready.next() {
                self.process(key, record, processing_time, out);
            } else {
                break;
            }
        }
        self.passed = bound;
        self.store.expire(bound);
    }

    fn poll(&mut self, out: &mut Vec<Record<Emitted<O>>>) {
        if self.passed == EventTime::MIN {
            // Restored, and event time has passed nothing in this run yet: processing-time
            // timers wait for it, since their outputs are stamped at the bound passed and the
            // keyed state they read was expired through the checkpoint's (a timer set in this
            // run comes after a bound was passed).
            return;
        }
        let now = (self.clock)();
        while let Some((time, key)) = self.pop_timer(TimeDomain::ProcessingTime, now.saturating_add(1)) {
            self.fire(time, key, TimeDomain::ProcessingTime, out);
        }
    }

    fn snapshot(&self) -> StateImage {
        let store = self.store.snapshot();
        let copy = OperatorCopy {
            replicated_timers: self.replicated_timers.clone(),
            waiting: self.waiting.clone(),
            replicated_key: self.replicated_key.clone(),
            // Broadcast state is small and the function's own: encoded here.
            function_state: self.function.snapshot_replicated(),
        };
        match store.into_files() {
            // The store's state, timers included, is in files (RocksDB): a checkpoint uploads
            // them, and encodes beside them only the waiting records; a savepoint encodes it all.
            Ok((files, store)) => StateImage::with_files(files, move |form| copy.encode(store(form)?)),
            Err(store) => StateImage::fallible(move || copy.encode(store.try_encode()?)),
        }
    }

    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        let (replicated, keyed): (KeyGroupStates, KeyGroupStates) =
            states.into_iter().partition(|(group, _)| *group == REPLICATED_GROUP);
        if let Some((_, bytes)) = replicated.first() {
            type Blob<I> = (Vec<u8>, Vec<Record<I>>, Vec<EventTime>, Vec<EventTime>);
            let (function_state, waiting, event, processing): Blob<I> = crate::keyed::decode_state(bytes)?;
            self.function.restore_replicated(&function_state)?;
            let key = self.replicated_key.clone().ok_or("replicated state for an operator without a replicated key")?;
            self.waiting.extend(waiting.into_iter().map(|record| (key.clone(), record)));
            self.replicated_timers.event.extend(event);
            self.replicated_timers.processing.extend(processing);
        }
        self.restore_keyed(keyed)
    }
}

/// The "key group" of state every slot holds alike (broadcast state): a restore gives every
/// slot one copy of it, whatever the parallelism.
pub const REPLICATED_GROUP: usize = weir_core::keygroup::MAX_PARALLELISM;

impl<K, I, O, F, KF> ProcessOperator<K, I, O, F, KF>
where
    K: Key,
    I: Data,
    O: Data,
    F: KeyedProcessFunction<K, I, O>,
    KF: KeySelector<I, K>,
{
    fn restore_keyed(&mut self, states: KeyGroupStates) -> Result<(), String> {
        let mut store_parts = Vec::new();
        let mut timers = Vec::new();
        for (group, bytes) in states {
            let part: GroupState<K, Record<I>> =
                crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {e}"))?;
            self.waiting.extend(part.waiting.into_iter().map(|record| (self.key.key(&record.value), record)));
            if let Some(state) = part.state {
                store_parts.push((group, state));
            }
            timers.extend(part.event_timers.into_iter().map(|timer| (TimeDomain::EventTime, timer)));
            timers.extend(part.processing_timers.into_iter().map(|timer| (TimeDomain::ProcessingTime, timer)));
        }
        self.store.restore(store_parts)?;
        for (domain, (time, key)) in timers {
            self.store.register_timer(timer_queue(domain), &key, time);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long after a record its timer fires: after every record fed.
    const DELAY: EventTime = 1_000_000;

    /// Registers a timer `DELAY` after each record, and emits its key when it fires.
    struct RemindLater;

    impl KeyedProcessFunction<u64, u64, u64> for RemindLater {
        fn process_element(&mut self, _value: u64, ctx: &mut Context<'_, u64, u64>) {
            ctx.register_event_time_timer(ctx.timestamp() + DELAY);
        }
        fn on_timer(&mut self, _timestamp: EventTime, _domain: TimeDomain, ctx: &mut Context<'_, u64, u64>) {
            let key = *ctx.key();
            ctx.collect(key);
        }
    }

    type Operator = ProcessOperator<u64, u64, u64, RemindLater, fn(&u64) -> u64>;

    fn operator(store: Store<u64>) -> Operator {
        let key: fn(&u64) -> u64 = |value| *value;
        ProcessOperator::new(RemindLater, key, Box::new(|| 0)).with_store(store)
    }

    /// Feeds keys `0..keys` at event times `0..keys`, and passes event time over them.
    fn fed(mut operator: Operator, keys: u64) -> Operator {
        let mut records: Vec<Record<u64>> =
            (0..keys).map(|key| Record { value: key, time: key as EventTime, watermark: EventTime::MIN }).collect();
        let (mut out, mut late) = (Vec::new(), Vec::new());
        operator.apply(&mut records, &mut out, &mut late);
        operator.advance(keys as EventTime, &mut out);
        assert!(out.is_empty() && late.is_empty(), "no timer is due yet");
        operator
    }

    /// What fires once event time passes `bound`: `(time, key)`, in order.
    fn fired(operator: &mut Operator, bound: EventTime) -> Vec<(EventTime, u64)> {
        let mut out = Vec::new();
        operator.advance(bound, &mut out);
        out.into_iter()
            .map(|record| match record.value {
                Emitted::Main(key) => (record.time, key),
                Emitted::Side { .. } => panic!("no side output"),
            })
            .collect()
    }

    #[test]
    fn timers_in_the_memory_backend_fire_once_in_order_and_restore() {
        let keys = 500u64;
        let mut live = fed(operator(Store::default()), keys);
        let mut restored = operator(Store::default());
        restored.restore(live.snapshot().encode()).unwrap();
        let expected: Vec<(EventTime, u64)> = (0..keys).map(|key| (key as EventTime + DELAY, key)).collect();
        for operator in [&mut live, &mut restored] {
            assert_eq!(fired(operator, DELAY + keys as EventTime / 2), expected[..keys as usize / 2]);
            assert_eq!(fired(operator, EventTime::MAX), expected[keys as usize / 2..]);
            assert!(fired(operator, EventTime::MAX).is_empty(), "each timer fires once");
        }
    }

    #[cfg(feature = "rocksdb")]
    fn reopened_from(files: &crate::stateful::StateFiles, dir: &std::path::Path) -> Store<u64> {
        Store::RocksDb(crate::state::rocksdb::reopened_from(files, dir))
    }

    /// Counts each key's records, and reports the count when the node's clock passes a minute
    /// after the record.
    #[cfg(feature = "rocksdb")]
    struct CountThenReport;

    #[cfg(feature = "rocksdb")]
    impl KeyedProcessFunction<u64, u64, u64> for CountThenReport {
        fn process_element(&mut self, _value: u64, ctx: &mut Context<'_, u64, u64>) {
            let count = crate::state::ValueState::<u64>::new("count");
            let seen = count.get(ctx.state()).unwrap_or(0);
            count.set(ctx.state(), seen + 1);
            let at = ctx.current_processing_time() + 60_000;
            ctx.register_processing_time_timer(at);
        }
        fn on_timer(&mut self, _timestamp: EventTime, _domain: TimeDomain, ctx: &mut Context<'_, u64, u64>) {
            let count = crate::state::ValueState::<u64>::new("count").get(ctx.state()).unwrap_or(0);
            ctx.collect(count);
        }
    }

    /// After a restore from RocksDB's files, whose state was expired through the checkpoint's
    /// bound, processing-time timers wait for event time to pass a bound in the new run: they
    /// read state at the bound passed, and before that there is none.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn restored_processing_time_timers_wait_for_event_time_to_pass_a_bound() {
        use std::sync::atomic::{AtomicI64, Ordering};
        static CLOCK: AtomicI64 = AtomicI64::new(0);
        let key: fn(&u64) -> u64 = |value| *value;
        let clock = || Box::new(|| CLOCK.load(Ordering::Relaxed)) as Box<dyn Fn() -> EventTime>;
        let root = tempfile::tempdir().unwrap();
        let store = Store::RocksDb(crate::state::rocksdb::RocksDbBackend::open(&root.path().join("live")).unwrap());
        let mut live = ProcessOperator::new(CountThenReport, key, clock()).with_store(store);
        let mut records: Vec<Record<u64>> =
            (0..10u64).map(|i| Record { value: i % 3, time: i as EventTime, watermark: EventTime::MIN }).collect();
        let (mut out, mut late) = (Vec::new(), Vec::new());
        live.apply(&mut records, &mut out, &mut late);
        live.advance(100, &mut out);
        let (files, _) = live.snapshot().into_files().map_err(|_| "files").unwrap();
        let store = reopened_from(&files, &root.path().join("from-files"));
        let mut restored = ProcessOperator::new(CountThenReport, key, clock()).with_store(store);
        restored.restore(Vec::new()).unwrap();
        CLOCK.store(120_000, Ordering::Relaxed);
        restored.poll(&mut out);
        assert!(out.is_empty(), "no bound passed in this run yet");
        restored.advance(100, &mut out);
        restored.poll(&mut out);
        let mut counts: Vec<u64> = out
            .into_iter()
            .map(|record| match record.value {
                Emitted::Main(count) => count,
                Emitted::Side { .. } => panic!("no side output"),
            })
            .collect();
        counts.sort();
        assert_eq!(counts, vec![3, 3, 4], "each key's count, once");
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn timers_are_keyed_state_in_the_backends_files_on_rocksdb() {
        let keys = 2_000u64;
        let root = tempfile::tempdir().unwrap();
        let store = Store::RocksDb(crate::state::rocksdb::RocksDbBackend::open(&root.path().join("live")).unwrap());
        let mut live = fed(operator(store), keys);
        let (files, encode) = live.snapshot().into_files().map_err(|_| "files").unwrap();
        // Timers are as many as keys: a checkpoint must carry them in the instance's files,
        // not encode them beside the files (in memory, on every checkpoint).
        assert_eq!(encode(crate::stateful::Form::BesideFiles).unwrap(), Vec::new(), "nothing beside the files");
        let canonical = encode(crate::stateful::Form::Canonical).unwrap();

        // Restored from the files (an incremental checkpoint) and from the canonical encoding
        // on the memory backend (a savepoint), the timers fire as they do in the live one.
        let restored = reopened_from(&files, &root.path().join("from-files"));
        drop(files);
        let mut from_files = operator(restored);
        from_files.restore(Vec::new()).unwrap();
        let mut in_memory = operator(Store::default());
        in_memory.restore(canonical).unwrap();

        let expected: Vec<(EventTime, u64)> = (0..keys).map(|key| (key as EventTime + DELAY, key)).collect();
        for operator in [&mut live, &mut from_files, &mut in_memory] {
            let mut got = fired(operator, DELAY + keys as EventTime);
            got.sort();
            assert_eq!(got, expected);
            assert!(fired(operator, EventTime::MAX).is_empty(), "each timer fires once");
        }
    }
}
