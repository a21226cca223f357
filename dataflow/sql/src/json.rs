//! Flink's `'format' = 'json'` for filesystem tables: one JSON object per line, each column a
//! field named as the column.
//!
//! **Reading** follows Flink's JSON format with its defaults: a missing field, or `null`, is
//! `NULL` (`'json.fail-on-missing-field' = 'true'` makes a missing field an error); numbers are
//! read from their text, so a `DECIMAL` is exact (a JSON parser's `f64` would not be); a string
//! is accepted for a number, boolean or timestamp column and read as the CSV format reads that
//! text; a `VARCHAR` column takes any JSON value, as its text; a `ROW` column takes an object.
//! Timestamps are Flink's SQL format, `2023-11-14 22:13:20.1`. Fields the table does not
//! declare are ignored. A line that is not a JSON object is malformed: it stops the job, or
//! goes to `'errors.path'` with its place and reason, as a malformed CSV line does.
//!
//! **Writing** is what Flink's JSON format writes: numbers as Java prints them (`1.0E7`; a
//! decimal without its trailing zeros, as Jackson keeps it: `1.47E+4`), non-finite doubles as strings (`"NaN"`, as Jackson quotes them),
//! timestamps as SQL-format strings, `ROW`s as objects, `NULL` as `null`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::types::{format_timestamp, java_decimal, java_double, read_csv_field, Row, SqlType, Value};

/// Lines of a filesystem table's JSON files as rows: its physical columns, then its computed
/// columns.
pub struct JsonRows {
    /// Each physical column's name and type.
    pub columns: Vec<(String, SqlType)>,
    /// The computed columns, over the physical ones.
    pub computed: Vec<crate::expr::Scalar>,
    /// `'json.fail-on-missing-field'`.
    pub fail_on_missing_field: bool,
    /// The time attribute's column (physical or computed), which must not be `NULL`.
    pub time: Option<usize>,
}

impl weir_dataflow::LineFormat for JsonRows {
    type Record = Row;
    fn header(&self) -> Option<&str> {
        None
    }
    fn parse(&self, line: &[u8]) -> Result<Row, String> {
        let fields: HashMap<String, &RawValue> =
            serde_json::from_slice(line).map_err(|error| format!("not a JSON object: {error}"))?;
        let mut row = Vec::with_capacity(self.columns.len() + self.computed.len());
        for (name, ty) in &self.columns {
            let value = match fields.get(name) {
                Some(raw) => read_value(raw.get(), ty, self.fail_on_missing_field)
                    .map_err(|reason| format!("field {name}: {reason}"))?,
                None if self.fail_on_missing_field => return Err(format!("no field {name}")),
                None => Value::Null,
            };
            row.push(value);
        }
        crate::connector::with_computed(row, &self.computed, self.time)
    }
}

/// One field's JSON text as a value of `ty` (`strict`: a nested object's missing field is an
/// error too, as `'json.fail-on-missing-field'` makes it at every level in Flink).
fn read_value(raw: &str, ty: &SqlType, strict: bool) -> Result<Value, String> {
    if raw == "null" {
        return Ok(Value::Null);
    }
    let shown = || raw.chars().take(40).collect::<String>();
    match (raw.as_bytes()[0], ty) {
        (b'"', _) => {
            let text: String = serde_json::from_str(raw).map_err(|e| format!("{}: {e}", shown()))?;
            match ty {
                SqlType::Varchar => Ok(Value::Str(Arc::from(text))),
                SqlType::Row(_) => Err(format!("{} is a string, not an object for a {ty}", shown())),
                // Not NULL, as an empty CSV field is: Flink's JSON format fails on it for a number
                // or a timestamp, and reads `false` for a boolean (Java's `parseBoolean`).
                SqlType::Boolean if text.trim().is_empty() => Ok(Value::Bool(false)),
                _ if text.trim().is_empty() => Err(format!("an empty string is not a {ty}")),
                _ => read_csv_field(&text, ty),
            }
        }
        (b'{', SqlType::Row(fields)) => {
            let object: HashMap<String, &RawValue> =
                serde_json::from_str(raw).map_err(|e| format!("{}: {e}", shown()))?;
            let values = fields
                .iter()
                .map(|(name, ty)| match object.get(name) {
                    Some(raw) => read_value(raw.get(), ty, strict).map_err(|reason| format!("field {name}: {reason}")),
                    None if strict => Err(format!("no field {name}")),
                    None => Ok(Value::Null),
                })
                .collect::<Result<Vec<Value>, String>>()?;
            Ok(Value::Row(Arc::from(values)))
        }
        // A text column takes any value as its JSON text, as Flink's `asText`/`toString`.
        (_, SqlType::Varchar) => Ok(Value::Str(Arc::from(raw))),
        (b'{' | b'[', _) | (_, SqlType::Row(_)) => Err(format!("{} is not a {ty}", shown())),
        // An integer written with a fraction or an exponent (`1.0`, `1e3`): taken if it is whole.
        // Flink cuts a fraction off (`1.5` is 1); Weir refuses rather than lose it.
        (b'-' | b'0'..=b'9', SqlType::Integer(_)) if raw.contains(['.', 'e', 'E']) => match whole_number(raw) {
            Some(whole) => read_csv_field(&whole, ty),
            None => Err(format!("`{}` is not a whole number, as a {ty} must be", shown())),
        },
        // Numbers and booleans, from their text (exact for decimals).
        _ => read_csv_field(raw, ty),
    }
}

/// A JSON number's text (`-1.50e1`) as the digits of an integer (`-15`), if it is whole; `None`
/// if it has a fraction or is not a number. A whole number past any integer type's range comes
/// back as such (its digits, up to a few past that range), for the type's own check to refuse.
fn whole_number(text: &str) -> Option<String> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        // An exponent past `i64` is of a zero, or of a number past every range (saturated).
        Some(at) => {
            let exponent = &text[at + 1..];
            let digits = exponent.trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let magnitude = digits.parse::<i64>().unwrap_or(i64::MAX / 2);
            (&text[..at], if exponent.starts_with('-') { -magnitude } else { magnitude })
        }
        None => (text, 0),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let (integral, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{integral}{fraction}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    let leading_zeros = integral.len() + fraction.len() - digits.len();
    if digits.is_empty() {
        return Some("0".to_owned());
    }
    // Digits of the whole part, once the exponent has moved the point.
    let point = (integral.len() as i64).saturating_add(exponent) - leading_zeros as i64;
    if point <= 0 {
        return None;
    }
    // Past 40 digits every integer type is exceeded: 41 digits say so.
    let point = point.min(41) as usize;
    let whole = if point >= digits.len() {
        format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
    } else if digits[point..].bytes().all(|b| b == b'0') {
        format!("{sign}{}", &digits[..point])
    } else {
        return None;
    };
    Some(whole)
}

/// Flink's JSON format for a sink's rows.
#[derive(Clone, Debug)]
pub struct JsonFormat {
    /// The sink table's columns, names and types, in order.
    pub columns: Arc<Vec<(String, SqlType)>>,
}

impl JsonFormat {
    /// The row as one JSON object and the line's end.
    pub fn write_row(&self, row: &Row, out: &mut Vec<u8>) {
        write_object(&self.columns, row, out);
        out.push(b'\n');
    }
}

fn write_object(columns: &[(String, SqlType)], values: &[Value], out: &mut Vec<u8>) {
    debug_assert_eq!(columns.len(), values.len(), "a row has its table's columns");
    out.push(b'{');
    for (index, ((name, ty), value)) in columns.iter().zip(values).enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(name, out);
        out.push(b':');
        write_value(value, ty, out);
    }
    out.push(b'}');
}

fn write_value(value: &Value, ty: &SqlType, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
        Value::Int(v) => weir_core::bid::write_integer(*v, out),
        Value::Double(v) if v.is_finite() => out.extend_from_slice(java_double(*v).as_bytes()),
        Value::Double(v) => write_string(&java_double(*v), out),
        Value::Decimal { unscaled, scale } => out.extend_from_slice(json_decimal(*unscaled, *scale).as_bytes()),
        Value::Str(text) => write_string(text, out),
        Value::Millis(ms) => write_string(&format_timestamp(*ms), out),
        Value::Row(fields) => match ty {
            SqlType::Row(types) => write_object(types, fields, out),
            other => unreachable!("a ROW value in a {other} column"),
        },
    }
}

/// A JSON string as Jackson writes one: `"` and `\\` escaped, `\b \t \n \f \r` as such,
/// other control characters as `\u00XX` in capitals; everything else as it is (UTF-8).
fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04X}", c as u32).as_bytes()),
            c => {
                let mut buffer = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// A decimal as Flink's JSON format writes it: Jackson's number node strips its trailing zeros
/// (`14717.00` is `14717`), and `BigDecimal.toString` then prints a negative scale in scientific
/// notation (`14700.00` is `1.47E+4`).
fn json_decimal(unscaled: i128, scale: u8) -> String {
    if unscaled == 0 {
        return "0".into();
    }
    let (mut unscaled, mut scale) = (unscaled, i32::from(scale));
    while unscaled % 10 == 0 {
        unscaled /= 10;
        scale -= 1;
    }
    if scale >= 0 {
        return java_decimal(unscaled, scale as u8);
    }
    let digits = unscaled.unsigned_abs().to_string();
    let adjusted = digits.len() as i32 - 1 - scale;
    let sign = if unscaled < 0 { "-" } else { "" };
    let (first, rest) = digits.split_at(1);
    let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
    format!("{sign}{first}{fraction}E+{adjusted}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_dataflow::LineFormat;

    fn columns() -> Vec<(String, SqlType)> {
        vec![
            ("id".into(), SqlType::BIGINT),
            ("price".into(), SqlType::Decimal { precision: 10, scale: 2 }),
            ("name".into(), SqlType::Varchar),
            ("ts".into(), SqlType::Timestamp),
            ("ok".into(), SqlType::Boolean),
            ("x".into(), SqlType::Double),
            ("nested".into(), SqlType::Row(vec![("a".into(), SqlType::BIGINT), ("b".into(), SqlType::Varchar)])),
        ]
    }

    fn rows(fail_on_missing_field: bool) -> JsonRows {
        JsonRows { columns: columns(), computed: Vec::new(), fail_on_missing_field, time: None }
    }

    #[test]
    fn lines_read_as_flinks_json_format_reads_them_and_write_back_the_same() {
        let line = br#"{"id": 7, "price": 12.345, "name": "a \"b\"\n", "ts": "2023-11-14 22:13:20.1", "ok": true,
                       "x": 1.0E7, "nested": {"b": "z", "a": "5"}, "extra": [1, 2]}"#;
        let row = rows(false).parse(line).unwrap();
        let text = |s: &str| Value::Str(Arc::from(s));
        assert_eq!(row[0], Value::Int(7));
        assert_eq!(row[1], Value::Decimal { unscaled: 1235, scale: 2 }, "rounded half up, exactly");
        assert_eq!(row[2], text("a \"b\"\n"));
        assert_eq!(row[3], Value::Millis(1_700_000_000_100));
        assert_eq!(row[4], Value::Bool(true));
        assert_eq!(row[5], Value::Double(1e7));
        assert_eq!(row[6], Value::Row(Arc::from(vec![Value::Int(5), text("z")])), "a number in a string");
        let mut out = Vec::new();
        JsonFormat { columns: Arc::new(columns()) }.write_row(&row, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":7,\"price\":12.35,\"name\":\"a \\\"b\\\"\\n\",\"ts\":\"2023-11-14 22:13:20.1\",\"ok\":true,\
             \"x\":1.0E7,\"nested\":{\"a\":5,\"b\":\"z\"}}\n"
        );
        // Missing fields and nulls are NULL; a double past its range is infinite (as Java's
        // `parseDouble`), and a non-finite double is written as a string.
        let row = rows(false).parse(br#"{"id": null, "x": -1e400}"#).unwrap();
        assert_eq!(row[5], Value::Double(f64::NEG_INFINITY));
        let row = rows(false).parse(br#"{"id": null}"#).unwrap();
        assert!(row.iter().all(|v| *v == Value::Null));
        let mut out = Vec::new();
        write_value(&Value::Double(f64::NAN), &SqlType::Double, &mut out);
        assert_eq!(out, b"\"NaN\"");
        let mut out = Vec::new();
        write_string("a\u{1f}b\t\u{e9}", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\u001Fb\\t\u{e9}\"", "Jackson's escapes, in capitals");
        // An integer written with a fraction or an exponent, if it is whole.
        for (raw, whole) in [
            ("1.0", 1),
            ("-2.000", -2),
            ("1e3", 1000),
            ("1.5E1", 15),
            ("0.0e-5", 0),
            ("120E-1", 12),
            ("-0.0", 0),
            ("0e99999999999", 0),
            ("0.0012e4", 12),
        ] {
            let line = format!("{{\"id\": {raw}}}");
            assert_eq!(rows(false).parse(line.as_bytes()).unwrap()[0], Value::Int(whole), "{raw}");
        }
        // A text column takes any JSON value as its text.
        let row = rows(false).parse(br#"{"name": 12.50}"#).unwrap();
        assert_eq!(row[2], text("12.50"));
    }

    #[test]
    fn decimals_are_written_as_jackson_writes_flinks_decimals() {
        for (unscaled, scale, text) in [
            (1471700, 2, "14717"),
            (1470000, 2, "1.47E+4"),
            (-1470000, 2, "-1.47E+4"),
            (182771, 2, "1827.71"),
            (182770, 2, "1827.7"),
            (0, 2, "0"),
            (5, 0, "5"),
            (50, 0, "5E+1"),
            (1, 9, "1E-9"),
        ] {
            assert_eq!(json_decimal(unscaled, scale), text, "{unscaled} scale {scale}");
        }
    }

    #[test]
    fn a_malformed_line_or_field_says_what_and_where() {
        let error = |line: &[u8], strict| rows(strict).parse(line).unwrap_err();
        assert!(error(b"not json", false).starts_with("not a JSON object"));
        assert!(error(b"[1, 2]", false).starts_with("not a JSON object"));
        assert!(error(br#"{"id": "seven"}"#, false).contains("field id: `seven` is not a BIGINT"));
        assert!(error(br#"{"id": 1.5}"#, false).contains("field id: `1.5` is not a whole number, as a BIGINT must be"));
        assert!(error(br#"{"id": 15e-1}"#, false).contains("is not a whole number"));
        assert!(error(br#"{"id": 1e30}"#, false).contains("is not a BIGINT"), "past the type's range");
        assert!(error(br#"{"id": 1e99999999999}"#, false).contains("is not a BIGINT"), "past any range");
        assert!(error(br#"{"id": true}"#, false).contains("`true` is not a BIGINT"));
        assert!(error(br#"{"nested": 3}"#, false).contains("field nested"));
        assert!(error(br#"{"ts": "yesterday"}"#, false).contains("field ts"));
        assert_eq!(error(br#"{"id": 1}"#, true), "no field price");
        assert!(error(br#"{"id": ""}"#, false).contains("field id: an empty string is not a BIGINT"));
        let nested = br#"{"id": 1, "price": 1, "name": "", "ts": null, "ok": null, "x": null, "nested": {"a": 1}}"#;
        assert_eq!(error(nested, true), "field nested: no field b", "strict at every level");
    }
}
