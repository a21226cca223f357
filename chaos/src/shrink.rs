//! Shrinking: from a failing fault plan to a minimal one that still fails.
//!
//! A purpose-built reducer rather than proptest's: a simulated run is a black box that takes
//! seconds, and a plan is a short list, so a greedy pass is both cheap and effective. It drops
//! faults one at a time (keeping each drop that still fails), then halves the duration of each
//! remaining fault while the run still fails. The seed stays fixed, so every candidate is a
//! deterministic run and the result replays with `--seed N --plan '<json>'`.

use crate::faults::FaultPlan;

/// Shrinks `plan`, which `fails`, to a plan that still `fails` and from which no single fault
/// can be dropped (and no duration halved) without the failure going away. `fails` is called
/// once per candidate; `progress` sees each accepted step.
pub fn shrink(
    plan: &FaultPlan,
    mut fails: impl FnMut(&FaultPlan) -> bool,
    mut progress: impl FnMut(&FaultPlan),
) -> FaultPlan {
    let mut best = plan.clone();
    // Drop faults, latest first (later faults are more often incidental).
    let mut index = best.faults.len();
    while index > 0 {
        index -= 1;
        let mut faults = best.faults.clone();
        faults.remove(index);
        let candidate = FaultPlan::new(best.shape.clone(), best.kinds.clone(), faults);
        if fails(&candidate) {
            best = candidate;
            progress(&best);
        }
    }
    // Shorten what is left.
    for index in 0..best.faults.len() {
        loop {
            let duration = best.faults[index].duration_ms();
            if duration < 100 {
                break;
            }
            let mut faults = best.faults.clone();
            faults[index] = faults[index].with_duration(duration / 2);
            let candidate = FaultPlan::new(best.shape.clone(), best.kinds.clone(), faults);
            if candidate == best || !fails(&candidate) {
                break;
            }
            best = candidate;
            progress(&best);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;

    #[test]
    fn keeps_only_the_faults_that_matter_and_shortens_them() {
        let base = FaultPlan::from_seed(1);
        let culprit = Fault::KillCoordinator { at_ms: 700, down_ms: 1_600 };
        let faults = vec![
            Fault::KillWorker { at_ms: 100, worker: 0, down_ms: 500 },
            culprit.clone(),
            Fault::StallSplit { at_ms: 900, split: 0, duration_ms: 300 },
        ];
        let plan = FaultPlan::new(base.shape.clone(), base.kinds.clone(), faults);
        // The "bug": fails whenever the coordinator is down for at least 300 ms.
        let fails = |p: &FaultPlan| {
            p.faults.iter().any(|f| matches!(f, Fault::KillCoordinator { down_ms, .. } if *down_ms >= 300))
        };
        let mut runs = 0;
        let shrunk = shrink(
            &plan,
            |p| {
                runs += 1;
                fails(p)
            },
            |_| {},
        );
        assert_eq!(shrunk.faults, vec![culprit.with_duration(400)]);
        assert!(runs <= 8, "{runs} candidate runs");
    }
}
