//! The Nexmark jobs against their sequential references, at parallelism 1, 2 and 4.
//!
//! Method: each query runs on the embedded cluster over the same generated events (the
//! generator's events are a function of the index, and the splits together generate every
//! index once, so the input is the same at every parallelism); its committed output is read
//! back and compared, as a sorted multiset of typed rows, with `weir_chaos::nexmark`'s answer.
#![allow(clippy::disallowed_methods)] // tests inspect real directories with std::fs

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use weir_chaos::nexmark;
use weir_cluster::run::{run_job, RunOptions};
use weir_core::job::BadRecordPolicy;
use weir_core::nexmark::{Bid, NexmarkConfig};

const EVENTS: u64 = 60_000;

fn run(query: &str, output: &Path, parallelism: usize) {
    let registry = weir_cluster::jobs::builtin();
    let given = [("output", output.display().to_string()), ("events", EVENTS.to_string()), ("seed", "5".to_string())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let spec =
        registry.get(&format!("nexmark-{query}")).unwrap().spec(&given, parallelism, BadRecordPolicy::Skip).unwrap();
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(5));
    options.rate_limit = Some(1_000_000);
    run_job(&registry, options).unwrap_or_else(|e| panic!("{query} at parallelism {parallelism}: {e}"));
}

fn committed<T: DeserializeOwned + Ord>(dir: &Path) -> Vec<T> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(['.', '_']) || path.is_dir() {
            continue;
        }
        rows.extend(csv::Reader::from_path(&path).unwrap().deserialize::<T>().map(Result::unwrap));
    }
    rows.sort();
    rows
}

#[test]
fn nexmark_queries_equal_their_references_at_every_parallelism() {
    let events = nexmark::events(&NexmarkConfig::new(EVENTS, 5));
    let references = (
        nexmark::q0(&events),
        nexmark::q1(&events),
        nexmark::q2(&events),
        nexmark::q3(&events),
        nexmark::q4(&events),
        nexmark::q5(&events, 10_000, 2_000),
        nexmark::q7(&events, 10_000),
        nexmark::q8(&events, 10_000),
    );
    assert!(
        !references.2.is_empty() && !references.3.is_empty() && !references.4.is_empty() && !references.7.is_empty(),
        "every query has rows"
    );
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let out = |query: &str| root.path().join(query);
        for query in ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"] {
            run(query, &out(query), parallelism);
        }
        let at = format!("parallelism {parallelism}");
        assert_eq!(committed::<Bid>(&out("q0").join("bids")), references.0, "q0, {at}");
        assert_eq!(committed::<Bid>(&out("q1").join("bids")), references.1, "q1, {at}");
        assert_eq!(committed::<(i64, i64)>(&out("q2").join("bids")), references.2, "q2, {at}");
        assert_eq!(committed::<(String, String, String, i64)>(&out("q3").join("sellers")), references.3, "q3, {at}");
        assert_eq!(committed::<(i64, i64, i64)>(&out("q4").join("averages")), references.4, "q4, {at}");
        assert_eq!(committed::<(i64, u64, i64)>(&out("q5").join("hot")), references.5, "q5, {at}");
        assert_eq!(committed::<(i64, i64, i64, i64, i64)>(&out("q7").join("highest")), references.6, "q7, {at}");
        assert_eq!(committed::<(i64, String, i64)>(&out("q8").join("new-sellers")), references.7, "q8, {at}");
    }
}
