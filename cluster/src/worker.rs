//! `weir worker`: registers with the coordinator, runs the slots it is given, and carries
//! their exchange traffic to and from other workers.
//!
//! Everything here crosses the network through mutual TLS, and the worker checks roles too: it
//! registers only with a peer holding the coordinator's certificate, and accepts data
//! connections only from workers of the attempt they name. A *session* is one registration:
//! if the coordinator connection ends (or the coordinator is silent for its heartbeat timeout,
//! which the coordinator announces at registration), the worker stops its slots and registers
//! again; its slots' output on disk is brought in line with the checkpoint of the next
//! deployment before anything runs.
//!
//! The data plane outlives sessions. A peer's data connection may arrive before this worker
//! has processed the attempt's `Deploy` (a slow deployment): it waits for the attempt to be
//! wired, within [`PENDING_INBOUND_MAX`], and is closed at once if the attempt was cancelled
//! here. Every data connection of an attempt that ends while the attempt runs ends the attempt
//! (see [`crate::transport`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::Notify;

use weir_core::checkpoint::{with_retries, CheckpointStore};
use weir_core::faultpoint::{self, DeployDelivery};
use weir_core::rt;
use weir_dataflow::exchange::{Batch, BatchRx, BatchTx, Doorbell, ExchangeChannels, LocalChannel};
use weir_dataflow::metrics::SlotMetrics;
use weir_dataflow::snapshot::SlotSnapshot;
use weir_dataflow::JobRegistry;

use crate::connection::Connection;
use crate::deploy::{launch_slot, recover_sinks, PlannedJob, SlotLaunch};
use crate::net::{connect, is_role_refusal, Accepted, TlsListener};
use crate::protocol::{DataFrame, Deployment, Hello, MetricsSnapshot, ToCoordinator, ToWorker};
use crate::slot::{SlotCommand, SlotDoorbell};
use crate::tls::{Role, TlsContext};
use crate::transport::{AttemptWiring, Inbound, LinkFailures, RemoteReceiver, RemoteSender};
use crate::wire::{
    read_message, write_keepalive, write_message, ReadLimits, CLIENT_FRAME_BYTES_MAX, DATA_FRAME_BYTES_MAX,
    FRAME_BYTES_MAX, HELLO_BYTES_MAX, HELLO_TIMEOUT,
};

/// How long a data connection for an attempt not (yet) deployed here waits for it: longer than
/// the coordinator waits for a deployment.
pub const PENDING_INBOUND_MAX: Duration = Duration::from_secs(60);
/// Data connections' idle timeout before the first registration announces the cluster's.
const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts remembered as cancelled (so that their late data connections close at once).
const GONE_ATTEMPTS_MAX: usize = 4096;
/// Data connections that may wait for their attempt at once.
const PENDING_INBOUND_CONNECTIONS_MAX: usize = 256;

/// A data connection waiting for its attempt, counted while it waits.
struct Pending<'a>(&'a AtomicUsize);

impl<'a> Pending<'a> {
    fn enter(count: &'a AtomicUsize) -> Option<Self> {
        let entered = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < PENDING_INBOUND_CONNECTIONS_MAX).then_some(n + 1)
        });
        entered.is_ok().then_some(Pending(count))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The coordinator's address.
    pub coordinator: String,
    /// Slots offered.
    pub slots: usize,
    /// The data-plane listen address (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// TLS material.
    pub tls: TlsContext,
    /// The jobs this binary can run (the same as the coordinator's and every worker's).
    pub registry: Arc<JobRegistry>,
    /// Where slots keep local state (RocksDB instances), one directory per job, slot and attempt.
    pub local_state_dir: std::path::PathBuf,
    /// The memory each slot's RocksDB instances share, in bytes.
    pub state_memory_per_slot_bytes: u64,
}

/// A worker could not run.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The data-plane listener could not bind.
    #[error("worker: cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The coordinator refused this worker, or the peer at the coordinator's address is not
    /// the coordinator: trying again cannot help.
    #[error("worker: {0}")]
    Refused(String),
}

/// How a session with the coordinator ended.
enum SessionEnd {
    /// The connection ended: register again.
    Lost(String),
    /// Refused for good.
    Refused(String),
}

/// An attempt as this worker's data plane knows it.
enum AttemptSlot {
    Wired(Arc<AttemptWiring>),
    /// Cancelled here: its data connections are refused.
    Gone,
}

/// The worker's data plane: the wiring of every attempt it runs, shared with the acceptor of
/// data connections, which outlives sessions.
struct DataPlane {
    attempts: Mutex<(BTreeMap<u64, AttemptSlot>, VecDeque<u64>)>,
    /// Rung whenever an attempt is wired or unwired. (A `Notify`, not a `watch`: tokio's watch
    /// registers each waiter on one of several queues drawn from a generator the simulator does
    /// not seed, which made the order of wake-ups, and so a simulated run, vary.)
    changed: Notify,
    link_timeout: Mutex<Duration>,
    /// Data connections waiting for their attempt.
    pending: AtomicUsize,
}

impl DataPlane {
    fn new() -> Self {
        DataPlane {
            attempts: Mutex::new((BTreeMap::new(), VecDeque::new())),
            changed: Notify::new(),
            link_timeout: Mutex::new(DEFAULT_LINK_TIMEOUT),
            pending: AtomicUsize::new(0),
        }
    }

    fn link_timeout(&self) -> Duration {
        *self.link_timeout.lock().expect("data plane lock")
    }

    fn wire(&self, attempt: u64, wiring: Arc<AttemptWiring>) {
        self.attempts.lock().expect("data plane lock").0.insert(attempt, AttemptSlot::Wired(wiring));
        self.changed.notify_waiters();
    }

    /// Forgets `attempt`: its wiring is closed, and later connections for it are refused.
    fn unwire(&self, attempt: u64) {
        let previous = {
            let mut guard = self.attempts.lock().expect("data plane lock");
            let (attempts, gone) = &mut *guard;
            let previous = attempts.insert(attempt, AttemptSlot::Gone);
            gone.push_back(attempt);
            if gone.len() > GONE_ATTEMPTS_MAX {
                if let Some(oldest) = gone.pop_front() {
                    if matches!(attempts.get(&oldest), Some(AttemptSlot::Gone)) {
                        attempts.remove(&oldest);
                    }
                }
            }
            previous
        };
        if let Some(AttemptSlot::Wired(wiring)) = previous {
            wiring.close();
        }
        self.changed.notify_waiters();
    }

    /// The wiring of `attempt` once it exists, waiting at most `bound`: `Ok(None)` if it is not
    /// there yet, `Err(())` if it was cancelled here.
    async fn wait_for(&self, attempt: u64, bound: Duration) -> Result<Option<Arc<AttemptWiring>>, ()> {
        let deadline = rt::now() + bound;
        loop {
            // Registered before looking, so that a change between the look and the wait is seen.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.attempts.lock().expect("data plane lock").0.get(&attempt) {
                Some(AttemptSlot::Wired(wiring)) => return Ok(Some(wiring.clone())),
                Some(AttemptSlot::Gone) => return Err(()),
                None => {}
            }
            let left = deadline.saturating_duration_since(rt::now());
            if rt::timeout(left, changed).await.is_err() {
                return Ok(None);
            }
        }
    }
}

struct RunningAttempt {
    attempt: u64,
    commands: BTreeMap<usize, (UnboundedSender<SlotCommand>, Arc<SlotDoorbell>)>,
    metrics: BTreeMap<usize, Arc<SlotMetrics>>,
    handles: Vec<rt::SlotHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs a worker until the process is killed, or until the coordinator refuses it.
pub async fn run_worker(options: WorkerOptions) -> Result<(), WorkerError> {
    let listener = TlsListener::bind(&options.tls, &options.listen)
        .await
        .map_err(|source| WorkerError::Listen { address: options.listen.clone(), source })?;
    let data_address = listener.local_address();
    let plane = Arc::new(DataPlane::new());
    tokio::spawn(accept_data_connections(listener, plane.clone()));
    eprintln!("worker: data plane on {data_address}, {} slots", options.slots);
    let mut backoff = Duration::from_millis(100);
    loop {
        match serve_coordinator(&options, &data_address, &plane).await {
            SessionEnd::Lost(reason) => tracing::warn!(%reason, "coordinator connection ended; registering again"),
            SessionEnd::Refused(reason) => return Err(WorkerError::Refused(reason)),
        }
        rt::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One session: registers, then runs what the coordinator says until the connection ends.
async fn serve_coordinator(options: &WorkerOptions, data_address: &str, plane: &Arc<DataPlane>) -> SessionEnd {
    let stream = match connect(&options.tls, &options.coordinator, Role::Coordinator).await {
        Ok(stream) => stream,
        Err(error) if is_role_refusal(&error) => {
            return SessionEnd::Refused(format!("{}: {error}", options.coordinator))
        }
        Err(error) => return SessionEnd::Lost(error.to_string()),
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let hello = Hello::Worker { slots: options.slots, data_address: data_address.to_string() };
    if let Err(error) = write_message(&mut writer, &hello).await {
        return SessionEnd::Lost(error.to_string());
    }
    let answer = read_message::<_, ToWorker>(&mut reader, ReadLimits::new(CLIENT_FRAME_BYTES_MAX, HELLO_TIMEOUT)).await;
    let (worker_id, heartbeat_timeout) = match answer {
        Ok(Some(ToWorker::Welcome { worker_id, heartbeat_timeout_ms })) => {
            (worker_id, Duration::from_millis(heartbeat_timeout_ms.max(4)))
        }
        Ok(Some(ToWorker::Refused { reason })) => {
            return SessionEnd::Refused(format!(
                "the coordinator at {} refused this worker: {reason}",
                options.coordinator
            ))
        }
        Ok(_) => return SessionEnd::Lost("the coordinator did not welcome this worker".into()),
        Err(error) => return SessionEnd::Lost(error.to_string()),
    };
    eprintln!("worker: registered with {} as worker {worker_id}", options.coordinator);
    *plane.link_timeout.lock().expect("data plane lock") = heartbeat_timeout;
    let (inbox_sender, mut inbox) = mpsc::unbounded_channel::<ToWorker>();
    // The coordinator sends keepalives: silence for its heartbeat timeout means it (or the path
    // to it) is gone.
    let connection = Connection::spawn(reader.unsplit(writer), FRAME_BYTES_MAX, heartbeat_timeout, |_| {
        move |message: ToWorker| inbox_sender.send(message).map_err(|_| "the session ended".to_string())
    });
    let outbox = connection.outbox.clone();
    let attempts: Arc<Mutex<BTreeMap<u64, RunningAttempt>>> = Arc::default();
    let heartbeat = tokio::spawn(send_heartbeats(outbox.clone(), attempts.clone(), heartbeat_timeout / 4));
    let session = Session {
        worker_id,
        tls: options.tls.clone(),
        registry: options.registry.clone(),
        local_state_dir: options.local_state_dir.clone(),
        state_memory_per_slot_bytes: options.state_memory_per_slot_bytes,
        plane: plane.clone(),
        outbox,
        attempts,
    };
    let reason = loop {
        tokio::select! {
            biased;
            message = inbox.recv() => match message {
                Some(message) => session.on_message(message).await,
                None => break connection.ended.wait().await,
            },
            reason = connection.ended.wait() => break reason,
        }
    };
    heartbeat.abort();
    // Without a coordinator no attempt can complete a checkpoint: stop everything.
    let running: Vec<(u64, RunningAttempt)> =
        std::mem::take(&mut *session.attempts.lock().expect("attempts lock")).into_iter().collect();
    for (attempt, running) in running {
        plane.unwire(attempt);
        stop(running).await;
    }
    SessionEnd::Lost(reason)
}

async fn send_heartbeats(
    outbox: UnboundedSender<ToCoordinator>,
    attempts: Arc<Mutex<BTreeMap<u64, RunningAttempt>>>,
    interval: Duration,
) {
    loop {
        let report = {
            let attempts = attempts.lock().expect("attempts lock");
            attempts.iter().next_back().map(|(attempt, running)| {
                (*attempt, running.metrics.iter().map(|(slot, m)| (*slot, MetricsSnapshot::of(m))).collect())
            })
        };
        let (attempt, metrics) = match report {
            Some((attempt, metrics)) => (Some(attempt), metrics),
            None => (None, Vec::new()),
        };
        if outbox.send(ToCoordinator::Heartbeat { attempt, metrics }).is_err() {
            break;
        }
        rt::sleep(interval).await;
    }
}

/// What one registration needs to act on the coordinator's messages.
#[derive(Clone)]
struct Session {
    worker_id: u64,
    tls: TlsContext,
    registry: Arc<JobRegistry>,
    local_state_dir: std::path::PathBuf,
    state_memory_per_slot_bytes: u64,
    plane: Arc<DataPlane>,
    outbox: UnboundedSender<ToCoordinator>,
    attempts: Arc<Mutex<BTreeMap<u64, RunningAttempt>>>,
}

impl Session {
    async fn on_message(&self, message: ToWorker) {
        match message {
            ToWorker::Welcome { .. } | ToWorker::Refused { .. } => tracing::warn!("unexpected registration answer"),
            ToWorker::Deploy(deployment) => match faultpoint::deploy_delivery(deployment.attempt_token) {
                DeployDelivery::Now => self.deploy(*deployment).await,
                DeployDelivery::After(delay) => {
                    rt::sleep(delay).await;
                    self.deploy(*deployment).await;
                }
                DeployDelivery::Held(release) => {
                    // The message reaches this worker late, on this session's connection, after
                    // the coordinator gave the attempt up: it is processed then, as this session
                    // would have (and whatever it starts stops, the session being over).
                    let session = self.clone();
                    tokio::spawn(async move {
                        release.notified().await;
                        let attempt = deployment.attempt;
                        session.deploy(*deployment).await;
                        let running = session.attempts.lock().expect("attempts lock").remove(&attempt);
                        session.plane.unwire(attempt);
                        if let Some(running) = running {
                            stop(running).await;
                        }
                    });
                }
            },
            ToWorker::Command { attempt, slot, command } => {
                let attempts = self.attempts.lock().expect("attempts lock");
                if let Some((commands, doorbell)) = attempts.get(&attempt).and_then(|a| a.commands.get(&slot)) {
                    let _ = commands.send(command);
                    doorbell.ring();
                }
            }
            ToWorker::Cancel { attempt } => {
                let running = self.attempts.lock().expect("attempts lock").remove(&attempt);
                self.plane.unwire(attempt);
                if let Some(running) = running {
                    stop(running).await;
                }
            }
        }
    }

    async fn deploy(&self, deployment: Deployment) {
        let attempt = deployment.attempt;
        if self.attempts.lock().expect("attempts lock").contains_key(&attempt) {
            let message = format!("attempt {attempt} is already deployed on worker {}", self.worker_id);
            let _ = self.outbox.send(ToCoordinator::DeployFailed { attempt, message });
            return;
        }
        let node = Node {
            registry: &self.registry,
            tls: &self.tls,
            local_state_dir: &self.local_state_dir,
            state_memory_per_slot_bytes: self.state_memory_per_slot_bytes,
        };
        match deploy(self.worker_id, deployment, node, &self.plane, &self.outbox).await {
            Ok(running) => {
                self.attempts.lock().expect("attempts lock").insert(attempt, running);
                let _ = self.outbox.send(ToCoordinator::Deployed { attempt });
            }
            Err(message) => {
                self.plane.unwire(attempt);
                faultpoint::attempt_stopped(attempt); // nothing of it runs here
                let _ = self.outbox.send(ToCoordinator::DeployFailed { attempt, message });
            }
        }
    }
}

async fn stop(running: RunningAttempt) {
    for (commands, doorbell) in running.commands.values() {
        let _ = commands.send(SlotCommand::Stop);
        doorbell.ring();
    }
    for task in &running.tasks {
        task.abort();
    }
    for handle in running.handles {
        let _ = handle.join().await;
    }
    faultpoint::attempt_stopped(running.attempt);
}

/// What a deployment uses of the worker itself.
#[derive(Clone, Copy)]
struct Node<'a> {
    registry: &'a JobRegistry,
    tls: &'a TlsContext,
    local_state_dir: &'a std::path::Path,
    state_memory_per_slot_bytes: u64,
}

/// Starts this worker's slots of `deployment`. Anything that fails leaves nothing running.
async fn deploy(
    worker_id: u64,
    deployment: Deployment,
    node: Node<'_>,
    plane: &Arc<DataPlane>,
    outbox: &UnboundedSender<ToCoordinator>,
) -> Result<RunningAttempt, String> {
    let Deployment {
        attempt,
        spec,
        start_epoch,
        restored_epoch,
        restored_attempt,
        restored_parallelism,
        checkpoint_dir,
        attempt_token,
        generation,
        placement,
        slots,
        exchange_credits,
        rate_limit,
        job_id,
        ..
    } = deployment;
    let job = Arc::new(
        PlannedJob::new(node.registry, spec).map_err(|e| format!("worker {worker_id} cannot build the job: {e}"))?,
    );
    let parallelism = job.parallelism();
    let exchanges = if parallelism > 1 { job.plan.exchanges } else { 0 };
    if placement.len() != parallelism
        || slots.iter().any(|(slot, _)| placement.get(*slot).map(|p| p.worker_id) != Some(worker_id))
    {
        return Err(format!("deployment of attempt {attempt} does not match its placement on worker {worker_id}"));
    }
    // The slots upload their state files to the job's checkpoint store themselves: it must be
    // the coordinator's (shared), which the job's record, written at submission, shows. Checked
    // (reading only) before anything else.
    if job_id != job.job_id {
        return Err(format!("deployment of attempt {attempt} names job {job_id}, but its spec is job {}", job.job_id));
    }
    let store = CheckpointStore::open(&checkpoint_dir, &job_id)
        .map_err(|e| format!("worker {worker_id} cannot open the checkpoint store: {e}"))?;
    match with_retries("reading the job's record", || store.has_job_record(crate::server::JOB_RECORD)).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "worker {worker_id} does not see the checkpoint directory {checkpoint_dir} as the coordinator does (no {}): slots upload their state there, so it must be shared by the coordinator and every worker (one machine, or a shared file system)",
                store.record_path(crate::server::JOB_RECORD)
            ))
        }
        Err(error) => return Err(format!("worker {worker_id} cannot read the checkpoint store: {error}")),
    }
    // Refuse a stale deployment before touching anything, including the data plane; then bring
    // the slots' output in line with the restored checkpoint and decode their state, all before
    // any slot starts, so that a failure here leaves nothing running.
    crate::deploy::fence_output(&job, generation).map_err(|e| e.to_string())?;
    let mut prepared = Vec::with_capacity(slots.len());
    for (slot, snapshot) in slots {
        recover_sinks(&job, slot, restored_epoch, restored_attempt, restored_parallelism, generation)
            .map_err(|e| e.to_string())?;
        faultpoint::reached(faultpoint::Moment::SinkRecovered).await;
        let snapshot = if snapshot.is_empty() {
            SlotSnapshot::default()
        } else {
            SlotSnapshot::decode(&snapshot, restored_epoch).map_err(|e| format!("slot {slot} state: {e}"))?.1
        };
        prepared.push((slot, snapshot));
    }
    let local: Vec<usize> = prepared.iter().map(|(slot, _)| *slot).collect();
    let workers: Vec<u64> = placement.iter().map(|p| p.worker_id).collect();
    let is_local = |slot: usize| workers[slot] == worker_id;
    let doorbells: HashMap<usize, Arc<SlotDoorbell>> =
        local.iter().map(|&slot| (slot, Arc::new(SlotDoorbell::default()))).collect();

    // Failures of the attempt's data connections go to the coordinator, which ends the attempt.
    let (failure_sender, mut failure_queue) = mpsc::unbounded_channel::<String>();
    let mut tasks = vec![{
        let outbox = outbox.clone();
        tokio::spawn(async move {
            while let Some(message) = failure_queue.recv().await {
                let _ = outbox.send(ToCoordinator::LinkFailed { attempt, message });
            }
        })
    }];
    let failures = LinkFailures::new(failure_sender, attempt);
    let mut wiring = AttemptWiring::new(worker_id, workers.clone(), exchange_credits, failures.clone());
    wiring.doorbells = doorbells.clone();
    for exchange in 0..exchanges {
        for &to in &local {
            for from in (0..parallelism).filter(|&from| !is_local(from)) {
                let channel = (exchange, from, to);
                wiring.inbound.insert(channel, Inbound::new(channel, exchange_credits, doorbells[&to].clone()));
            }
        }
        for &from in &local {
            for to in (0..parallelism).filter(|&to| !is_local(to)) {
                wiring.credits.insert((exchange, from, to), Arc::new(AtomicUsize::new(exchange_credits)));
            }
        }
    }
    let wiring = Arc::new(wiring);
    plane.wire(attempt, wiring.clone());
    let fail = |tasks: &[tokio::task::JoinHandle<()>], message: String| {
        tasks.iter().for_each(|task| task.abort());
        message
    };

    // Outgoing data connections: one per remote worker that hosts a target slot.
    let mut connections: HashMap<u64, (UnboundedSender<DataFrame>, Arc<str>)> = HashMap::new();
    if parallelism > 1 {
        let remote_workers: BTreeMap<u64, String> = placement
            .iter()
            .filter(|p| p.worker_id != worker_id)
            .map(|p| (p.worker_id, p.data_address.clone()))
            .collect();
        for (remote, address) in remote_workers {
            let link: Arc<str> =
                format!("data connection from worker {worker_id} to worker {remote} ({address})").into();
            let stream = match connect(node.tls, &address, Role::Worker).await {
                Ok(stream) => stream,
                Err(e) => return Err(fail(&tasks, format!("{link}: {e}"))),
            };
            let (reader, mut writer) = tokio::io::split(stream);
            if let Err(e) = write_message(&mut writer, &Hello::Data { from_worker: worker_id, attempt }).await {
                return Err(fail(&tasks, format!("{link}: {e}")));
            }
            let connection =
                Connection::spawn(reader.unsplit(writer), DATA_FRAME_BYTES_MAX, plane.link_timeout(), |reply| {
                    let wiring = wiring.clone();
                    move |frame: DataFrame| wiring.on_frame(remote, frame, &reply)
                });
            connections.insert(remote, (connection.outbox.clone(), link.clone()));
            if !wiring.keep_link(connection, link.to_string()) {
                return Err(fail(&tasks, format!("attempt {attempt} was cancelled while it deployed")));
            }
            // A connection of the attempt failed while this one was being made: the attempt is
            // over; no slot of it starts here.
            if failures.any() {
                return Err(fail(&tasks, format!("a data connection of attempt {attempt} failed while it deployed")));
            }
        }
    }

    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    {
        let outbox = outbox.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = events_rx.recv().await {
                if outbox.send(ToCoordinator::Event { attempt, event }).is_err() {
                    break;
                }
            }
        }));
    }

    // Local channels between co-located slots.
    let mut local_channels: HashMap<(usize, usize, usize), Arc<LocalChannel<Batch>>> = HashMap::new();
    for exchange in 0..exchanges {
        for &from in &local {
            for &to in &local {
                let to_bell: Arc<dyn Doorbell> = doorbells[&to].clone();
                let from_bell: Arc<dyn Doorbell> = doorbells[&from].clone();
                local_channels.insert((exchange, from, to), LocalChannel::new(exchange_credits, to_bell, from_bell));
            }
        }
    }

    let mut running =
        RunningAttempt { attempt, commands: BTreeMap::new(), metrics: BTreeMap::new(), handles: Vec::new(), tasks };
    for (slot, snapshot) in prepared {
        let slot_exchanges: Vec<ExchangeChannels> = (0..exchanges)
            .map(|exchange| {
                let senders: Vec<BatchTx> = (0..parallelism)
                    .map(|to| -> BatchTx {
                        let channel = (exchange, slot, to);
                        if is_local(to) {
                            Box::new(local_channels[&channel].clone())
                        } else {
                            let (connection, link) = connections[&workers[to]].clone();
                            let credits = wiring.credits[&channel].clone();
                            Box::new(RemoteSender::new(channel, credits, connection, failures.clone(), link))
                        }
                    })
                    .collect();
                let receivers: Vec<BatchRx> = (0..parallelism)
                    .map(|from| -> BatchRx {
                        let channel = (exchange, from, slot);
                        if is_local(from) {
                            Box::new(local_channels[&channel].clone())
                        } else {
                            Box::new(RemoteReceiver(wiring.inbound[&channel].clone()))
                        }
                    })
                    .collect();
                ExchangeChannels { senders, receivers }
            })
            .collect();
        let metrics = Arc::new(SlotMetrics::default());
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        running.commands.insert(slot, (commands_tx, doorbells[&slot].clone()));
        running.metrics.insert(slot, metrics.clone());
        let launched = launch_slot(SlotLaunch {
            job: job.clone(),
            slot,
            attempt: attempt_token,
            generation,
            start_epoch,
            snapshot,
            restored_attempt,
            exchanges: slot_exchanges,
            metrics,
            commands: commands_rx,
            events: events_tx.clone(),
            doorbell: doorbells[&slot].clone(),
            rate_limit,
            store: store.clone(),
            local_state_dir: node.local_state_dir.to_path_buf(),
            state_memory_per_slot_bytes: node.state_memory_per_slot_bytes,
        });
        match launched {
            Ok(handle) => running.handles.push(handle),
            Err(error) => {
                stop(running).await;
                return Err(error.to_string());
            }
        }
    }
    Ok(running)
}

/// Accepts data connections from other workers and serves them for their attempt.
async fn accept_data_connections(mut listener: TlsListener, plane: Arc<DataPlane>) {
    loop {
        let accepted = listener.accept().await;
        tokio::spawn(serve_inbound(accepted, plane.clone()));
    }
}

/// Serves one inbound data connection: checks who it is from and for what, waits for the
/// attempt to be deployed here, and hands it to the attempt's wiring.
async fn serve_inbound(accepted: Accepted, plane: Arc<DataPlane>) {
    let Accepted { stream, address, peer } = accepted;
    let refuse = |reason: &str| tracing::warn!(%address, subject = %peer.subject, "refused data connection: {reason}");
    if let Err(reason) = peer.require(Role::Worker, "open a data connection") {
        return refuse(&reason);
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let hello = read_message::<_, Hello>(&mut reader, ReadLimits::new(HELLO_BYTES_MAX, HELLO_TIMEOUT)).await;
    let (from_worker, attempt) = match hello {
        Ok(Some(Hello::Data { from_worker, attempt })) => (from_worker, attempt),
        Ok(_) => return refuse("its first message is not a data hello"),
        Err(error) => return refuse(&format!("bad hello: {error}")),
    };
    // The peer may be faster than this worker's own deployment of the attempt: the connection
    // waits for it, kept alive meanwhile (the peer times out a silent connection).
    let Some(_pending) = Pending::enter(&plane.pending) else {
        return refuse(&format!("{PENDING_INBOUND_CONNECTIONS_MAX} data connections already wait for their attempts"));
    };
    let deadline = rt::now() + PENDING_INBOUND_MAX;
    let wiring = loop {
        let step = (plane.link_timeout() / 4).min(deadline.saturating_duration_since(rt::now()));
        match plane.wait_for(attempt, step).await {
            Ok(Some(wiring)) => break wiring,
            Ok(None) if rt::now() < deadline => {
                if let Err(error) = write_keepalive(&mut writer).await {
                    return refuse(&format!("from worker {from_worker}, closed while it waited: {error}"));
                }
            }
            Ok(None) | Err(()) => {
                return refuse(&format!(
                    "from worker {from_worker} for attempt {attempt}, which this worker does not run (cancelled, or not deployed within {PENDING_INBOUND_MAX:?})"
                ))
            }
        }
    };
    if let Err(reason) = wiring.admit_inbound(from_worker) {
        return refuse(&format!("attempt {attempt}: {reason}"));
    }
    let link = format!("data connection from worker {from_worker} to worker {} ({address})", wiring.worker_id);
    let connection = Connection::spawn(reader.unsplit(writer), DATA_FRAME_BYTES_MAX, plane.link_timeout(), |reply| {
        let wiring = wiring.clone();
        move |frame: DataFrame| wiring.on_frame(from_worker, frame, &reply)
    });
    // Dropped (closed) at once if the attempt was cancelled meanwhile.
    wiring.keep_link(connection, link);
}
