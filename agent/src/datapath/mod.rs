//! Everything that touches bpf(2) and bpffs: the embedded XDP object, typed
//! maps, loading/adopting and pinning the program, the guard that repairs
//! pins and links, the bounded walk of the source maps, and the decoding of
//! the kernel's sample records. Nothing here knows the configuration file or
//! the daemon.

mod bpf_obj;
pub mod caps;
pub mod dataplane;
pub mod guard;
pub mod kernel;
pub mod route_table;
pub mod routes;
pub mod samples;
pub mod scan;
pub mod tracked;
pub mod walk;

/// The compiled XDP object, embedded at build time by build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate-xdp"));
