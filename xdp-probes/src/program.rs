use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::LruHashMap,
    programs::XdpContext,
};
use tollgate_common::SourceState;
use tollgate_probes::PROBE_SOURCE;

/// Default size; the benchmark sizes it like the production source map it
/// stands for (`EbpfLoader::map_max_entries`).
const DEFAULT_SOURCES: u32 = 4096;

/// The same key and value types and map type as the production
/// `TG_SOURCES_V4`, for `probe_source_lookup`; the host inserts `PROBE_SOURCE`.
#[map(name = "PROBE_SOURCES_V4")]
static PROBE_SOURCES_V4: LruHashMap<u32, SourceState> =
    LruHashMap::with_max_entries(DEFAULT_SOURCES, 0);

/// Reference program for benchmarks: the cheapest possible XDP_PASS, the floor
/// that `cargo xtask bench micro` divides by.
#[xdp]
pub fn floor_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Reference program for benchmarks: the cheapest possible XDP_DROP, the floor
/// of `cargo xtask bench flood`.
#[xdp]
pub fn floor_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Benchmark probe: one `bpf_ktime_get_ns` call, to price the clock read.
#[xdp]
pub fn probe_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: a BPF helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Benchmark probe: one `bpf_ktime_get_coarse_ns` call (CLOCK_MONOTONIC as
/// of the last tick: tollgate's clock for untracked sources).
#[xdp]
pub fn probe_coarse_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: a BPF helper with no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Benchmark probe: one `bpf_jiffies64` call (inlined by the verifier), the
/// cheap but 1/HZ-coarse clock tollgate does not use.
#[xdp]
pub fn probe_jiffies(_ctx: XdpContext) -> u32 {
    // SAFETY: a BPF helper with no preconditions.
    let now = unsafe { bpf_jiffies64() };
    if now == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Benchmark probe: one lookup of a key in an LRU hash map like the production
/// source map: XDP_PASS if `PROBE_SOURCE` is present, XDP_DROP if not.
#[xdp]
pub fn probe_source_lookup(_ctx: XdpContext) -> u32 {
    match PROBE_SOURCES_V4.get_ptr_mut(PROBE_SOURCE) {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}
