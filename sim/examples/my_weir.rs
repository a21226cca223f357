//! A user's own Weir binary with the whole command line, `sim` included: the built-in jobs and
//! the example crate's, run by the one entry point `weir_sim::app`.
//!
//! ```sh
//! cargo run --release -p weir-sim --example my_weir -- run fraud --output /tmp/fraud --events 100000
//! cargo run --config 'build.rustflags=["--cfg", "madsim"]' --config 'build.target-dir="target/sim"' \
//!     -p weir-sim --example my_weir -- sim --job fraud --param events=20000 --seeds 0..20
//! ```

fn main() -> std::process::ExitCode {
    let mut jobs = weir_cluster::jobs::builtin();
    weir_example::register(&mut jobs);
    weir_sim::app(jobs)
}
