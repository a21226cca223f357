//! Joins of two pipelines' rows, keyed by the values of their join keys.
//!
//! Both run on the DataStream API with [`GroupKey`]s as keys, and a key holding `NULL` or `NaN`
//! joins nothing (SQL's `=` is never true for them). Their inputs are append-only, and so are
//! their results: an inner join of rows that are never retracted only ever adds pairs.
//!
//! - A **window join** meets the rows of two window aggregations window by window: every result
//!   row of a window carries the window's last millisecond as its event time, so the rows that
//!   join share their time, and a one-millisecond window of the DataStream API's window join
//!   holds exactly them. Its pairs come out when the watermark passes the window, as Flink's.
//! - A **regular join** keeps every row of both sides, per key, and pairs each arriving row
//!   with the other side's rows so far (Flink's regular join, without state TTL yet). A keyed
//!   co-process function hands rows over in event-time order, so the pairs — and the event time
//!   each carries, the later row's — are the same in every run. A row that arrives behind the
//!   watermark cannot be put in that order; it would be missing from the answer, so it stops
//!   the job with an error that says so instead.

use std::sync::Arc;

use weir_dataflow::keyed::KeySelector;
use weir_dataflow::process::Context;
use weir_dataflow::window::TumblingEventTimeWindows;
use weir_dataflow::{DataStream, Either, KeyedCoProcessFunction, ListState};

use crate::aggregate::GroupKey;
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
    let never_equal = |value: &Value| matches!(value, Value::Null) || matches!(value, Value::Double(x) if x.is_nan());
    rows.filter(move |row| !joinable.iter().any(|key| never_equal(&key.eval(row)))).key_by(JoinKey(keys))
}

/// A joined row: the left row's columns, then the right row's.
fn concat(left: &Row, right: &Row) -> Row {
    let mut row = Vec::with_capacity(left.len() + right.len());
    row.extend(left.iter().cloned());
    row.extend(right.iter().cloned());
    row
}

/// The window join of two window aggregations' rows (see the module's docs).
pub fn window_join<'s>(
    left: DataStream<'s, Row>,
    right: DataStream<'s, Row>,
    left_keys: Vec<Scalar>,
    right_keys: Vec<Scalar>,
    uid: &str,
) -> DataStream<'s, Row> {
    let output = keyed(left, left_keys)
        .window_join(keyed(right, right_keys), TumblingEventTimeWindows::of(1))
        .apply(uid, concat);
    // A window's result rows are emitted before event time passes them: none is ever late here.
    let operator = uid.to_owned();
    output
        .late
        .fail_if_any(move |_| format!("window join {operator}: a window's result arrived after its window closed"));
    output.results
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
