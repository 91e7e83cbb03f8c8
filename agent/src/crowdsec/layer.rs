//! The CrowdSec rule layer: the banned prefixes the daemon holds, and how
//! they go into the kernel's rule tries on top of the configuration's rules
//! and the API-key pins (pure, unit-tested).
//!
//! Precedence, decided once here:
//! - a ban inside (or equal to) a configured **allow** rule's prefix is not
//!   applied: an allow-listed address is never denied by CrowdSec (a range
//!   ban that covers an allow-listed address leaves that address allowed too,
//!   by longest-prefix match);
//! - a ban on a prefix a configured **deny** already covers is redundant and
//!   not written (the config's deny never ends);
//! - otherwise the ban denies, over a tier rule or an API-key pin on the same
//!   prefix and inside any covering tier rule; when it ends in the kernel
//!   (`expires_ns`) its prefix falls back to the tier it would have without it;
//! - a ban inside a longer-lasting ban of a covering prefix is redundant and
//!   not written (when the covering one ends first, the inner one is written).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use tollgate_common::{RULE_DENY, RULE_TIER, RuleValue};

use super::view::{Ban, Change};
use crate::{
    config::{Config, DecisionScope},
    spec::RuleTarget,
};

/// The bans the daemon holds, and the rules it last wrote for them.
#[derive(Debug, Default)]
pub struct Layer {
    bans: BTreeMap<IpNet, Ban>,
    /// The ban rules in the kernel as of the last write ([`Layer::overlay`]'s
    /// answer), to write only differences.
    written: BTreeMap<IpNet, RuleValue>,
}

/// Prefixes by length, to find the prefixes that cover one.
struct Covering<'a, T> {
    lengths: BTreeSet<(bool, u8)>,
    map: &'a BTreeMap<IpNet, T>,
}

impl<'a, T> Covering<'a, T> {
    fn new(map: &'a BTreeMap<IpNet, T>) -> Covering<'a, T> {
        let lengths = map
            .keys()
            .map(|n| (matches!(n, IpNet::V6(_)), n.prefix_len()))
            .collect();
        Covering { lengths, map }
    }

    /// The prefixes strictly shorter than `net` that contain it, longest first.
    fn above(&self, net: &IpNet) -> impl Iterator<Item = (IpNet, &'a T)> + '_ {
        let v6 = matches!(net, IpNet::V6(_));
        let len = net.prefix_len();
        let addr = net.addr();
        self.lengths
            .range((v6, 0)..(v6, len))
            .rev()
            .filter_map(move |&(_, l)| {
                let sup = IpNet::new(addr, l).ok()?.trunc();
                self.map.get(&sup).map(|v| (sup, v))
            })
    }
}

impl Layer {
    /// Banned prefixes.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Whether the kernel holds a rule of this layer for exactly `net`.
    pub fn holds(&self, net: &IpNet) -> bool {
        self.written.contains_key(net)
    }

    pub fn ban(&self, net: &IpNet) -> Option<&Ban> {
        self.bans.get(net)
    }

    /// Takes a step of the view.
    pub fn update(&mut self, change: &Change) {
        for (net, ban) in &change.upsert {
            self.bans.insert(*net, ban.clone());
        }
        for net in &change.remove {
            self.bans.remove(net);
        }
    }

    /// Forgets every ban (the daemon's start: the startup stream is the truth).
    pub fn clear(&mut self) {
        self.bans.clear();
    }

    /// Active bans by scope and origin (the metric's series).
    pub fn counts(&self) -> BTreeMap<(DecisionScope, String), u64> {
        let mut out = BTreeMap::new();
        for b in self.bans.values() {
            *out.entry((b.scope, b.origin.clone())).or_default() += 1;
        }
        out
    }

    /// Bans not enforced because a configured allow rule covers them.
    pub fn allow_listed(&self, cfg: &Config) -> usize {
        let allowed = allowed(cfg);
        self.bans
            .keys()
            .filter(|n| allowed.iter().any(|a| a.contains(*n)))
            .count()
    }

    /// Adds the bans' deny rules to `rules` (the configuration's rules and
    /// the pins, as `desired` made them) by the precedence above; returns
    /// the ban rules it added.
    pub fn overlay(
        &self,
        rules: &mut BTreeMap<IpNet, RuleValue>,
        cfg: &Config,
        default_tier: u32,
    ) -> BTreeMap<IpNet, RuleValue> {
        let mut added = BTreeMap::new();
        if self.bans.is_empty() {
            return added;
        }
        let allowed = allowed(cfg);
        let base = Covering::new(rules);
        let bans = Covering::new(&self.bans);
        for (net, ban) in &self.bans {
            if allowed.iter().any(|a| a.contains(net)) {
                continue;
            }
            let forever_deny = |v: &RuleValue| v.action == RULE_DENY && v.expires_ns == 0;
            let exact = base.map.get(net);
            if exact.is_some_and(forever_deny) || base.above(net).any(|(_, v)| forever_deny(v)) {
                continue;
            }
            if bans.above(net).any(|(_, b)| b.expires_ns >= ban.expires_ns) {
                continue;
            }
            let tier = match exact {
                Some(v) if v.action == RULE_TIER => v.tier,
                _ => base
                    .above(net)
                    .map(|(_, v)| v)
                    .find(|v| v.action == RULE_TIER)
                    .map_or(default_tier, |v| v.tier),
            };
            added.insert(
                *net,
                RuleValue {
                    action: RULE_DENY,
                    tier,
                    expires_ns: ban.expires_ns,
                },
            );
        }
        rules.extend(added.iter().map(|(n, v)| (*n, *v)));
        added
    }

    /// What to write to make the kernel hold `now` (the overlay's answer
    /// over `base`, the rules without bans) where it held `self.written`:
    /// changed ban rules, and for a prefix no longer banned its base rule
    /// (a config rule or pin) or its removal.
    pub fn writes(
        &self,
        now: &BTreeMap<IpNet, RuleValue>,
        base: &BTreeMap<IpNet, RuleValue>,
    ) -> (Vec<(IpNet, RuleValue)>, Vec<IpNet>) {
        let mut upsert: Vec<(IpNet, RuleValue)> = now
            .iter()
            .filter(|(n, v)| self.written.get(n) != Some(v))
            .map(|(n, v)| (*n, *v))
            .collect();
        let mut remove = Vec::new();
        for net in self.written.keys().filter(|n| !now.contains_key(n)) {
            match base.get(net) {
                Some(v) => upsert.push((*net, *v)),
                None => remove.push(*net),
            }
        }
        (upsert, remove)
    }

    /// Records what the kernel holds for the bans now.
    pub fn written(&mut self, now: BTreeMap<IpNet, RuleValue>) {
        self.written = now;
    }
}

/// The prefixes of the configuration's allow rules.
fn allowed(cfg: &Config) -> Vec<IpNet> {
    cfg.rules
        .iter()
        .filter(|r| matches!(r.target, RuleTarget::Allow))
        .map(|r| r.cidr)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, parse};
    use tollgate_common::RULE_ALLOW;

    fn config() -> Config {
        parse(
            r#"
default_tier = "free"
[[tier]]
name = "free"
packets = "10/s"
[[tier]]
name = "gold"
packets = "100/s"
[[rule]]
cidr = "10.0.0.0/8"
tier = "gold"
[[rule]]
cidr = "192.0.2.0/24"
action = "allow"
[[rule]]
cidr = "198.51.100.0/24"
action = "deny"
"#,
            ConfigSource::Embedded,
        )
        .unwrap()
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ban(expires_ns: u64) -> Ban {
        Ban {
            id: 1,
            scope: DecisionScope::Ip,
            origin: "cscli".into(),
            scenario: "manual".into(),
            expires_ns,
        }
    }

    /// The config's rules as `desired` writes them (gold = 1, free = 3).
    fn base() -> BTreeMap<IpNet, RuleValue> {
        let v = |action, tier| RuleValue {
            action,
            tier,
            expires_ns: 0,
        };
        [
            (n("10.0.0.0/8"), v(RULE_TIER, 1)),
            (n("192.0.2.0/24"), v(RULE_ALLOW, 3)),
            (n("198.51.100.0/24"), v(RULE_DENY, 3)),
        ]
        .into()
    }

    fn layer(bans: &[(&str, u64)]) -> Layer {
        let mut l = Layer::default();
        l.update(&Change {
            upsert: bans.iter().map(|(s, e)| (n(s), ban(*e))).collect(),
            remove: vec![],
        });
        l
    }

    #[test]
    fn allow_listed_prefixes_are_never_banned_and_config_denies_stay() {
        let l = layer(&[
            ("192.0.2.0/24", 500),
            ("192.0.2.7/32", 500),
            ("198.51.100.9/32", 500),
            ("198.51.100.0/24", 500),
        ]);
        let mut rules = base();
        let added = l.overlay(&mut rules, &config(), 3);
        assert!(added.is_empty());
        assert_eq!(rules, base());
        assert_eq!(l.allow_listed(&config()), 2);
    }

    #[test]
    fn a_ban_inside_a_tier_rule_denies_and_falls_back_to_that_tier() {
        let l = layer(&[
            ("10.1.2.3/32", 500),
            ("203.0.113.9/32", 700),
            ("10.0.0.0/8", 900),
        ]);
        let mut rules = base();
        let added = l.overlay(&mut rules, &config(), 3);
        let deny = |tier, expires_ns| RuleValue {
            action: RULE_DENY,
            tier,
            expires_ns,
        };
        // Inside the longer-lasting /8 ban: redundant.
        assert!(!added.contains_key(&n("10.1.2.3/32")));
        // On the tier rule's own prefix: denies, then falls back to gold.
        assert_eq!(added[&n("10.0.0.0/8")], deny(1, 900));
        // No rule covers it: the default tier after it ends.
        assert_eq!(added[&n("203.0.113.9/32")], deny(3, 700));
        assert_eq!(rules[&n("10.0.0.0/8")], deny(1, 900));
        // A shorter covering ban: the inner one is written, with the /8's tier.
        let l = layer(&[("10.1.2.3/32", 500), ("10.0.0.0/8", 100)]);
        let mut rules = base();
        let added = l.overlay(&mut rules, &config(), 3);
        assert_eq!(added[&n("10.1.2.3/32")], deny(1, 500));
    }

    #[test]
    fn writes_are_the_difference_and_an_ended_ban_restores_its_base_rule() {
        let cfg = config();
        let mut l = layer(&[("10.0.0.0/8", 900), ("203.0.113.9/32", 700)]);
        let mut rules = base();
        let now = l.overlay(&mut rules, &cfg, 3);
        let (up, rm) = l.writes(&now, &base());
        assert_eq!((up.len(), rm.len()), (2, 0));
        l.written(now);
        l.update(&Change {
            upsert: vec![],
            remove: vec![n("10.0.0.0/8"), n("203.0.113.9/32")],
        });
        let mut rules = base();
        let now = l.overlay(&mut rules, &cfg, 3);
        let (up, rm) = l.writes(&now, &base());
        assert_eq!(up, vec![(n("10.0.0.0/8"), base()[&n("10.0.0.0/8")])]);
        assert_eq!(rm, vec![n("203.0.113.9/32")]);
    }
}
