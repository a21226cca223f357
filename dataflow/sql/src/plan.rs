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
    Expr, GroupByExpr, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Spanned, TableFactor,
    TableWithJoins,
};
use sqlparser::tokenizer::Location;

use crate::connector::{self, SinkConnector, SourceConnector};
use crate::expr::{Column, Scalar, Scope};
use crate::parser::{ColumnKind, SqlError, SqlStatement, TableDef};
use crate::types::{Row, SqlType};

/// What a script declared, and what it inserts.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: BTreeMap<String, TableDef>,
    views: BTreeMap<String, Box<Query>>,
    /// `SET` options.
    pub settings: BTreeMap<String, String>,
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
    pub fn plan(statements: Vec<SqlStatement>) -> Result<(Catalog, Vec<Insert>), SqlError> {
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
                    catalog.tables.insert(name, *table);
                }
                SqlStatement::CreateView { name, query, at } => {
                    if catalog.tables.contains_key(&name) || catalog.views.contains_key(&name) {
                        return Err(SqlError::at(at, format!("{name} is declared twice")));
                    }
                    // Planned now, so that a wrong view is reported where it is declared.
                    catalog.query(&query)?;
                    catalog.views.insert(name, query);
                }
                SqlStatement::Set { key, value, .. } => {
                    catalog.settings.insert(key, value);
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
        Ok((catalog, inserts))
    }

    fn insert(&self, target: &str, query: &Query, at: Location) -> Result<Insert, SqlError> {
        let Some(sink_table) = self.tables.get(target) else {
            let hint = if self.views.contains_key(target) { ": it is a view; insert into a table" } else { "" };
            return Err(SqlError::at(at, format!("table {target} is not declared{hint}")));
        };
        let relation = self.query(query)?;
        let sink = connector::sink(sink_table)?;
        let targets: Vec<(&str, &SqlType)> = sink_table
            .columns
            .iter()
            .filter_map(|c| match &c.kind {
                ColumnKind::Physical(ty) => Some((c.name.as_str(), ty)),
                ColumnKind::Computed(_) => None,
            })
            .collect();
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
        let scope = Scope { columns: relation.columns.clone() };
        let mut exprs = Vec::new();
        let mut changes = false;
        for (index, ((name, ty), column)) in targets.iter().zip(&relation.columns).enumerate() {
            let scalar = scope_column(&scope, index);
            changes |= column.ty != **ty;
            exprs.push(scalar.coerce_to(ty, at, &format!("INSERT INTO {target}, column {name}"))?);
        }
        let mut steps = relation.steps;
        if changes {
            steps.push(Step::Project(exprs));
        }
        let source_table = &self.tables[&relation.table];
        let (source, computed, event_time) = self.source_of(source_table)?;
        Ok(Insert {
            source_table: relation.table,
            source,
            computed,
            event_time,
            steps,
            sink_table: target.to_owned(),
            sink,
        })
    }

    /// The connector, computed columns and event time of a source table.
    #[allow(clippy::type_complexity)]
    fn source_of(&self, table: &TableDef) -> Result<(SourceConnector, Vec<Scalar>, Option<(usize, i64)>), SqlError> {
        let physical: Vec<(String, SqlType, Location)> = table
            .columns
            .iter()
            .filter_map(|c| match &c.kind {
                ColumnKind::Physical(ty) => Some((c.name.clone(), ty.clone(), c.at)),
                ColumnKind::Computed(_) => None,
            })
            .collect();
        let source = connector::source(table, &physical)?;
        // Computed columns see the physical ones (Flink: not each other).
        let scope = Scope {
            columns: physical
                .iter()
                .map(|(name, ty, _)| Column { qualifier: None, name: name.clone(), ty: ty.clone() })
                .collect(),
        };
        let mut computed = Vec::new();
        for column in &table.columns {
            if let ColumnKind::Computed(expr) = &column.kind {
                computed.push(scope.compile(expr)?);
            }
        }
        let columns = self.table_columns(table);
        let event_time = match &table.watermark {
            None => None,
            Some(watermark) => {
                let Some(index) = columns.iter().position(|c| c.name == watermark.column) else {
                    return Err(SqlError::at(
                        watermark.at,
                        format!("WATERMARK FOR {}: no such column", watermark.column),
                    ));
                };
                if columns[index].ty != SqlType::Timestamp {
                    return Err(SqlError::at(
                        watermark.at,
                        format!(
                            "WATERMARK FOR {}: the column must be TIMESTAMP(3), not {}",
                            watermark.column, columns[index].ty
                        ),
                    ));
                }
                let delay = watermark_delay(&watermark.expr, &watermark.column, &Scope { columns: columns.clone() })?;
                Some((index, delay))
            }
        };
        Ok((source, computed, event_time))
    }

    /// A table's columns as a query sees them: physical, then computed.
    fn table_columns(&self, table: &TableDef) -> Vec<Column> {
        let physical = table.columns.iter().filter_map(|c| match &c.kind {
            ColumnKind::Physical(ty) => Some(Column { qualifier: None, name: c.name.clone(), ty: ty.clone() }),
            ColumnKind::Computed(_) => None,
        });
        let scope = Scope { columns: physical.clone().collect() };
        let computed = table.columns.iter().filter_map(|c| match &c.kind {
            ColumnKind::Computed(expr) => {
                // Typed by compiling (errors surface in `source_of`).
                let ty = scope.compile(expr).map(|s| s.ty).unwrap_or(SqlType::Null);
                Some(Column { qualifier: None, name: c.name.clone(), ty })
            }
            ColumnKind::Physical(_) => None,
        });
        physical.chain(computed).collect()
    }

    /// Plans a query into a relation.
    fn query(&self, query: &Query) -> Result<Relation, SqlError> {
        let at = query.span().start;
        if query.with.is_some() {
            return Err(SqlError::at(at, "WITH is not supported yet: declare a view with CREATE VIEW"));
        }
        if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
            return Err(SqlError::at(at, "ORDER BY, LIMIT and FETCH are not supported yet"));
        }
        let select = match query.body.as_ref() {
            SetExpr::Select(select) => select,
            SetExpr::Query(inner) => return self.query(inner),
            SetExpr::SetOperation { .. } => {
                return Err(SqlError::at(at, "UNION, INTERSECT and EXCEPT are not supported yet"))
            }
            other => return Err(SqlError::at(at, format!("`{other}` is not supported yet"))),
        };
        self.select(select)
    }

    fn select(&self, select: &Select) -> Result<Relation, SqlError> {
        let at = select.span().start;
        if select.distinct.is_some() {
            return Err(SqlError::at(at, "SELECT DISTINCT is not supported yet"));
        }
        let grouped = match &select.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => !exprs.is_empty() || !modifiers.is_empty(),
            GroupByExpr::All(_) => true,
        };
        if grouped || select.having.is_some() {
            return Err(SqlError::at(at, "GROUP BY (aggregation) is not supported yet"));
        }
        if !select.named_window.is_empty() || select.qualify.is_some() || !select.lateral_views.is_empty() {
            return Err(SqlError::at(at, "WINDOW, QUALIFY and LATERAL VIEW are not supported"));
        }
        let mut relation = match select.from.as_slice() {
            [TableWithJoins { relation, joins }] if joins.is_empty() => self.relation(relation)?,
            [TableWithJoins { joins, .. }] => {
                return Err(SqlError::at(joins[0].span().start, "JOIN is not supported yet"));
            }
            [] => return Err(SqlError::at(at, "a SELECT without FROM is not supported")),
            _ => return Err(SqlError::at(at, "several tables in FROM (a cross join) are not supported yet")),
        };
        let scope = Scope { columns: relation.columns.clone() };
        if let Some(predicate) = &select.selection {
            relation.steps.push(Step::Filter(scope.boolean(predicate)?));
        }
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for (position, item) in select.projection.iter().enumerate() {
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
                SelectItem::Wildcard(_) => {
                    for index in 0..scope.columns.len() {
                        exprs.push(scope_column(&scope, index));
                        columns.push(Column { qualifier: None, ..scope.columns[index].clone() });
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
                        return Err(SqlError::at(item.span().start, "this wildcard form is not supported"));
                    };
                    let qualifier = name.to_string();
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
            TableFactor::Table { version: Some(_), .. } => {
                Err(SqlError::at(at, "temporal joins (FOR SYSTEM_TIME AS OF) are not supported yet"))
            }
            TableFactor::Table { name, alias, args: None, with_hints, .. } if with_hints.is_empty() => {
                let name = match name.0.as_slice() {
                    [part] => part.as_ident().map(|i| i.value.clone()).unwrap_or_else(|| part.to_string()),
                    _ => return Err(SqlError::at(at, format!("qualified name {name} is not supported"))),
                };
                let qualifier = alias.as_ref().map_or(name.clone(), |a| a.name.value.clone());
                let mut relation = if let Some(view) = self.views.get(&name) {
                    self.query(view)?
                } else if let Some(table) = self.tables.get(&name) {
                    Relation { table: name.clone(), steps: Vec::new(), columns: self.table_columns(table) }
                } else {
                    return Err(SqlError::at(at, format!("table or view {name} is not declared")));
                };
                relation.columns.iter_mut().for_each(|c| c.qualifier = Some(qualifier.clone()));
                Ok(relation)
            }
            TableFactor::Derived { lateral: false, subquery, alias } => {
                let mut relation = self.query(subquery)?;
                let qualifier = alias.as_ref().map(|a| a.name.value.clone());
                relation.columns.iter_mut().for_each(|c| c.qualifier = qualifier.clone());
                Ok(relation)
            }
            TableFactor::Table { args: Some(_), .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::Function { .. } => {
                Err(SqlError::at(at, "table functions (TUMBLE, HOP, CUMULATE, SESSION) are not supported yet"))
            }
            other => Err(SqlError::at(at, format!("`{other}` in FROM is not supported yet"))),
        }
    }
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
