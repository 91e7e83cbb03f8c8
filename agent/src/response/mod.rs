//! Automated response: the engine that turns refusals the kernel samples into
//! bans (`[[response]]`), fail2ban-like, as pure code: per-source counts of
//! the seconds with refusals and of the refusals over a sliding window
//! ([`Engine`]), escalation with jitter ([`ban_length`], [`offence_number`]),
//! and the host's TCP stack's word that a source really completed a handshake
//! ([`established`]). The daemon feeds it samples, asks it once a second,
//! and issues the bans (`daemon/bans.rs`).

pub mod established;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;

use crate::spec::{BanBook, Evidence, ResponseRule};

/// Sources the engine follows at once; evidence about more is counted in
/// [`Engine::untracked`] and dropped, so memory stays bounded under a flood
/// of sources.
pub const MAX_TRACKED: usize = 65_536;
/// A ban's length is its escalated length times a uniform factor in
/// `[1 - JITTER, 1 + JITTER]`, so a botnet cannot time the unban.
pub const JITTER: f64 = 0.10;
/// The longest `window` a rule may have (seconds kept per source).
pub const MAX_WINDOW_SECS: u64 = 3600;

/// One second of a source's refusals, by evidence class.
#[derive(Clone, Copy, Debug)]
struct Second {
    at: u64,
    refused: [u64; 2],
}

fn class(e: Evidence) -> usize {
    match e {
        Evidence::Requests => 0,
        Evidence::Packets => 1,
    }
}

/// A source's recent refusals.
#[derive(Debug)]
struct Track {
    tier: u32,
    seconds: VecDeque<Second>,
}

/// A source a rule would ban now.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub net: IpNet,
    pub tier: u32,
    /// Index of the rule in the configuration's `[[response]]` list.
    pub rule: usize,
    /// Seconds with refusals within the rule's window.
    pub refused_seconds: u32,
    /// Refusals (estimated from samples) within the rule's window.
    pub refused: u64,
}

/// What the engine asks of the configuration while judging.
pub trait Judging {
    /// The name of the tier at this kernel index.
    fn tier_name(&self, tier: u32) -> Option<String>;
    /// Whether a configured allow rule is the longest prefix matching `net`.
    fn allow_listed(&self, net: &IpNet) -> bool;
    /// Whether `net` is banned already (it is not judged again).
    fn banned(&self, net: &IpNet) -> bool;
}

/// Per-source sliding windows of refusals.
#[derive(Debug, Default)]
pub struct Engine {
    tracks: HashMap<IpNet, Track>,
    /// Evidence dropped because [`MAX_TRACKED`] sources were followed.
    pub untracked: u64,
}

impl Engine {
    /// Counts `weight` refusals of class `evidence` by `net` (a source as
    /// its tier keys it) at second `at`.
    pub fn observe(&mut self, net: IpNet, tier: u32, evidence: Evidence, weight: u64, at: u64) {
        if !self.tracks.contains_key(&net) && self.tracks.len() >= MAX_TRACKED {
            self.untracked += 1;
            return;
        }
        let track = self.tracks.entry(net).or_insert_with(|| Track {
            tier,
            seconds: VecDeque::new(),
        });
        track.tier = tier;
        match track.seconds.back_mut() {
            Some(s) if s.at == at => s.refused[class(evidence)] += weight,
            _ => {
                let mut refused = [0; 2];
                refused[class(evidence)] = weight;
                track.seconds.push_back(Second { at, refused });
                if track.seconds.len() as u64 > MAX_WINDOW_SECS {
                    track.seconds.pop_front();
                }
            }
        }
    }

    /// Sources followed now.
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Whether some source was refused a request at second `since` or later
    /// (the moment to ask the TCP stack who is connected).
    pub fn requests_refused_since(&self, since: u64) -> bool {
        self.tracks.values().any(|t| {
            t.seconds
                .iter()
                .rev()
                .take_while(|s| s.at >= since)
                .any(|s| s.refused[class(Evidence::Requests)] > 0)
        })
    }

    /// The sources a rule bans at second `at`: for each source, the first
    /// rule (in order) that applies to its tier, does not ignore it, and
    /// whose threshold it reached within the rule's window. An allow-listed
    /// or already banned source is never found. A found source's counts
    /// start over. Seconds older than every window are forgotten.
    pub fn judge(&mut self, at: u64, rules: &[ResponseRule], ctx: &impl Judging) -> Vec<Finding> {
        let longest = rules.iter().map(|r| r.window.as_secs()).max().unwrap_or(0);
        let mut found = Vec::new();
        self.tracks.retain(|net, track| {
            while track.seconds.front().is_some_and(|s| s.at + longest <= at) {
                track.seconds.pop_front();
            }
            if track.seconds.is_empty() {
                return false;
            }
            if ctx.allow_listed(net) || ctx.banned(net) {
                return false;
            }
            let tier = ctx.tier_name(track.tier);
            for (i, rule) in rules.iter().enumerate() {
                if !tier.as_deref().is_some_and(|t| rule.applies_to(t)) || rule.ignores(net) {
                    continue;
                }
                let (seconds, refused) = window_counts(&track.seconds, at, rule);
                let by_seconds = rule.refused_seconds.is_some_and(|n| seconds >= n);
                let by_count = rule.refused_over.is_some_and(|x| refused > x);
                if by_seconds || by_count {
                    found.push(Finding {
                        net: *net,
                        tier: track.tier,
                        rule: i,
                        refused_seconds: seconds,
                        refused,
                    });
                    return false;
                }
            }
            true
        });
        found.sort_by_key(|f| f.net);
        found
    }
}

/// Seconds with refusals and refusals of the rule's class within the rule's
/// window ending at `at` (inclusive): `(at - window, at]`.
fn window_counts(seconds: &VecDeque<Second>, at: u64, rule: &ResponseRule) -> (u32, u64) {
    let from = (at + 1).saturating_sub(rule.window.as_secs());
    let c = class(rule.evidence);
    seconds
        .iter()
        .filter(|s| s.at >= from && s.at <= at && s.refused[c] > 0)
        .fold((0, 0), |(n, sum), s| (n + 1, sum + s.refused[c]))
}

/// Which offence a new ban of `net` by `rule` is at unix time `now`: one more
/// than the source's remembered offences, which are forgotten
/// `forget_after` after its last ban ended.
pub fn offence_number(book: &BanBook, net: &IpNet, rule: &ResponseRule, now: f64) -> u32 {
    match book.offences.get(net) {
        Some(o) if o.last_until + rule.forget_after.as_secs_f64() > now => o.count + 1,
        _ => 1,
    }
}

/// The ban for the `offence`th offence: `ban × 2^(offence-1)`, at most
/// `max_ban`, times `1 + JITTER × jitter` (`jitter` in `[-1, 1]`, uniform
/// when drawn by the daemon).
pub fn ban_length(rule: &ResponseRule, offence: u32, jitter: f64) -> Duration {
    let doublings = offence.saturating_sub(1).min(60) as i32;
    let escalated = (rule.ban.as_secs_f64() * 2f64.powi(doublings)).min(rule.max_ban.as_secs_f64());
    Duration::from_secs_f64(escalated * (1.0 + JITTER * jitter.clamp(-1.0, 1.0)))
}

/// Sources the TCP stack showed connected (or recently connected) to a local
/// HTTP port, and when.
#[derive(Debug, Default)]
pub struct Confirmations {
    seen: HashMap<IpAddr, u64>,
}

impl Confirmations {
    /// Records the peers of one read of the TCP stack at second `at`.
    pub fn record(&mut self, peers: impl IntoIterator<Item = IpAddr>, at: u64) {
        for p in peers {
            self.seen.insert(p, at);
        }
    }

    /// Whether an address in `net` was seen connected in `(at - window, at]`.
    pub fn confirms(&self, net: &IpNet, at: u64, window: Duration) -> bool {
        let from = (at + 1).saturating_sub(window.as_secs());
        self.seen
            .iter()
            .any(|(addr, seen)| *seen >= from && net.contains(addr))
    }

    /// Forgets what was seen before `before`.
    pub fn forget_before(&mut self, before: u64) {
        self.seen.retain(|_, at| *at >= before);
    }
}

#[cfg(test)]
mod tests;
