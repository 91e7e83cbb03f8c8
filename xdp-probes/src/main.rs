//! Benchmark and test probes, in their own object so the production object
//! (xdp-ebpf) holds only the `tollgate` program and its maps: two reference
//! programs (a bare XDP_PASS and a bare XDP_DROP, the floors the benchmarks
//! divide by) and single-operation probes that price one kernel call each.
//! tests/build.rs builds this crate; the tests crate embeds the object as
//! `tollgate_tests::probes::PROBES_OBJECT`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("tollgate-probes is built for bpfel-unknown-none by the tests crate's build script");
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The eBPF object's license, checked by the kernel for GPL-only helpers.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
