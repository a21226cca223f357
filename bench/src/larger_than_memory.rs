//! State larger than memory: the `dedup` example job, keyed on tens of millions of payment
//! ids, run as a real process inside a memory cgroup whose limit is below its state, killed
//! with SIGKILL after a checkpoint, resumed, and its committed output checked against the
//! sequential reference: every unique payment exactly once.
//!
//! The cgroup is made here (version 2, else version 1's memory controller; root, or a
//! delegated hierarchy, is needed), so that the kernel itself enforces the limit: with
//! `--backend memory` the same run is killed by the kernel's OOM killer, which is the point
//! of comparison. Swap is limited to zero where the kernel offers it.
//!
//! This harness drives real processes and the kernel's files; it is never simulated, so it
//! uses `std::fs` directly.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use weir_dataflow::source::Generator;
use weir_example::dedup::{Payment, Payments};

/// What to run.
pub struct Config {
    /// The binary with the example jobs, built with the `rocksdb` feature
    /// (`cargo build --release -p weir-example --features rocksdb`).
    pub weir: PathBuf,
    /// Deliveries to generate (a tenth of them retries).
    pub events: u64,
    /// Slots.
    pub parallelism: usize,
    /// The cgroup's memory limit, in bytes.
    pub memory_limit: u64,
    /// `rocksdb` or `memory`.
    pub backend: String,
    /// SIGKILL the first run once this checkpoint has completed.
    pub kill_after_checkpoint: u64,
    /// Output, checkpoints and local state go here (removed first).
    pub scratch: PathBuf,
}

/// The cgroup the job runs in, removed on drop.
struct MemoryCgroup {
    dir: PathBuf,
    version: u8,
}

impl MemoryCgroup {
    fn create(limit: u64) -> anyhow::Result<Self> {
        let name = format!("weir-larger-than-memory-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        if v2.exists() {
            let dir = Path::new("/sys/fs/cgroup").join(&name);
            std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {} (run as root)", dir.display()))?;
            let group = MemoryCgroup { dir, version: 2 };
            std::fs::write(group.dir.join("memory.max"), limit.to_string()).with_context(|| {
                format!(
                    "setting memory.max of {}: is the memory controller enabled for child groups? \
                     (`echo +memory > /sys/fs/cgroup/cgroup.subtree_control` as root)",
                    group.dir.display()
                )
            })?;
            let _ = std::fs::write(group.dir.join("memory.swap.max"), "0");
            return Ok(group);
        }
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if !v1.exists() {
            bail!("no memory cgroup: neither /sys/fs/cgroup/cgroup.controllers (v2) nor /sys/fs/cgroup/memory (v1)");
        }
        let dir = v1.join(&name);
        std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {} (run as root)", dir.display()))?;
        let group = MemoryCgroup { dir, version: 1 };
        std::fs::write(group.dir.join("memory.limit_in_bytes"), limit.to_string())
            .context("setting memory.limit_in_bytes")?;
        // Memory and swap together no more than memory alone: no swap (where accounted).
        let _ = std::fs::write(group.dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
        Ok(group)
    }

    /// Starts `command` inside the cgroup: a shell joins it, then becomes the command.
    fn spawn(&self, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
        let procs = self.dir.join("cgroup.procs");
        let log = std::fs::File::create(log)?;
        Ok(Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(&procs)
            .arg(program)
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?)
    }

    /// How many processes of the group the kernel's OOM killer killed.
    fn oom_kills(&self) -> u64 {
        let (file, key) =
            if self.version == 2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.split_once(' ').filter(|(name, _)| *name == key))
            .find_map(|(_, n)| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    /// Kills what is left in the group (a group with processes cannot be removed), then
    /// removes it.
    fn drop(&mut self) {
        let procs = self.dir.join("cgroup.procs");
        for _ in 0..50 {
            let left = std::fs::read_to_string(&procs).unwrap_or_default();
            if left.trim().is_empty() {
                break;
            }
            for pid in left.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Err(error) = std::fs::remove_dir(&self.dir) {
            eprintln!("warning: could not remove cgroup {}: {error}; remove it with rmdir", self.dir.display());
        }
    }
}

/// A started job, killed (SIGKILL) if the harness leaves early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The newest complete checkpoint under `checkpoints` (`<job>/chk-N/_metadata`).
fn newest_checkpoint(checkpoints: &Path) -> Option<(u64, PathBuf)> {
    let mut newest = None;
    for job in std::fs::read_dir(checkpoints).ok()?.flatten() {
        let Ok(entries) = std::fs::read_dir(job.path()) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let id = path.file_name()?.to_string_lossy().strip_prefix("chk-").and_then(|id| id.parse::<u64>().ok());
            if let Some(id) = id.filter(|_| path.join("_metadata").exists()) {
                if newest.as_ref().is_none_or(|(newest, _)| id > *newest) {
                    newest = Some((id, path));
                }
            }
        }
    }
    newest
}

fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                bytes_under(&path)
            } else {
                entry.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// The committed payments of a sink directory (files not hidden), sorted.
fn committed(dir: &Path) -> anyhow::Result<Vec<Payment>> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(['.', '_']) || entry.path().is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        for line in text.lines().skip(1) {
            let fields: Vec<i64> = line
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: bad row {line:?}", entry.path().display()))?;
            let [id, account, amount_cents, time] = fields[..] else {
                bail!("{}: bad row {line:?}", entry.path().display())
            };
            rows.push(Payment { id, account, amount_cents, time });
        }
    }
    rows.sort();
    Ok(rows)
}

/// A line of the job's summary, as printed (`  label:   value`).
fn summary_line<'a>(log: &'a str, label: &str) -> &'a str {
    log.lines().find_map(|line| line.trim().strip_prefix(label)).map_or("?", |rest| rest.trim_start_matches(':').trim())
}

/// Runs the demonstration and prints what it saw; fails if the output is not exactly the
/// reference's.
pub fn run(config: &Config) -> anyhow::Result<()> {
    // The scratch directory is emptied: only if it is new, or one this harness made.
    let marker = config.scratch.join(".weir-larger-than-memory");
    if let Ok(mut entries) = std::fs::read_dir(&config.scratch) {
        if entries.next().is_some() && !marker.exists() {
            bail!(
                "--scratch {}: the directory is not empty and was not made by this harness; give a new \
                 or empty directory (its contents are deleted)",
                config.scratch.display()
            );
        }
        std::fs::remove_dir_all(&config.scratch)
            .with_context(|| format!("emptying --scratch {}", config.scratch.display()))?;
    }
    std::fs::create_dir_all(&config.scratch)
        .with_context(|| format!("creating --scratch {}", config.scratch.display()))?;
    std::fs::write(&marker, "made by weir-bench larger-than-memory; emptied by its next run\n")?;
    let (out, checkpoints, local) =
        (config.scratch.join("out"), config.scratch.join("chk"), config.scratch.join("local"));
    let ttl = "24h";
    let args: Vec<String> = [
        "run",
        "dedup",
        "--events",
        &config.events.to_string(),
        "--ttl",
        ttl,
        "--retry-percent",
        "10",
        "--seed",
        "0",
        "--out-of-orderness",
        "1s",
        "--parallelism",
        &config.parallelism.to_string(),
        "--state-backend",
        &config.backend,
        "--progress",
        "off",
        "--output",
        &out.display().to_string(),
        "--checkpoint-dir",
        &checkpoints.display().to_string(),
        "--local-state-dir",
        &local.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let group = MemoryCgroup::create(config.memory_limit)?;
    println!(
        "dedup: {} deliveries, parallelism {}, {} backend, memory limit {} MiB (cgroup v{})",
        config.events,
        config.parallelism,
        config.backend,
        config.memory_limit >> 20,
        group.version
    );

    let first_log = config.scratch.join("first.log");
    let started = Instant::now();
    let mut first = Running(group.spawn(&config.weir, &args, &first_log)?);
    let state_on_disk = loop {
        if let Some(status) = first.0.try_wait()? {
            let log = std::fs::read_to_string(&first_log).unwrap_or_default();
            let oom_kills = group.oom_kills();
            println!(
                "first run ended before checkpoint {} after {:.0} s: {status}; OOM kills in the cgroup: {oom_kills}\n{}",
                config.kill_after_checkpoint,
                started.elapsed().as_secs_f64(),
                log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            if oom_kills > 0 {
                bail!("the job did not survive the memory limit: the kernel killed it (log: {})", first_log.display());
            } else if status.success() {
                bail!(
                    "the job finished before checkpoint {}: nothing was killed; raise --events or lower \
                     --kill-after-checkpoint",
                    config.kill_after_checkpoint
                );
            }
            bail!("the job failed ({status}); see its log: {}", first_log.display());
        }
        if let Some((id, _)) = newest_checkpoint(&checkpoints).filter(|(id, _)| *id >= config.kill_after_checkpoint) {
            let state_on_disk = bytes_under(&local);
            first.0.kill()?; // SIGKILL
            first.0.wait()?;
            println!(
                "first run: SIGKILL after checkpoint {id}, {:.0} s in; local state on disk then: {} MiB",
                started.elapsed().as_secs_f64(),
                state_on_disk >> 20
            );
            break state_on_disk;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let second_log = config.scratch.join("second.log");
    let resumed = Instant::now();
    let oom_kills_before = group.oom_kills();
    let status = Running(group.spawn(&config.weir, &args, &second_log)?).0.wait()?;
    let log = std::fs::read_to_string(&second_log).unwrap_or_default();
    if !status.success() {
        bail!(
            "the resumed run failed ({status}; OOM kills: {}; log: {}):\n{log}",
            group.oom_kills().saturating_sub(oom_kills_before),
            second_log.display()
        );
    }
    println!(
        "resumed run: {:.0} s; restored from {}; peak RSS {}; OOM kills in the cgroup over both runs: {}",
        resumed.elapsed().as_secs_f64(),
        summary_line(&log, "restored from"),
        summary_line(&log, "peak memory"),
        group.oom_kills()
    );

    let generator = Payments::new(config.events, 10, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let splits: Vec<Vec<Payment>> = (0..config.parallelism)
        .map(|split| {
            (0..generator.split_len(split, config.parallelism))
                .map(|i| generator.generate(split, config.parallelism, i))
                .collect()
        })
        .collect();
    let (unique, late) = weir_example::reference::dedup(&splits, 1_000, 24 * 3_600_000);
    drop(splits);
    let (got_unique, got_late) = (committed(&out.join("payments"))?, committed(&out.join("late"))?);
    let exact = got_unique == unique && got_late == late;
    println!(
        "output: {} unique payments (reference {}), {} late (reference {}): {}",
        got_unique.len(),
        unique.len(),
        got_late.len(),
        late.len(),
        if exact { "exactly the reference" } else { "DIFFERENT from the reference" }
    );
    println!(
        "state: one entry per unique payment id ({} keys); {} MiB of RocksDB files on local disk at the kill",
        unique.len(),
        state_on_disk >> 20
    );
    if !exact {
        bail!("the committed output differs from the reference");
    }
    Ok(())
}
