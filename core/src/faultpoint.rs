//! Fault points and planted bugs: the few doors through which the simulator reaches inside.
//!
//! Nearly every fault the simulator injects enters through a seam production code already has:
//! processes are killed and restarted, the network is partitioned, clogged and slowed, and the
//! checkpoint store is an `object_store` that the simulator wraps. Two faults have no such seam
//! and enter here: a sink whose commit fails ([`sink_commit_fault`]) and a source split that
//! stalls ([`split_stalled`]).
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
    }

    pub(super) fn injected() -> MutexGuard<'static, Injected> {
        static STATE: Mutex<Injected> =
            Mutex::new(Injected { planted: None, sink_commit_failures: 0, stalled_splits: BTreeMap::new() });
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

/// Does split `split` yield nothing right now (an injected stall)?
#[inline(always)]
pub fn split_stalled(split: usize) -> bool {
    #[cfg(madsim)]
    {
        let mut injected = state::injected();
        match injected.stalled_splits.get(&split) {
            Some(&until) if crate::rt::now() < until => true,
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

/// Starts a simulated run with nothing injected and `bug` (if any) planted.
#[cfg(madsim)]
pub fn reset(bug: Option<PlantedBug>) {
    *state::injected() = state::Injected { planted: bug, ..Default::default() };
}

/// Makes the next `count` sink commits (in any slot) fail.
#[cfg(madsim)]
pub fn fail_sink_commits(count: u32) {
    state::injected().sink_commit_failures += count;
}

/// Makes split `split` yield nothing for `duration`.
#[cfg(madsim)]
pub fn stall_split(split: usize, duration: std::time::Duration) {
    state::injected().stalled_splits.insert(split, crate::rt::now() + duration);
}
