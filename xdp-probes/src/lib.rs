#![no_std]
// The probes themselves are the `tollgate-probes` binary (src/main.rs); this
// library lets the host type-check the crate and shares the names the tests
// crate needs with the programs.

/// The map `probe_source_lookup` looks its key up in: the same type as the
/// production `TG_SOURCES_V4` (`u32` -> `SourceState`, LRU hash).
pub const PROBE_SOURCES_V4: &str = "PROBE_SOURCES_V4";

/// The key `probe_source_lookup` looks up (100.64.1.1 as read from a packet).
pub const PROBE_SOURCE: u32 = u32::from_ne_bytes([100, 64, 1, 1]);

/// Every program in the object.
pub const PROGRAMS: [&str; 9] = [
    FLOOR_PASS,
    FLOOR_DROP,
    PROBE_CLOCK,
    PROBE_COARSE_CLOCK,
    PROBE_JIFFIES,
    PROBE_SOURCE_LOOKUP,
    PROBE_CALL,
    PROBE_LOOP_1,
    PROBE_LOOP_8,
];

/// A bare `XDP_PASS`: the floor `cargo xtask bench micro` divides by.
pub const FLOOR_PASS: &str = "floor_pass";
/// A bare `XDP_DROP`: the floor of `cargo xtask bench flood`.
pub const FLOOR_DROP: &str = "floor_drop";
/// One `bpf_ktime_get_ns` call.
pub const PROBE_CLOCK: &str = "probe_clock";
/// One `bpf_ktime_get_coarse_ns` call.
pub const PROBE_COARSE_CLOCK: &str = "probe_coarse_clock";
/// One `bpf_jiffies64` call.
pub const PROBE_JIFFIES: &str = "probe_jiffies";
/// One lookup of `PROBE_SOURCE` in `PROBE_SOURCES_V4`.
pub const PROBE_SOURCE_LOOKUP: &str = "probe_source_lookup";
/// One call of a global function (a BPF-to-BPF call and its return).
pub const PROBE_CALL: &str = "probe_call";
/// One `bpf_loop` of one empty iteration.
pub const PROBE_LOOP_1: &str = "probe_loop_1";
/// One `bpf_loop` of eight empty iterations.
pub const PROBE_LOOP_8: &str = "probe_loop_8";
