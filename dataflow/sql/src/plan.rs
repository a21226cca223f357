//! Planning: a script's catalog (tables, views, settings) and its `INSERT`s as pipelines of
//! Weir operators.
//!
//! This first planner covers append-only queries over one table: projections, filters, `CASE`,
//! arithmetic, nested field access, views and subqueries in `FROM`. A query is flattened into
//! a source table and a list of steps (filter, project) that run in one `flat_map` per record,
//! with no per-step allocation beyond the projected row. What it cannot plan yet — joins,
//! `GROUP BY`, window table functions, `ORDER BY`, `UNION` — is an error naming the construct
//! and its position, never a wrong answer.

use std::collections::BTreeMap;

use sqlparser::ast::{
    Expr, GroupByExpr, Query, Select, SelectFlavor, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Spanned,
    TableFactor, TableWithJoins,
};
use sqlparser::tokenizer::Location;

use crate::connector::{self, SinkConnector, SourceConnector};
use crate::expr::{Column, Scalar, Scope};
use crate::parser::{refuse, ColumnDef, ColumnKind, SqlError, SqlStatement, TableDef};
use crate::types::{Row, SqlType};

/// What a script declared, and what it inserts.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: BTreeMap<String, Table>,
    views: BTreeMap<String, Box<Query>>,
}

/// A declared table with what its declaration determines, compiled once where it is declared.
#[derive(Debug)]
struct Table {
    def: TableDef,
    /// Its columns as a query sees them: physical, then computed.
    columns: Vec<Column>,
    /// The computed columns, over the physical ones (Flink: not over each other).
    computed: Vec<Scalar>,
}

impl Table {
    fn new(def: TableDef) -> Result<Table, SqlError> {
        let physical: Vec<Column> =
            def.physical().map(|(c, ty)| Column { qualifier: None, name: c.name.clone(), ty: ty.clone() }).collect();
        let scope = Scope { columns: physical.clone() };
        let mut columns = physical;
        let mut computed = Vec::new();
        for column in &def.columns {
            if let ColumnKind::Computed(expr) = &column.kind {
                let scalar = scope.compile(expr)?;
                columns.push(Column { qualifier: None, name: column.name.clone(), ty: scalar.ty.clone() });
                computed.push(scalar);
            }
        }
        Ok(Table { def, columns, computed })
    }
}

/// One `INSERT`, planned.
#[derive(Debug)]
pub struct Insert {
    /// The source table's name.
    pub source_table: String,
    /// How its rows are read.
    pub source: SourceConnector,
    /// Computed columns, appended to the physical ones.
    pub computed: Vec<Scalar>,
    /// The event-time column and the watermark's delay, if the table declares a watermark.
    pub event_time: Option<(usize, i64)>,
    /// Filters and projections, in order.
    pub steps: Vec<Step>,
    /// The target table's name.
    pub sink_table: String,
    /// Where the rows go.
    pub sink: SinkConnector,
}

/// One step of a pipeline.
#[derive(Clone, Debug)]
pub enum Step {
    /// Keeps rows for which the predicate is `TRUE`.
    Filter(Scalar),
    /// Replaces each row by these expressions of it.
    Project(Vec<Scalar>),
}

impl Step {
    /// Applies the steps to `row`: the resulting row, or `None` if a filter dropped it.
    pub fn run(steps: &[Step], mut row: Row) -> Option<Row> {
        for step in steps {
            match step {
                Step::Filter(predicate) => {
                    if !predicate.holds(&row) {
                        return None;
                    }
                }
                Step::Project(exprs) => row = exprs.iter().map(|e| e.eval(&row)).collect(),
            }
        }
        Some(row)
    }
}

/// A relation while planning: where its rows come from, the steps so far, its columns.
struct Relation {
    table: String,
    steps: Vec<Step>,
    columns: Vec<Column>,
}

impl Catalog {
    /// Builds the catalog from a script and plans its `INSERT`s, in order.
    pub fn plan(statements: Vec<SqlStatement>) -> Result<Vec<Insert>, SqlError> {
        let mut catalog = Catalog::default();
        let mut inserts = Vec::new();
        for statement in statements {
            match statement {
                SqlStatement::CreateTable(table) => {
                    let at = table.at;
                    let name = table.name.clone();
                    if catalog.tables.contains_key(&name) || catalog.views.contains_key(&name) {
                        return Err(SqlError::at(at, format!("{name} is declared twice")));
                    }
                    // Computed columns are checked where they are declared.
                    catalog.tables.insert(name, Table::new(*table)?);
                }
                SqlStatement::CreateView { name, query, at } => {
                    if catalog.tables.contains_key(&name) || catalog.views.contains_key(&name) {
                        return Err(SqlError::at(at, format!("{name} is declared twice")));
                    }
                    // Planned now, so that a wrong view is reported where it is declared.
                    catalog.query(&query)?;
                    catalog.views.insert(name, query);
                }
                SqlStatement::Set { key, at, .. } => {
                    return Err(SqlError::at(
                        at,
                        format!(
                            "SET '{key}' is not supported yet: give the parallelism and checkpoint interval on the \
                             command line"
                        ),
                    ));
                }
                SqlStatement::Insert { table, query, at } => inserts.push(catalog.insert(&table, &query, at)?),
            }
        }
        if inserts.is_empty() {
            return Err(SqlError {
                message: "the script inserts nothing: add INSERT INTO <table> SELECT …".into(),
                line: 0,
                column: 0,
            });
        }
        Ok(inserts)
    }

    fn insert(&self, target: &str, query: &Query, at: Location) -> Result<Insert, SqlError> {
        let Some(Table { def: sink_table, .. }) = self.tables.get(target) else {
            let hint = if self.views.contains_key(target) { ": it is a view; insert into a table" } else { "" };
            return Err(SqlError::at(at, format!("table {target} is not declared{hint}")));
        };
        let relation = self.query(query)?;
        let sink = connector::sink(sink_table)?;
        if let Some(column) = sink_table.columns.iter().find(|c| c.not_null) {
            return Err(SqlError::at(
                column.at,
                format!(
                    "NOT NULL on the sink column {} is not enforced yet (Flink fails the job on a NULL there): \
                     remove NOT NULL",
                    column.name
                ),
            ));
        }
        let targets: Vec<(&ColumnDef, &SqlType)> = sink_table.physical().collect();
        if targets.len() != relation.columns.len() {
            return Err(SqlError::at(
                at,
                format!(
                    "INSERT INTO {target}: the query has {} columns, the table {}",
                    relation.columns.len(),
                    targets.len()
                ),
            ));
        }
        // Convert each column to the table's type, as Flink's implicit casts do.
        let mut exprs = Vec::new();
        let mut changes = false;
        for (index, ((column, ty), read)) in targets.iter().zip(&relation.columns).enumerate() {
            changes |= read.ty != **ty;
            let scalar = Scalar::column(index, read.ty.clone());
            exprs.push(scalar.coerce_to(ty, at, &format!("INSERT INTO {target}, column {}", column.name))?);
        }
        let mut steps = relation.steps;
        if changes {
            steps.push(Step::Project(exprs));
        }
        let source_table = &self.tables[&relation.table];
        Ok(Insert {
            source: connector::source(&source_table.def)?,
            computed: source_table.computed.clone(),
            event_time: event_time(source_table)?,
            source_table: relation.table,
            steps: fuse(steps),
            sink_table: target.to_owned(),
            sink,
        })
    }

    /// Plans a query into a relation. Every clause `sqlparser` parsed is looked at (no `..`):
    /// one Weir does not implement is refused, never dropped.
    fn query(&self, query: &Query) -> Result<Relation, SqlError> {
        let at = query.span().start;
        let Query {
            with,
            body,
            order_by,
            limit_clause,
            fetch,
            locks,
            for_clause,
            settings,
            format_clause,
            pipe_operators,
        } = query;
        refuse(with.is_some(), at, "WITH (declare a view with CREATE VIEW)")?;
        if let Some(order_by) = order_by {
            refuse(true, order_by.span().start, "ORDER BY")?;
        }
        if let Some(limit) = limit_clause {
            refuse(true, limit.span().start, "LIMIT / OFFSET")?;
        }
        refuse(fetch.is_some(), at, "FETCH")?;
        refuse(
            !locks.is_empty()
                || for_clause.is_some()
                || settings.is_some()
                || format_clause.is_some()
                || !pipe_operators.is_empty(),
            at,
            "this clause of a query",
        )?;
        match body.as_ref() {
            SetExpr::Select(select) => self.select(select),
            SetExpr::Query(inner) => self.query(inner),
            SetExpr::SetOperation { .. } => Err(SqlError::at(at, "UNION, INTERSECT and EXCEPT are not supported yet")),
            other => Err(SqlError::at(at, format!("`{other}` is not supported yet"))),
        }
    }

    fn select(&self, select: &Select) -> Result<Relation, SqlError> {
        let at = select.span().start;
        let Select {
            select_token: _,
            distinct,
            top,
            top_before_distinct: _,
            projection,
            exclude,
            into,
            from,
            lateral_views,
            prewhere,
            selection,
            group_by,
            cluster_by,
            distribute_by,
            sort_by,
            having,
            named_window,
            qualify,
            window_before_qualify: _,
            value_table_mode,
            connect_by,
            flavor,
        } = select;
        refuse(distinct.is_some(), at, "SELECT DISTINCT")?;
        refuse(top.is_some(), at, "SELECT TOP")?;
        refuse(exclude.is_some(), at, "SELECT * EXCLUDE")?;
        refuse(into.is_some(), at, "SELECT … INTO")?;
        let grouped = match group_by {
            GroupByExpr::Expressions(exprs, modifiers) => !exprs.is_empty() || !modifiers.is_empty(),
            GroupByExpr::All(_) => true,
        };
        refuse(grouped || having.is_some(), at, "GROUP BY (aggregation)")?;
        refuse(!named_window.is_empty() || qualify.is_some(), at, "WINDOW and QUALIFY")?;
        refuse(
            !lateral_views.is_empty()
                || prewhere.is_some()
                || !cluster_by.is_empty()
                || !distribute_by.is_empty()
                || !sort_by.is_empty()
                || value_table_mode.is_some()
                || connect_by.is_some()
                || *flavor != SelectFlavor::Standard,
            at,
            "this clause of SELECT",
        )?;
        let mut relation = match from.as_slice() {
            [TableWithJoins { relation, joins }] if joins.is_empty() => self.relation(relation)?,
            [TableWithJoins { joins, .. }] => {
                return Err(SqlError::at(joins[0].span().start, "JOIN is not supported yet"));
            }
            [] => return Err(SqlError::at(at, "a SELECT without FROM is not supported")),
            _ => return Err(SqlError::at(at, "several tables in FROM (a cross join) are not supported yet")),
        };
        let scope = Scope { columns: relation.columns.clone() };
        if let Some(predicate) = selection {
            relation.steps.push(Step::Filter(scope.boolean(predicate)?));
        }
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for (position, item) in projection.iter().enumerate() {
            match item {
                SelectItem::UnnamedExpr(expr) => {
                    let scalar = scope.compile(expr)?;
                    columns.push(Column { qualifier: None, name: output_name(expr, position), ty: scalar.ty.clone() });
                    exprs.push(scalar);
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let scalar = scope.compile(expr)?;
                    columns.push(Column { qualifier: None, name: alias.value.clone(), ty: scalar.ty.clone() });
                    exprs.push(scalar);
                }
                SelectItem::Wildcard(options) => {
                    refuse(*options != Default::default(), item.span().start, "wildcard options (EXCEPT, REPLACE, …)")?;
                    for index in 0..scope.columns.len() {
                        exprs.push(scope_column(&scope, index));
                        columns.push(Column { qualifier: None, ..scope.columns[index].clone() });
                    }
                }
                SelectItem::QualifiedWildcard(kind, options) => {
                    refuse(*options != Default::default(), item.span().start, "wildcard options (EXCEPT, REPLACE, …)")?;
                    let SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
                        return Err(SqlError::at(item.span().start, "this wildcard form is not supported"));
                    };
                    let qualifier = match name.0.as_slice() {
                        [part] => part.as_ident().map(|i| i.value.clone()).unwrap_or_else(|| part.to_string()),
                        _ => return Err(SqlError::at(item.span().start, format!("{name}.*: use a table's own name"))),
                    };
                    let mut any = false;
                    for index in 0..scope.columns.len() {
                        if scope.columns[index].qualifier.as_deref() == Some(qualifier.as_str()) {
                            any = true;
                            exprs.push(scope_column(&scope, index));
                            columns.push(Column { qualifier: None, ..scope.columns[index].clone() });
                        }
                    }
                    if !any {
                        return Err(SqlError::at(
                            item.span().start,
                            format!("{qualifier}.*: no table {qualifier} in FROM"),
                        ));
                    }
                }
            }
        }
        relation.steps.push(Step::Project(exprs));
        relation.columns = columns;
        Ok(relation)
    }

    fn relation(&self, factor: &TableFactor) -> Result<Relation, SqlError> {
        let at = factor.span().start;
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_hints,
            } => {
                refuse(version.is_some(), at, "FOR SYSTEM_TIME AS OF (temporal joins)")?;
                refuse(args.is_some(), at, "table functions (TUMBLE, HOP, CUMULATE, SESSION)")?;
                refuse(sample.is_some(), at, "TABLESAMPLE")?;
                refuse(
                    !with_hints.is_empty()
                        || *with_ordinality
                        || !partitions.is_empty()
                        || json_path.is_some()
                        || !index_hints.is_empty(),
                    at,
                    "this form of table reference",
                )?;
                refuse(
                    alias.as_ref().is_some_and(|a| !a.columns.is_empty()),
                    at,
                    "column aliases on a table (t AS a(x, y))",
                )?;
                let name = match name.0.as_slice() {
                    [part] => part.as_ident().map(|i| i.value.clone()).unwrap_or_else(|| part.to_string()),
                    _ => return Err(SqlError::at(at, format!("qualified name {name} is not supported"))),
                };
                let qualifier = alias.as_ref().map_or(name.clone(), |a| a.name.value.clone());
                let mut relation = if let Some(view) = self.views.get(&name) {
                    self.query(view)?
                } else if let Some(table) = self.tables.get(&name) {
                    Relation { table: name.clone(), steps: Vec::new(), columns: table.columns.clone() }
                } else {
                    return Err(SqlError::at(at, format!("table or view {name} is not declared")));
                };
                relation.columns.iter_mut().for_each(|c| c.qualifier = Some(qualifier.clone()));
                Ok(relation)
            }
            TableFactor::Derived { lateral: false, subquery, alias } => {
                refuse(
                    alias.as_ref().is_some_and(|a| !a.columns.is_empty()),
                    at,
                    "column aliases on a subquery (AS s(x, y): alias the columns in its SELECT)",
                )?;
                let mut relation = self.query(subquery)?;
                let qualifier = alias.as_ref().map(|a| a.name.value.clone());
                relation.columns.iter_mut().for_each(|c| c.qualifier = qualifier.clone());
                Ok(relation)
            }
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } => {
                Err(SqlError::at(at, "table functions (TUMBLE, HOP, CUMULATE, SESSION) are not supported yet"))
            }
            other => Err(SqlError::at(at, format!("`{other}` in FROM is not supported yet"))),
        }
    }
}

/// The steps as filters over the source row followed by at most one projection: a filter
/// after a projection is rewritten over the projection's input, and projections in a row are
/// composed — so views and subqueries cost one row build, not one each. Expressions are pure,
/// so the answer is the same.
fn fuse(steps: Vec<Step>) -> Vec<Step> {
    let mut filters: Vec<Step> = Vec::new();
    let mut projection: Option<Vec<Scalar>> = None;
    for step in steps {
        match step {
            Step::Filter(predicate) => {
                let predicate = match &projection {
                    Some(inner) => predicate.substitute(inner),
                    None => predicate,
                };
                filters.push(Step::Filter(predicate));
            }
            Step::Project(outer) => {
                projection = Some(match projection {
                    Some(inner) => outer.iter().map(|e| e.substitute(&inner)).collect(),
                    None => outer,
                });
            }
        }
    }
    filters.extend(projection.map(Step::Project));
    filters
}

/// The event-time column of a source table and its watermark's delay, if it declares one.
fn event_time(table: &Table) -> Result<Option<(usize, i64)>, SqlError> {
    let Some(watermark) = &table.def.watermark else { return Ok(None) };
    let columns = &table.columns;
    let Some(index) = columns.iter().position(|c| c.name == watermark.column) else {
        return Err(SqlError::at(watermark.at, format!("WATERMARK FOR {}: no such column", watermark.column)));
    };
    if columns[index].ty != SqlType::Timestamp {
        return Err(SqlError::at(
            watermark.at,
            format!("WATERMARK FOR {}: the column must be TIMESTAMP(3), not {}", watermark.column, columns[index].ty),
        ));
    }
    let delay = watermark_delay(&watermark.expr, &watermark.column, &Scope { columns: columns.clone() })?;
    Ok(Some((index, delay)))
}

/// A column of `scope`, read as it is.
fn scope_column(scope: &Scope, index: usize) -> Scalar {
    Scalar::column(index, scope.columns[index].ty.clone())
}

/// The name Flink gives a select item without an alias: a column's own name, `EXPR$n` else.
fn output_name(expr: &Expr, position: usize) -> String {
    match expr {
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::CompoundIdentifier(parts) => parts.last().map_or_else(|| format!("EXPR${position}"), |p| p.value.clone()),
        _ => format!("EXPR${position}"),
    }
}

/// The delay of `WATERMARK FOR col AS col - INTERVAL …` (or `AS col`: no delay).
fn watermark_delay(expr: &Expr, column: &str, scope: &Scope) -> Result<i64, SqlError> {
    let at = expr.span().start;
    let is_column = |e: &Expr| matches!(e, Expr::Identifier(i) if i.value == column);
    match expr {
        e if is_column(e) => Ok(0),
        Expr::BinaryOp { left, op: sqlparser::ast::BinaryOperator::Minus, right } if is_column(left) => {
            let delay = scope.compile(right)?;
            match (delay.ty.clone(), delay.eval(&Vec::new())) {
                (SqlType::Interval, crate::types::Value::Millis(ms)) if ms >= 0 => Ok(ms),
                _ => Err(SqlError::at(at, "the watermark's delay must be a non-negative INTERVAL")),
            }
        }
        _ => Err(SqlError::at(
            at,
            format!("a watermark must be `{column}` or `{column} - INTERVAL 'n' SECOND` (bounded out-of-orderness)"),
        )),
    }
}
