//! Types and arithmetic shared by tollgate's XDP program (`no_std`, BPF target) and
//! its userspace daemon. Everything that decides a verdict lives here, so the
//! bucket maths and the header walk are unit- and property-tested on the host and
//! then compiled unchanged into the kernel program.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod atomic;

pub mod gcra;
pub mod http;
pub mod limiter;
pub mod maps;
/// Userspace reference model of the policy (feature `model`).
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod parse;
pub mod route;
pub mod route_table;
pub mod tracked;

pub use maps::*;
