//! Example jobs written on Weir's DataStream API, each with an independent sequential
//! reference ([`reference`]) that the tests and the simulator judge the engine by.
//!
//! - [`fraud`]: keyed state and event-time timers — a small transaction followed by a large
//!   one within a minute on the same account raises an alert.
//! - [`enrichment`]: two connected streams — clicks joined with each user's latest profile,
//!   kept in keyed state with a time to live.
//! - [`sessions`]: sessionized clicks — merging session windows per user.
//! - [`dedup`]: deduplication by id with a time to live — keyed state that outgrows memory.
//! - [`mix`]: sliding and cumulating windows, an interval join and a window join.

pub mod dedup;
pub mod enrichment;
pub mod fraud;
pub mod mix;
pub mod reference;
pub mod sessions;

/// Registers this crate's jobs.
pub fn register(registry: &mut weir_dataflow::JobRegistry) {
    registry.register(fraud::job());
    registry.register(enrichment::job());
    registry.register(sessions::job());
    registry.register(mix::job());
    registry.register(dedup::job());
}
