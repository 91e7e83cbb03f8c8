//! The control commands that change the configuration: tier set/rm, rule
//! add/rm, route add/rm, detach.

use anyhow::Result;
use tracing::info;

use super::{Daemon, error::CommandError};
use crate::datapath::dataplane;
use crate::spec::{RouteInput, RuleInput, RuleTarget, TierPatch, parse_cidr};

impl Daemon {
    /// `tier set`: the patch is read and checked by the same code as the
    /// file's `[[tier]]` tables (`Config::with_tier`).
    pub(super) fn tier_set(&mut self, patch: TierPatch) -> Result<String, CommandError> {
        let name = patch.tier_name().to_owned();
        let creating = self.effective.tier(&name).is_none();
        let (_, spec) = self.effective.with_tier(&patch)?;
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

    pub(super) fn tier_rm(&mut self, name: &str) -> Result<String, CommandError> {
        if self.effective.tier(name).is_none() {
            return Err(CommandError::NoSuchTier {
                name: name.to_owned(),
                tiers: self.effective.tier_names(),
            });
        }
        if self.effective.default_tier == name {
            return Err(CommandError::DefaultTier(name.to_owned()));
        }
        let users: Vec<String> = self
            .effective
            .rules
            .iter()
            .filter(|r| r.target == RuleTarget::Tier(name.to_owned()))
            .map(|r| r.cidr.to_string())
            .collect();
        if !users.is_empty() {
            return Err(CommandError::TierInUse {
                name: name.to_owned(),
                rules: users,
            });
        }
        let mut overlay = self.state.overlay.clone();
        overlay.remove_tier(name, self.file.tier(name).is_some());
        self.commit(None, overlay)?;
        Ok(format!("tier {name} removed"))
    }

    /// `tier reset`: drops the tier's CLI changes (a `tier set` or `tier
    /// rm`), so the config file's tier applies as written.
    pub(super) fn tier_reset(&mut self, name: &str) -> Result<String, CommandError> {
        let o = &self.state.overlay;
        if !o.tiers.contains_key(name) && !o.removed_tiers.contains(name) {
            return Err(CommandError::NoTierChanges(name.to_owned()));
        }
        if self.file.tier(name).is_none() {
            return Err(CommandError::CliOnlyTier(name.to_owned()));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.tiers.remove(name);
        overlay.removed_tiers.remove(name);
        self.commit(None, overlay)?;
        Ok(format!(
            "tier {name} reset: the config file's values apply (from {})",
            self.file.source
        ))
    }

    /// `rule reset`: drops the rule's CLI change (a `rule add` or `rule
    /// rm`), so the config file's rule for that CIDR (or none) applies.
    pub(super) fn rule_reset(&mut self, cidr: &str) -> Result<String, CommandError> {
        let net = parse_cidr(cidr).map_err(|error| CommandError::Cidr {
            cidr: cidr.to_owned(),
            error,
        })?;
        let key = net.to_string();
        let o = &self.state.overlay;
        if !o.rules.contains_key(&key) && !o.removed_rules.contains(&key) {
            return Err(CommandError::NoRuleChange(key));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.rules.remove(&key);
        overlay.removed_rules.remove(&key);
        self.commit(None, overlay)?;
        Ok(match self.file.rule(&net) {
            Some(r) => format!(
                "rule {net} reset: the config file's rule applies ({})",
                r.target
            ),
            None => {
                format!("rule {net} reset: the config file has no rule for it, so none applies")
            }
        })
    }

    /// `rule add`: read and checked by the same code as the file's
    /// `[[rule]]` tables (`Config::with_rule`).
    pub(super) fn rule_add(&mut self, input: &RuleInput) -> Result<String, CommandError> {
        let (_, rule) = self.effective.with_rule(input)?;
        let (net, target) = (rule.cidr, rule.target.clone());
        let replaced = self.effective.rule(&net).map(|r| r.target.clone());
        if replaced.as_ref() == Some(&target) {
            return Ok(format!("rule {net} ({target}) unchanged"));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.add_rule(&rule);
        self.commit(None, overlay)?;
        Ok(match replaced {
            Some(old) => format!("rule {net} changed from {old} to {target}"),
            None => format!("rule {net} added ({target})"),
        })
    }

    pub(super) fn rule_rm(&mut self, cidr: &str) -> Result<String, CommandError> {
        let net = parse_cidr(cidr).map_err(|error| CommandError::Cidr {
            cidr: cidr.to_owned(),
            error,
        })?;
        if self.effective.rule(&net).is_none() {
            return Err(CommandError::NoSuchRule(net));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.remove_rule(&net, self.file.rule(&net).is_some());
        self.commit(None, overlay)?;
        Ok(format!("rule {net} removed"))
    }

    /// `route add`: read and checked by the same code as the file's
    /// `[[route]]` tables (`Config::with_route`); replaces a route of the
    /// same name (which keeps its index, so its ceiling's state).
    pub(super) fn route_add(&mut self, input: &RouteInput) -> Result<String, CommandError> {
        let (_, spec) = self.effective.with_route(input)?;
        let name = spec.name.clone();
        let existing = self.effective.route(&name);
        if existing == Some(&spec) {
            return Ok(format!("route {name} unchanged"));
        }
        let replacing = existing.is_some();
        let mut overlay = self.state.overlay.clone();
        overlay.add_route(spec);
        self.commit(None, overlay)?;
        let index = self.state.route_index(&name).unwrap_or_default();
        Ok(format!(
            "route {name} {} (index {index})",
            if replacing { "changed" } else { "added" }
        ))
    }

    pub(super) fn route_rm(&mut self, name: &str) -> Result<String, CommandError> {
        if self.effective.route(name).is_none() {
            return Err(CommandError::NoSuchRoute {
                name: name.to_owned(),
                routes: self
                    .effective
                    .routes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut overlay = self.state.overlay.clone();
        overlay.remove_route(name, self.file.route(name).is_some());
        self.commit(None, overlay)?;
        Ok(format!("route {name} removed"))
    }

    pub(super) fn detach(&mut self) -> Result<String, CommandError> {
        // Let go of the objects first, or the guard would re-pin them.
        self.guard = None;
        let pin_dir = self.file.pin_dir.clone();
        let n = dataplane::remove_pins(&pin_dir).map_err(CommandError::Detach)?;
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
