//! The memory backend: state as Rust values in hash maps, the default and the simulator's.
//!
//! No encoding on access. A snapshot copies the tables' keys and shares their values, and a
//! value written while a snapshot is being encoded is copied first (copy on write, as Flink's
//! heap state does for asynchronous snapshots). Timer queues are ordered sets, copied whole by
//! a snapshot.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use weir_core::time::EventTime;

use super::{assemble_groups, Access, Key, Stamped, StateBackend, StateName, TimerQueue};
use crate::keyed::{key_group_of, KeyHasher};
use crate::record::Data;
use crate::stateful::{KeyGroupStates, StateImage};

type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A map state's value in memory: a `BTreeMap` whose snapshot encoding lists the entries in the
/// order of their keys' encodings — the order RocksDB keeps them in — so that both backends
/// encode a map alike, and RocksDB can without knowing the keys' type. (It decodes as any
/// `BTreeMap` encoding does, whatever the order.)
#[derive(Clone)]
struct MapValue<UK, UV>(BTreeMap<UK, UV>);

impl<UK: Key, UV: Data> serde::Serialize for MapValue<UK, UV> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(Vec<u8>, &UK, &UV)> =
            self.0.iter().map(|(k, v)| (bincode::serialize(k).expect("keys serialize"), k, v)).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        serializer.collect_map(entries.into_iter().map(|(_, k, v)| (k, v)))
    }
}

impl<'de, UK: Key, UV: Data> serde::Deserialize<'de> for MapValue<UK, UV> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(MapValue)
    }
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
    /// The bound last expired through: a restored table decoded later drops what had expired
    /// by then, as if it had been there (so snapshots equal the RocksDB backend's).
    expired_through: EventTime,
    /// Timer queues by name, each in firing order.
    timers: BTreeMap<String, BTreeSet<(EventTime, K)>>,
}

impl<K> Default for MemoryBackend<K> {
    fn default() -> Self {
        MemoryBackend {
            tables: BTreeMap::new(),
            pending: HashMap::new(),
            expired_through: EventTime::MIN,
            timers: BTreeMap::new(),
        }
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
            table.expire(self.expired_through);
            self.tables.insert(state.name, Box::new(table));
        }
        let table = self.tables.get_mut(state.name).expect("inserted").as_any();
        table.downcast_mut::<TypedTable<K, S>>().unwrap_or_else(|| super::two_types(state.name))
    }

    fn clear<S: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.table::<S>(state).entries.remove(at.key);
    }

    fn timers(&mut self, queue: &TimerQueue) -> &mut BTreeSet<(EventTime, K)> {
        if !self.timers.contains_key(queue.name()) {
            self.timers.insert(queue.name().to_owned(), BTreeSet::new());
        }
        self.timers.get_mut(queue.name()).expect("inserted")
    }
}

/// Encodes timer queues by key group (see [`TimerQueue`]) into `groups`.
fn encode_timers<K: Key>(
    timers: &BTreeMap<String, BTreeSet<(EventTime, K)>>,
    groups: &mut BTreeMap<usize, Vec<(String, Vec<u8>)>>,
) {
    for (queue, timers) in timers {
        let mut by_group: BTreeMap<usize, Vec<&(EventTime, K)>> = BTreeMap::new();
        // In firing order, which the canonical encoding keeps within each group.
        for timer in timers {
            by_group.entry(key_group_of(&timer.1)).or_default().push(timer);
        }
        for (group, timers) in by_group {
            let bytes = bincode::serialize(&timers).expect("timers serialize");
            groups.entry(group).or_default().push((super::timer_state_name(queue), bytes));
        }
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
        self.table::<MapValue<UK, UV>>(state).live_ref(at.key, at.now).and_then(|e| e.value.0.get(user_key).cloned())
    }
    fn map_put<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: UK, value: UV) {
        let table = self.table::<MapValue<UK, UV>>(state);
        match table.live(at.key, at.now) {
            Some(entry) => {
                entry.value.0.insert(user_key, value);
                entry.written = at.now;
            }
            None => {
                let map = MapValue(BTreeMap::from([(user_key, value)]));
                table.entries.insert(at.key.clone(), Arc::new(Stamped { value: map, written: at.now }));
            }
        }
    }
    fn map_remove<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) {
        let table = self.table::<MapValue<UK, UV>>(state);
        if let Some(entry) = table.live(at.key, at.now) {
            entry.value.0.remove(user_key);
            if entry.value.0.is_empty() {
                table.entries.remove(at.key);
            }
        }
    }
    fn map_entries<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<(UK, UV)> {
        let table = self.table::<MapValue<UK, UV>>(state);
        table
            .live_ref(at.key, at.now)
            .map(|e| e.value.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
    fn clear_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.clear::<V>(state, at)
    }
    fn clear_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.clear::<Vec<V>>(state, at)
    }
    fn clear_map<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.clear::<MapValue<UK, UV>>(state, at)
    }
    fn register_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime) {
        self.timers(queue).insert((time, key.clone()));
    }
    fn delete_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime) {
        if let Some(timers) = self.timers.get_mut(queue.name()) {
            timers.remove(&(time, key.clone()));
        }
    }
    fn next_timer(&mut self, queue: &TimerQueue) -> Option<EventTime> {
        self.timers.get(queue.name())?.first().map(|(time, _)| *time)
    }
    fn pop_timer(&mut self, queue: &TimerQueue, before: EventTime) -> Option<(EventTime, K)> {
        let timers = self.timers.get_mut(queue.name())?;
        if timers.first()?.0 < before {
            timers.pop_first()
        } else {
            None
        }
    }
    fn expire(&mut self, now: EventTime) {
        self.expired_through = self.expired_through.max(now);
        for table in self.tables.values_mut() {
            table.expire(now);
        }
    }
    fn snapshot(&self) -> StateImage {
        let tables: Vec<(&'static str, Box<dyn EncodeTable>)> =
            self.tables.iter().map(|(name, table)| (*name, table.copy())).collect();
        // Restored state not accessed since is kept as it came.
        let pending = self.pending.clone();
        let timers = self.timers.clone();
        StateImage::deferred(move || {
            let mut groups: BTreeMap<usize, Vec<(String, Vec<u8>)>> = BTreeMap::new();
            for (name, table) in &tables {
                table.encode(name, &mut groups);
            }
            encode_timers(&timers, &mut groups);
            for (name, parts) in pending {
                for (group, bytes) in parts {
                    groups.entry(group).or_default().push((name.clone(), bytes));
                }
            }
            assemble_groups(groups)
        })
    }
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (group, name, bytes) in super::split_groups(states)? {
            if let Some(queue) = super::timer_queue_of(&name) {
                // Timers have no type but the key's, known here: decoded now.
                let timers = self.timers.entry(queue.to_owned()).or_default();
                for timer in super::decode_timers::<K>(queue, group, &bytes)? {
                    if !timers.insert(timer) {
                        return Err(format!("timer queue {queue}: key group {group}: a timer appears twice"));
                    }
                }
                continue;
            }
            self.pending.entry(name).or_default().push((group, bytes));
        }
        Ok(())
    }
}
