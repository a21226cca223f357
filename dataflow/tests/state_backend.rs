//! The state backend conformance suite: every backend must behave like a plain model.
//!
//! Method: proptest draws a sequence of operations — writes and reads of value, list and map
//! state (some with a time to live) for a handful of keys at advancing event times, expiry
//! passes, and snapshot-then-restore into a fresh backend — and applies each to the backend
//! and to a model made of `BTreeMap`s. Every read must agree with the model, and a restored
//! backend must read exactly like the one it was taken from. Timer queues are in the model
//! too: timers registered and deleted for those keys in two queues, and popped in order of
//! time. With the `rocksdb` feature the
//! RocksDB backend runs the same suite, and both backends must snapshot equal states to equal
//! bytes and restore each other's snapshots (the canonical format).
#![allow(clippy::disallowed_methods)] // tests set up real directories with std::fs

use std::collections::BTreeMap;

use proptest::prelude::*;

use weir_dataflow::state::{KeyedState, ListState, MapState, MemoryBackend, StateBackend, TimerQueue, ValueState};
use weir_dataflow::stateful::{KeyGroupStates, StateImage};

#[derive(Clone, Debug)]
enum Op {
    SetValue { key: u64, value: i64 },
    GetValue { key: u64 },
    ClearValue { key: u64 },
    Append { key: u64, value: i64 },
    GetList { key: u64 },
    SetList { key: u64, values: Vec<i64> },
    ClearList { key: u64 },
    Put { key: u64, user_key: i16, value: i64 },
    Remove { key: u64, user_key: i16 },
    Entries { key: u64 },
    ClearMap { key: u64 },
    AppendTtl { key: u64, value: i64 },
    GetTtlList { key: u64 },
    SetTtlValue { key: u64, value: i64 },
    GetTtlValue { key: u64 },
    RegisterTimer { queue: usize, key: u64, time: i64 },
    DeleteTimer { queue: usize, key: u64, time: i64 },
    NextTimer { queue: usize },
    PopTimers { queue: usize, before: i64 },
    Tick { ms: i64 },
    Expire,
    SnapshotRestore,
}

/// Two queues, one's name the start of the other's.
const QUEUES: [TimerQueue; 2] = [TimerQueue::new("t"), TimerQueue::new("t2")];

/// Timer times: negative and positive (their encodings must still sort), and the extremes.
fn timer_time() -> impl Strategy<Value = i64> {
    prop_oneof![-60i64..160, Just(i64::MIN), Just(i64::MAX), Just(-1), Just(256)]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u64..6;
    prop_oneof![
        (key.clone(), any::<i64>()).prop_map(|(key, value)| Op::SetValue { key, value }),
        key.clone().prop_map(|key| Op::GetValue { key }),
        key.clone().prop_map(|key| Op::ClearValue { key }),
        (key.clone(), any::<i64>()).prop_map(|(key, value)| Op::Append { key, value }),
        key.clone().prop_map(|key| Op::GetList { key }),
        (key.clone(), proptest::collection::vec(any::<i64>(), 0..4))
            .prop_map(|(key, values)| Op::SetList { key, values }),
        key.clone().prop_map(|key| Op::ClearList { key }),
        (key.clone(), user_key(), any::<i64>()).prop_map(|(key, user_key, value)| Op::Put { key, user_key, value }),
        (key.clone(), user_key()).prop_map(|(key, user_key)| Op::Remove { key, user_key }),
        key.clone().prop_map(|key| Op::Entries { key }),
        key.clone().prop_map(|key| Op::ClearMap { key }),
        (key.clone(), any::<i64>()).prop_map(|(key, value)| Op::AppendTtl { key, value }),
        key.clone().prop_map(|key| Op::GetTtlList { key }),
        (key.clone(), any::<i64>()).prop_map(|(key, value)| Op::SetTtlValue { key, value }),
        key.clone().prop_map(|key| Op::GetTtlValue { key }),
        (0..2usize, key.clone(), timer_time()).prop_map(|(queue, key, time)| Op::RegisterTimer { queue, key, time }),
        (0..2usize, key, timer_time()).prop_map(|(queue, key, time)| Op::DeleteTimer { queue, key, time }),
        (0..2usize).prop_map(|queue| Op::NextTimer { queue }),
        (0..2usize, timer_time()).prop_map(|(queue, before)| Op::PopTimers { queue, before }),
        (0i64..40).prop_map(|ms| Op::Tick { ms }),
        Just(Op::Expire),
        Just(Op::SnapshotRestore),
    ]
}

/// Map keys whose order is not their encodings' (negative, and past one byte).
fn user_key() -> impl Strategy<Value = i16> {
    prop_oneof![Just(-300i16), Just(-1), Just(0), Just(1), Just(255), Just(256)]
}

const TTL_MS: i64 = 50;

#[derive(Default)]
struct Model {
    values: BTreeMap<u64, i64>,
    lists: BTreeMap<u64, Vec<i64>>,
    maps: BTreeMap<u64, BTreeMap<i16, i64>>,
    ttl_values: BTreeMap<u64, (i64, i64)>,
    /// A list with a time to live: its elements and when it was last appended to.
    ttl_lists: BTreeMap<u64, (Vec<i64>, i64)>,
    timers: [std::collections::BTreeSet<(i64, u64)>; 2],
}

/// Applies `ops` to a fresh backend and the model; returns the backend and its event time.
/// Restores a snapshot the canonical way: encoded, then loaded into a fresh backend. Returns
/// the restored backend and the encoded snapshot.
fn canonical_restore<B: StateBackend<u64>>(
    fresh: &dyn Fn() -> B,
    image: StateImage,
) -> Result<(B, KeyGroupStates), String> {
    let snapshot = image.try_encode()?;
    let mut restored = fresh();
    restored.restore(snapshot.clone())?;
    Ok((restored, snapshot))
}

fn check<B: StateBackend<u64>, F: Fn() -> B>(
    fresh: F,
    restore: impl Fn(&dyn Fn() -> B, StateImage) -> Result<(B, KeyGroupStates), String>,
    ops: Vec<Op>,
) -> Result<(B, i64), TestCaseError> {
    let value = ValueState::<i64>::new("value");
    let list = ListState::<i64>::new("list");
    let map = MapState::<i16, i64>::new("map");
    let ttl_value = ValueState::<i64>::new("ttl-value").with_ttl(TTL_MS);
    let ttl_list = ListState::<i64>::new("ttl-list").with_ttl(TTL_MS);
    let mut backend = fresh();
    let mut model = Model::default();
    let mut now = 0i64;
    for op in ops {
        match op {
            Op::SetValue { key, value: v } => {
                value.set(&mut KeyedState::new(&mut backend, &key, now), v);
                model.values.insert(key, v);
            }
            Op::GetValue { key } => {
                prop_assert_eq!(
                    value.get(&mut KeyedState::new(&mut backend, &key, now)),
                    model.values.get(&key).copied()
                )
            }
            Op::ClearValue { key } => {
                value.clear(&mut KeyedState::new(&mut backend, &key, now));
                model.values.remove(&key);
            }
            Op::Append { key, value: v } => {
                list.add(&mut KeyedState::new(&mut backend, &key, now), v);
                model.lists.entry(key).or_default().push(v);
            }
            Op::GetList { key } => prop_assert_eq!(
                list.get(&mut KeyedState::new(&mut backend, &key, now)),
                model.lists.get(&key).cloned().unwrap_or_default()
            ),
            Op::SetList { key, values } => {
                list.update(&mut KeyedState::new(&mut backend, &key, now), values.clone());
                if values.is_empty() {
                    model.lists.remove(&key);
                } else {
                    model.lists.insert(key, values);
                }
            }
            Op::ClearList { key } => {
                list.clear(&mut KeyedState::new(&mut backend, &key, now));
                model.lists.remove(&key);
            }
            Op::ClearMap { key } => {
                map.clear(&mut KeyedState::new(&mut backend, &key, now));
                model.maps.remove(&key);
            }
            Op::AppendTtl { key, value: v } => {
                ttl_list.add(&mut KeyedState::new(&mut backend, &key, now), v);
                let live = model.ttl_lists.get(&key).filter(|(_, written)| now < written + TTL_MS).cloned();
                let mut values = live.map(|(values, _)| values).unwrap_or_default();
                values.push(v);
                model.ttl_lists.insert(key, (values, now));
            }
            Op::GetTtlList { key } => {
                let expected = model
                    .ttl_lists
                    .get(&key)
                    .filter(|(_, written)| now < written + TTL_MS)
                    .map(|(values, _)| values.clone())
                    .unwrap_or_default();
                prop_assert_eq!(ttl_list.get(&mut KeyedState::new(&mut backend, &key, now)), expected);
            }
            Op::Put { key, user_key, value: v } => {
                map.put(&mut KeyedState::new(&mut backend, &key, now), user_key, v);
                model.maps.entry(key).or_default().insert(user_key, v);
            }
            Op::Remove { key, user_key } => {
                map.remove(&mut KeyedState::new(&mut backend, &key, now), &user_key);
                if let Some(entries) = model.maps.get_mut(&key) {
                    entries.remove(&user_key);
                }
            }
            Op::Entries { key } => {
                let expected: Vec<(i16, i64)> =
                    model.maps.get(&key).map(|m| m.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default();
                prop_assert_eq!(map.entries(&mut KeyedState::new(&mut backend, &key, now)), expected);
            }
            Op::SetTtlValue { key, value: v } => {
                ttl_value.set(&mut KeyedState::new(&mut backend, &key, now), v);
                model.ttl_values.insert(key, (v, now));
            }
            Op::GetTtlValue { key } => {
                let expected =
                    model.ttl_values.get(&key).filter(|(_, written)| now < written + TTL_MS).map(|(v, _)| *v);
                prop_assert_eq!(ttl_value.get(&mut KeyedState::new(&mut backend, &key, now)), expected);
            }
            Op::RegisterTimer { queue, key, time } => {
                backend.register_timer(&QUEUES[queue], &key, time);
                model.timers[queue].insert((time, key));
            }
            Op::DeleteTimer { queue, key, time } => {
                backend.delete_timer(&QUEUES[queue], &key, time);
                model.timers[queue].remove(&(time, key));
            }
            Op::NextTimer { queue } => {
                prop_assert_eq!(backend.next_timer(&QUEUES[queue]), model.timers[queue].first().map(|(time, _)| *time))
            }
            Op::PopTimers { queue, before } => {
                let mut popped = Vec::new();
                while let Some(timer) = backend.pop_timer(&QUEUES[queue], before) {
                    popped.push(timer);
                }
                prop_assert!(popped.windows(2).all(|pair| pair[0].0 <= pair[1].0), "in order of time: {:?}", popped);
                // At equal times, keys come in an order the backend chooses.
                popped.sort();
                let due: Vec<(i64, u64)> = model.timers[queue].iter().copied().filter(|(t, _)| *t < before).collect();
                model.timers[queue].retain(|(time, _)| *time >= before);
                prop_assert_eq!(popped, due);
            }
            Op::Tick { ms } => now += ms,
            Op::Expire => {
                backend.expire(now);
                model.ttl_values.retain(|_, (_, written)| now < *written + TTL_MS);
                model.ttl_lists.retain(|_, (_, written)| now < *written + TTL_MS);
            }
            Op::SnapshotRestore => {
                // A snapshot is a copy taken now and encoded later, off the slot's thread: what
                // the operator does to its state in between must not show in it.
                let image = backend.snapshot();
                let scribble = ValueState::<i64>::new("scribble");
                for key in 0..6u64 {
                    let mut state = KeyedState::new(&mut backend, &key, now);
                    scribble.set(&mut state, -1);
                    value.set(&mut state, -1);
                    list.add(&mut state, -1);
                    map.put(&mut state, 0, -1);
                    backend.register_timer(&QUEUES[0], &key, -7);
                }
                while backend.pop_timer(&QUEUES[1], i64::MAX).is_some() {}
                backend.expire(now + 100 * TTL_MS);
                let (restored, snapshot) = restore(&fresh, image).map_err(TestCaseError::fail)?;
                prop_assert_eq!(
                    restored.snapshot().encode(),
                    snapshot,
                    "a restored backend snapshots what it restored"
                );
                backend = restored;
            }
        }
    }
    Ok((backend, now))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn backends_conform(ops in proptest::collection::vec(op(), 1..80)) {
        check(MemoryBackend::<u64>::default, canonical_restore, ops)?;
    }
}

#[test]
fn a_state_used_with_two_types_is_refused_loudly() {
    let mut backend = MemoryBackend::<u64>::default();
    ValueState::<i64>::new("x").set(&mut KeyedState::new(&mut backend, &1, 0), 5);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ValueState::<String>::new("x").get(&mut KeyedState::new(&mut backend, &1, 0))
    }));
    assert!(result.is_err());
}

#[cfg(feature = "rocksdb")]
mod rocksdb_backend {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use weir_dataflow::state::instance_files_dir;
    use weir_dataflow::state::rocksdb::RocksDbBackend;
    use weir_dataflow::stateful::Form;

    /// Fresh RocksDB backends, each in a directory of its own under `root`.
    fn fresh(root: &std::path::Path) -> impl Fn() -> RocksDbBackend<u64> + '_ {
        let next = AtomicUsize::new(0);
        move || RocksDbBackend::open(&root.join(next.fetch_add(1, Ordering::Relaxed).to_string())).unwrap()
    }

    /// The instance of `image` reopened on a copy of its checkpoint files (as a slot restores
    /// an incremental checkpoint), with the image's canonical encoding.
    fn from_files(
        root: &std::path::Path,
        next: &AtomicUsize,
        image: StateImage,
    ) -> Result<(RocksDbBackend<u64>, KeyGroupStates), String> {
        let (files, encode) = image.into_files().map_err(|_| "a RocksDB snapshot has files".to_string())?;
        let canonical = encode(Form::Canonical)?;
        assert_eq!(encode(Form::BesideFiles)?, Vec::new(), "the files hold all of a backend's state");
        let dir = root.join(next.fetch_add(1, Ordering::Relaxed).to_string());
        let target = instance_files_dir(&dir);
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(files.dir()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
        drop(files);
        Ok((RocksDbBackend::open_restored(&dir)?, canonical))
    }

    /// What every state holds for every key, read at `now` (reading touches every state).
    fn read_all<B: StateBackend<u64>>(backend: &mut B, now: i64) -> Vec<String> {
        let value = ValueState::<i64>::new("value");
        let list = ListState::<i64>::new("list");
        let map = MapState::<i16, i64>::new("map");
        let ttl_value = ValueState::<i64>::new("ttl-value").with_ttl(TTL_MS);
        let ttl_list = ListState::<i64>::new("ttl-list").with_ttl(TTL_MS);
        (0..6u64)
            .map(|key| {
                let mut state = KeyedState::new(&mut *backend, &key, now);
                format!(
                    "{:?} {:?} {:?} {:?} {:?}",
                    value.get(&mut state),
                    list.get(&mut state),
                    map.entries(&mut state),
                    ttl_value.get(&mut state),
                    ttl_list.get(&mut state)
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn rocksdb_conforms(ops in proptest::collection::vec(op(), 1..80)) {
            let root = tempfile::tempdir().unwrap();
            check(fresh(root.path()), canonical_restore, ops)?;
        }

        #[test]
        fn rocksdb_restores_from_its_checkpoint_files(ops in proptest::collection::vec(op(), 1..80)) {
            // An incremental checkpoint's restore: the instance reopened on its checkpoint's
            // files, then snapshotted canonically before any state is touched again.
            let root = tempfile::tempdir().unwrap();
            let copies = tempfile::tempdir().unwrap();
            let next = AtomicUsize::new(0);
            check(fresh(root.path()), |_, image| from_files(copies.path(), &next, image), ops)?;
        }

        #[test]
        fn both_backends_snapshot_equal_states_to_equal_bytes(ops in proptest::collection::vec(op(), 1..80)) {
            let root = tempfile::tempdir().unwrap();
            let fresh_rocksdb = fresh(root.path());
            let (memory, now) = check(MemoryBackend::<u64>::default, canonical_restore, ops.clone())?;
            let (rocksdb, _) = check(&fresh_rocksdb, canonical_restore, ops)?;
            let from_memory = memory.snapshot().encode();
            let from_rocksdb = rocksdb.snapshot().encode();
            prop_assert_eq!(&from_memory, &from_rocksdb, "equal states, equal snapshots");
            // Each restores the other's snapshot, and reads and snapshots alike after touching
            // every state (which moves restored entries into RocksDB's own rows).
            let mut memory_again = MemoryBackend::<u64>::default();
            memory_again.restore(from_rocksdb).unwrap();
            let mut rocksdb_again = fresh_rocksdb();
            rocksdb_again.restore(from_memory.clone()).unwrap();
            prop_assert_eq!(rocksdb_again.snapshot().encode(), from_memory.clone(), "restored state not touched yet");
            prop_assert_eq!(read_all(&mut memory_again, now), read_all(&mut rocksdb_again, now));
            prop_assert_eq!(memory_again.snapshot().encode(), rocksdb_again.snapshot().encode());
        }
    }

    #[test]
    fn a_state_used_with_two_types_is_refused_loudly_on_rocksdb() {
        let root = tempfile::tempdir().unwrap();
        let mut backend = RocksDbBackend::<u64>::open(&root.path().join("db")).unwrap();
        ValueState::<i64>::new("x").set(&mut KeyedState::new(&mut backend, &1, 0), 5);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ValueState::<String>::new("x").get(&mut KeyedState::new(&mut backend, &1, 0))
        }));
        assert!(result.is_err());
    }

    #[test]
    fn the_backend_owns_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("operator");
        std::fs::create_dir_all(dir.join("stale")).unwrap();
        let backend = RocksDbBackend::<u64>::open(&dir).unwrap();
        assert!(!dir.join("stale").exists(), "a reused directory is cleared first");
        drop(backend);
        assert!(!dir.exists(), "the directory goes with the backend");
    }
}
