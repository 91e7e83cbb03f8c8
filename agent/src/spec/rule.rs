//! Rules: which sources a tier (or allow/deny) applies to, and their kernel form.

use std::{fmt, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tollgate_common::{RULE_ALLOW, RULE_DENY, RULE_TIER, RuleValue};

/// What a rule does with matching sources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleTarget {
    /// Limit the sources with this tier.
    Tier(String),
    /// Pass without limits (counted under the default tier).
    Allow,
    /// Drop (counted under the default tier).
    Deny,
}

impl fmt::Display for RuleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleTarget::Tier(t) => write!(f, "tier {t}"),
            RuleTarget::Allow => f.write_str("allow"),
            RuleTarget::Deny => f.write_str("deny"),
        }
    }
}

impl RuleTarget {
    /// The kernel's form: `index_of` gives a tier's slot, `default` is the
    /// default tier's (allow and deny are counted under it). `None` when the
    /// rule's tier has no slot.
    pub fn to_kernel(
        &self,
        index_of: impl Fn(&str) -> Option<u32>,
        default: u32,
    ) -> Option<RuleValue> {
        Some(match self {
            RuleTarget::Tier(t) => RuleValue {
                action: RULE_TIER,
                tier: index_of(t)?,
                expires_ns: 0,
            },
            RuleTarget::Allow => RuleValue {
                action: RULE_ALLOW,
                tier: default,
                expires_ns: 0,
            },
            RuleTarget::Deny => RuleValue {
                action: RULE_DENY,
                tier: default,
                expires_ns: 0,
            },
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub cidr: IpNet,
    pub target: RuleTarget,
}

/// Why a CIDR is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not a valid CIDR (write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\")")]
    Invalid,
    #[error("host bits are set (did you mean \"{0}\"?)")]
    HostBits(IpNet),
}

/// Parses a CIDR as operators write it: "10.0.0.0/8", "2001:db8::/32", or a
/// bare address meaning just that host. Host bits must be zero.
pub fn parse_cidr(s: &str) -> Result<IpNet, CidrError> {
    let s = s.trim();
    let net = match IpNet::from_str(s) {
        Ok(net) => net,
        Err(_) => match std::net::IpAddr::from_str(s) {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(CidrError::Invalid),
        },
    };
    if net.trunc() != net {
        return Err(CidrError::HostBits(net.trunc()));
    }
    Ok(net)
}

/// Why a rule's target is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown action (use \"allow\" or \"deny\", or tier = \"NAME\")")]
    UnknownAction,
    #[error("set exactly one of tier = \"NAME\" or action = \"allow\"/\"deny\"")]
    NotExactlyOne,
}

/// A rule as written in the file (`[[rule]]`) and sent by `rule add`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// "allow" or "deny".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl RuleInput {
    /// The target, when exactly one of `tier` and `action` is given and the
    /// action is known (whether the tier exists is `config::validate`'s).
    pub fn target(&self) -> Result<RuleTarget, TargetError> {
        match (&self.tier, &self.action) {
            (Some(t), None) => Ok(RuleTarget::Tier(t.clone())),
            (None, Some(a)) => match a.trim() {
                "allow" => Ok(RuleTarget::Allow),
                "deny" => Ok(RuleTarget::Deny),
                _ => Err(TargetError::UnknownAction),
            },
            _ => Err(TargetError::NotExactlyOne),
        }
    }
}
