//! Built-in scalar functions, as Flink defines them: `LOWER`, `UPPER`, `CHAR_LENGTH`,
//! `DATE_FORMAT`, `REGEXP_EXTRACT`, `SPLIT_INDEX` and `PROCTIME` (what the Nexmark suite calls).
//!
//! Arguments that configure a function — a date pattern, a regular expression, a separator, an
//! index — must be constants. They are checked and compiled once, when the query is planned, so
//! a bad pattern is an error with its position instead of a `NULL` on every row (Flink logs an
//! error per row and returns `NULL`).

use std::fmt;
use std::sync::Arc;

use crate::types::{civil_from_days, SqlType, Value};

/// The names of the built-in functions.
pub const NAMES: [&str; 7] =
    ["LOWER", "UPPER", "CHAR_LENGTH", "DATE_FORMAT", "REGEXP_EXTRACT", "SPLIT_INDEX", "PROCTIME"];

/// A built-in function, with its constant arguments compiled.
#[derive(Clone, Debug)]
pub enum Builtin {
    /// `LOWER(s)`.
    Lower,
    /// `UPPER(s)`.
    Upper,
    /// `CHAR_LENGTH(s)`: characters (code points, as Flink counts them).
    CharLength,
    /// `DATE_FORMAT(ts, 'pattern')`.
    DateFormat(DatePattern),
    /// `REGEXP_EXTRACT(s, 'regex'[, group])`: the group of the first match, `NULL` when none.
    RegexpExtract {
        /// The expression, compiled.
        regex: Arc<regex::Regex>,
        /// The group (0: the whole match).
        group: usize,
    },
    /// `PROCTIME()`: the processing time, read through the runtime seam (`weir_core::rt`, which
    /// the simulator drives), as a timestamp. A column holding it is a processing-time attribute
    /// (see `crate::proctime`).
    Proctime,
    /// `SPLIT_INDEX(s, 'separator', index)`: the `index`-th piece (from 0), `NULL` past the end.
    SplitIndex {
        /// What separates the pieces (a string, not a pattern).
        separator: Arc<str>,
        /// Which piece.
        index: usize,
    },
}

impl PartialEq for Builtin {
    fn eq(&self, other: &Self) -> bool {
        use Builtin::*;
        match (self, other) {
            (Lower, Lower) | (Upper, Upper) | (CharLength, CharLength) | (Proctime, Proctime) => true,
            (DateFormat(a), DateFormat(b)) => a == b,
            (RegexpExtract { regex: a, group: g }, RegexpExtract { regex: b, group: h }) => {
                a.as_str() == b.as_str() && g == h
            }
            (SplitIndex { separator: a, index: i }, SplitIndex { separator: b, index: j }) => a == b && i == j,
            _ => false,
        }
    }
}

impl Builtin {
    /// The call as SQL writes it (for `EXPLAIN`): its name, `arguments`, then the constant
    /// arguments compiled into it.
    pub fn write_call(&self, f: &mut fmt::Formatter<'_>, arguments: &[impl fmt::Display]) -> fmt::Result {
        let name = match self {
            Builtin::Lower => "LOWER",
            Builtin::Upper => "UPPER",
            Builtin::CharLength => "CHAR_LENGTH",
            Builtin::DateFormat(_) => "DATE_FORMAT",
            Builtin::RegexpExtract { .. } => "REGEXP_EXTRACT",
            Builtin::Proctime => "PROCTIME",
            Builtin::SplitIndex { .. } => "SPLIT_INDEX",
        };
        write!(f, "{name}(")?;
        for (index, argument) in arguments.iter().enumerate() {
            write!(f, "{}{argument}", if index > 0 { ", " } else { "" })?;
        }
        match self {
            Builtin::DateFormat(pattern) => write!(f, ", '{pattern}')"),
            Builtin::RegexpExtract { regex, group } => {
                write!(f, ", '{}', {group})", regex.as_str().replace('\'', "''"))
            }
            Builtin::SplitIndex { separator, index } => write!(f, ", '{}', {index})", separator.replace('\'', "''")),
            _ => f.write_str(")"),
        }
    }
}

/// A call's arguments as the planner sees them: each one's type, and its value if it is a
/// constant.
pub struct Argument {
    /// Its type.
    pub ty: SqlType,
    /// Its value, if it reads no column.
    pub constant: Option<Value>,
}

/// A resolved call.
pub struct Resolved {
    /// The function, its constant arguments compiled in.
    pub builtin: Builtin,
    /// Which arguments are evaluated per row.
    pub per_row: Vec<usize>,
    /// The result's type.
    pub ty: SqlType,
}

/// What `NAME(args…)` is (see [`Resolved`]). `None`: no such built-in function.
pub fn resolve(name: &str, args: &[Argument]) -> Option<Result<Resolved, String>> {
    let text = |index: usize, what: &str| -> Result<String, String> {
        match args.get(index).and_then(|a| a.constant.as_ref()) {
            Some(Value::Str(s)) => Ok(s.to_string()),
            _ => Err(format!("{name}'s {what} must be a constant string")),
        }
    };
    let integer = |index: usize, what: &str| -> Result<i64, String> {
        match args.get(index).and_then(|a| a.constant.as_ref()) {
            Some(Value::Int(n)) => Ok(*n),
            _ => Err(format!("{name}'s {what} must be a constant integer")),
        }
    };
    let is = |index: usize, ty: &SqlType| args.get(index).is_some_and(|a| a.ty == *ty || a.ty == SqlType::Null);
    let arity = |n: &[usize]| -> Result<(), String> {
        if n.contains(&args.len()) {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {} arguments (docs/sql.md)",
                n.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" or ")
            ))
        }
    };
    let string_argument = |index: usize| -> Result<(), String> {
        if is(index, &SqlType::Varchar) {
            Ok(())
        } else {
            Err(format!("{name} takes a string, not {}", args[index].ty))
        }
    };
    let resolved = match name {
        "LOWER" | "UPPER" | "CHAR_LENGTH" => (|| {
            arity(&[1])?;
            string_argument(0)?;
            Ok(match name {
                "LOWER" => (Builtin::Lower, vec![0], SqlType::Varchar),
                "UPPER" => (Builtin::Upper, vec![0], SqlType::Varchar),
                _ => (Builtin::CharLength, vec![0], SqlType::INT),
            })
        })(),
        "PROCTIME" => (|| {
            arity(&[0])?;
            Ok((Builtin::Proctime, vec![], SqlType::Timestamp))
        })(),
        "DATE_FORMAT" => (|| {
            arity(&[2])?;
            if !is(0, &SqlType::Timestamp) {
                return Err(format!("DATE_FORMAT takes a TIMESTAMP first, not {}", args[0].ty));
            }
            let pattern = DatePattern::parse(&text(1, "pattern")?)?;
            Ok((Builtin::DateFormat(pattern), vec![0], SqlType::Varchar))
        })(),
        "REGEXP_EXTRACT" => (|| {
            arity(&[2, 3])?;
            string_argument(0)?;
            let source = text(1, "regular expression")?;
            let regex =
                regex::Regex::new(&source).map_err(|e| format!("REGEXP_EXTRACT: bad regular expression: {e}"))?;
            let group = if args.len() == 3 { integer(2, "group")? } else { 0 };
            if group < 0 || group as usize >= regex.captures_len() {
                return Err(format!("REGEXP_EXTRACT: the expression has no group {group}"));
            }
            Ok((Builtin::RegexpExtract { regex: Arc::new(regex), group: group as usize }, vec![0], SqlType::Varchar))
        })(),
        "SPLIT_INDEX" => (|| {
            arity(&[3])?;
            string_argument(0)?;
            let separator = text(1, "separator")?;
            if separator.is_empty() {
                return Err("SPLIT_INDEX: the separator must not be empty".into());
            }
            let index = integer(2, "index")?;
            if index < 0 {
                return Err("SPLIT_INDEX: the index must not be negative (it counts from 0)".into());
            }
            let builtin = Builtin::SplitIndex { separator: Arc::from(separator), index: index as usize };
            Ok((builtin, vec![0], SqlType::Varchar))
        })(),
        _ => return None,
    };
    Some(resolved.map(|(builtin, per_row, ty)| Resolved { builtin, per_row, ty }))
}

impl Builtin {
    /// The function of the row-evaluated arguments' values (`NULL` in, `NULL` out).
    pub fn eval(&self, values: &[Value]) -> Value {
        if let Builtin::Proctime = self {
            return Value::Millis(weir_core::rt::processing_time_ms());
        }
        let text = match values.first() {
            Some(Value::Str(s)) => s,
            Some(Value::Millis(ms)) => {
                let Builtin::DateFormat(pattern) = self else { unreachable!("only DATE_FORMAT takes a timestamp") };
                return Value::Str(Arc::from(pattern.format(*ms)));
            }
            _ => return Value::Null,
        };
        match self {
            Builtin::Lower => Value::Str(Arc::from(text.to_lowercase())),
            Builtin::Upper => Value::Str(Arc::from(text.to_uppercase())),
            Builtin::CharLength => Value::Int(text.chars().count() as i64),
            Builtin::DateFormat(_) => unreachable!("DATE_FORMAT takes a timestamp"),
            Builtin::Proctime => unreachable!("handled above"),
            Builtin::RegexpExtract { regex, group } => regex
                .captures(text)
                .and_then(|captures| captures.get(*group))
                .map_or(Value::Null, |m| Value::Str(Arc::from(m.as_str()))),
            Builtin::SplitIndex { separator, index } => {
                if text.is_empty() {
                    return Value::Null;
                }
                text.split(&**separator).nth(*index).map_or(Value::Null, |piece| Value::Str(Arc::from(piece)))
            }
        }
    }
}

/// A `DATE_FORMAT` pattern: Java's date-time pattern letters `yyyy`/`yy`, `MM`/`M`, `dd`/`d`,
/// `HH`/`H`, `mm`/`m`, `ss`/`s` and `S…` (fraction digits), text in single quotes (`''` for a
/// quote), and any other character but a letter as itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatePattern(Vec<DatePart>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum DatePart {
    Text(String),
    /// A field, zero-padded to `width` digits.
    Field(Field, usize),
    /// A two-digit year.
    ShortYear,
    /// The first `digits` digits of the second's fraction.
    Fraction(usize),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// The pattern as Java writes it (quoted text, letters repeated to their width).
impl fmt::Display for DatePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                DatePart::Text(text) if text.chars().any(|c| c.is_ascii_alphabetic() || c == '\'') => {
                    write!(f, "''{}''", text.replace('\'', "''''"))?
                }
                DatePart::Text(text) => f.write_str(text)?,
                DatePart::ShortYear => f.write_str("yy")?,
                DatePart::Fraction(width) => f.write_str(&"S".repeat(*width))?,
                DatePart::Field(field, width) => {
                    let letter = match field {
                        Field::Year => "y",
                        Field::Month => "M",
                        Field::Day => "d",
                        Field::Hour => "H",
                        Field::Minute => "m",
                        Field::Second => "s",
                    };
                    f.write_str(&letter.repeat(*width))?
                }
            }
        }
        Ok(())
    }
}

impl DatePattern {
    fn parse(pattern: &str) -> Result<DatePattern, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    text.push('\'');
                    continue;
                }
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            text.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => text.push(c),
                        None => {
                            return Err(format!("DATE_FORMAT: the pattern '{pattern}' opens a quote it does not close"))
                        }
                    }
                }
                continue;
            }
            if matches!(c, '[' | ']' | '{' | '}' | '#') {
                return Err(format!(
                    "DATE_FORMAT: `{c}` is reserved in date patterns (optional sections are not supported); quote it \
                     as '{c}' to print it"
                ));
            }
            if !c.is_ascii_alphabetic() {
                text.push(c);
                continue;
            }
            let mut width = 1;
            while chars.peek() == Some(&c) {
                chars.next();
                width += 1;
            }
            if !text.is_empty() {
                parts.push(DatePart::Text(std::mem::take(&mut text)));
            }
            let part = match (c, width) {
                ('y', 2) => DatePart::ShortYear,
                ('y', _) => DatePart::Field(Field::Year, width),
                ('M', 1 | 2) => DatePart::Field(Field::Month, width),
                ('d', 1 | 2) => DatePart::Field(Field::Day, width),
                ('H', 1 | 2) => DatePart::Field(Field::Hour, width),
                ('m', 1 | 2) => DatePart::Field(Field::Minute, width),
                ('s', 1 | 2) => DatePart::Field(Field::Second, width),
                ('S', 1..=3) => DatePart::Fraction(width),
                _ => {
                    return Err(format!(
                        "DATE_FORMAT: pattern letters {} are not supported (supported: yyyy, yy, MM, dd, HH, mm, ss, \
                         SSS, and text in single quotes)",
                        c.to_string().repeat(width)
                    ))
                }
            };
            parts.push(part);
        }
        if !text.is_empty() {
            parts.push(DatePart::Text(text));
        }
        Ok(DatePattern(parts))
    }

    fn format(&self, ms: i64) -> String {
        let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
        let in_day = ms.rem_euclid(86_400_000);
        let mut out = String::new();
        for part in &self.0 {
            match part {
                DatePart::Text(text) => out.push_str(text),
                DatePart::ShortYear => out.push_str(&format!("{:02}", year.rem_euclid(100))),
                DatePart::Field(field, width) => {
                    let value = match field {
                        Field::Year => year,
                        Field::Month => month as i64,
                        Field::Day => day as i64,
                        Field::Hour => in_day / 3_600_000,
                        Field::Minute => in_day / 60_000 % 60,
                        Field::Second => in_day / 1_000 % 60,
                    };
                    out.push_str(&format!("{value:0width$}"));
                }
                DatePart::Fraction(digits) => {
                    out.push_str(&format!("{:03}", in_day % 1_000)[..*digits]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &[(SqlType, Option<Value>)], values: &[Value]) -> Result<Value, String> {
        let args: Vec<Argument> =
            args.iter().map(|(ty, constant)| Argument { ty: ty.clone(), constant: constant.clone() }).collect();
        let resolved = resolve(name, &args).expect("a built-in")?;
        Ok(resolved.builtin.eval(values))
    }

    fn text(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    #[test]
    fn functions_as_flink_defines_them() {
        let string = (SqlType::Varchar, None);
        let constant = |s: &str| (SqlType::Varchar, Some(text(s)));
        let index = |n: i64| (SqlType::INT, Some(Value::Int(n)));
        // 2023-11-14 22:13:20.045
        let ts = Value::Millis(1_700_000_000_045);
        let stamp = (SqlType::Timestamp, None);
        assert_eq!(
            call("DATE_FORMAT", &[stamp.clone(), constant("yyyy-MM-dd")], std::slice::from_ref(&ts)),
            Ok(text("2023-11-14"))
        );
        assert_eq!(
            call("DATE_FORMAT", &[stamp.clone(), constant("HH:mm")], std::slice::from_ref(&ts)),
            Ok(text("22:13"))
        );
        assert_eq!(
            call("DATE_FORMAT", &[stamp.clone(), constant("yy/M/d H:m:s.SSS 'at' ''")], std::slice::from_ref(&ts)),
            Ok(text("23/11/14 22:13:20.045 at '"))
        );
        assert_eq!(call("DATE_FORMAT", &[stamp.clone(), constant("yyyy")], &[Value::Null]), Ok(Value::Null));
        assert!(call("DATE_FORMAT", &[stamp, constant("EEE")], &[ts]).unwrap_err().contains("EEE are not supported"));

        let url = "https://www.nexmark.com/apple/item.htm?query=1&channel_id=7";
        let extract = [string.clone(), constant("(&|^)channel_id=([^&]*)"), index(2)];
        assert_eq!(call("REGEXP_EXTRACT", &extract, &[text(url)]), Ok(text("7")));
        assert_eq!(call("REGEXP_EXTRACT", &extract, &[text("query=1")]), Ok(Value::Null), "no match");
        assert!(call("REGEXP_EXTRACT", &[string.clone(), constant("(a"), index(1)], &[])
            .unwrap_err()
            .contains("bad regular"));
        assert!(call("REGEXP_EXTRACT", &[string.clone(), constant("(a)"), index(2)], &[])
            .unwrap_err()
            .contains("no group 2"));

        let split = |n: i64| [string.clone(), constant("/"), index(n)];
        assert_eq!(call("SPLIT_INDEX", &split(3), &[text(url)]), Ok(text("apple")));
        assert_eq!(call("SPLIT_INDEX", &split(1), &[text(url)]), Ok(text("")), "tokens between separators kept");
        assert_eq!(call("SPLIT_INDEX", &split(5), &[text(url)]), Ok(Value::Null), "past the end");
        assert_eq!(call("SPLIT_INDEX", &split(0), &[text("")]), Ok(Value::Null), "nothing to split");
        assert!(call("SPLIT_INDEX", &split(-1), &[]).unwrap_err().contains("must not be negative"));

        assert_eq!(call("LOWER", std::slice::from_ref(&string), &[text("Apple")]), Ok(text("apple")));
        assert_eq!(call("UPPER", std::slice::from_ref(&string), &[text("Apple")]), Ok(text("APPLE")));
        assert_eq!(call("CHAR_LENGTH", std::slice::from_ref(&string), &[text("añ😀")]), Ok(Value::Int(3)));
        assert!(call("LOWER", &[(SqlType::BIGINT, None)], &[]).unwrap_err().contains("takes a string, not BIGINT"));
        assert!(resolve("NO_SUCH", &[]).is_none());
    }
}
