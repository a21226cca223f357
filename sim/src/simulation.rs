//! One simulated run per seed: cluster, job, faults, liveness and the exactly-once oracle.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;

use weir_chaos::faults::{Fault, FaultPlan};
use weir_chaos::oracle::{committed_output, difference};
use weir_chaos::reference::{expected_output, ReferenceSplit};
use weir_cluster::cli::{Cli, Command, JobCommand, SubmitJob};
use weir_cluster::protocol::{ClientRequest, ClientResponse, JobOptions, JobState};
use weir_cluster::tls::{Role, TlsContext};
use weir_core::job::InputSpec;
use weir_core::rt;

/// Workers in every simulated cluster.
pub const WORKERS: usize = 3;
/// Slots per worker.
pub const SLOTS_PER_WORKER: usize = 2;
/// Events of the simulated job.
pub const EVENTS: u64 = 60_000;
/// Source rate of the simulated job (events per simulated second), so that it spans time.
pub const RATE: u64 = 30_000;
/// After the last fault heals, the job must finish within this much simulated time.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(120);

/// The command line of `weir-sim`.
#[derive(Debug, Parser)]
#[command(name = "weir-sim", about = "Deterministic simulation of a Weir cluster under faults")]
pub struct SimArgs {
    /// Run one seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run a range of seeds, `A..B` (B exclusive).
    #[arg(long, value_parser = parse_range)]
    pub seeds: Option<(u64, u64)>,
    /// Run every seed twice and require identical traces.
    #[arg(long)]
    pub check_determinism: bool,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once("..").ok_or_else(|| format!("`{text}` is not a range; write e.g. 0..100"))?;
    let a: u64 = a.parse().map_err(|_| format!("bad range start in `{text}`"))?;
    let b: u64 = b.parse().map_err(|_| format!("bad range end in `{text}`"))?;
    if b <= a {
        return Err(format!("empty range `{text}`"));
    }
    Ok((a, b))
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Its fault plan.
    pub plan: FaultPlan,
    /// Hash of the run's trace.
    pub trace_hash: u64,
    /// `None` for PASS, else why it failed.
    pub failure: Option<String>,
}

/// Entry point of the `weir-sim` binary.
pub fn main() -> ExitCode {
    let args = SimArgs::parse();
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, Some((a, b))) => (a..b).collect(),
        (None, None) => vec![0],
    };
    let mut failed = Vec::new();
    for &seed in &seeds {
        let outcome = run_seed(seed);
        println!("seed {seed}");
        println!("  faults: {}", outcome.plan);
        println!("  trace:  {:016x}", outcome.trace_hash);
        let mut failure = outcome.failure.clone();
        if args.check_determinism && failure.is_none() {
            failure = madsim_determinism_check(seed).err();
        }
        if args.check_determinism && failure.is_none() {
            let again = run_seed(seed);
            if again.trace_hash != outcome.trace_hash {
                failure = Some(format!(
                    "non-deterministic: second run traced {:016x} instead of {:016x}",
                    again.trace_hash, outcome.trace_hash
                ));
            }
        }
        match &failure {
            None => println!("  PASS"),
            Some(reason) => {
                println!("  FAIL: {reason}");
                failed.push(seed);
            }
        }
    }
    let passed = seeds.len() - failed.len();
    println!("weir-sim: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        println!("failing seeds: {failed:?} (replay one with `cargo sim -- --seed N`)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// TLS material for every simulated process (generated once per process; its bytes never
/// enter a trace).
fn certs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weir-sim-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        weir_cluster::tls::init_certs(&dir, &node_ips().iter().map(|ip| ip.to_string()).collect::<Vec<_>>())
            .expect("simulation certificates");
        dir
    })
}

fn node_ips() -> Vec<IpAddr> {
    (1..=WORKERS as u8 + 2).map(|i| IpAddr::from([10, 0, 0, i])).collect()
}

fn parse(args: &[String]) -> Command {
    Cli::try_parse_from(std::iter::once("weir".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("simulation built an invalid command line {args:?}: {e}"))
        .command
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Process-wide state (the named in-memory object store) outlives a run: every run gets a
/// store of its own, whose name never enters the trace.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The seed under madsim's own determinism check (which takes a plain `fn`).
static CHECKED_SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn checked_world() -> impl std::future::Future<Output = Result<(), String>> {
    let seed = CHECKED_SEED.load(std::sync::atomic::Ordering::SeqCst);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let certs = certs_dir().to_path_buf();
    let output = std::env::temp_dir().join("weir-sim").join(format!("seed-{seed}"));
    let plan = FaultPlan::from_seed(seed, WORKERS, EVENTS * 1000 / RATE);
    async move { simulate(seed, run, &certs, &output, &plan).await }
}

/// Runs `seed` twice under madsim's determinism check, which compares every random draw of
/// the two runs (stricter than comparing trace hashes).
pub fn madsim_determinism_check(seed: u64) -> Result<(), String> {
    CHECKED_SEED.store(seed, std::sync::atomic::Ordering::SeqCst);
    let outcome = std::panic::catch_unwind(|| {
        madsim::runtime::Runtime::check_determinism(seed, madsim::Config::default(), checked_world)
    });
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(format!("madsim determinism check: {}", rt::panic_message(&*panic))),
    }
}

/// Runs one seed in a fresh simulated world.
pub fn run_seed(seed: u64) -> SeedOutcome {
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let certs = certs_dir().to_path_buf();
    // The output path is part of the job's identity (and so of the trace): per seed, not per run.
    let output = std::env::temp_dir().join("weir-sim").join(format!("seed-{seed}"));
    let job_ms = EVENTS * 1000 / RATE;
    let plan = FaultPlan::from_seed(seed, WORKERS, job_ms);
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let run_plan = plan.clone();
    let (failure, trace_hash) = runtime.block_on(async move {
        rt::trace_reset();
        let failure = simulate(seed, run, &certs, &output, &run_plan).await.err();
        (failure, rt::trace_hash())
    });
    SeedOutcome { seed, plan, trace_hash, failure }
}

async fn simulate(seed: u64, run: u64, certs: &Path, output: &Path, plan: &FaultPlan) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(output);
    let handle = madsim::runtime::Handle::current();
    let ips = node_ips();
    let coordinator_address = format!("{}:7400", ips[0]);
    let certs_arg = certs.display().to_string();

    let coordinator_args = parse(&strings(&[
        "coordinator",
        "--listen",
        &coordinator_address,
        "--certs",
        &certs_arg,
        "--checkpoint-dir",
        &format!("memory://weir-sim-{}-run-{run}", std::process::id()),
        "--heartbeat-timeout",
        "2s",
        "--restart-backoff",
        "200ms",
        "--restarts",
        "20",
    ]));
    let Command::Coordinator(coordinator_args) = coordinator_args else { unreachable!() };
    let coordinator_node = handle
        .create_node()
        .name("coordinator")
        .ip(ips[0])
        .init(move || {
            let options = coordinator_args.to_options().expect("coordinator options");
            async move {
                if let Err(error) = weir_cluster::server::run_coordinator(options).await {
                    panic!("coordinator stopped: {error}");
                }
            }
        })
        .build();

    let mut workers = Vec::new();
    for index in 0..WORKERS {
        let ip = ips[1 + index];
        let args = parse(&strings(&[
            "worker",
            "--coordinator",
            &coordinator_address,
            "--slots",
            &SLOTS_PER_WORKER.to_string(),
            "--listen",
            &format!("{ip}:7500"),
            "--certs",
            &certs_arg,
        ]));
        let Command::Worker(worker_args) = args else { unreachable!() };
        let node = handle
            .create_node()
            .name(format!("worker-{index}"))
            .ip(ip)
            .init(move || {
                let options = worker_args.to_options().expect("worker options");
                async move {
                    let _ = weir_cluster::worker::run_worker(options).await;
                }
            })
            .build();
        workers.push(node.id());
    }

    // The client: submits the job with the same parser as `weir job submit bids`.
    let submit = parse(&strings(&[
        "job",
        "submit",
        "bids",
        "--output",
        &output.display().to_string(),
        "--events",
        &EVENTS.to_string(),
        "--seed",
        &seed.to_string(),
        "--parallelism",
        &(WORKERS * SLOTS_PER_WORKER - 2).to_string(),
        "--checkpoint-interval",
        "100ms",
        "--rate",
        &RATE.to_string(),
        "--coordinator",
        &coordinator_address,
        "--certs",
        &certs_arg,
    ]));
    let Command::Job(JobCommand::Submit(SubmitJob::Bids { job, .. })) = submit else { unreachable!() };
    let run_options = job.to_options().map_err(|e| e.to_string())?;
    let spec = run_options.spec.clone();
    let client_tls = TlsContext::load(certs, Role::Client).map_err(|e| e.to_string())?;
    let client = handle.create_node().name("client").ip(ips[WORKERS + 1]).build();
    let coordinator = coordinator_address.clone();
    let job_options = JobOptions {
        checkpoint_interval_ms: run_options.checkpoint_interval.map(|d| d.as_millis() as u64),
        retained_checkpoints: run_options.retained_checkpoints,
        rate_limit: run_options.rate_limit,
    };
    let submit_spec = spec.clone();
    let client_task = client.spawn(async move {
        // The coordinator needs a moment to listen; retry like an operator would.
        let mut job_id = None;
        for _ in 0..50 {
            let request = ClientRequest::Submit { spec: submit_spec.clone(), options: job_options.clone() };
            match weir_cluster::client::request(&client_tls, &coordinator, &request).await {
                Ok(ClientResponse::Submitted { job_id: id }) => {
                    job_id = Some(id);
                    break;
                }
                Ok(other) => return Err(format!("submit refused: {other:?}")),
                Err(_) => madsim::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let job_id = job_id.ok_or("coordinator never accepted the job")?;
        loop {
            madsim::time::sleep(Duration::from_millis(250)).await;
            let request = ClientRequest::Status { job_id: job_id.clone() };
            match weir_cluster::client::request(&client_tls, &coordinator, &request).await {
                Ok(ClientResponse::Status(status)) => match status.state {
                    JobState::Finished => return Ok(status),
                    JobState::Failed | JobState::Cancelled => {
                        return Err(format!("job ended {:?}: {}", status.state, status.message.unwrap_or_default()))
                    }
                    _ => {}
                },
                Ok(other) => return Err(format!("status refused: {other:?}")),
                Err(_) => {}
            }
        }
    });

    // The faults, at their times; then the liveness bound.
    let started = madsim::time::Instant::now();
    let net = madsim::net::NetSim::current();
    let mut events: Vec<(u64, bool, &Fault)> = Vec::new();
    for fault in &plan.faults {
        events.push((fault.at_ms(), true, fault));
        events.push((fault.end_ms(), false, fault));
    }
    events.sort_by_key(|(at, start, _)| (*at, !*start));
    for (at_ms, start, fault) in events {
        let due = started + Duration::from_millis(at_ms);
        madsim::time::sleep_until(due).await;
        rt::trace(&format!("fault {} {fault}", if start { "begins" } else { "heals" }));
        match (fault, start) {
            (Fault::KillWorker { worker, .. }, true) => handle.kill(workers[*worker]),
            (Fault::KillWorker { worker, .. }, false) => handle.restart(workers[*worker]),
            (Fault::KillCoordinator { .. }, true) => handle.kill(coordinator_node.id()),
            (Fault::KillCoordinator { .. }, false) => handle.restart(coordinator_node.id()),
            (Fault::Partition { worker, .. }, true) => net.clog_node(workers[*worker]),
            (Fault::Partition { worker, .. }, false) => net.unclog_node(workers[*worker]),
        }
    }
    let healed = madsim::time::Instant::now();
    let status = match madsim::time::timeout(LIVENESS_BOUND, client_task).await {
        Err(_) => {
            return Err(format!(
                "liveness: the job did not finish within {LIVENESS_BOUND:?} of simulated time after the faults healed (at {:?})",
                healed - started
            ))
        }
        Ok(joined) => joined.map_err(|e| format!("client task: {e}"))??,
    };
    rt::trace(&format!(
        "job finished after {} restarts, last checkpoint {:?}",
        status.restarts, status.last_checkpoint
    ));

    // Safety: the committed output equals the sequential reference.
    let InputSpec::Generator(config) = spec.input else { unreachable!("the simulation generates its input") };
    let splits: Vec<ReferenceSplit> = (0..spec.parallelism)
        .map(|split| ReferenceSplit::Generated { config, split, splits: spec.parallelism })
        .collect();
    let expected = expected_output(&splits, spec.window_ms, spec.out_of_orderness_ms);
    let actual = committed_output(&spec.output_dir).map_err(|e| format!("reading committed output: {e}"))?;
    let report = difference(&expected, &actual);
    if !report.is_empty() {
        return Err(format!("exactly-once violated:\n{report}"));
    }
    let _ = std::fs::remove_dir_all(output);
    Ok(())
}
