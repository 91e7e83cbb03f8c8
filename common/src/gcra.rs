//! The Generic Cell Rate Algorithm (virtual-scheduling form, ITU-T I.371).
//!
//! A bucket is one number: the theoretical arrival time (TAT) of the next unit of
//! work. A request costing `increment` nanoseconds of "emission interval" is
//! admitted when, after adding it, the backlog `TAT - now` stays within the
//! bucket's `capacity` (burst × interval). Admission moves TAT forward; a
//! rejection leaves it alone, so dropped traffic does not push a client further
//! into debt.
//!
//! Over any window of length `t` a bucket therefore admits at most
//! `t / interval + burst` units (see the property tests), and a stream that never
//! exceeds the rate is never rejected.

/// Fixed-point shift of [`crate::Limit::interval_fp`]: intervals are nanoseconds
/// per unit with 16 fractional bits, so byte rates up to 64 GB/s keep precision.
pub const INTERVAL_SHIFT: u32 = 16;

/// Coarse clock for 32-bit buckets: one tick is 2^10 ns (1.024 µs).
pub const TICK_SHIFT: u32 = 10;

/// One GCRA step on a 64-bit nanosecond TAT.
///
/// Returns the new TAT when the work is admitted, `None` when it is not.
#[inline(always)]
pub fn admit(tat: u64, now: u64, increment: u64, capacity: u64) -> Option<u64> {
    let start = if tat > now { tat } else { now };
    let next = start.saturating_add(increment);
    if next - now <= capacity {
        Some(next)
    } else {
        None
    }
}

/// One GCRA step on a wrapping 32-bit TAT counted in [`TICK_SHIFT`] ticks.
///
/// The 32-bit form halves the state of the two low-rate buckets (connections and
/// requests). The clock wraps every 2^32 ticks (about 73 minutes), so a TAT more
/// than `capacity` ahead of `now` cannot be a real future time: it is a stale past
/// one and is treated as idle. `capacity` must stay below 2^31 ticks (36 minutes),
/// which configuration enforces.
#[inline(always)]
pub fn admit_wrapping(tat: u32, now: u32, increment: u32, capacity: u32) -> Option<u32> {
    let ahead = tat.wrapping_sub(now);
    let start = if ahead != 0 && ahead <= capacity {
        tat
    } else {
        now
    };
    let next = start.wrapping_add(increment);
    if next.wrapping_sub(now) <= capacity {
        Some(next)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Textbook token bucket (I.371 "continuous-state leaky bucket"), in exact
    /// rational arithmetic scaled to nanoseconds. GCRA must agree with it.
    struct LeakyBucket {
        level: i128,
        last: i128,
        capacity: i128,
    }

    impl LeakyBucket {
        fn offer(&mut self, now: i128, increment: i128) -> bool {
            let drained = (self.level - (now - self.last)).max(0);
            if drained + increment <= self.capacity {
                self.level = drained + increment;
                self.last = now;
                true
            } else {
                self.level = drained;
                self.last = now;
                false
            }
        }
    }

    #[test]
    fn burst_then_rate() {
        // 10/s, burst 3: three back to back, then one every 100 ms.
        let t = 100_000_000u64;
        let cap = 3 * t;
        let mut tat = 0;
        let now = 1_000_000_000;
        for _ in 0..3 {
            tat = admit(tat, now, t, cap).expect("burst admitted");
        }
        assert_eq!(admit(tat, now, t, cap), None);
        assert_eq!(admit(tat, now + t - 1, t, cap), None);
        assert!(admit(tat, now + t, t, cap).is_some());
    }

    #[test]
    fn wrapping_matches_plain_across_the_wrap() {
        let (inc, cap) = (1000u32, 5000u32);
        let mut plain = 0u64;
        let mut wrapped = 0u32;
        let base: u64 = (1 << 32) - 20_000;
        for step in 0..200u64 {
            let now = base + step * 300;
            let a = admit(plain, now, inc as u64, cap as u64);
            let b = admit_wrapping(wrapped, now as u32, inc, cap);
            assert_eq!(a.is_some(), b.is_some(), "step {step}");
            if let (Some(a), Some(b)) = (a, b) {
                plain = a;
                wrapped = b;
            }
        }
    }

    #[test]
    fn wrapping_forgets_stale_state() {
        // A TAT far in the past (not within capacity ahead) means idle.
        let now = 10_000u32;
        let stale = now.wrapping_sub(3_000_000_000);
        assert_eq!(admit_wrapping(stale, now, 100, 1000), Some(now + 100));
    }

    proptest! {
        /// GCRA and the leaky bucket give the same verdict on every arrival.
        #[test]
        fn agrees_with_leaky_bucket(
            interval in 1u64..10_000_000,
            burst in 1u64..50,
            gaps in prop::collection::vec(0u64..20_000_000, 1..300),
            costs in prop::collection::vec(1u64..4, 300),
        ) {
            let cap = burst * interval;
            let mut tat = 0u64;
            let mut lb = LeakyBucket { level: 0, last: 0, capacity: cap as i128 };
            let mut now = 1u64 << 40;
            lb.last = now as i128;
            for (gap, cost) in gaps.iter().zip(costs.iter()) {
                now += gap;
                let inc = interval * cost;
                let g = admit(tat, now, inc, cap);
                let l = lb.offer(now as i128, inc as i128);
                prop_assert_eq!(g.is_some(), l);
                if let Some(next) = g { tat = next; }
            }
        }

        /// Over any window [a, b], admitted units <= (b - a) / interval + burst.
        #[test]
        fn never_admits_more_than_rate_times_window_plus_burst(
            interval in 1u64..1_000_000,
            burst in 1u64..20,
            gaps in prop::collection::vec(0u64..2_000_000, 1..400),
        ) {
            let cap = burst * interval;
            let mut tat = 0u64;
            let mut now = 1u64 << 40;
            let mut admitted_at = Vec::new();
            for gap in gaps {
                now += gap;
                if let Some(next) = admit(tat, now, interval, cap) {
                    tat = next;
                    admitted_at.push(now);
                }
            }
            for i in 0..admitted_at.len() {
                for j in i..admitted_at.len() {
                    let window = admitted_at[j] - admitted_at[i];
                    let count = (j - i + 1) as u64;
                    prop_assert!(count * interval <= window + cap,
                        "{count} admitted in {window} ns at interval {interval}, burst {burst}");
                }
            }
        }

        /// A stream that never exceeds the rate is never rejected.
        #[test]
        fn always_admits_a_conforming_stream(
            interval in 1u64..1_000_000,
            burst in 1u64..20,
            extra in prop::collection::vec(0u64..1_000_000, 1..400),
        ) {
            let cap = burst * interval;
            let mut tat = 0u64;
            let mut now = 1u64 << 40;
            for e in extra {
                now += interval + e;
                let next = admit(tat, now, interval, cap);
                prop_assert!(next.is_some());
                tat = next.unwrap();
            }
        }

        /// The wrapping form agrees with the 64-bit form for any start time,
        /// including across the 2^32 wrap, for gaps shorter than the wrap period.
        #[test]
        fn wrapping_agrees_with_plain(
            start in 0u64..(1u64 << 34),
            interval in 1u32..100_000,
            burst in 1u32..100,
            gaps in prop::collection::vec(0u64..3_000_000, 1..200),
        ) {
            let cap = interval * burst;
            let mut plain = 0u64;
            // A fresh 32-bit bucket starts at "now": equal means idle.
            let mut wrapped = start as u32;
            let mut now = start;
            for gap in gaps {
                now += gap;
                let a = admit(plain, now, interval as u64, cap as u64);
                let b = admit_wrapping(wrapped, now as u32, interval, cap);
                prop_assert_eq!(a.is_some(), b.is_some());
                if let (Some(a), Some(b)) = (a, b) { plain = a; wrapped = b; }
            }
        }
    }
}
