//! Criterion suites for the main job's hot paths: CSV parsing, the generator, window
//! aggregation, key routing and the exchange channel, and result formatting.
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
use weir_dataflow::sink::CsvRow;
use weir_dataflow::stateful::StatefulLogic;
use weir_dataflow::window::{TimeWindow, TumblingEventTimeWindows, WindowAggregate};
use weir_dataflow::Record;

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

criterion_group!(benches, parse, generate, window, exchange, format);
criterion_main!(benches);
