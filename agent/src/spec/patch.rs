//! "Change a tier": one input type for the `[[tier]]` tables of the config
//! file, the control protocol's `tier_set` request and the `tier set` flags.

use std::{convert::Infallible, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::adaptive::AdaptiveSpec;
use super::tier::{
    GlobalField, LimitField, LimitSpec, TierFieldError, TierMode, TierProblem, TierSpec,
    check_ipv6_prefix, check_tier_name, quoted,
};
use crate::units;

/// A byte count as the file takes it: a number of bytes or a size ("1MiB").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

impl fmt::Display for SizeValue {
    /// As TOML writes it: `4194304`, `"4MiB"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeValue::Bytes(n) => write!(f, "{n}"),
            SizeValue::Text(s) => write!(f, "\"{s}\""),
        }
    }
}

impl FromStr for SizeValue {
    type Err = Infallible;

    /// Command-line values are text; validation parses them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SizeValue::Text(s.to_owned()))
    }
}

/// A tier as written in the file, or a change to one (`tier set`): every field
/// but the name is optional; absent fields keep the tier's current value (or
/// the default for a new tier). Rates are strings ("100/s", "10MB/s");
/// `"unlimited"` removes a limit. Numbers are signed so that a negative value
/// gets the same explanation from the file, the socket and the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TierPatch {
    /// Tier name (letters, digits, '-', '_', '.'). Example: gold
    pub name: String,
    /// Packets per source. Example: --packets 1000/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<String>,
    /// Burst of the packets limit, in packets [default: one second's worth].
    /// Example: --burst 2000
    #[arg(
        long = "burst",
        visible_alias = "packets-burst",
        value_name = "N",
        allow_negative_numbers = true
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_burst: Option<i64>,
    /// Bytes per source; units B, KB, MB, GB, KiB, MiB, GiB. Example: --bytes 10MB/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
    /// Burst of the bytes limit [default: one second's worth, at least 64KiB].
    /// Example: --bytes-burst 1MiB
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_burst: Option<SizeValue>,
    /// New TCP connections per source. Example: --connections 20/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<String>,
    /// Burst of the connections limit. Example: --connections-burst 40
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_burst: Option<i64>,
    /// HTTP requests per source. Example: --requests 50/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// Burst of the requests limit. Example: --requests-burst 100
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_burst: Option<i64>,
    /// Packets for all sources of the tier together. Example: --aggregate 100000/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// Burst of the aggregate limit. Example: --aggregate-burst 200000
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_burst: Option<i64>,
    /// New tracked sources per second (admission control: over it, a source
    /// not yet tracked is judged by the tier's untracked ceiling instead of
    /// being inserted) [default: 1/60 of the smaller source map per second].
    /// Example: --new-sources 2000/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_sources: Option<String>,
    /// Burst of the new-source budget. Example: --new-sources-burst 2000
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_sources_burst: Option<i64>,
    /// IPv6 sources share one bucket per prefix of this length (1-64).
    /// Example: --ipv6-prefix 56
    #[arg(long, value_name = "LEN", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<i64>,
    /// enforce: drop what is over the limits (the default for new tiers);
    /// shadow: count what would be dropped, but pass everything.
    /// Example: --mode shadow
    #[arg(long, value_enum, value_name = "MODE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TierMode>,
    /// Fleet-wide packets per source, all nodes together (needs [cluster]
    /// and a per-node packets limit). Example: --global-packets 1000/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_packets: Option<String>,
    /// Extra packets per 1-second window of the fleet-wide limit [default: 0].
    /// Example: --global-packets-burst 200
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_packets_burst: Option<i64>,
    /// Fleet-wide HTTP requests per source, all nodes together (needs
    /// [cluster] and a per-node requests limit). Example: --global-requests 100/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_requests: Option<String>,
    /// Extra requests per 1-second window of the fleet-wide limit [default: 0].
    /// Example: --global-requests-burst 20
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_requests_burst: Option<i64>,
    /// Limits that follow the host's load: the `adaptive = { ... }` table of
    /// the config file (not a flag: set it in the file and reload).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveSpec>,
}

/// A per-node burst: at least 1.
fn count_burst(
    tier: &str,
    key: &'static str,
    b: Option<i64>,
) -> Result<Option<u64>, TierFieldError> {
    match b {
        None => Ok(None),
        Some(b) if b >= 1 => Ok(Some(b as u64)),
        Some(b) => Err(TierFieldError::new(
            tier,
            key,
            Some(b.to_string()),
            TierProblem::BurstBelowOne,
        )),
    }
}

impl TierPatch {
    /// The tier's name as it will be stored.
    pub fn tier_name(&self) -> &str {
        self.name.trim()
    }

    fn rate(&self, field: LimitField) -> Option<&String> {
        match field {
            LimitField::Packets => self.packets.as_ref(),
            LimitField::Bytes => self.bytes.as_ref(),
            LimitField::Connections => self.connections.as_ref(),
            LimitField::Requests => self.requests.as_ref(),
            LimitField::Aggregate => self.aggregate.as_ref(),
            LimitField::NewSources => self.new_sources.as_ref(),
        }
    }

    fn burst(&self, field: LimitField) -> Result<Option<u64>, TierFieldError> {
        let key = field.burst_name();
        match field {
            LimitField::Packets => count_burst(self.tier_name(), key, self.packets_burst),
            LimitField::Connections => count_burst(self.tier_name(), key, self.connections_burst),
            LimitField::Requests => count_burst(self.tier_name(), key, self.requests_burst),
            LimitField::Aggregate => count_burst(self.tier_name(), key, self.aggregate_burst),
            LimitField::NewSources => count_burst(self.tier_name(), key, self.new_sources_burst),
            LimitField::Bytes => match &self.bytes_burst {
                None => Ok(None),
                Some(v) => {
                    let err = |p: TierProblem| {
                        TierFieldError::new(self.tier_name(), key, Some(v.to_string()), p)
                    };
                    match v {
                        SizeValue::Bytes(n) if *n >= 1 => Ok(Some(*n as u64)),
                        SizeValue::Bytes(_) => Err(err(TierProblem::BurstBelowOne)),
                        SizeValue::Text(s) => units::parse_size(s)
                            .map(Some)
                            .map_err(|e| err(TierProblem::Unit(e))),
                    }
                }
            },
        }
    }

    fn global(&self, field: GlobalField) -> (Option<&String>, Option<i64>) {
        match field {
            GlobalField::Packets => (self.global_packets.as_ref(), self.global_packets_burst),
            GlobalField::Requests => (self.global_requests.as_ref(), self.global_requests_burst),
        }
    }

    /// `base` (the tier as it is, `None` for a new tier) with this change:
    /// rates parsed into their canonical form, bursts attached to their
    /// limits. The result is checked by `config::validate` with everything
    /// else; this only refuses what cannot be read.
    pub fn apply(&self, base: Option<&TierSpec>) -> Result<TierSpec, TierFieldError> {
        let name = self.tier_name();
        check_tier_name(name)
            .map_err(|e| TierFieldError::new(name, "name", Some(quoted(&self.name)), e))?;
        let mut spec = base.cloned().unwrap_or_else(|| TierSpec::unlimited(name));
        spec.name = name.to_owned();
        for field in LimitField::ALL {
            let burst = self.burst(field)?;
            let keys = (field.name(), field.burst_name());
            patch_limit(
                spec.limit_mut(field),
                name,
                keys,
                self.rate(field),
                burst,
                |r| Ok(field.format_rate(&field.parse_rate(r)?)),
            )?;
        }
        for field in GlobalField::ALL {
            let (rate, burst) = self.global(field);
            let burst = match burst {
                None => None,
                Some(b) if b >= 0 => Some(b as u64),
                Some(b) => {
                    return Err(TierFieldError::new(
                        name,
                        field.burst_name(),
                        Some(b.to_string()),
                        TierProblem::GlobalBurstNegative,
                    ));
                }
            };
            let keys = (field.name(), field.burst_name());
            patch_limit(spec.global_mut(field), name, keys, rate, burst, |r| {
                Ok(units::format_count_rate(&units::parse_count_rate(r)?))
            })?;
        }
        if let Some(p) = self.ipv6_prefix {
            spec.ipv6_prefix = check_ipv6_prefix(p)
                .map_err(|e| TierFieldError::new(name, "ipv6_prefix", Some(p.to_string()), e))?;
        }
        if let Some(m) = self.mode {
            spec.mode = m;
        }
        if let Some(a) = &self.adaptive {
            spec.adaptive = Some(a.clone());
        }
        Ok(spec)
    }
}

/// Changes one limit of a tier (a per-node or a global one): a rate of
/// `"unlimited"` removes it, another rate replaces its rate (read into its
/// canonical form by `canonical`) and keeps its burst, and a burst needs a
/// limit to attach to.
fn patch_limit(
    slot: &mut Option<LimitSpec>,
    tier: &str,
    (rate_key, burst_key): (&'static str, &'static str),
    rate: Option<&String>,
    burst: Option<u64>,
    canonical: impl Fn(&str) -> Result<String, units::UnitError>,
) -> Result<(), TierFieldError> {
    if let Some(rate) = rate {
        if rate.trim() == "unlimited" {
            *slot = None;
        } else {
            let rate = canonical(rate)
                .map_err(|e| TierFieldError::new(tier, rate_key, Some(quoted(rate)), e))?;
            let burst = slot.as_ref().and_then(|l| l.burst);
            *slot = Some(LimitSpec { rate, burst });
        }
    }
    if let Some(b) = burst {
        match slot {
            Some(l) => l.burst = Some(b),
            None => {
                return Err(TierFieldError::new(
                    tier,
                    burst_key,
                    Some(b.to_string()),
                    TierProblem::BurstWithoutRate { field: rate_key },
                ));
            }
        }
    }
    Ok(())
}
