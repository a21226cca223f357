//! The Nexmark benchmark's events and a deterministic generator of them.
//!
//! Nexmark models an online auction: people register, open auctions, and bid. The generator
//! follows the benchmark's shape (github nexmark/nexmark, `NexmarkGenerator`): of every 50
//! events, 1 is a new person, 3 are new auctions and 46 are bids; person and auction ids start
//! at 1000 and grow with the event number; sellers and bidders are mostly recent people and
//! bids mostly go to recent auctions (Nexmark's hot ratios: 3 in 4 sellers and bidders, 1 in 2
//! auctions are "hot", the rest drawn from all active ones),
//! there are 5 categories from id 10, prices are log-uniform from 1.00 to 10 000.00, and event
//! `i` happens `i × inter-event delay` after the base time. Each event is a pure function of
//! `(seed, i)` — SplitMix64 instead of Java's `Random` — so any split can generate any event,
//! and every run with the same parameters produces exactly the same events.

use serde::{Deserialize, Serialize};

use crate::keygroup::mix64;
use crate::time::EventTime;

/// A person registering.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Id (from 1000).
    pub id: i64,
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email_address: String,
    /// Credit card number.
    pub credit_card: String,
    /// City.
    pub city: String,
    /// US state.
    pub state: String,
    /// Event time (ms).
    pub date_time: EventTime,
}

/// An auction opening.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Id (from 1000).
    pub id: i64,
    /// Item name.
    pub item_name: String,
    /// Initial bid (cents).
    pub initial_bid: i64,
    /// Reserve price (cents).
    pub reserve: i64,
    /// Event time (ms).
    pub date_time: EventTime,
    /// When the auction closes (ms).
    pub expires: EventTime,
    /// The seller (a person id).
    pub seller: i64,
    /// Category (10..15).
    pub category: i64,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// The auction.
    pub auction: i64,
    /// The bidder (a person id).
    pub bidder: i64,
    /// Price (cents).
    pub price: i64,
    /// Channel it came through.
    pub channel: String,
    /// Event time (ms).
    pub date_time: EventTime,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event's time.
    pub fn date_time(&self) -> EventTime {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// Events per cycle, and how many of each kind.
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
/// First ids, as in Nexmark.
pub const FIRST_PERSON_ID: i64 = 1000;
/// First auction id.
pub const FIRST_AUCTION_ID: i64 = 1000;
/// First category id.
pub const FIRST_CATEGORY_ID: i64 = 10;
/// Number of categories.
pub const CATEGORIES: i64 = 5;
/// Hot choices pick the first of the most recent `HOT_GROUP` people or auctions.
const HOT_GROUP: u64 = 100;
/// Nexmark's `hotSellersRatio`, `hotAuctionRatio`, `hotBiddersRatio`: one choice in this many
/// is "cold" (any active one), the others "hot".
const HOT_SELLERS_RATIO: u64 = 4;
const HOT_AUCTIONS_RATIO: u64 = 2;
const HOT_BIDDERS_RATIO: u64 = 4;
/// Active people and auctions in flight that cold choices draw from.
const ACTIVE_PEOPLE: u64 = 1000;
const IN_FLIGHT_AUCTIONS: u64 = 100;

const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// The generator's parameters.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexmarkConfig {
    /// Total events over all splits.
    pub events: u64,
    /// Seed.
    pub seed: u64,
    /// Events per second of event time (Nexmark's `firstEventRate`, 10 000 by default).
    pub events_per_second: u64,
    /// Event time of event 0 (ms).
    pub base_time_ms: i64,
}

impl NexmarkConfig {
    /// `events` events from `seed` at Nexmark's default rate.
    pub fn new(events: u64, seed: u64) -> Self {
        NexmarkConfig { events, seed, events_per_second: 10_000, base_time_ms: 1_700_000_000_000 }
    }

    /// Events split `split` of `splits` generates (global indices `split, split + splits, …`).
    pub fn split_len(&self, split: usize, splits: usize) -> u64 {
        crate::generator::strided_split_len(self.events, split, splits)
    }

    /// Event `index` of the global sequence.
    pub fn event(&self, index: u64) -> Event {
        let time = self.base_time_ms + (index as u128 * 1000 / self.events_per_second.max(1) as u128) as i64;
        let mut random = Random(mix64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let offset = index % TOTAL_PROPORTION;
        if offset < PERSON_PROPORTION {
            Event::Person(self.person(index, time, &mut random))
        } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
            Event::Auction(self.auction(index, time, &mut random))
        } else {
            Event::Bid(self.bid(index, time, &mut random))
        }
    }

    fn person(&self, index: u64, time: EventTime, random: &mut Random) -> Person {
        let id = last_base0_person_id(index) as i64 + FIRST_PERSON_ID;
        Person {
            id,
            name: format!("{} {}", random.pick(&FIRST_NAMES), random.pick(&LAST_NAMES)),
            email_address: format!("{}@{}.com", random.word(7), random.word(5)),
            credit_card: (0..4).map(|_| format!("{:04}", random.below(10_000))).collect::<Vec<_>>().join(" "),
            city: random.pick(&CITIES).to_string(),
            state: random.pick(&STATES).to_string(),
            date_time: time,
        }
    }

    fn auction(&self, index: u64, time: EventTime, random: &mut Random) -> Auction {
        let id = last_base0_auction_id(index) as i64 + FIRST_AUCTION_ID;
        let people = last_base0_person_id(index);
        let seller = if random.below(HOT_SELLERS_RATIO) > 0 {
            // A hot seller: one of the most recent people.
            people / HOT_GROUP * HOT_GROUP
        } else {
            people.saturating_sub(random.below(ACTIVE_PEOPLE.min(people + 1)))
        };
        let initial_bid = random.price();
        Auction {
            id,
            item_name: random.word(9),
            initial_bid,
            reserve: initial_bid + random.price(),
            date_time: time,
            // Auctions last a few seconds to a few tens of seconds of event time.
            expires: time + 2_000 + random.below(18_000) as i64,
            seller: seller as i64 + FIRST_PERSON_ID,
            category: FIRST_CATEGORY_ID + random.below(CATEGORIES as u64) as i64,
        }
    }

    fn bid(&self, index: u64, time: EventTime, random: &mut Random) -> Bid {
        let auctions = last_base0_auction_id(index);
        let auction = if random.below(HOT_AUCTIONS_RATIO) > 0 {
            auctions / HOT_GROUP * HOT_GROUP
        } else {
            auctions.saturating_sub(random.below(IN_FLIGHT_AUCTIONS.min(auctions + 1)))
        };
        let people = last_base0_person_id(index);
        let bidder = if random.below(HOT_BIDDERS_RATIO) > 0 {
            people / HOT_GROUP * HOT_GROUP + 1
        } else {
            people.saturating_sub(random.below(ACTIVE_PEOPLE.min(people + 1)))
        };
        Bid {
            auction: auction as i64 + FIRST_AUCTION_ID,
            bidder: bidder as i64 + FIRST_PERSON_ID,
            price: random.price(),
            channel: random.pick(&CHANNELS).to_string(),
            date_time: time,
        }
    }
}

/// The base-0 id of the newest person at or before event `index` (one person per cycle, at
/// its start).
fn last_base0_person_id(index: u64) -> u64 {
    const _: () = assert!(PERSON_PROPORTION == 1, "one person per cycle");
    index / TOTAL_PROPORTION
}

/// The base-0 id of the newest auction at or before event `index`.
fn last_base0_auction_id(index: u64) -> u64 {
    let (epoch, offset) = (index / TOTAL_PROPORTION, index % TOTAL_PROPORTION);
    let within = if offset < PERSON_PROPORTION {
        // Before this cycle's first auction: the last one of the previous cycle.
        return (epoch * AUCTION_PROPORTION).saturating_sub(1);
    } else {
        (offset - PERSON_PROPORTION).min(AUCTION_PROPORTION - 1)
    };
    epoch * AUCTION_PROPORTION + within
}

/// A small deterministic random stream (SplitMix64 steps).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n.max(1) as u128) >> 64) as u64
    }
    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len() as u64) as usize]
    }
    fn word(&mut self, length: usize) -> String {
        (0..length).map(|_| (b'a' + self.below(26) as u8) as char).collect()
    }
    /// Nexmark's price: `10^(6·u) × 100` cents rounded, `u` uniform in [0, 1).
    fn price(&mut self) -> i64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (10f64.powf(unit * 6.0) * 100.0).round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_ids_and_times_follow_the_benchmark() {
        let config = NexmarkConfig::new(5_000, 3);
        let events: Vec<Event> = (0..5_000).map(|i| config.event(i)).collect();
        let people = events.iter().filter(|e| matches!(e, Event::Person(_))).count();
        let auctions = events.iter().filter(|e| matches!(e, Event::Auction(_))).count();
        assert_eq!((people, auctions, events.len() - people - auctions), (100, 300, 4_600));
        let mut next_person = FIRST_PERSON_ID;
        let mut next_auction = FIRST_AUCTION_ID;
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.date_time(), config.base_time_ms + index as i64 / 10, "10 000 events per second");
            match event {
                Event::Person(p) => {
                    assert_eq!(p.id, next_person);
                    next_person += 1;
                }
                Event::Auction(a) => {
                    assert_eq!(a.id, next_auction);
                    next_auction += 1;
                    assert!(a.seller < next_person && a.seller >= FIRST_PERSON_ID);
                    assert!((FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + CATEGORIES).contains(&a.category));
                    assert!(a.expires > a.date_time && a.reserve >= a.initial_bid);
                }
                Event::Bid(b) => {
                    assert!(b.auction < next_auction && b.auction >= FIRST_AUCTION_ID, "bids go to opened auctions");
                    assert!(b.bidder < next_person + 1 && (100..=100_000_000).contains(&b.price));
                }
            }
        }
        assert_eq!(config.event(4_321), NexmarkConfig::new(5_000, 3).event(4_321), "a pure function of the seed");
    }
}
