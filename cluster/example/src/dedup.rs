//! `dedup`: exactly-once deduplication of an at-least-once feed, the job whose keyed state
//! outgrows memory.
//!
//! Payments come from an upstream that retries: some are delivered again, the same payment
//! (same id, account and amount) at the later event time of its redelivery. Keyed by payment id, a value state
//! remembers each id it let through for a time to live; a payment whose id is remembered is a
//! duplicate and dropped. The state holds one entry per distinct id seen within the time to
//! live, so at tens of millions of ids it is larger than memory: run it with
//! `--state-backend rocksdb` (docs/state.md; `weir-bench larger-than-memory` runs it under a
//! memory limit, through a `kill -9`).
//!
//! A payment at event time `t` is let through if its id was not let through at any time in
//! `(t - ttl, t]`; payments of one id are judged in event-time order (ties by encoding), so
//! the result is the same in every run and at every parallelism.

use serde::{Deserialize, Serialize};

use weir_core::generator::{strided_split_len, GeneratorConfig};
use weir_core::keygroup::mix64;
use weir_core::time::EventTime;
use weir_dataflow::api::BuildError;
use weir_dataflow::source::{CsvLines, Generator, GeneratorSource};
use weir_dataflow::{
    Context, FileSource, JobBuilder, JobDef, KeyedProcessFunction, ParamDef, ParamKind, Params, ValueState,
    WatermarkStrategy,
};

/// A payment, as the upstream delivers it (perhaps more than once).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Payment {
    /// The payment's id, the same in every delivery of it.
    pub id: i64,
    /// The paying account.
    pub account: i64,
    /// The amount in cents.
    pub amount_cents: i64,
    /// Event time (ms).
    pub time: EventTime,
}

/// The CSV header of payment files (input and output).
pub const PAYMENT_HEADER: &str = "id,account,amount_cents,time";

/// The job's definition.
pub fn job() -> JobDef {
    JobDef::new(
        "dedup",
        "deduplicates an at-least-once payment feed by payment id (keyed state per id, kept for a time to live): \
         each payment once to OUTPUT/payments/; late payments to OUTPUT/late/, malformed lines to OUTPUT/errors/",
        vec![
            ParamDef::optional(
                "input",
                ParamKind::Files { extension: "csv" },
                "payment CSV files with header `id,account,amount_cents,time`; without it, generated payments",
            ),
            ParamDef::required("output", ParamKind::Path, "output directory"),
            ParamDef::new("ttl", ParamKind::Duration, "1h", "how long (event time) an id is remembered"),
            ParamDef::new("out-of-orderness", ParamKind::Duration, "1s", "bounded out-of-orderness of event time"),
            ParamDef::new(
                "events",
                ParamKind::UInt,
                "100000",
                "generator only: number of deliveries (one per millisecond of event time)",
            ),
            ParamDef::new(
                "retry-percent",
                ParamKind::UInt,
                "10",
                "generator only: percentage of deliveries that are retries",
            ),
            ParamDef::new("seed", ParamKind::UInt, "0", "generator only: seed"),
        ],
        build,
    )
}

fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let ttl = params.duration_ms("ttl")?;
    if ttl <= 0 {
        return Err(BuildError::Job("--ttl must be positive".into()));
    }
    let strategy =
        WatermarkStrategy::bounded_out_of_orderness(params.duration_ms("out-of-orderness")?, |p: &Payment| p.time);
    let payments = if params.has("input") {
        job.source(
            "payments",
            FileSource::new(params.files("input")?, CsvLines::<Payment>::new(PAYMENT_HEADER)),
            strategy,
        )
    } else {
        let generator = Payments::new(params.u64("events")?, params.u64("retry-percent")?, params.u64("seed")?)?;
        job.source("payments", GeneratorSource::new(generator), strategy)
    };
    let unique = payments.records.key_by(|p: &Payment| p.id).process("dedup-by-id", Dedup::new(ttl));
    unique.results.sink_serde_csv("payments", output.join("payments"), PAYMENT_HEADER);
    unique.late.sink_serde_csv("late", output.join("late"), PAYMENT_HEADER);
    payments.errors.sink_csv("errors", output.join("errors"));
    Ok(())
}

/// Lets each payment id through once per time to live.
pub struct Dedup {
    /// When the id was let through (kept `ttl` of event time).
    seen: ValueState<EventTime>,
}

impl Dedup {
    /// Ids are remembered for `ttl_ms` of event time.
    pub fn new(ttl_ms: i64) -> Self {
        Dedup { seen: ValueState::new("seen").with_ttl(ttl_ms) }
    }
}

impl KeyedProcessFunction<i64, Payment, Payment> for Dedup {
    fn process_element(&mut self, payment: Payment, ctx: &mut Context<'_, i64, Payment>) {
        if self.seen.get(ctx.state()).is_none() {
            self.seen.set(ctx.state(), payment.time);
            ctx.collect(payment);
        }
    }
}

/// Generated deliveries: delivery `i` happens at 1 ms of event time per index (with up to
/// 300 ms of jitter, and one in a thousand delayed by 5 s: late); with the given percentage
/// it is a retry of a payment up to 500 deliveries back (or further, as a retry may repeat a
/// retry), carrying that payment's id, account and amount at its own event time, so that a
/// time to live of under a second lets some retries through again. Ids are distinct per
/// payment and scattered over the key space.
#[derive(Clone)]
pub struct Payments {
    events: u64,
    retry_percent: u64,
    seed: u64,
}

impl Payments {
    /// `events` deliveries, `retry_percent` of them retries.
    pub fn new(events: u64, retry_percent: u64, seed: u64) -> Result<Self, BuildError> {
        if retry_percent >= 100 {
            return Err(BuildError::Job(format!(
                "--retry-percent must be below 100 (got {retry_percent}): every delivery would be a retry"
            )));
        }
        Ok(Payments { events, retry_percent, seed })
    }

    /// Delivery `delivered` of the global sequence.
    pub fn delivery(&self, delivered: u64) -> Payment {
        // A retry repeats an earlier delivery, which may itself be a retry: follow them back.
        let mut index = delivered;
        loop {
            let random = mix64(self.seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            if index == 0 || random % 100 >= self.retry_percent {
                break;
            }
            index -= 1 + (random >> 8) % index.min(500);
        }
        let random = self.random(index);
        Payment {
            // mix64 is a bijection: distinct payments, distinct ids.
            id: mix64(self.seed.rotate_left(41) ^ index) as i64,
            account: ((random >> 8) % 1_000_000) as i64,
            amount_cents: 1 + ((random >> 28) % 100_000) as i64,
            time: self.time(delivered),
        }
    }

    /// Delivery `index`'s event time: 1 ms per index, less its jitter and delay.
    fn time(&self, index: u64) -> EventTime {
        let random = self.random(index);
        let jitter = ((random >> 32) % 300) as i64;
        let delay = if (random >> 42).is_multiple_of(1000) { 5_000 } else { 0 };
        1_700_000_000_000 + index as i64 - jitter - delay
    }

    fn random(&self, index: u64) -> u64 {
        mix64(self.seed.rotate_left(23) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

impl Generator for Payments {
    type Record = Payment;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        strided_split_len(self.events, split, splits)
    }
    fn generate(&self, split: usize, splits: usize, position: u64) -> Payment {
        self.delivery(GeneratorConfig::global_index(split, splits, position))
    }
}
