//! `[[response]]`: when a source that keeps being refused is banned, and the
//! bans themselves (what the state file keeps). Plain data; the rules a
//! response rule must satisfy against the rest of the configuration are
//! `config::validate`'s, the engine that applies them is `response`'s.

use std::{collections::BTreeMap, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Which refusals count as evidence against a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// HTTP requests refused by the source's requests limit (a route's cost
    /// is charged to that limit). Requests ride TCP connections, and a ban is
    /// only issued once the host's TCP stack confirms the source completed a
    /// handshake with a local HTTP port: a forged source cannot get a ban.
    #[default]
    Requests,
    /// Packets refused by the packets, bytes or connections (SYN) limits.
    /// A UDP or SYN flood can forge any source address: with this, an
    /// attacker can get a victim's address banned. Opt-in only.
    Packets,
}

impl Evidence {
    pub fn name(self) -> &'static str {
        match self {
            Evidence::Requests => "requests",
            Evidence::Packets => "packets",
        }
    }
}

/// `enforce` bans; `shadow` logs and counts what it would ban.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    #[default]
    Enforce,
    Shadow,
}

/// One `[[response]]` rule, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseRule {
    pub name: String,
    /// Ban a source refused in at least this many of the last `window`
    /// seconds (fail2ban's maxretry over findtime, in seconds with refusals).
    pub refused_seconds: Option<u32>,
    /// Ban a source with more than this many refused requests (or packets)
    /// within `window` (an estimate from the kernel's samples).
    pub refused_over: Option<u64>,
    /// The span the counts look back over, whole seconds.
    pub window: Duration,
    /// The first ban's length.
    pub ban: Duration,
    /// Repeat offences double the ban up to this.
    pub max_ban: Duration,
    /// An offence is forgotten this long after the source's last ban.
    pub forget_after: Duration,
    /// Never banned by this rule.
    pub ignore: Vec<IpNet>,
    /// Tiers whose sources this rule judges (empty: every tier).
    pub tiers: Vec<String>,
    pub evidence: Evidence,
    pub mode: ResponseMode,
}

impl ResponseRule {
    pub fn ignores(&self, net: &IpNet) -> bool {
        self.ignore.iter().any(|i| i.contains(net))
    }

    pub fn applies_to(&self, tier: &str) -> bool {
        self.tiers.is_empty() || self.tiers.iter().any(|t| t == tier)
    }
}

/// Who issued a ban: `tollgate ban add` / `rule add --deny --for` use this.
pub const CLI_BAN: &str = "cli";

/// One ban, as the state file keeps it: wall-clock times (the kernel's
/// monotonic clock restarts at boot; the expiry is converted at apply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ban {
    /// The response rule's name, or [`CLI_BAN`].
    pub rule: String,
    pub reason: String,
    /// Unix seconds.
    pub since: f64,
    pub until: f64,
    /// 1 for a first offence, 2 for the second, ...
    pub offence: u32,
}

/// A source's offences, for escalation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offences {
    pub count: u32,
    /// Unix seconds of the last ban's end.
    pub last_until: f64,
}

/// The bans in force and the offence history (part of the state file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BanBook {
    pub bans: BTreeMap<IpNet, Ban>,
    pub offences: BTreeMap<IpNet, Offences>,
}

impl BanBook {
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty() && self.offences.is_empty()
    }
}
