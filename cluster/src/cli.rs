//! The `weir` command line: one parser for the binary, the tests and the simulator.
//!
//! The static commands (coordinator, worker, job list, certs) are declared with clap's derive;
//! a job's own flags come from its declarations in the registry, so `weir run <job> --help`
//! documents them and a value of the wrong type is a one-line error naming the flag.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Arg, Args, Parser, Subcommand};

use weir_core::job::{BadRecordPolicy, JobSpec, StateBackendKind};
use weir_dataflow::{JobDef, JobRegistry};

use crate::run::RunOptions;

/// Weir: exactly-once stream processing on timely dataflow.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job on an embedded local cluster (coordinator and slots in this process):
    /// `weir run JOB [FLAGS]`; `weir run JOB --help` shows the job's flags.
    Run(JobInvocation),
    /// Run a Flink SQL script on an embedded local cluster: `weir sql -f job.sql [FLAGS]` is
    /// `weir run sql --script "$(cat job.sql)" [FLAGS]` (docs/sql.md); without `-f`, an
    /// interactive shell whose queries run with FLAGS.
    Sql(SqlInvocation),
    /// List the jobs this binary can run, with their parameters.
    Jobs,
    /// Run a coordinator: accepts workers and clients over mutual TLS.
    Coordinator(CoordinatorArgs),
    /// Run a worker: offers slots to a coordinator.
    Worker(WorkerArgs),
    /// Submit, list, inspect, savepoint, stop and cancel jobs on a running cluster.
    #[command(subcommand)]
    Job(JobCommand),
    /// Inspect savepoints.
    #[command(subcommand)]
    Savepoint(SavepointCommand),
    /// Create TLS certificates for a development cluster.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// Where the cluster's TLS material lives.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Directory with ca.pem and this role's certificate and key (see `weir certs init`).
    #[arg(long, value_name = "DIR")]
    pub certs: PathBuf,
}

/// Flags of `weir coordinator`.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    /// Address to listen on for workers and clients.
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: String,
    /// Checkpoint storage root: a local directory or file:///path (jobs live in <root>/<job-id>/).
    #[arg(long, default_value = "weir-checkpoints", value_name = "URL")]
    pub checkpoint_dir: String,
    /// Where savepoints go unless `weir job savepoint --dir` names another place (default:
    /// <checkpoint-dir>/_savepoints).
    #[arg(long, value_name = "URL")]
    pub savepoint_dir: Option<String>,
    /// A worker silent this long is lost; workers give up on a coordinator silent this long
    /// (the coordinator tells them at registration).
    #[arg(long, default_value = "3s", value_parser = parse_positive_duration_ms, value_name = "DURATION")]
    pub heartbeat_timeout: i64,
    /// Restarts of a job in a row without progress (input read and a checkpoint completed)
    /// before it fails.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub restarts: u32,
    /// First restart delay (doubles each restart, at most 10 s).
    #[arg(long, default_value = "500ms", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub restart_backoff: i64,
    /// TLS material.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Flags of `weir worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long, value_name = "ADDR")]
    pub coordinator: String,
    /// Slots this worker offers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=128), value_name = "N")]
    pub slots: u64,
    /// Address for data connections from other workers (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: String,
    /// Where slots keep local state (jobs run with --state-backend rocksdb); default: a
    /// directory of the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    pub local_state_dir: Option<std::path::PathBuf>,
    /// The memory each slot's RocksDB instances share (half block cache, half write buffers),
    /// as Flink's slots share managed memory: 128MiB, 1GiB, ...; at least 32MiB.
    #[arg(long = "state-memory-per-slot", default_value = "128MiB", value_parser = parse_state_memory, value_name = "SIZE")]
    pub state_memory_per_slot_bytes: u64,
    /// TLS material.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `weir job …`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job: `weir job submit JOB [FLAGS] --certs DIR`; `--help` after JOB shows its flags.
    Submit(JobInvocation),
    /// List jobs.
    List(ClientArgs),
    /// Show one job.
    Status {
        /// The job id.
        job_id: String,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        job_id: String,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a savepoint of a running job and print its path (for `--from-savepoint`).
    Savepoint {
        /// The job id.
        job_id: String,
        /// Where to write it: a directory, file:///path or memory://NAME (default: the
        /// coordinator's --savepoint-dir).
        #[arg(long, value_name = "URL")]
        dir: Option<String>,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a job with a savepoint: its output is committed through the savepoint and nothing
    /// after it, so that a job started from the savepoint duplicates nothing.
    Stop {
        /// The job id.
        job_id: String,
        /// Take a savepoint (required: to stop without one, use `weir job cancel`).
        #[arg(long, required = true)]
        savepoint: bool,
        /// Where to write it (default: the coordinator's --savepoint-dir).
        #[arg(long, value_name = "URL")]
        dir: Option<String>,
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `weir savepoint …`.
#[derive(Debug, Subcommand)]
pub enum SavepointCommand {
    /// List a savepoint's operators, key-group ranges and sizes, and its source splits.
    Inspect {
        /// The savepoint (as `weir job savepoint` printed it).
        path: String,
    },
}

/// A job named on the command line with its flags (parsed against the job's declarations).
/// `--help` after the job is the job's help, so clap's own help flag is off here.
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct JobInvocation {
    /// The job (see `weir jobs`).
    #[arg(value_name = "JOB", allow_hyphen_values = true)]
    pub job: String,
    /// The job's flags and the engine's (`--parallelism`, `--checkpoint-interval`, …).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "FLAGS")]
    pub flags: Vec<String>,
}

/// `weir sql -f FILE [FLAGS]`, or `weir sql [FLAGS]` for the interactive shell.
#[derive(Debug, Args)]
pub struct SqlInvocation {
    /// `-f FILE` and the engine's flags (`--parallelism`, `--checkpoint-interval`, …).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "FLAGS")]
    pub flags: Vec<String>,
}

impl SqlInvocation {
    /// Whether this is `weir sql` without a script (`-f`, `--script`) or `--help`: the
    /// interactive shell.
    pub fn opens_shell(&self) -> bool {
        !self.flags.iter().any(|flag| {
            let name = flag.split('=').next().unwrap_or(flag);
            matches!(name, "-f" | "--file" | "--script" | "--help" | "-h")
        })
    }

    /// The `sql` job's invocation.
    pub fn job(self) -> JobInvocation {
        JobInvocation { job: "sql".into(), flags: self.flags }
    }
}

/// Reads `-f FILE` / `--file FILE` of the `sql` job into its `--script` flag.
fn expand_script_file(flags: &[String]) -> Result<Vec<String>, String> {
    let mut expanded = Vec::with_capacity(flags.len());
    let mut rest = flags.iter();
    while let Some(flag) = rest.next() {
        let path = match flag.as_str() {
            "-f" | "--file" => rest.next().ok_or("-f needs a file: -f job.sql")?.clone(),
            other => match other.strip_prefix("--file=") {
                Some(path) => path.to_owned(),
                None => {
                    expanded.push(flag.clone());
                    continue;
                }
            },
        };
        let text = weir_core::fs::read_to_string(std::path::Path::new(&path))
            .map_err(|error| format!("cannot read the SQL script {path}: {error}"))?;
        expanded.extend(["--script".to_owned(), text]);
    }
    if !expanded
        .iter()
        .any(|flag| flag == "--script" || flag.starts_with("--script=") || flag == "--help" || flag == "-h")
    {
        return Err("the sql job needs a script: -f job.sql (or --script 'SQL TEXT')".into());
    }
    Ok(expanded)
}

/// How a client reaches the coordinator.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The coordinator's address.
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub coordinator: String,
    /// TLS material.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `weir certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a development CA and coordinator, worker and client certificates in DIR.
    Init {
        /// Output directory.
        dir: PathBuf,
        /// Host names and IP addresses the certificates are valid for.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
    },
}

/// An optional interval (`off` or `0` is none).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Interval(pub Option<Duration>);

pub use weir_core::job::parse_duration_ms;

/// Parses a memory size: a number of bytes, or a number with a unit (`KiB`, `MiB`, `GiB`,
/// `TiB`, or `KB`, `MB`, `GB`, `TB` and their one-letter forms, all powers of 1024 as in
/// Flink's memory settings).
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` is not a size; write a whole number with a unit, like 256MiB"));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("`{text}`: unknown unit `{other}`; write bytes, or KiB, MiB, GiB or TiB")),
    };
    let number: u64 =
        number.parse().map_err(|_| format!("`{text}` is not a size; write a whole number with a unit, like 256MiB"))?;
    number.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses the memory of a slot's RocksDB instances: a size of at least
/// [`weir_dataflow::state::MIN_SLOT_MEMORY_BYTES`].
pub fn parse_state_memory(text: &str) -> Result<u64, String> {
    let bytes = parse_memory_size(text)?;
    let least = weir_dataflow::state::MIN_SLOT_MEMORY_BYTES;
    if bytes < least {
        return Err(format!("`{text}` is below the least a slot's RocksDB instances need, {}MiB", least >> 20));
    }
    Ok(bytes)
}

/// Parses a duration that must be positive.
pub fn parse_positive_duration_ms(text: &str) -> Result<i64, String> {
    match parse_duration_ms(text)? {
        0 => Err(format!("`{text}` must be more than zero")),
        ms => Ok(ms),
    }
}

/// Parses an optional interval: `off` or `0` is none.
pub fn parse_interval(text: &str) -> Result<Interval, String> {
    if text == "off" || text == "0" {
        return Ok(Interval(None));
    }
    let ms = parse_duration_ms(text)?;
    Ok(Interval((ms > 0).then(|| Duration::from_millis(ms as u64))))
}

impl CoordinatorArgs {
    /// The coordinator's options (loads its TLS material).
    pub fn to_options(
        &self,
        registry: SharedRegistry,
    ) -> Result<crate::server::CoordinatorOptions, crate::tls::TlsError> {
        Ok(crate::server::CoordinatorOptions {
            listen: self.listen.clone(),
            tls: crate::tls::TlsContext::load(&self.tls.certs, crate::tls::Role::Coordinator)?,
            // Absolute: workers upload state there from their own working directories.
            checkpoint_dir: absolute_location(&self.checkpoint_dir),
            // Absolute: the paths of savepoints are printed for clients in other directories.
            savepoint_dir: absolute_location(
                &self
                    .savepoint_dir
                    .clone()
                    .unwrap_or_else(|| format!("{}/_savepoints", self.checkpoint_dir.trim_end_matches('/'))),
            ),
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout as u64),
            restarts_max: self.restarts,
            restart_backoff: Duration::from_millis(self.restart_backoff as u64),
            registry,
        })
    }
}

impl WorkerArgs {
    /// The worker's options (loads its TLS material).
    pub fn to_options(&self, registry: SharedRegistry) -> Result<crate::worker::WorkerOptions, crate::tls::TlsError> {
        Ok(crate::worker::WorkerOptions {
            coordinator: self.coordinator.clone(),
            slots: self.slots as usize,
            listen: self.listen.clone(),
            tls: crate::tls::TlsContext::load(&self.tls.certs, crate::tls::Role::Worker)?,
            registry,
            local_state_dir: self.local_state_dir.clone().unwrap_or_else(crate::deploy::default_local_state_dir),
            state_memory_per_slot_bytes: self.state_memory_per_slot_bytes,
        })
    }
}

/// Where a parsed job invocation runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InvocationKind {
    /// `weir run`: the embedded cluster (progress lines, local checkpoints).
    Run,
    /// `weir job submit`: a running cluster (connection flags).
    Submit,
}

/// A job invocation, parsed: the spec, how to run it, and (for submissions) where to send it.
#[derive(Debug)]
pub struct ParsedJob {
    /// The job spec and the run's engine options.
    pub options: RunOptions,
    /// Progress line interval (`weir run`).
    pub progress: Interval,
    /// The coordinator and TLS material (`weir job submit`).
    pub client: Option<ClientArgs>,
}

/// What parsing an invocation produced: the job, or text to print (help) and leave.
#[derive(Debug)]
pub enum Invocation {
    /// A job to run or submit.
    Job(Box<ParsedJob>),
    /// `--help` was asked for: print this and exit successfully.
    Help(String),
}

/// The clap command of one job: its declared parameters and the engine's flags.
pub fn job_command(def: &JobDef, kind: InvocationKind) -> clap::Command {
    let name = match kind {
        InvocationKind::Run => format!("weir run {}", def.name),
        InvocationKind::Submit => format!("weir job submit {}", def.name),
    };
    let mut command = clap::Command::new(name).about(def.about.clone()).no_binary_name(true);
    for param in &def.params {
        let parse = param.clone();
        let mut help = param.help.to_string();
        if let Some(default) = param.default {
            help.push_str(&format!(" [default: {default}]"));
        }
        let arg = Arg::new(param.name)
            .long(param.name)
            .value_name(param.type_name())
            .help(help)
            .required(param.required)
            // Text may start with a dash (a SQL script's `-- comment`).
            .allow_hyphen_values(matches!(param.kind, weir_core::job::ParamKind::Text))
            .value_parser(move |text: &str| parse.parse(text).map(|_| text.to_string()));
        command = command.arg(arg);
    }
    let engine = |id: &'static str, value: &'static str, default: Option<&'static str>, help: &'static str| {
        let arg = Arg::new(id).long(id).value_name(value).help(help).help_heading("Engine");
        match default {
            Some(default) => arg.default_value(default),
            None => arg,
        }
    };
    command = command
        .arg(engine("parallelism", "N", Some("1"), "number of slots (parallel single-threaded workers), 1..=128"))
        .arg(
            engine("on-bad-record", "skip|fail", Some("skip"), "what sources do with a malformed record")
                .value_parser(["skip", "fail"]),
        )
        .arg(engine(
            "checkpoint-interval",
            "DURATION",
            Some("1s"),
            "time between checkpoints; 0 or `off` takes only the final checkpoint at end of input",
        ))
        .arg(engine(
            "checkpoint-timeout",
            "DURATION",
            Some("10m"),
            "a checkpoint not complete this long after its trigger is declined (five in a row restart the job)",
        ))
        .arg(engine("retained-checkpoints", "N", Some("3"), "complete checkpoints to keep"))
        .arg(
            engine(
                "state-backend",
                "memory|rocksdb",
                Some("memory"),
                "where keyed state lives: in memory, or in RocksDB on local disk (state larger than memory)",
            )
            .value_parser(["memory", "rocksdb"]),
        )
        .arg(engine(
            "rate",
            "RECORDS_PER_SECOND",
            None,
            "throttle the sources to this many records per second in total",
        ))
        .arg(engine(
            "from-savepoint",
            "PATH",
            None,
            "start from this savepoint (as `weir job savepoint` printed it), at any parallelism, while the job has no checkpoint of its own",
        ))
        .arg(
            Arg::new("allow-non-restored-state")
                .long("allow-non-restored-state")
                .action(clap::ArgAction::SetTrue)
                .help("start even if the savepoint holds state of operators the job no longer has (that state is dropped)")
                .help_heading("Engine"),
        );
    match kind {
        InvocationKind::Run => command
            .arg(engine(
                "checkpoint-dir",
                "URL",
                None,
                "checkpoint storage: a local directory, file:///path, or memory:// (lost at exit); \
                 default: _checkpoints in the job's first output directory",
            ))
            .arg(engine("progress", "DURATION", Some("1s"), "progress line interval on stderr; 0 or `off` for none"))
            .arg(engine(
                "local-state-dir",
                "DIR",
                None,
                "where slots keep local state (--state-backend rocksdb); default: weir-local-state in the system's \
                 temporary directory",
            ))
            .arg(
                engine(
                    "state-memory-per-slot",
                    "SIZE",
                    Some("128MiB"),
                    "the memory each slot's RocksDB instances share (half block cache, half write buffers): 128MiB, \
                     1GiB, ...; at least 32MiB",
                )
                .value_parser(parse_state_memory),
            ),
        InvocationKind::Submit => {
            command.arg(engine("coordinator", "ADDR", Some("127.0.0.1:7400"), "the coordinator's address")).arg(
                engine(
                    "certs",
                    "DIR",
                    None,
                    "directory with ca.pem and the client certificate (see `weir certs init`)",
                )
                .required(true),
            )
        }
    }
}

/// Parses `weir run JOB FLAGS…` or `weir job submit JOB FLAGS…` against the registry. Errors
/// are clap's (one line naming the flag, with a usage hint) or the job's own validation.
pub fn parse_invocation(
    registry: &JobRegistry,
    invocation: &JobInvocation,
    kind: InvocationKind,
) -> Result<Invocation, String> {
    if matches!(invocation.job.as_str(), "--help" | "-h" | "help") {
        let verb = if kind == InvocationKind::Run { "weir run" } else { "weir job submit" };
        let names: Vec<&str> = registry.jobs().map(|job| job.name.as_str()).collect();
        return Ok(Invocation::Help(format!(
            "Usage: {verb} JOB [FLAGS]...\n\nJobs: {}\n`{verb} JOB --help` shows a job's flags; `weir jobs` lists every job with its parameters.\n",
            names.join(", ")
        )));
    }
    let def = registry.get(&invocation.job)?;
    let flags = if invocation.job == "sql" { expand_script_file(&invocation.flags)? } else { invocation.flags.clone() };
    let matches = match job_command(def, kind).try_get_matches_from(&flags) {
        Ok(matches) => matches,
        Err(error) if matches!(error.kind(), clap::error::ErrorKind::DisplayHelp) => {
            return Ok(Invocation::Help(error.render().to_string()))
        }
        // clap's lines up to the usage name the flag and the problem: one line of them.
        Err(error) => {
            let rendered = error.render().to_string();
            let lines: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect();
            return Err(lines.join(" ").trim_start_matches("error: ").to_string());
        }
    };
    let mut given = BTreeMap::new();
    for param in &def.params {
        if let Some(value) = matches.get_one::<String>(param.name) {
            given.insert(param.name.to_string(), value.clone());
        }
    }
    let text = |id: &str| matches.get_one::<String>(id).cloned();
    let number = |id: &str| -> Result<Option<u64>, String> {
        text(id)
            .map(|t| t.trim().parse::<u64>().map_err(|_| format!("--{id} {t:?}: expected a whole number")))
            .transpose()
    };
    // The job's own settings (a SQL script's SETs) stand in for flags not given on the command line.
    let defaults = def.engine_defaults(&given)?;
    let on_command_line = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let parallelism = match defaults.parallelism {
        Some(set) if !on_command_line("parallelism") => set,
        _ => number("parallelism")?.unwrap_or(1) as usize,
    };
    let on_bad_record = match text("on-bad-record").as_deref() {
        Some("fail") => BadRecordPolicy::Fail,
        _ => BadRecordPolicy::Skip,
    };
    let mut spec: JobSpec = def.spec(&given, parallelism, on_bad_record)?;
    spec.state_backend = match defaults.state_backend {
        Some(set) if !on_command_line("state-backend") => set,
        _ => text("state-backend")
            .unwrap_or_default()
            .parse::<StateBackendKind>()
            .expect("the flag's parser admits only backend names"),
    };
    // `weir run` runs here; a submitted job runs on the workers, which check it themselves.
    if kind == InvocationKind::Run
        && spec.state_backend == StateBackendKind::RocksDb
        && !weir_dataflow::state::HAS_ROCKSDB
    {
        return Err(format!("state backend rocksdb: {}", weir_dataflow::state::NO_ROCKSDB));
    }
    let mut options = RunOptions::new(spec);
    // A node's setting: `weir run` is its own node; a submitted job uses its workers' flags.
    if kind == InvocationKind::Run {
        if let Some(dir) = text("local-state-dir") {
            options.local_state_dir = crate::run::absolute(std::path::Path::new(&dir));
        }
        if let Some(&bytes) = matches.get_one::<u64>("state-memory-per-slot") {
            options.state_memory_per_slot_bytes = bytes;
        }
    }
    let interval = |id: &str| parse_interval(&text(id).unwrap_or_default()).map_err(|e| format!("--{id}: {e}"));
    options.checkpoint_interval = match defaults.checkpoint_interval {
        Some(set) if !on_command_line("checkpoint-interval") => Some(set),
        _ => interval("checkpoint-interval")?.0,
    };
    options.checkpoint_timeout = Duration::from_millis(
        parse_positive_duration_ms(&text("checkpoint-timeout").unwrap_or_default())
            .map_err(|e| format!("--checkpoint-timeout: {e}"))? as u64,
    );
    options.retained_checkpoints = match number("retained-checkpoints")? {
        Some(0) => return Err("--retained-checkpoints must be at least 1".into()),
        other => other.unwrap_or(3) as usize,
    };
    options.rate_limit = match number("rate")? {
        Some(0) => return Err("--rate must be more than zero".into()),
        other => other,
    };
    options.from_savepoint = text("from-savepoint").map(|path| absolute_location(&path));
    options.allow_non_restored_state = matches.get_flag("allow-non-restored-state");
    let mut parsed = ParsedJob { options, progress: Interval(None), client: None };
    match kind {
        InvocationKind::Run => {
            parsed.options.checkpoint_location = text("checkpoint-dir");
            parsed.progress = interval("progress")?;
        }
        InvocationKind::Submit => {
            parsed.client = Some(ClientArgs {
                coordinator: text("coordinator").unwrap_or_default(),
                tls: TlsArgs { certs: PathBuf::from(text("certs").unwrap_or_default()) },
            });
        }
    }
    Ok(Invocation::Job(Box::new(parsed)))
}

/// A storage location as every process reads it: a local path made absolute (a coordinator
/// resolves paths in its own working directory, not the client's); a URL as it is.
pub fn absolute_location(location: &str) -> String {
    let (scheme, path) = match location.strip_prefix("file://") {
        Some(path) => ("file://", path),
        None if location.contains("://") => return location.to_owned(),
        None => ("", location),
    };
    format!("{scheme}{}", crate::run::absolute(std::path::Path::new(path)).display())
}

/// `weir jobs`: the registered jobs and their parameters.
pub fn describe_jobs(registry: &JobRegistry) -> String {
    let mut out = String::new();
    for job in registry.jobs() {
        out.push_str(&format!("{}\n    {}\n", job.name, job.about));
        for param in &job.params {
            let default = match (param.default, param.required) {
                (Some(default), _) => format!(" (default {default})"),
                (None, true) => " (required)".to_string(),
                (None, false) => String::new(),
            };
            out.push_str(&format!("    --{} {}{default}\n        {}\n", param.name, param.type_name(), param.help));
        }
        out.push('\n');
    }
    out.push_str(
        "Every job also takes the engine's flags: --parallelism, --on-bad-record, --checkpoint-interval, \
         --checkpoint-timeout, --retained-checkpoints, --state-backend, --rate (and --checkpoint-dir, --local-state-dir, \
         --state-memory-per-slot, --progress with `weir run`).\n",
    );
    out
}

/// The shared registry of a process's entry points.
pub type SharedRegistry = Arc<JobRegistry>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert!(parse_duration_ms("10").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("ten").is_err());
        assert_eq!(parse_duration_ms("5d"), Ok(432_000_000));
        assert_eq!(parse_duration_ms("10 s"), Ok(10_000), "as Flink writes it");
        assert!(parse_duration_ms("5 fortnights").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_interval("off"), Ok(Interval(None)));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test writes its script with std::fs
    fn sql_reads_its_script_from_a_file_that_may_start_with_a_comment() {
        let registry = crate::jobs::builtin();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("job.sql");
        let script = "-- a comment first\nCREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole');";
        std::fs::write(&file, script).unwrap();
        let sql = |flags: &[&str]| SqlInvocation { flags: flags.iter().map(|f| f.to_string()).collect() }.job();
        let parsed = match parse_invocation(&registry, &sql(&["-f", &file.display().to_string()]), InvocationKind::Run)
        {
            Ok(Invocation::Job(parsed)) => parsed,
            other => panic!("expected a job, got {other:?}"),
        };
        assert_eq!(parsed.options.spec.params.text("script").unwrap(), script);
        let missing = parse_invocation(&registry, &sql(&["-f", "/no/such/job.sql"]), InvocationKind::Run).unwrap_err();
        assert!(missing.starts_with("cannot read the SQL script /no/such/job.sql"), "{missing}");
        let none = parse_invocation(&registry, &sql(&["--parallelism", "2"]), InvocationKind::Run).unwrap_err();
        assert!(none.contains("needs a script: -f job.sql"), "{none}");
    }

    #[test]
    fn a_scripts_set_statements_are_defaults_that_command_line_flags_override() {
        let registry = crate::jobs::builtin();
        let script = "SET 'parallelism.default' = '3';
SET 'execution.checkpointing.interval' = '10 s';
                      CREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole');";
        let run = |flags: &[&str], kind| {
            let mut all = vec!["--script".to_string(), script.to_string()];
            all.extend(flags.iter().map(|f| f.to_string()));
            match parse_invocation(&registry, &SqlInvocation { flags: all }.job(), kind) {
                Ok(Invocation::Job(parsed)) => (parsed.options.spec.parallelism, parsed.options.checkpoint_interval),
                other => panic!("expected a job, got {other:?}"),
            }
        };
        let ten = Some(Duration::from_secs(10));
        assert_eq!(run(&[], InvocationKind::Run), (3, ten));
        assert_eq!(run(&["--coordinator", "x:1", "--certs", "c"], InvocationKind::Submit), (3, ten), "submit too");
        assert_eq!(run(&["--parallelism", "2"], InvocationKind::Run), (2, ten), "the flag wins");
        assert_eq!(run(&["--checkpoint-interval", "off"], InvocationKind::Run), (3, None), "the flag wins");
        let bad = SqlInvocation { flags: vec!["--script".into(), "SET 'pipeline.name' = 'x';".into()] };
        let error = parse_invocation(&registry, &bad.job(), InvocationKind::Run).unwrap_err();
        assert!(error.contains("line 1, column 1") && error.contains("is not supported"), "{error}");
    }

    #[test]
    fn the_state_backend_comes_from_the_flag_or_the_script_and_the_local_state_dir_from_the_node() {
        let registry = crate::jobs::builtin();
        let parse = |script: &str, flags: &[&str], kind| {
            let mut all = vec![
                "--script".to_string(),
                format!("{script} CREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole');"),
            ];
            all.extend(flags.iter().map(|f| f.to_string()));
            parse_invocation(&registry, &SqlInvocation { flags: all }.job(), kind).map(|parsed| match parsed {
                Invocation::Job(parsed) => (parsed.options.spec.state_backend, parsed.options.local_state_dir),
                other => panic!("expected a job, got {other:?}"),
            })
        };
        let submit = ["--coordinator", "x:1", "--certs", "c"];
        let (backend, dir) = parse("", &[], InvocationKind::Run).unwrap();
        assert_eq!((backend, dir), (StateBackendKind::Memory, crate::deploy::default_local_state_dir()));
        let (_, dir) = parse("", &["--local-state-dir", "/var/weir"], InvocationKind::Run).unwrap();
        assert_eq!(dir, PathBuf::from("/var/weir"));
        let script = "SET 'state.backend' = 'rocksdb';";
        // Submitted, a job runs on workers that check it themselves: the client's build has no say.
        assert_eq!(parse(script, &submit, InvocationKind::Submit).unwrap().0, StateBackendKind::RocksDb);
        let mut flags = submit.to_vec();
        flags.extend(["--state-backend", "memory"]);
        assert_eq!(parse(script, &flags, InvocationKind::Submit).unwrap().0, StateBackendKind::Memory, "the flag wins");
        let run_on_rocksdb = parse("", &["--state-backend", "rocksdb"], InvocationKind::Run);
        if weir_dataflow::state::HAS_ROCKSDB {
            assert_eq!(run_on_rocksdb.unwrap().0, StateBackendKind::RocksDb);
        } else {
            let error = run_on_rocksdb.unwrap_err();
            assert!(error.contains("no RocksDB state backend") && error.contains("--features rocksdb"), "{error}");
        }
        let error = parse("", &["--state-backend", "lmdb"], InvocationKind::Run).unwrap_err();
        assert!(error.contains("lmdb") && error.contains("rocksdb"), "{error}");
    }

    #[test]
    fn a_slots_state_memory_is_a_size_with_a_unit_and_at_least_the_least() {
        assert_eq!(parse_memory_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_memory_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_memory_size("2 gb"), Ok(2 << 30));
        assert_eq!(parse_memory_size("64m"), Ok(64 << 20));
        for (bad, says) in [("12 parsecs", "unknown unit `parsecs`"), ("MiB", "not a size"), ("-5MiB", "not a size")] {
            let error = parse_memory_size(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(parse_memory_size("99999999999TiB").unwrap_err().contains("too large"));
        assert!(parse_state_memory("16MiB").unwrap_err().contains("32MiB"));
        let registry = crate::jobs::builtin();
        let run = |flags: &[&str]| {
            let mut all =
                vec!["--script".to_string(), "CREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole');".into()];
            all.extend(flags.iter().map(|f| f.to_string()));
            parse_invocation(&registry, &SqlInvocation { flags: all }.job(), InvocationKind::Run).map(|parsed| {
                match parsed {
                    Invocation::Job(parsed) => parsed.options.state_memory_per_slot_bytes,
                    other => panic!("expected a job, got {other:?}"),
                }
            })
        };
        assert_eq!(run(&[]).unwrap(), weir_dataflow::state::DEFAULT_SLOT_MEMORY_BYTES);
        assert_eq!(run(&["--state-memory-per-slot", "1GiB"]).unwrap(), 1 << 30);
        let error = run(&["--state-memory-per-slot", "1MiB"]).unwrap_err();
        assert!(error.contains("state-memory-per-slot") && error.contains("32MiB"), "{error}");
        // A worker's flag: the same default, and the same parser.
        let worker = |flags: &[&str]| {
            let mut all = vec!["weir", "worker", "--coordinator", "x:1", "--certs", "c"];
            all.extend(flags);
            match Cli::try_parse_from(all).map(|cli| cli.command) {
                Ok(Command::Worker(args)) => Ok(args.state_memory_per_slot_bytes),
                Ok(other) => panic!("expected a worker, got {other:?}"),
                Err(error) => Err(error.to_string()),
            }
        };
        assert_eq!(worker(&[]).unwrap(), weir_dataflow::state::DEFAULT_SLOT_MEMORY_BYTES);
        assert_eq!(worker(&["--state-memory-per-slot", "512MiB"]).unwrap(), 512 << 20);
        assert!(worker(&["--state-memory-per-slot", "lots"]).unwrap_err().contains("not a size"));
    }
}
