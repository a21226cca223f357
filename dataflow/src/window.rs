//! Tumbling event-time windows with per-auction count, sum and max, fired from frontiers and
//! snapshotted per epoch.
//!
//! **Firing.** A window `[start, end)` fires when no element of the input frontier has
//! `event_time < end`: every on-time record of it has then arrived (a record is on time only
//! if its split's watermark was below `end`, and sources emit at times `>=` that watermark).
//!
//! **Epoch alignment.** The operator processes epochs in order. Records of the *processing
//! epoch* `c` (the least epoch in the input frontier) are applied at once; records of later
//! epochs, which arrive early from slots already past checkpoint `c`, are held apart. When the
//! frontier passes epoch `c`, the state reflects exactly the records of epochs `<= c`: the
//! operator snapshots it, emits its output for `c` and moves its output capability to `c + 1`.
//! A held record still blocks the firing of its window (its timestamp counts like a frontier
//! element), so a window's result always includes all of its records, whatever their epochs.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use weir_core::faultpoint::{self, PlantedBug};
use weir_core::keygroup::{key_group_of, mix64};
use weir_core::time::{Epoch, EventTime, Time};
use weir_core::window::TumblingWindows;
use weir_core::Bid;

use crate::metrics::SlotMetrics;
use crate::snapshot::{Aggregate, SnapshotCollector, WindowEntry};

/// One result row of the main job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowResult {
    /// Window start (inclusive), ms.
    pub window_start: EventTime,
    /// Window end (exclusive), ms.
    pub window_end: EventTime,
    /// The auction.
    pub auction: i64,
    /// Number of bids.
    pub bids: u64,
    /// Sum of prices.
    pub sum_price: i128,
    /// Highest price.
    pub max_price: i64,
}

/// A deterministic, fast hasher for `i64` keys (no per-process random seed: iteration order,
/// and so everything downstream, is the same in every run).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = mix64(self.0 ^ byte as u64);
        }
    }
    #[inline]
    fn write_i64(&mut self, value: i64) {
        // One multiply and a fold: keys are auction ids, not adversarial input.
        let product = (self.0 ^ value as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = product ^ (product >> 29);
    }
}

type AuctionMap = HashMap<i64, Aggregate, BuildHasherDefault<KeyHasher>>;

/// The state of the window operator: open windows by start, each a map from auction to aggregate.
#[derive(Debug, Default)]
pub struct WindowState {
    windows: BTreeMap<EventTime, AuctionMap>,
}

impl WindowState {
    /// State restored from snapshot entries.
    pub fn from_entries(entries: impl IntoIterator<Item = WindowEntry>) -> Self {
        let mut state = WindowState::default();
        for entry in entries {
            let previous = state.windows.entry(entry.window_start).or_default().insert(entry.auction, entry.aggregate);
            assert!(previous.is_none(), "duplicate window entry in snapshot");
        }
        state
    }

    /// Adds a batch of on-time bids.
    #[inline]
    pub fn apply(&mut self, windows: &TumblingWindows, bids: &[Bid]) {
        let mut index = 0;
        while index < bids.len() {
            // Runs of consecutive bids usually share a window: look it up (and divide) once per
            // run, then test membership by comparison.
            let start = windows.start_of(bids[index].date_time);
            let end = windows.end_of(start);
            let auctions = self.windows.entry(start).or_default();
            while let Some(bid) = bids.get(index).filter(|bid| {
                (start <= bid.date_time && bid.date_time < end) || windows.start_of(bid.date_time) == start
            }) {
                auctions
                    .entry(bid.auction)
                    .and_modify(|a| a.add(bid.price))
                    .or_insert_with(|| Aggregate::of(bid.price));
                index += 1;
            }
        }
    }

    /// Removes and returns, sorted, the results of every window whose end is `<= bound`.
    pub fn fire_through(&mut self, windows: &TumblingWindows, bound: EventTime, out: &mut Vec<WindowResult>) {
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = windows.end_of(start);
            if end > bound {
                break;
            }
            let auctions = entry.remove();
            let first = out.len();
            out.extend(auctions.into_iter().map(|(auction, aggregate)| WindowResult {
                window_start: start,
                window_end: end,
                auction,
                bids: aggregate.bids,
                sum_price: aggregate.sum_price,
                max_price: aggregate.max_price,
            }));
            out[first..].sort_unstable();
        }
    }

    /// The state as sorted snapshot entries.
    pub fn entries(&self) -> Vec<WindowEntry> {
        let mut entries: Vec<WindowEntry> = self
            .windows
            .iter()
            .flat_map(|(&window_start, auctions)| {
                auctions.iter().map(move |(&auction, &aggregate)| WindowEntry {
                    key_group: key_group_of(auction),
                    window_start,
                    auction,
                    aggregate,
                })
            })
            .collect();
        entries.sort_unstable_by_key(|e| (e.key_group, e.window_start, e.auction));
        entries
    }

    /// Number of open (window, auction) pairs.
    pub fn len(&self) -> usize {
        self.windows.values().map(|m| m.len()).sum()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// Configuration of the window operator in one slot.
pub struct WindowSetup {
    /// The window assigner.
    pub windows: TumblingWindows,
    /// The first epoch this slot runs (restored checkpoint + 1, or 1).
    pub start_epoch: Epoch,
    /// Restored state.
    pub restored: WindowState,
    /// Where snapshot parts go.
    pub snapshots: Rc<RefCell<SnapshotCollector>>,
    /// Counters.
    pub metrics: Arc<SlotMetrics>,
    /// The slot's activity counter.
    pub activity: crate::Activity,
}

/// Aggregates bids per tumbling window and auction.
pub trait WindowAggregate<'scope> {
    /// Windows this (already key-partitioned) stream of on-time bids.
    fn window_aggregate(self, setup: WindowSetup) -> Stream<'scope, Time, Vec<WindowResult>>;
}

impl<'scope> WindowAggregate<'scope> for Stream<'scope, Time, Vec<Bid>> {
    fn window_aggregate(self, setup: WindowSetup) -> Stream<'scope, Time, Vec<WindowResult>> {
        self.unary_frontier(Pipeline, "WindowAggregate", move |initial: Capability<Time>, _info| {
            let WindowSetup { windows, start_epoch, restored: mut state, snapshots, metrics, activity } = setup;
            let mut capability = Some(initial.delayed(&Time::new(start_epoch, EventTime::MIN)));
            drop(initial);
            let mut processing = start_epoch;
            // Batches of epochs later than `processing`, with their timestamps' event times.
            let mut held: BTreeMap<Epoch, Vec<(EventTime, Vec<Bid>)>> = BTreeMap::new();
            let mut fired: Vec<WindowResult> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|stamp, data| {
                    activity.note();
                    let time = crate::message_time(&stamp);
                    let early_snapshots = faultpoint::planted(PlantedBug::SnapshotBeforeEpochComplete);
                    assert!(
                        time.epoch >= processing || early_snapshots,
                        "record of completed epoch {} arrived in epoch {processing}",
                        time.epoch
                    );
                    if time.epoch <= processing {
                        state.apply(&windows, data);
                    } else {
                        held.entry(time.epoch).or_default().push((time.event_time, std::mem::take(data)));
                    }
                });
                let Some(cap) = capability.as_mut() else {
                    assert!(frontier.is_empty() && held.is_empty(), "input after the window operator finished");
                    return;
                };
                let frontier_epoch = frontier.frontier().iter().map(|t| t.epoch).min();
                // Fire what the frontier allows, then complete every epoch it has passed, in
                // order, firing again after each epoch's held batches are applied.
                loop {
                    let bound = firing_bound(frontier.frontier().iter().map(|t| t.event_time), &held);
                    state.fire_through(&windows, bound, &mut fired);
                    if !fired.is_empty() {
                        SlotMetrics::add(&metrics.rows_emitted, fired.len() as u64);
                        output.session(&*cap).give_container(&mut fired);
                        fired.clear();
                    }
                    if frontier_epoch.is_some_and(|epoch| epoch <= processing) {
                        // Planted bug: the first record of the next epoch passes for the end of
                        // this one, although records of this epoch may still be in flight.
                        let premature = faultpoint::planted(PlantedBug::SnapshotBeforeEpochComplete)
                            && frontier_epoch == Some(processing)
                            && held.contains_key(&(processing + 1));
                        if !premature {
                            break;
                        }
                    }
                    if frontier_epoch.is_none() && held.is_empty() {
                        snapshots.borrow_mut().window_final(processing, state.entries());
                        capability = None;
                        return;
                    }
                    snapshots.borrow_mut().window_part(processing, state.entries());
                    activity.note();
                    processing += 1;
                    cap.downgrade(&Time::new(processing, EventTime::MIN));
                    if let Some(batches) = held.remove(&processing) {
                        for (_, batch) in batches {
                            state.apply(&windows, &batch);
                        }
                    }
                }
            }
        })
    }
}

/// Windows ending at or before the returned bound may fire: no frontier element and no held
/// batch has an event time below it.
fn firing_bound(
    frontier: impl Iterator<Item = EventTime>,
    held: &BTreeMap<Epoch, Vec<(EventTime, Vec<Bid>)>>,
) -> EventTime {
    let held_min = held.values().flatten().map(|(time, _)| *time).min();
    frontier.chain(held_min).min().unwrap_or(EventTime::MAX)
}
