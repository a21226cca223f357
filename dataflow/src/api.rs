//! The DataStream API: a thin, typed layer over timely scopes for writing jobs.
//!
//! A job is a function that receives a [`JobBuilder`] and its parameters and wires sources,
//! operators and sinks — the vocabulary of Flink's DataStream API (`key_by`, `window`,
//! `aggregate`, side outputs), written the Rust way:
//!
//! ```ignore
//! fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
//!     let bids = job.source("bids", FileSource::new(params.files("input")?, BidCsv),
//!         WatermarkStrategy::bounded_out_of_orderness(4_000, |bid: &Bid| bid.date_time));
//!     let windows = bids.records
//!         .key_by(|bid: &Bid| bid.auction)
//!         .window(TumblingEventTimeWindows::of(10_000))
//!         .uid("per-auction")
//!         .aggregate(BidStats, |auction, window, stats| (*auction, window.start, stats.bids));
//!     windows.results.sink_csv("results", params.path("output")?);
//!     windows.late.sink_csv("late", params.path("output")?.join("late"));
//!     bids.errors.sink_csv("errors", params.path("output")?.join("errors"));
//!     Ok(())
//! }
//! ```
//!
//! Every process runs the same builder (timely's model: closures do not travel), once per
//! slot, and once more to *plan* the job — to learn its splits, sinks, exchanges and stateful
//! operators before anything runs, and to report a job built wrong (a duplicate operator id,
//! a window over a stream without event time, a late output nobody reads) as an error that
//! names the operator. Records are plain Rust values ([`Data`]); the stateless operators
//! compile to batch loops with no per-record allocation or dynamic dispatch.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use thiserror::Error;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concat;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::Activator;

use weir_core::job::{BadRecordPolicy, ParamError};
use weir_core::time::{Epoch, Time};

use crate::exchange::{ExchangeChannels, ExchangeReceive, ExchangeRx, ExchangeSend, ExchangeTx, TypedRx, TypedTx};
use crate::keyed::KeySelector;
use crate::keyed::{slot_of, EitherKey};
use crate::metrics::SlotMetrics;
use crate::process::{
    BroadcastKey, Broadcasting, CoProcess, Either, Emitted, KeyedBroadcastProcessFunction, KeyedCoProcessFunction,
    KeyedProcessFunction, OutputTag, ProcessOperator,
};
use crate::record::{Data, Record};
use crate::sink::{CsvRow, CsvRows, EpochSink, ErrorRow, JsonLines, RowFormat, SerdeCsv, SinkSetup};
use crate::snapshot::{SnapshotCollector, SplitState};
use crate::source::{source_operator, RateLimit, Source, SourceSetup, TimestampAssigner, WatermarkStrategy};
use crate::stateful::{stateful_operator, KeyGroupStates, StatefulSetup};
use crate::window::{AggregateFunction, BoxedResult, CollectAll, Reduce, TimeWindow, WindowKind};

/// A job built wrong, or a parameter it cannot use. Reported before anything runs.
#[derive(Debug, Error)]
pub enum BuildError {
    /// An operator is wired or configured wrongly.
    #[error("operator {operator}: {reason}")]
    Operator {
        /// The operator's id or name.
        operator: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A parameter the job asked for is missing or of another type.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// Anything else the job's builder reports.
    #[error("{0}")]
    Job(String),
}

/// What planning learned about a job: enough to deploy, recover and check it.
#[derive(Clone, Debug, Default)]
pub struct JobPlan {
    /// Sources in build order, with their splits.
    pub sources: Vec<SourcePlan>,
    /// Sinks in build order.
    pub sinks: Vec<SinkPlan>,
    /// The number of exchanges (`key_by`s at parallelism > 1 need channels for each).
    pub exchanges: usize,
    /// The ids of the stateful operators.
    pub operators: Vec<String>,
}

impl JobPlan {
    /// The number of splits over all sources (split `i` runs on slot `i % parallelism`).
    pub fn split_count(&self) -> usize {
        self.sources.iter().map(|s| s.splits.len()).sum()
    }
    /// The file sinks' directories.
    pub fn sink_dirs(&self) -> Vec<PathBuf> {
        self.sinks.iter().filter_map(|s| s.dir.clone()).collect()
    }
}

/// A source of a planned job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePlan {
    /// The source's name (its stable id).
    pub name: String,
    /// Its splits, described.
    pub splits: Vec<String>,
    /// Its watermark-alignment group, named by the group's first source: the index in
    /// [`JobPlan::sources`] of the first source whose records meet its own in some stream. A
    /// source pauses while it runs far ahead of the slowest source of its group
    /// ([`crate::alignment`]).
    pub alignment_group: usize,
}

/// A sink of a planned job.
#[derive(Clone, Debug)]
pub struct SinkPlan {
    /// The sink's name.
    pub name: String,
    /// Its directory (file sinks; `None` for other sinks).
    pub dir: Option<PathBuf>,
    /// The first line of each of its files, if its format has one.
    pub header: Option<String>,
    /// Its second phase: commits and recovery outside the dataflow.
    pub committer: std::sync::Arc<dyn crate::sink::EpochCommitter>,
}

/// What one slot's operators share: identity, epoch control, snapshots, errors, channels.
pub(crate) struct SlotContext {
    pub slot: usize,
    pub parallelism: usize,
    pub attempt: u64,
    pub start_epoch: Epoch,
    pub planning: bool,
    pub on_bad_record: BadRecordPolicy,
    /// Where the job keeps keyed state.
    pub state_backend: weir_core::job::StateBackendKind,
    /// The slot's directory for local state (`None` while planning: nothing is opened then).
    pub state_dir: Option<PathBuf>,
    pub target_epoch: Rc<Cell<Epoch>>,
    pub final_checkpoint: Rc<Cell<Option<Epoch>>>,
    pub snapshots: Rc<RefCell<SnapshotCollector>>,
    pub fatal: Rc<RefCell<Option<String>>>,
    pub pressure: Rc<Cell<usize>>,
    /// The slot's watermark alignment: sources pause while far ahead of the slowest.
    pub alignment: Rc<crate::alignment::Alignment>,
    pub activity: crate::Activity,
    pub metrics: Arc<SlotMetrics>,
    pub rate_limit: Rc<Option<RateLimit>>,
    pub restored_splits: RefCell<HashMap<usize, SplitState>>,
    pub restored_state: RefCell<HashMap<String, KeyGroupStates>>,
    /// Operators whose keyed store restores from files in its directory, until it opens.
    pub restored_instances: RefCell<std::collections::BTreeSet<String>>,
    /// Channels of the job's exchanges, in build order (`key_by` and `broadcast`), taken as the job is built.
    pub exchanges: RefCell<std::collections::VecDeque<ExchangeChannels>>,
    pub activators: RefCell<Vec<Activator>>,
}

/// The typed ends of one exchange: a sender to every slot, a receiver from every slot.
type ExchangeEnds<T> = (Vec<Box<dyn ExchangeTx<Vec<Record<T>>>>>, Vec<Box<dyn ExchangeRx<Vec<Record<T>>>>>);

impl SlotContext {
    /// Takes the channels of the job's next exchange (`key_by` and `broadcast` take them in
    /// build order) and types them for records of `T`.
    fn take_exchange<T: Data>(&self) -> ExchangeEnds<T> {
        let channels = self.exchanges.borrow_mut().pop_front().expect("one set of exchange channels per exchange");
        assert_eq!(channels.senders.len(), self.parallelism, "exchange senders");
        assert_eq!(channels.receivers.len(), self.parallelism, "exchange receivers");
        let senders = channels
            .senders
            .into_iter()
            .map(|tx| Box::new(TypedTx::<Record<T>>::new(tx)) as Box<dyn ExchangeTx<Vec<Record<T>>>>)
            .collect();
        let receivers = channels
            .receivers
            .into_iter()
            .enumerate()
            .map(|(from, rx)| {
                Box::new(TypedRx::<Record<T>>::new(rx, from, self.fatal.clone())) as Box<dyn ExchangeRx<Vec<Record<T>>>>
            })
            .collect();
        (senders, receivers)
    }
}

/// The plan as it is built, and the build errors found so far.
#[derive(Default)]
pub(crate) struct PlanState {
    pub plan: JobPlan,
    pub uids: BTreeSet<String>,
    pub derived_uids: usize,
    pub errors: Vec<BuildError>,
    /// Side outputs that lose records unless read: `(what, read yet)`.
    pub must_read: Vec<(String, Rc<Cell<bool>>)>,
    /// The type each side output is read as, by (operator, tag name).
    pub side_output_types: std::collections::BTreeMap<(String, String), &'static str>,
    /// This slot's splits over all sources.
    pub slot_splits: usize,
}

/// The keyed store of operator `uid`, opened for whatever key type its state needs.
struct OperatorStore<'a> {
    shared: &'a Shared,
    uid: &'a str,
}

impl crate::window::OpenStore for OperatorStore<'_> {
    fn open<S: crate::state::Key>(self) -> crate::state::Store<S> {
        self.shared.keyed_store(self.uid)
    }
}

pub(crate) struct Shared {
    pub ctx: SlotContext,
    pub plan: RefCell<PlanState>,
}

impl Shared {
    /// The keyed state store of operator `uid` in this slot, on the job's backend. A store
    /// that cannot open is a build error of the operator (the job then does not start).
    fn keyed_store<K: crate::state::Key>(&self, uid: &str) -> crate::state::Store<K> {
        let ctx = &self.ctx;
        let Some(dir) = &ctx.state_dir else { return crate::state::Store::default() };
        // One directory per operator, named by its uid.
        let dir = crate::state::instance_dir(dir, uid);
        let opened = if ctx.restored_instances.borrow_mut().remove(uid) {
            crate::state::Store::open_restored(ctx.state_backend, &dir)
        } else {
            crate::state::Store::open(ctx.state_backend, &dir)
        };
        opened.unwrap_or_else(|reason| {
            let backend = ctx.state_backend.name();
            self.error(
                uid,
                format!(
                    "cannot open its {backend} state backend in {}: {reason} (check --local-state-dir)",
                    dir.display()
                ),
            );
            crate::state::Store::default()
        })
    }
    fn error(&self, operator: &str, reason: impl Into<String>) {
        self.plan
            .borrow_mut()
            .errors
            .push(BuildError::Operator { operator: operator.to_owned(), reason: reason.into() });
    }

    /// Registers a stateful operator's id: the explicit one, or one derived from the graph.
    fn register_uid(&self, kind: &str, explicit: Option<String>) -> String {
        let mut plan = self.plan.borrow_mut();
        let uid = match explicit {
            Some(uid) => uid,
            None => {
                plan.derived_uids += 1;
                let uid = format!("{kind}-{}", plan.derived_uids);
                if self.ctx.planning && self.ctx.slot == 0 {
                    tracing::warn!(
                        operator = %uid,
                        "operator has no uid; its state is keyed by a derived id that changes when the job's graph does \
                         (set one with .uid(\"…\") to keep state across code changes)"
                    );
                }
                uid
            }
        };
        if !plan.uids.insert(uid.clone()) {
            plan.errors.push(BuildError::Operator {
                operator: uid.clone(),
                reason: "this uid is used by another operator; give every stateful operator its own uid".into(),
            });
            // The build fails; until it returns, the duplicate needs a name of its own.
            let duplicate = format!("{uid} (duplicate {})", plan.errors.len());
            plan.uids.insert(duplicate.clone());
            return duplicate;
        }
        plan.plan.operators.push(uid.clone());
        uid
    }
}

/// Builds a job's dataflow in one slot (or plans it). Passed to the job's builder function.
pub struct JobBuilder<'s> {
    scope: Scope<'s, Time>,
    shared: Rc<Shared>,
}

/// A source's outputs: its records and its malformed input.
pub struct SourceStreams<'s, T: Data> {
    /// The records, stamped with event time.
    pub records: DataStream<'s, T>,
    /// Malformed input with its position (file and line), to be written somewhere: a job
    /// that leaves it unread does not build.
    pub errors: DataStream<'s, ErrorRow>,
}

impl<'s> JobBuilder<'s> {
    pub(crate) fn new(scope: Scope<'s, Time>, shared: Rc<Shared>) -> Self {
        JobBuilder { scope, shared }
    }

    pub(crate) fn shared(&self) -> &Rc<Shared> {
        &self.shared
    }

    /// The job's parallelism.
    pub fn parallelism(&self) -> usize {
        self.shared.ctx.parallelism
    }

    /// Adds a source. `name` is its stable id (checkpointed positions are keyed by it and by
    /// split). `strategy` assigns event time and watermarks per split.
    pub fn source<S: Source, A: TimestampAssigner<S::Record>>(
        &mut self,
        name: &str,
        source: S,
        strategy: WatermarkStrategy<A>,
    ) -> SourceStreams<'s, S::Record> {
        let shared = &self.shared;
        let ctx = &shared.ctx;
        let described = source.splits(ctx.parallelism);
        let alignment_group = ctx.alignment.new_group();
        let (offset, slot_splits) = {
            let mut plan = shared.plan.borrow_mut();
            if plan.plan.sources.iter().any(|s| s.name == name) {
                plan.errors.push(BuildError::Operator {
                    operator: name.to_owned(),
                    reason: "another source has this name; give every source its own".into(),
                });
            }
            let offset = plan.plan.split_count();
            // The group as built so far; `finish` names it by its first source.
            plan.plan.sources.push(crate::api::SourcePlan {
                name: name.to_owned(),
                splits: described.clone(),
                alignment_group,
            });
            let mine: Vec<(usize, usize)> = (0..described.len())
                .map(|index| (offset + index, index))
                .filter(|(global, _)| global % ctx.parallelism == ctx.slot)
                .collect();
            plan.slot_splits += mine.len();
            (offset, mine)
        };
        if ctx.planning {
            if let Err(reason) = source.validate() {
                shared.error(name, reason);
            }
        }
        let restored = {
            let mut all = ctx.restored_splits.borrow_mut();
            let range = offset..offset + described.len();
            let keys: Vec<usize> = all.keys().copied().filter(|k| range.contains(k)).collect();
            keys.into_iter().filter_map(|k| all.remove(&k).map(|state| (k, state))).collect()
        };
        let timestamps = A::ASSIGNS;
        let part = ctx.snapshots.borrow_mut().register_source();
        let (records, errors, activator) = source_operator(
            self.scope,
            source,
            strategy,
            SourceSetup {
                name: name.to_owned(),
                splits: slot_splits,
                split_count: described.len(),
                restored,
                on_bad_record: ctx.on_bad_record,
                planning: ctx.planning,
                start_epoch: ctx.start_epoch,
                target_epoch: ctx.target_epoch.clone(),
                final_checkpoint: ctx.final_checkpoint.clone(),
                pressure: ctx.pressure.clone(),
                alignment: ctx.alignment.clone(),
                alignment_group,
                snapshots: ctx.snapshots.clone(),
                part,
                fatal: ctx.fatal.clone(),
                metrics: ctx.metrics.clone(),
                activity: ctx.activity.clone(),
                rate_limit: ctx.rate_limit.clone(),
            },
        );
        ctx.activators.borrow_mut().push(activator);
        let errors_read = Rc::new(Cell::new(false));
        shared.plan.borrow_mut().must_read.push((format!("source {name}: its errors output"), errors_read.clone()));
        SourceStreams {
            records: DataStream::new(records, shared.clone(), timestamps, name.to_owned(), None)
                .marked(Marks { source_group: Some(alignment_group), ..Marks::default() }),
            errors: DataStream::new(error_records(errors), shared.clone(), false, name.to_owned(), Some(errors_read)),
        }
    }

    /// Checks the finished graph: every error found while building, and side outputs nobody
    /// reads (their records would be lost).
    pub(crate) fn finish(self) -> Result<JobPlan, BuildError> {
        let mut plan = self.shared.plan.borrow_mut();
        if let Some(error) = plan.errors.drain(..).next() {
            return Err(error);
        }
        if let Some((what, _)) = plan.must_read.iter().find(|(_, read)| !read.get()) {
            return Err(BuildError::Job(format!(
                "{what} is not read: records sent there would be lost; write it to a sink (or call .discard() to drop them knowingly)"
            )));
        }
        // The groups are complete now that the graph is: name each by its first source.
        let alignment = &self.shared.ctx.alignment;
        let built: Vec<crate::alignment::Group> = plan.plan.sources.iter().map(|s| s.alignment_group).collect();
        for (index, source) in plan.plan.sources.iter_mut().enumerate() {
            source.alignment_group = (0..=index)
                .find(|&first| alignment.same_group(built[first], built[index]))
                .expect("a source is in its own group");
        }
        Ok(plan.plan.clone())
    }
}

/// Wraps a source's error rows as records; error rows carry no event time.
fn error_records<'s>(errors: Stream<'s, Time, Vec<ErrorRow>>) -> Stream<'s, Time, Vec<Record<ErrorRow>>> {
    errors.unary::<CapacityContainerBuilder<Vec<Record<ErrorRow>>>, _, _, _>(Pipeline, "ErrorRows", |_, _| {
        move |input, output| {
            input.for_each(|time, data| {
                output.session(&time).give_iterator(data.drain(..).map(|row| Record::derived(row, i64::MIN)));
            });
        }
    })
}

/// A stream of records of type `T`.
pub struct DataStream<'s, T: Data> {
    stream: Stream<'s, Time, Vec<Record<T>>>,
    shared: Rc<Shared>,
    /// Whether records carry event time from a timestamp assigner.
    timestamps: bool,
    /// The operator that produced it (for error messages).
    origin: String,
    /// Set when the stream is read, for outputs that must be.
    read: Option<Rc<Cell<bool>>>,
    /// What the stream is, for the run summary's counts.
    marks: Marks,
}

/// What a stream is, for the run summary's counts and for watermark alignment; kept through
/// stateless steps.
#[derive(Copy, Clone, Debug, Default)]
struct Marks {
    /// A late or error output, or made from one: its sinks' rows are not the job's results
    /// (which are counted at the sinks).
    side_output: bool,
    /// Made by a stateful step (its results or its late output): records reaching a further
    /// stateful step from it are not counted as on time again (the first step counted them, on
    /// time or late), and its frontier follows that step, so a receiver of it is not aligned
    /// ([`crate::alignment`]).
    after_stateful: bool,
    /// The group of the sources it is made from, for watermark alignment (kept through
    /// updating streams); `None` for streams made from no source.
    source_group: Option<crate::alignment::Group>,
}

impl Marks {
    /// The group whose alignment a receiver of this stream reports to: streams straight from
    /// sources (stateless steps only) with event time.
    fn aligned(&self, timestamps: bool) -> Option<crate::alignment::Group> {
        self.source_group.filter(|_| timestamps && !self.after_stateful)
    }
}

impl<T: Data> Clone for DataStream<'_, T> {
    fn clone(&self) -> Self {
        DataStream {
            stream: self.stream.clone(),
            shared: self.shared.clone(),
            timestamps: self.timestamps,
            origin: self.origin.clone(),
            read: self.read.clone(),
            marks: self.marks,
        }
    }
}

impl<'s, T: Data> DataStream<'s, T> {
    fn new(
        stream: Stream<'s, Time, Vec<Record<T>>>,
        shared: Rc<Shared>,
        timestamps: bool,
        origin: String,
        read: Option<Rc<Cell<bool>>>,
    ) -> Self {
        // The outputs that must be read are the late and error outputs.
        let marks = Marks { side_output: read.is_some(), ..Marks::default() };
        DataStream { stream, shared, timestamps, origin, read, marks }
    }

    fn derive<U: Data>(&self, stream: Stream<'s, Time, Vec<Record<U>>>, origin: &str) -> DataStream<'s, U> {
        DataStream::new(stream, self.shared.clone(), self.timestamps, origin.to_owned(), None).marked(self.marks)
    }

    /// The stream with `marks` added (those of the stream a stateless step made it from).
    fn marked(mut self, marks: Marks) -> Self {
        self.marks.side_output |= marks.side_output;
        self.marks.after_stateful |= marks.after_stateful;
        self.marks.source_group = self.shared.ctx.alignment.merge_groups(self.marks.source_group, marks.source_group);
        self
    }

    /// The slot's counters if this stream's rows are the job's results (not a side output).
    fn results_metrics(&self) -> Option<Arc<SlotMetrics>> {
        (!self.marks.side_output).then(|| self.shared.ctx.metrics.clone())
    }

    /// A stream of the job `shared` belongs to, out of an updating stream (see
    /// [`crate::updating`]), which entries and folds, stateful steps, made from the sources
    /// of `source_group`.
    pub(crate) fn from_parts(
        stream: Stream<'s, Time, Vec<Record<T>>>,
        shared: Rc<Shared>,
        timestamps: bool,
        source_group: Option<crate::alignment::Group>,
        origin: &str,
    ) -> Self {
        DataStream::new(stream, shared, timestamps, origin.to_owned(), None).marked(Marks {
            after_stateful: true,
            source_group,
            ..Marks::default()
        })
    }

    /// The watermark-alignment group of the sources this stream is made from.
    pub(crate) fn source_group(&self) -> Option<crate::alignment::Group> {
        self.marks.source_group
    }

    /// The job this stream belongs to.
    pub(crate) fn shared(&self) -> Rc<Shared> {
        self.shared.clone()
    }

    /// Whether records carry event time from a timestamp assigner.
    pub(crate) fn has_timestamps(&self) -> bool {
        self.timestamps
    }

    /// The timely stream, marking this one read.
    pub(crate) fn into_stream(self) -> Stream<'s, Time, Vec<Record<T>>> {
        self.take()
    }

    /// The timely stream, marking this one read.
    fn take(self) -> Stream<'s, Time, Vec<Record<T>>> {
        if let Some(read) = &self.read {
            read.set(true);
        }
        self.stream
    }

    /// Applies `f` to every record (event time is kept).
    pub fn map<U: Data>(self, mut f: impl FnMut(T) -> U + 'static) -> DataStream<'s, U> {
        let (shared, timestamps, marks) = (self.shared.clone(), self.timestamps, self.marks);
        let stream = self.take().unary::<CapacityContainerBuilder<Vec<Record<U>>>, _, _, _>(Pipeline, "Map", |_, _| {
            move |input, output| {
                input.for_each(|time, data| {
                    output.session(&time).give_iterator(data.drain(..).map(|record| Record {
                        time: record.time,
                        watermark: record.watermark,
                        value: f(record.value),
                    }));
                });
            }
        });
        DataStream::new(stream, shared, timestamps, "map".into(), None).marked(marks)
    }

    /// Keeps the records for which `predicate` holds.
    pub fn filter(self, mut predicate: impl FnMut(&T) -> bool + 'static) -> DataStream<'s, T> {
        let (shared, timestamps, marks) = (self.shared.clone(), self.timestamps, self.marks);
        let stream =
            self.take().unary::<CapacityContainerBuilder<Vec<Record<T>>>, _, _, _>(Pipeline, "Filter", |_, _| {
                move |input, output| {
                    input.for_each(|time, data| {
                        data.retain(|record| predicate(&record.value));
                        if !data.is_empty() {
                            output.session(&time).give_container(data);
                        }
                    });
                }
            });
        DataStream::new(stream, shared, timestamps, "filter".into(), None).marked(marks)
    }

    /// Replaces every record by the records `f` returns (each with the input's event time).
    pub fn flat_map<U: Data, I: IntoIterator<Item = U>>(
        self,
        mut f: impl FnMut(T) -> I + 'static,
    ) -> DataStream<'s, U> {
        let (shared, timestamps, marks) = (self.shared.clone(), self.timestamps, self.marks);
        let stream =
            self.take().unary::<CapacityContainerBuilder<Vec<Record<U>>>, _, _, _>(Pipeline, "FlatMap", |_, _| {
                move |input, output| {
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for record in data.drain(..) {
                            let (stamp, watermark) = (record.time, record.watermark);
                            session.give_iterator(f(record.value).into_iter().map(|value| Record {
                                value,
                                time: stamp,
                                watermark,
                            }));
                        }
                    });
                }
            });
        DataStream::new(stream, shared, timestamps, "flat_map".into(), None).marked(marks)
    }

    /// Both streams' records in one stream.
    pub fn union(self, other: DataStream<'s, T>) -> DataStream<'s, T> {
        let (shared, timestamps) = (self.shared.clone(), self.timestamps && other.timestamps);
        // Their sources' records now meet: one group for watermark alignment.
        let marks = Marks {
            side_output: self.marks.side_output && other.marks.side_output,
            after_stateful: self.marks.after_stateful || other.marks.after_stateful,
            source_group: shared.ctx.alignment.merge_groups(self.marks.source_group, other.marks.source_group),
        };
        let stream = self.take().concat(other.take());
        DataStream::new(stream, shared, timestamps, "union".into(), None).marked(marks)
    }

    /// Sends every record to every slot, to be connected with a keyed stream
    /// ([`KeyedStream::connect_broadcast`]): rules, thresholds or reference data that every
    /// key's processing reads.
    pub fn broadcast(self) -> BroadcastStream<'s, T> {
        let shared = self.shared.clone();
        let (timestamps, marks) = (self.timestamps, self.marks);
        let ctx = &shared.ctx;
        let parallelism = ctx.parallelism;
        shared.plan.borrow_mut().plan.exchanges += 1;
        let stream = if parallelism == 1 || ctx.planning {
            self.take()
        } else {
            let (senders, receivers) = ctx.take_exchange::<T>();
            let scope = self.stream.scope();
            let aligned = marks.aligned(timestamps).map(|group| (ctx.alignment.clone(), group));
            let send = self.take().exchange_broadcast(senders, ctx.pressure.clone(), ctx.activity.clone());
            let (received, receive) = ExchangeReceive::build_aligned(scope, receivers, ctx.activity.clone(), aligned);
            ctx.activators.borrow_mut().extend([send, receive]);
            received
        };
        BroadcastStream {
            stream: DataStream::new(stream, shared.clone(), timestamps, "broadcast".into(), None).marked(marks),
        }
    }

    /// Partitions the stream by key: records with equal keys meet in one slot (the owner of
    /// the key's key group), where keyed state and windows live. `key` must be a pure function
    /// of the record (it is evaluated again where the record arrives).
    pub fn key_by<K, KF>(self, key: KF) -> KeyedStream<'s, K, T, KF>
    where
        K: Data + Hash + Eq + Ord,
        KF: KeySelector<T, K> + Clone,
    {
        let shared = self.shared.clone();
        let (timestamps, marks) = (self.timestamps, self.marks);
        let ctx = &shared.ctx;
        let parallelism = ctx.parallelism;
        shared.plan.borrow_mut().plan.exchanges += 1;
        let stream = if parallelism == 1 || ctx.planning {
            self.take()
        } else {
            let (senders, receivers) = ctx.take_exchange::<T>();
            let route_key = key.clone();
            let scope = self.stream.scope();
            let send = self.take().exchange_send(
                senders,
                move |record: &Record<T>| slot_of(&route_key.key(&record.value), parallelism),
                ctx.pressure.clone(),
                ctx.activity.clone(),
            );
            // Straight from sources (stateless steps only) with event time: see `alignment`.
            let aligned = marks.aligned(timestamps).map(|group| (ctx.alignment.clone(), group));
            let (received, receive) = ExchangeReceive::build_aligned(scope, receivers, ctx.activity.clone(), aligned);
            ctx.activators.borrow_mut().extend([send, receive]);
            received
        };
        KeyedStream {
            stream: DataStream::new(stream, shared.clone(), timestamps, "key_by".into(), None).marked(marks),
            key,
            _key: std::marker::PhantomData,
        }
    }

    /// Writes the stream to an exactly-once CSV file sink in `dir`: staged per checkpoint
    /// epoch, committed when the checkpoint completes (see [`crate::sink`]).
    pub fn sink_csv(self, name: &str, dir: impl Into<PathBuf>)
    where
        T: CsvRow,
    {
        self.sink_files(name, dir, CsvRows)
    }

    /// Writes the stream as CSV through serde (struct fields in order) under `header`,
    /// exactly once.
    pub fn sink_serde_csv(self, name: &str, dir: impl Into<PathBuf>, header: &str)
    where
        T: serde::Serialize,
    {
        self.sink_files(name, dir, SerdeCsv::<T>::new(header))
    }

    /// Writes the stream as JSON lines through serde, exactly once.
    pub fn sink_json(self, name: &str, dir: impl Into<PathBuf>)
    where
        T: serde::Serialize,
    {
        self.sink_files(name, dir, JsonLines)
    }

    /// Writes the stream to an exactly-once file sink in `dir`, one file per slot and
    /// checkpoint epoch, in `format`.
    pub fn sink_files<F: RowFormat<Record<T>>>(self, name: &str, dir: impl Into<PathBuf>, format: F) {
        let shared = self.shared.clone();
        let ctx = &shared.ctx;
        let dir = dir.into();
        {
            let mut plan = shared.plan.borrow_mut();
            if plan.plan.sinks.iter().any(|s| s.dir.as_ref() == Some(&dir)) {
                plan.errors.push(BuildError::Operator {
                    operator: name.to_owned(),
                    reason: format!("another sink writes to {}; give every sink its own directory", dir.display()),
                });
            }
            let header = format.header().map(str::to_owned);
            let committer = std::sync::Arc::new(crate::sink::FileCommitter::new(dir.clone()));
            plan.plan.sinks.push(SinkPlan { name: name.to_owned(), dir: Some(dir.clone()), header, committer });
        }
        let sink = crate::sink::FileSink::new(dir.clone(), ctx.slot, ctx.attempt, format);
        let part = ctx.snapshots.borrow_mut().register_sink();
        let results = self.results_metrics();
        self.take().epoch_sink(
            sink,
            SinkSetup {
                part,
                snapshots: ctx.snapshots.clone(),
                fatal: ctx.fatal.clone(),
                activity: ctx.activity.clone(),
                results,
            },
        );
    }

    /// Writes the stream to any exactly-once sink: `open(slot, attempt)` makes the slot's
    /// [`TransactionalSink`](crate::sink::TransactionalSink) (stage per epoch, prepare before the
    /// checkpoint), and `committer` is its second phase (commit after the checkpoint, recover on
    /// a restore), shared by the job. Sinks other than files fence stale attempts themselves
    /// (the attempt is part of what `open` gets).
    pub fn sink<S, O>(self, name: &str, open: O, committer: std::sync::Arc<dyn crate::sink::EpochCommitter>)
    where
        S: crate::sink::TransactionalSink<Record<T>>,
        O: FnOnce(usize, u64) -> S,
    {
        let shared = self.shared.clone();
        let ctx = &shared.ctx;
        let dir = committer.directory().map(Path::to_path_buf);
        shared.plan.borrow_mut().plan.sinks.push(SinkPlan { name: name.to_owned(), dir, header: None, committer });
        let sink = open(ctx.slot, ctx.attempt);
        let part = ctx.snapshots.borrow_mut().register_sink();
        let results = self.results_metrics();
        self.take().epoch_sink(
            sink,
            SinkSetup {
                part,
                snapshots: ctx.snapshots.clone(),
                fatal: ctx.fatal.clone(),
                activity: ctx.activity.clone(),
                results,
            },
        );
    }

    /// Stops the job with the error `reason(record)` if any record arrives: for a stream that
    /// must stay empty — the late output of an operator whose answer a late record would make
    /// wrong — an error instead of a silent drop. (The job fails the way a slot's failure fails
    /// it: restarted from its last checkpoint, up to its restart limit.)
    ///
    /// It is a sink, not a filter: a checkpoint waits for every sink to pass its epoch, so none
    /// can complete past such a record (and be restored without it) before the job has stopped.
    pub fn fail_if_any(self, reason: impl Fn(&T) -> String + 'static) {
        let shared = self.shared.clone();
        let ctx = &shared.ctx;
        let part = ctx.snapshots.borrow_mut().register_sink();
        let fatal = ctx.fatal.clone();
        let sink = MustStayEmpty { reason, fatal: fatal.clone() };
        self.take().epoch_sink(
            sink,
            SinkSetup { part, snapshots: ctx.snapshots.clone(), fatal, activity: ctx.activity.clone(), results: None },
        );
    }

    /// Drops the records knowingly: for outputs that must be read but are not wanted (late
    /// records, errors). A job's results go to a sink, [`DataStream::blackhole`] included.
    pub fn discard(self) {
        drop(self.take());
    }

    /// Drops the job's results, counting them (a "blackhole" sink: for benchmarks, and SQL's
    /// `'connector' = 'blackhole'`).
    pub fn blackhole(self) {
        let results = self.results_metrics();
        self.take().sink(Pipeline, "Blackhole", move |(input, _frontier)| {
            input.for_each(|_time, data| {
                if let Some(metrics) = &results {
                    SlotMetrics::add(&metrics.rows_emitted, data.len() as u64);
                }
            });
        });
    }

    /// Prints every record to standard output with its slot (for experiments: not exactly-once).
    pub fn print(self, label: &str)
    where
        T: std::fmt::Debug,
    {
        let (slot, label) = (self.shared.ctx.slot, label.to_owned());
        let results = self.results_metrics();
        self.take().sink(Pipeline, "Print", move |(input, _frontier)| {
            input.for_each(|_time, data| {
                if let Some(metrics) = &results {
                    SlotMetrics::add(&metrics.rows_emitted, data.len() as u64);
                }
                for record in data.iter() {
                    println!("{label} [slot {slot}] {:?}", record.value);
                }
            });
        });
    }

    /// Records a build error naming `operator` unless this stream has event time.
    fn require_event_time(&self, operator: &str, what: &str) {
        if !self.timestamps {
            self.shared.error(
                operator,
                format!(
                    "{what} needs event time, but its input (after {}) has no timestamp assigner; give the source a \
                     WatermarkStrategy::bounded_out_of_orderness(…, |record| event_time)",
                    self.origin
                ),
            );
        }
    }

    /// Builds a stateful operator on the scaffold. Its late output must be read if
    /// `late_output` (window kinds); `polled` operators are woken every few milliseconds
    /// (processing-time timers).
    pub(crate) fn stateful<L: crate::stateful::StatefulLogic<In = T>>(
        self,
        kind: &str,
        uid: Option<String>,
        logic: L,
        late_output: bool,
        polled: bool,
    ) -> (DataStream<'s, L::Out>, DataStream<'s, T>) {
        self.stateful_with(kind, uid, |_| logic, late_output, polled)
    }

    /// [`DataStream::stateful`] with logic made once the operator's uid is known (`logic` is
    /// given it: a keyed store is opened by uid).
    pub(crate) fn stateful_with<L: crate::stateful::StatefulLogic<In = T>>(
        self,
        kind: &str,
        uid: Option<String>,
        logic: impl FnOnce(&str) -> L,
        late_output: bool,
        polled: bool,
    ) -> (DataStream<'s, L::Out>, DataStream<'s, T>) {
        let shared = self.shared.clone();
        let ctx = &shared.ctx;
        let uid = shared.register_uid(kind, uid);
        let logic = logic(&uid);
        let part = ctx.snapshots.borrow_mut().register_operator(&uid);
        let restored = ctx.restored_state.borrow_mut().remove(&uid).unwrap_or_default();
        let setup = StatefulSetup {
            uid: uid.clone(),
            start_epoch: ctx.start_epoch,
            restored,
            snapshots: ctx.snapshots.clone(),
            part,
            fatal: ctx.fatal.clone(),
            activity: ctx.activity.clone(),
            metrics: ctx.metrics.clone(),
            counts_on_time: !self.marks.after_stateful,
        };
        let this = self.clone();
        let (out, late, activator) = stateful_operator(self.take(), &format!("{kind}({uid})"), logic, setup);
        if polled {
            ctx.activators.borrow_mut().push(activator);
        }
        let late_read = Rc::new(Cell::new(!late_output));
        if late_output {
            shared.plan.borrow_mut().must_read.push((format!("operator {uid}: its late output"), late_read.clone()));
        }
        let after = Marks { after_stateful: true, ..Marks::default() };
        let out = this.derive(out, &uid).marked(after);
        // Its frontier is the operator's too: not a stream straight from sources.
        let late = DataStream::new(late, shared.clone(), this.timestamps, uid, Some(late_read))
            .marked(Marks { source_group: this.marks.source_group, ..after });
        (out, late)
    }
}

/// A stream partitioned by key (see [`DataStream::key_by`]).
pub struct KeyedStream<'s, K, T: Data, KF> {
    stream: DataStream<'s, T>,
    key: KF,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<'s, K, T, KF> KeyedStream<'s, K, T, KF>
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    KF: KeySelector<T, K> + Clone,
{
    /// The partitioned stream and its key selector.
    pub(crate) fn into_parts(self) -> (DataStream<'s, T>, KF) {
        (self.stream, self.key)
    }

    /// Groups each key's records into event-time windows: tumbling, sliding, cumulating or
    /// session windows.
    pub fn window<W: 'static>(self, assigner: W) -> WindowedStream<'s, K, T, KF, W> {
        WindowedStream { keyed: self, assigner, uid: None, allowed_lateness_ms: 0 }
    }

    /// One window per key for all of its records, fired by `trigger` (`CountTrigger(n)` is
    /// Flink's `countWindow(n)`; any `Fn(&record, time, count, &accumulator) -> TriggerResult`
    /// is a custom trigger). Records reach the trigger in event-time order; continue with
    /// `.aggregate(uid, function, result)`.
    pub fn global_window<Tr>(self, trigger: Tr) -> GlobalWindowedStream<'s, K, T, KF, Tr> {
        GlobalWindowedStream { keyed: self, trigger }
    }

    /// Runs `function` on every record, in event-time order, with its key's state and timers
    /// (see [`crate::process`]). `uid` is the operator's stable id (its state and timers are
    /// checkpointed under it).
    pub fn process<O: Data, F: KeyedProcessFunction<K, T, O>>(self, uid: &str, function: F) -> ProcessOutput<'s, O, T> {
        self.stream.require_event_time(uid, "a process function hands records over in event-time order, so it");
        let logic = ProcessOperator::new(function, self.key, Box::new(weir_core::rt::processing_time_ms))
            .with_store(self.stream.shared.keyed_store(uid));
        let (emitted, late) = self.stream.stateful("process", Some(uid.to_owned()), logic, true, true);
        ProcessOutput::split(emitted, late)
    }

    /// Joins this stream with `other` (same key type) on intervals of event time: see
    /// [`crate::join`]; continue with `.between(lower_ms, upper_ms)`.
    pub fn interval_join<U, UF>(self, other: KeyedStream<'s, K, U, UF>) -> IntervalJoin<'s, K, T, U, KF, UF>
    where
        U: Data,
        UF: KeySelector<U, K> + Clone,
    {
        IntervalJoin { streams: ConnectedStreams { left: self, right: other }, lower_ms: 0, upper_ms: 0 }
    }

    /// Joins this stream with `other` (same key type) per window of `assigner`: the records of
    /// both sides in a key's window join pairwise when it fires.
    pub fn window_join<U, UF, W>(
        self,
        other: KeyedStream<'s, K, U, UF>,
        assigner: W,
    ) -> WindowJoin<'s, K, T, U, KF, UF, W>
    where
        U: Data,
        UF: KeySelector<U, K> + Clone,
        W: 'static,
    {
        WindowJoin { streams: ConnectedStreams { left: self, right: other }, assigner }
    }

    /// Connects this stream with a broadcast stream, for a [`KeyedBroadcastProcessFunction`].
    pub fn connect_broadcast<B: Data>(
        self,
        broadcast: BroadcastStream<'s, B>,
    ) -> BroadcastConnectedStreams<'s, K, T, B, KF> {
        BroadcastConnectedStreams { keyed: self, broadcast }
    }

    /// Connects this stream with another keyed by the same key type, for a
    /// [`KeyedCoProcessFunction`] that sees both with shared per-key state and timers (a
    /// regular keyed join, enrichment, control streams).
    pub fn connect<U, UF>(self, other: KeyedStream<'s, K, U, UF>) -> ConnectedStreams<'s, K, T, U, KF, UF>
    where
        U: Data,
        UF: KeySelector<U, K> + Clone,
    {
        ConnectedStreams { left: self, right: other }
    }
}

/// A stream every slot receives whole (see [`DataStream::broadcast`]).
pub struct BroadcastStream<'s, T: Data> {
    stream: DataStream<'s, T>,
}

/// A keyed stream connected with a broadcast stream (see [`KeyedStream::connect_broadcast`]).
pub struct BroadcastConnectedStreams<'s, K, T: Data, B: Data, KF> {
    keyed: KeyedStream<'s, K, T, KF>,
    broadcast: BroadcastStream<'s, B>,
}

impl<'s, K, T, B, KF> BroadcastConnectedStreams<'s, K, T, B, KF>
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    B: Data,
    KF: KeySelector<T, K> + Clone,
{
    /// Runs `function` with its broadcast state (replicated in every slot, checkpointed once
    /// per slot and restored to every slot) and the keyed side's state and timers, under the
    /// stable id `uid`.
    pub fn process<O: Data, F: KeyedBroadcastProcessFunction<K, T, B, O>>(
        self,
        uid: &str,
        function: F,
    ) -> ProcessOutput<'s, O, Either<T, B>> {
        let BroadcastConnectedStreams { keyed, broadcast } = self;
        for timed in [keyed.stream.timestamps, broadcast.stream.timestamps] {
            if !timed {
                keyed.stream.shared.error(
                    uid,
                    "a broadcast process function hands records over in event-time order, so both inputs need event \
                     time; give each source a WatermarkStrategy::bounded_out_of_orderness(…)",
                );
            }
        }
        let key_of = keyed.key;
        let key = move |record: &Either<T, B>| match record {
            Either::Left(value) => BroadcastKey::Key(key_of.key(value)),
            Either::Right(_) => BroadcastKey::Broadcast,
        };
        let slot = keyed.stream.shared.ctx.slot;
        let both = keyed.stream.map(Either::<T, B>::Left).union(broadcast.stream.map(Either::<T, B>::Right));
        let function = Broadcasting::<F, F::State>::new(function, slot);
        let logic = ProcessOperator::new(function, key, Box::new(weir_core::rt::processing_time_ms))
            .with_replicated_key(BroadcastKey::Broadcast)
            .with_store(both.shared.keyed_store(uid));
        let (emitted, late) = both.stateful("broadcast-process", Some(uid.to_owned()), logic, true, true);
        // Every slot receives every broadcast record: a late one is reported by slot 0 alone.
        let late = late.filter(move |record| matches!(record, Either::Left(_)) || slot == 0);
        ProcessOutput::split(emitted, late)
    }
}

/// Two keyed streams connected for a co-process function (see [`KeyedStream::connect`]).
pub struct ConnectedStreams<'s, K, A: Data, B: Data, KA, KB> {
    left: KeyedStream<'s, K, A, KA>,
    right: KeyedStream<'s, K, B, KB>,
}

impl<'s, K, A, B, KA, KB> ConnectedStreams<'s, K, A, B, KA, KB>
where
    K: Data + Hash + Eq + Ord,
    A: Data,
    B: Data,
    KA: KeySelector<A, K> + Clone,
    KB: KeySelector<B, K> + Clone,
{
    /// Runs `function` on both streams' records with their key's state and timers, under the
    /// stable id `uid`.
    pub fn process<O: Data, F: KeyedCoProcessFunction<K, A, B, O>>(
        self,
        uid: &str,
        function: F,
    ) -> ProcessOutput<'s, O, Either<A, B>> {
        for side in [&self.left.stream.timestamps, &self.right.stream.timestamps] {
            if !side {
                self.left.stream.shared.error(
                    uid,
                    "a co-process function hands records over in event-time order, so both inputs need event time, \
                     but one has no timestamp assigner; give its source a WatermarkStrategy::bounded_out_of_orderness(…)",
                );
            }
        }
        let key = EitherKey(self.left.key, self.right.key);
        let left = self.left.stream.map(Either::<A, B>::Left);
        let right = self.right.stream.map(Either::<A, B>::Right);
        let both = left.union(right);
        let logic = ProcessOperator::new(CoProcess(function), key, Box::new(weir_core::rt::processing_time_ms))
            .with_store(both.shared.keyed_store(uid));
        let (emitted, late) = both.stateful("co-process", Some(uid.to_owned()), logic, true, true);
        ProcessOutput::split(emitted, late)
    }
}

/// A keyed stream in global windows (see [`KeyedStream::global_window`]).
pub struct GlobalWindowedStream<'s, K, T: Data, KF, Tr> {
    keyed: KeyedStream<'s, K, T, KF>,
    trigger: Tr,
}

impl<'s, K, T, KF, Tr> GlobalWindowedStream<'s, K, T, KF, Tr>
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    KF: KeySelector<T, K> + Clone,
{
    /// Aggregates each key's records with `function`; whenever the trigger fires, emits
    /// `result(key, accumulator)` at the firing record's event time. `uid` is the operator's
    /// stable id. Records behind their watermark cannot be put in order: they go to `late`.
    pub fn aggregate<F, R, RF>(self, uid: &str, function: F, result: RF) -> ProcessOutput<'s, R, T>
    where
        F: AggregateFunction<T>,
        Tr: crate::window::Trigger<T, F::Acc>,
        R: Data,
        RF: Fn(&K, F::Acc) -> R + 'static,
    {
        self.keyed.process(uid, crate::window::GlobalAggregate::new(function, self.trigger, result))
    }
}

/// An interval join being set up (see [`KeyedStream::interval_join`]).
pub struct IntervalJoin<'s, K, A: Data, B: Data, KA, KB> {
    streams: ConnectedStreams<'s, K, A, B, KA, KB>,
    lower_ms: i64,
    upper_ms: i64,
}

impl<'s, K, A, B, KA, KB> IntervalJoin<'s, K, A, B, KA, KB>
where
    K: Data + Hash + Eq + Ord,
    A: Data,
    B: Data,
    KA: KeySelector<A, K> + Clone,
    KB: KeySelector<B, K> + Clone,
{
    /// `b` joins `a` iff `a.time + lower_ms <= b.time <= a.time + upper_ms`.
    pub fn between(mut self, lower_ms: i64, upper_ms: i64) -> Self {
        assert!(lower_ms <= upper_ms, "an interval join needs lower <= upper, got {lower_ms} > {upper_ms}");
        (self.lower_ms, self.upper_ms) = (lower_ms, upper_ms);
        self
    }

    /// Emits `join(a, b)` for every joined pair, under the stable id `uid`.
    pub fn process<O: Data>(
        self,
        uid: &str,
        join: impl Fn(&A, &B) -> O + 'static,
    ) -> ProcessOutput<'s, O, Either<A, B>> {
        let function = crate::join::IntervalJoinFunction::new(self.lower_ms, self.upper_ms, join);
        self.streams.process(uid, function)
    }
}

/// A window join being set up (see [`KeyedStream::window_join`]).
pub struct WindowJoin<'s, K, A: Data, B: Data, KA, KB, W> {
    streams: ConnectedStreams<'s, K, A, B, KA, KB>,
    assigner: W,
}

impl<'s, K, A, B, KA, KB, W> WindowJoin<'s, K, A, B, KA, KB, W>
where
    K: Data + Hash + Eq + Ord,
    A: Data,
    B: Data,
    KA: KeySelector<A, K> + Clone,
    KB: KeySelector<B, K> + Clone,
    W: 'static,
{
    /// Emits `join(a, b)` for every pair in a window, under the stable id `uid`.
    pub fn apply<O: Data>(self, uid: &str, join: impl Fn(&A, &B) -> O + 'static) -> WindowOutput<'s, O, Either<A, B>>
    where
        W: WindowKind<
            K,
            Either<A, B>,
            CollectAll,
            Vec<O>,
            EitherKey<KA, KB>,
            BoxedResult<K, Vec<Either<A, B>>, Vec<O>>,
        >,
    {
        self.co_group(uid, move |lefts: &[A], rights: &[B]| {
            lefts.iter().flat_map(|a| rights.iter().map(|b| join(a, b)).collect::<Vec<_>>()).collect()
        })
    }

    /// Hands each key's window to `co_group` whole — its left records and its right records,
    /// each in the order they came — and emits what it returns, under the stable id `uid`
    /// (Flink's `coGroup`): what an outer join needs, which must see that a record has no
    /// partner in its window.
    pub fn co_group<O: Data>(
        self,
        uid: &str,
        co_group: impl Fn(&[A], &[B]) -> Vec<O> + 'static,
    ) -> WindowOutput<'s, O, Either<A, B>>
    where
        W: WindowKind<
            K,
            Either<A, B>,
            CollectAll,
            Vec<O>,
            EitherKey<KA, KB>,
            BoxedResult<K, Vec<Either<A, B>>, Vec<O>>,
        >,
    {
        let ConnectedStreams { left, right } = self.streams;
        let key = EitherKey(left.key, right.key);
        let both = left.stream.map(Either::<A, B>::Left).union(right.stream.map(Either::<A, B>::Right));
        let keyed = KeyedStream { stream: both, key, _key: std::marker::PhantomData };
        keyed
            .window(self.assigner)
            .uid(uid)
            .process(move |_key: &K, _window: TimeWindow, records| crate::join::co_group_window(records, &co_group))
    }
}

/// The sink of [`DataStream::fail_if_any`]: any record stops the job with its reason.
struct MustStayEmpty<F> {
    reason: F,
    fatal: Rc<RefCell<Option<String>>>,
}

impl<T, F: Fn(&T) -> String + 'static> crate::sink::TransactionalSink<Record<T>> for MustStayEmpty<F> {
    fn write(&mut self, _epoch: Epoch, rows: &[Record<T>]) -> std::io::Result<()> {
        if let Some(record) = rows.first() {
            self.fatal.borrow_mut().get_or_insert_with(|| (self.reason)(&record.value));
        }
        Ok(())
    }
    fn prepare(&mut self, _through: Epoch) -> std::io::Result<crate::sink::Durability> {
        Ok(crate::sink::Durability::done())
    }
    fn describe(&self) -> String {
        "a stream that must stay empty".into()
    }
}

/// A keyed stream grouped into windows (see [`KeyedStream::window`]).
pub struct WindowedStream<'s, K, T: Data, KF, W> {
    keyed: KeyedStream<'s, K, T, KF>,
    assigner: W,
    uid: Option<String>,
    allowed_lateness_ms: i64,
}

/// A process function's outputs.
pub struct ProcessOutput<'s, O: Data, T: Data> {
    /// What the function emitted.
    pub results: DataStream<'s, O>,
    /// Records already behind the watermark they were read under, which cannot be handed over
    /// in event-time order: write them somewhere (or `.discard()` them knowingly).
    pub late: DataStream<'s, T>,
    /// Side-output records of every tag, encoded.
    side: DataStream<'s, Emitted<O>>,
}

impl<'s, O: Data, T: Data> ProcessOutput<'s, O, T> {
    fn split(emitted: DataStream<'s, Emitted<O>>, late: DataStream<'s, T>) -> Self {
        let results = emitted.clone().flat_map(|emitted| match emitted {
            Emitted::Main(value) => Some(value),
            Emitted::Side { .. } => None,
        });
        ProcessOutput { results, late, side: emitted }
    }

    /// The records the function emitted to `tag` (`ctx.output(&tag, value)`), with the event
    /// time and lateness horizon of the record or timer that emitted them. A side output
    /// nobody asks for is dropped, as in Flink.
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> DataStream<'s, S> {
        let name = tag.name();
        let operator = self.side.origin.clone();
        {
            // One type per tag name and operator: asking for a tag's records as two types is a
            // job built wrong.
            let mut plan = self.side.shared.plan.borrow_mut();
            let key = (operator.clone(), name.to_owned());
            let type_name = std::any::type_name::<S>();
            match plan.side_output_types.get(&key).copied() {
                Some(seen) if seen != type_name => plan.errors.push(BuildError::Operator {
                    operator: operator.clone(),
                    reason: format!(
                        "side output {name:?} is read as {seen} and as {type_name}; give each type its own tag"
                    ),
                }),
                _ => drop(plan.side_output_types.insert(key, type_name)),
            }
        }
        // A record emitted to the tag as another type than read here cannot be decoded: the
        // job stops with an error naming the tag (never a silent drop, never a panic).
        let fatal = self.side.shared.ctx.fatal.clone();
        self.side.clone().flat_map(move |emitted| match emitted {
            Emitted::Side { tag, bytes } if tag == name => match crate::keyed::decode_state::<S>(&bytes) {
                Ok(value) => Some(value),
                Err(error) => {
                    fatal.borrow_mut().get_or_insert_with(|| {
                        format!(
                            "operator {operator}: side output {name:?} received a record that is not a {}: {error}; \
                             emit and read each tag with one type",
                            std::any::type_name::<S>()
                        )
                    });
                    None
                }
            },
            _ => None,
        })
    }
}

/// A window operator's outputs.
pub struct WindowOutput<'s, R: Data, T: Data> {
    /// One result per key and window, when the window fires (event time: the window's last
    /// millisecond).
    pub results: DataStream<'s, R>,
    /// Records that arrived after all their windows had fired: write them somewhere (or
    /// `.discard()` them knowingly) — a job that leaves them unread does not build.
    pub late: DataStream<'s, T>,
}

impl<'s, K, T, KF, W> WindowedStream<'s, K, T, KF, W>
where
    K: Data + Hash + Eq + Ord,
    T: Data,
    KF: KeySelector<T, K> + Clone,
    W: 'static,
{
    /// The operator's stable id: its state is checkpointed under it.
    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.to_owned());
        self
    }

    /// Windows keep taking late records for `ms` after their end. A record late for a window
    /// (its end at or before the watermark the record was read under) but within this is not
    /// sent to the late output: once the lateness has passed, the window fires again — one
    /// *update event*, the full result with every late record folded in, after its on-time
    /// result. (Flink fires again at every late record; firing once, when no late record can
    /// still come, keeps the output the same in every run.) Tumbling, sliding and cumulating
    /// windows only.
    pub fn allowed_lateness(mut self, ms: i64) -> Self {
        assert!(ms >= 0, "allowed lateness must not be negative");
        self.allowed_lateness_ms = ms;
        self
    }

    /// Aggregates each key's records per window incrementally with `function`; `result` turns
    /// the key, the window and the final accumulator into the output record.
    pub fn aggregate<F, R, RF>(self, function: F, result: RF) -> WindowOutput<'s, R, T>
    where
        F: AggregateFunction<T>,
        R: Data,
        RF: Fn(&K, TimeWindow, F::Acc) -> R + 'static,
        W: WindowKind<K, T, F, R, KF, RF>,
    {
        let WindowedStream { keyed, assigner, uid, allowed_lateness_ms } = self;
        let input = keyed.stream;
        if !input.timestamps {
            let operator = uid.clone().unwrap_or_else(|| format!("window after {}", input.origin));
            input.shared.error(
                &operator,
                format!(
                    "windows {} need event time, but its input has no timestamp assigner; give the source a \
                     WatermarkStrategy::bounded_out_of_orderness(…, |record| event_time)",
                    assigner.description()
                ),
            );
        }
        let description = assigner.description();
        let logic = match assigner.logic_with_lateness(function, keyed.key, result, allowed_lateness_ms) {
            Ok(logic) => logic,
            Err(reason) => {
                let operator = uid.clone().unwrap_or_else(|| format!("window after {}", input.origin));
                input.shared.error(&operator, format!("{reason}; remove .allowed_lateness(…) ({description})"));
                return WindowOutput { results: input.clone().flat_map(|_| None), late: input.clone() };
            }
        };
        // Windows keep their state in the operator's keyed store where the job's state is on disk.
        let shared = input.shared.clone();
        let (results, late) = input.stateful_with(
            "window",
            uid,
            |uid| W::with_store(logic, OperatorStore { shared: &shared, uid }),
            true,
            false,
        );
        WindowOutput { results, late }
    }

    /// Folds each key's records per window with `reduce`; `result` turns the key, the window
    /// and the folded record into the output record.
    pub fn reduce<R, RF>(self, reduce: impl Fn(T, T) -> T + 'static, result: RF) -> WindowOutput<'s, R, T>
    where
        R: Data,
        RF: Fn(&K, TimeWindow, T) -> R + 'static,
        W: WindowKind<K, T, Reduce<Box<dyn Fn(T, T) -> T>>, R, KF, BoxedResult<K, Option<T>, R>>,
    {
        let reduce: Box<dyn Fn(T, T) -> T> = Box::new(reduce);
        let result: BoxedResult<K, Option<T>, R> =
            Box::new(move |key, window, folded| result(key, window, folded.expect("a fired window has records")));
        self.aggregate(Reduce(reduce), result)
    }

    /// Calls `function` once per key and window with all of the window's records (Flink's
    /// `ProcessWindowFunction`), in a fixed order: by encoding, so that the call is the same in
    /// every run. Keeps every record until its window fires; prefer `aggregate` where it fits.
    pub fn process<R, PF>(self, function: PF) -> WindowOutput<'s, R, T>
    where
        R: Data,
        PF: Fn(&K, TimeWindow, Vec<T>) -> Vec<R> + 'static,
        W: WindowKind<K, T, CollectAll, Vec<R>, KF, BoxedResult<K, Vec<T>, Vec<R>>>,
    {
        let sorted: BoxedResult<K, Vec<T>, Vec<R>> = Box::new(move |key, window, mut records| {
            records.sort_by_cached_key(|record| bincode::serialize(record).expect("records serialize"));
            function(key, window, records)
        });
        let WindowOutput { results, late } = self.aggregate(CollectAll, sorted);
        WindowOutput { results: results.flat_map(|rows| rows), late }
    }
}
