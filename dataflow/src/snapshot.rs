//! Snapshot parts, their collection per epoch, and the slot state file format.
//!
//! Operators of a slot report their part of checkpoint `n` independently, when *they* see
//! epoch `n` complete: each source records its split positions when it moves past epoch `n`,
//! the window operator its state once its input frontier has passed epoch `n`, and each sink
//! when its staged output for epoch `n` is durable. The [`SnapshotCollector`] joins the parts;
//! the slot's state for checkpoint `n` exists only when all have arrived. Window state is keyed
//! by key group so that a restore can reassign whole groups to other slots.

use std::collections::BTreeMap;

use weir_core::codec::{DecodeError, Decoder, Encoder};
use weir_core::time::Epoch;
use weir_core::watermark::SplitClock;

/// The position and clock of one source split at an epoch boundary.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SplitState {
    /// Index of the split in the job's split list.
    pub split: usize,
    /// Byte offset of the next unread line (files), or index of the next event (generator).
    pub position: u64,
    /// 1-based number of the next unread line (files; 0 for the generator).
    pub line: u64,
    /// The split's event-time clock.
    pub clock: SplitClock,
}

/// The running aggregate of one (window, auction).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// Number of bids.
    pub bids: u64,
    /// Sum of prices (128-bit: cannot overflow for any input this engine can read).
    pub sum_price: i128,
    /// Highest price.
    pub max_price: i64,
}

impl Aggregate {
    /// The aggregate of a single bid.
    #[inline]
    pub fn of(price: i64) -> Self {
        Aggregate { bids: 1, sum_price: price as i128, max_price: price }
    }
    /// Adds one bid.
    #[inline]
    pub fn add(&mut self, price: i64) {
        self.bids += 1;
        self.sum_price += price as i128;
        self.max_price = self.max_price.max(price);
    }
}

/// One entry of window state: `(key group, window start, auction) -> aggregate`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WindowEntry {
    /// Key group of the auction.
    pub key_group: usize,
    /// Start of the window.
    pub window_start: i64,
    /// The auction.
    pub auction: i64,
    /// Its aggregate so far.
    pub aggregate: Aggregate,
}

/// Everything one slot contributes to one checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotSnapshot {
    /// The slot's split states.
    pub splits: Vec<SplitState>,
    /// The slot's window state, sorted.
    pub window: Vec<WindowEntry>,
}

const MAGIC: u64 = u64::from_le_bytes(*b"WEIRSLT1");

impl SlotSnapshot {
    /// Encodes the snapshot of `slot` at `epoch` as a state file.
    pub fn encode(&self, slot: usize, epoch: Epoch) -> Vec<u8> {
        let mut encoder = Encoder::new();
        encoder.u64(MAGIC).u64(slot as u64).u64(epoch);
        encoder.u64(self.splits.len() as u64);
        for split in &self.splits {
            let clock = encode_clock(&split.clock);
            encoder.u64(split.split as u64).u64(split.position).u64(split.line).bytes(&clock);
        }
        encoder.u64(self.window.len() as u64);
        for entry in &self.window {
            encoder
                .u64(entry.key_group as u64)
                .i64(entry.window_start)
                .i64(entry.auction)
                .u64(entry.aggregate.bids)
                .i128(entry.aggregate.sum_price)
                .i64(entry.aggregate.max_price);
        }
        encoder.finish()
    }

    /// Decodes a state file, checking it belongs to `epoch`.
    pub fn decode(bytes: &[u8], epoch: Epoch) -> Result<(usize, SlotSnapshot), DecodeError> {
        let mut decoder = Decoder::new(bytes);
        if decoder.u64("magic")? != MAGIC {
            return Err(DecodeError { what: "magic number (not a Weir slot state file)", offset: 0 });
        }
        let slot = decoder.u64("slot")? as usize;
        if decoder.u64("epoch")? != epoch {
            return Err(DecodeError { what: "epoch (file belongs to another checkpoint)", offset: 16 });
        }
        let split_count = decoder.count(32, "split count")?;
        let mut splits = Vec::with_capacity(split_count);
        for _ in 0..split_count {
            let split = decoder.u64("split index")? as usize;
            let position = decoder.u64("split position")?;
            let line = decoder.u64("split line")?;
            let clock = decode_clock(decoder.bytes("split clock")?)?;
            splits.push(SplitState { split, position, line, clock });
        }
        let entry_count = decoder.count(56, "window entry count")?;
        let mut window = Vec::with_capacity(entry_count);
        for _ in 0..entry_count {
            window.push(WindowEntry {
                key_group: decoder.u64("key group")? as usize,
                window_start: decoder.i64("window start")?,
                auction: decoder.i64("auction")?,
                aggregate: Aggregate {
                    bids: decoder.u64("bids")?,
                    sum_price: decoder.i128("sum")?,
                    max_price: decoder.i64("max")?,
                },
            });
        }
        decoder.finish("end of slot state")?;
        Ok((slot, SlotSnapshot { splits, window }))
    }
}

fn encode_clock(clock: &SplitClock) -> Vec<u8> {
    serde_json::to_vec(clock).expect("clock serializes")
}

fn decode_clock(bytes: &[u8]) -> Result<SplitClock, DecodeError> {
    serde_json::from_slice(bytes).map_err(|_| DecodeError { what: "split clock", offset: 0 })
}

/// The sinks of the main job, each reporting its own flushes.
pub const SINK_COUNT: usize = 3;

/// Joins the parts operators report for each epoch into whole slot snapshots.
#[derive(Debug, Default)]
pub struct SnapshotCollector {
    sources: BTreeMap<Epoch, Vec<SplitState>>,
    windows: BTreeMap<Epoch, Vec<WindowEntry>>,
    /// The window's final state, valid for every epoch from the key on.
    window_final: Option<(Epoch, Vec<WindowEntry>)>,
    /// Per sink: every epoch `<=` this is durable.
    sinks_through: [Epoch; SINK_COUNT],
}

impl SnapshotCollector {
    /// A collector for a slot starting at `start_epoch`.
    pub fn new(start_epoch: Epoch) -> Self {
        SnapshotCollector { sinks_through: [start_epoch - 1; SINK_COUNT], ..Default::default() }
    }
    /// The source's split states at the end of `epoch`.
    pub fn source_part(&mut self, epoch: Epoch, splits: Vec<SplitState>) {
        let previous = self.sources.insert(epoch, splits);
        assert!(previous.is_none(), "source reported epoch {epoch} twice");
    }
    /// The window operator's state at the end of `epoch`.
    pub fn window_part(&mut self, epoch: Epoch, entries: Vec<WindowEntry>) {
        let previous = self.windows.insert(epoch, entries);
        assert!(previous.is_none(), "window reported epoch {epoch} twice");
    }
    /// The window operator's final state, valid for `epoch` and every later epoch.
    pub fn window_final(&mut self, epoch: Epoch, entries: Vec<WindowEntry>) {
        assert!(self.window_final.is_none(), "window finished twice");
        self.window_final = Some((epoch, entries));
    }
    /// Sink `sink` has made every epoch `<= through` durable.
    pub fn sink_durable_through(&mut self, sink: usize, through: Epoch) {
        // Before the sources leave the minimum epoch a sink may report less than the start.
        self.sinks_through[sink] = self.sinks_through[sink].max(through);
    }

    /// The oldest epoch whose parts have all arrived, with the joined snapshot.
    pub fn take_ready(&mut self) -> Option<(Epoch, SlotSnapshot)> {
        let (&epoch, _) = self.sources.first_key_value()?;
        if self.sinks_through.iter().any(|&through| through < epoch) {
            return None;
        }
        let window = if let Some(entries) = self.windows.remove(&epoch) {
            entries
        } else {
            match &self.window_final {
                Some((from, entries)) if *from <= epoch => entries.clone(),
                _ => return None,
            }
        };
        let splits = self.sources.remove(&epoch).expect("present");
        Some((epoch, SlotSnapshot { splits, window }))
    }
}
