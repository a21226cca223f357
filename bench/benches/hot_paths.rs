//! Criterion suites for the hot paths: CSV parsing, the generator, every window kind (tumbling,
//! sliding, cumulating, sessions, global with a count trigger), a keyed process function with
//! value state, the interval join and the window join, key routing and the exchange channel,
//! and result formatting.
//!
//! Run: `cargo bench -p weir-bench --bench hot_paths`. Throughput is reported per record.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use weir_cluster::jobs::bids::{BidStats, Stats, WindowResult};
use weir_core::bid::{parse_bid_line, write_bid_csv};
use weir_core::generator::GeneratorConfig;
use weir_core::keygroup::slot_of_key;
use weir_core::time::Time;
use weir_core::Bid;
use weir_dataflow::exchange::{Doorbell, ExchangeMessage, ExchangeRx, ExchangeTx, LocalChannel};
use weir_dataflow::join::{join_window, IntervalJoinFunction};
use weir_dataflow::process::{CoProcess, ProcessOperator};
use weir_dataflow::sink::CsvRow;
use weir_dataflow::stateful::StatefulLogic;
use weir_dataflow::window::{
    AggregateFunction, CollectAll, CountTrigger, CumulativeEventTimeWindows, EventTimeSessionWindows, GlobalAggregate,
    SlidingEventTimeWindows, TimeWindow, TumblingEventTimeWindows, WindowAggregate, WindowKind,
};
use weir_dataflow::{Context, Either, KeyedProcessFunction, Record, ValueState};

const BATCH: usize = 8192;

fn bids(count: usize) -> Vec<Bid> {
    let config = GeneratorConfig::new(count as u64, 1);
    (0..count as u64).map(|i| config.bid(i)).collect()
}

fn parse(c: &mut Criterion) {
    let mut csv = Vec::new();
    for bid in bids(BATCH) {
        write_bid_csv(&bid, &mut csv);
    }
    let lines: Vec<&[u8]> = csv.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse_bid_line", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for line in &lines {
                sum = sum.wrapping_add(parse_bid_line(black_box(line)).expect("valid").price);
            }
            sum
        })
    });
    group.finish();
}

fn generate(c: &mut Criterion) {
    let config = GeneratorConfig::new(u64::MAX, 1);
    let mut group = c.benchmark_group("generator");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("bid", |b| {
        b.iter(|| (0..BATCH as u64).map(|i| config.bid(black_box(i)).price).fold(0i64, i64::wrapping_add))
    });
    group.finish();
}

fn window(c: &mut Criterion) {
    let batches: Vec<Vec<Record<Bid>>> = bids(BATCH * 64)
        .chunks(BATCH)
        .map(|c| c.iter().map(|bid| Record { value: *bid, time: bid.date_time, watermark: i64::MIN }).collect())
        .collect();
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements((BATCH * batches.len()) as u64));
    group.bench_function("tumbling_aggregate_apply_and_fire", |b| {
        b.iter_batched(
            || batches.clone(),
            |mut batches| {
                let mut logic = WindowAggregate::new(
                    TumblingEventTimeWindows::of(10_000),
                    BidStats,
                    |bid: &Bid| bid.auction,
                    |&auction: &i64, window: TimeWindow, stats: Stats| (auction, window.start, stats.bids),
                );
                let (mut out, mut late) = (Vec::new(), Vec::new());
                for batch in &mut batches {
                    logic.apply(black_box(batch), &mut out, &mut late);
                }
                logic.advance(i64::MAX, &mut out);
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

struct Quiet;
impl Doorbell for Quiet {
    fn ring(&self) {}
}

fn exchange(c: &mut Criterion) {
    let batch = bids(BATCH);
    let mut group = c.benchmark_group("exchange");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("route_by_key_group_4_slots", |b| {
        b.iter(|| {
            let mut parts: Vec<Vec<Bid>> = (0..4).map(|_| Vec::with_capacity(BATCH / 2)).collect();
            for bid in black_box(&batch) {
                parts[slot_of_key(bid.auction, 4)].push(*bid);
            }
            parts.iter().map(Vec::len).sum::<usize>()
        })
    });
    let bell: Arc<dyn Doorbell> = Arc::new(Quiet);
    let channel = LocalChannel::<Vec<Bid>>::new(16, bell.clone(), bell);
    group.bench_function("local_channel_batch_round_trip", |b| {
        b.iter_batched(
            || batch.clone(),
            |data| {
                channel.try_send(ExchangeMessage::Data(Time::new(1, 0), data)).expect("credit");
                match channel.try_recv() {
                    Some(ExchangeMessage::Data(_, data)) => data.len(),
                    _ => unreachable!(),
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn format(c: &mut Criterion) {
    let rows: Vec<WindowResult> = (0..BATCH as i64)
        .map(|i| WindowResult {
            window_start: 1_700_000_000_000,
            window_end: 1_700_000_010_000,
            auction: i,
            bids: 17,
            sum_price: 123_456,
            max_price: 99_999,
        })
        .collect();
    let mut group = c.benchmark_group("sink");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("format_result_rows", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for row in &rows {
                row.write_csv(&mut out);
            }
            out.len()
        })
    });
    group.finish();
}

/// Bids as records with event time and a lagging watermark (the source's stamps).
fn records(count: usize) -> Vec<Vec<Record<Bid>>> {
    bids(count)
        .chunks(BATCH)
        .map(|c| {
            c.iter().map(|bid| Record { value: *bid, time: bid.date_time, watermark: bid.date_time - 4_000 }).collect()
        })
        .collect()
}

struct CountBids;

impl AggregateFunction<Bid> for CountBids {
    type Acc = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, count: &mut u64, _bid: &Bid) {
        *count += 1;
    }
    fn merge(&self, count: &mut u64, other: u64) {
        *count += other;
    }
}

/// Applies every batch to `logic`, then fires everything; returns the outputs.
fn drive<L: StatefulLogic>(mut logic: L, batches: &mut [Vec<Record<L::In>>]) -> usize {
    let (mut out, mut late) = (Vec::new(), Vec::new());
    for batch in batches.iter_mut() {
        logic.apply(batch, &mut out, &mut late);
    }
    logic.advance(i64::MAX, &mut out);
    out.len() + late.len()
}

fn window_kinds(c: &mut Criterion) {
    let batches = records(BATCH * 16);
    let mut group = c.benchmark_group("window_kinds");
    group.throughput(Throughput::Elements((BATCH * batches.len()) as u64));
    let key = |bid: &Bid| bid.auction;
    let result = |&auction: &i64, window: TimeWindow, count: u64| (auction, window.start, count);
    group.bench_function("sliding_10s_every_5s", |b| {
        b.iter_batched(
            || batches.clone(),
            |mut batches| {
                drive(
                    WindowKind::logic(SlidingEventTimeWindows::of(10_000, 5_000), CountBids, key, result),
                    &mut batches,
                )
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("cumulate_2s_to_10s", |b| {
        b.iter_batched(
            || batches.clone(),
            |mut batches| {
                drive(
                    WindowKind::logic(CumulativeEventTimeWindows::of(2_000, 10_000), CountBids, key, result),
                    &mut batches,
                )
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("session_gap_1s", |b| {
        b.iter_batched(
            || batches.clone(),
            |mut batches| {
                drive(WindowKind::logic(EventTimeSessionWindows::with_gap(1_000), CountBids, key, result), &mut batches)
            },
            BatchSize::LargeInput,
        )
    });
    // Global windows: a key's window fires every 5 records (`countWindow(5)`), a process
    // function over the key's state.
    group.bench_function("global_count_5", |b| {
        b.iter_batched(
            || batches.clone(),
            |mut batches| {
                let count_window =
                    GlobalAggregate::new(CountBids, CountTrigger(5), |&auction: &i64, count: u64| (auction, count));
                drive(ProcessOperator::new(count_window, key, Box::new(|| 0)), &mut batches)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Counts each auction's bids in keyed state.
struct CountPerKey(ValueState<u64>);

impl KeyedProcessFunction<i64, Bid, u64> for CountPerKey {
    fn process_element(&mut self, _bid: Bid, ctx: &mut Context<'_, i64, u64>) {
        let count = self.0.get(ctx.state()).unwrap_or(0) + 1;
        self.0.set(ctx.state(), count);
        ctx.collect(count);
    }
}

fn process_and_joins(c: &mut Criterion) {
    let batches = records(BATCH * 16);
    let mut group = c.benchmark_group("process_and_joins");
    group.throughput(Throughput::Elements((BATCH * batches.len()) as u64));
    group.bench_function("process_function_value_state", |b| {
        b.iter_batched(
            || batches.clone(),
            |mut batches| {
                let logic = ProcessOperator::new(
                    CountPerKey(ValueState::new("count")),
                    |bid: &Bid| bid.auction,
                    Box::new(|| 0),
                );
                drive(logic, &mut batches)
            },
            BatchSize::LargeInput,
        )
    });
    // Two sides: even bids as the left side, odd as the right, joined within ±100 ms.
    let sides: Vec<Vec<Record<Either<Bid, Bid>>>> = batches
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|r| r.with(if r.value.bidder % 2 == 0 { Either::Left(r.value) } else { Either::Right(r.value) }))
                .collect()
        })
        .collect();
    // A narrow interval (few partners waiting per key) and a wide one (twenty times as many
    // waiting, and as many pairs out).
    for (name, bound_ms) in [("interval_join_100ms", 100), ("interval_join_2s", 2_000)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || sides.clone(),
                |mut sides| {
                    let pair = |a: &Bid, b: &Bid| (a.auction, a.price, b.price);
                    let join = IntervalJoinFunction::new(-bound_ms, bound_ms, pair);
                    let key = |side: &Either<Bid, Bid>| match side {
                        Either::Left(bid) | Either::Right(bid) => bid.auction,
                    };
                    drive(ProcessOperator::new(CoProcess(join), key, Box::new(|| 0)), &mut sides)
                },
                BatchSize::LargeInput,
            )
        });
    }
    // Window join: even bids with odd bids of the same auction in the same 2 s window, every
    // pair when the window fires (the window operator keeping all records, as `apply` does).
    group.bench_function("window_join_2s", |b| {
        b.iter_batched(
            || sides.clone(),
            |mut sides| {
                let key = |side: &Either<Bid, Bid>| match side {
                    Either::Left(bid) | Either::Right(bid) => bid.auction,
                };
                let pairs = |_: &i64, _: TimeWindow, records: Vec<Either<Bid, Bid>>| {
                    join_window(records, |a: &Bid, b: &Bid| (a.auction, a.price, b.price))
                };
                drive(WindowKind::logic(TumblingEventTimeWindows::of(2_000), CollectAll, key, pairs), &mut sides)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parse, generate, window, window_kinds, process_and_joins, exchange, format);
criterion_main!(benches);
