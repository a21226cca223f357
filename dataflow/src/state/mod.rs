//! Keyed state: the [`StateBackend`] trait every stateful operator keeps its per-key state in,
//! and its backends — [`memory`] (the default, and the simulator's) and, behind the `rocksdb`
//! feature, `rocksdb` (state on local disk, larger than memory).
//!
//! State is declared by name and type ([`ValueState`], [`ListState`], [`MapState`],
//! [`ReducingState`], [`AggregatingState`], as in Flink) and always accessed for the key of
//! the record or timer being processed. A backend stores each state as a table from key to
//! value and snapshots it by key group, so that a restore at another parallelism hands whole
//! groups to the slots that own them. Every backend passes the same conformance suite
//! (`dataflow/tests/state_backend.rs`).
//!
//! Beside its states a backend keeps *timer queues* ([`TimerQueue`]): the timers of process
//! functions are as many as their keys, so they belong with the keyed state — on disk with
//! RocksDB, in its checkpoints' files — and not in the operator's memory.
//!
//! **One snapshot format for every backend.** A snapshot holds, per key group, each state's
//! entries in the *canonical* encoding — `bincode` of `Vec<(K, Stamped<S>)>` sorted by key,
//! where `Stamped<S>` is the stored value (`V`, `Vec<V>` or `BTreeMap<UK, UV>`) followed by
//! the event time it was last written at — and the group's states sorted by name
//! ([`assemble_groups`]). Equal states therefore snapshot to equal bytes whatever the backend,
//! and a checkpoint or savepoint taken on one backend restores on the other.
//!
//! **Time to live** is measured in event time, not processing time as in Flink: a value
//! written at event time `t` with a TTL of `d` is gone for any access at event time `>= t + d`
//! (and dropped from snapshots once event time passes it). Event time makes expiry — and so
//! the job's output — the same in every run, with or without failures.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::path::Path;

use weir_core::job::StateBackendKind;
use weir_core::time::EventTime;

use crate::record::Data;
use crate::stateful::{KeyGroupStates, StateImage};

pub mod memory;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;

// RocksDB does its own file I/O, which the simulator cannot see or crash: never in a simulation.
#[cfg(all(madsim, feature = "rocksdb"))]
compile_error!("the rocksdb feature cannot be built under --cfg madsim: the simulator runs on the memory backend");

pub use memory::MemoryBackend;

/// What a key must be: data that hashes deterministically and orders totally, and whose equal
/// values encode equally (a backend on disk finds a key by its encoding).
pub trait Key: Data + Hash + Eq + Ord {}
impl<T: Data + Hash + Eq + Ord> Key for T {}

/// Where a state access happens: the key and the event time of the access.
#[derive(Debug)]
pub struct Access<'a, K> {
    /// The current key.
    pub key: &'a K,
    /// Event time of the record or timer being processed.
    pub now: EventTime,
}

/// A keyed state store. One instance per stateful operator per slot.
pub trait StateBackend<K: Key>: 'static {
    /// The value of `state` for the key, if set and not expired.
    fn value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Option<V>;
    /// Sets the value of `state` for the key.
    fn set_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V);
    /// The list of `state` for the key (empty if none).
    fn list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<V>;
    /// Appends to the list of `state` for the key.
    fn append<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V);
    /// Replaces the list of `state` for the key.
    fn set_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, values: Vec<V>);
    /// The entry `user_key` of map `state` for the key.
    fn map_get<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) -> Option<UV>;
    /// Sets entry `user_key` of map `state` for the key.
    fn map_put<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: UK, value: UV);
    /// Removes entry `user_key` of map `state` for the key.
    fn map_remove<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK);
    /// The entries of map `state` for the key, ordered by user key.
    fn map_entries<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<(UK, UV)>;
    /// Clears value `state` for the key.
    fn clear_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>);
    /// Clears list `state` for the key.
    fn clear_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>);
    /// Clears map `state` for the key.
    fn clear_map<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>);
    /// Registers timer `time` of the key in `queue` (once: registering it again changes
    /// nothing).
    fn register_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime);
    /// Deletes timer `time` of the key from `queue`, if it is registered.
    fn delete_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime);
    /// The time of `queue`'s first timer, if it has any.
    fn next_timer(&mut self, queue: &TimerQueue) -> Option<EventTime>;
    /// Removes `queue`'s first timer and returns it, `(time, key)`, if its time is before
    /// `before`.
    fn pop_timer(&mut self, queue: &TimerQueue, before: EventTime) -> Option<(EventTime, K)>;
    /// Event time has passed `now`: every value whose time to live ended at or before it is
    /// gone (dropped now, or — on disk — skipped by reads and snapshots and removed later).
    /// Later accesses come at or after `now`.
    fn expire(&mut self, now: EventTime);
    /// The state, by key group, in the canonical encoding (equal states encode equally,
    /// whatever the backend): a copy taken now, encoded off the slot's thread.
    fn snapshot(&self) -> StateImage;
    /// Loads snapshotted key groups.
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String>;
}

/// A queue of timers, `(time, key)` pairs each registered at most once, that a backend keeps
/// with its keyed state and snapshots by the key's group (Flink keeps its timer queues in the
/// state backend too): a job with a timer per key keeps them on disk with RocksDB, not in
/// memory, and its checkpoints upload them with the state's files.
///
/// Timers come out in order of time; at equal times, in an order of keys the backend chooses
/// (the keys' order in memory, their key groups' and encodings' order on RocksDB — as records
/// of different keys at one event time come in no order a job may rely on). In a snapshot, a
/// queue is a state of its own ([`timer_state_name`]) whose canonical entries, per key group,
/// are `bincode` of `Vec<(time, key)>` sorted by time, then key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerQueue {
    name: &'static str,
}

impl TimerQueue {
    /// A queue called `name` (unique within its operator; non-empty, without NUL).
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty(), "a timer queue's name must be non-empty");
        let mut index = 0;
        while index < bytes.len() {
            assert!(bytes[index] != 0, "a timer queue's name must not contain NUL");
            index += 1;
        }
        TimerQueue { name }
    }
    /// The queue's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What a timer queue's name starts with among a snapshot's states: a NUL, which no state's
/// name has.
const TIMER_STATE_PREFIX: &str = "\0timers/";

/// The name under which timer queue `queue` is snapshotted.
pub(crate) fn timer_state_name(queue: &str) -> String {
    format!("{TIMER_STATE_PREFIX}{queue}")
}

/// The timer queue a snapshot's state `name` is, if it is one.
pub(crate) fn timer_queue_of(name: &str) -> Option<&str> {
    name.strip_prefix(TIMER_STATE_PREFIX)
}

/// Decodes a timer queue's canonical entries of key group `group` (see [`TimerQueue`]).
pub(crate) fn decode_timers<K: Key>(queue: &str, group: usize, bytes: &[u8]) -> Result<Vec<(EventTime, K)>, String> {
    let timers: Vec<(EventTime, K)> = crate::keyed::decode_state(bytes)
        .map_err(|e| format!("timer queue {queue}: key group {group}: {e} (a timer's key type changed?)"))?;
    if let Some((_, key)) = timers.iter().find(|(_, key)| crate::keyed::key_group_of(key) != group) {
        return Err(format!(
            "timer queue {queue}: a timer of key group {} was restored in key group {group}",
            crate::keyed::key_group_of(key)
        ));
    }
    Ok(timers)
}

/// The name of a declared state, with its time to live. Names must be unique per operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateName {
    name: &'static str,
    ttl_ms: Option<i64>,
}

impl StateName {
    fn new(name: &'static str) -> Self {
        assert!(
            !name.is_empty() && !name.contains('\0'),
            "a state's name must be non-empty text without NUL: {name:?}"
        );
        StateName { name, ttl_ms: None }
    }
    /// The state's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

macro_rules! state_handle {
    ($(#[$doc:meta])* $name:ident < $($param:ident),* >) => {
        $(#[$doc])*
        pub struct $name<$($param),*> {
            name: StateName,
            _types: std::marker::PhantomData<fn() -> ($($param,)*)>,
        }

        impl<$($param),*> $name<$($param),*> {
            /// A state called `name` (unique within its operator).
            pub fn new(name: &'static str) -> Self {
                $name { name: StateName::new(name), _types: std::marker::PhantomData }
            }
            /// Values expire `ttl_ms` of event time after they were last written.
            pub fn with_ttl(mut self, ttl_ms: i64) -> Self {
                assert!(ttl_ms > 0, "a time to live must be positive");
                self.name.ttl_ms = Some(ttl_ms);
                self
            }
            /// The state's name.
            pub fn state_name(&self) -> &StateName {
                &self.name
            }
        }
    };
}

state_handle!(
    /// One value per key (Flink's `ValueState`).
    ValueState<V>
);
state_handle!(
    /// A list per key (Flink's `ListState`).
    ListState<V>
);
state_handle!(
    /// A sorted map per key (Flink's `MapState`).
    MapState<UK, UV>
);

impl<V: Data> ValueState<V> {
    /// The value for the current key.
    pub fn get<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) -> Option<V> {
        state.with(|backend, at| backend.value(&self.name, at))
    }
    /// Sets the value for the current key.
    pub fn set<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, value: V) {
        state.with(|backend, at| backend.set_value(&self.name, at, value))
    }
    /// Clears the value for the current key.
    pub fn clear<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) {
        state.with(|backend, at| backend.clear_value::<V>(&self.name, at))
    }
}

impl<V: Data> ListState<V> {
    /// The list for the current key.
    pub fn get<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) -> Vec<V> {
        state.with(|backend, at| backend.list(&self.name, at))
    }
    /// Appends to the list for the current key.
    pub fn add<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, value: V) {
        state.with(|backend, at| backend.append(&self.name, at, value))
    }
    /// Replaces the list for the current key.
    pub fn update<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, values: Vec<V>) {
        state.with(|backend, at| backend.set_list(&self.name, at, values))
    }
    /// Clears the list for the current key.
    pub fn clear<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) {
        state.with(|backend, at| backend.clear_list::<V>(&self.name, at))
    }
}

impl<UK: Key, UV: Data> MapState<UK, UV> {
    /// Entry `user_key` for the current key.
    pub fn get<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, user_key: &UK) -> Option<UV> {
        state.with(|backend, at| backend.map_get(&self.name, at, user_key))
    }
    /// Sets entry `user_key` for the current key.
    pub fn put<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, user_key: UK, value: UV) {
        state.with(|backend, at| backend.map_put(&self.name, at, user_key, value))
    }
    /// Removes entry `user_key` for the current key.
    pub fn remove<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, user_key: &UK) {
        state.with(|backend, at| backend.map_remove::<UK, UV>(&self.name, at, user_key))
    }
    /// The entries for the current key, ordered by user key.
    pub fn entries<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) -> Vec<(UK, UV)> {
        state.with(|backend, at| backend.map_entries(&self.name, at))
    }
    /// Clears the map for the current key.
    pub fn clear<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) {
        state.with(|backend, at| backend.clear_map::<UK, UV>(&self.name, at))
    }
}

/// A value per key folded by a reduce function (Flink's `ReducingState`).
pub struct ReducingState<V, F> {
    value: ValueState<V>,
    reduce: F,
}

impl<V: Data, F: Fn(V, V) -> V> ReducingState<V, F> {
    /// A state called `name` folding added values with `reduce`.
    pub fn new(name: &'static str, reduce: F) -> Self {
        ReducingState { value: ValueState::new(name), reduce }
    }
    /// Values expire `ttl_ms` of event time after they were last written.
    pub fn with_ttl(mut self, ttl_ms: i64) -> Self {
        self.value = self.value.with_ttl(ttl_ms);
        self
    }
    /// Folds `value` into the current key's value.
    pub fn add<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, value: V) {
        let folded = match self.value.get(state) {
            Some(current) => (self.reduce)(current, value),
            None => value,
        };
        self.value.set(state, folded)
    }
    /// The current key's folded value.
    pub fn get<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) -> Option<V> {
        self.value.get(state)
    }
    /// Clears the current key's value.
    pub fn clear<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) {
        self.value.clear(state)
    }
}

/// An accumulator per key (Flink's `AggregatingState`).
pub struct AggregatingState<T, F: crate::window::AggregateFunction<T>> {
    value: ValueState<F::Acc>,
    function: F,
}

impl<T, F: crate::window::AggregateFunction<T>> AggregatingState<T, F> {
    /// A state called `name` aggregating added values with `function`.
    pub fn new(name: &'static str, function: F) -> Self {
        AggregatingState { value: ValueState::new(name), function }
    }
    /// Values expire `ttl_ms` of event time after they were last written.
    pub fn with_ttl(mut self, ttl_ms: i64) -> Self {
        self.value = self.value.with_ttl(ttl_ms);
        self
    }
    /// Adds `value` to the current key's accumulator.
    pub fn add<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>, value: &T) {
        let mut accumulator = self.value.get(state).unwrap_or_else(|| self.function.create_accumulator());
        self.function.add(&mut accumulator, value);
        self.value.set(state, accumulator)
    }
    /// The current key's accumulator.
    pub fn get<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) -> Option<F::Acc> {
        self.value.get(state)
    }
    /// Clears the current key's accumulator.
    pub fn clear<K: Key, B: StateBackend<K>>(&self, state: &mut KeyedState<'_, K, B>) {
        self.value.clear(state)
    }
}

/// A backend seen at one key and one moment: what state handles act on.
pub struct KeyedState<'a, K: Key, B> {
    backend: &'a mut B,
    key: &'a K,
    now: EventTime,
}

impl<'a, K: Key, B: StateBackend<K>> KeyedState<'a, K, B> {
    /// The backend at `key`, accessed at event time `now`.
    pub fn new(backend: &'a mut B, key: &'a K, now: EventTime) -> Self {
        KeyedState { backend, key, now }
    }
    /// The backend itself (for the timers of the current key).
    pub(crate) fn backend(&mut self) -> &mut B {
        self.backend
    }
    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }
    fn with<R>(&mut self, act: impl FnOnce(&mut B, &Access<'_, K>) -> R) -> R {
        let at = Access { key: self.key, now: self.now };
        act(self.backend, &at)
    }
}

/// A stored value with the event time it was last written at: the canonical encoding of one
/// key's entry (`bincode`: the value, then the time as eight little-endian bytes).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Stamped<V> {
    pub value: V,
    pub written: EventTime,
}

/// Groups each state's canonical entries by key group into a snapshot: per group, `bincode`
/// of `Vec<(state name, entries)>` sorted by name (the canonical form every backend produces).
pub(crate) fn assemble_groups(groups: BTreeMap<usize, Vec<(String, Vec<u8>)>>) -> KeyGroupStates {
    groups
        .into_iter()
        .map(|(group, mut tables)| {
            tables.sort();
            (group, bincode::serialize(&tables).expect("state serializes"))
        })
        .collect()
}

/// A snapshot's parts: `(key group, state name, canonical entries)`.
pub(crate) fn split_groups(states: KeyGroupStates) -> Result<Vec<(usize, String, Vec<u8>)>, String> {
    let mut parts = Vec::new();
    for (group, bytes) in states {
        let tables: Vec<(String, Vec<u8>)> =
            crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {e}"))?;
        parts.extend(tables.into_iter().map(|(name, entries)| (group, name, entries)));
    }
    Ok(parts)
}

/// A state used with two types is a bug in the job: refused loudly, by name.
fn two_types(name: &str) -> ! {
    panic!("state {name} is used with two different types; give each state its own name")
}

/// The keyed state store of one operator in one slot: the backend its job chose.
pub enum Store<K> {
    /// State in memory ([`MemoryBackend`]).
    Memory(MemoryBackend<K>),
    /// State on local disk ([`rocksdb::RocksDbBackend`]).
    #[cfg(feature = "rocksdb")]
    RocksDb(rocksdb::RocksDbBackend<K>),
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store::Memory(MemoryBackend::default())
    }
}

impl<K> Store<K> {
    /// Whether the store keeps its state in memory (the memory backend).
    pub fn in_memory(&self) -> bool {
        matches!(self, Store::Memory(_))
    }
}

impl<K: Key> Store<K> {
    /// A store of `kind`; a RocksDB store keeps its files in `dir` (which it owns: anything
    /// there is removed first, and the directory when the store is dropped).
    pub fn open(kind: StateBackendKind, dir: &Path) -> Result<Self, String> {
        match kind {
            StateBackendKind::Memory => Ok(Store::default()),
            #[cfg(feature = "rocksdb")]
            StateBackendKind::RocksDb => Ok(Store::RocksDb(rocksdb::RocksDbBackend::open(dir)?)),
            #[cfg(not(feature = "rocksdb"))]
            StateBackendKind::RocksDb => {
                let _ = dir;
                Err(NO_ROCKSDB.into())
            }
        }
    }

    /// A store of `kind` restored from the files of an incremental checkpoint, which the slot
    /// put in [`instance_files_dir`]`(dir)` (only RocksDB keeps state in files).
    pub fn open_restored(kind: StateBackendKind, dir: &Path) -> Result<Self, String> {
        match kind {
            StateBackendKind::Memory => Err("the checkpoint holds RocksDB files for it, but the job keeps its state \
                                             in memory (a checkpoint restores on the backend that took it; a \
                                             savepoint on either)"
                .into()),
            #[cfg(feature = "rocksdb")]
            StateBackendKind::RocksDb => {
                rocksdb::RocksDbBackend::open_restored(dir).map(Store::RocksDb).map_err(|reason| {
                    format!(
                    "{reason}: the checkpoint's RocksDB files do not open; delete the checkpoint's _metadata to fall \
                     back to an older one, or start from a savepoint"
                )
                })
            }
            #[cfg(not(feature = "rocksdb"))]
            StateBackendKind::RocksDb => {
                let _ = dir;
                Err(NO_ROCKSDB.into())
            }
        }
    }
}

/// The memory a slot's RocksDB instances share unless the node sets another budget
/// (`--state-memory-per-slot`; Flink's counterpart is the slot's share of managed memory):
/// half block cache, half write buffers.
pub const DEFAULT_SLOT_MEMORY_BYTES: u64 = 128 << 20;
/// The least budget a slot may be given: four memtables of 4 MiB, and as much block cache.
pub const MIN_SLOT_MEMORY_BYTES: u64 = 32 << 20;

/// Sets the memory (bytes, at least [`MIN_SLOT_MEMORY_BYTES`]) that the state instances opened
/// on this thread — one slot's — share. Called on the slot's thread before its first instance
/// opens; the memory backend has no budget of its own (its state is the process's memory).
pub fn set_slot_memory(bytes: u64) {
    assert!(bytes >= MIN_SLOT_MEMORY_BYTES, "a slot's state memory of {bytes} bytes is below the least");
    #[cfg(feature = "rocksdb")]
    rocksdb::set_slot_memory(bytes);
}

/// The directory of operator `uid`'s state instance in slot directory `slot_dir` (named by the
/// uid made safe for a file name, with a hash of the uid so that two uids made safe alike stay
/// apart).
pub fn instance_dir(slot_dir: &Path, uid: &str) -> std::path::PathBuf {
    let name: String =
        uid.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| weir_core::keygroup::mix64(h ^ u64::from(b)));
    slot_dir.join(format!("{name}-{:08x}", hash as u32))
}

/// Where the instance in `dir` ([`instance_dir`]) keeps its files: the files of a restored
/// instance go there before it opens.
pub fn instance_files_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("db")
}

/// Why this build cannot run a job on RocksDB, and how to get one that can.
pub const NO_ROCKSDB: &str = "this build of weir has no RocksDB state backend: build it with the `rocksdb` \
                              feature (`cargo build --release -p weir-cluster --features rocksdb`, or \
                              `weir-cluster/rocksdb` in your own binary's features; it needs libclang-dev), \
                              or choose --state-backend memory";

/// Whether this build has the RocksDB backend.
pub const HAS_ROCKSDB: bool = cfg!(feature = "rocksdb");

/// Calls `$body` with `$backend` bound to the store's backend.
macro_rules! dispatch {
    ($store:expr, $backend:ident => $body:expr) => {
        match $store {
            Store::Memory($backend) => $body,
            #[cfg(feature = "rocksdb")]
            Store::RocksDb($backend) => $body,
        }
    };
}

impl<K: Key> StateBackend<K> for Store<K> {
    fn value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Option<V> {
        dispatch!(self, backend => backend.value(state, at))
    }
    fn set_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V) {
        dispatch!(self, backend => backend.set_value(state, at, value))
    }
    fn list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<V> {
        dispatch!(self, backend => backend.list(state, at))
    }
    fn append<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V) {
        dispatch!(self, backend => backend.append(state, at, value))
    }
    fn set_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, values: Vec<V>) {
        dispatch!(self, backend => backend.set_list(state, at, values))
    }
    fn map_get<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) -> Option<UV> {
        dispatch!(self, backend => backend.map_get(state, at, user_key))
    }
    fn map_put<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: UK, value: UV) {
        dispatch!(self, backend => backend.map_put(state, at, user_key, value))
    }
    fn map_remove<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) {
        dispatch!(self, backend => backend.map_remove::<UK, UV>(state, at, user_key))
    }
    fn map_entries<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<(UK, UV)> {
        dispatch!(self, backend => backend.map_entries(state, at))
    }
    fn clear_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        dispatch!(self, backend => backend.clear_value::<V>(state, at))
    }
    fn clear_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        dispatch!(self, backend => backend.clear_list::<V>(state, at))
    }
    fn clear_map<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        dispatch!(self, backend => backend.clear_map::<UK, UV>(state, at))
    }
    fn register_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime) {
        dispatch!(self, backend => backend.register_timer(queue, key, time))
    }
    fn delete_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime) {
        dispatch!(self, backend => backend.delete_timer(queue, key, time))
    }
    fn next_timer(&mut self, queue: &TimerQueue) -> Option<EventTime> {
        dispatch!(self, backend => backend.next_timer(queue))
    }
    fn pop_timer(&mut self, queue: &TimerQueue, before: EventTime) -> Option<(EventTime, K)> {
        dispatch!(self, backend => backend.pop_timer(queue, before))
    }
    fn expire(&mut self, now: EventTime) {
        dispatch!(self, backend => backend.expire(now))
    }
    fn snapshot(&self) -> StateImage {
        dispatch!(self, backend => backend.snapshot())
    }
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        dispatch!(self, backend => backend.restore(states))
    }
}
