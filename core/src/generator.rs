//! A deterministic Nexmark-style bid generator.
//!
//! Event `i` of the global sequence is a pure function of `(seed, i)`, so any split can start
//! (or resume after a failure) at any index without replaying the others, and every run with
//! the same seed produces exactly the same bids. Split `s` of `n` generates indices
//! `s, s + n, s + 2n, …`; together the splits generate `0..events`.
//!
//! Event time advances by `1000 / events_per_second` ms per event; most events are delayed a
//! little (out of order within the default bound), and about one in a hundred a lot (late).

use serde::{Deserialize, Serialize};

use crate::bid::Bid;
use crate::keygroup::mix64;

/// Parameters of the generated workload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Total number of events over all splits.
    pub events: u64,
    /// Seed of the workload.
    pub seed: u64,
    /// Number of distinct auctions (the key count; memory is bounded by it).
    pub auctions: u64,
    /// Events per second of event time.
    pub events_per_second: u64,
    /// Event time of event 0, in epoch milliseconds.
    pub base_time_ms: i64,
    /// Largest ordinary delay (ms) applied to an event's time: ordinary out-of-orderness.
    pub max_delay_ms: u64,
    /// Out of every 1000 events, how many get a long delay (up to 3 × `max_delay_ms` + 10 s).
    pub late_per_mille: u64,
}

/// Generates bids of a [`GeneratorConfig`] without a single division per bid (range reduction
/// by multiplication, event time in 32.32 fixed point): the generator must not dominate the
/// benchmark it feeds.
#[derive(Copy, Clone, Debug)]
pub struct BidGenerator {
    seed: u64,
    auctions: u64,
    hot_auctions: u64,
    base_time_ms: i64,
    ms_per_event_q32: u64,
    late_per_mille: u64,
    ordinary_delays: u64,
    long_delays: u64,
}

/// A uniform value in `0..n` from the high bits of `random` (Lemire's reduction).
#[inline(always)]
fn below(random: u64, n: u64) -> u64 {
    ((random as u128 * n as u128) >> 64) as u64
}

impl BidGenerator {
    /// The bid with global index `index`.
    #[inline]
    pub fn bid(&self, index: u64) -> Bid {
        let r0 = mix64(self.seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        let r1 = mix64(r0);
        let r2 = mix64(r1);
        // Nexmark skews bids towards "hot" auctions: half the bids go to 1% of the auctions.
        let auction = if r0 & 1 == 0 { below(r0, self.hot_auctions) } else { below(r0, self.auctions) };
        let nominal = self.base_time_ms + ((index as u128 * self.ms_per_event_q32 as u128) >> 32) as i64;
        let delay = if below(r2, 1000) < self.late_per_mille {
            below(r2.rotate_left(17), self.long_delays)
        } else {
            below(r2.rotate_left(17), self.ordinary_delays)
        };
        Bid {
            auction: auction as i64,
            bidder: below(r1, 100_000) as i64,
            price: 100 + below(r1.rotate_left(23), 100_000) as i64,
            date_time: nominal - delay as i64,
        }
    }
}

impl GeneratorConfig {
    /// The default workload with `events` events and `seed`.
    pub fn new(events: u64, seed: u64) -> Self {
        GeneratorConfig {
            events,
            seed,
            auctions: 10_000,
            events_per_second: 100_000,
            base_time_ms: 1_700_000_000_000,
            max_delay_ms: 2_000,
            late_per_mille: 10,
        }
    }

    /// The bid with global index `index` (builds a [`BidGenerator`]; use one for many bids).
    pub fn bid(&self, index: u64) -> Bid {
        self.generator().bid(index)
    }

    /// A generator with this configuration's constants precomputed.
    pub fn generator(&self) -> BidGenerator {
        assert!(self.auctions > 0 && self.events_per_second > 0);
        BidGenerator {
            seed: self.seed,
            auctions: self.auctions,
            hot_auctions: (self.auctions / 100).max(1),
            base_time_ms: self.base_time_ms,
            ms_per_event_q32: ((1000u128 << 32) / self.events_per_second as u128) as u64,
            late_per_mille: self.late_per_mille,
            ordinary_delays: self.max_delay_ms + 1,
            long_delays: 3 * self.max_delay_ms + 10_000,
        }
    }

    /// Number of events split `split` of `splits` generates.
    pub fn split_len(&self, split: usize, splits: usize) -> u64 {
        strided_split_len(self.events, split, splits)
    }

    /// The global index of the `position`-th event of split `split` of `splits`.
    #[inline]
    pub fn global_index(split: usize, splits: usize, position: u64) -> u64 {
        split as u64 + position * splits as u64
    }
}

/// The number of a sequence's `total` records that split `split` of `splits` generates when
/// the splits take the sequence in strides (split `s` takes global indices `s, s + splits, …`;
/// see [`GeneratorConfig::global_index`]).
#[inline]
pub fn strided_split_len(total: u64, split: usize, splits: usize) -> u64 {
    assert!(split < splits, "split {split} of {splits}");
    let (split, splits) = (split as u64, splits as u64);
    total / splits + u64::from(split < total % splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_partition_the_sequence() {
        let config = GeneratorConfig::new(1003, 7);
        for splits in 1..6 {
            let mut seen: Vec<u64> = (0..splits)
                .flat_map(|s| {
                    (0..config.split_len(s, splits)).map(move |p| GeneratorConfig::global_index(s, splits, p))
                })
                .collect();
            seen.sort();
            assert_eq!(seen, (0..1003).collect::<Vec<_>>());
        }
        assert_eq!(config.bid(5), config.bid(5));
    }
}
