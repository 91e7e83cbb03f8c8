//! tollgate's userspace: loading and driving the XDP program, the daemon and the CLI.

pub mod apikeys;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod samples;
pub mod talkers;

/// The compiled XDP object, embedded at build time by build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate-xdp"));
