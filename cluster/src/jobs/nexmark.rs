//! Nexmark queries q0, q1, q2, q3, q5, q7 and q8 as DataStream jobs (`nexmark-q0`, …), over
//! the Nexmark generator (`weir_core::nexmark`): the field's common benchmark, written on the
//! public API like any user's job. Their outputs are checked against the sequential
//! references in `weir_chaos::nexmark` (cluster/tests/nexmark.rs).
//!
//! | job | query | operators |
//! |---|---|---|
//! | `nexmark-q0` | pass-through of bids | source → sink |
//! | `nexmark-q1` | bid prices in euros (× 0.908) | map |
//! | `nexmark-q2` | bids on auctions whose id is a multiple of 123 | filter |
//! | `nexmark-q3` | sellers in OR, ID or CA with their auctions in category 10 | regular keyed join (connect, keyed state) |
//! | `nexmark-q4` | the average closing price per category, updated as auctions close | connect with timers, then a process function |
//! | `nexmark-q5` | the hottest auctions: most bids in 10 s windows sliding by 2 s | sliding windows, then a window over results |
//! | `nexmark-q7` | the highest bids of each 10 s window | tumbling window, full-window process (Nexmark's SQL also counts a bid at the window's start − 1 ms; this takes the window) |
//! | `nexmark-q8` | people who opened an auction in the 10 s window they registered in | tumbling window over two streams |
//!
//! q4 is an updating query in Flink SQL (a changelog of averages). Here it emits an update
//! event per closed auction — `(category, average so far, auctions closed)` — in event-time
//! order, so the sequence is the same in every run; the last row per category is Flink's end
//! state.

use weir_core::nexmark::{Auction, Bid, Event, NexmarkConfig, Person};
use weir_dataflow::api::BuildError;
use weir_dataflow::source::{Generator, GeneratorSource};
use weir_dataflow::{
    Context, DataStream, Either, JobBuilder, JobDef, KeyedCoProcessFunction, ListState, ParamDef, ParamKind, Params,
    SlidingEventTimeWindows, TimeWindow, TumblingEventTimeWindows, ValueState, WatermarkStrategy,
};

/// Sliding window of q5.
pub const Q5_WINDOW: (i64, i64) = (10_000, 2_000);
/// Tumbling window of q7 and q8.
pub const WINDOW_MS: i64 = 10_000;

/// The registered Nexmark jobs.
pub fn jobs() -> Vec<JobDef> {
    let job = |name: &str, about: &str, build| JobDef::new(name, about, params(), build);
    vec![
        job("nexmark-q0", "Nexmark q0: every bid, passed through (OUTPUT/bids/)", q0),
        job("nexmark-q1", "Nexmark q1: every bid with its price in euros (OUTPUT/bids/)", q1),
        job("nexmark-q2", "Nexmark q2: bids on auctions whose id is a multiple of 123 (OUTPUT/bids/)", q2),
        job("nexmark-q3", "Nexmark q3: people in OR, ID or CA selling in category 10 (OUTPUT/sellers/)", q3),
        job(
            "nexmark-q4",
            "Nexmark q4: average closing price per category, updated per closed auction (OUTPUT/averages/)",
            q4,
        ),
        job("nexmark-q5", "Nexmark q5: auctions with the most bids per 10 s window sliding by 2 s (OUTPUT/hot/)", q5),
        job("nexmark-q7", "Nexmark q7: the highest bids of every 10 s window (OUTPUT/highest/)", q7),
        job(
            "nexmark-q8",
            "Nexmark q8: people who opened an auction in the 10 s window they registered in (OUTPUT/new-sellers/)",
            q8,
        ),
    ]
}

fn params() -> Vec<ParamDef> {
    vec![
        ParamDef::required("output", ParamKind::Path, "output directory"),
        ParamDef::new("events", ParamKind::UInt, "1000000", "number of events (persons, auctions and bids)"),
        ParamDef::new("seed", ParamKind::UInt, "0", "generator seed"),
        ParamDef::new(
            "events-per-second",
            ParamKind::UInt,
            "10000",
            "events per second of event time (Nexmark's first event rate)",
        ),
    ]
}

/// The generator of a job's parameters.
pub fn config(params: &Params) -> Result<NexmarkConfig, BuildError> {
    let mut config = NexmarkConfig::new(params.u64("events")?, params.u64("seed")?);
    config.events_per_second = params.u64("events-per-second")?;
    if config.events_per_second == 0 {
        return Err(BuildError::Job("--events-per-second must be at least 1".into()));
    }
    Ok(config)
}

/// Nexmark events, one split per slot.
pub struct Events(pub NexmarkConfig);

impl Generator for Events {
    type Record = Event;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        self.0.split_len(split, splits)
    }
    #[inline]
    fn generate(&self, split: usize, splits: usize, position: u64) -> Event {
        self.0.event(weir_core::generator::GeneratorConfig::global_index(split, splits, position))
    }
}

/// The event stream of a job (its generator never produces malformed input).
fn events<'s>(job: &mut JobBuilder<'s>, params: &Params) -> Result<DataStream<'s, Event>, BuildError> {
    let source = job.source(
        "nexmark",
        GeneratorSource::new(Events(config(params)?)),
        WatermarkStrategy::bounded_out_of_orderness(0, |event: &Event| event.date_time()),
    );
    source.errors.discard();
    Ok(source.records)
}

fn bids<'s>(events: DataStream<'s, Event>) -> DataStream<'s, Bid> {
    events.flat_map(|event| match event {
        Event::Bid(bid) => Some(bid),
        _ => None,
    })
}

const BID_HEADER: &str = "auction,bidder,price,channel,date_time";

fn q0(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    bids(events(job, params)?).sink_serde_csv("bids", params.path("output")?.join("bids"), BID_HEADER);
    Ok(())
}

fn q1(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    bids(events(job, params)?).map(|bid| Bid { price: bid.price * 908 / 1000, ..bid }).sink_serde_csv(
        "bids",
        params.path("output")?.join("bids"),
        BID_HEADER,
    );
    Ok(())
}

fn q2(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    bids(events(job, params)?).filter(|bid| bid.auction % 123 == 0).map(|bid| (bid.auction, bid.price)).sink_serde_csv(
        "bids",
        params.path("output")?.join("bids"),
        "auction,price",
    );
    Ok(())
}

fn q3(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let events = events(job, params)?;
    // Every person joins (so that an auction never waits for a seller who will not come);
    // the states are filtered on the result.
    let people = events
        .clone()
        .flat_map(|event| match event {
            Event::Person(person) => Some(person),
            _ => None,
        })
        .key_by(|person: &Person| person.id);
    let auctions = events
        .flat_map(|event| match event {
            Event::Auction(auction) if auction.category == 10 => Some(auction),
            _ => None,
        })
        .key_by(|auction: &Auction| auction.seller);
    let sellers = people.connect(auctions).process("q3-join", SellerJoin::default());
    sellers
        .results
        .filter(|(_, _, state, _): &(String, String, String, i64)| matches!(state.as_str(), "OR" | "ID" | "CA"))
        .sink_serde_csv("sellers", output.join("sellers"), "name,city,state,auction");
    sellers.late.sink_json("late", output.join("late"));
    Ok(())
}

/// q3's join: each person is kept; auctions of a seller not seen yet wait for them.
pub struct SellerJoin {
    person: ValueState<Person>,
    waiting: ListState<Auction>,
}

impl Default for SellerJoin {
    fn default() -> Self {
        SellerJoin { person: ValueState::new("person"), waiting: ListState::new("waiting-auctions") }
    }
}

impl KeyedCoProcessFunction<i64, Person, Auction, (String, String, String, i64)> for SellerJoin {
    fn process_element1(&mut self, person: Person, ctx: &mut Context<'_, i64, (String, String, String, i64)>) {
        for auction in self.waiting.get(ctx.state()) {
            ctx.collect((person.name.clone(), person.city.clone(), person.state.clone(), auction.id));
        }
        self.waiting.clear(ctx.state());
        self.person.set(ctx.state(), person);
    }

    fn process_element2(&mut self, auction: Auction, ctx: &mut Context<'_, i64, (String, String, String, i64)>) {
        match self.person.get(ctx.state()) {
            Some(person) => ctx.collect((person.name, person.city, person.state, auction.id)),
            None => self.waiting.add(ctx.state(), auction),
        }
    }
}

fn q4(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let events = events(job, params)?;
    let auctions = events
        .clone()
        .flat_map(|event| match event {
            Event::Auction(auction) => Some(auction),
            _ => None,
        })
        .key_by(|auction: &Auction| auction.id);
    let closing = auctions
        .connect(bids(events).key_by(|bid: &Bid| bid.auction))
        .process("q4-closing-price", ClosingPrice::default());
    closing.late.sink_json("late", output.join("late"));
    let averages =
        closing.results.key_by(|&(category, _): &(i64, i64)| category).process("q4-average", Average::default());
    averages.results.sink_serde_csv("averages", output.join("averages"), "category,average,auctions");
    averages.late.sink_json("late-averages", output.join("late-averages"));
    Ok(())
}

/// q4's first step: an auction's closing price is its highest bid between its opening and its
/// expiry (both included), emitted at expiry as `(category, price)`.
pub struct ClosingPrice {
    auction: ValueState<Auction>,
    highest: ValueState<i64>,
}

impl Default for ClosingPrice {
    fn default() -> Self {
        ClosingPrice { auction: ValueState::new("auction"), highest: ValueState::new("highest-bid") }
    }
}

impl KeyedCoProcessFunction<i64, Auction, Bid, (i64, i64)> for ClosingPrice {
    fn process_element1(&mut self, auction: Auction, ctx: &mut Context<'_, i64, (i64, i64)>) {
        ctx.register_event_time_timer(auction.expires);
        self.auction.set(ctx.state(), auction);
    }

    fn process_element2(&mut self, bid: Bid, ctx: &mut Context<'_, i64, (i64, i64)>) {
        // Bids reach the function in event-time order: one after the auction closed finds no
        // auction (it was cleared at expiry) and does not count.
        let Some(auction) = self.auction.get(ctx.state()) else { return };
        if auction.date_time <= bid.date_time && bid.date_time <= auction.expires {
            let highest = self.highest.get(ctx.state()).map_or(bid.price, |h| h.max(bid.price));
            self.highest.set(ctx.state(), highest);
        }
    }

    fn on_timer(
        &mut self,
        _at: weir_core::time::EventTime,
        _domain: weir_dataflow::TimeDomain,
        ctx: &mut Context<'_, i64, (i64, i64)>,
    ) {
        if let (Some(auction), Some(highest)) = (self.auction.get(ctx.state()), self.highest.get(ctx.state())) {
            ctx.collect((auction.category, highest));
        }
        self.auction.clear(ctx.state());
        self.highest.clear(ctx.state());
    }
}

/// q4's second step: the running average closing price of a category.
pub struct Average {
    totals: ValueState<(i64, i64)>,
}

impl Default for Average {
    fn default() -> Self {
        Average { totals: ValueState::new("sum-and-count") }
    }
}

impl weir_dataflow::KeyedProcessFunction<i64, (i64, i64), (i64, i64, i64)> for Average {
    fn process_element(&mut self, (category, price): (i64, i64), ctx: &mut Context<'_, i64, (i64, i64, i64)>) {
        let (sum, count) = self.totals.get(ctx.state()).unwrap_or((0, 0));
        let (sum, count) = (sum + price, count + 1);
        self.totals.set(ctx.state(), (sum, count));
        ctx.collect((category, sum / count, count));
    }
}

fn q5(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    // Counts per (auction, window), then the maximum per window: each count is stamped with its
    // window's last millisecond, so a tumbling window of the slide gathers one window's counts.
    let per_window = bids(events(job, params)?)
        .key_by(|bid: &Bid| bid.auction)
        .window(SlidingEventTimeWindows::of(Q5_WINDOW.0, Q5_WINDOW.1))
        .uid("q5-count-per-auction")
        .aggregate(Count, |&auction: &i64, window: TimeWindow, count: u64| (auction, count, window.end));
    per_window.late.sink_json("late", output.join("late"));
    let hottest = per_window
        .results
        .key_by(|&(_, _, end): &(i64, u64, i64)| end)
        .window(TumblingEventTimeWindows::of(Q5_WINDOW.1))
        .uid("q5-hottest")
        .process(|_end: &i64, _window: TimeWindow, counts: Vec<(i64, u64, i64)>| {
            let most = counts.iter().map(|(_, count, _)| *count).max().unwrap_or(0);
            counts.into_iter().filter(|(_, count, _)| *count == most).collect()
        });
    hottest.results.sink_serde_csv("hot", output.join("hot"), "auction,bids,window_end");
    hottest.late.sink_json("late-hottest", output.join("late-hottest"));
    Ok(())
}

/// Counts bids.
pub struct Count;

impl weir_dataflow::AggregateFunction<Bid> for Count {
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

fn q7(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    // Keyed by the window a bid falls in: every window is one key, so windows spread over slots.
    let highest = bids(events(job, params)?)
        .key_by(|bid: &Bid| bid.date_time.div_euclid(WINDOW_MS))
        .window(TumblingEventTimeWindows::of(WINDOW_MS))
        .uid("q7-highest")
        .process(|_, window: TimeWindow, bids: Vec<Bid>| {
            let highest = bids.iter().map(|bid| bid.price).max().unwrap_or(0);
            bids.into_iter()
                .filter(|bid| bid.price == highest)
                .map(|bid| (bid.auction, bid.price, bid.bidder, bid.date_time, window.end))
                .collect()
        });
    highest.results.sink_serde_csv("highest", output.join("highest"), "auction,price,bidder,date_time,window_end");
    highest.late.sink_json("late", output.join("late"));
    Ok(())
}

fn q8(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let events = events(job, params)?;
    let people_and_auctions = events.flat_map(|event| match event {
        Event::Person(person) => Some(Either::Left(person)),
        Event::Auction(auction) => Some(Either::Right(auction)),
        Event::Bid(_) => None,
    });
    let new_sellers = people_and_auctions
        .key_by(|record: &Either<Person, Auction>| match record {
            Either::Left(person) => person.id,
            Either::Right(auction) => auction.seller,
        })
        .window(TumblingEventTimeWindows::of(WINDOW_MS))
        .uid("q8-new-sellers")
        .process(|_, window: TimeWindow, records: Vec<Either<Person, Auction>>| {
            let sells = records.iter().any(|r| matches!(r, Either::Right(_)));
            records
                .into_iter()
                .filter_map(|r| match r {
                    Either::Left(person) if sells => Some((person.id, person.name, window.start)),
                    _ => None,
                })
                .collect()
        });
    new_sellers.results.sink_serde_csv("new-sellers", output.join("new-sellers"), "id,name,window_start");
    new_sellers.late.sink_json("late", output.join("late"));
    Ok(())
}
