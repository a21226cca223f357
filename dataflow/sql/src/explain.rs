//! `EXPLAIN`: the operator graph a statement runs as, from the sink down to the tables, as Flink
//! prints a plan — each operator with what it does and whether the rows it passes on are
//! append-only or updating (Flink's changelog mode, on every edge).
//!
//! It is rendered from the plan that [`crate::build`] wires, operator for operator, not from a
//! second description of the query, so it shows what runs. Columns are `$n`, counted in the
//! operator's input row.

use std::fmt::Write;

use sqlparser::tokenizer::Location;

use crate::aggregate::{AggregateCall, AggregateKind, SqlAggregates, WindowSpec};
use crate::connector::{SinkConnector, SourceConnector};
use crate::plan::{Input, Insert, JoinKind, Pipeline, Stage, Step};

/// The plan of an `INSERT`: its sink over its pipeline.
pub fn explain_insert(insert: &Insert, at: Location) -> String {
    let mut root = pipeline(&insert.pipeline);
    if root.updating {
        let by = match (insert.pipeline.changelog_from_fold(), insert.state_ttl) {
            (true, None) => " (written by the fold below, which keeps only its accumulators)".to_owned(),
            (true, Some(ttl)) => format!(
                " (written by the fold below, which keeps only its accumulators, each for {} of event time after \
                 its group's last row)",
                duration(ttl)
            ),
            (false, _) => String::new(),
        };
        root = Node::new(
            format!("Changelog{by}: each key's changes as -U/+U, +I, -D, per event time once the watermark passes it"),
            true,
            vec![root],
        );
    }
    let sink = match &insert.sink {
        SinkConnector::Blackhole => "blackhole".to_owned(),
        SinkConnector::Print => "print".to_owned(),
        SinkConnector::Filesystem { path, format, .. } => format!("filesystem '{path}', {}", format.name()),
    };
    let root = Node::new(format!("Sink: table {} ({sink})", insert.sink_table), root.updating, vec![root]);
    render(&format!("EXPLAIN INSERT INTO {} (line {})", insert.sink_table, at.line), &root)
}

/// The plan of a query (`EXPLAIN SELECT …`).
pub fn explain_query(query: &Pipeline, at: Location) -> String {
    render(&format!("EXPLAIN SELECT (line {})", at.line), &pipeline(query))
}

/// An operator: what it does, whether its output updates, and its inputs.
struct Node {
    text: String,
    updating: bool,
    inputs: Vec<Node>,
}

impl Node {
    fn new(text: String, updating: bool, inputs: Vec<Node>) -> Node {
        Node { text, updating, inputs }
    }
}

fn render(title: &str, root: &Node) -> String {
    fn walk(node: &Node, depth: usize, out: &mut String) {
        let mode = if node.updating { "updating" } else { "append-only" };
        writeln!(out, "{}{}  [{mode}]", "  ".repeat(depth), node.text).expect("a string takes writes");
        node.inputs.iter().for_each(|input| walk(input, depth + 1, out));
    }
    let mut out = format!("== {title} ==\n");
    walk(root, 0, &mut out);
    out
}

/// A pipeline's operators: its input, then its stages, each over the one before.
fn pipeline(planned: &Pipeline) -> Node {
    let mut node = match &planned.input {
        Input::Table(scan) => {
            let source = match &scan.source {
                SourceConnector::Nexmark { .. } => "nexmark".to_owned(),
                SourceConnector::Datagen(config) => format!("datagen, {} rows", config.rows),
                SourceConnector::Files { path, format, .. } => format!("filesystem '{path}', {}", format.name()),
            };
            let watermark = match scan.event_time {
                Some((column, delay)) => format!(", event time ${column}, watermark {} behind", duration(delay)),
                None => String::new(),
            };
            Node::new(format!("TableSourceScan: table {} ({source}){watermark}", scan.table), false, Vec::new())
        }
        Input::Join { kind, left, right, left_keys, right_keys, condition } => {
            let mut keys: Vec<String> =
                left_keys.iter().zip(right_keys).map(|(l, r)| format!("left {l} = right {r}")).collect();
            keys.extend(condition.iter().map(|c| format!("{c} (over the joined row)")));
            let (what, updating) = match kind {
                JoinKind::Regular => {
                    ("Join: every row of both sides kept, each arrival paired in event-time order".to_owned(), false)
                }
                JoinKind::Window { left_outer, right_outer, .. } => {
                    let kind = match (left_outer, right_outer) {
                        (true, true) => "FULL OUTER ",
                        (true, false) => "LEFT OUTER ",
                        (false, true) => "RIGHT OUTER ",
                        (false, false) => "",
                    };
                    let unmatched = if kind.is_empty() { "" } else { ", rows without a partner with NULLs" };
                    (format!("WindowJoin: {kind}window by window, when the window closes{unmatched}"), false)
                }
                JoinKind::Interval { lower, upper } => (
                    format!(
                        "IntervalJoin: a right row's time minus the left's in [{}, {}], each row kept only while a \
                         partner may come",
                        duration(*lower),
                        duration(*upper)
                    ),
                    false,
                ),
                JoinKind::Updating { left_outer, right_outer, .. } => {
                    let kind = match (left_outer, right_outer) {
                        (true, true) => "FULL OUTER",
                        (true, false) => "LEFT",
                        (false, true) => "RIGHT",
                        (false, false) => "INNER",
                    };
                    (format!("Join ({kind}, on differential dataflow: its pairs and partnerless rows update)"), true)
                }
            };
            let sides = vec![
                exchange(&list(left_keys.iter()), pipeline(left)),
                exchange(&list(right_keys.iter()), pipeline(right)),
            ];
            Node::new(format!("{what}, on {}", keys.join(" AND ")), updating, sides)
        }
    };
    for stage in &planned.stages {
        node = match stage {
            Stage::Map(steps) => {
                // In their order: fused steps are filters then one projection, but steps that
                // read PROCTIME() stay as written, and a filter after a projection reads its output.
                let mut parts: Vec<String> = Vec::new();
                let mut filters: Vec<String> = Vec::new();
                for step in steps {
                    match step {
                        Step::Filter(predicate) => filters.push(predicate.to_string()),
                        Step::Project(exprs) => {
                            if !filters.is_empty() {
                                parts.push(format!("WHERE {}", std::mem::take(&mut filters).join(" AND ")));
                            }
                            parts.push(format!("SELECT {}", list(exprs.iter())));
                        }
                    }
                }
                if !filters.is_empty() {
                    parts.push(format!("WHERE {}", filters.join(" AND ")));
                }
                let updating = node.updating;
                Node::new(format!("Calc: {}", parts.join("; ")), updating, vec![node])
            }
            Stage::WindowAggregate { window, keys, aggregates } => {
                let text = format!(
                    "WindowAggregate: {} of event time, GROUP BY {}: {}",
                    window_text(window),
                    columns(*keys),
                    calls(aggregates)
                );
                Node::new(text, false, vec![exchange(&columns(*keys), node)])
            }
            Stage::ProcessingTimeAggregate { size, keys, aggregates } => {
                let text = format!(
                    "WindowAggregate: TUMBLE({}) of processing time, GROUP BY {}: {}",
                    duration(*size),
                    columns(*keys),
                    calls(aggregates)
                );
                Node::new(text, false, vec![exchange(&columns(*keys), node)])
            }
            Stage::Aggregate { keys, aggregates } => {
                let how = how(node.updating);
                let text = format!("GroupAggregate ({how}): GROUP BY {}: {}", columns(*keys), calls(aggregates));
                Node::new(text, true, vec![exchange(&columns(*keys), node)])
            }
            Stage::TopN(top) => {
                let partition = (top.width..top.width + top.partition).map(|c| format!("${c}"));
                let order: Vec<String> = top
                    .order
                    .iter()
                    .enumerate()
                    .map(|(i, key)| {
                        let direction = if key.descending { "DESC" } else { "ASC" };
                        let nulls = if key.nulls_first { "FIRST" } else { "LAST" };
                        format!("${} {direction} NULLS {nulls}", top.width + top.partition + i)
                    })
                    .collect();
                let partition = list(partition);
                let text = format!(
                    "Rank ({}): ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {}) <= {}, as column ${}, of \
                     columns $0..${}",
                    how(node.updating),
                    order.join(", "),
                    top.limit,
                    top.rank,
                    top.width - 1
                );
                Node::new(text, true, vec![exchange(&partition, node)])
            }
        };
    }
    node
}

/// How an updating operator runs over input that is append-only or not.
fn how(updating_input: bool) -> &'static str {
    if updating_input {
        "on differential dataflow: its input's retractions are exact"
    } else {
        "a fold over append-only input: one accumulator per key"
    }
}

/// The repartitioning in front of a keyed operator.
fn exchange(keys: &str, input: Node) -> Node {
    let updating = input.updating;
    Node::new(format!("Exchange: hash by {keys}"), updating, vec![input])
}

fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|item| item.to_string()).collect::<Vec<_>>().join(", ")
}

/// `$0, …, $(n-1)`.
fn columns(n: usize) -> String {
    if n == 0 {
        "()".into()
    } else {
        list((0..n).map(|c| format!("${c}")))
    }
}

fn calls(aggregates: &SqlAggregates) -> String {
    list(aggregates.calls.iter().map(call))
}

fn call(call: &AggregateCall) -> String {
    let argument = call.argument.map(|c| format!("${c}")).unwrap_or_default();
    let text = match call.kind {
        AggregateKind::CountRows => "COUNT(*)".to_owned(),
        AggregateKind::Count => format!("COUNT({argument})"),
        AggregateKind::CountDistinct => format!("COUNT(DISTINCT {argument})"),
        AggregateKind::SumInteger(_) | AggregateKind::SumDecimal => format!("SUM({argument})"),
        AggregateKind::Min => format!("MIN({argument})"),
        AggregateKind::Max => format!("MAX({argument})"),
        AggregateKind::AvgInteger(_) => format!("AVG({argument})"),
    };
    match call.filter {
        Some(filter) => format!("{text} FILTER (WHERE ${filter})"),
        None => text,
    }
}

fn window_text(window: &WindowSpec) -> String {
    let durations: Vec<String> = window.durations().into_iter().map(duration).collect();
    format!("{}({})", window.function(), durations.join(", "))
}

/// Milliseconds as the largest whole unit: `10 s`, `2 min`, `500 ms`.
fn duration(ms: i64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000)] {
        if ms != 0 && ms % size == 0 {
            return format!("{} {unit}", ms / size);
        }
    }
    format!("{ms} ms")
}
