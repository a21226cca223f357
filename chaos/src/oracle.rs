//! The exactly-once oracle: what a run committed, compared with what it should have.
//!
//! Committed output is the set of non-hidden files directly in the output directory (and in
//! `late/`, `errors/`); anything staged is hidden and ignored. Rows are compared as sorted
//! multisets, so a lost row, a duplicated row or a wrong value all show up as a difference.

use std::path::Path;

use weir_core::fs;

use crate::reference::{ErrorLine, Expected};

/// Reads the committed output under `dir`.
pub fn committed_output(dir: &Path) -> std::io::Result<Expected> {
    let mut output = Expected {
        rows: committed_lines(dir, "window_start,window_end,auction,bids,sum_price,max_price")?,
        late: committed_lines(&dir.join("late"), "auction,bidder,price,date_time")?,
        errors: Vec::new(),
    };
    for line in committed_csv_records(&dir.join("errors"), "file,line,reason,record")? {
        let mut fields = split_csv(&line).into_iter();
        let mut next = || fields.next().unwrap_or_default();
        let (file, number, reason, record) = (next(), next(), next(), next());
        output.errors.push(ErrorLine { file, line: number.parse().unwrap_or(0), reason, record });
    }
    output.errors.sort();
    Ok(output)
}

/// The committed (visible) files of a sink directory, sorted.
fn committed_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<_> = entries
        .into_iter()
        .filter(|entry| !entry.is_dir && !entry.name.starts_with(['.', '_']))
        .map(|e| e.path)
        .collect();
    files.sort();
    Ok(files)
}

fn committed_lines(dir: &Path, header: &str) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    for file in committed_files(dir)? {
        let content = fs::read_to_string(&file)?;
        let mut file_lines = content.lines();
        assert_eq!(file_lines.next(), Some(header), "{} has a wrong header", file.display());
        lines.extend(file_lines.map(str::to_string));
    }
    lines.sort();
    Ok(lines)
}

/// Committed CSV records, honouring quoted fields that span lines.
fn committed_csv_records(dir: &Path, header: &str) -> std::io::Result<Vec<String>> {
    let mut records = Vec::new();
    for file in committed_files(dir)? {
        let content = fs::read_to_string(&file)?;
        let mut file_records = Vec::new();
        let mut current = String::new();
        let mut quotes = 0usize;
        for line in content.split_inclusive('\n') {
            current.push_str(line);
            quotes += line.matches('"').count();
            if quotes.is_multiple_of(2) {
                file_records.push(current.trim_end_matches('\n').to_string());
                current.clear();
                quotes = 0;
            }
        }
        assert_eq!(file_records.first().map(String::as_str), Some(header), "{} has a wrong header", file.display());
        records.extend(file_records.into_iter().skip(1));
    }
    Ok(records)
}

/// Splits one CSV record into fields, unquoting.
pub fn split_csv(record: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = record.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("field").push(c),
        }
    }
    fields
}

/// Describes how `actual` differs from `expected` (empty when they are equal).
pub fn difference(expected: &Expected, actual: &Expected) -> String {
    let mut report = String::new();
    for (name, want, got) in [("rows", &expected.rows, &actual.rows), ("late", &expected.late, &actual.late)] {
        if want != got {
            let missing: Vec<_> = multiset_minus(want, got);
            let extra: Vec<_> = multiset_minus(got, want);
            report.push_str(&format!(
                "{name}: expected {} got {}; missing {} (e.g. {:?}), unexpected {} (e.g. {:?})\n",
                want.len(),
                got.len(),
                missing.len(),
                missing.iter().take(3).collect::<Vec<_>>(),
                extra.len(),
                extra.iter().take(3).collect::<Vec<_>>()
            ));
        }
    }
    if expected.errors != actual.errors {
        let missing = multiset_minus(&expected.errors, &actual.errors);
        let extra = multiset_minus(&actual.errors, &expected.errors);
        report.push_str(&format!(
            "errors: expected {} got {}; missing {:?}, unexpected {:?}\n",
            expected.errors.len(),
            actual.errors.len(),
            missing.iter().take(3).collect::<Vec<_>>(),
            extra.iter().take(3).collect::<Vec<_>>()
        ));
    }
    report
}

/// Describes what `actual` holds beyond `expected` — duplicated or wrong rows, late records or
/// errors (empty when `actual` is a sub-multiset of `expected`: output of a job that stopped
/// early, none of it wrong).
pub fn excess(expected: &Expected, actual: &Expected) -> String {
    let mut report = String::new();
    for (name, want, got) in [("rows", &expected.rows, &actual.rows), ("late", &expected.late, &actual.late)] {
        let extra = multiset_minus(got, want);
        if !extra.is_empty() {
            report.push_str(&format!(
                "{name}: {} unexpected (duplicated or wrong), e.g. {:?}\n",
                extra.len(),
                extra.iter().take(3).collect::<Vec<_>>()
            ));
        }
    }
    let wrong_errors = multiset_minus(&actual.errors, &expected.errors);
    if !wrong_errors.is_empty() {
        report.push_str(&format!("errors: unexpected {wrong_errors:?}\n"));
    }
    report
}

/// `left` minus `right`, both sorted, as multisets.
fn multiset_minus<'a, T: Ord>(left: &'a [T], right: &[T]) -> Vec<&'a T> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < left.len() {
        if j < right.len() && left[i] == right[j] {
            i += 1;
            j += 1;
        } else if j < right.len() && right[j] < left[i] {
            j += 1;
        } else {
            out.push(&left[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_split_unquotes() {
        assert_eq!(split_csv("a,\"b,\"\"c\"\"\",d"), vec!["a", "b,\"c\"", "d"]);
    }

    #[test]
    fn difference_sees_duplicates_and_losses() {
        let expected = Expected { rows: vec!["a".into(), "b".into()], ..Default::default() };
        let duplicated = Expected { rows: vec!["a".into(), "a".into(), "b".into()], ..Default::default() };
        let lost = Expected { rows: vec!["b".into()], ..Default::default() };
        assert!(difference(&expected, &expected).is_empty());
        assert!(difference(&expected, &duplicated).contains("unexpected 1"));
        assert!(difference(&expected, &lost).contains("missing 1"));
        assert!(excess(&expected, &lost).is_empty(), "a stopped job's output is a part of the reference");
        assert!(excess(&expected, &duplicated).contains("1 unexpected"));
        let wrong = Expected { rows: vec!["c".into()], ..Default::default() };
        assert!(excess(&expected, &wrong).contains("1 unexpected"));
    }
}
