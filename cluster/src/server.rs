//! `weir coordinator`: accepts workers and clients over mutual TLS, places jobs on workers'
//! slots, runs each job's checkpoint coordinator, and restarts jobs from their latest complete
//! checkpoint when a worker is lost.
//!
//! Every connection is mutual TLS, and every peer's certificate carries a role: only a worker
//! may register, only a client may submit, list or cancel jobs; a refusal is logged with the
//! peer's address and certificate subject. Whatever a worker sends is checked against what it
//! runs (a worker speaks only for its own slots of its own attempts): a violation ends its
//! connection, and with it the attempts it took part in.
//!
//! Worker loss is detected by a closed connection or by missing heartbeats. The job's current
//! attempt is then cancelled everywhere and, after a backed-off delay, redeployed on the
//! workers that have free slots. The delay doubles with each restart in a row; an attempt that
//! made progress (read input and completed a checkpoint) starts the count (and the delay)
//! afresh: after `restarts_max` restarts in a row without progress (a crash loop) the job fails
//! with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use weir_core::checkpoint::{CheckpointError, CheckpointStore};
use weir_core::rt;
use weir_dataflow::metrics::SlotMetrics;

use crate::connection::Connection;
use crate::coordinator::{coordinate, CoordinatorConfig, JobError, SavepointRequest, STOPPED_RECORD};
use crate::deploy::{plan_restore, PlannedJob};
use crate::net::{Accepted, TlsListener, TlsStream};
use crate::protocol::{
    ClientRequest, ClientResponse, Deployment, Hello, JobOptions, JobState, JobStatus, Placement, ToCoordinator,
    ToWorker, SLOTS_PER_WORKER_MAX,
};
use crate::run::claim_output;
use crate::slot::{SlotEvent, SlotLink};
use crate::tls::{PeerIdentity, Role, TlsContext};
use crate::wire::{
    read_message, write_message, ReadLimits, CLIENT_FRAME_BYTES_MAX, FRAME_BYTES_MAX, HELLO_BYTES_MAX, HELLO_TIMEOUT,
};

/// How the coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// Listen address for workers and clients.
    pub listen: String,
    /// TLS material.
    pub tls: TlsContext,
    /// Checkpoint storage root (jobs live in `<root>/<job-id>/`).
    pub checkpoint_dir: String,
    /// Where savepoints go unless a request names a directory.
    pub savepoint_dir: String,
    /// A worker silent for this long is lost.
    pub heartbeat_timeout: Duration,
    /// Restarts before a job fails.
    pub restarts_max: u32,
    /// First restart delay (doubles each time, at most 10 s).
    pub restart_backoff: Duration,
    /// The jobs this binary can run (workers must run the same binary).
    pub registry: Arc<weir_dataflow::JobRegistry>,
}

struct WorkerEntry {
    slots: usize,
    data_address: String,
    outbox: UnboundedSender<ToWorker>,
    /// (attempt, slots in use by it).
    busy: Option<(u64, usize)>,
}

struct AttemptRoute {
    job_id: String,
    last_checkpoint: Arc<std::sync::atomic::AtomicU64>,
    events: UnboundedSender<SlotEvent>,
    deployed: UnboundedSender<Result<u64, String>>,
    metrics: BTreeMap<usize, Arc<SlotMetrics>>,
    /// The slots each worker of the attempt runs: a worker may speak only for its own.
    slots_of: BTreeMap<u64, BTreeSet<usize>>,
}

impl AttemptRoute {
    fn has_worker(&self, worker_id: u64) -> bool {
        self.slots_of.contains_key(&worker_id)
    }
}

struct JobEntry {
    status: JobStatus,
    cancel: Arc<tokio::sync::Notify>,
    /// Savepoints asked for, to the job's current attempt (a closed channel once it ended).
    savepoints: UnboundedSender<SavepointRequest>,
}

impl JobEntry {
    /// A job's entry, with the receiving end of its savepoint requests.
    fn new(status: JobStatus) -> (Self, Arc<tokio::sync::Notify>, UnboundedReceiver<SavepointRequest>) {
        let cancel = Arc::new(tokio::sync::Notify::new());
        let (savepoints, requests) = mpsc::unbounded_channel();
        (JobEntry { status, cancel: cancel.clone(), savepoints }, cancel, requests)
    }
}

#[derive(Default)]
struct ClusterState {
    next_worker: u64,
    workers: BTreeMap<u64, WorkerEntry>,
    attempts: BTreeMap<u64, AttemptRoute>,
    jobs: BTreeMap<String, JobEntry>,
}

type Shared = Arc<Mutex<ClusterState>>;

/// How long a client connection may stay silent between requests.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long every worker of an attempt has to report its slots deployed.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the coordinator until the process is killed.
pub async fn run_coordinator(options: CoordinatorOptions) -> std::io::Result<()> {
    let mut listener = TlsListener::bind(&options.tls, &options.listen).await?;
    eprintln!("coordinator: listening on {} (mutual TLS)", listener.local_address());
    let state: Shared = Arc::new(Mutex::new(ClusterState::default()));
    let options = Arc::new(options);
    resume_jobs(&state, &options).await;
    loop {
        let accepted = listener.accept().await;
        tokio::spawn(serve_connection(accepted, state.clone(), options.clone()));
    }
}

/// Logs a refused peer: its address, its certificate's subject and the reason.
fn refuse(address: &str, peer: &PeerIdentity, reason: &str) {
    tracing::warn!(%address, subject = %peer.subject, "refused connection: {reason}");
    rt::trace(&format!("refused a peer: {reason}"));
}

async fn serve_connection(accepted: Accepted, state: Shared, options: Arc<CoordinatorOptions>) {
    let Accepted { stream, address, peer } = accepted;
    let (mut reader, mut writer) = tokio::io::split(stream);
    match read_message::<_, Hello>(&mut reader, ReadLimits::new(HELLO_BYTES_MAX, HELLO_TIMEOUT)).await {
        Ok(Some(Hello::Worker { slots, data_address })) => {
            let refusal = peer
                .require(Role::Worker, "register as a worker")
                .and_then(|()| validate_registration(slots, &data_address));
            if let Err(reason) = refusal {
                refuse(&address, &peer, &reason);
                let _ = write_message(&mut writer, &ToWorker::Refused { reason }).await;
                return;
            }
            serve_worker(reader.unsplit(writer), &address, slots, data_address, &state, &options).await;
        }
        Ok(Some(Hello::Client)) => {
            if let Err(reason) = peer.require(Role::Client, "submit, list or cancel jobs") {
                refuse(&address, &peer, &reason);
                let _ = write_message(&mut writer, &ClientResponse::Error(reason)).await;
                return;
            }
            let limits = ReadLimits::new(CLIENT_FRAME_BYTES_MAX, CLIENT_IDLE_TIMEOUT);
            while let Ok(Some(request)) = read_message::<_, ClientRequest>(&mut reader, limits).await {
                let response = on_client_request(&state, &options, request).await;
                if write_message(&mut writer, &response).await.is_err() {
                    break;
                }
            }
        }
        Ok(Some(Hello::Data { .. })) => refuse(&address, &peer, "a data connection: the coordinator has no data plane"),
        Ok(None) => tracing::debug!(%address, "connection closed before its hello"),
        Err(error) => refuse(&address, &peer, &format!("bad hello: {error}")),
    }
}

/// A worker's registration is refused unless it offers a sane number of slots at a
/// `host:port` data address.
fn validate_registration(slots: usize, data_address: &str) -> Result<(), String> {
    if slots == 0 || slots > SLOTS_PER_WORKER_MAX {
        return Err(format!("a worker offers 1..={SLOTS_PER_WORKER_MAX} slots, not {slots}"));
    }
    let port = data_address.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
    if data_address.len() > 256 || port.and_then(|port| port.parse::<u16>().ok()).is_none() {
        return Err(format!("data address {:?} is not host:port", data_address.chars().take(64).collect::<String>()));
    }
    Ok(())
}

async fn serve_worker(
    stream: TlsStream,
    address: &str,
    slots: usize,
    data_address: String,
    state: &Shared,
    options: &CoordinatorOptions,
) {
    let worker_id = {
        let mut state = state.lock().expect("state lock");
        state.next_worker += 1;
        state.next_worker
    };
    // Silence for the heartbeat timeout ends the connection: the worker is lost.
    let connection = Connection::spawn(stream, FRAME_BYTES_MAX, options.heartbeat_timeout, |_| {
        let state = state.clone();
        move |message: ToCoordinator| on_worker_message(&state, worker_id, message)
    });
    // Welcomed before it can be placed: nothing may precede the welcome on its connection.
    let welcome = ToWorker::Welcome {
        worker_id,
        heartbeat_timeout_ms: u64::try_from(options.heartbeat_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let _ = connection.outbox.send(welcome);
    let entry =
        WorkerEntry { slots, data_address: data_address.clone(), outbox: connection.outbox.clone(), busy: None };
    state.lock().expect("state lock").workers.insert(worker_id, entry);
    tracing::info!(worker_id, %address, slots, %data_address, "worker registered");
    eprintln!("coordinator: worker {worker_id} registered from {address} with {slots} slots");
    rt::trace(&format!("worker {worker_id} registered from {address} with {slots} slots"));
    let reason = connection.ended.wait().await;
    drop(connection);
    lose_worker(state, worker_id, &reason);
}

/// Handles a message from worker `worker_id`. An `Err` is a protocol violation (or a worker
/// declared lost still talking): it ends the connection, and with it the worker's attempts.
fn on_worker_message(state: &Shared, worker_id: u64, message: ToCoordinator) -> Result<(), String> {
    let state = state.lock().expect("state lock");
    let Some(worker) = state.workers.get(&worker_id) else {
        // Declared lost but still talking on its old connection: drop the connection so that
        // the worker registers afresh.
        return Err(format!("worker {worker_id} was declared lost; it must register again"));
    };
    let outbox = worker.outbox.clone();
    match message {
        ToCoordinator::Heartbeat { attempt, metrics } => {
            if let Some(route) = attempt.and_then(|a| state.attempts.get(&a)) {
                let own = route.slots_of.get(&worker_id);
                for (slot, snapshot) in metrics {
                    if let Some(slot_metrics) =
                        route.metrics.get(&slot).filter(|_| own.is_some_and(|s| s.contains(&slot)))
                    {
                        snapshot.store(slot_metrics);
                    }
                }
            }
        }
        ToCoordinator::Event { attempt, event } => {
            let Some(route) = state.attempts.get(&attempt) else { return Ok(()) };
            let own = route.slots_of.get(&worker_id);
            let slot = match &event {
                SlotEvent::Snapshot { slot, .. }
                | SlotEvent::SnapshotFailed { slot, .. }
                | SlotEvent::Failed { slot, .. }
                | SlotEvent::CommitFailed { slot, .. }
                | SlotEvent::InputDone { slot }
                | SlotEvent::Committed { slot, .. } => Some(*slot),
                SlotEvent::WorkerLost { .. } | SlotEvent::LinkFailed { .. } => None,
            };
            let violation = match slot {
                Some(slot) if own.is_some_and(|own| own.contains(&slot)) => None,
                Some(slot) => Some(format!(
                    "worker {worker_id} sent an event of slot {slot} of attempt {attempt}, which it does not run"
                )),
                None => Some(format!("worker {worker_id} sent a coordinator-only event for attempt {attempt}")),
            };
            if let Some(violation) = violation {
                weir_core::faultpoint::protocol_violation(&violation);
                let _ =
                    route.events.send(SlotEvent::LinkFailed { message: format!("protocol violation: {violation}") });
                return Err(violation);
            }
            let _ = route.events.send(event);
        }
        ToCoordinator::Deployed { attempt } => match state.attempts.get(&attempt) {
            Some(route) if route.has_worker(worker_id) => {
                let _ = route.deployed.send(Ok(worker_id));
            }
            // An attempt given up (or never this worker's, e.g. a deployment that arrived
            // late): whatever started must stop.
            _ => {
                let _ = outbox.send(ToWorker::Cancel { attempt });
            }
        },
        ToCoordinator::DeployFailed { attempt, message } => {
            if let Some(route) = state.attempts.get(&attempt).filter(|route| route.has_worker(worker_id)) {
                let _ = route.deployed.send(Err(format!("worker {worker_id}: {message}")));
            }
        }
        ToCoordinator::LinkFailed { attempt, message } => {
            if let Some(route) = state.attempts.get(&attempt).filter(|route| route.has_worker(worker_id)) {
                let _ = route.events.send(SlotEvent::LinkFailed { message: format!("worker {worker_id}: {message}") });
            }
        }
    }
    Ok(())
}

/// Forgets a worker and fails every attempt that used it.
fn lose_worker(state: &Shared, worker_id: u64, reason: &str) {
    let mut state = state.lock().expect("state lock");
    if state.workers.remove(&worker_id).is_none() {
        return;
    }
    eprintln!("coordinator: worker {worker_id} lost ({reason})");
    rt::trace(&format!("worker {worker_id} lost ({reason})"));
    for route in state.attempts.values() {
        if route.has_worker(worker_id) {
            let _ = route.events.send(SlotEvent::WorkerLost { message: format!("worker {worker_id} lost: {reason}") });
            let _ = route.deployed.send(Err(format!("worker {worker_id} lost: {reason}")));
        }
    }
}

/// What a coordinator stores about a job so that a restarted coordinator can resume it.
#[derive(serde::Serialize, serde::Deserialize)]
struct JobRecord {
    spec: weir_core::job::JobSpec,
    options: JobOptions,
}

/// The job record holding the job's spec and options, written at submission.
pub(crate) const JOB_RECORD: &str = "_job.json";
const CANCELLED_MARKER: &str = "_cancelled";
/// Written once every slot committed the final checkpoint's output. A final checkpoint alone
/// does not mean the job is done: its output may still be staged (the coordinator or a worker
/// died before the commits, or a commit failed), and only a recovery attempt commits it.
const FINISHED_MARKER: &str = "_finished";

/// Finds the jobs in the checkpoint store and resumes those that neither finished nor were
/// cancelled: they wait for workers, then restart from their latest complete checkpoint.
/// Storage errors are transient: the scan is retried (with backoff) until it completes, so that
/// a coordinator restarted while its store misbehaves does not forget a job.
async fn resume_jobs(state: &Shared, options: &Arc<CoordinatorOptions>) {
    let mut backoff = Duration::from_millis(100);
    while let Err(error) = try_resume_jobs(state, options).await {
        eprintln!("coordinator: warning: cannot read the jobs to resume ({error}); retrying in {backoff:?}");
        rt::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn try_resume_jobs(state: &Shared, options: &Arc<CoordinatorOptions>) -> Result<(), CheckpointError> {
    let jobs = CheckpointStore::list_jobs(&options.checkpoint_dir).await?;
    for job_id in jobs {
        if state.lock().expect("state lock").jobs.contains_key(&job_id) {
            continue; // resumed by an earlier pass
        }
        let store = CheckpointStore::open(&options.checkpoint_dir, &job_id)?;
        let (status, to_run) = match read_stored_job(&store, &job_id).await {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            // A damaged record will not heal: the job is listed as failed, with the reason, and
            // the scan goes on to the other jobs. Transient errors make the scan retry.
            Err(error) if error.is_permanent() => {
                eprintln!("coordinator: job {job_id} failed: {error}");
                let status =
                    JobStatus { message: Some(error.to_string()), ..JobStatus::new(&job_id, JobState::Failed, 0) };
                state.lock().expect("state lock").jobs.insert(job_id, JobEntry::new(status).0);
                continue;
            }
            Err(error) => return Err(error),
        };
        let (entry, cancel, requests) = JobEntry::new(status);
        state.lock().expect("state lock").jobs.insert(job_id.clone(), entry);
        if let Some(record) = to_run {
            match PlannedJob::new(&options.registry, record.spec) {
                Ok(job) => {
                    eprintln!("coordinator: resuming job {job_id} from its checkpoints");
                    tokio::spawn(run_job(
                        state.clone(),
                        options.clone(),
                        Arc::new(job),
                        record.options,
                        job_id,
                        cancel,
                        requests,
                    ));
                }
                Err(error) => {
                    eprintln!("coordinator: job {job_id} cannot resume: {error}");
                    set_status(state, &job_id, |s| (s.state, s.message) = (JobState::Failed, Some(error)));
                }
            }
        }
    }
    Ok(())
}

/// A job found in the checkpoint store (`None`: no job record): its status, and its record
/// when it still has to run. A finished or cancelled job stays so whatever happened to its
/// records since (they are read for the status only); a job that has to run needs them intact.
async fn read_stored_job(
    store: &CheckpointStore,
    job_id: &str,
) -> Result<Option<(JobStatus, Option<JobRecord>)>, CheckpointError> {
    // Read once: whether there is a job at all, and what it is (if it still has to run).
    let record = match store.get_job_record(JOB_RECORD).await {
        Ok(None) => return Ok(None),
        Ok(Some(bytes)) => {
            serde_json::from_slice::<JobRecord>(&bytes).map_err(|error| CheckpointError::CorruptRecord {
                path: store.record_path(JOB_RECORD),
                reason: format!("not a job record: {error}"),
            })
        }
        Err(error) => Err(error),
    };
    // `(message, savepoint)` of a job stopped with a savepoint.
    let stopped = match store.get_job_record(STOPPED_RECORD).await {
        Ok(stopped) => stopped.map(|path| {
            let path = String::from_utf8_lossy(&path).into_owned();
            (JobStatus::stopped_with(&path), Some(path))
        }),
        Err(error) if error.is_permanent() => {
            Some((format!("stopped with a savepoint whose path is unreadable: {error}"), None))
        }
        Err(error) => return Err(error),
    };
    let state = if store.has_job_record(CANCELLED_MARKER).await? {
        JobState::Cancelled
    } else if stopped.is_some() {
        JobState::Stopped
    } else if store.has_job_record(FINISHED_MARKER).await? {
        // Written only after every slot committed the final checkpoint.
        JobState::Finished
    } else {
        JobState::Scheduled
    };
    let to_run = state == JobState::Scheduled;
    // A permanent error (a damaged record) matters only for a job that has to run.
    fn tolerated<T>(to_run: bool, error: CheckpointError) -> Result<Option<T>, CheckpointError> {
        if to_run || !error.is_permanent() {
            Err(error)
        } else {
            Ok(None)
        }
    }
    let record = match record {
        Ok(record) => Some(record),
        Err(error) => tolerated(to_run, error)?,
    };
    let latest = match store.restore_point().await {
        Ok((latest, _)) => latest.map(|c| c.metadata.checkpoint_id),
        Err(error) => tolerated(to_run, error)?,
    };
    let (message, savepoint) = stopped.unzip();
    let status = JobStatus {
        last_checkpoint: latest,
        message,
        savepoint: savepoint.flatten(),
        ..JobStatus::new(job_id, state, record.as_ref().map_or(0, |record| record.spec.parallelism))
    };
    Ok(Some((status, record.filter(|_| to_run))))
}

async fn on_client_request(
    state: &Shared,
    options: &Arc<CoordinatorOptions>,
    request: ClientRequest,
) -> ClientResponse {
    match request {
        ClientRequest::Submit { spec, options: job_options } => submit(state, options, spec, job_options).await,
        ClientRequest::List => {
            let state = state.lock().expect("state lock");
            ClientResponse::Jobs(state.jobs.values().map(|job| live_status(&state, job)).collect())
        }
        ClientRequest::Status { job_id } => {
            let state = state.lock().expect("state lock");
            match state.jobs.get(&job_id) {
                Some(job) => ClientResponse::Status(live_status(&state, job)),
                None => ClientResponse::Error(format!("no job {job_id}; `weir job list` shows the jobs")),
            }
        }
        ClientRequest::Cancel { job_id } => {
            let state = state.lock().expect("state lock");
            match state.jobs.get(&job_id) {
                Some(job)
                    if matches!(job.status.state, JobState::Scheduled | JobState::Running | JobState::Restarting) =>
                {
                    job.cancel.notify_one();
                    ClientResponse::Cancelled { job_id }
                }
                Some(job) => ClientResponse::Error(format!("job {job_id} is already {:?}", job.status.state)),
                None => ClientResponse::Error(format!("no job {job_id}")),
            }
        }
        ClientRequest::Savepoint { job_id, dir, stop } => savepoint(state, options, job_id, dir, stop).await,
    }
}

/// Asks job `job_id`'s current attempt for a savepoint (and to stop after it) and waits for it.
async fn savepoint(
    state: &Shared,
    options: &CoordinatorOptions,
    job_id: String,
    dir: Option<String>,
    stop: bool,
) -> ClientResponse {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let dir = dir.unwrap_or_else(|| options.savepoint_dir.clone());
    // A location that cannot be used is the client's error, before the job does anything.
    if let Err(error) = CheckpointStore::open(&dir, "_savepoint-probe") {
        return ClientResponse::Error(format!("job {job_id}: no savepoint: {error}"));
    }
    {
        let state = state.lock().expect("state lock");
        let Some(job) = state.jobs.get(&job_id) else {
            return ClientResponse::Error(format!("no job {job_id}; `weir job list` shows the jobs"));
        };
        if job.status.state != JobState::Running {
            return ClientResponse::Error(format!(
                "job {job_id} is {:?}: a savepoint is taken of a running job; ask again once `weir job status {job_id}` shows Running",
                job.status.state
            ));
        }
        if job.savepoints.send(SavepointRequest { dir, stop, reply }).is_err() {
            return ClientResponse::Error(format!("job {job_id} has ended"));
        }
    }
    match answer.await {
        Ok(Ok(path)) => ClientResponse::Savepoint { job_id, path },
        Ok(Err(reason)) => ClientResponse::Error(format!("job {job_id}: no savepoint: {reason}")),
        Err(_) => ClientResponse::Error(format!(
            "job {job_id}: no savepoint: the attempt that was taking it ended (the job failed, restarted or was cancelled); ask again once it runs"
        )),
    }
}

/// Submits a job. The job is reserved in the coordinator's table under the same lock as the
/// check that it is not running already, before anything awaits: two identical submissions
/// at the same moment make one job (the other is told it runs), never two attempts writing
/// the same checkpoints and part files.
async fn submit(
    state: &Shared,
    options: &Arc<CoordinatorOptions>,
    spec: weir_core::job::JobSpec,
    job_options: JobOptions,
) -> ClientResponse {
    // Planning checks everything a job can be wrong in before it is recorded: the job exists
    // in this binary, its parameters are well-formed, its sources and graph are valid.
    let job = match PlannedJob::new(&options.registry, spec) {
        Ok(job) => Arc::new(job),
        Err(error) => return ClientResponse::Error(error),
    };
    let spec = job.spec.clone();
    if let Err(error) = job_options.validate() {
        return ClientResponse::Error(error);
    }
    let job_id = spec.fingerprint();
    // A savepoint to start from is read (and verified) now: a wrong path is the client's error.
    // So is whether the job can start from it (its operators, its splits): planned now, as
    // every attempt will.
    let taking_over = match &job_options.from_savepoint {
        Some(path) => match weir_core::savepoint::read_savepoint(path).await {
            Ok(savepoint) => match plan_restore(Some(&savepoint), &job, job_options.allow_non_restored_state) {
                Ok(_) => Some(savepoint.metadata.job_id),
                Err(error) => return ClientResponse::Error(format!("savepoint {path}: {error}")),
            },
            Err(error) => return ClientResponse::Error(error.to_string()),
        },
        None => None,
    };
    let (entry, cancel, requests) = JobEntry::new(JobStatus::new(&job_id, JobState::Scheduled, spec.parallelism));
    let previous = {
        let mut state = state.lock().expect("state lock");
        let running = |id: &str| {
            state.jobs.get(id).is_some_and(|job| {
                matches!(job.status.state, JobState::Scheduled | JobState::Running | JobState::Restarting)
            })
        };
        if running(&job_id) {
            return ClientResponse::Error(format!("job {job_id} is already running"));
        }
        // Its output would be taken over while it still commits there.
        if let Some(origin) = taking_over.as_deref().filter(|origin| *origin != job_id && running(origin)) {
            return ClientResponse::Error(format!(
                "job {origin}, whose savepoint this job starts from, is still running and writes the output this job would take over; stop it (`weir job stop {origin} --savepoint`) or cancel it first"
            ));
        }
        state.jobs.insert(job_id.clone(), entry)
    };
    if let Err(message) = record_submission(options, &job, &job_options, &job_id, taking_over.as_deref()).await {
        // Not submitted after all: the table shows what it showed before.
        let mut state = state.lock().expect("state lock");
        match previous {
            Some(previous) => state.jobs.insert(job_id, previous),
            None => state.jobs.remove(&job_id),
        };
        return ClientResponse::Error(message);
    }
    rt::trace(&format!("job {job_id} submitted"));
    tokio::spawn(run_job(state.clone(), options.clone(), job, job_options, job_id.clone(), cancel, requests));
    ClientResponse::Submitted { job_id }
}

/// Claims the job's output (taking it over from the job a savepoint to start from belongs to)
/// and records the job in the checkpoint store, so that a restarted coordinator resumes it —
/// even if it was cancelled or stopped before: this submission clears that.
async fn record_submission(
    options: &CoordinatorOptions,
    job: &PlannedJob,
    job_options: &JobOptions,
    job_id: &str,
    taking_over: Option<&str>,
) -> Result<(), String> {
    claim_output(job, job_id, taking_over).map_err(|error| error.to_string())?;
    let record = JobRecord { spec: (*job.spec).clone(), options: job_options.clone() };
    let recorded = async {
        let store = CheckpointStore::open(&options.checkpoint_dir, job_id)?;
        store.put_job_record(JOB_RECORD, serde_json::to_vec_pretty(&record).expect("json")).await?;
        store.delete_job_record(STOPPED_RECORD).await?;
        if job_options.from_savepoint.is_some() {
            // Every submission from a savepoint starts from it (`deploy::restore_point`).
            store.delete_job_record(crate::deploy::SAVEPOINT_RECORD).await?;
        }
        store.delete_job_record(CANCELLED_MARKER).await
    };
    recorded.await.map_err(|error| format!("cannot record the job in the checkpoint store: {error}"))
}

/// A job's status with live counters from its current attempt.
fn live_status(state: &ClusterState, job: &JobEntry) -> JobStatus {
    let mut status = job.status.clone();
    if let Some(route) = state.attempts.values().find(|r| r.job_id == status.job_id) {
        let last = route.last_checkpoint.load(std::sync::atomic::Ordering::Relaxed);
        if last > 0 {
            status.last_checkpoint = Some(last);
        }
        status.records_read = route.metrics.values().map(|m| SlotMetrics::get(&m.records_read)).sum();
        status.watermark = route.metrics.values().map(|m| m.watermark.load(std::sync::atomic::Ordering::Relaxed)).min();
    }
    status
}

fn set_status(state: &Shared, job_id: &str, update: impl FnOnce(&mut JobStatus)) {
    if let Some(job) = state.lock().expect("state lock").jobs.get_mut(job_id) {
        update(&mut job.status);
    }
}

async fn run_job(
    state: Shared,
    options: Arc<CoordinatorOptions>,
    job: Arc<PlannedJob>,
    job_options: JobOptions,
    job_id: String,
    cancel: Arc<tokio::sync::Notify>,
    mut savepoints: UnboundedReceiver<SavepointRequest>,
) {
    let mut restarts = RestartPolicy::new(options.restart_backoff, options.restarts_max);
    let store = match CheckpointStore::open(&options.checkpoint_dir, &job_id) {
        Ok(store) => store,
        Err(error) => {
            return set_status(&state, &job_id, |s| (s.state, s.message) = (JobState::Failed, Some(error.to_string())))
        }
    };
    loop {
        // Set when the attempt makes progress (reads input and completes a checkpoint).
        let mut progressed = false;
        let outcome = tokio::select! {
            biased;
            _ = cancel.notified() => Err(AttemptEnd::Cancelled),
            outcome = run_attempt(&state, &options, &job, &job_options, &job_id, &store, &mut progressed, &mut savepoints) => outcome,
        };
        // Whatever happened, the attempt's slots must stop everywhere before anything else runs.
        cancel_attempts_of(&state, &job_id);
        match outcome {
            Ok(AttemptEnded::Stopped { savepoint }) => {
                // `_stopped` was recorded before the stop was reported.
                eprintln!("coordinator: job {job_id} stopped with savepoint {savepoint}");
                rt::trace(&format!("job {job_id} stopped with savepoint {savepoint}"));
                return set_status(&state, &job_id, |s| {
                    s.message = Some(JobStatus::stopped_with(&savepoint));
                    (s.state, s.savepoint) = (JobState::Stopped, Some(savepoint));
                });
            }
            Ok(AttemptEnded::Finished { last_checkpoint }) => {
                if let Err(error) = store.put_job_record(FINISHED_MARKER, Vec::new()).await {
                    // Harmless: a restarted coordinator runs one more (empty) recovery attempt.
                    eprintln!("coordinator: warning: job {job_id}: cannot record that it finished: {error}");
                }
                eprintln!("coordinator: job {job_id} finished");
                rt::trace(&format!("job {job_id} finished"));
                return set_status(&state, &job_id, |s| {
                    s.state = JobState::Finished;
                    s.last_checkpoint = last_checkpoint.or(s.last_checkpoint);
                });
            }
            Err(AttemptEnd::Cancelled) => {
                eprintln!("coordinator: job {job_id} cancelled");
                if let Err(error) = store.put_job_record(CANCELLED_MARKER, Vec::new()).await {
                    eprintln!("coordinator: warning: job {job_id}: cannot record the cancellation: {error}");
                }
                return set_status(&state, &job_id, |s| s.state = JobState::Cancelled);
            }
            Err(AttemptEnd::Fatal(message)) => {
                eprintln!("coordinator: job {job_id} failed: {message}");
                return set_status(&state, &job_id, |s| (s.state, s.message) = (JobState::Failed, Some(message)));
            }
            Err(AttemptEnd::Retry(message)) => {
                let Some(backoff) = restarts.next(progressed) else {
                    let message = format!(
                        "{} restarts in a row without progress (no checkpoint completed after reading input); last failure: {message}",
                        options.restarts_max
                    );
                    eprintln!("coordinator: job {job_id} failed: {message}");
                    return set_status(&state, &job_id, |s| (s.state, s.message) = (JobState::Failed, Some(message)));
                };
                let restarts = restarts.total;
                eprintln!("coordinator: job {job_id} restarting in {backoff:?} (restart {restarts}): {message}");
                rt::trace(&format!("job {job_id} restarting (restart {restarts}): {message}"));
                set_status(&state, &job_id, |s| {
                    (s.state, s.message, s.restarts) = (JobState::Restarting, Some(message), restarts)
                });
                tokio::select! {
                    biased;
                    _ = cancel.notified() => {
                        if let Err(error) = store.put_job_record(CANCELLED_MARKER, Vec::new()).await {
                            eprintln!("coordinator: warning: job {job_id}: cannot record the cancellation: {error}");
                        }
                        return set_status(&state, &job_id, |s| s.state = JobState::Cancelled);
                    }
                    _ = rt::sleep(backoff) => {}
                }
            }
        }
    }
}

/// When a failed attempt is retried: after a delay that doubles with each restart in a row (up
/// to [`RestartPolicy::MAX_BACKOFF`]), until `max_in_a_row` restarts in a row have failed. An
/// attempt that made progress (read input and completed a checkpoint) starts the count and the
/// delay afresh: a long-running job survives any number of failures spread over its life,
/// while a crash loop fails with its reason.
#[derive(Debug)]
struct RestartPolicy {
    initial_backoff: Duration,
    max_in_a_row: u32,
    backoff: Duration,
    in_a_row: u32,
    /// Every restart so far (shown in the job's status).
    total: u32,
}

impl RestartPolicy {
    const MAX_BACKOFF: Duration = Duration::from_secs(10);

    fn new(initial_backoff: Duration, max_in_a_row: u32) -> Self {
        RestartPolicy { initial_backoff, max_in_a_row, backoff: initial_backoff, in_a_row: 0, total: 0 }
    }

    /// An attempt failed (`progressed`: after reading input and completing a checkpoint). The delay before the
    /// restart, or `None` when the job should fail.
    fn next(&mut self, progressed: bool) -> Option<Duration> {
        if progressed {
            (self.in_a_row, self.backoff) = (0, self.initial_backoff);
        }
        if self.in_a_row == self.max_in_a_row {
            return None;
        }
        self.in_a_row += 1;
        self.total += 1;
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(Self::MAX_BACKOFF);
        Some(delay)
    }
}

impl AttemptEnd {
    /// A storage failure ends the attempt: retried if transient, fatal if permanent (a damaged
    /// job record).
    fn from_storage(error: CheckpointError) -> Self {
        if error.is_permanent() {
            AttemptEnd::Fatal(error.to_string())
        } else {
            AttemptEnd::Retry(error.to_string())
        }
    }
}

enum AttemptEnd {
    Cancelled,
    Retry(String),
    Fatal(String),
}

fn cancel_attempts_of(state: &Shared, job_id: &str) {
    let mut state = state.lock().expect("state lock");
    let attempts: Vec<u64> = state.attempts.iter().filter(|(_, r)| r.job_id == job_id).map(|(a, _)| *a).collect();
    // Keep the attempt's last counters in the job's status.
    if let Some(job) = state.jobs.get(job_id) {
        let live = live_status(&state, job);
        state.jobs.get_mut(job_id).expect("present").status = live;
    }
    for attempt in attempts {
        let route = state.attempts.remove(&attempt).expect("present");
        for worker_id in route.slots_of.keys() {
            if let Some(worker) = state.workers.get_mut(worker_id) {
                let _ = worker.outbox.send(ToWorker::Cancel { attempt });
                if worker.busy.map(|(a, _)| a) == Some(attempt) {
                    worker.busy = None;
                }
            }
        }
    }
}

/// How an attempt ended well.
enum AttemptEnded {
    /// The job finished, with its last checkpoint.
    Finished { last_checkpoint: Option<u64> },
    /// The job stopped with a savepoint.
    Stopped { savepoint: String },
}

/// Places, deploys and coordinates one attempt, which takes the savepoints asked for on
/// `savepoints`.
#[allow(clippy::too_many_arguments)]
async fn run_attempt(
    state: &Shared,
    options: &CoordinatorOptions,
    job: &PlannedJob,
    job_options: &JobOptions,
    job_id: &str,
    store: &CheckpointStore,
    progressed: &mut bool,
    savepoints: &mut UnboundedReceiver<SavepointRequest>,
) -> Result<AttemptEnded, AttemptEnd> {
    let spec = &job.spec;
    let parallelism = spec.parallelism;
    // Corrupt newer checkpoints are deleted, so that one can never be restored after the output
    // it covered was rolled back.
    let generation = crate::deploy::next_generation(store).await.map_err(AttemptEnd::from_storage)?;
    let from_savepoint = job_options.from_savepoint.as_deref().map(crate::deploy::StartingSavepoint::at);
    let (restored, skipped) =
        crate::deploy::restore_point(store, generation, from_savepoint).await.map_err(AttemptEnd::from_storage)?;
    weir_core::faultpoint::reached(weir_core::faultpoint::Moment::Restored).await;
    for error in skipped {
        eprintln!("coordinator: warning: {error}; falling back to an older checkpoint");
    }
    let plan = plan_restore(restored.as_ref(), job, job_options.allow_non_restored_state)
        .map_err(|e| AttemptEnd::Fatal(e.to_string()))?;
    if plan.finished {
        match store.get_job_record(FINISHED_MARKER).await {
            Ok(Some(_)) => return Ok(AttemptEnded::Finished { last_checkpoint: Some(plan.epoch) }),
            Ok(None) => eprintln!(
                "coordinator: job {job_id}: final checkpoint {} is complete; deploying to commit its output",
                plan.epoch
            ),
            Err(error) => return Err(AttemptEnd::from_storage(error)),
        }
    }
    let last_checkpoint = Arc::new(std::sync::atomic::AtomicU64::new(plan.epoch));
    // Wait for enough free slots (workers may be restarting).
    let (attempt, placement, events_rx, mut deployed_rx, metrics) = loop {
        let placed = {
            let mut state = state.lock().expect("state lock");
            let mut placement: Vec<(u64, String)> = Vec::new();
            let free: Vec<(u64, usize, String)> = state
                .workers
                .iter()
                .filter(|(_, w)| w.busy.is_none())
                .map(|(id, w)| (*id, w.slots, w.data_address.clone()))
                .collect();
            for (id, slots, address) in free {
                for _ in 0..slots {
                    if placement.len() < parallelism {
                        placement.push((id, address.clone()));
                    }
                }
            }
            if placement.len() == parallelism {
                // Unique across coordinator restarts: workers key data connections by it.
                let attempt = rt::attempt_token();
                let (events_tx, events_rx) = mpsc::unbounded_channel();
                let (deployed_tx, deployed_rx) = mpsc::unbounded_channel();
                let metrics: BTreeMap<usize, Arc<SlotMetrics>> =
                    (0..parallelism).map(|slot| (slot, Arc::new(SlotMetrics::default()))).collect();
                let mut slots_of: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
                for (slot, (worker_id, _)) in placement.iter().enumerate() {
                    slots_of.entry(*worker_id).or_default().insert(slot);
                }
                for (id, slots) in &slots_of {
                    state.workers.get_mut(id).expect("worker").busy = Some((attempt, slots.len()));
                }
                let route = AttemptRoute {
                    job_id: job_id.to_string(),
                    last_checkpoint: last_checkpoint.clone(),
                    events: events_tx,
                    deployed: deployed_tx,
                    metrics: metrics.clone(),
                    slots_of,
                };
                state.attempts.insert(attempt, route);
                Some((attempt, placement, events_rx, deployed_rx, metrics))
            } else {
                None
            }
        };
        match placed {
            Some(placed) => break placed,
            None => rt::sleep(Duration::from_millis(100)).await,
        }
    };
    set_status(state, job_id, |s| s.state = JobState::Running);
    let placements: Vec<Placement> = placement
        .iter()
        .map(|(worker_id, data_address)| Placement { worker_id: *worker_id, data_address: data_address.clone() })
        .collect();
    let workers: Vec<u64> = {
        let mut w: Vec<u64> = placement.iter().map(|(id, _)| *id).collect();
        w.dedup();
        w
    };
    let start_epoch = plan.start_epoch();
    let attempt_token = rt::attempt_token();
    for worker_id in &workers {
        let slots = (0..parallelism)
            .filter(|&slot| placement[slot].0 == *worker_id)
            .map(|slot| (slot, plan.slots[slot].encode(slot, plan.epoch)))
            .collect();
        let deployment = Deployment {
            attempt,
            job_id: job_id.to_string(),
            spec: (**spec).clone(),
            start_epoch,
            restored_epoch: plan.epoch,
            restored_attempt: plan.attempt,
            restored_parallelism: plan.restored_parallelism,
            checkpoint_dir: options.checkpoint_dir.clone(),
            attempt_token,
            generation,
            placement: placements.clone(),
            slots,
            exchange_credits: 16,
            rate_limit: job_options.rate_limit.map(|rate| (rate / parallelism as u64).max(1)),
        };
        let state = state.lock().expect("state lock");
        let worker =
            state.workers.get(worker_id).ok_or_else(|| AttemptEnd::Retry(format!("worker {worker_id} lost")))?;
        let _ = worker.outbox.send(ToWorker::Deploy(Box::new(deployment)));
    }
    let mut pending = workers.len();
    while pending > 0 {
        match rt::timeout(DEPLOY_TIMEOUT, deployed_rx.recv()).await {
            Ok(Some(Ok(_))) => pending -= 1,
            Ok(Some(Err(message))) => return Err(AttemptEnd::Retry(message)),
            Ok(None) | Err(_) => return Err(AttemptEnd::Retry("deployment timed out".into())),
        }
    }
    eprintln!(
        "coordinator: job {job_id} attempt {attempt} running on workers {workers:?} from checkpoint {}",
        plan.epoch
    );
    rt::trace(&format!("job {job_id} generation {generation} on workers {workers:?} from checkpoint {}", plan.epoch));
    let links: Vec<SlotLink> = (0..parallelism)
        .map(|slot| {
            let outbox = state.lock().expect("state lock").workers.get(&placement[slot].0).map(|w| w.outbox.clone());
            SlotLink::from_fn(move |command| {
                if let Some(outbox) = &outbox {
                    let _ = outbox.send(ToWorker::Command { attempt, slot, command });
                }
            })
        })
        .collect();
    let config = CoordinatorConfig {
        job_id: job_id.to_string(),
        parallelism,
        checkpoint_interval: job_options.checkpoint_interval_ms.map(Duration::from_millis),
        checkpoint_timeout: Duration::from_millis(job_options.checkpoint_timeout_ms),
        retained_checkpoints: job_options.retained_checkpoints,
        progress_interval: None,
        crash_at: None,
        attempt: attempt_token,
        generation,
        last_checkpoint: Some(last_checkpoint.clone()),
    };
    let metrics: Vec<Arc<SlotMetrics>> = metrics.into_values().collect();
    let outcome =
        coordinate(config, store.clone(), links, events_rx, metrics.clone(), start_epoch, Some(savepoints)).await;
    // Whether the attempt made progress — completed a checkpoint, having read input — decides
    // how its failure counts. (Checkpoints alone also complete while the input stands still.)
    let reached = last_checkpoint.load(std::sync::atomic::Ordering::Relaxed);
    if reached > plan.epoch {
        set_status(state, job_id, |s| s.last_checkpoint = Some(reached));
        *progressed = metrics.iter().any(|m| SlotMetrics::get(&m.records_read) > 0);
    }
    match outcome {
        Ok(outcome) => {
            set_status(state, job_id, |s| s.last_checkpoint = outcome.last_checkpoint);
            Ok(match outcome.stopped_with_savepoint {
                Some(savepoint) => AttemptEnded::Stopped { savepoint },
                None => AttemptEnded::Finished { last_checkpoint: outcome.last_checkpoint },
            })
        }
        Err(JobError::WorkerLost(message) | JobError::LinkFailed(message)) => Err(AttemptEnd::Retry(message)),
        Err(JobError::SlotFailed { message, slot }) => Err(AttemptEnd::Fatal(format!("slot {slot}: {message}"))),
        Err(other) => Err(AttemptEnd::Retry(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_that_could_not_be_served_are_refused() {
        assert!(validate_registration(2, "10.0.0.2:7500").is_ok());
        assert!(validate_registration(0, "10.0.0.2:7500").unwrap_err().contains("1..=128"));
        assert!(validate_registration(usize::MAX, "10.0.0.2:7500").is_err(), "never a loop over usize::MAX slots");
        assert!(validate_registration(1, "nowhere").is_err());
        assert!(validate_registration(1, ":80").is_err());
        assert!(validate_registration(1, &"x".repeat(300)).is_err());
    }

    #[test]
    fn restart_delays_double_and_a_crash_loop_fails() {
        let mut policy = RestartPolicy::new(Duration::from_millis(500), 5);
        let delays: Vec<_> = (0..5).map(|_| policy.next(false).expect("within the limit").as_millis()).collect();
        assert_eq!(delays, [500, 1_000, 2_000, 4_000, 8_000]);
        assert_eq!(policy.next(false), None, "the sixth failure in a row fails the job");
        assert_eq!(policy.total, 5);
    }

    #[test]
    fn progress_resets_the_count_and_the_delay() {
        let mut policy = RestartPolicy::new(Duration::from_millis(200), 2);
        for _ in 0..20 {
            // Each attempt completes a checkpoint and then fails: never a crash loop.
            assert_eq!(policy.next(true), Some(Duration::from_millis(200)));
        }
        assert_eq!(policy.next(false), Some(Duration::from_millis(400)));
        assert_eq!(policy.next(false), None);
        assert_eq!(policy.total, 21);
        let mut capped = RestartPolicy::new(Duration::from_secs(4), 10);
        let delays: Vec<_> = (0..4).map(|_| capped.next(false).unwrap().as_secs()).collect();
        assert_eq!(delays, [4, 8, 10, 10], "the delay is capped");
    }
}
