//! Weir's benchmarks: the end-to-end harness and the hand-written timely baseline.
//!
//! [`baseline`] is the ceiling the main job is measured against: the same windowed
//! aggregation written directly against timely in one worker, with no checkpoints, no
//! exchange, no sinks. [`e2e`] runs the real job on the embedded cluster and measures events
//! per second and per CPU-second. The criterion suites in `benches/` time the hot paths.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod e2e;
