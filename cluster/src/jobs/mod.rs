//! The jobs the `weir` binary ships, registered like any user's jobs.

pub mod bids;

use weir_dataflow::JobRegistry;

/// A registry with the built-in jobs.
pub fn builtin() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register(bids::job());
    registry
}
