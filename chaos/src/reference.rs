//! The sequential reference of the main job (windowed bid statistics).
//!
//! Semantics, spelled out once more, independently of the engine:
//! - per split, `watermark = max date_time seen so far in that split − out_of_orderness`
//!   (minus infinity before the first record);
//! - a record is late iff the end of its tumbling window `[k·w, (k+1)·w)` is `<=` the split's
//!   watermark just before the record is read;
//! - every on-time record counts in its window; every window is emitted once with
//!   `count`, `sum(price)`, `max(price)` per auction.

use std::collections::BTreeMap;
use std::path::PathBuf;

use weir_core::generator::GeneratorConfig;

/// One split of reference input.
#[derive(Clone, Debug)]
pub enum ReferenceSplit {
    /// A CSV file with a header line.
    File(PathBuf),
    /// Split `split` of `splits` of the generator.
    Generated {
        /// The generator.
        config: GeneratorConfig,
        /// This split.
        split: usize,
        /// Number of splits.
        splits: usize,
    },
}

/// The expected committed output, as sorted CSV lines without headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Result rows `window_start,window_end,auction,bids,sum_price,max_price`.
    pub rows: Vec<String>,
    /// Late records `auction,bidder,price,date_time`.
    pub late: Vec<String>,
    /// Malformed lines as `(file, line number)`.
    pub errors: Vec<(String, u64)>,
}

/// Computes the expected output of the main job over `splits`.
pub fn expected_output(splits: &[ReferenceSplit], window_ms: i64, out_of_orderness_ms: i64) -> Expected {
    assert!(window_ms > 0 && out_of_orderness_ms >= 0);
    // (window start, auction) -> (count, sum, max)
    // (window start, auction, window end) -> (count, sum, max)
    let mut windows: BTreeMap<(i128, i64, i128), (u64, i128, i64)> = BTreeMap::new();
    let mut expected = Expected::default();
    for split in splits {
        let mut max_seen: Option<i128> = None;
        let mut on_record = |auction: i64, bidder: i64, price: i64, date_time: i64, expected: &mut Expected| {
            let time = date_time as i128;
            let unclamped_start = time.div_euclid(window_ms as i128) * window_ms as i128;
            let end = (unclamped_start + window_ms as i128).min(i64::MAX as i128);
            let start = unclamped_start.max(i64::MIN as i128);
            let late = max_seen.is_some_and(|max| end <= max - out_of_orderness_ms as i128);
            max_seen = Some(max_seen.map_or(time, |max| max.max(time)));
            if late {
                expected.late.push(format!("{auction},{bidder},{price},{date_time}"));
            } else {
                let entry = windows.entry((start, auction, end)).or_insert((0, 0, i64::MIN));
                entry.0 += 1;
                entry.1 += price as i128;
                entry.2 = entry.2.max(price);
            }
        };
        match split {
            ReferenceSplit::File(path) => {
                let content = std::fs::read(path).expect("reference input readable");
                let name = path.display().to_string();
                for (index, line) in content.split(|&b| b == b'\n').enumerate().skip(1) {
                    let number = index as u64 + 1;
                    let line = String::from_utf8_lossy(line);
                    let line = line.strip_suffix('\r').unwrap_or(&line);
                    // ASCII whitespace only, as CSV readers (and the engine) trim.
                    if line.trim_ascii().is_empty() {
                        continue;
                    }
                    let fields: Vec<Option<i64>> =
                        line.split(',').map(|f| f.trim_ascii().parse::<i64>().ok()).collect();
                    match fields.as_slice() {
                        [Some(a), Some(b), Some(p), Some(t)] => on_record(*a, *b, *p, *t, &mut expected),
                        _ => expected.errors.push((name.clone(), number)),
                    }
                }
            }
            ReferenceSplit::Generated { config, split, splits } => {
                let mut index = *split as u64;
                while index < config.events {
                    let bid = config.bid(index);
                    on_record(bid.auction, bid.bidder, bid.price, bid.date_time, &mut expected);
                    index += *splits as u64;
                }
            }
        }
    }
    for ((start, auction, end), (count, sum, max)) in windows {
        expected.rows.push(format!("{start},{end},{auction},{count},{sum},{max}"));
    }
    expected.rows.sort();
    expected.late.sort();
    expected.errors.sort();
    expected
}
