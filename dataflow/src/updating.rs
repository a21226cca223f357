//! Updating streams: results that change as records arrive — an aggregate without a window, a
//! Top-N — computed on differential dataflow and written out as a changelog.
//!
//! **Why differential.** An updating result must retract exactly what it said before: a group's
//! `MAX` falls back when the row that held it is retracted upstream, an average over groups
//! moves when one group's value changes. Differential dataflow maintains each operator's input
//! as a multiset of `(data, time, diff)` updates and recomputes a key from that multiset
//! whenever it changes, so retractions are exact by construction and nothing is hand-written
//! per operator.
//!
//! **Time.** An update's time is the dataflow's own `(epoch, event time)`, product-ordered (a
//! lattice: [`weir_core::time::Time`]). A record enters at its event time, lifted to the
//! watermark it was read under when it is behind it (so that it is never behind the message
//! carrying it). The accumulated result at event time `t` is then the query over the records
//! with event time `<= t`, whatever epochs they arrived in: the changelog below is a function of
//! the input alone, the same at any parallelism and through failures.
//!
//! **Three parts.**
//! - *Entry* ([`KeyedStream::updating`]): a scaffold operator that passes each record on as an
//!   insertion and keeps a copy of it, by key group, as its state. Or, where the first step
//!   over an append-only stream is a fold of each key's records into the key's rows (an
//!   aggregate, a Top-N), *a fold* ([`KeyedStream::fold_updating`]): a scaffold operator that
//!   keeps each key's accumulator and passes on only the changes of the key's rows. No record is
//!   ever retracted from an append-only stream, so the accumulator needs no history; it never
//!   enters differential's arrangements, which would hold and merge every record.
//! - *Inside* ([`UpdatingStream`]): differential operators over arrangements local to the slot.
//!   Timely workers here have one peer each (a slot is one worker), so differential's own
//!   exchange never leaves the slot; changing the key ([`UpdatingStream::key_by`]) routes the
//!   updates through Weir's exchange, which carries frontiers and credits like any other.
//! - *Exit* ([`UpdatingStream::changelog`]): a scaffold operator that holds the updates of each
//!   event time until event time passes it, then turns their sum into Flink's changelog — per key,
//!   `-U`/`+U` for a changed row, `+I` for a new one, `-D` for a deleted one — in event-time order,
//!   then key order. It keeps no table: in builds with debug assertions it keeps one, to check
//!   that the changelog never retracts a row it did not emit.
//!
//! A fold whose rows go to the changelog through nothing but row-by-row maps needs no
//! differential operator at all: [`KeyedStream::fold_changelog`] is the fold and the exit in one
//! scaffold operator, writing the same changelog, row for row. Being its own exit, it emits a
//! key's change exactly when event time passes it, so its checkpointed state is the
//! accumulators and rows plus the records event time has not passed — not every record.
//!
//! **Checkpoints.** Differential's arrangements are not snapshotted: they are a function of the
//! entries' inputs. A checkpoint holds the entries' and folds' records (every record of epochs
//! `<= c`; a fold recomputes its accumulators from them, and its changes at the same times) and
//! the event time each exit had passed. A restore feeds the records in again; the region
//! recomputes, and the exit drops what it recomputes below the event time it had passed (already
//! in committed output) and holds the rest, exactly as the first run held it. The records are
//! kept encoded ([`crate::record_log`]), so a checkpoint copies none of them. The cost: an entry
//! keeps its input twice (its log and differential's arrangement), and a fold keeps its input
//! where its accumulators alone would do. A fold entering differential cannot snapshot its
//! accumulators instead: a restore would have to feed them in as one base, below the event time
//! every exit downstream had passed — and an exit behind a join with a slower input passes less
//! than the fold did, so changes the fold had made and that exit had not yet emitted would be
//! inside the base, and lost. (A fold that is its own exit, above, has no such gap.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::order::PartialOrder;

use weir_core::time::{EventTime, Time};

use crate::alignment::Group;
use crate::api::{DataStream, KeyedStream, Shared};
use crate::keyed::{key_group_of, KeySelector};
use crate::record::{Data, Record, RecordStream};
use crate::record_log::RecordLog;
use crate::stateful::{KeyGroupStates, StateImage, StatefulLogic};

/// What may flow through differential operators: a Weir record that is also totally ordered
/// (arrangements sort by it) and printable (differential's errors show it).
pub trait UpdateData: Data + Ord + Debug {}
impl<T: Data + Ord + Debug> UpdateData for T {}

/// A key of an updating stream.
pub trait UpdateKey: UpdateData + Hash {}
impl<T: UpdateData + Hash> UpdateKey for T {}

/// A changing collection of `(key, value)` rows, partitioned by key across slots: differential
/// dataflow's collection, with the job it belongs to.
pub struct UpdatingStream<'s, K: UpdateKey, V: UpdateData> {
    updates: VecCollection<'s, Time, (K, V), isize>,
    shared: Rc<Shared>,
    timestamps: bool,
    /// The watermark-alignment group of the sources its rows come from: updating streams that
    /// meet (a concatenation: SQL's outer joins and joins of updating results) merge theirs, as DataStream unions and joins do
    /// ([`crate::alignment`]), so that no source of a join reads far ahead of its partner.
    source_group: Option<Group>,
}

/// One row of a changelog, as Flink names them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// `+I`: a row that was not there.
    Insert,
    /// `-U`: the old row of a key whose row changed (followed by its `+U`).
    UpdateBefore,
    /// `+U`: the new row of a key whose row changed.
    UpdateAfter,
    /// `-D`: a row that is no longer there.
    Delete,
}

impl ChangeKind {
    /// As Flink prints it: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            ChangeKind::Insert => "+I",
            ChangeKind::UpdateBefore => "-U",
            ChangeKind::UpdateAfter => "+U",
            ChangeKind::Delete => "-D",
        }
    }
}

/// A change of an updating result: what happened to which row of which key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change<K, V> {
    /// What happened.
    pub kind: ChangeKind,
    /// The key whose rows changed.
    pub key: K,
    /// The row.
    pub row: V,
}

impl<'s, K, T, KF> KeyedStream<'s, K, T, KF>
where
    K: UpdateKey,
    T: UpdateData,
    KF: KeySelector<T, K> + Clone,
{
    /// Enters differential dataflow: the stream's records, each inserted once at its event
    /// time, as a changing collection of `(key, record)`. `uid` names the entry's state (the
    /// records, which a restore feeds in again).
    pub fn updating(self, uid: &str) -> UpdatingStream<'s, K, T> {
        let (stream, key) = self.into_parts();
        let (shared, timestamps, source_group) = (stream.shared(), stream.has_timestamps(), stream.source_group());
        let logic = Entry { key, records: RecordLog::new(), replay: Vec::new() };
        let (entered, _) = stream.stateful("updating", Some(uid.to_owned()), logic, false, false);
        let updates = enter(entered.into_stream(), |row| (row, 1));
        UpdatingStream { updates, shared, timestamps, source_group }
    }

    /// Enters differential dataflow through a fold: each key's rows as `fold` computes them from
    /// the key's records, as a changing collection of `(key, row)` — the rows change at the
    /// event time of the records that change them. For append-only streams, whose records are
    /// never retracted: the fold keeps one accumulator per key instead of every record in an
    /// arrangement. `uid` names its state (the records, from which a restore recomputes it).
    pub fn fold_updating<F: GroupFold<K, T>>(self, uid: &str, fold: F) -> UpdatingStream<'s, K, F::Row> {
        let (stream, key) = self.into_parts();
        let (shared, timestamps, source_group) = (stream.shared(), stream.has_timestamps(), stream.source_group());
        let logic = Fold {
            key,
            fold,
            records: RecordLog::new(),
            pending: BTreeMap::new(),
            groups: HashMap::new(),
            passed: EventTime::MIN,
        };
        let (changes, _) = stream.stateful("fold", Some(uid.to_owned()), logic, false, false);
        let updates = enter(changes.into_stream(), |change| change);
        UpdatingStream { updates, shared, timestamps, source_group }
    }

    /// Folds each key's records into the key's rows and writes their changelog straight away:
    /// what [`KeyedStream::fold_updating`], then `map` over each row
    /// ([`UpdatingStream::map_rows`]), then [`UpdatingStream::changelog`] write, row for row,
    /// for a result that nothing else consumes. With no differential operator in between, the
    /// fold is its own exit: it emits a key's change once event time passes it, so its state at
    /// a checkpoint is each key's accumulator and rows, plus the records event time has not
    /// passed yet — where [`KeyedStream::fold_updating`] must keep every record (see the
    /// module's docs). `uid` names that state.
    ///
    /// With a time to live (`ttl_ms`), a key's accumulator is forgotten once event time is
    /// `ttl_ms` past the key's last record, so state holds only keys active within it (Flink's
    /// `table.exec.state.ttl`, in event time here, so the changelog stays a function of the
    /// input). Forgetting emits nothing; a later record of the key starts afresh, and its row
    /// comes as an insertion (`+I`), as in Flink.
    pub fn fold_changelog<F, V>(
        self,
        uid: &str,
        fold: F,
        map: impl FnMut(F::Row) -> Option<V> + 'static,
        ttl_ms: Option<i64>,
    ) -> DataStream<'s, Change<K, V>>
    where
        F: GroupFold<K, T>,
        F::Acc: Data,
        V: UpdateData,
    {
        assert!(ttl_ms.is_none_or(|ttl| ttl > 0), "a time to live is positive");
        let (stream, key) = self.into_parts();
        let logic = FoldChangelog {
            key,
            fold,
            map: Box::new(map),
            ttl_ms,
            pending: BTreeMap::new(),
            groups: HashMap::new(),
            expiries: BTreeMap::new(),
            passed: EventTime::MIN,
        };
        stream.stateful("fold-changelog", Some(uid.to_owned()), logic, false, false).0
    }
}

/// Turns records into updates of a collection at their event time (`update` gives each one's
/// data and multiplicity), in the message's epoch.
fn enter<'s, R: Data, D: UpdateData>(
    records: RecordStream<'s, R>,
    mut update: impl FnMut(R) -> (D, isize) + 'static,
) -> VecCollection<'s, Time, D, isize> {
    records
        .unary::<CapacityContainerBuilder<Vec<(D, Time, isize)>>, _, _, _>(Pipeline, "ToUpdates", |_, _| {
            move |input, output| {
                input.for_each(|stamp, data| {
                    let at = crate::message_time(&stamp);
                    let mut session = output.session(&stamp);
                    for record in data.drain(..) {
                        // Entries and folds stamp each record at or after its message (see the
                        // module's docs); a restore replays it at the same event time.
                        debug_assert!(record.time >= at.event_time, "a record before its message's time");
                        let (data, diff) = update(record.value);
                        session.give((data, Time::new(at.epoch, record.time.max(at.event_time)), diff));
                    }
                });
            }
        })
        .as_collection()
}

/// How a key's records fold into the key's rows, one record at a time (see
/// [`KeyedStream::fold_updating`]). The rows must not depend on the order the records of one
/// event time were added in (it varies with parallelism and failures): counts, sums, extremes,
/// distinct sets and a Top-N with ties broken by value do not.
pub trait GroupFold<K, T>: 'static {
    /// A key's accumulator.
    type Acc: 'static;
    /// The rows of a key.
    type Row: UpdateData;
    /// A key's accumulator before its first record.
    fn create(&self) -> Self::Acc;
    /// Adds a record of the key to its accumulator, and says whether that changed it (a row
    /// that does not make a Top-N changes nothing). Under a time to live, only a change keeps
    /// the key alive ([`KeyedStream::fold_changelog`]), as a write refreshes Flink's state TTL.
    fn add(&self, accumulator: &mut Self::Acc, record: &T) -> bool;
    /// The key's rows, from its accumulator.
    fn rows(&self, key: &K, accumulator: &Self::Acc, rows: &mut Vec<Self::Row>);
}

impl<K: UpdateKey, V: UpdateData> Clone for UpdatingStream<'_, K, V> {
    fn clone(&self) -> Self {
        UpdatingStream {
            updates: self.updates.clone(),
            shared: self.shared.clone(),
            timestamps: self.timestamps,
            source_group: self.source_group,
        }
    }
}

/// Sums of integers, added slot by slot: a difference type for differential dataflow, so that
/// counts and sums of a key's rows are kept as one accumulated value per key — updated in
/// constant time per change, where recomputing them would read every row of the key. Trailing
/// zeros are dropped, so equal sums are equal values and zero is the empty vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<i128>", into = "Vec<i128>")]
pub struct Sums(Vec<i128>);

impl From<Vec<i128>> for Sums {
    fn from(values: Vec<i128>) -> Self {
        Sums::new(values)
    }
}

impl From<Sums> for Vec<i128> {
    fn from(sums: Sums) -> Self {
        sums.0
    }
}

impl Sums {
    /// The sums `values`.
    pub fn new(values: Vec<i128>) -> Self {
        let mut sums = Sums(values);
        sums.trim();
        sums
    }

    /// Slot `index` (zero past the end).
    pub fn get(&self, index: usize) -> i128 {
        self.0.get(index).copied().unwrap_or(0)
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }
}

impl differential_dataflow::difference::IsZero for Sums {
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
}

impl differential_dataflow::difference::Semigroup for Sums {
    fn plus_equals(&mut self, other: &Self) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = mine.wrapping_add(*theirs);
        }
        self.trim();
    }
}

impl differential_dataflow::difference::Monoid for Sums {
    fn zero() -> Self {
        Sums(Vec::new())
    }
}

impl differential_dataflow::difference::Abelian for Sums {
    fn negate(&mut self) {
        self.0.iter_mut().for_each(|value| *value = value.wrapping_neg());
    }
}

impl differential_dataflow::difference::Multiply<isize> for Sums {
    type Output = Sums;
    fn multiply(mut self, times: &isize) -> Sums {
        self.0.iter_mut().for_each(|value| *value = value.wrapping_mul(*times as i128));
        self.trim();
        self
    }
}

impl<'s, K: UpdateKey, V: UpdateData> UpdatingStream<'s, K, V> {
    /// Per key, the sum of `f` over its rows (each times its multiplicity): one row per key
    /// with rows, updated in constant time per change.
    pub fn sums(self, f: impl Fn(&V) -> Sums + 'static) -> UpdatingStream<'s, K, Sums> {
        let UpdatingStream { updates, shared, timestamps, source_group } = self;
        let updates = updates.explode(move |(key, row)| Some((key, f(&row)))).count_core::<isize>();
        UpdatingStream { updates, shared, timestamps, source_group }
    }

    /// Each row of a key once, however many times it is there (SQL's `DISTINCT`).
    pub fn distinct(self) -> UpdatingStream<'s, K, V>
    where
        V: Hash,
    {
        let UpdatingStream { updates, shared, timestamps, source_group } = self;
        let updates = updates.distinct();
        UpdatingStream { updates, shared, timestamps, source_group }
    }

    /// The rows of both (keyed alike: the same key lands in the same slot in both).
    pub fn concat(self, other: UpdatingStream<'s, K, V>) -> UpdatingStream<'s, K, V> {
        let UpdatingStream { updates, shared, timestamps, source_group } = self;
        // Their sources' records now meet: one group for watermark alignment.
        let source_group = shared.ctx.alignment.merge_groups(source_group, other.source_group);
        UpdatingStream {
            updates: updates.concat(other.updates),
            shared,
            timestamps: timestamps && other.timestamps,
            source_group,
        }
    }

    /// Replaces each row by `f` of it, or drops it where `f` gives `None` (filters and
    /// projections; the key stays).
    pub fn map_rows<V2: UpdateData>(self, mut f: impl FnMut(V) -> Option<V2> + 'static) -> UpdatingStream<'s, K, V2> {
        let UpdatingStream { updates, shared, timestamps, source_group } = self;
        let updates = updates.flat_map(move |(key, row)| f(row).map(|row| (key, row)));
        UpdatingStream { updates, shared, timestamps, source_group }
    }

    /// Recomputes a key's rows whenever its input rows change: `logic` gets the key's rows
    /// (sorted, each with its multiplicity, all positive) and pushes the output rows with
    /// theirs. Differential retracts the key's previous output and inserts the new one.
    pub fn reduce<V2: UpdateData>(
        self,
        name: &str,
        logic: impl FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
    ) -> UpdatingStream<'s, K, V2> {
        let UpdatingStream { updates, shared, timestamps, source_group } = self;
        let updates = updates.reduce_named(name, logic);
        UpdatingStream { updates, shared, timestamps, source_group }
    }

    /// Re-keys the rows by `key`: each update goes to the slot of its new key through Weir's
    /// exchange.
    pub fn key_by<K2: UpdateKey>(self, key: impl Fn(&K, &V) -> K2 + Clone + 'static) -> UpdatingStream<'s, K2, V> {
        let UpdatingStream { updates, shared, timestamps, source_group } = self;
        // As records (an update, stamped with its event time) for the exchange, and back.
        let records = leave(updates, "Rekey", move |(old, row), time, diff| {
            Record::derived(Rekeyed { key: key(&old, &row), row, time, diff }, time.event_time)
        });
        let routed = DataStream::from_parts(records, shared.clone(), timestamps, source_group, "updating key_by")
            .key_by(|update: &Rekeyed<K2, V>| update.key.clone())
            .into_parts()
            .0
            .into_stream();
        let updates = routed
            .unary::<CapacityContainerBuilder<Vec<((K2, V), Time, isize)>>, _, _, _>(Pipeline, "Rekeyed", |_, _| {
                |input, output| {
                    input.for_each(|stamp, data| {
                        output.session(&stamp).give_iterator(
                            data.drain(..).map(|r| ((r.value.key, r.value.row), r.value.time, r.value.diff)),
                        );
                    });
                }
            })
            .as_collection();
        UpdatingStream { updates, shared, timestamps, source_group }
    }

    /// Leaves differential dataflow: the changelog of the collection, per key, in event-time
    /// order (see the module's documentation). `uid` names the exit's state (the event time it
    /// has passed, per key group).
    pub fn changelog(self, uid: &str) -> DataStream<'s, Change<K, V>> {
        let UpdatingStream { updates, shared, timestamps, source_group } = self;
        let records = leave(updates, "Updates", |row, time, diff| Record::derived((row, diff), time.event_time));
        let stream = DataStream::from_parts(records, shared, timestamps, source_group, "updating");
        stream.stateful("changelog", Some(uid.to_owned()), Exit::new(), false, false).0
    }
}

/// Leaves differential dataflow: each update of `updates` as a Weir record (`to_record`).
///
/// Differential sends under capability *sets* — a message's stamp may hold several
/// incomparable times — while Weir's operators send, and expect, one time per message (its
/// epoch and event time are what the scaffold aligns on). So each message is split: each update
/// goes under the first element of the stamp at or before its own time (one exists: that is
/// what the stamp promises).
fn leave<'s, D: Data, R: Data>(
    updates: VecCollection<'s, Time, D, isize>,
    name: &str,
    mut to_record: impl FnMut(D, Time, isize) -> Record<R> + 'static,
) -> RecordStream<'s, R> {
    updates.inner.unary::<CapacityContainerBuilder<Vec<Record<R>>>, _, _, _>(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each(|stamp, data| {
                let elements = stamp.stamp().elements();
                let mut parts: Vec<Vec<Record<R>>> = elements.iter().map(|_| Vec::new()).collect();
                for (update, time, diff) in data.drain(..) {
                    let element = elements.iter().position(|e| e.less_equal(&time));
                    let element =
                        element.unwrap_or_else(|| panic!("an update at {time:?} under the stamp {elements:?}"));
                    parts[element].push(to_record(update, time, diff));
                }
                for (element, mut part) in elements.iter().zip(parts) {
                    if !part.is_empty() {
                        output.session(&stamp.delayed(element, 0)).give_container(&mut part);
                    }
                }
            });
        }
    })
}

/// An update on its way to its new key's slot.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Rekeyed<K, V> {
    key: K,
    row: V,
    time: Time,
    diff: isize,
}

/// The entry: passes records on as `(key, record)` at their event time, and keeps them.
struct Entry<K, T, KF> {
    key: KF,
    /// Every record so far, by key group, at its (lifted) event time.
    records: RecordLog<T>,
    /// Restored records, to feed in again at the first activation.
    replay: Vec<Record<(K, T)>>,
}

impl<K, T, KF> StatefulLogic for Entry<K, T, KF>
where
    K: UpdateKey,
    T: UpdateData,
    KF: KeySelector<T, K>,
{
    type In = T;
    type Out = (K, T);

    fn apply(&mut self, records: &mut Vec<Record<T>>, out: &mut Vec<Record<(K, T)>>, _late: &mut Vec<Record<T>>) {
        for record in records.drain(..) {
            let time = record.time.max(record.watermark);
            let key = self.key.key(&record.value);
            self.records.push(key_group_of(&key), time, &record.value);
            out.push(Record::derived((key, record.value), time));
        }
    }

    fn advance(&mut self, _bound: EventTime, _out: &mut Vec<Record<(K, T)>>) {}

    /// Restored records go out at the first activation, before the output capability moves
    /// past the restored epoch's start (replayed records carry event times from before it).
    fn poll(&mut self, out: &mut Vec<Record<(K, T)>>) {
        out.append(&mut self.replay);
    }

    fn snapshot(&self) -> StateImage {
        self.records.snapshot()
    }

    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (time, key, value) in restore_records(&mut self.records, &self.key, states)? {
            self.replay.push(Record::derived((key, value), time));
        }
        Ok(())
    }
}

/// The fold: each key's accumulator, and the changes of the key's rows per event time once
/// event time passes it (in event-time order, then key order).
struct Fold<K, T, KF, F: GroupFold<K, T>> {
    key: KF,
    fold: F,
    /// Every record given, folded in or pending, by key group, at its (lifted) event time.
    records: RecordLog<T>,
    /// Records of event times not passed yet.
    pending: BTreeMap<EventTime, Vec<(K, T)>>,
    /// Each key's accumulator and its rows as last passed on.
    groups: HashMap<K, (F::Acc, Vec<F::Row>)>,
    /// The event time passed: every record before it is folded in.
    passed: EventTime,
}

impl<K, T, KF, F> StatefulLogic for Fold<K, T, KF, F>
where
    K: UpdateKey,
    T: UpdateData,
    KF: KeySelector<T, K>,
    F: GroupFold<K, T>,
{
    type In = T;
    type Out = ((K, F::Row), isize);

    fn apply(&mut self, records: &mut Vec<Record<T>>, _out: &mut Vec<Record<Self::Out>>, _late: &mut Vec<Record<T>>) {
        for record in records.drain(..) {
            // Lifted to the watermark it was read under, as at the entry; never behind the
            // bound passed, which is at most the message's event time.
            let time = record.time.max(record.watermark);
            // A record behind it would be folded in after later ones: its change would come at
            // another time than a restore, which folds it in at its own, recomputes.
            assert!(time >= self.passed, "fold: a record at {time} arrived after event time passed {}", self.passed);
            let key = self.key.key(&record.value);
            self.records.push(key_group_of(&key), time, &record.value);
            self.pending.entry(time).or_default().push((key, record.value));
        }
    }

    fn advance(&mut self, bound: EventTime, out: &mut Vec<Record<Self::Out>>) {
        let mut rows = Vec::new();
        let mut changes = Vec::new();
        while let Some((time, batch)) = next_batch(&mut self.pending, bound) {
            for records in batch.chunk_by(|a, b| a.0 == b.0) {
                let key = records[0].0.clone();
                let (accumulator, last) =
                    self.groups.entry(key.clone()).or_insert_with(|| (self.fold.create(), Vec::new()));
                for (_, record) in records {
                    let _changed = self.fold.add(accumulator, record);
                }
                rows.clear();
                self.fold.rows(&key, accumulator, &mut rows);
                if rows == *last {
                    continue;
                }
                changes.extend(last.drain(..).map(|row| (row, -1)));
                changes.extend(rows.iter().cloned().map(|row| (row, 1)));
                last.append(&mut rows);
                differential_dataflow::consolidation::consolidate(&mut changes);
                out.extend(changes.drain(..).map(|(row, diff)| Record::derived(((key.clone(), row), diff), time)));
            }
        }
        self.passed = self.passed.max(bound);
    }

    fn snapshot(&self) -> StateImage {
        // Every record of epochs `<= c`: those folded in and those waiting for event time.
        self.records.snapshot()
    }

    /// Restored records wait for event time to pass them again, and are folded in then: the
    /// accumulators, and the changes at each event time, come out as the first run made them.
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (time, key, value) in restore_records(&mut self.records, &self.key, states)? {
            self.pending.entry(time).or_default().push((key, value));
        }
        Ok(())
    }
}

/// A fold that writes its own changelog (see [`KeyedStream::fold_changelog`]): each key's
/// accumulator and mapped rows, and the records of event times not passed yet.
struct FoldChangelog<K, T, KF, F: GroupFold<K, T>, V> {
    key: KF,
    fold: F,
    /// From the fold's rows to the changelog's (`None` drops a row).
    map: Box<dyn FnMut(F::Row) -> Option<V>>,
    /// How long, in event time after its last record, a key's accumulator is kept.
    ttl_ms: Option<i64>,
    /// Records of event times not passed yet.
    pending: BTreeMap<EventTime, Vec<(K, T)>>,
    /// Each key's accumulator, its rows as the changelog last gave them, and its last record's
    /// time — shared with the snapshots being encoded, and copied only if changed while they
    /// are (copy on write, as Flink's heap state does for its asynchronous snapshots).
    groups: HashMap<K, Arc<FoldGroup<F::Acc, V>>>,
    /// With a time to live: the keys that expire at each event time (unless a later record
    /// came; checked when the time comes).
    expiries: BTreeMap<EventTime, Vec<K>>,
    /// The event time passed: every record before it is folded in, and its changes emitted.
    passed: EventTime,
}

/// A key of a [`FoldChangelog`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FoldGroup<A, V> {
    accumulator: A,
    /// Its rows as the changelog last gave them (sorted).
    rows: Vec<V>,
    /// The event time of its last record.
    touched: EventTime,
}

/// One key group's part of a [`FoldChangelog`]'s snapshot: the event time passed, each key
/// (by key), and the records not folded in yet (by time, key, record).
type FoldGroupState<K, T, A, V> = (EventTime, Vec<(K, FoldGroup<A, V>)>, Vec<(EventTime, K, T)>);

/// A key's [`FoldGroup`] as a snapshot being encoded shares it with the operator.
type SharedGroup<K, A, V> = (K, Arc<FoldGroup<A, V>>);

/// A [`FoldGroupState`] being encoded, its groups shared with the operator.
type SharedGroupState<K, T, A, V> = (EventTime, Vec<SharedGroup<K, A, V>>, Vec<(EventTime, K, T)>);

impl<K: UpdateKey, T, KF, F: GroupFold<K, T>, V> FoldChangelog<K, T, KF, F, V> {
    /// Whether a key last touched at `touched` has expired by event time `time`: a record at
    /// `time` no longer sees it.
    fn expired(&self, touched: EventTime, time: EventTime) -> bool {
        self.ttl_ms.is_some_and(|ttl| time.saturating_sub(touched) >= ttl)
    }

    /// Queues `key`'s expiry for `touched` plus the time to live, if there is one.
    fn schedule_expiry(&mut self, key: &K, touched: EventTime) {
        if let Some(ttl) = self.ttl_ms {
            self.expiries.entry(touched.saturating_add(ttl)).or_default().push(key.clone());
        }
    }
}

impl<K, T, KF, F, V> StatefulLogic for FoldChangelog<K, T, KF, F, V>
where
    K: UpdateKey,
    T: UpdateData,
    KF: KeySelector<T, K>,
    F: GroupFold<K, T>,
    F::Acc: Data,
    V: UpdateData,
{
    type In = T;
    type Out = Change<K, V>;

    fn apply(
        &mut self,
        records: &mut Vec<Record<T>>,
        _out: &mut Vec<Record<Change<K, V>>>,
        _late: &mut Vec<Record<T>>,
    ) {
        for record in records.drain(..) {
            // As at the fold that enters differential: lifted to the watermark it was read
            // under, and never behind the bound passed.
            let time = record.time.max(record.watermark);
            assert!(time >= self.passed, "fold: a record at {time} arrived after event time passed {}", self.passed);
            let key = self.key.key(&record.value);
            self.pending.entry(time).or_default().push((key, record.value));
        }
    }

    fn advance(&mut self, bound: EventTime, out: &mut Vec<Record<Change<K, V>>>) {
        let mut rows = Vec::new();
        let mut changes: Vec<(V, isize)> = Vec::new();
        while let Some((time, batch)) = next_batch(&mut self.pending, bound) {
            for records in batch.chunk_by(|a, b| a.0 == b.0) {
                let key = records[0].0.clone();
                // With a time to live, a key has one expiry queued while it has state.
                let queued = match self.groups.get(&key) {
                    // Past its time to live: it starts afresh, its old rows forgotten unsaid.
                    // (Its queued expiry is due before `bound`, and comes below.)
                    Some(group) if self.expired(group.touched, time) => {
                        self.groups.remove(&key);
                        true
                    }
                    Some(_) => true,
                    None => false,
                };
                if !queued {
                    self.schedule_expiry(&key, time);
                }
                let group = Arc::make_mut(self.groups.entry(key.clone()).or_insert_with(|| {
                    Arc::new(FoldGroup { accumulator: self.fold.create(), rows: Vec::new(), touched: time })
                }));
                let mut changed = false;
                for (_, record) in records {
                    changed |= self.fold.add(&mut group.accumulator, record);
                }
                if changed {
                    group.touched = time;
                }
                rows.clear();
                self.fold.rows(&key, &group.accumulator, &mut rows);
                let mut mapped: Vec<V> = rows.drain(..).filter_map(&mut self.map).collect();
                mapped.sort();
                if mapped == group.rows {
                    continue;
                }
                // The key's change as the exit makes it from differential's updates: the
                // consolidated removals and additions, each in row order.
                changes.extend(group.rows.drain(..).map(|row| (row, -1)));
                changes.extend(mapped.iter().cloned().map(|row| (row, 1)));
                group.rows = mapped;
                differential_dataflow::consolidation::consolidate(&mut changes);
                let (removed, added) = removed_and_added(changes.drain(..));
                emit_change(&key, removed, added, time, out);
            }
        }
        self.passed = self.passed.max(bound);
        // Keys that no record still to come (all at or after `bound`) can see are forgotten;
        // a key touched since its expiry was queued is queued again, for its new time.
        while let Some(entry) = self.expiries.first_entry() {
            if *entry.key() > bound {
                break;
            }
            for key in entry.remove() {
                match self.groups.get(&key) {
                    Some(group) if self.expired(group.touched, bound) => drop(self.groups.remove(&key)),
                    Some(group) => {
                        let touched = group.touched;
                        self.schedule_expiry(&key, touched);
                    }
                    None => unreachable!("a key's expiry is queued only while it has state"),
                }
            }
        }
    }

    fn snapshot(&self) -> StateImage {
        // Encoded off the slot's thread from the groups as they are now: each is shared with
        // the encoding, not copied (a group that changes before the encoding is done is copied
        // then, by `Arc::make_mut`).
        let groups: Vec<SharedGroup<K, F::Acc, V>> =
            self.groups.iter().map(|(key, group)| (key.clone(), group.clone())).collect();
        let pending: Vec<(EventTime, K, T)> = self
            .pending
            .iter()
            .flat_map(|(&time, batch)| batch.iter().map(move |(key, record)| (time, key.clone(), record.clone())))
            .collect();
        let passed = self.passed;
        StateImage::deferred(move || {
            let mut by_group: BTreeMap<usize, SharedGroupState<K, T, F::Acc, V>> = BTreeMap::new();
            for (key, group) in groups {
                by_group
                    .entry(key_group_of(&key))
                    .or_insert_with(|| (passed, Vec::new(), Vec::new()))
                    .1
                    .push((key, group));
            }
            for (time, key, record) in pending {
                by_group
                    .entry(key_group_of(&key))
                    .or_insert_with(|| (passed, Vec::new(), Vec::new()))
                    .2
                    .push((time, key, record));
            }
            by_group
                .into_iter()
                .map(|(group, (passed, mut keys, mut pending))| {
                    // Sorted, so that equal states encode equal; encoded as `FoldGroupState`.
                    keys.sort_by(|a, b| a.0.cmp(&b.0));
                    pending.sort();
                    let keys: Vec<(&K, &FoldGroup<F::Acc, V>)> = keys.iter().map(|(k, g)| (k, &**g)).collect();
                    (group, bincode::serialize(&(passed, keys, pending)).expect("fold state serializes"))
                })
                .collect()
        })
    }

    /// Accumulators and rows come back as they were; the records event time had not passed
    /// wait for it again, and their changes come out as the first run would have made them.
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (group, bytes) in states {
            let (passed, keys, pending): FoldGroupState<K, T, F::Acc, V> =
                crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {e}"))?;
            self.passed = self.passed.max(passed);
            for (key, fold_group) in keys {
                if key_group_of(&key) != group {
                    return Err(format!("key group {group} holds a key of key group {}", key_group_of(&key)));
                }
                self.schedule_expiry(&key, fold_group.touched);
                if self.groups.insert(key, Arc::new(fold_group)).is_some() {
                    return Err(format!("key group {group}: a key appears twice"));
                }
            }
            for (time, key, record) in pending {
                if key_group_of(&key) != group {
                    return Err(format!("key group {group} holds a record of key group {}", key_group_of(&key)));
                }
                self.pending.entry(time).or_default().push((key, record));
            }
        }
        Ok(())
    }
}

/// Restores the record log of an entry or a fold: each restored record with its time and key,
/// checked to be of the key group it was stored under.
fn restore_records<K: Hash, T: UpdateData, KF: KeySelector<T, K>>(
    records: &mut RecordLog<T>,
    key: &KF,
    states: KeyGroupStates,
) -> Result<Vec<(EventTime, K, T)>, String> {
    let mut restored = Vec::new();
    for (group, bytes) in states {
        for (time, value) in records.restore(group, bytes).map_err(|e| format!("key group {group}: {e}"))? {
            let key = key.key(&value);
            if key_group_of(&key) != group {
                return Err(format!("key group {group} holds a record of key group {}", key_group_of(&key)));
            }
            restored.push((time, key, value));
        }
    }
    Ok(restored)
}

/// The exit: the changelog of the updates it receives, per event time once event time passes.
struct Exit<K, V> {
    /// With debug assertions: each key's rows, as the changes emitted so far built them, to
    /// check every retraction against. It is not checkpointed (it would make every checkpoint
    /// hold the whole result); in a restored key group, rows emitted before the restore are not
    /// known.
    checked: Option<BTreeMap<K, Vec<V>>>,
    /// Updates of event times not passed yet.
    pending: BTreeMap<EventTime, Vec<Update<K, V>>>,
    /// After a restore: per key group, the event time it had passed. Updates below it are
    /// recomputed ones, already emitted.
    skip_below: BTreeMap<usize, EventTime>,
    /// The key groups it has seen updates of (each snapshots the event time passed).
    groups: BTreeSet<usize>,
    /// The event time passed.
    passed: EventTime,
}

/// A row of a key, with how many times it was added (or, negative, removed).
type Update<K, V> = ((K, V), isize);

impl<K: UpdateKey, V: UpdateData> StatefulLogic for Exit<K, V> {
    type In = ((K, V), isize);
    type Out = Change<K, V>;

    fn apply(
        &mut self,
        records: &mut Vec<Record<Self::In>>,
        _out: &mut Vec<Record<Change<K, V>>>,
        _late: &mut Vec<Record<Self::In>>,
    ) {
        for record in records.drain(..) {
            let group = key_group_of(&record.value.0 .0);
            self.groups.insert(group);
            if record.time < self.skip_below.get(&group).copied().unwrap_or(EventTime::MIN) {
                continue;
            }
            debug_assert!(record.time >= self.passed, "an update arrived after event time passed it");
            self.pending.entry(record.time).or_default().push(record.value);
        }
    }

    fn advance(&mut self, bound: EventTime, out: &mut Vec<Record<Change<K, V>>>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            let (time, mut updates) = entry.remove_entry();
            differential_dataflow::consolidation::consolidate(&mut updates);
            // Per key (updates are sorted by key, then row): its removed and added rows.
            let mut updates = updates.into_iter().peekable();
            while let Some(((key, _), _)) = updates.peek() {
                let key = key.clone();
                let key_updates = std::iter::from_fn(|| updates.next_if(|((k, _), _)| *k == key));
                let (removed, added) = removed_and_added(key_updates.map(|((_, row), diff)| (row, diff)));
                self.change(key, removed, added, time, out);
            }
        }
        self.passed = self.passed.max(bound);
    }

    /// Per key group seen: the event time passed.
    fn snapshot(&self) -> StateImage {
        StateImage::encoded(
            self.groups
                .iter()
                .map(|&group| {
                    let passed = self.passed.max(self.skip_below.get(&group).copied().unwrap_or(EventTime::MIN));
                    (group, bincode::serialize(&passed).expect("an event time serializes"))
                })
                .collect(),
        )
    }

    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String> {
        for (group, bytes) in states {
            let passed: EventTime =
                crate::keyed::decode_state(&bytes).map_err(|e| format!("key group {group}: {e}"))?;
            self.groups.insert(group);
            self.skip_below.insert(group, passed);
        }
        Ok(())
    }
}

impl<K: UpdateKey, V: UpdateData> Exit<K, V> {
    fn new() -> Self {
        Exit {
            checked: cfg!(debug_assertions).then(BTreeMap::new),
            pending: BTreeMap::new(),
            skip_below: BTreeMap::new(),
            groups: BTreeSet::new(),
            passed: EventTime::MIN,
        }
    }

    /// Emits one key's change at `time` (see [`emit_change`]), checked against the rows emitted
    /// before with debug assertions.
    fn change(&mut self, key: K, removed: Vec<V>, added: Vec<V>, time: EventTime, out: &mut Vec<Record<Change<K, V>>>) {
        if let Some(table) = self.checked.as_mut() {
            let restored = self.skip_below.contains_key(&key_group_of(&key));
            let rows = table.entry(key.clone()).or_default();
            for row in &removed {
                match rows.iter().position(|r| r == row) {
                    Some(position) => drop(rows.remove(position)),
                    None => assert!(restored, "the changelog retracts a row it never emitted: {row:?}"),
                }
            }
            rows.extend(added.iter().cloned());
            if rows.is_empty() {
                table.remove(&key);
            }
        }
        emit_change(&key, removed, added, time, out);
    }
}

/// The records of the earliest event time before `bound` waiting in `pending`, with that time,
/// sorted by key (so that each key's are together, and keys come in order).
fn next_batch<K: Ord, T>(
    pending: &mut BTreeMap<EventTime, Vec<(K, T)>>,
    bound: EventTime,
) -> Option<(EventTime, Vec<(K, T)>)> {
    let entry = pending.first_entry().filter(|entry| *entry.key() < bound)?;
    let (time, mut batch) = entry.remove_entry();
    batch.sort_by(|a, b| a.0.cmp(&b.0));
    Some((time, batch))
}

/// A key's consolidated updates as the rows removed and the rows added, each as many times as
/// its multiplicity, in the updates' order.
fn removed_and_added<V: Clone>(updates: impl Iterator<Item = (V, isize)>) -> (Vec<V>, Vec<V>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for (row, diff) in updates {
        let into = if diff < 0 { &mut removed } else { &mut added };
        into.extend(std::iter::repeat_n(row, diff.unsigned_abs()));
    }
    (removed, added)
}

/// Emits one key's change at `time`: removed rows paired with added ones as `-U`/`+U`, the
/// rest as `-D` or `+I`.
fn emit_change<K: Clone, V>(
    key: &K,
    removed: Vec<V>,
    added: Vec<V>,
    time: EventTime,
    out: &mut Vec<Record<Change<K, V>>>,
) {
    let emit = |kind, row: V, out: &mut Vec<Record<Change<K, V>>>| {
        out.push(Record::derived(Change { kind, key: key.clone(), row }, time));
    };
    let paired = removed.len().min(added.len());
    let (mut removed, mut added) = (removed.into_iter(), added.into_iter());
    for _ in 0..paired {
        emit(ChangeKind::UpdateBefore, removed.next().expect("paired"), out);
        emit(ChangeKind::UpdateAfter, added.next().expect("paired"), out);
    }
    removed.for_each(|row| emit(ChangeKind::Delete, row, out));
    added.for_each(|row| emit(ChangeKind::Insert, row, out));
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};

    #[test]
    fn sums_add_slot_by_slot_and_equal_sums_are_equal_values() {
        let mut sums = Sums::zero();
        assert!(sums.is_zero());
        sums.plus_equals(&Sums::new(vec![1, 5, 0]));
        sums.plus_equals(&Sums::new(vec![1, -2, 7]));
        assert_eq!(sums, Sums::new(vec![2, 3, 7]));
        // Retracting both leaves zero, however the slots were written.
        let mut retraction = Sums::new(vec![2, 3, 7]);
        retraction.negate();
        sums.plus_equals(&retraction);
        assert!(sums.is_zero(), "{sums:?}");
        assert_eq!(sums, Sums::new(vec![0, 0]), "trailing zeros are dropped");
        assert_eq!(Sums::new(vec![1, 2]).multiply(&-3), Sums::new(vec![-3, -6]));
        assert_eq!(Sums::new(vec![1, 2]).get(5), 0, "slots past the end are zero");
        // Decoding keeps the invariant too.
        let decoded: Sums = bincode::deserialize(&bincode::serialize(&vec![4i128, 0, 0]).unwrap()).unwrap();
        assert_eq!(decoded, Sums::new(vec![4]));
    }

    /// Per key (a record's tens), its records' sum and count, as one row. A record `0` counts
    /// as no change (as a row that does not make a Top-N): it does not keep its key alive.
    struct SumAndCount;

    impl GroupFold<u64, u64> for SumAndCount {
        type Acc = (u64, u64);
        type Row = (u64, u64);
        fn create(&self) -> (u64, u64) {
            (0, 0)
        }
        fn add(&self, accumulator: &mut (u64, u64), record: &u64) -> bool {
            accumulator.0 += record;
            accumulator.1 += 1;
            *record != 0
        }
        fn rows(&self, _key: &u64, accumulator: &(u64, u64), rows: &mut Vec<(u64, u64)>) {
            rows.push(*accumulator);
        }
    }

    /// A fold of `u64` records keyed by their tens, writing each key's sum.
    type TensFold = FoldChangelog<u64, u64, fn(&u64) -> u64, SumAndCount, u64>;

    fn fold_changelog() -> TensFold {
        // The changelog's row: the sum alone, and none for a key whose sum is over 100.
        FoldChangelog {
            key: (|record: &u64| record / 10) as fn(&u64) -> u64,
            fold: SumAndCount,
            map: Box::new(|(sum, _count): (u64, u64)| (sum <= 100).then_some(sum)),
            ttl_ms: None,
            pending: BTreeMap::new(),
            groups: HashMap::new(),
            expiries: BTreeMap::new(),
            passed: EventTime::MIN,
        }
    }

    fn shown(changes: &[Record<Change<u64, u64>>]) -> Vec<String> {
        changes.iter().map(|c| format!("{}{}:{}@{}", c.value.kind.short(), c.value.key, c.value.row, c.time)).collect()
    }

    #[test]
    fn a_fold_writes_its_changelog_and_a_restore_of_its_accumulators_continues_it() {
        let feed = |fold: &mut TensFold, records: &[(u64, EventTime)]| {
            let mut records: Vec<Record<u64>> = records.iter().map(|&(r, t)| Record::derived(r, t)).collect();
            fold.apply(&mut records, &mut Vec::new(), &mut Vec::new());
        };
        let first: &[(u64, EventTime)] = &[(11, 5), (12, 5), (21, 5), (13, 7), (25, 9)];
        let second: &[(u64, EventTime)] = &[(30, 9), (14, 12), (27, 12), (60, 12)];
        // Uninterrupted.
        let mut whole = fold_changelog();
        let mut expected = Vec::new();
        feed(&mut whole, first);
        whole.advance(8, &mut expected);
        feed(&mut whole, second);
        whole.advance(EventTime::MAX, &mut expected);
        assert_eq!(
            shown(&expected),
            [
                "+I1:23@5",
                "+I2:21@5",
                "-U1:23@7",
                "+U1:36@7",
                "-U2:21@9",
                "+U2:46@9",
                "+I3:30@9",
                "-U1:36@12",
                "+U1:50@12",
                "-U2:46@12",
                "+U2:73@12",
                "+I6:60@12"
            ],
        );
        // Restored from a snapshot taken with records at 9 not folded in yet: the rest of the
        // changelog is the same, and the state held is the accumulators and those records.
        let mut before = fold_changelog();
        let mut out = Vec::new();
        feed(&mut before, first);
        before.advance(8, &mut out);
        let image = before.snapshot().encode();
        let mut restored = fold_changelog();
        restored.restore(image).unwrap();
        assert_eq!(restored.pending.values().map(Vec::len).sum::<usize>(), 1, "the record at 9 waits");
        assert_eq!(restored.groups.len(), 2);
        feed(&mut restored, second);
        restored.advance(EventTime::MAX, &mut out);
        assert_eq!(shown(&out), shown(&expected));
        // A key whose row the map drops is deleted; one whose rows do not change emits nothing.
        let mut dropping = fold_changelog();
        let mut changes = Vec::new();
        feed(&mut dropping, &[(50, 1), (51, 2), (0, 3)]);
        dropping.advance(4, &mut changes);
        assert_eq!(shown(&changes), ["+I5:50@1", "-D5:50@2", "+I0:0@3"]);
        feed(&mut dropping, &[(0, 4)]);
        let mut unchanged = Vec::new();
        dropping.advance(EventTime::MAX, &mut unchanged);
        assert!(unchanged.is_empty(), "{:?}", shown(&unchanged));
    }

    #[test]
    fn a_snapshot_holds_the_groups_as_they_were_though_they_change_before_it_is_encoded() {
        let mut fold = fold_changelog();
        let feed = |fold: &mut TensFold, records: &[(u64, EventTime)], bound: EventTime| {
            let mut records: Vec<Record<u64>> = records.iter().map(|&(r, t)| Record::derived(r, t)).collect();
            fold.apply(&mut records, &mut Vec::new(), &mut Vec::new());
            fold.advance(bound, &mut Vec::new());
        };
        feed(&mut fold, &[(11, 1), (21, 1)], 2);
        let image = fold.snapshot();
        // Key 1 changes (copied on write), key 3 is new, before the snapshot is encoded.
        feed(&mut fold, &[(12, 3), (31, 3)], 4);
        let mut restored = fold_changelog();
        restored.restore(image.encode()).unwrap();
        let sums: BTreeMap<u64, u64> = restored.groups.iter().map(|(key, group)| (*key, group.accumulator.0)).collect();
        assert_eq!(sums, BTreeMap::from([(1, 11), (2, 21)]), "the groups at the snapshot");
        assert_eq!(fold.groups[&1].accumulator.0, 23, "the operator's own group moved on");
    }

    #[test]
    fn a_folds_keys_expire_their_time_to_live_after_their_last_record_and_start_afresh() {
        let mut fold = fold_changelog();
        fold.ttl_ms = Some(10);
        let mut out = Vec::new();
        let mut feed = |fold: &mut TensFold, records: &[(u64, EventTime)], bound: EventTime| {
            let mut records: Vec<Record<u64>> = records.iter().map(|&(r, t)| Record::derived(r, t)).collect();
            fold.apply(&mut records, &mut Vec::new(), &mut Vec::new());
            fold.advance(bound, &mut out);
        };
        // Key 1 at 0 and 9 (9 ms apart: still there), then at 19 (10 ms after 9: forgotten, so
        // its row comes anew). Key 2 at 5, then at 14 (9 ms: kept).
        feed(&mut fold, &[(11, 0), (12, 9), (21, 5)], 10);
        assert_eq!(fold.groups.len(), 2, "nothing expired before 15");
        feed(&mut fold, &[(22, 14)], 16);
        assert!(fold.groups.contains_key(&1), "key 1 (last at 9) is kept until 19: a record at 18 sees it");
        let queued = |fold: &TensFold| fold.expiries.values().map(Vec::len).sum::<usize>();
        assert_eq!(queued(&fold), fold.groups.len(), "one expiry queued per key, however many records");
        feed(&mut fold, &[(13, 19)], 20);
        assert_eq!(
            shown(&out),
            ["+I1:11@0", "+I2:21@5", "-U1:11@9", "+U1:23@9", "-U2:21@14", "+U2:43@14", "+I1:13@19"]
        );
        // A snapshot keeps each key's last time: restored, key 2 (last at 14) expires at 24.
        let image = fold.snapshot().encode();
        let mut restored = fold_changelog();
        restored.ttl_ms = Some(10);
        restored.restore(image).unwrap();
        let mut out = Vec::new();
        let mut records = vec![Record::derived(24, 23), Record::derived(25, 24)];
        restored.apply(&mut records, &mut Vec::new(), &mut Vec::new());
        restored.advance(25, &mut out);
        assert_eq!(shown(&out), ["-U2:43@23", "+U2:67@23", "-U2:67@24", "+U2:92@24"]);
        let mut records = vec![Record::derived(26, 34)];
        restored.apply(&mut records, &mut Vec::new(), &mut Vec::new());
        restored.advance(EventTime::MAX, &mut out);
        assert_eq!(shown(&out)[4..], ["+I2:26@34"], "10 ms after 24: afresh");
        assert_eq!(restored.groups.len(), 0, "everything expires at the end of time");
        // A record that changes nothing does not keep its key alive: key 0, touched at 40,
        // is gone by 50 though a 0 came at 45.
        let mut fold = fold_changelog();
        fold.ttl_ms = Some(10);
        let mut out = Vec::new();
        let mut records = vec![Record::derived(1, 40), Record::derived(0, 45), Record::derived(2, 50)];
        fold.apply(&mut records, &mut Vec::new(), &mut Vec::new());
        fold.advance(EventTime::MAX, &mut out);
        assert_eq!(shown(&out), ["+I0:1@40", "+I0:2@50"]);
        assert!(fold.expiries.is_empty() && fold.groups.is_empty());
    }

    #[test]
    fn the_exit_pairs_a_keys_changes_and_skips_what_a_restore_recomputes() {
        let mut exit: Exit<u64, u64> = Exit::new();
        let update = |key, row, diff, time| Record::derived(((key, row), diff), time);
        let (mut out, mut late) = (Vec::new(), Vec::new());
        let mut apply = |exit: &mut Exit<u64, u64>, updates: Vec<Record<((u64, u64), isize)>>| {
            let mut updates = updates;
            exit.apply(&mut updates, &mut out, &mut late);
        };
        apply(&mut exit, vec![update(1, 10, 1, 5), update(2, 20, 1, 5), update(1, 10, -1, 7), update(1, 11, 1, 7)]);
        apply(&mut exit, vec![update(2, 20, -1, 9)]);
        let mut changes = Vec::new();
        exit.advance(8, &mut changes);
        let shown = |changes: &[Record<Change<u64, u64>>]| -> Vec<String> {
            changes
                .iter()
                .map(|c| format!("{}{}:{}@{}", c.value.kind.short(), c.value.key, c.value.row, c.time))
                .collect()
        };
        assert_eq!(shown(&changes), ["+I1:10@5", "+I2:20@5", "-U1:10@7", "+U1:11@7"]);
        let image = exit.snapshot().encode();
        // A restore: recomputed updates below the event time passed (8) are skipped, the rest
        // are emitted as before.
        let mut restored: Exit<u64, u64> = Exit::new();
        restored.restore(image).unwrap();
        apply(&mut restored, vec![update(1, 11, 1, 7), update(2, 20, 1, 5), update(2, 20, -1, 9)]);
        let mut changes = Vec::new();
        restored.advance(EventTime::MAX, &mut changes);
        assert_eq!(shown(&changes), ["-D2:20@9"]);
        // A fresh start is a restore of nothing: the check stays on, for every key group.
        if cfg!(debug_assertions) {
            let mut fresh: Exit<u64, u64> = Exit::new();
            fresh.restore(Vec::new()).unwrap();
            let mut updates = vec![update(3, 30, -1, 5)];
            fresh.apply(&mut updates, &mut Vec::new(), &mut Vec::new());
            let unknown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fresh.advance(EventTime::MAX, &mut Vec::new());
            }));
            assert!(unknown.is_err(), "a retraction of a row never emitted is caught");
        }
        // The table checked against holds what was emitted since the restore.
        assert_eq!(restored.checked.as_ref().map(|table| table.len()), cfg!(debug_assertions).then_some(0));
    }
}
