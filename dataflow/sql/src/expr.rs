//! Scalar expressions: `sqlparser` expressions resolved against a row's columns, typed as Flink
//! types them, and evaluated per row.
//!
//! Resolution happens once, when the job is planned: names become column indexes and nested
//! field paths, operand types decide the arithmetic (integer, exact decimal, double, timestamp
//! plus interval), and implicit casts are inserted where Flink inserts them. Evaluation is then
//! a walk over a small tree with no name lookups. Nulls follow SQL's three-valued logic; a filter
//! keeps a row only when its predicate is `TRUE`.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use sqlparser::ast::{
    BinaryOperator, CaseWhen, DateTimeField, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, Spanned, UnaryOperator, Value as Literal,
};
use sqlparser::tokenizer::Location;

use crate::aggregate::{AggregateKind, WindowSpec};
use crate::functions::Builtin;
use crate::parser::SqlError;
use crate::types::{IntegerWidth, Row, SqlType, Value};

/// A column a scalar can refer to: its table's name or alias, its name, its type.
#[derive(Clone, Debug)]
pub struct Column {
    /// The table (or alias) it belongs to, if any.
    pub qualifier: Option<String>,
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: SqlType,
}

/// The columns in scope, in row order.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// The columns.
    pub columns: Vec<Column>,
    /// In the `SELECT` and `HAVING` of a grouped query: the grouping, which resolves group keys,
    /// window properties and aggregate calls before the columns are looked at.
    pub grouping: Option<Rc<Grouping>>,
}

/// What a grouped query's `SELECT` and `HAVING` see: the group keys, the window's
/// `window_start`, `window_end` and `window_time`, and aggregates, in that order — the result
/// row of a window aggregation (see [`crate::aggregate`]). Aggregate calls are collected as
/// they are met.
#[derive(Debug)]
pub struct Grouping {
    /// The rows being grouped.
    pub input: Scope,
    /// The first of a window table function's three columns in `input`, if it has them (no
    /// aggregate may read them).
    pub window_columns: Option<usize>,
    /// The `GROUP BY` expressions over `input`, the window excepted.
    pub keys: Vec<Scalar>,
    /// A group window of `GROUP BY` (whose bounds are read as `SESSION_START(…)` and so on).
    pub group_window: Option<GroupWindow>,
    /// The aggregate calls met so far.
    pub calls: RefCell<Vec<FoundAggregate>>,
}

/// `GROUP BY SESSION(time, gap)` (or `TUMBLE`, `HOP`): its windows and time column.
#[derive(Debug)]
pub struct GroupWindow {
    /// The windows.
    pub spec: WindowSpec,
    /// The time attribute, over the rows being grouped.
    pub time: Scalar,
}

/// An aggregate call of a grouped query, over the rows being grouped.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundAggregate {
    /// The function.
    pub kind: AggregateKind,
    /// Its argument (`None` for `COUNT(*)`).
    pub argument: Option<Scalar>,
    /// Its `FILTER (WHERE …)` condition.
    pub filter: Option<Scalar>,
    /// Its result's type.
    pub ty: SqlType,
}

/// The arguments of a plain call `name(a, b, …)`: anything more — `OVER`, `FILTER`,
/// `DISTINCT`, named arguments, `WITHIN GROUP`, … — is refused, never dropped.
pub fn plain_call<'f>(function: &'f Function, name: &str, at: Location) -> Result<Vec<&'f Expr>, SqlError> {
    let FunctionArguments::List(list) = &function.args else {
        return Err(SqlError::at(at, format!("{name} needs arguments: {name}(…)")));
    };
    if function.over.is_some()
        || function.filter.is_some()
        || function.null_treatment.is_some()
        || !function.within_group.is_empty()
        || !matches!(function.parameters, FunctionArguments::None)
        || function.uses_odbc_syntax
        || list.duplicate_treatment.is_some()
        || !list.clauses.is_empty()
    {
        return Err(SqlError::at(at, format!("{name}: this form of call is not supported (a plain {name}(…) is)")));
    }
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Ok(expr),
            _ => Err(SqlError::at(at, format!("{name}: only plain arguments are supported (no named arguments)"))),
        })
        .collect()
}

/// Names of the aggregate functions.
const AGGREGATES: [&str; 5] = ["COUNT", "SUM", "MIN", "MAX", "AVG"];

/// Whether `expr` calls an aggregate function (`SELECT COUNT(*) FROM t` aggregates without a
/// `GROUP BY`).
pub fn calls_aggregate(expr: &Expr) -> bool {
    sqlparser::ast::visit_expressions(expr, |expr| match expr {
        Expr::Function(function)
            if function.over.is_none()
                && AGGREGATES.contains(&function.name.to_string().to_ascii_uppercase().as_str()) =>
        {
            std::ops::ControlFlow::Break(())
        }
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_break()
}

impl Grouping {
    /// The column of the result row holding window property `offset` (0: start, 1: end, 2:
    /// time).
    fn window_column(&self, offset: usize) -> Scalar {
        Scalar::column(self.keys.len() + offset, SqlType::Timestamp)
    }

    /// `expr` as a column of the result row, if it is a group key, an aggregate call or a group
    /// window's property; `None` if it is none of these (it is then compiled from its parts).
    fn resolve(&self, expr: &Expr, at: Location) -> Result<Option<Scalar>, SqlError> {
        if let Expr::Function(function) = expr {
            let name = function.name.to_string().to_ascii_uppercase();
            if AGGREGATES.contains(&name.as_str()) {
                return self.aggregate(function, &name, at).map(Some);
            }
            if let Some((family, property)) = name.split_once('_') {
                if matches!(family, "SESSION" | "TUMBLE" | "HOP") {
                    return self.window_property(function, &name, family, property, at).map(Some);
                }
            }
        }
        if let Ok(scalar) = self.input.compile(expr) {
            if let Some(index) = self.keys.iter().position(|key| *key == scalar) {
                return Ok(Some(Scalar::column(index, scalar.ty)));
            }
        }
        Ok(None)
    }

    /// `SESSION_START(time, gap)` and the like: a window column, if the call names the group
    /// window of the `GROUP BY` exactly (its time column and durations), as Flink requires.
    fn window_property(
        &self,
        function: &Function,
        name: &str,
        family: &str,
        property: &str,
        at: Location,
    ) -> Result<Scalar, SqlError> {
        let offset = match property {
            "START" => 0,
            "END" => 1,
            "ROWTIME" => 2,
            _ => return Err(SqlError::at(at, format!("{name} is not supported (only _START, _END and _ROWTIME)"))),
        };
        let window = match &self.group_window {
            Some(window) if window.spec.function() == family => window,
            _ => return Err(SqlError::at(at, format!("{name} needs GROUP BY {family}(…) in the same query"))),
        };
        let args = plain_call(function, name, at)?;
        let matches = match args.split_first() {
            Some((time, durations)) => {
                let durations: Vec<Value> = durations
                    .iter()
                    .map(|d| Scope::default().compile(d).map(|d| d.eval(&Vec::new())))
                    .collect::<Result<_, _>>()?;
                self.input.compile(time)? == window.time
                    && durations == window.spec.durations().into_iter().map(Value::Millis).collect::<Vec<_>>()
            }
            None => false,
        };
        if !matches {
            return Err(SqlError::at(
                at,
                format!("{name}(…) must repeat the GROUP BY's {family}(…) arguments exactly"),
            ));
        }
        Ok(self.window_column(offset))
    }

    fn aggregate(&self, function: &Function, name: &str, at: Location) -> Result<Scalar, SqlError> {
        if function.over.is_some() {
            return Err(SqlError::at(at, format!("{name}(…) OVER (…) is not supported yet (OVER aggregates)")));
        }
        let FunctionArguments::List(list) = &function.args else {
            return Err(SqlError::at(at, format!("{name} needs an argument: {name}(x)")));
        };
        if !list.clauses.is_empty()
            || !matches!(function.parameters, FunctionArguments::None)
            || function.null_treatment.is_some()
            || !function.within_group.is_empty()
            || function.uses_odbc_syntax
        {
            return Err(SqlError::at(at, format!("{name}: this form of call is not supported")));
        }
        let distinct = match list.duplicate_treatment {
            Some(DuplicateTreatment::Distinct) => true,
            Some(DuplicateTreatment::All) | None => false,
        };
        let argument = match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "COUNT" && !distinct => None,
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(argument))] => Some(self.input.compile(argument)?),
            _ => return Err(SqlError::at(at, format!("{name} takes one argument: {name}(x)"))),
        };
        let filter = function.filter.as_deref().map(|condition| self.input.boolean(condition)).transpose()?;
        if let Some(first) = self.window_columns {
            let reads_window = |s: &Option<Scalar>| s.as_ref().is_some_and(|s| s.reads_any(&|c| c >= first));
            if reads_window(&argument) || reads_window(&filter) {
                return Err(SqlError::at(
                    at,
                    format!("{name} of window_start, window_end or window_time is not supported"),
                ));
            }
        }
        let order_dependent = |ty: &SqlType| {
            SqlError::at(
                at,
                format!(
                    "{name} over {ty} is not supported: a floating-point sum depends on the order rows arrive in, \
                     which varies with parallelism (cast the argument to DECIMAL)"
                ),
            )
        };
        let (kind, ty) = match (name, &argument, distinct) {
            ("COUNT", None, _) => (AggregateKind::CountRows, SqlType::BIGINT),
            ("COUNT", Some(_), false) => (AggregateKind::Count, SqlType::BIGINT),
            ("COUNT", Some(_), true) => (AggregateKind::CountDistinct, SqlType::BIGINT),
            (_, None, _) => unreachable!("only COUNT takes *"),
            ("SUM" | "AVG", Some(_), true) => {
                return Err(SqlError::at(at, format!("{name}(DISTINCT …) is not supported yet")));
            }
            ("SUM", Some(argument), false) => match &argument.ty {
                SqlType::Integer(width) => (AggregateKind::SumInteger(*width), argument.ty.clone()),
                SqlType::Decimal { scale, .. } => {
                    (AggregateKind::SumDecimal, SqlType::Decimal { precision: 38, scale: *scale })
                }
                SqlType::Double => return Err(order_dependent(&argument.ty)),
                other => return Err(SqlError::at(at, format!("SUM takes a number, not {other}"))),
            },
            ("AVG", Some(argument), false) => match &argument.ty {
                SqlType::Integer(width) => (AggregateKind::AvgInteger(*width), argument.ty.clone()),
                SqlType::Double => return Err(order_dependent(&argument.ty)),
                other => return Err(SqlError::at(at, format!("AVG over {other} is not supported yet"))),
            },
            (_, Some(argument), _) => {
                let kind = if name == "MIN" { AggregateKind::Min } else { AggregateKind::Max };
                match &argument.ty {
                    SqlType::Integer(_)
                    | SqlType::Double
                    | SqlType::Decimal { .. }
                    | SqlType::Varchar
                    | SqlType::Timestamp
                    | SqlType::Boolean => (kind, argument.ty.clone()),
                    other => return Err(SqlError::at(at, format!("{name} over {other} is not supported"))),
                }
            }
        };
        let found = FoundAggregate { kind, argument, filter, ty: ty.clone() };
        let mut calls = self.calls.borrow_mut();
        let index = match calls.iter().position(|call| *call == found) {
            Some(index) => index,
            None => {
                calls.push(found);
                calls.len() - 1
            }
        };
        Ok(Scalar::column(self.keys.len() + 3 + index, ty))
    }
}

/// A resolved, typed expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    kind: Kind,
    /// The expression's type.
    pub ty: SqlType,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Column(usize),
    Field(Box<Scalar>, usize),
    Literal(Value),
    Arithmetic(Arithmetic, Box<Scalar>, Box<Scalar>),
    Compare(Comparison, Box<Scalar>, Box<Scalar>),
    And(Box<Scalar>, Box<Scalar>),
    Or(Box<Scalar>, Box<Scalar>),
    Not(Box<Scalar>),
    Negate(Box<Scalar>),
    IsNull(Box<Scalar>, bool),
    Case(Vec<(Scalar, Scalar)>, Option<Box<Scalar>>),
    /// Integer or decimal to the scalar's decimal type: rescaled half up, `NULL` when it does
    /// not fit the precision (as Flink casts).
    ToDecimal(Box<Scalar>),
    /// Any number to a double.
    ToDouble(Box<Scalar>),
    /// The same value, seen as the scalar's type (see `retype`).
    Retype(Box<Scalar>),
    /// A built-in function of these arguments (its constant ones compiled into it).
    Call(Builtin, Vec<Scalar>),
}

/// The expression as SQL writes it, columns as `$n` (for `EXPLAIN`).
impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Column(index) => write!(f, "${index}"),
            Kind::Field(base, index) => write!(f, "{base}.${index}"),
            Kind::Literal(Value::Null) => f.write_str("NULL"),
            Kind::Literal(Value::Str(text)) => write!(f, "'{}'", text.replace('\'', "''")),
            Kind::Literal(value @ (Value::Millis(_) | Value::Row(_))) => write!(f, "{} '{value}'", self.ty),
            Kind::Literal(value) => write!(f, "{value}"),
            Kind::Arithmetic(op, l, r) => {
                let op = match op {
                    Arithmetic::Add => "+",
                    Arithmetic::Subtract => "-",
                    Arithmetic::Multiply => "*",
                    Arithmetic::Divide => "/",
                    Arithmetic::Modulo => "%",
                };
                write!(f, "({l} {op} {r})")
            }
            Kind::Compare(op, l, r) => {
                let op = match op {
                    Comparison::Eq => "=",
                    Comparison::NotEq => "<>",
                    Comparison::Lt => "<",
                    Comparison::LtEq => "<=",
                    Comparison::Gt => ">",
                    Comparison::GtEq => ">=",
                };
                write!(f, "({l} {op} {r})")
            }
            Kind::And(l, r) => write!(f, "({l} AND {r})"),
            Kind::Or(l, r) => write!(f, "({l} OR {r})"),
            Kind::Not(inner) => write!(f, "NOT {inner}"),
            Kind::Negate(inner) => write!(f, "-({inner})"),
            Kind::IsNull(inner, negated) => write!(f, "{inner} IS {}NULL", if *negated { "NOT " } else { "" }),
            Kind::Case(branches, otherwise) => {
                f.write_str("CASE")?;
                for (condition, result) in branches {
                    write!(f, " WHEN {condition} THEN {result}")?;
                }
                if let Some(otherwise) = otherwise {
                    write!(f, " ELSE {otherwise}")?;
                }
                f.write_str(" END")
            }
            Kind::ToDecimal(inner) | Kind::ToDouble(inner) => write!(f, "CAST({inner} AS {})", self.ty),
            Kind::Retype(inner) => write!(f, "{inner}"),
            Kind::Call(builtin, arguments) => builtin.write_call(f, arguments),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum Arithmetic {
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Scalar {
    fn new(kind: Kind, ty: SqlType) -> Self {
        Scalar { kind, ty }
    }

    /// Column `index` of the row, of type `ty`.
    pub fn column(index: usize, ty: SqlType) -> Self {
        Scalar::new(Kind::Column(index), ty)
    }

    /// The constant `value`, of type `ty`.
    pub fn literal(value: Value, ty: SqlType) -> Self {
        Scalar::new(Kind::Literal(value), ty)
    }

    /// The column it reads, if it is a column as it is.
    pub fn as_column(&self) -> Option<usize> {
        match self.kind {
            Kind::Column(index) => Some(index),
            _ => None,
        }
    }

    /// What it says about `b - a` for the timestamp columns `a` and `b`, if it is a comparison of
    /// the two (each moved by a constant interval), or a conjunction of such: the least and the
    /// greatest difference in milliseconds it allows, either open (`None`). An interval join
    /// needs both (`b BETWEEN a - INTERVAL '1' SECOND AND a + INTERVAL '2' SECOND`).
    pub fn time_difference_bounds(&self, a: usize, b: usize) -> Option<(Option<i64>, Option<i64>)> {
        /// A timestamp column moved by a constant: `(column, milliseconds)`.
        fn moved(scalar: &Scalar) -> Option<(usize, i64)> {
            match &scalar.kind {
                Kind::Column(column) if scalar.ty == SqlType::Timestamp => Some((*column, 0)),
                Kind::Retype(inner) => moved(inner),
                // `INTERVAL … + ts`.
                Kind::Arithmetic(Arithmetic::Add, shift, time)
                    if matches!(shift.kind, Kind::Literal(Value::Millis(_))) =>
                {
                    let Kind::Literal(Value::Millis(ms)) = shift.kind else { return None };
                    let (column, offset) = moved(time)?;
                    Some((column, offset.checked_add(ms)?))
                }
                Kind::Arithmetic(op @ (Arithmetic::Add | Arithmetic::Subtract), time, shift) => {
                    let Kind::Literal(Value::Millis(ms)) = shift.kind else { return None };
                    let (column, offset) = moved(time)?;
                    let ms = if *op == Arithmetic::Add { ms } else { ms.checked_neg()? };
                    Some((column, offset.checked_add(ms)?))
                }
                _ => None,
            }
        }
        match &self.kind {
            Kind::And(l, r) => {
                let (l, r) = (l.time_difference_bounds(a, b), r.time_difference_bounds(a, b));
                let tighter = |x: Option<i64>, y: Option<i64>, pick: fn(i64, i64) -> i64| match (x, y) {
                    (Some(x), Some(y)) => Some(pick(x, y)),
                    (x, y) => x.or(y),
                };
                match (l, r) {
                    (Some((l_low, l_high)), Some((r_low, r_high))) => {
                        Some((tighter(l_low, r_low, i64::max), tighter(l_high, r_high, i64::min)))
                    }
                    (one, other) => one.or(other),
                }
            }
            Kind::Compare(op, l, r) => {
                let ((l_column, l_offset), (r_column, r_offset)) = (moved(l)?, moved(r)?);
                // `x + p OP y + q` as a bound on `b - a`, in whole milliseconds.
                let (flipped, difference) = match (l_column == a && r_column == b, l_column == b && r_column == a) {
                    // a + p OP b + q  ⇔  b - a (OP reversed) p - q
                    (true, _) => (true, l_offset.checked_sub(r_offset)?),
                    // b + p OP a + q  ⇔  b - a OP q - p
                    (_, true) => (false, r_offset.checked_sub(l_offset)?),
                    _ => return None,
                };
                let op = match (op, flipped) {
                    (Comparison::Eq, _) => Comparison::Eq,
                    (op, false) => *op,
                    (Comparison::Lt, true) => Comparison::Gt,
                    (Comparison::LtEq, true) => Comparison::GtEq,
                    (Comparison::Gt, true) => Comparison::Lt,
                    (Comparison::GtEq, true) => Comparison::LtEq,
                    (Comparison::NotEq, true) => Comparison::NotEq,
                };
                match op {
                    Comparison::Eq => Some((Some(difference), Some(difference))),
                    Comparison::LtEq => Some((None, Some(difference))),
                    Comparison::Lt => Some((None, Some(difference.checked_sub(1)?))),
                    Comparison::GtEq => Some((Some(difference), None)),
                    Comparison::Gt => Some((Some(difference.checked_add(1)?), None)),
                    Comparison::NotEq => None,
                }
            }
            _ => None,
        }
    }

    /// Its two sides, if it is an equality `a = b`.
    pub fn equality(&self) -> Option<(&Scalar, &Scalar)> {
        match &self.kind {
            Kind::Compare(Comparison::Eq, left, right) => Some((left, right)),
            _ => None,
        }
    }

    /// Whether it reads the processing time (`PROCTIME()`): then it is no constant.
    pub fn reads_processing_time(&self) -> bool {
        self.any(&|scalar| matches!(scalar.kind, Kind::Call(Builtin::Proctime, _)))
    }

    /// Whether it reads a column for which `column` holds.
    pub fn reads_any(&self, column: &impl Fn(usize) -> bool) -> bool {
        self.any(&|scalar| matches!(scalar.kind, Kind::Column(index) if column(index)))
    }

    /// Whether `test` holds for it or any expression within it.
    fn any(&self, test: &impl Fn(&Scalar) -> bool) -> bool {
        if test(self) {
            return true;
        }
        match &self.kind {
            Kind::Column(_) | Kind::Literal(_) => false,
            Kind::Field(inner, _)
            | Kind::Not(inner)
            | Kind::Negate(inner)
            | Kind::IsNull(inner, _)
            | Kind::ToDecimal(inner)
            | Kind::ToDouble(inner)
            | Kind::Retype(inner) => inner.any(test),
            Kind::Arithmetic(_, l, r) | Kind::Compare(_, l, r) | Kind::And(l, r) | Kind::Or(l, r) => {
                l.any(test) || r.any(test)
            }
            Kind::Case(branches, otherwise) => {
                branches.iter().any(|(c, r)| c.any(test) || r.any(test))
                    || otherwise.as_ref().is_some_and(|o| o.any(test))
            }
            Kind::Call(_, args) => args.iter().any(|a| a.any(test)),
        }
    }

    /// This expression over the output of a projection: each column `i` it reads becomes
    /// `inputs[i]`. Two projections in a row become one (no intermediate row is built).
    pub fn substitute(&self, inputs: &[Scalar]) -> Scalar {
        let kind = match &self.kind {
            Kind::Column(index) => {
                let input = &inputs[*index];
                assert_eq!(input.ty, self.ty, "column {index} keeps its type through a projection");
                return input.clone();
            }
            Kind::Field(base, index) => Kind::Field(Box::new(base.substitute(inputs)), *index),
            Kind::Literal(value) => Kind::Literal(value.clone()),
            Kind::Arithmetic(op, l, r) => {
                Kind::Arithmetic(*op, Box::new(l.substitute(inputs)), Box::new(r.substitute(inputs)))
            }
            Kind::Compare(op, l, r) => {
                Kind::Compare(*op, Box::new(l.substitute(inputs)), Box::new(r.substitute(inputs)))
            }
            Kind::And(l, r) => Kind::And(Box::new(l.substitute(inputs)), Box::new(r.substitute(inputs))),
            Kind::Or(l, r) => Kind::Or(Box::new(l.substitute(inputs)), Box::new(r.substitute(inputs))),
            Kind::Not(inner) => Kind::Not(Box::new(inner.substitute(inputs))),
            Kind::Negate(inner) => Kind::Negate(Box::new(inner.substitute(inputs))),
            Kind::IsNull(inner, negated) => Kind::IsNull(Box::new(inner.substitute(inputs)), *negated),
            Kind::Case(branches, otherwise) => Kind::Case(
                branches.iter().map(|(c, r)| (c.substitute(inputs), r.substitute(inputs))).collect(),
                otherwise.as_ref().map(|o| Box::new(o.substitute(inputs))),
            ),
            Kind::ToDecimal(inner) => Kind::ToDecimal(Box::new(inner.substitute(inputs))),
            Kind::ToDouble(inner) => Kind::ToDouble(Box::new(inner.substitute(inputs))),
            Kind::Retype(inner) => Kind::Retype(Box::new(inner.substitute(inputs))),
            Kind::Call(builtin, args) => {
                Kind::Call(builtin.clone(), args.iter().map(|a| a.substitute(inputs)).collect())
            }
        };
        Scalar::new(kind, self.ty.clone())
    }

    /// Evaluates the expression on `row`.
    pub fn eval(&self, row: &Row) -> Value {
        match &self.kind {
            Kind::Column(index) => row[*index].clone(),
            Kind::Field(base, index) => match base.eval(row) {
                Value::Row(fields) => fields[*index].clone(),
                _ => Value::Null,
            },
            Kind::Literal(value) => value.clone(),
            Kind::Arithmetic(op, left, right) => arithmetic(*op, &self.ty, left.eval(row), right.eval(row)),
            Kind::Compare(op, left, right) => compare(*op, &left.eval(row), &right.eval(row)),
            Kind::And(left, right) => match (left.eval(row), right.eval(row)) {
                (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                _ => Value::Null,
            },
            Kind::Or(left, right) => match (left.eval(row), right.eval(row)) {
                (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Null,
            },
            Kind::Not(inner) => match inner.eval(row) {
                Value::Bool(v) => Value::Bool(!v),
                _ => Value::Null,
            },
            Kind::Negate(inner) => match inner.eval(row) {
                Value::Int(v) => Value::Int(wrap(v.wrapping_neg(), &self.ty)),
                Value::Double(v) => Value::Double(-v),
                Value::Decimal { unscaled, scale } => Value::Decimal { unscaled: -unscaled, scale },
                _ => Value::Null,
            },
            Kind::IsNull(inner, negated) => Value::Bool((inner.eval(row) == Value::Null) != *negated),
            Kind::Case(branches, otherwise) => {
                for (condition, result) in branches {
                    if condition.eval(row) == Value::Bool(true) {
                        return result.eval(row);
                    }
                }
                otherwise.as_ref().map_or(Value::Null, |e| e.eval(row))
            }
            Kind::ToDecimal(inner) => match self.ty {
                SqlType::Decimal { precision, scale } => fit(to_decimal(inner.eval(row), scale), precision),
                _ => unreachable!("a decimal conversion has a decimal type"),
            },
            Kind::Retype(inner) => inner.eval(row),
            Kind::Call(builtin, args) => match args.as_slice() {
                [one] => builtin.eval(&[one.eval(row)]),
                args => builtin.eval(&args.iter().map(|a| a.eval(row)).collect::<Vec<_>>()),
            },
            Kind::ToDouble(inner) => match inner.eval(row) {
                Value::Int(v) => Value::Double(v as f64),
                Value::Decimal { unscaled, scale } => {
                    // Through the decimal text: one correctly rounded conversion, as Java's.
                    Value::Double(crate::types::format_decimal(unscaled, scale).parse().unwrap_or(f64::NAN))
                }
                other => other,
            },
        }
    }

    /// Whether the predicate holds for `row` (`NULL` does not).
    pub fn holds(&self, row: &Row) -> bool {
        self.eval(row) == Value::Bool(true)
    }

    /// This scalar converted to `target` as an `INSERT` converts it (Flink's implicit casts:
    /// integers widen, integers and decimals become decimals or doubles); other pairs are an
    /// error naming both types.
    pub fn coerce_to(self, target: &SqlType, at: Location, what: &str) -> Result<Scalar, SqlError> {
        let ty = self.ty.clone();
        let coerced = match (&ty, target) {
            (a, b) if a == b => self,
            (SqlType::Null, _) => retype(self, target),
            (SqlType::Integer(from), SqlType::Integer(to)) if width_rank(*from) <= width_rank(*to) => {
                retype(self, target)
            }
            (SqlType::Integer(_) | SqlType::Decimal { .. }, SqlType::Decimal { .. }) => {
                Scalar::new(Kind::ToDecimal(Box::new(self)), target.clone())
            }
            (SqlType::Integer(_) | SqlType::Decimal { .. }, SqlType::Double) => {
                Scalar::new(Kind::ToDouble(Box::new(self)), SqlType::Double)
            }
            (SqlType::Row(a), SqlType::Row(b))
                if a.len() == b.len() && a.iter().zip(b).all(|((_, x), (_, y))| x == y) =>
            {
                retype(self, target)
            }
            _ => {
                return Err(SqlError::at(
                    at,
                    format!("{what}: cannot write a value of type {ty} into a column of type {target}"),
                ))
            }
        };
        Ok(coerced)
    }
}

fn width_rank(width: IntegerWidth) -> u8 {
    match width {
        IntegerWidth::Tiny => 0,
        IntegerWidth::Small => 1,
        IntegerWidth::Int => 2,
        IntegerWidth::Big => 3,
    }
}

fn pow10(exponent: u8) -> i128 {
    10i128.pow(exponent as u32)
}

fn to_decimal(value: Value, scale: u8) -> Value {
    match value {
        Value::Int(v) => {
            (v as i128).checked_mul(pow10(scale)).map_or(Value::Null, |unscaled| Value::Decimal { unscaled, scale })
        }
        Value::Decimal { unscaled, scale: from } if from <= scale => {
            unscaled.checked_mul(pow10(scale - from)).map_or(Value::Null, |unscaled| Value::Decimal { unscaled, scale })
        }
        Value::Decimal { unscaled, scale: from } => {
            let divisor = pow10(from - scale);
            // Half up, away from zero: Java's RoundingMode.HALF_UP, as Flink rounds.
            let (quotient, remainder) = (unscaled / divisor, unscaled % divisor);
            let half_or_more = remainder.unsigned_abs() >= divisor.unsigned_abs() - remainder.unsigned_abs();
            let rounded = if half_or_more { quotient + unscaled.signum() } else { quotient };
            Value::Decimal { unscaled: rounded, scale }
        }
        other => other,
    }
}

/// `NULL` for a decimal with more digits than `precision` (Flink's overflow), else the value.
fn fit(value: Value, precision: u8) -> Value {
    match value {
        Value::Decimal { unscaled, .. } if unscaled.unsigned_abs() >= pow10(precision) as u128 => Value::Null,
        other => other,
    }
}

/// An integer wrapped to the width of its type, as Java's `int`, `short` and `byte` wrap.
fn wrap(value: i64, ty: &SqlType) -> i64 {
    match ty {
        SqlType::Integer(IntegerWidth::Int) => value as i32 as i64,
        SqlType::Integer(IntegerWidth::Small) => value as i16 as i64,
        SqlType::Integer(IntegerWidth::Tiny) => value as i8 as i64,
        _ => value,
    }
}

/// `op` on two values already brought to the operation's domain (see `Scope::binary`); `ty` is
/// the result's type.
fn arithmetic(op: Arithmetic, ty: &SqlType, left: Value, right: Value) -> Value {
    match (left, right) {
        // Divisors are non-zero literals (checked when compiled).
        (Value::Int(a), Value::Int(b)) => Value::Int(wrap(
            match op {
                Arithmetic::Add => a.wrapping_add(b),
                Arithmetic::Subtract => a.wrapping_sub(b),
                Arithmetic::Multiply => a.wrapping_mul(b),
                Arithmetic::Divide => a.wrapping_div(b),
                Arithmetic::Modulo => a.wrapping_rem(b),
            },
            ty,
        )),
        (Value::Double(a), Value::Double(b)) => Value::Double(match op {
            Arithmetic::Add => a + b,
            Arithmetic::Subtract => a - b,
            Arithmetic::Multiply => a * b,
            Arithmetic::Divide => a / b,
            Arithmetic::Modulo => a % b,
        }),
        (Value::Decimal { unscaled: a, scale: sa }, Value::Decimal { unscaled: b, scale: sb }) => {
            let SqlType::Decimal { precision, scale } = *ty else {
                unreachable!("decimal arithmetic has a decimal type")
            };
            // Exact at the operands' scales, then rounded to the result's (Flink: BigDecimal).
            let exact = match op {
                Arithmetic::Add | Arithmetic::Subtract => {
                    let common = sa.max(sb);
                    let a = a.checked_mul(pow10(common - sa));
                    let b = b.checked_mul(pow10(common - sb));
                    let sum = match (a, b, op) {
                        (Some(a), Some(b), Arithmetic::Add) => a.checked_add(b),
                        (Some(a), Some(b), _) => a.checked_sub(b),
                        _ => None,
                    };
                    sum.map(|unscaled| Value::Decimal { unscaled, scale: common })
                }
                Arithmetic::Multiply => a.checked_mul(b).map(|unscaled| Value::Decimal { unscaled, scale: sa + sb }),
                Arithmetic::Divide | Arithmetic::Modulo => unreachable!("refused when compiled"),
            };
            exact.map_or(Value::Null, |value| fit(to_decimal(value, scale), precision))
        }
        (Value::Millis(a), Value::Millis(b)) => match op {
            Arithmetic::Add => Value::Millis(a.wrapping_add(b)),
            Arithmetic::Subtract => Value::Millis(a.wrapping_sub(b)),
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

fn compare(op: Comparison, left: &Value, right: &Value) -> Value {
    let ordering = match (left, right) {
        (Value::Int(a), Value::Int(b)) | (Value::Millis(a), Value::Millis(b)) => a.cmp(b),
        (Value::Double(a), Value::Double(b)) => match a.partial_cmp(b) {
            Some(ordering) => ordering,
            None => return Value::Bool(op == Comparison::NotEq),
        },
        (Value::Decimal { unscaled: a, .. }, Value::Decimal { unscaled: b, .. }) => a.cmp(b),
        (Value::Str(a), Value::Str(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => return Value::Null,
    };
    Value::Bool(match op {
        Comparison::Eq => ordering.is_eq(),
        Comparison::NotEq => ordering.is_ne(),
        Comparison::Lt => ordering.is_lt(),
        Comparison::LtEq => ordering.is_le(),
        Comparison::Gt => ordering.is_gt(),
        Comparison::GtEq => ordering.is_ge(),
    })
}

/// The type two numbers meet in: the wider integer, a decimal holding both, or double.
fn numeric_join(a: &SqlType, b: &SqlType) -> Option<SqlType> {
    Some(match (a, b) {
        (SqlType::Integer(x), SqlType::Integer(y)) => {
            SqlType::Integer(if width_rank(*x) >= width_rank(*y) { *x } else { *y })
        }
        (SqlType::Double, t) | (t, SqlType::Double) if t.is_numeric() => SqlType::Double,
        (SqlType::Decimal { precision: p1, scale: s1 }, SqlType::Decimal { precision: p2, scale: s2 }) => {
            let scale = *s1.max(s2);
            let whole = (p1 - s1).max(p2 - s2);
            // Holding both exactly would need more digits: the callers refuse the pair.
            if whole + scale > 38 {
                return None;
            }
            SqlType::Decimal { precision: whole + scale, scale }
        }
        (SqlType::Decimal { .. }, SqlType::Integer(w)) => numeric_join(a, &integer_as_decimal(*w))?,
        (SqlType::Integer(w), SqlType::Decimal { .. }) => numeric_join(&integer_as_decimal(*w), b)?,
        _ => return None,
    })
}

/// Flink's `LogicalTypeMerging.adjustPrecisionScale`: a result wider than 38 digits keeps 38,
/// giving up scale first (but keeping at least `min(scale, 6)` digits after the point).
fn adjust_precision_scale(precision: u32, scale: u32) -> SqlType {
    if precision <= 38 {
        return SqlType::Decimal { precision: precision as u8, scale: scale as u8 };
    }
    let whole = precision - scale;
    let scale = 38u32.saturating_sub(whole).max(scale.min(6));
    SqlType::Decimal { precision: 38, scale: scale as u8 }
}

/// The decimal type of `a op b` for decimals (Flink's `findAdditionDecimalType` and
/// `findMultiplicationDecimalType`), or `None` when the exact result may need more than 38
/// digits: Flink then computes in `BigDecimal` and rounds, which `i128` cannot do.
fn decimal_result(op: Arithmetic, (p1, s1): (u32, u32), (p2, s2): (u32, u32)) -> Option<SqlType> {
    let (exact_digits, ty) = match op {
        Arithmetic::Multiply => (p1 + p2, adjust_precision_scale(p1 + p2 + 1, s1 + s2)),
        _ => {
            let scale = s1.max(s2);
            let whole = (p1 - s1).max(p2 - s2);
            (whole + scale + 1, adjust_precision_scale(whole + scale + 1, scale))
        }
    };
    (exact_digits <= 38).then_some(ty)
}

/// The decimal an integer type converts to (Flink: `BIGINT` is `DECIMAL(19, 0)`).
fn integer_as_decimal(width: IntegerWidth) -> SqlType {
    let precision = match width {
        IntegerWidth::Tiny => 3,
        IntegerWidth::Small => 5,
        IntegerWidth::Int => 10,
        IntegerWidth::Big => 19,
    };
    SqlType::Decimal { precision, scale: 0 }
}

/// `scalar` converted to `ty` (one of `numeric_join`'s results).
fn widen(scalar: Scalar, ty: &SqlType) -> Scalar {
    match ty {
        _ if scalar.ty == *ty => scalar,
        SqlType::Integer(_) => retype(scalar, ty),
        SqlType::Double => Scalar::new(Kind::ToDouble(Box::new(scalar)), SqlType::Double),
        SqlType::Decimal { .. } => Scalar::new(Kind::ToDecimal(Box::new(scalar)), ty.clone()),
        _ => scalar,
    }
}

/// `scalar` seen as `ty` without changing its value (a wider integer, a typed `NULL`, a row
/// with other field names). A node of its own: the inner expression keeps its type, so an
/// `INT` product still wraps at 32 bits before it is widened, as in Flink.
fn retype(scalar: Scalar, ty: &SqlType) -> Scalar {
    Scalar::new(Kind::Retype(Box::new(scalar)), ty.clone())
}

fn location(expr: &Expr) -> Location {
    expr.span().start
}

impl Scope {
    /// A scope of `columns`.
    pub fn new(columns: Vec<Column>) -> Scope {
        Scope { columns, grouping: None }
    }

    /// Resolves and types `expr` against the scope.
    pub fn compile(&self, expr: &Expr) -> Result<Scalar, SqlError> {
        let at = location(expr);
        if let Some(grouping) = &self.grouping {
            if let Some(found) = grouping.resolve(expr, at)? {
                return Ok(found);
            }
        }
        match expr {
            Expr::Identifier(ident) => self.path(std::slice::from_ref(ident), at),
            Expr::CompoundIdentifier(parts) => self.path(parts, at),
            Expr::Nested(inner) => self.compile(inner),
            Expr::Value(value) => literal(&value.value, at),
            Expr::Interval(interval) => {
                let Expr::Value(value) = interval.value.as_ref() else {
                    return Err(SqlError::at(at, "an INTERVAL needs a quoted number: INTERVAL '10' SECOND"));
                };
                let text = match &value.value {
                    Literal::SingleQuotedString(text) | Literal::Number(text, _) => text.trim().to_owned(),
                    _ => return Err(SqlError::at(at, "an INTERVAL needs a quoted number: INTERVAL '10' SECOND")),
                };
                let amount: i64 = text
                    .parse()
                    .map_err(|_| SqlError::at(at, format!("INTERVAL '{text}': only whole numbers are supported")))?;
                let unit_ms = match (&interval.leading_field, &interval.last_field) {
                    (Some(DateTimeField::Second | DateTimeField::Seconds), None) => 1_000,
                    (Some(DateTimeField::Minute | DateTimeField::Minutes), None) => 60_000,
                    (Some(DateTimeField::Hour | DateTimeField::Hours), None) => 3_600_000,
                    (Some(DateTimeField::Day | DateTimeField::Days), None) => 86_400_000,
                    (Some(DateTimeField::Millisecond | DateTimeField::Milliseconds), None) => 1,
                    _ => {
                        return Err(SqlError::at(
                            at,
                            "this INTERVAL form is not supported: use INTERVAL 'n' DAY, HOUR, MINUTE, SECOND or \
                             MILLISECOND",
                        ))
                    }
                };
                Ok(Scalar::new(Kind::Literal(Value::Millis(amount * unit_ms)), SqlType::Interval))
            }
            Expr::UnaryOp { op: UnaryOperator::Not, expr } => {
                let inner = self.boolean(expr)?;
                Ok(Scalar::new(Kind::Not(Box::new(inner)), SqlType::Boolean))
            }
            Expr::UnaryOp { op: UnaryOperator::Minus, expr } => {
                let inner = self.compile(expr)?;
                if !inner.ty.is_numeric() {
                    return Err(SqlError::at(at, format!("cannot negate a value of type {}", inner.ty)));
                }
                let ty = inner.ty.clone();
                Ok(Scalar::new(Kind::Negate(Box::new(inner)), ty))
            }
            Expr::UnaryOp { op: UnaryOperator::Plus, expr } => self.compile(expr),
            Expr::IsNull(inner) => {
                Ok(Scalar::new(Kind::IsNull(Box::new(self.compile(inner)?), false), SqlType::Boolean))
            }
            Expr::IsNotNull(inner) => {
                Ok(Scalar::new(Kind::IsNull(Box::new(self.compile(inner)?), true), SqlType::Boolean))
            }
            Expr::BinaryOp { left, op, right } => self.binary(left, op, right, at),
            // `a BETWEEN low AND high` is `a >= low AND a <= high` (ASYMMETRIC, the default).
            Expr::Between { expr, negated, low, high } => {
                let from = Box::new(self.binary(expr, &BinaryOperator::GtEq, low, at)?);
                let to = Box::new(self.binary(expr, &BinaryOperator::LtEq, high, at)?);
                let between = Scalar::new(Kind::And(from, to), SqlType::Boolean);
                Ok(if *negated { Scalar::new(Kind::Not(Box::new(between)), SqlType::Boolean) } else { between })
            }
            // `a IN (x, y)` is `a = x OR a = y` (so `NULL` where SQL says so); NOT IN its negation.
            Expr::InList { expr, list, negated } => {
                let mut any: Option<Scalar> = None;
                for item in list {
                    let equal = self.binary(expr, &BinaryOperator::Eq, item, at)?;
                    any = Some(match any {
                        Some(before) => Scalar::new(Kind::Or(Box::new(before), Box::new(equal)), SqlType::Boolean),
                        None => equal,
                    });
                }
                let any = any.ok_or_else(|| SqlError::at(at, "IN () needs at least one value"))?;
                Ok(if *negated { Scalar::new(Kind::Not(Box::new(any)), SqlType::Boolean) } else { any })
            }
            Expr::Case { operand, conditions, else_result, .. } => {
                self.case(operand.as_deref(), conditions, else_result.as_deref(), at)
            }
            Expr::Function(function) => {
                let name = function.name.to_string().to_ascii_uppercase();
                if function.over.is_some() {
                    let hint = if name == "ROW_NUMBER" {
                        " here: select it in a subquery and filter it in the query over it (a Top-N)"
                    } else {
                        " (OVER aggregates)"
                    };
                    return Err(SqlError::at(at, format!("{name}(…) OVER (…) is not supported{hint}")));
                }
                if AGGREGATES.contains(&name.as_str()) {
                    return Err(SqlError::at(
                        at,
                        format!("{name} is an aggregate: it belongs in the SELECT or HAVING of a grouped query"),
                    ));
                }
                let args = match &function.args {
                    FunctionArguments::List(list) if list.duplicate_treatment.is_none() && list.clauses.is_empty() => {
                        &list.args
                    }
                    _ => return Err(SqlError::at(at, format!("{name}(…): this form of call is not supported"))),
                };
                if !matches!(function.parameters, FunctionArguments::None)
                    || function.null_treatment.is_some()
                    || !function.within_group.is_empty()
                    || function.uses_odbc_syntax
                {
                    return Err(SqlError::at(at, format!("{name}: this form of call is not supported")));
                }
                if function.over.is_some() {
                    return Err(SqlError::at(
                        at,
                        format!("{name}(…) OVER (…) is not supported yet (Top-N, deduplication, OVER aggregates)"),
                    ));
                }
                if function.filter.is_some() {
                    return Err(SqlError::at(at, format!("{name}(…) FILTER (WHERE …) is not supported yet")));
                }
                let args: Vec<&Expr> = args
                    .iter()
                    .map(|arg| match arg {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Ok(expr),
                        _ => Err(SqlError::at(at, format!("{name}: only plain arguments are supported"))),
                    })
                    .collect::<Result<_, _>>()?;
                match (name.as_str(), args.as_slice()) {
                    ("MOD", [a, b]) => self.binary(a, &BinaryOperator::Modulo, b, at),
                    ("MOD", _) => Err(SqlError::at(at, "MOD takes two arguments: MOD(a, b)")),
                    (name, args) if crate::functions::NAMES.contains(&name) => self.builtin(name, args, at),
                    _ => Err(SqlError::at(
                        at,
                        format!("function {name} is not supported yet (docs/sql.md lists the supported functions)"),
                    )),
                }
            }
            other => Err(SqlError::at(at, format!("expression `{other}` is not supported yet"))),
        }
    }

    /// A built-in function call (see [`crate::functions`]).
    fn builtin(&self, name: &str, args: &[&Expr], at: Location) -> Result<Scalar, SqlError> {
        let compiled: Vec<Scalar> = args.iter().map(|a| self.compile(a)).collect::<Result<_, _>>()?;
        let arguments: Vec<crate::functions::Argument> = compiled
            .iter()
            .map(|s| crate::functions::Argument {
                ty: s.ty.clone(),
                constant: (!s.reads_any(&|_| true) && !s.reads_processing_time()).then(|| s.eval(&Vec::new())),
            })
            .collect();
        let resolved = crate::functions::resolve(name, &arguments).expect("a known built-in");
        let resolved = resolved.map_err(|message| SqlError::at(at, message))?;
        let per_row = resolved.per_row.iter().map(|&index| compiled[index].clone()).collect();
        Ok(Scalar::new(Kind::Call(resolved.builtin, per_row), resolved.ty))
    }

    /// Compiles a predicate: it must be boolean.
    pub fn boolean(&self, expr: &Expr) -> Result<Scalar, SqlError> {
        let scalar = self.compile(expr)?;
        match scalar.ty {
            SqlType::Boolean | SqlType::Null => Ok(scalar),
            ref other => Err(SqlError::at(location(expr), format!("expected a condition (BOOLEAN), found {other}"))),
        }
    }

    /// A column (`name`, `table.name`) followed by `ROW` field names.
    fn path(&self, parts: &[Ident], at: Location) -> Result<Scalar, SqlError> {
        let (index, rest) = self.resolve_column(parts, at)?;
        let column = &self.columns[index];
        let mut scalar = Scalar::new(Kind::Column(index), column.ty.clone());
        for field in rest {
            let SqlType::Row(fields) = &scalar.ty else {
                return Err(SqlError::at(
                    at,
                    format!("{} has no field {}: it is of type {}", column.name, field.value, scalar.ty),
                ));
            };
            let Some(position) = fields.iter().position(|(name, _)| *name == field.value) else {
                let known: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
                return Err(SqlError::at(
                    at,
                    format!(
                        "field {} not found; the row has {} (names are case-sensitive)",
                        field.value,
                        known.join(", ")
                    ),
                ));
            };
            let ty = fields[position].1.clone();
            scalar = Scalar::new(Kind::Field(Box::new(scalar), position), ty);
        }
        Ok(scalar)
    }

    fn resolve_column<'p>(&self, parts: &'p [Ident], at: Location) -> Result<(usize, &'p [Ident]), SqlError> {
        // `qualifier.column…` when the first part names a table in scope.
        if parts.len() >= 2 && self.columns.iter().any(|c| c.qualifier.as_deref() == Some(parts[0].value.as_str())) {
            let found: Vec<usize> = (0..self.columns.len())
                .filter(|&i| {
                    self.columns[i].qualifier.as_deref() == Some(parts[0].value.as_str())
                        && self.columns[i].name == parts[1].value
                })
                .collect();
            return match found.as_slice() {
                [index] => Ok((*index, &parts[2..])),
                _ => Err(self.not_found(&format!("{}.{}", parts[0].value, parts[1].value), &parts[1].value, at)),
            };
        }
        let found: Vec<usize> = (0..self.columns.len()).filter(|&i| self.columns[i].name == parts[0].value).collect();
        match found.as_slice() {
            [index] => Ok((*index, &parts[1..])),
            [] => Err(self.not_found(&parts[0].value, &parts[0].value, at)),
            _ => Err(SqlError::at(at, format!("column {} is ambiguous: qualify it with its table", parts[0].value))),
        }
    }

    fn not_found(&self, written: &str, name: &str, at: Location) -> SqlError {
        // In a grouped query, a column of the grouped rows that is no key is not "not found".
        let grouped_column = self.grouping.as_ref().is_some_and(|g| g.input.columns.iter().any(|c| c.name == name));
        if grouped_column {
            return SqlError::at(
                at,
                format!("column {written} is neither grouped nor aggregated: add it to GROUP BY or aggregate it"),
            );
        }
        let near = self.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name) && c.name != name);
        let hint = match near {
            Some(column) => format!("; did you mean {}? (names are case-sensitive, as in Flink)", column.name),
            None => {
                let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
                format!("; the columns are {}", names.join(", "))
            }
        };
        SqlError::at(at, format!("column {written} not found{hint}"))
    }

    fn binary(&self, left: &Expr, op: &BinaryOperator, right: &Expr, at: Location) -> Result<Scalar, SqlError> {
        match op {
            BinaryOperator::And | BinaryOperator::Or => {
                let (l, r) = (Box::new(self.boolean(left)?), Box::new(self.boolean(right)?));
                let kind = if *op == BinaryOperator::And { Kind::And(l, r) } else { Kind::Or(l, r) };
                return Ok(Scalar::new(kind, SqlType::Boolean));
            }
            _ => {}
        }
        let (l, r) = (self.compile(left)?, self.compile(right)?);
        let comparison = match op {
            BinaryOperator::Eq => Some(Comparison::Eq),
            BinaryOperator::NotEq => Some(Comparison::NotEq),
            BinaryOperator::Lt => Some(Comparison::Lt),
            BinaryOperator::LtEq => Some(Comparison::LtEq),
            BinaryOperator::Gt => Some(Comparison::Gt),
            BinaryOperator::GtEq => Some(Comparison::GtEq),
            _ => None,
        };
        if let Some(comparison) = comparison {
            let (l, r) = match numeric_join(&l.ty, &r.ty) {
                Some(ty) => (widen(l, &ty), widen(r, &ty)),
                None if orderable(&l.ty)
                    && orderable(&r.ty)
                    && (l.ty == r.ty || l.ty == SqlType::Null || r.ty == SqlType::Null) =>
                {
                    (l, r)
                }
                None => {
                    return Err(SqlError::at(at, format!("cannot compare {} with {}", l.ty, r.ty)));
                }
            };
            return Ok(Scalar::new(Kind::Compare(comparison, Box::new(l), Box::new(r)), SqlType::Boolean));
        }
        let arithmetic = match op {
            BinaryOperator::Plus => Arithmetic::Add,
            BinaryOperator::Minus => Arithmetic::Subtract,
            BinaryOperator::Multiply => Arithmetic::Multiply,
            BinaryOperator::Divide => Arithmetic::Divide,
            BinaryOperator::Modulo => Arithmetic::Modulo,
            other => return Err(SqlError::at(at, format!("operator {other} is not supported yet"))),
        };
        // Timestamps move by intervals.
        match (&l.ty, &r.ty, arithmetic) {
            (SqlType::Timestamp, SqlType::Interval, Arithmetic::Add | Arithmetic::Subtract)
            | (SqlType::Interval, SqlType::Timestamp, Arithmetic::Add) => {
                return Ok(Scalar::new(Kind::Arithmetic(arithmetic, Box::new(l), Box::new(r)), SqlType::Timestamp));
            }
            _ => {}
        }
        let Some(joined) = numeric_join(&l.ty, &r.ty) else {
            return Err(SqlError::at(at, format!("cannot apply {op} to {} and {}", l.ty, r.ty)));
        };
        if matches!(arithmetic, Arithmetic::Divide | Arithmetic::Modulo) {
            // Flink fails the job on a division by zero; Weir cannot fail a job from inside an
            // expression yet, so only a non-zero constant divisor is taken.
            let constant = matches!(right, Expr::Value(_))
                || matches!(right, Expr::Nested(inner) if matches!(**inner, Expr::Value(_)));
            let zero = || {
                matches!(
                    r.eval(&Vec::new()),
                    Value::Int(0) | Value::Double(0.0) | Value::Null | Value::Decimal { unscaled: 0, .. }
                )
            };
            if !constant || zero() {
                return Err(SqlError::at(
                    at,
                    format!("{op} by a column or an expression is not supported yet (only by a non-zero constant)"),
                ));
            }
            if matches!(joined, SqlType::Decimal { .. }) {
                return Err(SqlError::at(at, format!("{op} on DECIMAL is not supported yet")));
            }
            if arithmetic == Arithmetic::Modulo && joined == SqlType::Double {
                return Err(SqlError::at(at, "MOD / % takes exact numbers (integers), as in Flink"));
            }
        }
        let as_decimal = |t: &SqlType| match t {
            SqlType::Integer(w) => integer_as_decimal(*w),
            other => other.clone(),
        };
        let (l, r, ty) = match (&joined, arithmetic) {
            (SqlType::Decimal { .. }, _) => {
                // Each operand keeps its own scale; the result's type is Flink's.
                let (SqlType::Decimal { precision: p1, scale: s1 }, SqlType::Decimal { precision: p2, scale: s2 }) =
                    (as_decimal(&l.ty), as_decimal(&r.ty))
                else {
                    unreachable!("a decimal join has decimal or integer operands")
                };
                let Some(ty) = decimal_result(arithmetic, (p1 as u32, s1 as u32), (p2 as u32, s2 as u32)) else {
                    return Err(SqlError::at(
                        at,
                        format!("{op} of DECIMALs whose exact result has more than 38 digits is not supported yet"),
                    ));
                };
                let l = widen(l, &SqlType::Decimal { precision: p1, scale: s1 });
                let r = widen(r, &SqlType::Decimal { precision: p2, scale: s2 });
                (l, r, ty)
            }
            // Flink: MOD of integers has the divisor's type.
            (SqlType::Integer(_), Arithmetic::Modulo) => {
                let ty = r.ty.clone();
                (widen(l, &joined), widen(r, &joined), ty)
            }
            (other, _) => {
                let ty = other.clone();
                (widen(l, &joined), widen(r, &joined), ty)
            }
        };
        Ok(Scalar::new(Kind::Arithmetic(arithmetic, Box::new(l), Box::new(r)), ty))
    }

    fn case(
        &self,
        operand: Option<&Expr>,
        conditions: &[CaseWhen],
        otherwise: Option<&Expr>,
        at: Location,
    ) -> Result<Scalar, SqlError> {
        let mut branches = Vec::new();
        let mut result_ty: Option<SqlType> = None;
        let mut results = Vec::new();
        for when in conditions {
            let condition = match operand {
                Some(operand) => {
                    self.binary(operand, &BinaryOperator::Eq, &when.condition, location(&when.condition))?
                }
                None => self.boolean(&when.condition)?,
            };
            let result = self.compile(&when.result)?;
            result_ty = Some(join_result(result_ty, &result.ty, at)?);
            branches.push(condition);
            results.push(result);
        }
        let otherwise = otherwise.map(|e| self.compile(e)).transpose()?;
        if let Some(otherwise) = &otherwise {
            result_ty = Some(join_result(result_ty, &otherwise.ty, at)?);
        }
        let ty = result_ty.unwrap_or(SqlType::Null);
        let branches = branches.into_iter().zip(results.into_iter().map(|r| widen(r, &ty))).collect();
        let otherwise = otherwise.map(|o| Box::new(widen(o, &ty)));
        Ok(Scalar::new(Kind::Case(branches, otherwise), ty))
    }
}

/// Types comparisons are defined on (numbers meet in `numeric_join` first).
fn orderable(ty: &SqlType) -> bool {
    matches!(ty, SqlType::Varchar | SqlType::Timestamp | SqlType::Boolean | SqlType::Null)
}

fn join_result(current: Option<SqlType>, next: &SqlType, at: Location) -> Result<SqlType, SqlError> {
    match current {
        None => Ok(next.clone()),
        Some(current) if current == *next || *next == SqlType::Null => Ok(current),
        Some(SqlType::Null) => Ok(next.clone()),
        Some(current) => numeric_join(&current, next)
            .ok_or_else(|| SqlError::at(at, format!("CASE branches have types {current} and {next}: they must agree"))),
    }
}

fn literal(value: &Literal, at: Location) -> Result<Scalar, SqlError> {
    Ok(match value {
        Literal::Number(text, _) => {
            if text.contains(['e', 'E']) {
                let v: f64 = text.parse().map_err(|_| SqlError::at(at, format!("number {text} is not valid")))?;
                Scalar::new(Kind::Literal(Value::Double(v)), SqlType::Double)
            } else if let Some((whole, fraction)) = text.split_once('.') {
                let digits = format!("{whole}{fraction}");
                let unscaled: i128 =
                    digits.parse().map_err(|_| SqlError::at(at, format!("number {text} is out of range")))?;
                let scale = fraction.len() as u8;
                // Calcite's rule: at least one digit before the point (`0.908` is DECIMAL(4, 3)).
                let precision = (digits.trim_start_matches('0').len() as u8).max(scale + 1);
                if precision > 38 {
                    return Err(SqlError::at(at, format!("number {text} has more than 38 digits")));
                }
                Scalar::new(Kind::Literal(Value::Decimal { unscaled, scale }), SqlType::Decimal { precision, scale })
            } else {
                let v: i64 = text.parse().map_err(|_| SqlError::at(at, format!("number {text} is out of range")))?;
                let width = if i32::try_from(v).is_ok() { IntegerWidth::Int } else { IntegerWidth::Big };
                Scalar::new(Kind::Literal(Value::Int(v)), SqlType::Integer(width))
            }
        }
        Literal::SingleQuotedString(text) => {
            Scalar::new(Kind::Literal(Value::Str(Arc::from(text.as_str()))), SqlType::Varchar)
        }
        Literal::Boolean(v) => Scalar::new(Kind::Literal(Value::Bool(*v)), SqlType::Boolean),
        Literal::Null => Scalar::new(Kind::Literal(Value::Null), SqlType::Null),
        other => return Err(SqlError::at(at, format!("literal {other} is not supported"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::parser::Parser;

    fn scope() -> Scope {
        let column = |name: &str, ty| Column { qualifier: Some("t".into()), name: name.into(), ty };
        Scope {
            grouping: None,
            columns: vec![
                column("price", SqlType::BIGINT),
                column("kind", SqlType::Integer(IntegerWidth::Int)),
                column(
                    "bid",
                    SqlType::Row(vec![("auction".into(), SqlType::BIGINT), ("dateTime".into(), SqlType::Timestamp)]),
                ),
                column("name", SqlType::Varchar),
            ],
        }
    }

    fn eval(sql: &str, row: &Row) -> (Value, SqlType) {
        let expr = Parser::new(&crate::parser::FlinkDialect).try_with_sql(sql).unwrap().parse_expr().unwrap();
        let scalar = scope().compile(&expr).unwrap();
        (scalar.eval(row), scalar.ty)
    }

    fn row() -> Row {
        vec![
            Value::Int(1_000),
            Value::Int(2),
            Value::Row(Arc::from(vec![Value::Int(7_503), Value::Millis(5_000)])),
            Value::Str(Arc::from("Kate")),
        ]
    }

    #[test]
    fn decimal_arithmetic_is_exact_and_typed_as_flink() {
        // As Flink 2.3 types it (checked with PyFlink): `0.908` is DECIMAL(4, 3), so
        // `0.908 * price` is DECIMAL(24, 3); `0.0000001 * price` DECIMAL(28, 7).
        let (value, ty) = eval("0.908 * price", &row());
        assert_eq!(ty, SqlType::Decimal { precision: 24, scale: 3 });
        assert_eq!(eval("0.0000001 * price", &row()).1, SqlType::Decimal { precision: 28, scale: 7 });
        assert_eq!(value.to_string(), "908.000");
        let (value, ty) = eval("price + 0.5", &row());
        assert_eq!((value.to_string(), ty), ("1000.5".into(), SqlType::Decimal { precision: 21, scale: 1 }));
        // Flink's result type gives up scale past 38 digits (`adjustPrecisionScale`):
        // DECIMAL(19, 0) × DECIMAL(19, 18) is DECIMAL(38, 17) (39 digits asked for); the exact
        // product has 38 digits and is rounded to 17 places.
        let (value, ty) = eval("price * 1.000000000000000005", &row());
        assert_eq!(ty, SqlType::Decimal { precision: 38, scale: 17 });
        assert_eq!(value.to_string(), "1000.00000000000000500");
        assert_eq!(
            eval("(price + 3) * 1.000000000000000005", &row()).0.to_string(),
            "1003.00000000000000502",
            "half up"
        );
        // A cast that does not fit the precision is NULL, as in Flink (1000.00 in DECIMAL(4, 2)).
        let price = Scalar::column(0, SqlType::BIGINT);
        let narrow =
            price.coerce_to(&SqlType::Decimal { precision: 4, scale: 2 }, Location::new(1, 1), "test").unwrap();
        assert_eq!(narrow.eval(&row()), Value::Null);
        // Exact results past 38 digits are refused rather than rounded differently from Flink.
        let expr = Parser::new(&crate::parser::FlinkDialect)
            .try_with_sql("12345678901234.123456789 * 1.000000000000000000005")
            .unwrap()
            .parse_expr()
            .unwrap();
        assert!(scope().compile(&expr).unwrap_err().message.contains("more than 38 digits"));
    }

    #[test]
    fn a_widened_expression_keeps_its_own_width() {
        // Flink wraps `kind * 2000000000` as an INT, then widens it for `+ price` (BIGINT).
        let (value, ty) = eval("kind * 2000000000 + price", &row());
        assert_eq!((value, ty), (Value::Int((4_000_000_000i64 as i32 as i64) + 1_000), SqlType::BIGINT));
    }

    #[test]
    fn integers_wrap_at_their_declared_width() {
        assert_eq!(eval("kind * 2000000000", &row()).0, Value::Int(4_000_000_000i64 as i32 as i64), "as Java's int");
        let (value, ty) = eval("MOD(price, 7)", &row());
        assert_eq!(
            (value, ty),
            (Value::Int(1_000 % 7), SqlType::Integer(IntegerWidth::Int)),
            "MOD has the divisor's type"
        );
        assert_eq!(eval("price / 3", &row()).0, Value::Int(333));
    }

    #[test]
    fn fields_case_mod_and_intervals() {
        assert_eq!(eval("MOD(bid.auction, 123) = 0", &row()).0, Value::Bool(true)); // 7503 = 61 × 123
        assert_eq!(eval("t.bid.`dateTime` - INTERVAL '4' SECOND", &row()).0, Value::Millis(1_000));
        let case = "CASE WHEN kind = 0 THEN 'person' WHEN kind = 2 THEN name ELSE NULL END";
        assert_eq!(eval(case, &row()).0, Value::Str(Arc::from("Kate")));
        assert_eq!(eval("NOT (kind = 2) OR name IS NULL", &row()).0, Value::Bool(false));
        assert_eq!(eval("kind IN (1, 2, 3)", &row()).0, Value::Bool(true));
        assert_eq!(eval("kind NOT IN (1, 3)", &row()).0, Value::Bool(true));
        assert_eq!(eval("LOWER(name) IN ('kate', 'x')", &row()).0, Value::Bool(true));
    }

    #[test]
    fn wrong_names_and_types_are_errors_that_help() {
        let compile = |sql: &str| {
            let expr = Parser::new(&crate::parser::FlinkDialect).try_with_sql(sql).unwrap().parse_expr().unwrap();
            scope().compile(&expr).unwrap_err().to_string()
        };
        assert!(compile("PRICE").contains("did you mean price?"), "{}", compile("PRICE"));
        assert!(compile("bid.datetime").contains("field datetime not found"));
        assert!(compile("name + 1").contains("cannot apply + to VARCHAR and INT"));
        assert!(compile("INITCAP(name)").contains("function INITCAP is not supported yet"));
        assert!(compile("UPPER(price)").contains("UPPER takes a string, not BIGINT"));
        assert!(compile("price / kind").contains("by a column or an expression is not supported yet"));
        assert!(compile("MOD(price, 0)").contains("not supported yet"));
        assert!(compile("bid = bid").contains("cannot compare"));
    }
}
