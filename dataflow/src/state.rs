//! Keyed state: the [`StateBackend`] trait every stateful operator keeps its per-key state in,
//! and the memory backend.
//!
//! State is declared by name and type ([`ValueState`], [`ListState`], [`MapState`],
//! [`ReducingState`], [`AggregatingState`], as in Flink) and always accessed for the key of
//! the record or timer being processed. A backend stores each state as a table from key to
//! value and snapshots it by key group, so that a restore at another parallelism hands whole
//! groups to the slots that own them. The memory backend keeps values as Rust values (no
//! encoding on access); RocksDB comes next, behind the same trait and the same conformance
//! suite (`tests` below, run against every backend).
//!
//! **Time to live** is measured in event time, not processing time as in Flink: a value
//! written at event time `t` with a TTL of `d` is gone for any access at event time `>= t + d`
//! (and dropped from snapshots once event time passes it). Event time makes expiry — and so
//! the job's output — the same in every run, with or without failures.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash};
use std::sync::Arc;

use weir_core::time::EventTime;

use crate::keyed::{key_group_of, KeyHasher};
use crate::record::Data;
use crate::stateful::{KeyGroupStates, StateImage};

/// What a key must be: data that hashes deterministically and orders totally.
pub trait Key: Data + Hash + Eq + Ord {}
impl<T: Data + Hash + Eq + Ord> Key for T {}

type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

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
    /// Clears `state` for the key; `S` is what the state stores per key (`V` for a value,
    /// `Vec<V>` for a list, `BTreeMap<UK, UV>` for a map).
    fn clear<S: Data>(&mut self, state: &StateName, at: &Access<'_, K>);
    /// Drops every value whose time to live ended at or before `now`.
    fn expire(&mut self, now: EventTime);
    /// The state, by key group (sorted: equal states encode equally): a copy, encoded off the
    /// slot's thread.
    fn snapshot(&self) -> StateImage;
    /// Loads snapshotted key groups.
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String>;
}

/// The name of a declared state, with its time to live. Names must be unique per operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateName {
    name: &'static str,
    ttl_ms: Option<i64>,
}

impl StateName {
    fn new(name: &'static str) -> Self {
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
        state.with(|backend, at| backend.clear::<V>(&self.name, at))
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
        state.with(|backend, at| backend.clear::<Vec<V>>(&self.name, at))
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
        state.with(|backend, at| backend.clear::<BTreeMap<UK, UV>>(&self.name, at))
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
    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }
    fn with<R>(&mut self, act: impl FnOnce(&mut B, &Access<'_, K>) -> R) -> R {
        let at = Access { key: self.key, now: self.now };
        act(self.backend, &at)
    }
}

/// A stored value with the event time it was last written at.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Stamped<V> {
    value: V,
    written: EventTime,
}

/// One state's table in the memory backend.
trait Table<K>: Any {
    fn expire(&mut self, now: EventTime);
    /// A copy of the table (its values shared), for a snapshot to encode off the slot's thread.
    fn copy(&self) -> Box<dyn EncodeTable>;
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;
    fn as_any(&mut self) -> &mut dyn Any;
}

/// A copy of a table taken for a snapshot.
trait EncodeTable: Send {
    /// Appends each key group's entries (encoded) to `groups`.
    fn encode(&self, name: &'static str, groups: &mut BTreeMap<usize, Vec<(String, Vec<u8>)>>);
}

#[derive(Clone)]
struct TypedTable<K, S> {
    ttl_ms: Option<i64>,
    /// Each key's value, shared with the snapshots being encoded and copied only if written
    /// while they are (copy on write, as Flink's heap state for asynchronous snapshots).
    entries: KeyMap<K, Arc<Stamped<S>>>,
}

impl<K: Key, S: Data> TypedTable<K, S> {
    /// The key's value, if set and not expired (an expired one is dropped), to read: a value a
    /// snapshot shares is not copied.
    fn live_ref(&mut self, key: &K, now: EventTime) -> Option<&Stamped<S>> {
        let ttl = self.ttl_ms;
        let expired =
            matches!((ttl, self.entries.get(key)), (Some(ttl), Some(e)) if now >= e.written.saturating_add(ttl));
        if expired {
            self.entries.remove(key);
            return None;
        }
        self.entries.get(key).map(|entry| &**entry)
    }

    /// The key's value, as [`TypedTable::live_ref`], to write: copied first if a snapshot
    /// being encoded shares it.
    fn live(&mut self, key: &K, now: EventTime) -> Option<&mut Stamped<S>> {
        self.live_ref(key, now)?;
        self.entries.get_mut(key).map(Arc::make_mut)
    }
}

impl<K: Key, S: Data> Table<K> for TypedTable<K, S> {
    fn expire(&mut self, now: EventTime) {
        if let Some(ttl) = self.ttl_ms {
            self.entries.retain(|_, e| now < e.written.saturating_add(ttl));
        }
    }
    fn copy(&self) -> Box<dyn EncodeTable> {
        Box::new(self.clone())
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let entries: Vec<(K, Stamped<S>)> = crate::keyed::decode_state(bytes)?;
        for (key, value) in entries {
            if self.entries.insert(key, Arc::new(value)).is_some() {
                return Err("a key appears twice".into());
            }
        }
        Ok(())
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

impl<K: Key, S: Data> EncodeTable for TypedTable<K, S> {
    fn encode(&self, name: &'static str, groups: &mut BTreeMap<usize, Vec<(String, Vec<u8>)>>) {
        let mut by_group: BTreeMap<usize, Vec<(&K, &Stamped<S>)>> = BTreeMap::new();
        for (key, value) in &self.entries {
            let value: &Stamped<S> = value;
            by_group.entry(key_group_of(key)).or_default().push((key, value));
        }
        for (group, mut entries) in by_group {
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let bytes = bincode::serialize(&entries).expect("state serializes");
            groups.entry(group).or_default().push((name.to_owned(), bytes));
        }
    }
}

/// Keeps state as Rust values in hash maps: no encoding on access; a snapshot shares the values
/// and a value written while it is being encoded is copied (copy on write).
pub struct MemoryBackend<K> {
    tables: BTreeMap<&'static str, Box<dyn Table<K>>>,
    /// Restored tables not yet accessed, by state name: `(key group, entries)`, decoded when
    /// the state is first accessed (only then is its type known) and snapshotted as they are
    /// until then.
    pending: HashMap<String, Vec<(usize, Vec<u8>)>>,
}

impl<K> Default for MemoryBackend<K> {
    fn default() -> Self {
        MemoryBackend { tables: BTreeMap::new(), pending: HashMap::new() }
    }
}

impl<K: Key> MemoryBackend<K> {
    fn table<S: Data>(&mut self, state: &StateName) -> &mut TypedTable<K, S> {
        if !self.tables.contains_key(state.name) {
            let mut table: TypedTable<K, S> = TypedTable { ttl_ms: state.ttl_ms, entries: KeyMap::default() };
            for (_, bytes) in self.pending.remove(state.name).unwrap_or_default() {
                // Checked when it was restored (see `restore`): a state that no longer decodes
                // as its declared type is a changed job, reported there.
                table
                    .restore(&bytes)
                    .unwrap_or_else(|e| panic!("state {}: restored entries do not decode: {e}", state.name));
            }
            self.tables.insert(state.name, Box::new(table));
        }
        let table = self.tables.get_mut(state.name).expect("inserted").as_any();
        table.downcast_mut::<TypedTable<K, S>>().unwrap_or_else(|| {
            panic!("state {} is used with two different types; give each state its own name", state.name)
        })
    }
}

impl<K: Key> StateBackend<K> for MemoryBackend<K> {
    fn value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Option<V> {
        self.table::<V>(state).live_ref(at.key, at.now).map(|e| e.value.clone())
    }
    fn set_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V) {
        self.table::<V>(state).entries.insert(at.key.clone(), Arc::new(Stamped { value, written: at.now }));
    }
    fn list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<V> {
        self.table::<Vec<V>>(state).live_ref(at.key, at.now).map(|e| e.value.clone()).unwrap_or_default()
    }
    fn append<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V) {
        let table = self.table::<Vec<V>>(state);
        match table.live(at.key, at.now) {
            Some(entry) => {
                entry.value.push(value);
                entry.written = at.now;
            }
            None => {
                table.entries.insert(at.key.clone(), Arc::new(Stamped { value: vec![value], written: at.now }));
            }
        }
    }
    fn set_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, values: Vec<V>) {
        let table = self.table::<Vec<V>>(state);
        if values.is_empty() {
            table.entries.remove(at.key);
        } else {
            table.entries.insert(at.key.clone(), Arc::new(Stamped { value: values, written: at.now }));
        }
    }
    fn map_get<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) -> Option<UV> {
        self.table::<BTreeMap<UK, UV>>(state).live_ref(at.key, at.now).and_then(|e| e.value.get(user_key).cloned())
    }
    fn map_put<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: UK, value: UV) {
        let table = self.table::<BTreeMap<UK, UV>>(state);
        match table.live(at.key, at.now) {
            Some(entry) => {
                entry.value.insert(user_key, value);
                entry.written = at.now;
            }
            None => {
                let map = BTreeMap::from([(user_key, value)]);
                table.entries.insert(at.key.clone(), Arc::new(Stamped { value: map, written: at.now }));
            }
        }
    }
    fn map_remove<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) {
        let table = self.table::<BTreeMap<UK, UV>>(state);
        if let Some(entry) = table.live(at.key, at.now) {
            entry.value.remove(user_key);
            if entry.value.is_empty() {
                table.entries.remove(at.key);
            }
        }
    }
    fn map_entries<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<(UK, UV)> {
        let table = self.table::<BTreeMap<UK, UV>>(state);
        table
            .live_ref(at.key, at.now)
            .map(|e| e.value.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
    fn clear<S: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.table::<S>(state).entries.remove(at.key);
    }
    fn expire(&mut self, now: EventTime) {
        for table in self.tables.values_mut() {
            table.expire(now);
        }
    }
    fn snapshot(&self) -> StateImage {
        let tables: Vec<(&'static str, Box<dyn EncodeTable>)> =
            self.tables.iter().map(|(name, table)| (*name, table.copy())).collect();
        // Restored state not accessed since is kept as it came.
        let pending = self.pending.clone();
        StateImage::deferred(move || {
            let mut groups: BTreeMap<usize, Vec<(String, Vec<u8>)>> = BTreeMap::new();
            for (name, table) in &tables {
                table.encode(name, &mut groups);
            }
            for (name, parts) in pending {
                for (group, bytes) in parts {
                    groups.entry(group).or_default().push((name.clone(), bytes));
                }
            }
            groups
                .into_iter()
                .map(|(group, mut tables)| {
                    tables.sort();
                    (group, bincode::serialize(&tables).expect("state serializes"))
                })
                .collect()
        })
    }
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (group, bytes) in states {
            let tables: Vec<(String, Vec<u8>)> =
                crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {e}"))?;
            for (name, bytes) in tables {
                self.pending.entry(name).or_default().push((group, bytes));
            }
        }
        Ok(())
    }
}
