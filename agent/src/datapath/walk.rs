//! The one walk of the per-source maps: batched reads (BPF_MAP_LOOKUP_BATCH,
//! thousands of entries per syscall) on handles of its own, so a reader never
//! holds the daemon's lock while it walks up to millions of sources.

use std::{io, os::fd::OwnedFd, path::Path};

use tollgate_common::{SourceState, names};

use super::bpf_obj;

/// Entries copied per syscall.
const BATCH: usize = 4096;

/// Handles on the pinned `TG_SOURCES_V4` and `TG_SOURCES_V6` maps.
pub struct SourceWalk {
    v4: OwnedFd,
    v6: OwnedFd,
}

impl SourceWalk {
    /// Opens the source maps pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> io::Result<SourceWalk> {
        let open = |name: &str| {
            bpf_obj::get(&pin_dir.join(name)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("opening {}/{name}: {e}", pin_dir.display()),
                )
            })
        };
        Ok(SourceWalk {
            v4: open(names::SOURCES_V4)?,
            v6: open(names::SOURCES_V6)?,
        })
    }

    /// Calls `each` with every tracked IPv4 source (its key as the kernel
    /// reads it from the packet, network order) and its bucket state; returns
    /// how many there were.
    pub fn v4(&self, mut each: impl FnMut(u32, &SourceState)) -> io::Result<u64> {
        self.v4_batches(|keys, states| {
            for (k, s) in keys.iter().zip(states) {
                each(*k, s);
            }
        })
    }

    /// Like [`SourceWalk::v4`] for IPv6 source prefixes (`parse::ipv6_key`).
    pub fn v6(&self, mut each: impl FnMut(u64, &SourceState)) -> io::Result<u64> {
        self.v6_batches(|keys, states| {
            for (k, s) in keys.iter().zip(states) {
                each(*k, s);
            }
        })
    }

    /// Like [`SourceWalk::v4`], one batch at a time: `each` gets the keys and
    /// states one syscall copied (equally long), called right after that
    /// syscall returns, so a clock read first thing in `each` is no earlier
    /// than the kernel's read of any state in the batch.
    pub fn v4_batches(&self, each: impl FnMut(&[u32], &[SourceState])) -> io::Result<u64> {
        walk(&self.v4, each)
    }

    /// Like [`SourceWalk::v4_batches`] for IPv6 source prefixes.
    pub fn v6_batches(&self, each: impl FnMut(&[u64], &[SourceState])) -> io::Result<u64> {
        walk(&self.v6, each)
    }
}

fn walk<K: Copy + Default>(
    fd: &OwnedFd,
    mut each: impl FnMut(&[K], &[SourceState]),
) -> io::Result<u64> {
    let mut keys = vec![K::default(); BATCH];
    let mut values = vec![SourceState::default(); BATCH];
    let mut token = None;
    let mut total = 0u64;
    loop {
        // The walk ends when the kernel reports the last bucket: a hash map
        // has finitely many, so this loop is bounded by the map's size.
        let (n, next) = bpf_obj::lookup_batch(fd, token, &mut keys, &mut values)?;
        if n > 0 {
            each(&keys[..n], &values[..n]);
        }
        total += n as u64;
        match next {
            Some(t) => token = Some(t),
            None => return Ok(total),
        }
    }
}
