//! Harness for tests that run tollgate's XDP program in the real kernel.
//!
//! Everything a test creates (network namespaces, veth pairs, bpffs pin
//! directories, processes) is named `tg-<unique id>` and removed when its guard
//! drops, which also happens while a failing test unwinds.

pub mod cgroup;
pub mod crowdsec;
pub mod daemon;
pub mod ddos;
pub mod flood;
pub mod fuzz;
pub mod generator;
pub mod http_load;
pub mod httpd;
pub mod net;
pub mod packet;
pub mod probes;
pub mod program;
pub mod prometheus;
pub mod rawbpf;
pub mod redis;
pub mod soak;
pub mod traffic;

use std::sync::atomic::{AtomicU32, Ordering};

pub use probes::PROBES_OBJECT;

/// Whether privileged tests must run (CI, where a skip is a failure).
pub fn privileged_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("TOLLGATE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Returns true when the test may use BPF and netlink. Without root it prints a
/// loud skip notice and returns false; under CI it panics instead.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if privileged_required() {
        panic!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN), and CI=true forbids skipping");
    }
    eprintln!("\n!!!! SKIPPED {test}: needs root (CAP_BPF, CAP_NET_ADMIN) !!!!\n");
    false
}

/// A short id unique within this machine for the life of the test run:
/// interface names are limited to 15 bytes, so `tg-h` + 8 hex digits.
pub fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("{:05x}{:03x}", pid & 0xfffff, n & 0xfff)
}
