//! The hand-written single-worker timely program for the main job: the performance ceiling.
//!
//! Same generator, same window rule, same aggregates as the engine; but one worker, event time
//! alone as the timestamp, no lateness bookkeeping beyond the watermark, no checkpoints and no
//! output files. The result rows are only counted.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use std::time::Instant;
use weir_dataflow::keyed::KeyHasher;

use timely::communication::allocator::Thread;
use timely::communication::Allocator;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Probe;
use timely::worker::{Config, Worker};

use weir_core::bid::parse_bid_line;
use weir_core::generator::GeneratorConfig;
use weir_core::Bid;

/// What the baseline measured.
#[derive(Debug, Clone, Copy)]
pub struct BaselineResult {
    /// Events processed.
    pub events: u64,
    /// Result rows produced.
    pub rows: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Renders `events` generated bids as CSV lines (no header), for the parsing variant.
pub fn generated_csv(config: &GeneratorConfig) -> Vec<u8> {
    let mut out = Vec::with_capacity(config.events as usize * 40);
    for index in 0..config.events {
        weir_core::bid::write_bid_csv(&config.bid(index), &mut out);
    }
    out
}

/// Runs the baseline over the generator (or over `csv`, parsing each line) with `window_ms`
/// tumbling windows and `out_of_orderness_ms`.
#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
pub fn run(config: GeneratorConfig, csv: Option<&[u8]>, window_ms: i64, out_of_orderness_ms: i64) -> BaselineResult {
    let started = Instant::now();
    let mut worker = Worker::new(Config::default(), Allocator::Thread(Thread::default()), None);
    let probe = ProbeHandle::new();
    let rows = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let rows_out = rows.clone();
    let csv: Option<Vec<u8>> = csv.map(|c| c.to_vec());
    worker.dataflow::<i64, _, _>(|scope| {
        let stream = source::<_, CapacityContainerBuilder<Vec<Bid>>, _, _>(scope, "Bids", move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = Some(capability);
            let mut position = 0u64;
            let mut offset = 0usize;
            let mut max_seen = i64::MIN;
            let mut batch = Vec::with_capacity(8192);
            move |output| {
                let Some(cap) = capability.as_mut() else { return };
                let end = (position + 8192).min(config.events);
                let mut least = i64::MAX;
                let mut watermark = max_seen.saturating_sub(out_of_orderness_ms);
                while position < end {
                    let bid = match &csv {
                        None => config.bid(position),
                        Some(bytes) => {
                            let line_end = offset + memchr_newline(&bytes[offset..]);
                            let bid = parse_bid_line(&bytes[offset..line_end]).expect("valid csv");
                            offset = line_end + 1;
                            bid
                        }
                    };
                    position += 1;
                    if bid.date_time > watermark
                        || bid.date_time - bid.date_time.rem_euclid(window_ms) + window_ms > watermark
                    {
                        least = least.min(bid.date_time.max(watermark));
                        batch.push(bid);
                    }
                    if bid.date_time > max_seen {
                        max_seen = bid.date_time;
                        watermark = max_seen.saturating_sub(out_of_orderness_ms);
                    }
                }
                if !batch.is_empty() {
                    // One message per batch, at its least record time.
                    let time = least.max(*cap.time());
                    output.session(&cap.delayed(&time)).give_container(&mut batch);
                    batch.clear();
                }
                if position == config.events {
                    capability = None;
                } else {
                    cap.downgrade(&max_seen.saturating_sub(out_of_orderness_ms).max(*cap.time()));
                    activator.activate();
                }
            }
        });
        stream
            .unary_frontier::<CapacityContainerBuilder<Vec<(i64, i64, u64, i128, i64)>>, _, _, _>(
                Pipeline,
                "Window",
                move |_capability, _info| {
                    type Auctions = HashMap<i64, (u64, i128, i64), BuildHasherDefault<KeyHasher>>;
                    let mut windows: BTreeMap<i64, Auctions> = BTreeMap::new();
                    move |(input, frontier), _output| {
                        input.for_each(|_time, data| {
                            let mut bids = data.iter().peekable();
                            while let Some(first) = bids.peek() {
                                let start = first.date_time - first.date_time.rem_euclid(window_ms);
                                let auctions = windows.entry(start).or_default();
                                while let Some(bid) =
                                    bids.next_if(|b| b.date_time >= start && b.date_time < start + window_ms)
                                {
                                    let entry = auctions.entry(bid.auction).or_insert((0, 0, i64::MIN));
                                    entry.0 += 1;
                                    entry.1 += bid.price as i128;
                                    entry.2 = entry.2.max(bid.price);
                                }
                            }
                            data.clear();
                        });
                        let bound = frontier.frontier().iter().copied().min().unwrap_or(i64::MAX);
                        while let Some(entry) = windows.first_entry() {
                            if entry.key().saturating_add(window_ms) > bound {
                                break;
                            }
                            rows_out.set(rows_out.get() + entry.remove().len() as u64);
                        }
                    }
                },
            )
            .probe_with(&probe);
    });
    while worker.step() {}
    BaselineResult { events: config.events, rows: rows.get(), seconds: started.elapsed().as_secs_f64() }
}

fn memchr_newline(bytes: &[u8]) -> usize {
    memchr::memchr(b'\n', bytes).unwrap_or(bytes.len())
}
