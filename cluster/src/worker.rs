//! `weir worker`: registers with the coordinator, runs the slots it is given, and carries
//! their exchange traffic to and from other workers.
//!
//! Everything here crosses the network through mutual TLS. If the coordinator connection
//! drops, the worker stops its slots and registers again (a restarted coordinator takes it
//! back); its slots' output on disk is brought in line with the checkpoint of the next
//! deployment before anything runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::{self, UnboundedSender};

use weir_core::rt;
use weir_core::Bid;
use weir_dataflow::exchange::{Doorbell, ExchangeRx, ExchangeTx, LocalChannel};
use weir_dataflow::metrics::SlotMetrics;
use weir_dataflow::snapshot::SlotSnapshot;

use crate::deploy::{launch_slot, recover_sinks, SlotLaunch};
use crate::net::{connect, TlsListener, TlsStream};
use crate::protocol::{DataFrame, Deployment, Hello, MetricsSnapshot, ToCoordinator, ToWorker};
use crate::slot::{SlotCommand, SlotDoorbell};
use crate::tls::TlsContext;
use crate::wire::{read_message, write_message};

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
    /// Interval between heartbeats.
    pub heartbeat_interval: Duration,
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
}

/// Table of live attempts on this worker, shared with the data-plane acceptor.
type Wirings = Arc<Mutex<HashMap<u64, Arc<crate::transport::AttemptWiring>>>>;

struct RunningAttempt {
    commands: BTreeMap<usize, (UnboundedSender<SlotCommand>, Arc<SlotDoorbell>)>,
    metrics: BTreeMap<usize, Arc<SlotMetrics>>,
    handles: Vec<rt::SlotHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs a worker until the process is killed.
pub async fn run_worker(options: WorkerOptions) -> Result<(), WorkerError> {
    let listener = TlsListener::bind(&options.tls, &options.listen)
        .await
        .map_err(|source| WorkerError::Listen { address: options.listen.clone(), source })?;
    let data_address =
        listener.local_address().map_err(|source| WorkerError::Listen { address: options.listen.clone(), source })?;
    let wirings: Wirings = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(accept_data_connections(listener, wirings.clone()));
    eprintln!("worker: data plane on {data_address}, {} slots", options.slots);
    let mut backoff = Duration::from_millis(100);
    loop {
        match serve_coordinator(&options, &data_address, &wirings).await {
            Ok(()) => tracing::warn!("coordinator closed the connection; registering again"),
            Err(error) => tracing::warn!(%error, "coordinator connection failed; registering again"),
        }
        rt::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn serve_coordinator(options: &WorkerOptions, data_address: &str, wirings: &Wirings) -> std::io::Result<()> {
    let stream = connect(&options.tls, &options.coordinator).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    write_message(&mut writer, &Hello::Worker { slots: options.slots, data_address: data_address.to_string() }).await?;
    let Some(ToWorker::Welcome { worker_id }) = read_message::<_, ToWorker>(&mut reader).await? else {
        return Err(std::io::Error::other("coordinator did not welcome this worker"));
    };
    eprintln!("worker: registered with {} as worker {worker_id}", options.coordinator);
    let (outbox, mut outbox_rx) = mpsc::unbounded_channel::<ToCoordinator>();
    let writer_task = tokio::spawn(async move {
        while let Some(message) = outbox_rx.recv().await {
            if write_message(&mut writer, &message).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let attempts: Arc<Mutex<BTreeMap<u64, RunningAttempt>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let heartbeat = {
        let outbox = outbox.clone();
        let attempts = attempts.clone();
        let interval = options.heartbeat_interval;
        tokio::spawn(async move {
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
        })
    };
    // The coordinator pings; hearing nothing for this long means it (or the path to it) is gone.
    let silence_limit = options.heartbeat_interval * 8;
    let result = loop {
        let message = match rt::timeout(silence_limit, read_message::<_, ToWorker>(&mut reader)).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(error)) => break Err(error),
            Err(_) => break Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "coordinator silent")),
        };
        match message {
            ToWorker::Welcome { .. } => tracing::warn!("unexpected second welcome"),
            ToWorker::Ping => {}
            ToWorker::Deploy(deployment) => {
                let attempt = deployment.attempt;
                match deploy(worker_id, *deployment, &options.tls, wirings, &outbox).await {
                    Ok(running) => {
                        attempts.lock().expect("attempts lock").insert(attempt, running);
                        let _ = outbox.send(ToCoordinator::Deployed { attempt });
                    }
                    Err(message) => {
                        let _ = outbox.send(ToCoordinator::DeployFailed { attempt, message });
                    }
                }
            }
            ToWorker::Command { attempt, slot, command } => {
                let attempts = attempts.lock().expect("attempts lock");
                if let Some((commands, doorbell)) = attempts.get(&attempt).and_then(|a| a.commands.get(&slot)) {
                    let _ = commands.send(command);
                    doorbell.ring();
                }
            }
            ToWorker::Cancel { attempt } => {
                let running = attempts.lock().expect("attempts lock").remove(&attempt);
                wirings.lock().expect("wirings lock").remove(&attempt);
                if let Some(running) = running {
                    stop(running).await;
                }
            }
        }
    };
    heartbeat.abort();
    // Without a coordinator no attempt can complete a checkpoint: stop everything.
    let running: Vec<RunningAttempt> =
        std::mem::take(&mut *attempts.lock().expect("attempts lock")).into_values().collect();
    wirings.lock().expect("wirings lock").clear();
    for attempt in running {
        stop(attempt).await;
    }
    drop(outbox);
    let _ = writer_task.await;
    result
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
}

async fn deploy(
    worker_id: u64,
    deployment: Deployment,
    tls: &TlsContext,
    wirings: &Wirings,
    outbox: &UnboundedSender<ToCoordinator>,
) -> Result<RunningAttempt, String> {
    let Deployment {
        attempt,
        spec,
        start_epoch,
        restored_epoch,
        restored_attempt,
        attempt_token,
        generation,
        placement,
        slots,
        exchange_credits,
        rate_limit,
        ..
    } = deployment;
    let spec = Arc::new(spec);
    // Refuse a stale deployment before touching anything, including the data plane; then bring
    // the slots' output in line with the restored checkpoint and decode their state, all before
    // any slot starts, so that a failure here leaves nothing running.
    crate::deploy::fence_output(&spec, generation).map_err(|e| e.to_string())?;
    let mut prepared = Vec::with_capacity(slots.len());
    for (slot, snapshot) in slots {
        recover_sinks(&spec, slot, restored_epoch, restored_attempt).map_err(|e| e.to_string())?;
        weir_core::faultpoint::reached(weir_core::faultpoint::Moment::SinkRecovered).await;
        let snapshot = if snapshot.is_empty() {
            SlotSnapshot::default()
        } else {
            SlotSnapshot::decode(&snapshot, restored_epoch).map_err(|e| format!("slot {slot} state: {e}"))?.1
        };
        prepared.push((slot, snapshot));
    }
    let slots = prepared;
    let parallelism = spec.parallelism;
    let local: Vec<usize> = slots.iter().map(|(slot, _)| *slot).collect();
    let is_local = |slot: usize| placement[slot].worker_id == worker_id;
    let doorbells: HashMap<usize, Arc<SlotDoorbell>> =
        local.iter().map(|&slot| (slot, Arc::new(SlotDoorbell::default()))).collect();
    let mut wiring = crate::transport::AttemptWiring {
        inbound: HashMap::new(),
        credits: HashMap::new(),
        doorbells: doorbells.clone(),
    };
    if parallelism > 1 {
        for &to in &local {
            for from in (0..parallelism).filter(|&from| !is_local(from)) {
                wiring.inbound.insert(
                    (from, to),
                    crate::transport::Inbound::new(from, to, exchange_credits, doorbells[&to].clone()),
                );
            }
        }
        for &from in &local {
            for to in (0..parallelism).filter(|&to| !is_local(to)) {
                wiring.credits.insert((from, to), Arc::new(AtomicUsize::new(exchange_credits)));
            }
        }
    }
    let wiring = Arc::new(wiring);
    wirings.lock().expect("wirings lock").insert(attempt, wiring.clone());

    // Outgoing data connections: one per remote worker that hosts a target slot.
    let mut tasks = Vec::new();
    let mut connections: HashMap<u64, UnboundedSender<DataFrame>> = HashMap::new();
    if parallelism > 1 {
        let remote_workers: BTreeMap<u64, String> = placement
            .iter()
            .filter(|p| p.worker_id != worker_id)
            .map(|p| (p.worker_id, p.data_address.clone()))
            .collect();
        for (remote, address) in remote_workers {
            let stream = match connect(tls, &address).await {
                Ok(stream) => stream,
                Err(e) => {
                    wirings.lock().expect("wirings lock").remove(&attempt);
                    tasks.iter().for_each(|task: &tokio::task::JoinHandle<()>| task.abort());
                    return Err(format!("data connection to worker {remote} at {address}: {e}"));
                }
            };
            let (sender, task) =
                spawn_data_connection(stream, Hello::Data { from_worker: worker_id, attempt }, wiring.clone());
            connections.insert(remote, sender);
            tasks.extend(task);
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
    let mut local_channels: HashMap<(usize, usize), Arc<LocalChannel<Bid>>> = HashMap::new();
    if parallelism > 1 {
        for &from in &local {
            for &to in &local {
                let to_bell: Arc<dyn Doorbell> = doorbells[&to].clone();
                let from_bell: Arc<dyn Doorbell> = doorbells[&from].clone();
                local_channels.insert((from, to), LocalChannel::new(exchange_credits, to_bell, from_bell));
            }
        }
    }

    let mut running =
        RunningAttempt { commands: BTreeMap::new(), metrics: BTreeMap::new(), handles: Vec::new(), tasks };
    for (slot, snapshot) in slots {
        let exchange = (parallelism > 1).then(|| {
            let senders: Vec<Box<dyn ExchangeTx<Bid>>> = (0..parallelism)
                .map(|to| -> Box<dyn ExchangeTx<Bid>> {
                    if is_local(to) {
                        Box::new(local_channels[&(slot, to)].clone())
                    } else {
                        let connection = connections[&placement[to].worker_id].clone();
                        Box::new(crate::transport::RemoteSender::new(
                            slot,
                            to,
                            wiring.credits[&(slot, to)].clone(),
                            connection,
                        ))
                    }
                })
                .collect();
            let receivers: Vec<Box<dyn ExchangeRx<Bid>>> = (0..parallelism)
                .map(|from| -> Box<dyn ExchangeRx<Bid>> {
                    if is_local(from) {
                        Box::new(local_channels[&(from, slot)].clone())
                    } else {
                        Box::new(crate::transport::RemoteReceiver(wiring.inbound[&(from, slot)].clone()))
                    }
                })
                .collect();
            (senders, receivers)
        });
        let metrics = Arc::new(SlotMetrics::default());
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        running.commands.insert(slot, (commands_tx, doorbells[&slot].clone()));
        running.metrics.insert(slot, metrics.clone());
        let launched = launch_slot(SlotLaunch {
            spec: spec.clone(),
            slot,
            attempt: attempt_token,
            start_epoch,
            snapshot,
            exchange,
            metrics,
            commands: commands_rx,
            events: events_tx.clone(),
            doorbell: doorbells[&slot].clone(),
            rate_limit,
        });
        match launched {
            Ok(handle) => running.handles.push(handle),
            Err(error) => {
                wirings.lock().expect("wirings lock").remove(&attempt);
                stop(running).await;
                return Err(error.to_string());
            }
        }
    }
    Ok(running)
}

/// Runs a data connection: frames from the returned sender go out; frames that come in are
/// handed to `wiring`. `hello` is sent first when this side opened the connection.
fn spawn_data_connection(
    stream: TlsStream,
    hello: Hello,
    wiring: Arc<crate::transport::AttemptWiring>,
) -> (UnboundedSender<DataFrame>, Vec<tokio::task::JoinHandle<()>>) {
    let (sender, mut frames) = mpsc::unbounded_channel::<DataFrame>();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_task = tokio::spawn(async move {
        if write_message(&mut writer, &hello).await.is_err() {
            return;
        }
        while let Some(frame) = frames.recv().await {
            if write_message(&mut writer, &frame).await.is_err() {
                break;
            }
        }
    });
    let reply = sender.clone();
    let reader_task = tokio::spawn(async move {
        while let Ok(Some(frame)) = read_message::<_, DataFrame>(&mut reader).await {
            if let Err(error) = wiring.on_frame(frame, &reply) {
                tracing::warn!(%error, "dropping data connection");
                break;
            }
        }
    });
    (sender, vec![writer_task, reader_task])
}

/// Accepts data connections from other workers and serves them for their attempt.
async fn accept_data_connections(listener: TlsListener, wirings: Wirings) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let wirings = wirings.clone();
        tokio::spawn(async move {
            let (mut reader, writer) = tokio::io::split(stream);
            let Ok(Some(Hello::Data { from_worker, attempt })) = read_message::<_, Hello>(&mut reader).await else {
                tracing::warn!(%peer, "data connection without a valid hello");
                return;
            };
            // The peer may be faster than our own deployment of the attempt: wait for it briefly.
            let mut wiring = None;
            for _ in 0..200 {
                wiring = wirings.lock().expect("wirings lock").get(&attempt).cloned();
                if wiring.is_some() {
                    break;
                }
                rt::sleep(Duration::from_millis(25)).await;
            }
            let Some(wiring) = wiring else {
                tracing::warn!(%peer, from_worker, attempt, "data connection for an unknown attempt");
                return;
            };
            let stream = reader.unsplit(writer);
            serve_inbound(stream, wiring).await;
        });
    }
}

async fn serve_inbound(stream: TlsStream, wiring: Arc<crate::transport::AttemptWiring>) {
    let (sender, mut frames) = mpsc::unbounded_channel::<DataFrame>();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            if write_message(&mut writer, &frame).await.is_err() {
                break;
            }
        }
    });
    while let Ok(Some(frame)) = read_message::<_, DataFrame>(&mut reader).await {
        if let Err(error) = wiring.on_frame(frame, &sender) {
            tracing::warn!(%error, "dropping data connection");
            break;
        }
    }
    drop(sender);
    writer_task.abort();
}
