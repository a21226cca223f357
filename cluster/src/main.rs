//! The `weir` binary: the command line over the built-in jobs.
//!
//! Rows are many small allocations (a `Vec` of values, shared strings); mimalloc serves them
//! faster than the system allocator (docs/benchmarks.md has the figures).

#[cfg(all(not(madsim), feature = "mimalloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir_cluster::app::main(weir_cluster::jobs::builtin())
}
