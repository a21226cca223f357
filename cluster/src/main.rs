//! The `weir` binary: the command line over the built-in jobs.

fn main() -> std::process::ExitCode {
    weir_cluster::app::main(weir_cluster::jobs::builtin())
}
