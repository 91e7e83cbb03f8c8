//! API-key pins: sources pinned to their key's tier in the kernel's rule trie.

use std::collections::BTreeMap;

use ipnet::IpNet;
use tollgate_common::{RULE_TIER, RuleValue};
use tracing::{debug, info, warn};

use super::{Daemon, Indices, apply, transaction::Layers};
use crate::spec::RuleTarget;

impl Daemon {
    /// Pins `net` to `tier` in the kernel (an API key's tier), unless the
    /// config has an allow or deny rule for exactly that prefix. `quiet`:
    /// the caller logs one line for a batch of pins. Returns whether it pinned.
    pub(super) fn pin(&mut self, net: IpNet, tier: &str, quiet: bool) -> bool {
        let Some(&index) = self.state.tier_indices.get(tier) else {
            return false;
        };
        if let Some(rule) = self.effective.rule(&net)
            && !matches!(rule.target, RuleTarget::Tier(_))
        {
            return false;
        }
        let value = RuleValue {
            action: RULE_TIER,
            tier: index,
            expires_ns: 0,
        };
        // A banned source stays denied: its pin is written when the ban ends.
        let written = if self.banned.contains_key(&net) {
            Ok(())
        } else {
            self.maps.set_rule(net, value)
        };
        match written {
            Ok(()) => {
                if quiet {
                    debug!(source = %net, tier, "API key: source pinned to its key's tier");
                } else {
                    info!(source = %net, tier, "API key: source pinned to its key's tier");
                }
                self.pinned.insert(net, value);
                true
            }
            Err(e) => {
                warn!(source = %net, error = %e, "API key: pinning the source failed");
                false
            }
        }
    }

    /// Ends a pin: restores the configured rule for exactly `net`, if any.
    pub(super) fn unpin(&mut self, net: IpNet) {
        if self.pinned.remove(&net).is_none() {
            return;
        }
        if self.banned.contains_key(&net) {
            info!(source = %net, "API key pin expired (the source is banned: its ban stays)");
            return;
        }
        let restored = match self.effective.rule(&net).map(|r| r.target.clone()) {
            Some(target) => {
                let default = self
                    .state
                    .tier_indices
                    .get(&self.effective.default_tier)
                    .copied()
                    .unwrap_or(0);
                let value = target
                    .to_kernel(
                        |t| Some(self.state.tier_indices.get(t).copied().unwrap_or(default)),
                        default,
                    )
                    .expect("every tier has a slot here");
                self.maps.set_rule(net, value).map(|_| ())
            }
            None => self.maps.remove_rule(net).map(|_| ()),
        };
        match restored {
            Ok(()) => info!(source = %net, "API key pin expired"),
            Err(e) => warn!(source = %net, error = %e, "removing an expired API key pin failed"),
        }
    }

    /// Pins survive in the pinned rule map across a daemon restart, but their
    /// expiry does not: make the kernel's rules exactly the configuration's
    /// and the bans'.
    pub(super) fn clear_stale_pins(&mut self) {
        if let Err(e) = apply(
            &mut self.maps,
            &self.effective,
            Indices::of(&self.state),
            Layers {
                pinned: &BTreeMap::new(),
                banned: &self.banned,
                crowdsec: &self.crowdsec,
            },
            &self.factors,
        ) {
            warn!(error = %format!("{e:#}"), "clearing API key pins left by a previous daemon");
        }
    }
}
