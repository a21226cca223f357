//! One simulated run per seed: a swarm-drawn cluster and job, faults from the catalogue, then
//! liveness and the oracles.
//!
//! The seed determines everything: the plan (shape, fault kinds, faults; see
//! [`weir_chaos::faults`]) and, through madsim, every scheduling decision, packet delay and
//! random draw. A run fails when the job does not finish within [`LIVENESS_BOUND`] of the last
//! fault healing, or when an oracle objects:
//!
//! - **exactly-once**: the committed output equals the sequential reference (as multisets);
//! - **commit after completion**: no part file of epoch `n` is ever visible before some
//!   checkpoint `>= n` has its `_metadata` in storage (a monitor polls the output every 5 ms);
//! - **every completed checkpoint restores**: each one still in storage (and not damaged on
//!   purpose) verifies and splits into slot states;
//! - **invariants inside the engine**: epochs and watermarks never go backwards and exchange
//!   queues never exceed their credits (assertions in the operators and the transport; a
//!   violation fails the job, or panics the run, which counts as a failure).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use clap::Parser;

use weir_chaos::faults::{CheckpointBackend, Fault, FaultPlan, Input, Node, Shape, SimJob};
use weir_chaos::input::csv_files;
use weir_chaos::oracle::{committed_output, difference, excess};
use weir_chaos::reference::{expected_output, ReferenceSplit};
use weir_chaos::shrink::shrink;
use weir_chaos::storage::{FaultyStore, StorageFaults};
use weir_cluster::cli::{parse_invocation, Cli, Command, Invocation, InvocationKind, JobCommand};
use weir_cluster::deploy::PlannedJob;
use weir_cluster::jobs::bids::BidsParams;
use weir_cluster::protocol::{ClientRequest, ClientResponse, JobOptions, JobState, JobStatus};
use weir_cluster::tls::{Role, TlsContext};
use weir_core::checkpoint::{CheckpointError, CheckpointStore, METADATA};
use weir_core::faultpoint::{self, PlantedBug};
use weir_core::job::{JobSpec, ParamKind};
use weir_core::local_store::LocalDirStore;
use weir_core::rt;

/// After the last fault heals, the job must finish within this much simulated time.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(120);
/// The most workers a plan may have (certificates cover this many nodes).
const MAX_WORKERS: usize = 4;
/// A data-link failure must end its attempt (on the worker that saw it) within this much
/// simulated time: the report reaches the coordinator, which cancels the attempt.
const LINK_FAILURE_BOUND: Duration = Duration::from_secs(10);
/// How often the commit monitor looks at the output.
const MONITOR_EVERY: Duration = Duration::from_millis(5);

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
    /// Replace the seed's plan with this one (JSON, as printed by a failing or shrunk run).
    #[arg(long, requires = "seed", value_name = "JSON")]
    pub plan: Option<String>,
    /// If the seed fails, shrink its plan to a minimal one that still fails, and print it.
    #[arg(long, requires = "seed")]
    pub shrink: bool,
    /// Plant a deliberately broken protocol variant (see `--prove-planted`).
    #[arg(long, value_name = "BUG", value_parser = parse_planted)]
    pub planted: Option<PlantedBug>,
    /// For every planted bug, sweep seeds from 0 until the simulator catches it; fail unless
    /// each is caught within `--within` seeds and the correct build passes the catching seeds.
    #[arg(long, conflicts_with_all = ["seed", "seeds", "planted", "shrink"])]
    pub prove_planted: bool,
    /// Switch every fault kind on in every run (instead of a swarm draw of kinds per seed).
    #[arg(long, conflicts_with = "plan")]
    pub all_kinds: bool,
    /// The bound of `--prove-planted`, in seeds.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub within: u64,
    /// Print the trace as it happens (simulated milliseconds and event: registrations, attempts,
    /// checkpoints, faults, aimed kills) to standard error.
    #[arg(long)]
    pub trace: bool,
    /// Simulate this registered job instead of the swarm's job mix: each seed runs it once
    /// without faults and once with the seed's faults, and the committed output of every sink
    /// must be the same (any job of the binary; jobs reading files get copies of them).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["prove_planted", "plan"])]
    pub job: Option<String>,
    /// A parameter of `--job`, `name=value` (repeat for each).
    #[arg(long = "param", value_name = "NAME=VALUE", requires = "job")]
    pub params: Vec<String>,
    /// What a killed node's unsynced file writes come to: `crash` (lost or torn, the default)
    /// or `lossless` (kept, as if only the process died; to show what the crash model catches).
    #[arg(long, value_name = "MODEL", default_value = "crash", value_parser = ["crash", "lossless"])]
    pub storage_model: String,
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

fn parse_planted(text: &str) -> Result<PlantedBug, String> {
    PlantedBug::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
        format!("unknown planted bug `{text}`; one of: {}", names.join(", "))
    })
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Its plan.
    pub plan: FaultPlan,
    /// Hash of the run's trace.
    pub trace_hash: u64,
    /// `None` for PASS, else why it failed.
    pub failure: Option<String>,
    /// A user job's committed output, by sink (captured from its fault-free run).
    pub output: Option<CommittedOutput>,
}

/// A job's committed output: per sink directory, its data lines, sorted.
pub type CommittedOutput = BTreeMap<String, Vec<String>>;

/// A user's job under the simulator (`--job`): its name and parameters as given.
#[derive(Clone, Debug)]
pub struct UserJob {
    /// The registered job.
    pub name: String,
    /// Its parameters, `name → value` as on the command line.
    pub params: BTreeMap<String, String>,
    /// The input files it reads (read from the real file system once), copied into every
    /// run's simulated file system at the same paths.
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

/// What a run of a user job does with its committed output: capture it (the fault-free run)
/// or compare it with what was captured.
#[derive(Clone, Debug)]
enum UserJobMode {
    Capture,
    Compare(CommittedOutput),
}

/// The user job of this process's runs, if any (set once by `main` from `--job`).
static USER_JOB: OnceLock<UserJob> = OnceLock::new();
/// The mode of the next run of the user job.
static USER_JOB_MODE: std::sync::Mutex<Option<UserJobMode>> = std::sync::Mutex::new(None);
/// What the last capturing run committed.
static CAPTURED: std::sync::Mutex<Option<CommittedOutput>> = std::sync::Mutex::new(None);

/// Entry point of the `weir-sim` binary.
pub fn main() -> ExitCode {
    run(SimArgs::parse())
}

fn run(args: SimArgs) -> ExitCode {
    if args.trace {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("weir::trace=debug"))
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .init();
    }
    KEEP_UNSYNCED.store(args.storage_model == "lossless", std::sync::atomic::Ordering::Relaxed);
    if args.prove_planted {
        return prove_planted(args.within);
    }
    if let Some(name) = &args.job {
        match user_job(name, &args.params) {
            Ok(job) => {
                println!("simulating job {name} against its own fault-free run");
                USER_JOB.set(job).expect("set once");
            }
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, Some((a, b))) => (a..b).collect(),
        (None, None) => vec![0],
    };
    let given_plan = match args.plan.as_deref().map(FaultPlan::from_json).transpose() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: --plan: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(bug) = args.planted {
        println!("planted bug: {bug}");
    }
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    for &seed in &seeds {
        let plan = given_plan.clone().unwrap_or_else(|| {
            if args.all_kinds {
                FaultPlan::from_seed_all_kinds(seed)
            } else {
                FaultPlan::from_seed(seed)
            }
        });
        let outcome = match USER_JOB.get() {
            Some(_) => run_user_job_seed(seed, &plan, args.planted),
            None => run_seed(seed, &plan, args.planted),
        };
        println!("seed {seed}");
        match USER_JOB.get() {
            // The plan's own job is replaced: say so.
            Some(job) => println!(
                "  {}",
                outcome.plan.to_string().replacen(
                    &format!("job {}", plan.shape.job.name()),
                    &format!("job {} (--job)", job.name),
                    1
                )
            ),
            None => println!("  {}", outcome.plan),
        }
        println!("  trace:  {:016x}", outcome.trace_hash);
        let mut failure = outcome.failure.clone();
        if args.check_determinism && failure.is_none() {
            failure = madsim_determinism_check(seed, &plan).err();
        }
        if args.check_determinism && failure.is_none() {
            let again = match USER_JOB.get() {
                Some(_) => run_user_job_seed(seed, &plan, args.planted),
                None => run_seed(seed, &plan, args.planted),
            };
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
                println!("  plan:   {}", outcome.plan.to_json());
                failed.push(seed);
                if args.shrink {
                    shrink_and_report(seed, &outcome.plan, args.planted);
                }
            }
        }
    }
    if args.shrink && failed.is_empty() {
        println!("nothing to shrink: the run passed");
    }
    let passed = seeds.len() - failed.len();
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "weir-sim: {passed} passed, {} failed ({:.0} seeds/minute)",
        failed.len(),
        seeds.len() as f64 / minutes.max(1e-9)
    );
    if !failed.is_empty() {
        println!("failing seeds: {failed:?} (replay one with `cargo sim -- --seed N`, shrink it with `--shrink`)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn shrink_and_report(seed: u64, plan: &FaultPlan, planted: Option<PlantedBug>) {
    println!("  shrinking ({} faults)…", plan.faults.len());
    let shrunk = shrink(
        plan,
        |candidate| run_seed(seed, candidate, planted).failure.is_some(),
        |step| println!("    still fails with {} fault(s)", step.faults.len()),
    );
    let failure = run_seed(seed, &shrunk, planted).failure.unwrap_or_else(|| "(passed on replay?)".into());
    println!("  minimal plan:\n  {shrunk}");
    println!("  fails with: {failure}");
    println!("  replay: cargo sim -- --seed {seed} --plan '{}'", shrunk.to_json());
}

/// Sweeps seeds `0..within` for each planted bug until one fails; the correct build must pass
/// every catching seed.
fn prove_planted(within: u64) -> ExitCode {
    let started = std::time::Instant::now();
    let mut all_caught = true;
    let mut report = Vec::new();
    for bug in PlantedBug::ALL {
        let mut caught = None;
        for seed in 0..within {
            let outcome = run_seed(seed, &FaultPlan::from_seed(seed), Some(bug));
            if let Some(failure) = outcome.failure {
                caught = Some((seed, failure));
                break;
            }
        }
        match caught {
            Some((seed, failure)) => {
                let correct = run_seed(seed, &FaultPlan::from_seed(seed), None);
                let verdict = match &correct.failure {
                    None => "correct build passes it".to_string(),
                    Some(reason) => {
                        all_caught = false;
                        format!("BUT THE CORRECT BUILD FAILS IT TOO: {reason}")
                    }
                };
                let first_line = failure.lines().next().unwrap_or_default().to_string();
                println!("{bug}: caught at seed {seed} ({} seeds); {verdict}\n    {first_line}", seed + 1);
                report.push((bug, Some(seed + 1)));
            }
            None => {
                all_caught = false;
                println!("{bug}: NOT caught within {within} seeds");
                report.push((bug, None));
            }
        }
    }
    let caught = report.iter().filter(|(_, seeds)| seeds.is_some()).count();
    println!(
        "weir-sim: {caught} passed, {} failed (planted bugs caught within {within} seeds, {:.0} s)",
        report.len() - caught,
        started.elapsed().as_secs_f64()
    );
    if all_caught {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// TLS material for every simulated process (generated once per process; its bytes never
/// enter a trace).
fn certs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weir-sim-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names: Vec<String> = (1..=MAX_WORKERS as u8 + 2).map(|i| node_ip(i).to_string()).collect();
        weir_cluster::tls::init_certs(&dir, &names).expect("simulation certificates");
        dir
    })
}

fn node_ip(index: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, index])
}

/// The jobs of a user's binary that runs the simulator (`weir_sim::app`), if it is one.
static USER_REGISTRY: OnceLock<Arc<weir_dataflow::JobRegistry>> = OnceLock::new();

/// The jobs of the simulated binary: a user's, or the `weir` binary's and the example crate's.
fn registry() -> Arc<weir_dataflow::JobRegistry> {
    if let Some(registry) = USER_REGISTRY.get() {
        return registry.clone();
    }
    let mut registry = weir_cluster::jobs::builtin();
    weir_example::register(&mut registry);
    Arc::new(registry)
}

/// `sim` as a subcommand of a user's own binary, over the user's jobs: the same simulator as
/// `cargo sim`, with `--job NAME --param k=v …` to put one of them under faults.
pub fn main_with(registry: weir_dataflow::JobRegistry, args: Vec<String>) -> ExitCode {
    let _ = USER_REGISTRY.set(Arc::new(registry));
    run(SimArgs::parse_from(args))
}

fn parse(args: &[String]) -> Command {
    Cli::try_parse_from(std::iter::once("weir".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("simulation built an invalid command line {args:?}: {e}"))
        .command
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The seed and plan under madsim's own determinism check (which takes a plain `fn`).
static CHECKED: Mutex<Option<(u64, FaultPlan)>> = Mutex::new(None);

/// `--storage-model lossless`: kills lose no unsynced write (the model before the simulated
/// file system could lose them), to show what the crash model catches.
static KEEP_UNSYNCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn checked_world() -> impl std::future::Future<Output = Result<(), String>> {
    let (seed, plan) = CHECKED.lock().expect("checked seed").clone().expect("set before the check");
    let certs = certs_dir().to_path_buf();
    faultpoint::reset(None);
    weir_core::fs::sim::reset(seed, KEEP_UNSYNCED.load(std::sync::atomic::Ordering::Relaxed));
    async move { simulate(seed, &certs, &plan).await }
}

/// Runs `seed` twice under madsim's determinism check, which compares every random draw of
/// the two runs (stricter than comparing trace hashes).
pub fn madsim_determinism_check(seed: u64, plan: &FaultPlan) -> Result<(), String> {
    *CHECKED.lock().expect("checked seed") = Some((seed, plan.clone()));
    // Made before either run, so that both start from the same state (see `run_seed`).
    let _ = certs_dir();
    let outcome = std::panic::catch_unwind(|| {
        madsim::runtime::Runtime::check_determinism(seed, madsim::Config::default(), checked_world)
    });
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(format!("madsim determinism check: {}", rt::panic_message(&*panic))),
    }
}

/// Runs one seed with `plan` (and `planted`, if any) in a fresh simulated world. A panic
/// anywhere in the world is a failure of the run, not of the sweep.
pub fn run_seed(seed: u64, plan: &FaultPlan, planted: Option<PlantedBug>) -> SeedOutcome {
    let certs = certs_dir().to_path_buf();
    let run_plan = plan.clone();
    faultpoint::reset(planted);
    weir_core::fs::sim::reset(seed, KEEP_UNSYNCED.load(std::sync::atomic::Ordering::Relaxed));
    // A fresh thread per run, as madsim's own runners do: the runtime seeds the thread's std
    // `RandomState` from the seed, which only works before the thread has built any hash map.
    // On a reused thread every `HashMap` of the run (timely's, rustls's, ours) would iterate in an
    // order that differs from process to process, and the seed would not replay.
    // Named for panics; the main thread's stack size, which the runs had before.
    #[allow(clippy::disallowed_methods)] // the simulator's own thread, not engine code
    let thread = std::thread::Builder::new().name(format!("sim-seed-{seed}")).stack_size(8 << 20).spawn(move || {
        let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(async move {
            rt::trace_reset();
            let failure = simulate(seed, &certs, &run_plan).await.err();
            (failure, rt::trace_hash())
        })
    });
    let outcome = thread.expect("the simulation's thread starts").join();
    faultpoint::reset(None);
    let (failure, trace_hash) = match outcome {
        Ok(result) => result,
        Err(panic) => (Some(format!("panicked: {}", rt::panic_message(&*panic))), 0),
    };
    let output = CAPTURED.lock().expect("captured").take();
    SeedOutcome { seed, plan: plan.clone(), trace_hash, failure, output }
}

/// Checks `--job` and `--param`s against the registry: an unknown job or parameter, or a value
/// of the wrong type, is a one-line error.
fn user_job(name: &str, params: &[String]) -> Result<UserJob, String> {
    let registry = registry();
    let def = registry.get(name)?;
    let mut given = BTreeMap::new();
    for param in params {
        let (key, value) = param.split_once('=').ok_or_else(|| format!("--param {param:?}: write it as name=value"))?;
        given.insert(key.trim_start_matches("--").to_string(), value.to_string());
    }
    if def.params.iter().any(|p| p.name == "output") {
        given.entry("output".to_string()).or_insert_with(|| "/weir-sim/user-job/out".to_string());
    }
    let mut files = Vec::new();
    for (key, value) in &given {
        let Some(param) = def.params.iter().find(|p| p.name == key) else {
            return Err(format!("job {name} has no parameter --{key}"));
        };
        match param.kind {
            // Read here, from the real file system; written into each run's simulated one.
            ParamKind::Files { extension } => {
                for file in harness_files(Path::new(value), extension)? {
                    #[allow(clippy::disallowed_methods)] // the harness reads the user's real files
                    let bytes = std::fs::read(&file).map_err(|e| format!("--param {key}: {}: {e}", file.display()))?;
                    files.push((file, bytes));
                }
            }
            _ => drop(param.parse(value)?),
        }
    }
    if let Some(missing) = def.params.iter().find(|p| p.required && !given.contains_key(p.name)) {
        return Err(format!("--param {}=… is required: {}", missing.name, missing.help));
    }
    Ok(UserJob { name: name.to_string(), params: given, files })
}

/// The files an input path names on the real file system: the file, or a directory's files
/// with `extension` (as the job will resolve them in the simulated file system).
#[allow(clippy::disallowed_methods)] // the harness reads the user's real files
fn harness_files(path: &Path, extension: &str) -> Result<Vec<PathBuf>, String> {
    let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| p.extension().is_some_and(|e| e == extension))
            .collect();
        files.sort();
        Ok(files)
    } else {
        Ok(vec![path])
    }
}

/// Writes the user job's input files into this run's simulated file system.
fn copy_user_inputs(job: &UserJob) -> Result<(), String> {
    for (path, bytes) in &job.files {
        if let Some(parent) = path.parent() {
            weir_core::fs::create_dir_all_durable(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        weir_core::fs::write_durable(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// A user job's seed: its fault-free run first (captured), then the seed's plan, whose
/// committed output must equal it.
fn run_user_job_seed(seed: u64, plan: &FaultPlan, planted: Option<PlantedBug>) -> SeedOutcome {
    // Rescaling is the swarm's scenario for `bids` over files; a user's job may read generated
    // input, which restores only at its own parallelism.
    let mut plan = plan.clone();
    plan.shape.rescale.clear();
    let plan = &plan;
    let quiet = FaultPlan::new(plan.shape.clone(), Vec::new(), Vec::new());
    *USER_JOB_MODE.lock().expect("mode") = Some(UserJobMode::Capture);
    let reference = run_seed(seed, &quiet, None);
    let captured = match (reference.failure, reference.output) {
        (None, Some(output)) => output,
        (failure, _) => {
            let reason = failure.unwrap_or_else(|| "nothing was captured".into());
            let mut outcome = run_seed(seed, plan, planted);
            outcome.failure = Some(format!("the fault-free run of the job failed: {reason}"));
            return outcome;
        }
    };
    *USER_JOB_MODE.lock().expect("mode") = Some(UserJobMode::Compare(captured));
    let outcome = run_seed(seed, plan, planted);
    *USER_JOB_MODE.lock().expect("mode") = None;
    outcome
}

/// Reads the committed data lines of every sink of `job`.
fn committed_lines(job: &PlannedJob) -> Result<CommittedOutput, String> {
    let mut output = CommittedOutput::new();
    for sink in &job.plan.sinks {
        // Sinks that are not files are judged by their own oracles (none in the simulator yet).
        let Some(dir) = &sink.dir else { continue };
        let mut lines = Vec::new();
        let entries = match weir_core::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for entry in entries.into_iter().filter(|e| !e.is_dir && !e.name.starts_with(['.', '_'])) {
            let text =
                weir_core::fs::read_to_string(&entry.path).map_err(|e| format!("{}: {e}", entry.path.display()))?;
            let skip = usize::from(sink.header.is_some());
            lines.extend(text.lines().skip(skip).map(str::to_string));
        }
        lines.sort();
        output.insert(format!("{} ({})", sink.name, dir.display()), lines);
    }
    Ok(output)
}

/// Judges a user job's run: captures its output (fault-free run) or compares it.
fn judge_user_job(job: &PlannedJob) -> Judgement {
    let actual = match committed_lines(job) {
        Ok(actual) => actual,
        Err(e) => return Judgement::Unreadable(e),
    };
    let mode = USER_JOB_MODE.lock().expect("mode").clone();
    match mode {
        Some(UserJobMode::Compare(expected)) => {
            let judgements: Vec<Judgement> = expected
                .into_iter()
                .map(|(sink, lines)| {
                    let committed = actual.get(&sink).cloned().unwrap_or_default();
                    compare(&format!("sink {sink}"), lines, committed)
                })
                .collect();
            judgements.into_iter().fold(Judgement::Equal, both)
        }
        Some(UserJobMode::Capture) | None => {
            *CAPTURED.lock().expect("captured") = Some(actual);
            Judgement::Equal
        }
    }
}

/// The simulated world of one run: nodes, storage and the client.
struct World {
    handle: madsim::runtime::Handle,
    coordinator: madsim::runtime::NodeHandle,
    workers: Vec<madsim::runtime::NodeHandle>,
    /// The client's node, and its credentials (the rogue peer uses them).
    client: madsim::runtime::NodeHandle,
    client_tls: TlsContext,
    coordinator_address: String,
    storage: StorageFaults,
    store_name: String,
    /// The job at each parallelism it runs at, in order: as first submitted, then one per
    /// rescaling (another parallelism is another job id).
    phases: Vec<Arc<PlannedJob>>,
}

impl World {
    /// The job as first submitted (what the plan's faults aim at).
    fn job(&self) -> &PlannedJob {
        &self.phases[0]
    }
}

/// The newest checkpoint of any of `job_ids` that `attempt` completed.
fn newest_completed_by(storage: &StorageFaults, job_ids: &[String], attempt: u64) -> u64 {
    job_ids.iter().map(|job_id| storage.newest_completed_by(job_id, attempt)).max().unwrap_or(0)
}

async fn simulate(seed: u64, certs: &Path, plan: &FaultPlan) -> Result<(), String> {
    // Every path of the run is in the simulated file system, fresh for the run. The root is
    // part of the job's identity (and so of the trace): per seed, not per run.
    let root = PathBuf::from(format!("/weir-sim/seed-{seed}"));
    // One name for every run: runs are sequential, and each registers a fresh store under it
    // (and unregisters it). The store's URL travels in messages (a deployment names the
    // checkpoint directory) and in savepoints' paths, which must be the same in two runs of a
    // seed, in this process or another.
    let store_name = "weir-sim-store".to_string();
    let inner: Arc<dyn object_store::ObjectStore> = match plan.shape.checkpoints {
        CheckpointBackend::ObjectStore => Arc::new(object_store::memory::InMemory::new()),
        CheckpointBackend::LocalDirectory => {
            Arc::new(LocalDirStore::new(&root.join("checkpoints")).map_err(|e| format!("checkpoint directory: {e}"))?)
        }
    };
    let (store, storage) = FaultyStore::new(inner, seed);
    storage.set_latency(plan.shape.store_latency_ms);
    weir_core::checkpoint::register_memory_store(&store_name, store);
    let result = simulate_in(seed, certs, &root, plan, &store_name, storage).await;
    weir_core::checkpoint::unregister_memory_store(&store_name);
    result
}

/// Writes the run's CSV input files (durably: they exist before the cluster starts) and
/// returns their directory.
fn write_input(root: &Path, seed: u64, shape: &Shape, files: usize) -> Result<PathBuf, String> {
    let dir = root.join("input");
    weir_core::fs::create_dir_all_durable(&dir).map_err(|e| format!("input directory: {e}"))?;
    for file in csv_files(seed, shape.events, files) {
        weir_core::fs::write_durable(&dir.join(&file.name), &file.content).map_err(|e| format!("input file: {e}"))?;
    }
    Ok(dir)
}

async fn simulate_in(
    seed: u64,
    certs: &Path,
    root: &Path,
    plan: &FaultPlan,
    store_name: &str,
    storage: StorageFaults,
) -> Result<(), String> {
    let shape = &plan.shape;
    assert!(shape.workers <= MAX_WORKERS, "plans have at most {MAX_WORKERS} workers");
    let handle = madsim::runtime::Handle::current();
    let coordinator_address = format!("{}:7400", node_ip(1));
    let certs_arg = certs.display().to_string();

    let coordinator_args = parse(&strings(&[
        "coordinator",
        "--listen",
        &coordinator_address,
        "--certs",
        &certs_arg,
        "--checkpoint-dir",
        &format!("memory://{store_name}"),
        "--heartbeat-timeout",
        "2s",
        "--restart-backoff",
        "200ms",
        "--restarts",
        "40",
    ]));
    let Command::Coordinator(coordinator_args) = coordinator_args else { unreachable!() };
    let coordinator = handle
        .create_node()
        .name("coordinator")
        .ip(node_ip(1))
        .init(move || {
            let options = coordinator_args.to_options(registry()).expect("coordinator options");
            async move {
                if let Err(error) = weir_cluster::server::run_coordinator(options).await {
                    panic!("coordinator stopped: {error}");
                }
            }
        })
        .build();

    let mut workers = Vec::new();
    for index in 0..shape.workers {
        let ip = node_ip(2 + index as u8);
        let args = parse(&strings(&[
            "worker",
            "--coordinator",
            &coordinator_address,
            "--slots",
            &shape.slots_per_worker.to_string(),
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
                let options = worker_args.to_options(registry()).expect("worker options");
                async move {
                    let _ = weir_cluster::worker::run_worker(options).await;
                }
            })
            .build();
        workers.push(node);
    }
    if plan.skews_clocks() {
        // Every node's clock starts at its own offset, minutes apart, and watches for jumps.
        for (index, id) in std::iter::once(coordinator.id()).chain(workers.iter().map(|w| w.id())).enumerate() {
            rt::skew_clock(id, Duration::from_secs(97 * (index as u64 + 1)), 1000);
        }
    }

    // The client: submits the job with the same parser as `weir job submit bids`.
    let output = root.join("out");
    let input = match shape.input {
        Input::Generated => None,
        Input::CsvFiles { files } => Some(write_input(root, seed, shape, files)?.display().to_string()),
    };
    let mut submit_args = match USER_JOB.get() {
        Some(job) => {
            copy_user_inputs(job)?;
            let mut args = strings(&["job", "submit", &job.name]);
            for (name, value) in &job.params {
                args.extend([format!("--{name}"), value.clone()]);
            }
            args
        }
        None if shape.job == SimJob::Sql => {
            // A third of the SQL seeds run Nexmark's stateless queries, a third the windows and joins, a third
            // the updating results (at 500 events a second of event time, so that the input spans
            // many windows and sessions; a quarter of the events, as regular joins and updating
            // results keep every row they read and checkpoint it).
            let script = match weir_core::keygroup::mix64(seed ^ 0x3A1D_0CA7) % 3 {
                0 => weir_chaos::nexmark::sql_stateful(&output, shape.events / 4, seed, 500),
                1 => weir_chaos::nexmark::sql_updating(&output, shape.events / 4, seed, 500),
                _ => weir_chaos::nexmark::sql_stateless(&output, shape.events, seed),
            };
            strings(&["job", "submit", "sql", "--script", &script])
        }
        None => strings(&["job", "submit", shape.job.name(), "--output", &output.display().to_string()]),
    };
    match (&input, USER_JOB.get()) {
        (_, Some(_)) => {}
        // The script holds its input's size and seed.
        (_, None) if shape.job == SimJob::Sql => {}
        (Some(dir), None) => submit_args.extend(strings(&["--input", dir])),
        (None, None) => {
            submit_args.extend(strings(&["--events", &shape.events.to_string(), "--seed", &seed.to_string()]))
        }
    }
    match shape.job {
        _ if USER_JOB.get().is_some() => {}
        SimJob::Bids => submit_args.extend(strings(&["--window", &format!("{}ms", shape.window_ms)])),
        // Few keys, so that state and timers are busy; the window size sets the state's reach.
        SimJob::Fraud => submit_args.extend(strings(&["--accounts", "37"])),
        SimJob::Enrichment => {
            submit_args.extend(strings(&["--users", "41", "--profile-ttl", &format!("{}ms", shape.window_ms * 3)]))
        }
        SimJob::Sessions => submit_args.extend(strings(&["--users", "97", "--gap", &format!("{}ms", shape.window_ms)])),
        SimJob::Mix => submit_args.extend(strings(&["--sensors", "23"])),
        SimJob::Sql => {}
    }
    if USER_JOB.get().is_none() && shape.job != SimJob::Sql {
        submit_args.extend(strings(&["--out-of-orderness", &format!("{}ms", shape.out_of_orderness_ms)]));
    }
    submit_args.extend(strings(&[
        "--parallelism",
        &shape.parallelism.to_string(),
        "--checkpoint-interval",
        &format!("{}ms", shape.checkpoint_interval_ms),
        "--rate",
        &shape.rate.to_string(),
        "--coordinator",
        &coordinator_address,
        "--certs",
        &certs_arg,
    ]));
    if let Some(timeout) = shape.checkpoint_timeout_ms {
        submit_args.extend(strings(&["--checkpoint-timeout", &format!("{timeout}ms")]));
    }
    // The job at its first parallelism, then at each it is rescaled to.
    let mut phases = Vec::new();
    for parallelism in std::iter::once(shape.parallelism).chain(shape.rescale.iter().map(|r| r.parallelism)) {
        let at = submit_args.iter().position(|arg| arg == "--parallelism").expect("set above") + 1;
        submit_args[at] = parallelism.to_string();
        let submit = parse(&submit_args);
        let Command::Job(JobCommand::Submit(invocation)) = submit else { unreachable!() };
        let Invocation::Job(parsed) = parse_invocation(&registry(), &invocation, InvocationKind::Submit)? else {
            unreachable!("no --help")
        };
        let run_options = parsed.options;
        let spec = run_options.spec.clone();
        let job = Arc::new(PlannedJob::new(&registry(), spec.clone())?);
        let job_options = JobOptions {
            checkpoint_interval_ms: run_options.checkpoint_interval.map(|d| d.as_millis() as u64),
            checkpoint_timeout_ms: run_options.checkpoint_timeout.as_millis() as u64,
            retained_checkpoints: run_options.retained_checkpoints,
            rate_limit: run_options.rate_limit,
            from_savepoint: None,
            allow_non_restored_state: false,
        };
        phases.push((job, job_options));
    }
    let job = phases[0].0.clone();
    let client_tls = TlsContext::load(certs, Role::Client).map_err(|e| e.to_string())?;
    let rogue_tls = client_tls.clone();
    let client = handle.create_node().name("client").ip(node_ip(MAX_WORKERS as u8 + 2)).build();
    let coordinator_at = coordinator_address.clone();
    let job_options = phases[0].1.clone();
    let submit_spec = (*job.spec).clone();
    let submit_twice = shape.submit_twice;
    let later_phases: Vec<(JobSpec, JobOptions, String)> = phases
        .iter()
        .skip(1)
        .map(|(job, options)| ((*job.spec).clone(), options.clone(), job.job_id.clone()))
        .collect();
    let stops: Vec<Duration> = shape.rescale.iter().map(|r| Duration::from_millis(r.stop_after_ms)).collect();
    // Savepoints go to the run's object store, where storage faults reach them too.
    let savepoint_dir = format!("memory://{store_name}");
    // Each savepoint the job stopped with, and the phase that started from it.
    let savepoints: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let savepoints_taken = savepoints.clone();
    let client_task = client.spawn(async move {
        let request = ClientRequest::Submit { spec: submit_spec.clone(), options: job_options.clone() };
        let job_id = if submit_twice {
            // Two identical submissions at the same moment: one job, the other told it runs.
            let (first, second) = futures::join!(
                submit_job(&client_tls, &coordinator_at, &request),
                submit_job(&client_tls, &coordinator_at, &request)
            );
            match (first, second) {
                (Ok(id), Err(other)) | (Err(other), Ok(id)) if other.contains("already running") => id,
                (Ok(_), Ok(_)) => return Err("two identical submissions at once both created the job".into()),
                (first, second) => return Err(format!("submitted twice at once: {first:?}, {second:?}")),
            }
        } else {
            submit_job(&client_tls, &coordinator_at, &request).await?
        };
        // Rescaling: stop with a savepoint, submit from it at the next parallelism.
        let mut running = job_id;
        for (phase, ((spec, mut options, next_id), stop_after)) in later_phases.into_iter().zip(stops).enumerate() {
            madsim::time::sleep(stop_after).await;
            let path = match stop_with_savepoint(&client_tls, &coordinator_at, &running, &savepoint_dir).await? {
                Stopped::Savepoint(path) => path,
                // All input was read first: the job finished (or failed, as promised).
                Stopped::Ended(status) => return Ok(status),
            };
            rt::trace(&format!(
                "job {running} stopped with savepoint {path}; resubmitting at parallelism {}",
                spec.parallelism
            ));
            savepoints_taken.lock().expect("savepoints").push((path.clone(), phase + 1));
            options.from_savepoint = Some(path);
            let request = ClientRequest::Submit { spec, options };
            running = submit_phase(&client_tls, &coordinator_at, &request, next_id).await?;
        }
        loop {
            madsim::time::sleep(Duration::from_millis(250)).await;
            if let Some(status) = job_status(&client_tls, &coordinator_at, &running).await? {
                if matches!(status.state, JobState::Finished | JobState::Failed | JobState::Cancelled) {
                    return Ok(status);
                }
            }
        }
    });

    let world = World {
        handle,
        coordinator,
        workers,
        client,
        client_tls: rogue_tls,
        coordinator_address: coordinator_address.clone(),
        storage,
        store_name: store_name.to_string(),
        phases: phases.into_iter().map(|(job, _)| job).collect(),
    };
    let job_ids: Vec<String> = world.phases.iter().map(|job| job.job_id.clone()).collect();

    // The commit oracle: output an attempt staged for epoch n is committed only after a
    // checkpoint >= n *of that attempt* completed (its `_metadata` is in storage; a checkpoint
    // of a rolled-back deployment covers nothing). Checked at each sink commit as it happens,
    // and, coarser (any checkpoint >= n), by a monitor that scans the sink directories for
    // committed files, whatever committed them.
    let violation: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let (storage, job_ids, violation) = (world.storage.clone(), job_ids.clone(), violation.clone());
        faultpoint::observe_commits(Arc::new(move |dir: &Path, attempt: u64, newest: u64| {
            let covered = newest_completed_by(&storage, &job_ids, attempt);
            if newest > covered {
                violation.lock().expect("violation").get_or_insert(format!(
                    "{}: a sink commits attempt {attempt:016x}'s output of epoch {newest} while the newest checkpoint that attempt completed is {covered}",
                    dir.display()
                ));
            }
        }));
    }
    // What the plan damaged on purpose (shared with the monitor: a damaged checkpoint is the one
    // reason committed output may shrink).
    let damaged: Arc<Mutex<Damaged>> = Arc::default();
    let monitor = {
        let (dirs, storage, job_ids, violation, damaged) =
            (world.job().sink_dirs(), world.storage.clone(), job_ids.clone(), violation.clone(), damaged.clone());
        madsim::task::spawn(async move {
            let mut seen = CommittedFiles::default();
            let mut looked_at = None;
            loop {
                madsim::time::sleep(MONITOR_EVERY).await;
                // Committed files appear and disappear only with a change of the namespace.
                let version = weir_core::fs::sim::namespace_version();
                if looked_at == Some(version) {
                    continue;
                }
                looked_at = Some(version);
                let found = committed_beyond_completion(&dirs, &storage, &job_ids)
                    .or_else(|| seen.update(&dirs, &damaged.lock().expect("damaged")).err());
                if let Some(found) = found {
                    violation.lock().expect("violation").get_or_insert(found);
                }
            }
        })
    };

    // The faults, at their times; then the liveness bound.
    let fault_outcome = inject(&world, plan, &damaged).await;
    let finished = madsim::time::timeout(LIVENESS_BOUND, client_task).await;
    monitor.abort();
    fault_outcome?;
    let damaged = std::mem::take(&mut *damaged.lock().expect("damaged"));
    let status = match finished {
        Err(_) => {
            return Err(format!(
                "liveness: the job did not finish within {LIVENESS_BOUND:?} of simulated time after the faults healed (at {} ms)",
                plan.heal_at_ms()
            ))
        }
        Ok(joined) => joined.map_err(|e| format!("client task: {e}"))??,
    };
    rt::trace(&format!(
        "job ended {:?} after {} restarts, last checkpoint {:?}",
        status.state, status.restarts, status.last_checkpoint
    ));
    // A job ends Finished — or, only when a job record was damaged, Failed with an error that
    // names the record (Weir's promise there: stop clearly, never commit wrong output).
    let message = status.message.clone().unwrap_or_default();
    // The record's own error, not one wrapped in another (a retried damaged record would end as
    // "restarts in a row …; last failure: job record …").
    let failed_as_promised = status.state == JobState::Failed
        && damaged.records.iter().any(|record| message.starts_with(&format!("job record {record} is damaged")));
    if status.state != JobState::Finished && !failed_as_promised {
        return Err(format!("job ended {:?}: {message}", status.state));
    }

    if let Some(found) = violation.lock().expect("violation").take() {
        return Err(format!("committed output: {found}"));
    }
    let unended = faultpoint::unended_link_failures(LINK_FAILURE_BOUND, rt::true_now());
    if let Some(first) = unended.first() {
        return Err(format!("{} link failure(s) did not end their attempt, the first: {first}", unended.len()));
    }
    let violations = faultpoint::protocol_violations();
    if let Some(first) = violations.first() {
        return Err(format!(
            "{} protocol violation(s) in a cluster of honest peers, the first: {first}",
            violations.len()
        ));
    }
    if let Some(found) = committed_beyond_completion(&world.job().sink_dirs(), &world.storage, &job_ids) {
        return Err(format!("output committed for an epoch whose checkpoint never completed: {found}"));
    }
    every_checkpoint_restores(&world, &damaged.checkpoints).await?;
    // Every savepoint restores into the job started from it, at its parallelism.
    for (path, phase) in std::mem::take(&mut *savepoints.lock().expect("savepoints")) {
        let savepoint = weir_core::savepoint::read_savepoint(&path)
            .await
            .map_err(|error| format!("savepoint {path} does not read back: {error}"))?;
        let job = &world.phases[phase];
        weir_cluster::deploy::plan_restore(Some(&savepoint), job, false).map_err(|error| {
            format!("savepoint {path} does not restore at parallelism {}: {error}", job.parallelism())
        })?;
    }

    // Safety: the committed output equals the sequential reference (or, for a job that
    // stopped on a damaged record as promised, holds nothing the reference does not).
    match judge(world.phases.last().expect("a phase")) {
        Judgement::Equal => Ok(()),
        Judgement::Differs { missing_or_wrong: _, report } if !failed_as_promised => {
            Err(format!("exactly-once violated:\n{report}"))
        }
        Judgement::Differs { missing_or_wrong: false, .. } => Ok(()),
        Judgement::Differs { report, .. } => {
            Err(format!("the job stopped on a damaged record, but its committed output is wrong:\n{report}"))
        }
        Judgement::Unreadable(error) => Err(error),
    }
}

/// How a run's committed output compares with its job's reference.
enum Judgement {
    Equal,
    /// `missing_or_wrong`: something committed is not in the reference (not merely missing).
    Differs {
        missing_or_wrong: bool,
        report: String,
    },
    Unreadable(String),
}

/// Judges the committed output of `job` against its sequential reference.
fn judge(job: &PlannedJob) -> Judgement {
    if USER_JOB.get().is_some() {
        return judge_user_job(job);
    }
    match job.spec.job.as_str() {
        "bids" => judge_bids(job),
        "fraud" => judge_fraud(job),
        "enrichment" => judge_enrichment(job),
        "sessions" => judge_sessions(job),
        "mix" => judge_mix(job),
        "sql" => judge_sql(job),
        other => Judgement::Unreadable(format!("the simulator has no reference for job {other}")),
    }
}

fn judge_bids(job: &PlannedJob) -> Judgement {
    let parallelism = job.parallelism();
    let bids = match BidsParams::from_spec(&job.spec) {
        Ok(bids) => bids,
        Err(e) => return Judgement::Unreadable(e.to_string()),
    };
    let splits: Vec<ReferenceSplit> = match &bids.input {
        None => (0..parallelism)
            .map(|split| ReferenceSplit::Generated { config: bids.generator, split, splits: parallelism })
            .collect(),
        Some(files) => files.iter().cloned().map(ReferenceSplit::File).collect(),
    };
    let expected = expected_output(&splits, bids.window_ms, bids.out_of_orderness_ms);
    let actual = match committed_output(&bids.output) {
        Ok(actual) => actual,
        Err(e) => return Judgement::Unreadable(format!("reading committed output: {e}")),
    };
    let report = difference(&expected, &actual);
    if report.is_empty() {
        return Judgement::Equal;
    }
    Judgement::Differs { missing_or_wrong: !excess(&expected, &actual).is_empty(), report }
}

fn generated<G: weir_dataflow::source::Generator>(generator: &G, splits: usize) -> Vec<Vec<G::Record>> {
    (0..splits)
        .map(|s| (0..generator.split_len(s, splits)).map(|i| generator.generate(s, splits, i)).collect())
        .collect()
}

/// Compares sorted multisets of records: equal, or what differs.
fn compare<T: Ord + std::fmt::Debug>(what: &str, expected: Vec<T>, actual: Vec<T>) -> Judgement {
    if expected == actual {
        return Judgement::Equal;
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut e, mut a) = (expected.iter().peekable(), actual.iter().peekable());
    loop {
        match (e.peek(), a.peek()) {
            (Some(x), Some(y)) if x == y => {
                e.next();
                a.next();
            }
            (Some(x), Some(y)) if x < y => missing.push(e.next().expect("peeked")),
            (Some(_), Some(_)) | (None, Some(_)) => extra.push(a.next().expect("peeked")),
            (Some(_), None) => missing.push(e.next().expect("peeked")),
            (None, None) => break,
        }
    }
    let report = format!(
        "{what}: {} expected, {} committed; {} missing (first {:?}), {} unexpected (first {:?})",
        expected.len(),
        actual.len(),
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
    Judgement::Differs { missing_or_wrong: !extra.is_empty(), report }
}

fn both(first: Judgement, second: Judgement) -> Judgement {
    match (first, second) {
        (Judgement::Equal, other) | (other, Judgement::Equal) => other,
        (Judgement::Unreadable(e), _) | (_, Judgement::Unreadable(e)) => Judgement::Unreadable(e),
        (
            Judgement::Differs { missing_or_wrong: a, report: x },
            Judgement::Differs { missing_or_wrong: b, report: y },
        ) => Judgement::Differs { missing_or_wrong: a || b, report: format!("{x}\n{y}") },
    }
}

/// The committed records of a sink directory (CSV with a header, or JSON lines), parsed.
fn committed_records<T: serde::de::DeserializeOwned + Ord>(dir: &Path, json: bool) -> Result<Vec<T>, String> {
    let entries = match weir_core::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut records = Vec::new();
    for entry in entries.into_iter().filter(|e| !e.is_dir && !e.name.starts_with(['.', '_'])) {
        let text = weir_core::fs::read_to_string(&entry.path).map_err(|e| format!("{}: {e}", entry.path.display()))?;
        if json {
            for line in text.lines() {
                records.push(serde_json::from_str(line).map_err(|e| format!("{}: {e}", entry.path.display()))?);
            }
        } else {
            for record in csv::Reader::from_reader(text.as_bytes()).deserialize() {
                records.push(record.map_err(|e| format!("{}: {e}", entry.path.display()))?);
            }
        }
    }
    records.sort();
    Ok(records)
}

fn judge_fraud(job: &PlannedJob) -> Judgement {
    use weir_example::fraud::{Alert, Transaction, Transactions};
    let params = &job.spec.params;
    let read = || -> Result<_, Box<dyn std::error::Error>> {
        let output = params.path("output")?;
        let generator = Transactions::new(params.u64("events")?, params.u64("accounts")?, params.u64("seed")?)?;
        let reference = weir_example::reference::fraud(
            &generated(&generator, job.parallelism()),
            params.duration_ms("out-of-orderness")?,
        );
        let small_reference = weir_example::reference::fraud_small(
            &generated(&generator, job.parallelism()),
            params.duration_ms("out-of-orderness")?,
        );
        let alerts: Vec<Alert> = committed_records(&output.join("alerts"), false)?;
        let late: Vec<Transaction> = committed_records(&output.join("late"), false)?;
        let small: Vec<Transaction> = committed_records(&output.join("small"), false)?;
        Ok((reference, alerts, late, small_reference, small))
    };
    match read() {
        Ok(((expected_alerts, expected_late), alerts, late, expected_small, small)) => both(
            both(compare("alerts", expected_alerts, alerts), compare("late", expected_late, late)),
            compare("small transactions (side output)", expected_small, small),
        ),
        Err(e) => Judgement::Unreadable(e.to_string()),
    }
}

fn judge_sessions(job: &PlannedJob) -> Judgement {
    use weir_example::enrichment::{Click, ClickGenerator, Streams};
    use weir_example::sessions::Session;
    let params = &job.spec.params;
    let read = || -> Result<_, Box<dyn std::error::Error>> {
        let output = params.path("output")?;
        let streams = Streams::new(params.u64("events")?, params.u64("users")?, params.u64("seed")?)?;
        let reference = weir_example::reference::sessions(
            &generated(&ClickGenerator(streams), job.parallelism()),
            params.duration_ms("out-of-orderness")?,
            params.duration_ms("gap")?,
        );
        let sessions: Vec<Session> = committed_records(&output.join("sessions"), false)?;
        let late: Vec<Click> = committed_records(&output.join("late"), false)?;
        Ok((reference, sessions, late))
    };
    match read() {
        Ok(((expected_sessions, expected_late), sessions, late)) => {
            both(compare("sessions", expected_sessions, sessions), compare("late", expected_late, late))
        }
        Err(e) => Judgement::Unreadable(e.to_string()),
    }
}

/// The SQL jobs of the swarm: `weir_chaos::nexmark::sql_stateless`, `sql_stateful` or `sql_updating`, whose
/// tables' options say where they wrote and what they read.
fn judge_sql(job: &PlannedJob) -> Judgement {
    let judge = || -> Result<Judgement, Box<dyn std::error::Error>> {
        let mut options = std::collections::BTreeMap::new();
        for statement in weir_sql::parser::parse_script(job.spec.params.text("script")?)? {
            if let weir_sql::parser::SqlStatement::CreateTable(table) = statement {
                options.insert(table.name.clone(), table.options.clone());
            }
        }
        let option = |table: &str, key: &str| -> Result<String, String> {
            options.get(table).and_then(|o| o.get(key)).cloned().ok_or_else(|| format!("table {table} has no '{key}'"))
        };
        let events: u64 = option("datagen", "events.num")?.parse()?;
        let seed: u64 = option("datagen", "seed")?.parse()?;
        let rate: u64 = option("datagen", "first-event.rate")?.parse()?;
        let lines = |table: &str| -> Result<Vec<String>, Box<dyn std::error::Error>> {
            let dir = PathBuf::from(option(table, "path")?);
            let mut lines = Vec::new();
            let entries = match weir_core::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(format!("{}: {e}", dir.display()).into()),
            };
            for entry in entries.into_iter().filter(|e| !e.is_dir && !e.name.starts_with(['.', '_'])) {
                lines.extend(weir_core::fs::read_to_string(&entry.path)?.lines().map(str::to_owned));
            }
            lines.sort();
            Ok(lines)
        };
        let (tables, expected): (Vec<&str>, Vec<Vec<String>>) = if options.contains_key("tumbling") {
            let expected = weir_chaos::nexmark::sql_stateful_expected(events, seed, rate);
            (vec!["tumbling", "hopping", "sessions", "cumulating", "q8", "q3", "q7", "q20", "q5"], expected.into())
        } else if options.contains_key("q15") {
            let expected = weir_chaos::nexmark::sql_updating_expected(events, seed, rate);
            (vec!["q4", "q9", "q18", "q19", "q15", "q17", "top3"], expected.into())
        } else {
            (
                vec!["q0", "q1", "q2", "q21", "q22"],
                weir_chaos::nexmark::sql_stateless_expected(events, seed, rate).into(),
            )
        };
        let mut judgement = Judgement::Equal;
        for (table, expected) in tables.into_iter().zip(expected) {
            judgement = both(judgement, compare(table, expected, lines(table)?));
        }
        Ok(judgement)
    };
    judge().unwrap_or_else(|e| Judgement::Unreadable(e.to_string()))
}

fn judge_mix(job: &PlannedJob) -> Judgement {
    use weir_example::mix::{AlarmGenerator, Pair, Reading, ReadingGenerator, Sensors, WindowFigure};
    use weir_example::reference::Side;
    let params = &job.spec.params;
    let judge = || -> Result<Judgement, Box<dyn std::error::Error>> {
        let output = params.path("output")?;
        let sensors = Sensors::new(params.u64("events")?, params.u64("sensors")?, params.u64("seed")?)?;
        let expected = weir_example::reference::mix(
            &generated(&ReadingGenerator(sensors.clone()), job.parallelism()),
            &generated(&AlarmGenerator(sensors), job.parallelism()),
            params.duration_ms("out-of-orderness")?,
        );
        let figures = |dir: &str| committed_records::<WindowFigure>(&output.join(dir), false);
        let pairs = |dir: &str| committed_records::<Pair>(&output.join(dir), false);
        let readings = |dir: &str| committed_records::<Reading>(&output.join(dir), true);
        let sides = |dir: &str| committed_records::<Side>(&output.join(dir), true);
        let judgements = [
            compare("sliding", expected.sliding, figures("sliding")?),
            compare("sliding late", expected.sliding_late, readings("late-sliding")?),
            compare("cumulate", expected.cumulate, figures("cumulate")?),
            compare("cumulate late", expected.cumulate_late, readings("late-cumulate")?),
            compare("allowed lateness", expected.lenient, figures("lenient")?),
            compare("allowed lateness late", expected.lenient_late, readings("late-lenient")?),
            compare(
                "count window",
                expected.count_window,
                committed_records::<(i64, i64)>(&output.join("count-window"), false)?,
            ),
            compare("custom trigger", expected.spikes, committed_records::<(i64, i64)>(&output.join("spikes"), false)?),
            compare("count window late", expected.global_late.clone(), readings("late-count-window")?),
            compare("custom trigger late", expected.global_late.clone(), readings("late-spikes")?),
            compare(
                "processing-time batches",
                expected.batched,
                committed_records::<Reading>(&output.join("batched"), false)?,
            ),
            compare("processing-time batches late", expected.global_late, readings("late-batched")?),
            compare("broadcast state", expected.flagged, pairs("flagged")?),
            compare(
                "broadcast state late",
                expected.flagged_late,
                committed_records::<weir_example::reference::Either2>(&output.join("late-flagged"), true)?,
            ),
            compare("interval join", expected.interval, pairs("interval-join")?),
            compare("interval join late", expected.interval_late, sides("late-interval")?),
            compare("window join", expected.window_join, pairs("window-join")?),
            compare("window join late", expected.window_join_late, sides("late-window-join")?),
        ];
        Ok(judgements.into_iter().fold(Judgement::Equal, both))
    };
    judge().unwrap_or_else(|e| Judgement::Unreadable(e.to_string()))
}

fn judge_enrichment(job: &PlannedJob) -> Judgement {
    use weir_example::enrichment::{ClickGenerator, EnrichedClick, ProfileGenerator, Streams};
    use weir_example::reference::Input as Either;
    let params = &job.spec.params;
    let read = || -> Result<_, Box<dyn std::error::Error>> {
        let output = params.path("output")?;
        let streams = Streams::new(params.u64("events")?, params.u64("users")?, params.u64("seed")?)?;
        let reference = weir_example::reference::enrichment(
            &generated(&ProfileGenerator(streams.clone()), job.parallelism()),
            &generated(&ClickGenerator(streams), job.parallelism()),
            params.duration_ms("out-of-orderness")?,
            params.duration_ms("profile-ttl")?,
        );
        let clicks: Vec<EnrichedClick> = committed_records(&output.join("clicks"), false)?;
        let late: Vec<Either> = committed_records(&output.join("late"), true)?;
        Ok((reference, clicks, late))
    };
    match read() {
        Ok(((expected_clicks, expected_late), clicks, late)) => {
            both(compare("enriched clicks", expected_clicks, clicks), compare("late", expected_late, late))
        }
        Err(e) => Judgement::Unreadable(e.to_string()),
    }
}

/// Submits a job like an operator would: the coordinator may need a moment to listen.
/// Submits a later phase of a rescaling run (`job_id`, from a savepoint). A refusal is asked
/// again for a while — the savepoint or the job's records may meet a storage fault — and an
/// answer lost with a coordinator finds the job running on the retry.
async fn submit_phase(
    tls: &TlsContext,
    coordinator: &str,
    request: &ClientRequest,
    job_id: String,
) -> Result<String, String> {
    let mut refusals = 0;
    loop {
        match submit_job(tls, coordinator, request).await {
            Ok(id) => return Ok(id),
            Err(message) if message.contains("already running") => return Ok(job_id),
            Err(message) if refusals < 40 => {
                rt::trace(&format!("submission of {job_id} refused, asking again: {message}"));
                refusals += 1;
                madsim::time::sleep(Duration::from_millis(250)).await;
            }
            Err(message) => return Err(format!("submission of {job_id} from a savepoint refused: {message}")),
        }
    }
}

async fn submit_job(tls: &TlsContext, coordinator: &str, request: &ClientRequest) -> Result<String, String> {
    for _ in 0..50 {
        match weir_cluster::client::request(tls, coordinator, request).await {
            Ok(ClientResponse::Submitted { job_id }) => return Ok(job_id),
            Ok(ClientResponse::Error(message)) => return Err(message),
            Ok(other) => return Err(format!("submit refused: {other:?}")),
            Err(_) => madsim::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err("coordinator never accepted the job".into())
}

/// What the plan damaged on purpose: checkpoints (not expected to restore) and job records
/// (their names; the job may then fail, naming one).
#[derive(Default)]
struct Damaged {
    checkpoints: Vec<u64>,
    records: Vec<String>,
}

/// The committed files on disk, and what each was (its file system identity): the oracle that
/// durable committed output only grows.
#[derive(Default)]
struct CommittedFiles(std::collections::BTreeMap<PathBuf, u64>);

impl CommittedFiles {
    /// Looks at the sinks again: every committed file seen before must still be there, the
    /// same file. The one exception is a restore that had to fall back past a checkpoint the
    /// plan damaged on purpose: output of the epochs that checkpoint covered is retracted, to
    /// be recomputed.
    fn update(&mut self, dirs: &[PathBuf], damaged: &Damaged) -> Result<(), String> {
        // What is on disk: a reader may see a commit before it is durable (between its rename
        // and its directory's sync), and a crash then may undo it; what it can rely on is the
        // durable state, which must only grow.
        let now: std::collections::BTreeMap<PathBuf, u64> =
            dirs.iter().flat_map(|dir| weir_core::fs::sim::durable_files(dir)).collect();
        let retractable = damaged.checkpoints.iter().copied().max().unwrap_or(0);
        for (file, identity) in &self.0 {
            if now.get(file) == Some(identity) {
                continue;
            }
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let epoch = weir_dataflow::sink::parse_committed(&name).map_or(u64::MAX, |(epoch, _)| epoch);
            if epoch > retractable {
                let what = if now.contains_key(file) { "was replaced" } else { "disappeared" };
                return Err(format!(
                    "{} {what} after a reader saw it: committed output must only grow (no checkpoint covering epoch {epoch} was damaged)",
                    file.display()
                ));
            }
        }
        self.0 = now;
        Ok(())
    }
}

/// Applies the plan's faults at their times and heals them.
async fn inject(world: &World, plan: &FaultPlan, damaged: &Mutex<Damaged>) -> Result<(), String> {
    let started = madsim::time::Instant::now();
    let net = madsim::net::NetSim::current();
    let default_latency = madsim::Config::default().net.send_latency;
    let worker = |index: usize| world.workers[index].id();
    let node = |node: Node| match node {
        Node::Coordinator => world.coordinator.id(),
        Node::Worker(index) => worker(index),
    };
    let address = |node: Node| match node {
        Node::Coordinator => node_ip(1),
        Node::Worker(index) => node_ip(2 + index as u8),
    };
    // The connection a link fault names, as (the opening end, the accepting end): the accepting
    // end is the one at a listening port (7500 on workers, 7400 on the coordinator).
    let connection = |link: weir_chaos::faults::Link| -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        let oriented = |(a, b): (std::net::SocketAddr, std::net::SocketAddr)| {
            if a.port() == 7500 || a.port() == 7400 {
                (b, a)
            } else {
                (a, b)
            }
        };
        let open: Vec<_> = faultpoint::open_connections().into_iter().map(oriented).collect();
        match link {
            weir_chaos::faults::Link::Data(index) => {
                let data: Vec<_> = open.into_iter().filter(|(_, acceptor)| acceptor.port() == 7500).collect();
                (!data.is_empty()).then(|| data[index % data.len()])
            }
            weir_chaos::faults::Link::Control(worker) => open
                .into_iter()
                .find(|(opener, acceptor)| acceptor.port() == 7400 && opener.ip() == address(Node::Worker(worker))),
        }
    };
    let mut events: Vec<(u64, bool, &Fault)> = Vec::new();
    for fault in &plan.faults {
        events.push((fault.at_ms(), true, fault));
        if fault.duration_ms() > 0 {
            events.push((fault.end_ms(), false, fault));
        }
    }
    events.sort_by_key(|(at, start, _)| (*at, !*start));
    let mut aimed_kills = Vec::new();
    let mut rogues = Vec::new();
    for (at_ms, start, fault) in events {
        madsim::time::sleep_until(started + Duration::from_millis(at_ms)).await;
        rt::trace(&format!("fault {} {fault}", if start { "begins" } else { "heals" }));
        match (fault, start) {
            (Fault::KillWorker { worker: w, .. }, true) => faultpoint::crash_node(worker(*w)),
            (Fault::KillWorker { worker: w, .. } | Fault::CorruptCheckpoint { worker: w, .. }, false) => {
                faultpoint::restart_node(worker(*w))
            }
            (Fault::KillCoordinator { .. }, true) => faultpoint::crash_node(world.coordinator.id()),
            (Fault::KillCoordinator { .. }, false) => faultpoint::restart_node(world.coordinator.id()),
            (Fault::Partition { worker: w, .. }, true) => net.clog_node(worker(*w)),
            (Fault::Partition { worker: w, .. }, false) => net.unclog_node(worker(*w)),
            (Fault::OneWayPartition { worker: w, outbound: true, .. }, true) => net.clog_node_out(worker(*w)),
            (Fault::OneWayPartition { worker: w, outbound: true, .. }, false) => net.unclog_node_out(worker(*w)),
            (Fault::OneWayPartition { worker: w, outbound: false, .. }, true) => net.clog_node_in(worker(*w)),
            (Fault::OneWayPartition { worker: w, outbound: false, .. }, false) => net.unclog_node_in(worker(*w)),
            (Fault::Latency { min_ms, max_ms, .. }, true) => net.update_config(|config| {
                config.send_latency = Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms)
            }),
            (Fault::Latency { .. }, false) => {
                let latency = default_latency.clone();
                net.update_config(|config| config.send_latency = latency)
            }
            (Fault::Pause { node: n, .. }, true) => world.handle.pause(node(*n)),
            (Fault::Pause { node: n, .. }, false) => world.handle.resume(node(*n)),
            (Fault::Storage { mode, .. }, true) => world.storage.begin(*mode),
            (Fault::Storage { .. }, false) => world.storage.heal(),
            (Fault::CorruptCheckpoint { damage, file, worker: w, .. }, true) => {
                if let Some(checkpoint) = world.storage.newest_stored_checkpoint(&world.job().job_id).await {
                    let store = CheckpointStore::open(&format!("memory://{}", world.store_name), &world.job().job_id)
                        .map_err(|e| e.to_string())?;
                    // The state files `_metadata` names (by attempt); `_metadata` itself when it
                    // does not read.
                    let names: Vec<String> = match store.load(checkpoint).await {
                        Ok(restored) => restored.metadata.files.into_iter().map(|file| file.name).collect(),
                        Err(_) => Vec::new(),
                    };
                    let files = names.len() + 1;
                    let name = names.get(file % files).cloned().unwrap_or_else(|| METADATA.to_string());
                    if world.storage.damage(&store.object_path(checkpoint, &name), *damage).await {
                        rt::trace(&format!("damaged {name} of checkpoint {checkpoint}"));
                        damaged.lock().expect("damaged").checkpoints.push(checkpoint);
                    }
                }
                faultpoint::crash_node(worker(*w));
            }
            (Fault::StallSplit { split, duration_ms, .. }, true) => {
                faultpoint::stall_split(*split, Duration::from_millis(*duration_ms))
            }
            (Fault::StallSplit { .. }, false) => {}
            (Fault::SinkCommitFails { count, .. }, _) => faultpoint::fail_sink_commits(*count),
            (Fault::ClockJump { node: n, jump_ms, .. }, _) => {
                rt::skew_clock(node(*n), Duration::from_millis(*jump_ms), 1000)
            }
            (Fault::ClockDrift { node: n, rate_permille, .. }, true) => {
                rt::skew_clock(node(*n), Duration::ZERO, *rate_permille)
            }
            (Fault::ClockDrift { node: n, .. }, false) => rt::skew_clock(node(*n), Duration::ZERO, 1000),
            (Fault::KillAtMoment { moment, node: n, skip, armed_ms, down_ms, .. }, true) => {
                // Armed now; if the node reaches the moment in time it dies there, and this
                // task restarts it `down_ms` later.
                let fired = faultpoint::arm_kill(*moment, node(*n), *skip);
                let (id, moment) = (node(*n), *moment);
                let (armed, down) = (Duration::from_millis(*armed_ms), Duration::from_millis(*down_ms));
                aimed_kills.push(madsim::task::spawn(async move {
                    if madsim::time::timeout(armed, fired.notified()).await.is_ok() {
                        rt::trace(&format!("killed at {moment}"));
                        madsim::time::sleep(down).await;
                        faultpoint::restart_node(id);
                    } else {
                        faultpoint::disarm_kill(&fired);
                    }
                }));
            }
            (Fault::KillAtMoment { .. }, false) => {}
            (Fault::KillAtFileOp { node: n, nth, armed_ms, down_ms, .. }, true) => {
                let fired = faultpoint::arm_file_op_kill(node(*n), *nth);
                let id = node(*n);
                let (armed, down) = (Duration::from_millis(*armed_ms), Duration::from_millis(*down_ms));
                aimed_kills.push(madsim::task::spawn(async move {
                    if madsim::time::timeout(armed, fired.notified()).await.is_ok() {
                        rt::trace("crashed at a file operation");
                        madsim::time::sleep(down).await;
                        faultpoint::restart_node(id);
                    } else {
                        faultpoint::disarm_file_op_kill(&fired);
                    }
                }));
            }
            (Fault::KillAtFileOp { .. }, false) => {}
            (Fault::CorruptJobRecord { record, damage, node: n, .. }, true) => {
                let store = CheckpointStore::open(&format!("memory://{}", world.store_name), &world.job().job_id)
                    .map_err(|e| e.to_string())?;
                let path = store.record_path(record.name());
                if world.storage.damage(&object_store::path::Path::from(path.as_str()), *damage).await {
                    rt::trace(&format!("damaged {path}"));
                    damaged.lock().expect("damaged").records.push(path);
                }
                // Force the records to be read: a restore (worker killed) or a resume (the
                // coordinator killed).
                faultpoint::crash_node(node(*n));
            }
            (Fault::CorruptJobRecord { node: n, .. }, false) => faultpoint::restart_node(node(*n)),
            (Fault::ConnectionReset { node: n, .. }, _) => {
                let reset = faultpoint::reset_links(node(*n));
                rt::trace(&format!("reset {reset} connections"));
            }
            (Fault::LinkReset { link, .. }, _) => {
                let found = connection(*link);
                let reset = found.is_some_and(|(a, b)| faultpoint::reset_connection(a, b));
                rt::trace(&format!("reset a connection: {reset}"));
            }
            (Fault::LinkStall { link, opener_writes, .. }, true) => {
                let found = connection(*link);
                let stalled = found.is_some_and(|(opener, acceptor)| {
                    if *opener_writes {
                        faultpoint::stall_connection(opener, acceptor)
                    } else {
                        faultpoint::stall_connection(acceptor, opener)
                    }
                });
                rt::trace(&format!("stalled a connection: {stalled}"));
            }
            (Fault::LinkStall { .. }, false) => faultpoint::unstall_links(),
            (Fault::LinkSlow { a, b, delay_ms, .. }, true) => {
                faultpoint::slow_link(address(*a), address(*b), Duration::from_millis(*delay_ms))
            }
            (Fault::LinkSlow { .. }, false) => faultpoint::heal_slow_links(),
            (Fault::DeployLate { delay_ms, .. }, true) => {
                faultpoint::delay_next_deploy(Duration::from_millis(*delay_ms))
            }
            (Fault::DeployLate { .. }, false) => {}
            (Fault::StaleDeploy { held_ms, .. }, true) => {
                faultpoint::hold_next_deploy();
                // Delivered once a newer attempt has committed for a while (so that it has
                // output a stale deployment could roll back), or when the fault heals.
                let polls = held_ms / 50;
                aimed_kills.push(madsim::task::spawn(async move {
                    for _ in 0..polls {
                        if faultpoint::held_deploy_overtaken() {
                            madsim::time::sleep(Duration::from_millis(700)).await;
                            rt::trace("delivering the held deploy");
                            faultpoint::release_held_deploy();
                            break;
                        }
                        madsim::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
            }
            (Fault::StaleDeploy { .. }, false) => faultpoint::release_held_deploy(),
            (Fault::RoguePeer { .. }, _) => {
                let workers: Vec<String> =
                    (0..world.workers.len()).map(|index| format!("{}:7500", node_ip(2 + index as u8))).collect();
                let (tls, coordinator) = (world.client_tls.clone(), world.coordinator_address.clone());
                rogues.push(world.client.spawn(rogue_peer(tls, coordinator, workers)));
            }
        }
    }
    for kill in aimed_kills {
        kill.await.map_err(|e| format!("aimed kill: {e}"))?;
    }
    for rogue in rogues {
        rogue.await.map_err(|e| format!("rogue peer: {e}"))??;
    }
    Ok(())
}

/// What a peer holding the client's certificate tries that only workers may do; each attempt
/// must be refused. `Err` names the one that was not.
async fn rogue_peer(tls: TlsContext, coordinator: String, workers: Vec<String>) -> Result<(), String> {
    use weir_cluster::net::connect;
    use weir_cluster::protocol::{ClientResponse, DataFrame, Hello, ToCoordinator, ToWorker};
    use weir_cluster::slot::SlotEvent;
    use weir_cluster::wire::{read_message, write_message, ReadLimits};
    let limits = ReadLimits::new(1 << 20, Duration::from_secs(10));
    // Every probe retries for a while: its target may be down or cut off right now.
    let reach = |address: String, role: Role| {
        let tls = tls.clone();
        async move {
            for _ in 0..100 {
                if let Ok(stream) = connect(&tls, &address, role).await {
                    return Some(tokio::io::split(stream));
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }
    };
    let mut probes = 0;
    // Register as a worker offering every slot there is.
    if let Some((mut reader, mut writer)) = reach(coordinator.clone(), Role::Coordinator).await {
        probes += 1;
        let hello =
            Hello::Worker { slots: usize::MAX, data_address: format!("{}:7500", node_ip(MAX_WORKERS as u8 + 2)) };
        let _ = write_message(&mut writer, &hello).await;
        if let Ok(Some(ToWorker::Welcome { .. })) = read_message::<_, ToWorker>(&mut reader, limits).await {
            return Err("a client certificate registered as a worker".into());
        }
    }
    // Hand the coordinator a slot's state, as a worker would, on a client connection: it must
    // not be taken for anything (the connection ends on a frame that is no client request).
    if let Some((mut reader, mut writer)) = reach(coordinator.clone(), Role::Coordinator).await {
        probes += 1;
        let file =
            weir_core::checkpoint::FileEntry { name: "slot-0-a0000000000000001.state".into(), size: 64, crc32: 0 };
        let snapshot = SlotEvent::Snapshot {
            slot: 0,
            checkpoint: 1,
            file,
            shared: Vec::new(),
            uploaded: 0,
            savepoint_file: None,
            records_read: 0,
        };
        let _ = write_message(&mut writer, &Hello::Client).await;
        let _ = write_message(&mut writer, &ToCoordinator::Event { attempt: 1, event: snapshot }).await;
        if let Ok(Some(answer)) = read_message::<_, ClientResponse>(&mut reader, limits).await {
            return Err(format!("the coordinator answered a worker's event on a client connection: {answer:?}"));
        }
    }
    // Inject data frames into every worker's data plane.
    for address in workers {
        let Some((mut reader, mut writer)) = reach(address.clone(), Role::Worker).await else { continue };
        probes += 1;
        let _ = write_message(&mut writer, &Hello::Data { from_worker: 1, attempt: 1 }).await;
        let _ = write_message(&mut writer, &DataFrame::Credit { exchange: 0, from: 0, to: 1, credits: u32::MAX }).await;
        if let Ok(Some(frame)) = read_message::<_, DataFrame>(&mut reader, limits).await {
            return Err(format!("worker at {address} answered a client certificate's data connection: {frame:?}"));
        }
    }
    rt::trace(&format!("the rogue peer was refused {probes} times, everywhere it tried"));
    Ok(())
}

/// The first committed part file whose epoch no stored checkpoint covers yet.
fn committed_beyond_completion(dirs: &[PathBuf], storage: &StorageFaults, job_ids: &[String]) -> Option<String> {
    // Epochs go on across rescaling: the newest checkpoint of any of the job's phases counts.
    let completed =
        job_ids.iter().filter_map(|job_id| storage.completed_checkpoints(job_id).last().copied()).max().unwrap_or(0);
    for dir in dirs {
        let Ok(entries) = weir_core::fs::read_dir(dir) else { continue };
        for entry in entries {
            let name = entry.name;
            if let Some((epoch, slot)) = weir_dataflow::sink::parse_committed(&name) {
                if epoch > completed {
                    return Some(format!(
                        "{} (epoch {epoch}, slot {slot}) while the newest completed checkpoint is {completed}",
                        dir.join(&name).display()
                    ));
                }
            }
        }
    }
    None
}

/// Every checkpoint whose `_metadata` reached storage and is still there verifies and splits
/// into slot states (except those the plan damaged on purpose).
async fn every_checkpoint_restores(world: &World, damaged: &[u64]) -> Result<(), String> {
    for job in &world.phases {
        let job_id = &job.job_id;
        let store =
            CheckpointStore::open(&format!("memory://{}", world.store_name), job_id).map_err(|e| e.to_string())?;
        for checkpoint in world.storage.completed_checkpoints(job_id) {
            // The plan damages the first phase's checkpoints.
            if damaged.contains(&checkpoint) && *job_id == world.job().job_id {
                continue;
            }
            match store.load(checkpoint).await {
                Ok(restored) => {
                    weir_cluster::deploy::plan_restore(Some(&restored), job, false)
                        .map_err(|e| format!("completed checkpoint {checkpoint} of {job_id} does not restore: {e}"))?;
                }
                // Deleted by retention (or as corrupt, metadata first): nothing left to restore.
                Err(CheckpointError::Corrupt { reason, .. }) if reason.contains("_metadata is missing") => {}
                Err(error) => return Err(format!("completed checkpoint {checkpoint} does not restore: {error}")),
            }
        }
    }
    Ok(())
}

/// How a stop with a savepoint ended.
enum Stopped {
    /// The job stopped with this savepoint.
    Savepoint(String),
    /// The job ended first (all input read), or failed as a fault promised.
    Ended(JobStatus),
}

/// Stops job `job_id` with a savepoint in `dir`, asking again while the job is restarting or a
/// savepoint is declined (a storage fault), and finding the savepoint in the job's status when
/// the answer was lost with a coordinator.
async fn stop_with_savepoint(tls: &TlsContext, coordinator: &str, job_id: &str, dir: &str) -> Result<Stopped, String> {
    let request = ClientRequest::Savepoint { job_id: job_id.to_owned(), dir: Some(dir.to_owned()), stop: true };
    loop {
        match weir_cluster::client::request(tls, coordinator, &request).await {
            Ok(ClientResponse::Savepoint { path, .. }) => return Ok(Stopped::Savepoint(path)),
            Ok(ClientResponse::Error(message)) => {
                rt::trace(&format!("stop with savepoint of {job_id} refused: {message}"));
                if let Some(status) = job_status(tls, coordinator, job_id).await? {
                    match status.state {
                        JobState::Stopped => {
                            let path = status.savepoint.clone().ok_or_else(|| {
                                format!("a stopped job's status names no savepoint: {:?}", status.message)
                            })?;
                            return Ok(Stopped::Savepoint(path));
                        }
                        JobState::Finished | JobState::Failed | JobState::Cancelled => {
                            return Ok(Stopped::Ended(status))
                        }
                        _ => {}
                    }
                }
            }
            Ok(other) => return Err(format!("stop with savepoint answered {other:?}")),
            Err(_) => {}
        }
        madsim::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Job `job_id`'s status; `None` while the coordinator cannot be reached.
async fn job_status(tls: &TlsContext, coordinator: &str, job_id: &str) -> Result<Option<JobStatus>, String> {
    let request = ClientRequest::Status { job_id: job_id.to_owned() };
    match weir_cluster::client::request(tls, coordinator, &request).await {
        Ok(ClientResponse::Status(status)) => Ok(Some(status)),
        // A restarted coordinator lists the job once its scan of the store found it.
        Ok(ClientResponse::Error(message)) if message.starts_with("no job") => Ok(None),
        Ok(other) => Err(format!("status refused: {other:?}")),
        Err(_) => Ok(None),
    }
}
