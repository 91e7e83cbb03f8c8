//! Heavy hitters without unbounded memory: the Space-Saving algorithm
//! (Metwally, Agrawal, El Abbadi 2005) over the kernel's sampled verdicts.
//!
//! Keeps at most `capacity` sources. A new source evicts the one with the
//! smallest count and inherits that count as its error bound, so any source
//! whose true weight exceeds total/capacity is guaranteed to be present.

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use tollgate_common::{VERDICT_COUNT, Verdict};

pub(crate) use crate::proto::TopBy;

/// One row of `tollgate top`: estimated counts (already scaled by the sampling
/// rate) and the estimate's upper error bound.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TalkerRow {
    pub source: IpAddr,
    pub tier: u32,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub requests: u64,
    /// The ranked count may overstate the truth by at most this much.
    pub error: u64,
}

/// A tracked bucket's sampled traffic: one IPv4 address, or the addresses
/// of one IPv6 prefix summed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BucketRow {
    pub bucket: IpNet,
    pub tier: u32,
    /// Addresses of the bucket in the summary.
    pub addresses: u64,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub requests: u64,
    pub error: u64,
    pub verdicts: [u64; VERDICT_COUNT as usize],
}

impl Default for BucketRow {
    fn default() -> Self {
        BucketRow {
            bucket: IpNet::V4(Default::default()),
            tier: 0,
            addresses: 0,
            packets: 0,
            bytes: 0,
            drops: 0,
            requests: 0,
            error: 0,
            verdicts: [0; VERDICT_COUNT as usize],
        }
    }
}

impl BucketRow {
    pub(crate) fn count(&self, by: TopBy) -> u64 {
        match by {
            TopBy::Packets => self.packets,
            TopBy::Drops => self.drops,
            TopBy::Requests => self.requests,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    tier: u32,
    packets: u64,
    bytes: u64,
    drops: u64,
    requests: u64,
    error: [u64; 3],
    /// Estimated packets by verdict (indexed by `Verdict as usize`).
    verdicts: [u64; VERDICT_COUNT as usize],
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            tier: 0,
            packets: 0,
            bytes: 0,
            drops: 0,
            requests: 0,
            error: [0; 3],
            verdicts: [0; VERDICT_COUNT as usize],
        }
    }
}

impl Entry {
    fn count(&self, by: TopBy) -> u64 {
        match by {
            TopBy::Packets => self.packets,
            TopBy::Drops => self.drops,
            TopBy::Requests => self.requests,
        }
    }
}

/// Space-saving summaries of sources, one per ranking, sharing one table.
pub(crate) struct Talkers {
    capacity: usize,
    entries: HashMap<IpAddr, Entry>,
}

impl Talkers {
    pub(crate) fn new(capacity: usize) -> Talkers {
        Talkers {
            capacity: capacity.max(1),
            entries: HashMap::with_capacity(capacity.max(1) + 1),
        }
    }

    /// Records one sample standing for `scale` packets of `bytes` bytes each.
    pub(crate) fn observe(
        &mut self,
        source: IpAddr,
        tier: u32,
        verdict: Verdict,
        request: bool,
        bytes: u64,
        scale: u64,
    ) {
        if !self.entries.contains_key(&source) && self.entries.len() >= self.capacity {
            // Evict the minimum by packets; the newcomer inherits its counts as error.
            if let Some((&victim, _)) = self.entries.iter().min_by_key(|(_, e)| e.packets) {
                let old = self.entries.remove(&victim).unwrap_or_default();
                self.entries.insert(
                    source,
                    Entry {
                        tier,
                        packets: old.packets,
                        bytes: 0,
                        drops: old.drops,
                        requests: old.requests,
                        error: [old.packets, old.drops, old.requests],
                        verdicts: [0; VERDICT_COUNT as usize],
                    },
                );
            }
        }
        let e = self.entries.entry(source).or_default();
        e.tier = tier;
        e.packets += scale;
        e.bytes += bytes * scale;
        e.verdicts[verdict as usize] += scale;
        if verdict.drops() {
            e.drops += scale;
        }
        if request {
            e.requests += scale;
        }
    }

    /// Records a sampled HTTP request (its packet is counted by verdict samples).
    pub(crate) fn observe_request(&mut self, source: IpAddr, tier: u32, scale: u64) {
        if let Some(e) = self.entries.get_mut(&source) {
            e.tier = tier;
            e.requests += scale;
        } else if self.entries.len() < self.capacity {
            self.entries.insert(
                source,
                Entry {
                    tier,
                    requests: scale,
                    ..Default::default()
                },
            );
        }
    }

    /// The `n` heaviest sources by `by`, heaviest first.
    pub(crate) fn top(&self, by: TopBy, n: usize) -> Vec<TalkerRow> {
        let mut rows: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.count(by) > 0)
            .map(|(src, e)| TalkerRow {
                source: *src,
                tier: e.tier,
                packets: e.packets,
                bytes: e.bytes,
                drops: e.drops,
                requests: e.requests,
                error: e.error[by as usize],
            })
            .collect();
        rows.sort_by(|a, b| {
            let key = |r: &TalkerRow| match by {
                TopBy::Packets => r.packets,
                TopBy::Drops => r.drops,
                TopBy::Requests => r.requests,
            };
            key(b).cmp(&key(a)).then(a.source.cmp(&b.source))
        });
        rows.truncate(n);
        rows
    }

    /// Halves every count, so the summary follows what is heavy *now*
    /// (call periodically; exponential decay with a half-life of one period).
    pub(crate) fn decay(&mut self) {
        self.entries.retain(|_, e| {
            e.packets /= 2;
            e.bytes /= 2;
            e.drops /= 2;
            e.requests /= 2;
            for x in &mut e.error {
                *x /= 2;
            }
            for x in &mut e.verdicts {
                *x /= 2;
            }
            e.packets > 0
        });
    }

    /// Every source within `net` (all of them without one), summed per
    /// bucket: IPv6 addresses grouped by `ipv6_prefix` (what the kernel
    /// enforces), IPv4 addresses alone. Heaviest by `by` first.
    pub(crate) fn buckets(
        &self,
        by: TopBy,
        net: Option<IpNet>,
        ipv6_prefix: impl Fn(u32) -> u32,
    ) -> Vec<BucketRow> {
        let mut sums: HashMap<IpNet, BucketRow> = HashMap::new();
        for (src, e) in &self.entries {
            if net.is_some_and(|n| !n.contains(src)) {
                continue;
            }
            let bucket = match src {
                IpAddr::V4(_) => IpNet::from(*src),
                IpAddr::V6(a) => {
                    let len = ipv6_prefix(e.tier).clamp(1, 128) as u8;
                    IpNet::V6(ipnet::Ipv6Net::new(*a, len).expect("clamped").trunc())
                }
            };
            let row = sums.entry(bucket).or_insert_with(|| BucketRow {
                bucket,
                tier: e.tier,
                ..Default::default()
            });
            row.addresses += 1;
            row.packets += e.packets;
            row.bytes += e.bytes;
            row.drops += e.drops;
            row.requests += e.requests;
            row.error += e.error[by as usize];
            for (v, x) in row.verdicts.iter_mut().zip(e.verdicts) {
                *v += x;
            }
        }
        let mut rows: Vec<BucketRow> = sums.into_values().filter(|r| r.count(by) > 0).collect();
        rows.sort_by(|a, b| b.count(by).cmp(&a.count(by)).then(a.bucket.cmp(&b.bucket)));
        rows
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_sources_survive_a_flood_of_singletons() {
        let mut t = Talkers::new(64);
        let heavy: Vec<IpAddr> = (1..=5)
            .map(|i| format!("10.0.0.{i}").parse().unwrap())
            .collect();
        for round in 0..2000u32 {
            for (i, h) in heavy.iter().enumerate() {
                if round % (i as u32 + 1) == 0 {
                    t.observe(*h, 1, Verdict::DroppedPackets, false, 100, 1);
                }
            }
            let noise: IpAddr = std::net::Ipv4Addr::from(0x0a01_0000 + round).into();
            t.observe(noise, 0, Verdict::Passed, false, 60, 1);
        }
        assert!(t.len() <= 64);
        let top = t.top(TopBy::Drops, 5);
        let got: Vec<IpAddr> = top.iter().map(|r| r.source).collect();
        assert_eq!(got, heavy);
        assert_eq!(top[0].drops, 2000);
    }

    #[test]
    fn ipv6_sources_sum_per_enforced_prefix() {
        let mut t = Talkers::new(64);
        for (a, n) in [
            ("2001:db8:1:2::1", 3),
            ("2001:db8:1:3::9", 4),
            ("2001:db8:2::1", 1),
        ] {
            for _ in 0..n {
                t.observe(
                    a.parse().unwrap(),
                    1,
                    Verdict::DroppedPackets,
                    false,
                    60,
                    10,
                );
            }
        }
        t.observe(
            "192.0.2.1".parse().unwrap(),
            0,
            Verdict::Passed,
            false,
            60,
            1,
        );
        let rows = t.buckets(TopBy::Packets, None, |_| 48);
        assert_eq!(rows[0].bucket.to_string(), "2001:db8:1::/48");
        assert_eq!(
            (rows[0].addresses, rows[0].packets, rows[0].drops),
            (2, 70, 70)
        );
        assert_eq!(rows[0].verdicts[Verdict::DroppedPackets as usize], 70);
        assert_eq!(rows.len(), 3);
        let only = t.buckets(
            TopBy::Packets,
            Some("192.0.2.0/24".parse().unwrap()),
            |_| 48,
        );
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].bucket.to_string(), "192.0.2.1/32");
    }
}
