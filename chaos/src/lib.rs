//! Weir's chaos kit: everything the simulator needs to judge a run, none of it simulated.
//!
//! - [`faults`]: the fault catalogue, swarm plans drawn from a seed, and the fault atlas (what
//!   Weir promises under each kind of fault).
//! - [`storage`]: a fault-injecting `object_store` wrapper, the checkpoint store's seam.
//! - [`input`]: CSV input files with disorder, late, malformed and blank lines.
//! - [`shrink`]: reduces a failing plan to a minimal one.
//! - [`reference`]: the sequential reference implementation of the main job, written
//!   independently of the engine's code paths (its own CSV parsing, watermark and window
//!   arithmetic) so that an error in the engine's shared helpers cannot hide in both sides of
//!   a comparison.
//! - [`oracle`]: reads committed output and compares it with the reference as multisets.
//!
//! The simulator (`sim/`) runs the real cluster code under madsim with these; the crate itself
//! is plain Rust, unit-tested in the normal build.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod faults;
pub mod input;
pub mod nexmark;
pub mod oracle;
pub mod reference;
pub mod shrink;
pub mod storage;
