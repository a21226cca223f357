//! Sources: read a job's splits, stamp each record with its event time and lateness horizon,
//! and move between checkpoint epochs when told.
//!
//! A source is a list of *splits* (a file, a share of a generator, a collection), each read
//! from a checkpointed position by a [`SplitReader`]. The operator holds one capability per
//! output at `(epoch, min watermark of its splits)`. Each activation reads a bounded batch
//! shared among the unfinished splits, stamps every record with its timestamp and the
//! watermark of its split just before it ([`Record`]), sends malformed input to the error
//! output with its position, then downgrades its capabilities to the new minimum watermark.
//! When the slot's target epoch moves past its epoch (a checkpoint was triggered), it records
//! every split's position and clock as its part of that checkpoint and moves its capabilities
//! to the new epoch: the boundary falls between two records, which is what makes the
//! checkpoint consistent. A split at its end keeps a capability at `(epoch, +∞)` until the
//! final checkpoint, so that epochs keep completing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::Activator;

use weir_core::faultpoint::{self, PlantedBug};
use weir_core::job::BadRecordPolicy;
use weir_core::time::{Epoch, EventTime, Time};
use weir_core::watermark::SplitClock;

use crate::metrics::SlotMetrics;
use crate::record::{Record, RecordStream};
use crate::sink::ErrorRow;
use crate::snapshot::{SnapshotCollector, SourcePart, SplitState};

/// Records read per activation (over all of the slot's splits of one source).
pub const BATCH_RECORDS: usize = 8192;
/// The source pauses while this many exchange batches wait for credit.
pub const PRESSURE_LIMIT: usize = 4;

/// Where a split reader is: byte offset (or record index) and 1-based line number.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Byte offset of the next unread line (files), or index of the next record.
    pub offset: u64,
    /// 1-based number of the next unread line (files; 0 otherwise).
    pub line: u64,
}

/// Reads one split from a position. Readers are generic (never boxed) so that the per-record
/// path of a source compiles to one loop.
pub trait SplitReader: 'static {
    /// The records it yields.
    type Record;
    /// Reads up to `max` records (or malformed lines) from `position`, advancing it; calls
    /// `each` per record and `bad` per malformed line. Returns `(records and lines read, at end)`.
    fn read(
        &mut self,
        position: &mut Position,
        max: usize,
        each: impl FnMut(Self::Record),
        bad: impl FnMut(ErrorRow),
    ) -> io::Result<(usize, bool)>;
}

/// A source: what its splits are and how to read one.
pub trait Source: 'static {
    /// The records it yields.
    type Record: crate::record::Data;
    /// The reader of one split.
    type Reader: SplitReader<Record = Self::Record>;
    /// Its splits, described for people (the count matters: split `i` of the job runs on slot
    /// `i % parallelism`).
    fn splits(&self, parallelism: usize) -> Vec<String>;
    /// Checks the source before anything runs (files exist, headers match). The error says
    /// what is wrong and how to fix it.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Opens split `split` of `splits` at `position` (the start: `offset` 0, `line` 1).
    fn open(&self, split: usize, splits: usize, position: &mut Position) -> io::Result<Self::Reader>;
}

/// Parses one line of a text file into a record.
pub trait LineFormat: 'static {
    /// The record type.
    type Record: crate::record::Data;
    /// The header line every file must start with, if any.
    fn header(&self) -> Option<&str>;
    /// Parses a line (without its newline). The error says what is wrong with it.
    fn parse(&self, line: &[u8]) -> Result<Self::Record, String>;
}

/// CSV lines parsed through serde into `T` (fields in order), under a header.
pub struct CsvLines<T> {
    header: String,
    reader: std::cell::RefCell<CsvLineReader>,
    _records: std::marker::PhantomData<fn() -> T>,
}

impl<T> CsvLines<T> {
    /// Lines of files that start with `header` (checked when the job is planned).
    pub fn new(header: &str) -> Self {
        CsvLines {
            header: header.replace(' ', ""),
            reader: std::cell::RefCell::new(CsvLineReader::default()),
            _records: std::marker::PhantomData,
        }
    }
}

impl<T: crate::record::Data> LineFormat for CsvLines<T> {
    type Record = T;
    fn header(&self) -> Option<&str> {
        Some(&self.header)
    }
    fn parse(&self, line: &[u8]) -> Result<T, String> {
        self.reader.borrow_mut().read(line)?.deserialize(None).map_err(|e| e.to_string())
    }
}

/// Splits CSV lines into fields: `,` between fields; a field in double quotes may hold commas,
/// and `""` for a quote (RFC 4180, one record per line). Written out rather than through the
/// `csv` crate's reader, which compiles its state machine whenever one is built — per line,
/// over 90 % of the time of reading a file; and its buffers are reused from line to line.
#[derive(Debug, Default)]
pub struct CsvLineReader {
    record: csv::ByteRecord,
    quoted: Vec<u8>,
}

impl CsvLineReader {
    /// The fields of `line` (without its newline).
    pub fn read(&mut self, line: &[u8]) -> Result<&csv::ByteRecord, String> {
        read_csv_line(line, &mut self.record, &mut self.quoted)?;
        Ok(&self.record)
    }
}

fn read_csv_line(line: &[u8], record: &mut csv::ByteRecord, quoted: &mut Vec<u8>) -> Result<(), String> {
    record.clear();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut at = 0;
    loop {
        if line.get(at) == Some(&b'"') {
            quoted.clear();
            at += 1;
            loop {
                match line.get(at) {
                    None => return Err("a quoted field is not closed".into()),
                    Some(b'"') if line.get(at + 1) == Some(&b'"') => {
                        quoted.push(b'"');
                        at += 2;
                    }
                    Some(b'"') => {
                        at += 1;
                        break;
                    }
                    Some(&byte) => {
                        quoted.push(byte);
                        at += 1;
                    }
                }
            }
            record.push_field(quoted);
            match line.get(at) {
                None => return Ok(()),
                Some(b',') => at += 1,
                Some(_) => return Err("text after a quoted field's closing quote".into()),
            }
        } else {
            let end = line[at..].iter().position(|&b| b == b',').map_or(line.len(), |p| at + p);
            let field = &line[at..end];
            if field.contains(&b'"') {
                return Err("a quote inside a field that is not quoted".into());
            }
            record.push_field(field);
            if end == line.len() {
                return Ok(());
            }
            at = end + 1;
        }
    }
}

#[cfg(test)]
mod csv_line_tests {
    use super::CsvLineReader;

    fn fields(line: &str) -> Result<Vec<String>, String> {
        let mut reader = CsvLineReader::default();
        reader.read(b"stale,fields,from,an,earlier,line")?;
        Ok(reader.read(line.as_bytes())?.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect())
    }

    #[test]
    fn csv_lines_split_as_rfc_4180_says() {
        assert_eq!(fields("1,a b,,\"x,y\",\"q\"\"d\",\r").unwrap(), ["1", "a b", "", "x,y", "q\"d", ""]);
        assert_eq!(fields("\"\"").unwrap(), [""]);
        assert_eq!(fields("only").unwrap(), ["only"]);
        assert!(fields("\"open").unwrap_err().contains("not closed"));
        assert!(fields("\"a\"b").unwrap_err().contains("after a quoted field"));
        assert!(fields("a\"b").unwrap_err().contains("not quoted"));
    }
}

/// JSON lines parsed through serde into `T`.
pub struct JsonLines<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Default for JsonLines<T> {
    fn default() -> Self {
        JsonLines(std::marker::PhantomData)
    }
}

impl<T: crate::record::Data> LineFormat for JsonLines<T> {
    type Record = T;
    fn header(&self) -> Option<&str> {
        None
    }
    fn parse(&self, line: &[u8]) -> Result<T, String> {
        serde_json::from_slice(line).map_err(|e| e.to_string())
    }
}

/// Generates records from a seed: record `index` of split `split` of `splits` is a pure
/// function of them, so a split resumes anywhere without replaying.
pub trait Generator: 'static {
    /// The record type.
    type Record: crate::record::Data;
    /// The number of records split `split` of `splits` generates.
    fn split_len(&self, split: usize, splits: usize) -> u64;
    /// Record `position` of split `split` of `splits`.
    fn generate(&self, split: usize, splits: usize, position: u64) -> Self::Record;
}

/// Reads lines of a CSV file from a byte offset, tracking offset and line number.
struct FileReader {
    file: weir_core::fs::File,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    at_eof: bool,
}

const READ_BUFFER_BYTES: usize = 1 << 20;

impl FileReader {
    fn open(path: &std::path::Path, offset: u64) -> io::Result<Self> {
        let mut file = weir_core::fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(FileReader { file, buffer: vec![0; READ_BUFFER_BYTES], start: 0, end: 0, at_eof: false })
    }

    /// Calls `each` on up to `max` lines; returns `(lines, bytes consumed, reached end)`.
    fn read_lines(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> io::Result<(usize, u64, bool)> {
        let mut lines = 0;
        let mut consumed = 0u64;
        while lines < max {
            if let Some(newline) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                each(&self.buffer[self.start..self.start + newline]);
                self.start += newline + 1;
                consumed += newline as u64 + 1;
                lines += 1;
                continue;
            }
            if self.at_eof {
                if self.start < self.end {
                    each(&self.buffer[self.start..self.end]);
                    consumed += (self.end - self.start) as u64;
                    self.start = self.end;
                    lines += 1;
                }
                return Ok((lines, consumed, true));
            }
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buffer.len() {
                // A line longer than the buffer: grow (bounded by the line's own length).
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
            let read = self.file.read(&mut self.buffer[self.end..])?;
            if read == 0 {
                self.at_eof = true;
            }
            self.end += read;
        }
        Ok((lines, consumed, false))
    }
}

/// Text files, one split per file, one record per line.
pub struct FileSource<F> {
    files: Vec<PathBuf>,
    format: Rc<F>,
}

impl<F: LineFormat> FileSource<F> {
    /// Reads `files` (one split each, in this order) in `format`.
    pub fn new(files: Vec<PathBuf>, format: F) -> Self {
        FileSource { files, format: Rc::new(format) }
    }
}

/// A reader of one file split.
pub struct FileSplit<F> {
    reader: FileReader,
    name: Arc<str>,
    format: Rc<F>,
}

impl<F: LineFormat> Source for FileSource<F> {
    type Record = F::Record;
    type Reader = FileSplit<F>;
    fn splits(&self, _parallelism: usize) -> Vec<String> {
        self.files.iter().map(|f| f.display().to_string()).collect()
    }
    fn validate(&self) -> Result<(), String> {
        if self.files.is_empty() {
            return Err("the source has no input files; pass a file or a directory with files".into());
        }
        let Some(header) = self.format.header() else { return Ok(()) };
        for file in &self.files {
            check_header(file, header)?;
        }
        Ok(())
    }
    fn open(&self, split: usize, _splits: usize, position: &mut Position) -> io::Result<FileSplit<F>> {
        let path = &self.files[split];
        let mut reader = FileReader::open(path, position.offset)?;
        if position.offset == 0 && self.format.header().is_some() {
            // Skip the header (checked when the job was validated).
            let (lines, bytes, _) = reader.read_lines(1, |_| {})?;
            position.offset += bytes;
            position.line += lines as u64;
        }
        let name: Arc<str> = Arc::from(path.display().to_string());
        Ok(FileSplit { reader, name, format: self.format.clone() })
    }
}

impl<F: LineFormat> SplitReader for FileSplit<F> {
    type Record = F::Record;
    #[inline]
    fn read(
        &mut self,
        position: &mut Position,
        max: usize,
        mut each: impl FnMut(F::Record),
        mut bad: impl FnMut(ErrorRow),
    ) -> io::Result<(usize, bool)> {
        let mut line = position.line;
        let format = &self.format;
        let name = &self.name;
        let (lines, bytes, at_end) = self.reader.read_lines(max, |text| {
            let number = line;
            line += 1;
            if text.trim_ascii().is_empty() {
                return;
            }
            match format.parse(text) {
                Ok(record) => each(record),
                Err(reason) => {
                    let record = String::from_utf8_lossy(&text[..text.len().min(4096)]).into_owned();
                    bad(ErrorRow { file: name.clone(), line: number, reason, record });
                }
            }
        })?;
        position.line = line;
        position.offset += bytes;
        Ok((lines, at_end))
    }
}

fn check_header(file: &std::path::Path, expected: &str) -> Result<(), String> {
    use std::io::BufRead;
    let handle = weir_core::fs::File::open(file).map_err(|e| format!("input {}: cannot open: {e}", file.display()))?;
    let mut first = Vec::new();
    std::io::BufReader::new(handle)
        .read_until(b'\n', &mut first)
        .map_err(|e| format!("input {}: cannot read: {e}", file.display()))?;
    let header = String::from_utf8_lossy(&first);
    let header = header.trim_end_matches(['\n', '\r']).trim_start_matches('\u{feff}');
    if header.replace(' ', "") != expected {
        return Err(format!(
            "input {}: line 1: expected the header `{expected}`, found `{}`; add the header line",
            file.display(),
            header.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// A generator, one split per slot.
pub struct GeneratorSource<G> {
    generator: Rc<G>,
}

impl<G: Generator> GeneratorSource<G> {
    /// Generates with `generator`, one split per slot.
    pub fn new(generator: G) -> Self {
        GeneratorSource { generator: Rc::new(generator) }
    }
}

/// A reader of one generated split.
pub struct GeneratedSplit<G> {
    generator: Rc<G>,
    split: usize,
    splits: usize,
    length: u64,
}

impl<G: Generator> Source for GeneratorSource<G> {
    type Record = G::Record;
    type Reader = GeneratedSplit<G>;
    fn splits(&self, parallelism: usize) -> Vec<String> {
        (0..parallelism).map(|split| format!("generator split {split}/{parallelism}")).collect()
    }
    fn open(&self, split: usize, splits: usize, _position: &mut Position) -> io::Result<GeneratedSplit<G>> {
        let length = self.generator.split_len(split, splits);
        Ok(GeneratedSplit { generator: self.generator.clone(), split, splits, length })
    }
}

impl<G: Generator> SplitReader for GeneratedSplit<G> {
    type Record = G::Record;
    #[inline]
    fn read(
        &mut self,
        position: &mut Position,
        max: usize,
        mut each: impl FnMut(G::Record),
        _bad: impl FnMut(ErrorRow),
    ) -> io::Result<(usize, bool)> {
        let end = (position.offset + max as u64).min(self.length);
        for index in position.offset..end {
            each(self.generator.generate(self.split, self.splits, index));
        }
        let read = (end - position.offset) as usize;
        position.offset = end;
        Ok((read, end == self.length))
    }
}

/// A fixed collection, for tests and examples: one split.
pub struct CollectionSource<T> {
    records: Rc<Vec<T>>,
}

impl<T: crate::record::Data> CollectionSource<T> {
    /// Yields `records` in order.
    pub fn new(records: Vec<T>) -> Self {
        CollectionSource { records: Rc::new(records) }
    }
}

/// The reader of a collection.
pub struct CollectionSplit<T> {
    records: Rc<Vec<T>>,
}

impl<T: crate::record::Data> Source for CollectionSource<T> {
    type Record = T;
    type Reader = CollectionSplit<T>;
    fn splits(&self, _parallelism: usize) -> Vec<String> {
        vec!["collection".into()]
    }
    fn open(&self, _split: usize, _splits: usize, _position: &mut Position) -> io::Result<CollectionSplit<T>> {
        Ok(CollectionSplit { records: self.records.clone() })
    }
}

impl<T: crate::record::Data> SplitReader for CollectionSplit<T> {
    type Record = T;
    fn read(
        &mut self,
        position: &mut Position,
        max: usize,
        mut each: impl FnMut(T),
        _bad: impl FnMut(ErrorRow),
    ) -> io::Result<(usize, bool)> {
        let start = position.offset as usize;
        let end = (start + max).min(self.records.len());
        self.records[start..end].iter().cloned().for_each(&mut each);
        position.offset = end as u64;
        Ok((end - start, end == self.records.len()))
    }
}

/// A timestamp assigner: the event time of a record. Closures `Fn(&T) -> i64` are assigners.
pub trait TimestampAssigner<T>: 'static {
    /// Whether records get event times at all (windows and joins need them).
    const ASSIGNS: bool = true;
    /// The record's event time in milliseconds.
    fn timestamp(&self, record: &T) -> EventTime;
}

impl<T, F: Fn(&T) -> EventTime + 'static> TimestampAssigner<T> for F {
    #[inline]
    fn timestamp(&self, record: &T) -> EventTime {
        self(record)
    }
}

/// No event time: every record is stamped `EventTime::MIN`, and the watermark stays there until
/// the split ends. Streams from such a source cannot be windowed (a build error says so).
#[derive(Copy, Clone, Debug, Default)]
pub struct NoTimestamps;

impl<T> TimestampAssigner<T> for NoTimestamps {
    const ASSIGNS: bool = false;
    #[inline]
    fn timestamp(&self, _record: &T) -> EventTime {
        EventTime::MIN
    }
}

/// How a source assigns event time and watermarks: per split, the watermark is the largest
/// event time read minus a bound on out-of-orderness (Flink's `forBoundedOutOfOrderness`).
pub struct WatermarkStrategy<A> {
    assigner: A,
    out_of_orderness_ms: i64,
    idleness_ms: Option<u64>,
}

impl WatermarkStrategy<NoTimestamps> {
    /// Records without event time.
    pub fn none() -> Self {
        WatermarkStrategy { assigner: NoTimestamps, out_of_orderness_ms: 0, idleness_ms: None }
    }
}

impl<A> WatermarkStrategy<A> {
    /// Event time from `assigner`; each split's watermark trails its largest event time by
    /// `out_of_orderness_ms`.
    pub fn bounded_out_of_orderness(out_of_orderness_ms: i64, assigner: A) -> Self {
        WatermarkStrategy { assigner, out_of_orderness_ms, idleness_ms: None }
    }
    /// A split that yields nothing for `ms` of processing time stops holding the source's
    /// watermark back (Flink's `withIdleness`), so that a silent split does not stall every
    /// window. When it yields again, its watermark is raised to the source's: what it reads
    /// behind that is late. Idleness follows processing time, so results then depend on timing
    /// (as in Flink); the simulator's fault-free comparison does not apply to such jobs. It
    /// works among the splits of one slot: a slot whose every unfinished split is idle still
    /// holds event time where it was (it cannot know the other slots' watermarks), and so,
    /// through watermark alignment ([`crate::alignment`]), the reading of the other slots'
    /// sources of its group.
    pub fn with_idleness(mut self, ms: u64) -> Self {
        assert!(ms > 0, "an idleness timeout must be positive");
        self.idleness_ms = Some(ms);
        self
    }
    /// The bound on out-of-orderness.
    pub fn out_of_orderness_ms(&self) -> i64 {
        self.out_of_orderness_ms
    }
}

/// The split states a source restores, by global split index.
pub type RestoredSplits = HashMap<usize, SplitState>;

/// A source throttle: `records_per_second` against a millisecond clock injected by the slot
/// driver (the runtime's clock, simulated under madsim), shared by the slot's sources.
pub struct RateLimit {
    /// Records per second for this slot.
    pub records_per_second: u64,
    /// Milliseconds since the slot started.
    pub clock_ms: Box<dyn Fn() -> u64 + Send>,
    /// Records emitted so far under this limit.
    pub emitted: Cell<u64>,
}

/// What a source operator needs from its slot.
pub(crate) struct SourceSetup {
    /// The name of the source (errors and operator names).
    pub name: String,
    /// This slot's splits: `(global split index, index within the source)`.
    pub splits: Vec<(usize, usize)>,
    /// The source's total split count.
    pub split_count: usize,
    /// Restored split states, by global index.
    pub restored: RestoredSplits,
    /// What to do with malformed records.
    pub on_bad_record: BadRecordPolicy,
    /// Planning only: build the operator, read nothing.
    pub planning: bool,
    /// The first epoch.
    pub start_epoch: Epoch,
    /// The epoch the slot is told to be in (moved by checkpoint triggers).
    pub target_epoch: Rc<Cell<Epoch>>,
    /// Set to the final checkpoint's id once all input is read everywhere.
    pub final_checkpoint: Rc<Cell<Option<Epoch>>>,
    /// Exchange batches waiting for credit: the source pauses above [`PRESSURE_LIMIT`].
    pub pressure: Rc<Cell<usize>>,
    /// The slot's watermark alignment: the source pauses while far ahead of the slowest of
    /// its group.
    pub alignment: Rc<crate::alignment::Alignment>,
    /// The source's group of sources in [`Self::alignment`].
    pub alignment_group: crate::alignment::Group,
    /// Where the source reports its checkpoint parts.
    pub snapshots: Rc<RefCell<SnapshotCollector>>,
    /// This source's handle in the collector.
    pub part: SourcePart,
    /// Where a fatal error (I/O, or a bad record under `fail`) is reported.
    pub fatal: Rc<RefCell<Option<String>>>,
    /// Counters.
    pub metrics: Arc<SlotMetrics>,
    /// The slot's activity counter.
    pub activity: crate::Activity,
    /// The slot's throttle, if any.
    pub rate_limit: Rc<Option<RateLimit>>,
}

struct OpenSplit<R> {
    state: SplitState,
    index: usize,
    reader: Option<R>,
    /// When the split last yielded a record (the runtime's clock).
    last_active: weir_core::rt::Instant,
    /// Silent for the idleness timeout: it does not hold the watermark back.
    idle: bool,
}

/// Builds a source operator: records (stamped) and malformed input (with positions).
pub(crate) fn source_operator<'scope, S: Source, A: TimestampAssigner<S::Record>>(
    scope: Scope<'scope, Time>,
    source: S,
    strategy: WatermarkStrategy<A>,
    setup: SourceSetup,
) -> (RecordStream<'scope, S::Record>, Stream<'scope, Time, Vec<ErrorRow>>, Activator) {
    let mut builder = OperatorBuilder::new(format!("Source({})", setup.name), scope);
    let address = builder.operator_info().address;
    let activator = scope.activator_for(address.clone());
    let self_activator = scope.activator_for(address.clone());
    setup.alignment.register_source(scope.activator_for(address));
    let (records_output, records) = builder.new_output::<Vec<Record<S::Record>>>();
    let (errors_output, errors) = builder.new_output::<Vec<ErrorRow>>();
    let mut records_output =
        OutputBuilder::<Time, CapacityContainerBuilder<Vec<Record<S::Record>>>>::from(records_output);
    let mut errors_output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<ErrorRow>>>::from(errors_output);

    builder.build_reschedule(move |initial: Vec<Capability<Time>>| {
        let SourceSetup {
            name,
            splits: specs,
            split_count,
            mut restored,
            on_bad_record,
            planning,
            start_epoch,
            target_epoch,
            final_checkpoint,
            pressure,
            alignment,
            alignment_group,
            snapshots,
            part,
            fatal,
            metrics,
            activity,
            rate_limit,
        } = setup;
        let WatermarkStrategy { assigner, out_of_orderness_ms, idleness_ms } = strategy;
        let idleness = idleness_ms.map(std::time::Duration::from_millis);
        let mut splits: Vec<OpenSplit<S::Reader>> = Vec::with_capacity(specs.len());
        let mut rewind_skipped = false;
        for &(global, index) in &specs {
            let mut state = restored.remove(&global);
            if faultpoint::planted(PlantedBug::RestoreSkipsRewind)
                && !rewind_skipped
                && state.is_some_and(|s| s.position > 0)
            {
                // Planted bug: this split's checkpointed offset is not restored.
                state = None;
                rewind_skipped = true;
            }
            let mut state = state.unwrap_or(SplitState {
                split: global,
                position: 0,
                line: 1,
                clock: SplitClock::new(out_of_orderness_ms),
            });
            let reader = if planning || state.clock.is_finished() {
                None
            } else {
                let mut position = Position { offset: state.position, line: state.line };
                match source.open(index, split_count, &mut position) {
                    Ok(reader) => {
                        state.position = position.offset;
                        state.line = position.line;
                        Some(reader)
                    }
                    Err(error) => {
                        let described = source.splits(split_count).get(index).cloned().unwrap_or_default();
                        fatal.borrow_mut().get_or_insert_with(|| {
                            format!("source {name}: input {described}: cannot read: {error}")
                        });
                        None
                    }
                }
            };
            splits.push(OpenSplit { state, index, reader, last_active: weir_core::rt::now(), idle: false });
        }
        let finished_at_start = splits.iter().filter(|s| s.state.clock.is_finished()).count();
        SlotMetrics::add(&metrics.splits_finished, finished_at_start as u64);
        let mut epoch = start_epoch;
        let mut last_watermark = EventTime::MIN;
        // The source's watermark: the least of its splits' that are not idle. If every
        // unfinished split is idle, it stays where it was (nothing moves it on).
        let min_watermark = |splits: &[OpenSplit<S::Reader>], last: EventTime| {
            let active = splits.iter().filter(|s| !s.idle || s.state.clock.is_finished());
            match active.map(|s| s.state.clock.watermark()).min() {
                Some(watermark) => watermark,
                None if splits.is_empty() => EventTime::MAX,
                None => last,
            }
        };
        let start_time = Time::new(epoch, min_watermark(&splits, EventTime::MIN));
        let mut capabilities: Option<Vec<Capability<Time>>> =
            Some(initial.iter().map(|cap| cap.delayed(&start_time)).collect());
        drop(initial);
        let mut records_batch: Vec<Record<S::Record>> = Vec::with_capacity(BATCH_RECORDS);
        let mut error_batch: Vec<ErrorRow> = Vec::new();

        move |_frontiers| {
            let Some(caps) = capabilities.as_mut() else { return false };
            if planning {
                capabilities = None;
                return false;
            }
            // 1. Epoch boundaries: a checkpoint was triggered since the last activation.
            while epoch < target_epoch.get() {
                snapshots.borrow_mut().source_part(part, epoch, splits.iter().map(|s| s.state).collect());
                epoch += 1;
                activity.note();
                let time = Time::new(epoch, min_watermark(&splits, last_watermark));
                caps.iter_mut().for_each(|cap| cap.downgrade(&time));
            }
            if final_checkpoint.get() == Some(epoch) {
                assert!(splits.iter().all(|s| s.state.clock.is_finished()), "final checkpoint before all input was read");
                snapshots.borrow_mut().source_part(part, epoch, splits.iter().map(|s| s.state).collect());
                capabilities = None;
                return false;
            }
            if fatal.borrow().is_some() || pressure.get() >= PRESSURE_LIMIT {
                return true; // woken by the slot driver when credit returns
            }
            if let Some(lead) = alignment.lead(alignment_group, last_watermark) {
                metrics.watermark_lead_max_ms.fetch_max(lead, std::sync::atomic::Ordering::Relaxed);
            }
            if alignment.must_pause(alignment_group, last_watermark) {
                // A pause is not inactivity: a split's idleness timeout counts from its end.
                let now = weir_core::rt::now();
                splits.iter_mut().filter(|split| !split.idle).for_each(|split| split.last_active = now);
                return true; // woken when the aligned frontier advances
            }
            // 2. Read one batch.
            let mut budget = BATCH_RECORDS;
            if let Some(limit) = rate_limit.as_ref() {
                let allowed = ((limit.records_per_second as u128 * (limit.clock_ms)() as u128) / 1000) as u64;
                budget = budget.min(allowed.saturating_sub(limit.emitted.get()) as usize);
                if budget == 0 {
                    return true; // the slot driver's idle timer wakes the source again
                }
            }
            let mut read_total = 0u64;
            let mut newly_finished = 0u64;
            // Share the batch among the unfinished splits, so that all their watermarks advance
            // together: a split not yet read would hold the frontier (and every window) back.
            let readable = |s: &OpenSplit<S::Reader>| {
                !s.state.clock.is_finished() && s.reader.is_some() && !faultpoint::split_stalled(s.state.split)
            };
            let unfinished = splits.iter().filter(|s| readable(s)).count().max(1);
            let share = (budget / unfinished).max(1);
            for split in splits.iter_mut().filter(|s| readable(s)) {
                if budget == 0 {
                    break;
                }
                let quota = share.min(budget);
                if split.idle {
                    // Event time moved on without this split: what it reads behind the source's
                    // watermark is late, and no record may be stamped behind what was emitted.
                    split.state.clock.raise_to(last_watermark);
                }
                let state = &mut split.state;
                let mut position = Position { offset: state.position, line: state.line };
                let clock = &mut state.clock;
                let reader = split.reader.as_mut().expect("readable");
                let outcome = reader.read(
                    &mut position,
                    quota,
                    |value| {
                        let time = assigner.timestamp(&value);
                        let watermark = if A::ASSIGNS { clock.observe(time) } else { EventTime::MIN };
                        records_batch.push(Record { value, time, watermark });
                    },
                    |row| error_batch.push(row),
                );
                state.position = position.offset;
                state.line = position.line;
                match outcome {
                    Ok((read, at_end)) => {
                        if read > 0 {
                            split.last_active = weir_core::rt::now();
                            split.idle = false;
                        }
                        budget -= read.min(budget);
                        read_total += read as u64;
                        if at_end {
                            state.clock.finish();
                            split.reader = None;
                            newly_finished += 1;
                        }
                    }
                    Err(error) => {
                        let described = source.splits(split_count).get(split.index).cloned().unwrap_or_default();
                        fatal.borrow_mut().get_or_insert_with(|| {
                            format!("source {name}: input {described}: read failed: {error}")
                        });
                        return true;
                    }
                }
            }
            if on_bad_record == BadRecordPolicy::Fail {
                if let Some(bad) = error_batch.first() {
                    fatal.borrow_mut().get_or_insert_with(|| {
                        format!("input {} line {}: {} (record: {:?}); rerun with --on-bad-record skip to divert such lines to the errors output", bad.file, bad.line, bad.reason, bad.record)
                    });
                    return true;
                }
            }
            // 3. Emit at the capabilities' time, which is <= every record's own watermark.
            if read_total > 0 || newly_finished > 0 {
                activity.note();
            }
            if let Some(limit) = rate_limit.as_ref() {
                limit.emitted.set(limit.emitted.get() + read_total);
            }
            SlotMetrics::add(&metrics.records_read, read_total);
            SlotMetrics::add(&metrics.records_bad, error_batch.len() as u64);
            SlotMetrics::add(&metrics.splits_finished, newly_finished);
            if !records_batch.is_empty() {
                records_output.activate().session(&caps[0]).give_container(&mut records_batch);
                records_batch.clear();
            }
            if !error_batch.is_empty() {
                errors_output.activate().session(&caps[1]).give_container(&mut error_batch);
                error_batch.clear();
            }
            if let Some(idleness) = idleness {
                let now = weir_core::rt::now();
                for split in splits.iter_mut().filter(|s| !s.idle && !s.state.clock.is_finished()) {
                    if now.saturating_duration_since(split.last_active) >= idleness {
                        split.idle = true;
                    }
                }
            }
            let watermark = min_watermark(&splits, last_watermark);
            assert!(
                watermark >= last_watermark,
                "source watermark went backwards: {last_watermark} -> {watermark}"
            );
            last_watermark = watermark;
            metrics.watermark.store(watermark, std::sync::atomic::Ordering::Relaxed);
            let time = Time::new(epoch, watermark);
            caps.iter_mut().for_each(|cap| cap.downgrade(&time));
            if splits.iter().any(readable) {
                self_activator.activate();
            }
            true
        }
    });
    (records, errors, activator)
}
