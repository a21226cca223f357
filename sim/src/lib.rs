//! Weir's deterministic simulator: the real coordinator and worker code, on simulated nodes
//! and a simulated network, with faults derived from a seed.
//!
//! Built only with `--cfg madsim` (`cargo sim`). Each simulated node calls the same entry point
//! as the `weir` binary (`run_coordinator`, `run_worker`) with options parsed by the same CLI
//! parser; only the runtime (madsim) and the checkpoint backend (`memory://`) differ. A run
//! submits the main job, applies the seed's [`FaultPlan`](weir_chaos::faults::FaultPlan), heals
//! it, demands that the job finish within a bound of simulated time (liveness), and checks the
//! exactly-once oracle against the sequential reference (safety). It prints the seed, the plan,
//! a hash of the run's trace, and the verdict; the same seed gives the same hash.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(madsim)]
mod simulation;
#[cfg(madsim)]
pub use simulation::*;
