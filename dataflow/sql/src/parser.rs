//! Parsing Flink SQL scripts: `sqlparser` for queries and standard statements, and a thin layer
//! of our own — on the parser's public token API — for what only Flink has.
//!
//! `sqlparser` parses `SELECT`, `INSERT INTO … SELECT`, `CREATE [TEMPORARY] VIEW` and `EXPLAIN`
//! as they are. Flink's `CREATE TABLE` is not standard SQL: `ROW<…>` column types, computed
//! columns (`dateTime AS CASE … END`), `WATERMARK FOR col AS expr`, `PRIMARY KEY … NOT
//! ENFORCED` and `WITH ('connector' = …)` options. Rather than fork the parser, the script
//! loop below recognises `CREATE TABLE` and `SET` by their first tokens and parses them with the
//! parser's own primitives (identifiers, expressions, literals), so that every expression in a
//! DDL is the same `sqlparser` AST the planner reads everywhere else. Every error carries the
//! line and column where it was found.

use std::collections::BTreeMap;
use std::fmt;

use sqlparser::ast::{CreateTableOptions, Expr, Ident, Insert, ObjectName, Query, SetExpr, Statement, TableObject};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

use crate::types::{IntegerWidth, SqlType};

/// Flink's lexical rules: identifiers quoted with backticks, case-sensitive names.
#[derive(Debug, Default)]
pub struct FlinkDialect;

impl Dialect for FlinkDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }
    fn identifier_quote_style(&self, _identifier: &str) -> Option<char> {
        Some('`')
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }
    /// `FOR SYSTEM_TIME AS OF` (temporal joins).
    fn supports_timestamp_versioning(&self) -> bool {
        true
    }
    /// `TABLE name` as an argument of a window table function — `TUMBLE(TABLE bid,
    /// DESCRIPTOR(col), INTERVAL '10' SECOND)` — read as the expression `TABLE name`
    /// (`Expr::Prefixed`), for the planner to recognise. `TABLE name PARTITION BY key` or `…
    /// PARTITION BY (key, …)` (`SESSION`'s) is read as `TABLE (name, key, …)`: a tuple of the
    /// name and the keys.
    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let table_argument = parser.peek_keyword(Keyword::TABLE)
            && matches!(parser.peek_nth_token(1).token, Token::Word(_))
            && parser.peek_nth_token(2).token != Token::LParen;
        if !table_argument {
            return None;
        }
        let keyword = parser.next_token();
        let table = |parser: &mut Parser| -> Result<Expr, ParserError> {
            let name = Expr::Identifier(parser.parse_identifier()?);
            if !parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
                return Ok(name);
            }
            let keys = if parser.consume_token(&Token::LParen) {
                let keys = parser.parse_comma_separated(|p| p.parse_identifier())?;
                parser.expect_token(&Token::RParen)?;
                keys
            } else {
                vec![parser.parse_identifier()?]
            };
            Ok(Expr::Tuple(std::iter::once(name).chain(keys.into_iter().map(Expr::Identifier)).collect()))
        };
        Some(
            table(parser).map(|value| Expr::Prefixed {
                prefix: Ident::with_span(keyword.span, "TABLE"),
                value: Box::new(value),
            }),
        )
    }
}

/// An error in a SQL script: what, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    /// What is wrong, and how to fix it.
    pub message: String,
    /// Line (from 1; 0 when unknown).
    pub line: u64,
    /// Column (from 1; 0 when unknown).
    pub column: u64,
}

impl SqlError {
    /// An error at `at`.
    pub fn at(at: Location, message: impl Into<String>) -> Self {
        SqlError { message: message.into(), line: at.line, column: at.column }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for SqlError {}

impl From<ParserError> for SqlError {
    fn from(error: ParserError) -> Self {
        // sqlparser ends its messages with " at Line: L, Column: C"; keep it as ours.
        let text = match error {
            ParserError::TokenizerError(text) | ParserError::ParserError(text) => text,
            ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_owned(),
        };
        if let Some((message, place)) = text.rsplit_once(" at Line: ") {
            if let Some((line, column)) = place.split_once(", Column: ") {
                if let (Ok(line), Ok(column)) = (line.trim().parse(), column.trim().parse()) {
                    return SqlError { message: message.to_owned(), line, column };
                }
            }
        }
        SqlError { message: text, line: 0, column: 0 }
    }
}

/// One statement of a script.
#[derive(Clone, Debug)]
pub enum SqlStatement {
    /// `CREATE TABLE`.
    CreateTable(Box<TableDef>),
    /// `CREATE [TEMPORARY] VIEW name AS query`.
    CreateView {
        /// The view's name.
        name: String,
        /// Its query.
        query: Box<Query>,
        /// Where the statement starts.
        at: Location,
    },
    /// `INSERT INTO table query`.
    Insert {
        /// The target table.
        table: String,
        /// The rows.
        query: Box<Query>,
        /// Where the statement starts.
        at: Location,
    },
    /// `SET 'key' = 'value'`.
    Set {
        /// The option.
        key: String,
        /// Its value.
        value: String,
        /// Where the statement starts.
        at: Location,
    },
    /// `EXPLAIN [PLAN FOR] INSERT INTO table query` or `EXPLAIN [PLAN FOR] query`: prints the
    /// plan, runs nothing.
    Explain {
        /// The target table of an `INSERT`.
        table: Option<String>,
        /// The rows.
        query: Box<Query>,
        /// Where the statement starts.
        at: Location,
    },
}

/// A table declared with `CREATE TABLE`.
#[derive(Clone, Debug)]
pub struct TableDef {
    /// Its name.
    pub name: String,
    /// Columns, physical and computed, in declaration order.
    pub columns: Vec<ColumnDef>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<WatermarkDef>,
    /// `PRIMARY KEY (…) NOT ENFORCED`.
    pub primary_key: Vec<String>,
    /// `WITH (…)` options.
    pub options: BTreeMap<String, String>,
    /// `PARTITIONED BY (…)` columns.
    pub partitioned_by: Vec<String>,
    /// Where the statement starts.
    pub at: Location,
}

impl TableDef {
    /// The physical columns (read from the connector), in declaration order, with their types.
    pub fn physical(&self) -> impl Iterator<Item = (&ColumnDef, &SqlType)> {
        self.columns.iter().filter_map(|c| match &c.kind {
            ColumnKind::Physical(ty) => Some((c, ty)),
            ColumnKind::Computed(_) => None,
        })
    }
}

/// A column of a `CREATE TABLE`.
#[derive(Clone, Debug)]
pub struct ColumnDef {
    /// Its name.
    pub name: String,
    /// Physical (read from the connector) or computed.
    pub kind: ColumnKind,
    /// Declared `NOT NULL`.
    pub not_null: bool,
    /// Where it is declared.
    pub at: Location,
}

/// Where a column's values come from.
#[derive(Clone, Debug)]
pub enum ColumnKind {
    /// Read from the connector, of this type.
    Physical(SqlType),
    /// `name AS expr`: computed from the physical columns.
    Computed(Box<Expr>),
}

/// `WATERMARK FOR column AS expr`.
#[derive(Clone, Debug)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// The watermark expression (`column - INTERVAL 'n' SECOND`).
    pub expr: Expr,
    /// Where it is declared.
    pub at: Location,
}

/// Parses a script of `;`-separated statements.
pub fn parse_script(sql: &str) -> Result<Vec<SqlStatement>, SqlError> {
    parse_statements(sql).map_err(|mut error| {
        // The parser gives no position for "found: EOF": the script's end is where it is.
        if error.line == 0 {
            let line = sql.lines().count().max(1);
            let column = sql.lines().last().map_or(0, |last| last.chars().count()) + 1;
            (error.line, error.column) = (line as u64, column as u64);
        }
        error
    })
}

fn parse_statements(sql: &str) -> Result<Vec<SqlStatement>, SqlError> {
    let dialect = FlinkDialect;
    let tokens =
        Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| SqlError::from(ParserError::from(e)))?;
    // Flink's hints (`/*+ OPTIONS(…) */`) change what a statement does; the tokenizer keeps them
    // as comments, which the parser skips. Refuse them rather than run without them.
    for token in &tokens {
        if let Token::Whitespace(Whitespace::MultiLineComment(text)) = &token.token {
            if text.starts_with('+') {
                return Err(SqlError::at(token.span.start, "hints (/*+ … */) are not supported yet: remove the hint"));
            }
        }
    }
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            return Ok(statements);
        }
        let at = parser.peek_token().span.start;
        let creates_function = parser.peek_keyword(Keyword::CREATE)
            && (1..=3)
                .any(|n| matches!(&parser.peek_nth_token(n).token, Token::Word(w) if w.keyword == Keyword::FUNCTION));
        if creates_function {
            return Err(SqlError::at(
                at,
                "CREATE FUNCTION (user-defined functions in Java) is not supported: write the logic as a Rust job \
                 on the DataStream API",
            ));
        }
        let statement = if parser.parse_keywords(&[Keyword::CREATE, Keyword::TABLE]) {
            SqlStatement::CreateTable(Box::new(parse_create_table(&mut parser, at)?))
        } else if parser.parse_keyword(Keyword::EXPLAIN) {
            // Flink's `EXPLAIN PLAN FOR …` and `EXPLAIN …` alike.
            let _ = parser.parse_keywords(&[Keyword::PLAN, Keyword::FOR]);
            let explained_at = parser.peek_token().span.start;
            match parser.parse_statement()? {
                Statement::Query(query) => SqlStatement::Explain { table: None, query, at },
                other => match convert(other, explained_at)? {
                    SqlStatement::Insert { table, query, .. } => {
                        SqlStatement::Explain { table: Some(table), query, at }
                    }
                    _ => return Err(SqlError::at(explained_at, "EXPLAIN takes an INSERT INTO … SELECT or a SELECT")),
                },
            }
        } else if parser.parse_keyword(Keyword::SET) {
            let key = parser.parse_literal_string()?;
            parser.expect_token(&Token::Eq)?;
            let value = parser.parse_literal_string()?;
            SqlStatement::Set { key, value, at }
        } else {
            convert(parser.parse_statement()?, at)?
        };
        statements.push(statement);
        let next = parser.peek_token();
        if next.token != Token::EOF && !parser.consume_token(&Token::SemiColon) {
            return Err(SqlError::at(
                next.span.start,
                format!("expected ';' after the statement, found {}", next.token),
            ));
        }
    }
}

/// A statement typed into the interactive shell (`weir sql` without a file): the shell's own
/// commands, a `SELECT` to show, or a statement a script may hold.
#[derive(Clone, Debug)]
pub enum ShellCommand {
    /// `SHOW TABLES`: the tables and views declared.
    ShowTables,
    /// `SHOW VIEWS`: the views declared.
    ShowViews,
    /// `DESCRIBE name` / `DESC name`: a table's or view's columns.
    Describe {
        /// The table or view.
        name: String,
        /// Where the name is.
        at: Location,
    },
    /// `SELECT …`: a query whose result the shell shows as it updates.
    Select {
        /// The query.
        query: Box<Query>,
        /// Where it starts.
        at: Location,
    },
    /// `HELP`.
    Help,
    /// `QUIT` / `EXIT`.
    Quit,
    /// A statement of a script (`CREATE TABLE`, `CREATE VIEW`, `SET`, `EXPLAIN`, `INSERT`).
    Statement(SqlStatement),
}

/// Parses one statement typed into the shell (without its `;`).
pub fn parse_shell_command(text: &str) -> Result<ShellCommand, SqlError> {
    let dialect = FlinkDialect;
    let tokens =
        Tokenizer::new(&dialect, text).tokenize_with_location().map_err(|e| SqlError::from(ParserError::from(e)))?;
    let words: Vec<(String, Location)> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon))
        .map(|t| match &t.token {
            Token::Word(word) if word.quote_style.is_none() => (word.value.to_ascii_uppercase(), t.span.start),
            other => (other.to_string(), t.span.start),
        })
        .collect();
    let first: Vec<&str> = words.iter().take(2).map(|(word, _)| word.as_str()).collect();
    let only = |command: ShellCommand, length: usize| match words.get(length) {
        None => Ok(command),
        Some((word, at)) => Err(SqlError::at(*at, format!("unexpected {word} after {}", first[..length].join(" ")))),
    };
    match first.as_slice() {
        ["SHOW", "TABLES"] => return only(ShellCommand::ShowTables, 2),
        ["SHOW", "VIEWS"] => return only(ShellCommand::ShowViews, 2),
        ["SHOW", ..] => {
            return Err(SqlError::at(words[0].1, "SHOW takes TABLES or VIEWS (SHOW TABLES; SHOW VIEWS)"));
        }
        ["QUIT" | "EXIT"] => return Ok(ShellCommand::Quit),
        ["HELP"] => return Ok(ShellCommand::Help),
        ["DESCRIBE" | "DESC", ..] => {
            let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
            let _ = parser.next_token();
            let at = parser.peek_token().span.start;
            let name = parser
                .parse_identifier()
                .map_err(|_| SqlError::at(at, "DESCRIBE takes the name of a table or view: DESCRIBE bid"))?;
            while parser.consume_token(&Token::SemiColon) {}
            let next = parser.peek_token();
            if next.token != Token::EOF {
                return Err(SqlError::at(
                    next.span.start,
                    format!("unexpected {} after DESCRIBE {}", next.token, name.value),
                ));
            }
            return Ok(ShellCommand::Describe { name: name.value, at });
        }
        _ => {}
    }
    let starts_query = matches!(first.first(), Some(&("SELECT" | "WITH" | "(")));
    if !starts_query {
        let mut statements = parse_script(text)?;
        return match statements.len() {
            1 => Ok(ShellCommand::Statement(statements.remove(0))),
            _ => Err(SqlError::at(Location::new(1, 1), "one statement at a time")),
        };
    }
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let at = parser.peek_token().span.start;
    let query = parser.parse_query()?;
    while parser.consume_token(&Token::SemiColon) {}
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(SqlError::at(next.span.start, format!("expected the end of the query, found {}", next.token)));
    }
    Ok(ShellCommand::Select { query, at })
}

/// Splits what has been typed into whole statements, each ended by a `;` outside quotes and
/// comments (without it), and the text after the last one, still to be finished. Statements of
/// only comments are dropped. Text the tokenizer stops at the end of (an unclosed quote or
/// comment) is unfinished; text it cannot read for another reason, once it ends with a `;`, is
/// passed on whole, for its error to be told.
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    let tokens = match Tokenizer::new(&FlinkDialect, text).tokenize_with_location() {
        Ok(tokens) => tokens,
        Err(error) => {
            let unfinished = ["Unterminated", "EOF", "end of"].iter().any(|what| error.message.contains(what));
            if !unfinished && text.trim_end().ends_with(';') {
                return (vec![text.trim().trim_end_matches(';').to_owned()], String::new());
            }
            return (Vec::new(), text.to_owned());
        }
    };
    // Locations are lines and columns of characters, counted from 1.
    let line_starts: Vec<usize> =
        std::iter::once(0).chain(text.match_indices('\n').map(|(index, _)| index + 1)).collect();
    let offset = |at: Location| {
        let start = line_starts[(at.line as usize).saturating_sub(1).min(line_starts.len() - 1)];
        text[start..].char_indices().nth((at.column as usize).saturating_sub(1)).map_or(text.len(), |(i, _)| start + i)
    };
    let mut statements = Vec::new();
    let (mut begin, mut content) = (0, false);
    for token in &tokens {
        match token.token {
            Token::SemiColon => {
                let end = offset(token.span.start);
                if content {
                    statements.push(text[begin..end].trim().to_owned());
                }
                (begin, content) = (end + 1, false);
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => content = true,
        }
    }
    // Only whitespace and comments after the last `;`: nothing is unfinished.
    (statements, if content { text[begin.min(text.len())..].to_owned() } else { String::new() })
}

/// Refuses `what` at `at` when `present`.
pub fn refuse(present: bool, at: Location, what: &str) -> Result<(), SqlError> {
    if present {
        return Err(SqlError::at(at, format!("{what} is not supported yet")));
    }
    Ok(())
}

/// The statements `sqlparser` parses that a script may hold. Every field of what it parsed is
/// looked at (no `..`): a clause Weir does not implement is refused, never dropped.
fn convert(statement: Statement, at: Location) -> Result<SqlStatement, SqlError> {
    match statement {
        Statement::CreateView {
            or_alter,
            or_replace,
            materialized,
            secure,
            name,
            name_before_not_exists: _,
            columns,
            query,
            options,
            cluster_by,
            comment: _,
            with_no_schema_binding,
            if_not_exists,
            temporary: _,
            to,
            params,
        } => {
            refuse(or_alter || or_replace, at, "CREATE OR REPLACE / OR ALTER VIEW")?;
            refuse(materialized, at, "CREATE MATERIALIZED VIEW")?;
            refuse(!columns.is_empty(), at, "a view with a column list (alias the columns in its SELECT)")?;
            refuse(!matches!(options, CreateTableOptions::None), at, "a view with options")?;
            refuse(if_not_exists, at, "CREATE VIEW IF NOT EXISTS")?;
            refuse(
                secure || !cluster_by.is_empty() || with_no_schema_binding || to.is_some() || params.is_some(),
                at,
                "this form of CREATE VIEW",
            )?;
            Ok(SqlStatement::CreateView { name: object_name(&name, at)?, query, at })
        }
        Statement::Insert(Insert {
            or,
            ignore,
            into: _,
            table,
            table_alias,
            columns,
            overwrite,
            source,
            assignments,
            partitioned,
            after_columns,
            has_table_keyword,
            on,
            returning,
            replace_into,
            priority,
            insert_alias,
            settings,
            format_clause,
        }) => {
            let TableObject::TableName(name) = &table else {
                return Err(SqlError::at(at, "INSERT INTO a table function is not supported: insert into a table"));
            };
            refuse(overwrite, at, "INSERT OVERWRITE")?;
            refuse(partitioned.is_some(), at, "INSERT … PARTITION (…)")?;
            refuse(!columns.is_empty(), at, "INSERT with a column list (select the table's columns in order)")?;
            refuse(on.is_some() || or.is_some() || ignore || replace_into, at, "INSERT with a conflict clause")?;
            refuse(returning.is_some(), at, "INSERT … RETURNING")?;
            refuse(
                table_alias.is_some()
                    || !assignments.is_empty()
                    || !after_columns.is_empty()
                    || has_table_keyword
                    || priority.is_some()
                    || insert_alias.is_some()
                    || settings.is_some()
                    || format_clause.is_some(),
                at,
                "this form of INSERT",
            )?;
            let Some(query) = source else {
                return Err(SqlError::at(at, "INSERT needs a SELECT (INSERT … VALUES is not supported yet)"));
            };
            Ok(SqlStatement::Insert { table: object_name(name, at)?, query, at })
        }
        Statement::Query(query) if matches!(*query.body, SetExpr::Select(_)) => {
            Err(SqlError::at(at, "a SELECT on its own has nowhere to go in a job: write INSERT INTO <table> SELECT …"))
        }
        other => {
            let text = other.to_string();
            let first = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Err(SqlError::at(
                at,
                format!(
                    "{first} … is not supported: a script holds CREATE TABLE, CREATE VIEW and INSERT INTO statements"
                ),
            ))
        }
    }
}

/// A one-part name (`catalog.database.table` names are not supported).
fn object_name(name: &ObjectName, at: Location) -> Result<String, SqlError> {
    match name.0.as_slice() {
        [part] => Ok(part.as_ident().map(|ident| ident.value.clone()).unwrap_or_else(|| part.to_string())),
        _ => Err(SqlError::at(at, format!("qualified name {name} is not supported: use the table's own name"))),
    }
}

fn parse_create_table(parser: &mut Parser<'_>, at: Location) -> Result<TableDef, SqlError> {
    if parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]) {
        return Err(SqlError::at(at, "CREATE TABLE IF NOT EXISTS is not supported: a script declares each table once"));
    }
    let name = object_name(&parser.parse_object_name(false)?, at)?;
    let mut table = TableDef {
        name,
        columns: Vec::new(),
        watermark: None,
        primary_key: Vec::new(),
        options: BTreeMap::new(),
        partitioned_by: Vec::new(),
        at,
    };
    parser.expect_token(&Token::LParen)?;
    loop {
        let item_at = parser.peek_token().span.start;
        if word_is(&parser.peek_token(), "WATERMARK") {
            parser.next_token();
            parser.expect_keyword(Keyword::FOR)?;
            let column = parser.parse_identifier()?.value;
            parser.expect_keyword(Keyword::AS)?;
            let expr = parser.parse_expr()?;
            if table.watermark.replace(WatermarkDef { column, expr, at: item_at }).is_some() {
                return Err(SqlError::at(item_at, "a table has at most one WATERMARK"));
            }
        } else if parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            if !table.primary_key.is_empty() {
                return Err(SqlError::at(item_at, "a table has at most one PRIMARY KEY"));
            }
            parser.expect_token(&Token::LParen)?;
            table.primary_key =
                parser.parse_comma_separated(|p| p.parse_identifier())?.into_iter().map(|i| i.value).collect();
            parser.expect_token(&Token::RParen)?;
            if !parser.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]) {
                return Err(SqlError::at(item_at, "a primary key must be declared NOT ENFORCED, as in Flink"));
            }
        } else {
            let name: Ident = parser.parse_identifier()?;
            let mut not_null = false;
            let kind = if parser.parse_keyword(Keyword::AS) {
                ColumnKind::Computed(Box::new(parser.parse_expr()?))
            } else {
                let ty = parse_type(parser)?;
                not_null = parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
                let _ = not_null || parser.parse_keyword(Keyword::NULL);
                ColumnKind::Physical(ty)
            };
            if table.columns.iter().any(|c| c.name == name.value) {
                return Err(SqlError::at(item_at, format!("column {} is declared twice", name.value)));
            }
            table.columns.push(ColumnDef { name: name.value, kind, not_null, at: item_at });
        }
        if parser.consume_token(&Token::RParen) {
            break;
        }
        parser.expect_token(&Token::Comma)?;
    }
    if let Some(missing) = table.primary_key.iter().find(|key| table.columns.iter().all(|c| c.name != **key)) {
        return Err(SqlError::at(at, format!("PRIMARY KEY column {missing} is not a column of {}", table.name)));
    }
    if parser.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        parser.expect_token(&Token::LParen)?;
        table.partitioned_by =
            parser.parse_comma_separated(|p| p.parse_identifier())?.into_iter().map(|i| i.value).collect();
        parser.expect_token(&Token::RParen)?;
    }
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        loop {
            let option_at = parser.peek_token().span.start;
            let key = parser.parse_literal_string()?;
            parser.expect_token(&Token::Eq)?;
            let value = parser.parse_literal_string()?;
            if table.options.insert(key.clone(), value).is_some() {
                return Err(SqlError::at(option_at, format!("option '{key}' is given twice")));
            }
            if parser.consume_token(&Token::RParen) {
                break;
            }
            parser.expect_token(&Token::Comma)?;
        }
    }
    Ok(table)
}

fn word_is(token: &TokenWithSpan, word: &str) -> bool {
    matches!(&token.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Parses a Flink data type.
pub fn parse_type(parser: &mut Parser<'_>) -> Result<SqlType, SqlError> {
    let mut pending_closes = 0;
    let ty = parse_type_nested(parser, &mut pending_closes)?;
    if pending_closes > 0 {
        return Err(SqlError::at(parser.peek_token().span.start, "unmatched '>' in a ROW type"));
    }
    Ok(ty)
}

/// `pending_closes`: `>` already consumed for enclosing `ROW<…>`s (the tokenizer reads `>>`
/// as one token).
fn parse_type_nested(parser: &mut Parser<'_>, pending_closes: &mut u32) -> Result<SqlType, SqlError> {
    let token = parser.next_token();
    let Token::Word(word) = &token.token else {
        return Err(SqlError::at(token.span.start, format!("expected a type, found {}", token.token)));
    };
    let at = token.span.start;
    let ty = match word.value.to_ascii_uppercase().as_str() {
        "BOOLEAN" | "BOOL" => SqlType::Boolean,
        "TINYINT" => SqlType::Integer(IntegerWidth::Tiny),
        "SMALLINT" => SqlType::Integer(IntegerWidth::Small),
        "INT" | "INTEGER" => SqlType::Integer(IntegerWidth::Int),
        "BIGINT" => SqlType::Integer(IntegerWidth::Big),
        "DOUBLE" => {
            let _ = parser.parse_keyword(Keyword::PRECISION);
            SqlType::Double
        }
        "FLOAT" | "REAL" => {
            return Err(SqlError::at(at, "FLOAT (single precision) is not supported yet: use DOUBLE"));
        }
        "DECIMAL" | "DEC" | "NUMERIC" => {
            let (mut precision, mut scale) = (10, 0);
            if parser.consume_token(&Token::LParen) {
                precision = parser.parse_literal_uint()?;
                if parser.consume_token(&Token::Comma) {
                    scale = parser.parse_literal_uint()?;
                }
                parser.expect_token(&Token::RParen)?;
            }
            if !(1..=38).contains(&precision) || scale > precision {
                return Err(SqlError::at(
                    at,
                    format!("DECIMAL({precision}, {scale}): precision must be 1 to 38 and scale at most precision"),
                ));
            }
            SqlType::Decimal { precision: precision as u8, scale: scale as u8 }
        }
        "VARCHAR" | "STRING" | "CHAR" | "TEXT" => {
            if parser.consume_token(&Token::LParen) {
                parser.parse_literal_uint()?;
                parser.expect_token(&Token::RParen)?;
            }
            SqlType::Varchar
        }
        "TIMESTAMP" => {
            if !matches!(parser.peek_token().token, Token::LParen) {
                return Err(SqlError::at(
                    at,
                    "TIMESTAMP without a precision is TIMESTAMP(6) in Flink, which Weir does not keep: write TIMESTAMP(3)",
                ));
            }
            if parser.consume_token(&Token::LParen) {
                let precision = parser.parse_literal_uint()?;
                parser.expect_token(&Token::RParen)?;
                if precision != 3 {
                    return Err(SqlError::at(
                        at,
                        format!("TIMESTAMP({precision}) is not supported yet: Weir keeps milliseconds, TIMESTAMP(3)"),
                    ));
                }
            }
            if parser.parse_keyword(Keyword::WITH) {
                return Err(SqlError::at(
                    at,
                    "TIMESTAMP WITH (LOCAL) TIME ZONE is not supported yet: use TIMESTAMP(3)",
                ));
            }
            SqlType::Timestamp
        }
        "ROW" => {
            let angle = if parser.consume_token(&Token::Lt) {
                true
            } else if parser.consume_token(&Token::LParen) {
                false
            } else {
                return Err(SqlError::at(at, "expected ROW<name type, …> or ROW(name type, …)"));
            };
            let mut fields: Vec<(String, SqlType)> = Vec::new();
            loop {
                let field_at = parser.peek_token().span.start;
                let name = parser.parse_identifier()?.value;
                let ty = parse_type_nested(parser, pending_closes)?;
                let _ = parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
                if fields.iter().any(|(existing, _)| *existing == name) {
                    return Err(SqlError::at(field_at, format!("field {name} appears twice in the ROW type")));
                }
                fields.push((name, ty));
                if *pending_closes > 0 && angle {
                    *pending_closes -= 1;
                    break;
                }
                if parser.consume_token(&Token::Comma) {
                    continue;
                }
                let close = parser.next_token();
                match (&close.token, angle) {
                    (Token::Gt, true) | (Token::RParen, false) => break,
                    (Token::ShiftRight, true) => {
                        // Closes this ROW and the one around it.
                        *pending_closes += 1;
                        break;
                    }
                    _ => {
                        let expected = if angle { "',' or '>'" } else { "',' or ')'" };
                        return Err(SqlError::at(
                            close.span.start,
                            format!("expected {expected}, found {}", close.token),
                        ));
                    }
                }
            }
            SqlType::Row(fields)
        }
        other => {
            return Err(SqlError::at(
                at,
                format!(
                    "type {other} is not supported: use BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, DOUBLE, \
                     DECIMAL(p, s), VARCHAR, TIMESTAMP(3) or ROW<…>"
                ),
            ))
        }
    };
    Ok(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDL: &str = "
        CREATE TABLE events (
            kind INT,
            payload ROW<id BIGINT, `when` TIMESTAMP(3), inner ROW<a INT, b VARCHAR>>,
            price DECIMAL(23, 3) NOT NULL,
            `ts` AS payload.`when`,
            WATERMARK FOR `ts` AS `ts` - INTERVAL '4' SECOND
        ) WITH ('connector' = 'nexmark', 'events.num' = '1000');
        SET 'parallelism.default' = '2';
        CREATE VIEW ids AS SELECT payload.id FROM events WHERE kind = 2;
        INSERT INTO sink SELECT id FROM ids
    ";

    #[test]
    fn flink_ddl_views_and_inserts_parse() {
        let statements = parse_script(DDL).unwrap();
        assert_eq!(statements.len(), 4);
        let SqlStatement::CreateTable(table) = &statements[0] else { panic!("a table") };
        assert_eq!(table.name, "events");
        assert_eq!(table.columns.len(), 4);
        let ColumnKind::Physical(SqlType::Row(fields)) = &table.columns[1].kind else { panic!("a row") };
        assert_eq!(fields[1], ("when".to_owned(), SqlType::Timestamp));
        assert_eq!(
            fields[2].1,
            SqlType::Row(vec![("a".into(), SqlType::Integer(IntegerWidth::Int)), ("b".into(), SqlType::Varchar)])
        );
        assert!(matches!(&table.columns[2].kind, ColumnKind::Physical(SqlType::Decimal { precision: 23, scale: 3 })));
        assert!(matches!(&table.columns[3].kind, ColumnKind::Computed(_)));
        assert_eq!(table.watermark.as_ref().unwrap().column, "ts");
        assert_eq!(table.options["events.num"], "1000");
        assert!(
            matches!(&statements[1], SqlStatement::Set { key, value, .. } if key == "parallelism.default" && value == "2")
        );
        assert!(matches!(&statements[2], SqlStatement::CreateView { name, .. } if name == "ids"));
        assert!(matches!(&statements[3], SqlStatement::Insert { table, .. } if table == "sink"));
    }

    #[test]
    fn errors_say_where() {
        let error = parse_script("CREATE TABLE t (\n  a BIGINT,\n  b MONEY\n)").unwrap_err();
        assert_eq!((error.line, error.column), (3, 5));
        assert!(error.message.contains("type MONEY is not supported"), "{error}");
        let error = parse_script("SELECT 1 FROM t").unwrap_err();
        assert!(error.to_string().starts_with("line 1, column 1: a SELECT on its own"), "{error}");
        let error = parse_script("INSERT INTO t SELECT a FROM s WHERE").unwrap_err();
        assert!(error.line == 1 && error.column > 30, "{error:?}");
    }
}
