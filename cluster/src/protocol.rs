//! The messages of the cluster: control RPC between coordinator and workers, the client API,
//! and the data-plane frames between workers. All travel as [`crate::wire`] frames over
//! mutual TLS.

use serde::{Deserialize, Serialize};

use weir_core::job::JobSpec;
use weir_core::time::Epoch;
use weir_dataflow::exchange::ExchangeMessage;
use weir_dataflow::metrics::SlotMetrics;

use crate::slot::{SlotCommand, SlotEvent};

/// The most slots one worker may offer.
pub const SLOTS_PER_WORKER_MAX: usize = 128;

/// The first message on every connection: who is calling.
#[derive(Debug, Serialize, Deserialize)]
pub enum Hello {
    /// A worker registering with the coordinator.
    Worker {
        /// Slots it offers (at most [`SLOTS_PER_WORKER_MAX`]).
        slots: usize,
        /// Where its data-plane listener accepts other workers.
        data_address: String,
    },
    /// A command-line client.
    Client,
    /// A worker opening a data connection to another worker for one deployment attempt.
    Data {
        /// The sending worker.
        from_worker: u64,
        /// The attempt.
        attempt: u64,
    },
}

/// Where a slot runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Placement {
    /// The worker.
    pub worker_id: u64,
    /// Its data-plane address.
    pub data_address: String,
}

/// One attempt of running a job: which slots run where, from which state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    /// Attempt number (unique in the coordinator's lifetime).
    pub attempt: u64,
    /// The job.
    pub job_id: String,
    /// Its spec.
    pub spec: JobSpec,
    /// The first epoch.
    pub start_epoch: Epoch,
    /// The restored checkpoint (0 for none).
    pub restored_epoch: Epoch,
    /// The attempt that took the restored checkpoint.
    pub restored_attempt: u64,
    /// The parallelism that took the restored checkpoint (0 for none): its slots' output is
    /// recovered ([`crate::deploy::slots_recovered_by`]).
    pub restored_parallelism: usize,
    /// The checkpoint storage root: slots upload their state files to `<root>/<job-id>/` (it
    /// must be reachable from every worker, as Flink's checkpoint directory must).
    pub checkpoint_dir: String,
    /// This attempt's fencing token (staged output and state files are named by it).
    pub attempt_token: u64,
    /// The job's deployment generation (fences the output directory against stale deployments).
    pub generation: u64,
    /// Where every slot runs (index = slot).
    pub placement: Vec<Placement>,
    /// The slots of the receiving worker, each with its encoded restored snapshot.
    pub slots: Vec<(usize, Vec<u8>)>,
    /// Exchange credit per channel, in batches.
    pub exchange_credits: usize,
    /// Source throttle per slot, records per second.
    pub rate_limit: Option<u64>,
}

/// Coordinator → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Registration accepted.
    Welcome {
        /// The id assigned.
        worker_id: u64,
        /// The coordinator's heartbeat timeout: the worker sends a heartbeat every quarter of
        /// it, and gives up on a coordinator (or a data connection) silent for this long.
        heartbeat_timeout_ms: u64,
    },
    /// Registration refused (the reason says why and how to fix it); the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
    /// Start slots for an attempt.
    Deploy(Box<Deployment>),
    /// A command for one slot of an attempt.
    Command {
        /// The attempt.
        attempt: u64,
        /// The slot.
        slot: usize,
        /// The command.
        command: SlotCommand,
    },
    /// Stop every slot of an attempt.
    Cancel {
        /// The attempt.
        attempt: u64,
    },
}

/// Counters of one slot, as reported in heartbeats.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// See [`SlotMetrics`].
    pub records_read: u64,
    /// See [`SlotMetrics`].
    pub records_on_time: u64,
    /// See [`SlotMetrics`].
    pub records_late: u64,
    /// See [`SlotMetrics`].
    pub records_bad: u64,
    /// See [`SlotMetrics`].
    pub rows_emitted: u64,
    /// See [`SlotMetrics`].
    pub watermark: i64,
    /// See [`SlotMetrics`].
    pub splits_finished: u64,
    /// See [`SlotMetrics`].
    #[serde(default)]
    pub watermark_lead_max_ms: i64,
}

impl MetricsSnapshot {
    /// Reads `metrics`.
    pub fn of(metrics: &SlotMetrics) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        MetricsSnapshot {
            records_read: metrics.records_read.load(Relaxed),
            records_on_time: metrics.records_on_time.load(Relaxed),
            records_late: metrics.records_late.load(Relaxed),
            records_bad: metrics.records_bad.load(Relaxed),
            rows_emitted: metrics.rows_emitted.load(Relaxed),
            watermark: metrics.watermark.load(Relaxed),
            splits_finished: metrics.splits_finished.load(Relaxed),
            watermark_lead_max_ms: metrics.watermark_lead_max_ms.load(Relaxed),
        }
    }
    /// Writes into `metrics`.
    pub fn store(&self, metrics: &SlotMetrics) {
        use std::sync::atomic::Ordering::Relaxed;
        metrics.records_read.store(self.records_read, Relaxed);
        metrics.records_on_time.store(self.records_on_time, Relaxed);
        metrics.records_late.store(self.records_late, Relaxed);
        metrics.records_bad.store(self.records_bad, Relaxed);
        metrics.rows_emitted.store(self.rows_emitted, Relaxed);
        metrics.watermark.store(self.watermark, Relaxed);
        metrics.splits_finished.store(self.splits_finished, Relaxed);
        metrics.watermark_lead_max_ms.store(self.watermark_lead_max_ms, Relaxed);
    }
}

/// Worker → coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// Alive, with the counters of the current attempt's slots.
    Heartbeat {
        /// The attempt the counters belong to.
        attempt: Option<u64>,
        /// `(slot, counters)`.
        metrics: Vec<(usize, MetricsSnapshot)>,
    },
    /// An event of a slot.
    Event {
        /// The attempt.
        attempt: u64,
        /// The event.
        event: SlotEvent,
    },
    /// All slots of the attempt on this worker started.
    Deployed {
        /// The attempt.
        attempt: u64,
    },
    /// The attempt could not start here.
    DeployFailed {
        /// The attempt.
        attempt: u64,
        /// Why.
        message: String,
    },
    /// A data connection of the attempt between this worker and another failed (or the other
    /// broke the protocol on it): the attempt cannot go on.
    LinkFailed {
        /// The attempt.
        attempt: u64,
        /// Which workers and why.
        message: String,
    },
}

/// How to run a submitted job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobOptions {
    /// Checkpoint interval; `None` for only the final checkpoint.
    pub checkpoint_interval_ms: Option<u64>,
    /// A checkpoint not complete this long after its trigger is declined.
    pub checkpoint_timeout_ms: u64,
    /// Complete checkpoints to keep.
    pub retained_checkpoints: usize,
    /// Source throttle for the whole job, records per second.
    pub rate_limit: Option<u64>,
    /// Start from this savepoint (see [`crate::deploy::restore_point`]).
    #[serde(default)]
    pub from_savepoint: Option<String>,
    /// Drop restored state of operators the job no longer has, instead of refusing to start.
    #[serde(default)]
    pub allow_non_restored_state: bool,
}

impl JobOptions {
    /// Checks what a client sent (a peer is not trusted to have used Weir's own parser).
    pub fn validate(&self) -> Result<(), String> {
        if self.checkpoint_interval_ms == Some(0) {
            return Err("--checkpoint-interval must be more than zero (or `off`)".into());
        }
        if self.checkpoint_timeout_ms == 0 {
            return Err("--checkpoint-timeout must be more than zero".into());
        }
        if self.retained_checkpoints == 0 {
            return Err("--retained-checkpoints must be at least 1".into());
        }
        if self.rate_limit == Some(0) {
            return Err("--rate must be more than zero".into());
        }
        Ok(())
    }
}

/// Client → coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Run a job.
    Submit {
        /// The job.
        spec: JobSpec,
        /// How.
        options: JobOptions,
    },
    /// All jobs.
    List,
    /// One job.
    Status {
        /// The job.
        job_id: String,
    },
    /// Stop a job.
    Cancel {
        /// The job.
        job_id: String,
    },
    /// Take a savepoint of a running job; with `stop`, stop it after the savepoint (its output
    /// committed through the savepoint and nothing after it).
    Savepoint {
        /// The job.
        job_id: String,
        /// Where to write it (`None`: the coordinator's savepoint directory).
        dir: Option<String>,
        /// Stop the job after it.
        stop: bool,
    },
}

/// The lifecycle of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for enough free slots.
    Scheduled,
    /// Running.
    Running,
    /// A failure happened; restarting from the latest checkpoint.
    Restarting,
    /// All input processed and committed.
    Finished,
    /// Gave up.
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// Stopped with a savepoint by a client (its message names the savepoint).
    Stopped,
}

/// What `weir job status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub job_id: String,
    /// Its state.
    pub state: JobState,
    /// Slots.
    pub parallelism: usize,
    /// Minimum watermark over slots.
    pub watermark: Option<i64>,
    /// Last completed checkpoint.
    pub last_checkpoint: Option<Epoch>,
    /// Restarts so far.
    pub restarts: u32,
    /// Records read in the current attempt.
    pub records_read: u64,
    /// Why it failed or restarted last, or what it stopped with.
    pub message: Option<String>,
    /// The savepoint it stopped with (state `Stopped`).
    #[serde(default)]
    pub savepoint: Option<String>,
}

impl JobStatus {
    /// Job `job_id` in `state` at `parallelism`, with nothing measured yet.
    pub fn new(job_id: &str, state: JobState, parallelism: usize) -> Self {
        JobStatus {
            job_id: job_id.to_owned(),
            state,
            parallelism,
            watermark: None,
            last_checkpoint: None,
            restarts: 0,
            records_read: 0,
            message: None,
            savepoint: None,
        }
    }

    /// The message of a job stopped with savepoint `path`.
    pub fn stopped_with(path: &str) -> String {
        format!("stopped with savepoint {path}")
    }
}

/// Coordinator → client.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The job was accepted.
    Submitted {
        /// Its id.
        job_id: String,
    },
    /// All jobs.
    Jobs(Vec<JobStatus>),
    /// One job.
    Status(JobStatus),
    /// The job was cancelled.
    Cancelled {
        /// Its id.
        job_id: String,
    },
    /// A savepoint was written (and the job stopped, if asked).
    Savepoint {
        /// The job.
        job_id: String,
        /// The savepoint's path, for `--from-savepoint`.
        path: String,
    },
    /// The request failed.
    Error(String),
}

/// Worker → worker, on a data connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum DataFrame {
    /// An exchange message from slot `from` to slot `to` on exchange `exchange`.
    Batch {
        /// The exchange (the job's `key_by`s, in build order).
        exchange: usize,
        /// Sending slot.
        from: usize,
        /// Receiving slot.
        to: usize,
        /// The message (batches encoded).
        message: ExchangeMessage<Vec<u8>>,
    },
    /// `to` consumed batches from `from`: return credit (travels back on the same connection).
    Credit {
        /// The exchange.
        exchange: usize,
        /// Sending slot of the channel.
        from: usize,
        /// Receiving slot of the channel.
        to: usize,
        /// Batches consumed.
        credits: u32,
    },
}
