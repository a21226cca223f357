//! The interactive shell's session (`weir sql` without a file): what has been declared, and
//! what each statement typed asks for.
//!
//! The shell keeps no catalog of its own. A session is the text of the statements that
//! declared something (`CREATE TABLE`, `CREATE VIEW`, `SET`), planned again with each new
//! statement, so that a `SELECT` or `INSERT` typed into the shell runs as exactly the script it
//! would be in a file: the built-in `sql` job, with the same planner, checkpoints and sinks. A
//! `SELECT` is that script plus an exactly-once changelog sink into a directory of the shell's
//! ([`SelectJob::script`]); [`ResultTable`] reads the sink's committed files back into the table
//! the shell shows, so the table holds exactly what the job has committed, and updates in place
//! as checkpoints complete.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use weir_dataflow::source::CsvLineReader;

use crate::aggregate::SortedRow;
use crate::parser::{parse_script, parse_shell_command, ShellCommand, SqlError, SqlStatement};
use crate::plan::Catalog;
use crate::types::{read_csv_field, Row, SqlType};

/// The statements declared so far in a shell.
#[derive(Debug, Default)]
pub struct Session {
    /// The text of each `CREATE TABLE`, `CREATE VIEW` and `SET`, in order.
    declarations: Vec<String>,
}

/// What a statement typed into the shell asks the shell to do.
#[derive(Debug)]
pub enum Reply {
    /// A declaration was accepted: a message to print.
    Info(String),
    /// A table to print (`SHOW TABLES`, `DESCRIBE`).
    Table {
        /// Column names.
        header: Vec<String>,
        /// Rows of cells.
        rows: Vec<Vec<String>>,
    },
    /// `EXPLAIN`'s plan.
    Explained(String),
    /// A query to run and show.
    Select(SelectJob),
    /// An `INSERT` to run.
    Insert {
        /// The script: the declarations and the `INSERT`.
        script: String,
        /// Whether its table is files (whose directory holds the job's checkpoints); otherwise
        /// the job needs a checkpoint directory of its own.
        writes_files: bool,
    },
    /// `HELP`.
    Help,
    /// `QUIT` / `EXIT`.
    Quit,
}

/// A `SELECT` typed into the shell, ready to run as a job.
#[derive(Debug)]
pub struct SelectJob {
    /// The result's columns (names made unique).
    pub columns: Vec<(String, SqlType)>,
    /// The session's declarations, as a script.
    declarations: String,
    /// The query's text.
    query: String,
}

impl SelectJob {
    /// The table the shell's query writes into (in the job's script only).
    pub const SINK: &'static str = "weir_shell_result";

    /// The script that runs the query: the declarations, then an exactly-once changelog sink
    /// into `dir` and the query inserted into it.
    pub fn script(&self, dir: &Path) -> String {
        // A column of bare NULLs has no type of its own: it is written as text.
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let ty = if *ty == SqlType::Null { SqlType::Varchar } else { ty.clone() };
                format!("`{}` {ty}", name.replace('`', "``"))
            })
            .collect();
        format!(
            "{}CREATE TABLE `{}` ({}) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = \
             'changelog-csv');\nINSERT INTO `{}`\n{}\n;\n",
            self.declarations,
            Self::SINK,
            columns.join(", "),
            dir.display().to_string().replace('\'', "''"),
            Self::SINK,
            self.query
        )
    }

    /// An empty table of the query's result.
    pub fn result(&self) -> ResultTable {
        ResultTable {
            columns: self.columns.clone(),
            rows: BTreeMap::new(),
            files: BTreeSet::new(),
            reader: CsvLineReader::default(),
            changes: 0,
        }
    }
}

impl Session {
    /// A session with nothing declared.
    pub fn new() -> Self {
        Session::default()
    }

    /// Runs one statement (without its `;`): declares, answers, or says what job to run. A
    /// statement that fails changes nothing.
    pub fn execute(&mut self, text: &str) -> Result<Reply, SqlError> {
        match parse_shell_command(text)? {
            ShellCommand::Help => Ok(Reply::Help),
            ShellCommand::Quit => Ok(Reply::Quit),
            ShellCommand::ShowTables => {
                let catalog = self.catalog()?;
                let mut names: Vec<&str> = catalog.table_names().chain(catalog.view_names()).collect();
                names.sort_unstable();
                let rows = names.into_iter().map(|name| vec![name.to_owned()]).collect();
                Ok(Reply::Table { header: vec!["table name".into()], rows })
            }
            ShellCommand::ShowViews => {
                let catalog = self.catalog()?;
                let rows = catalog.view_names().map(|name| vec![name.to_owned()]).collect();
                Ok(Reply::Table { header: vec!["view name".into()], rows })
            }
            ShellCommand::Describe { name, at } => {
                let Some(columns) = self.catalog()?.describe(&name)? else {
                    return Err(SqlError::at(at, format!("{name} is not declared (SHOW TABLES lists what is)")));
                };
                let header = ["name", "type", "null", "key", "extras", "watermark"].map(String::from).to_vec();
                let rows = columns
                    .into_iter()
                    .map(|c| {
                        let key = if c.primary_key { "PRI" } else { "" };
                        vec![c.name, c.ty, c.nullable.to_string().to_uppercase(), key.into(), c.extras, c.watermark]
                    })
                    .collect();
                Ok(Reply::Table { header, rows })
            }
            ShellCommand::Select { query, at } => {
                let columns = self.catalog()?.select_columns(&query)?;
                if let Some((name, ty)) =
                    columns.iter().find(|(_, ty)| matches!(ty, SqlType::Row(_) | SqlType::Interval))
                {
                    let hint = match ty {
                        SqlType::Row(_) => format!("select its fields ({name}.field)"),
                        _ => "add it to a timestamp, or select the timestamps".to_owned(),
                    };
                    return Err(SqlError::at(at, format!("the shell cannot show the {ty} column {name} yet: {hint}")));
                }
                Ok(Reply::Select(SelectJob {
                    columns: unique_names(columns),
                    declarations: self.script(),
                    query: text.to_owned(),
                }))
            }
            ShellCommand::Statement(statement) => {
                let kind = statement_kind(&statement);
                // Planned with the declarations, as the statement after them: an error in it
                // is placed in it; one that a declaration meets now (a SET it cannot take)
                // names that declaration.
                let script = format!("{}{text}\n;\n", self.script());
                let statements = parse_script(&script).map_err(|e| self.place(e))?;
                let (_, inserts, explained) = Catalog::declare(statements).map_err(|e| self.place(e))?;
                match kind {
                    Kind::Declaration(message) => {
                        self.declarations.push(text.to_owned());
                        Ok(Reply::Info(message.into()))
                    }
                    Kind::Explain => Ok(Reply::Explained(explained.concat())),
                    Kind::Insert => {
                        let [insert] = inserts.as_slice() else { unreachable!("only the typed statement inserts") };
                        let writes_files = matches!(insert.sink, crate::connector::SinkConnector::Filesystem { .. });
                        Ok(Reply::Insert { script, writes_files })
                    }
                }
            }
        }
    }

    /// The declarations as a script (each statement ended on a line of its own, so that a
    /// trailing `--` comment cannot swallow the `;`).
    fn script(&self) -> String {
        self.declarations.iter().map(|statement| format!("{statement}\n;\n")).collect()
    }

    fn catalog(&self) -> Result<Catalog, SqlError> {
        Ok(Catalog::declare(parse_script(&self.script())?).map_err(|e| self.place(e))?.0)
    }

    /// An error of the declarations followed by a statement, placed in the statement it is in:
    /// the typed one (the last) as it is, an earlier one named. A place the message names (`…
    /// at line 7, column 1`) is placed the same way.
    fn place(&self, mut error: SqlError) -> SqlError {
        let (earlier, line) = self.local(error.line);
        error.line = line;
        let mut message = String::new();
        let mut rest = error.message.as_str();
        while let Some(at) = rest.find(" at line ") {
            message.push_str(&rest[..at]);
            let after = &rest[at + " at line ".len()..];
            let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
            match after[..digits].parse::<u64>() {
                Ok(inner) => {
                    let (statement, inner) = self.local(inner);
                    let whose = statement.map_or(String::new(), |s| format!(" of `{}`", self.opening(s)));
                    message.push_str(&format!(" at line {inner}{whose}"));
                }
                Err(_) => message.push_str(" at line "),
            }
            rest = &after[digits..];
        }
        message.push_str(rest);
        error.message = match earlier {
            Some(statement) => format!("in the earlier statement `{}`: {message}", self.opening(statement)),
            None => message,
        };
        error
    }

    /// Line `line` of the declarations followed by a statement, as a line of the declaration it
    /// is in (`Some(index)`) or of the statement after them (`None`).
    fn local(&self, line: u64) -> (Option<usize>, u64) {
        let mut first_line = 1;
        for (index, declaration) in self.declarations.iter().enumerate() {
            // Each declaration is followed by a line holding only its `;`.
            let lines = declaration.split('\n').count() as u64 + 1;
            if (first_line..first_line + lines).contains(&line) {
                return (Some(index), line - first_line + 1);
            }
            first_line += lines;
        }
        (None, line.saturating_sub(first_line - 1))
    }

    /// The first words of declaration `index`, to name it (`…` where it goes on).
    fn opening(&self, index: usize) -> String {
        let words = self.declarations[index].split_whitespace().collect::<Vec<_>>().join(" ");
        match words.char_indices().nth(40) {
            Some((cut, _)) => format!("{}…", &words[..cut]),
            None => words,
        }
    }
}

/// What a script statement does in a session.
enum Kind {
    /// It declares: remember it, and say this.
    Declaration(&'static str),
    Explain,
    Insert,
}

fn statement_kind(statement: &SqlStatement) -> Kind {
    match statement {
        SqlStatement::CreateTable(_) => Kind::Declaration("table created"),
        SqlStatement::CreateView { .. } => Kind::Declaration("view created"),
        SqlStatement::Set { .. } => Kind::Declaration("setting applied to the queries that follow"),
        SqlStatement::Explain { .. } => Kind::Explain,
        SqlStatement::Insert { .. } => Kind::Insert,
    }
}

/// Column names made unique for the result table (`EXPR$0` twice becomes `EXPR$0`, `EXPR$0_1`).
fn unique_names(columns: Vec<(String, SqlType)>) -> Vec<(String, SqlType)> {
    let mut seen = BTreeSet::new();
    columns
        .into_iter()
        .map(|(name, ty)| {
            let mut unique = name.clone();
            let mut n = 0;
            while !seen.insert(unique.to_ascii_lowercase()) {
                n += 1;
                unique = format!("{name}_{n}");
            }
            (unique, ty)
        })
        .collect()
}

/// A query's result as the shell shows it: the rows its changelog has committed so far, in
/// the order of their values (`+I`/`+U` add a row, `-U`/`-D` take one away).
#[derive(Debug)]
pub struct ResultTable {
    columns: Vec<(String, SqlType)>,
    /// Each distinct row and how many times it is in the result. Between the files of one
    /// checkpoint a count may be negative for a moment (one slot's retraction read before
    /// another's insertion of the same row); once every file of a checkpoint is read, none is.
    rows: BTreeMap<SortedRow, i64>,
    /// The committed files read.
    files: BTreeSet<String>,
    reader: CsvLineReader,
    /// Changes read.
    changes: u64,
}

impl ResultTable {
    /// The column names.
    pub fn header(&self) -> Vec<String> {
        self.columns.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Reads the files the job has committed into `dir` since the last call; says whether any
    /// were new.
    pub fn poll(&mut self, dir: &Path) -> io::Result<bool> {
        let entries = match weir_core::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let mut new: Vec<((u64, usize), String)> = entries
            .into_iter()
            .filter_map(|entry| {
                let name = entry.name;
                let order = weir_dataflow::sink::parse_committed(&name)?;
                (!self.files.contains(&name)).then_some((order, name))
            })
            .collect();
        new.sort();
        for (_, name) in &new {
            let bytes = weir_core::fs::read(&dir.join(name))?;
            self.apply(&bytes)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {error}")))?;
            self.files.insert(name.clone());
        }
        Ok(!new.is_empty())
    }

    /// Applies changelog-CSV lines (`+I,field,…`).
    pub fn apply(&mut self, bytes: &[u8]) -> Result<(), String> {
        for (index, line) in csv_records(bytes).enumerate().filter(|(_, line)| !line.is_empty()) {
            let (kind, fields) = line.split_at_checked(3).ok_or_else(|| format!("record {}: too short", index + 1))?;
            let sign = match kind {
                b"+I," | b"+U," => 1,
                b"-U," | b"-D," => -1,
                _ => return Err(format!("record {}: no change kind (+I, -U, +U, -D)", index + 1)),
            };
            let fields = self.reader.read(fields).map_err(|error| format!("record {}: {error}", index + 1))?;
            if fields.len() != self.columns.len() {
                return Err(format!(
                    "record {}: {} fields for {} columns",
                    index + 1,
                    fields.len(),
                    self.columns.len()
                ));
            }
            let mut row: Row = Vec::with_capacity(fields.len());
            for (field, (name, ty)) in fields.iter().zip(&self.columns) {
                let text = std::str::from_utf8(field).map_err(|_| format!("record {}: not UTF-8", index + 1))?;
                row.push(read_csv_field(text, ty).map_err(|error| format!("record {}, {name}: {error}", index + 1))?);
            }
            *self.rows.entry(SortedRow(row)).or_insert(0) += sign;
            self.changes += 1;
        }
        self.rows.retain(|_, count| *count != 0);
        Ok(())
    }

    /// Rows in the result.
    pub fn len(&self) -> u64 {
        self.rows.values().map(|&count| count.max(0) as u64).sum()
    }

    /// Whether the result has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes read so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The first `limit` rows, each value printed as Flink's print connector does.
    pub fn rows(&self, limit: usize) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .flat_map(|(row, &count)| std::iter::repeat_n(row, count.max(0) as usize))
            .take(limit)
            .map(|row| row.0.iter().map(|value| value.to_string()).collect())
            .collect()
    }
}

/// The records of CSV text: lines, except that a line break inside a quoted field belongs to
/// the field (the sink quotes text holding one).
fn csv_records(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let end = rest
            .iter()
            .position(|&byte| {
                quoted ^= byte == b'"';
                byte == b'\n' && !quoted
            })
            .unwrap_or(rest.len());
        let record = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        Some(record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIDS: &str = "CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - \
                        INTERVAL '1' SECOND) WITH ('connector' = 'filesystem', 'path' = '/tmp/in', 'format' = 'csv')";

    #[test]
    fn declarations_accumulate_and_a_failed_statement_changes_nothing() {
        let mut session = Session::new();
        assert!(matches!(session.execute(BIDS).unwrap(), Reply::Info(_)));
        let error = session.execute("CREATE VIEW v AS SELECT nope FROM bid").unwrap_err();
        assert!(error.to_string().contains("nope"), "{error}");
        session.execute("CREATE VIEW expensive AS SELECT auction, price FROM bid WHERE price > 10").unwrap();
        let Reply::Table { rows, .. } = session.execute("SHOW TABLES").unwrap() else { panic!("a table") };
        assert_eq!(rows, vec![vec!["bid".to_string()], vec!["expensive".to_string()]]);
        let Reply::Table { rows, .. } = session.execute("show views").unwrap() else { panic!("a table") };
        assert_eq!(rows, vec![vec!["expensive".to_string()]]);
        assert!(session.execute("CREATE TABLE bid (a INT) WITH ('connector' = 'blackhole')").is_err());
    }

    #[test]
    fn describe_shows_types_computed_columns_and_the_watermark() {
        let mut session = Session::new();
        session.execute(BIDS).unwrap();
        let Reply::Table { header, rows } = session.execute("DESCRIBE bid").unwrap() else { panic!("a table") };
        assert_eq!(header.len(), 6);
        assert_eq!(rows[0][..3], ["auction", "BIGINT", "TRUE"]);
        assert_eq!(rows[2][1], "TIMESTAMP(3) *ROWTIME*");
        assert_eq!(rows[2][5], "ts - INTERVAL '1' SECOND");
        let error = session.execute("DESC nothing").unwrap_err();
        assert!(error.to_string().contains("nothing is not declared"), "{error}");
    }

    #[test]
    fn a_select_runs_as_the_session_script_plus_a_changelog_sink() {
        let mut session = Session::new();
        session.execute(BIDS).unwrap();
        session.execute("SET 'parallelism.default' = '2'").unwrap();
        let Reply::Select(job) =
            session.execute("SELECT auction, COUNT(*), COUNT(*) FROM bid GROUP BY auction").unwrap()
        else {
            panic!("a select")
        };
        let names: Vec<&str> = job.columns.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.len(), 3);
        assert_ne!(names[1], names[2], "names are made unique");
        let script = job.script(Path::new("/tmp/it's"));
        assert!(crate::explain_script(&script).unwrap().1, "the script plans and inserts:\n{script}");
        assert!(script.contains("'/tmp/it''s'"));
    }

    #[test]
    fn explain_and_insert_use_the_declarations() {
        let mut session = Session::new();
        session.execute(BIDS).unwrap();
        session.execute("CREATE TABLE out (auction BIGINT) WITH ('connector' = 'blackhole')").unwrap();
        let Reply::Explained(plan) = session.execute("EXPLAIN SELECT auction FROM bid").unwrap() else {
            panic!("a plan")
        };
        assert!(plan.contains("bid"), "{plan}");
        let Reply::Insert { script, writes_files } =
            session.execute("INSERT INTO out SELECT auction FROM bid -- done").unwrap()
        else {
            panic!("an insert")
        };
        assert_eq!(crate::plan_script(&script).unwrap().len(), 1);
        assert!(!writes_files, "a blackhole");
        // An error in an earlier declaration, met only now, names it and its own place.
        let view = "CREATE VIEW per_count AS SELECT n, COUNT(*) AS c FROM \
                    (SELECT auction, COUNT(*) AS n FROM bid GROUP BY auction) GROUP BY n";
        session.execute(view).unwrap();
        let error = session.execute("SET 'table.exec.state.ttl' = '1 h'").unwrap_err().to_string();
        // Placed at the outer GROUP BY's key.
        let key = view.rfind("GROUP BY").unwrap() + "GROUP BY ".len() + 1;
        let place = format!("line 1, column {key}: in the earlier statement `CREATE VIEW per_count");
        assert!(error.starts_with(&place), "{error}");
        assert!(error.contains("(SET at line 1, column 1)"), "the SET typed, placed in itself: {error}");
        // And one in the statement typed is placed in it.
        let error = session.execute("INSERT INTO out\nSELECT nope FROM bid").unwrap_err().to_string();
        assert!(error.starts_with("line 2, column 8"), "{error}");
        assert!(matches!(session.execute("quit").unwrap(), Reply::Quit));
    }

    #[test]
    fn the_result_table_applies_retractions_and_orders_rows_by_value() {
        let mut table = SelectJob {
            columns: vec![("auction".into(), SqlType::BIGINT), ("name".into(), SqlType::Varchar)],
            declarations: String::new(),
            query: String::new(),
        }
        .result();
        table.apply(b"+I,10,\"a, b\"\n+I,9,x\n-U,10,\"a, b\"\n+U,10,c\n+I,9,x\n+I,11,\"two\nlines\"\n").unwrap();
        assert_eq!(table.rows(10), vec![vec!["9", "x"], vec!["9", "x"], vec!["10", "c"], vec!["11", "two\nlines"]]);
        assert_eq!(table.len(), 4);
        table.apply(b"-D,11,\"two\nlines\"\n").unwrap();
        assert_eq!(table.len(), 3);
        table.apply(b"-D,9,x\n").unwrap();
        assert_eq!(table.len(), 2);
        assert!(table.apply(b"?I,1,x\n").unwrap_err().contains("change kind"));
        assert!(table.apply(b"+I,1\n").unwrap_err().contains("fields"));
    }

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let (statements, rest) =
            crate::parser::split_statements("SELECT ';' FROM t; -- a ; comment\nSHOW TABLES;\nSELECT");
        assert_eq!(statements, vec!["SELECT ';' FROM t", "-- a ; comment\nSHOW TABLES"]);
        assert_eq!(rest.trim(), "SELECT");
        let (statements, rest) = crate::parser::split_statements("SELECT 'still open; on the next line");
        assert!(statements.is_empty());
        assert_eq!(rest, "SELECT 'still open; on the next line");
        let (statements, rest) = crate::parser::split_statements("SHOW TABLES; -- trailing\n; /* only */ ;");
        assert_eq!(statements, vec!["SHOW TABLES"]);
        assert!(rest.is_empty());
        // Columns count characters: a statement after multi-byte text and CRLF line ends.
        let (statements, rest) = crate::parser::split_statements("SELECT 'é€;'\r\nFROM t;\r\nSHOW TABLES;\r\nDESC");
        assert_eq!(statements, vec!["SELECT 'é€;'\r\nFROM t", "SHOW TABLES"]);
        assert_eq!(rest.trim(), "DESC");
        // Text the tokenizer refuses, ended by a `;`, is passed on for its error; an unclosed
        // quote or comment waits for more, `;` or not.
        let (statements, _) = crate::parser::split_statements("SELECT 1._ FROM t;");
        assert_eq!(statements, vec!["SELECT 1._ FROM t"]);
        assert!(Session::new().execute(&statements[0]).is_err());
        for open in ["SELECT `unclosed;", "/* q5: hot items;", "SELECT 'it;"] {
            let (statements, rest) = crate::parser::split_statements(open);
            assert!(statements.is_empty() && rest == open, "{open}");
        }
    }
}
