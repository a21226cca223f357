//! Weir's benchmarks: the end-to-end harness and the hand-written timely baseline.
//!
//! [`baseline`] is the ceiling the main job is measured against: the same windowed
//! aggregation written directly against timely in one worker, with no checkpoints, no
//! exchange, no sinks. [`e2e`] runs the real job on the embedded cluster and measures events
//! per second and per CPU-second. [`nexmark`] runs the Nexmark queries in SQL on Weir and on
//! Flink over the same files. [`larger_than_memory`] runs a job whose keyed state exceeds
//! a memory cgroup's limit on RocksDB, through a `kill -9`. The criterion suites in `benches/` time the hot paths.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod e2e;
pub mod larger_than_memory;
pub mod nexmark;

/// The median of `values`, the lower of the middle two for an even count (so the faster of two
/// runs); `NaN` if there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or(f64::NAN)
}
