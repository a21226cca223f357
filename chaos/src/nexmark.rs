//! Sequential references of the Nexmark queries Weir runs as jobs (`weir_cluster::jobs::nexmark`),
//! computed from the generated events with plain collections, from the queries' definitions.
//!
//! The generator emits each split's events in event-time order and the jobs run with no
//! out-of-orderness, so no event is late: every window sees all of its events.

use std::collections::{BTreeMap, BTreeSet};

use weir_core::nexmark::{Bid, Event, NexmarkConfig, Person};

/// Every event of a generated run (all splits).
pub fn events(config: &NexmarkConfig) -> Vec<Event> {
    (0..config.events).map(|index| config.event(index)).collect()
}

fn bids(events: &[Event]) -> impl Iterator<Item = &Bid> {
    events.iter().filter_map(|e| match e {
        Event::Bid(bid) => Some(bid),
        _ => None,
    })
}

/// Every auction, by id.
fn auctions_by_id(events: &[Event]) -> BTreeMap<i64, &weir_core::nexmark::Auction> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.id, a)),
            _ => None,
        })
        .collect()
}

/// q0: every bid.
pub fn q0(events: &[Event]) -> Vec<Bid> {
    let mut rows: Vec<Bid> = bids(events).cloned().collect();
    rows.sort();
    rows
}

/// q1: every bid, its price × 0.908 (integer cents, rounded down).
pub fn q1(events: &[Event]) -> Vec<Bid> {
    let mut rows: Vec<Bid> = bids(events).map(|b| Bid { price: b.price * 908 / 1000, ..b.clone() }).collect();
    rows.sort();
    rows
}

/// q2: `(auction, price)` of bids on auctions whose id is a multiple of 123.
pub fn q2(events: &[Event]) -> Vec<(i64, i64)> {
    let mut rows: Vec<(i64, i64)> =
        bids(events).filter(|b| b.auction % 123 == 0).map(|b| (b.auction, b.price)).collect();
    rows.sort();
    rows
}

/// q3: `(name, city, state, auction)` for every auction in category 10 whose seller lives in
/// OR, ID or CA.
pub fn q3(events: &[Event]) -> Vec<(String, String, String, i64)> {
    let people: BTreeMap<i64, &Person> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) if ["OR", "ID", "CA"].contains(&p.state.as_str()) => Some((p.id, p)),
            _ => None,
        })
        .collect();
    let mut rows = Vec::new();
    for event in events {
        if let Event::Auction(a) = event {
            if let Some(p) = people.get(&a.seller).filter(|_| a.category == 10) {
                rows.push((p.name.clone(), p.city.clone(), p.state.clone(), a.id));
            }
        }
    }
    rows.sort();
    rows
}

/// q4: after each auction closes (in order of expiry, ties by the encoding of
/// `(category, price)`), `(category, average closing price so far, auctions closed)`. An
/// auction's closing price is its highest bid between its opening and its expiry, both
/// included; auctions without such a bid do not count.
pub fn q4(events: &[Event]) -> Vec<(i64, i64, i64)> {
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    let auctions = auctions_by_id(events);
    for bid in bids(events) {
        if let Some(a) = auctions.get(&bid.auction) {
            if a.date_time <= bid.date_time && bid.date_time <= a.expires {
                let h = highest.entry(a.id).or_insert(bid.price);
                *h = (*h).max(bid.price);
            }
        }
    }
    let mut closed: Vec<(i64, Vec<u8>, (i64, i64))> = highest
        .into_iter()
        .map(|(id, price)| {
            let a = auctions[&id];
            let row = (a.category, price);
            (a.expires, bincode::serialize(&row).expect("encodes"), row)
        })
        .collect();
    closed.sort_by(|x, y| (x.0, x.2 .0, &x.1).cmp(&(y.0, y.2 .0, &y.1)));
    let mut totals: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut rows = Vec::new();
    for (_, _, (category, price)) in closed {
        let (sum, count) = totals.entry(category).or_default();
        *sum += price;
        *count += 1;
        rows.push((category, *sum / *count, *count));
    }
    rows.sort();
    rows
}

/// q5: `(auction, bids, window end)` of the auctions with the most bids in each window of
/// `size` ms sliding by `slide` ms.
pub fn q5(events: &[Event], size: i64, slide: i64) -> Vec<(i64, u64, i64)> {
    let mut counts: BTreeMap<i64, BTreeMap<i64, u64>> = BTreeMap::new(); // end -> auction -> count
    for bid in bids(events) {
        let t = bid.date_time;
        let mut start = t - t.rem_euclid(slide);
        while start > t - size {
            *counts.entry(start + size).or_default().entry(bid.auction).or_default() += 1;
            start -= slide;
        }
    }
    let mut rows = Vec::new();
    for (end, auctions) in counts {
        let most = auctions.values().copied().max().unwrap_or(0);
        rows.extend(
            auctions.into_iter().filter(|(_, count)| *count == most).map(|(auction, count)| (auction, count, end)),
        );
    }
    rows.sort();
    rows
}

/// q7: `(auction, price, bidder, time, window end)` of the highest bids of each tumbling
/// window of `size` ms.
pub fn q7(events: &[Event], size: i64) -> Vec<(i64, i64, i64, i64, i64)> {
    let mut windows: BTreeMap<i64, Vec<&Bid>> = BTreeMap::new();
    for bid in bids(events) {
        windows.entry(bid.date_time.div_euclid(size)).or_default().push(bid);
    }
    let mut rows = Vec::new();
    for (index, bids) in windows {
        let highest = bids.iter().map(|b| b.price).max().unwrap_or(0);
        let end = (index + 1) * size;
        rows.extend(
            bids.into_iter().filter(|b| b.price == highest).map(|b| (b.auction, b.price, b.bidder, b.date_time, end)),
        );
    }
    rows.sort();
    rows
}

/// q8: `(id, name, window start)` of the people who registered in a tumbling window of `size`
/// ms and opened an auction in the same window.
pub fn q8(events: &[Event], size: i64) -> Vec<(i64, String, i64)> {
    let window = |t: i64| t - t.rem_euclid(size);
    let sellers: BTreeSet<(i64, i64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.seller, window(a.date_time))),
            _ => None,
        })
        .collect();
    let mut rows: Vec<(i64, String, i64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) if sellers.contains(&(p.id, window(p.date_time))) => {
                Some((p.id, p.name.clone(), window(p.date_time)))
            }
            _ => None,
        })
        .collect();
    rows.sort();
    rows
}

/// Nexmark's generator as a table, as Nexmark's `ddl_gen.sql` declares it (physical columns, a
/// computed event time, a 4 s watermark), and its `bid` view.
fn nexmark_table(events: u64, seed: u64, events_per_second: u64) -> String {
    format!(
        "CREATE TABLE datagen (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR,
             `dateTime` TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
              `dateTime` TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3),
          extra VARCHAR>,
  `dateTime` AS CASE WHEN event_type = 0 THEN person.`dateTime`
                     WHEN event_type = 1 THEN auction.`dateTime`
                     ELSE bid.`dateTime` END,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '{events}', 'seed' = '{seed}',
        'first-event.rate' = '{events_per_second}', 'next-event.rate' = '{events_per_second}');

CREATE VIEW bid AS
  SELECT bid.auction, bid.bidder, bid.price, bid.channel, bid.url, `dateTime`, bid.extra
  FROM datagen WHERE event_type = 2;"
    )
}

/// A Flink SQL script running Nexmark's stateless queries — q0, q1, q2, q21 and q22 — over
/// `events` generated events (`seed`), writing CSV into `out/<query>`: Nexmark's generator table
/// (with its computed event time and watermark), a view of its bids, and the queries as Nexmark
/// writes them.
pub fn sql_stateless(out: &std::path::Path, events: u64, seed: u64) -> String {
    let out = out.display();
    let generator = nexmark_table(events, seed, 10_000);
    format!(
        "{generator}

CREATE TABLE q0 (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), extra VARCHAR)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q0', 'format' = 'csv');
CREATE TABLE q1 (auction BIGINT, bidder BIGINT, price DECIMAL(23, 3), `dateTime` TIMESTAMP(3), extra VARCHAR)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q1', 'format' = 'csv');
CREATE TABLE q2 (auction BIGINT, price BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q2', 'format' = 'csv');
CREATE TABLE q21 (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, channel_id VARCHAR)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q21', 'format' = 'csv');
CREATE TABLE q22 (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, dir1 VARCHAR, dir2 VARCHAR,
                  dir3 VARCHAR)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q22', 'format' = 'csv');

INSERT INTO q0 SELECT auction, bidder, price, `dateTime`, extra FROM bid;
INSERT INTO q1 SELECT auction, bidder, 0.908 * price AS price, `dateTime`, extra FROM bid;
INSERT INTO q2 SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;
INSERT INTO q21
SELECT
    auction, bidder, price, channel,
    CASE
        WHEN lower(channel) = 'apple' THEN '0'
        WHEN lower(channel) = 'google' THEN '1'
        WHEN lower(channel) = 'facebook' THEN '2'
        WHEN lower(channel) = 'baidu' THEN '3'
        ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)
        END
    AS channel_id FROM bid
    where REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) is not null or
          lower(channel) in ('apple', 'google', 'facebook', 'baidu');
INSERT INTO q22
SELECT
    auction, bidder, price, channel,
    SPLIT_INDEX(url, '/', 3) as dir1,
    SPLIT_INDEX(url, '/', 4) as dir2,
    SPLIT_INDEX(url, '/', 5) as dir3 FROM bid;
"
    )
}

/// Nexmark q12 as published (bids per bidder in tumbling windows of 10 s of processing time,
/// over a view with a `PROCTIME()` column), writing CSV into `out/q12`.
pub fn sql_q12(out: &std::path::Path, events: u64, seed: u64, events_per_second: u64) -> String {
    let out = out.display();
    let generator = nexmark_table(events, seed, events_per_second);
    format!(
        "{generator}

CREATE TABLE discard_sink (
  bidder BIGINT,
  bid_count BIGINT,
  starttime TIMESTAMP(3),
  endtime TIMESTAMP(3)
) WITH ('connector' = 'filesystem', 'path' = '{out}/q12', 'format' = 'csv');

CREATE VIEW B AS SELECT *, PROCTIME() as p_time FROM bid;

INSERT INTO discard_sink
SELECT
    bidder,
    count(*) as bid_count,
    window_start AS starttime,
    window_end AS endtime
FROM TABLE(
        TUMBLE(TABLE B, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
GROUP BY bidder, window_start, window_end;
"
    )
}

/// What q12's windows must add up to, whatever processing time put each bid in: the bids per
/// bidder.
pub fn bids_per_bidder(events: u64, seed: u64, events_per_second: u64) -> BTreeMap<i64, u64> {
    let mut config = NexmarkConfig::new(events, seed);
    config.events_per_second = events_per_second;
    let mut counts = BTreeMap::new();
    for bid in bids(&self::events(&config)) {
        *counts.entry(bid.bidder).or_default() += 1;
    }
    counts
}

/// What [`sql_stateless`] must commit, as sorted CSV lines per query: q0's bids, q1's with the
/// price in exact thousandths of euros, q2's selection, q21's channel ids (Weir's generator's
/// channels are the four named ones, its URLs carry no `channel_id`), q22's URL directories. Timestamps as Flink's CSV format writes
/// `TIMESTAMP(3)`: quoted text, the time as Java's `ISO_LOCAL_TIME`, whose fraction has no
/// trailing zeros (`"2023-11-14 22:13:20"`, `"2023-11-14 22:13:20.1"`) — as Flink 2.3 wrote the
/// same values when checked with PyFlink.
pub fn sql_stateless_expected(events: u64, seed: u64, events_per_second: u64) -> [Vec<String>; 5] {
    let mut config = NexmarkConfig::new(events, seed);
    config.events_per_second = events_per_second;
    let events = self::events(&config);
    let sorted = |mut lines: Vec<String>| {
        lines.sort();
        lines
    };
    let bids = q0(&events);
    // Timestamps are written as quoted text (Jackson quotes text holding a space).
    let q0 = bids
        .iter()
        .map(|b| format!("{},{},{},\"{}\",", b.auction, b.bidder, b.price, timestamp(b.date_time)))
        .collect();
    let q1 = bids
        .iter()
        .map(|b| {
            let thousandths = b.price * 908;
            format!(
                "{},{},{}.{:03},\"{}\",",
                b.auction,
                b.bidder,
                thousandths / 1000,
                thousandths % 1000,
                timestamp(b.date_time)
            )
        })
        .collect();
    let q2 = q2(&events).iter().map(|(auction, price)| format!("{auction},{price}")).collect();
    let channel_id = |channel: &str| match channel {
        "Apple" => "0",
        "Google" => "1",
        "Facebook" => "2",
        "Baidu" => "3",
        other => unreachable!("the generator's channels are the named four, not {other}"),
    };
    let q21 = bids
        .iter()
        .map(|b| format!("{},{},{},{},{}", b.auction, b.bidder, b.price, b.channel, channel_id(&b.channel)))
        .collect();
    // The URL `https://www.nexmark.com/<channel>/item.htm?query=1` split at `/`: the channel,
    // the page, and nothing (NULL, an empty field).
    let q22 = bids
        .iter()
        .map(|b| {
            let channel = b.channel.to_ascii_lowercase();
            format!("{},{},{},{},{channel},item.htm?query=1,", b.auction, b.bidder, b.price, b.channel)
        })
        .collect();
    [sorted(q0), sorted(q1), sorted(q2), sorted(q21), sorted(q22)]
}

/// `YYYY-MM-DD hh:mm:ss.mmm` of milliseconds since 1970 (non-negative), counted out year by
/// year and month by month: slow and plain, as a reference should be.
fn timestamp(ms: i64) -> String {
    assert!(ms >= 0, "the generator's times are after 1970");
    let mut days = ms / 86_400_000;
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut year = 1970;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    let in_day = ms % 86_400_000;
    let mut text = format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        month + 1,
        days + 1,
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60
    );
    let mut fraction = format!("{:03}", in_day % 1_000);
    while fraction.ends_with('0') {
        fraction.pop();
    }
    if !fraction.is_empty() {
        text.push('.');
        text.push_str(&fraction);
    }
    text
}

/// Stateful SQL over Nexmark's events, committed to CSV files under `out`: a tumbling window
/// with every aggregate function and `HAVING`, q5's hopping count, q11's sessions as published,
/// a cumulating window, q8's window join, and q3's, q7's and q20's regular joins as published. Events come at
/// `events_per_second`; pick it so that the input spans many windows.
pub fn sql_stateful(out: &std::path::Path, events: u64, seed: u64, events_per_second: u64) -> String {
    let out = out.display();
    let generator = nexmark_table(events, seed, events_per_second);
    format!(
        "{generator}
CREATE VIEW person AS
  SELECT person.id, person.name, person.emailAddress, person.creditCard, person.city, person.state, `dateTime`,
         person.extra
  FROM datagen WHERE event_type = 0;
CREATE VIEW auction AS
  SELECT auction.id, auction.itemName, auction.description, auction.initialBid, auction.reserve, `dateTime`,
         auction.expires, auction.seller, auction.category, auction.extra
  FROM datagen WHERE event_type = 1;

CREATE TABLE tumbling (auction BIGINT, bids BIGINT, low BIGINT, high BIGINT, total BIGINT, mean BIGINT,
                       bidders BIGINT, dear BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3))
  WITH ('connector' = 'filesystem', 'path' = '{out}/tumbling', 'format' = 'csv');
CREATE TABLE hopping (auction BIGINT, num BIGINT, starttime TIMESTAMP(3), endtime TIMESTAMP(3))
  WITH ('connector' = 'filesystem', 'path' = '{out}/hopping', 'format' = 'csv');
CREATE TABLE sessions (bidder BIGINT, bid_count BIGINT, starttime TIMESTAMP(3), endtime TIMESTAMP(3))
  WITH ('connector' = 'filesystem', 'path' = '{out}/sessions', 'format' = 'csv');
CREATE TABLE cumulating (bucket BIGINT, bids BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3))
  WITH ('connector' = 'filesystem', 'path' = '{out}/cumulating', 'format' = 'csv');
CREATE TABLE q8 (id BIGINT, name VARCHAR, stime TIMESTAMP(3))
  WITH ('connector' = 'filesystem', 'path' = '{out}/q8', 'format' = 'csv');
CREATE TABLE q3 (name VARCHAR, city VARCHAR, state VARCHAR, id BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q3', 'format' = 'csv');
CREATE TABLE q7 (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), extra VARCHAR)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q7', 'format' = 'csv');
CREATE TABLE q20 (
    auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, bid_dateTime TIMESTAMP(3),
    bid_extra VARCHAR, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
    auction_dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, auction_extra VARCHAR
) WITH ('connector' = 'filesystem', 'path' = '{out}/q20', 'format' = 'csv');
CREATE TABLE q5 (auction BIGINT, num BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q5', 'format' = 'csv');

INSERT INTO tumbling
SELECT auction, COUNT(*) AS bids, MIN(price), MAX(price), SUM(price), AVG(price), COUNT(DISTINCT bidder),
       COUNT(*) FILTER (WHERE price > 10000), window_start, window_end
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end
HAVING COUNT(*) >= 2;

INSERT INTO hopping
SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;

INSERT INTO sessions
SELECT
    B.bidder,
    count(*) as bid_count,
    SESSION_START(B.`dateTime`, INTERVAL '10' SECOND) as starttime,
    SESSION_END(B.`dateTime`, INTERVAL '10' SECOND) as endtime
FROM bid B
GROUP BY B.bidder, SESSION(B.`dateTime`, INTERVAL '10' SECOND);

INSERT INTO cumulating
SELECT MOD(bidder, 10) AS bucket, COUNT(*), window_start, window_end
FROM TABLE(CUMULATE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '5' SECOND, INTERVAL '20' SECOND))
GROUP BY MOD(bidder, 10), window_start, window_end;

INSERT INTO q8
SELECT P.id, P.name, P.starttime
FROM (
  SELECT id, name,
        window_start AS starttime,
        window_end AS endtime
  FROM TABLE(
            TUMBLE(TABLE person, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY id, name, window_start, window_end
) P
JOIN (
  SELECT seller,
        window_start AS starttime,
        window_end AS endtime
  FROM TABLE(
        TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY seller, window_start, window_end
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime;

INSERT INTO q3
SELECT
    P.name, P.city, P.state, A.id
FROM
    auction AS A INNER JOIN person AS P on A.seller = P.id
WHERE
    A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');

INSERT INTO q7
SELECT B.auction, B.price, B.bidder, B.`dateTime`, B.extra
from bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_end as `dateTime`
  FROM TABLE(
          TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end
) B1
ON B.price = B1.maxprice
WHERE B.`dateTime` BETWEEN B1.`dateTime`  - INTERVAL '10' SECOND AND B1.`dateTime`;

INSERT INTO q20
SELECT
    auction, bidder, price, channel, url, B.`dateTime`, B.extra,
    itemName, description, initialBid, reserve, A.`dateTime`, expires, seller, category, A.extra
FROM
    bid AS B INNER JOIN auction AS A on B.auction = A.id
WHERE A.category = 10;

INSERT INTO q5
SELECT AuctionBids.auction, AuctionBids.num
 FROM (
   SELECT
     auction,
     count(*) AS num,
     window_start AS starttime,
     window_end AS endtime
     FROM TABLE(
             HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
     GROUP BY auction, window_start, window_end
 ) AS AuctionBids
 JOIN (
   SELECT
     max(CountBids.num) AS maxn,
     CountBids.starttime,
     CountBids.endtime
   FROM (
     SELECT
       count(*) AS num,
       window_start AS starttime,
       window_end AS endtime
     FROM TABLE(
                HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
     GROUP BY auction, window_start, window_end
     ) AS CountBids
   GROUP BY CountBids.starttime, CountBids.endtime
 ) AS MaxBids
 ON AuctionBids.starttime = MaxBids.starttime AND
    AuctionBids.endtime = MaxBids.endtime AND
    AuctionBids.num >= MaxBids.maxn;
"
    )
}

/// The bids of the first `events` Nexmark events (seed `seed`, `events_per_second`), in event
/// order, as Flink's CSV format writes a table `(auction BIGINT, bidder BIGINT, price BIGINT,
/// dateTime TIMESTAMP(3), extra VARCHAR)`: input for SQL's `filesystem` source.
pub fn bids_as_csv(events: u64, seed: u64, events_per_second: u64) -> Vec<String> {
    let mut config = NexmarkConfig::new(events, seed);
    config.events_per_second = events_per_second;
    let events = self::events(&config);
    bids(&events).map(|b| format!("{},{},{},\"{}\",", b.auction, b.bidder, b.price, timestamp(b.date_time))).collect()
}

/// Text as Flink's CSV format writes it: quoted (quotes doubled) when it holds a character
/// below `-` or is longer than 24 characters — Jackson's rule, seen in Flink 2.3's output.
fn csv_text(text: &str) -> String {
    if text.chars().any(|c| c < '-') || text.chars().count() > 24 {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// A Flink SQL script of Nexmark's queries whose results update, as published: q4 (aggregates
/// over a join), q9 (a Top-1 over a join), q18 (deduplication), q19 (a Top-10), q15 and q17
/// (aggregates without a window, with `DATE_FORMAT`, `COUNT(DISTINCT …)` and `FILTER`) — and
/// `top3`, aggregates over a Top-3, whose rows leave as higher bids come: a `MIN` that falls
/// back, a `COUNT(DISTINCT …)` that decreases. Each writes its changelog to `out/<table>`
/// (`'format' = 'changelog-csv'`).
pub fn sql_updating(out: &std::path::Path, events: u64, seed: u64, events_per_second: u64) -> String {
    let out = out.display();
    let generator = nexmark_table(events, seed, events_per_second);
    format!(
        "{generator}
CREATE VIEW auction AS
  SELECT auction.id, auction.itemName, auction.description, auction.initialBid, auction.reserve, `dateTime`,
         auction.expires, auction.seller, auction.category, auction.extra
  FROM datagen WHERE event_type = 1;

CREATE TABLE q4 (id BIGINT, final BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q4', 'format' = 'changelog-csv');
CREATE TABLE q9 (
  id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, `dateTime` TIMESTAMP(3),
  expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR, auction BIGINT, bidder BIGINT, price BIGINT,
  bid_dateTime TIMESTAMP(3), bid_extra VARCHAR
) WITH ('connector' = 'filesystem', 'path' = '{out}/q9', 'format' = 'changelog-csv');
CREATE TABLE q18 (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3),
                  extra VARCHAR)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q18', 'format' = 'changelog-csv');
CREATE TABLE q19 (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3),
                  extra VARCHAR, rank_number BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}/q19', 'format' = 'changelog-csv');
CREATE TABLE q15 (
  `day` VARCHAR, total_bids BIGINT, rank1_bids BIGINT, rank2_bids BIGINT, rank3_bids BIGINT, total_bidders BIGINT,
  rank1_bidders BIGINT, rank2_bidders BIGINT, rank3_bidders BIGINT, total_auctions BIGINT, rank1_auctions BIGINT,
  rank2_auctions BIGINT, rank3_auctions BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{out}/q15', 'format' = 'changelog-csv');
CREATE TABLE q17 (
  auction BIGINT, `day` VARCHAR, total_bids BIGINT, rank1_bids BIGINT, rank2_bids BIGINT, rank3_bids BIGINT,
  min_price BIGINT, max_price BIGINT, avg_price BIGINT, sum_price BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{out}/q17', 'format' = 'changelog-csv');
CREATE TABLE top3 (auction BIGINT, low BIGINT, bidders BIGINT, bids BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{out}/top3', 'format' = 'changelog-csv');

INSERT INTO q4
SELECT
    Q.category,
    AVG(Q.final)
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;

INSERT INTO q9
SELECT
    id, itemName, description, initialBid, reserve, `dateTime`, expires, seller, category, extra,
    auction, bidder, price, bid_dateTime, bid_extra
FROM (
   SELECT A.*, B.auction, B.bidder, B.price, B.`dateTime` AS bid_dateTime, B.extra AS bid_extra,
     ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.`dateTime` ASC) AS rownum
   FROM auction A, bid B
   WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires
)
WHERE rownum <= 1;

INSERT INTO q18
SELECT auction, bidder, price, channel, url, `dateTime`, extra
 FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY `dateTime` DESC) AS rank_number
       FROM bid)
 WHERE rank_number <= 1;

INSERT INTO q19
SELECT * FROM
(SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
WHERE rank_number <= 10;

INSERT INTO q15
SELECT
     DATE_FORMAT(`dateTime`, 'yyyy-MM-dd') as `day`,
     count(*) AS total_bids,
     count(*) filter (where price < 10000) AS rank1_bids,
     count(*) filter (where price >= 10000 and price < 1000000) AS rank2_bids,
     count(*) filter (where price >= 1000000) AS rank3_bids,
     count(distinct bidder) AS total_bidders,
     count(distinct bidder) filter (where price < 10000) AS rank1_bidders,
     count(distinct bidder) filter (where price >= 10000 and price < 1000000) AS rank2_bidders,
     count(distinct bidder) filter (where price >= 1000000) AS rank3_bidders,
     count(distinct auction) AS total_auctions,
     count(distinct auction) filter (where price < 10000) AS rank1_auctions,
     count(distinct auction) filter (where price >= 10000 and price < 1000000) AS rank2_auctions,
     count(distinct auction) filter (where price >= 1000000) AS rank3_auctions
FROM bid
GROUP BY DATE_FORMAT(`dateTime`, 'yyyy-MM-dd');

INSERT INTO q17
SELECT
     auction,
     DATE_FORMAT(`dateTime`, 'yyyy-MM-dd') as `day`,
     count(*) AS total_bids,
     count(*) filter (where price < 10000) AS rank1_bids,
     count(*) filter (where price >= 10000 and price < 1000000) AS rank2_bids,
     count(*) filter (where price >= 1000000) AS rank3_bids,
     min(price) AS min_price,
     max(price) AS max_price,
     avg(price) AS avg_price,
     sum(price) AS sum_price
FROM bid
GROUP BY auction, DATE_FORMAT(`dateTime`, 'yyyy-MM-dd');

INSERT INTO top3
SELECT auction, MIN(price), COUNT(DISTINCT bidder), COUNT(*)
FROM (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS r FROM bid)
      WHERE r <= 3)
GROUP BY auction;
"
    )
}

/// What [`sql_updating`] must commit: the changelogs of q4, q9, q18, q19, q15, q17 and top3, as
/// sorted lines (see [`sql_q4_changelog`], [`top_n_changelog`] and [`group_changelog`]).
pub fn sql_updating_expected(events: u64, seed: u64, events_per_second: u64) -> [Vec<String>; 7] {
    let mut config = NexmarkConfig::new(events, seed);
    config.events_per_second = events_per_second;
    let events = self::events(&config);
    [
        sql_q4_changelog(&events),
        sql_q9_changelog(&events),
        sql_q18_changelog(&events),
        sql_q19_changelog(&events),
        sql_q15_changelog(&events),
        sql_q17_changelog(&events),
        sql_top3_changelog(&events),
    ]
    .map(|mut lines| {
        lines.sort();
        lines
    })
}

/// What [`sql_stateful`] must commit, as sorted CSV lines per table (tumbling, hopping,
/// sessions, cumulating, q8, q3, q7, q20, q5), computed window by window and person by person from the
/// events. Windows are aligned to the
/// epoch; a session is its bids' span plus the gap (bids a gap apart or less share one);
/// `AVG` of integers truncates.
pub fn sql_stateful_expected(events: u64, seed: u64, events_per_second: u64) -> [Vec<String>; 9] {
    let mut config = NexmarkConfig::new(events, seed);
    config.events_per_second = events_per_second;
    let events = self::events(&config);
    let all: Vec<&Bid> = bids(&events).collect();
    let quoted = |ms: i64| format!("\"{}\"", timestamp(ms));
    let sorted = |mut lines: Vec<String>| {
        lines.sort();
        lines
    };

    // Tumbling windows of 10 s, per auction.
    let mut tumbling: BTreeMap<(i64, i64), Vec<&Bid>> = BTreeMap::new();
    for bid in &all {
        let start = bid.date_time - bid.date_time.rem_euclid(10_000);
        tumbling.entry((bid.auction, start)).or_default().push(bid);
    }
    let tumbling = tumbling
        .into_iter()
        .filter(|(_, bids)| bids.len() >= 2)
        .map(|((auction, start), bids)| {
            let prices: Vec<i64> = bids.iter().map(|b| b.price).collect();
            let total: i64 = prices.iter().sum();
            let bidders: BTreeSet<i64> = bids.iter().map(|b| b.bidder).collect();
            format!(
                "{auction},{},{},{},{total},{},{},{},{},{}",
                bids.len(),
                prices.iter().min().expect("a window has bids"),
                prices.iter().max().expect("a window has bids"),
                total / bids.len() as i64,
                bidders.len(),
                prices.iter().filter(|&&p| p > 10_000).count(),
                quoted(start),
                quoted(start + 10_000)
            )
        })
        .collect();

    // Hopping windows of 10 s every 2 s, per auction: every window that holds the bid.
    let mut hopping: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for bid in &all {
        let last_start = bid.date_time - bid.date_time.rem_euclid(2_000);
        let mut start = last_start;
        while start > bid.date_time - 10_000 {
            *hopping.entry((bid.auction, start)).or_default() += 1;
            start -= 2_000;
        }
    }
    let hopping = hopping
        .into_iter()
        .map(|((auction, start), n)| format!("{auction},{n},{},{}", quoted(start), quoted(start + 10_000)));

    // Sessions with a 10 s gap, per bidder.
    let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for bid in &all {
        times.entry(bid.bidder).or_default().push(bid.date_time);
    }
    let mut sessions = Vec::new();
    for (bidder, mut times) in times {
        times.sort_unstable();
        let (mut first, mut last, mut count) = (times[0], times[0], 0u64);
        for &time in &times {
            // Flink merges sessions that touch: a bid exactly one gap after the last extends it.
            if time > last + 10_000 {
                sessions.push(format!("{bidder},{count},{},{}", quoted(first), quoted(last + 10_000)));
                (first, count) = (time, 0);
            }
            last = time;
            count += 1;
        }
        sessions.push(format!("{bidder},{count},{},{}", quoted(first), quoted(last + 10_000)));
    }

    // Cumulating windows, 5 s steps up to 20 s, per bidder modulo 10: a bid counts in every
    // window of its 20 s period that ends after it.
    let mut cumulating: BTreeMap<(i64, i64, i64), u64> = BTreeMap::new();
    for bid in &all {
        let start = bid.date_time - bid.date_time.rem_euclid(20_000);
        let mut end = start + 5_000;
        while end <= start + 20_000 {
            if bid.date_time < end {
                *cumulating.entry((bid.bidder % 10, start, end)).or_default() += 1;
            }
            end += 5_000;
        }
    }
    let cumulating = cumulating
        .into_iter()
        .map(|((bucket, start, end), n)| format!("{bucket},{n},{},{}", quoted(start), quoted(end)));

    // q8: people who opened an auction in the 10 s window in which they joined.
    let window = |ms: i64| ms - ms.rem_euclid(10_000);
    let sellers: BTreeSet<(i64, i64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.seller, window(a.date_time))),
            _ => None,
        })
        .collect();
    let people: BTreeSet<(i64, &str, i64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) => Some((p.id, p.name.as_str(), window(p.date_time))),
            _ => None,
        })
        .collect();
    let q8 = people
        .into_iter()
        .filter(|(id, _, start)| sellers.contains(&(*id, *start)))
        .map(|(id, name, start)| format!("{id},{},{}", csv_text(name), quoted(start)))
        .collect();

    // q3: auctions of category 10 by sellers in Oregon, Idaho or California.
    let persons: BTreeMap<i64, &Person> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) => Some((p.id, p)),
            _ => None,
        })
        .collect();
    let q3 = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) if a.category == 10 => persons.get(&a.seller).map(|p| (p, a.id)),
            _ => None,
        })
        .filter(|(p, _)| ["OR", "ID", "CA"].contains(&p.state.as_str()))
        .map(|(p, id)| format!("{},{},{},{id}", csv_text(&p.name), csv_text(&p.city), csv_text(&p.state)))
        .collect();

    // q7: the bids at the highest price of a 10 s window, from its start to its end (both
    // included), once per window they qualify for; the sink takes `price` as its second column
    // and `bidder` as its third, by position, as published.
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    for bid in &all {
        let end = bid.date_time - bid.date_time.rem_euclid(10_000) + 10_000;
        let max = highest.entry(end).or_insert(bid.price);
        *max = (*max).max(bid.price);
    }
    let mut q7 = Vec::new();
    for (end, max) in highest {
        for bid in all.iter().filter(|b| b.price == max && end - 10_000 <= b.date_time && b.date_time <= end) {
            q7.push(format!("{},{},{},{},", bid.auction, bid.price, bid.bidder, quoted(bid.date_time)));
        }
    }

    // q20: every bid on an auction of category 10, with the auction's columns. Weir's generator
    // leaves `extra` and `description` empty and derives a bid's URL from its channel.
    let auctions: BTreeMap<i64, &weir_core::nexmark::Auction> = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) if a.category == 10 => Some((a.id, a)),
            _ => None,
        })
        .collect();
    let q20 = all
        .iter()
        .filter_map(|b| auctions.get(&b.auction).map(|a| (b, a)))
        .map(|(b, a)| {
            let url = format!("https://www.nexmark.com/{}/item.htm?query=1", b.channel.to_ascii_lowercase());
            format!(
                "{},{},{},{},{},{},,{},,{},{},{},{},{},{},",
                b.auction,
                b.bidder,
                b.price,
                csv_text(&b.channel),
                csv_text(&url),
                quoted(b.date_time),
                csv_text(&a.item_name),
                a.initial_bid,
                a.reserve,
                quoted(a.date_time),
                quoted(a.expires),
                a.seller,
                a.category
            )
        })
        .collect();

    [
        sorted(tumbling),
        sorted(hopping.collect()),
        sorted(sessions),
        sorted(cumulating.collect()),
        sorted(q8),
        sorted(q3),
        sorted(q7),
        sorted(q20),
        // q5: the auctions with the most bids of each 10 s window sliding by 2 s.
        sorted(q5(&events, 10_000, 2_000).into_iter().map(|(auction, num, _)| format!("{auction},{num}")).collect()),
    ]
}

/// Weir's changelog of an aggregate without a window: the bids enter in event-time order, each
/// into its group's state (`add`); at each event time, every group whose row (`line`) changed
/// gives `-U` of the old row and `+U` of the new, or `+I` if it had none.
fn group_changelog<'e, K: Ord + Clone, S: Default>(
    rows: impl IntoIterator<Item = (K, &'e Bid)>,
    add: impl Fn(&mut S, &Bid),
    line: impl Fn(&K, &S) -> String,
) -> Vec<String> {
    let mut by_time: BTreeMap<i64, Vec<(K, &Bid)>> = BTreeMap::new();
    for (key, bid) in rows {
        by_time.entry(bid.date_time).or_default().push((key, bid));
    }
    let mut groups: BTreeMap<K, S> = BTreeMap::new();
    let mut lines = Vec::new();
    for (_, arriving) in by_time {
        let before: BTreeMap<K, Option<String>> =
            arriving.iter().map(|(key, _)| (key.clone(), groups.get(key).map(|state| line(key, state)))).collect();
        for (key, bid) in arriving {
            add(groups.entry(key).or_default(), bid);
        }
        for (key, before) in before {
            let after = line(&key, &groups[&key]);
            match before {
                Some(before) if before == after => {}
                Some(before) => lines.extend([format!("-U,{before}"), format!("+U,{after}")]),
                None => lines.push(format!("+I,{after}")),
            }
        }
    }
    lines
}

/// `top3` of [`sql_updating`] as Weir's changelog: per auction, the least price, the distinct
/// bidders and the number of its three highest bids (of bids at the same price, the least rows
/// first, as Weir's Top-N orders ties).
pub fn sql_top3_changelog(events: &[Event]) -> Vec<String> {
    group_changelog(
        bids(events).map(|bid| (bid.auction, bid)),
        |rows: &mut Vec<BidRow>, bid| rows.push(bid_row(bid)),
        |auction, rows| {
            let mut top = rows.clone();
            top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.cmp(b)));
            top.truncate(3);
            let low = top.iter().map(|row| row.2).min().expect("an auction with rows has bids");
            let bidders: BTreeSet<i64> = top.iter().map(|row| row.1).collect();
            format!("{auction},{low},{},{}", bidders.len(), top.len())
        },
    )
}

/// Which of q15's and q17's price ranks a price is in: 1 below 10 000, 2 below 1 000 000, 3
/// from there.
fn price_rank(price: i64) -> usize {
    match price {
        ..10_000 => 1,
        10_000..1_000_000 => 2,
        _ => 3,
    }
}

/// q15 (bids, bidders and auctions per day, in all and per price rank) as Weir's changelog.
pub fn sql_q15_changelog(events: &[Event]) -> Vec<String> {
    #[derive(Default)]
    struct Day {
        bids: [u64; 4],
        bidders: [BTreeSet<i64>; 4],
        auctions: [BTreeSet<i64>; 4],
    }
    group_changelog(
        bids(events).map(|bid| (timestamp(bid.date_time)[..10].to_owned(), bid)),
        |day: &mut Day, bid| {
            for rank in [0, price_rank(bid.price)] {
                day.bids[rank] += 1;
                day.bidders[rank].insert(bid.bidder);
                day.auctions[rank].insert(bid.auction);
            }
        },
        |key, day| {
            let bidders = day.bidders.iter().map(|set| set.len().to_string());
            let auctions = day.auctions.iter().map(|set| set.len().to_string());
            let counts: Vec<String> = day.bids.iter().map(u64::to_string).chain(bidders).chain(auctions).collect();
            format!("{key},{}", counts.join(","))
        },
    )
}

/// q17 (per auction and day: bids in all and per price rank, least, greatest, average and total
/// price) as Weir's changelog.
pub fn sql_q17_changelog(events: &[Event]) -> Vec<String> {
    #[derive(Default)]
    struct AuctionDay {
        bids: [i64; 4],
        min: Option<i64>,
        max: Option<i64>,
        sum: i64,
    }
    group_changelog(
        bids(events).map(|bid| ((bid.auction, timestamp(bid.date_time)[..10].to_owned()), bid)),
        |group: &mut AuctionDay, bid| {
            group.bids[0] += 1;
            group.bids[price_rank(bid.price)] += 1;
            group.min = Some(group.min.map_or(bid.price, |m| m.min(bid.price)));
            group.max = Some(group.max.map_or(bid.price, |m| m.max(bid.price)));
            group.sum += bid.price;
        },
        |(auction, day), group| {
            let [all, rank1, rank2, rank3] = group.bids;
            let (min, max) = (group.min.expect("a bid"), group.max.expect("a bid"));
            format!("{auction},{day},{all},{rank1},{rank2},{rank3},{min},{max},{},{}", group.sum / all, group.sum)
        },
    )
}

/// A bid as a row of `bid` (`auction, bidder, price, channel, url, dateTime`; `extra` is
/// empty), ordered as Weir orders rows: column by column.
type BidRow = (i64, i64, i64, String, String, i64);

fn bid_row(bid: &Bid) -> BidRow {
    let url = format!("https://www.nexmark.com/{}/item.htm?query=1", bid.channel.to_ascii_lowercase());
    (bid.auction, bid.bidder, bid.price, bid.channel.clone(), url, bid.date_time)
}

fn bid_line(row: &BidRow) -> String {
    let (auction, bidder, price, channel, url, time) = row;
    format!("{auction},{bidder},{price},{},{},\"{}\",", csv_text(channel), csv_text(url), timestamp(*time))
}

/// Weir's changelog of a Top-N: `rows` (each with its event time and partition) enter in
/// event-time order; at each event time, every partition whose first `limit` rows — by `order`,
/// ties by the row — changed gives its result rows (`result` of a row and its rank, from 1) that
/// left, paired in row order with those that came (`-U`/`+U`), then the rest (`-D`, `+I`).
fn top_n_changelog<K: Ord + Clone, R: Ord + Clone, O: Ord + Clone>(
    rows: impl IntoIterator<Item = (i64, K, R)>,
    order: impl Fn(&R, &R) -> std::cmp::Ordering,
    limit: usize,
    result: impl Fn(&R, usize) -> O,
    line: impl Fn(&O) -> String,
) -> Vec<String> {
    let mut by_time: BTreeMap<i64, Vec<(K, R)>> = BTreeMap::new();
    for (time, key, row) in rows {
        by_time.entry(time).or_default().push((key, row));
    }
    let mut partitions: BTreeMap<K, Vec<R>> = BTreeMap::new();
    let top = |rows: &Vec<R>| -> Vec<O> {
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| order(a, b).then_with(|| a.cmp(b)));
        sorted.iter().take(limit).enumerate().map(|(index, row)| result(row, index + 1)).collect()
    };
    let mut lines = Vec::new();
    for (_, arriving) in by_time {
        let touched: BTreeSet<K> = arriving.iter().map(|(key, _)| key.clone()).collect();
        let before: BTreeMap<K, Vec<O>> =
            touched.iter().map(|key| (key.clone(), partitions.get(key).map(&top).unwrap_or_default())).collect();
        for (key, row) in arriving {
            partitions.entry(key).or_default().push(row);
        }
        for (key, before) in before {
            let after = top(&partitions[&key]);
            let (mut removed, mut added) = (before.clone(), Vec::new());
            for row in after {
                match removed.iter().position(|r| *r == row) {
                    Some(index) => {
                        removed.remove(index);
                    }
                    None => added.push(row),
                }
            }
            removed.sort();
            added.sort();
            let paired = removed.len().min(added.len());
            for (old, new) in removed.iter().zip(&added) {
                lines.extend([format!("-U,{}", line(old)), format!("+U,{}", line(new))]);
            }
            lines.extend(removed[paired..].iter().map(|row| format!("-D,{}", line(row))));
            lines.extend(added[paired..].iter().map(|row| format!("+I,{}", line(row))));
        }
    }
    lines
}

/// q9 (each auction's winning bid: the highest of those between its opening and expiry, the
/// earliest of equal ones) as Weir's changelog.
pub fn sql_q9_changelog(events: &[Event]) -> Vec<String> {
    let auctions = auctions_by_id(events);
    let joined = bids(events).filter_map(|bid| {
        let a = auctions.get(&bid.auction)?;
        (a.date_time <= bid.date_time && bid.date_time <= a.expires).then_some((bid.date_time, a.id, bid))
    });
    // Rows ordered as Weir orders them: the auction's columns (one auction per partition), then
    // the bid's auction, bidder, price and time.
    top_n_changelog(
        joined.map(|(time, id, bid)| (time, id, (bid.auction, bid.bidder, bid.price, bid.date_time))),
        |a, b| b.2.cmp(&a.2).then(a.3.cmp(&b.3)),
        1,
        |row, _| *row,
        |(auction, bidder, price, time)| {
            let a = auctions[auction];
            format!(
                "{},{},,{},{},{},{},{},{},,{auction},{bidder},{price},{},",
                a.id,
                csv_text(&a.item_name),
                a.initial_bid,
                a.reserve,
                quoted_timestamp(a.date_time),
                quoted_timestamp(a.expires),
                a.seller,
                a.category,
                quoted_timestamp(*time)
            )
        },
    )
}

/// q18 (each bidder's last bid on each auction; of bids at the same time, the least row) as
/// Weir's changelog.
pub fn sql_q18_changelog(events: &[Event]) -> Vec<String> {
    top_n_changelog(
        bids(events).map(|bid| (bid.date_time, (bid.bidder, bid.auction), bid_row(bid))),
        |a, b| b.5.cmp(&a.5),
        1,
        |row, _| row.clone(),
        bid_line,
    )
}

/// q19 (each auction's ten highest bids, ranked; of bids at the same price, the least rows
/// first) as Weir's changelog.
pub fn sql_q19_changelog(events: &[Event]) -> Vec<String> {
    top_n_changelog(
        bids(events).map(|bid| (bid.date_time, bid.auction, bid_row(bid))),
        |a, b| b.2.cmp(&a.2),
        10,
        |row, rank| (row.clone(), rank),
        |(row, rank)| format!("{},{rank}", bid_line(row)),
    )
}

fn quoted_timestamp(ms: i64) -> String {
    format!("\"{}\"", timestamp(ms))
}

/// Nexmark q4 in SQL (the average closing price per category, an updating result) as Weir's
/// changelog: a bid joins its auction when it falls between the auction's opening and expiry
/// (both included), at the bid's event time (the later of the two). Event time by event time,
/// each category whose average — over its auctions' highest joined bids, truncated as `AVG` of
/// `BIGINT` — changed gives `-U` of the old row and `+U` of the new, or `+I` if it had none.
pub fn sql_q4_changelog(events: &[Event]) -> Vec<String> {
    let auctions = auctions_by_id(events);
    // The joined bids by event time: (auction, category, price).
    let mut joined: BTreeMap<i64, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for bid in bids(events) {
        if let Some(a) = auctions.get(&bid.auction) {
            if a.date_time <= bid.date_time && bid.date_time <= a.expires {
                joined.entry(bid.date_time).or_default().push((a.id, a.category, bid.price));
            }
        }
    }
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    // Per category: the sum of its auctions' highest bids, and how many auctions.
    let mut totals: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut lines = Vec::new();
    for (_, bids) in joined {
        let before: BTreeMap<i64, Option<i64>> =
            bids.iter().map(|&(_, category, _)| (category, totals.get(&category).map(|(sum, n)| sum / n))).collect();
        for (auction, category, price) in bids {
            let total = totals.entry(category).or_default();
            match highest.get(&auction) {
                Some(&old) if old >= price => {}
                Some(&old) => {
                    total.0 += price - old;
                    highest.insert(auction, price);
                }
                None => {
                    *total = (total.0 + price, total.1 + 1);
                    highest.insert(auction, price);
                }
            }
        }
        for (category, old) in before {
            let (sum, n) = totals[&category];
            match old {
                Some(old) if old == sum / n => {}
                Some(old) => lines.extend([format!("-U,{category},{old}"), format!("+U,{category},{}", sum / n)]),
                None => lines.push(format!("+I,{category},{}", sum / n)),
            }
        }
    }
    lines
}
