//! Weir's judges: the sequential reference and the exactly-once oracle.
//!
//! The fault model, swarm generation and shrinking will live here too (they are the
//! simulator's inputs); this crate must never depend on the simulator itself.
//!
//! [`reference`] computes the main job's result the obvious way: one thread, split after
//! split, record after record, every window emitted at the end. It is written independently
//! of the engine's code paths (its own CSV parsing, watermark and window arithmetic) so that
//! an error in the engine's shared helpers cannot hide in both sides of a comparison.
//! [`oracle`] reads what a run committed and compares it with the reference as multisets.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod faults;
pub mod oracle;
pub mod reference;
