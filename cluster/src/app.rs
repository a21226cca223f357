//! The `weir` command line as a library entry point: the `weir` binary and a user's own binary
//! (which registers its jobs) both call [`main`], and so get the same CLI — run, jobs,
//! coordinator, worker, job, certs.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use weir_dataflow::JobRegistry;

use crate::cli::{
    absolute_location, describe_jobs, parse_invocation, CertsCommand, Cli, ClientArgs, Command, Invocation,
    InvocationKind, JobCommand, JobInvocation, SavepointCommand,
};
use crate::protocol::{ClientRequest, ClientResponse, JobOptions, JobStatus};
use crate::run::{run_job, RunSummary};
use crate::tls::{init_certs, Role, TlsContext};

/// The whole `weir` command line over `registry`: what the `weir` binary runs, and what a
/// user's own binary calls after registering its jobs. (The `weir` binary sets mimalloc as its
/// global allocator, which makes SQL jobs up to twice as fast as the system allocator does; a
/// user's binary chooses its own.)
///
/// ```ignore
/// fn main() -> std::process::ExitCode {
///     let mut jobs = weir_cluster::jobs::builtin();
///     jobs.register(my_job());
///     weir_cluster::app::main(jobs)
/// }
/// ```
pub fn main(registry: JobRegistry) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .try_init();
    let registry = Arc::new(registry);
    let cli = Cli::parse();
    match cli.command {
        Command::Jobs => {
            print!("{}", describe_jobs(&registry));
            ExitCode::SUCCESS
        }
        Command::Run(invocation) => run_command(&registry, &invocation),
        Command::Sql(invocation) if invocation.opens_shell() => shell(&registry, invocation.flags),
        Command::Sql(invocation) => run_command(&registry, &invocation.job()),
        Command::Certs(CertsCommand::Init { dir, hosts }) => match init_certs(&dir, &hosts) {
            Ok(files) => {
                for file in files {
                    println!("wrote {}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error.to_string()),
        },
        Command::Coordinator(args) => {
            let options = match args.to_options(registry.clone()) {
                Ok(options) => options,
                Err(error) => return fail(&error.to_string()),
            };
            match runtime().block_on(crate::server::run_coordinator(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&format!("coordinator: {error}")),
            }
        }
        Command::Worker(args) => {
            let options = match args.to_options(registry.clone()) {
                Ok(options) => options,
                Err(error) => return fail(&error.to_string()),
            };
            match runtime().block_on(crate::worker::run_worker(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error.to_string()),
            }
        }
        Command::Job(command) => job_command(&registry, command),
        Command::Savepoint(SavepointCommand::Inspect { path }) => match inspect_savepoint(&path) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
    }
}

/// `weir savepoint inspect PATH`: what a savepoint holds, per operator and per split.
fn inspect_savepoint(path: &str) -> Result<String, String> {
    use std::fmt::Write;
    let savepoint = runtime().block_on(weir_core::savepoint::read_savepoint(path)).map_err(|e| e.to_string())?;
    let metadata = &savepoint.metadata;
    let checkpoint = metadata.checkpoint_id;
    let mut report = String::new();
    let _ = writeln!(report, "savepoint:   {path}");
    let _ = writeln!(report, "job:         {}", metadata.job_id);
    let _ = writeln!(report, "checkpoint:  {checkpoint} (a job started from it begins at epoch {})", checkpoint + 1);
    let _ = writeln!(report, "taken at:    parallelism {}", metadata.parallelism);
    let mut operators: std::collections::BTreeMap<String, (Vec<usize>, usize)> = Default::default();
    let mut splits = Vec::new();
    for (file, bytes) in metadata.files.iter().zip(&savepoint.files) {
        let (_, snapshot) = weir_dataflow::snapshot::SlotSnapshot::decode(bytes, checkpoint)
            .map_err(|e| format!("savepoint {path}: its file {}: {e}", file.name))?;
        splits.extend(snapshot.splits);
        for entry in snapshot.state {
            let (groups, size) = operators.entry(entry.operator).or_default();
            groups.push(entry.key_group);
            *size += entry.bytes.len();
        }
    }
    let _ = writeln!(report, "\n{:<40} {:<28} {:>14}", "OPERATOR", "KEY GROUPS", "BYTES");
    for (operator, (groups, size)) in &mut operators {
        // One file per slot: each slot's range, and each slot's copy of replicated state.
        groups.sort_unstable();
        groups.dedup();
        let _ = writeln!(report, "{operator:<40} {:<28} {size:>14}", key_group_ranges(groups));
    }
    splits.sort_by_key(|split| split.split);
    let _ = writeln!(report, "\n{:<8} {:>16} {:>12}  WATERMARK", "SPLIT", "POSITION", "LINE");
    for split in &splits {
        let watermark = describe_watermark(Some(split.clock.watermark()));
        let _ = writeln!(report, "{:<8} {:>16} {:>12}  {watermark}", split.split, split.position, split.line);
    }
    Ok(report)
}

/// `0-12, 15, 20-127` for a sorted list of distinct key groups (and `replicated` for the group
/// of replicated state, which sorts last).
fn key_group_ranges(groups: &[usize]) -> String {
    let replicated = weir_dataflow::process::REPLICATED_GROUP;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &group in groups.iter().filter(|&&group| group != replicated) {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == group => *end = group,
            _ => ranges.push((group, group)),
        }
    }
    let mut described: Vec<String> = ranges
        .into_iter()
        .map(|(start, end)| if start == end { start.to_string() } else { format!("{start}-{end}") })
        .collect();
    if groups.contains(&replicated) {
        described.push("replicated".into());
    }
    described.join(", ")
}

/// A watermark as the CLI shows it: `-` before any, `end of input`, or milliseconds.
pub(crate) fn describe_watermark(watermark: Option<i64>) -> String {
    match watermark {
        None | Some(i64::MIN) => "-".to_string(),
        Some(i64::MAX) => "end of input".to_string(),
        Some(ms) => format!("{ms} ms"),
    }
}

/// `weir sql` without a script: the interactive shell.
#[cfg(not(madsim))]
fn shell(registry: &JobRegistry, flags: Vec<String>) -> ExitCode {
    crate::shell::run(registry, flags)
}

#[cfg(madsim)]
fn shell(_: &JobRegistry, _: Vec<String>) -> ExitCode {
    fail("the SQL shell needs a terminal, which the simulator has not")
}

/// `weir run JOB …` (and `weir sql -f FILE …`): the job on an embedded local cluster.
fn run_command(registry: &JobRegistry, invocation: &JobInvocation) -> ExitCode {
    let parsed = match parse_invocation(registry, invocation, InvocationKind::Run) {
        Ok(Invocation::Job(parsed)) => parsed,
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => return fail(&error),
    };
    match explain_sql(&parsed.options.spec) {
        Ok(true) => {}
        Ok(false) => return ExitCode::SUCCESS,
        Err(error) => return fail(&error),
    }
    let mut options = parsed.options;
    options.progress_interval = parsed.progress.0;
    let cpu_before = weir_core::rt::process_cpu_ms();
    match run_job(registry, options) {
        Ok(summary) => {
            print_summary(&summary, cpu_before);
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.to_string()),
    }
}

/// A SQL script's `EXPLAIN`s: prints the plans, and says whether there is a job left to run
/// (an `INSERT`). Other jobs always run.
fn explain_sql(spec: &weir_core::job::JobSpec) -> Result<bool, String> {
    if spec.job != "sql" {
        return Ok(true);
    }
    let script = spec.params.text("script").map_err(|e| e.to_string())?;
    let (explained, runs) = weir_sql::explain_script(script).map_err(|error| format!("SQL: {error}"))?;
    for plan in explained {
        println!("{plan}");
    }
    Ok(runs)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn job_command(registry: &JobRegistry, command: JobCommand) -> ExitCode {
    let (client, request): (ClientArgs, ClientRequest) = match command {
        JobCommand::Submit(invocation) => {
            let parsed = match parse_invocation(registry, &invocation, InvocationKind::Submit) {
                Ok(Invocation::Job(parsed)) => parsed,
                Ok(Invocation::Help(text)) => {
                    print!("{text}");
                    return ExitCode::SUCCESS;
                }
                Err(error) => return fail(&error),
            };
            match explain_sql(&parsed.options.spec) {
                Ok(true) => {}
                Ok(false) => return ExitCode::SUCCESS,
                Err(error) => return fail(&error),
            }
            let client = parsed.client.expect("a submission has connection flags");
            let options = parsed.options;
            let job_options = JobOptions {
                checkpoint_interval_ms: options.checkpoint_interval.map(|d| d.as_millis() as u64),
                checkpoint_timeout_ms: options.checkpoint_timeout.as_millis() as u64,
                retained_checkpoints: options.retained_checkpoints,
                rate_limit: options.rate_limit,
                from_savepoint: options.from_savepoint,
                allow_non_restored_state: options.allow_non_restored_state,
            };
            (client, ClientRequest::Submit { spec: options.spec, options: job_options })
        }
        JobCommand::List(client) => (client, ClientRequest::List),
        JobCommand::Status { job_id, client } => (client, ClientRequest::Status { job_id }),
        JobCommand::Cancel { job_id, client } => (client, ClientRequest::Cancel { job_id }),
        JobCommand::Savepoint { job_id, dir, client } => {
            let dir = dir.as_deref().map(absolute_location);
            (client, ClientRequest::Savepoint { job_id, dir, stop: false })
        }
        JobCommand::Stop { job_id, dir, client, savepoint: _ } => {
            let dir = dir.as_deref().map(absolute_location);
            (client, ClientRequest::Savepoint { job_id, dir, stop: true })
        }
    };
    let tls = match TlsContext::load(&client.tls.certs, Role::Client) {
        Ok(tls) => tls,
        Err(error) => return fail(&error.to_string()),
    };
    let response = runtime().block_on(crate::client::request(&tls, &client.coordinator, &request));
    match response {
        Err(error) => fail(&format!("cannot reach the coordinator at {}: {error}", client.coordinator)),
        Ok(ClientResponse::Error(message)) => fail(&message),
        Ok(ClientResponse::Submitted { job_id }) => {
            println!("{job_id}");
            ExitCode::SUCCESS
        }
        Ok(ClientResponse::Cancelled { job_id }) => {
            println!("cancelled {job_id}");
            ExitCode::SUCCESS
        }
        Ok(ClientResponse::Savepoint { path, .. }) => {
            println!("{path}");
            ExitCode::SUCCESS
        }
        Ok(ClientResponse::Status(status)) => {
            print_status(&status);
            ExitCode::SUCCESS
        }
        Ok(ClientResponse::Jobs(jobs)) => {
            println!(
                "{:<24} {:<11} {:>5} {:>11} {:>8} {:>14}",
                "JOB", "STATE", "SLOTS", "CHECKPOINT", "RESTARTS", "EVENTS"
            );
            for job in jobs {
                println!(
                    "{:<24} {:<11} {:>5} {:>11} {:>8} {:>14}",
                    job.job_id,
                    format!("{:?}", job.state),
                    job.parallelism,
                    job.last_checkpoint.map_or("-".into(), |c| c.to_string()),
                    job.restarts,
                    job.records_read
                );
            }
            ExitCode::SUCCESS
        }
    }
}

fn print_status(status: &JobStatus) {
    println!("job:             {}", status.job_id);
    println!("state:           {:?}", status.state);
    println!("parallelism:     {}", status.parallelism);
    println!("watermark:       {}", describe_watermark(status.watermark));
    println!("last checkpoint: {}", status.last_checkpoint.map_or("-".into(), |c| c.to_string()));
    println!("restarts:        {}", status.restarts);
    println!("events read:     {}", status.records_read);
    if let Some(message) = &status.message {
        println!("message:         {message}");
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn print_summary(summary: &RunSummary, cpu_before: Option<u64>) {
    let restored = summary.restored_from.map_or("none".to_string(), |c| format!("checkpoint {c}"));
    if summary.already_finished {
        println!("job {}: already finished (final checkpoint {restored}); output is committed", summary.job_id);
        return;
    }
    let seconds = summary.elapsed_ms.max(1) as f64 / 1000.0;
    let cpu_seconds = match (cpu_before, weir_core::rt::process_cpu_ms()) {
        (Some(before), Some(after)) => Some((after - before).max(1) as f64 / 1000.0),
        _ => None,
    };
    println!("job {} finished", summary.job_id);
    println!("  restored from:      {restored}");
    println!("  events read:        {}", summary.records_read);
    println!("  on time (stateful): {}", summary.records_on_time);
    println!("  late:               {}", summary.records_late);
    println!("  malformed (errors): {}", summary.records_bad);
    println!("  result rows:        {}", summary.rows_emitted);
    println!(
        "  checkpoints:        {} completed (last {}), {} declined, {} state bytes",
        summary.coordinator.checkpoints_completed,
        summary.coordinator.last_checkpoint.map_or("-".into(), |c| c.to_string()),
        summary.coordinator.checkpoints_declined,
        summary.coordinator.state_bytes
    );
    println!("  wall time:          {seconds:.3} s ({:.0} events/s)", summary.records_read as f64 / seconds);
    println!(
        "  watermark lead:     at most {} ms ahead of the slowest source of its group",
        summary.watermark_lead_max_ms
    );
    if let Some(cpu) = cpu_seconds {
        println!("  cpu time:           {cpu:.3} s ({:.0} events per cpu-second)", summary.records_read as f64 / cpu);
    }
    if let Some(rss) = weir_core::rt::peak_rss_kib() {
        println!("  peak memory:        {:.1} MiB", rss as f64 / 1024.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_show_as_ranges_with_replicated_state_last() {
        let replicated = weir_dataflow::process::REPLICATED_GROUP;
        let mut groups: Vec<usize> = (0..=42).chain(86..=127).chain([50, replicated]).collect();
        groups.sort_unstable();
        assert_eq!(key_group_ranges(&groups), "0-42, 50, 86-127, replicated");
        assert_eq!(key_group_ranges(&[7]), "7");
        assert_eq!(key_group_ranges(&[replicated]), "replicated");
        assert_eq!(describe_watermark(Some(i64::MAX)), "end of input");
        assert_eq!(describe_watermark(None), "-");
    }
}
