//! The atomic operations the limiter needs (load, compare-and-swap, add) on
//! 64-bit words.
//!
//! Rust's `bpfel-unknown-none` target declares no compare-and-swap
//! (`atomic-cas: false`), although the kernel has `BPF_CMPXCHG` and `BPF_ADD`.
//! On BPF we call the compiler intrinsics directly, which LLVM lowers to those
//! instructions; on the host we use `core::sync::atomic`. Only 64-bit forms:
//! LLVM emits 32-bit atomics only for `-mcpu=v3`, and rustc passes bpf-linker
//! `--cpu generic` (aya-build owns the rustflags), so 32-bit state is packed
//! into 64-bit words instead.

#[cfg(target_arch = "bpf")]
mod imp {
    use core::intrinsics::{AtomicOrdering::Relaxed, atomic_cxchg, atomic_xadd};

    #[inline(always)]
    pub unsafe fn cas_u64(p: *mut u64, old: u64, new: u64) -> Result<u64, u64> {
        let (seen, ok) = unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(p, old, new) };
        if ok { Ok(seen) } else { Err(seen) }
    }

    #[inline(always)]
    pub unsafe fn add_u64(p: *mut u64, v: u64) {
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(p, v) };
    }

    #[inline(always)]
    pub unsafe fn load_u64(p: *mut u64) -> u64 {
        unsafe { core::ptr::read_volatile(p) }
    }
}

#[cfg(not(target_arch = "bpf"))]
mod imp {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    #[inline(always)]
    pub unsafe fn cas_u64(p: *mut u64, old: u64, new: u64) -> Result<u64, u64> {
        unsafe { AtomicU64::from_ptr(p) }.compare_exchange(old, new, Relaxed, Relaxed)
    }

    #[inline(always)]
    pub unsafe fn add_u64(p: *mut u64, v: u64) {
        unsafe { AtomicU64::from_ptr(p) }.fetch_add(v, Relaxed);
    }

    #[inline(always)]
    pub unsafe fn load_u64(p: *mut u64) -> u64 {
        unsafe { AtomicU64::from_ptr(p) }.load(Relaxed)
    }
}

// SAFETY (all): `p` must be valid and naturally aligned for the call, and every
// concurrent writer must use these functions too.
pub(crate) use imp::*;
