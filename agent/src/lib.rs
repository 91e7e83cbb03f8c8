//! tollgate's userspace: loading and driving the XDP program, the daemon and the CLI.
//!
//! Modules are public only where the binary, the tests or the benchmarks use
//! them; see ARCHITECTURE.md for the layers.
#![warn(unreachable_pub)]

pub mod adaptive;
pub mod apikeys;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod crowdsec;
pub mod daemon;
pub mod datapath;
pub mod droplog;
mod http;
mod metrics;
pub mod monitor;
pub mod openapi;
pub mod overrides;
pub mod proto;
pub mod response;
pub mod spec;
pub mod state;
mod talkers;
mod units;
