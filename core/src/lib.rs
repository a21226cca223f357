//! Weir's core: the vocabulary every other crate speaks.
//!
//! This crate holds what is shared by the dataflow operators, the cluster and the simulator:
//! the time model ([`time`]: epochs × event time as one timely timestamp), records and their
//! codecs ([`bid`], [`codec`], the Nexmark events and generator in [`nexmark`]), the rules of event time ([`watermark`], [`window`]), key groups
//! ([`keygroup`]), the job specification ([`job`]), checkpoint storage over `object_store`
//! ([`checkpoint`], [`local_store`]; savepoints in [`savepoint`]), the runtime seam ([`rt`]), the storage seam for files
//! ([`fs`]) and the simulator's fault points ([`faultpoint`]). It never touches sockets or spawns threads:
//! everything here is deterministic given its inputs, which is what lets the simulator and
//! the sequential reference reuse it unchanged.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bid;
pub mod checkpoint;
pub mod codec;
pub mod faultpoint;
pub mod fs;
pub mod generator;
pub mod job;
pub mod keygroup;
pub mod local_store;
pub mod nexmark;
pub mod rt;
pub mod savepoint;
pub mod time;
pub mod watermark;
pub mod window;

pub use bid::Bid;
pub use time::{EventTime, Time};
