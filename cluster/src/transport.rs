//! The exchange layer between workers: the same `ExchangeTx`/`ExchangeRx` contract as the
//! in-process `LocalChannel`, carried over one mutual-TLS connection per ordered pair of
//! workers.
//!
//! The sending worker opens the connection; batches and frontier reports flow forward on it in
//! FIFO order, and credits flow back on the same connection. A sender holds `credits` batches
//! of credit per channel and takes one per batch; the receiving slot returns one when it
//! consumes a batch. So the exact frontier semantics and the memory bound of the in-process
//! channel hold across processes.
//!
//! A peer is trusted to be a worker (its certificate says so), not to be correct: a batch
//! from a slot the peer does not run, for a channel that does not exist, or beyond the
//! channel's credits, and credit never lent, are protocol violations ([`AttemptWiring::on_frame`]
//! returns them), which end the connection. And a connection that ends — for that or any other
//! reason, including a send into a connection already gone — ends the attempt: the failure is
//! reported ([`LinkFailures`]) naming both workers, and the coordinator restarts the job from
//! its latest checkpoint. A data connection never fails silently.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use timely::order::PartialOrder;
use timely::progress::frontier::Antichain;
use timely::progress::Timestamp;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use weir_core::faultpoint::{self, PlantedBug};
use weir_core::time::Time;
use weir_dataflow::exchange::{Batch, Doorbell, ExchangeMessage, ExchangeRx, ExchangeTx};

use crate::connection::Connection;
use crate::protocol::DataFrame;
use crate::slot::SlotDoorbell;

/// Where the data plane reports that a connection of an attempt failed: the worker forwards
/// it to the coordinator, which ends the attempt.
#[derive(Clone, Debug)]
pub struct LinkFailures {
    sink: UnboundedSender<String>,
    attempt: u64,
    /// A failure has been reported (a deployment still wiring the attempt gives up).
    reported: Arc<std::sync::atomic::AtomicBool>,
}

impl LinkFailures {
    /// Reports failures of `attempt`'s connections to `sink`.
    pub fn new(sink: UnboundedSender<String>, attempt: u64) -> Self {
        LinkFailures { sink, attempt, reported: Arc::default() }
    }

    /// Whether a failure has been reported.
    pub fn any(&self) -> bool {
        self.reported.load(Ordering::Acquire)
    }

    /// Reports a failure (`message` names both workers and why).
    pub fn report(&self, message: String) {
        faultpoint::link_failed(self.attempt);
        if faultpoint::planted(PlantedBug::LinkFailureSwallowed) {
            tracing::warn!(%message, "data connection failed (not reported: planted bug)");
            return;
        }
        tracing::warn!(%message, "data connection failed; the attempt ends");
        self.reported.store(true, Ordering::Release);
        let _ = self.sink.send(message);
    }
}

/// A channel of an attempt: `(exchange, from slot, to slot)`.
pub type ChannelId = (usize, usize, usize);

/// The sending end of a channel to a slot on another worker.
pub struct RemoteSender {
    exchange: usize,
    from: usize,
    to: usize,
    credits: Arc<AtomicUsize>,
    connection: UnboundedSender<DataFrame>,
    failures: LinkFailures,
    /// "data connection from worker A to worker B", for reports.
    link: Arc<str>,
    /// The failure has been reported (once is enough).
    reported: std::sync::atomic::AtomicBool,
}

impl RemoteSender {
    /// A sender of exchange `channel.0` from slot `channel.1` to slot `channel.2` over
    /// `connection` (described by `link`), with the shared credit counter; a send into a
    /// connection that is gone is reported to `failures`.
    pub fn new(
        channel: ChannelId,
        credits: Arc<AtomicUsize>,
        connection: UnboundedSender<DataFrame>,
        failures: LinkFailures,
        link: Arc<str>,
    ) -> Self {
        let (exchange, from, to) = channel;
        RemoteSender { exchange, from, to, credits, connection, failures, link, reported: Default::default() }
    }
}

impl ExchangeTx<Batch> for RemoteSender {
    fn try_send(&self, message: ExchangeMessage<Batch>) -> Result<(), ExchangeMessage<Batch>> {
        if let ExchangeMessage::Data(..) = message {
            let taken = self.credits.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
            if taken.is_err() {
                return Err(message);
            }
        }
        let message = match message {
            ExchangeMessage::Data(time, Batch::Encoded(bytes)) => ExchangeMessage::Data(time, bytes),
            ExchangeMessage::Data(_, Batch::Typed(_)) => panic!("a batch for another process must be encoded"),
            ExchangeMessage::Progress(frontier) => ExchangeMessage::Progress(frontier),
        };
        let frame = DataFrame::Batch { exchange: self.exchange, from: self.from, to: self.to, message };
        let sent = self.connection.send(frame);
        if sent.is_err() && !self.reported.swap(true, Ordering::AcqRel) {
            // The connection is gone, and with it this message: the attempt cannot be exact any
            // more. It ends (the failure is reported), and the job restarts from a checkpoint.
            self.failures
                .report(format!("{}: closed while slot {} still had data for slot {}", self.link, self.from, self.to));
        }
        Ok(())
    }

    fn has_credit(&self) -> bool {
        self.credits.load(Ordering::Acquire) > 0
    }

    fn encodes(&self) -> bool {
        true
    }
}

/// What has arrived on one channel: the messages waiting for the receiving slot, how many of
/// them are data batches (each took one credit), and the sender's last reported frontier.
struct Arrived {
    queue: VecDeque<ExchangeMessage<Vec<u8>>>,
    batches: usize,
    frontier: Antichain<Time>,
}

/// Messages that arrived for one channel, waiting for the receiving slot.
pub struct Inbound {
    exchange: usize,
    from: usize,
    to: usize,
    arrived: Mutex<Arrived>,
    /// Credits of the channel: the most data batches that may ever be queued.
    credits: usize,
    doorbell: Arc<SlotDoorbell>,
    credit_back: Mutex<Option<UnboundedSender<DataFrame>>>,
}

impl Inbound {
    /// An empty inbound queue for `channel` with `credits` credits, waking `doorbell` on
    /// arrival.
    pub fn new(channel: ChannelId, credits: usize, doorbell: Arc<SlotDoorbell>) -> Arc<Self> {
        let (exchange, from, to) = channel;
        let arrived = Arrived { queue: VecDeque::new(), batches: 0, frontier: Antichain::from_elem(Time::minimum()) };
        Arc::new(Inbound {
            exchange,
            from,
            to,
            arrived: Mutex::new(arrived),
            credits,
            doorbell,
            credit_back: Mutex::new(None),
        })
    }

    /// A message arrived on `connection` (whose write half returns credit). The receiving slot's
    /// operator asserts the exchange protocol's invariants; a remote sender is not trusted to
    /// keep them, so they are checked here first, as protocol violations: a data batch beyond
    /// the channel's credits (the sender ignored the memory bound), data at a time its sender's
    /// frontier has passed, and a frontier that goes backwards.
    pub fn deliver(
        &self,
        message: ExchangeMessage<Vec<u8>>,
        connection: &UnboundedSender<DataFrame>,
    ) -> Result<(), String> {
        {
            let mut credit_back = self.credit_back.lock().expect("inbound lock");
            if credit_back.is_none() {
                *credit_back = Some(connection.clone());
            }
        }
        {
            let mut arrived = self.arrived.lock().expect("inbound lock");
            let violation = match &message {
                ExchangeMessage::Data(..) if arrived.batches == self.credits => Some(format!(
                    "slot {} sent slot {} more batches than its {} credits",
                    self.from, self.to, self.credits
                )),
                ExchangeMessage::Data(time, _) if !arrived.frontier.less_equal(time) => Some(format!(
                    "slot {} sent slot {} data at {time:?}, behind its own frontier {:?}",
                    self.from, self.to, arrived.frontier
                )),
                ExchangeMessage::Progress(elements) => {
                    let frontier = Antichain::from(elements.clone());
                    if PartialOrder::less_equal(&arrived.frontier.borrow(), &frontier.borrow()) {
                        arrived.frontier = frontier;
                        None
                    } else {
                        Some(format!(
                            "slot {}'s frontier towards slot {} went backwards: {:?} -> {frontier:?}",
                            self.from, self.to, arrived.frontier
                        ))
                    }
                }
                ExchangeMessage::Data(..) => None,
            };
            if let Some(violation) = violation {
                faultpoint::protocol_violation(&violation);
                return Err(violation);
            }
            if let ExchangeMessage::Data(..) = message {
                arrived.batches += 1;
            }
            arrived.queue.push_back(message);
        }
        self.doorbell.ring();
        Ok(())
    }
}

/// The receiving end of a channel from a slot on another worker.
pub struct RemoteReceiver(pub Arc<Inbound>);

impl ExchangeRx<Batch> for RemoteReceiver {
    fn try_recv(&self) -> Option<ExchangeMessage<Batch>> {
        let message = {
            let mut arrived = self.0.arrived.lock().expect("inbound lock");
            let message = arrived.queue.pop_front()?;
            if let ExchangeMessage::Data(..) = message {
                arrived.batches -= 1;
            }
            message
        };
        if let ExchangeMessage::Data(..) = message {
            let credit_back = self.0.credit_back.lock().expect("inbound lock");
            let connection = credit_back.as_ref().expect("data arrived over a connection");
            // A closed connection has ended, and reported it: the attempt is ending.
            let credit = DataFrame::Credit { exchange: self.0.exchange, from: self.0.from, to: self.0.to, credits: 1 };
            let _ = connection.send(credit);
        }
        Some(match message {
            ExchangeMessage::Data(time, bytes) => ExchangeMessage::Data(time, Batch::Encoded(bytes)),
            ExchangeMessage::Progress(frontier) => ExchangeMessage::Progress(frontier),
        })
    }
}

/// A data connection of an attempt and the task that reports its end.
struct LinkTask {
    /// Held for its lifetime: dropping it stops the connection's tasks.
    _connection: Connection<DataFrame>,
    supervisor: JoinHandle<()>,
}

/// The data-plane state of one deployment attempt on one worker.
pub struct AttemptWiring {
    /// This worker.
    pub worker_id: u64,
    /// The worker of every slot (index = slot).
    pub placement: Vec<u64>,
    /// Credit per channel, in batches.
    pub exchange_credits: usize,
    /// Inbound queues by channel, for every exchange, remote `from` and local `to`.
    pub inbound: HashMap<ChannelId, Arc<Inbound>>,
    /// Credit counters by channel, for every exchange, local `from` and remote `to`.
    pub credits: HashMap<ChannelId, Arc<AtomicUsize>>,
    /// Doorbells of the local slots.
    pub doorbells: HashMap<usize, Arc<SlotDoorbell>>,
    /// Where failures of the attempt's connections go.
    pub failures: LinkFailures,
    /// The attempt's data connections, both ways, while it runs.
    links: Mutex<Option<Vec<LinkTask>>>,
    /// The workers whose data connection into this one has been accepted (one each).
    inbound_peers: Mutex<std::collections::BTreeSet<u64>>,
}

impl AttemptWiring {
    /// The data plane of an attempt on worker `worker_id`, with no connections yet.
    pub fn new(worker_id: u64, placement: Vec<u64>, exchange_credits: usize, failures: LinkFailures) -> Self {
        AttemptWiring {
            worker_id,
            placement,
            exchange_credits,
            inbound: HashMap::new(),
            credits: HashMap::new(),
            doorbells: HashMap::new(),
            failures,
            links: Mutex::new(Some(Vec::new())),
            inbound_peers: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// Accepts worker `peer`'s data connection into this worker, unless it is not a peer in the
    /// attempt or already has one (a second would feed the same channels: a violation).
    pub fn admit_inbound(&self, peer: u64) -> Result<(), String> {
        if peer == self.worker_id || !self.placement.contains(&peer) {
            return Err(format!("worker {peer} runs no slot of this attempt"));
        }
        if !self.inbound_peers.lock().expect("peers lock").insert(peer) {
            let violation = format!("worker {peer} opened a second data connection into worker {}", self.worker_id);
            faultpoint::protocol_violation(&violation);
            return Err(violation);
        }
        Ok(())
    }

    /// Runs `connection` (described by `link`, e.g. "data connection from worker 1 to worker
    /// 2") as one of the attempt's: when it ends, the failure is reported — unless the attempt
    /// was closed first. `false` if it already was (the connection is dropped).
    pub fn keep_link(&self, connection: Connection<DataFrame>, link: String) -> bool {
        let mut links = self.links.lock().expect("links lock");
        let Some(links) = links.as_mut() else { return false };
        let (ended, failures) = (connection.ended.clone(), self.failures.clone());
        let supervisor = tokio::spawn(async move {
            let reason = ended.wait().await;
            failures.report(format!("{link} failed: {reason}"));
        });
        links.push(LinkTask { _connection: connection, supervisor });
        true
    }

    /// The attempt is over on this worker: its connections close, without reports.
    pub fn close(&self) {
        let links = self.links.lock().expect("links lock").take().unwrap_or_default();
        for link in &links {
            link.supervisor.abort();
        }
        drop(links); // each connection's tasks stop with it
    }

    /// Handles a frame that worker `peer` sent on a data connection; `reply` is that
    /// connection's write side. An `Err` is a protocol violation.
    pub fn on_frame(&self, peer: u64, frame: DataFrame, reply: &UnboundedSender<DataFrame>) -> Result<(), String> {
        let runs = |slot: usize, worker: u64| self.placement.get(slot) == Some(&worker);
        let violation = |message: String| {
            faultpoint::protocol_violation(&message);
            Err(message)
        };
        match frame {
            DataFrame::Batch { exchange, from, to, message } => {
                if !runs(from, peer) {
                    return violation(format!("worker {peer} sent a batch as slot {from}, which it does not run"));
                }
                let Some(inbound) = self.inbound.get(&(exchange, from, to)) else {
                    return violation(format!(
                        "worker {peer} sent a batch for channel {from} -> {to} of exchange {exchange}, not on this worker"
                    ));
                };
                inbound.deliver(message, reply)
            }
            DataFrame::Credit { exchange, from, to, credits } => {
                if !runs(to, peer) {
                    return violation(format!("worker {peer} returned credit as slot {to}, which it does not run"));
                }
                let Some(counter) = self.credits.get(&(exchange, from, to)) else {
                    return violation(format!(
                        "worker {peer} returned credit for channel {from} -> {to} of exchange {exchange}, not from here"
                    ));
                };
                let before = counter.fetch_add(credits as usize, Ordering::AcqRel);
                if before.saturating_add(credits as usize) > self.exchange_credits {
                    return violation(format!(
                        "worker {peer} returned more credit for channel {from} -> {to} than the {} lent",
                        self.exchange_credits
                    ));
                }
                if let Some(doorbell) = self.doorbells.get(&from) {
                    doorbell.ring();
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worker 1 runs slot 0, worker 2 slot 1; channels of 2 credits.
    fn wiring() -> AttemptWiring {
        let (failures, _) = tokio::sync::mpsc::unbounded_channel();
        let mut wiring = AttemptWiring::new(1, vec![1, 2], 2, LinkFailures::new(failures, 9));
        let doorbell = Arc::new(SlotDoorbell::default());
        wiring.inbound.insert((0, 1, 0), Inbound::new((0, 1, 0), 2, doorbell.clone()));
        wiring.credits.insert((0, 0, 1), Arc::new(AtomicUsize::new(2)));
        wiring.doorbells.insert(0, doorbell);
        wiring
    }

    fn batch(from: usize, to: usize) -> DataFrame {
        DataFrame::Batch { exchange: 0, from, to, message: ExchangeMessage::Data(Time::new(1, 0), vec![]) }
    }

    #[test]
    fn a_peer_that_breaks_the_protocol_gets_an_error_not_a_panic() {
        let wiring = wiring();
        let (reply, _replies) = tokio::sync::mpsc::unbounded_channel();
        assert!(wiring.on_frame(2, batch(1, 0), &reply).is_ok());
        assert!(wiring.on_frame(2, batch(1, 0), &reply).is_ok());
        let excess = wiring.on_frame(2, batch(1, 0), &reply).unwrap_err();
        assert!(excess.contains("more batches than its 2 credits"), "{excess}");
        let impostor = wiring.on_frame(2, batch(0, 0), &reply).unwrap_err();
        assert!(impostor.contains("as slot 0, which it does not run"), "{impostor}");
        let unknown = wiring.on_frame(2, batch(7, 0), &reply).unwrap_err();
        assert!(unknown.contains("slot 7"), "{unknown}");
        let credit = |credits| DataFrame::Credit { exchange: 0, from: 0, to: 1, credits };
        let over = wiring.on_frame(2, credit(1), &reply).unwrap_err();
        assert!(over.contains("more credit"), "credit never lent: {over}");
        let huge = wiring.on_frame(2, credit(u32::MAX), &reply).unwrap_err();
        assert!(huge.contains("more credit"), "{huge}");
        let stranger =
            wiring.on_frame(3, DataFrame::Credit { exchange: 0, from: 0, to: 1, credits: 1 }, &reply).unwrap_err();
        let other_exchange =
            DataFrame::Batch { exchange: 1, from: 1, to: 0, message: ExchangeMessage::Data(Time::new(1, 0), vec![]) };
        let unknown = wiring.on_frame(2, other_exchange, &reply).unwrap_err();
        assert!(unknown.contains("exchange 1"), "{unknown}");
        assert!(stranger.contains("worker 3"), "{stranger}");
    }

    #[test]
    fn a_peer_cannot_break_the_frontier_it_reports() {
        let progress = |times: Vec<Time>| DataFrame::Batch {
            exchange: 0,
            from: 1,
            to: 0,
            message: ExchangeMessage::Progress(times),
        };
        let (reply, _replies) = tokio::sync::mpsc::unbounded_channel();
        let forward = wiring();
        assert!(forward.on_frame(2, progress(vec![Time::new(2, 0)]), &reply).is_ok());
        let backwards = forward.on_frame(2, progress(vec![Time::new(1, 5)]), &reply).unwrap_err();
        assert!(backwards.contains("went backwards"), "{backwards}");
        let done = wiring();
        assert!(done.on_frame(2, progress(vec![]), &reply).is_ok(), "an empty frontier: the sender is done");
        let after_done = done.on_frame(2, batch(1, 0), &reply).unwrap_err();
        assert!(after_done.contains("behind its own frontier"), "{after_done}");
    }

    #[test]
    fn a_send_into_a_closed_connection_is_reported() {
        let (failures, mut reported) = tokio::sync::mpsc::unbounded_channel();
        let (connection, closed) = tokio::sync::mpsc::unbounded_channel();
        drop(closed);
        let link: Arc<str> = "data connection from worker 1 to worker 2".into();
        let sender = RemoteSender::new(
            (0, 0, 1),
            Arc::new(AtomicUsize::new(1)),
            connection,
            LinkFailures::new(failures, 9),
            link,
        );
        assert!(sender.try_send(ExchangeMessage::Progress(vec![])).is_ok());
        let report = reported.try_recv().expect("reported, not dropped");
        assert!(report.contains("from worker 1 to worker 2"), "{report}");
    }
}
