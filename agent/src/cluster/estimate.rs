//! How many units (packets, requests) a source was admitted between two reads
//! of its GCRA bucket, from the bucket's TAT alone (the kernel keeps no
//! per-source counters).
//!
//! Each admitted unit moves the TAT forward by exactly the limit's emission
//! interval `T`; an admission into an idle bucket (TAT in the past) first
//! moves it up to `now`. Between reads at `t0` and `t1`, with backlogs
//! `b = max(TAT - now, 0)`, work conservation gives exactly
//!
//! ```text
//! n × T = b1 - b0 + B        B = time the bucket was backlogged in [t0, t1]
//! ```
//!
//! The reads show whether the bucket is backlogged at `t0` and at `t1`, so
//! `B` is estimated as `(t1 - t0) × (s0 + s1) / 2`, with `s = 1` when
//! backlogged. The read instants are jittered by the caller, so for any traffic
//! the estimate is unbiased. The result is clamped to what the TAT proves:
//!
//! * `n ≤ (TAT1 - max(TAT0, t0)) / T`: the TAT moved by `n × T` plus the idle
//!   time it skipped;
//! * `n ≥ (b1 - b0) / T`, and `n = 0` when the TAT did not move. (A moved TAT
//!   also proves `n ≥ 1`, but clamping to it would bias light sources up.)
//!
//! A source pressing its local limit stays backlogged, so `s0 = s1 = 1` and
//! the estimate is `ΔTAT / T`: exact. A source below its local rate is
//! estimated without bias but noisily: one interval's estimate is off by at
//! most `(t1 - t0) / T` units (one interval at the local rate), always within
//! the bounds above, and the errors average out over intervals (the relative
//! error of a sum over k intervals shrinks like `1 / sqrt(k × busy fraction)`).
//! After tollgate lifts its own deny on a source (a known heavy hitter), the
//! caller asks for the upper bound for one interval, so the restart of a
//! saturating source is never under-counted.

/// Two reads of one bucket, in the bucket's time unit (nanoseconds for the
/// packets bucket, 1.024 µs ticks for the requests bucket).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reads {
    /// `t1 - t0`.
    pub elapsed: f64,
    /// Backlog at `t0` and at `t1`.
    pub backlog0: f64,
    pub backlog1: f64,
    /// `TAT1 - max(TAT0, t0)` (negative or zero when nothing was admitted).
    pub span: f64,
    /// Whether anything was admitted in between (the TAT changed).
    pub changed: bool,
    /// The emission interval `T`.
    pub increment: f64,
}

/// Units admitted between the two reads (see the module docs); `upper` asks
/// for the upper bound instead of the estimate.
pub fn admitted(r: &Reads, upper: bool) -> f64 {
    if !r.changed || r.increment <= 0.0 {
        return 0.0;
    }
    let high = (r.span / r.increment).max(0.0);
    if upper {
        return high.max(1.0);
    }
    let low = ((r.backlog1 - r.backlog0) / r.increment).clamp(0.0, high);
    let backlogged = |b: f64| if b > 0.0 { 1.0 } else { 0.0 };
    let busy = r.elapsed * (backlogged(r.backlog0) + backlogged(r.backlog1)) / 2.0;
    ((r.backlog1 - r.backlog0 + busy) / r.increment).clamp(low, high)
}

/// Reads of a 64-bit nanosecond TAT (the packets bucket). `prev` is the
/// previous read `(tat, at)`; without one (a source first seen) the bucket is
/// taken as idle at `since`, the previous scan.
pub fn reads_ns(prev: Option<(u64, u64)>, since: u64, tat: u64, now: u64, increment: f64) -> Reads {
    let (tat0, t0, changed) = match prev {
        Some((tat0, t0)) => (tat0, t0, tat != tat0),
        // Every admission since `since` left the TAT after `since`.
        None => (since, since, tat > since),
    };
    Reads {
        elapsed: now.saturating_sub(t0) as f64,
        backlog0: tat0.saturating_sub(t0) as f64,
        backlog1: tat.saturating_sub(now) as f64,
        span: tat as f64 - tat0.max(t0) as f64,
        changed,
        increment,
    }
}

/// The 32-bit tick clock of the requests bucket at `now_ns`.
pub const fn ticks(now_ns: u64) -> u32 {
    (now_ns >> tollgate_common::gcra::TICK_SHIFT) as u32
}

/// Backlog of a wrapping 32-bit tick TAT, as the kernel judges it: a TAT more
/// than `capacity` ahead is a stale past one (see `gcra::admit_wrapping`).
fn backlog_ticks(tat: u32, now: u32, capacity: u32) -> u32 {
    let ahead = tat.wrapping_sub(now);
    if ahead != 0 && ahead <= capacity {
        ahead
    } else {
        0
    }
}

/// Reads of a wrapping 32-bit tick TAT (the requests bucket); times in
/// nanoseconds. Without a previous read only a backlogged bucket counts (a
/// fresh bucket's TAT is its creation time, which says nothing).
pub fn reads_ticks(
    prev: Option<(u32, u64)>,
    since: u64,
    tat: u32,
    now_ns: u64,
    increment: f64,
    capacity: u32,
) -> Reads {
    let t1 = ticks(now_ns);
    let backlog1 = backlog_ticks(tat, t1, capacity);
    let (t0, backlog0, start, changed) = match prev {
        Some((tat0, t0_ns)) => {
            let t0 = ticks(t0_ns);
            let b0 = backlog_ticks(tat0, t0, capacity);
            (t0, b0, if b0 > 0 { tat0 } else { t0 }, tat != tat0)
        }
        None => {
            let t0 = ticks(since);
            (t0, 0, t0, backlog1 > 0)
        }
    };
    Reads {
        elapsed: t1.wrapping_sub(t0) as f64,
        backlog0: backlog0 as f64,
        backlog1: backlog1 as f64,
        span: tat.wrapping_sub(start) as i32 as f64,
        changed,
        increment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_common::gcra::admit;

    const MS: u64 = 1_000_000;

    /// Simulates one bucket (interval `inc`, capacity `cap`) fed by `arrivals`
    /// (sorted ns), read at `reads`; returns (true admitted, estimate) per
    /// interval between reads.
    fn simulate(inc: u64, cap: u64, arrivals: &[u64], reads: &[u64]) -> Vec<(u64, f64)> {
        let mut tat = 0u64;
        let mut a = arrivals.iter().peekable();
        let mut out = Vec::new();
        let mut prev: Option<(u64, u64)> = None;
        let mut admitted_since = 0;
        for &r in reads {
            while let Some(&&t) = a.peek() {
                if t > r {
                    break;
                }
                if let Some(next) = admit(tat, t, inc, cap) {
                    tat = next;
                    admitted_since += 1;
                }
                a.next();
            }
            if let Some(p) = prev {
                let est = admitted(&reads_ns(Some(p), 0, tat, r, inc as f64), false);
                out.push((admitted_since, est));
            }
            admitted_since = 0;
            prev = Some((tat, r));
        }
        out
    }

    #[test]
    fn a_saturating_source_is_counted_exactly() {
        // 1000/s local (1 ms), burst 10; offered 3000/s; reads every 100 ms.
        let arrivals: Vec<u64> = (0..3000).map(|i| 1_000 * MS + i * MS / 3).collect();
        let reads: Vec<u64> = (0..11).map(|i| 1_050 * MS + i * 100 * MS).collect();
        let out = simulate(MS, 10 * MS, &arrivals, &reads);
        for (truth, est) in &out[..9] {
            assert!((est - *truth as f64).abs() <= 1.0, "{truth} vs {est}");
        }
    }

    #[test]
    fn an_idle_source_counts_zero_and_the_upper_bound_counts_skipped_time() {
        let r = reads_ns(Some((5 * MS, 10 * MS)), 0, 5 * MS, 110 * MS, MS as f64);
        assert_eq!(admitted(&r, false), 0.0);
        // One packet at 50 ms: TAT 51 ms, idle at both reads: the busy-time
        // sample missed it (unbiased over many intervals, 0 in this one).
        let r = reads_ns(Some((5 * MS, 10 * MS)), 0, 51 * MS, 110 * MS, MS as f64);
        assert_eq!(admitted(&r, false), 0.0);
        // The upper bound counts the skipped idle time as if it were packets.
        assert_eq!(admitted(&r, true), 41.0);
    }

    #[test]
    fn a_light_source_is_estimated_without_bias_and_within_bounds() {
        // 100/s from a bucket of 1000/s: busy 10% of the time.
        let arrivals: Vec<u64> = (0..200_000).map(|i| 1_000 * MS + i * 10 * MS).collect();
        // Read instants jittered as the sync jitters them (xorshift).
        let mut x = 42u64;
        let mut t = 1_000 * MS;
        let mut reads = Vec::new();
        while t < 2_000_000 * MS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = 0.75 + (x >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
            t += (100.0 * MS as f64 * f) as u64;
            reads.push(t);
        }
        let out = simulate(MS, 100 * MS, &arrivals, &reads);
        let truth: u64 = out.iter().map(|o| o.0).sum();
        let est: f64 = out.iter().map(|o| o.1).sum();
        eprintln!("truth {truth}, estimate {est:.0}");
        assert!(
            (est - truth as f64).abs() / (truth as f64) < 0.08,
            "truth {truth}, estimate {est}"
        );
        for (i, (tr, e)) in out.iter().enumerate() {
            // Per interval: within one interval at the local rate.
            let whole = ((reads[i + 1] - reads[i]) / MS) as f64;
            assert!((e - *tr as f64).abs() <= whole + 1.0, "{tr} vs {e}");
        }
    }

    #[test]
    fn a_new_source_starts_from_the_previous_scan() {
        // Fresh state (TAT 0): nothing admitted.
        let r = reads_ns(None, 100 * MS, 0, 200 * MS, MS as f64);
        assert_eq!(admitted(&r, false), 0.0);
        // Saturating since 150 ms with a backlog of 10 ms at the read.
        let r = reads_ns(None, 100 * MS, 210 * MS, 200 * MS, MS as f64);
        let n = admitted(&r, false);
        assert!((10.0..=110.0).contains(&n), "{n}");
    }

    #[test]
    fn tick_buckets_wrap() {
        let inc = 1000.0;
        let cap = 50_000;
        let t0_ns = ((u32::MAX as u64) - 10_000) << 10;
        let tat0 = ticks(t0_ns).wrapping_add(20_000); // backlogged
        let t1_ns = t0_ns + (100_000 << 10);
        let tat1 = ticks(t1_ns).wrapping_add(20_000); // still backlogged, clock wrapped
        let r = reads_ticks(Some((tat0, t0_ns)), 0, tat1, t1_ns, inc, cap);
        assert_eq!(admitted(&r, false), 100.0);
        // A stale TAT (more than the capacity ahead) is idle.
        let r = reads_ticks(
            None,
            t0_ns,
            ticks(t1_ns).wrapping_add(cap + 5),
            t1_ns,
            inc,
            cap,
        );
        assert_eq!(admitted(&r, false), 0.0);
    }
}
