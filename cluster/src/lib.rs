//! Weir's cluster: the slot driver, the checkpoint coordinator and the `weir` command line.
//!
//! `weir run` is the embedded cluster: the coordinator and all slots in one process, with
//! in-process exchange channels and checkpoints in a local directory. Each slot is a
//! single-threaded timely worker stepped by [`slot::drive_slot`]; the coordinator
//! ([`coordinator`]) triggers checkpoints, collects the entries of the state files the slots
//! upload themselves, writes `_metadata` last and then tells the sinks to commit.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod client;
pub mod connection;
pub mod coordinator;
pub mod deploy;
pub mod jobs;
pub mod net;
pub mod protocol;
pub mod run;
pub mod server;
#[cfg(not(madsim))]
pub mod shell;
pub mod slot;
pub mod state_files;
pub mod tls;
pub mod transport;
pub mod wire;
pub mod worker;
