//! The `datagen` connector: rows of random or sequential values, as Flink's, but reproducible.
//!
//! Flink's `datagen` draws from an unseeded random generator and stamps timestamps with the
//! wall clock, so no two runs agree. Weir's draws each value from a hash of the table's `seed`,
//! the row's index and the column, and makes row `i`'s time `2023-11-14 22:13:20` plus
//! `i / rows-per-second` seconds: a row is a function of its index alone, so a restore
//! regenerates exactly the rows it replays, at any parallelism, and the simulator replays a run
//! bit for bit. The options are Flink's:
//!
//! - `'number-of-rows'` — how many rows (Weir's jobs are bounded: required unless a sequence
//!   column bounds them, as in Flink, where the shortest sequence ends the table);
//! - `'rows-per-second'` (default 10 000) — how far apart rows are in event time (pacing the
//!   job in wall-clock time is the engine's `--rate`);
//! - per column, `'fields.NAME.kind'` = `'random'` (default) or `'sequence'`; for random values
//!   `'fields.NAME.min'` / `'.max'` (numbers; default: the type's range, as Flink's),
//!   `'.length'` (text; default 100 hex digits, as Flink's), `'.max-past'` (timestamps: how far
//!   before the row's time, at random; default 0), `'.null-rate'` (default 0); for sequences
//!   `'fields.NAME.start'` and `'.end'`, row `i` taking `start + i`;
//! - `'seed'` (Weir's) — the random values' seed (default 0).

use std::collections::BTreeMap;

use crate::parser::{SqlError, TableDef};
use crate::types::{IntegerWidth, Row, SqlType, Value};

/// The time of row 0 (Nexmark's base time, so that the two generators line up).
const BASE_TIME: i64 = 1_700_000_000_000;

/// A `datagen` table's configuration.
#[derive(Clone, Debug)]
pub struct Datagen {
    /// How many rows.
    pub rows: u64,
    /// Rows per second of event time.
    pub rows_per_second: u64,
    /// The random values' seed.
    pub seed: u64,
    /// How each physical column is generated, in order.
    pub fields: Vec<Field>,
}

/// How one column's values are made.
#[derive(Clone, Debug)]
pub struct Field {
    ty: SqlType,
    kind: Kind,
    null_rate: f64,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Uniform in `[min, max]`: integers, unscaled decimals, or milliseconds back for
    /// timestamps (`max` is `max-past`).
    Integers { min: i128, max: i128 },
    /// Uniform in `[min, max)`.
    Doubles { min: f64, max: f64 },
    /// `length` random hex digits.
    Text { length: usize },
    /// `true` or `false`.
    Boolean,
    /// `start + i`, for row `i`.
    Sequence { start: i128, end: i128 },
}

impl Datagen {
    /// Row `index` (physical columns, in order).
    pub fn row(&self, index: u64) -> Row {
        self.fields
            .iter()
            .enumerate()
            .map(|(column, field)| field.value(self.seed, index, column, self.rows_per_second))
            .collect()
    }
}

impl Field {
    fn value(&self, seed: u64, index: u64, column: usize, rows_per_second: u64) -> Value {
        let mut random = Random::new(seed, index, column);
        if self.null_rate > 0.0 && random.unit() < self.null_rate {
            return Value::Null;
        }
        let time = BASE_TIME + (index as i128 * 1000 / rows_per_second as i128) as i64;
        match (&self.kind, &self.ty) {
            (Kind::Sequence { start, end }, _) if start + index as i128 > *end => {
                unreachable!("row {index} past the sequence {start}..{end}: the rows are capped at its length")
            }
            (Kind::Sequence { start, .. }, SqlType::Decimal { scale, .. }) => {
                Value::Decimal { unscaled: (start + index as i128) * 10i128.pow(u32::from(*scale)), scale: *scale }
            }
            (Kind::Sequence { start, .. }, ty) => number(start + index as i128, ty),
            (Kind::Integers { min, max }, SqlType::Timestamp) => {
                Value::Millis(time - random.between(*min, *max) as i64)
            }
            // A random decimal's bounds are unscaled.
            (Kind::Integers { min, max }, SqlType::Decimal { scale, .. }) => {
                Value::Decimal { unscaled: random.between(*min, *max), scale: *scale }
            }
            (Kind::Integers { min, max }, ty) => number(random.between(*min, *max), ty),
            (Kind::Doubles { min, max }, _) => Value::Double(min + (max - min) * random.unit()),
            (Kind::Text { length }, _) => {
                let text: String =
                    (0..*length).map(|_| char::from(b"0123456789abcdef"[random.next() as usize % 16])).collect();
                Value::Str(text.into())
            }
            (Kind::Boolean, _) => Value::Bool(random.next() & 1 == 1),
        }
    }
}

/// `n` as a value of the integer, double or text type `ty`.
fn number(n: i128, ty: &SqlType) -> Value {
    match ty {
        SqlType::Integer(_) => Value::Int(n as i64),
        SqlType::Double => Value::Double(n as f64),
        SqlType::Varchar => Value::Str(n.to_string().into()),
        other => unreachable!("a number as {other}"),
    }
}

/// SplitMix64 from a hash of the seed, row and column: each value's stream a function of its
/// place, and unrelated to its neighbours' (a linear combination of the three would make row
/// `i + 1`'s stream row `i`'s, one step on).
struct Random(u64);

impl Random {
    fn new(seed: u64, index: u64, column: usize) -> Random {
        Random(mix(seed ^ mix(index ^ mix(column as u64 + 1))))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[min, max]` (`min <= max`), in two's complement so that no span overflows.
    fn between(&mut self, min: i128, max: i128) -> i128 {
        let span = (max as u128).wrapping_sub(min as u128).wrapping_add(1);
        let draw = (u128::from(self.next()) << 64) | u128::from(self.next());
        let offset = if span == 0 { draw } else { draw % span };
        (min as u128).wrapping_add(offset) as i128
    }
}

/// SplitMix64's finalizer: a bijective hash of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `datagen` connector of `table`, checked against its physical columns.
pub fn source(table: &TableDef) -> Result<Datagen, SqlError> {
    let error = |message: String| SqlError::at(table.at, format!("table {}: {message}", table.name));
    let columns: BTreeMap<&str, &SqlType> = table.physical().map(|(c, ty)| (c.name.as_str(), ty)).collect();
    const FIELD_OPTIONS: &[&str] = &["kind", "min", "max", "length", "max-past", "null-rate", "start", "end"];
    for key in table.options.keys() {
        match key.as_str() {
            "connector" | "number-of-rows" | "rows-per-second" | "seed" => {}
            _ => {
                let field = key.strip_prefix("fields.").and_then(|rest| rest.rsplit_once('.'));
                match field {
                    Some((name, option)) if columns.contains_key(name) && FIELD_OPTIONS.contains(&option) => {}
                    Some((name, _)) if !columns.contains_key(name) => {
                        return Err(error(format!("option '{key}' names no physical column {name}")))
                    }
                    _ => {
                        return Err(error(format!(
                            "option '{key}' is not supported by the datagen connector; it takes number-of-rows, \
                             rows-per-second, seed and fields.NAME.{{{}}}",
                            FIELD_OPTIONS.join(", ")
                        )))
                    }
                }
            }
        }
    }
    let option = |key: &str| table.options.get(key).map(String::as_str);
    let whole = |key: &str| -> Result<Option<i128>, SqlError> {
        option(key)
            .map(|text| {
                text.trim()
                    .parse::<i128>()
                    .map_err(|_| error(format!("option '{key}' must be a whole number, not '{text}'")))
            })
            .transpose()
    };
    let real = |key: &str| -> Result<Option<f64>, SqlError> {
        option(key)
            .map(|text| {
                text.trim().parse::<f64>().map_err(|_| error(format!("option '{key}' must be a number, not '{text}'")))
            })
            .transpose()
    };
    let mut fields = Vec::new();
    let mut shortest_sequence: Option<u64> = None;
    for (column, ty) in table.physical() {
        let name = &column.name;
        let key = |option: &str| format!("fields.{name}.{option}");
        let null_rate = real(&key("null-rate"))?.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&null_rate) {
            return Err(error(format!("'{}' must be from 0 to 1", key("null-rate"))));
        }
        if null_rate > 0.0 && table.watermark.as_ref().is_some_and(|w| w.column == *name) {
            // Flink fails the job on a NULL time attribute; a row without a time has no place.
            return Err(SqlError::at(
                column.at,
                format!(
                    "table {}: {name} is the WATERMARK's column, which must not be NULL: remove '{}'",
                    table.name,
                    key("null-rate")
                ),
            ));
        }
        let refuse_unless = |allowed: &[&str]| -> Result<(), SqlError> {
            for option in FIELD_OPTIONS {
                if !allowed.contains(option) && table.options.contains_key(&key(option)) {
                    return Err(SqlError::at(
                        column.at,
                        format!("table {}: '{}' does not apply to this {ty} column", table.name, key(option)),
                    ));
                }
            }
            Ok(())
        };
        let kind = match option(&key("kind")).unwrap_or("random") {
            "sequence" => {
                refuse_unless(&["kind", "start", "end", "null-rate"])?;
                if !matches!(ty, SqlType::Integer(_) | SqlType::Decimal { .. } | SqlType::Double | SqlType::Varchar) {
                    return Err(SqlError::at(
                        column.at,
                        format!("table {}: a sequence of {ty} is not supported", table.name),
                    ));
                }
                let (Some(start), Some(end)) = (whole(&key("start"))?, whole(&key("end"))?) else {
                    return Err(SqlError::at(
                        column.at,
                        format!("table {}: a sequence needs '{}' and '{}'", table.name, key("start"), key("end")),
                    ));
                };
                // Within BIGINT for every type, so that `start + i` never overflows.
                let within_bigint = |n: i128| i64::try_from(n).is_ok();
                if end < start
                    || !within_bigint(start)
                    || !within_bigint(end)
                    || fits(end, ty).is_none()
                    || fits(start, ty).is_none()
                {
                    return Err(SqlError::at(
                        column.at,
                        format!("table {}: the sequence {start}..{end} does not fit {ty}", table.name),
                    ));
                }
                let length = u64::try_from(end - start + 1).unwrap_or(u64::MAX);
                shortest_sequence = Some(shortest_sequence.map_or(length, |s| s.min(length)));
                Kind::Sequence { start, end }
            }
            "random" => match ty {
                SqlType::Integer(width) => {
                    refuse_unless(&["kind", "min", "max", "null-rate"])?;
                    let (low, high) = width_range(*width);
                    let (min, max) = (whole(&key("min"))?.unwrap_or(low), whole(&key("max"))?.unwrap_or(high));
                    if min > max || min < low || max > high {
                        return Err(SqlError::at(
                            column.at,
                            format!("table {}: {name}'s min {min} and max {max} do not fit {ty}", table.name),
                        ));
                    }
                    Kind::Integers { min, max }
                }
                SqlType::Decimal { precision, .. } => {
                    refuse_unless(&["kind", "min", "max", "null-rate"])?;
                    let limit = 10i128.pow(u32::from(*precision)) - 1;
                    // Read exactly, as a value of the column's type (NULL: past its precision).
                    let bound = |key: String, default: i128| -> Result<Option<i128>, SqlError> {
                        match option(&key) {
                            None => Ok(Some(default)),
                            Some(text) => match crate::types::read_csv_field(text.trim(), ty) {
                                Ok(Value::Decimal { unscaled, .. }) => Ok(Some(unscaled)),
                                Ok(_) => Ok(None),
                                Err(_) => Err(error(format!("option '{key}' must be a number, not '{text}'"))),
                            },
                        }
                    };
                    let (min, max) = match (bound(key("min"), -limit)?, bound(key("max"), limit)?) {
                        (Some(min), Some(max)) => (min, max),
                        _ => (1, 0),
                    };
                    if min > max {
                        return Err(SqlError::at(
                            column.at,
                            format!("table {}: {name}'s min and max do not fit {ty}", table.name),
                        ));
                    }
                    Kind::Integers { min, max }
                }
                SqlType::Double => {
                    refuse_unless(&["kind", "min", "max", "null-rate"])?;
                    let (min, max) =
                        // Java's `Double.MIN_VALUE` (the least subnormal) and `MAX_VALUE`, as Flink's.
                        (real(&key("min"))?.unwrap_or(f64::from_bits(1)), real(&key("max"))?.unwrap_or(f64::MAX));
                    if !(max - min).is_finite() || min > max {
                        return Err(SqlError::at(
                            column.at,
                            format!(
                                "table {}: {name}'s min must not be above its max, nor the two farther apart than a \
                                 DOUBLE holds",
                                table.name
                            ),
                        ));
                    }
                    Kind::Doubles { min, max }
                }
                SqlType::Varchar => {
                    refuse_unless(&["kind", "length", "null-rate"])?;
                    let length = whole(&key("length"))?.unwrap_or(100);
                    if !(0..=1 << 20).contains(&length) {
                        return Err(SqlError::at(
                            column.at,
                            format!("table {}: '{}' must be from 0 to 1048576", table.name, key("length")),
                        ));
                    }
                    Kind::Text { length: length as usize }
                }
                SqlType::Boolean => {
                    refuse_unless(&["kind", "null-rate"])?;
                    Kind::Boolean
                }
                SqlType::Timestamp => {
                    refuse_unless(&["kind", "max-past", "null-rate"])?;
                    /// A century: a timestamp that far back is still a valid date.
                    const LONGEST_PAST: i64 = 100 * 366 * 86_400_000;
                    let past = match option(&key("max-past")) {
                        None => 0,
                        Some(text) => weir_core::job::parse_flink_duration_ms(text)
                            .ok()
                            .filter(|past| (0..=LONGEST_PAST).contains(past))
                            .ok_or_else(|| {
                                error(format!(
                                    "'{}' must be a duration such as '5 s' or '1 min', up to a century, not '{text}'",
                                    key("max-past")
                                ))
                            })?,
                    };
                    Kind::Integers { min: 0, max: i128::from(past) }
                }
                other => {
                    return Err(SqlError::at(
                        column.at,
                        format!(
                            "table {}: the datagen connector cannot generate a {other} column ({name}) yet",
                            table.name
                        ),
                    ))
                }
            },
            other => {
                return Err(SqlError::at(
                    column.at,
                    format!("table {}: '{}' is 'random' or 'sequence', not '{other}'", table.name, key("kind")),
                ))
            }
        };
        fields.push(Field { ty: ty.clone(), kind, null_rate });
    }
    let rows = match (whole("number-of-rows")?, shortest_sequence) {
        (Some(rows), _) if rows < 0 => return Err(error("'number-of-rows' must not be negative".into())),
        (Some(rows), sequence) => u64::try_from(rows)
            .map_err(|_| error(format!("'number-of-rows' = '{rows}' is more than {} rows", u64::MAX)))?
            .min(sequence.unwrap_or(u64::MAX)),
        (None, Some(sequence)) => sequence,
        (None, None) => {
            return Err(error(
                "the datagen connector needs 'number-of-rows' (Weir's jobs are bounded), or a sequence column".into(),
            ))
        }
    };
    let rows_per_second = match whole("rows-per-second")? {
        None => 10_000,
        Some(rate) if rate > 0 && rate <= i128::from(u32::MAX) => rate as u64,
        Some(_) => return Err(error(format!("'rows-per-second' must be from 1 to {}", u32::MAX))),
    };
    let seed = match whole("seed")? {
        None => 0,
        Some(seed) => u64::try_from(seed).map_err(|_| error(format!("'seed' must be from 0 to {}", u64::MAX)))?,
    };
    Ok(Datagen { rows, rows_per_second, seed, fields })
}

/// `n` if it fits `ty` (text and doubles take any).
fn fits(n: i128, ty: &SqlType) -> Option<i128> {
    match ty {
        SqlType::Integer(width) => {
            let (low, high) = width_range(*width);
            (low..=high).contains(&n).then_some(n)
        }
        SqlType::Decimal { precision, scale } => {
            let limit = 10i128.checked_pow(u32::from(*precision))?;
            let unscaled = n.checked_mul(10i128.checked_pow(u32::from(*scale))?)?;
            (unscaled.abs() < limit).then_some(n)
        }
        _ => Some(n),
    }
}

fn width_range(width: IntegerWidth) -> (i128, i128) {
    match width {
        IntegerWidth::Tiny => (i8::MIN.into(), i8::MAX.into()),
        IntegerWidth::Small => (i16::MIN.into(), i16::MAX.into()),
        IntegerWidth::Int => (i32::MIN.into(), i32::MAX.into()),
        IntegerWidth::Big => (i64::MIN.into(), i64::MAX.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_script, SqlStatement};

    fn table(columns: &str, options: &str) -> Result<Datagen, String> {
        let script = format!("CREATE TABLE t ({columns}) WITH ('connector' = 'datagen'{options})");
        let Ok(statements) = parse_script(&script) else { panic!("{script}") };
        let SqlStatement::CreateTable(table) = &statements[0] else { panic!("a table") };
        source(table).map_err(|e| e.to_string())
    }

    #[test]
    fn rows_are_a_function_of_their_index_within_the_options_bounds() {
        let columns =
            "id BIGINT, n INT, price DECIMAL(8, 2), x DOUBLE, name VARCHAR, ok BOOLEAN, ts TIMESTAMP(3), gone BIGINT";
        let options = ", 'number-of-rows' = '500', 'rows-per-second' = '100', 'fields.id.kind' = 'sequence', \
                       'fields.id.start' = '10', 'fields.id.end' = '1000', 'fields.n.min' = '-3', 'fields.n.max' = '3', \
                       'fields.price.min' = '0.5', 'fields.price.max' = '2', 'fields.x.min' = '1', 'fields.x.max' = '2', \
                       'fields.name.length' = '6', 'fields.ts.max-past' = '5 s', 'fields.gone.null-rate' = '1'";
        let config = table(columns, options).unwrap();
        assert_eq!(config.rows, 500);
        let rows: Vec<Row> = (0..config.rows).map(|i| config.row(i)).collect();
        assert_eq!(rows, (0..config.rows).map(|i| config.row(i)).collect::<Vec<_>>(), "the same every time");
        let mut seen_n = std::collections::BTreeSet::new();
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row[0], Value::Int(10 + i as i64));
            let Value::Int(n) = row[1] else { panic!("{row:?}") };
            assert!((-3..=3).contains(&n));
            seen_n.insert(n);
            assert!(matches!(row[2], Value::Decimal { unscaled, scale: 2 } if (50..=200).contains(&unscaled)));
            assert!(matches!(row[3], Value::Double(x) if (1.0..2.0).contains(&x)));
            assert!(matches!(&row[4], Value::Str(s) if s.len() == 6 && s.chars().all(|c| c.is_ascii_hexdigit())));
            assert!(matches!(row[5], Value::Bool(_)));
            let time = BASE_TIME + i as i64 * 10;
            assert!(matches!(row[6], Value::Millis(t) if (time - 5_000..=time).contains(&t)), "{row:?}");
            assert_eq!(row[7], Value::Null);
        }
        assert_eq!(seen_n.len(), 7, "every value of the range comes up");
        // Another seed, other values; a sequence alone bounds the rows.
        let other = table(columns, &format!("{options}, 'seed' = '9'")).unwrap();
        assert_ne!(other.row(1)[1..6], config.row(1)[1..6]);
        let bounded =
            table("id INT", ", 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '7'");
        assert_eq!(bounded.unwrap().rows, 7);
    }

    #[test]
    fn wrong_options_are_refused_with_what_to_write() {
        for (columns, options, expected) in [
            ("id INT", "", "needs 'number-of-rows'"),
            ("id INT", ", 'number-of-rows' = '5', 'fields.other.min' = '1'", "names no physical column other"),
            (
                "id INT",
                ", 'number-of-rows' = '5', 'rows' = '1'",
                "option 'rows' is not supported by the datagen connector",
            ),
            ("id INT", ", 'number-of-rows' = '5', 'fields.id.kind' = 'walk'", "'random' or 'sequence', not 'walk'"),
            ("id INT", ", 'number-of-rows' = '5', 'fields.id.min' = '9', 'fields.id.max' = '1'", "do not fit INT"),
            ("id TINYINT", ", 'number-of-rows' = '5', 'fields.id.max' = '1000'", "do not fit TINYINT"),
            ("id INT", ", 'fields.id.kind' = 'sequence', 'fields.id.start' = '1'", "a sequence needs"),
            ("id INT", ", 'number-of-rows' = '5', 'fields.id.length' = '3'", "does not apply to this INT column"),
            ("id INT", ", 'number-of-rows' = '18446744073709551616'", "is more than 18446744073709551615 rows"),
            ("d DECIMAL(38, 0)", ", 'number-of-rows' = '5', 'fields.d.min' = 'NaN'", "must be a number, not 'NaN'"),
            (
                "x DOUBLE",
                ", 'number-of-rows' = '5', 'fields.x.min' = '-1e308', 'fields.x.max' = '1e308'",
                "farther apart",
            ),
            ("t TIMESTAMP(3)", ", 'number-of-rows' = '5', 'fields.t.max-past' = '999999 d'", "up to a century"),
            (
                "t TIMESTAMP(3), WATERMARK FOR t AS t",
                ", 'number-of-rows' = '5', 'fields.t.null-rate' = '0.1'",
                "must not be NULL",
            ),
            (
                "s VARCHAR",
                ", 'fields.s.kind' = 'sequence', 'fields.s.start' = '0', 'fields.s.end' = '99999999999999999999'",
                "does not fit",
            ),
            ("s VARCHAR", ", 'number-of-rows' = 'many'", "must be a whole number"),
            ("r ROW<a INT>", ", 'number-of-rows' = '5'", "cannot generate a ROW<a INT> column"),
        ] {
            let error = table(columns, options).unwrap_err();
            assert!(error.contains(expected) && error.contains("line 1"), "{options}: {error}");
        }
    }
}
