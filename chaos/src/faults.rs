//! Fault plans: which faults a simulated run injects, and when, derived from its seed.
//!
//! A plan is pure data, printed with the seed, so that a failing run is a complete bug report:
//! the same seed gives the same plan and (in the simulator) the same run. Every fault here is
//! one the cluster claims to survive with exactly-once output: worker processes killed and
//! restarted at any moment (including mid-checkpoint), and a worker cut off from the network
//! for a while. All faults heal by [`FaultPlan::heal_at_ms`].

use std::fmt;

use weir_core::keygroup::mix64;

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill worker `worker` at `at_ms` and restart it `down_ms` later.
    KillWorker {
        /// When, in simulated ms from the start.
        at_ms: u64,
        /// Which worker (0-based).
        worker: usize,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Kill the coordinator at `at_ms` and restart it `down_ms` later (it resumes the job from
    /// the checkpoint store).
    KillCoordinator {
        /// When.
        at_ms: u64,
        /// How long it stays down.
        down_ms: u64,
    },
    /// Cut worker `worker` off the network at `at_ms` for `duration_ms`.
    Partition {
        /// When.
        at_ms: u64,
        /// Which worker.
        worker: usize,
        /// How long.
        duration_ms: u64,
    },
}

impl Fault {
    /// When the fault starts.
    pub fn at_ms(&self) -> u64 {
        match self {
            Fault::KillWorker { at_ms, .. } | Fault::KillCoordinator { at_ms, .. } | Fault::Partition { at_ms, .. } => {
                *at_ms
            }
        }
    }
    /// The node the fault hits: a worker's index, or `None` for the coordinator.
    pub fn target(&self) -> Option<usize> {
        match self {
            Fault::KillWorker { worker, .. } | Fault::Partition { worker, .. } => Some(*worker),
            Fault::KillCoordinator { .. } => None,
        }
    }

    fn delay_to(&mut self, start_ms: u64) {
        match self {
            Fault::KillWorker { at_ms, .. } | Fault::KillCoordinator { at_ms, .. } | Fault::Partition { at_ms, .. } => {
                *at_ms = start_ms
            }
        }
    }

    /// When the fault ends.
    pub fn end_ms(&self) -> u64 {
        match self {
            Fault::KillWorker { at_ms, down_ms, .. } | Fault::KillCoordinator { at_ms, down_ms } => at_ms + down_ms,
            Fault::Partition { at_ms, duration_ms, .. } => at_ms + duration_ms,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillWorker { at_ms, worker, down_ms } => {
                write!(f, "at {at_ms} ms kill worker {worker}, restart after {down_ms} ms")
            }
            Fault::KillCoordinator { at_ms, down_ms } => {
                write!(f, "at {at_ms} ms kill the coordinator, restart after {down_ms} ms")
            }
            Fault::Partition { at_ms, worker, duration_ms } => {
                write!(f, "at {at_ms} ms partition worker {worker} for {duration_ms} ms")
            }
        }
    }
}

/// The faults of one run, in start order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The faults.
    pub faults: Vec<Fault>,
}

impl FaultPlan {
    /// The plan of `seed` for `workers` workers over a job of about `job_ms` simulated ms.
    pub fn from_seed(seed: u64, workers: usize, job_ms: u64) -> Self {
        assert!(workers > 0 && job_ms > 0);
        let mut state = mix64(seed ^ 0xFA17_FA17);
        let mut next = |bound: u64| {
            state = mix64(state);
            state % bound.max(1)
        };
        let count = 1 + next(3) as usize;
        let mut faults: Vec<Fault> = (0..count)
            .map(|_| {
                let at_ms = 100 + next(job_ms);
                let worker = next(workers as u64) as usize;
                match next(6) {
                    0 | 1 => Fault::Partition { at_ms, worker, duration_ms: 500 + next(4_000) },
                    2 => Fault::KillCoordinator { at_ms, down_ms: 100 + next(2_000) },
                    _ => Fault::KillWorker { at_ms, worker, down_ms: 100 + next(2_000) },
                }
            })
            .collect();
        faults.sort_by_key(|f| f.at_ms());
        // One fault at a time per node: a node is killed while up and restarted while down, a
        // partition is not healed early by an overlapping one (as a real fault injector does).
        let mut free_at: std::collections::BTreeMap<Option<usize>, u64> = Default::default();
        for fault in &mut faults {
            let target = fault.target();
            let earliest = free_at.get(&target).copied().unwrap_or(0);
            if fault.at_ms() < earliest {
                fault.delay_to(earliest);
            }
            free_at.insert(target, fault.end_ms() + 50);
        }
        faults.sort_by_key(|f| f.at_ms());
        FaultPlan { faults }
    }

    /// When every fault has healed.
    pub fn heal_at_ms(&self) -> u64 {
        self.faults.iter().map(Fault::end_ms).max().unwrap_or(0)
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.faults.is_empty() {
            return write!(f, "no faults");
        }
        for (i, fault) in self.faults.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{fault}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_bounded() {
        for seed in 0..200 {
            let plan = FaultPlan::from_seed(seed, 3, 2_000);
            assert_eq!(plan, FaultPlan::from_seed(seed, 3, 2_000));
            assert!(!plan.faults.is_empty() && plan.faults.len() <= 3);
            assert!(plan.faults.windows(2).all(|w| w[0].at_ms() <= w[1].at_ms()));
            assert!(plan.heal_at_ms() < 3 * (100 + 2_000 + 4_500 + 50));
            for (i, a) in plan.faults.iter().enumerate() {
                for b in &plan.faults[i + 1..] {
                    let overlap = a.at_ms() < b.end_ms() + 50 && b.at_ms() < a.end_ms() + 50;
                    assert!(a.target() != b.target() || !overlap, "overlapping faults on one node: {plan}");
                }
            }
        }
    }
}
