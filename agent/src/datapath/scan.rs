//! Per-tier source activity from the kernel's bucket state: which sources were
//! active in the last second and which are being limited right now.
//!
//! The kernel keeps no tier per source (state is keyed by source only), so each
//! source is classified by a userspace longest-prefix match over the rules the
//! kernel holds. A scan reads every tracked source, in batches ([`SourceWalk`]).

use std::{collections::HashMap, io};

use ipnet::IpNet;
use tollgate_common::{LimitKind, MAX_TIERS, RULE_TIER, RuleValue, SourceState, TierConfig};

use super::{
    kernel::{self, KernelError, Maps},
    walk::SourceWalk,
};

pub struct Scan {
    pub active: Vec<u64>,
    pub limited: Vec<u64>,
    pub tracked: (u64, u64),
}

/// Longest-prefix match over one family's rules: one hash lookup per prefix
/// length in use, longest first.
struct Lpm {
    by_len: Vec<(u8, HashMap<u128, RuleValue>)>,
}

impl Lpm {
    fn new(rules: impl Iterator<Item = (u8, u128, RuleValue)>, width: u8) -> Lpm {
        let mut map: HashMap<u8, HashMap<u128, RuleValue>> = HashMap::new();
        for (len, addr, v) in rules {
            map.entry(len)
                .or_default()
                .insert(mask(addr, len, width), v);
        }
        let mut by_len: Vec<_> = map.into_iter().collect();
        by_len.sort_by_key(|e| std::cmp::Reverse(e.0));
        Lpm { by_len }
    }

    /// `addr` is valid in its top `known` bits only (IPv6 keys are 64-bit prefixes).
    fn lookup(&self, addr: u128, width: u8, known: u8) -> Option<RuleValue> {
        self.by_len
            .iter()
            .filter(|(len, _)| *len <= known)
            .find_map(|(len, m)| m.get(&mask(addr, *len, width)).copied())
    }
}

fn mask(addr: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let keep = u128::MAX << (width - len);
        addr & keep & (u128::MAX >> (128 - width as u32))
    }
}

/// What a scan needs from the kernel besides the source maps, read under the
/// daemon's lock (a few syscalls); the walk itself runs without it.
pub struct ScanInput {
    pub default_tier: u32,
    /// The tier table by index.
    pub tiers: Vec<TierConfig>,
    pub rules: Vec<(IpNet, RuleValue)>,
    /// Which tier indices are configured (the others are not counted).
    pub configured: Vec<bool>,
}

impl ScanInput {
    pub fn read(maps: &Maps, configured: impl Fn(u32) -> bool) -> Result<ScanInput, KernelError> {
        Ok(ScanInput {
            default_tier: maps.settings()?.default_tier,
            tiers: (0..MAX_TIERS)
                .map(|i| maps.tier(i))
                .collect::<Result<_, _>>()?,
            rules: maps.rules()?,
            configured: (0..MAX_TIERS).map(configured).collect(),
        })
    }
}

/// Room, below which a source counts as limited: two packets in its packets
/// bucket, or two full-size frames in its bytes bucket. A source sending over
/// its rate never has more than one packet of room (it is refused until the
/// next emission interval, and its next packet then takes the room again), so
/// it is counted in every scan, not only when the scan happens to land in the
/// instant its bucket is exactly full.
const LIMITED_ROOM_PACKETS: u64 = 2;
const LIMITED_ROOM_BYTES: u64 = 2 * 1514;

/// Classifies every tracked source by its tier (a userspace longest-prefix
/// match over the kernel's rules) and its bucket state.
pub fn scan(input: &ScanInput, walk: &SourceWalk) -> io::Result<Scan> {
    let mut out = Scan {
        active: vec![0; MAX_TIERS as usize],
        limited: vec![0; MAX_TIERS as usize],
        tracked: (0, 0),
    };
    let v4 = Lpm::new(
        input.rules.iter().filter_map(|(n, v)| match n {
            IpNet::V4(n) => Some((n.prefix_len(), u32::from(n.network()) as u128, *v)),
            _ => None,
        }),
        32,
    );
    let v6 = Lpm::new(
        input.rules.iter().filter_map(|(n, v)| match n {
            IpNet::V6(n) => Some((n.prefix_len(), u128::from(n.network()), *v)),
            _ => None,
        }),
        128,
    );
    let now = kernel::clock_ns();
    let tier_of = |rule: Option<RuleValue>| -> Option<u32> {
        match rule {
            Some(r) if r.action == RULE_TIER => Some(r.tier),
            Some(_) => None, // allow/deny: no buckets in use
            None => Some(input.default_tier),
        }
    };
    let mut judge = |tier: Option<u32>, state: &SourceState| {
        let Some(t) = tier.filter(|t| *t < MAX_TIERS && input.configured[*t as usize]) else {
            return;
        };
        let cfg = &input.tiers[t as usize];
        let recent = now.saturating_sub(1_000_000_000);
        if state.packets_tat > recent || state.bytes_tat > recent {
            out.active[t as usize] += 1;
        }
        let packets = &cfg.limits[LimitKind::Packets as usize];
        let bytes = &cfg.limits[LimitKind::Bytes as usize];
        let short_of = |tat: u64, limit: &tollgate_common::Limit, room: u64| {
            // A bucket smaller than the room (burst 1) counts when it is full.
            let room = limit.increment_ns(room).min(limit.capacity_ns);
            !limit.is_unlimited() && tat.saturating_sub(now) + room > limit.capacity_ns
        };
        if short_of(state.packets_tat, packets, LIMITED_ROOM_PACKETS)
            || short_of(state.bytes_tat, bytes, LIMITED_ROOM_BYTES)
        {
            out.limited[t as usize] += 1;
        }
    };
    out.tracked.0 = walk.v4(|key, state| {
        let addr = u32::from_be_bytes(key.to_ne_bytes()) as u128;
        judge(tier_of(v4.lookup(addr, 32, 32)), state);
    })?;
    out.tracked.1 = walk.v6(|key, state| {
        judge(tier_of(v6.lookup((key as u128) << 64, 128, 64)), state);
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let r = |tier| RuleValue {
            action: RULE_TIER,
            tier,
        };
        let lpm = Lpm::new(
            [
                (
                    8u8,
                    u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) as u128,
                    r(1),
                ),
                (
                    24,
                    u32::from(std::net::Ipv4Addr::new(10, 1, 2, 0)) as u128,
                    r(2),
                ),
            ]
            .into_iter(),
            32,
        );
        let a = |x: [u8; 4]| u32::from(std::net::Ipv4Addr::from(x)) as u128;
        assert_eq!(lpm.lookup(a([10, 1, 2, 3]), 32, 32).unwrap().tier, 2);
        assert_eq!(lpm.lookup(a([10, 9, 2, 3]), 32, 32).unwrap().tier, 1);
        assert!(lpm.lookup(a([11, 0, 0, 1]), 32, 32).is_none());
    }
}
