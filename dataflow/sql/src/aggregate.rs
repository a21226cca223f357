//! Aggregation: `GROUP BY` keys, with a window or without one, and the aggregate functions.
//!
//! With a window:
//! A grouped query becomes three steps: a projection that reduces each input row to its group
//! keys and the arguments (and `FILTER` conditions) of its aggregate calls; one of the
//! DataStream API's window operators, keyed by the group keys, with [`SqlAggregates`] as its
//! incremental aggregate function; and the query's `HAVING` and `SELECT` over the result row —
//! `[keys…, window_start, window_end, window_time, aggregates…]`.
//!
//! Accumulators must not depend on the order rows arrive in (which varies with parallelism and
//! failures, see `weir_dataflow::window::AggregateFunction`). Counts, integer and decimal sums,
//! minima, maxima and distinct sets do not; a sum of `DOUBLE`s does (floating-point addition is
//! not associative), so it is refused at planning rather than answered differently per run.
//!
//! Without a window the result updates. Over an append-only stream, each group keeps the
//! accumulators a window would, and its row changes as rows come in (a fold:
//! [`weir_dataflow::GroupFold`]). Over an updating result, whose rows may be retracted, it runs on
//! differential dataflow: a group's row is put together from [`Part`]s kept incrementally —
//! counts and sums in one accumulated [`Sums`] per group, distinct counts over distinct values —
//! and `MIN`/`MAX` from the group's values (a differential reduce, which reads the key's
//! distinct values at each change).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use weir_dataflow::window::{AggregateFunction, TimeWindow};
use weir_dataflow::{GroupFold, Sums};

use crate::types::{IntegerWidth, Row, SqlType, Value};

/// The window a grouped query aggregates over (sizes in milliseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// `TUMBLE(…, size)`.
    Tumble {
        /// Window size.
        size: i64,
    },
    /// `HOP(…, slide, size)`.
    Hop {
        /// How far apart windows start.
        slide: i64,
        /// Window size.
        size: i64,
    },
    /// `CUMULATE(…, step, max_size)`.
    Cumulate {
        /// How much each window grows.
        step: i64,
        /// The largest window.
        max_size: i64,
    },
    /// `SESSION(…, gap)`.
    Session {
        /// The inactivity that closes a session.
        gap: i64,
    },
}

impl WindowSpec {
    /// Its durations, as its SQL function takes them (`HOP`: slide, then size).
    pub fn durations(&self) -> Vec<i64> {
        match *self {
            WindowSpec::Tumble { size } => vec![size],
            WindowSpec::Hop { slide, size } => vec![slide, size],
            WindowSpec::Cumulate { step, max_size } => vec![step, max_size],
            WindowSpec::Session { gap } => vec![gap],
        }
    }

    /// The SQL function that declares it.
    pub fn function(&self) -> &'static str {
        match self {
            WindowSpec::Tumble { .. } => "TUMBLE",
            WindowSpec::Hop { .. } => "HOP",
            WindowSpec::Cumulate { .. } => "CUMULATE",
            WindowSpec::Session { .. } => "SESSION",
        }
    }
}

/// An aggregate function.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AggregateKind {
    /// `COUNT(*)`: rows.
    CountRows,
    /// `COUNT(x)`: rows where `x` is not `NULL`.
    Count,
    /// `COUNT(DISTINCT x)`.
    CountDistinct,
    /// `SUM(x)` of integers (wrapping at the type's width, as Flink's Java arithmetic does).
    SumInteger(IntegerWidth),
    /// `SUM(x)` of decimals (all of one scale).
    SumDecimal,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// `AVG(x)` of integers: the sum divided by the count, truncated, in the argument's type
    /// (Flink's integer `AVG`).
    AvgInteger(IntegerWidth),
}

/// One aggregate call of a query: what it computes over which column of the pre-aggregation
/// row, counting only rows where its `FILTER` column is `TRUE`.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateCall {
    /// The function.
    pub kind: AggregateKind,
    /// The argument's column (`None` for `COUNT(*)`).
    pub argument: Option<usize>,
    /// The `FILTER (WHERE …)` condition's column.
    pub filter: Option<usize>,
    /// The result's type.
    pub ty: SqlType,
}

/// A group's key: the values of its `GROUP BY` expressions (or a join's keys). Equal, ordered
/// and hashed by value, the same in every process (it routes rows to slots). Doubles are made
/// canonical when the key is built — `-0.0` becomes `0.0`, every `NaN` one `NaN` — so that they
/// group as SQL compares them and the key written out does not depend on which row came first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupKey(Vec<Value>);

impl GroupKey {
    /// The key of `values`.
    pub fn new(values: impl IntoIterator<Item = Value>) -> GroupKey {
        GroupKey(values.into_iter().map(canonical).collect())
    }

    /// Whether it holds a `NULL` or a `NaN`: as a join key, SQL's `=` is never true for it.
    pub fn has_never_equal(&self) -> bool {
        self.0.iter().any(|value| matches!(value, Value::Null) || matches!(value, Value::Double(x) if x.is_nan()))
    }
}

fn canonical(value: Value) -> Value {
    match value {
        Value::Double(x) => Value::Double(f64::from_bits(canonical_double(x))),
        Value::Row(fields) => Value::Row(fields.iter().cloned().map(canonical).collect()),
        other => other,
    }
}

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for GroupKey {}

impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> Ordering {
        rows_order(&self.0, &other.0)
    }
}

/// Rows ordered by length, then value by value ([`total_order`]).
fn rows_order(a: &[Value], b: &[Value]) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.iter().zip(b).map(|(a, b)| total_order(a, b)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal))
}

impl Hash for GroupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for value in &self.0 {
            hash_value(value, state);
        }
    }
}

fn canonical_double(x: f64) -> u64 {
    if x.is_nan() {
        f64::NAN.to_bits()
    } else if x == 0.0 {
        0
    } else {
        x.to_bits()
    }
}

fn hash_value<H: Hasher>(value: &Value, state: &mut H) {
    match value {
        Value::Null => state.write_u8(0),
        Value::Bool(b) => {
            state.write_u8(1);
            b.hash(state)
        }
        Value::Int(i) => {
            state.write_u8(2);
            i.hash(state)
        }
        Value::Double(x) => {
            state.write_u8(3);
            canonical_double(*x).hash(state)
        }
        Value::Decimal { unscaled, scale } => {
            state.write_u8(4);
            unscaled.hash(state);
            scale.hash(state)
        }
        Value::Str(s) => {
            state.write_u8(5);
            s.hash(state)
        }
        Value::Millis(ms) => {
            state.write_u8(6);
            ms.hash(state)
        }
        Value::Row(fields) => {
            state.write_u8(7);
            fields.iter().for_each(|f| hash_value(f, state))
        }
    }
}

/// A total order on values: `NULL` first, then by variant, then by value (values of one
/// column share a variant, and decimals of one column a scale; doubles by IEEE 754's total
/// order, as Java's `Double.compare`: `-0.0` before `0.0`).
pub fn total_order(a: &Value, b: &Value) -> Ordering {
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Double(_) => 3,
            Value::Decimal { .. } => 4,
            Value::Str(_) => 5,
            Value::Millis(_) => 6,
            Value::Row(_) => 7,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Double(x), Value::Double(y)) => x.total_cmp(y),
        (Value::Decimal { unscaled: x, scale: s }, Value::Decimal { unscaled: y, scale: t }) => {
            debug_assert_eq!(s, t, "decimals of one column share a scale");
            s.cmp(t).then(x.cmp(y))
        }
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Millis(x), Value::Millis(y)) => x.cmp(y),
        (Value::Row(x), Value::Row(y)) => x
            .iter()
            .zip(y.iter())
            .map(|(a, b)| total_order(a, b))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The state of one aggregate call for one group and window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Accumulator {
    /// A count.
    Count(i64),
    /// The distinct non-null values seen.
    Distinct(BTreeSet<GroupKey>),
    /// An integer sum (`None`: no non-null value yet).
    SumInteger(Option<i64>),
    /// A decimal sum, unscaled, as the sums of its values' high and low 64 bits apart: exact
    /// and the same in any order, however far past `DECIMAL(38)` it goes on the way (see
    /// [`decimal_sum`]).
    SumDecimal(Option<(i128, i128)>),
    /// The least or greatest value so far.
    Extreme(Option<Value>),
    /// Sum (wrapping, as Flink's `long` sum) and count of the non-null values.
    Average(i64, i64),
}

/// The aggregate calls of one query, as the window operator's incremental function.
#[derive(Clone, Debug)]
pub struct SqlAggregates {
    /// The calls, in result order.
    pub calls: Vec<AggregateCall>,
}

impl SqlAggregates {
    fn counted(call: &AggregateCall, row: &Row) -> bool {
        call.filter.is_none_or(|column| matches!(row[column], Value::Bool(true)))
    }

    /// The final values of `accumulators`, in call order.
    pub fn results<'a>(&'a self, accumulators: &'a [Accumulator]) -> impl Iterator<Item = Value> + 'a {
        self.calls.iter().zip(accumulators).map(|(call, accumulator)| match *accumulator {
            Accumulator::Count(n) => Value::Int(n),
            Accumulator::Distinct(ref set) => Value::Int(set.len() as i64),
            Accumulator::SumInteger(sum) => sum.map_or(Value::Null, Value::Int),
            Accumulator::SumDecimal(sum) => sum.map_or(Value::Null, |(high, low)| decimal_sum(high, low, &call.ty)),
            Accumulator::Extreme(ref value) => value.clone().unwrap_or(Value::Null),
            Accumulator::Average(_, 0) => Value::Null,
            Accumulator::Average(sum, count) => {
                let AggregateKind::AvgInteger(width) = call.kind else { unreachable!("only integer averages") };
                Value::Int(wrap(sum.wrapping_div(count), width))
            }
        })
    }
}

/// A decimal sum kept as the sums of its values' high (`>> 64`) and low (`& (2^64 - 1)`) halves:
/// `high * 2^64 + low`, or `NULL` past `DECIMAL(38)`'s range, as Flink's decimal overflow. Each
/// half only wraps after 2^63 values, so the sum is exact whatever order its values came in
/// and however far out of range it went before coming back.
fn decimal_sum(high: i128, low: i128, ty: &SqlType) -> Value {
    let sum = high.checked_mul(1 << 64).and_then(|high| high.checked_add(low));
    match (sum, ty) {
        (Some(unscaled), SqlType::Decimal { scale, .. }) if unscaled.unsigned_abs() < 10u128.pow(38) => {
            Value::Decimal { unscaled, scale: *scale }
        }
        _ => Value::Null,
    }
}

/// `value` wrapped to an integer type's width (two's complement, as Java's arithmetic).
fn wrap(value: i64, width: IntegerWidth) -> i64 {
    match width {
        IntegerWidth::Tiny => value as i8 as i64,
        IntegerWidth::Small => value as i16 as i64,
        IntegerWidth::Int => value as i32 as i64,
        IntegerWidth::Big => value,
    }
}

/// `sum + x` in an integer type of `width`.
fn add_integer(sum: Option<i64>, x: i64, width: IntegerWidth) -> Option<i64> {
    Some(wrap(sum.unwrap_or(0).wrapping_add(x), width))
}

/// Whether `candidate` replaces `current` as the `MIN` (or `MAX`).
fn improves(kind: AggregateKind, candidate: &Value, current: Option<&Value>) -> bool {
    current.is_none_or(|current| {
        let order = total_order(candidate, current);
        if kind == AggregateKind::Min {
            order.is_lt()
        } else {
            order.is_gt()
        }
    })
}

fn unscaled(value: &Value) -> i128 {
    match value {
        Value::Decimal { unscaled, .. } => *unscaled,
        other => unreachable!("a decimal sum over {other:?}"),
    }
}

impl AggregateFunction<Row> for SqlAggregates {
    type Acc = Vec<Accumulator>;

    fn create_accumulator(&self) -> Vec<Accumulator> {
        self.calls
            .iter()
            .map(|call| match call.kind {
                AggregateKind::CountRows | AggregateKind::Count => Accumulator::Count(0),
                AggregateKind::CountDistinct => Accumulator::Distinct(BTreeSet::new()),
                AggregateKind::SumInteger(_) => Accumulator::SumInteger(None),
                AggregateKind::SumDecimal => Accumulator::SumDecimal(None),
                AggregateKind::Min | AggregateKind::Max => Accumulator::Extreme(None),
                AggregateKind::AvgInteger(_) => Accumulator::Average(0, 0),
            })
            .collect()
    }

    fn add(&self, accumulators: &mut Vec<Accumulator>, row: &Row) {
        for (call, accumulator) in self.calls.iter().zip(accumulators.iter_mut()) {
            if !Self::counted(call, row) {
                continue;
            }
            let argument = call.argument.map(|column| &row[column]);
            if matches!(argument, Some(Value::Null)) {
                continue;
            }
            match (accumulator, argument) {
                (Accumulator::Count(n), _) => *n += 1,
                (Accumulator::Distinct(set), Some(value)) => {
                    set.insert(GroupKey::new([value.clone()]));
                }
                (Accumulator::SumInteger(sum), Some(Value::Int(x))) => {
                    let AggregateKind::SumInteger(width) = call.kind else { unreachable!("integer sum") };
                    *sum = add_integer(*sum, *x, width);
                }
                (Accumulator::SumDecimal(sum), Some(value)) => {
                    let (high, low) = sum.get_or_insert((0, 0));
                    let x = unscaled(value);
                    (*high, *low) = (high.wrapping_add(x >> 64), low.wrapping_add(x & LOW_64));
                }
                (Accumulator::Extreme(current), Some(value)) => {
                    if improves(call.kind, value, current.as_ref()) {
                        *current = Some(value.clone());
                    }
                }
                (Accumulator::Average(sum, count), Some(Value::Int(x))) => {
                    *sum = sum.wrapping_add(*x);
                    *count += 1;
                }
                (accumulator, argument) => {
                    unreachable!("{:?} cannot take {argument:?} into {accumulator:?}", call.kind)
                }
            }
        }
    }

    fn merge(&self, accumulators: &mut Vec<Accumulator>, others: Vec<Accumulator>) {
        for ((call, accumulator), other) in self.calls.iter().zip(accumulators.iter_mut()).zip(others) {
            match (accumulator, other) {
                (Accumulator::Count(n), Accumulator::Count(m)) => *n += m,
                (Accumulator::Distinct(set), Accumulator::Distinct(more)) => set.extend(more),
                (Accumulator::SumInteger(sum), Accumulator::SumInteger(more)) => {
                    let AggregateKind::SumInteger(width) = call.kind else { unreachable!("integer sum") };
                    if let Some(more) = more {
                        *sum = add_integer(*sum, more, width);
                    }
                }
                (Accumulator::SumDecimal(sum), Accumulator::SumDecimal(more)) => {
                    if let Some((more_high, more_low)) = more {
                        let (high, low) = sum.get_or_insert((0, 0));
                        (*high, *low) = (high.wrapping_add(more_high), low.wrapping_add(more_low));
                    }
                }
                (Accumulator::Extreme(current), Accumulator::Extreme(Some(value))) => {
                    if improves(call.kind, &value, current.as_ref()) {
                        *current = Some(value);
                    }
                }
                (Accumulator::Extreme(_), Accumulator::Extreme(None)) => {}
                (Accumulator::Average(sum, count), Accumulator::Average(more, n)) => {
                    *sum = sum.wrapping_add(more);
                    *count += n;
                }
                (mine, theirs) => unreachable!("merging {theirs:?} into {mine:?}"),
            }
        }
    }
}

/// The result row of a group's window: its keys, the window's bounds and time, then the
/// aggregates' values.
pub fn result_row(
    aggregates: &SqlAggregates,
    key: &GroupKey,
    window: TimeWindow,
    accumulators: Vec<Accumulator>,
) -> Row {
    let mut row = Vec::with_capacity(key.0.len() + 3 + aggregates.calls.len());
    row.extend(key.0.iter().cloned());
    row.extend([Value::Millis(window.start), Value::Millis(window.end), Value::Millis(window.max_timestamp())]);
    row.extend(aggregates.results(&accumulators));
    row
}

/// An aggregate without a window over an append-only stream: each group's accumulators, as a
/// window keeps them, and the group's row from them — `[keys…, NULL, NULL, NULL, aggregates…]`,
/// as [`SqlAggregates::group_row`] lays it out.
pub struct GroupAggregates(pub SqlAggregates);

impl GroupFold<GroupKey, SortedRow> for GroupAggregates {
    type Acc = Vec<Accumulator>;
    type Row = SortedRow;

    fn create(&self) -> Vec<Accumulator> {
        self.0.create_accumulator()
    }

    /// Every row counts as a change: every row writes Flink's accumulators (which refreshes
    /// its state TTL), whether their value changed or not.
    fn add(&self, accumulators: &mut Vec<Accumulator>, row: &SortedRow) -> bool {
        self.0.add(accumulators, &row.0);
        true
    }

    fn rows(&self, key: &GroupKey, accumulators: &Vec<Accumulator>, rows: &mut Vec<SortedRow>) {
        let mut row = Vec::with_capacity(key.0.len() + 3 + self.0.calls.len());
        row.extend(key.0.iter().cloned());
        row.extend([Value::Null, Value::Null, Value::Null]);
        row.extend(self.0.results(accumulators));
        rows.push(SortedRow(row));
    }
}

/// A row as differential dataflow holds it: ordered value by value (doubles by their total
/// order, so `-0.0` and `0.0` stay apart, as they print apart), equal when that order says so.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SortedRow(pub Row);

impl PartialEq for SortedRow {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortedRow {}

impl PartialOrd for SortedRow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortedRow {
    fn cmp(&self, other: &Self) -> Ordering {
        rows_order(&self.0, &other.0)
    }
}

/// The low 64 bits of an `i128`.
const LOW_64: i128 = (1 << 64) - 1;

/// A part of a group's row in an aggregate without a window (an updating one). The parts are
/// kept incrementally on differential dataflow, each updated in constant or logarithmic time
/// per change of the group's rows where it can be (recomputing a group from its rows would read
/// all of them at every change: quadratic for a group that grows with the input):
/// - the group's counts and sums, as one [`Sums`] per group (slot 0 counts its rows);
/// - each `COUNT(DISTINCT …)`: how many distinct values the group has;
/// - each `MIN` / `MAX`: the least or greatest of the group's values — a reduce that reads the
///   group's distinct values at each change (linear in them).
///
/// [`SqlAggregates::group_row`] puts a group's row together from them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Part {
    /// The counts and sums.
    Sums(Sums),
    /// Call `.0`'s count of distinct values.
    Distinct(usize, i64),
    /// Call `.0`'s least or greatest value.
    Extreme(usize, SortedRow),
}

impl SqlAggregates {
    /// Where each call's sums start in a group's [`Sums`] (after slot 0, the row count), for the
    /// calls kept as sums: counts take one slot, sums and averages two (the sum, and how many
    /// values it has — a sum of none is `NULL`).
    fn sum_slots(&self) -> Vec<Option<usize>> {
        let mut next = 1;
        self.calls
            .iter()
            .map(|call| {
                let width = match call.kind {
                    AggregateKind::CountRows | AggregateKind::Count => 1,
                    AggregateKind::SumInteger(_) | AggregateKind::AvgInteger(_) => 2,
                    // The decimal's high and low 64 bits apart, so that the slots never wrap.
                    AggregateKind::SumDecimal => 3,
                    AggregateKind::CountDistinct | AggregateKind::Min | AggregateKind::Max => return None,
                };
                next += width;
                Some(next - width)
            })
            .collect()
    }

    /// One row's contribution to its group's sums.
    pub fn row_sums(&self, row: &Row) -> Sums {
        let slots = self.sum_slots();
        let mut sums = vec![0i128; slots.iter().flatten().max().map_or(1, |last| last + 3)];
        sums[0] = 1;
        for (call, slot) in self.calls.iter().zip(slots) {
            let Some(slot) = slot else { continue };
            if !Self::counted(call, row) {
                continue;
            }
            let argument = call.argument.map(|column| &row[column]);
            match (call.kind, argument) {
                (AggregateKind::CountRows, _) => sums[slot] = 1,
                (_, Some(Value::Null)) => {}
                (AggregateKind::Count, _) => sums[slot] = 1,
                (_, Some(Value::Int(x))) => (sums[slot], sums[slot + 1]) = (*x as i128, 1),
                (_, Some(Value::Decimal { unscaled, .. })) => {
                    (sums[slot], sums[slot + 1], sums[slot + 2]) = (unscaled >> 64, unscaled & LOW_64, 1)
                }
                (kind, other) => unreachable!("{kind:?} over {other:?}"),
            }
        }
        Sums::new(sums)
    }

    /// The `COUNT(DISTINCT …)` calls, by index.
    pub fn distinct_calls(&self) -> impl Iterator<Item = usize> + '_ {
        self.calls.iter().enumerate().filter(|(_, c)| c.kind == AggregateKind::CountDistinct).map(|(i, _)| i)
    }

    /// The `MIN` and `MAX` calls, by index.
    pub fn extreme_calls(&self) -> impl Iterator<Item = usize> + '_ {
        self.calls
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.kind, AggregateKind::Min | AggregateKind::Max))
            .map(|(i, _)| i)
    }

    /// The value call `index` takes from `row`: `None` when its filter drops the row or the
    /// value is `NULL` (aggregates skip `NULL`s).
    pub fn argument(&self, index: usize, row: &Row) -> Option<Value> {
        let call = &self.calls[index];
        let value = &row[call.argument.expect("a distinct count, MIN or MAX has an argument")];
        (Self::counted(call, row) && *value != Value::Null).then(|| value.clone())
    }

    /// Whether call `index` is `MIN` (its part is the least value, not the greatest).
    pub fn is_min(&self, index: usize) -> bool {
        self.calls[index].kind == AggregateKind::Min
    }

    /// A group's row from its parts, `[keys…, NULL, NULL, NULL, aggregates…]` — the layout of a
    /// window aggregation's row, whose window columns a query cannot name here — or `None` if
    /// the group has no rows.
    pub fn group_row(&self, key: &GroupKey, parts: &[(&Part, isize)]) -> Option<SortedRow> {
        let mut sums = None;
        let mut found: Vec<Option<Value>> = vec![None; self.calls.len()];
        for (part, count) in parts {
            assert_eq!(*count, 1, "a group's part is there once: {part:?}");
            match part {
                Part::Sums(part) => sums = Some(part),
                Part::Distinct(index, n) => found[*index] = Some(Value::Int(*n)),
                Part::Extreme(index, value) => found[*index] = Some(value.0[0].clone()),
            }
        }
        // No rows (the distinct values and extremes of none are gone too).
        let sums = sums.filter(|sums| sums.get(0) > 0)?;
        let mut row = Vec::with_capacity(key.0.len() + 3 + self.calls.len());
        row.extend(key.0.iter().cloned());
        row.extend([Value::Null, Value::Null, Value::Null]);
        for ((call, slot), found) in self.calls.iter().zip(self.sum_slots()).zip(found) {
            let value = match (call.kind, slot) {
                (AggregateKind::CountDistinct, _) => found.unwrap_or(Value::Int(0)),
                (AggregateKind::Min | AggregateKind::Max, _) => found.unwrap_or(Value::Null),
                (_, None) => unreachable!("a call kept as sums has slots"),
                (AggregateKind::CountRows | AggregateKind::Count, Some(slot)) => Value::Int(sums.get(slot) as i64),
                (AggregateKind::SumDecimal, Some(slot)) if sums.get(slot + 2) == 0 => Value::Null,
                (AggregateKind::SumInteger(_) | AggregateKind::AvgInteger(_), Some(slot))
                    if sums.get(slot + 1) == 0 =>
                {
                    Value::Null
                }
                (AggregateKind::SumInteger(width), Some(slot)) => Value::Int(wrap(sums.get(slot) as i64, width)),
                (AggregateKind::AvgInteger(width), Some(slot)) => {
                    // Java's `long` sum (wrapping), divided and truncated, in the argument's type.
                    Value::Int(wrap((sums.get(slot) as i64).wrapping_div(sums.get(slot + 1) as i64), width))
                }
                (AggregateKind::SumDecimal, Some(slot)) => decimal_sum(sums.get(slot), sums.get(slot + 1), &call.ty),
            };
            row.push(value);
        }
        Some(SortedRow(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_updating_groups_sums_retract_exactly_and_a_decimal_sum_past_38_digits_is_null() {
        let decimal = SqlType::Decimal { precision: 38, scale: 0 };
        let aggregates = SqlAggregates {
            calls: vec![
                AggregateCall { kind: AggregateKind::CountRows, argument: None, filter: None, ty: BIG },
                AggregateCall { kind: AggregateKind::SumDecimal, argument: Some(1), filter: None, ty: decimal },
                AggregateCall {
                    kind: AggregateKind::AvgInteger(IntegerWidth::Big),
                    argument: Some(2),
                    filter: None,
                    ty: BIG,
                },
            ],
        };
        let big = 9 * 10i128.pow(37);
        let row = |unscaled: i128, n: Value| vec![Value::Int(1), Value::Decimal { unscaled, scale: 0 }, n];
        let rows = [row(big, Value::Int(4)), row(big, Value::Null), row(big, Value::Int(-7)), row(-big, Value::Int(1))];
        // The group's sums as differential accumulates them: each row's contribution, added (or
        // subtracted, for a retraction) slot by slot.
        let total = |rows: &[(&Row, i128)]| {
            let mut slots = vec![0i128; 16];
            for (row, times) in rows {
                let sums = aggregates.row_sums(row);
                slots.iter_mut().enumerate().for_each(|(i, slot)| *slot += times * sums.get(i));
            }
            Sums::new(slots)
        };
        let result = |sums: Sums| {
            let part = Part::Sums(sums);
            aggregates.group_row(&GroupKey::new([Value::Int(1)]), &[(&part, 1)]).map(|row| row.0[4..].to_vec())
        };
        let d = |unscaled: i128| Value::Decimal { unscaled, scale: 0 };
        assert_eq!(result(total(&[(&rows[0], 1)])), Some(vec![Value::Int(1), d(big), Value::Int(4)]));
        // 1.8e38: past DECIMAL(38), NULL — with no wrapping, however large the sum grows.
        assert_eq!(result(total(&[(&rows[0], 1), (&rows[1], 1)])).unwrap()[1], Value::Null);
        assert_eq!(result(total(&[(&rows[0], 1), (&rows[1], 1), (&rows[2], 1)])).unwrap()[1], Value::Null);
        // Retractions bring it back, exactly; AVG skips NULLs and truncates toward zero.
        let back = total(&[(&rows[0], 1), (&rows[1], 1), (&rows[2], 1), (&rows[1], -1), (&rows[3], 1)]);
        assert_eq!(result(back), Some(vec![Value::Int(3), d(big), Value::Int(-0)]));
        let all_null = total(&[(&rows[1], 1)]);
        assert_eq!(result(all_null), Some(vec![Value::Int(1), d(big), Value::Null]));
        assert_eq!(result(total(&[(&rows[0], 1), (&rows[0], -1)])), None, "no rows: no group");
    }

    const BIG: SqlType = SqlType::BIGINT;

    fn call(kind: AggregateKind, argument: Option<usize>, filter: Option<usize>, ty: SqlType) -> AggregateCall {
        AggregateCall { kind, argument, filter, ty }
    }

    /// The aggregates over `rows`, fed one by one into one accumulator, and split in two halves
    /// merged (as sessions merge): both must give the same values.
    fn run(calls: Vec<AggregateCall>, rows: &[Row]) -> Vec<Value> {
        let aggregates = SqlAggregates { calls };
        let mut whole = aggregates.create_accumulator();
        rows.iter().for_each(|row| aggregates.add(&mut whole, row));
        let (first, second) = rows.split_at(rows.len() / 2);
        let mut merged = aggregates.create_accumulator();
        first.iter().for_each(|row| aggregates.add(&mut merged, row));
        let mut rest = aggregates.create_accumulator();
        second.iter().for_each(|row| aggregates.add(&mut rest, row));
        aggregates.merge(&mut merged, rest);
        let values: Vec<Value> = aggregates.results(&whole).collect();
        assert_eq!(values, aggregates.results(&merged).collect::<Vec<_>>(), "merging halves changes nothing");
        values
    }

    #[test]
    fn nulls_are_skipped_and_an_all_null_group_aggregates_to_null() {
        use AggregateKind::*;
        let rows = vec![
            vec![Value::Int(5), Value::Bool(true)],
            vec![Value::Null, Value::Bool(true)],
            vec![Value::Int(-2), Value::Null],
            vec![Value::Int(7), Value::Bool(false)],
        ];
        let calls = vec![
            call(CountRows, None, None, BIG),
            call(Count, Some(0), None, BIG),
            call(SumInteger(IntegerWidth::Big), Some(0), None, BIG),
            call(Min, Some(0), None, BIG),
            call(Max, Some(0), None, BIG),
            call(AvgInteger(IntegerWidth::Big), Some(0), None, BIG),
            // FILTER keeps rows whose condition is TRUE: not FALSE, not NULL.
            call(CountRows, None, Some(1), BIG),
            call(SumInteger(IntegerWidth::Big), Some(0), Some(1), BIG),
            call(CountDistinct, Some(0), None, BIG),
        ];
        let values = run(calls.clone(), &rows);
        let int = Value::Int;
        assert_eq!(values, vec![int(4), int(3), int(10), int(-2), int(7), int(3), int(2), int(5), int(3)]);
        let nulls = vec![vec![Value::Null, Value::Bool(false)], vec![Value::Null, Value::Null]];
        let values = run(calls, &nulls);
        let null = Value::Null;
        assert_eq!(
            values,
            vec![int(2), int(0), null.clone(), null.clone(), null.clone(), null.clone(), int(0), null, int(0)]
        );
    }

    #[test]
    fn integer_sums_wrap_at_their_width_and_averages_truncate_toward_zero() {
        use AggregateKind::*;
        let int = SqlType::Integer(IntegerWidth::Int);
        let rows: Vec<Row> = [i64::from(i32::MAX), 1, -4].into_iter().map(|x| vec![Value::Int(x)]).collect();
        let values = run(vec![call(SumInteger(IntegerWidth::Int), Some(0), None, int.clone())], &rows[..2]);
        assert_eq!(values, vec![Value::Int(i64::from(i32::MIN))], "INT overflows as Java's int");
        let values = run(
            vec![call(AvgInteger(IntegerWidth::Big), Some(0), None, BIG)],
            &[vec![Value::Int(-7)], vec![Value::Int(0)]],
        );
        assert_eq!(values, vec![Value::Int(-3)], "-7 / 2 truncates to -3");
    }

    #[test]
    fn a_decimal_sum_past_38_digits_is_null() {
        let ty = SqlType::Decimal { precision: 38, scale: 0 };
        let nines = 10i128.pow(38) - 1;
        let decimal = |unscaled| vec![Value::Decimal { unscaled, scale: 0 }];
        let sum = |rows: &[Row]| run(vec![call(AggregateKind::SumDecimal, Some(0), None, ty.clone())], rows);
        assert_eq!(sum(&[decimal(nines)]), vec![Value::Decimal { unscaled: nines, scale: 0 }]);
        assert_eq!(sum(&[decimal(nines), decimal(1)]), vec![Value::Null]);
        // Past i128's range on the way and back: exact in every order (a saturating sum would
        // give 9e37 in one order and 1.7e38 - 9e37 in another).
        let big = 9 * 10i128.pow(37);
        let rows = [decimal(big), decimal(big), decimal(-big)];
        for order in [[0, 1, 2], [0, 2, 1], [2, 0, 1]] {
            let rows: Vec<Row> = order.iter().map(|&i| rows[i].clone()).collect();
            assert_eq!(sum(&rows), vec![Value::Decimal { unscaled: big, scale: 0 }], "{order:?}");
        }
    }

    #[test]
    fn negative_zero_groups_with_zero_and_the_key_does_not_depend_on_arrival() {
        let (zero, negative) = (GroupKey::new([Value::Double(0.0)]), GroupKey::new([Value::Double(-0.0)]));
        assert_eq!(zero, negative);
        assert_eq!(format!("{negative:?}"), format!("{zero:?}"), "stored as 0.0");
        let nan = GroupKey::new([Value::Double(f64::NAN)]);
        assert_eq!(nan, GroupKey::new([Value::Double(-f64::NAN)]));
        // MIN and MAX order them as Java's Double.compare: -0.0 first, whatever comes first.
        let rows = [vec![Value::Double(0.0)], vec![Value::Double(-0.0)]];
        for rows in [rows.to_vec(), rows.iter().rev().cloned().collect()] {
            let values = run(vec![call(AggregateKind::Min, Some(0), None, SqlType::Double)], &rows);
            assert!(matches!(values[0], Value::Double(x) if x == 0.0 && x.is_sign_negative()));
        }
    }
}
