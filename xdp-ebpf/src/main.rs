//! tollgate's XDP program: per-source GCRA rate limiting at the driver.
//!
//! Per packet: walk the headers (common::parse), find the source's rule in the
//! LPM tries (allow, deny, or a tier), charge the source's buckets in the LRU
//! map with compare-and-swap (common::limiter), charge the tier's aggregate
//! ceiling, count the verdict per CPU, and return XDP_PASS or XDP_DROP. Nothing
//! returns XDP_ABORTED: every input has a defined verdict.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("tollgate-ebpf is built for bpfel-unknown-none by the agent's build script");
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
