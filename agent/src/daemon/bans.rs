//! Bans: expiring deny rules in the kernel's rule tries, a layer of their own
//! next to the configuration's rules and the API-key pins (`desired` takes
//! them). The state file keeps them with wall-clock expiry; this process's
//! kernel values (`Daemon::banned`) carry that expiry converted to the
//! kernel's monotonic clock when they are written, so a ban the daemon
//! cannot lift (it is stopped or killed) still ends in the kernel on time.

use std::collections::BTreeMap;

use ipnet::IpNet;
use tollgate_common::{RULE_DENY, RuleValue};
use tracing::{info, warn};

use super::{
    Daemon, Indices,
    error::CommandError,
    transaction::{Layers, desired},
};
use crate::{
    datapath::kernel,
    proto::BanRow,
    spec::{Ban, Offences, RuleTarget},
    state,
};

/// Unix time now, in seconds.
pub(super) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Offences are forgotten at the latest this long after a source's last ban
/// (a rule's `forget_after` may be shorter).
const FORGET_AT_LATEST_SECS: f64 = 30.0 * 86_400.0;

/// The kernel's value for a ban ending at unix time `until`, or `None` if it
/// has ended.
fn kernel_value(until: f64, now: f64, tier: u32) -> Option<RuleValue> {
    let left = until - now;
    (left > 0.0).then(|| RuleValue {
        action: RULE_DENY,
        tier,
        expires_ns: kernel::clock_ns() + (left * 1e9) as u64,
    })
}

/// At start: forgets the bans that ended while no daemon ran and returns the
/// kernel values of the others (`tier`: the index deny rules are counted
/// under), which the first `apply` writes.
pub(super) fn restore(state: &mut state::State, tier: u32) -> BTreeMap<IpNet, RuleValue> {
    let now = unix_now();
    let ended: Vec<IpNet> = state
        .bans
        .bans
        .iter()
        .filter(|(_, b)| b.until <= now)
        .map(|(n, _)| *n)
        .collect();
    for net in &ended {
        if let Some(b) = state.bans.bans.remove(net) {
            info!(source = %net, rule = %b.rule, offence = b.offence,
                "ban of {net} lifted (it ended while the daemon was stopped)");
        }
    }
    let banned: BTreeMap<IpNet, RuleValue> = state
        .bans
        .bans
        .iter()
        .filter_map(|(n, b)| Some((*n, kernel_value(b.until, now, tier)?)))
        .collect();
    if !banned.is_empty() {
        info!(
            bans = banned.len(),
            "{} bans restored from the state file",
            banned.len()
        );
    }
    banned
}

impl Daemon {
    /// The kernel index deny rules are counted under: the default tier's.
    fn default_tier_index(&self) -> u32 {
        self.state
            .tier_indices
            .get(&self.effective.default_tier)
            .copied()
            .unwrap_or(0)
    }

    /// The configured rule that is the longest prefix containing `net`, if it
    /// allows.
    pub(super) fn allow_rule(&self, net: &IpNet) -> Option<IpNet> {
        self.effective
            .rules
            .iter()
            .filter(|r| r.cidr.contains(net))
            .max_by_key(|r| r.cidr.prefix_len())
            .filter(|r| r.target == RuleTarget::Allow)
            .map(|r| r.cidr)
    }

    /// Bans `net` until `ban.until`: kernel first, then the state file (a ban
    /// the state file cannot keep is taken back). Replaces a ban of `net`.
    pub(super) fn ban(&mut self, net: IpNet, ban: Ban) -> Result<(), CommandError> {
        let net = net.trunc();
        if let Some(rule) = self.allow_rule(&net) {
            return Err(CommandError::BanAllowListed { net, rule });
        }
        let now = unix_now();
        let Some(value) = kernel_value(ban.until, now, self.default_tier_index()) else {
            return Ok(());
        };
        let mut state = self.state.clone();
        if ban.rule != crate::spec::CLI_BAN {
            state.bans.offences.insert(
                net,
                Offences {
                    count: ban.offence,
                    last_until: ban.until,
                },
            );
        }
        state.bans.bans.insert(net, ban.clone());
        // A deny rule configured for exactly this prefix already drops it.
        let configured_deny = self
            .effective
            .rule(&net)
            .is_some_and(|r| r.target == RuleTarget::Deny);
        if !configured_deny {
            self.maps
                .set_rule(net, value)
                .map_err(|e| CommandError::Kernel(e.into()))?;
        }
        if let Err(error) = state::save(self.state_path(), &state) {
            self.state_write_failures += 1;
            self.restore_rule(net);
            return Err(CommandError::Save {
                path: self.state_path().to_owned(),
                error,
            });
        }
        self.state = state;
        self.banned.insert(net, value);
        *self
            .ban_counters
            .issued
            .entry(ban.rule.clone())
            .or_default() += 1;
        if ban.offence > 1 {
            self.ban_counters.escalations += 1;
        }
        info!(source = %net, rule = %ban.rule, duration_secs = format!("{:.1}", ban.until - ban.since),
            offence = ban.offence, until = %format_unix(ban.until), reason = %ban.reason,
            "banned {net} for {:.1} s (offence {}, by {})", ban.until - ban.since, ban.offence, ban.rule);
        Ok(())
    }

    /// Lifts the ban of exactly `net` (`why`: "expired", "removed with the CLI").
    pub(super) fn lift(&mut self, net: IpNet, why: &str) -> Result<(), CommandError> {
        let net = net.trunc();
        let mut state = self.state.clone();
        let Some(ban) = state.bans.bans.remove(&net) else {
            return Err(CommandError::NotBanned(net));
        };
        if let Err(error) = state::save(self.state_path(), &state) {
            self.state_write_failures += 1;
            return Err(CommandError::Save {
                path: self.state_path().to_owned(),
                error,
            });
        }
        self.state = state;
        self.banned.remove(&net);
        self.restore_rule(net);
        self.ban_counters.lifted += 1;
        info!(source = %net, rule = %ban.rule, offence = ban.offence,
            duration_secs = format!("{:.1}", ban.until - ban.since), reason = why,
            "ban of {net} lifted ({why})");
        Ok(())
    }

    /// Puts back what the kernel holds for exactly `net` without its ban:
    /// whatever `desired` makes of the configuration and the other rule
    /// layers for that prefix (an API-key pin, a CrowdSec decision, the
    /// configured rule), or nothing.
    fn restore_rule(&mut self, net: IpNet) {
        let want = desired(
            &self.effective,
            Indices::of(&self.state),
            Layers {
                pinned: &self.pinned,
                banned: &self.banned,
                crowdsec: &self.crowdsec,
            },
            &self.factors,
        );
        let restored = match want {
            Ok(k) => match k.rules.get(&net) {
                Some(value) => self.maps.set_rule(net, *value),
                None => self.maps.remove_rule(net).map(|_| ()),
            },
            Err(e) => {
                warn!(source = %net, error = %format!("{e:#}"), "restoring the rule after a ban failed");
                return;
            }
        };
        if let Err(e) = restored {
            warn!(source = %net, error = %e, "restoring the rule after a ban failed");
        }
    }

    /// Lifts the bans that have ended; forgets offences older than
    /// `forget_after` (the longest of the rules').
    pub(super) fn expire_bans(&mut self) {
        let now = unix_now();
        let ended: Vec<IpNet> = self
            .state
            .bans
            .bans
            .iter()
            .filter(|(_, b)| b.until <= now)
            .map(|(n, _)| *n)
            .collect();
        for net in ended {
            if let Err(e) = self.lift(net, "expired") {
                warn!(source = %net, error = %e, "lifting an expired ban failed; retrying in a second");
            }
        }
        let forget = self
            .effective
            .responses
            .iter()
            .map(|r| r.forget_after.as_secs_f64())
            .fold(0.0, f64::max)
            .min(FORGET_AT_LATEST_SECS);
        let stale =
            self.state.bans.offences.iter().any(|(n, o)| {
                o.last_until + forget <= now && !self.state.bans.bans.contains_key(n)
            });
        if stale {
            let mut state = self.state.clone();
            let bans = &state.bans.bans;
            let kept = state
                .bans
                .offences
                .clone()
                .into_iter()
                .filter(|(n, o)| o.last_until + forget > now || bans.contains_key(n))
                .collect();
            state.bans.offences = kept;
            if state::save(self.state_path(), &state).is_ok() {
                self.state = state;
            }
        }
    }

    /// `ban add CIDR --for T [--reason R]` (and `rule add CIDR --deny --for
    /// T`): a ban by the CLI, which never counts as an offence.
    pub(super) fn ban_add(
        &mut self,
        cidr: &str,
        duration: &str,
        reason: Option<String>,
    ) -> Result<String, CommandError> {
        let net = crate::spec::parse_cidr(cidr).map_err(|error| CommandError::BanCidr {
            cidr: cidr.to_owned(),
            error,
        })?;
        let length =
            crate::units::parse_age(duration).map_err(|error| CommandError::BanLength {
                text: duration.to_owned(),
                error,
            })?;
        if length.as_secs() < 1 || length.as_secs() > 365 * 86_400 {
            return Err(CommandError::BanLengthRange);
        }
        let now = unix_now();
        let until = now + length.as_secs_f64();
        self.ban(
            net,
            Ban {
                rule: crate::spec::CLI_BAN.to_owned(),
                reason: reason.unwrap_or_else(|| "banned with the CLI".to_owned()),
                since: now,
                until,
                offence: 1,
            },
        )?;
        Ok(format!(
            "banned {} for {} (until {})",
            net.trunc(),
            crate::units::human_duration(length.as_secs()),
            format_unix(until)
        ))
    }

    /// `ban rm CIDR`.
    pub(super) fn ban_rm(&mut self, cidr: &str) -> Result<String, CommandError> {
        let net = crate::spec::parse_cidr(cidr).map_err(|error| CommandError::BanCidr {
            cidr: cidr.to_owned(),
            error,
        })?;
        self.lift(net, "removed with the CLI")?;
        Ok(format!("ban of {} lifted", net.trunc()))
    }

    /// `ban list`: the bans in force, soonest end first.
    pub(super) fn ban_rows(&self) -> Vec<BanRow> {
        let now = unix_now();
        let mut rows: Vec<BanRow> = self
            .state
            .bans
            .bans
            .iter()
            .map(|(net, b)| BanRow::new(*net, b, now))
            .collect();
        rows.sort_by(|a, b| a.until.total_cmp(&b.until));
        rows
    }

    /// The ban whose prefix is the longest containing `net`, if any.
    pub(super) fn ban_of(&self, net: &IpNet) -> Option<(IpNet, &Ban)> {
        self.state
            .bans
            .bans
            .iter()
            .filter(|(n, _)| n.contains(net))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(n, b)| (*n, b))
    }
}

/// A unix time as an HTTP date (`Thu, 03 Dec 2026 07:00:00 GMT`), for log
/// lines and tables.
pub(crate) fn format_unix(t: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    httpdate::fmt_http_date(at)
}
