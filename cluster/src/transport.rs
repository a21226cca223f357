//! The exchange layer between workers: the same `ExchangeTx`/`ExchangeRx` contract as the
//! in-process `LocalChannel`, carried over one mutual-TLS connection per ordered pair of
//! workers.
//!
//! The sending worker opens the connection; batches and frontier reports flow forward on it in
//! FIFO order, and credits flow back on the same connection. A sender holds `credits` batches
//! of credit per channel and takes one per batch; the receiving slot returns one when it
//! consumes a batch. So the exact frontier semantics and the memory bound of the in-process
//! channel hold across processes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use weir_core::Bid;
use weir_dataflow::exchange::{Doorbell, ExchangeMessage, ExchangeRx, ExchangeTx};

use crate::protocol::DataFrame;
use crate::slot::SlotDoorbell;

/// The sending end of a channel to a slot on another worker.
pub struct RemoteSender {
    from: usize,
    to: usize,
    credits: Arc<AtomicUsize>,
    connection: UnboundedSender<DataFrame>,
}

impl RemoteSender {
    /// A sender from `from` to `to` over `connection`, with the shared credit counter.
    pub fn new(from: usize, to: usize, credits: Arc<AtomicUsize>, connection: UnboundedSender<DataFrame>) -> Self {
        RemoteSender { from, to, credits, connection }
    }
}

impl ExchangeTx<Bid> for RemoteSender {
    fn try_send(&self, message: ExchangeMessage<Bid>) -> Result<(), ExchangeMessage<Bid>> {
        if let ExchangeMessage::Data(..) = message {
            let taken = self.credits.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
            if taken.is_err() {
                return Err(message);
            }
        }
        // A closed connection means the attempt is being torn down: the message is moot.
        let _ = self.connection.send(DataFrame::Batch { from: self.from, to: self.to, message });
        Ok(())
    }
}

/// Messages that arrived for one (from, to) channel, waiting for the receiving slot.
pub struct Inbound {
    from: usize,
    to: usize,
    /// The queue and how many data batches it holds (each took one credit).
    queue: Mutex<(VecDeque<ExchangeMessage<Bid>>, usize)>,
    /// Credits of the channel: the most data batches that may ever be queued.
    credits: usize,
    doorbell: Arc<SlotDoorbell>,
    credit_back: Mutex<Option<UnboundedSender<DataFrame>>>,
}

impl Inbound {
    /// An empty inbound queue for the channel `from → to` with `credits` credits, waking
    /// `doorbell` on arrival.
    pub fn new(from: usize, to: usize, credits: usize, doorbell: Arc<SlotDoorbell>) -> Arc<Self> {
        let queue = Mutex::new((VecDeque::new(), 0));
        Arc::new(Inbound { from, to, queue, credits, doorbell, credit_back: Mutex::new(None) })
    }

    /// A message arrived on `connection` (whose write half returns credit).
    pub fn deliver(&self, message: ExchangeMessage<Bid>, connection: &UnboundedSender<DataFrame>) {
        {
            let mut credit_back = self.credit_back.lock().expect("inbound lock");
            if credit_back.is_none() {
                *credit_back = Some(connection.clone());
            }
        }
        {
            let mut queue = self.queue.lock().expect("inbound lock");
            if let ExchangeMessage::Data(..) = message {
                queue.1 += 1;
                // Bounded memory: a sender never has more batches in flight than credits.
                assert!(
                    queue.1 <= self.credits,
                    "exchange {} -> {}: {} batches queued with only {} credits",
                    self.from,
                    self.to,
                    queue.1,
                    self.credits
                );
            }
            queue.0.push_back(message);
        }
        self.doorbell.ring();
    }
}

/// The receiving end of a channel from a slot on another worker.
pub struct RemoteReceiver(pub Arc<Inbound>);

impl ExchangeRx<Bid> for RemoteReceiver {
    fn try_recv(&self) -> Option<ExchangeMessage<Bid>> {
        let message = {
            let mut queue = self.0.queue.lock().expect("inbound lock");
            let message = queue.0.pop_front()?;
            if let ExchangeMessage::Data(..) = message {
                queue.1 -= 1;
            }
            message
        };
        if let ExchangeMessage::Data(..) = message {
            let credit_back = self.0.credit_back.lock().expect("inbound lock");
            let connection = credit_back.as_ref().expect("data arrived over a connection");
            let _ = connection.send(DataFrame::Credit { from: self.0.from, to: self.0.to, credits: 1 });
        }
        Some(message)
    }
}

/// The data-plane state of one deployment attempt on one worker.
pub struct AttemptWiring {
    /// Inbound queues by (from, to), for every remote `from` and local `to`.
    pub inbound: HashMap<(usize, usize), Arc<Inbound>>,
    /// Credit counters by (from, to), for every local `from` and remote `to`.
    pub credits: HashMap<(usize, usize), Arc<AtomicUsize>>,
    /// Doorbells of the local slots.
    pub doorbells: HashMap<usize, Arc<SlotDoorbell>>,
}

impl AttemptWiring {
    /// Handles a frame that arrived on a data connection; `reply` is that connection's write side.
    pub fn on_frame(&self, frame: DataFrame, reply: &UnboundedSender<DataFrame>) -> Result<(), String> {
        match frame {
            DataFrame::Batch { from, to, message } => {
                let inbound = self.inbound.get(&(from, to)).ok_or(format!("no channel {from} -> {to} here"))?;
                inbound.deliver(message, reply);
            }
            DataFrame::Credit { from, to, credits } => {
                let counter = self.credits.get(&(from, to)).ok_or(format!("no channel {from} -> {to} from here"))?;
                counter.fetch_add(credits as usize, Ordering::AcqRel);
                if let Some(doorbell) = self.doorbells.get(&from) {
                    doorbell.ring();
                }
            }
        }
        Ok(())
    }
}
