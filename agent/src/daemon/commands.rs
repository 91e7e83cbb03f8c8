//! The control commands that change the configuration: tier set/rm, rule
//! add/rm, detach.

use anyhow::Result;
use tollgate_common::MAX_TIERS;
use tracing::info;

use super::Daemon;
use crate::datapath::dataplane;
use crate::{
    config::{LimitField, LimitSpec, RuleSpec, RuleTarget, TierSpec, check_tier_name, parse_cidr},
    proto::{RuleAction, TierSetArgs},
    units,
};

impl Daemon {
    pub(super) fn tier_set(&mut self, args: TierSetArgs) -> Result<String, String> {
        let name = args.name.trim().to_owned();
        check_tier_name(&name).map_err(|e| format!("tier name \"{name}\": {e}"))?;
        let existing = self.effective.tier(&name).cloned();
        let creating = existing.is_none();
        if creating && self.effective.tiers.len() >= MAX_TIERS as usize {
            return Err(format!(
                "cannot create tier \"{name}\": all {MAX_TIERS} tier slots are in use"
            ));
        }
        let mut spec = existing.unwrap_or_else(|| TierSpec::unlimited(&name));
        let bytes_burst = match &args.bytes_burst {
            None => None,
            Some(s) => Some(
                units::parse_size(s)
                    .map_err(|e| format!("tier \"{name}\": bytes_burst = \"{s}\": {e}"))?,
            ),
        };
        let changes = [
            (LimitField::Packets, &args.packets, args.packets_burst),
            (LimitField::Bytes, &args.bytes, bytes_burst),
            (
                LimitField::Connections,
                &args.connections,
                args.connections_burst,
            ),
            (LimitField::Requests, &args.requests, args.requests_burst),
            (LimitField::Aggregate, &args.aggregate, args.aggregate_burst),
        ];
        for (field, rate, burst) in changes {
            if let Some(rate) = rate {
                if rate.trim() == "unlimited" {
                    *spec.limit_mut(field) = None;
                } else {
                    let parsed = field.parse_rate(rate).map_err(|e| {
                        format!("tier \"{name}\": {} = \"{rate}\": {e}", field.name())
                    })?;
                    let old_burst = spec.limit(field).and_then(|l| l.burst);
                    *spec.limit_mut(field) = Some(LimitSpec {
                        rate: field.format_rate(&parsed),
                        burst: old_burst,
                    });
                }
            }
            if let Some(b) = burst {
                match spec.limit_mut(field) {
                    Some(l) => l.burst = Some(b),
                    None => {
                        return Err(format!(
                            "tier \"{name}\": {}_burst = {b}: the tier has no {} limit to apply it to (set one with --{} RATE)",
                            field.name(),
                            field.name(),
                            field.name()
                        ));
                    }
                }
            }
        }
        if let Some(p) = args.ipv6_prefix {
            spec.ipv6_prefix = p;
        }
        if let Some(m) = args.mode {
            spec.mode = m;
        }
        spec.to_kernel()?;
        if !creating && self.effective.tier(&name) == Some(&spec) {
            return Ok(format!("tier {name} unchanged"));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.set_tier(spec);
        self.commit(None, overlay)?;
        let index = self.state.index_of(&name).unwrap_or_default();
        Ok(format!(
            "tier {name} {} (index {index})",
            if creating { "created" } else { "updated" }
        ))
    }

    pub(super) fn tier_rm(&mut self, name: &str) -> Result<String, String> {
        if self.effective.tier(name).is_none() {
            return Err(format!(
                "no tier named \"{name}\" (tiers: {})",
                self.effective.tier_names()
            ));
        }
        if self.effective.default_tier == name {
            return Err(format!(
                "tier \"{name}\" is the default tier and cannot be removed: set another default_tier in the config file and reload first"
            ));
        }
        let users: Vec<String> = self
            .effective
            .rules
            .iter()
            .filter(|r| r.target == RuleTarget::Tier(name.to_owned()))
            .map(|r| r.cidr.to_string())
            .collect();
        if !users.is_empty() {
            return Err(format!(
                "tier \"{name}\" is used by {} rule{} ({}): remove {} first with `tollgate rule rm CIDR`",
                users.len(),
                if users.len() == 1 { "" } else { "s" },
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" },
            ));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.remove_tier(name, self.file.tier(name).is_some());
        self.commit(None, overlay)?;
        Ok(format!("tier {name} removed"))
    }

    pub(super) fn rule_add(
        &mut self,
        cidr: &str,
        tier: Option<String>,
        action: Option<RuleAction>,
    ) -> Result<String, String> {
        let net = parse_cidr(cidr).map_err(|e| format!("cidr = \"{cidr}\": {e}"))?;
        let target = match (tier, action) {
            (Some(t), None) => {
                if self.effective.tier(&t).is_none() {
                    return Err(format!(
                        "rule {net}: tier = \"{t}\": no such tier (tiers: {})",
                        self.effective.tier_names()
                    ));
                }
                RuleTarget::Tier(t)
            }
            (None, Some(RuleAction::Allow)) => RuleTarget::Allow,
            (None, Some(RuleAction::Deny)) => RuleTarget::Deny,
            _ => return Err("give exactly one of --tier NAME, --allow or --deny".to_owned()),
        };
        let replaced = self.effective.rule(&net).map(|r| r.target.clone());
        if replaced.as_ref() == Some(&target) {
            return Ok(format!("rule {net} ({target}) unchanged"));
        }
        let rule = RuleSpec {
            cidr: net,
            target: target.clone(),
        };
        let mut overlay = self.state.overlay.clone();
        overlay.add_rule(&rule);
        self.commit(None, overlay)?;
        Ok(match replaced {
            Some(old) => format!("rule {net} changed from {old} to {target}"),
            None => format!("rule {net} added ({target})"),
        })
    }

    pub(super) fn rule_rm(&mut self, cidr: &str) -> Result<String, String> {
        let net = parse_cidr(cidr).map_err(|e| format!("cidr = \"{cidr}\": {e}"))?;
        if self.effective.rule(&net).is_none() {
            return Err(format!("no rule for {net} (see `tollgate rule list`)"));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.remove_rule(&net, self.file.rule(&net).is_some());
        self.commit(None, overlay)?;
        Ok(format!("rule {net} removed"))
    }

    pub(super) fn detach(&mut self) -> Result<String, String> {
        // Let go of the objects first, or the guard would re-pin them.
        self.guard = None;
        let pin_dir = self.file.pin_dir.clone();
        let n = dataplane::remove_pins(&pin_dir).map_err(|e| format!("detach failed: {e:#}"))?;
        let msg = format!(
            "detached from {}; removed {n} pins and {}; the daemon exits",
            if self.file.interfaces.is_empty() {
                "no interfaces".to_owned()
            } else {
                self.file.interfaces.join(", ")
            },
            pin_dir.display()
        );
        info!("{msg}");
        Ok(msg)
    }
}
