//! Per-tier source activity from the kernel's bucket state: which sources were
//! active in the last second and which are being limited right now.
//!
//! The kernel keeps no tier per source (state is keyed by source only), so each
//! source is classified by a userspace longest-prefix match over the rules the
//! kernel holds. A scan reads every tracked source, in batches ([`SourceWalk`]).

use std::io;

use ipnet::IpNet;
use tollgate_common::{LimitKind, MAX_TIERS, RULE_TIER, RuleValue, SourceState, TierConfig};

use super::{
    kernel::{self, KernelError, Maps},
    walk::SourceWalk,
};
use crate::{
    droplog::{self, Limited},
    spec::{Lpm, SourceKey},
};

pub struct Scan {
    pub active: Vec<u64>,
    pub limited: Vec<u64>,
    pub tracked: (u64, u64),
    /// The limited sources, at most [`droplog::MAX_FOLLOWED`] (for the drop log).
    pub limited_sources: Vec<Limited>,
    /// Limited sources beyond that bound.
    pub limited_over: u64,
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
        limited_sources: Vec::new(),
        limited_over: 0,
    };
    let mut lpm = Lpm::default();
    for (net, v) in &input.rules {
        lpm.insert(*net, *v);
    }
    let now = kernel::clock_ns();
    let tier_of = |key: SourceKey| -> Option<u32> {
        match lpm.lookup_key(key).copied() {
            Some(r) if r.action == RULE_TIER => Some(r.tier),
            Some(_) => None, // allow/deny: no buckets in use
            None => Some(input.default_tier),
        }
    };
    let mut judge = |key: SourceKey, tier: Option<u32>, state: &SourceState| {
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
        let reason = if short_of(state.packets_tat, packets, LIMITED_ROOM_PACKETS) {
            "packets"
        } else if short_of(state.bytes_tat, bytes, LIMITED_ROOM_BYTES) {
            "bytes"
        } else {
            return;
        };
        out.limited[t as usize] += 1;
        if out.limited_sources.len() < droplog::MAX_FOLLOWED {
            out.limited_sources.push(Limited {
                key,
                tier: t,
                reason,
            });
        } else {
            out.limited_over += 1;
        }
    };
    out.tracked.0 = walk.v4(|key, state| {
        judge(SourceKey::V4(key), tier_of(SourceKey::V4(key)), state);
    })?;
    out.tracked.1 = walk.v6(|key, state| {
        judge(SourceKey::V6(key), tier_of(SourceKey::V6(key)), state);
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan classifies sources with the shared matcher (see `spec::Lpm`).
    #[test]
    fn longest_prefix_wins() {
        let r = |tier| RuleValue {
            action: RULE_TIER,
            tier,
            expires_ns: 0,
        };
        let mut lpm = Lpm::default();
        lpm.insert("10.0.0.0/8".parse().unwrap(), r(1));
        lpm.insert("10.1.2.0/24".parse().unwrap(), r(2));
        let a = |x: [u8; 4]| SourceKey::v4(std::net::Ipv4Addr::from(x));
        assert_eq!(lpm.lookup_key(a([10, 1, 2, 3])).unwrap().tier, 2);
        assert_eq!(lpm.lookup_key(a([10, 9, 2, 3])).unwrap().tier, 1);
        assert!(lpm.lookup_key(a([11, 0, 0, 1])).is_none());
    }
}
