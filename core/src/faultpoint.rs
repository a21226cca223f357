//! Fault points and planted bugs: the few doors through which the simulator reaches inside.
//!
//! Nearly every fault the simulator injects enters through a seam production code already has:
//! processes are killed and restarted, the network is partitioned, clogged and slowed, and the
//! checkpoint store is an `object_store` that the simulator wraps, and each node's clock is
//! skewed through `rt` ([`crate::rt::skew_clock`]), and files through `fs` (a kill is a machine
//! crash: [`crash_node`]). A few faults have no such seam and enter here: a sink whose commit
//! fails ([`sink_commit_fault`]), a source split that stalls ([`split_stalled`]), a connection
//! reset, stalled or slowed while both its ends live on ([`LinkFault`]), and a `Deploy` that
//! reaches its worker late or after newer ones ([`deploy_delivery`]).
//! And kills can be aimed: a node that reaches an armed [`Moment`] of the exactly-once protocol
//! (mid-upload, between completion and commit, between commit and its acknowledgement, during
//! recovery) dies there ([`reached`], [`passed`]).
//!
//! The same door lets the simulator prove that it finds bugs: each [`PlantedBug`] is a
//! deliberately broken variant of one protocol step, switched on for one simulated run with
//! [`plant`]. Outside `--cfg madsim` the queries here are constant `false` / `Ok` and the
//! switches do not exist: a release build contains neither the fault state nor, after
//! constant folding, the planted code paths.

use std::fmt;

/// A deliberately broken variant of one step of Weir's exactly-once protocol. Each is caught by
/// the simulator's oracles within a bounded number of seeds (`cargo sim -- --prove-planted`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlantedBug {
    /// Sinks commit their staged output as soon as their slot's snapshot is taken, before the
    /// checkpoint is complete.
    SinkCommitsEarly,
    /// The window operator snapshots epoch `n` as soon as a record of epoch `n + 1` arrives,
    /// before its input frontier has passed epoch `n`.
    SnapshotBeforeEpochComplete,
    /// Recovery restores every split's offset but one, which starts over from its beginning.
    RestoreSkipsRewind,
    /// An exchange receiver advances its frontier from every sender but the last.
    ReceiverFrontierEarly,
    /// The coordinator completes a checkpoint when all slots but one have acknowledged it.
    CheckpointCompleteEarly,
    /// Restore accepts a state file whose checksum does not match its metadata.
    RestoreIgnoresChecksum,
    /// The local checkpoint store makes only `_metadata` durable, not the state files it
    /// names: a crash can leave a complete-looking checkpoint without its state.
    StoreSkipsFsync,
    /// A failed data connection between two workers is not reported: the attempt carries on
    /// without the link (the behaviour before link failures ended attempts).
    LinkFailureSwallowed,
    /// The output fence accepts every deployment generation, so a stale deployment can roll
    /// the output back.
    FenceAcceptsAll,
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 9] = [
        PlantedBug::SinkCommitsEarly,
        PlantedBug::SnapshotBeforeEpochComplete,
        PlantedBug::RestoreSkipsRewind,
        PlantedBug::ReceiverFrontierEarly,
        PlantedBug::CheckpointCompleteEarly,
        PlantedBug::RestoreIgnoresChecksum,
        PlantedBug::StoreSkipsFsync,
        PlantedBug::LinkFailureSwallowed,
        PlantedBug::FenceAcceptsAll,
    ];

    /// The bug's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::SinkCommitsEarly => "sink-commits-early",
            PlantedBug::SnapshotBeforeEpochComplete => "snapshot-before-epoch-complete",
            PlantedBug::RestoreSkipsRewind => "restore-skips-rewind",
            PlantedBug::ReceiverFrontierEarly => "receiver-frontier-early",
            PlantedBug::CheckpointCompleteEarly => "checkpoint-complete-early",
            PlantedBug::RestoreIgnoresChecksum => "restore-ignores-checksum",
            PlantedBug::StoreSkipsFsync => "store-skips-fsync",
            PlantedBug::LinkFailureSwallowed => "link-failure-swallowed",
            PlantedBug::FenceAcceptsAll => "fence-accepts-all",
        }
    }

    /// The bug named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(madsim)]
mod state {
    use super::PlantedBug;
    use std::collections::BTreeMap;
    use std::sync::{Mutex, MutexGuard};

    /// What the simulator has switched on for the current run.
    #[derive(Default)]
    pub(super) struct Injected {
        pub(super) planted: Option<PlantedBug>,
        pub(super) sink_commit_failures: u32,
        /// Split index → simulated instant until which it yields nothing.
        pub(super) stalled_splits: BTreeMap<usize, crate::rt::Instant>,
        /// Open connections, by registration number.
        pub(super) links: BTreeMap<u64, Link>,
        /// The next registration number (never reused, even across runs).
        pub(super) next_link: u64,
        /// Told of every sink commit as it happens (the simulator's commit oracle).
        pub(super) commit_observer: Option<super::CommitObserver>,
        /// Armed kills, by arming number.
        pub(super) kills: BTreeMap<u64, Kill>,
        pub(super) next_kill: u64,
        /// Pairs of node addresses whose connections are slowed, with the delay per write.
        pub(super) slow_links: Vec<((std::net::IpAddr, std::net::IpAddr), std::time::Duration)>,
        /// The next `Deploy` a worker receives is processed this much later.
        pub(super) next_deploy_delay: Option<std::time::Duration>,
        /// The next `Deploy` any worker receives is held back (set aside) until another
        /// attempt commits output.
        pub(super) hold_next_deploy: bool,
        /// The held `Deploy`: its attempt token and what releases it.
        pub(super) held_deploy: Option<(u64, std::sync::Arc<tokio::sync::Notify>)>,
        /// Another attempt has committed output since the `Deploy` was held.
        pub(super) held_deploy_overtaken: bool,
        /// Protocol violations seen (an honest cluster has none).
        pub(super) violations: Vec<String>,
        /// Data-link failures seen: (attempt, the node that saw it, when).
        pub(super) link_failures: Vec<(u64, tokio::madsim::task::NodeId, crate::rt::Instant)>,
        /// When each node stopped each attempt, and when nodes crashed.
        pub(super) stopped: BTreeMap<(tokio::madsim::task::NodeId, u64), crate::rt::Instant>,
        pub(super) crashes: Vec<(tokio::madsim::task::NodeId, crate::rt::Instant)>,
        /// Armed crashes at a node's n-th file operation: (node, operations left, fired).
        pub(super) file_op_kills: Vec<(tokio::madsim::task::NodeId, u32, std::sync::Arc<tokio::sync::Notify>)>,
    }

    /// A kill armed for the `skip + 1`-th time `node` reaches `moment`.
    pub(super) struct Kill {
        pub(super) moment: super::Moment,
        pub(super) node: tokio::madsim::task::NodeId,
        pub(super) skip: u32,
        pub(super) fired: std::sync::Arc<tokio::sync::Notify>,
    }

    /// One open connection end.
    pub(super) struct Link {
        /// The node it lives on.
        pub(super) node: tokio::madsim::task::NodeId,
        /// Its own address and its peer's (the peer's end has them the other way round).
        pub(super) addresses: (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>),
        /// Reset by the simulator: every read and write fails from now on.
        pub(super) reset: bool,
        /// Stalled by the simulator: writes from this end wait until it is healed.
        pub(super) stalled: bool,
        /// The tasks waiting to read and to write, woken by a reset.
        pub(super) wakers: [Option<std::task::Waker>; 2],
    }

    pub(super) fn injected() -> MutexGuard<'static, Injected> {
        static STATE: Mutex<Injected> = Mutex::new(Injected {
            planted: None,
            sink_commit_failures: 0,
            stalled_splits: BTreeMap::new(),
            links: BTreeMap::new(),
            next_link: 0,
            commit_observer: None,
            kills: BTreeMap::new(),
            next_kill: 0,
            slow_links: Vec::new(),
            next_deploy_delay: None,
            hold_next_deploy: false,
            held_deploy: None,
            held_deploy_overtaken: false,
            violations: Vec::new(),
            link_failures: Vec::new(),
            stopped: BTreeMap::new(),
            crashes: Vec::new(),
            file_op_kills: Vec::new(),
        });
        STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Is `bug` planted in this run? Always `false` outside the simulator.
#[inline(always)]
pub fn planted(bug: PlantedBug) -> bool {
    #[cfg(madsim)]
    {
        state::injected().planted == Some(bug)
    }
    #[cfg(not(madsim))]
    {
        let _ = bug;
        false
    }
}

/// Fails the sink commit that calls it if the simulator asked for commit failures.
#[inline(always)]
pub fn sink_commit_fault() -> std::io::Result<()> {
    #[cfg(madsim)]
    {
        let mut injected = state::injected();
        if injected.sink_commit_failures > 0 {
            injected.sink_commit_failures -= 1;
            return Err(std::io::Error::other("injected fault: sink commit failed"));
        }
    }
    Ok(())
}

/// A moment of the exactly-once protocol at which the simulator can kill the node reaching it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Moment {
    /// The coordinator has learnt that one slot's state of a checkpoint is uploaded (others
    /// may be pending; `_metadata` is not written): a kill here is a kill mid-checkpoint.
    StateUploaded,
    /// The coordinator has written a checkpoint's `_metadata` and not yet told the sinks to
    /// commit.
    CheckpointCompleted,
    /// The coordinator has chosen (and recorded) the checkpoint to restore and not yet deployed.
    Restored,
    /// A sink has opened a staged file for an epoch (staged, not committed).
    SinkStaged,
    /// A slot has committed its sinks' output and not yet acknowledged the commit.
    SinkCommitted,
    /// A worker has brought a slot's sink directories in line with the restored checkpoint and
    /// not yet started the slot.
    SinkRecovered,
    /// A slot has uploaded its state file of a checkpoint to the store and not yet reported it
    /// to the coordinator (a kill here leaves a file no `_metadata` names).
    StateStored,
}

impl Moment {
    /// Every moment.
    pub const ALL: [Moment; 7] = [
        Moment::StateUploaded,
        Moment::CheckpointCompleted,
        Moment::Restored,
        Moment::SinkStaged,
        Moment::SinkCommitted,
        Moment::SinkRecovered,
        Moment::StateStored,
    ];

    /// The moment's name in plans.
    pub fn name(self) -> &'static str {
        match self {
            Moment::StateUploaded => "state-uploaded",
            Moment::CheckpointCompleted => "checkpoint-completed",
            Moment::Restored => "restored",
            Moment::SinkStaged => "sink-staged",
            Moment::SinkCommitted => "sink-committed",
            Moment::SinkRecovered => "sink-recovered",
            Moment::StateStored => "state-stored",
        }
    }

    /// Reached by the coordinator (otherwise by workers).
    pub fn on_coordinator(self) -> bool {
        matches!(self, Moment::StateUploaded | Moment::CheckpointCompleted | Moment::Restored)
    }
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An asynchronous protocol step has reached `moment`. If the simulator armed a kill for it on
/// this node, the node is killed and this future never completes: nothing after it runs.
/// Outside the simulator it is ready at once.
#[inline(always)]
pub async fn reached(moment: Moment) {
    #[cfg(madsim)]
    {
        if kill_if_armed(moment) {
            std::future::pending::<()>().await;
        }
    }
    #[cfg(not(madsim))]
    {
        let _ = moment;
    }
}

/// A synchronous protocol step has passed `moment`. If the simulator armed a kill for it on this
/// node, the node is killed: its tasks are dropped the next time one of them *waits* (an await
/// that is not ready at once), so the current task may go on for a while — as a process killed
/// by a signal that lands a little after the moment. Where the step is async, [`reached`] is
/// exact. Nothing outside the simulator.
#[inline(always)]
pub fn passed(moment: Moment) {
    #[cfg(madsim)]
    {
        kill_if_armed(moment);
    }
    #[cfg(not(madsim))]
    {
        let _ = moment;
    }
}

#[cfg(madsim)]
fn kill_if_armed(moment: Moment) -> bool {
    let node = tokio::madsim::plugin::node();
    let fired = {
        let mut injected = state::injected();
        let armed = injected.kills.iter_mut().find(|(_, kill)| kill.moment == moment && kill.node == node);
        let id = match armed {
            None => return false,
            Some((_, kill)) if kill.skip > 0 => {
                kill.skip -= 1;
                return false;
            }
            Some((&id, _)) => id,
        };
        injected.kills.remove(&id).expect("armed").fired
    };
    crash_node(node);
    fired.notify_one();
    true
}

/// Arms a kill of `node` the `skip + 1`-th time it reaches `moment`; the returned notification
/// fires when it did (then the simulator restarts the node). Disarm with [`disarm_kill`].
#[cfg(madsim)]
pub fn arm_kill(moment: Moment, node: tokio::madsim::task::NodeId, skip: u32) -> std::sync::Arc<tokio::sync::Notify> {
    let fired = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut injected = state::injected();
    let id = injected.next_kill;
    injected.next_kill += 1;
    injected.kills.insert(id, state::Kill { moment, node, skip, fired: fired.clone() });
    fired
}

/// Disarms the kill whose notification is `fired` (if it has not fired).
#[cfg(madsim)]
pub fn disarm_kill(fired: &std::sync::Arc<tokio::sync::Notify>) {
    state::injected().kills.retain(|_, kill| !std::sync::Arc::ptr_eq(&kill.fired, fired));
}

/// What the simulator is told of each sink commit: the sink's directory, the deployment
/// attempt whose staged output is committed, and the newest epoch among it.
#[cfg(madsim)]
pub type CommitObserver = std::sync::Arc<dyn Fn(&std::path::Path, u64, u64) + Send + Sync>;

/// A sink is about to commit output that attempt `attempt` staged, of epochs up to `newest`, in
/// `dir`: the simulator checks, at this very moment, that a checkpoint `>= newest` of that same
/// attempt has completed (only such a checkpoint covers the output). Nothing outside the
/// simulator.
#[inline(always)]
pub fn committing(dir: &std::path::Path, attempt: u64, newest: u64) {
    #[cfg(madsim)]
    {
        let observer = {
            let mut injected = state::injected();
            // Another attempt commits: the held `Deploy` is now stale.
            if injected.held_deploy.as_ref().is_some_and(|(held, _)| *held != attempt) {
                injected.held_deploy_overtaken = true;
            }
            injected.commit_observer.clone()
        };
        if let Some(observer) = observer {
            observer(dir, attempt, newest);
        }
    }
    #[cfg(not(madsim))]
    {
        let _ = (dir, attempt, newest);
    }
}

/// A peer broke the protocol (`message` says how). The engine treats it as an error of the
/// attempt (never a panic); the simulator, where every peer is honest, also records it so that
/// the run fails: an honest cluster never violates its own protocol.
#[inline(always)]
pub fn protocol_violation(message: &str) {
    #[cfg(madsim)]
    {
        state::injected().violations.push(message.to_string());
    }
    #[cfg(not(madsim))]
    {
        let _ = message;
    }
}

/// A data connection of `attempt` failed on this node (seen before it is reported, so that the
/// simulator can check that every link failure ends its attempt — reported or not).
#[inline(always)]
pub fn link_failed(attempt: u64) {
    #[cfg(madsim)]
    {
        let node = tokio::madsim::plugin::node();
        state::injected().link_failures.push((attempt, node, crate::rt::true_now()));
    }
    #[cfg(not(madsim))]
    {
        let _ = attempt;
    }
}

/// This node stopped its slots of `attempt`.
#[inline(always)]
pub fn attempt_stopped(attempt: u64) {
    #[cfg(madsim)]
    {
        let node = tokio::madsim::plugin::node();
        state::injected().stopped.entry((node, attempt)).or_insert_with(crate::rt::true_now);
    }
    #[cfg(not(madsim))]
    {
        let _ = attempt;
    }
}

/// Link failures whose attempt did not stop on the node that saw them within `bound` (nor the
/// node crash within it), judged at true instant `now`: the engine promises that every link
/// failure ends its attempt.
#[cfg(madsim)]
pub fn unended_link_failures(bound: std::time::Duration, now: crate::rt::Instant) -> Vec<String> {
    let injected = state::injected();
    injected
        .link_failures
        .iter()
        .filter(|(attempt, node, at)| {
            let deadline = *at + bound;
            let stopped = injected.stopped.get(&(*node, *attempt)).is_some_and(|when| *when <= deadline);
            let crashed =
                injected.crashes.iter().any(|(crashed, when)| crashed == node && *when >= *at && *when <= deadline);
            !stopped && !crashed && deadline <= now
        })
        .map(|(attempt, node, _)| {
            format!("attempt {attempt} went on on node {node} for {bound:?} after a data connection failed")
        })
        .collect()
}

/// The protocol violations recorded in this run.
#[cfg(madsim)]
pub fn protocol_violations() -> Vec<String> {
    state::injected().violations.clone()
}

/// Tells `observer` of every sink commit from now on (until the next [`reset`]).
#[cfg(madsim)]
pub fn observe_commits(observer: CommitObserver) {
    state::injected().commit_observer = Some(observer);
}

/// Does split `split` yield nothing right now (an injected stall)?
#[inline(always)]
pub fn split_stalled(split: usize) -> bool {
    #[cfg(madsim)]
    {
        let mut injected = state::injected();
        match injected.stalled_splits.get(&split) {
            Some(&until) if crate::rt::true_now() < until => true,
            Some(_) => {
                injected.stalled_splits.remove(&split);
                false
            }
            None => false,
        }
    }
    #[cfg(not(madsim))]
    {
        let _ = split;
        false
    }
}

/// One end of a network connection, registered so that the simulator can reset it: the
/// connection wrapper asks [`LinkFault::poll_reset`] before every read and write. Outside the
/// simulator it is empty and never reset.
pub struct LinkFault {
    #[cfg(madsim)]
    id: u64,
    /// The pair of addresses (for slowed links).
    #[cfg(madsim)]
    ends: Option<(std::net::IpAddr, std::net::IpAddr)>,
    /// A write being slowed down.
    #[cfg(madsim)]
    delay: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl fmt::Debug for LinkFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkFault")
    }
}

/// Which way a connection is used (a reset wakes a task blocked either way).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LinkDirection {
    /// Reading.
    Read = 0,
    /// Writing.
    Write = 1,
}

impl LinkFault {
    /// Registers a connection end opened by the current node, between `local` and `peer`.
    pub fn register(local: Option<std::net::SocketAddr>, peer: Option<std::net::SocketAddr>) -> Self {
        #[cfg(madsim)]
        {
            let mut injected = state::injected();
            let id = injected.next_link;
            injected.next_link += 1;
            let node = tokio::madsim::plugin::node();
            injected.links.insert(
                id,
                state::Link { node, addresses: (local, peer), reset: false, stalled: false, wakers: [None, None] },
            );
            let ends = local.zip(peer).map(|(local, peer)| (local.ip(), peer.ip()));
            LinkFault { id, ends, delay: None }
        }
        #[cfg(not(madsim))]
        {
            let _ = (local, peer);
            LinkFault {}
        }
    }

    /// Has the simulator reset this connection? If not, the task of `context` is woken when it
    /// does. Always `false` outside the simulator.
    #[inline(always)]
    pub fn poll_reset(&self, context: &mut std::task::Context<'_>, direction: LinkDirection) -> bool {
        #[cfg(madsim)]
        {
            let mut injected = state::injected();
            let replaced = match injected.links.get_mut(&self.id) {
                Some(link) if link.reset => return true,
                Some(link) => link.wakers[direction as usize].replace(context.waker().clone()),
                None => None,
            };
            drop(injected);
            drop(replaced); // outside the lock, like every waker this module lets go of
            false
        }
        #[cfg(not(madsim))]
        {
            let _ = (context, direction);
            false
        }
    }

    /// May a write go ahead now? `Ready(true)`: the connection was reset; `Ready(false)`: go
    /// ahead; `Pending`: the simulator stalls or slows this end's writes (the task of `context`
    /// is woken when it may try again). Always `Ready(false)` outside the simulator.
    #[inline(always)]
    pub fn poll_write_gate(&mut self, context: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        #[cfg(madsim)]
        {
            use std::task::Poll;
            let slow = {
                let mut injected = state::injected();
                let slow = self.ends.and_then(|(a, b)| {
                    injected
                        .slow_links
                        .iter()
                        .find(|((x, y), _)| (*x, *y) == (a, b) || (*x, *y) == (b, a))
                        .map(|(_, d)| *d)
                });
                let replaced = match injected.links.get_mut(&self.id) {
                    Some(link) if link.reset => return Poll::Ready(true),
                    Some(link) if link.stalled => {
                        let replaced = link.wakers[LinkDirection::Write as usize].replace(context.waker().clone());
                        drop(injected);
                        drop(replaced);
                        return Poll::Pending;
                    }
                    Some(link) => link.wakers[LinkDirection::Write as usize].replace(context.waker().clone()),
                    None => None,
                };
                drop(injected);
                drop(replaced);
                slow
            };
            match (&mut self.delay, slow) {
                (Some(delay), _) => match std::future::Future::poll(delay.as_mut(), context) {
                    Poll::Ready(()) => {
                        self.delay = None;
                        Poll::Ready(false)
                    }
                    Poll::Pending => Poll::Pending,
                },
                (None, Some(slow)) => {
                    let mut delay: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                        Box::pin(crate::rt::true_sleep(slow));
                    match std::future::Future::poll(delay.as_mut(), context) {
                        Poll::Ready(()) => Poll::Ready(false),
                        Poll::Pending => {
                            self.delay = Some(delay);
                            Poll::Pending
                        }
                    }
                }
                (None, None) => Poll::Ready(false),
            }
        }
        #[cfg(not(madsim))]
        {
            let _ = context;
            std::task::Poll::Ready(false)
        }
    }
}

#[cfg(madsim)]
impl Drop for LinkFault {
    fn drop(&mut self) {
        let link = state::injected().links.remove(&self.id);
        drop(link); // its wakers, outside the lock
    }
}

/// Resets every open connection of `node`, as a TCP RST does: reads and writes on both ends
/// (the node's and its peers') fail with `ConnectionReset` from now on. Returns how many
/// connections were reset. The node itself, its listeners and new connections are untouched.
#[cfg(madsim)]
pub fn reset_links(node: tokio::madsim::task::NodeId) -> usize {
    let mut wakers = Vec::new();
    let count = {
        let mut injected = state::injected();
        let ends: Vec<_> = injected
            .links
            .values()
            .filter(|link| link.node == node && !link.reset)
            .map(|link| link.addresses)
            .collect();
        let peer_ends: Vec<_> = ends.iter().map(|&(local, peer)| (peer, local)).collect();
        for link in injected.links.values_mut() {
            let hit = link.node == node || peer_ends.contains(&link.addresses);
            if hit && !link.reset {
                link.reset = true;
                wakers.extend(link.wakers.iter_mut().filter_map(Option::take));
            }
        }
        ends.len()
    };
    // Woken outside the lock: a woken task may drop its connection, which takes the lock.
    for waker in wakers {
        waker.wake();
    }
    count
}

/// The open connections, each once, as the addresses of its two ends, oldest first.
#[cfg(madsim)]
pub fn open_connections() -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
    let injected = state::injected();
    let mut seen = std::collections::BTreeSet::new();
    let mut connections = Vec::new();
    for link in injected.links.values().filter(|link| !link.reset) {
        if let (Some(local), Some(peer)) = link.addresses {
            let key = if local <= peer { (local, peer) } else { (peer, local) };
            if seen.insert(key) {
                connections.push((local, peer));
            }
        }
    }
    connections
}

/// Resets the connection between addresses `a` and `b` (both ends), as a TCP RST on that one
/// connection would. Returns whether it was open.
#[cfg(madsim)]
pub fn reset_connection(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    let mut wakers = Vec::new();
    let found = {
        let mut injected = state::injected();
        let mut found = false;
        for link in injected.links.values_mut() {
            if !link.reset && (link.addresses == (Some(a), Some(b)) || link.addresses == (Some(b), Some(a))) {
                link.reset = true;
                found = true;
                wakers.extend(link.wakers.iter_mut().filter_map(Option::take));
            }
        }
        found
    };
    for waker in wakers {
        waker.wake();
    }
    found
}

/// Stalls one direction of one connection: writes from the end at `from` to the end at `to`
/// wait (the other direction flows) until [`unstall_links`]. Returns whether it was open.
#[cfg(madsim)]
pub fn stall_connection(from: std::net::SocketAddr, to: std::net::SocketAddr) -> bool {
    let mut injected = state::injected();
    let end = injected.links.values_mut().find(|link| !link.reset && link.addresses == (Some(from), Some(to)));
    match end {
        Some(end) => {
            end.stalled = true;
            true
        }
        None => false,
    }
}

/// Ends every stall.
#[cfg(madsim)]
pub fn unstall_links() {
    let wakers: Vec<std::task::Waker> = {
        let mut injected = state::injected();
        injected
            .links
            .values_mut()
            .filter_map(|link| {
                let was_stalled = std::mem::replace(&mut link.stalled, false);
                if was_stalled {
                    link.wakers[LinkDirection::Write as usize].take()
                } else {
                    None
                }
            })
            .collect()
    };
    for waker in wakers {
        waker.wake();
    }
}

/// Slows every write on connections between `a` and `b` (either way) by `delay`, until
/// [`heal_slow_links`].
#[cfg(madsim)]
pub fn slow_link(a: std::net::IpAddr, b: std::net::IpAddr, delay: std::time::Duration) {
    state::injected().slow_links.push(((a, b), delay));
}

/// Ends every slowdown.
#[cfg(madsim)]
pub fn heal_slow_links() {
    state::injected().slow_links.clear();
}

/// How a worker is to process a `Deploy` it just received.
#[derive(Debug)]
pub enum DeployDelivery {
    /// Now.
    Now,
    /// After this delay (a slow deployment: the worker's connection to the coordinator waits).
    After(std::time::Duration),
    /// Set aside until the notification fires (the message reaches the worker late, after newer
    /// ones): the simulator's aimed stale deployment.
    Held(std::sync::Arc<tokio::sync::Notify>),
}

/// The simulator's say on a `Deploy` of attempt `attempt_token` reaching this node: outside the
/// simulator always [`DeployDelivery::Now`].
#[inline(always)]
pub fn deploy_delivery(attempt_token: u64) -> DeployDelivery {
    #[cfg(madsim)]
    {
        let node = tokio::madsim::plugin::node();
        let mut injected = state::injected();
        if let Some(delay) = injected.next_deploy_delay.take() {
            drop(injected);
            crate::rt::trace(&format!("deploy of attempt {attempt_token:016x} delayed {delay:?}"));
            return DeployDelivery::After(delay);
        }
        if std::mem::take(&mut injected.hold_next_deploy) {
            let release = std::sync::Arc::new(tokio::sync::Notify::new());
            injected.held_deploy = Some((attempt_token, release.clone()));
            drop(injected);
            crate::rt::trace(&format!("held the deploy of attempt {attempt_token:016x}"));
            // The node's connections break, so that the coordinator gives the attempt up at once
            // and deploys a newer one, which the held message then arrives after.
            reset_links(node);
            return DeployDelivery::Held(release);
        }
        DeployDelivery::Now
    }
    #[cfg(not(madsim))]
    {
        let _ = attempt_token;
        DeployDelivery::Now
    }
}

/// Makes the next `Deploy` a worker receives wait `delay` before it is processed.
#[cfg(madsim)]
pub fn delay_next_deploy(delay: std::time::Duration) {
    state::injected().next_deploy_delay = Some(delay);
}

/// Holds back the next `Deploy` any worker receives until [`release_held_deploy`] (the
/// simulator releases it once [`held_deploy_overtaken`]).
#[cfg(madsim)]
pub fn hold_next_deploy() {
    state::injected().hold_next_deploy = true;
}

/// Has another attempt committed output since a `Deploy` was held (so that delivering it now
/// delivers it stale)?
#[cfg(madsim)]
pub fn held_deploy_overtaken() -> bool {
    state::injected().held_deploy_overtaken
}

/// Disarms the hold, and delivers a held `Deploy` now.
#[cfg(madsim)]
pub fn release_held_deploy() {
    let release = {
        let mut injected = state::injected();
        injected.hold_next_deploy = false;
        injected.held_deploy.as_ref().map(|(_, release)| release.clone())
    };
    if let Some(release) = release {
        release.notify_one();
    }
}

/// Kills simulated node `node` as a machine crash: its tasks stop, and what it wrote to files
/// without making it durable is lost or torn ([`crate::fs`]).
#[cfg(madsim)]
pub fn crash_node(node: tokio::madsim::task::NodeId) {
    tokio::madsim::runtime::Handle::current().kill(node);
    crate::fs::sim::crash(node);
    state::injected().crashes.push((node, crate::rt::true_now()));
}

/// Arms a crash of `node` at its `nth` file operation (1 = the next) that changes something
/// (a create, write, sync, rename, link or removal): the operation does not happen, and what the
/// node had not synced is lost — a crash in the middle of whatever sequence of operations was
/// under way. The returned notification fires when it did. Disarm with [`disarm_file_op_kill`].
#[cfg(madsim)]
pub fn arm_file_op_kill(node: tokio::madsim::task::NodeId, nth: u32) -> std::sync::Arc<tokio::sync::Notify> {
    assert!(nth >= 1, "operations are counted from 1");
    let fired = std::sync::Arc::new(tokio::sync::Notify::new());
    state::injected().file_op_kills.push((node, nth, fired.clone()));
    fired
}

/// Disarms the crash whose notification is `fired` (if it has not fired).
#[cfg(madsim)]
pub fn disarm_file_op_kill(fired: &std::sync::Arc<tokio::sync::Notify>) {
    state::injected().file_op_kills.retain(|(_, _, kill)| !std::sync::Arc::ptr_eq(kill, fired));
}

/// Called by the simulated file system before every operation of `node` that changes something:
/// `true` if an armed crash hits it (the node is crashed; the operation must not happen).
#[cfg(madsim)]
pub(crate) fn crash_at_file_op(node: tokio::madsim::task::NodeId) -> bool {
    let fired = {
        let mut injected = state::injected();
        let Some(index) = injected.file_op_kills.iter().position(|(armed, _, _)| *armed == node) else {
            return false;
        };
        let left = &mut injected.file_op_kills[index].1;
        *left -= 1;
        if *left > 0 {
            return false;
        }
        injected.file_op_kills.remove(index).2
    };
    crash_node(node);
    fired.notify_one();
    true
}

/// Restarts simulated node `node` after a [`crash_node`]: its file operations work again and
/// its entry point runs afresh.
#[cfg(madsim)]
pub fn restart_node(node: tokio::madsim::task::NodeId) {
    crate::fs::sim::revive(node);
    tokio::madsim::runtime::Handle::current().restart(node);
}

/// Starts a simulated run with nothing injected and `bug` (if any) planted. Node clocks are
/// true again.
#[cfg(madsim)]
pub fn reset(bug: Option<PlantedBug>) {
    let mut injected = state::injected();
    let next_link = injected.next_link;
    // The previous run's state is dropped outside the lock (its observer may hold anything).
    let previous = std::mem::replace(&mut *injected, state::Injected { planted: bug, next_link, ..Default::default() });
    drop(injected);
    drop(previous);
    crate::rt::reset_clocks();
}

/// Makes the next `count` sink commits (in any slot) fail.
#[cfg(madsim)]
pub fn fail_sink_commits(count: u32) {
    state::injected().sink_commit_failures += count;
}

/// Makes split `split` yield nothing for `duration`.
#[cfg(madsim)]
pub fn stall_split(split: usize, duration: std::time::Duration) {
    state::injected().stalled_splits.insert(split, crate::rt::true_now() + duration);
}
