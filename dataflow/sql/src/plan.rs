//! Planning: a script's catalog (tables, views, settings) and its `INSERT`s as pipelines of
//! Weir operators.
//!
//! A query is flattened into an input — a table, or a join of two pipelines — and a list of
//! stages: runs of steps (filter, project) that execute in one `flat_map` per record, with no
//! per-step allocation beyond the projected row, and between them window aggregations
//! (`TUMBLE`, `HOP`, `CUMULATE`, `GROUP BY SESSION(…)`, windows of processing time) and the
//! stages of updating results (aggregates without a window, Top-N), after which every stage
//! runs on the updating result. The planner tracks what each relation is — its event-time and
//! processing-time attributes, a window table function's pending windows, the bounds of a window
//! result, whether it updates and which operator makes it — and refuses what it cannot plan
//! (`ORDER BY`, `UNION`, outer joins, joins of updating results, …) with the construct and its
//! position named, never a wrong answer.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use sqlparser::ast::{
    Expr, GroupByExpr, Query, Select, SelectFlavor, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Spanned,
    TableFactor, TableWithJoins,
};
use sqlparser::tokenizer::Location;

use crate::aggregate::{AggregateCall, SqlAggregates, WindowSpec};
use crate::connector::{self, SinkConnector, SourceConnector};
use crate::expr::{calls_aggregate, plain_call, Column, GroupWindow, Grouping, Scalar, Scope};
use crate::parser::{refuse, ColumnDef, ColumnKind, SqlError, SqlStatement, TableDef};
use crate::rank::{OrderKey, TopN};
use crate::types::{Row, SqlType, Value};

/// What a script declared, and what it inserts.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: BTreeMap<String, Table>,
    views: BTreeMap<String, Box<Query>>,
    /// `SET 'table.exec.state.ttl'`: how long, in event time, a regular join keeps a row and an
    /// aggregate or Top-N over append-only rows an idle group; and where it was set.
    state_ttl: Option<(i64, Location)>,
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
        let scope = Scope::new(physical.clone());
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

/// A column as `DESCRIBE` shows it (Flink's columns: name, type, null, key, extras, watermark).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedColumn {
    /// Its name.
    pub name: String,
    /// Its type, `*ROWTIME*` marking the time attribute.
    pub ty: String,
    /// Whether it may be `NULL`.
    pub nullable: bool,
    /// Whether it is in the table's `PRIMARY KEY`.
    pub primary_key: bool,
    /// `AS expr` for a computed column.
    pub extras: String,
    /// The watermark expression, on the time attribute's column.
    pub watermark: String,
}

/// One `INSERT`, planned.
#[derive(Debug)]
pub struct Insert {
    /// Where its rows come from and what happens to them.
    pub pipeline: Pipeline,
    /// The target table's name.
    pub sink_table: String,
    /// Where the rows go.
    pub sink: SinkConnector,
    /// `table.exec.state.ttl` in milliseconds of event time, if set: it bounds the regular joins
    /// (planned as interval joins) and the aggregate or Top-N that writes the changelog.
    pub state_ttl: Option<i64>,
}

/// Rows from an input, through stages.
#[derive(Debug)]
pub struct Pipeline {
    /// Where the rows come from.
    pub input: Input,
    /// What happens to them, in order.
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Whether the result is an aggregate or a Top-N over append-only rows with nothing after it
    /// but filters and projections: then the fold that computes it writes its changelog itself,
    /// and keeps only its accumulators (see `weir_dataflow::KeyedStream::fold_changelog`).
    pub fn changelog_from_fold(&self) -> bool {
        let mut updating = matches!(self.input, Input::Join { kind: JoinKind::Updating { .. }, .. });
        let mut from_fold = false;
        for stage in &self.stages {
            match stage {
                Stage::Map(_) => {}
                Stage::Aggregate { .. } | Stage::TopN(_) => {
                    from_fold = !updating;
                    updating = true;
                }
                _ => from_fold = false,
            }
        }
        from_fold
    }
}

/// Where a pipeline's rows come from.
#[derive(Debug)]
pub enum Input {
    /// A declared table, read by its connector.
    Table(Scan),
    /// A join: the pairs of rows of two pipelines whose keys are equal, each pair as one row,
    /// left's columns then right's (see [`crate::join`]).
    Join {
        /// How rows meet.
        kind: JoinKind,
        /// The left side.
        left: Box<Pipeline>,
        /// The right side.
        right: Box<Pipeline>,
        /// The left side's join keys, over its rows.
        left_keys: Vec<Scalar>,
        /// The right side's join keys, over its rows (pairwise equal to the left's).
        right_keys: Vec<Scalar>,
        /// Of an outer join: the rest of its `ON` condition, over the joined row (a pair that
        /// fails it is no pair, so it decides which rows are kept with `NULL`s — it cannot be a
        /// filter after the join).
        condition: Vec<Scalar>,
    },
}

/// How a join's rows meet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Window by window, when the window closes (the keys include both window bounds). An outer
    /// window join stays append-only, as in Flink: a window's rows without a partner come out
    /// once, with `NULL`s for the other side, when it closes.
    Window {
        /// `LEFT` or `FULL`: a left row without a partner in its window is kept, with `NULL`s.
        left_outer: bool,
        /// `RIGHT` or `FULL`: the same for a right row.
        right_outer: bool,
        /// How many columns the left side's rows have.
        left_width: usize,
        /// How many columns the right side's rows have.
        right_width: usize,
    },
    /// Each row with every row of the other side so far.
    Regular,
    /// Each row with the other side's rows whose time is within bounds of its own: the right
    /// row's time minus the left row's is in `[lower, upper]` milliseconds (Flink's interval
    /// join; each side's rows are kept only while a partner may still come).
    Interval {
        /// The least difference.
        lower: i64,
        /// The greatest difference.
        upper: i64,
    },
    /// An outer join, or a join of an updating result: its result updates, on differential
    /// dataflow (see [`crate::join::updating_join`]).
    Updating {
        /// `LEFT` or `FULL`: a left row without a partner is kept, with `NULL`s for the right.
        left_outer: bool,
        /// `RIGHT` or `FULL`: the same for a right row.
        right_outer: bool,
        /// How many columns the left side's rows have.
        left_width: usize,
        /// How many columns the right side's rows have.
        right_width: usize,
    },
}

/// A table's rows as its connector reads them.
#[derive(Debug)]
pub struct Scan {
    /// The table's name.
    pub table: String,
    /// How its rows are read.
    pub source: SourceConnector,
    /// Computed columns, appended to the physical ones.
    pub computed: Vec<Scalar>,
    /// The event-time column and the watermark's delay, if the table declares a watermark.
    pub event_time: Option<(usize, i64)>,
}

/// One stage of a pipeline.
#[derive(Clone, Debug)]
pub enum Stage {
    /// Filters and projections, run together per row.
    Map(Vec<Step>),
    /// A window aggregation: rows are grouped by their first `keys` columns and windowed by
    /// event time; each group's window yields one row, `[keys…, window_start, window_end,
    /// window_time, aggregates…]`, when the watermark passes its end.
    WindowAggregate {
        /// The windows.
        window: WindowSpec,
        /// How many leading columns are the group key.
        keys: usize,
        /// The aggregates, over the remaining columns.
        aggregates: SqlAggregates,
    },
    /// An aggregation without a window: rows are grouped by their first `keys` columns, and
    /// each group's row, `[keys…, NULL, NULL, NULL, aggregates…]`, is updated whenever the
    /// group's rows change. From here on the pipeline's rows are an updating result (on
    /// differential dataflow: see `weir_dataflow::updating`), and its stages run on it.
    Aggregate {
        /// How many leading columns are the group key.
        keys: usize,
        /// The aggregates, over the remaining columns.
        aggregates: SqlAggregates,
    },
    /// A tumbling window of processing time (`TUMBLE` over a `PROCTIME()` column): rows are
    /// grouped by their first `keys` columns and by the processing time they are aggregated
    /// at; each group's window yields one row, laid out as [`Stage::WindowAggregate`]'s, when
    /// the processing time passes its end (see [`crate::proctime`]).
    ProcessingTimeAggregate {
        /// The windows' size.
        size: i64,
        /// How many leading columns are the group key.
        keys: usize,
        /// The aggregates, over the remaining columns.
        aggregates: SqlAggregates,
    },
    /// Top-N (`ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` and `rownum <= n`): rows are
    /// `[columns…, partition keys…, order keys…]`, and each partition's first rows are kept as
    /// `[columns…]` (see [`crate::rank`]). Updating, as [`Stage::Aggregate`].
    TopN(TopN),
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
    /// Whether it reads column `column` of its input.
    fn reads(&self, column: usize) -> bool {
        match self {
            Step::Filter(predicate) => predicate.reads_any(&|c| c == column),
            Step::Project(exprs) => exprs.iter().any(|e| e.reads_any(&|c| c == column)),
        }
    }

    /// Whether it reads the processing time.
    fn reads_processing_time(&self) -> bool {
        match self {
            Step::Filter(predicate) => predicate.reads_processing_time(),
            Step::Project(exprs) => exprs.iter().any(Scalar::reads_processing_time),
        }
    }

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

/// Which side of a join keeps its rows without a partner.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Outer {
    None,
    Left,
    Right,
    Full,
}

impl Outer {
    fn keeps_left(self) -> bool {
        matches!(self, Outer::Left | Outer::Full)
    }
    fn keeps_right(self) -> bool {
        matches!(self, Outer::Right | Outer::Full)
    }
    /// As SQL names it.
    fn name(self) -> &'static str {
        match self {
            Outer::None => "INNER",
            Outer::Left => "LEFT",
            Outer::Right => "RIGHT",
            Outer::Full => "FULL OUTER",
        }
    }
}

/// A relation while planning: where its rows come from, the stages so far, its columns.
struct Relation {
    input: RelationInput,
    stages: Vec<Stage>,
    columns: Vec<Column>,
    /// Its time attribute: the column the rows' event time was read from (Flink's rowtime),
    /// as long as it is passed on unchanged.
    time: Option<usize>,
    /// Its processing-time attribute: a `PROCTIME()` column, as long as it is passed on
    /// unchanged.
    proctime: Option<usize>,
    /// Whether its window table function's windows are of processing time.
    processing_windows: bool,
    /// A window table function's windows, not assigned yet: its `window_start`, `window_end`
    /// and `window_time` are the last three columns, which only a `GROUP BY` may read.
    window: Option<WindowSpec>,
    /// The `PARTITION BY` columns of a `SESSION` table function: its sessions are per value of
    /// these (none: one series of sessions over all rows).
    window_partition: Vec<usize>,
    /// The columns holding a window aggregation's `window_start` and `window_end`, as long as
    /// they are passed on unchanged (a window join matches windows on them).
    bounds: Option<(usize, usize)>,
    /// Whether its rows carry event time: read from a table with a `WATERMARK`, or made by an
    /// operator from such rows. (Joins hand rows over in event-time order, so they need it.)
    timestamped: bool,
    /// The operator whose result updates, if the relation's rows are an updating result rather
    /// than append-only (named as Flink names it when a sink cannot take updates).
    updating: Option<String>,
    /// A `ROW_NUMBER()` column whose `rownum <= n` is still to come, from the query over it.
    rank: Option<PendingRank>,
}

/// A `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` column of a select, waiting for the filter
/// on it that makes it a Top-N: the rows are `[columns…, partition keys…, order keys…]`.
struct PendingRank {
    /// The rank's column.
    column: usize,
    /// How many columns the select has.
    width: usize,
    /// How many partition keys follow them.
    partition: usize,
    /// The order keys, after the partition keys.
    order: Vec<OrderKey>,
    /// Where `ROW_NUMBER()` is.
    at: Location,
}

/// Where a relation's rows come from while planning.
enum RelationInput {
    Table(String),
    Join {
        kind: JoinKind,
        left: Box<Relation>,
        right: Box<Relation>,
        left_keys: Vec<Scalar>,
        right_keys: Vec<Scalar>,
        condition: Vec<Scalar>,
    },
}

impl Relation {
    /// Adds a step (to the current run of steps).
    fn push(&mut self, step: Step) {
        if let Step::Project(exprs) = &step {
            let moved = |column: usize| exprs.iter().position(|e| e.as_column() == Some(column));
            self.time = self.time.and_then(moved);
            self.proctime = self.proctime.and_then(moved);
            self.bounds = self.bounds.and_then(|(start, end)| Some((moved(start)?, moved(end)?)));
        }
        match self.stages.last_mut() {
            Some(Stage::Map(steps)) => steps.push(step),
            _ => self.stages.push(Stage::Map(vec![step])),
        }
    }

    /// The first column of a window table function's window properties, if it has them.
    fn window_columns(&self) -> Option<usize> {
        self.window.as_ref().map(|_| self.columns.len() - 3)
    }
}

impl Catalog {
    /// Builds the catalog from a script and plans its `INSERT`s, in order.
    pub fn plan(statements: Vec<SqlStatement>) -> Result<Vec<Insert>, SqlError> {
        let (inserts, explained) = Catalog::plan_all(statements)?;
        if inserts.is_empty() {
            let hint = if explained.is_empty() { "" } else { " (EXPLAIN only prints a plan)" };
            return Err(SqlError {
                message: format!("the script inserts nothing{hint}: add INSERT INTO <table> SELECT …"),
                line: 0,
                column: 0,
            });
        }
        Ok(inserts)
    }

    /// Builds the catalog from a script: its `INSERT`s, planned in order, and the plans its
    /// `EXPLAIN`s print (see [`crate::explain`]).
    pub fn plan_all(statements: Vec<SqlStatement>) -> Result<(Vec<Insert>, Vec<String>), SqlError> {
        let (_, inserts, explained) = Catalog::declare(statements)?;
        Ok((inserts, explained))
    }

    /// Builds the catalog from a script: the catalog itself (what the interactive shell asks
    /// about), the script's `INSERT`s planned in order, and the plans its `EXPLAIN`s print.
    pub fn declare(statements: Vec<SqlStatement>) -> Result<(Catalog, Vec<Insert>, Vec<String>), SqlError> {
        // The engine settings, checked here too, so that a script with a wrong one never runs.
        crate::settings::settings(&statements)?;
        let mut catalog = Catalog { state_ttl: crate::settings::state_ttl(&statements)?, ..Catalog::default() };
        let mut inserts = Vec::new();
        let mut explained = Vec::new();
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
                // Engine settings, read before the job is planned (`crate::settings`).
                SqlStatement::Set { .. } => {}
                SqlStatement::Insert { table, query, at } => inserts.push(catalog.insert(&table, &query, at)?),
                SqlStatement::Explain { table: Some(table), query, at } => {
                    explained.push(crate::explain::explain_insert(&catalog.insert(&table, &query, at)?, at));
                }
                SqlStatement::Explain { table: None, query, at } => {
                    let relation = catalog.query(&query)?;
                    if let Some(rank) = &relation.rank {
                        return Err(SqlError::at(rank.at, RANK_UNFILTERED));
                    }
                    explained.push(crate::explain::explain_query(&catalog.pipeline(relation)?, at));
                }
            }
        }
        Ok((catalog, inserts, explained))
    }

    /// Refuses `what` under a state TTL: its state is not bounded by one yet, and keeping it
    /// whole would give other answers than Flink's (which forgets it).
    fn refuse_state_ttl(&self, what: &str, at: Location) -> Result<(), SqlError> {
        match self.state_ttl {
            None => Ok(()),
            Some((_, set_at)) => Err(SqlError::at(
                at,
                format!(
                    "'table.exec.state.ttl' (SET at line {}, column {}) bounds regular joins of append-only rows, \
                     and aggregates and Top-Ns over them whose result goes to the sink, so far; {what} keeps its \
                     state whole, which would answer otherwise than with the TTL: remove the SET, or run this \
                     query in a job of its own",
                    set_at.line, set_at.column
                ),
            )),
        }
    }

    /// The declared tables' names, in order.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// The declared views' names, in order.
    pub fn view_names(&self) -> impl Iterator<Item = &str> {
        self.views.keys().map(String::as_str)
    }

    /// A table's or view's columns as `DESCRIBE` shows them, or `None` if nothing has that name.
    pub fn describe(&self, name: &str) -> Result<Option<Vec<DescribedColumn>>, SqlError> {
        if let Some(table) = self.tables.get(name) {
            let def = &table.def;
            let mut computed = table.columns[def.physical().count()..].iter();
            let described = def
                .columns
                .iter()
                .map(|column| {
                    let (ty, extras) = match &column.kind {
                        ColumnKind::Physical(ty) => (ty.to_string(), String::new()),
                        ColumnKind::Computed(expr) => {
                            let ty = computed.next().expect("a computed column per declaration").ty.to_string();
                            (ty, format!("AS {expr}"))
                        }
                    };
                    let watermark = def.watermark.as_ref().filter(|w| w.column == column.name);
                    DescribedColumn {
                        name: column.name.clone(),
                        ty: if watermark.is_some() { format!("{ty} *ROWTIME*") } else { ty },
                        nullable: !column.not_null,
                        primary_key: def.primary_key.contains(&column.name),
                        extras,
                        watermark: watermark.map_or(String::new(), |w| w.expr.to_string()),
                    }
                })
                .collect();
            return Ok(Some(described));
        }
        let Some(query) = self.views.get(name) else { return Ok(None) };
        let relation = self.query(query)?;
        let described = relation
            .columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                let rowtime = relation.time == Some(index);
                DescribedColumn {
                    name: column.name.clone(),
                    ty: if rowtime { format!("{} *ROWTIME*", column.ty) } else { column.ty.to_string() },
                    nullable: true,
                    primary_key: false,
                    extras: String::new(),
                    watermark: String::new(),
                }
            })
            .collect();
        Ok(Some(described))
    }

    /// The columns of a `SELECT` run on its own (the interactive shell's), planned as an
    /// `INSERT` of it would be: the query is checked whole, so that it fails here, with its
    /// position, rather than in the job.
    pub fn select_columns(&self, query: &Query) -> Result<Vec<(String, SqlType)>, SqlError> {
        let relation = self.query(query)?;
        if let Some(rank) = &relation.rank {
            return Err(SqlError::at(rank.at, RANK_UNFILTERED));
        }
        let columns = relation.columns.iter().map(|column| (column.name.clone(), column.ty.clone())).collect();
        self.pipeline(relation)?;
        Ok(columns)
    }

    fn insert(&self, target: &str, query: &Query, at: Location) -> Result<Insert, SqlError> {
        let Some(Table { def: sink_table, .. }) = self.tables.get(target) else {
            let hint = if self.views.contains_key(target) { ": it is a view; insert into a table" } else { "" };
            return Err(SqlError::at(at, format!("table {target} is not declared{hint}")));
        };
        let relation = self.query(query)?;
        if let Some(rank) = &relation.rank {
            return Err(SqlError::at(rank.at, RANK_UNFILTERED));
        }
        let sink = connector::sink(sink_table)?;
        if let (Some(producer), SinkConnector::Filesystem { format, .. }) = (&relation.updating, &sink) {
            if *format != crate::connector::FileFormat::ChangelogCsv {
                return Err(SqlError::at(
                    at,
                    format!(
                        "table {target} is append-only ('connector' = 'filesystem', 'format' = '{}'), but the \
                         query's result updates: {producer} produces updates. Write it to a table with 'format' = \
                         'changelog-csv' (each row led by its change: +I, -U, +U, -D), or to 'print' or 'blackhole'",
                        format.name()
                    ),
                ));
            }
        }
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
        let mut relation = relation;
        debug_assert!(relation.window.is_none(), "a select refuses unaggregated window table functions");
        if changes {
            relation.push(Step::Project(exprs));
        }
        Ok(Insert {
            pipeline: self.pipeline(relation)?,
            sink_table: target.to_owned(),
            sink,
            state_ttl: self.state_ttl.map(|(ttl, _)| ttl),
        })
    }

    /// A planned relation as a pipeline: tables resolved to their connectors, steps fused.
    fn pipeline(&self, relation: Relation) -> Result<Pipeline, SqlError> {
        let input = match relation.input {
            RelationInput::Table(name) => {
                let table = &self.tables[&name];
                Input::Table(Scan {
                    source: connector::source(&table.def)?,
                    computed: table.computed.clone(),
                    event_time: event_time(table)?,
                    table: name,
                })
            }
            RelationInput::Join { kind, left, right, left_keys, right_keys, condition } => {
                let types = |relation: &Relation| relation.columns.iter().map(|c| c.ty.clone()).collect();
                let (left_types, right_types): (Vec<SqlType>, Vec<SqlType>) = (types(&left), types(&right));
                let mut input = Input::Join {
                    kind,
                    left: Box::new(self.pipeline(*left)?),
                    right: Box::new(self.pipeline(*right)?),
                    left_keys,
                    right_keys,
                    condition,
                };
                let mut stages = fused(relation.stages);
                prune_join(&mut input, &mut stages, &left_types, &right_types);
                return Ok(Pipeline { input, stages });
            }
        };
        Ok(Pipeline { input, stages: fused(relation.stages) })
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
        let group_keys = match group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                refuse(!modifiers.is_empty(), at, "GROUP BY modifiers (ROLLUP, CUBE, GROUPING SETS)")?;
                exprs.as_slice()
            }
            GroupByExpr::All(_) => return Err(SqlError::at(at, "GROUP BY ALL is not supported")),
        };

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
        let mut where_joined = false;
        let mut relation = match from.as_slice() {
            [TableWithJoins { relation, joins }] if joins.is_empty() => self.relation(relation)?,
            [TableWithJoins { relation, joins }] => match joins.as_slice() {
                [join] => self.join(self.relation(relation)?, join)?,
                _ => {
                    return Err(SqlError::at(
                        joins[1].span().start,
                        "a JOIN of more than two tables is not supported yet",
                    ))
                }
            },
            // `FROM a, b WHERE …`: an inner join on the WHERE's conditions, as Flink plans it.
            [first, second] if first.joins.is_empty() && second.joins.is_empty() => {
                let Some(condition) = selection else {
                    return Err(SqlError::at(
                        at,
                        "two tables in FROM without a WHERE is a cross join, which is not supported",
                    ));
                };
                let (left, right) = (self.relation(&first.relation)?, self.relation(&second.relation)?);
                where_joined = true;
                self.join_on(left, right, condition, Outer::None, at)?
            }
            [] => return Err(SqlError::at(at, "a SELECT without FROM is not supported")),
            _ => {
                return Err(SqlError::at(
                    at,
                    "more than two tables in FROM (or a comma join with JOIN) is not supported yet",
                ))
            }
        };
        let scope = Scope::new(relation.columns.clone());
        let mut conditions = Vec::new();
        if let Some(predicate) = selection.as_ref().filter(|_| !where_joined) {
            split_conjuncts(predicate, &mut conditions);
        }
        if let Some(rank) = relation.rank.take() {
            self.top_n(&mut relation, rank, &scope, &mut conditions)?;
        }
        for predicate in conditions {
            let predicate_at = predicate.span().start;
            let predicate = scope.boolean(predicate)?;
            if let Some(first) = relation.window_columns() {
                refuse(
                    predicate.reads_any(&|column| column >= first),
                    predicate_at,
                    "a WHERE on window_start, window_end or window_time of a window table function (filter the \
                     aggregated result instead)",
                )?;
            }
            refuse_processing_time(&relation, [&predicate], predicate_at)?;
            relation.push(Step::Filter(predicate));
        }
        // Without a GROUP BY, aggregate calls make the whole input one group (Flink's global
        // aggregate).
        let aggregated = projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => calls_aggregate(expr),
            _ => false,
        });
        refuse(
            group_keys.is_empty() && !aggregated && having.is_some(),
            at,
            "HAVING without GROUP BY or an aggregate in the SELECT",
        )?;
        if !group_keys.is_empty() || aggregated {
            let group_at = group_keys.first().map_or(at, |key| key.span().start);
            return self.aggregate(relation, group_keys, group_at, having.as_ref(), projection);
        }
        if relation.window.is_some() {
            return Err(SqlError::at(at, WINDOW_UNAGGREGATED));
        }
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        // The ROW_NUMBER() column, its window, and where it is.
        let mut rank: Option<(usize, RankOver, Location)> = None;
        // A PROCTIME() column.
        let mut proctime = None;
        for (position, item) in projection.iter().enumerate() {
            if let Some((function, name)) = row_number(item, position) {
                let item_at = item.span().start;
                refuse(rank.is_some(), item_at, "two ROW_NUMBER() columns in one SELECT")?;
                rank = Some((exprs.len(), rank_over(function, &scope, item_at)?, item_at));
                columns.push(Column { qualifier: None, name, ty: SqlType::BIGINT });
                exprs.push(Scalar::literal(crate::types::Value::Null, SqlType::BIGINT));
                continue;
            }
            if is_proctime(item) {
                proctime = Some(exprs.len());
            }
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
        if let Some((column, RankOver { partition, order }, at)) = rank {
            let width = exprs.len();
            let partition_count = partition.len();
            exprs.extend(partition);
            let order = order
                .into_iter()
                .map(|(scalar, key)| {
                    exprs.push(scalar);
                    key
                })
                .collect();
            relation.rank = Some(PendingRank { column, width, partition: partition_count, order, at });
        }
        refuse_processing_time(&relation, &exprs, at)?;
        relation.push(Step::Project(exprs));
        relation.columns = columns;
        // A processing-time attribute selected anew, or passed on (moved by the projection).
        relation.proctime = proctime.or(relation.proctime);
        Ok(relation)
    }

    /// Makes a pending `ROW_NUMBER()` a Top-N with the condition among `conditions` that bounds
    /// it (`rownum <= n`, `rownum < n`, `rownum = 1`), which it takes out.
    fn top_n(
        &self,
        relation: &mut Relation,
        rank: PendingRank,
        scope: &Scope,
        conditions: &mut Vec<&Expr>,
    ) -> Result<(), SqlError> {
        use sqlparser::ast::BinaryOperator::{Eq, Gt, GtEq, Lt, LtEq};
        let constant = |expr: &Expr| match Scope::default().compile(expr).map(|s| s.eval(&Vec::new())) {
            Ok(crate::types::Value::Int(n)) => Some(n),
            _ => None,
        };
        let is_rank = |expr: &Expr| scope.compile(expr).ok().and_then(|s| s.as_column()) == Some(rank.column);
        if !relation.timestamped {
            return Err(SqlError::at(rank.at, UPDATING_UNTIMED));
        }
        if relation.updating.is_some() {
            self.refuse_state_ttl("a Top-N (ROW_NUMBER() OVER …) of an updating result", rank.at)?;
        }
        let mut limit = None;
        for (index, condition) in conditions.iter().enumerate() {
            let mut condition = *condition;
            while let Expr::Nested(inner) = condition {
                condition = inner;
            }
            let Expr::BinaryOp { left, op, right } = condition else { continue };
            // `rownum <op> n`, or `n <op> rownum` turned around.
            let bound = match (is_rank(left), is_rank(right)) {
                (true, false) => constant(right).map(|n| (op.clone(), n)),
                (false, true) => constant(left).map(|n| {
                    let flipped = match op {
                        Lt => Gt,
                        LtEq => GtEq,
                        Gt => Lt,
                        GtEq => LtEq,
                        other => other.clone(),
                    };
                    (flipped, n)
                }),
                _ => None,
            };
            // The upper bound makes the Top-N; any other condition on the rank (a lower bound)
            // stays a filter of its rows, as Flink's rank ranges.
            let n = match bound {
                Some((LtEq, n)) => n,
                Some((Lt, n)) => n.saturating_sub(1),
                Some((Eq, 1)) => 1,
                _ => continue,
            };
            if n < 1 {
                return Err(SqlError::at(condition.span().start, "a Top-N must keep at least one row"));
            }
            limit = Some((index, n));
            break;
        }
        let Some((index, limit)) = limit else {
            return Err(SqlError::at(
                rank.at,
                "ROW_NUMBER() OVER (…) needs an upper bound in the query over it (… WHERE rownum <= n, rownum < \
                 n or rownum = 1): a Top-N. Numbering every row is not supported",
            ));
        };
        conditions.remove(index);
        relation.stages.push(Stage::TopN(TopN {
            width: rank.width,
            partition: rank.partition,
            order: rank.order,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            rank: rank.column,
        }));
        relation.updating =
            Some(format!("the ROW_NUMBER() at line {}, column {} (a Top-N)", rank.at.line, rank.at.column));
        relation.time = None;
        relation.proctime = None;
        relation.bounds = None;
        Ok(())
    }

    /// Plans a grouped `SELECT`: keys and a window, then `HAVING` and the select list over the
    /// aggregated rows.
    fn aggregate(
        &self,
        mut relation: Relation,
        group_keys: &[Expr],
        group_at: Location,
        having: Option<&Expr>,
        projection: &[SelectItem],
    ) -> Result<Relation, SqlError> {
        if let Some(rank) = &relation.rank {
            return Err(SqlError::at(rank.at, RANK_UNFILTERED));
        }
        let input = Scope::new(relation.columns.clone());
        let window_columns = relation.window_columns();
        let is_window_column = |column: usize| window_columns.is_some_and(|first| column >= first);
        let mut keys: Vec<Scalar> = Vec::new();
        let mut key_columns: Vec<Column> = Vec::new();
        let mut bounds = [false; 2];
        let mut group_window: Option<GroupWindow> = None;
        for expr in group_keys {
            let key_at = expr.span().start;
            if let Some(window) = self.group_window(expr, &input, relation.time)? {
                refuse(window_columns.is_some(), key_at, "a group window over a window table function")?;
                refuse(group_window.is_some(), key_at, "two group windows in one GROUP BY")?;
                group_window = Some(window);
                continue;
            }
            let key = input.compile(expr)?;
            match (key.as_column(), window_columns) {
                (Some(column), Some(first)) if column == first || column == first + 1 => {
                    bounds[column - first] = true;
                    continue;
                }
                // `window_time` follows from the bounds (their end less a millisecond): grouping
                // by it too, as Flink's cascading windows do, groups nothing further.
                (Some(column), Some(first)) if column == first + 2 => continue,
                _ => {}
            }
            refuse(
                key.reads_any(&is_window_column),
                key_at,
                "GROUP BY an expression of the window's bounds (group by window_start, window_end and window_time \
                 themselves)",
            )?;
            if !keys.contains(&key) {
                key_columns.push(match key.as_column() {
                    Some(column) => relation.columns[column].clone(),
                    None => Column { qualifier: None, name: format!("$key{}", keys.len()), ty: key.ty.clone() },
                });
                keys.push(key);
            }
        }
        // A SESSION table function's sessions are per its PARTITION BY keys; its aggregate
        // groups each session's rows, so it must group by exactly those keys (Weir's session
        // windows are per group).
        let partition = std::mem::take(&mut relation.window_partition);
        if matches!(relation.window, Some(WindowSpec::Session { .. })) && bounds == [true, true] {
            let mut grouped: Vec<Option<usize>> = keys.iter().map(Scalar::as_column).collect();
            let mut partitioned: Vec<Option<usize>> = partition.iter().copied().map(Some).collect();
            grouped.sort_unstable();
            partitioned.sort_unstable();
            if grouped != partitioned {
                let names: Vec<&str> = partition.iter().map(|&c| relation.columns[c].name.as_str()).collect();
                return Err(SqlError::at(
                    group_at,
                    format!(
                        "GROUP BY over SESSION(…) must group by window_start, window_end and exactly the \
                         PARTITION BY columns ({}); other keys are not supported yet",
                        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                    ),
                ));
            }
        }
        let (window, group_window) = match (relation.window.take(), group_window) {
            (Some(window), None) if bounds == [true, true] => (Some(window), None),
            (Some(window), None) => {
                return Err(SqlError::at(
                    group_at,
                    format!(
                        "GROUP BY over {}(…) must include both window_start and window_end (an aggregate of a \
                         window table function's rows without them is not supported)",
                        window.function()
                    ),
                ));
            }
            (None, Some(window)) => (Some(window.spec.clone()), Some(window)),
            (None, None) => (None, None),
            (Some(_), Some(_)) => unreachable!("refused above"),
        };
        // Grouped by both bounds of a window aggregation's result (passed on unchanged): an
        // aggregate of each of its windows, as Flink plans it (Nexmark q5's maximum per window).
        // Those rows carry their window's last millisecond as event time, so a 1 ms tumbling
        // window holds exactly one window's rows and closes when the watermark passes it.
        let key_of = |column: usize| keys.iter().position(|k| k.as_column() == Some(column));
        let on_bounds = match (&window, relation.bounds) {
            (None, Some((start, end))) => key_of(start).zip(key_of(end)),
            _ => None,
        };
        let window = window.or(on_bounds.map(|_| WindowSpec::Tumble { size: 1 }));
        if let (Some(window), Some(producer)) = (&window, &relation.updating) {
            return Err(SqlError::at(
                group_at,
                format!(
                    "a {} window aggregation over an updating result ({producer}) is not supported: windows \
                     take append-only rows, as in Flink",
                    window.function()
                ),
            ));
        }
        // The aggregated row: keys, the window's start, end and time, then the aggregates.
        let window_qualifier = window_columns.and_then(|first| relation.columns[first].qualifier.clone());
        let property = |name: &str| Column {
            qualifier: window_qualifier.clone(),
            // A group window's bounds are read through SESSION_START(…) and the like only;
            // without a window, the columns are there (NULL) but have no name a query can use.
            name: if group_window.is_some() || window.is_none() || on_bounds.is_some() {
                format!("${name}")
            } else {
                name.to_owned()
            },
            ty: SqlType::Timestamp,
        };
        let mut columns = key_columns;
        columns.extend(["window_start", "window_end", "window_time"].map(property));
        let grouping = Rc::new(Grouping {
            input,
            window_columns,
            keys: keys.clone(),
            group_window,
            calls: RefCell::new(Vec::new()),
        });
        let scope = Scope { columns, grouping: Some(grouping.clone()) };
        let having = having.map(|predicate| scope.boolean(predicate)).transpose()?;
        let mut exprs = Vec::new();
        let mut names = Vec::new();
        for (position, item) in projection.iter().enumerate() {
            let (expr, name) = match item {
                SelectItem::UnnamedExpr(expr) => (expr, output_name(expr, position)),
                SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone()),
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    return Err(SqlError::at(item.span().start, "SELECT * in a grouped query: name the columns"));
                }
            };
            let scalar = scope.compile(expr)?;
            names.push(Column { qualifier: None, name, ty: scalar.ty.clone() });
            exprs.push(scalar);
        }
        // Each row, before grouping: its keys, then each aggregate's argument and condition.
        let found = grouping.calls.take();
        let mut before = keys;
        let mut calls = Vec::new();
        for call in found {
            let mut column_of = |scalar: Option<Scalar>| -> Result<Option<usize>, SqlError> {
                let Some(scalar) = scalar else { return Ok(None) };
                debug_assert!(!scalar.reads_any(&is_window_column), "refused where the aggregate is compiled");
                before.push(scalar);
                Ok(Some(before.len() - 1))
            };
            let argument = column_of(call.argument)?;
            let filter = column_of(call.filter)?;
            calls.push(AggregateCall { kind: call.kind, argument, filter, ty: call.ty });
        }
        let key_count = grouping.keys.len();
        refuse_processing_time(&relation, &before, group_at)?;
        relation.push(Step::Project(before));
        let aggregates = SqlAggregates { calls };
        let mut cascades = false;
        match window {
            Some(WindowSpec::Tumble { size }) if relation.processing_windows => {
                relation.stages.push(Stage::ProcessingTimeAggregate { size, keys: key_count, aggregates });
                // Windows of processing time are not windows of event time: nothing joins or
                // aggregates them by their bounds.
                relation.bounds = None;
            }
            Some(window) => {
                relation.stages.push(Stage::WindowAggregate { window, keys: key_count, aggregates });
                relation.bounds = Some(on_bounds.unwrap_or((key_count, key_count + 1)));
                // The aggregated rows carry their window's time (its last millisecond) as event
                // time, so a window table function's `window_time` is their time attribute
                // again, as in Flink: windows over it cascade.
                cascades = window_columns.is_some() && on_bounds.is_none();
            }
            None => {
                if !relation.timestamped {
                    return Err(SqlError::at(group_at, UPDATING_UNTIMED));
                }
                if relation.updating.is_some() {
                    self.refuse_state_ttl("an aggregate without a window of an updating result", group_at)?;
                }
                let what = if group_keys.is_empty() { "the SELECT" } else { "the GROUP BY" };
                relation.updating = Some(format!(
                    "{what} at line {}, column {} (an aggregate without a window)",
                    group_at.line, group_at.column
                ));
                relation.stages.push(Stage::Aggregate { keys: key_count, aggregates });
                relation.bounds = None;
            }
        }
        // `window_time` is a time attribute where the window cascades (above), as long as the
        // projection passes it on.
        relation.time = cascades.then_some(key_count + 2);
        relation.proctime = None;
        relation.processing_windows = false;
        refuse_processing_time(&relation, having.iter().chain(&exprs), group_at)?;
        if let Some(having) = having {
            relation.push(Step::Filter(having));
        }
        relation.push(Step::Project(exprs));
        relation.columns = names;
        Ok(relation)
    }

    /// `GROUP BY SESSION(time, gap)`, `TUMBLE(time, size)` or `HOP(time, slide, size)`: its
    /// windows and time column, or `None` if `expr` is not a group window.
    fn group_window(&self, expr: &Expr, input: &Scope, time: Option<usize>) -> Result<Option<GroupWindow>, SqlError> {
        let Expr::Function(function) = expr else { return Ok(None) };
        let at = expr.span().start;
        let name = function.name.to_string().to_ascii_uppercase();
        if !matches!(name.as_str(), "SESSION" | "TUMBLE" | "HOP") {
            return Ok(None);
        }
        let args = plain_call(function, &name, at)?;
        let Some((time_arg, durations)) = args.split_first() else {
            return Err(SqlError::at(at, format!("{name}(time, …) needs the time attribute first")));
        };
        let column = input.compile(time_arg)?;
        check_time_attribute(column.as_column(), time, &time_arg.to_string(), time_arg.span().start)?;
        let durations: Vec<i64> = durations.iter().map(duration).collect::<Result<_, _>>()?;
        let spec = match (name.as_str(), durations.as_slice()) {
            ("SESSION", [gap]) => WindowSpec::Session { gap: *gap },
            ("TUMBLE", [size]) => WindowSpec::Tumble { size: *size },
            ("HOP", [slide, size]) => hop(*slide, *size, at)?,
            _ => return Err(SqlError::at(at, format!("{name}: wrong arguments (see docs/sql.md)"))),
        };
        Ok(Some(GroupWindow { spec, time: column }))
    }

    /// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(time), size))`, `HOP(…, slide, size)`, `CUMULATE(…,
    /// step, max_size)`, `SESSION(TABLE t [PARTITION BY key | (keys…)], DESCRIPTOR(time), gap)`:
    /// the table with the window's three columns added.
    fn window_table(&self, expr: &Expr, alias: Option<&sqlparser::ast::TableAlias>) -> Result<Relation, SqlError> {
        let at = expr.span().start;
        let Expr::Function(function) = expr else {
            return Err(SqlError::at(at, "TABLE(…) takes a window function: TUMBLE, HOP, CUMULATE or SESSION"));
        };
        let name = function.name.to_string().to_ascii_uppercase();
        if !matches!(name.as_str(), "TUMBLE" | "HOP" | "CUMULATE" | "SESSION") {
            return Err(SqlError::at(at, format!("table function {name} is not supported yet")));
        }
        let args = plain_call(function, &name, at)?;
        let [table, descriptor, durations @ ..] = args.as_slice() else {
            return Err(SqlError::at(at, format!("{name}(TABLE t, DESCRIPTOR(time), …): too few arguments")));
        };
        // `TABLE t`, or `TABLE t PARTITION BY …` as the dialect reads it: a tuple of the table
        // and its partition keys (`crate::parser::FlinkDialect`).
        let (table_name, partition_keys) = match table {
            Expr::Prefixed { prefix, value } if prefix.value == "TABLE" => match value.as_ref() {
                Expr::Identifier(ident) => (ident.value.clone(), &[][..]),
                Expr::Tuple(parts) => match parts.split_first() {
                    Some((Expr::Identifier(ident), keys)) => (ident.value.clone(), keys),
                    _ => return Err(SqlError::at(at, "TABLE … PARTITION BY: name a table or view")),
                },
                other => return Err(SqlError::at(at, format!("TABLE {other}: name a table or view"))),
            },
            other => return Err(SqlError::at(other.span().start, format!("{name}'s first argument is TABLE name"))),
        };
        if !partition_keys.is_empty() && name != "SESSION" {
            return Err(SqlError::at(
                partition_keys[0].span().start,
                format!("PARTITION BY in {name}(…): only SESSION's windows are partitioned"),
            ));
        }
        let mut relation = self.named(&table_name, None, at)?;
        for key in partition_keys {
            let key_at = key.span().start;
            let Expr::Identifier(ident) = key else {
                return Err(SqlError::at(key_at, "PARTITION BY takes columns of the table"));
            };
            let Some(column) = relation.columns.iter().position(|c| c.name == ident.value) else {
                return Err(SqlError::at(key_at, format!("column {} not found in {table_name}", ident.value)));
            };
            if !relation.window_partition.contains(&column) {
                relation.window_partition.push(column);
            }
        }
        let time_column = match descriptor {
            Expr::Function(d) if d.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") => {
                match plain_call(d, "DESCRIPTOR", at)?.as_slice() {
                    [Expr::Identifier(ident)] => ident.value.clone(),
                    _ => return Err(SqlError::at(at, "DESCRIPTOR takes one column: DESCRIPTOR(`dateTime`)")),
                }
            }
            other => {
                return Err(SqlError::at(other.span().start, format!("{name}'s second argument is DESCRIPTOR(time)")))
            }
        };
        let position = relation.columns.iter().position(|c| c.name == time_column);
        let processing = position.is_some() && position == relation.proctime;
        if processing && name != "TUMBLE" {
            return Err(SqlError::at(at, format!("{name} over processing time is not supported yet (TUMBLE is)")));
        }
        if processing && !relation.timestamped {
            return Err(SqlError::at(
                at,
                "a window of processing time needs the table to declare a WATERMARK in Weir (rows are handed to \
                 it in event-time order)",
            ));
        }
        if !processing {
            check_time_attribute(position, relation.time, &time_column, descriptor.span().start)?;
        }
        relation.processing_windows = processing;
        let durations: Vec<i64> = durations.iter().map(duration).collect::<Result<_, _>>()?;
        let spec = match (name.as_str(), durations.as_slice()) {
            ("TUMBLE", [size]) => WindowSpec::Tumble { size: *size },
            ("HOP", [slide, size]) => hop(*slide, *size, at)?,
            ("SESSION", [gap]) if *gap > 0 => WindowSpec::Session { gap: *gap },
            ("SESSION", [_]) => return Err(SqlError::at(at, "SESSION: the gap must be positive")),
            ("CUMULATE", [step, max_size]) => {
                if max_size % step != 0 {
                    return Err(SqlError::at(at, "CUMULATE: the max size must be a multiple of the step"));
                }
                WindowSpec::Cumulate { step: *step, max_size: *max_size }
            }
            (_, [_, _, _]) | ("TUMBLE", [_, _]) => {
                return Err(SqlError::at(at, format!("{name} with an offset is not supported yet")));
            }
            _ => return Err(SqlError::at(at, format!("{name}: wrong number of arguments (see docs/sql.md)"))),
        };
        let qualifier = alias.map(|a| a.name.value.clone());
        relation.columns.iter_mut().for_each(|c| c.qualifier = qualifier.clone());
        relation.columns.extend(["window_start", "window_end", "window_time"].map(|name| Column {
            qualifier: qualifier.clone(),
            name: name.to_owned(),
            ty: SqlType::Timestamp,
        }));
        relation.window = Some(spec);
        Ok(relation)
    }

    /// `left [INNER] JOIN right ON …`: equalities of one side's expression with the other's are
    /// the join keys, anything else filters the joined rows. When both sides are window
    /// aggregations (their `window_start` and `window_end` passed on unchanged) and the keys
    /// equate both bounds, it is a window join: a window's rows of both sides meet when it
    /// closes, as in Flink. Otherwise it is a regular join (see [`crate::join`]).
    fn join(&self, left: Relation, join: &sqlparser::ast::Join) -> Result<Relation, SqlError> {
        use sqlparser::ast::{JoinConstraint, JoinOperator};
        let at = join.span().start;
        refuse(join.global, at, "GLOBAL JOIN")?;
        let (condition, outer) = match &join.join_operator {
            JoinOperator::Join(JoinConstraint::On(condition)) | JoinOperator::Inner(JoinConstraint::On(condition)) => {
                (condition, Outer::None)
            }
            JoinOperator::Left(JoinConstraint::On(condition))
            | JoinOperator::LeftOuter(JoinConstraint::On(condition)) => (condition, Outer::Left),
            JoinOperator::Right(JoinConstraint::On(condition))
            | JoinOperator::RightOuter(JoinConstraint::On(condition)) => (condition, Outer::Right),
            JoinOperator::FullOuter(JoinConstraint::On(condition)) => (condition, Outer::Full),
            JoinOperator::Join(_)
            | JoinOperator::Inner(_)
            | JoinOperator::Left(_)
            | JoinOperator::LeftOuter(_)
            | JoinOperator::Right(_)
            | JoinOperator::RightOuter(_)
            | JoinOperator::FullOuter(_) => {
                return Err(SqlError::at(at, "a JOIN needs an ON condition (USING and NATURAL are not supported yet)"));
            }
            JoinOperator::CrossJoin(_) => return Err(SqlError::at(at, "CROSS JOIN is not supported yet")),
            _ => {
                return Err(SqlError::at(
                    at,
                    "this kind of join (SEMI, ANTI, APPLY, ASOF, STRAIGHT_JOIN) is not supported",
                ))
            }
        };
        let right = self.relation(&join.relation)?;
        self.join_on(left, right, condition, outer, at)
    }

    /// A join of `left` and `right` on `condition` (a `JOIN … ON`, or the `WHERE` of `FROM a,
    /// b`): see [`Catalog::join`]. An outer join (other than a window join), or one of an
    /// updating result, updates: it runs on differential dataflow ([`JoinKind::Updating`]).
    fn join_on(
        &self,
        mut left: Relation,
        mut right: Relation,
        condition: &Expr,
        outer: Outer,
        at: Location,
    ) -> Result<Relation, SqlError> {
        let qualifiers = |r: &Relation| -> std::collections::BTreeSet<String> {
            r.columns.iter().filter_map(|c| c.qualifier.clone()).collect()
        };
        if let Some(both) = qualifiers(&left).intersection(&qualifiers(&right)).next() {
            return Err(SqlError::at(
                at,
                format!(
                    "both sides of the JOIN are called {both}: give one an alias (… {both} AS a JOIN {both} AS b …)"
                ),
            ));
        }
        for side in [&left, &right] {
            if side.window.is_some() {
                return Err(SqlError::at(at, WINDOW_UNAGGREGATED));
            }
            if let Some(rank) = &side.rank {
                return Err(SqlError::at(rank.at, RANK_UNFILTERED));
            }
        }
        if !left.timestamped || !right.timestamped {
            return Err(SqlError::at(
                at,
                "a JOIN pairs rows in event-time order, so both sides need event time: declare a WATERMARK on \
                 the table each side reads",
            ));
        }
        let width = left.columns.len();
        let mut columns = left.columns.clone();
        columns.extend(right.columns.iter().cloned());
        let scope = Scope::new(columns.clone());
        let mut conjuncts = Vec::new();
        split_conjuncts(condition, &mut conjuncts);
        let (mut left_keys, mut right_keys, mut residual) = (Vec::new(), Vec::new(), Vec::new());
        // Over the right side's own row: column `width + i` of the joined row is its column `i`
        // (a left column has no place there: a poisoned column, whose type no column has).
        let to_right: Vec<Scalar> = (0..columns.len())
            .map(|i| match i.checked_sub(width) {
                Some(j) => Scalar::column(j, columns[i].ty.clone()),
                None => Scalar::column(usize::MAX, SqlType::Interval),
            })
            .collect();
        let reads_left = |s: &Scalar| s.reads_any(&|c| c < width);
        let reads_right = |s: &Scalar| s.reads_any(&|c| c >= width);
        for conjunct in conjuncts {
            let predicate = scope.boolean(conjunct)?;
            // A key: an expression of left columns (at least one) equal to one of right columns.
            let left_only = |s: &Scalar| reads_left(s) && !reads_right(s);
            let right_only = |s: &Scalar| reads_right(s) && !reads_left(s);
            let sides = predicate.equality().and_then(|(a, b)| {
                match (left_only(a) && right_only(b), left_only(b) && right_only(a)) {
                    (true, _) => Some((a.clone(), b.clone())),
                    (_, true) => Some((b.clone(), a.clone())),
                    _ => None,
                }
            });
            if let Some((l, r)) = sides {
                left_keys.push(l);
                right_keys.push(r.substitute(&to_right));
                continue;
            }
            // A condition on one side filters that side before the join (the answer is the same,
            // and the join keeps less) — unless that side is kept whole by an outer join, where
            // it decides which rows get a partner; one on both, or on neither, the pairs.
            match (reads_left(&predicate), reads_right(&predicate)) {
                (true, false) if !outer.keeps_left() => left.push(Step::Filter(predicate)),
                (false, true) if !outer.keeps_right() => right.push(Step::Filter(predicate.substitute(&to_right))),
                _ => residual.push(predicate),
            }
        }
        if left_keys.is_empty() {
            return Err(SqlError::at(
                at,
                "a JOIN needs an equality of the two sides (a cross join, or a join on inequalities only, is \
                 not supported)",
            ));
        }
        let equated = |l: usize, r: usize| {
            left_keys.iter().zip(&right_keys).any(|(a, b)| a.as_column() == Some(l) && b.as_column() == Some(r))
        };
        // Bounds on the difference of the two sides' times, from the rest of the condition (it
        // still filters the pairs: the bounds only let the join forget rows).
        let interval = match (left.time, right.time) {
            (Some(a), Some(b)) => {
                residual.iter().fold(None, |bounds: Option<(Option<i64>, Option<i64>)>, predicate| {
                    match (bounds, predicate.time_difference_bounds(a, width + b)) {
                        (Some((low, high)), Some((more_low, more_high))) => Some((
                            low.max(more_low).or(low).or(more_low),
                            match (high, more_high) {
                                (Some(x), Some(y)) => Some(x.min(y)),
                                (x, y) => x.or(y),
                            },
                        )),
                        (bounds, more) => bounds.or(more),
                    }
                })
            }
            _ => None,
        };
        // Two window aggregations met window by window (their rows are append-only).
        let windows = matches!(
            (left.bounds, right.bounds),
            (Some((left_start, left_end)), Some((right_start, right_end)))
                if equated(left_start, right_start) && equated(left_end, right_end)
        );
        // What makes the result update, if anything: an input, or an outer join that is not a
        // window join (a row kept with NULLs may lose them when a partner comes; in a window
        // join, no partner comes after the window closes).
        let updating = match outer {
            Outer::None => left.updating.clone().or_else(|| right.updating.clone()),
            _ if windows => None,
            _ => Some(format!("the {} JOIN at line {}, column {}", outer.name(), at.line, at.column)),
        };
        if updating.is_some() {
            let what = if outer == Outer::None { "a join of updating results" } else { "an outer join" };
            self.refuse_state_ttl(what, at)?;
        }
        let kind = match (left.bounds, right.bounds) {
            _ if updating.is_some() => JoinKind::Updating {
                left_outer: outer.keeps_left(),
                right_outer: outer.keeps_right(),
                left_width: width,
                right_width: right.columns.len(),
            },
            _ if windows => JoinKind::Window {
                left_outer: outer.keeps_left(),
                right_outer: outer.keeps_right(),
                left_width: width,
                right_width: right.columns.len(),
            },
            // A condition bounding the difference both ways makes an interval join, which a
            // state TTL leaves alone (as in Flink).
            _ => match interval {
                Some((Some(lower), Some(upper))) if lower <= upper => JoinKind::Interval { lower, upper },
                bounds => match self.state_ttl {
                    None => JoinKind::Regular,
                    Some((ttl, _)) => ttl_join(bounds.unwrap_or((None, None)), ttl),
                },
            },
        };
        // An outer join's residual decides pairs; an inner join's filters them.
        let condition = if outer == Outer::None { Vec::new() } else { std::mem::take(&mut residual) };
        let mut relation = Relation {
            input: RelationInput::Join {
                kind,
                left: Box::new(left),
                right: Box::new(right),
                left_keys,
                right_keys,
                condition,
            },
            stages: Vec::new(),
            columns,
            time: None,
            proctime: None,
            processing_windows: false,
            window: None,
            window_partition: Vec::new(),
            bounds: None,
            timestamped: true,
            updating,
            rank: None,
        };
        for predicate in residual {
            relation.push(Step::Filter(predicate));
        }
        Ok(relation)
    }

    /// A declared table or view, by name.
    fn named(&self, name: &str, qualifier: Option<String>, at: Location) -> Result<Relation, SqlError> {
        let mut relation = if let Some(view) = self.views.get(name) {
            self.query(view)?
        } else if let Some(table) = self.tables.get(name) {
            Relation {
                input: RelationInput::Table(name.to_owned()),
                stages: Vec::new(),
                columns: table.columns.clone(),
                time: event_time(table)?.map(|(column, _)| column),
                proctime: None,
                processing_windows: false,
                window: None,
                window_partition: Vec::new(),
                bounds: None,
                timestamped: table.def.watermark.is_some(),
                updating: None,
                rank: None,
            }
        } else {
            return Err(SqlError::at(at, format!("table or view {name} is not declared")));
        };
        debug_assert!(relation.window.is_none(), "a view's select refuses unaggregated window table functions");
        let qualifier = qualifier.unwrap_or_else(|| name.to_owned());
        relation.columns.iter_mut().for_each(|c| c.qualifier = Some(qualifier.clone()));
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
                self.named(&name, alias.as_ref().map(|a| a.name.value.clone()), at)
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
            TableFactor::TableFunction { expr, alias } => {
                refuse(
                    alias.as_ref().is_some_and(|a| !a.columns.is_empty()),
                    at,
                    "column aliases on a table function",
                )?;
                self.window_table(expr, alias.as_ref())
            }
            TableFactor::Function { .. } => Err(SqlError::at(at, "this table function form is not supported")),
            other => Err(SqlError::at(at, format!("`{other}` in FROM is not supported yet"))),
        }
    }
}

/// A relation's stages, each one's filters and projections fused.
fn fused(stages: Vec<Stage>) -> Vec<Stage> {
    stages
        .into_iter()
        .map(|stage| match stage {
            Stage::Map(steps) => Stage::Map(fuse(steps)),
            other => other,
        })
        .collect()
}

/// Column pruning under a regular or interval join: each side passes on only the columns the join's keys
/// and the projection after it read. A regular join keeps every row of both sides as its state,
/// so a column nobody reads would be kept (and checkpointed) for the job's lifetime. Nothing
/// changes unless the join's first stage ends in a projection (then no later stage sees the
/// joined row as it is).
fn prune_join(input: &mut Input, stages: &mut [Stage], left_types: &[SqlType], right_types: &[SqlType]) {
    let Input::Join { kind: JoinKind::Regular | JoinKind::Interval { .. }, left, right, left_keys, right_keys, .. } =
        input
    else {
        return;
    };
    let Some(Stage::Map(steps)) = stages.first_mut() else { return };
    if !matches!(steps.last(), Some(Step::Project(_))) || steps.iter().any(Step::reads_processing_time) {
        return;
    }
    // Fused steps without PROCTIME() are filters then one projection, so every one of them reads
    // the joined row as it is: what they read is what the row must hold.
    debug_assert!(steps[..steps.len() - 1].iter().all(|step| matches!(step, Step::Filter(_))), "fused steps");
    let width = left_types.len();
    let read_after = |column: usize| steps.iter().any(|step| step.reads(column));
    let used = |types: &[SqlType], keys: &[Scalar], offset: usize| -> Vec<usize> {
        (0..types.len())
            .filter(|&c| read_after(offset + c) || keys.iter().any(|key| key.reads_any(&|read| read == c)))
            .collect()
    };
    let (left_used, right_used) = (used(left_types, left_keys, 0), used(right_types, right_keys, width));
    if left_used.len() == left_types.len() && right_used.len() == right_types.len() {
        return;
    }
    // Each side's old columns as the pruned row has them (a column dropped is never read: a
    // NULL of its type stands in for it).
    let renamed = |types: &[SqlType], used: &[usize], first: usize| -> Vec<Scalar> {
        (0..types.len())
            .map(|c| match used.iter().position(|&u| u == c) {
                Some(at) => Scalar::column(first + at, types[c].clone()),
                None => Scalar::literal(Value::Null, types[c].clone()),
            })
            .collect()
    };
    let side = |types: &[SqlType], used: &[usize]| -> Step {
        Step::Project(used.iter().map(|&c| Scalar::column(c, types[c].clone())).collect())
    };
    for (pipeline, keys, types, used) in
        [(left, left_keys, left_types, &left_used), (right, right_keys, right_types, &right_used)]
    {
        if used.len() == types.len() {
            continue;
        }
        let inputs = renamed(types, used, 0);
        keys.iter_mut().for_each(|key| *key = key.substitute(&inputs));
        let projection = side(types, used);
        match pipeline.stages.last_mut() {
            Some(Stage::Map(steps)) => {
                steps.push(projection);
                *steps = fuse(std::mem::take(steps));
            }
            _ => pipeline.stages.push(Stage::Map(vec![projection])),
        }
    }
    let mut joined = renamed(left_types, &left_used, 0);
    joined.extend(renamed(right_types, &right_used, left_used.len()));
    for step in steps.iter_mut() {
        *step = match step {
            Step::Filter(predicate) => Step::Filter(predicate.substitute(&joined)),
            Step::Project(exprs) => Step::Project(exprs.iter().map(|e| e.substitute(&joined)).collect()),
        };
    }
}

/// The steps as filters over the source row followed by at most one projection: a filter
/// after a projection is rewritten over the projection's input, and projections in a row are
/// composed — so views and subqueries cost one row build, not one each. Expressions are pure,
/// so the answer is the same — but for `PROCTIME()`, which composing would read several times
/// per row: steps that read it are kept as they are.
fn fuse(steps: Vec<Step>) -> Vec<Step> {
    if steps.iter().any(Step::reads_processing_time) {
        return steps;
    }
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
    let delay = watermark_delay(&watermark.expr, &watermark.column, &Scope::new(columns.clone()))?;
    Ok(Some((index, delay)))
}

/// Why a window table function's rows must be aggregated.
const WINDOW_UNAGGREGATED: &str = "a window table function's rows must be aggregated (GROUP BY window_start, \
                                   window_end, …); joins of its rows (join its aggregated results instead), Top-N and \
                                   deduplication over windows are not supported yet";

/// Refuses `PROCTIME()` in expressions over an updating result: each update is evaluated on its
/// own, so a row's retraction would read another processing time than its insertion did, and
/// would not cancel it.
fn refuse_processing_time<'a>(
    relation: &Relation,
    scalars: impl IntoIterator<Item = &'a Scalar>,
    at: Location,
) -> Result<(), SqlError> {
    match &relation.updating {
        Some(producer) if scalars.into_iter().any(Scalar::reads_processing_time) => Err(SqlError::at(
            at,
            format!(
                "PROCTIME() over an updating result ({producer}) is not supported: a row's retraction would read \
                 another time than its insertion"
            ),
        )),
        _ => Ok(()),
    }
}

/// Why an updating result needs event time.
const UPDATING_UNTIMED: &str = "an updating result (an aggregate without a window, a Top-N) needs event time: its \
                                changes come out as the watermark passes them, so declare a WATERMARK on the table \
                                it reads";

/// A regular join under a state TTL of `ttl` ms: each row is kept for the TTL in event time, so
/// rows less than the TTL apart pair — an interval join, narrowed by the condition's own bound
/// on the difference of the times (`bounds`, at most one of them, or two that contradict each
/// other). Where they leave no difference, the join keeps the single difference nearest the
/// condition's range, which the condition (still filtering the pairs) then refuses.
fn ttl_join((lower, upper): (Option<i64>, Option<i64>), ttl: i64) -> JoinKind {
    debug_assert!(ttl > 0, "a TTL of 0 is none");
    let (ttl_lower, ttl_upper) = (1 - ttl, ttl - 1);
    let lower = lower.map_or(ttl_lower, |lower| lower.max(ttl_lower));
    let upper = upper.map_or(ttl_upper, |upper| upper.min(ttl_upper));
    if lower <= upper {
        JoinKind::Interval { lower, upper }
    } else if lower > ttl_upper {
        // The condition wants differences above the TTL's: it refuses the TTL's largest.
        JoinKind::Interval { lower: ttl_upper, upper: ttl_upper }
    } else {
        // Below them (or none at all): it refuses the TTL's smallest.
        JoinKind::Interval { lower: ttl_lower, upper: ttl_lower }
    }
}

/// Why a `ROW_NUMBER()` must be filtered where it is selected from.
const RANK_UNFILTERED: &str = "ROW_NUMBER() OVER (…) must be filtered in the query that selects from it (SELECT … \
                               FROM (SELECT …, ROW_NUMBER() OVER (…) AS rownum FROM t) WHERE rownum <= n): a Top-N. \
                               Numbering every row is not supported";

/// Whether a select item is `PROCTIME()` (aliased or not): a processing-time attribute.
fn is_proctime(item: &SelectItem) -> bool {
    let expr = match item {
        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => expr,
        _ => return false,
    };
    matches!(expr, Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("PROCTIME"))
}

/// The `ROW_NUMBER() OVER (…)` call of a select item, and the column's name.
fn row_number(item: &SelectItem, position: usize) -> Option<(&sqlparser::ast::Function, String)> {
    let (expr, name) = match item {
        SelectItem::UnnamedExpr(expr) => (expr, output_name(expr, position)),
        SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone()),
        _ => return None,
    };
    match expr {
        Expr::Function(function)
            if function.over.is_some() && function.name.to_string().eq_ignore_ascii_case("ROW_NUMBER") =>
        {
            Some((function, name))
        }
        _ => None,
    }
}

/// The window of a `ROW_NUMBER()`: `OVER (PARTITION BY … ORDER BY …)`.
struct RankOver {
    partition: Vec<Scalar>,
    order: Vec<(Scalar, OrderKey)>,
}

/// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)`: its partition keys and order keys, over
/// `scope`.
fn rank_over(function: &sqlparser::ast::Function, scope: &Scope, at: Location) -> Result<RankOver, SqlError> {
    use sqlparser::ast::{FunctionArguments, WindowType};
    let no_arguments = match &function.args {
        FunctionArguments::None => true,
        FunctionArguments::List(list) => list.args.is_empty() && list.clauses.is_empty(),
        FunctionArguments::Subquery(_) => false,
    };
    refuse(!no_arguments || function.filter.is_some(), at, "ROW_NUMBER takes no arguments: ROW_NUMBER() OVER (…)")?;
    let Some(WindowType::WindowSpec(spec)) = &function.over else {
        return Err(SqlError::at(at, "ROW_NUMBER() OVER a named window is not supported"));
    };
    refuse(spec.window_frame.is_some() || spec.window_name.is_some(), at, "a window frame for ROW_NUMBER()")?;
    if spec.order_by.is_empty() {
        return Err(SqlError::at(at, "ROW_NUMBER() OVER (…) needs an ORDER BY (Flink requires one for a Top-N)"));
    }
    let partition = spec.partition_by.iter().map(|expr| scope.compile(expr)).collect::<Result<Vec<_>, _>>()?;
    let mut order = Vec::new();
    for key in &spec.order_by {
        refuse(key.with_fill.is_some(), at, "ORDER BY … WITH FILL")?;
        let descending = key.options.asc == Some(false);
        // Flink's default: NULLs first when ascending, last when descending.
        let nulls_first = key.options.nulls_first.unwrap_or(!descending);
        order.push((scope.compile(&key.expr)?, OrderKey { descending, nulls_first }));
    }
    Ok(RankOver { partition, order })
}

/// The conjuncts of `a AND b AND …`.
fn split_conjuncts<'e>(expr: &'e Expr, into: &mut Vec<&'e Expr>) {
    match expr {
        Expr::BinaryOp { left, op: sqlparser::ast::BinaryOperator::And, right } => {
            split_conjuncts(left, into);
            split_conjuncts(right, into);
        }
        Expr::Nested(inner) => split_conjuncts(inner, into),
        other => into.push(other),
    }
}

/// A window's size, slide, step or gap: a positive constant `INTERVAL`.
fn duration(expr: &&Expr) -> Result<i64, SqlError> {
    let at = expr.span().start;
    let scalar = Scope::default().compile(expr)?;
    match (&scalar.ty, scalar.eval(&Vec::new())) {
        (SqlType::Interval, crate::types::Value::Millis(ms)) if ms > 0 => Ok(ms),
        _ => Err(SqlError::at(at, "a window's size, slide, step or gap must be a positive INTERVAL")),
    }
}

/// `HOP`'s windows (Flink requires the size to be a multiple of the slide).
fn hop(slide: i64, size: i64, at: Location) -> Result<WindowSpec, SqlError> {
    if size % slide != 0 {
        return Err(SqlError::at(at, "HOP: the size must be a multiple of the slide"));
    }
    Ok(WindowSpec::Hop { slide, size })
}

/// Checks that a window's time column is the relation's time attribute.
fn check_time_attribute(column: Option<usize>, time: Option<usize>, name: &str, at: Location) -> Result<(), SqlError> {
    match (column, time) {
        (Some(column), Some(time)) if column == time => Ok(()),
        _ => Err(SqlError::at(
            at,
            format!(
                "{name} is not a time attribute: windows need the column of the table's WATERMARK, a \
                 PROCTIME() column, or a window table function aggregate's window_time, selected unchanged"
            ),
        )),
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
