//! Weir's exchange layer: data and frontiers between slots, over bounded, credit-based channels.
//!
//! Timely's own inter-worker channels need its closed allocator and OS threads, so slots are
//! separate single-threaded timely workers and this module is the distributed half of progress
//! tracking. An [`ExchangeSend`] operator partitions its input by key into one channel per
//! target slot and, *after* the data, forwards every change of its input frontier. An
//! [`ExchangeReceive`] operator is a source whose capabilities always equal the frontier of the
//! union of its senders' reported frontiers. Channels are FIFO, so when a frontier report
//! arrives, all data sent before it has arrived too: the receiver's frontier is exact.
//!
//! Channels carry at most `capacity` data batches in flight (credits); a sender without credit
//! keeps batches in its outbox and reports the outbox length as back-pressure, which the source
//! of its slot obeys. Memory is therefore bounded by `slots × capacity × batch size` plus one
//! outbox per sender.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::{Scope, Stream};
use timely::order::PartialOrder;
use timely::progress::frontier::Antichain;
use timely::progress::Timestamp;
use timely::scheduling::Activator;

use weir_core::faultpoint::{self, PlantedBug};
use weir_core::time::{EventTime, Time};

/// What travels on an exchange channel (`B`: a batch of records).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExchangeMessage<B> {
    /// A batch of records at a timestamp.
    Data(Time, B),
    /// The sender's new input frontier: it will send no data at times not greater or equal to
    /// an element of it. Empty means the sender is done.
    Progress(Vec<Time>),
}

/// Wakes the slot on the other side of a channel.
pub trait Doorbell: Send + Sync {
    /// Tells the slot that something arrived for it (data, frontier, or credit).
    fn ring(&self);
}

/// The sending half of an exchange channel.
pub trait ExchangeTx<D> {
    /// Sends `message`, or gives it back when a data batch finds no credit.
    fn try_send(&self, message: ExchangeMessage<D>) -> Result<(), ExchangeMessage<D>>;
    /// Whether a data batch would be accepted now. Only the sender takes credit, so a `true`
    /// stays true until it sends.
    fn has_credit(&self) -> bool;
    /// Whether batches must travel encoded (the channel leaves the process).
    fn encodes(&self) -> bool {
        false
    }
}

/// The receiving half of an exchange channel.
pub trait ExchangeRx<D> {
    /// The next message, if one has arrived.
    fn try_recv(&self) -> Option<ExchangeMessage<D>>;
}

struct ChannelState<D> {
    queue: VecDeque<ExchangeMessage<D>>,
    data_in_flight: usize,
}

/// An in-process exchange channel between two slots, bounded by credits.
pub struct LocalChannel<D> {
    state: Mutex<ChannelState<D>>,
    capacity: usize,
    receiver_bell: Arc<dyn Doorbell>,
    sender_bell: Arc<dyn Doorbell>,
}

impl<D> LocalChannel<D> {
    /// A channel with `capacity` data batches of credit. `receiver_bell` wakes the receiving
    /// slot when a message arrives; `sender_bell` wakes the sending slot when credit returns.
    pub fn new(capacity: usize, receiver_bell: Arc<dyn Doorbell>, sender_bell: Arc<dyn Doorbell>) -> Arc<Self> {
        assert!(capacity >= 1, "a channel needs at least one credit");
        Arc::new(LocalChannel {
            state: Mutex::new(ChannelState { queue: VecDeque::new(), data_in_flight: 0 }),
            capacity,
            receiver_bell,
            sender_bell,
        })
    }

    /// Data batches currently in flight (never more than the capacity).
    pub fn data_in_flight(&self) -> usize {
        self.state.lock().expect("channel lock").data_in_flight
    }
}

impl<D: Send> ExchangeTx<D> for Arc<LocalChannel<D>> {
    fn try_send(&self, message: ExchangeMessage<D>) -> Result<(), ExchangeMessage<D>> {
        {
            let mut state = self.state.lock().expect("channel lock");
            if let ExchangeMessage::Data(..) = message {
                if state.data_in_flight >= self.capacity {
                    return Err(message);
                }
                state.data_in_flight += 1;
            }
            state.queue.push_back(message);
            assert!(state.data_in_flight <= self.capacity, "credit overrun");
        }
        self.receiver_bell.ring();
        Ok(())
    }

    fn has_credit(&self) -> bool {
        self.data_in_flight() < self.capacity
    }
}

impl<D: Send> ExchangeRx<D> for Arc<LocalChannel<D>> {
    fn try_recv(&self) -> Option<ExchangeMessage<D>> {
        let message = {
            let mut state = self.state.lock().expect("channel lock");
            let message = state.queue.pop_front()?;
            if let ExchangeMessage::Data(..) = message {
                assert!(state.data_in_flight > 0, "data received without credit taken");
                state.data_in_flight -= 1;
            }
            message
        };
        if let ExchangeMessage::Data(..) = message {
            self.sender_bell.ring();
        }
        Some(message)
    }
}

/// Sends a stream to other slots, partitioned by `route`.
pub trait ExchangeSend<'scope, D> {
    /// Routes each record to `senders[route(&record)]` and forwards the input frontier after
    /// the data. Returns the operator's activator (to be woken when credit returns).
    /// This sender's data batches waiting for credit are counted into `pressure` (a slot's
    /// senders share one cell: it holds their sum).
    fn exchange_send(
        self,
        senders: Vec<Box<dyn ExchangeTx<Vec<D>>>>,
        route: impl Fn(&D) -> usize + 'static,
        pressure: Rc<Cell<usize>>,
        activity: crate::Activity,
    ) -> Activator
    where
        Self: Sized,
    {
        self.exchange_partitioned(
            senders,
            move |data: &mut Vec<D>, parts: &mut [Vec<D>]| {
                for record in data.drain(..) {
                    parts[route(&record)].push(record);
                }
            },
            pressure,
            activity,
        )
    }

    /// Sends every record to every slot (a broadcast).
    fn exchange_broadcast(
        self,
        senders: Vec<Box<dyn ExchangeTx<Vec<D>>>>,
        pressure: Rc<Cell<usize>>,
        activity: crate::Activity,
    ) -> Activator
    where
        Self: Sized,
        D: Clone,
    {
        self.exchange_partitioned(
            senders,
            |data: &mut Vec<D>, parts: &mut [Vec<D>]| {
                for part in parts.iter_mut() {
                    part.extend(data.iter().cloned());
                }
                data.clear();
            },
            pressure,
            activity,
        )
    }

    /// The exchange operator: `partition` moves each input batch's records into the parts
    /// for each target slot.
    fn exchange_partitioned(
        self,
        senders: Vec<Box<dyn ExchangeTx<Vec<D>>>>,
        partition: impl FnMut(&mut Vec<D>, &mut [Vec<D>]) + 'static,
        pressure: Rc<Cell<usize>>,
        activity: crate::Activity,
    ) -> Activator;
}

impl<'scope, D: Send + 'static> ExchangeSend<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn exchange_partitioned(
        self,
        senders: Vec<Box<dyn ExchangeTx<Vec<D>>>>,
        mut partition: impl FnMut(&mut Vec<D>, &mut [Vec<D>]) + 'static,
        pressure: Rc<Cell<usize>>,
        activity: crate::Activity,
    ) -> Activator {
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("ExchangeSend".to_owned(), scope);
        let address = builder.operator_info().address;
        let mut input = builder.new_input(self, Pipeline);
        let targets = senders.len();
        builder.build_reschedule(move |_capabilities| {
            let mut outboxes: Vec<VecDeque<ExchangeMessage<Vec<D>>>> = (0..targets).map(|_| VecDeque::new()).collect();
            let mut parts: Vec<Vec<D>> = (0..targets).map(|_| Vec::new()).collect();
            let mut reported: Antichain<Time> = Antichain::from_elem(Time::minimum());
            // This sender's share of the slot's pressure (several exchanges add theirs up).
            let mut waiting_reported = 0usize;
            move |frontiers| {
                input.for_each(|capability, data| {
                    let time = crate::message_time(&capability);
                    partition(data, &mut parts);
                    for (target, part) in parts.iter_mut().enumerate() {
                        if !part.is_empty() {
                            let batch = std::mem::replace(part, Vec::with_capacity(part.capacity()));
                            outboxes[target].push_back(ExchangeMessage::Data(time, batch));
                        }
                    }
                });
                let frontier = frontiers[0].frontier().to_owned();
                if frontier != reported {
                    assert!(
                        PartialOrder::less_equal(&reported.borrow(), &frontier.borrow()),
                        "exchange input frontier went backwards"
                    );
                    for outbox in outboxes.iter_mut() {
                        // Coalesce: a newer frontier replaces an unsent older one.
                        if let Some(ExchangeMessage::Progress(_)) = outbox.back() {
                            outbox.pop_back();
                        }
                        outbox.push_back(ExchangeMessage::Progress(frontier.elements().to_vec()));
                    }
                    reported = frontier;
                }
                let mut waiting = 0;
                for (outbox, sender) in outboxes.iter_mut().zip(senders.iter()) {
                    while let Some(message) = outbox.pop_front() {
                        if let Err(message) = sender.try_send(message) {
                            outbox.push_front(message);
                            break;
                        }
                        activity.note();
                    }
                    waiting += outbox.len();
                }
                pressure.set(pressure.get() - waiting_reported + waiting);
                waiting_reported = waiting;
                !(reported.is_empty() && waiting == 0)
            }
        });
        scope.activator_for(address)
    }
}

/// Receives a stream sent by [`ExchangeSend`] operators of every slot.
pub struct ExchangeReceive;

impl ExchangeReceive {
    /// A source whose output is the union of what `receivers` deliver, at their times, and
    /// whose frontier is the union of their senders' frontiers. Returns the stream and the
    /// operator's activator (to be woken when messages arrive).
    pub fn build<'scope, D: Send + 'static>(
        scope: Scope<'scope, Time>,
        receivers: Vec<Box<dyn ExchangeRx<Vec<D>>>>,
        activity: crate::Activity,
    ) -> (Stream<'scope, Time, Vec<D>>, Activator) {
        Self::build_aligned(scope, receivers, activity, None)
    }

    /// [`Self::build`], reporting the frontier's least event time to the slot's watermark
    /// alignment, for the group of sources it comes straight from ([`crate::alignment`]).
    pub fn build_aligned<'scope, D: Send + 'static>(
        scope: Scope<'scope, Time>,
        receivers: Vec<Box<dyn ExchangeRx<Vec<D>>>>,
        activity: crate::Activity,
        alignment: Option<(Rc<crate::alignment::Alignment>, crate::alignment::Group)>,
    ) -> (Stream<'scope, Time, Vec<D>>, Activator) {
        let aligned = alignment.map(|(alignment, group)| (alignment.register_receiver(group), alignment));
        let mut builder = OperatorBuilder::new("ExchangeReceive".to_owned(), scope);
        let address = builder.operator_info().address;
        let (output, stream) = builder.new_output::<Vec<D>>();
        let mut output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<D>>>::from(output);
        builder.build_reschedule(move |mut capabilities| {
            let mut capabilities = CapabilitySet::from_elem(capabilities.pop().expect("one output"));
            let mut sender_frontiers: Vec<Antichain<Time>> =
                receivers.iter().map(|_| Antichain::from_elem(Time::minimum())).collect();
            move |_frontiers| {
                let mut output = output.activate();
                let mut changed = false;
                for (receiver, sender_frontier) in receivers.iter().zip(sender_frontiers.iter_mut()) {
                    while let Some(message) = receiver.try_recv() {
                        activity.note();
                        match message {
                            ExchangeMessage::Data(time, mut batch) => {
                                assert!(
                                    sender_frontier.less_equal(&time),
                                    "exchange data at {time:?} behind its sender's frontier {sender_frontier:?}"
                                );
                                let capability = capabilities.delayed(&time);
                                output.session(&capability).give_container(&mut batch);
                            }
                            ExchangeMessage::Progress(elements) => {
                                let frontier = Antichain::from(elements);
                                assert!(
                                    PartialOrder::less_equal(&sender_frontier.borrow(), &frontier.borrow()),
                                    "sender frontier went backwards: {sender_frontier:?} -> {frontier:?}"
                                );
                                *sender_frontier = frontier;
                                changed = true;
                            }
                        }
                    }
                }
                if changed {
                    let mut union = Antichain::new();
                    // Planted bug: the last sender's reports are not waited for.
                    let counted =
                        if faultpoint::planted(PlantedBug::ReceiverFrontierEarly) && sender_frontiers.len() > 1 {
                            sender_frontiers.len() - 1
                        } else {
                            sender_frontiers.len()
                        };
                    for frontier in &sender_frontiers[..counted] {
                        for time in frontier.elements() {
                            union.insert(*time);
                        }
                    }
                    capabilities.downgrade(&union.borrow());
                    if let Some((frontier, alignment)) = &aligned {
                        let least = union.elements().iter().map(|time| time.event_time).min();
                        frontier.set(least.unwrap_or(EventTime::MAX));
                        alignment.advanced();
                    }
                }
                !capabilities.is_empty()
            }
        });
        (stream, scope.activator_for(address))
    }
}

/// A batch on a job's exchange channel, whatever its record type: within a process the typed
/// vector itself travels (no copy, no encoding); between processes, its encoding.
pub enum Batch {
    /// A `Vec<D>` of the exchange's record type.
    Typed(Box<dyn std::any::Any + Send>),
    /// The bincode encoding of a `Vec<D>`.
    Encoded(Vec<u8>),
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Batch::Typed(_) => f.write_str("Batch::Typed"),
            Batch::Encoded(bytes) => write!(f, "Batch::Encoded({} bytes)", bytes.len()),
        }
    }
}

/// The sending half of a job's channel (any record type).
pub type BatchTx = Box<dyn ExchangeTx<Batch> + Send>;
/// The receiving half of a job's channel (any record type).
pub type BatchRx = Box<dyn ExchangeRx<Batch> + Send>;

/// The channels of one exchange (one `key_by`) in one slot: to every slot, from every slot.
pub struct ExchangeChannels {
    /// Senders, indexed by target slot.
    pub senders: Vec<BatchTx>,
    /// Receivers, indexed by source slot.
    pub receivers: Vec<BatchRx>,
}

/// A typed view of an erased sending half.
pub struct TypedTx<D> {
    inner: BatchTx,
    _records: std::marker::PhantomData<fn(D)>,
}

impl<D> TypedTx<D> {
    /// Views `inner` as a channel of `D`.
    pub fn new(inner: BatchTx) -> Self {
        TypedTx { inner, _records: std::marker::PhantomData }
    }
}

impl<D: Send + serde::Serialize + 'static> ExchangeTx<Vec<D>> for TypedTx<D> {
    fn try_send(&self, message: ExchangeMessage<Vec<D>>) -> Result<(), ExchangeMessage<Vec<D>>> {
        let erased = match message {
            ExchangeMessage::Progress(frontier) => ExchangeMessage::Progress(frontier),
            ExchangeMessage::Data(time, batch) => {
                if !self.inner.has_credit() {
                    return Err(ExchangeMessage::Data(time, batch));
                }
                let batch = if self.inner.encodes() {
                    Batch::Encoded(bincode::serialize(&batch).expect("records serialize"))
                } else {
                    Batch::Typed(Box::new(batch))
                };
                ExchangeMessage::Data(time, batch)
            }
        };
        let sent = self.inner.try_send(erased);
        assert!(sent.is_ok(), "a channel with credit refused a batch");
        Ok(())
    }

    fn has_credit(&self) -> bool {
        self.inner.has_credit()
    }
}

/// A typed view of an erased receiving half. An encoded batch that does not decode came from
/// a peer that broke the protocol: it is reported as the slot's fatal error (the attempt ends).
pub struct TypedRx<D> {
    inner: BatchRx,
    fatal: std::rc::Rc<std::cell::RefCell<Option<String>>>,
    from: usize,
    /// A batch did not decode: nothing more is delivered from this channel.
    poisoned: std::cell::Cell<bool>,
    _records: std::marker::PhantomData<fn() -> D>,
}

impl<D> TypedRx<D> {
    /// Views `inner` (from slot `from`) as a channel of `D`.
    pub fn new(inner: BatchRx, from: usize, fatal: std::rc::Rc<std::cell::RefCell<Option<String>>>) -> Self {
        TypedRx { inner, fatal, from, poisoned: std::cell::Cell::new(false), _records: std::marker::PhantomData }
    }
}

impl<D: Send + serde::de::DeserializeOwned + 'static> ExchangeRx<Vec<D>> for TypedRx<D> {
    fn try_recv(&self) -> Option<ExchangeMessage<Vec<D>>> {
        if self.poisoned.get() {
            return None;
        }
        match self.inner.try_recv()? {
            ExchangeMessage::Progress(frontier) => Some(ExchangeMessage::Progress(frontier)),
            ExchangeMessage::Data(time, Batch::Typed(batch)) => {
                let batch = batch.downcast::<Vec<D>>().expect("an exchange carries one record type");
                Some(ExchangeMessage::Data(time, *batch))
            }
            ExchangeMessage::Data(time, Batch::Encoded(bytes)) => match decode_batch::<D>(&bytes) {
                Ok(batch) => Some(ExchangeMessage::Data(time, batch)),
                Err(error) => {
                    self.poisoned.set(true);
                    self.fatal.borrow_mut().get_or_insert_with(|| {
                        format!("a batch from slot {} does not decode as this exchange's records: {error}", self.from)
                    });
                    None
                }
            },
        }
    }
}

/// Decodes a batch from a peer; decoding reads no more than the batch's bytes (no length
/// prefix in it can make the decoder allocate beyond what the frame carried).
fn decode_batch<D: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Vec<D>, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(bytes.len() as u64).deserialize(bytes)
}
