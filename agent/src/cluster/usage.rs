//! Per-source usage between syncs: reads of each tracked source's buckets
//! turned into admitted-unit estimates ([`super::estimate`]), accumulated until
//! they are worth pushing.

use std::collections::HashMap;

use tollgate_common::SourceState;

use super::estimate;

pub use crate::spec::SourceKey;

/// The two global limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Packets = 0,
    Requests = 1,
}

impl Kind {
    /// The kind's letter in Redis keys.
    pub const fn tag(self) -> char {
        match self {
            Kind::Packets => 'p',
            Kind::Requests => 'r',
        }
    }
}

/// How one global limit is measured: the per-node bucket's emission interval
/// and capacity (nanoseconds for packets, ticks for requests), and the
/// smallest delta worth a push.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measure {
    pub increment: f64,
    pub capacity: u64,
    pub threshold: f64,
}

/// What a tier measures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measures {
    pub packets: Option<Measure>,
    pub requests: Option<Measure>,
}

/// Units to add to a source's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta {
    pub source: SourceKey,
    /// Index of the tier in the sync's plan.
    pub tier: usize,
    pub kind: Kind,
    pub units: u64,
}

#[derive(Clone, Debug)]
struct Track {
    tier: usize,
    /// Last read: (TAT, kernel time in ns).
    packets: (u64, u64),
    requests: (u32, u64),
    /// Estimated units not pushed yet (this window).
    pending: [f64; 2],
    /// Use the upper bound for the next estimate (a deny was just lifted).
    upper: bool,
    scan: u64,
}

/// Every tracked source of the tiers with global limits.
#[derive(Debug, Default)]
pub struct Usage {
    tracks: HashMap<SourceKey, Track>,
    scan: u64,
    /// Kernel time when the previous scan started.
    previous: Option<u64>,
    window: u64,
}

impl Usage {
    /// Starts a scan in `window`; a new window drops what was not pushed in
    /// the previous one (at most one threshold per source).
    pub fn begin(&mut self, window: u64) {
        self.scan += 1;
        if window != self.window {
            self.window = window;
            for t in self.tracks.values_mut() {
                t.pending = [0.0; 2];
            }
        }
    }

    /// Whether `key` was already read in this scan (the walk handed it over
    /// twice): a second read would count its interval again.
    pub fn seen(&self, key: &SourceKey) -> bool {
        self.tracks.get(key).is_some_and(|t| t.scan == self.scan)
    }

    /// One read of `key`'s buckets at kernel time `now`; appends the deltas
    /// worth pushing to `out`.
    pub fn observe(
        &mut self,
        key: SourceKey,
        tier: usize,
        m: &Measures,
        state: &SourceState,
        now: u64,
        out: &mut Vec<Delta>,
    ) {
        let scan = self.scan;
        let fresh = Track {
            tier,
            packets: (state.packets_tat, now),
            requests: (state.requests_tat(), now),
            pending: [0.0; 2],
            upper: false,
            scan,
        };
        let Some(since) = self.previous else {
            // The first scan only takes the baselines.
            self.tracks.insert(key, fresh);
            return;
        };
        let track = self.tracks.entry(key).or_insert_with(|| fresh.clone());
        let known = track.scan != scan && track.tier == tier;
        if track.tier != tier {
            *track = fresh;
        }
        let upper = track.upper;
        let mut add = |kind: Kind, admitted: f64, threshold: f64, pending: &mut [f64; 2]| {
            let p = &mut pending[kind as usize];
            *p += admitted;
            if *p >= threshold.max(1.0) {
                let units = p.floor();
                *p -= units;
                out.push(Delta {
                    source: key,
                    tier,
                    kind,
                    units: units as u64,
                });
            }
        };
        if let Some(pm) = &m.packets {
            let prev = known.then_some(track.packets);
            let r = estimate::reads_ns(prev, since, state.packets_tat, now, pm.increment);
            add(
                Kind::Packets,
                estimate::admitted(&r, upper),
                pm.threshold,
                &mut track.pending,
            );
        }
        if let Some(rm) = &m.requests {
            let prev = known.then_some(track.requests);
            let r = estimate::reads_ticks(
                prev,
                since,
                state.requests_tat(),
                now,
                rm.increment,
                rm.capacity.min(u32::MAX as u64) as u32,
            );
            add(
                Kind::Requests,
                estimate::admitted(&r, upper),
                rm.threshold,
                &mut track.pending,
            );
        }
        track.packets = (state.packets_tat, now);
        track.requests = (state.requests_tat(), now);
        track.upper = false;
        track.scan = scan;
    }

    /// Ends the scan that started at kernel time `started`: sources not seen
    /// (evicted, or moved to a tier without global limits) are forgotten.
    pub fn finish(&mut self, started: u64) {
        let scan = self.scan;
        self.tracks.retain(|_, t| t.scan == scan);
        self.previous = Some(started);
    }

    /// The next estimate of `key` uses the upper bound: its deny was lifted
    /// and it may restart at full speed.
    pub fn mark_lifted(&mut self, key: &SourceKey) {
        if let Some(t) = self.tracks.get_mut(key) {
            t.upper = true;
        }
    }

    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MS: u64 = 1_000_000;

    fn measures(threshold: f64) -> Measures {
        Measures {
            packets: Some(Measure {
                increment: MS as f64,
                capacity: 10 * MS,
                threshold,
            }),
            requests: None,
        }
    }

    fn state(packets_tat: u64) -> SourceState {
        SourceState {
            packets_tat,
            ..Default::default()
        }
    }

    #[test]
    fn deltas_accumulate_until_worth_a_push_and_reset_per_window() {
        let key = SourceKey::v4(Ipv4Addr::new(192, 0, 2, 7));
        let m = measures(150.0);
        let mut u = Usage::default();
        let mut out = Vec::new();
        // A saturating source: backlogged 10 ms at every read, 100 per 100 ms.
        let mut t = 1_000 * MS;
        u.begin(1);
        u.observe(key, 0, &m, &state(t + 10 * MS), t, &mut out);
        u.finish(t);
        assert!(out.is_empty(), "the first scan only takes baselines");
        let mut pushed = Vec::new();
        for _ in 0..4 {
            t += 100 * MS;
            u.begin(1);
            u.observe(key, 0, &m, &state(t + 10 * MS), t, &mut out);
            u.finish(t);
            pushed.push(out.iter().map(|d| d.units).sum::<u64>());
            out.clear();
        }
        // 100, 200 (push 200), 100, 200 (push 200).
        assert_eq!(pushed, [0, 200, 0, 200]);
        // Pending 0 → 100; a new window drops it.
        t += 100 * MS;
        u.begin(1);
        u.observe(key, 0, &m, &state(t + 10 * MS), t, &mut out);
        u.finish(t);
        assert!(out.is_empty());
        t += 100 * MS;
        u.begin(2);
        u.observe(key, 0, &m, &state(t + 10 * MS), t, &mut out);
        u.finish(t);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(u.len(), 1);
        // Not seen in a scan: forgotten.
        u.begin(2);
        u.finish(t);
        assert!(u.is_empty());
    }

    #[test]
    fn a_lifted_source_is_counted_with_the_upper_bound_once() {
        let key = SourceKey::v4(Ipv4Addr::new(192, 0, 2, 8));
        let m = measures(1.0);
        let mut u = Usage::default();
        let mut out = Vec::new();
        let t0 = 1_000 * MS;
        u.begin(1);
        u.observe(key, 0, &m, &state(t0 - 500 * MS), t0, &mut out);
        u.finish(t0);
        u.mark_lifted(&key);
        // Idle at both reads, TAT moved to 1.150 s: between 1 and 150 packets.
        let t1 = t0 + 200 * MS;
        u.begin(1);
        u.observe(key, 0, &m, &state(t0 + 150 * MS), t1, &mut out);
        u.finish(t1);
        assert_eq!(out[0].units, 150);
        out.clear();
        let t2 = t1 + 200 * MS;
        u.begin(1);
        u.observe(key, 0, &m, &state(t1 + 150 * MS), t2, &mut out);
        u.finish(t2);
        // Back to the estimate: idle at both reads, so no busy time sampled.
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn source_keys_name_addresses_and_prefixes() {
        let k = SourceKey::v4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(k.label(64), "192.0.2.7");
        assert_eq!(k.net(64).to_string(), "192.0.2.7/32");
        let k = SourceKey::V6(0x2001_0db8_0000_0000);
        assert_eq!(k.label(48), "2001:db8::/48");
        assert_eq!(k.net(48).to_string(), "2001:db8::/48");
    }
}
