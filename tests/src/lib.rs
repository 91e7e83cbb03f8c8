//! Harness for tests that run tollgate's XDP program in the real kernel.
//!
//! Everything a test creates (network namespaces, veth pairs, bpffs pin
//! directories, processes) is named `tg-<unique id>` and removed when its guard
//! drops, which also happens while a failing test unwinds.

pub mod cgroup;
pub mod crowdsec;
pub mod daemon;
pub mod ddos;
pub mod ddos_pacing;
pub mod ddos_report;
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

/// The coarse clock's resolution in seconds (`clock_getres` of
/// `CLOCK_MONOTONIC_COARSE`: one tick, 1/HZ). tollgate times a tier's
/// new-source budget and untracked ceiling with `bpf_ktime_get_coarse_ns`,
/// which lags the precise clock by less than this, so a ceiling of `rate`
/// admits at most `rate × (t + tick) + burst` in any span `t`.
pub fn coarse_tick_secs() -> f64 {
    coarse_clock(libc::clock_getres) as f64 * 1e-9
}

/// `CLOCK_MONOTONIC_COARSE` now, in nanoseconds: what the kernel's
/// `bpf_ktime_get_coarse_ns` reads.
pub fn coarse_clock_ns() -> u64 {
    coarse_clock(libc::clock_gettime)
}

/// `clock_getres` or `clock_gettime` of `CLOCK_MONOTONIC_COARSE`, in ns.
fn coarse_clock(
    call: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int,
) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC_COARSE exists on Linux.
    let rc = unsafe { call(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC_COARSE");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
