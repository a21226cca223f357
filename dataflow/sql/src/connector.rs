//! Connectors named in `WITH ('connector' = …)`: what a table reads from or writes to.
//!
//! Each connector checks the table's declared columns against what it provides, and its options
//! against what it understands, so that a wrong DDL fails when the job is planned — naming the
//! column or option, and listing what is supported — never with a wrong answer at run time.

use std::sync::Arc;

use weir_core::nexmark::{Event, NexmarkConfig};
use weir_dataflow::source::Generator;

use crate::parser::{SqlError, TableDef};
use crate::types::{IntegerWidth, Row, SqlType, Value};

/// Where a table's rows come from.
#[derive(Clone, Debug)]
pub enum SourceConnector {
    /// The Nexmark generator.
    Nexmark {
        /// Its configuration.
        config: NexmarkConfig,
        /// For each declared physical column, its position in the connector's row.
        columns: Vec<usize>,
    },
    /// Flink's `datagen`, reproducible (see [`crate::datagen`]).
    Datagen(crate::datagen::Datagen),
    /// Files of CSV or JSON lines (Flink's formats, as the filesystem sink writes them).
    Files {
        /// The file, or the directory whose files (not starting with `.` or `_`) are read.
        path: String,
        /// Their format.
        format: FileFormat,
        /// Each physical column's name and type, in order.
        columns: Vec<(String, SqlType)>,
        /// Where malformed lines go (`'errors.path'`); without it a malformed line stops the job.
        errors: Option<String>,
    },
}

/// How a filesystem table's files hold its rows (`'format'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// `'csv'`: Flink's CSV format.
    Csv,
    /// `'changelog-csv'` (sinks): Flink's CSV, each row led by its change (`+I`, `-U`, `+U`,
    /// `-D`), so that the files hold an updating result's changelog.
    ChangelogCsv,
    /// `'json'`: Flink's JSON format, one object per line ([`crate::json`]).
    Json {
        /// `'json.fail-on-missing-field'` (sources).
        fail_on_missing_field: bool,
    },
}

impl FileFormat {
    /// As the `'format'` option names it.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::ChangelogCsv => "changelog-csv",
            FileFormat::Json { .. } => "json",
        }
    }
}

/// Where a table's rows go.
#[derive(Clone, Debug)]
pub enum SinkConnector {
    /// Discards them.
    Blackhole,
    /// Prints them as Flink does (`+I[…]`).
    Print,
    /// Files in a directory, exactly-once.
    Filesystem {
        /// The directory.
        path: String,
        /// Their format (only `'changelog-csv'` takes an updating result).
        format: FileFormat,
        /// The table's columns, names and types (JSON names its fields).
        columns: Vec<(String, SqlType)>,
    },
}

fn connector_name(table: &TableDef) -> Result<&str, SqlError> {
    table.options.get("connector").map(String::as_str).ok_or_else(|| {
        SqlError::at(
            table.at,
            format!("table {} has no 'connector' option: add WITH ('connector' = 'nexmark' | 'datagen' | 'blackhole' | 'print' | 'filesystem', …)", table.name),
        )
    })
}

/// Options a connector understands; anything else is an error naming it.
fn check_options(table: &TableDef, known: &[&str]) -> Result<(), SqlError> {
    for key in table.options.keys() {
        if key != "connector" && !known.contains(&key.as_str()) {
            let mut supported: Vec<&str> = known.to_vec();
            supported.sort();
            return Err(SqlError::at(
                table.at,
                format!(
                    "table {}: option '{key}' is not supported by the {} connector; it takes {}",
                    table.name,
                    table.options["connector"],
                    if supported.is_empty() { "no options".to_owned() } else { supported.join(", ") }
                ),
            ));
        }
    }
    Ok(())
}

/// The source connector of `table`, checked against its declared physical columns.
pub fn source(table: &TableDef) -> Result<SourceConnector, SqlError> {
    if !table.partitioned_by.is_empty() {
        return Err(SqlError::at(table.at, format!("table {}: PARTITIONED BY is not supported yet", table.name)));
    }
    match connector_name(table)? {
        "nexmark" => nexmark_source(table),
        "datagen" => crate::datagen::source(table).map(SourceConnector::Datagen),
        "filesystem" => files_source(table),
        "blackhole" | "print" => Err(SqlError::at(
            table.at,
            format!("table {} is read, but its connector '{}' only writes", table.name, table.options["connector"]),
        )),
        other => Err(SqlError::at(
            table.at,
            format!(
                "connector '{other}' is not supported as a source yet; supported: 'nexmark', 'datagen', 'filesystem'"
            ),
        )),
    }
}

/// The filesystem connector as a source: CSV or JSON files of the table's physical columns.
fn files_source(table: &TableDef) -> Result<SourceConnector, SqlError> {
    check_options(table, &["path", "format", "errors.path", "json.fail-on-missing-field"])?;
    let path = absolute_path(table, "path")?;
    let format = file_format(table, false)?;
    let errors = table.options.contains_key("errors.path").then(|| absolute_path(table, "errors.path")).transpose()?;
    let mut columns = Vec::new();
    for (column, ty) in table.physical() {
        match ty {
            SqlType::Row(_) if format != FileFormat::Csv => columns.push((column.name.clone(), ty.clone())),
            SqlType::Row(_) | SqlType::Interval | SqlType::Null => {
                return Err(SqlError::at(
                    column.at,
                    format!(
                        "table {}: a {ty} column ({}) cannot be read from {} yet",
                        table.name,
                        column.name,
                        format.name()
                    ),
                ));
            }
            _ => columns.push((column.name.clone(), ty.clone())),
        }
    }
    Ok(SourceConnector::Files { path, format, columns, errors })
}

/// An absolute path option (workers may run elsewhere, with another working directory).
fn absolute_path(table: &TableDef, option: &str) -> Result<String, SqlError> {
    let path = table.options.get(option).cloned().ok_or_else(|| {
        SqlError::at(table.at, format!("table {}: the filesystem connector needs '{option}' = '/a/path'", table.name))
    })?;
    if !path.starts_with('/') {
        return Err(SqlError::at(
            table.at,
            format!("table {}: '{option}' must be absolute (workers may run elsewhere): '{path}'", table.name),
        ));
    }
    Ok(path)
}

/// A filesystem table's `'format'` (`'changelog-csv'` only where it is written: `sink`).
fn file_format(table: &TableDef, sink: bool) -> Result<FileFormat, SqlError> {
    let supported = if sink { "'csv', 'json' or 'changelog-csv'" } else { "'csv' or 'json'" };
    let format = match table.options.get("format").map(String::as_str) {
        Some("csv") => FileFormat::Csv,
        Some("changelog-csv") if sink => FileFormat::ChangelogCsv,
        Some("json") => {
            let fail_on_missing_field = match table.options.get("json.fail-on-missing-field").map(String::as_str) {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(SqlError::at(
                        table.at,
                        format!(
                            "table {}: 'json.fail-on-missing-field' is 'true' or 'false', not '{other}'",
                            table.name
                        ),
                    ))
                }
            };
            FileFormat::Json { fail_on_missing_field }
        }
        Some(other) => {
            return Err(SqlError::at(
                table.at,
                format!("table {}: format '{other}' is not supported yet; use 'format' = {supported}", table.name),
            ))
        }
        None => {
            return Err(SqlError::at(
                table.at,
                format!("table {}: the filesystem connector needs 'format' = {supported}", table.name),
            ))
        }
    };
    if table.options.contains_key("json.fail-on-missing-field") && (sink || !matches!(format, FileFormat::Json { .. }))
    {
        return Err(SqlError::at(
            table.at,
            format!("table {}: 'json.fail-on-missing-field' is an option of a JSON source", table.name),
        ));
    }
    Ok(format)
}

/// The sink connector of `table`.
pub fn sink(table: &TableDef) -> Result<SinkConnector, SqlError> {
    if !table.partitioned_by.is_empty() {
        return Err(SqlError::at(table.at, format!("table {}: PARTITIONED BY is not supported yet", table.name)));
    }
    match connector_name(table)? {
        "blackhole" => check_options(table, &[]).map(|()| SinkConnector::Blackhole),
        "print" => check_options(table, &[]).map(|()| SinkConnector::Print),
        "filesystem" => {
            check_options(table, &["path", "format", "json.fail-on-missing-field"])?;
            let path = absolute_path(table, "path")?;
            let format = file_format(table, true)?;
            let columns: Vec<(String, SqlType)> =
                table.physical().map(|(column, ty)| (column.name.clone(), ty.clone())).collect();
            if let Some((column, _)) = table.physical().find(|(_, ty)| matches!(ty, SqlType::Row(_))) {
                if !matches!(format, FileFormat::Json { .. }) {
                    return Err(SqlError::at(
                        column.at,
                        format!(
                            "table {}: a ROW column ({}) cannot be written as CSV yet; 'format' = 'json' writes it",
                            table.name, column.name
                        ),
                    ));
                }
            }
            Ok(SinkConnector::Filesystem { path, format, columns })
        }
        "nexmark" | "datagen" => Err(SqlError::at(
            table.at,
            format!("table {} is written, but the {} connector only reads", table.name, table.options["connector"]),
        )),
        other => Err(SqlError::at(
            table.at,
            format!(
                "connector '{other}' is not supported as a sink yet; supported: 'blackhole', 'print', 'filesystem'"
            ),
        )),
    }
}

/// Lines of a filesystem table's CSV files as rows: its physical columns read as Flink's CSV
/// format writes them, then its computed columns.
pub struct CsvRows {
    /// Each physical column's name and type.
    pub columns: Vec<(String, SqlType)>,
    /// The computed columns, over the physical ones.
    pub computed: Vec<crate::expr::Scalar>,
    /// The line splitter, with its buffers.
    pub reader: std::cell::RefCell<weir_dataflow::source::CsvLineReader>,
    /// The time attribute's column (physical or computed), which must not be `NULL`.
    pub time: Option<usize>,
}

impl weir_dataflow::LineFormat for CsvRows {
    type Record = Row;
    fn header(&self) -> Option<&str> {
        None
    }
    fn parse(&self, line: &[u8]) -> Result<Row, String> {
        let mut reader = self.reader.borrow_mut();
        let fields = reader.read(line).map_err(|error| format!("not CSV: {error}"))?;
        if fields.len() != self.columns.len() {
            return Err(format!("{} fields, but the table has {} columns", fields.len(), self.columns.len()));
        }
        let mut row: Row = Vec::with_capacity(self.columns.len() + self.computed.len());
        for (field, (name, ty)) in fields.iter().zip(&self.columns) {
            let text = std::str::from_utf8(field).map_err(|_| format!("column {name}: not UTF-8"))?;
            row.push(crate::types::read_csv_field(text, ty).map_err(|reason| format!("column {name}: {reason}"))?);
        }
        with_computed(row, &self.computed, self.time)
    }
}

/// A source row completed: its physical columns, then its computed columns over them. The time
/// attribute's column (`time`), if any, must not be `NULL` — Flink fails the job on a `NULL`
/// rowtime; Weir would take the row as late, and drop it — so such a row is malformed.
pub fn with_computed(mut row: Row, computed: &[crate::expr::Scalar], time: Option<usize>) -> Result<Row, String> {
    let values: Vec<Value> = computed.iter().map(|c| c.eval(&row)).collect();
    row.extend(values);
    if time.is_some_and(|time| row[time] == Value::Null) {
        return Err("the table's time attribute (its WATERMARK column) is NULL".into());
    }
    Ok(row)
}

/// The columns the Nexmark connector provides (Nexmark's `datagen` table).
pub fn nexmark_schema() -> Vec<(String, SqlType)> {
    let bigint = SqlType::BIGINT;
    let text = SqlType::Varchar;
    let time = SqlType::Timestamp;
    let row = |fields: &[(&str, &SqlType)]| {
        SqlType::Row(fields.iter().map(|(name, ty)| (name.to_string(), (*ty).clone())).collect())
    };
    vec![
        ("event_type".into(), SqlType::Integer(IntegerWidth::Int)),
        (
            "person".into(),
            row(&[
                ("id", &bigint),
                ("name", &text),
                ("emailAddress", &text),
                ("creditCard", &text),
                ("city", &text),
                ("state", &text),
                ("dateTime", &time),
                ("extra", &text),
            ]),
        ),
        (
            "auction".into(),
            row(&[
                ("id", &bigint),
                ("itemName", &text),
                ("description", &text),
                ("initialBid", &bigint),
                ("reserve", &bigint),
                ("dateTime", &time),
                ("expires", &time),
                ("seller", &bigint),
                ("category", &bigint),
                ("extra", &text),
            ]),
        ),
        (
            "bid".into(),
            row(&[
                ("auction", &bigint),
                ("bidder", &bigint),
                ("price", &bigint),
                ("channel", &text),
                ("url", &text),
                ("dateTime", &time),
                ("extra", &text),
            ]),
        ),
    ]
}

fn nexmark_source(table: &TableDef) -> Result<SourceConnector, SqlError> {
    check_options(
        table,
        &[
            "events.num",
            "first-event.rate",
            "next-event.rate",
            "person.proportion",
            "auction.proportion",
            "bid.proportion",
            "seed",
        ],
    )?;
    let option = |key: &str| -> Result<Option<u64>, SqlError> {
        table
            .options
            .get(key)
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    SqlError::at(
                        table.at,
                        format!("table {}: option '{key}' must be a whole number, not '{text}'", table.name),
                    )
                })
            })
            .transpose()
    };
    let events = option("events.num")?.ok_or_else(|| {
        SqlError::at(
            table.at,
            format!("table {}: the nexmark connector needs 'events.num' (Weir's jobs are bounded)", table.name),
        )
    })?;
    let mut config = NexmarkConfig::new(events, option("seed")?.unwrap_or(0));
    let first = option("first-event.rate")?;
    let next = option("next-event.rate")?;
    if let Some(rate) = first.or(next) {
        if first.is_some_and(|f| f != rate) || next.is_some_and(|n| n != rate) || rate == 0 {
            return Err(SqlError::at(
                table.at,
                format!("table {}: 'first-event.rate' and 'next-event.rate' must be equal and positive", table.name),
            ));
        }
        config.events_per_second = rate;
    }
    for (key, expected) in [("person.proportion", 1), ("auction.proportion", 3), ("bid.proportion", 46)] {
        if option(key)?.is_some_and(|value| value != expected) {
            return Err(SqlError::at(
                table.at,
                format!(
                    "table {}: Weir's Nexmark generator has Nexmark's proportions 1:3:46; '{key}' must be {expected}",
                    table.name
                ),
            ));
        }
    }
    let schema = nexmark_schema();
    let mut columns = Vec::new();
    for (column, ty) in table.physical() {
        let (name, at) = (&column.name, column.at);
        let Some(position) = schema.iter().position(|(provided, _)| provided == name) else {
            let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
            return Err(SqlError::at(
                at,
                format!("the nexmark connector has no column {name}; it provides {}", names.join(", ")),
            ));
        };
        if schema[position].1 != *ty {
            return Err(SqlError::at(
                at,
                format!("column {name} is {}, but the nexmark connector provides it as {}", ty, schema[position].1),
            ));
        }
        columns.push(position);
    }
    Ok(SourceConnector::Nexmark { config, columns })
}

/// A Nexmark event as the connector's row (`nexmark_schema`). Nexmark pads `extra` (and the
/// auction's `description`) with random text to reach its event sizes; Weir's generator does
/// not yet, so they are empty strings, and a bid's `url` is derived from its channel.
pub fn nexmark_row(event: &Event) -> Row {
    let text = |s: &str| Value::Str(Arc::from(s));
    let empty = || Value::Str(crate::types::empty_str());
    let nested = |values: Vec<Value>| Value::Row(Arc::from(values));
    match event {
        Event::Person(p) => vec![
            Value::Int(0),
            nested(vec![
                Value::Int(p.id),
                text(&p.name),
                text(&p.email_address),
                text(&p.credit_card),
                text(&p.city),
                text(&p.state),
                Value::Millis(p.date_time),
                empty(),
            ]),
            Value::Null,
            Value::Null,
        ],
        Event::Auction(a) => vec![
            Value::Int(1),
            Value::Null,
            nested(vec![
                Value::Int(a.id),
                text(&a.item_name),
                empty(),
                Value::Int(a.initial_bid),
                Value::Int(a.reserve),
                Value::Millis(a.date_time),
                Value::Millis(a.expires),
                Value::Int(a.seller),
                Value::Int(a.category),
                empty(),
            ]),
            Value::Null,
        ],
        Event::Bid(b) => vec![
            Value::Int(2),
            Value::Null,
            Value::Null,
            nested(vec![
                Value::Int(b.auction),
                Value::Int(b.bidder),
                Value::Int(b.price),
                Value::Str(channel_text(&b.channel, false)),
                Value::Str(channel_text(&b.channel, true)),
                Value::Millis(b.date_time),
                empty(),
            ]),
        ],
    }
}

/// A channel's name, its shared text and its shared URL.
type ChannelTexts = Vec<(String, Arc<str>, Arc<str>)>;

thread_local! {
    /// Each channel's name and URL, shared by every bid of the channel (a handful of them).
    static CHANNELS: std::cell::RefCell<ChannelTexts> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A bid channel's name (`url: false`) or URL, shared rather than allocated per bid.
fn channel_text(channel: &str, url: bool) -> Arc<str> {
    CHANNELS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let index = match cache.iter().position(|(name, _, _)| name == channel) {
            Some(index) => index,
            None => {
                let address = format!("https://www.nexmark.com/{}/item.htm?query=1", channel.to_ascii_lowercase());
                cache.push((channel.to_owned(), Arc::from(channel), Arc::from(address.as_str())));
                cache.len() - 1
            }
        };
        let (_, name, address) = &cache[index];
        Arc::clone(if url { address } else { name })
    })
}

/// Generates a source table's rows: the connector's row, its declared physical columns in
/// order, then the computed columns.
pub struct RowGenerator {
    /// The Nexmark configuration.
    pub config: NexmarkConfig,
    /// Declared physical columns, by position in the connector's row.
    pub columns: Vec<usize>,
    /// Computed columns, over the physical ones.
    pub computed: Vec<crate::expr::Scalar>,
}

impl Generator for RowGenerator {
    type Record = Row;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        self.config.split_len(split, splits)
    }
    fn generate(&self, split: usize, splits: usize, position: u64) -> Row {
        let event = self.config.event(weir_core::generator::GeneratorConfig::global_index(split, splits, position));
        let mut provided = nexmark_row(&event);
        let row: Row = self.columns.iter().map(|&i| std::mem::replace(&mut provided[i], Value::Null)).collect();
        with_computed(row, &self.computed, None).expect("no time attribute is checked")
    }
}
