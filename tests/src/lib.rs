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

/// One tick in seconds (`clock_getres` of `CLOCK_MONOTONIC_COARSE`: 1/HZ).
/// tollgate times a tier's new-source budget and untracked ceiling by the
/// tick count (`bpf_jiffies64() × tick`), which advances once a tick, so a
/// ceiling of `rate` admits at most `rate × (t + tick) + burst` in any span
/// `t`.
pub fn tick_secs() -> f64 {
    tick_ns() as f64 * 1e-9
}

/// The untracked clock now, in nanoseconds: what the program reads for the
/// new-source budget and the untracked ceiling (`jiffies × tick`; jiffies
/// from `/proc/timer_list`, which needs root, as every test reading it does).
pub fn untracked_clock_ns() -> u64 {
    let list = std::fs::read_to_string("/proc/timer_list").expect("reading /proc/timer_list");
    let jiffies: u64 = list
        .lines()
        .find_map(|l| l.strip_prefix("jiffies:"))
        .expect("/proc/timer_list has a jiffies line")
        .trim()
        .parse()
        .expect("jiffies is a number");
    jiffies * tick_ns()
}

/// One tick in nanoseconds: `clock_getres` of `CLOCK_MONOTONIC_COARSE`, read
/// here rather than through the daemon's `kernel::jiffy_ns` on purpose: the
/// bounds and the fuzzer's base must not inherit a wrong tick the daemon
/// wrote.
fn tick_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC_COARSE exists on Linux.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC_COARSE");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
