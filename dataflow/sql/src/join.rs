//! Joins of two pipelines' rows, keyed by the values of their join keys.
//!
//! They run on the DataStream API with [`GroupKey`]s as keys, and a key holding `NULL` or `NaN`
//! joins nothing (SQL's `=` is never true for them). Their inputs are append-only, and so are
//! their results: an inner join of rows that are never retracted only ever adds pairs.
//!
//! - A **window join** meets the rows of two window aggregations window by window: every result
//!   row of a window carries the window's last millisecond as its event time, so the rows that
//!   join share their time, and a one-millisecond window of the DataStream API's window join
//!   holds exactly them. Its pairs come out when the watermark passes the window, as Flink's.
//!   An outer window join is append-only too: no partner comes after a window closes, so the
//!   window's rows without one come out then, once, with `NULL`s for the other side.
//! - Any other **outer join**, or a join of an updating result, updates: a row kept with `NULL`s for
//!   want of a partner is retracted when one arrives, and a pair goes when either row does. It
//!   runs on differential dataflow ([`updating_join`]): both sides, tagged, keyed by their join
//!   keys, and one reduce per key that pairs them (with the rest of the `ON` condition) and keeps
//!   the partnerless rows of an outer side. A change of a key costs a pass over the key's rows
//!   of both sides — right for joins where a key has few rows on one side (enrichment).
//! - An **interval join** is a regular join whose condition bounds the difference of the two
//!   sides' times (`b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '2' SECOND`): the
//!   DataStream API's interval join, which keeps each side's rows only while a partner may still
//!   come, so its state is bounded. The condition still filters the pairs afterwards.
//! - A **regular join** keeps every row of both sides, per key, and pairs each arriving row
//!   with the other side's rows so far (Flink's regular join; under a state TTL the planner
//!   makes it an interval join of rows less than the TTL apart, `plan::ttl_join`). A keyed
//!   co-process function hands rows over in event-time order, so the pairs — and the event time
//!   each carries, the later row's — are the same in every run. A row that arrives behind the
//!   watermark cannot be put in that order; it would be missing from the answer, so it stops
//!   the job with an error that says so instead.

use std::sync::Arc;

use weir_dataflow::keyed::KeySelector;
use weir_dataflow::process::Context;
use weir_dataflow::window::TumblingEventTimeWindows;
use weir_dataflow::{DataStream, Either, KeyedCoProcessFunction, ListState, UpdatingStream};

use crate::aggregate::{GroupKey, SortedRow};
use crate::expr::Scalar;
use crate::types::{Row, Value};

/// The key of a join's side: its key expressions' values.
#[derive(Clone, Debug)]
struct JoinKey(Arc<Vec<Scalar>>);

impl KeySelector<Row, GroupKey> for JoinKey {
    fn key(&self, row: &Row) -> GroupKey {
        GroupKey::new(self.0.iter().map(|key| key.eval(row)))
    }
}

/// Both sides keyed by their join keys, rows with a `NULL` or `NaN` key dropped: SQL's `=` is
/// never true for them. (`-0.0` does equal `0.0`, and joins it, as `=` says — where Flink,
/// comparing the keys' bytes, keeps them apart.)
fn keyed<'s>(
    rows: DataStream<'s, Row>,
    keys: Vec<Scalar>,
) -> weir_dataflow::api::KeyedStream<'s, GroupKey, Row, JoinKey> {
    let keys = Arc::new(keys);
    let joinable = keys.clone();
    rows.filter(move |row| !never_joins(&joinable, row)).key_by(JoinKey(keys))
}

/// Whether a row's key holds a `NULL` or a `NaN`, which `=` makes equal to nothing.
fn never_joins(keys: &[Scalar], row: &Row) -> bool {
    let never_equal = |value: &Value| matches!(value, Value::Null) || matches!(value, Value::Double(x) if x.is_nan());
    keys.iter().any(|key| never_equal(&key.eval(row)))
}

/// A joined row: the left row's columns, then the right row's.
fn concat(left: &Row, right: &Row) -> Row {
    let mut row = Vec::with_capacity(left.len() + right.len());
    row.extend(left.iter().cloned());
    row.extend(right.iter().cloned());
    row
}

/// One side of a window join.
pub struct WindowSide<'s> {
    /// Its rows: a window aggregation's.
    pub rows: DataStream<'s, Row>,
    /// Its join keys (the window's bounds among them).
    pub keys: Vec<Scalar>,
    /// Whether its rows without a partner are kept, with `NULL`s for the other side.
    pub outer: bool,
    /// How many columns its rows have.
    pub width: usize,
}

/// The window join of two window aggregations' rows (see the module's docs). `condition` is
/// the rest of an outer join's `ON`, over the joined row: it decides which rows are partners.
pub fn window_join<'s>(
    left: WindowSide<'s>,
    right: WindowSide<'s>,
    condition: Vec<Scalar>,
    uid: &str,
) -> DataStream<'s, Row> {
    let (left_outer, right_outer, left_width, right_width) = (left.outer, right.outer, left.width, right.width);
    // An outer side's rows whose key can equal nothing have no partner: they come out with
    // NULLs at once, at their own event time (their window's, as the join's results).
    let unmatched = |side: &WindowSide<'s>, pad: fn(Row, usize) -> Row, width: usize| {
        let keys = side.keys.clone();
        side.outer.then(|| side.rows.clone().filter(move |row| never_joins(&keys, row)).map(move |row| pad(row, width)))
    };
    let unmatched_left = unmatched(&left, |row, width| concat(&row, &nulls(width)), right_width);
    let unmatched_right = unmatched(&right, |row, width| concat(&nulls(width), &row), left_width);
    let output =
        keyed(left.rows, left.keys).window_join(keyed(right.rows, right.keys), TumblingEventTimeWindows::of(1));
    let output = if !left_outer && !right_outer {
        output.apply(uid, concat)
    } else {
        output.co_group(uid, move |lefts: &[Row], rights: &[Row]| {
            outer_window(lefts, rights, &condition, (left_outer, right_outer), (left_width, right_width))
        })
    };
    // A window's result rows are emitted before event time passes them: none is ever late here.
    let operator = uid.to_owned();
    output
        .late
        .fail_if_any(move |_| format!("window join {operator}: a window's result arrived after its window closed"));
    [unmatched_left, unmatched_right]
        .into_iter()
        .flatten()
        .fold(output.results, |results, padded| results.union(padded))
}

/// `width` NULLs: the other side of a row without a partner.
fn nulls(width: usize) -> Row {
    vec![Value::Null; width]
}

/// One key's window of an outer window join: the pairs `condition` accepts, then the rows of an
/// outer side that have none, with `NULL`s for the other side.
fn outer_window(
    lefts: &[Row],
    rights: &[Row],
    condition: &[Scalar],
    (left_outer, right_outer): (bool, bool),
    (left_width, right_width): (usize, usize),
) -> Vec<Row> {
    let mut out = Vec::new();
    let mut right_paired = vec![false; rights.len()];
    for left in lefts {
        let mut paired = false;
        for (right, right_paired) in rights.iter().zip(right_paired.iter_mut()) {
            let joined = concat(left, right);
            if condition.iter().all(|c| c.holds(&joined)) {
                out.push(joined);
                paired = true;
                *right_paired = true;
            }
        }
        if left_outer && !paired {
            out.push(concat(left, &nulls(right_width)));
        }
    }
    if right_outer {
        for (right, paired) in rights.iter().zip(right_paired) {
            if !paired {
                out.push(concat(&nulls(left_width), right));
            }
        }
    }
    out
}

/// The regular join of two pipelines' rows (see the module's docs).
pub fn regular_join<'s>(
    left: DataStream<'s, Row>,
    right: DataStream<'s, Row>,
    left_keys: Vec<Scalar>,
    right_keys: Vec<Scalar>,
    uid: &str,
) -> DataStream<'s, Row> {
    let output = keyed(left, left_keys).connect(keyed(right, right_keys)).process(uid, RegularJoin::default());
    let operator = uid.to_owned();
    output.late.fail_if_any(move |row| {
        let side = if matches!(row, Either::Left(_)) { "left" } else { "right" };
        format!(
            "join {operator}: a {side} row arrived behind the watermark, so it cannot be joined in event-time order \
             and the answer would miss its pairs; give its table's WATERMARK a longer delay"
        )
    });
    output.results
}

/// The interval join of two pipelines' rows: a right row joins a left row of its key iff its
/// time minus the left's is in `[lower, upper]` ms (see the module's docs).
pub fn interval_join<'s>(
    left: DataStream<'s, Row>,
    right: DataStream<'s, Row>,
    left_keys: Vec<Scalar>,
    right_keys: Vec<Scalar>,
    lower: i64,
    upper: i64,
    uid: &str,
) -> DataStream<'s, Row> {
    let output =
        keyed(left, left_keys).interval_join(keyed(right, right_keys)).between(lower, upper).process(uid, concat);
    let operator = uid.to_owned();
    output.late.fail_if_any(move |row| {
        let side = if matches!(row, Either::Left(_)) { "left" } else { "right" };
        format!(
            "interval join {operator}: a {side} row arrived behind the watermark, so its partners may be gone and \
             the answer would miss its pairs; give its table's WATERMARK a longer delay"
        )
    });
    output.results
}

/// Every row of both sides so far, per key.
struct RegularJoin {
    left: ListState<Row>,
    right: ListState<Row>,
}

impl Default for RegularJoin {
    fn default() -> Self {
        RegularJoin { left: ListState::new("join-left"), right: ListState::new("join-right") }
    }
}

impl KeyedCoProcessFunction<GroupKey, Row, Row, Row> for RegularJoin {
    fn process_element1(&mut self, row: Row, ctx: &mut Context<'_, GroupKey, Row>) {
        for partner in self.right.get(ctx.state()) {
            ctx.collect(concat(&row, &partner));
        }
        self.left.add(ctx.state(), row);
    }

    fn process_element2(&mut self, row: Row, ctx: &mut Context<'_, GroupKey, Row>) {
        for partner in self.left.get(ctx.state()) {
            ctx.collect(concat(&partner, &row));
        }
        self.right.add(ctx.state(), row);
    }
}

/// One side of an updating join.
pub struct JoinSide<'s> {
    /// Its rows.
    pub rows: Side<'s>,
    /// Its join keys, over its rows.
    pub keys: Vec<Scalar>,
    /// Whether its rows are kept without a partner (`LEFT` for the left side, …).
    pub outer: bool,
    /// How many columns its rows have.
    pub width: usize,
}

/// A side's rows: append-only, or an updating result.
pub enum Side<'s> {
    /// Append-only rows.
    Append(DataStream<'s, Row>),
    /// An updating result.
    Updating(UpdatingStream<'s, GroupKey, SortedRow>),
}

/// A tagged row without its tag.
fn untagged(row: &SortedRow) -> &[Value] {
    &row.0[..row.0.len() - 1]
}

/// Which side a row of the tagged union is from: its last column.
const LEFT: i64 = 0;
const RIGHT: i64 = 1;

/// An outer join, or a join of an updating result (see the module's docs): the joined rows,
/// keyed by the join key. `condition` is the rest of an outer join's `ON`, over the joined row;
/// `left_uid` and `right_uid` name the state of the sides that enter differential here.
pub fn updating_join<'s>(
    left: JoinSide<'s>,
    right: JoinSide<'s>,
    condition: Vec<Scalar>,
    left_uid: &str,
    right_uid: &str,
) -> UpdatingStream<'s, GroupKey, SortedRow> {
    let (left_outer, right_outer, left_width, right_width) = (left.outer, right.outer, left.width, right.width);
    let tagged = |side: JoinSide<'s>, tag: i64, uid: &str| -> UpdatingStream<'s, GroupKey, SortedRow> {
        let keys = Arc::new(side.keys);
        let key = move |row: &SortedRow| GroupKey::new(keys.iter().map(|key| key.eval(&row.0)));
        let tag = move |mut row: Row| {
            row.push(Value::Int(tag));
            SortedRow(row)
        };
        match side.rows {
            Side::Append(rows) => rows.map(tag).key_by(key).updating(uid),
            Side::Updating(rows) => rows.map_rows(move |row| Some(tag(row.0))).key_by(move |_, row| key(row)),
        }
    };
    let (left, right) = (tagged(left, LEFT, left_uid), tagged(right, RIGHT, right_uid));
    left.concat(right).reduce("Join", move |key, rows, out| {
        let is = |tag: i64| move |(row, _): &&(&SortedRow, isize)| row.0.last() == Some(&Value::Int(tag));
        let lefts: Vec<&(&SortedRow, isize)> = rows.iter().filter(is(LEFT)).collect();
        let rights: Vec<&(&SortedRow, isize)> = rows.iter().filter(is(RIGHT)).collect();
        let mut right_matched = vec![false; rights.len()];
        // SQL's `=` is never true for a NULL or NaN key: such rows have no partner, and the
        // pairs are not even looked for.
        let joinable = !key.has_never_equal();
        for (l, l_times) in &lefts {
            let mut matched = false;
            if joinable {
                for (index, (r, r_times)) in rights.iter().enumerate() {
                    let mut joined = untagged(l).to_vec();
                    joined.extend_from_slice(untagged(r));
                    if condition.iter().all(|c| c.holds(&joined)) {
                        out.push((SortedRow(joined), l_times * r_times));
                        matched = true;
                        right_matched[index] = true;
                    }
                }
            }
            if !matched && left_outer {
                let mut joined = untagged(l).to_vec();
                joined.extend(std::iter::repeat_n(Value::Null, right_width));
                out.push((SortedRow(joined), *l_times));
            }
        }
        if right_outer {
            for ((r, r_times), matched) in rights.iter().zip(right_matched) {
                if !matched {
                    let mut joined = vec![Value::Null; left_width];
                    joined.extend_from_slice(untagged(r));
                    out.push((SortedRow(joined), *r_times));
                }
            }
        }
    })
}
