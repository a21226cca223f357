//! The scaffold every stateful operator is written on: epoch alignment, event-time progress,
//! snapshots by operator id and key group, and restore.
//!
//! **The invariant.** When the scaffold reports an operator's state for checkpoint `c`, that
//! state reflects exactly the records of epochs `<= c`, and every output the operator derived
//! from them has been emitted at epochs `<= c`. Restoring the state and replaying epochs `> c`
//! therefore reproduces the operator's output exactly.
//!
//! **Alignment.** The scaffold hands the logic the records of its *processing epoch* `c` (the
//! least epoch in the input frontier) at once and holds batches of later epochs apart — they
//! arrive early from slots already past checkpoint `c`. When the frontier passes epoch `c` it
//! snapshots, moves its output capabilities to `c + 1` and applies the held batches of `c + 1`.
//!
//! **Event time.** The logic is told when event time has passed a bound: no element of the
//! input frontier *and no held batch* has an earlier event time (a held batch still counts, so
//! a window always contains all of its records whatever their epochs). Outputs are emitted at
//! the bound last passed — held back to the logic's [`StatefulLogic::output_hold`] — which is
//! at most the event time of anything the logic derives after it, so downstream event-time
//! operators stay exact too.
//!
//! Windows, joins and process functions differ only in their [`StatefulLogic`]; none of them
//! touches capabilities, epochs or the snapshot collector.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use weir_core::faultpoint::{self, PlantedBug};
use weir_core::time::{Epoch, EventTime, Time};

use crate::metrics::SlotMetrics;
use crate::record::{Data, Record, RecordStream};
use crate::snapshot::{OperatorPart, SnapshotCollector};

/// Batches of epochs after the processing one, with their timestamps' event times.
type Held<T> = BTreeMap<Epoch, Vec<(EventTime, Vec<Record<T>>)>>;

/// State encoded per key group: `(key group, bytes)`.
pub type KeyGroupStates = Vec<(usize, Vec<u8>)>;

/// An operator's state at a checkpoint, taken on the slot's thread and encoded elsewhere.
///
/// Encoding a snapshot (grouping by key group, sorting, serializing) costs far more than
/// copying the maps that hold it: a clone walks the entries once, without hashing. So an
/// operator takes a copy on the slot's thread, where its state is consistent, and hands the
/// encoding to the slot's snapshot writer, which runs it off the slot's thread while records
/// flow on ([`crate::snapshot::PendingSnapshot::finish`]). The copy must share nothing mutable
/// with the operator: it holds plain values (`Data` is `Clone + Send + Sync`), or values shared
/// through an `Arc` that the operator copies before it writes them (`Arc::make_mut`: the
/// memory backend's tables and a fold's groups do this: a snapshot copies their keys, not
/// their values).
#[must_use = "a state image is the operator's part of a checkpoint"]
pub struct StateImage(Image);

enum Image {
    Encoded(KeyGroupStates),
    Deferred(Box<dyn FnOnce() -> Result<KeyGroupStates, String> + Send>),
    WithFiles(Arc<StateFiles>, FileEncoder),
}

/// Which part of an image with files ([`StateImage::with_files`]) to encode.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Form {
    /// All of the state, in the canonical encoding (a savepoint's, which stands alone).
    Canonical,
    /// What the files do not hold (a checkpoint's, which uploads the files beside it).
    BesideFiles,
}

/// Encodes an image with files in either [`Form`] (shared: a savepoint's checkpoint needs both).
pub type FileEncoder = Arc<dyn Fn(Form) -> Result<KeyGroupStates, String> + Send + Sync>;

/// A directory of files holding part of an operator's state at one checkpoint — a RocksDB
/// checkpoint — which the slot's snapshot writer uploads as they are instead of encoding that
/// state, and only those files the checkpoints before it did not upload (an *incremental*
/// checkpoint). Whatever owns the directory (`owner`) removes it once the last image holding
/// it is gone.
pub struct StateFiles {
    dir: std::path::PathBuf,
    _owner: Box<dyn std::any::Any + Send + Sync>,
}

impl StateFiles {
    /// The files in `dir`, kept until `owner` is dropped.
    pub fn new(dir: std::path::PathBuf, owner: impl std::any::Any + Send + Sync) -> Self {
        StateFiles { dir, _owner: Box::new(owner) }
    }
    /// The directory holding the files.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl std::fmt::Debug for StateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFiles").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl StateImage {
    /// State already encoded.
    pub fn encoded(states: KeyGroupStates) -> Self {
        StateImage(Image::Encoded(states))
    }
    /// State to be encoded by `encode`, which owns a copy of it.
    pub fn deferred(encode: impl FnOnce() -> KeyGroupStates + Send + 'static) -> Self {
        StateImage::fallible(move || Ok(encode()))
    }
    /// State to be encoded by `encode`, which may fail (it reads a local disk, say): the
    /// failure fails the slot, which restarts from the last complete checkpoint (as when a
    /// sink cannot make its output durable).
    pub fn fallible(encode: impl FnOnce() -> Result<KeyGroupStates, String> + Send + 'static) -> Self {
        StateImage(Image::Deferred(Box::new(encode)))
    }
    /// State held partly (or wholly) in `files`: `encode` gives all of it in the canonical
    /// encoding ([`Form::Canonical`]) or only what the files do not hold
    /// ([`Form::BesideFiles`]). Either may fail, as for [`StateImage::fallible`].
    pub fn with_files(
        files: Arc<StateFiles>,
        encode: impl Fn(Form) -> Result<KeyGroupStates, String> + Send + Sync + 'static,
    ) -> Self {
        StateImage(Image::WithFiles(files, Arc::new(encode)))
    }
    /// The files and encoder of an image made by [`StateImage::with_files`]; any other image
    /// back as it was.
    pub fn into_files(self) -> Result<(Arc<StateFiles>, FileEncoder), StateImage> {
        match self.0 {
            Image::WithFiles(files, encode) => Ok((files, encode)),
            other => Err(StateImage(other)),
        }
    }
    /// The whole state in the canonical encoding, or why it could not be encoded.
    pub fn try_encode(self) -> Result<KeyGroupStates, String> {
        match self.0 {
            Image::Encoded(states) => Ok(states),
            Image::Deferred(encode) => encode(),
            Image::WithFiles(_, encode) => encode(Form::Canonical),
        }
    }
    /// The encoded state; panics if it cannot be encoded (where no checkpoint can be declined).
    pub fn encode(self) -> KeyGroupStates {
        self.try_encode().unwrap_or_else(|reason| panic!("a state snapshot could not be encoded: {reason}"))
    }
}

impl std::fmt::Debug for StateImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Image::Encoded(_) => "StateImage(encoded)",
            Image::Deferred(_) => "StateImage(deferred)",
            Image::WithFiles(..) => "StateImage(with files)",
        })
    }
}

/// What a stateful operator does; the scaffold does the rest.
pub trait StatefulLogic: 'static {
    /// Input records.
    type In: Data;
    /// Main output records.
    type Out: Data;
    /// Applies records of the processing epoch. Outputs go to `out`, records the operator
    /// judges late (its result for them can no longer change) to `late`.
    fn apply(
        &mut self,
        records: &mut Vec<Record<Self::In>>,
        out: &mut Vec<Record<Self::Out>>,
        late: &mut Vec<Record<Self::In>>,
    );
    /// Event time has passed `bound`: no record still to come has an event time below it
    /// (other than records the operator will judge late). Fire what that completes.
    fn advance(&mut self, bound: EventTime, out: &mut Vec<Record<Self::Out>>);
    /// Called at every activation (at least every few milliseconds when the operator asked to
    /// be polled): processing-time work.
    fn poll(&mut self, out: &mut Vec<Record<Self::Out>>) {
        let _ = out;
    }
    /// The least event time of any output the logic may still produce from what it holds
    /// (outputs of records still to come are at or after the bound passed). The scaffold
    /// never lets its output frontier pass it. A session that may still grow at its end holds
    /// its result's time back this way.
    fn output_hold(&self) -> EventTime {
        EventTime::MAX
    }
    /// The state, by key group (called at every checkpoint; sorted, so equal states encode
    /// equally): a copy, encoded later off the slot's thread — see [`StateImage`].
    fn snapshot(&self) -> StateImage;
    /// Loads restored state (the key groups this slot owns), before any record.
    fn restore(&mut self, states: KeyGroupStates) -> Result<(), String>;
}

/// Where the scaffold reports, and what it restores.
pub(crate) struct StatefulSetup {
    /// The operator's stable id.
    pub uid: String,
    /// The first epoch this slot runs (restored checkpoint + 1, or 1).
    pub start_epoch: Epoch,
    /// Restored state of the key groups this slot owns.
    pub restored: KeyGroupStates,
    /// Where snapshot parts go.
    pub snapshots: Rc<RefCell<SnapshotCollector>>,
    /// This operator's handle in the collector.
    pub part: OperatorPart,
    /// Where a restore failure is reported.
    pub fatal: Rc<RefCell<Option<String>>>,
    /// The slot's activity counter.
    pub activity: crate::Activity,
    /// The slot's counters (records on time and late; result rows are counted at the sinks).
    pub metrics: std::sync::Arc<crate::metrics::SlotMetrics>,
    /// Whether the records it takes in time count as records on time: only at the first
    /// stateful step of a pipeline (a later one takes what a stateful step made).
    pub counts_on_time: bool,
}

/// Builds a stateful operator around `logic`: its main output and its late output.
pub(crate) fn stateful_operator<'scope, L: StatefulLogic>(
    input: Stream<'scope, Time, Vec<Record<L::In>>>,
    name: &str,
    mut logic: L,
    setup: StatefulSetup,
) -> (RecordStream<'scope, L::Out>, RecordStream<'scope, L::In>, timely::scheduling::Activator) {
    let scope = input.scope();
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut input = builder.new_input(input, Pipeline);
    let (out_output, out_stream) = builder.new_output::<Vec<Record<L::Out>>>();
    let (late_output, late_stream) = builder.new_output::<Vec<Record<L::In>>>();
    let mut out_output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<Record<L::Out>>>>::from(out_output);
    let mut late_output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<Record<L::In>>>>::from(late_output);

    builder.build(move |initial: Vec<Capability<Time>>| {
        let StatefulSetup { uid, start_epoch, restored, snapshots, part, fatal, activity, metrics, counts_on_time } =
            setup;
        if let Err(reason) = logic.restore(restored) {
            fatal.borrow_mut().get_or_insert_with(|| format!("operator {uid}: cannot restore its state: {reason}"));
        }
        let mut passed = EventTime::MIN;
        // The event time of the output capabilities: the bound passed, held back by the logic.
        let mut output_time = EventTime::MIN;
        let start = Time::new(start_epoch, passed);
        let mut capabilities: Option<Vec<Capability<Time>>> = Some(initial.iter().map(|c| c.delayed(&start)).collect());
        drop(initial);
        let mut processing = start_epoch;
        // Batches of epochs later than `processing`, with their timestamps' event times.
        let mut held: Held<L::In> = BTreeMap::new();
        let mut out: Vec<Record<L::Out>> = Vec::new();
        let mut late: Vec<Record<L::In>> = Vec::new();
        move |frontiers| {
            let frontier = frontiers[0].frontier();
            let mut applied = 0usize;
            input.for_each(|stamp, data| {
                activity.note();
                let time = crate::message_time(&stamp);
                let early_snapshots = faultpoint::planted(PlantedBug::SnapshotBeforeEpochComplete);
                assert!(
                    time.epoch >= processing || early_snapshots,
                    "operator {uid}: record of completed epoch {} arrived in epoch {processing}",
                    time.epoch
                );
                if time.epoch <= processing {
                    applied += data.len();
                    logic.apply(data, &mut out, &mut late);
                } else {
                    held.entry(time.epoch).or_default().push((time.event_time, std::mem::take(data)));
                }
            });
            let Some(caps) = capabilities.as_mut() else {
                assert!(frontier.is_empty() && held.is_empty(), "operator {uid}: input after it finished");
                return;
            };
            logic.poll(&mut out);
            let frontier_epoch = frontier.iter().map(|t| t.epoch).min();
            // Fire what the frontier allows, then complete every epoch it has passed, in
            // order, firing again after each epoch's held batches are applied.
            loop {
                let bound = firing_bound(frontier.iter().map(|t| t.event_time), &held);
                if bound > passed {
                    logic.advance(bound, &mut out);
                }
                let mut out_handle = out_output.activate();
                let mut late_handle = late_output.activate();
                if counts_on_time {
                    SlotMetrics::add(&metrics.records_on_time, (applied - late.len().min(applied)) as u64);
                }
                SlotMetrics::add(&metrics.records_late, late.len() as u64);
                applied = 0;
                if !out.is_empty() {
                    out_handle.session(&caps[0]).give_container(&mut out);
                    out.clear();
                }
                if !late.is_empty() {
                    late_handle.session(&caps[1]).give_container(&mut late);
                    late.clear();
                }
                passed = passed.max(bound);
                let hold = passed.min(logic.output_hold());
                assert!(hold >= output_time, "operator {uid}: its output hold went back from {output_time} to {hold}");
                if hold > output_time {
                    output_time = hold;
                    caps.iter_mut().for_each(|cap| cap.downgrade(&Time::new(processing, output_time)));
                }
                if frontier_epoch.is_some_and(|epoch| epoch <= processing) {
                    // Planted bug: the first record of the next epoch passes for the end of
                    // this one, although records of this epoch may still be in flight.
                    let premature = faultpoint::planted(PlantedBug::SnapshotBeforeEpochComplete)
                        && frontier_epoch == Some(processing)
                        && held.contains_key(&(processing + 1));
                    if !premature {
                        break;
                    }
                }
                if frontier_epoch.is_none() && held.is_empty() {
                    snapshots.borrow_mut().operator_final(part, processing, logic.snapshot());
                    capabilities = None;
                    return;
                }
                snapshots.borrow_mut().operator_part(part, processing, logic.snapshot());
                activity.note();
                processing += 1;
                caps.iter_mut().for_each(|cap| cap.downgrade(&Time::new(processing, output_time)));
                if let Some(batches) = held.remove(&processing) {
                    for (_, mut batch) in batches {
                        applied += batch.len();
                        logic.apply(&mut batch, &mut out, &mut late);
                    }
                }
            }
        }
    });
    (out_stream, late_stream, activator)
}

/// Event time has passed the returned bound: no frontier element and no held batch has an
/// event time below it.
fn firing_bound<R>(
    frontier: impl Iterator<Item = EventTime>,
    held: &BTreeMap<Epoch, Vec<(EventTime, R)>>,
) -> EventTime {
    let held_min = held.values().flatten().map(|(time, _)| *time).min();
    frontier.chain(held_min).min().unwrap_or(EventTime::MAX)
}
