use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, generated::bpf_loop},
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

/// A global function (verified on its own, called with a BPF-to-BPF call):
/// what `probe_call` calls. It returns its argument.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn probe_global(x: u32) -> u32 {
    // SAFETY: reads its own argument; volatile so LLVM keeps the call.
    unsafe { core::ptr::read_volatile(&x) }
}

/// Benchmark probe: one call of a global function, to price a BPF-to-BPF
/// call and its return (tollgate's route pass makes a few).
#[xdp]
pub fn probe_call(_ctx: XdpContext) -> u32 {
    probe_global(xdp_action::XDP_PASS)
}

/// The `bpf_loop` callback of the loop probes: nothing but a return.
extern "C" fn probe_step(_index: u64, _data: *mut core::ffi::c_void) -> i64 {
    0
}

/// One `bpf_loop` of `n` empty iterations.
#[inline(always)]
fn empty_loop(n: u32) -> u32 {
    // SAFETY: the callback takes no context.
    let done = unsafe {
        bpf_loop(
            n,
            probe_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    if done == n as i64 {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Benchmark probe: a `bpf_loop` of one empty iteration (the helper call
/// and one callback: tollgate's head scan and route pass are such loops).
#[xdp]
pub fn probe_loop_1(_ctx: XdpContext) -> u32 {
    empty_loop(1)
}

/// Benchmark probe: a `bpf_loop` of eight empty iterations (with
/// `probe_loop_1`, the price of one more callback).
#[xdp]
pub fn probe_loop_8(_ctx: XdpContext) -> u32 {
    empty_loop(8)
}
