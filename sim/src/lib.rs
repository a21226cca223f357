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

/// The whole command line of a user's own binary, `sim` included: `my-weir sim --job NAME
/// --param k=v --seeds 0..100` runs the user's job in the simulator under faults (the binary must
/// be built with `--cfg madsim`, in its own target directory, as `cargo sim` does); every other
/// command is `weir_cluster::app::main`'s.
///
/// ```ignore
/// fn main() -> std::process::ExitCode {
///     let mut jobs = weir_cluster::jobs::builtin();
///     jobs.register(my_job());
///     weir_sim::app(jobs)
/// }
/// ```
pub fn app(registry: weir_dataflow::JobRegistry) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("sim") {
        #[cfg(not(madsim))]
        return weir_cluster::app::main(registry);
        #[cfg(madsim)]
        {
            eprintln!("error: this build runs only `sim` (it was built with --cfg madsim); build without it for the cluster commands");
            return std::process::ExitCode::from(2);
        }
    }
    #[cfg(madsim)]
    {
        let sim_args = std::iter::once(format!("{} sim", args[0])).chain(args.into_iter().skip(2)).collect();
        simulation::main_with(registry, sim_args)
    }
    #[cfg(not(madsim))]
    {
        let _ = registry;
        eprintln!(
            "error: `sim` runs inside the deterministic simulator: build this binary with --cfg madsim in a target \
             directory of its own, e.g. `cargo run --config 'build.rustflags=[\"--cfg\", \"madsim\"]' --config \
             'build.target-dir=\"target/sim\"' … -- sim --job NAME --seeds 0..100`"
        );
        std::process::ExitCode::from(2)
    }
}
