//! The bid record and its CSV form.
//!
//! Input files have the header `auction,bidder,price,date_time` and four signed 64-bit integer
//! fields per line. Parsing is hand-written over bytes because it is the hot path of the main
//! job (one pass, no allocation per record) and because every failure must say exactly what
//! was wrong so that the record can go to the error output with a useful reason.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::time::EventTime;

/// The header line every bid CSV file starts with.
pub const BID_HEADER: &str = "auction,bidder,price,date_time";

/// A bid on an auction (the Nexmark `Bid` event, reduced to integers).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// The auction bid on: the key of the main job.
    pub auction: i64,
    /// Who bid.
    pub bidder: i64,
    /// The price offered.
    pub price: i64,
    /// Event time in epoch milliseconds.
    pub date_time: EventTime,
}

/// Why a line is not a valid bid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadRecord {
    /// The line does not have exactly four comma-separated fields.
    FieldCount {
        /// How many fields the line has.
        found: usize,
    },
    /// A field is not an integer, or does not fit in 64 bits.
    BadInteger {
        /// The field's name.
        field: &'static str,
        /// The offending text (truncated to 64 bytes).
        text: String,
        /// `true` when the field is an integer that overflows `i64`.
        overflow: bool,
    },
    /// The line is not valid UTF-8 text.
    NotUtf8,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::FieldCount { found } => {
                write!(f, "expected 4 fields ({BID_HEADER}), found {found}")
            }
            BadRecord::BadInteger { field, text, overflow: true } => {
                write!(f, "field `{field}`: {text:?} overflows a signed 64-bit integer")
            }
            BadRecord::BadInteger { field, text, overflow: false } => {
                write!(f, "field `{field}`: {text:?} is not an integer")
            }
            BadRecord::NotUtf8 => write!(f, "line is not valid UTF-8"),
        }
    }
}

const FIELD_NAMES: [&str; 4] = ["auction", "bidder", "price", "date_time"];

/// Parses one line (without its line terminator; a trailing `\r` is ignored) into a bid.
#[inline]
pub fn parse_bid_line(line: &[u8]) -> Result<Bid, BadRecord> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Fast path: four plain decimal fields of at most 18 digits, no spaces, no signs but '-'.
    let mut position = 0;
    let mut fields = [0i64; 4];
    for (index, field) in fields.iter_mut().enumerate() {
        match plain_field(line, &mut position) {
            Some(value) => *field = value,
            None => return parse_bid_line_general(line),
        }
        match line.get(position) {
            Some(b',') if index < 3 => position += 1,
            None if index == 3 => {}
            _ => return parse_bid_line_general(line),
        }
    }
    Ok(Bid { auction: fields[0], bidder: fields[1], price: fields[2], date_time: fields[3] })
}

/// An optional `-` and 1 to 18 digits (which cannot overflow), advancing `position`.
#[inline(always)]
fn plain_field(line: &[u8], position: &mut usize) -> Option<i64> {
    let mut index = *position;
    let negative = line.get(index) == Some(&b'-');
    index += negative as usize;
    let start = index;
    let mut value: u64 = 0;
    while let Some(&byte) = line.get(index) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(digit as u64); // over 18 digits is rejected below
        index += 1;
    }
    if index == start || index - start > 18 {
        return None;
    }
    *position = index;
    Some(if negative { -(value as i64) } else { value as i64 })
}

/// The general parser: spaces, `+`, 19-digit values, and every error with its reason.
#[cold]
fn parse_bid_line_general(line: &[u8]) -> Result<Bid, BadRecord> {
    let mut fields = [0i64; 4];
    let mut count = 0usize;
    for field in line.split(|&b| b == b',') {
        if count < 4 {
            fields[count] = parse_i64(field).map_err(|overflow| BadRecord::BadInteger {
                field: FIELD_NAMES[count],
                text: String::from_utf8_lossy(&field[..field.len().min(64)]).into_owned(),
                overflow,
            })?;
        }
        count += 1;
    }
    if count != 4 {
        return Err(BadRecord::FieldCount { found: count });
    }
    Ok(Bid { auction: fields[0], bidder: fields[1], price: fields[2], date_time: fields[3] })
}

/// Parses an optionally signed decimal integer, allowing surrounding ASCII spaces.
/// `Err(true)` means "an integer, but it overflows", `Err(false)` "not an integer".
#[inline]
fn parse_i64(field: &[u8]) -> Result<i64, bool> {
    let field = field.trim_ascii();
    let (negative, digits) = match field.first() {
        Some(b'-') => (true, &field[1..]),
        Some(b'+') => (false, &field[1..]),
        _ => (false, field),
    };
    if digits.is_empty() {
        return Err(false);
    }
    // Accumulate negatively so that i64::MIN parses.
    let mut value: i64 = 0;
    let mut overflow = false;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return Err(false);
        }
        if !overflow {
            match value.checked_mul(10).and_then(|v| v.checked_sub(digit as i64)) {
                Some(v) => value = v,
                None => overflow = true,
            }
        }
    }
    if overflow {
        return Err(true);
    }
    if negative {
        Ok(value)
    } else {
        value.checked_neg().ok_or(true)
    }
}

/// Appends `bid` as a CSV line (with `\n`) to `out`.
#[inline]
pub fn write_bid_csv(bid: &Bid, out: &mut Vec<u8>) {
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(bid.auction).as_bytes());
    out.push(b',');
    out.extend_from_slice(buffer.format(bid.bidder).as_bytes());
    out.push(b',');
    out.extend_from_slice(buffer.format(bid.price).as_bytes());
    out.push(b',');
    out.extend_from_slice(buffer.format(bid.date_time).as_bytes());
    out.push(b'\n');
}

/// Appends a decimal integer to `out` without allocating.
#[inline]
pub fn write_integer(value: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends `field` to `out` as one CSV field, quoted when it contains a comma, quote or line break.
pub fn write_csv_field(field: &str, out: &mut Vec<u8>) {
    if field.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        for byte in field.bytes() {
            if byte == b'"' {
                out.push(b'"');
            }
            out.push(byte);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_bid_line(b"1,2,3,4\r"), Ok(Bid { auction: 1, bidder: 2, price: 3, date_time: 4 }));
        assert_eq!(parse_bid_line(b" -1 ,+2,3,-9223372036854775808").unwrap().date_time, i64::MIN);
        assert_eq!(parse_bid_line(b"1,2,3"), Err(BadRecord::FieldCount { found: 3 }));
        assert_eq!(parse_bid_line(b"1,2,3,4,5"), Err(BadRecord::FieldCount { found: 5 }));
        assert!(matches!(
            parse_bid_line(b"1,x,3,4"),
            Err(BadRecord::BadInteger { field: "bidder", overflow: false, .. })
        ));
        assert!(matches!(
            parse_bid_line(b"1,2,3,9223372036854775808"),
            Err(BadRecord::BadInteger { field: "date_time", overflow: true, .. })
        ));
        assert!(matches!(parse_bid_line(b"1,2,,4"), Err(BadRecord::BadInteger { field: "price", .. })));
        assert!(matches!(parse_bid_line(b""), Err(BadRecord::BadInteger { .. })));
    }

    #[test]
    fn quotes_fields_that_need_it() {
        let mut out = Vec::new();
        write_csv_field("a,\"b\"", &mut out);
        assert_eq!(out, b"\"a,\"\"b\"\"\"");
    }

    proptest! {
        /// Writing then parsing a bid is the identity.
        #[test]
        fn csv_round_trip(a in any::<i64>(), b in any::<i64>(), p in any::<i64>(), t in any::<i64>()) {
            let bid = Bid { auction: a, bidder: b, price: p, date_time: t };
            let mut line = Vec::new();
            write_bid_csv(&bid, &mut line);
            prop_assert_eq!(line.pop(), Some(b'\n'));
            prop_assert_eq!(parse_bid_line(&line), Ok(bid));
        }

        /// Parsing agrees with the standard library on any text.
        #[test]
        fn integer_parsing_matches_std(s in "[-+]?[0-9]{0,21}|[ -~]{0,8}") {
            let ours = parse_i64(s.as_bytes()).ok();
            let std_value = s.trim().parse::<i64>().ok();
            prop_assert_eq!(ours, std_value);
        }

        /// The fast path and the general parser agree on every line.
        #[test]
        fn fast_path_agrees_with_general_parser(line in "(-?[0-9]{1,20},){0,4}-?[0-9]{0,20}( ?)|[-+0-9, ]{0,40}") {
            prop_assert_eq!(parse_bid_line(line.as_bytes()), parse_bid_line_general(line.as_bytes()));
        }
    }
}
