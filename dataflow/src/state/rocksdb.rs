//! The RocksDB backend: keyed state on the node's local disk, so that a slot's state may be
//! larger than its memory (Flink's `EmbeddedRocksDBStateBackend`). Compiled only with the
//! `rocksdb` feature: its C++ takes minutes to build, and the simulator never needs it.
//!
//! **Layout.** One RocksDB instance per stateful operator per slot, in a directory of the
//! slot's local state directory (`--local-state-dir`) that the instance owns — as Flink keeps
//! one per operator subtask — and one column family per state. A row's key is the key group
//! (two bytes, big-endian), the key's `bincode` encoding and a tag, so that a key group is one
//! contiguous range and so is a key's every row (the `bincode` encodings of one type are
//! prefix-free: none is the start of another):
//! - value state: `group key 0` → the time it was written (eight bytes) and the value;
//! - list state: `group key 0` → the time it was last written and the next element's index;
//!   an element: `group key 1 index` (big-endian, so that elements come in append order);
//! - map state: `group key 0` → the time it was last written and the entry count; an entry:
//!   `group key 1 user-key` → its value.
//!
//! - timers, in the family `_timers`: `queue 0 time group key` → nothing (the time in eight
//!   big-endian bytes with its sign bit flipped, so that rows sort by time: a queue's first
//!   row is its first timer).
//!
//! An append or a put writes one row and the key's header; no list or map is read and
//! rewritten whole. Writes skip RocksDB's write-ahead log: state is recovered from checkpoints,
//! never from the local disk, as in Flink.
//!
//! **Types.** Rows are bytes, so the backend learns a state's types when the operator first
//! touches it (a state touched with two types is refused, as by the memory backend). State
//! restored from a canonical snapshot before then waits in the column family `_restored`, and
//! moves into its own family at that first touch. The family `_meta` records each state's
//! kind (value, list or map) and time to live, and the event time last expired through: what
//! a snapshot needs to write a state out in the canonical encoding without knowing its types
//! (so a state restored from files and not touched since still can be).
//!
//! **Snapshots.** On the slot's thread a snapshot is one RocksDB checkpoint call: memtables
//! flushed and SST files hard-linked into a directory of their own ([`StateFiles`]). A
//! checkpoint uploads those files — only the SSTs no earlier checkpoint uploaded, since SSTs
//! never change (an *incremental* checkpoint) — and restores by opening them again
//! ([`RocksDbBackend::open_restored`]). A savepoint instead opens the checkpoint read-only, off
//! the slot's thread, and writes every state out in the canonical encoding (see [`super`];
//! equal to the memory backend's, byte for byte).
//!
//! **Memory.** Every instance a slot opens shares its budget, as a Flink slot's RocksDB
//! instances share its managed memory: a budget per slot ([`set_slot_memory`], the node's
//! `--state-memory-per-slot`, [`super::DEFAULT_SLOT_MEMORY_BYTES`] unless set), half of it one LRU
//! block cache and half one write buffer manager: once the memtables together pass their half,
//! the instance being written flushes (soft: writes never stall on it) — per thread, as a
//! slot runs on one. What does not fit stays on disk. Bloom filters (10 bits per key) let a
//! read of an absent key — the first sight of a key, as in deduplication — skip the files
//! that cannot hold it; filters and indexes stay in memory beside the cache, about 1.5 bytes
//! per key (cached, they were evicted by data blocks and every read paid for them again:
//! throughput fell 25-fold).
//!
//! **Time to live** is checked on read: an expired row reads as absent and is deleted then. A
//! snapshot leaves out what had expired when event time last passed a bound
//! ([`StateBackend::expire`]) — what the memory backend drops then — and a compaction filter
//! removes expired value rows from disk. (A list's or map's elements carry no time of their
//! own, so those are removed when read or cleared; a key never touched again keeps its rows
//! until its state is cleared.)

use std::any::TypeId;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use ::rocksdb::checkpoint::Checkpoint;
use ::rocksdb::compaction_filter::Decision;
use ::rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteBufferManager, WriteOptions, DB,
};

use weir_core::time::EventTime;

use super::{
    assemble_groups, decode_timers, instance_files_dir, split_groups, timer_queue_of, timer_state_name, two_types,
    Access, Key, Stamped, StateBackend, StateName, TimerQueue,
};
use crate::keyed::key_group_of;
use crate::record::Data;
use crate::stateful::{Form, KeyGroupStates, StateFiles, StateImage};

/// The column family of restored state not yet touched: `name 0 group` → canonical entries.
const RESTORED: &str = "_restored";
/// The column family recording each state's kind and time to live (`name` → [`Known`]'s
/// encoding), and the event time expired through (under the empty name, which no state has).
const META: &str = "_meta";
const EXPIRED_THROUGH: &[u8] = b"";
/// The column family of timer queues (see the module docs).
const TIMERS: &str = "_timers";
/// The tag of a key's first row: its value, or its list's or map's header.
const HEADER: u8 = 0;
/// The tag of a list's elements and a map's entries.
const ELEMENT: u8 = 1;

/// Keyed state in a RocksDB instance of its own (see the module docs).
pub struct RocksDbBackend<K> {
    /// Declared first, so closed first: before the families' options (their compaction
    /// filters) and the directory go.
    db: DB,
    /// The states touched so far, by name.
    states: HashMap<&'static str, TouchedState>,
    /// Every state with a column family (touched, or restored from files), by name.
    known: HashMap<String, Known>,
    /// Restored states not touched yet (their entries wait in `_restored`).
    restored: BTreeSet<String>,
    /// Event time last passed ([`StateBackend::expire`]): what had expired by then is left
    /// out of snapshots and dropped by compaction.
    expired_through: Arc<AtomicI64>,
    snapshots: Cell<u64>,
    write: WriteOptions,
    /// Scratch space: the key row of the access being served.
    key_row: Vec<u8>,
    /// Per timer queue, where its first timer is (see [`TimerHead`]).
    timer_heads: HashMap<&'static str, TimerHead>,
    /// Declared last, so dropped last: removes the instance's directory once it is closed and
    /// no snapshot still being encoded reads a checkpoint in it (each holds a share).
    dir: Arc<OwnedDir>,
    _keys: PhantomData<fn() -> K>,
}

/// What a state's rows hold (a value, list or map state of the same stored type are still
/// different states).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Value,
    List,
    Map,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Value => 0,
            Kind::List => 1,
            Kind::Map => 2,
        }
    }
    fn of_tag(tag: u8) -> Option<Kind> {
        [Kind::Value, Kind::List, Kind::Map].into_iter().find(|kind| kind.tag() == tag)
    }
}

/// A touched state: its column family, types and time to live.
struct TouchedState {
    family: String,
    kind: Kind,
    stored: TypeId,
    ttl_ms: Option<i64>,
    /// The options of a family created at the touch, kept while the instance is open: RocksDB
    /// holds a pointer to the compaction filter they own (those of families opened with the
    /// instance it keeps itself).
    _options: Option<Options>,
}

/// Where a timer queue's first timer is: popping timers leaves deletion markers at the head of
/// the queue's rows, which a read from the queue's start would step over one by one, so reads
/// start at `floor` (no timer sorts before it) and the first row is cached until it changes.
struct TimerHead {
    floor: Vec<u8>,
    /// The first timer's time and row (`Some(None)`: the queue is empty), if known.
    first: Option<Option<(EventTime, Vec<u8>)>>,
}

/// A state with a column family: its kind, and its time to live as its compaction filter
/// reads it (0: none), which its touch sets.
struct Known {
    kind: Kind,
    ttl_ms: Arc<AtomicI64>,
}

/// `_meta`'s record of a state: its kind and time to live (0: none).
fn meta_record(kind: Kind, ttl_ms: Option<i64>) -> [u8; 9] {
    let mut bytes = [0u8; 9];
    bytes[0] = kind.tag();
    bytes[1..].copy_from_slice(&ttl_ms.unwrap_or(0).to_le_bytes());
    bytes
}

/// What `_meta` records: each state's kind and time to live, and the bound expired through.
struct Meta {
    states: BTreeMap<String, (Kind, Option<i64>)>,
    expired_through: EventTime,
}

fn read_meta(db: &DB) -> Result<Meta, String> {
    let family = db.cf_handle(META).ok_or("the family _meta is missing")?;
    let mut meta = Meta { states: BTreeMap::new(), expired_through: EventTime::MIN };
    for item in db.iterator_cf(family, IteratorMode::Start) {
        let (name, record) = item.map_err(|e| format!("reading _meta: {e}"))?;
        if name.is_empty() {
            let bytes: [u8; 8] = record[..].try_into().map_err(|_| "_meta's expiry bound is malformed")?;
            meta.expired_through = EventTime::from_le_bytes(bytes);
            continue;
        }
        let name = String::from_utf8(name.into_vec()).map_err(|_| "a state's name in _meta is not UTF-8")?;
        let kind = record.first().copied().and_then(Kind::of_tag);
        let (Some(kind), Ok(ttl)) = (kind, <[u8; 8]>::try_from(record.get(1..).unwrap_or_default())) else {
            return Err(format!("_meta's record of state {name} is malformed"));
        };
        let ttl = i64::from_le_bytes(ttl);
        meta.states.insert(name, (kind, (ttl > 0).then_some(ttl)));
    }
    Ok(meta)
}

/// A directory removed when dropped.
struct OwnedDir(PathBuf);

impl Drop for OwnedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The column family of state `name` (prefixed: a state may be called `default`).
fn family_name(name: &str) -> String {
    format!("state/{name}")
}

/// The size compactions cut SST files at.
pub const SST_TARGET_BYTES: u64 = 8 << 20;

/// The memory every instance of one slot shares (see the module docs).
struct SlotMemory {
    /// The slot's budget, in bytes.
    budget: u64,
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl SlotMemory {
    fn new(budget: u64) -> Self {
        assert!(budget >= super::MIN_SLOT_MEMORY_BYTES, "a slot's RocksDB memory of {budget} bytes is below the least");
        SlotMemory {
            budget,
            cache: Cache::new_lru_cache((budget / 2) as usize),
            write_buffers: WriteBufferManager::new_write_buffer_manager((budget / 2) as usize, false),
        }
    }
}

thread_local! {
    // Per thread: each slot is one worker thread, and the handles cannot move between
    // threads (`Cache` is not `Send`). Made when the slot's first instance opens.
    static SLOT_MEMORY: std::cell::RefCell<Option<SlotMemory>> = const { std::cell::RefCell::new(None) };
    static SLOT_BUDGET: Cell<u64> = const { Cell::new(super::DEFAULT_SLOT_MEMORY_BYTES) };
}

/// Sets the memory the instances this thread (a slot) opens share, before the first opens
/// (see [`super::set_slot_memory`]).
pub fn set_slot_memory(bytes: u64) {
    SLOT_MEMORY.with(|memory| {
        let memory = memory.borrow();
        assert!(
            memory.as_ref().is_none_or(|memory| memory.budget == bytes),
            "a slot's RocksDB memory is set after its first instance opened"
        );
    });
    SLOT_BUDGET.set(bytes);
}

/// Calls `f` with this slot's shared memory, made at the first call.
fn with_slot_memory<R>(f: impl FnOnce(&SlotMemory) -> R) -> R {
    SLOT_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        f(memory.get_or_insert_with(|| SlotMemory::new(SLOT_BUDGET.get())))
    })
}

/// Options of every column family: lz4, the one compression built in, and the slot's block
/// cache, and bloom filters.
fn family_options() -> Options {
    let mut options = Options::default();
    options.set_compression_type(::rocksdb::DBCompressionType::Lz4);
    // A quarter of the slot's write buffers per memtable.
    options.set_write_buffer_size(with_slot_memory(|memory| memory.budget / 8) as usize);
    // A checkpoint reads each new file whole to checksum and upload it, and a restore each
    // file it puts in place: small files keep that memory small (RocksDB's default is 64 MB).
    options.set_target_file_size_base(SST_TARGET_BYTES);
    let mut table = BlockBasedOptions::default();
    with_slot_memory(|memory| table.set_block_cache(&memory.cache));
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    options
}

/// Options of a state's column family: a value state's with the compaction filter that drops
/// rows expired by its time to live (`ttl_ms`, 0 for none) once event time passed
/// `expired_through`. Only a value row carries its own write time: a list's or map's elements
/// do not.
fn state_family_options(kind: Kind, ttl_ms: &Arc<AtomicI64>, expired_through: &Arc<AtomicI64>) -> Options {
    let mut options = family_options();
    if kind == Kind::Value {
        let (ttl_ms, expired_through) = (ttl_ms.clone(), expired_through.clone());
        options.set_compaction_filter("weir-ttl", move |_level: u32, _key: &[u8], value: &[u8]| {
            let ttl = ttl_ms.load(Ordering::Relaxed);
            match value.get(..8) {
                Some(time)
                    if ttl > 0 && !alive(written_at(time), Some(ttl), expired_through.load(Ordering::Relaxed)) =>
                {
                    Decision::Remove
                }
                _ => Decision::Keep,
            }
        });
    }
    options
}

impl<K: Key> RocksDbBackend<K> {
    /// An empty instance in `dir`, which it owns: anything already there is removed first,
    /// and the directory when the backend (and every snapshot still reading it) is dropped.
    pub fn open(dir: &Path) -> Result<Self, String> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("cannot clear {}: {error}", dir.display())),
        }
        weir_core::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Self::open_in(dir, false)
    }

    /// The instance whose checkpoint files (an incremental checkpoint's, see
    /// [`RocksDbBackend::snapshot`]) were put in `dir/db` — [`instance_files_dir`] — owned as
    /// [`RocksDbBackend::open`]'s.
    pub fn open_restored(dir: &Path) -> Result<Self, String> {
        Self::open_in(dir, true)
    }

    fn open_in(dir: &Path, restored: bool) -> Result<Self, String> {
        let owned = Arc::new(OwnedDir(dir.to_path_buf()));
        let path = instance_files_dir(dir);
        let expired_through = Arc::new(AtomicI64::new(EventTime::MIN));
        let mut known = HashMap::new();
        let mut families: Vec<ColumnFamilyDescriptor> =
            ["default", RESTORED, META, TIMERS].map(|name| ColumnFamilyDescriptor::new(name, family_options())).into();
        if restored {
            // Each state's kind and time to live first, for its family's compaction filter.
            let names = DB::list_cf(&Options::default(), &path).map_err(|e| format!("{}: {e}", path.display()))?;
            let reader = DB::open_cf_for_read_only(&Options::default(), &path, &names, false)
                .map_err(|e| format!("cannot open the restored RocksDB files in {}: {e}", path.display()))?;
            let meta = read_meta(&reader).map_err(|e| format!("{}: {e}", path.display()))?;
            drop(reader);
            expired_through.store(meta.expired_through, Ordering::Relaxed);
            for name in names.iter().filter_map(|family| family.strip_prefix("state/")) {
                let (kind, ttl) = *meta.states.get(name).ok_or_else(|| {
                    format!("{}: state {name} has a column family but no record in _meta", path.display())
                })?;
                let ttl_ms = Arc::new(AtomicI64::new(ttl.unwrap_or(0)));
                families.push(ColumnFamilyDescriptor::new(
                    family_name(name),
                    state_family_options(kind, &ttl_ms, &expired_through),
                ));
                known.insert(name.to_owned(), Known { kind, ttl_ms });
            }
        }
        let mut options = family_options();
        // A checkpoint carries the MANIFEST whole, inline in the slot's state file: rolled
        // over small rather than grown to RocksDB's default of 1 GB.
        options.set_max_manifest_file_size(1 << 20);
        with_slot_memory(|memory| options.set_write_buffer_manager(&memory.write_buffers));
        options.create_if_missing(!restored);
        options.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&options, &path, families)
            .map_err(|e| format!("cannot open RocksDB in {}: {e}", path.display()))?;
        // Restored state waiting since a canonical restore, not touched before the checkpoint.
        let mut waiting = BTreeSet::new();
        for item in db.iterator_cf(db.cf_handle(RESTORED).expect("opened"), IteratorMode::Start) {
            let (row, _) = item.map_err(|e| format!("reading {}: {e}", path.display()))?;
            waiting.insert(split_restored_row(&row)?.0.to_owned());
        }
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(RocksDbBackend {
            db,
            states: HashMap::new(),
            known,
            restored: waiting,
            expired_through,
            snapshots: Cell::new(0),
            write,
            key_row: Vec::new(),
            timer_heads: HashMap::new(),
            dir: owned,
            _keys: PhantomData,
        })
    }

    /// Registers `state`, of `kind` and stored as `S`, at its first touch: creates its column
    /// family (or takes the one restored from files) and moves its restored entries there.
    /// Refuses a state touched as another kind or type.
    fn touch<S: 'static>(&mut self, state: &StateName, kind: Kind, codec: impl FnOnce() -> Arc<dyn Codec>) {
        if let Some(touched) = self.states.get(state.name) {
            if touched.stored != TypeId::of::<S>() || touched.kind != kind {
                two_types(state.name)
            }
            return;
        }
        let family = family_name(state.name);
        let options = match self.known.get(state.name) {
            Some(known) if known.kind != kind => panic!(
                "state {}: restored as a {:?} state but used as a {kind:?} state; a state whose kind changed needs a \
                 new name (or start the job afresh)",
                state.name, known.kind
            ),
            Some(known) => {
                known.ttl_ms.store(state.ttl_ms.unwrap_or(0), Ordering::Relaxed);
                None
            }
            None => {
                let ttl_ms = Arc::new(AtomicI64::new(state.ttl_ms.unwrap_or(0)));
                let options = state_family_options(kind, &ttl_ms, &self.expired_through);
                self.db
                    .create_cf(&family, &options)
                    .unwrap_or_else(|e| fail(state.name, "creating its column family", e));
                self.known.insert(state.name.to_owned(), Known { kind, ttl_ms });
                Some(options)
            }
        };
        // Registered (its options with it) before anything can fail: the open instance holds
        // a pointer to the compaction filter the options own.
        let touched = TouchedState {
            family: family.clone(),
            kind,
            stored: TypeId::of::<S>(),
            ttl_ms: state.ttl_ms,
            _options: options,
        };
        self.states.insert(state.name, touched);
        let meta = self.db.cf_handle(META).expect("opened with the instance");
        self.db
            .put_cf_opt(meta, state.name, meta_record(kind, state.ttl_ms), &self.write)
            .unwrap_or_else(|e| fail(state.name, "recording its kind", e));
        if self.restored.remove(state.name) {
            self.load_restored(state.name, &family, &*codec()).unwrap_or_else(|reason| {
                // Checked when restored only as far as its framing: a state that no longer
                // decodes as its declared type is a changed job.
                panic!(
                    "state {}: its restored entries do not load as its declared type ({reason}); a state whose type \
                     changed needs a new name (or start the job afresh)",
                    state.name
                )
            });
        }
    }

    /// Moves state `name`'s restored entries into its own family.
    fn load_restored(&self, name: &str, family: &str, codec: &dyn Codec) -> Result<(), String> {
        let waiting = self.db.cf_handle(RESTORED).expect("opened with the instance");
        let family = self.db.cf_handle(family).expect("created");
        let (from, to) = restored_range(name);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(to.clone());
        let mut batch = WriteBatch::default();
        let mut rows = Vec::new();
        for item in self.db.iterator_cf_opt(waiting, read, IteratorMode::From(&from, Direction::Forward)) {
            let (key, entries) = item.map_err(|e| format!("reading the restored entries: {e}"))?;
            assert!(key.len() == from.len() + 2, "a restored row's key is the state's name and a key group");
            let group = u16::from_be_bytes([key[key.len() - 2], key[key.len() - 1]]) as usize;
            rows.clear();
            codec.import(group, &entries, &mut rows)?;
            for (key, value) in &rows {
                batch.put_cf(family, key, value);
            }
        }
        batch.delete_range_cf(waiting, from, to);
        self.db.write_opt(batch, &self.write).map_err(|e| format!("writing the restored entries: {e}"))
    }

    /// Sets the scratch key row to `key`'s header row; returns the length of the key's prefix
    /// (the key group and the key), which every row of the key starts with.
    fn set_key_row(&mut self, key: &K, now: EventTime) -> usize {
        // Accesses come at or after the bound last expired through (a process function hands
        // records over once event time passes them): so what compaction and snapshots drop
        // as expired can never be read as alive.
        debug_assert!(now >= self.expired_through.load(Ordering::Relaxed), "state accessed before the bound expired");
        key_prefix(key, &mut self.key_row);
        let prefix_len = self.key_row.len();
        self.key_row.push(HEADER);
        prefix_len
    }

    /// State `state`'s column family and time to live.
    fn family(&self, state: &StateName) -> (&::rocksdb::ColumnFamily, Option<i64>) {
        let touched = &self.states[state.name];
        (self.db.cf_handle(&touched.family).expect("created at the first touch"), touched.ttl_ms)
    }

    /// The key's header row (the scratch key row), if set; `None` too if expired at `now`,
    /// and then the key's rows are deleted.
    fn live_header(&self, state: &StateName, prefix_len: usize, now: EventTime) -> Option<Vec<u8>> {
        let (family, ttl) = self.family(state);
        let value =
            self.db.get_pinned_cf(family, &self.key_row).unwrap_or_else(|e| fail(state.name, "reading it", e))?;
        if ttl.is_some_and(|ttl| now >= written_at(&value).saturating_add(ttl)) {
            let mut batch = WriteBatch::default();
            self.delete_rows(state, prefix_len, &mut batch);
            self.write(state, batch);
            return None;
        }
        Some(value.to_vec())
    }

    /// Adds the deletion of every row of the key (the scratch key row's prefix) to `batch`:
    /// point deletes, not a range tombstone per key, which would slow every later read.
    fn delete_rows(&self, state: &StateName, prefix_len: usize, batch: &mut WriteBatch) {
        let (family, _) = self.family(state);
        let prefix = &self.key_row[..prefix_len];
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(concat(&[prefix, &[ELEMENT + 1]]));
        for item in self.db.iterator_cf_opt(family, read, IteratorMode::From(prefix, Direction::Forward)) {
            let (row, _) = item.unwrap_or_else(|e| fail(state.name, "reading it", e));
            batch.delete_cf(family, row);
        }
    }

    /// The key's elements (rows tagged [`ELEMENT`]), `(row key after the tag, value)`.
    fn elements(&self, state: &StateName, prefix_len: usize) -> Vec<Row> {
        let (family, _) = self.family(state);
        let prefix = &self.key_row[..prefix_len];
        let from = concat(&[prefix, &[ELEMENT]]);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(concat(&[prefix, &[ELEMENT + 1]]));
        self.db
            .iterator_cf_opt(family, read, IteratorMode::From(&from, Direction::Forward))
            .map(|item| {
                let (row, value) = item.unwrap_or_else(|e| fail(state.name, "reading it", e));
                (row[from.len()..].into(), value)
            })
            .collect()
    }

    fn write(&self, state: &StateName, batch: WriteBatch) {
        self.db.write_opt(batch, &self.write).unwrap_or_else(|e| fail(state.name, "writing it", e))
    }

    fn get(&self, state: &StateName, row: &[u8]) -> Option<::rocksdb::DBPinnableSlice<'_>> {
        let (family, _) = self.family(state);
        self.db.get_pinned_cf(family, row).unwrap_or_else(|e| fail(state.name, "reading it", e))
    }

    /// Queue `queue`'s head, with what writing its rows takes.
    fn timer_head(&mut self, queue: &TimerQueue) -> TimerAccess<'_> {
        let RocksDbBackend { timer_heads, db, write, .. } = self;
        let head = timer_heads
            .entry(queue.name())
            .or_insert_with(|| TimerHead { floor: concat(&[queue.name().as_bytes(), &[0]]), first: None });
        TimerAccess { head, family: db.cf_handle(TIMERS).expect("opened with the instance"), db, write }
    }

    /// The time of queue `queue`'s first timer, if it has one (its row is then cached).
    fn first_timer(&mut self, queue: &TimerQueue) -> Option<EventTime> {
        let TimerAccess { head, family, db, .. } = self.timer_head(queue);
        if head.first.is_none() {
            let mut read = ReadOptions::default();
            read.set_iterate_upper_bound(concat(&[queue.name().as_bytes(), &[1]]));
            let mut rows = db.iterator_cf_opt(family, read, IteratorMode::From(&head.floor, Direction::Forward));
            let first = rows.next().map(|item| {
                let (row, _) = item.unwrap_or_else(|e| fail_timers(queue, "reading them", e));
                (timer_time(queue, &row), Vec::from(row))
            });
            head.first = Some(first);
        }
        head.first.as_ref().expect("known").as_ref().map(|(time, _)| *time)
    }
}

/// A timer queue's head, the timers' family, the instance and its write options.
struct TimerAccess<'a> {
    head: &'a mut TimerHead,
    family: &'a ::rocksdb::ColumnFamily,
    db: &'a DB,
    write: &'a WriteOptions,
}

/// A timer's row: the queue's name, a NUL, the time (sign bit flipped, big-endian: rows sort
/// by time), then the key's group and encoding.
fn timer_row<K: Key>(queue: &str, time: EventTime, key: &K) -> Vec<u8> {
    let mut key_part = Vec::new();
    key_prefix(key, &mut key_part);
    concat(&[queue.as_bytes(), &[0], &((time as u64) ^ (1 << 63)).to_be_bytes(), &key_part])
}

/// The time in timer queue `queue`'s row `row` (see [`timer_row`]).
fn timer_time(queue: &TimerQueue, row: &[u8]) -> EventTime {
    let time = row
        .get(queue.name().len() + 1..)
        .and_then(|rest| rest.get(..8))
        .unwrap_or_else(|| panic!("timer queue {}: a row on the local disk is too short to hold a time", queue.name()));
    (u64::from_be_bytes(time.try_into().expect("eight bytes")) ^ (1 << 63)) as EventTime
}

/// A timer's row split: queue, time, key group and key (see [`timer_row`]).
fn split_timer_row<K: Key>(row: &[u8]) -> Result<(&str, EventTime, usize, K), String> {
    let split = row.iter().position(|byte| *byte == 0).ok_or("a timer's row has no queue name")?;
    let queue = std::str::from_utf8(&row[..split]).map_err(|e| format!("a timer queue's name: {e}"))?;
    let rest = &row[split + 1..];
    if rest.len() < 8 + 2 {
        return Err(format!("timer queue {queue}: a row is too short to hold a time, a key group and a key"));
    }
    let time = (u64::from_be_bytes(rest[..8].try_into().expect("eight bytes")) ^ (1 << 63)) as EventTime;
    let (key, _) = split_key::<K>(&rest[8..]).map_err(|e| format!("timer queue {queue}: {e}"))?;
    Ok((queue, time, u16::from_be_bytes([rest[8], rest[9]]) as usize, key))
}

/// RocksDB failing on the local disk while reading or writing timers (see [`fail`]).
fn fail_timers(queue: &TimerQueue, doing: &str, error: ::rocksdb::Error) -> ! {
    fail(&format!("timer queue {}", queue.name()), doing, error)
}

impl<K: Key> StateBackend<K> for RocksDbBackend<K> {
    fn value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Option<V> {
        self.touch::<V>(state, Kind::Value, || Arc::new(ValueCodec::<K, V>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        let value = self.live_header(state, prefix_len, at.now)?;
        Some(decode(state, &value[8..]))
    }
    fn set_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V) {
        self.touch::<V>(state, Kind::Value, || Arc::new(ValueCodec::<K, V>(PhantomData)));
        self.set_key_row(at.key, at.now);
        let mut stamped = at.now.to_le_bytes().to_vec();
        bincode::serialize_into(&mut stamped, &value).expect("state serializes");
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(state).0, &self.key_row, stamped);
        self.write(state, batch);
    }
    fn list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<V> {
        self.touch::<Vec<V>>(state, Kind::List, || Arc::new(ListCodec::<K, V>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        if self.live_header(state, prefix_len, at.now).is_none() {
            return Vec::new();
        }
        self.elements(state, prefix_len).iter().map(|(_, value)| decode(state, value)).collect()
    }
    fn append<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, value: V) {
        self.touch::<Vec<V>>(state, Kind::List, || Arc::new(ListCodec::<K, V>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        let next = self.live_header(state, prefix_len, at.now).map_or(0, |header| header_count(&header));
        let family = self.family(state).0;
        let mut batch = WriteBatch::default();
        batch.put_cf(family, &self.key_row, header(at.now, next + 1));
        let element = concat(&[&self.key_row[..prefix_len], &[ELEMENT], &next.to_be_bytes()]);
        batch.put_cf(family, element, bincode::serialize(&value).expect("state serializes"));
        self.write(state, batch);
    }
    fn set_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>, values: Vec<V>) {
        self.touch::<Vec<V>>(state, Kind::List, || Arc::new(ListCodec::<K, V>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        let mut batch = WriteBatch::default();
        if self.get(state, &self.key_row).is_some() {
            self.delete_rows(state, prefix_len, &mut batch);
        }
        if !values.is_empty() {
            let family = self.family(state).0;
            batch.put_cf(family, &self.key_row, header(at.now, values.len() as u64));
            for (index, value) in values.iter().enumerate() {
                let element = concat(&[&self.key_row[..prefix_len], &[ELEMENT], &(index as u64).to_be_bytes()]);
                batch.put_cf(family, element, bincode::serialize(value).expect("state serializes"));
            }
        }
        self.write(state, batch);
    }
    fn map_get<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) -> Option<UV> {
        self.touch::<BTreeMap<UK, UV>>(state, Kind::Map, || Arc::new(MapCodec::<K, UK, UV>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        self.live_header(state, prefix_len, at.now)?;
        let value = self.get(state, &entry_row(&self.key_row[..prefix_len], user_key))?;
        Some(decode(state, &value))
    }
    fn map_put<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: UK, value: UV) {
        self.touch::<BTreeMap<UK, UV>>(state, Kind::Map, || Arc::new(MapCodec::<K, UK, UV>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        let entry = entry_row(&self.key_row[..prefix_len], &user_key);
        let count = match self.live_header(state, prefix_len, at.now) {
            Some(header) => header_count(&header) + u64::from(self.get(state, &entry).is_none()),
            None => 1,
        };
        let family = self.family(state).0;
        let mut batch = WriteBatch::default();
        batch.put_cf(family, &self.key_row, header(at.now, count));
        batch.put_cf(family, entry, bincode::serialize(&value).expect("state serializes"));
        self.write(state, batch);
    }
    fn map_remove<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>, user_key: &UK) {
        self.touch::<BTreeMap<UK, UV>>(state, Kind::Map, || Arc::new(MapCodec::<K, UK, UV>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        let Some(header_row) = self.live_header(state, prefix_len, at.now) else { return };
        let entry = entry_row(&self.key_row[..prefix_len], user_key);
        if self.get(state, &entry).is_none() {
            return;
        }
        let count = header_count(&header_row).checked_sub(1).expect("a map's header counts its entries");
        let family = self.family(state).0;
        let mut batch = WriteBatch::default();
        batch.delete_cf(family, entry);
        if count == 0 {
            batch.delete_cf(family, &self.key_row);
        } else {
            // Removing an entry does not renew the map's time to live (as in memory).
            batch.put_cf(family, &self.key_row, header(written_at(&header_row), count));
        }
        self.write(state, batch);
    }
    fn map_entries<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) -> Vec<(UK, UV)> {
        self.touch::<BTreeMap<UK, UV>>(state, Kind::Map, || Arc::new(MapCodec::<K, UK, UV>(PhantomData)));
        let prefix_len = self.set_key_row(at.key, at.now);
        if self.live_header(state, prefix_len, at.now).is_none() {
            return Vec::new();
        }
        let mut entries: Vec<(UK, UV)> = self
            .elements(state, prefix_len)
            .iter()
            .map(|(user_key, value)| (decode(state, user_key), decode(state, value)))
            .collect();
        // Rows come in the order of the user keys' encodings; entries go in the keys' order.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }
    fn clear_value<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.touch::<V>(state, Kind::Value, || Arc::new(ValueCodec::<K, V>(PhantomData)));
        self.set_key_row(at.key, at.now);
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.family(state).0, &self.key_row);
        self.write(state, batch);
    }
    fn clear_list<V: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.touch::<Vec<V>>(state, Kind::List, || Arc::new(ListCodec::<K, V>(PhantomData)));
        self.clear_collection(state, at);
    }
    fn clear_map<UK: Key, UV: Data>(&mut self, state: &StateName, at: &Access<'_, K>) {
        self.touch::<BTreeMap<UK, UV>>(state, Kind::Map, || Arc::new(MapCodec::<K, UK, UV>(PhantomData)));
        self.clear_collection(state, at);
    }
    fn register_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime) {
        let row = timer_row(queue.name(), time, key);
        let TimerAccess { head, family, db, write } = self.timer_head(queue);
        db.put_cf_opt(family, &row, [], write).unwrap_or_else(|e| fail_timers(queue, "writing one", e));
        if row < head.floor {
            head.floor.clone_from(&row);
        }
        if let Some(first) = &mut head.first {
            if first.as_ref().is_none_or(|(_, first)| row < *first) {
                *first = Some((time, row));
            }
        }
    }
    fn delete_timer(&mut self, queue: &TimerQueue, key: &K, time: EventTime) {
        let row = timer_row(queue.name(), time, key);
        let TimerAccess { head, family, db, write } = self.timer_head(queue);
        db.delete_cf_opt(family, &row, write).unwrap_or_else(|e| fail_timers(queue, "deleting one", e));
        if head.first.as_ref().is_some_and(|first| first.as_ref().is_some_and(|(_, first)| *first == row)) {
            // It was the first: every timer left sorts after it.
            head.floor = row;
            head.first = None;
        }
    }
    fn next_timer(&mut self, queue: &TimerQueue) -> Option<EventTime> {
        self.first_timer(queue)
    }
    fn pop_timer(&mut self, queue: &TimerQueue, before: EventTime) -> Option<(EventTime, K)> {
        if self.first_timer(queue)? >= before {
            return None;
        }
        let TimerAccess { head, family, db, write } = self.timer_head(queue);
        let (time, row) = head.first.take().flatten().expect("the first timer is known");
        db.delete_cf_opt(family, &row, write).unwrap_or_else(|e| fail_timers(queue, "deleting one", e));
        let (_, _, _, key) = split_timer_row::<K>(&row)
            .unwrap_or_else(|e| panic!("{e}: a timer's row on the local disk does not decode (was it changed?)"));
        // Every timer left sorts after the one popped: reads start there.
        head.floor = row;
        Some((time, key))
    }
    fn expire(&mut self, now: EventTime) {
        self.expired_through.fetch_max(now, Ordering::Relaxed);
    }
    fn snapshot(&self) -> StateImage {
        let number = self.snapshots.get();
        self.snapshots.set(number + 1);
        // Recorded in the instance, so that its checkpoint carries it: what had expired stays
        // out of snapshots after a restore from the files too.
        let expired_through = self.expired_through.load(Ordering::Relaxed);
        let meta = self.db.cf_handle(META).expect("opened with the instance");
        let recorded = self.db.put_cf_opt(meta, EXPIRED_THROUGH, expired_through.to_le_bytes(), &self.write);
        // Removed when the last image holding it is dropped (encoded, uploaded, or a checkpoint
        // that failed); the instance's directory stays while an image holds a share of it, even
        // if the operator is gone (it finished, and its last epochs' images are still queued).
        let checkpoint = OwnedDir(self.dir.0.join(format!("snapshot-{number}")));
        let path = checkpoint.0.clone();
        // RocksDB's own call, on the slot's thread: flush, then hard links.
        let taken = recorded
            .and_then(|()| Checkpoint::new(&self.db).and_then(|rocksdb| rocksdb.create_checkpoint(&path)))
            .map_err(|e| format!("RocksDB checkpoint into {}: {e}", path.display()));
        // Fields drop in order: the checkpoint, then (if last) the instance's directory.
        let files = Arc::new(StateFiles::new(path.clone(), (checkpoint, self.dir.clone())));
        StateImage::with_files(files, move |form| {
            taken.clone()?;
            match form {
                Form::BesideFiles => Ok(Vec::new()),
                Form::Canonical => {
                    export::<K>(&path).map_err(|e| format!("reading the RocksDB checkpoint in {}: {e}", path.display()))
                }
            }
        })
    }
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        let waiting = self.db.cf_handle(RESTORED).expect("opened with the instance");
        let timers = self.db.cf_handle(TIMERS).expect("opened with the instance");
        let mut batch = WriteBatch::default();
        let mut seen = BTreeSet::new();
        let mut seen_timers = BTreeSet::new();
        for (group, name, entries) in split_groups(states)? {
            if let Some(queue) = timer_queue_of(&name) {
                // Timers have no type but the key's, known here: written into their rows now.
                for (time, key) in decode_timers::<K>(queue, group, &entries)? {
                    let row = timer_row(queue, time, &key);
                    if !seen_timers.insert(row.clone()) {
                        return Err(format!("timer queue {queue}: key group {group}: a timer appears twice"));
                    }
                    batch.put_cf(timers, row, []);
                }
                self.timer_heads.clear();
                continue;
            }
            assert!(!self.states.contains_key(name.as_str()), "state {name} restored after it was touched");
            let group = u16::try_from(group).map_err(|_| format!("key group {group} is out of range"))?;
            if !seen.insert((name.clone(), group)) {
                return Err(format!("state {name}: key group {group} appears twice"));
            }
            batch.put_cf(waiting, restored_row(&name, group), entries);
            self.restored.insert(name);
        }
        self.db.write_opt(batch, &self.write).map_err(|e| format!("writing restored state into RocksDB: {e}"))
    }
}

impl<K: Key> RocksDbBackend<K> {
    /// Deletes every row of a list's or map's key.
    fn clear_collection(&mut self, state: &StateName, at: &Access<'_, K>) {
        let prefix_len = self.set_key_row(at.key, at.now);
        if self.get(state, &self.key_row).is_some() {
            let mut batch = WriteBatch::default();
            self.delete_rows(state, prefix_len, &mut batch);
            self.write(state, batch);
        }
    }
}

/// Every state of the checkpoint at `path` in the canonical encoding, by key group: each
/// state by the kind and time to live `_meta` records, so that no state's types are needed.
fn export<K: Key>(path: &Path) -> Result<KeyGroupStates, String> {
    let names = DB::list_cf(&Options::default(), path).map_err(|e| e.to_string())?;
    let db = DB::open_cf_for_read_only(&Options::default(), path, &names, false).map_err(|e| e.to_string())?;
    let meta = read_meta(&db)?;
    let mut groups: BTreeMap<usize, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (name, &(kind, ttl_ms)) in &meta.states {
        let family = db.cf_handle(&family_name(name)).ok_or_else(|| format!("state {name} is missing from it"))?;
        let live = |written: EventTime| alive(written, ttl_ms, meta.expired_through);
        // One key group's rows at a time.
        let mut rows: Vec<Row> = Vec::new();
        let mut flush = |rows: &mut Vec<Row>| -> Result<(), String> {
            if let Some((first, _)) = rows.first() {
                let group = u16::from_be_bytes([first[0], first[1]]) as usize;
                let entries = match kind {
                    Kind::Value => export_values::<K>(rows, &live),
                    Kind::List => export_lists::<K>(rows, &live),
                    Kind::Map => export_maps::<K>(rows, &live),
                };
                if let Some(entries) = entries.map_err(|e| format!("state {name}: {e}"))? {
                    groups.entry(group).or_default().push((name.clone(), entries));
                }
            }
            rows.clear();
            Ok(())
        };
        for item in db.iterator_cf(family, IteratorMode::Start) {
            let (row, value) = item.map_err(|e| format!("state {name}: {e}"))?;
            if row.len() < 3 {
                return Err(format!("state {name}: a row's key is too short to hold a key group and a key"));
            }
            if rows.first().is_some_and(|(first, _)| first[..2] != row[..2]) {
                flush(&mut rows)?;
            }
            rows.push((row, value));
        }
        flush(&mut rows)?;
    }
    // Timers, by queue and key group, each group's in firing order by time and then key (rows
    // of one time come in the order of the keys' encodings).
    if let Some(family) = db.cf_handle(TIMERS) {
        let mut queues: BTreeMap<(String, usize), Vec<(EventTime, K)>> = BTreeMap::new();
        for item in db.iterator_cf(family, IteratorMode::Start) {
            let (row, _) = item.map_err(|e| format!("timers: {e}"))?;
            let (queue, time, group, key) = split_timer_row::<K>(&row)?;
            queues.entry((queue.to_owned(), group)).or_default().push((time, key));
        }
        for ((queue, group), mut timers) in queues {
            timers.sort();
            let bytes = bincode::serialize(&timers).expect("timers serialize");
            groups.entry(group).or_default().push((timer_state_name(&queue), bytes));
        }
    }
    // Restored state not touched since goes out as it came.
    let waiting = db.cf_handle(RESTORED).ok_or("the restored state's family is missing from it")?;
    for item in db.iterator_cf(waiting, IteratorMode::Start) {
        let (row, entries) = item.map_err(|e| e.to_string())?;
        let (name, group) = split_restored_row(&row)?;
        groups.entry(group).or_default().push((name.to_owned(), entries.into_vec()));
    }
    Ok(assemble_groups(groups))
}

/// The concatenation of `parts`.
fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The row of `_restored` holding state `name`'s entries of key group `group`.
fn restored_row(name: &str, group: u16) -> Vec<u8> {
    concat(&[name.as_bytes(), &[0], &group.to_be_bytes()])
}

/// A row of `_restored`: the state's name and the key group.
fn split_restored_row(row: &[u8]) -> Result<(&str, usize), String> {
    let split = row.len().checked_sub(3).ok_or("a restored row's key is too short")?;
    let name = std::str::from_utf8(&row[..split]).map_err(|e| format!("a restored state's name: {e}"))?;
    Ok((name, u16::from_be_bytes([row[split + 1], row[split + 2]]) as usize))
}

/// Rows of `_restored` holding state `name`: `[name 0, name 1)`.
fn restored_range(name: &str) -> (Vec<u8>, Vec<u8>) {
    (concat(&[name.as_bytes(), &[0]]), concat(&[name.as_bytes(), &[1]]))
}

/// Whether a row written at `written` is still alive once event time passed `passed`.
fn alive(written: EventTime, ttl_ms: Option<i64>, passed: EventTime) -> bool {
    ttl_ms.is_none_or(|ttl| passed < written.saturating_add(ttl))
}

fn written_at(bytes: &[u8]) -> EventTime {
    EventTime::from_le_bytes(bytes[..8].try_into().expect("a row starts with its time"))
}

/// A list's or map's header: the time it was last written, and a count.
fn header(written: EventTime, count: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&written.to_le_bytes());
    bytes[8..].copy_from_slice(&count.to_le_bytes());
    bytes
}

fn header_count(header: &[u8]) -> u64 {
    u64::from_le_bytes(header[8..16].try_into().expect("a header holds a count"))
}

/// The row key prefix of `key`: its key group, then its encoding.
fn key_prefix<K: Key>(key: &K, out: &mut Vec<u8>) {
    out.clear();
    let group = u16::try_from(key_group_of(key)).expect("key groups fit two bytes");
    out.extend_from_slice(&group.to_be_bytes());
    bincode::serialize_into(&mut *out, key).expect("keys serialize");
}

fn entry_row<UK: Key>(prefix: &[u8], user_key: &UK) -> Vec<u8> {
    let mut row = concat(&[prefix, &[ELEMENT]]);
    bincode::serialize_into(&mut row, user_key).expect("keys serialize");
    row
}

fn decode<T: Data>(state: &StateName, bytes: &[u8]) -> T {
    bincode::deserialize(bytes).unwrap_or_else(|e| {
        panic!(
            "state {}: a stored value does not decode as its declared type ({e}); a state whose type changed \
                 needs a new name (or start the job afresh)",
            state.name
        )
    })
}

/// RocksDB failing on the local disk: the slot cannot go on (it restarts from the last
/// checkpoint, as a Flink task does).
fn fail(state: &str, doing: &str, error: ::rocksdb::Error) -> ! {
    panic!(
        "state {state}: RocksDB failed while {doing} on the local disk: {error} (check the space and permissions \
         of --local-state-dir)"
    )
}

/// The key at the start of `row` (after its key group) and where its encoding ends.
fn split_key<K: Key>(row: &[u8]) -> Result<(K, usize), String> {
    let key: K = bincode::deserialize(&row[2..]).map_err(|e| format!("a row's key does not decode: {e}"))?;
    let length = bincode::serialized_size(&key).map_err(|e| e.to_string())? as usize;
    Ok((key, 2 + length))
}

/// A row as RocksDB returns it: key and value.
type Row = (Box<[u8]>, Box<[u8]>);

/// The types a codec is for.
type Types<T> = PhantomData<fn() -> T>;

/// How a state's canonical entries become rows (the way back needs no types: see
/// [`export_values`], [`export_lists`] and [`export_maps`]).
trait Codec: Send + Sync {
    /// Appends the rows of key group `group`'s canonical entries (`Vec<(K, Stamped<S>)>`).
    fn import(&self, group: usize, canonical: &[u8], rows: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String>;
}

/// Joins `(key, entry bytes)` in key order into the canonical `bincode` of a `Vec`.
fn canonical<K: Ord>(mut entries: Vec<(K, Vec<u8>)>) -> Option<Vec<u8>> {
    if entries.is_empty() {
        return None;
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut bytes = (entries.len() as u64).to_le_bytes().to_vec();
    for (_, entry) in entries {
        bytes.extend_from_slice(&entry);
    }
    Some(bytes)
}

struct ValueCodec<K, V>(Types<(K, V)>);

impl<K: Key, V: Data> Codec for ValueCodec<K, V> {
    fn import(&self, group: usize, canonical: &[u8], rows: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        let entries: Vec<(K, Stamped<V>)> = crate::keyed::decode_state(canonical)?;
        for (key, stamped) in entries {
            check_group(&key, group)?;
            let mut row = Vec::new();
            key_prefix(&key, &mut row);
            row.push(HEADER);
            let mut value = stamped.written.to_le_bytes().to_vec();
            bincode::serialize_into(&mut value, &stamped.value).expect("state serializes");
            rows.push((row, value));
        }
        Ok(())
    }
}

/// The canonical entries of one key group's rows of a value state (in key order), leaving out
/// keys whose write time `live` rejects; `None` if none is left.
fn export_values<K: Key>(rows: &[Row], live: &dyn Fn(EventTime) -> bool) -> Result<Option<Vec<u8>>, String> {
    let mut entries = Vec::with_capacity(rows.len());
    for (row, value) in rows {
        let (key, end) = split_key::<K>(row)?;
        if row[end..] != [HEADER] || value.len() < 8 {
            return Err("a value row is malformed".into());
        }
        let written = written_at(value);
        if live(written) {
            // Canonical: the key, the value, then the time.
            entries.push((key, concat(&[&row[2..end], &value[8..], &written.to_le_bytes()])));
        }
    }
    Ok(canonical(entries))
}

struct ListCodec<K, V>(Types<(K, V)>);

impl<K: Key, V: Data> Codec for ListCodec<K, V> {
    fn import(&self, group: usize, canonical: &[u8], rows: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        import_collections::<K, Vec<V>>(group, canonical, rows, Vec::len, |prefix, list, rows| {
            for (index, element) in list.iter().enumerate() {
                let row = concat(&[prefix, &[ELEMENT], &(index as u64).to_be_bytes()]);
                rows.push((row, bincode::serialize(element).expect("state serializes")));
            }
        })
    }
}

/// [`export_values`] for a list state: each list its elements' encodings in order.
fn export_lists<K: Key>(rows: &[Row], live: &dyn Fn(EventTime) -> bool) -> Result<Option<Vec<u8>>, String> {
    export_collections::<K>(rows, live, |elements| {
        let mut bytes = (elements.len() as u64).to_le_bytes().to_vec();
        for (_, value) in elements {
            bytes.extend_from_slice(value);
        }
        bytes
    })
}

/// [`export_values`] for a map state: each map's entries in the order of their keys'
/// encodings, the rows' order (the memory backend encodes a map in that order too).
fn export_maps<K: Key>(rows: &[Row], live: &dyn Fn(EventTime) -> bool) -> Result<Option<Vec<u8>>, String> {
    export_collections::<K>(rows, live, |entries| {
        let mut bytes = (entries.len() as u64).to_le_bytes().to_vec();
        for (user_key, value) in entries {
            bytes.extend_from_slice(user_key);
            bytes.extend_from_slice(value);
        }
        bytes
    })
}

struct MapCodec<K, UK, UV>(Types<(K, UK, UV)>);

impl<K: Key, UK: Key, UV: Data> Codec for MapCodec<K, UK, UV> {
    fn import(&self, group: usize, canonical: &[u8], rows: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        import_collections::<K, BTreeMap<UK, UV>>(group, canonical, rows, BTreeMap::len, |prefix, map, rows| {
            for (user_key, value) in map {
                rows.push((entry_row(prefix, user_key), bincode::serialize(value).expect("state serializes")));
            }
        })
    }
}

/// The rows of lists or maps (`C`) from key group `group`'s canonical entries: each key's
/// header (write time and `len`), then the rows `elements` makes under the key's prefix.
fn import_collections<K: Key, C: Data>(
    group: usize,
    canonical: &[u8],
    rows: &mut Vec<(Vec<u8>, Vec<u8>)>,
    len: fn(&C) -> usize,
    elements: impl Fn(&[u8], &C, &mut Vec<(Vec<u8>, Vec<u8>)>),
) -> Result<(), String> {
    let entries: Vec<(K, Stamped<C>)> = crate::keyed::decode_state(canonical)?;
    let mut prefix = Vec::new();
    for (key, stamped) in entries {
        check_group(&key, group)?;
        key_prefix(&key, &mut prefix);
        rows.push((concat(&[&prefix, &[HEADER]]), header(stamped.written, len(&stamped.value) as u64).to_vec()));
        elements(&prefix, &stamped.value, rows);
    }
    Ok(())
}

/// The canonical entries of lists or maps: each key's header and elements (`(row key after
/// the tag, value)`) joined by `collection` into the stored value's encoding.
fn export_collections<K: Key>(
    rows: &[Row],
    live: &dyn Fn(EventTime) -> bool,
    collection: impl Fn(&[(&[u8], &[u8])]) -> Vec<u8>,
) -> Result<Option<Vec<u8>>, String> {
    let mut entries = Vec::new();
    let mut index = 0;
    while index < rows.len() {
        let (row, value) = &rows[index];
        let (key, end) = split_key::<K>(row)?;
        if row[end..] != [HEADER] || value.len() != 16 {
            return Err("a list's or map's element has no header".into());
        }
        let written = written_at(value);
        let mut elements: Vec<(&[u8], &[u8])> = Vec::new();
        index += 1;
        while let Some((element, value)) = rows.get(index) {
            if element.len() <= end || element[..end] != row[..end] || element[end] != ELEMENT {
                break;
            }
            elements.push((&element[end + 1..], value));
            index += 1;
        }
        if live(written) {
            let stored = collection(&elements);
            entries.push((key, concat(&[&row[2..end], &stored, &written.to_le_bytes()])));
        }
    }
    Ok(canonical(entries))
}

fn check_group<K: Key>(key: &K, group: usize) -> Result<(), String> {
    if key_group_of(key) == group {
        Ok(())
    } else {
        Err(format!("an entry of key group {} was restored in key group {group}", key_group_of(key)))
    }
}

/// A store reopened in `dir` on a copy of a checkpoint's `files`, as a slot restores an
/// incremental checkpoint (for tests).
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the test copies checkpoint files with std::fs
pub(crate) fn reopened_from<K: Key>(files: &StateFiles, dir: &Path) -> RocksDbBackend<K> {
    let target = instance_files_dir(dir);
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(files.dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    RocksDbBackend::open_restored(dir).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block cache of a slot's instances, as RocksDB reports it.
    fn block_cache_capacity(backend: &RocksDbBackend<u64>) -> u64 {
        backend.db.property_int_value("rocksdb.block-cache-capacity").unwrap().expect("a block cache")
    }

    #[test]
    fn a_key_that_encodes_to_nothing_has_timers_too() {
        let root = tempfile::tempdir().unwrap();
        let mut backend = RocksDbBackend::<()>::open(&root.path().join("db")).unwrap();
        let queue = TimerQueue::new("q");
        backend.register_timer(&queue, &(), -5);
        backend.register_timer(&queue, &(), 7);
        assert_eq!(backend.pop_timer(&queue, 0), Some((-5, ())));
        assert_eq!(backend.pop_timer(&queue, 0), None);
        let snapshot = backend.snapshot().encode();
        let mut restored = RocksDbBackend::<()>::open(&root.path().join("again")).unwrap();
        restored.restore(snapshot).unwrap();
        assert_eq!(restored.pop_timer(&queue, EventTime::MAX), Some((7, ())));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's own threads, one slot each
    fn a_slots_instances_share_the_memory_its_thread_was_given() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        let capacities = std::thread::spawn(move || {
            super::super::set_slot_memory(64 << 20);
            let first = RocksDbBackend::<u64>::open(&dir.join("first")).unwrap();
            let second = RocksDbBackend::<u64>::open(&dir.join("second")).unwrap();
            let shared = with_slot_memory(|memory| memory.budget);
            (block_cache_capacity(&first), block_cache_capacity(&second), shared)
        })
        .join()
        .unwrap();
        assert_eq!(capacities, (32 << 20, 32 << 20, 64 << 20), "half the budget is the one cache");
        let dir = root.path().join("default");
        let default = std::thread::spawn(move || block_cache_capacity(&RocksDbBackend::<u64>::open(&dir).unwrap()))
            .join()
            .unwrap();
        assert_eq!(default, super::super::DEFAULT_SLOT_MEMORY_BYTES / 2, "a thread not given any: the default");
        // Given another budget once its instances share one, a slot fails loudly.
        let dir = root.path().join("late");
        let late = std::thread::spawn(move || {
            let _open = RocksDbBackend::<u64>::open(&dir).unwrap();
            super::super::set_slot_memory(256 << 20);
        })
        .join();
        assert!(late.is_err(), "setting the budget after the first instance opened panics");
    }
}
