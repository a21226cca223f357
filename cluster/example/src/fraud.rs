//! `fraud`: Flink's fraud-detection walkthrough on Weir. Per account, a transaction under
//! 1.00 followed — as the account's very next transaction — by one over 500.00 at most one
//! minute of event time later raises an alert. Keyed state holds the small transaction; an
//! event-time timer forgets it after the minute.
//!
//! Weir hands the function each account's transactions in event-time order, so the alerts
//! are the same at any parallelism and through any failure.

use serde::{Deserialize, Serialize};

use weir_core::keygroup::mix64;
use weir_core::time::EventTime;
use weir_dataflow::api::BuildError;
use weir_dataflow::source::{CsvLines, Generator, GeneratorSource};
use weir_dataflow::{
    Context, FileSource, JobBuilder, JobDef, KeyedProcessFunction, OutputTag, ParamDef, ParamKind, Params, TimeDomain,
    ValueState, WatermarkStrategy,
};

/// Below this (in cents) a transaction is small.
pub const SMALL_CENTS: i64 = 100;
/// Above this (in cents) a transaction is large.
pub const LARGE_CENTS: i64 = 50_000;
/// How long after a small transaction a large one raises an alert.
pub const WINDOW_MS: i64 = 60_000;

/// A card transaction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Transaction {
    /// The account.
    pub account: i64,
    /// The amount in cents.
    pub amount_cents: i64,
    /// Event time (ms).
    pub time: EventTime,
}

/// The CSV header of transaction files.
pub const TRANSACTION_HEADER: &str = "account,amount_cents,time";

/// A suspected fraud.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alert {
    /// The account.
    pub account: i64,
    /// The small transaction's amount and time.
    pub small_cents: i64,
    /// Its time.
    pub small_time: EventTime,
    /// The large transaction's amount.
    pub large_cents: i64,
    /// Its time.
    pub large_time: EventTime,
}

/// The CSV header of alert files.
pub const ALERT_HEADER: &str = "account,small_cents,small_time,large_cents,large_time";

/// The job's definition.
pub fn job() -> JobDef {
    JobDef::new(
        "fraud",
        "fraud detection: a transaction under 1.00 followed by one over 500.00 within a minute on the same account \
         raises an alert (OUTPUT/alerts/; every small transaction to OUTPUT/small/, a side output); late \
         transactions to OUTPUT/late/, malformed lines to OUTPUT/errors/",
        vec![
            ParamDef::optional(
                "input",
                ParamKind::Files { extension: "csv" },
                "transaction CSV files with header `account,amount_cents,time`; without it, generated transactions",
            ),
            ParamDef::required("output", ParamKind::Path, "output directory"),
            ParamDef::new("out-of-orderness", ParamKind::Duration, "2s", "bounded out-of-orderness of event time"),
            ParamDef::new("events", ParamKind::UInt, "100000", "generator only: number of transactions"),
            ParamDef::new("accounts", ParamKind::UInt, "1000", "generator only: number of accounts"),
            ParamDef::new("seed", ParamKind::UInt, "0", "generator only: seed"),
        ],
        build,
    )
}

fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let strategy =
        WatermarkStrategy::bounded_out_of_orderness(params.duration_ms("out-of-orderness")?, |t: &Transaction| t.time);
    let transactions = if params.has("input") {
        job.source(
            "transactions",
            FileSource::new(params.files("input")?, CsvLines::<Transaction>::new(TRANSACTION_HEADER)),
            strategy,
        )
    } else {
        let generator = Transactions::new(params.u64("events")?, params.u64("accounts")?, params.u64("seed")?)?;
        job.source("transactions", GeneratorSource::new(generator), strategy)
    };
    let alerts =
        transactions.records.key_by(|t: &Transaction| t.account).process("fraud-detector", FraudDetector::default());
    alerts.side_output(&SMALL).sink_serde_csv("small", output.join("small"), TRANSACTION_HEADER);
    alerts.results.sink_serde_csv("alerts", output.join("alerts"), ALERT_HEADER);
    alerts.late.sink_serde_csv("late", output.join("late"), TRANSACTION_HEADER);
    transactions.errors.sink_csv("errors", output.join("errors"));
    Ok(())
}

/// The side output of every small transaction (the first half of the pattern).
pub const SMALL: OutputTag<Transaction> = OutputTag::new("small-transactions");

/// Remembers a small transaction for a minute; a large one right after it is an alert.
pub struct FraudDetector {
    /// The account's last transaction, if it was small: `(amount, time)`.
    small: ValueState<(i64, EventTime)>,
}

impl Default for FraudDetector {
    fn default() -> Self {
        FraudDetector { small: ValueState::new("small-transaction") }
    }
}

impl KeyedProcessFunction<i64, Transaction, Alert> for FraudDetector {
    fn process_element(&mut self, transaction: Transaction, ctx: &mut Context<'_, i64, Alert>) {
        if let Some((small_cents, small_time)) = self.small.get(ctx.state()) {
            if transaction.amount_cents > LARGE_CENTS {
                ctx.collect(Alert {
                    account: transaction.account,
                    small_cents,
                    small_time,
                    large_cents: transaction.amount_cents,
                    large_time: transaction.time,
                });
            }
            // The pattern is "immediately followed by": any transaction ends it.
            self.small.clear(ctx.state());
            ctx.delete_event_time_timer(small_time + WINDOW_MS);
        }
        if transaction.amount_cents < SMALL_CENTS {
            ctx.output(&SMALL, transaction.clone());
            self.small.set(ctx.state(), (transaction.amount_cents, transaction.time));
            ctx.register_event_time_timer(transaction.time + WINDOW_MS);
        }
    }

    fn on_timer(&mut self, _timestamp: EventTime, _domain: TimeDomain, ctx: &mut Context<'_, i64, Alert>) {
        self.small.clear(ctx.state());
    }
}

/// Generated transactions: event time advances 10 ms per transaction, with a little jitter
/// (and about one in five hundred delayed by seconds: late); amounts are mostly ordinary, one
/// in twenty small and one in twenty large, so alerts happen.
pub struct Transactions {
    events: u64,
    accounts: u64,
    seed: u64,
}

impl Transactions {
    /// `events` transactions over `accounts` accounts.
    pub fn new(events: u64, accounts: u64, seed: u64) -> Result<Self, BuildError> {
        if accounts == 0 {
            return Err(BuildError::Job("--accounts must be at least 1".into()));
        }
        Ok(Transactions { events, accounts, seed })
    }

    /// Transaction `index` of the global sequence.
    pub fn transaction(&self, index: u64) -> Transaction {
        let random = mix64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let kind = random % 20;
        let amount_cents = match kind {
            0 => (random >> 8) as i64 % SMALL_CENTS,
            1 => LARGE_CENTS + 1 + (random >> 8) as i64 % 100_000,
            _ => SMALL_CENTS + (random >> 8) as i64 % (LARGE_CENTS - SMALL_CENTS),
        };
        let jitter = ((random >> 32) % 500) as i64;
        let delay = if (random >> 40).is_multiple_of(500) { 6_000 } else { 0 };
        Transaction {
            account: ((random >> 16) % self.accounts) as i64,
            amount_cents,
            time: 1_700_000_000_000 + index as i64 * 10 - jitter - delay,
        }
    }
}

impl Generator for Transactions {
    type Record = Transaction;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        let (split, splits) = (split as u64, splits as u64);
        self.events / splits + u64::from(split < self.events % splits)
    }
    fn generate(&self, split: usize, splits: usize, position: u64) -> Transaction {
        self.transaction(split as u64 + position * splits as u64)
    }
}
