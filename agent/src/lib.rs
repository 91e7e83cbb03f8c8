//! tollgate's userspace: loading and driving the XDP program, the daemon and the CLI.

pub mod apikeys;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod http;
pub mod metrics;
pub mod monitor;
pub mod proto;
pub mod spec;
pub mod state;
pub mod talkers;
pub mod units;
