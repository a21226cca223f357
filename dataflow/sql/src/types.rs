//! SQL types and values: what a column declares and what a row holds.
//!
//! Rows are plain Rust values (`Vec<Value>`), so they travel through Weir's exchanges,
//! snapshots and sinks like any other record type. Types follow Flink SQL's: integers of four
//! widths (held as `i64`), `DOUBLE`, exact `DECIMAL(p, s)` (an `i128` scaled by `10^s`),
//! strings, booleans, `TIMESTAMP(p)` (milliseconds since the epoch, no time zone) and nested
//! `ROW<…>`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A column's declared type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlType {
    /// `BOOLEAN`.
    Boolean,
    /// `TINYINT`, `SMALLINT`, `INT`, `BIGINT` (all held as `i64`; the name is kept for display).
    Integer(IntegerWidth),
    /// `DOUBLE` / `FLOAT`.
    Double,
    /// `DECIMAL(precision, scale)`.
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// `VARCHAR` / `STRING` / `CHAR`.
    Varchar,
    /// `TIMESTAMP(p)`: milliseconds since the epoch.
    Timestamp,
    /// `INTERVAL …`: milliseconds (only as an operand of timestamp arithmetic).
    Interval,
    /// `ROW<name type, …>`.
    Row(Vec<(String, SqlType)>),
    /// The type of `NULL` before it meets another.
    Null,
}

/// The declared width of an integer type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IntegerWidth {
    /// `TINYINT`.
    Tiny,
    /// `SMALLINT`.
    Small,
    /// `INT`.
    Int,
    /// `BIGINT`.
    Big,
}

impl SqlType {
    /// `BIGINT`.
    pub const BIGINT: SqlType = SqlType::Integer(IntegerWidth::Big);
    /// `INT`.
    pub const INT: SqlType = SqlType::Integer(IntegerWidth::Int);

    /// Whether values of this type are numbers.
    pub fn is_numeric(&self) -> bool {
        matches!(self, SqlType::Integer(_) | SqlType::Double | SqlType::Decimal { .. })
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::Integer(IntegerWidth::Tiny) => f.write_str("TINYINT"),
            SqlType::Integer(IntegerWidth::Small) => f.write_str("SMALLINT"),
            SqlType::Integer(IntegerWidth::Int) => f.write_str("INT"),
            SqlType::Integer(IntegerWidth::Big) => f.write_str("BIGINT"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::Varchar => f.write_str("VARCHAR"),
            SqlType::Timestamp => f.write_str("TIMESTAMP(3)"),
            SqlType::Interval => f.write_str("INTERVAL"),
            SqlType::Null => f.write_str("NULL"),
            SqlType::Row(fields) => {
                f.write_str("ROW<")?;
                for (index, (name, ty)) in fields.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name} {ty}")?;
                }
                f.write_str(">")
            }
        }
    }
}

/// One SQL value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer type.
    Int(i64),
    /// A double.
    Double(f64),
    /// An exact decimal: `unscaled / 10^scale`.
    Decimal {
        /// The digits.
        unscaled: i128,
        /// Digits after the point.
        scale: u8,
    },
    /// A string (shared: projections copy rows often, strings rarely change).
    Str(Arc<str>),
    /// A timestamp or an interval, in milliseconds.
    Millis(i64),
    /// A nested row.
    Row(Arc<[Value]>),
}

/// A row: one value per column.
pub type Row = Vec<Value>;

impl Value {
    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) | Value::Millis(v) => Some(*v),
            _ => None,
        }
    }

    /// Writes the value as a CSV field, as Flink's CSV format does (`NULL` as an empty field,
    /// timestamps as `2023-11-14 22:13:20.1`, numbers as Java prints them). Rows are refused
    /// for CSV sinks when the job is planned.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => {}
            Value::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
            Value::Int(v) => weir_core::bid::write_integer(*v, out),
            Value::Double(v) => out.extend_from_slice(java_double(*v).as_bytes()),
            Value::Decimal { unscaled, scale } => out.extend_from_slice(java_decimal(*unscaled, *scale).as_bytes()),
            Value::Str(s) => write_csv_text(s, out),
            // Written as text, so quoted (it holds a space), as Flink writes it.
            Value::Millis(ms) => {
                out.push(b'"');
                write_timestamp(*ms, out);
                out.push(b'"');
            }
            Value::Row(_) => unreachable!("ROW columns are refused for CSV sinks"),
        }
    }
}

/// As Flink's print connector shows a value: Java's `toString` of its external type.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Double(v) => f.write_str(&java_double(*v)),
            Value::Decimal { unscaled, scale } => f.write_str(&java_decimal(*unscaled, *scale)),
            Value::Str(s) => f.write_str(s),
            // `LocalDateTime.toString`: seconds only when not zero, the fraction in milliseconds.
            Value::Millis(ms) => {
                let mut date = Vec::with_capacity(10);
                write_date(*ms, &mut date);
                let date = String::from_utf8(date).expect("digits and dashes");
                let in_day = ms.rem_euclid(86_400_000);
                let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1_000 % 60, in_day % 1_000);
                match (s, milli) {
                    (0, 0) => write!(f, "{date}T{h:02}:{m:02}"),
                    (_, 0) => write!(f, "{date}T{h:02}:{m:02}:{s:02}"),
                    _ => write!(f, "{date}T{h:02}:{m:02}:{s:02}.{milli:03}"),
                }
            }
            Value::Row(fields) => {
                f.write_str("+I[")?;
                for (index, value) in fields.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Text as Flink's CSV format (Jackson's CSV writer) writes it: quoted when it holds any
/// character below `-` (controls, space, `!"#$%&'()*+,`) or is longer than 24 UTF-16 units
/// (Jackson quotes those without looking), quotes doubled; the empty string unquoted (so it
/// reads back as `NULL`, as in Flink).
fn write_csv_text(text: &str, out: &mut Vec<u8>) {
    if text.chars().any(|c| c < '-') || text.encode_utf16().nth(24).is_some() {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// `unscaled / 10^scale` with exactly `scale` digits after the point.
pub fn format_decimal(unscaled: i128, scale: u8) -> String {
    if scale == 0 {
        return unscaled.to_string();
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded =
        if digits.len() <= scale { format!("{}{digits}", "0".repeat(scale + 1 - digits.len())) } else { digits };
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    format!("{sign}{whole}.{fraction}")
}

/// Appends `n` with at least `width` digits (zero-padded).
fn write_padded(out: &mut Vec<u8>, n: i64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(n);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    out.extend_from_slice(text.as_bytes());
}

/// Appends the date of `ms` as `java.time` prints it: `2015-07-15` (`-0001-…`, `+10000-…`
/// outside years 0000–9999).
fn write_date(ms: i64, out: &mut Vec<u8>) {
    let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
    match year {
        0..=9999 => write_padded(out, year, 4),
        _ if year < 0 => {
            out.push(b'-');
            write_padded(out, -year, 4);
        }
        _ => {
            out.push(b'+');
            write_padded(out, year, 0);
        }
    }
    out.push(b'-');
    write_padded(out, month as i64, 2);
    out.push(b'-');
    write_padded(out, day as i64, 2);
}

/// Appends `ms` as Flink's CSV format writes `TIMESTAMP(3)`: the date, a space, and the time as
/// Java's `ISO_LOCAL_TIME` prints it — the fraction without trailing zeros, none when zero.
/// Builds no strings: CSV sinks write one per row.
fn write_timestamp(ms: i64, out: &mut Vec<u8>) {
    write_date(ms, out);
    let in_day = ms.rem_euclid(86_400_000);
    out.push(b' ');
    write_padded(out, in_day / 3_600_000, 2);
    out.push(b':');
    write_padded(out, in_day / 60_000 % 60, 2);
    out.push(b':');
    write_padded(out, in_day / 1_000 % 60, 2);
    let mut millis = in_day % 1_000;
    if millis != 0 {
        out.push(b'.');
        let mut width = 3;
        while millis % 10 == 0 {
            millis /= 10;
            width -= 1;
        }
        write_padded(out, millis, width);
    }
}

/// A timestamp as Flink's CSV format writes `TIMESTAMP(3)`: `2015-07-15 00:00:01.234`,
/// `2015-07-15 00:00:01.2`, `2015-07-15 00:00:01`.
pub fn format_timestamp(ms: i64) -> String {
    let mut out = Vec::with_capacity(23);
    write_timestamp(ms, &mut out);
    String::from_utf8(out).expect("digits and separators")
}

/// A double as Java's `Double.toString` prints it: `1.0`, `0.001`, `1.0E7`, `1.0E-4` (the
/// shortest digits that read back as the same double).
pub fn java_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let magnitude = v.abs();
    if (1e-3..1e7).contains(&magnitude) {
        let text = format!("{v:?}");
        return if text.contains('.') { text } else { format!("{text}.0") };
    }
    // Scientific: Rust's `{:e}` gives the shortest digits as `d.ddde±x`.
    let text = format!("{v:e}");
    let (mantissa, exponent) = text.split_once('e').expect("scientific notation");
    let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
    format!("{mantissa}E{exponent}")
}

/// A decimal as Java's `BigDecimal.toString` prints it: plain, except scientific when the
/// exponent is below −6 (`1E-7`, `1.5E-8`).
pub fn java_decimal(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let adjusted = digits.len() as i64 - 1 - scale as i64;
    if adjusted >= -6 {
        return format_decimal(unscaled, scale);
    }
    let sign = if unscaled < 0 { "-" } else { "" };
    let (first, rest) = digits.split_at(1);
    let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
    format!("{sign}{first}{fraction}E{adjusted}")
}

/// Year, month and day of a day number counted from 1970-01-01 (the proleptic Gregorian
/// calendar; Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The empty string, shared (rows hold many: Nexmark's `extra`, CSV's empty text fields).
pub fn empty_str() -> Arc<str> {
    thread_local! {
        static EMPTY: Arc<str> = Arc::from("");
    }
    EMPTY.with(Arc::clone)
}

/// The day number, counted from 1970-01-01, of a proleptic Gregorian date (the inverse of
/// [`civil_from_days`], Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Reads one CSV field as a value of `ty`, as Flink's CSV format reads it: an empty field is
/// `NULL` (the empty string for text); integers must fit their type; decimals are rounded half
/// up to the type's scale and are `NULL` past its precision; timestamps are `yyyy-MM-dd
/// HH:mm:ss[.fraction]` (fractions past milliseconds are cut). The error says what was expected.
pub fn read_csv_field(text: &str, ty: &SqlType) -> Result<Value, String> {
    if text.is_empty() {
        return Ok(if *ty == SqlType::Varchar { Value::Str(empty_str()) } else { Value::Null });
    }
    let expected = || format!("`{}` is not a {ty}", text.chars().take(40).collect::<String>());
    // Jackson, under Flink's CSV format, reads numbers and booleans with spaces around them.
    let text = if *ty == SqlType::Varchar { text } else { text.trim_matches(' ') };
    match ty {
        SqlType::Varchar => Ok(Value::Str(Arc::from(text))),
        SqlType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(expected()),
        },
        SqlType::Integer(width) => {
            let value: i64 = text.parse().map_err(|_| expected())?;
            let fits = match width {
                IntegerWidth::Tiny => i8::try_from(value).is_ok(),
                IntegerWidth::Small => i16::try_from(value).is_ok(),
                IntegerWidth::Int => i32::try_from(value).is_ok(),
                IntegerWidth::Big => true,
            };
            if fits {
                Ok(Value::Int(value))
            } else {
                Err(format!("{value} does not fit {ty}"))
            }
        }
        SqlType::Double => text.parse::<f64>().map(Value::Double).map_err(|_| expected()),
        SqlType::Decimal { precision, scale } => read_decimal(text, *precision, *scale).ok_or_else(expected),
        SqlType::Timestamp => read_timestamp(text).map(Value::Millis).ok_or_else(expected),
        SqlType::Row(_) | SqlType::Interval | SqlType::Null => Err(format!("a {ty} cannot be read from CSV")),
    }
}

/// `[-+]digits[.digits][E[-+]digits]` as `DECIMAL(precision, scale)`: rounded half up (away
/// from zero) to the scale, `NULL` if it then has more than `precision` digits; `None` if it is
/// not a number.
fn read_decimal(text: &str, precision: u8, scale: u8) -> Option<Value> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i32>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The digits, and how many of them are after the point once the exponent is applied.
    let digits: String = format!("{whole}{fraction}").trim_start_matches('0').to_owned();
    let after_point = fraction.len() as i64 - i64::from(exponent);
    // Scaled to `scale`: drop `after_point - scale` digits (rounding half up), or append zeros.
    let drop = after_point - i64::from(scale);
    if digits.is_empty() {
        return Some(Value::Decimal { unscaled: 0, scale });
    }
    // Digits before the point past the precision: NULL, decided before any zeros are appended
    // (`1e999999999` must not build a billion-digit string).
    if drop < 0 && digits.len() as i64 - drop > i64::from(precision) {
        return Some(Value::Null);
    }
    let (kept, round_up) = if drop > 0 {
        let drop = drop as usize;
        if drop > digits.len() {
            (String::new(), false)
        } else {
            let (kept, dropped) = digits.split_at(digits.len() - drop);
            (kept.to_owned(), dropped.as_bytes().first().is_some_and(|d| *d >= b'5'))
        }
    } else {
        (format!("{digits}{}", "0".repeat((-drop) as usize)), false)
    };
    let kept = kept.trim_start_matches('0');
    if kept.len() > usize::from(precision) {
        return Some(Value::Null);
    }
    let mut unscaled: i128 = if kept.is_empty() { 0 } else { kept.parse().ok()? };
    if round_up {
        unscaled += 1;
    }
    if unscaled >= 10i128.pow(u32::from(precision)) {
        return Some(Value::Null);
    }
    Some(Value::Decimal { unscaled: if negative { -unscaled } else { unscaled }, scale })
}

/// `yyyy-MM-dd HH:mm:ss[.fraction]` (or with `T`) as milliseconds since the epoch.
fn read_timestamp(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 || !matches!(bytes[10], b' ' | b'T') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, c)| bytes[at] != c) {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
    if day == 0 || day > days_in_month {
        return None;
    }
    let millis = match &text[19..] {
        "" => 0,
        fraction
            if fraction.len() >= 2
                && fraction.starts_with('.')
                && fraction[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            // Milliseconds: the first three digits, padded with zeros (the rest are cut).
            let digits = fraction[1..].bytes().chain(std::iter::repeat(b'0')).take(3);
            digits.fold(0, |ms, digit| ms * 10 + i64::from(digit - b'0'))
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * 86_400_000 + i64::from(hour * 3_600 + minute * 60 + second) * 1_000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_read_back_what_the_csv_writer_writes() {
        let values = [
            (Value::Int(-42), SqlType::BIGINT),
            (Value::Double(1.69e7), SqlType::Double),
            (Value::Double(1e-7), SqlType::Double),
            (Value::Decimal { unscaled: 153_452, scale: 3 }, SqlType::Decimal { precision: 24, scale: 3 }),
            (Value::Decimal { unscaled: -1, scale: 7 }, SqlType::Decimal { precision: 28, scale: 7 }),
            (Value::Str(Arc::from("with space")), SqlType::Varchar),
            (Value::Bool(true), SqlType::Boolean),
            (Value::Millis(1_700_000_000_000), SqlType::Timestamp),
            (Value::Millis(1_700_000_000_100), SqlType::Timestamp),
            (Value::Millis(-86_400_000 + 5), SqlType::Timestamp),
            (Value::Millis(951_782_400_000), SqlType::Timestamp), // 2000-02-29
            (Value::Null, SqlType::BIGINT),
        ];
        for (value, ty) in values {
            let mut written = Vec::new();
            value.write_csv(&mut written);
            let field = csv::ReaderBuilder::new().has_headers(false).from_reader(written.as_slice()).records().next();
            let text = field.map(|r| r.unwrap()[0].to_owned()).unwrap_or_default();
            assert_eq!(read_csv_field(&text, &ty), Ok(value.clone()), "{text}");
        }
    }

    #[test]
    fn csv_fields_are_checked_against_their_type() {
        let int = SqlType::Integer(IntegerWidth::Int);
        assert!(read_csv_field("3000000000", &int).unwrap_err().contains("does not fit INT"));
        assert!(read_csv_field("12a", &SqlType::BIGINT).unwrap_err().contains("is not a BIGINT"));
        assert!(read_csv_field("2023-02-30 00:00:00", &SqlType::Timestamp).is_err());
        assert!(read_csv_field("2023-11-14 25:00:00", &SqlType::Timestamp).is_err());
        let decimal = SqlType::Decimal { precision: 4, scale: 2 };
        assert_eq!(read_csv_field("1.005", &decimal), Ok(Value::Decimal { unscaled: 101, scale: 2 }), "half up");
        assert_eq!(read_csv_field("-1.005", &decimal), Ok(Value::Decimal { unscaled: -101, scale: 2 }));
        assert_eq!(read_csv_field("1.5E1", &decimal), Ok(Value::Decimal { unscaled: 1_500, scale: 2 }));
        assert_eq!(read_csv_field("100.00", &decimal), Ok(Value::Null), "past DECIMAL(4, 2)");
        assert_eq!(read_csv_field("1e999999999", &decimal), Ok(Value::Null), "no billion zeros are built");
        assert_eq!(read_csv_field("1e-999999999", &decimal), Ok(Value::Decimal { unscaled: 0, scale: 2 }));
        assert_eq!(read_csv_field(" 7 ", &SqlType::BIGINT), Ok(Value::Int(7)), "spaces around a number");
        let widest = SqlType::Decimal { precision: 38, scale: 0 };
        assert_eq!(read_csv_field(&"9".repeat(39), &widest), Ok(Value::Null), "39 digits");
        assert_eq!(read_csv_field(&format!("{}.9", "9".repeat(38)), &widest), Ok(Value::Null), "rounds past 38");
        assert_eq!(read_csv_field("", &SqlType::Varchar), Ok(Value::Str(Arc::from(""))));
    }

    #[test]
    fn decimals_print_with_their_scale() {
        assert_eq!(format_decimal(1_234_567, 3), "1234.567");
        assert_eq!(format_decimal(-5, 3), "-0.005");
        assert_eq!(format_decimal(42, 0), "42");
        assert_eq!(format_decimal(908, 3), "0.908");
    }

    #[test]
    fn timestamps_print_as_flink_does() {
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(format_timestamp(1_436_918_401_234), "2015-07-15 00:00:01.234");
        assert_eq!(format_timestamp(1_436_918_401_230), "2015-07-15 00:00:01.23");
        assert_eq!(format_timestamp(1_436_918_401_100), "2015-07-15 00:00:01.1");
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999");
        assert_eq!(format_timestamp(951_782_400_000), "2000-02-29 00:00:00");
        // The print connector: `LocalDateTime.toString`.
        assert_eq!(Value::Millis(951_782_400_000).to_string(), "2000-02-29T00:00");
        assert_eq!(Value::Millis(1_436_918_401_100).to_string(), "2015-07-15T00:00:01.100");
        assert_eq!(format_timestamp(253_402_300_800_000), "+10000-01-01 00:00:00", "java.time's sign past 9999");
        assert_eq!(format_timestamp(-62_198_755_200_000), "-0001-01-01 00:00:00");
    }

    #[test]
    fn csv_fields_are_quoted_as_flink_writes_them() {
        // What Flink 2.3's CSV format wrote for the same values (checked with PyFlink).
        let csv = |value: Value| {
            let mut out = Vec::new();
            value.write_csv(&mut out);
            String::from_utf8(out).unwrap()
        };
        let text = |s: &str| Value::Str(Arc::from(s));
        assert_eq!(csv(text("plain")), "plain");
        assert_eq!(csv(text("with space")), "\"with space\"");
        assert_eq!(csv(text("")), "");
        assert_eq!(csv(text("a,b")), "\"a,b\"");
        assert_eq!(csv(text("quote\"d")), "\"quote\"\"d\"");
        assert_eq!(csv(text("a!b")), "\"a!b\"");
        assert_eq!(csv(text("a-b")), "a-b");
        assert_eq!(csv(text("a;b")), "a;b");
        assert_eq!(csv(text("exactly-twenty-four-char")), "exactly-twenty-four-char");
        assert_eq!(csv(text("twenty-five-characters-xx")), "\"twenty-five-characters-xx\"", "Jackson quotes long text");
        assert_eq!(csv(Value::Null), "");
        assert_eq!(csv(Value::Bool(true)), "true");
        assert_eq!(csv(Value::Millis(1_699_999_999_100)), "\"2023-11-14 22:13:19.1\"");
        for ms in [
            0,
            1,
            10,
            100,
            230,
            999,
            1_000,
            1_699_999_999_234,
            -1,
            951_782_400_000,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_198_755_200_000,
        ] {
            assert_eq!(csv(Value::Millis(ms)), format!("\"{}\"", format_timestamp(ms)), "{ms}");
        }
        assert_eq!(csv(Value::Double(16_900_000.0)), "1.69E7");
        assert_eq!(csv(Value::Decimal { unscaled: 1, scale: 7 }), "1E-7");
    }

    #[test]
    fn numbers_print_as_java_does() {
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(0.001), "0.001");
        assert_eq!(java_double(1e7), "1.0E7");
        assert_eq!(java_double(-1.5e-4), "-1.5E-4");
        assert_eq!(java_double(123.456), "123.456");
        assert_eq!(java_decimal(1, 7), "1E-7");
        assert_eq!(java_decimal(15, 9), "1.5E-8");
        assert_eq!(java_decimal(1, 6), "0.000001");
        assert_eq!(java_decimal(-1_234_567, 3), "-1234.567");
    }
}
