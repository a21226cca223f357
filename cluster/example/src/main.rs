//! A user's own Weir binary: the built-in jobs plus this crate's, with the whole `weir` CLI
//! (run, jobs, coordinator, worker, job, certs). Every process of a cluster runs this binary.

fn main() -> std::process::ExitCode {
    let mut jobs = weir_cluster::jobs::builtin();
    weir_example::register(&mut jobs);
    weir_cluster::app::main(jobs)
}
