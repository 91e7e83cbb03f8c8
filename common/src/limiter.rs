//! Charging one packet against a source's buckets and its tier's aggregate
//! ceiling, with lock-free compare-and-swap so every CPU shares one exact bucket
//! per source.
//!
//! Each bucket is one word; a CPU reads it, computes the GCRA step, and installs
//! the result only if the word is unchanged (`cmpxchg`), retrying a bounded
//! number of times. Per-CPU buckets would over-admit a client spread across RX
//! queues by up to the number of CPUs; a plain read-modify-write loses updates.
//! A packet rejected by a later limit gets back what earlier ones charged, so a
//! packet dropped for its bytes does not also eat its packets budget.

use crate::{
    Limit, LimitKind, SourceState, TierConfig, atomic,
    gcra::{self, TICK_SHIFT},
};

/// CAS attempts per bucket before the packet is treated as over the limit.
/// Each failure means another CPU changed the same bucket in the meantime, so
/// with N CPUs eight consecutive losses are practically impossible; failing
/// closed keeps the bound `rate × t + burst` exact even then.
pub const MAX_CAS_RETRIES: usize = 8;

/// What one packet costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Costs {
    /// Frame length.
    pub bytes: u64,
    /// The packet opens a TCP connection (SYN without ACK).
    pub connection: bool,
    /// HTTP request heads the packet ends ([`crate::http::HeadEnds`]; 0 off
    /// the HTTP ports and in tiers without a requests limit).
    pub requests: u32,
}

/// Atomically applies one GCRA step to a 64-bit nanosecond TAT.
///
/// # Safety
/// `tat` must be valid and 8-byte aligned for the whole call; concurrent
/// writers must also use atomic operations.
#[inline(always)]
pub unsafe fn charge_u64(tat: *mut u64, now: u64, increment: u64, capacity: u64) -> bool {
    // SAFETY (here and below): caller guarantees validity and alignment.
    let mut current = unsafe { atomic::load_u64(tat) };
    for _ in 0..MAX_CAS_RETRIES {
        let Some(next) = gcra::admit(current, now, increment, capacity) else {
            return false;
        };
        match unsafe { atomic::cas_u64(tat, current, next) } {
            Ok(_) => return true,
            Err(seen) => current = seen,
        }
    }
    false
}

/// Atomically applies one GCRA step to the wrapping 32-bit tick TAT stored in
/// bits `shift..shift + 32` of `word`, leaving the other half unchanged.
/// Returns the word as it was before and after the charge.
///
/// # Safety
/// As [`charge_u64`].
#[inline(always)]
unsafe fn charge_half(
    word: *mut u64,
    shift: u32,
    now: u32,
    increment: u32,
    capacity: u32,
) -> Option<(u64, u64)> {
    let mut current = unsafe { atomic::load_u64(word) };
    for _ in 0..MAX_CAS_RETRIES {
        let tat = (current >> shift) as u32;
        let next = gcra::admit_wrapping(tat, now, increment, capacity)?;
        let updated = (current & !(0xFFFF_FFFFu64 << shift)) | ((next as u64) << shift);
        match unsafe { atomic::cas_u64(word, current, updated) } {
            Ok(_) => return Some((current, updated)),
            Err(seen) => current = seen,
        }
    }
    None
}

/// Gives back `amount` nanoseconds charged to a TAT by [`charge_u64`].
///
/// # Safety
/// As [`charge_u64`].
#[inline(always)]
pub unsafe fn refund_u64(tat: *mut u64, amount: u64) {
    if amount != 0 {
        // SAFETY: as the charge that preceded it.
        unsafe { atomic::add_u64(tat, amount.wrapping_neg()) };
    }
}

/// Undoes the charges to the packed connection/request word: puts back the
/// word as it was before them if nobody changed it since (one CAS, the usual
/// case: this restores a bucket exactly, even one a tier with a smaller burst
/// read as idle), and otherwise subtracts the charged ticks with atomic adds.
/// No retry loop: the verifier explores every loop iteration on every path,
/// and refunds sit on several. Subtracting from the low half borrows one tick
/// from the high half when the low clock has just wrapped (every 73 minutes):
/// the request bucket then admits up to 1.024 µs early, once.
#[inline(always)]
unsafe fn refund_l7(word: *mut u64, charged: &Charges) {
    let Some((before, after)) = charged.l7_words else {
        return;
    };
    if unsafe { atomic::cas_u64(word, after, before) }.is_ok() {
        return;
    }
    let back = (charged.connections_ticks as u64) << SourceState::CONNECTIONS_SHIFT
        | (charged.requests_ticks as u64) << SourceState::REQUESTS_SHIFT;
    unsafe { atomic::add_u64(word, back.wrapping_neg()) };
}

/// What [`charge_source`] charged, so a later rejection (the tier's aggregate
/// ceiling) can give it back with [`refund_source`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Charges {
    pub packets_ns: u64,
    pub bytes_ns: u64,
    pub connections_ticks: u32,
    pub requests_ticks: u32,
    /// The packed connection/request word before the first and after the last
    /// charge to it, when either was charged.
    pub l7_words: Option<(u64, u64)>,
}

/// Gives back what [`charge_source`] charged.
///
/// # Safety
/// As [`charge_source`].
#[inline(always)]
pub unsafe fn refund_source(state: *mut SourceState, charges: &Charges) {
    unsafe {
        refund_u64(&raw mut (*state).packets_tat, charges.packets_ns);
        refund_u64(&raw mut (*state).bytes_tat, charges.bytes_ns);
        refund_l7(&raw mut (*state).l7_tats, charges);
    }
}

/// Charges one packet to a source's buckets under `tier`'s limits.
///
/// Returns the first limit that rejects it; everything charged before that is
/// refunded. Unlimited kinds cost nothing. On success, returns what was
/// charged.
///
/// # Safety
/// `state` must point to a valid, 8-byte aligned [`SourceState`] for the whole
/// call (a BPF map value, or memory the caller owns); other CPUs may charge the
/// same state concurrently through this function.
#[inline(always)]
pub unsafe fn charge_source(
    state: *mut SourceState,
    tier: &TierConfig,
    now_ns: u64,
    costs: &Costs,
) -> Result<Charges, LimitKind> {
    let packets_tat = unsafe { &raw mut (*state).packets_tat };
    let bytes_tat = unsafe { &raw mut (*state).bytes_tat };
    let l7_tats = unsafe { &raw mut (*state).l7_tats };
    let now_ticks = (now_ns >> TICK_SHIFT) as u32;

    let packets = &tier.limits[LimitKind::Packets as usize];
    let packets_charged = if packets.is_unlimited() {
        0
    } else {
        let inc = packets.increment_ns(1);
        if !unsafe { charge_u64(packets_tat, now_ns, inc, packets.capacity_ns) } {
            return Err(LimitKind::Packets);
        }
        inc
    };

    let bytes = &tier.limits[LimitKind::Bytes as usize];
    let bytes_charged = if bytes.is_unlimited() {
        0
    } else {
        let inc = bytes.increment_ns(costs.bytes);
        if !unsafe { charge_u64(bytes_tat, now_ns, inc, bytes.capacity_ns) } {
            unsafe { refund_u64(packets_tat, packets_charged) };
            return Err(LimitKind::Bytes);
        }
        inc
    };

    let mut charges = Charges {
        packets_ns: packets_charged,
        bytes_ns: bytes_charged,
        ..Charges::default()
    };
    let connections = &tier.limits[LimitKind::Connections as usize];
    if costs.connection && !connections.is_unlimited() {
        let inc = connections.increment_ticks();
        let cap = connections.capacity_ticks();
        match unsafe { charge_half(l7_tats, SourceState::CONNECTIONS_SHIFT, now_ticks, inc, cap) } {
            Some(words) => {
                charges.connections_ticks = inc;
                charges.l7_words = Some(words);
            }
            None => {
                unsafe { refund_source(state, &charges) };
                return Err(LimitKind::Connections);
            }
        }
    }

    let requests = &tier.limits[LimitKind::Requests as usize];
    if costs.requests != 0 && !requests.is_unlimited() {
        // In 64 bits, so no count can wrap the 32-bit clock: more requests at
        // once than the burst can never be admitted and are refused outright.
        let wide = requests.increment_ticks() as u64 * costs.requests as u64;
        let cap = requests.capacity_ticks();
        let charged = if wide > cap as u64 {
            None
        } else {
            let inc = wide as u32;
            unsafe { charge_half(l7_tats, SourceState::REQUESTS_SHIFT, now_ticks, inc, cap) }
        };
        match charged {
            Some((before, after)) => {
                charges.requests_ticks = wide as u32;
                charges.l7_words = Some((charges.l7_words.map_or(before, |(b, _)| b), after));
            }
            None => {
                unsafe { refund_source(state, &charges) };
                return Err(LimitKind::Requests);
            }
        }
    }
    Ok(charges)
}

/// Charges one packet to a tier's aggregate ceiling.
///
/// # Safety
/// As [`charge_u64`].
#[inline(always)]
pub unsafe fn charge_aggregate(tat: *mut u64, limit: &Limit, now_ns: u64) -> bool {
    limit.is_unlimited()
        || unsafe { charge_u64(tat, now_ns, limit.increment_ns(1), limit.capacity_ns) }
}

/// What admission control decides for a packet from a source its tier does
/// not track, in a tier with a new-source budget ([`TierConfig::new_sources`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewSource {
    /// Within the budget: the source is tracked from this packet on, and this
    /// packet is judged like any tracked source's.
    Track,
    /// Over the budget, within the untracked ceiling: passed, not tracked.
    Untracked,
    /// Over the budget and the untracked ceiling: dropped, not tracked.
    OverCeiling,
}

/// One GCRA step on a shared 64-bit TAT with a single compare-and-swap and no
/// retry: a lost race (another CPU changed the word in between) counts as a
/// rejection, so the bound `rate × t + burst` holds exactly and the verifier
/// has no loop to walk. For the admission-control words, where failing closed
/// costs one untracked packet, not a client's budget.
///
/// # Safety
/// As [`charge_u64`].
#[inline(always)]
pub unsafe fn charge_once(tat: *mut u64, limit: &Limit, now_ns: u64) -> bool {
    if limit.is_unlimited() {
        return true;
    }
    let current = unsafe { atomic::load_u64(tat) };
    match gcra::admit(current, now_ns, limit.increment_ns(1), limit.capacity_ns) {
        Some(next) => unsafe { atomic::cas_u64(tat, current, next) }.is_ok(),
        None => false,
    }
}

/// Admission control for a source the tier does not track (Katran's
/// `is_under_flood` cap on new LRU entries, made exact across CPUs).
///
/// At most `new_sources` per second (one CAS on `budget_tat`) become tracked,
/// so a flood of new sources cannot turn the source map over and evict
/// established sources. The rest are not tracked: they share a ceiling of
/// their own (`untracked_tat`, the tier's aggregate limit applied apart), so
/// they never take the tracked sources' share of the aggregate ceiling. Each
/// is one word shared by every CPU, charged with [`charge_once`].
///
/// # Safety
/// As [`charge_u64`], for both words.
#[inline(always)]
pub unsafe fn admit_new_source(
    budget_tat: *mut u64,
    untracked_tat: *mut u64,
    tier: &TierConfig,
    now_ns: u64,
) -> NewSource {
    if unsafe { charge_once(budget_tat, &tier.new_sources, now_ns) } {
        NewSource::Track
    } else if unsafe { charge_once(untracked_tat, &tier.aggregate, now_ns) } {
        NewSource::Untracked
    } else {
        NewSource::OverCeiling
    }
}

/// A fresh bucket state for a source first seen at `now_ns`: every bucket idle.
#[inline(always)]
pub const fn fresh_state(now_ns: u64) -> SourceState {
    let ticks = (now_ns >> TICK_SHIFT) as u32 as u64;
    SourceState {
        packets_tat: 0,
        bytes_tat: 0,
        l7_tats: (ticks << SourceState::CONNECTIONS_SHIFT) | (ticks << SourceState::REQUESTS_SHIFT),
        admitted: 0,
    }
}

/// Counts one admitted packet carrying `costs.requests` request units in the
/// source's [`SourceState::admitted`] (one atomic add; the caller checks
/// [`TierConfig::counts_admitted`]).
///
/// # Safety
/// As [`charge_u64`], for `state`.
#[inline(always)]
pub unsafe fn count_admitted(state: *mut SourceState, costs: &Costs) {
    // SAFETY: caller guarantees validity and alignment.
    unsafe {
        atomic::add_u64(
            &raw mut (*state).admitted,
            SourceState::admitted_increment(costs.requests),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TIER_ACTIVE, TierConfig};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SEC: u64 = 1_000_000_000;

    fn tier(
        packets: Option<(u64, u64)>,
        bytes: Option<(u64, u64)>,
        conns: Option<(u64, u64)>,
    ) -> TierConfig {
        let mk = |l: Option<(u64, u64)>| {
            l.map(|(r, b)| Limit::per_period(r, SEC, b).unwrap())
                .unwrap_or(Limit::UNLIMITED)
        };
        TierConfig {
            limits: [mk(packets), mk(bytes), mk(conns), Limit::UNLIMITED],
            aggregate: Limit::UNLIMITED,
            new_sources: Limit::UNLIMITED,
            ipv6_prefix: 64,
            flags: TIER_ACTIVE,
        }
    }

    #[test]
    fn admission_tracks_within_the_budget_and_bounds_untracked_traffic() {
        let mut t = tier(None, None, None);
        t.aggregate = Limit::per_period(4, SEC, 4).unwrap();
        t.new_sources = Limit::per_period(2, SEC, 2).unwrap();
        let (mut budget, mut untracked) = (0u64, 0u64);
        let decide = |b: &mut u64, u: &mut u64, now| unsafe { admit_new_source(b, u, &t, now) };
        let got: Vec<NewSource> = (0..8)
            .map(|_| decide(&mut budget, &mut untracked, SEC))
            .collect();
        use NewSource::*;
        assert_eq!(
            got,
            [
                Track,
                Track,
                Untracked,
                Untracked,
                Untracked,
                Untracked,
                OverCeiling,
                OverCeiling
            ]
        );
        // Half a second later: one more source, two more untracked packets.
        let later = SEC + SEC / 2;
        let got: Vec<NewSource> = (0..4)
            .map(|_| decide(&mut budget, &mut untracked, later))
            .collect();
        assert_eq!(got, [Track, Untracked, Untracked, OverCeiling]);
    }

    #[test]
    fn rejected_bytes_refund_the_packet_charge() {
        let t = tier(Some((10, 10)), Some((1000, 1000)), None);
        let mut s = fresh_state(SEC);
        let p = &mut s as *mut SourceState;
        let big = Costs {
            bytes: 800,
            ..Default::default()
        };
        unsafe {
            assert!(charge_source(p, &t, SEC, &big).is_ok());
            let before = (*p).packets_tat;
            assert_eq!(charge_source(p, &t, SEC, &big), Err(LimitKind::Bytes));
            assert_eq!((*p).packets_tat, before);
        }
    }

    #[test]
    fn connection_limit_only_charges_new_connections() {
        let t = tier(None, None, Some((1, 2)));
        let mut s = fresh_state(SEC);
        let p = &mut s as *mut SourceState;
        let syn = Costs {
            bytes: 60,
            connection: true,
            requests: 0,
        };
        let data = Costs {
            bytes: 60,
            connection: false,
            requests: 0,
        };
        unsafe {
            assert!(charge_source(p, &t, SEC, &syn).is_ok());
            assert!(charge_source(p, &t, SEC, &syn).is_ok());
            assert_eq!(charge_source(p, &t, SEC, &syn), Err(LimitKind::Connections));
            for _ in 0..100 {
                assert!(charge_source(p, &t, SEC, &data).is_ok());
            }
        }
    }

    /// Found by the packet fuzzer: a bucket charged under a tier with a larger
    /// burst looks idle (stale) to a tier with a smaller one; a rejected
    /// packet judged under the smaller tier must leave it exactly as it was.
    #[test]
    fn a_rejected_packet_restores_the_packed_word_exactly() {
        let big = tier(None, None, Some((1, 7)));
        let mut small = tier(None, None, Some((1, 2)));
        small.limits[LimitKind::Requests as usize] = Limit::per_period(1, SEC, 1).unwrap();
        let mut s = fresh_state(SEC);
        let p = &mut s as *mut SourceState;
        let syn = Costs {
            bytes: 60,
            connection: true,
            requests: 0,
        };
        let syn_request = Costs {
            bytes: 60,
            connection: true,
            requests: 1,
        };
        unsafe {
            for _ in 0..3 {
                assert!(charge_source(p, &big, SEC, &syn).is_ok());
            }
            // The small tier's request bucket takes one, then rejects.
            assert!(charge_source(p, &small, SEC, &syn_request).is_ok());
            let before = (*p).l7_tats;
            assert_eq!(
                charge_source(p, &small, SEC, &syn_request),
                Err(LimitKind::Requests)
            );
            assert_eq!((*p).l7_tats, before, "the connections half was reset");
            // And the aggregate path's refund restores it too.
            let charged = charge_source(p, &big, SEC, &syn).unwrap();
            refund_source(p, &charged);
            assert_eq!((*p).l7_tats, before);
        }
    }

    /// Four threads hammer one shared state; the total admitted over a window
    /// never exceeds rate × window + burst (lost updates would exceed it).
    #[test]
    fn concurrent_charges_never_over_admit() {
        let t = tier(Some((1000, 50)), None, None);
        let state = Arc::new(std::sync::Mutex::new(()));
        let mut s = Box::new(fresh_state(SEC));
        let addr = (&mut *s as *mut SourceState) as usize;
        let admitted = Arc::new(AtomicUsize::new(0));
        // Logical clock: every thread walks the same 100 ms in 1 µs steps.
        let window = SEC / 10;
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let admitted = admitted.clone();
                let _keep = state.clone();
                scope.spawn(move || {
                    let p = addr as *mut SourceState;
                    let mut now = SEC;
                    while now <= SEC + window {
                        if unsafe { charge_source(p, &t, now, &Costs::default()) }.is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        now += 1_000;
                    }
                });
            }
        });
        let n = admitted.load(Ordering::Relaxed) as u64;
        // 1000/s over 100 ms + burst 50 (+1 for the closed interval).
        assert!(n <= 100 + 50 + 1, "admitted {n}");
        assert!(n >= 100, "admitted {n}");
        drop(s);
    }

    #[test]
    fn a_segment_ending_several_requests_is_charged_for_all_or_none() {
        let mut t = tier(None, None, None);
        t.limits[LimitKind::Requests as usize] = Limit::per_period(1, SEC, 10).unwrap();
        let mut s = fresh_state(SEC);
        let p = &mut s as *mut SourceState;
        let n = |requests| Costs {
            bytes: 100,
            connection: false,
            requests,
        };
        unsafe {
            assert!(charge_source(p, &t, SEC, &n(6)).is_ok());
            let before = (*p).l7_tats;
            assert_eq!(charge_source(p, &t, SEC, &n(5)), Err(LimitKind::Requests));
            assert_eq!((*p).l7_tats, before, "a refused segment charges nothing");
            assert!(charge_source(p, &t, SEC, &n(4)).is_ok());
            // More than the burst at once never fits, even idle; a count that
            // would overflow the 32-bit increment is refused, not wrapped.
            let mut idle = fresh_state(SEC);
            assert_eq!(
                charge_source(&mut idle, &t, SEC, &n(11)),
                Err(LimitKind::Requests)
            );
            assert_eq!(
                charge_source(&mut idle, &t, SEC, &n(u32::MAX)),
                Err(LimitKind::Requests)
            );
            assert!(charge_source(&mut idle, &t, SEC, &n(10)).is_ok());
        }
    }
}
