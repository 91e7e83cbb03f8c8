//! `tollgate explain ADDRESS`: what the data path does to one address and
//! why, read from the kernel (its rules, the tier table, the source's bucket
//! state and the kernel clock) and the configuration, without changing
//! anything.

use std::net::IpAddr;

use ipnet::IpNet;
use tollgate_common::{
    Limit, LimitKind, RULE_ALLOW, RULE_DENY, RuleValue, SourceState, TierConfig, aggregate_slot,
    gcra::TICK_SHIFT,
};

use super::{Daemon, error::CommandError};
use crate::{
    datapath::kernel,
    proto::{BucketState, ExplainData, ExplainRule},
    spec::{LimitField, Lpm, RuleTarget, SourceKey, TierMode},
};

const NS: f64 = 1e9;

/// A 64-bit nanosecond bucket (packets, bytes, aggregate) at `now`.
pub(super) fn bucket_ns(limit: &Limit, tat: u64, now: u64) -> (f64, f64, f64) {
    let backlog = tat.saturating_sub(now).min(limit.capacity_ns);
    let room = limit.capacity_ns - backlog;
    let available = room as f64 * (1u64 << tollgate_common::gcra::INTERVAL_SHIFT) as f64
        / limit.interval_fp as f64;
    let wait = (backlog + limit.increment_ns(1)).saturating_sub(limit.capacity_ns);
    (available, wait as f64 / NS, backlog as f64 / NS)
}

/// A 32-bit tick bucket (connections, requests) at `now` (see
/// `gcra::admit_wrapping`: a TAT more than the capacity ahead is stale).
pub(super) fn bucket_ticks(limit: &Limit, tat: u32, now: u64) -> (f64, f64, f64) {
    let now_ticks = (now >> TICK_SHIFT) as u32;
    let cap = limit.capacity_ticks();
    let inc = limit.increment_ticks().max(1);
    let ahead = tat.wrapping_sub(now_ticks);
    let backlog = if ahead != 0 && ahead <= cap { ahead } else { 0 };
    let available = (cap - backlog) as f64 / inc as f64;
    let wait = (backlog as u64 + inc as u64).saturating_sub(cap as u64);
    let tick = (1u64 << TICK_SHIFT) as f64;
    (
        available,
        wait as f64 * tick / NS,
        backlog as f64 * tick / NS,
    )
}

/// The TAT of `kind` in a source's state.
fn tat_of(state: &SourceState, kind: LimitKind, limit: &Limit, now: u64) -> (f64, f64, f64) {
    match kind {
        LimitKind::Packets => bucket_ns(limit, state.packets_tat, now),
        LimitKind::Bytes => bucket_ns(limit, state.bytes_tat, now),
        LimitKind::Connections => bucket_ticks(limit, state.connections_tat(), now),
        LimitKind::Requests => bucket_ticks(limit, state.requests_tat(), now),
    }
}

fn field_of(kind: LimitKind) -> LimitField {
    match kind {
        LimitKind::Packets => LimitField::Packets,
        LimitKind::Bytes => LimitField::Bytes,
        LimitKind::Connections => LimitField::Connections,
        LimitKind::Requests => LimitField::Requests,
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

impl Daemon {
    /// The kernel's rule for `addr` (longest prefix over the rules it holds)
    /// and where that rule comes from.
    fn kernel_rule(&self, addr: IpAddr) -> Result<Option<(IpNet, RuleValue)>, CommandError> {
        let rules = self.maps.rules().map_err(CommandError::ReadMaps)?;
        let mut lpm = Lpm::default();
        for (net, v) in rules {
            lpm.insert(net, (net, v));
        }
        Ok(lpm.lookup(addr).copied())
    }

    fn rule_origin(&self, net: &IpNet, value: &RuleValue) -> String {
        if self.banned.get(net) == Some(value) {
            return "ban".to_owned();
        }
        if let Some(ban) = self.ban_origin(net, value) {
            return ban;
        }
        self.config_origin(net, value).to_owned()
    }

    fn config_origin(&self, net: &IpNet, value: &RuleValue) -> &'static str {
        if self.pinned.get(net) == Some(value) {
            return "api-key pin";
        }
        if let Some(rule) = self.effective.rule(net) {
            let same = matches!(
                (&rule.target, value.action),
                (RuleTarget::Allow, RULE_ALLOW) | (RuleTarget::Deny, RULE_DENY)
            ) || matches!(&rule.target, RuleTarget::Tier(t)
                if self.state.tier_indices.get(t) == Some(&value.tier));
            if same {
                return if self.state.overlay.rules.contains_key(&net.to_string()) {
                    "cli"
                } else {
                    "file"
                };
            }
        }
        if value.action == RULE_DENY && self.file.cluster.is_some() {
            "cluster deny"
        } else {
            "kernel"
        }
    }

    /// `explain`: everything but the recent traffic (the caller adds it from
    /// the talkers, which are not behind this lock).
    pub(super) fn explain(&self, addr: IpAddr) -> Result<ExplainData, CommandError> {
        let settings = self.maps.settings().map_err(CommandError::ReadMaps)?;
        let rule = self.kernel_rule(addr)?;
        let now = kernel::clock_ns();
        let (action, tier_index) = match rule {
            Some((_, v)) if v.action == RULE_ALLOW => ("allowed", v.tier),
            // A deny that has ended (a CrowdSec ban or cluster deny the
            // daemon has not removed yet) no longer applies: its tier does.
            Some((_, v)) if v.denies_at(now) => ("denied", v.tier),
            Some((_, v)) => ("limited", v.tier),
            None => ("limited", settings.default_tier),
        };
        let names = self.in_force().names.by_index();
        let tier = names
            .get(&tier_index)
            .cloned()
            .unwrap_or_else(|| format!("#{tier_index}"));
        let spec = self.effective.tier(&tier);
        let cfg: TierConfig = self.maps.tier(tier_index).map_err(CommandError::ReadMaps)?;
        let key = SourceKey::of(addr, cfg.ipv6_prefix);
        let state = match key {
            SourceKey::V4(k) => self.maps.sources_v4.get(&k, 0).ok(),
            SourceKey::V6(k) => self.maps.sources_v6.get(&k, 0).ok(),
        };
        let limited = action == "limited";
        let mut buckets = Vec::new();
        for kind in LimitKind::ALL {
            let limit = &cfg.limits[kind as usize];
            if limit.is_unlimited() || !limited {
                continue;
            }
            let (available, next, full) = match &state {
                Some(s) => tat_of(s, kind, limit, now),
                None => (limit.burst() as f64, 0.0, 0.0),
            };
            buckets.push(BucketState {
                limit: kind.name().to_owned(),
                rate: spec.and_then(|s| s.limit(field_of(kind))).map_or_else(
                    || format!("{:.0}/s", limit.rate_per_second()),
                    |l| l.rate.clone(),
                ),
                per_second: limit.rate_per_second(),
                burst: limit.burst(),
                available,
                next_in_secs: next,
                full_in_secs: full,
            });
        }
        let aggregate = (!cfg.aggregate.is_unlimited() && limited).then(|| {
            let tat = self
                .maps
                .aggregate
                .get(&aggregate_slot(tier_index), 0)
                .unwrap_or(0);
            let (available, next, full) = bucket_ns(&cfg.aggregate, tat, now);
            BucketState {
                limit: "aggregate".to_owned(),
                rate: spec
                    .and_then(|s| s.limit(LimitField::Aggregate))
                    .map_or_else(String::new, |l| l.rate.clone()),
                per_second: cfg.aggregate.rate_per_second(),
                burst: cfg.aggregate.burst(),
                available,
                next_in_secs: next,
                full_in_secs: full,
            }
        });
        let mode = if cfg.is_shadow() {
            TierMode::Shadow
        } else {
            TierMode::Enforce
        };
        let label = key.label(cfg.ipv6_prefix);
        let rule = rule.map(|(net, v)| ExplainRule {
            cidr: net.to_string(),
            action: match v.action {
                RULE_ALLOW => "allow",
                RULE_DENY => "deny",
                _ => "tier",
            }
            .to_owned(),
            origin: self.rule_origin(&net, &v).to_owned(),
        });
        let ban = self
            .ban_of(&IpNet::from(addr))
            .map(|(net, b)| crate::proto::BanRow::new(net, b, super::bans::unix_now()));
        let because = match (&rule, &ban) {
            (Some(r), Some(b)) if r.origin == "ban" => format!(
                "rule {} (deny, a ban by {} until {}, {:.0} s left, offence {})",
                r.cidr,
                if b.rule == crate::spec::CLI_BAN {
                    "the CLI".to_owned()
                } else {
                    format!("response rule \"{}\"", b.rule)
                },
                super::bans::format_unix(b.until),
                b.left_secs,
                b.offence
            ),
            (Some(r), _) => format!("rule {} ({}, from {})", r.cidr, r.action, r.origin),
            (None, _) => format!("no rule matches: the default tier {tier}"),
        };
        let summary = match action {
            "denied" => format!("{addr} is dropped: {because}"),
            "allowed" => format!("{addr} passes without limits: {because}"),
            _ => {
                let blocking = buckets
                    .iter()
                    .filter(|b| b.next_in_secs > 0.0)
                    .map(|b| format!("{} (next in {})", b.limit, secs(b.next_in_secs)))
                    .collect::<Vec<_>>();
                let shadow = if mode == TierMode::Shadow {
                    " (shadow: counted, never dropped)"
                } else {
                    ""
                };
                match (&state, blocking.is_empty()) {
                    (None, _) => format!(
                        "{addr} is untracked: would get tier {tier}{shadow}, full burst ({because})"
                    ),
                    (Some(_), true) => format!(
                        "{addr} is tracked as {label} in tier {tier}{shadow}: within its limits now ({because})"
                    ),
                    (Some(_), false) => format!(
                        "{addr} is tracked as {label} in tier {tier}{shadow}: limited by {} ({because})",
                        blocking.join(", ")
                    ),
                }
            }
        };
        Ok(ExplainData {
            address: addr,
            action: action.to_owned(),
            rule,
            default_tier: tier == self.effective.default_tier,
            tier,
            tier_index,
            mode,
            ipv6_prefix: cfg.ipv6_prefix,
            key: label,
            tracked: state.is_some(),
            buckets,
            aggregate,
            recent: None,
            ban,
            summary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_reads_as_tokens_left_and_waits() {
        // 10/s, burst 5: interval 100 ms, capacity 500 ms.
        let l = Limit::per_period(10, 1_000_000_000, 5).expect("limit");
        let now = 10 * 1_000_000_000u64;
        // Idle: full.
        assert_eq!(bucket_ns(&l, 0, now), (5.0, 0.0, 0.0));
        // Three sent at `now`: two left, full in 300 ms.
        let (a, next, full) = bucket_ns(&l, now + 300_000_000, now);
        assert!((a - 2.0).abs() < 1e-9 && next == 0.0 && (full - 0.3).abs() < 1e-9);
        // Five sent: none left, the next in 100 ms.
        let (a, next, _) = bucket_ns(&l, now + 500_000_000, now);
        assert!(a.abs() < 1e-9 && (next - 0.1).abs() < 1e-9, "{a} {next}");
        // The tick form agrees (to a tick).
        let now_t = (now >> TICK_SHIFT) as u32;
        let (a, next, _) = bucket_ticks(&l, now_t.wrapping_add(l.increment_ticks() * 5), now);
        assert!(a < 0.01 && (next - 0.1).abs() < 0.001, "{a} {next}");
        let (a, _, _) = bucket_ticks(&l, 0, now);
        assert!((a - 5.0).abs() < 0.01, "a stale TAT is idle: {a}");
    }
}
