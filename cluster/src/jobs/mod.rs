//! The jobs the `weir` binary ships, registered like any user's jobs: `bids`, the Nexmark
//! queries on the DataStream API, and `sql` (a Flink SQL script as its parameter).

pub mod bids;
pub mod nexmark;

use weir_dataflow::JobRegistry;

/// A registry with the built-in jobs.
pub fn builtin() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register(bids::job());
    for job in nexmark::jobs() {
        registry.register(job);
    }
    registry.register(weir_sql::job());
    registry
}
