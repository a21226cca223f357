//! The sequential reference of the main job (windowed bid statistics).
//!
//! Semantics, spelled out once more, independently of the engine:
//! - per split, `watermark = max date_time seen so far in that split − out_of_orderness`
//!   (minus infinity before the first record);
//! - a record is late iff the end of its tumbling window `[k·w, (k+1)·w)` is `<=` the split's
//!   watermark just before the record is read;
//! - every on-time record counts in its window; every window is emitted once with
//!   `count`, `sum(price)`, `max(price)` per auction;
//! - a line that is not four signed 64-bit integers goes to the error output as
//!   `file,line,reason,record`, with the reason the engine documents: the first field that is
//!   not an integer (or overflows) in order, else the field count; the record as read (lossily
//!   decoded, at most 4 KiB). Blank lines are skipped.

use std::collections::BTreeMap;
use std::num::IntErrorKind;
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
    /// Malformed lines in full.
    pub errors: Vec<ErrorLine>,
}

/// A malformed input line as the error output records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ErrorLine {
    /// The input file.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// Why it was rejected.
    pub reason: String,
    /// The line as read.
    pub record: String,
}

const FIELDS: [&str; 4] = ["auction", "bidder", "price", "date_time"];

/// Why `line` (without its `\r`) is not a bid, as the error output words it; `None` if it is.
fn rejection(line: &str) -> Option<String> {
    let fields: Vec<&str> = line.split(',').collect();
    for (name, field) in FIELDS.iter().zip(&fields) {
        if let Err(error) = field.trim_ascii().parse::<i64>() {
            let shown: String = String::from_utf8_lossy(&field.as_bytes()[..field.len().min(64)]).into_owned();
            let what = match error.kind() {
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "overflows a signed 64-bit integer",
                _ => "is not an integer",
            };
            return Some(format!("field `{name}`: {shown:?} {what}"));
        }
    }
    (fields.len() != 4).then(|| format!("expected 4 fields (auction,bidder,price,date_time), found {}", fields.len()))
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
                let content = weir_core::fs::read(path).expect("reference input readable");
                let name = path.display().to_string();
                for (index, raw) in content.split(|&b| b == b'\n').enumerate().skip(1) {
                    let number = index as u64 + 1;
                    let text = String::from_utf8_lossy(raw);
                    let line = text.strip_suffix('\r').unwrap_or(&text);
                    // ASCII whitespace only, as CSV readers (and the engine) trim.
                    if line.trim_ascii().is_empty() {
                        continue;
                    }
                    match rejection(line) {
                        None => {
                            let fields: Vec<i64> =
                                line.split(',').map(|f| f.trim_ascii().parse::<i64>().expect("checked")).collect();
                            on_record(fields[0], fields[1], fields[2], fields[3], &mut expected)
                        }
                        Some(reason) => expected.errors.push(ErrorLine {
                            file: name.clone(),
                            line: number,
                            reason,
                            record: String::from_utf8_lossy(&raw[..raw.len().min(4096)]).into_owned(),
                        }),
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
