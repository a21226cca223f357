//! The bid source: reads this slot's splits, applies the lateness rule, and moves between
//! checkpoint epochs when told.
//!
//! The operator holds one capability per output at `(epoch, min watermark of its splits)`.
//! Each activation reads a bounded batch, emits on-time bids to the main output, late bids to
//! the late output and malformed lines to the error output, then downgrades its capabilities
//! to the new minimum watermark. When the slot's target epoch moves past its epoch (a
//! checkpoint was triggered), it records every split's position and clock as its part of that
//! checkpoint and moves its capabilities to the new epoch: the boundary falls between two
//! records, which is what makes the checkpoint consistent. A split at its end keeps a
//! capability at `(epoch, +∞)` until the final checkpoint, so that epochs keep completing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::Activator;

use weir_core::bid::parse_bid_line;
use weir_core::faultpoint::{self, PlantedBug};
use weir_core::generator::{BidGenerator, GeneratorConfig};
use weir_core::job::{BadRecordPolicy, SplitSpec};
use weir_core::time::{Epoch, EventTime, Time};
use weir_core::watermark::{Admission, SplitClock};
use weir_core::window::TumblingWindows;
use weir_core::Bid;

use crate::metrics::SlotMetrics;
use crate::sink::ErrorRow;
use crate::snapshot::{SnapshotCollector, SplitState};

/// Records read per activation (over all of the slot's splits).
pub const BATCH_RECORDS: usize = 8192;
/// The source pauses while this many exchange batches wait for credit.
pub const PRESSURE_LIMIT: usize = 4;

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

enum Reader {
    File { reader: FileReader, name: Arc<str> },
    Generated { generator: BidGenerator, split: usize, splits: usize, length: u64 },
}

struct Split {
    state: SplitState,
    reader: Reader,
}

/// What the source needs to run in one slot.
pub struct SourceSetup {
    /// The splits this slot reads, with their indices in the job's split list.
    pub splits: Vec<(usize, SplitSpec)>,
    /// Restored split states by split index.
    pub restored: HashMap<usize, SplitState>,
    /// The window assigner (for the lateness rule).
    pub windows: TumblingWindows,
    /// Bounded out-of-orderness.
    pub out_of_orderness_ms: i64,
    /// What to do with malformed lines.
    pub on_bad_record: BadRecordPolicy,
    /// The first epoch.
    pub start_epoch: Epoch,
    /// The epoch the slot is told to be in (moved by checkpoint triggers).
    pub target_epoch: Rc<Cell<Epoch>>,
    /// Set to the final checkpoint's id once all input is read everywhere.
    pub final_checkpoint: Rc<Cell<Option<Epoch>>>,
    /// Exchange batches waiting for credit: the source pauses above [`PRESSURE_LIMIT`].
    pub pressure: Rc<Cell<usize>>,
    /// Where the source reports its checkpoint parts.
    pub snapshots: Rc<RefCell<SnapshotCollector>>,
    /// Where a fatal error (I/O, or a bad record under `fail`) is reported.
    pub fatal: Rc<RefCell<Option<String>>>,
    /// Counters.
    pub metrics: Arc<SlotMetrics>,
    /// The slot's activity counter.
    pub activity: crate::Activity,
    /// Optional throttle: at most this many records per second (of the slot's clock) in this slot.
    pub rate_limit: Option<RateLimit>,
}

/// A source throttle: `records_per_second` against a millisecond clock injected by the slot
/// driver (the runtime's clock, simulated under madsim).
pub struct RateLimit {
    /// Records per second for this slot.
    pub records_per_second: u64,
    /// Milliseconds since the slot started.
    pub clock_ms: Box<dyn Fn() -> u64 + Send>,
}

/// The three outputs of the source.
pub struct SourceStreams<'scope> {
    /// On-time bids.
    pub bids: Stream<'scope, Time, Vec<Bid>>,
    /// Late bids.
    pub late: Stream<'scope, Time, Vec<Bid>>,
    /// Malformed lines.
    pub errors: Stream<'scope, Time, Vec<ErrorRow>>,
    /// The source's activator.
    pub activator: Activator,
}

fn open_split(
    index: usize,
    spec: &SplitSpec,
    restored: Option<SplitState>,
    out_of_orderness_ms: i64,
) -> io::Result<Split> {
    let state = restored.unwrap_or(SplitState {
        split: index,
        position: 0,
        line: 1,
        clock: SplitClock::new(out_of_orderness_ms),
    });
    let reader = match spec {
        SplitSpec::File(path) => {
            let mut reader = FileReader::open(path, state.position)?;
            let mut state = state;
            if state.position == 0 {
                // Skip the header (checked when the job was validated).
                let (lines, bytes, _) = reader.read_lines(1, |_| {})?;
                state.position += bytes;
                state.line += lines as u64;
            }
            let name: Arc<str> = Arc::from(path.display().to_string());
            return Ok(Split { state, reader: Reader::File { reader, name } });
        }
        SplitSpec::Generated { config, split, splits } => Reader::Generated {
            generator: config.generator(),
            split: *split,
            splits: *splits,
            length: config.split_len(*split, *splits),
        },
    };
    Ok(Split { state, reader })
}

/// Builds the bid source of one slot.
pub fn bid_source<'scope>(scope: Scope<'scope, Time>, setup: SourceSetup) -> SourceStreams<'scope> {
    let mut builder = OperatorBuilder::new("BidSource".to_owned(), scope);
    let address = builder.operator_info().address;
    let activator = scope.activator_for(address.clone());
    let self_activator = scope.activator_for(address);
    let (bids_output, bids) = builder.new_output::<Vec<Bid>>();
    let (late_output, late) = builder.new_output::<Vec<Bid>>();
    let (errors_output, errors) = builder.new_output::<Vec<ErrorRow>>();
    let mut bids_output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<Bid>>>::from(bids_output);
    let mut late_output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<Bid>>>::from(late_output);
    let mut errors_output = OutputBuilder::<Time, CapacityContainerBuilder<Vec<ErrorRow>>>::from(errors_output);

    builder.build_reschedule(move |initial: Vec<Capability<Time>>| {
        let SourceSetup {
            splits: specs,
            mut restored,
            windows,
            out_of_orderness_ms,
            on_bad_record,
            start_epoch,
            target_epoch,
            final_checkpoint,
            pressure,
            snapshots,
            fatal,
            metrics,
            activity,
            rate_limit,
        } = setup;
        let mut emitted_total = 0u64;
        let mut splits = Vec::with_capacity(specs.len());
        let mut rewind_skipped = false;
        for (index, spec) in &specs {
            let mut state = restored.remove(index);
            if faultpoint::planted(PlantedBug::RestoreSkipsRewind)
                && !rewind_skipped
                && state.is_some_and(|s| s.position > 0)
            {
                // Planted bug: this split's checkpointed offset is not restored.
                state = None;
                rewind_skipped = true;
            }
            match open_split(*index, spec, state, out_of_orderness_ms) {
                Ok(split) => splits.push(split),
                Err(error) => {
                    fatal.borrow_mut().get_or_insert_with(|| format!("input {spec}: cannot read: {error}"));
                }
            }
        }
        let finished_at_start = splits.iter().filter(|s| s.state.clock.is_finished()).count();
        SlotMetrics::add(&metrics.splits_finished, finished_at_start as u64);
        let mut epoch = start_epoch;
        let mut last_watermark = EventTime::MIN;
        let min_watermark = |splits: &[Split]| splits.iter().map(|s| s.state.clock.watermark()).min().unwrap_or(EventTime::MAX);
        let start_time = Time::new(epoch, min_watermark(&splits));
        let mut capabilities: Option<Vec<Capability<Time>>> =
            Some(initial.iter().map(|cap| cap.delayed(&start_time)).collect());
        drop(initial);
        let mut bids_batch: Vec<Bid> = Vec::with_capacity(BATCH_RECORDS);
        let mut late_batch: Vec<Bid> = Vec::new();
        let mut error_batch: Vec<ErrorRow> = Vec::new();

        move |_frontiers| {
            let Some(caps) = capabilities.as_mut() else { return false };
            // 1. Epoch boundaries: a checkpoint was triggered since the last activation.
            while epoch < target_epoch.get() {
                snapshots.borrow_mut().source_part(epoch, splits.iter().map(|s| s.state).collect());
                epoch += 1;
                activity.note();
                let time = Time::new(epoch, min_watermark(&splits));
                caps.iter_mut().for_each(|cap| cap.downgrade(&time));
            }
            if final_checkpoint.get() == Some(epoch) {
                assert!(splits.iter().all(|s| s.state.clock.is_finished()), "final checkpoint before all input was read");
                snapshots.borrow_mut().source_part(epoch, splits.iter().map(|s| s.state).collect());
                capabilities = None;
                return false;
            }
            if fatal.borrow().is_some() || pressure.get() >= PRESSURE_LIMIT {
                return true; // woken by the slot driver when credit returns
            }
            // 2. Read one batch.
            let mut budget = BATCH_RECORDS;
            if let Some(limit) = &rate_limit {
                let allowed = ((limit.records_per_second as u128 * (limit.clock_ms)() as u128) / 1000) as u64;
                budget = budget.min(allowed.saturating_sub(emitted_total) as usize);
                if budget == 0 {
                    return true; // the slot driver's idle timer wakes the source again
                }
            }
            let mut read_total = 0u64;
            let mut newly_finished = 0u64;
            // Share the batch among the unfinished splits, so that all their watermarks advance
            // together: a split not yet read would hold the frontier (and every window) back.
            let readable = |s: &Split| !s.state.clock.is_finished() && !faultpoint::split_stalled(s.state.split);
            let unfinished = splits.iter().filter(|s| readable(s)).count().max(1);
            let share = (budget / unfinished).max(1);
            for split in splits.iter_mut().filter(|s| readable(s)) {
                if budget == 0 {
                    break;
                }
                let quota = share.min(budget);
                let state = &mut split.state;
                let result = match &mut split.reader {
                    Reader::Generated { generator, split, splits, length } => {
                        let end = (state.position + quota as u64).min(*length);
                        for position in state.position..end {
                            let bid = generator.bid(GeneratorConfig::global_index(*split, *splits, position));
                            match state.clock.admit(bid.date_time, &windows) {
                                Admission::OnTime => bids_batch.push(bid),
                                Admission::Late => late_batch.push(bid),
                            }
                        }
                        let read = (end - state.position) as usize;
                        state.position = end;
                        Ok((read, end == *length))
                    }
                    Reader::File { reader, name } => {
                        let mut line = state.line;
                        let clock = &mut state.clock;
                        let outcome = reader.read_lines(quota, |text| {
                            let number = line;
                            line += 1;
                            if text.trim_ascii().is_empty() {
                                return;
                            }
                            match parse_bid_line(text) {
                                Ok(bid) => match clock.admit(bid.date_time, &windows) {
                                    Admission::OnTime => bids_batch.push(bid),
                                    Admission::Late => late_batch.push(bid),
                                },
                                Err(bad) => {
                                    let record = String::from_utf8_lossy(&text[..text.len().min(4096)]).into_owned();
                                    error_batch.push(ErrorRow { file: name.clone(), line: number, reason: bad.to_string(), record });
                                }
                            }
                        });
                        state.line = line;
                        outcome.map(|(lines, bytes, at_end)| {
                            state.position += bytes;
                            (lines, at_end)
                        })
                    }
                };
                match result {
                    Ok((read, at_end)) => {
                        budget -= read.min(budget);
                        read_total += read as u64;
                        if at_end {
                            state.clock.finish();
                            newly_finished += 1;
                        }
                    }
                    Err(error) => {
                        fatal.borrow_mut().get_or_insert_with(|| format!("input split {}: read failed: {error}", state.split));
                        return true;
                    }
                }
            }
            if on_bad_record == BadRecordPolicy::Fail {
                if let Some(bad) = error_batch.first() {
                    fatal.borrow_mut().get_or_insert_with(|| {
                        format!("input {} line {}: {} (record: {:?}); rerun with --on-bad-record skip to divert such lines to errors/", bad.file, bad.line, bad.reason, bad.record)
                    });
                    return true;
                }
            }
            // 3. Emit at the capabilities' time, which is <= every record's own time.
            if read_total > 0 || newly_finished > 0 {
                activity.note();
            }
            emitted_total += read_total;
            SlotMetrics::add(&metrics.records_read, read_total);
            SlotMetrics::add(&metrics.records_on_time, bids_batch.len() as u64);
            SlotMetrics::add(&metrics.records_late, late_batch.len() as u64);
            SlotMetrics::add(&metrics.records_bad, error_batch.len() as u64);
            SlotMetrics::add(&metrics.splits_finished, newly_finished);
            if !bids_batch.is_empty() {
                bids_output.activate().session(&caps[0]).give_container(&mut bids_batch);
                bids_batch.clear();
            }
            if !late_batch.is_empty() {
                late_output.activate().session(&caps[1]).give_container(&mut late_batch);
                late_batch.clear();
            }
            if !error_batch.is_empty() {
                errors_output.activate().session(&caps[2]).give_container(&mut error_batch);
                error_batch.clear();
            }
            let watermark = min_watermark(&splits);
            assert!(
                watermark >= last_watermark,
                "source watermark went backwards: {last_watermark} -> {watermark}"
            );
            last_watermark = watermark;
            metrics.watermark.store(watermark, std::sync::atomic::Ordering::Relaxed);
            let time = Time::new(epoch, watermark);
            caps.iter_mut().for_each(|cap| cap.downgrade(&time));
            if splits.iter().any(|s| !s.state.clock.is_finished()) {
                self_activator.activate();
            }
            true
        }
    });
    SourceStreams { bids, late, errors, activator }
}
