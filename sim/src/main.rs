//! `weir-sim`: replay one seed or sweep a range. Run it through `cargo sim`, which builds it
//! with `--cfg madsim` in its own target directory.
//!
//! ```sh
//! cargo sim -- --seed 42
//! cargo sim -- --seeds 0..100
//! cargo sim -- --seeds 0..5 --check-determinism
//! ```

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    weir_sim::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!("error: weir-sim runs only inside the simulator; use `cargo sim -- --seed N` (builds with --cfg madsim)");
    std::process::ExitCode::from(2)
}
