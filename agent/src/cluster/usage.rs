//! Per-source usage between syncs: reads of each tracked source's admitted
//! counter (the kernel's exact count, [`SourceState::admitted`]) turned into
//! deltas, accumulated until they are worth pushing.

use std::collections::HashMap;

use tollgate_common::{AdmittedDelta, SourceState};

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

/// How one global limit is pushed: the smallest delta worth a push.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measure {
    pub threshold: u64,
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
    /// The source's admitted-counter word at the last read.
    admitted: u64,
    /// Units admitted but not pushed yet (this window).
    pending: [u64; 2],
    scan: u64,
}

/// Every tracked source of the tiers with global limits.
#[derive(Debug, Default)]
pub struct Usage {
    tracks: HashMap<SourceKey, Track>,
    scan: u64,
    /// Whether a complete scan took the baselines (the first after start).
    based: bool,
    /// Sources first seen in the next scan take a baseline instead of
    /// counting from zero (the configuration changed: a source may have just
    /// moved into a tier with global limits, with a counter from before).
    rebase_new: bool,
    window: u64,
}

impl Usage {
    /// Starts a scan in `window`; a new window drops what was not pushed in
    /// the previous one (under one threshold per source).
    pub fn begin(&mut self, window: u64) {
        self.scan += 1;
        if window != self.window {
            self.window = window;
            for t in self.tracks.values_mut() {
                t.pending = [0; 2];
            }
        }
    }

    /// Whether `key` was already read in this scan (the walk handed it over
    /// twice): a second read would count its interval again.
    pub fn seen(&self, key: &SourceKey) -> bool {
        self.tracks.get(key).is_some_and(|t| t.scan == self.scan)
    }

    /// One read of `key`'s admitted counter; appends the deltas worth pushing
    /// to `out`. The counter is the kernel's exact count
    /// ([`SourceState::admitted`]), so the delta since the last read is what
    /// the source was admitted in between, nothing estimated:
    ///
    /// * a source read before: the difference of the two reads
    ///   ([`AdmittedDelta::between`]);
    /// * a source first seen: everything its counter holds, since its state
    ///   was made after the last complete scan (which read every source)
    ///   and counts from zero; except in the first scan after start or after
    ///   a configuration change, which only take baselines;
    /// * a counter that went backwards (the state was evicted and made again
    ///   between the reads): everything it holds now. What the old state
    ///   counted after its last read is lost, as is the first interval of a
    ///   source first seen in a baseline scan.
    pub fn observe(
        &mut self,
        key: SourceKey,
        tier: usize,
        m: &Measures,
        state: &SourceState,
        out: &mut Vec<Delta>,
    ) {
        let scan = self.scan;
        let word = state.admitted;
        let delta = match self.tracks.get_mut(&key) {
            Some(track) => {
                let d = AdmittedDelta::between(track.admitted, word)
                    .unwrap_or(AdmittedDelta::since_zero(word));
                if track.tier != tier {
                    track.tier = tier;
                    track.pending = [0; 2];
                }
                d
            }
            None => {
                let baseline = !self.based || self.rebase_new;
                self.tracks.insert(
                    key,
                    Track {
                        tier,
                        admitted: word,
                        pending: [0; 2],
                        scan,
                    },
                );
                if baseline {
                    return;
                }
                AdmittedDelta::since_zero(word)
            }
        };
        let track = self.tracks.get_mut(&key).expect("tracked above");
        track.admitted = word;
        track.scan = scan;
        let mut add = |kind: Kind, units: u64, measure: &Option<Measure>| {
            let Some(measure) = measure else { return };
            let p = &mut track.pending[kind as usize];
            *p += units;
            if *p >= measure.threshold.max(1) {
                out.push(Delta {
                    source: key,
                    tier,
                    kind,
                    units: *p,
                });
                *p = 0;
            }
        };
        add(Kind::Packets, delta.packets, &m.packets);
        add(Kind::Requests, delta.requests, &m.requests);
    }

    /// Ends a complete scan: sources not seen (evicted, or moved to a tier
    /// without global limits) are forgotten.
    pub fn finish(&mut self) {
        let scan = self.scan;
        self.tracks.retain(|_, t| t.scan == scan);
        self.based = true;
        self.rebase_new = false;
    }

    /// The configuration changed: sources first seen in the next complete
    /// scan take a baseline (see [`Usage::observe`]).
    pub fn rebase_new_sources(&mut self) {
        self.rebase_new = true;
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

    fn measures(threshold: u64) -> Measures {
        Measures {
            packets: Some(Measure { threshold }),
            requests: Some(Measure { threshold: 1 }),
        }
    }

    fn state(packets: u32, requests: u32) -> SourceState {
        SourceState {
            admitted: packets as u64 | (requests as u64) << 32,
            ..Default::default()
        }
    }

    fn scan(u: &mut Usage, window: u64, reads: &[(SourceKey, SourceState)]) -> Vec<Delta> {
        let mut out = Vec::new();
        u.begin(window);
        for (k, s) in reads {
            u.observe(*k, 0, &measures(150), s, &mut out);
        }
        u.finish();
        out
    }

    fn units(out: &[Delta], kind: Kind) -> u64 {
        out.iter().filter(|d| d.kind == kind).map(|d| d.units).sum()
    }

    #[test]
    fn deltas_are_exact_accumulate_until_worth_a_push_and_reset_per_window() {
        let key = SourceKey::v4(Ipv4Addr::new(192, 0, 2, 7));
        let mut u = Usage::default();
        assert!(
            scan(&mut u, 1, &[(key, state(1_000, 0))]).is_empty(),
            "baselines only"
        );
        // 100 a scan: pushed at 200 (threshold 150), exactly.
        let pushed: Vec<u64> = (1..=4)
            .map(|i| {
                units(
                    &scan(&mut u, 1, &[(key, state(1_000 + 100 * i, 0))]),
                    Kind::Packets,
                )
            })
            .collect();
        assert_eq!(pushed, [0, 200, 0, 200]);
        // 100 pending; a new window drops it.
        assert!(scan(&mut u, 1, &[(key, state(1_500, 0))]).is_empty());
        assert!(scan(&mut u, 2, &[(key, state(1_600, 0))]).is_empty());
        assert_eq!(
            units(&scan(&mut u, 2, &[(key, state(1_650, 0))]), Kind::Packets),
            150
        );
        assert_eq!(u.len(), 1);
        // Not seen in a scan: forgotten.
        scan(&mut u, 2, &[]);
        assert!(u.is_empty());
    }

    #[test]
    fn a_new_source_counts_from_zero_except_in_a_baseline_scan() {
        let (a, b) = (
            SourceKey::v4(Ipv4Addr::new(192, 0, 2, 1)),
            SourceKey::v4(Ipv4Addr::new(192, 0, 2, 2)),
        );
        let mut u = Usage::default();
        scan(&mut u, 1, &[(a, state(5, 0))]);
        // b's state was made since the last complete scan: all of it counts.
        let out = scan(&mut u, 1, &[(a, state(5, 0)), (b, state(160, 3))]);
        assert_eq!(
            (units(&out, Kind::Packets), units(&out, Kind::Requests)),
            (160, 3)
        );
        // After a configuration change a new source may carry counts from
        // a tier without global limits: baseline.
        u.rebase_new_sources();
        let c = SourceKey::v4(Ipv4Addr::new(192, 0, 2, 3));
        assert!(scan(&mut u, 1, &[(c, state(500, 0))]).is_empty());
        assert_eq!(
            units(&scan(&mut u, 1, &[(c, state(700, 0))]), Kind::Packets),
            200
        );
    }

    #[test]
    fn a_wrapped_packets_half_is_taken_out_of_the_requests_half() {
        let key = SourceKey::v4(Ipv4Addr::new(192, 0, 2, 9));
        let mut u = Usage::default();
        scan(&mut u, 1, &[(key, state(u32::MAX - 99, 7))]);
        // 300 packets, 2 requests: the kernel's add carried one into the
        // requests half when the packets half wrapped.
        let after = SourceState {
            admitted: (u32::MAX - 99) as u64 + (7u64 << 32) + 300 + (2u64 << 32),
            ..Default::default()
        };
        let out = scan(&mut u, 1, &[(key, after)]);
        assert_eq!(
            (units(&out, Kind::Packets), units(&out, Kind::Requests)),
            (300, 2)
        );
    }

    #[test]
    fn a_counter_that_went_backwards_restarted_from_zero() {
        let key = SourceKey::v4(Ipv4Addr::new(192, 0, 2, 10));
        let mut u = Usage::default();
        scan(&mut u, 1, &[(key, state(10_000, 0))]);
        let out = scan(&mut u, 1, &[(key, state(170, 0))]);
        assert_eq!(units(&out, Kind::Packets), 170);
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
