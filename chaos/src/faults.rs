//! The fault catalogue, swarm plans and the fault atlas.
//!
//! A seed determines a [`FaultPlan`]: the cluster's shape and the job's knobs ([`Shape`]), which
//! fault kinds are switched on for this run (swarm testing: a run with few kinds stresses each
//! harder, and the kinds combine differently from seed to seed), and the faults themselves, with
//! their times. A plan is pure data, printed with the seed and serialisable, so a failing run is a
//! complete bug report and a shrunk plan replays with `--plan`.
//!
//! # The atlas: what Weir promises under each fault
//!
//! Every kind below but one is a fault Weir promises to *survive with exactly-once output*:
//! after the faults heal, the job finishes within the liveness bound and its committed output
//! equals the sequential reference. Under `corrupt-job-record` Weir promises instead to *fail
//! the job with a clear error* naming the record, its committed output never wrong. The
//! generator keeps each run inside the promise — so that every FAIL is a real bug — by these
//! limits:
//!
//! | kind | what happens | limits that keep it within the promise |
//! |---|---|---|
//! | `kill-worker` | a worker process dies (any moment: mid-checkpoint, between staging and commit, during recovery) and restarts | down ≤ 2.1 s |
//! | `kill-coordinator` | the coordinator dies and restarts; it resumes jobs from the checkpoint store | down ≤ 2.1 s |
//! | `partition` | a worker is cut off both ways (clogged) | ≤ 4.5 s |
//! | `one-way-partition` | a worker's inbound or outbound traffic is dropped | ≤ 4.5 s |
//! | `latency` | every packet takes 10–250 ms (jitter within the range) | below the 2 s heartbeat timeout most of the time; beyond it is a partition, also survived |
//! | `pause` | a node is frozen (VM or GC pause): its clock jumps forward when it resumes | ≤ 5 s |
//! | `storage-errors` | ≤ 30% of object-store operations fail | ≤ 3 s; restarts are bounded by the coordinator's `--restarts` |
//! | `storage-slow` | every object-store operation takes 5–300 ms longer | ≤ 3 s |
//! | `lying-puts` | ≤ 30% of puts store the object and then report failure | ≤ 3 s |
//! | `list-lag` | objects written in the last 50–1000 ms are missing from listings | ≤ 3 s |
//! | `corrupt-checkpoint` | a file of the newest checkpoint is bit-flipped or truncated, then a worker is killed so that the job restores | only checkpoint files (job records: `corrupt-job-record`) |
//! | `stall-split` | one source split yields nothing for a while (its watermark holds every window back) | ≤ 5 s |
//! | `sink-commit-fails` | the next 1–2 sink commits fail with an I/O error; the attempt restarts and recovery commits | — |
//! | `clock-jump` | a node's monotonic clock leaps forward by 0.1–30 s while the node keeps running; timers it overtakes fire at once (heartbeats look overdue, a checkpoint triggers early) | forward only, as a monotonic clock can only move forward |
//! | `clock-drift` | a node's clock runs at 0.5×–2× true speed: its timers fire early or late | ≤ 5 s; beyond 4× between two nodes, heartbeats look missed, which is survived as worker loss |
//! | `kill-at-moment` | the node that reaches a chosen moment of the protocol is killed right there, and restarted: the coordinator mid-checkpoint (some slots' state files reported, no `_metadata`), between `_metadata` and telling sinks to commit, or between choosing a restore point and deploying; a worker with an epoch staged, between committing and acknowledging, between recovering its sinks and starting its slots, or between storing a slot's state file and reporting it | armed for 5 s (no kill if the moment does not come); down ≤ 2.1 s |
//! | `corrupt-job-record` | the job's deployment generation, restore lineage or spec record is bit-flipped or truncated, then a node is killed so that the record is read (a worker: the job restores; the coordinator: it resumes). Promise: **the job fails with a clear error** naming the record (there is nothing older to fall back to, and guessing could duplicate or lose output), unless it has finished; the output committed until then is never wrong (a part of the reference) | drawn a quarter as often as the other kinds, so that most runs still finish |
//! | `connection-reset` | every connection of a node is reset (a TCP RST) while both ends' processes live on; the node and its peers reconnect | — |
//! | `link-reset` | one connection is reset: one of the data connections open between workers (three times in four), or a worker's control connection | — |
//! | `link-stall` | the writes of one direction of one such connection hang; the rest flows (the reader times out) | ≤ 4 s |
//! | `link-slow` | every write between two nodes takes 5–100 ms longer | ≤ 4 s |
//! | `deploy-late` | the next `Deploy` a worker receives is processed 0.5–9 s late: its peers' data connections arrive first | armed in the first 150 ms |
//! | `kill-at-file-op` | a node crashes at its n-th file operation that changes something (1–60 after arming): inside a durable write, a commit, a recovery; that operation is not done, and what the node had not synced is lost | armed 5 s; down ≤ 2.1 s |
//! | `rogue-peer` | a peer holding the client's certificate registers as a worker (offering `usize::MAX` slots), opens data connections to every worker and sends frames, and sends the coordinator a snapshot: every attempt is refused, the job unaffected | — |
//! | `stale-deploy` | the next `Deploy` a worker receives is held back (its connections reset, so the attempt is given up), and delivered once a newer attempt has committed: the output fence must refuse it | armed in the first 150 ms; held ≤ 20 s |
//!
//! Time: nothing in Weir compares two processes' clocks (an instant never crosses the wire, and
//! event time comes from the data), so in every run that switches a clock kind on, each node's
//! clock also starts skewed by a different offset (minutes apart).
//!
//! A kill is a machine crash: what the node wrote to files without syncing is lost or torn
//! (the simulated file system of `weir_core::fs`).
//!
//! Besides the faults, the shape varies what the cluster is asked to do: generated input or CSV
//! files with malformed lines ([`crate::input`]), checkpoints in an object store or a local
//! directory, the latency of the checkpoint store, and a job submitted twice at the same moment.
//!
//! Node faults (kill, partition, pause, corruption) hit one node at a time: a node is killed
//! while up and restarted while down, as a real fault injector does. Every fault heals by
//! [`FaultPlan::heal_at_ms`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use weir_core::faultpoint::Moment;
use weir_core::keygroup::mix64;

use crate::storage::{Damage, StorageFaultMode};

/// The kinds of fault the simulator injects.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// Kill and restart a worker.
    KillWorker,
    /// Kill and restart the coordinator.
    KillCoordinator,
    /// Cut a worker off both ways.
    Partition,
    /// Drop a worker's inbound or outbound traffic.
    OneWayPartition,
    /// Slow every packet.
    Latency,
    /// Freeze a node (its clock jumps).
    Pause,
    /// Fail object-store operations.
    StorageErrors,
    /// Slow object-store operations.
    StorageSlow,
    /// Puts that succeed but report failure.
    LyingPuts,
    /// Listings that miss recent objects.
    ListLag,
    /// Damage a checkpoint file, then force a restore.
    CorruptCheckpoint,
    /// A source split stalls.
    StallSplit,
    /// Sink commits fail.
    SinkCommitFails,
    /// A node's clock jumps forward.
    ClockJump,
    /// A node's clock runs fast or slow.
    ClockDrift,
    /// A node's connections are reset.
    ConnectionReset,
    /// Kill the node that reaches a protocol moment.
    KillAtMoment,
    /// Damage a job record, then force it to be read.
    CorruptJobRecord,
    /// Reset one connection (not a node's every connection).
    LinkReset,
    /// Stall one direction of one connection.
    LinkStall,
    /// Slow every write between two nodes.
    LinkSlow,
    /// A worker processes its next `Deploy` late: peers' data connections arrive first.
    DeployLate,
    /// A `Deploy` held back until a newer attempt has committed, then delivered.
    StaleDeploy,
    /// A peer holding the client's certificate tries what only workers may do.
    RoguePeer,
    /// Crash a node at its n-th file operation (inside a sequence of them).
    KillAtFileOp,
}

/// A job-level record in the checkpoint store.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobRecord {
    /// `_generation`: the latest deployment generation.
    Generation,
    /// `_lineage`: which generation restored which checkpoint.
    Lineage,
    /// `_job.json`: the job's spec, read by a restarted coordinator.
    Spec,
}

impl JobRecord {
    /// Its object name.
    pub fn name(self) -> &'static str {
        match self {
            JobRecord::Generation => "_generation",
            JobRecord::Lineage => "_lineage",
            JobRecord::Spec => "_job.json",
        }
    }
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 25] = [
        FaultKind::KillWorker,
        FaultKind::KillCoordinator,
        FaultKind::Partition,
        FaultKind::OneWayPartition,
        FaultKind::Latency,
        FaultKind::Pause,
        FaultKind::StorageErrors,
        FaultKind::StorageSlow,
        FaultKind::LyingPuts,
        FaultKind::ListLag,
        FaultKind::CorruptCheckpoint,
        FaultKind::StallSplit,
        FaultKind::SinkCommitFails,
        FaultKind::ClockJump,
        FaultKind::ClockDrift,
        FaultKind::ConnectionReset,
        FaultKind::KillAtMoment,
        FaultKind::CorruptJobRecord,
        FaultKind::LinkReset,
        FaultKind::LinkStall,
        FaultKind::LinkSlow,
        FaultKind::DeployLate,
        FaultKind::StaleDeploy,
        FaultKind::RoguePeer,
        FaultKind::KillAtFileOp,
    ];

    /// The kind's name in plans and the atlas.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker",
            FaultKind::KillCoordinator => "kill-coordinator",
            FaultKind::Partition => "partition",
            FaultKind::OneWayPartition => "one-way-partition",
            FaultKind::Latency => "latency",
            FaultKind::Pause => "pause",
            FaultKind::StorageErrors => "storage-errors",
            FaultKind::StorageSlow => "storage-slow",
            FaultKind::LyingPuts => "lying-puts",
            FaultKind::ListLag => "list-lag",
            FaultKind::CorruptCheckpoint => "corrupt-checkpoint",
            FaultKind::StallSplit => "stall-split",
            FaultKind::SinkCommitFails => "sink-commit-fails",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::ClockDrift => "clock-drift",
            FaultKind::ConnectionReset => "connection-reset",
            FaultKind::KillAtMoment => "kill-at-moment",
            FaultKind::CorruptJobRecord => "corrupt-job-record",
            FaultKind::LinkReset => "link-reset",
            FaultKind::LinkStall => "link-stall",
            FaultKind::LinkSlow => "link-slow",
            FaultKind::DeployLate => "deploy-late",
            FaultKind::StaleDeploy => "stale-deploy",
            FaultKind::RoguePeer => "rogue-peer",
            FaultKind::KillAtFileOp => "kill-at-file-op",
        }
    }
}

/// Which job a simulated run submits: the swarm picks one per seed, so that every operator
/// family is exercised under faults and judged by its own sequential reference.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SimJob {
    /// `bids`: tumbling windows with late and error outputs (generated or CSV input).
    #[default]
    Bids,
    /// `fraud`: a keyed process function with state and event-time timers.
    Fraud,
    /// `enrichment`: two connected streams, keyed state with a time to live.
    Enrichment,
    /// `sessions`: merging session windows.
    Sessions,
    /// `mix`: sliding and cumulating windows, an interval join and a window join.
    Mix,
    /// `sql`: a Flink SQL script, Nexmark q0–q2 over the Nexmark generator table.
    Sql,
}

impl SimJob {
    /// The job's registered name.
    pub fn name(self) -> &'static str {
        match self {
            SimJob::Bids => "bids",
            SimJob::Fraud => "fraud",
            SimJob::Enrichment => "enrichment",
            SimJob::Sessions => "sessions",
            SimJob::Mix => "mix",
            SimJob::Sql => "sql",
        }
    }

    /// The job of `seed`: one seed in six each. Drawn from streams of their own, so that adding
    /// jobs leaves every seed's cluster and faults as they were; `sql` took half of the seeds
    /// that ran `bids` (a second draw), so no seed of another job changed job.
    pub fn of_seed(seed: u64) -> Self {
        match mix64(seed ^ 0x70B5_70B5) % 6 {
            0 => SimJob::Fraud,
            1 => SimJob::Enrichment,
            2 => SimJob::Sessions,
            3 => SimJob::Mix,
            _ if mix64(seed ^ 0x5E1E_C7ED).is_multiple_of(2) => SimJob::Sql,
            _ => SimJob::Bids,
        }
    }
}

/// The cluster and job of one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// The job (plans printed before job mixes had none: `bids`).
    #[serde(default)]
    pub job: SimJob,
    /// Worker nodes.
    pub workers: usize,
    /// Slots per worker.
    pub slots_per_worker: usize,
    /// The job's parallelism (at most all slots).
    pub parallelism: usize,
    /// Checkpoint interval, ms.
    pub checkpoint_interval_ms: u64,
    /// Tumbling window size, ms.
    pub window_ms: u64,
    /// Bounded out-of-orderness of the watermarks, ms.
    pub out_of_orderness_ms: u64,
    /// Events generated.
    pub events: u64,
    /// Source rate, events per simulated second (so that the job spans simulated time).
    pub rate: u64,
    /// Where the job reads its bids from.
    pub input: Input,
    /// Where the coordinator stores checkpoints.
    pub checkpoints: CheckpointBackend,
    /// The client submits the job twice at the same moment (one job must result).
    pub submit_twice: bool,
    /// Latency of every checkpoint-store operation, ms.
    pub store_latency_ms: u64,
    /// The job's checkpoint timeout, ms, when shorter than the default (10 minutes: longer
    /// than any run).
    pub checkpoint_timeout_ms: Option<u64>,
    /// Stops with a savepoint, each followed by a submission from it at another parallelism
    /// (rescaling), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rescale: Vec<Rescale>,
}

/// A stop with a savepoint and a restart from it at another parallelism.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rescale {
    /// The running job is stopped with a savepoint this long after it was submitted.
    pub stop_after_ms: u64,
    /// The parallelism the job is submitted at from that savepoint.
    pub parallelism: usize,
}

/// Where a simulated job reads its bids from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// The generator, one split per slot.
    Generated,
    /// CSV files with disorder, late, malformed and blank lines ([`crate::input`]).
    CsvFiles {
        /// How many files (splits).
        files: usize,
    },
}

/// Where a simulated coordinator stores checkpoints.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointBackend {
    /// An object store (in memory, as S3 is to its clients: durable once a put returns).
    ObjectStore,
    /// A local directory on the coordinator's node, through Weir's durable local store and
    /// the simulated file system: writes not yet synced are lost when the node crashes.
    LocalDirectory,
}

impl Shape {
    /// The job's source splits.
    pub fn splits(&self) -> usize {
        match (self.input, self.job) {
            // Profiles and clicks: two generated sources.
            (Input::Generated, SimJob::Enrichment | SimJob::Mix) => 2 * self.parallelism,
            (Input::Generated, _) => self.parallelism,
            (Input::CsvFiles { files }, _) => files,
        }
    }

    /// How long the job runs without faults, in simulated ms.
    pub fn job_ms(&self) -> u64 {
        self.events * 1000 / self.rate
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {}, {} workers × {} slots, parallelism {}, checkpoints every {} ms, {} ms windows, {} ms out-of-orderness, {} events at {}/s",
            self.job.name(),
            self.workers,
            self.slots_per_worker,
            self.parallelism,
            self.checkpoint_interval_ms,
            self.window_ms,
            self.out_of_orderness_ms,
            self.events,
            self.rate
        )?;
        match self.input {
            Input::Generated => write!(f, ", generated input")?,
            Input::CsvFiles { files } => write!(f, ", {files} CSV files")?,
        }
        match self.checkpoints {
            CheckpointBackend::ObjectStore => write!(f, ", checkpoints in an object store")?,
            CheckpointBackend::LocalDirectory => write!(f, ", checkpoints in a local directory")?,
        }
        if self.submit_twice {
            write!(f, ", submitted twice at once")?;
        }
        if self.store_latency_ms > 0 {
            write!(f, ", {} ms per store operation", self.store_latency_ms)?;
        }
        if let Some(timeout) = self.checkpoint_timeout_ms {
            write!(f, ", checkpoints time out after {timeout} ms")?;
        }
        for rescale in &self.rescale {
            write!(
                f,
                ", stopped with a savepoint after {} ms and resumed from it at parallelism {}",
                rescale.stop_after_ms, rescale.parallelism
            )?;
        }
        Ok(())
    }
}

/// Which node a node fault hits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Node {
    /// The coordinator.
    Coordinator,
    /// Worker `n` (0-based).
    Worker(usize),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Coordinator => write!(f, "the coordinator"),
            Node::Worker(n) => write!(f, "worker {n}"),
        }
    }
}

/// One fault: what, when (ms from the start of the run) and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Kill worker `worker` and restart it `down_ms` later.
    KillWorker {
        /// When.
        at_ms: u64,
        /// Which worker.
        worker: usize,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Kill the coordinator and restart it `down_ms` later.
    KillCoordinator {
        /// When.
        at_ms: u64,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Cut worker `worker` off the network both ways.
    Partition {
        /// When.
        at_ms: u64,
        /// Which worker.
        worker: usize,
        /// How long.
        duration_ms: u64,
    },
    /// Drop worker `worker`'s outbound (or inbound) packets.
    OneWayPartition {
        /// When.
        at_ms: u64,
        /// Which worker.
        worker: usize,
        /// Outbound if true, inbound otherwise.
        outbound: bool,
        /// How long.
        duration_ms: u64,
    },
    /// Every packet takes `min_ms..max_ms`.
    Latency {
        /// When.
        at_ms: u64,
        /// Least latency.
        min_ms: u64,
        /// Greatest latency.
        max_ms: u64,
        /// How long.
        duration_ms: u64,
    },
    /// Freeze `node` for `duration_ms` (its clock jumps forward by as much when it resumes).
    Pause {
        /// When.
        at_ms: u64,
        /// Which node.
        node: Node,
        /// How long.
        duration_ms: u64,
    },
    /// A storage fault window.
    Storage {
        /// When.
        at_ms: u64,
        /// What the store does meanwhile.
        mode: StorageFaultMode,
        /// How long.
        duration_ms: u64,
    },
    /// Damage a file of the newest checkpoint (`file` picks which), then kill worker `worker`
    /// for `down_ms` so that the job restores.
    CorruptCheckpoint {
        /// When.
        at_ms: u64,
        /// How the file is damaged.
        damage: Damage,
        /// Which file: index into the checkpoint's files (`_metadata` last), modulo their count.
        file: usize,
        /// The worker killed afterwards.
        worker: usize,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Source split `split` yields nothing for `duration_ms`.
    StallSplit {
        /// When.
        at_ms: u64,
        /// Which split.
        split: usize,
        /// How long.
        duration_ms: u64,
    },
    /// The next `count` sink commits fail.
    SinkCommitFails {
        /// When.
        at_ms: u64,
        /// How many commits fail.
        count: u32,
    },
    /// `node`'s clock leaps forward by `jump_ms`.
    ClockJump {
        /// When.
        at_ms: u64,
        /// Which node.
        node: Node,
        /// How far.
        jump_ms: u64,
    },
    /// `node`'s clock runs at `rate_permille` / 1000 of true speed for `duration_ms`.
    ClockDrift {
        /// When.
        at_ms: u64,
        /// Which node.
        node: Node,
        /// Speed, ‰ of true time.
        rate_permille: u32,
        /// How long.
        duration_ms: u64,
    },
    /// Every connection of `node` is reset.
    ConnectionReset {
        /// When.
        at_ms: u64,
        /// Which node.
        node: Node,
    },
    /// Damage job record `record`, then kill `node` (the coordinator for the spec, which it
    /// reads when it resumes; a worker otherwise, so that the job restores) for `down_ms`.
    CorruptJobRecord {
        /// When.
        at_ms: u64,
        /// Which record.
        record: JobRecord,
        /// How it is damaged.
        damage: Damage,
        /// The node killed afterwards.
        node: Node,
        /// How long it stays down.
        down_ms: u64,
    },
    /// From `at_ms` for `armed_ms`, kill `node` the `skip + 1`-th time it reaches `moment`, and
    /// restart it `down_ms` later.
    KillAtMoment {
        /// When the kill is armed.
        at_ms: u64,
        /// The protocol moment.
        moment: Moment,
        /// Which node (the coordinator for its moments, a worker for theirs).
        node: Node,
        /// Occurrences of the moment let pass first.
        skip: u32,
        /// How long the kill stays armed.
        armed_ms: u64,
        /// How long the node stays down.
        down_ms: u64,
    },
    /// Reset one connection (only it: both processes live on).
    LinkReset {
        /// When.
        at_ms: u64,
        /// Which connection.
        link: Link,
    },
    /// The writes of one direction of one connection wait for `duration_ms` (the other
    /// direction, and every other connection, flow).
    LinkStall {
        /// When.
        at_ms: u64,
        /// Which connection.
        link: Link,
        /// Stall the writes of the end that opened the connection (else the accepting end's).
        opener_writes: bool,
        /// How long.
        duration_ms: u64,
    },
    /// Every write between `a` and `b` takes `delay_ms` longer, for `duration_ms`.
    LinkSlow {
        /// When.
        at_ms: u64,
        /// One end.
        a: Node,
        /// The other end.
        b: Node,
        /// Delay per write.
        delay_ms: u64,
        /// How long.
        duration_ms: u64,
    },
    /// The next `Deploy` a worker receives (from `at_ms` on) is processed `delay_ms` late, so
    /// that its peers' data connections for the attempt arrive before it is ready.
    DeployLate {
        /// When it is armed.
        at_ms: u64,
        /// The delay.
        delay_ms: u64,
    },
    /// From `at_ms` for `armed_ms`, crash `node` at its `nth` file operation that changes
    /// something (that operation not done, what it had not synced lost), and restart it
    /// `down_ms` later.
    KillAtFileOp {
        /// When the crash is armed.
        at_ms: u64,
        /// Which node.
        node: Node,
        /// Which operation, counted from the arming (1 = the next).
        nth: u32,
        /// How long the crash stays armed.
        armed_ms: u64,
        /// How long the node stays down.
        down_ms: u64,
    },
    /// A peer with the client's certificate registers as a worker offering `usize::MAX` slots,
    /// opens data connections to every worker and sends them frames, and sends the coordinator
    /// a slot's snapshot: every attempt must be refused.
    RoguePeer {
        /// When.
        at_ms: u64,
    },
    /// The next `Deploy` a worker receives (from `at_ms` on) is held back, the worker's
    /// connections are reset so that the attempt is given up, and the held message is delivered
    /// once a newer attempt has committed output (or after `held_ms`).
    StaleDeploy {
        /// When it is armed.
        at_ms: u64,
        /// The longest hold.
        held_ms: u64,
    },
}

/// Which one connection a link fault hits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Link {
    /// A data connection between two workers: this index into the ones open at the moment, in
    /// the order they opened (modulo their number; none open, no fault).
    Data(usize),
    /// Worker `n`'s control connection to the coordinator.
    Control(usize),
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Data(index) => write!(f, "data connection #{index} (of those open)"),
            Link::Control(worker) => write!(f, "worker {worker}'s control connection"),
        }
    }
}

/// What a fault occupies: at most one fault at a time per target.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A node.
    Node(Node),
    /// The whole network.
    Network,
    /// The object store.
    Storage,
    /// A source split.
    Split(usize),
    /// The sinks.
    Sinks,
    /// Single connections.
    Links,
    /// Deployments.
    Deploys,
    /// The rogue peer.
    Rogue,
}

impl Fault {
    /// When the fault starts.
    pub fn at_ms(&self) -> u64 {
        *self.clone().at_ms_mut()
    }

    fn set_at(&mut self, start_ms: u64) {
        *self.at_ms_mut() = start_ms;
    }

    fn at_ms_mut(&mut self) -> &mut u64 {
        match self {
            Fault::KillWorker { at_ms, .. }
            | Fault::KillCoordinator { at_ms, .. }
            | Fault::Partition { at_ms, .. }
            | Fault::OneWayPartition { at_ms, .. }
            | Fault::Latency { at_ms, .. }
            | Fault::Pause { at_ms, .. }
            | Fault::Storage { at_ms, .. }
            | Fault::CorruptCheckpoint { at_ms, .. }
            | Fault::StallSplit { at_ms, .. }
            | Fault::SinkCommitFails { at_ms, .. }
            | Fault::ClockJump { at_ms, .. }
            | Fault::ClockDrift { at_ms, .. }
            | Fault::ConnectionReset { at_ms, .. }
            | Fault::KillAtMoment { at_ms, .. }
            | Fault::CorruptJobRecord { at_ms, .. }
            | Fault::LinkReset { at_ms, .. }
            | Fault::LinkStall { at_ms, .. }
            | Fault::LinkSlow { at_ms, .. }
            | Fault::DeployLate { at_ms, .. }
            | Fault::StaleDeploy { at_ms, .. }
            | Fault::RoguePeer { at_ms }
            | Fault::KillAtFileOp { at_ms, .. } => at_ms,
        }
    }

    /// How long the fault lasts, in ms (0 for instantaneous ones).
    pub fn duration_ms(&self) -> u64 {
        match self {
            Fault::KillWorker { down_ms, .. }
            | Fault::KillCoordinator { down_ms, .. }
            | Fault::CorruptCheckpoint { down_ms, .. }
            | Fault::CorruptJobRecord { down_ms, .. } => *down_ms,
            Fault::Partition { duration_ms, .. }
            | Fault::OneWayPartition { duration_ms, .. }
            | Fault::Latency { duration_ms, .. }
            | Fault::Pause { duration_ms, .. }
            | Fault::Storage { duration_ms, .. }
            | Fault::StallSplit { duration_ms, .. }
            | Fault::ClockDrift { duration_ms, .. }
            | Fault::LinkStall { duration_ms, .. }
            | Fault::LinkSlow { duration_ms, .. } => *duration_ms,
            Fault::KillAtMoment { armed_ms, down_ms, .. } | Fault::KillAtFileOp { armed_ms, down_ms, .. } => {
                armed_ms + down_ms
            }
            Fault::DeployLate { delay_ms, .. } => *delay_ms,
            Fault::StaleDeploy { held_ms, .. } => *held_ms,
            Fault::SinkCommitFails { .. }
            | Fault::ClockJump { .. }
            | Fault::ConnectionReset { .. }
            | Fault::LinkReset { .. }
            | Fault::RoguePeer { .. } => 0,
        }
    }

    /// The same fault lasting `ms` (for shrinking); instantaneous faults are unchanged.
    pub fn with_duration(&self, ms: u64) -> Fault {
        let mut fault = self.clone();
        match &mut fault {
            Fault::KillWorker { down_ms, .. }
            | Fault::KillCoordinator { down_ms, .. }
            | Fault::CorruptCheckpoint { down_ms, .. }
            | Fault::CorruptJobRecord { down_ms, .. } => *down_ms = ms,
            Fault::Partition { duration_ms, .. }
            | Fault::OneWayPartition { duration_ms, .. }
            | Fault::Latency { duration_ms, .. }
            | Fault::Pause { duration_ms, .. }
            | Fault::Storage { duration_ms, .. }
            | Fault::StallSplit { duration_ms, .. }
            | Fault::ClockDrift { duration_ms, .. }
            | Fault::LinkStall { duration_ms, .. }
            | Fault::LinkSlow { duration_ms, .. } => *duration_ms = ms,
            // Shrinks the time down; the arming window stays (a kill that no longer fires is
            // what dropping the fault tests).
            Fault::KillAtMoment { armed_ms, down_ms, .. } | Fault::KillAtFileOp { armed_ms, down_ms, .. } => {
                *down_ms = ms.saturating_sub(*armed_ms).max(1)
            }
            Fault::DeployLate { delay_ms, .. } => *delay_ms = ms,
            Fault::StaleDeploy { held_ms, .. } => *held_ms = ms,
            Fault::SinkCommitFails { .. }
            | Fault::ClockJump { .. }
            | Fault::ConnectionReset { .. }
            | Fault::LinkReset { .. }
            | Fault::RoguePeer { .. } => {}
        }
        fault
    }

    /// When the fault ends.
    pub fn end_ms(&self) -> u64 {
        self.at_ms() + self.duration_ms()
    }

    /// What the fault occupies.
    pub fn target(&self) -> Target {
        match self {
            Fault::KillWorker { worker, .. }
            | Fault::Partition { worker, .. }
            | Fault::OneWayPartition { worker, .. }
            | Fault::CorruptCheckpoint { worker, .. } => Target::Node(Node::Worker(*worker)),
            Fault::KillCoordinator { .. } => Target::Node(Node::Coordinator),
            Fault::Pause { node, .. }
            | Fault::ClockJump { node, .. }
            | Fault::ClockDrift { node, .. }
            | Fault::ConnectionReset { node, .. }
            | Fault::KillAtMoment { node, .. }
            | Fault::KillAtFileOp { node, .. }
            | Fault::CorruptJobRecord { node, .. } => Target::Node(*node),
            Fault::Latency { .. } => Target::Network,
            Fault::Storage { .. } => Target::Storage,
            Fault::StallSplit { split, .. } => Target::Split(*split),
            Fault::SinkCommitFails { .. } => Target::Sinks,
            Fault::LinkReset { .. } | Fault::LinkStall { .. } | Fault::LinkSlow { .. } => Target::Links,
            Fault::DeployLate { .. } | Fault::StaleDeploy { .. } => Target::Deploys,
            Fault::RoguePeer { .. } => Target::Rogue,
        }
    }

    /// The fault's kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::KillWorker { .. } => FaultKind::KillWorker,
            Fault::KillCoordinator { .. } => FaultKind::KillCoordinator,
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::OneWayPartition { .. } => FaultKind::OneWayPartition,
            Fault::Latency { .. } => FaultKind::Latency,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Storage { mode, .. } if mode.error_per_mille > 0 => FaultKind::StorageErrors,
            Fault::Storage { mode, .. } if mode.lying_put_per_mille > 0 => FaultKind::LyingPuts,
            Fault::Storage { mode, .. } if mode.list_lag_ms > 0 => FaultKind::ListLag,
            Fault::Storage { .. } => FaultKind::StorageSlow,
            Fault::CorruptCheckpoint { .. } => FaultKind::CorruptCheckpoint,
            Fault::StallSplit { .. } => FaultKind::StallSplit,
            Fault::SinkCommitFails { .. } => FaultKind::SinkCommitFails,
            Fault::ClockJump { .. } => FaultKind::ClockJump,
            Fault::ClockDrift { .. } => FaultKind::ClockDrift,
            Fault::ConnectionReset { .. } => FaultKind::ConnectionReset,
            Fault::KillAtMoment { .. } => FaultKind::KillAtMoment,
            Fault::CorruptJobRecord { .. } => FaultKind::CorruptJobRecord,
            Fault::LinkReset { .. } => FaultKind::LinkReset,
            Fault::LinkStall { .. } => FaultKind::LinkStall,
            Fault::LinkSlow { .. } => FaultKind::LinkSlow,
            Fault::DeployLate { .. } => FaultKind::DeployLate,
            Fault::StaleDeploy { .. } => FaultKind::StaleDeploy,
            Fault::RoguePeer { .. } => FaultKind::RoguePeer,
            Fault::KillAtFileOp { .. } => FaultKind::KillAtFileOp,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {} ms ", self.at_ms())?;
        match self {
            Fault::KillWorker { worker, down_ms, .. } => write!(f, "kill worker {worker}, restart after {down_ms} ms"),
            Fault::KillCoordinator { down_ms, .. } => write!(f, "kill the coordinator, restart after {down_ms} ms"),
            Fault::Partition { worker, duration_ms, .. } => write!(f, "partition worker {worker} for {duration_ms} ms"),
            Fault::OneWayPartition { worker, outbound, duration_ms, .. } => write!(
                f,
                "drop worker {worker}'s {} packets for {duration_ms} ms",
                if *outbound { "outbound" } else { "inbound" }
            ),
            Fault::Latency { min_ms, max_ms, duration_ms, .. } => {
                write!(f, "network latency {min_ms}–{max_ms} ms for {duration_ms} ms")
            }
            Fault::Pause { node, duration_ms, .. } => write!(f, "pause {node} for {duration_ms} ms (clock jump)"),
            Fault::Storage { mode, duration_ms, .. } => write!(f, "storage: {mode} for {duration_ms} ms"),
            Fault::CorruptCheckpoint { damage, file, worker, down_ms, .. } => write!(
                f,
                "{} file #{file} of the newest checkpoint, then kill worker {worker} for {down_ms} ms",
                match damage {
                    Damage::BitFlip => "flip a bit in",
                    Damage::Truncate => "truncate",
                }
            ),
            Fault::StallSplit { split, duration_ms, .. } => write!(f, "stall split {split} for {duration_ms} ms"),
            Fault::SinkCommitFails { count, .. } => write!(f, "fail the next {count} sink commit(s)"),
            Fault::ClockJump { node, jump_ms, .. } => write!(f, "{node}'s clock jumps {jump_ms} ms forward"),
            Fault::ClockDrift { node, rate_permille, duration_ms, .. } => write!(
                f,
                "{node}'s clock runs at {}.{:03}× for {duration_ms} ms",
                rate_permille / 1000,
                rate_permille % 1000
            ),
            Fault::ConnectionReset { node, .. } => write!(f, "reset every connection of {node}"),
            Fault::CorruptJobRecord { record, damage, node, down_ms, .. } => write!(
                f,
                "{} job record {}, then kill {node} for {down_ms} ms",
                match damage {
                    Damage::BitFlip => "flip a bit in",
                    Damage::Truncate => "truncate",
                },
                record.name()
            ),
            Fault::KillAtMoment { moment, node, skip, armed_ms, down_ms, .. } => write!(
                f,
                "kill {node} when it reaches {moment} (after {skip} passing) within {armed_ms} ms, restart after {down_ms} ms"
            ),
            Fault::LinkReset { link, .. } => write!(f, "reset {link}"),
            Fault::LinkStall { link, opener_writes, duration_ms, .. } => write!(
                f,
                "stall the writes of {link} from its {} end for {duration_ms} ms",
                if *opener_writes { "opening" } else { "accepting" }
            ),
            Fault::LinkSlow { a, b, delay_ms, duration_ms, .. } => {
                write!(f, "slow every write between {a} and {b} by {delay_ms} ms for {duration_ms} ms")
            }
            Fault::DeployLate { delay_ms, .. } => write!(f, "the next deployment on a worker waits {delay_ms} ms"),
            Fault::KillAtFileOp { node, nth, armed_ms, down_ms, .. } => write!(
                f,
                "crash {node} at its file operation #{nth} within {armed_ms} ms, restart after {down_ms} ms"
            ),
            Fault::RoguePeer { .. } => write!(
                f,
                "a peer with the client's certificate registers as a worker, sends frames to every worker and a snapshot to the coordinator"
            ),
            Fault::StaleDeploy { held_ms, .. } => write!(
                f,
                "hold the next deployment on a worker (its connections reset) until a newer attempt commits, at most {held_ms} ms"
            ),
        }
    }
}

/// The shape, switched-on kinds and faults of one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// The cluster and job.
    pub shape: Shape,
    /// The fault kinds this run may draw from (swarm).
    pub kinds: Vec<FaultKind>,
    /// The faults, in start order.
    pub faults: Vec<Fault>,
}

/// A deterministic generator over a seed (SplitMix64: a counter through a finalizer).
struct Draw(u64);

impl Draw {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0) % bound.max(1)
    }
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }
}

/// One connection: a data connection three times in four, else worker `worker`'s control
/// connection.
fn draw_link(draw: &mut Draw, worker: usize) -> Link {
    if draw.below(4) == 0 {
        Link::Control(worker)
    } else {
        Link::Data(draw.below(64) as usize)
    }
}

/// The nodes at either end of a link: worker `worker` and another worker (a data connection)
/// three times in four, else worker `worker` and the coordinator (its control connection).
fn draw_pair(draw: &mut Draw, shape: &Shape, worker: usize) -> (Node, Node) {
    let other = (worker + 1 + draw.below(shape.workers as u64 - 1) as usize) % shape.workers;
    if draw.below(4) == 0 || other == worker {
        (Node::Worker(worker), Node::Coordinator)
    } else {
        (Node::Worker(worker), Node::Worker(other))
    }
}

impl FaultPlan {
    /// The plan of `seed`: a swarm draw of shape, kinds and faults.
    pub fn from_seed(seed: u64) -> Self {
        Self::draw(seed, false)
    }

    /// The plan of `seed` with every fault kind switched on (no swarm: each fault may be of any
    /// kind). The shape is the same as [`FaultPlan::from_seed`]'s.
    pub fn from_seed_all_kinds(seed: u64) -> Self {
        Self::draw(seed, true)
    }

    fn draw(seed: u64, all_kinds: bool) -> Self {
        let mut draw = Draw(mix64(seed ^ 0xFA17_FA17));
        let workers = draw.range(2, 4) as usize;
        let slots_per_worker = draw.range(1, 3) as usize;
        let total = workers * slots_per_worker;
        // Mostly parallel jobs, where the exchange and alignment matter.
        let parallelism = if draw.below(8) == 0 { 1 } else { draw.range(2.min(total as u64), total as u64) as usize };
        let shape = Shape {
            job: SimJob::Bids,
            workers,
            slots_per_worker,
            parallelism,
            checkpoint_interval_ms: draw.pick(&[50, 100, 100, 200, 500]),
            window_ms: draw.pick(&[500, 1_000, 2_000, 10_000]),
            out_of_orderness_ms: draw.pick(&[0, 200, 1_000, 4_000]),
            events: draw.range(20_000, 80_000),
            rate: 30_000,
            input: Input::Generated,
            checkpoints: CheckpointBackend::ObjectStore,
            submit_twice: false,
            store_latency_ms: 0,
            checkpoint_timeout_ms: None,
            rescale: Vec::new(),
        };
        let mut shape = shape;
        if draw.below(3) == 0 {
            shape.input = Input::CsvFiles { files: draw.range(1, shape.parallelism as u64 + 2) as usize };
        }
        if draw.coin() {
            shape.checkpoints = CheckpointBackend::LocalDirectory;
        }
        shape.submit_twice = draw.below(4) == 0;
        if draw.coin() {
            shape.store_latency_ms = draw.range(1, 30);
        }
        if draw.below(4) == 0 {
            shape.checkpoint_timeout_ms = Some(draw.range(400, 3_000));
        }
        shape.job = SimJob::of_seed(seed);
        if shape.job != SimJob::Bids {
            // The example jobs read generated streams (their references read the same).
            shape.input = Input::Generated;
            // Their checkpoints carry far more state (join buffers, whole windows) and take
            // up to seconds of simulated time at high parallelism: a timeout drawn for `bids`
            // would decline every one of them, which is the promised behaviour of a timeout
            // set too short (the job restarts until it gives up), not a fault Weir survives.
            shape.checkpoint_timeout_ms = None;
        }
        // Three in four seeds of `bids` over files stop with savepoints and rescale twice (drawn
        // from a stream of their own, so that no other seed's plan changes). Generated input
        // has a split per slot, so it cannot rescale.
        let mut own = Draw(mix64(seed ^ 0x5A7E_5CA1));
        if shape.job == SimJob::Bids && matches!(shape.input, Input::CsvFiles { .. }) && own.below(4) != 0 {
            let mut previous = shape.parallelism;
            for _ in 0..2 {
                let parallelism = loop {
                    let parallelism = own.range(1, total as u64) as usize;
                    if parallelism != previous {
                        break parallelism;
                    }
                };
                previous = parallelism;
                let stop_after_ms = own.range(300, (shape.job_ms() / 3).max(300));
                shape.rescale.push(Rescale { stop_after_ms, parallelism });
            }
        }
        let swarm: Vec<FaultKind> = FaultKind::ALL.into_iter().filter(|_| draw.coin()).collect();
        let kinds = if all_kinds { FaultKind::ALL.to_vec() } else { swarm };
        let count = if kinds.is_empty() { 0 } else { draw.range(1, 5) as usize };
        let job_ms = shape.job_ms();
        let faults = (0..count).map(|_| Self::draw_fault(&mut draw, &shape, &kinds, job_ms)).collect();
        FaultPlan::new(shape, kinds, faults)
    }

    fn draw_fault(draw: &mut Draw, shape: &Shape, kinds: &[FaultKind], job_ms: u64) -> Fault {
        let at_ms = 100 + draw.below(job_ms * 3 / 2);
        let worker = draw.below(shape.workers as u64) as usize;
        // The coordinator one time in three.
        let draw_node = |draw: &mut Draw| if draw.below(3) == 0 { Node::Coordinator } else { Node::Worker(worker) };
        let storage = |mode: StorageFaultMode, draw: &mut Draw| Fault::Storage {
            at_ms,
            mode,
            duration_ms: draw.range(200, 3_000),
        };
        let mut kind = draw.pick(kinds);
        // A run that stops on a damaged record does not finish (and tests nothing after it):
        // drawn a quarter as often as the other kinds.
        if kind == FaultKind::CorruptJobRecord && kinds.len() > 1 && draw.below(4) != 0 {
            let others: Vec<FaultKind> = kinds.iter().copied().filter(|&other| other != kind).collect();
            kind = draw.pick(&others);
        }
        match kind {
            FaultKind::KillWorker => Fault::KillWorker { at_ms, worker, down_ms: draw.range(100, 2_100) },
            FaultKind::KillCoordinator => Fault::KillCoordinator { at_ms, down_ms: draw.range(100, 2_100) },
            FaultKind::Partition => Fault::Partition { at_ms, worker, duration_ms: draw.range(500, 4_500) },
            FaultKind::OneWayPartition => {
                Fault::OneWayPartition { at_ms, worker, outbound: draw.coin(), duration_ms: draw.range(500, 4_500) }
            }
            FaultKind::Latency => {
                let min_ms = draw.range(10, 100);
                Fault::Latency {
                    at_ms,
                    min_ms,
                    max_ms: min_ms + draw.range(1, 150),
                    duration_ms: draw.range(500, 4_000),
                }
            }
            FaultKind::Pause => Fault::Pause { at_ms, node: draw_node(draw), duration_ms: draw.range(100, 5_000) },
            FaultKind::StorageErrors => {
                storage(StorageFaultMode { error_per_mille: draw.range(50, 300) as u32, ..Default::default() }, draw)
            }
            FaultKind::StorageSlow => {
                storage(StorageFaultMode { slow_ms: draw.range(5, 300), ..Default::default() }, draw)
            }
            FaultKind::LyingPuts => storage(
                StorageFaultMode { lying_put_per_mille: draw.range(50, 300) as u32, ..Default::default() },
                draw,
            ),
            FaultKind::ListLag => {
                storage(StorageFaultMode { list_lag_ms: draw.range(50, 1_000), ..Default::default() }, draw)
            }
            FaultKind::CorruptCheckpoint => Fault::CorruptCheckpoint {
                at_ms,
                damage: if draw.coin() { Damage::BitFlip } else { Damage::Truncate },
                file: draw.below(64) as usize,
                worker,
                down_ms: draw.range(100, 1_000),
            },
            FaultKind::StallSplit => Fault::StallSplit {
                at_ms,
                split: draw.below(shape.splits() as u64) as usize,
                duration_ms: draw.range(200, 5_000),
            },
            FaultKind::SinkCommitFails => Fault::SinkCommitFails { at_ms, count: draw.range(1, 2) as u32 },
            FaultKind::ClockJump => Fault::ClockJump { at_ms, node: draw_node(draw), jump_ms: draw.range(100, 30_000) },
            FaultKind::ClockDrift => Fault::ClockDrift {
                at_ms,
                node: draw_node(draw),
                rate_permille: if draw.coin() { draw.range(500, 950) } else { draw.range(1_050, 2_000) } as u32,
                duration_ms: draw.range(500, 5_000),
            },
            FaultKind::ConnectionReset => Fault::ConnectionReset { at_ms, node: draw_node(draw) },
            FaultKind::CorruptJobRecord => {
                let record = draw.pick(&[JobRecord::Generation, JobRecord::Lineage, JobRecord::Spec]);
                Fault::CorruptJobRecord {
                    at_ms,
                    record,
                    damage: if draw.coin() { Damage::BitFlip } else { Damage::Truncate },
                    node: if record == JobRecord::Spec { Node::Coordinator } else { Node::Worker(worker) },
                    down_ms: draw.range(100, 2_100),
                }
            }
            FaultKind::LinkReset => Fault::LinkReset { at_ms, link: draw_link(draw, worker) },
            FaultKind::LinkStall => Fault::LinkStall {
                at_ms,
                link: draw_link(draw, worker),
                opener_writes: draw.coin(),
                duration_ms: draw.range(200, 4_000),
            },
            FaultKind::LinkSlow => {
                let (a, b) = draw_pair(draw, shape, worker);
                Fault::LinkSlow { at_ms, a, b, delay_ms: draw.range(5, 100), duration_ms: draw.range(500, 4_000) }
            }
            // Armed before the first deployment (or, if the plan delays them, a restart's).
            FaultKind::DeployLate => Fault::DeployLate { at_ms: at_ms % 150, delay_ms: draw.range(500, 9_000) },
            FaultKind::StaleDeploy => Fault::StaleDeploy { at_ms: at_ms % 150, held_ms: 20_000 },
            FaultKind::RoguePeer => Fault::RoguePeer { at_ms },
            FaultKind::KillAtFileOp => Fault::KillAtFileOp {
                at_ms,
                node: draw_node(draw),
                nth: draw.range(1, 60) as u32,
                armed_ms: 5_000,
                down_ms: draw.range(100, 2_100),
            },
            FaultKind::KillAtMoment => {
                let moment = draw.pick(&Moment::ALL);
                Fault::KillAtMoment {
                    at_ms,
                    moment,
                    node: if moment.on_coordinator() { Node::Coordinator } else { Node::Worker(worker) },
                    skip: draw.below(3) as u32,
                    armed_ms: 5_000,
                    down_ms: draw.range(100, 2_100),
                }
            }
        }
    }

    /// A plan of `faults` on `shape`, made to respect the atlas: faults in start order, one at
    /// a time per target (a later one waits until the earlier one healed, plus 50 ms).
    pub fn new(shape: Shape, kinds: Vec<FaultKind>, mut faults: Vec<Fault>) -> Self {
        faults.sort_by_key(Fault::at_ms);
        let mut free_at: BTreeMap<Target, u64> = BTreeMap::new();
        for fault in &mut faults {
            let earliest = free_at.get(&fault.target()).copied().unwrap_or(0);
            if fault.at_ms() < earliest {
                fault.set_at(earliest);
            }
            free_at.insert(fault.target(), fault.end_ms() + 50);
        }
        faults.sort_by_key(Fault::at_ms);
        FaultPlan { shape, kinds, faults }
    }

    /// Does this run skew node clocks (then every node's clock starts at its own offset)?
    pub fn skews_clocks(&self) -> bool {
        self.kinds.iter().any(|kind| matches!(kind, FaultKind::ClockJump | FaultKind::ClockDrift))
    }

    /// When every fault has healed.
    pub fn heal_at_ms(&self) -> u64 {
        self.faults.iter().map(Fault::end_ms).max().unwrap_or(0)
    }

    /// The plan as one line of JSON (replay it with `--plan`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a plan always serializes")
    }

    /// A plan written by [`FaultPlan::to_json`], checked against the atlas.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let plan: FaultPlan = serde_json::from_str(text).map_err(|e| format!("not a fault plan: {e}"))?;
        let shape = &plan.shape;
        if shape.workers == 0 || shape.slots_per_worker == 0 || shape.rate == 0 || shape.events == 0 {
            return Err("a plan needs workers, slots, events and a rate".into());
        }
        if shape.parallelism == 0 || shape.parallelism > shape.workers * shape.slots_per_worker {
            return Err(format!(
                "parallelism {} does not fit {} slots",
                shape.parallelism,
                shape.workers * shape.slots_per_worker
            ));
        }
        let slots = shape.workers * shape.slots_per_worker;
        if let Some(rescale) = shape.rescale.iter().find(|r| r.parallelism == 0 || r.parallelism > slots) {
            return Err(format!("rescaling to parallelism {} does not fit {slots} slots", rescale.parallelism));
        }
        if !shape.rescale.is_empty() && (shape.job != SimJob::Bids || shape.input == Input::Generated) {
            return Err("only the bids job over CSV files rescales (generated input has a split per slot)".into());
        }
        for fault in &plan.faults {
            let ends = match fault {
                Fault::LinkSlow { a, b, .. } => vec![*a, *b],
                Fault::LinkReset { link: Link::Control(worker), .. }
                | Fault::LinkStall { link: Link::Control(worker), .. } => vec![Node::Worker(*worker)],
                _ => Vec::new(),
            };
            let bad_end = ends.iter().any(|end| matches!(end, Node::Worker(w) if *w >= shape.workers));
            let bad_worker = bad_end || matches!(fault.target(), Target::Node(Node::Worker(w)) if w >= shape.workers);
            let bad_split = matches!(fault.target(), Target::Split(s) if s >= shape.splits());
            if bad_worker || bad_split {
                return Err(format!("fault `{fault}` names a node or split the shape does not have"));
            }
        }
        Ok(FaultPlan::new(plan.shape, plan.kinds, plan.faults))
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shape:  {}", self.shape)?;
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        writeln!(f, "  kinds:  {}", if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") })?;
        if self.faults.is_empty() {
            return write!(f, "  faults: none");
        }
        write!(f, "  faults:")?;
        for fault in &self.faults {
            write!(f, "\n    {fault}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_within_the_atlas_and_replayable() {
        let mut kinds_seen = std::collections::BTreeSet::new();
        for seed in 0..500 {
            let plan = FaultPlan::from_seed(seed);
            assert_eq!(plan, FaultPlan::from_seed(seed));
            assert_eq!(FaultPlan::from_json(&plan.to_json()).unwrap(), plan);
            let shape = &plan.shape;
            assert!((2..=4).contains(&shape.workers) && (1..=3).contains(&shape.slots_per_worker));
            assert!(shape.parallelism >= 1 && shape.parallelism <= shape.workers * shape.slots_per_worker);
            assert!(plan.faults.len() <= 5);
            assert!(plan.faults.windows(2).all(|w| w[0].at_ms() <= w[1].at_ms()));
            for fault in &plan.faults {
                assert!(plan.kinds.contains(&fault.kind()), "{fault} drawn although its kind is off");
                kinds_seen.insert(fault.kind());
            }
            for (i, a) in plan.faults.iter().enumerate() {
                for b in &plan.faults[i + 1..] {
                    let overlap = a.at_ms() < b.end_ms() + 50 && b.at_ms() < a.end_ms() + 50;
                    assert!(a.target() != b.target() || !overlap, "overlapping faults on one target: {plan}");
                }
            }
        }
        assert_eq!(kinds_seen.len(), FaultKind::ALL.len(), "every kind is drawn by some seed");
        let moments: std::collections::BTreeSet<Moment> = (0..500)
            .flat_map(|seed| FaultPlan::from_seed(seed).faults)
            .filter_map(|fault| match fault {
                Fault::KillAtMoment { moment, node, .. } => {
                    assert_eq!(node == Node::Coordinator, moment.on_coordinator(), "{moment} aimed at {node}");
                    Some(moment)
                }
                _ => None,
            })
            .collect();
        assert_eq!(moments.len(), Moment::ALL.len(), "every moment is aimed at by some seed");
        let rescaling: Vec<u64> =
            (0..200).filter(|&seed| !FaultPlan::from_seed(seed).shape.rescale.is_empty()).collect();
        assert!(rescaling.len() >= 5, "some seeds of 0..200 stop with savepoints and rescale: {rescaling:?}");
        for seed in rescaling {
            let shape = FaultPlan::from_seed(seed).shape;
            assert!(shape.job == SimJob::Bids && shape.input != Input::Generated, "{shape}");
            let mut previous = shape.parallelism;
            for rescale in &shape.rescale {
                assert!(
                    rescale.parallelism != previous && rescale.parallelism <= shape.workers * shape.slots_per_worker
                );
                previous = rescale.parallelism;
            }
        }
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let mut plan = FaultPlan::from_seed(3);
        plan.faults = vec![Fault::KillWorker { at_ms: 10, worker: 9, down_ms: 10 }];
        let error = FaultPlan::from_json(&plan.to_json()).unwrap_err();
        assert!(error.contains("worker 9"), "{error}");
        assert!(FaultPlan::from_json("{").unwrap_err().contains("not a fault plan"));
        let mut plan = FaultPlan::from_seed(3);
        plan.faults.clear();
        plan.shape.input = Input::Generated;
        plan.shape.rescale = vec![Rescale { stop_after_ms: 500, parallelism: 1 }];
        let error = FaultPlan::from_json(&plan.to_json()).unwrap_err();
        assert!(error.contains("only the bids job over CSV files rescales"), "{error}");
    }
}
