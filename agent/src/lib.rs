//! tollgate's userspace: loading and driving the XDP program, the daemon and the CLI.

pub mod apikeys;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod monitor;
pub mod samples;
pub mod state;
pub mod talkers;
pub mod units;

/// The compiled XDP object, embedded at build time by build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate-xdp"));
