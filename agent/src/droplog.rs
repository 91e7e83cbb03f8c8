//! The drop log: one structured line when a source starts being limited and
//! one when it stops, bounded so that a flood of new sources cannot flood the
//! log: at most [`LINES_PER_SECOND`] source lines per second (a budget that
//! refills with time), then one summary line counting what was left out.
//!
//! The per-second scan of the source maps (`datapath::scan`) says which
//! sources are limited now; [`DropLog::update`] compares that with the last
//! scan. It follows at most [`MAX_FOLLOWED`] limited sources one by one (more
//! are counted in the summary), so its memory stays bounded too.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::spec::SourceKey;

/// Source lines per second the drop log writes at most (a burst of as
/// many, refilling at this rate).
pub const LINES_PER_SECOND: u32 = 20;
/// Limited sources followed one by one; beyond, only counted.
pub const MAX_FOLLOWED: usize = 65_536;

/// One drop-log line (and one `tollgate events` record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropEvent {
    /// Unix time in seconds.
    pub time: f64,
    /// "limited" (the source started being limited), "released" (it is
    /// within its limits again) or "suppressed" (a summary of the lines left
    /// out to keep the log bounded).
    pub event: String,
    /// The source as the kernel tracks it: an IPv4 address or an IPv6
    /// prefix (empty on a summary).
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub tier: String,
    /// The limit whose bucket is full: "packets" or "bytes".
    #[serde(default)]
    pub reason: String,
    /// Sources of the tier limited at this scan.
    #[serde(default)]
    pub tier_limited: u64,
    /// "released": seconds the source was limited (as seen by the scans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited_secs: Option<f64>,
    /// "suppressed": sources that started being limited, and that stopped,
    /// without a line of their own since the last summary.
    #[serde(default)]
    pub started: u64,
    #[serde(default)]
    pub stopped: u64,
}

/// A source the scan found limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub key: SourceKey,
    pub tier: u32,
    /// The limit whose bucket is full.
    pub reason: &'static str,
}

/// How a tier is named and keys its IPv6 sources.
pub trait TierInfo {
    fn name(&self, tier: u32) -> String;
    fn ipv6_prefix(&self, tier: u32) -> u32;
}

struct Followed {
    tier: u32,
    reason: &'static str,
    since: Instant,
}

/// The drop log's memory: the sources limited at the last scan and the
/// line budget.
pub struct DropLog {
    followed: HashMap<SourceKey, Followed>,
    /// Lines that may be written now (refills at [`LINES_PER_SECOND`]).
    budget: f64,
    refilled: Option<Instant>,
    /// Left out since the last summary.
    started_unlogged: u64,
    stopped_unlogged: u64,
    /// Limited sources of the last scan not followed (over [`MAX_FOLLOWED`]).
    unfollowed: u64,
}

impl Default for DropLog {
    fn default() -> Self {
        DropLog {
            followed: HashMap::new(),
            budget: LINES_PER_SECOND as f64,
            refilled: None,
            started_unlogged: 0,
            stopped_unlogged: 0,
            unfollowed: 0,
        }
    }
}

impl DropLog {
    /// Takes one scan's limited sources (`over`: limited sources the scan
    /// did not list, beyond its own bound) and `tier_limited` (per tier
    /// index); returns the lines to write, within the budget, a summary last
    /// when some were left out.
    pub fn update(
        &mut self,
        limited: &[Limited],
        over: u64,
        tier_limited: &[u64],
        tiers: &impl TierInfo,
        now: Instant,
        unix: f64,
    ) -> Vec<DropEvent> {
        if let Some(at) = self.refilled {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.budget = (self.budget + dt * LINES_PER_SECOND as f64).min(LINES_PER_SECOND as f64);
        }
        self.refilled = Some(now);
        let count = |t: u32| tier_limited.get(t as usize).copied().unwrap_or(0);
        let mut out = Vec::new();
        let mut seen: HashSet<SourceKey> = HashSet::with_capacity(limited.len().min(MAX_FOLLOWED));
        // Started: limited now, not followed before.
        let mut unfollowed = over;
        for l in limited {
            seen.insert(l.key);
            if self.followed.contains_key(&l.key) {
                continue;
            }
            if self.followed.len() >= MAX_FOLLOWED {
                unfollowed += 1;
                continue;
            }
            self.followed.insert(
                l.key,
                Followed {
                    tier: l.tier,
                    reason: l.reason,
                    since: now,
                },
            );
            if self.budget >= 1.0 {
                self.budget -= 1.0;
                out.push(DropEvent {
                    time: unix,
                    event: "limited".into(),
                    source: l.key.label(tiers.ipv6_prefix(l.tier)),
                    tier: tiers.name(l.tier),
                    reason: l.reason.into(),
                    tier_limited: count(l.tier),
                    limited_secs: None,
                    started: 0,
                    stopped: 0,
                });
            } else {
                self.started_unlogged += 1;
            }
        }
        // Newly over the bound: counted as started, once.
        self.started_unlogged += unfollowed.saturating_sub(self.unfollowed);
        self.unfollowed = unfollowed;
        // Stopped: followed, not limited now.
        let gone: Vec<SourceKey> = self
            .followed
            .keys()
            .filter(|k| !seen.contains(k))
            .copied()
            .collect();
        for key in gone {
            let Some(f) = self.followed.remove(&key) else {
                continue;
            };
            if self.budget >= 1.0 {
                self.budget -= 1.0;
                out.push(DropEvent {
                    time: unix,
                    event: "released".into(),
                    source: key.label(tiers.ipv6_prefix(f.tier)),
                    tier: tiers.name(f.tier),
                    reason: f.reason.into(),
                    tier_limited: count(f.tier),
                    limited_secs: Some(now.saturating_duration_since(f.since).as_secs_f64()),
                    started: 0,
                    stopped: 0,
                });
            } else {
                self.stopped_unlogged += 1;
            }
        }
        // One summary per update at most, when the budget has room for it
        // (a summary line is due at least every few seconds under a flood).
        if (self.started_unlogged > 0 || self.stopped_unlogged > 0)
            && (self.budget >= 1.0 || out.len() as u32 >= LINES_PER_SECOND / 2 || out.is_empty())
        {
            out.push(DropEvent {
                time: unix,
                event: "suppressed".into(),
                source: String::new(),
                tier: String::new(),
                reason: String::new(),
                tier_limited: tier_limited.iter().sum(),
                limited_secs: None,
                started: self.started_unlogged,
                stopped: self.stopped_unlogged,
            });
            self.started_unlogged = 0;
            self.stopped_unlogged = 0;
        }
        out
    }

    /// Sources followed now.
    pub fn followed(&self) -> usize {
        self.followed.len()
    }
}

impl DropEvent {
    /// The line as text (for a terminal).
    pub fn text(&self) -> String {
        match self.event.as_str() {
            "limited" => format!(
                "source {} started being limited: tier {}, {} bucket full ({} sources of the tier limited)",
                self.source, self.tier, self.reason, self.tier_limited
            ),
            "released" => format!(
                "source {} is within its limits again: tier {}, {} bucket, limited for {:.1} s",
                self.source,
                self.tier,
                self.reason,
                self.limited_secs.unwrap_or(0.0)
            ),
            _ => format!(
                "{} more sources started and {} stopped being limited (lines suppressed to keep the log bounded; {} sources limited now)",
                self.started, self.stopped, self.tier_limited
            ),
        }
    }
}

/// How long the budget takes to refill completely.
pub const REFILL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;
    impl TierInfo for Names {
        fn name(&self, t: u32) -> String {
            format!("t{t}")
        }
        fn ipv6_prefix(&self, _: u32) -> u32 {
            64
        }
    }

    fn v4(i: u32) -> Limited {
        Limited {
            key: SourceKey::V4(i),
            tier: 0,
            reason: "packets",
        }
    }

    #[test]
    fn a_flood_of_sources_is_bounded_and_summed() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        let flood: Vec<Limited> = (0..100_000).map(v4).collect();
        let lines = log.update(&flood, 0, &[100_000], &Names, t0, 0.0);
        let per_source = lines.iter().filter(|e| e.event == "limited").count();
        assert_eq!(per_source, LINES_PER_SECOND as usize);
        let summary = lines.last().unwrap();
        assert_eq!(summary.event, "suppressed");
        assert_eq!(
            summary.started as usize + per_source,
            100_000,
            "every source is counted once: {summary:?}"
        );
        assert!(log.followed() <= MAX_FOLLOWED);
        // One second later, all released: the budget refilled once.
        let lines = log.update(&[], 0, &[0], &Names, t0 + REFILL, 1.0);
        let released = lines.iter().filter(|e| e.event == "released").count();
        assert_eq!(released, LINES_PER_SECOND as usize);
        assert_eq!(lines.len(), LINES_PER_SECOND as usize + 1);
        // Quiet afterwards; a summary of what is left comes when there is room.
        let lines = log.update(&[], 0, &[0], &Names, t0 + 2 * REFILL, 2.0);
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn start_and_stop_lines_name_the_source() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        let a = Limited {
            key: SourceKey::V6(0x2001_0db8_0001_0000),
            tier: 2,
            reason: "bytes",
        };
        let lines = log.update(&[a], 0, &[0, 0, 1], &Names, t0, 0.0);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].source, "2001:db8:1::/64");
        assert_eq!(
            (lines[0].tier.as_str(), lines[0].reason.as_str()),
            ("t2", "bytes")
        );
        assert!(log.update(&[a], 0, &[0, 0, 1], &Names, t0, 0.0).is_empty());
        let lines = log.update(&[], 0, &[0, 0, 0], &Names, t0 + Duration::from_secs(3), 3.0);
        assert_eq!(lines[0].event, "released");
        assert_eq!(lines[0].limited_secs, Some(3.0));
        assert!(lines[0].text().contains("within its limits again"));
    }
}
