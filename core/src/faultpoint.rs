//! Fault points and planted bugs: the few doors through which the simulator reaches inside.
//!
//! Nearly every fault the simulator injects enters through a seam production code already has:
//! processes are killed and restarted, the network is partitioned, clogged and slowed, and the
//! checkpoint store is an `object_store` that the simulator wraps, and each node's clock is
//! skewed through `rt` ([`crate::rt::skew_clock`]). Three faults have no such seam and enter
//! here: a sink whose commit fails ([`sink_commit_fault`]), a source split that stalls
//! ([`split_stalled`]), and a connection reset while both its ends live on ([`LinkFault`]).
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
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 6] = [
        PlantedBug::SinkCommitsEarly,
        PlantedBug::SnapshotBeforeEpochComplete,
        PlantedBug::RestoreSkipsRewind,
        PlantedBug::ReceiverFrontierEarly,
        PlantedBug::CheckpointCompleteEarly,
        PlantedBug::RestoreIgnoresChecksum,
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
    /// The coordinator has uploaded one slot's state of a checkpoint (others may be pending;
    /// `_metadata` is not written): a kill here is a kill mid-upload.
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
}

impl Moment {
    /// Every moment.
    pub const ALL: [Moment; 6] = [
        Moment::StateUploaded,
        Moment::CheckpointCompleted,
        Moment::Restored,
        Moment::SinkStaged,
        Moment::SinkCommitted,
        Moment::SinkRecovered,
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
    tokio::madsim::runtime::Handle::current().kill(node);
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
        let observer = state::injected().commit_observer.clone();
        if let Some(observer) = observer {
            observer(dir, attempt, newest);
        }
    }
    #[cfg(not(madsim))]
    {
        let _ = (dir, attempt, newest);
    }
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
#[derive(Debug)]
pub struct LinkFault {
    #[cfg(madsim)]
    id: u64,
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
            injected
                .links
                .insert(id, state::Link { node, addresses: (local, peer), reset: false, wakers: [None, None] });
            LinkFault { id }
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
