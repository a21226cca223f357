//! Exactly-once file sinks: stage per epoch, commit after the checkpoint completes.
//!
//! A sink writes the rows of epoch `n` to a hidden staging file
//! `<dir>/_staging/e<n>-s<slot>.csv`. When its input frontier passes epoch `n` it flushes that
//! file and hands its `fsync` to the slot's snapshot writer ([`Durability`]), which runs it
//! off the slot's thread before the slot reports its part of checkpoint `n`. Only after checkpoint `n` is complete (its `_metadata` written) does [`commit_through`]
//! rename the staged file to `<dir>/part-e<n>-s<slot>.csv`, the committed, visible name.
//! Renames are atomic and idempotent (a missing staged file whose part exists is already
//! committed), so a recovery may re-commit freely. On recovery from checkpoint `n`,
//! [`recover`] commits what checkpoint `n` covers, aborts staged epochs after `n`, and retracts
//! committed epochs after `n` (possible only when a newer checkpoint was found corrupt).
//!
//! Every commit is fenced twice: by attempt (only the committing attempt's staged files are
//! taken) and by deployment generation ([`OutputFence`]: a deployment older than the newest
//! that claimed the output commits nothing). All file I/O goes through the storage seam
//! ([`weir_core::fs`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use weir_core::bid::{write_bid_csv, write_csv_field, write_integer, BID_HEADER};
use weir_core::faultpoint::{self, PlantedBug};
use weir_core::fs::{self, File};
use weir_core::time::{Epoch, Time};
use weir_core::Bid;

use crate::snapshot::{SinkPart, SnapshotCollector};

/// A row type with a CSV form.
pub trait CsvRow: 'static {
    /// The header line (without newline).
    const HEADER: &'static str;
    /// Appends the row as one CSV line (with `\n`).
    fn write_csv(&self, out: &mut Vec<u8>);
}

impl CsvRow for Bid {
    const HEADER: &'static str = BID_HEADER;
    #[inline]
    fn write_csv(&self, out: &mut Vec<u8>) {
        write_bid_csv(self, out)
    }
}

/// A malformed input line, as written to the error output.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ErrorRow {
    /// The input file.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: u64,
    /// Why it was rejected.
    pub reason: String,
    /// The line as read (lossily decoded, truncated to 4 KiB).
    pub record: String,
}

impl CsvRow for ErrorRow {
    const HEADER: &'static str = "file,line,reason,record";
    fn write_csv(&self, out: &mut Vec<u8>) {
        write_csv_field(&self.file, out);
        out.push(b',');
        write_integer(self.line, out);
        out.push(b',');
        write_csv_field(&self.reason, out);
        out.push(b',');
        write_csv_field(&self.record, out);
        out.push(b'\n');
    }
}

/// The name of the staging subdirectory of a sink directory.
pub const STAGING_DIR: &str = "_staging";

fn staged_name(epoch: Epoch, slot: usize, attempt: u64) -> String {
    format!("e{epoch:010}-s{slot:04}-a{attempt:016x}.csv")
}

fn committed_name(epoch: Epoch, slot: usize) -> String {
    format!("part-e{epoch:010}-s{slot:04}.csv")
}

/// Parses a staged name `e<epoch>-s<slot>-a<attempt>.csv` into `(epoch, slot, attempt)`.
fn parse_staged(name: &str) -> Option<(Epoch, usize, u64)> {
    let rest = name.strip_prefix('e')?.strip_suffix(".csv")?;
    let (epoch, rest) = rest.split_once("-s")?;
    let (slot, attempt) = rest.split_once("-a")?;
    Some((epoch.parse().ok()?, slot.parse().ok()?, u64::from_str_radix(attempt, 16).ok()?))
}

/// Parses a committed name `part-e<epoch>-s<slot>.csv` into `(epoch, slot)`.
/// The epoch and slot of a committed part file's name (`part-e<n>-s<slot>.csv`).
pub fn parse_committed(name: &str) -> Option<(Epoch, usize)> {
    let rest = name.strip_prefix("part-e")?.strip_suffix(".csv")?;
    let (epoch, slot) = rest.split_once("-s")?;
    Some((epoch.parse().ok()?, slot.parse().ok()?))
}

/// The output fence of a job: `<output>/_fence` holds the newest deployment generation that
/// has claimed the output, and the job it belongs to. A deployment claims it before it touches
/// any sink file ([`OutputFence::claim`]) and holds it through every commit
/// ([`OutputFence::hold`]), so that a stale deployment — one that reaches a worker after a
/// newer one started, when a partition heals — can neither roll the output back nor commit
/// into it. A job started from another job's savepoint takes the output over
/// ([`OutputFence::take_over`]): from then on every deployment of the old job is stale.
#[derive(Clone, Debug)]
pub struct OutputFence {
    output: PathBuf,
    job: String,
    generation: u64,
}

/// The name of the fence file in a job's output directory.
pub const FENCE: &str = "_fence";

/// Who holds a fence: a generation, of a job (`None`: a fence written before fences named
/// their job, taken to be the current job's).
struct FenceHolder {
    generation: u64,
    job: Option<String>,
}

impl OutputFence {
    /// The fence of output directory `output`, as deployment generation `generation` of job
    /// `job` sees it.
    pub fn new(output: &Path, job: &str, generation: u64) -> Self {
        OutputFence { output: output.to_path_buf(), job: job.to_owned(), generation }
    }

    fn path(&self) -> PathBuf {
        self.output.join(FENCE)
    }

    fn current(&self) -> io::Result<FenceHolder> {
        let text = match fs::read_to_string(&self.path()) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FenceHolder { generation: 0, job: None }),
            Err(e) => return Err(e),
        };
        let mut words = text.split_whitespace();
        let generation = words.next().and_then(|word| word.parse::<u64>().ok());
        match (generation, words.next(), words.next()) {
            (Some(generation), job, None) => Ok(FenceHolder { generation, job: job.map(str::to_owned) }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is unreadable; delete it", self.path().display()),
            )),
        }
    }

    fn write(&self) -> io::Result<()> {
        fs::write_durable(&self.path(), format!("{} {}\n", self.generation, self.job).as_bytes())
    }

    /// Why a deployment holding `current` is refused, if it is.
    fn refusal(&self, current: &FenceHolder) -> Option<io::Error> {
        match &current.job {
            Some(job) if *job != self.job => Some(io::Error::other(format!(
                "stale deployment: the output is held by job {job}, not job {} (a job started from a savepoint takes over the output of the job that took it)",
                self.job
            ))),
            _ if current.generation > self.generation => Some(io::Error::other(format!(
                "stale deployment: generation {} is older than generation {}, which already claimed the output",
                self.generation, current.generation
            ))),
            _ => None,
        }
    }

    /// Claims the output for this generation: refused if a newer one, or another job, has
    /// claimed it; otherwise the fence is raised to this generation, atomically (under the
    /// fence's lock, replaced by rename) and durably.
    pub fn claim(&self) -> io::Result<()> {
        if faultpoint::planted(PlantedBug::FenceAcceptsAll) {
            return self.write();
        }
        let _lock = fs::lock(&self.output.join(".fence.lock"))?;
        let current = self.current()?;
        if let Some(refused) = self.refusal(&current) {
            return Err(refused);
        }
        if current.generation < self.generation || current.job.is_none() {
            self.write()?;
        }
        Ok(())
    }

    /// The job holding the fence, if another than this one.
    pub fn held_by_another_job(&self) -> io::Result<Option<String>> {
        Ok(self.current()?.job.filter(|job| *job != self.job))
    }

    /// Takes the output over from the job that holds the fence: for a job started from that
    /// job's savepoint, once the output's owner record names the new job. Every deployment of
    /// the old job is stale from then on.
    pub fn take_over(&self) -> io::Result<()> {
        let _lock = fs::lock(&self.output.join(".fence.lock"))?;
        self.write()
    }

    /// Refuses if a newer generation, or another job, has claimed the output since this one
    /// did; otherwise holds the fence's lock until dropped, so that no newer generation can
    /// claim the output (and recover over it) while this one commits.
    pub fn hold(&self) -> io::Result<FenceHold> {
        if faultpoint::planted(PlantedBug::FenceAcceptsAll) {
            return Ok(FenceHold { _lock: None });
        }
        let lock = fs::lock(&self.output.join(".fence.lock"))?;
        if let Some(refused) = self.refusal(&self.current()?) {
            return Err(refused);
        }
        Ok(FenceHold { _lock: Some(lock) })
    }
}

/// The fence's lock, held while a deployment writes committed output.
#[derive(Debug)]
pub struct FenceHold {
    _lock: Option<fs::Lock>,
}

impl FenceHold {
    /// No file fence: a job without file sinks, whose sinks fence stale writers themselves
    /// (Kafka's producer epochs, a database's generation column).
    pub fn unfenced() -> Self {
        FenceHold { _lock: None }
    }
}

/// Creates a sink directory and its staging directory, durably.
pub fn prepare(dir: &Path) -> io::Result<()> {
    fs::create_dir_all_durable(&dir.join(STAGING_DIR))
}

/// Commits every epoch `<= through` that `slot` staged in attempt `attempt`, while the caller
/// holds the output fence (`_held`: one hold covers every sink directory of a commit). Returns
/// how many files were committed. Files of other attempts are never committed here: a slot of
/// a lost attempt that still runs somewhere (a partitioned worker) stages under its own name,
/// so it can neither overwrite nor commit the current attempt's output.
pub fn commit_through(dir: &Path, slot: usize, attempt: u64, through: Epoch, _held: &FenceHold) -> io::Result<usize> {
    weir_core::faultpoint::sink_commit_fault()?;
    let commits: Vec<(Epoch, PathBuf)> = staged_files(dir, slot)?
        .into_iter()
        .filter(|&(epoch, file_attempt, _)| file_attempt == attempt && epoch <= through)
        .map(|(epoch, _, staged)| (epoch, staged))
        .collect();
    if let Some(newest) = commits.iter().map(|(epoch, _)| *epoch).max() {
        weir_core::faultpoint::committing(dir, attempt, newest);
    }
    let mut committed = 0;
    for (epoch, staged) in commits {
        fs::rename(&staged, &dir.join(committed_name(epoch, slot)))?;
        committed += 1;
    }
    if committed > 0 {
        fs::sync_dir(dir)?;
        fs::sync_dir(&dir.join(STAGING_DIR))?;
    }
    Ok(committed)
}

/// What [`recover`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Staged files committed (covered by the restored checkpoint).
    pub committed: usize,
    /// Staged files deleted (after the restored checkpoint, or of another attempt).
    pub aborted: usize,
    /// Committed files deleted (after the restored checkpoint: a newer one was lost).
    pub retracted: usize,
}

/// Brings `slot`'s files in `dir` in line with restored checkpoint `restored` (0 for none),
/// which attempt `restored_attempt` completed, while the caller holds the output fence: its
/// staged epochs `<= restored` are committed
/// (every earlier attempt's were committed when that attempt started), every other staged file
/// is deleted, and committed epochs after `restored` are retracted.
pub fn recover(
    dir: &Path,
    slot: usize,
    restored: Epoch,
    restored_attempt: u64,
    held: &FenceHold,
) -> io::Result<Recovery> {
    let mut report =
        Recovery { committed: commit_through(dir, slot, restored_attempt, restored, held)?, ..Default::default() };
    for (_, _, staged) in staged_files(dir, slot)? {
        fs::remove_file(&staged)?;
        report.aborted += 1;
    }
    for entry in fs::read_dir(dir)? {
        if let Some((epoch, file_slot)) = parse_committed(&entry.name) {
            if file_slot == slot && epoch > restored {
                tracing::warn!(file = %entry.path.display(), restored, "retracting output committed after the restored checkpoint");
                fs::remove_file(&entry.path)?;
                report.retracted += 1;
            }
        }
    }
    if report.aborted > 0 {
        fs::sync_dir(&dir.join(STAGING_DIR))?;
    }
    if report.retracted > 0 {
        fs::sync_dir(dir)?;
    }
    Ok(report)
}

fn staged_files(dir: &Path, slot: usize) -> io::Result<Vec<(Epoch, u64, PathBuf)>> {
    let staging = dir.join(STAGING_DIR);
    let mut files = Vec::new();
    let entries = match fs::read_dir(&staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        if let Some((epoch, file_slot, attempt)) = parse_staged(&entry.name) {
            if file_slot == slot {
                files.push((epoch, attempt, entry.path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What a sink operator reports to, in one slot.
pub struct SinkSetup {
    /// The sink's handle in the snapshot collector.
    pub part: SinkPart,
    /// Where durability reports go.
    pub snapshots: Rc<RefCell<SnapshotCollector>>,
    /// Where an I/O failure is reported (it stops the job).
    pub fatal: Rc<RefCell<Option<String>>>,
    /// The slot's activity counter.
    pub activity: crate::Activity,
    /// The slot's counters, where the sink's rows are the job's results (counted as they
    /// arrive); `None` for a sink of something else (a stream that must stay empty).
    pub results: Option<std::sync::Arc<crate::metrics::SlotMetrics>>,
}

/// How rows are written to a file: an optional header line, then one encoding per row.
pub trait RowFormat<R>: 'static {
    /// The first line of every file (without newline), if any.
    fn header(&self) -> Option<&str>;
    /// Appends `row`'s encoding, newline included.
    fn write(&self, row: &R, out: &mut Vec<u8>);
}

/// Rows that know their CSV form ([`CsvRow`]).
#[derive(Copy, Clone, Debug, Default)]
pub struct CsvRows;

impl<R: CsvRow> RowFormat<crate::record::Record<R>> for CsvRows {
    fn header(&self) -> Option<&str> {
        Some(R::HEADER)
    }
    #[inline]
    fn write(&self, row: &crate::record::Record<R>, out: &mut Vec<u8>) {
        row.value.write_csv(out)
    }
}

/// Rows as CSV through serde: the fields of a struct, in order, under a given header.
pub struct SerdeCsv<R> {
    header: String,
    _rows: std::marker::PhantomData<fn(&R)>,
}

impl<R> SerdeCsv<R> {
    /// Rows written under `header` (e.g. `"account,amount,time"`).
    pub fn new(header: &str) -> Self {
        SerdeCsv { header: header.to_owned(), _rows: std::marker::PhantomData }
    }
}

impl<R: serde::Serialize + 'static> RowFormat<crate::record::Record<R>> for SerdeCsv<R> {
    fn header(&self) -> Option<&str> {
        Some(&self.header)
    }
    fn write(&self, row: &crate::record::Record<R>, out: &mut Vec<u8>) {
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(out);
        writer.serialize(&row.value).expect("a row serializes as CSV (flat fields only)");
        writer.flush().expect("writing to memory");
    }
}

/// Rows as JSON lines through serde.
#[derive(Copy, Clone, Debug, Default)]
pub struct JsonLines;

impl<R: serde::Serialize + 'static> RowFormat<crate::record::Record<R>> for JsonLines {
    fn header(&self) -> Option<&str> {
        None
    }
    fn write(&self, row: &crate::record::Record<R>, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, &row.value).expect("a row serializes as JSON");
        out.push(b'\n');
    }
}

/// An exactly-once sink, epoch by epoch (two-phase commit): the records of each checkpoint
/// epoch are staged ([`TransactionalSink::write`]), made durable before the checkpoint that
/// covers them can complete ([`TransactionalSink::prepare`]), and made visible only after it
/// completed ([`EpochCommitter::commit`]); on a restore, staged epochs the checkpoint covers are
/// committed and later ones aborted ([`EpochCommitter::recover`]). File sinks are the first
/// implementation; Kafka transactions and Postgres tables plug in the same way.
pub trait TransactionalSink<R>: 'static {
    /// Stages `rows` of `epoch` (epochs arrive in any order; several batches per epoch).
    fn write(&mut self, epoch: Epoch, rows: &[R]) -> io::Result<()>;
    /// Every row of every epoch `<= through` has been written: make them durable. What may
    /// wait (an `fsync`, a producer flush) goes into the returned [`Durability`], which the
    /// slot's snapshot writer runs off the slot's thread; the slot reports checkpoint
    /// `through` only after it succeeded.
    fn prepare(&mut self, through: Epoch) -> io::Result<Durability>;
    /// What the sink is, for error messages.
    fn describe(&self) -> String;
}

/// What a sink still has to do to make the epochs it prepared durable: work that may wait on a
/// disk or a server, run by the slot's snapshot writer off the slot's thread, before the slot
/// reports the checkpoint that covers those epochs.
#[must_use = "dropping a Durability gives up the fsync the checkpoint relies on"]
pub struct Durability(Option<Box<dyn FnOnce() -> io::Result<()> + Send>>);

impl Durability {
    /// Nothing left to do: the epochs are durable already.
    pub fn done() -> Self {
        Durability(None)
    }
    /// The epochs are durable once `work` succeeded.
    pub fn after(work: impl FnOnce() -> io::Result<()> + Send + 'static) -> Self {
        Durability(Some(Box::new(work)))
    }
    /// Does the work (on the snapshot writer).
    pub fn wait(self) -> io::Result<()> {
        self.0.map_or(Ok(()), |work| work())
    }
    /// Names the sink in an error (`what` is only called for sinks with work left).
    fn context(self, what: impl FnOnce() -> String) -> Self {
        match self.0 {
            None => self,
            Some(work) => {
                let what = what();
                Durability::after(move || {
                    work().map_err(|error| io::Error::new(error.kind(), format!("{what}: {error}")))
                })
            }
        }
    }
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Durability(pending)" } else { "Durability(done)" })
    }
}

/// The second phase of a [`TransactionalSink`], run outside the dataflow: by the slot driver
/// when a checkpoint completes, and by a deployment before its slots start. Every method is
/// idempotent (a recovery may repeat it) and runs while the caller holds the job's output
/// fence, so a stale deployment cannot commit.
pub trait EpochCommitter: Send + Sync + std::fmt::Debug {
    /// Creates whatever the sink writes into.
    fn prepare_destination(&self) -> io::Result<()>;
    /// Checkpoint `through` completed: makes visible what attempt `attempt` of slot `slot`
    /// staged for epochs `<= through`. Returns how many epochs were committed.
    fn commit(&self, slot: usize, attempt: u64, through: Epoch, fence: &FenceHold) -> io::Result<usize>;
    /// Brings slot `slot`'s output in line with restored checkpoint `epoch` (0 for none), which
    /// attempt `attempt` took: commits what it covers, aborts staged epochs after it, retracts
    /// visible epochs after it (to be recomputed).
    fn recover(&self, slot: usize, epoch: Epoch, attempt: u64, fence: &FenceHold) -> io::Result<Recovery>;
    /// The directory the sink's output lives in, if it is a file sink (claimed and fenced).
    fn directory(&self) -> Option<&Path>;
}

/// Commits and recovers a file sink's directory.
#[derive(Clone, Debug)]
pub struct FileCommitter {
    dir: PathBuf,
}

impl FileCommitter {
    /// The committer of the file sink in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        FileCommitter { dir }
    }
}

impl EpochCommitter for FileCommitter {
    fn prepare_destination(&self) -> io::Result<()> {
        prepare(&self.dir)
    }
    fn commit(&self, slot: usize, attempt: u64, through: Epoch, fence: &FenceHold) -> io::Result<usize> {
        commit_through(&self.dir, slot, attempt, through, fence)
    }
    fn recover(&self, slot: usize, epoch: Epoch, attempt: u64, fence: &FenceHold) -> io::Result<Recovery> {
        recover(&self.dir, slot, epoch, attempt, fence)
    }
    fn directory(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// A file sink in one slot: one staged file per epoch, named by slot and attempt.
pub struct FileSink<F> {
    dir: PathBuf,
    slot: usize,
    attempt: u64,
    format: F,
    writers: BTreeMap<Epoch, BufWriter<File>>,
    scratch: Vec<u8>,
}

impl<F> FileSink<F> {
    /// The sink of slot `slot`, attempt `attempt`, writing `format` into `dir`.
    pub fn new(dir: PathBuf, slot: usize, attempt: u64, format: F) -> Self {
        FileSink { dir, slot, attempt, format, writers: BTreeMap::new(), scratch: Vec::with_capacity(1 << 16) }
    }
}

impl<R: 'static, F: RowFormat<R>> TransactionalSink<R> for FileSink<F> {
    fn write(&mut self, epoch: Epoch, rows: &[R]) -> io::Result<()> {
        let writer = match self.writers.entry(epoch) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let path = self.dir.join(STAGING_DIR).join(staged_name(epoch, self.slot, self.attempt));
                let mut writer = BufWriter::with_capacity(1 << 20, File::create(&path)?);
                if let Some(header) = self.format.header() {
                    writer.write_all(header.as_bytes())?;
                    writer.write_all(b"\n")?;
                }
                weir_core::faultpoint::passed(weir_core::faultpoint::Moment::SinkStaged);
                entry.insert(writer)
            }
        };
        self.scratch.clear();
        for row in rows {
            self.format.write(row, &mut self.scratch);
        }
        writer.write_all(&self.scratch)
    }

    fn prepare(&mut self, through: Epoch) -> io::Result<Durability> {
        let mut files = Vec::new();
        while let Some(entry) = self.writers.first_entry() {
            if *entry.key() > through {
                break;
            }
            // Written out to the file system here; made durable by the snapshot writer.
            files.push(entry.remove().into_inner().map_err(|e| e.into_error())?);
        }
        if files.is_empty() {
            return Ok(Durability::done());
        }
        let staging = self.dir.join(STAGING_DIR);
        Ok(Durability::after(move || {
            for file in &files {
                file.sync_all()?;
            }
            // The staged files' directory entries must be durable too.
            fs::sync_dir(&staging)
        }))
    }

    fn describe(&self) -> String {
        format!("output {}", self.dir.display())
    }
}

/// Writes a stream through a transactional sink.
pub trait EpochSink<R> {
    /// Stages rows per epoch and prepares each epoch once the input frontier passes it,
    /// reporting it to the slot's snapshot collector.
    fn epoch_sink<S: TransactionalSink<R>>(self, sink: S, setup: SinkSetup);
}

impl<'scope, R: 'static> EpochSink<R> for Stream<'scope, Time, Vec<R>> {
    fn epoch_sink<S: TransactionalSink<R>>(self, mut sink: S, setup: SinkSetup) {
        let SinkSetup { part, snapshots, fatal, activity, results } = setup;
        let mut prepared_through: Option<Epoch> = None;
        let mut failed = false;
        self.sink(Pipeline, "EpochSink", move |(input, frontier)| {
            let mut stage = || -> io::Result<()> {
                let mut result = Ok(());
                input.for_each(|stamp, rows| {
                    if result.is_ok() {
                        activity.note();
                        if let Some(metrics) = &results {
                            crate::metrics::SlotMetrics::add(&metrics.rows_emitted, rows.len() as u64);
                        }
                        result = sink.write(crate::message_time(&stamp).epoch, rows);
                    }
                });
                result?;
                let through = match frontier.frontier().iter().map(|t| t.epoch).min() {
                    None => Epoch::MAX,
                    Some(epoch) => epoch.saturating_sub(1),
                };
                if prepared_through.is_none_or(|previous| through > previous) {
                    let durability = sink.prepare(through)?.context(|| format!("{}: cannot write", sink.describe()));
                    prepared_through = Some(through);
                    activity.note();
                    snapshots.borrow_mut().sink_prepared(part, through, durability);
                }
                Ok(())
            };
            if failed {
                return;
            }
            if let Err(error) = stage() {
                failed = true;
                fatal.borrow_mut().get_or_insert_with(|| format!("{}: cannot write: {error}", sink.describe()));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_staged(&staged_name(12, 3, 0xabc)), Some((12, 3, 0xabc)));
        assert_eq!(parse_committed(&committed_name(12, 3)), Some((12, 3)));
        assert_eq!(parse_staged("other.csv"), None);
        assert_eq!(parse_committed(&staged_name(12, 3, 1)), None);
    }

    #[test]
    fn commit_and_recover_are_idempotent_and_fenced_by_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        prepare(dir).unwrap();
        let stage = |epoch, slot, attempt, content: &str| {
            fs::write(&dir.join(STAGING_DIR).join(staged_name(epoch, slot, attempt)), content.as_bytes()).unwrap()
        };
        for epoch in 1..=4 {
            stage(epoch, 0, 7, "x\n");
        }
        stage(1, 1, 7, "other slot\n");
        stage(3, 0, 9, "zombie of another attempt\n");
        let fence = OutputFence::new(dir, "job", 1);
        fence.claim().unwrap();
        let held = fence.hold().unwrap();
        assert_eq!(commit_through(dir, 0, 7, 2, &held).unwrap(), 2);
        assert_eq!(commit_through(dir, 0, 7, 2, &held).unwrap(), 0);
        assert_eq!(commit_through(dir, 0, 8, 4, &held).unwrap(), 0, "another attempt commits nothing of attempt 7");
        let report = recover(dir, 0, 3, 7, &held).unwrap();
        assert_eq!(report, Recovery { committed: 1, aborted: 2, retracted: 0 });
        assert_eq!(fs::read_to_string(&dir.join(committed_name(3, 0))).unwrap(), "x\n");
        let report = recover(dir, 0, 1, 7, &held).unwrap();
        assert_eq!(report, Recovery { committed: 0, aborted: 0, retracted: 2 });
        assert!(fs::metadata(&dir.join(committed_name(1, 0))).is_ok());
        assert!(fs::metadata(&dir.join(STAGING_DIR).join(staged_name(1, 1, 7))).is_ok());
    }

    #[test]
    fn a_newer_generation_fences_older_ones_out() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        prepare(dir).unwrap();
        let (old, new) = (OutputFence::new(dir, "job", 3), OutputFence::new(dir, "job", 4));
        old.claim().unwrap();
        drop(old.hold().unwrap());
        new.claim().unwrap();
        assert!(old.hold().unwrap_err().to_string().contains("stale deployment: generation 3"));
        assert!(old.claim().is_err(), "an older generation cannot claim the output back");
        fs::write(&dir.join(STAGING_DIR).join(staged_name(1, 0, 5)), b"x\n").unwrap();
        assert!(old.hold().is_err(), "a fenced-out deployment cannot hold the fence, so commits nothing");
        assert_eq!(commit_through(dir, 0, 5, 1, &new.hold().unwrap()).unwrap(), 1);
        new.claim().unwrap();
    }

    #[test]
    fn a_job_started_from_a_savepoint_takes_the_output_over_and_fences_the_old_job_out() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        prepare(dir).unwrap();
        // A fence from before fences named their job belongs to whichever job claims it.
        fs::write(&dir.join(FENCE), b"5").unwrap();
        let old = OutputFence::new(dir, "old", 5);
        old.claim().unwrap();
        let resumed = OutputFence::new(dir, "resumed", 1);
        assert!(resumed.claim().unwrap_err().to_string().contains("the output is held by job old"));
        assert_eq!(resumed.held_by_another_job().unwrap().as_deref(), Some("old"));
        resumed.take_over().unwrap();
        assert_eq!(resumed.held_by_another_job().unwrap(), None);
        drop(resumed.hold().unwrap());
        let error = old.hold().unwrap_err().to_string();
        assert!(error.contains("stale deployment: the output is held by job resumed, not job old"), "{error}");
        assert!(old.claim().is_err(), "the old job cannot claim the output back");
        OutputFence::new(dir, "resumed", 2).claim().unwrap();
        assert!(resumed.hold().is_err(), "generations still fence within the new job");
    }
}
