//! The CrowdSec rule layer in the daemon: the bouncer task's changes written
//! to the kernel (only the rules that differ), and the layer kept in step
//! with every commit.

use std::collections::BTreeMap;

use anyhow::Result;
use ipnet::IpNet;
use tollgate_common::RuleValue;
use tracing::warn;

use super::{
    Daemon, Indices,
    transaction::{Layers, desired},
};
use crate::{
    crowdsec::{Change, Layer, Status},
    datapath::kernel,
    metrics::CrowdsecSnapshot,
    proto::CrowdsecStatus,
};

impl Daemon {
    /// Takes a step of the bouncer's view (`reset`: the whole view) and
    /// writes the ban rules that changed.
    pub(super) fn apply_bans(&mut self, change: &Change, reset: bool) -> Result<()> {
        if reset {
            self.crowdsec.clear();
        }
        self.crowdsec.update(change);
        let (now, base) = self.ban_rules()?;
        let (upsert, remove) = self.crowdsec.writes(&now, &base);
        self.maps.update_rules(&upsert, &remove)?;
        self.crowdsec.written(now);
        Ok(())
    }

    /// The ban rules the layer adds now, and the rules without them (config
    /// and pins).
    fn ban_rules(&self) -> Result<(BTreeMap<IpNet, RuleValue>, BTreeMap<IpNet, RuleValue>)> {
        let none = Layer::default();
        let k = desired(
            &self.effective,
            Indices::of(&self.state),
            Layers {
                pinned: &self.pinned,
                banned: &self.banned,
                crowdsec: &none,
            },
            &self.factors,
        )?;
        let mut rules = k.rules.clone();
        let now = self
            .crowdsec
            .overlay(&mut rules, &self.effective, k.default_tier);
        Ok((now, k.rules))
    }

    /// After a commit or rollback rewrote every rule (bans included): what
    /// the kernel holds for the bans now.
    pub(super) fn bans_rewritten(&mut self) {
        if self.crowdsec.is_empty() {
            self.crowdsec.written(BTreeMap::new());
            return;
        }
        match self.ban_rules() {
            Ok((now, _)) => self.crowdsec.written(now),
            Err(e) => warn!(error = %format!("{e:#}"), "crowdsec: cannot recompute the ban rules"),
        }
    }

    /// `status`: the bouncer's state with the layer's counts.
    pub(super) fn bouncer_report(&self, status: &Status) -> CrowdsecStatus {
        let mut r = status.report();
        r.banned_prefixes = self.crowdsec.len() as u64;
        r.allow_listed = self.crowdsec.allow_listed(&self.effective) as u64;
        r
    }

    /// `/metrics`: the report and the active bans by scope and origin.
    pub(super) fn bouncer_metrics(&self, status: &Status) -> CrowdsecSnapshot {
        CrowdsecSnapshot {
            status: self.bouncer_report(status),
            decisions: self
                .crowdsec
                .counts()
                .into_iter()
                .map(|((scope, origin), n)| (scope.name().to_owned(), origin, n))
                .collect(),
        }
    }

    /// `explain`: the ban behind a kernel deny on `net`, in words.
    pub(super) fn ban_origin(&self, net: &IpNet, value: &RuleValue) -> Option<String> {
        let ban = self.crowdsec.ban(net)?;
        if value.action != tollgate_common::RULE_DENY || value.expires_ns != ban.expires_ns {
            return None;
        }
        let left = ban.expires_ns.saturating_sub(kernel::clock_ns()) as f64 / 1e9;
        Some(format!(
            "crowdsec decision {} ({} {}, origin {}: {}; {:.0} s left)",
            ban.id,
            ban.scope.name(),
            net,
            ban.origin,
            ban.scenario,
            left
        ))
    }
}
