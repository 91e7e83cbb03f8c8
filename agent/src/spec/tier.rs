//! Tiers as the operator states them, the rules one tier must satisfy on its
//! own, and the kernel's form of a tier.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tollgate_common::{
    Limit, LimitKind, TIER_ACTIVE, TIER_COUNT_ADMITTED, TIER_SHADOW, TierConfig,
};

use super::adaptive::{AdaptiveError, AdaptiveSpec};
use crate::units::{self, Rate, UnitError};

/// Byte bursts default to at least this much, so a full-size frame (and a
/// little more) always fits in a fresh bucket.
pub const MIN_DEFAULT_BYTES_BURST: u64 = 64 * 1024;
/// The fastest count rate a limit can hold: one unit per nanosecond (the
/// kernel clock's resolution; a faster rate would round to no limit at all).
pub const MAX_COUNT_PER_SECOND: u64 = 1_000_000_000;
/// The fastest byte rate a limit can hold with precision (see
/// `tollgate_common::gcra::INTERVAL_SHIFT`): 64 GB/s per source.
pub const MAX_BYTES_PER_SECOND: u64 = 64_000_000_000;
/// The longest burst a limit accepts, as time at its rate: a burst is what a
/// source may send at once after being idle, and more than a day of traffic
/// in one go is a typo, not a policy.
pub const MAX_BURST_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// IPv6 sources are grouped by prefixes of 1..=64 bits (the key is the first 64).
pub const IPV6_PREFIX_RANGE: std::ops::RangeInclusive<i64> = 1..=64;

/// What a tier does with traffic over its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TierMode {
    /// Drop what is over the limits.
    #[default]
    Enforce,
    /// Count what would be dropped, pass everything.
    Shadow,
}

impl TierMode {
    pub const fn name(self) -> &'static str {
        match self {
            TierMode::Enforce => "enforce",
            TierMode::Shadow => "shadow",
        }
    }
}

/// The five per-node limits of a tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitField {
    Packets,
    Bytes,
    Connections,
    Requests,
    Aggregate,
    /// New tracked sources per second (admission control, see README).
    NewSources,
}

impl LimitField {
    pub const ALL: [LimitField; 6] = [
        LimitField::Packets,
        LimitField::Bytes,
        LimitField::Connections,
        LimitField::Requests,
        LimitField::Aggregate,
        LimitField::NewSources,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            LimitField::Packets => "packets",
            LimitField::Bytes => "bytes",
            LimitField::Connections => "connections",
            LimitField::Requests => "requests",
            LimitField::Aggregate => "aggregate",
            LimitField::NewSources => "new_sources",
        }
    }

    /// The key of this limit's burst: `packets_burst`, ...
    pub const fn burst_name(self) -> &'static str {
        match self {
            LimitField::Packets => "packets_burst",
            LimitField::Bytes => "bytes_burst",
            LimitField::Connections => "connections_burst",
            LimitField::Requests => "requests_burst",
            LimitField::Aggregate => "aggregate_burst",
            LimitField::NewSources => "new_sources_burst",
        }
    }

    pub const fn is_bytes(self) -> bool {
        matches!(self, LimitField::Bytes)
    }

    /// Parses a rate for this limit ("10MB/s" for bytes, "100/s" otherwise).
    pub fn parse_rate(self, s: &str) -> Result<Rate, UnitError> {
        if self.is_bytes() {
            units::parse_byte_rate(s)
        } else {
            units::parse_count_rate(s)
        }
    }

    /// The canonical spelling of a rate for this limit.
    pub fn format_rate(self, rate: &Rate) -> String {
        if self.is_bytes() {
            units::format_byte_rate(rate)
        } else {
            units::format_count_rate(rate)
        }
    }
}

/// The fleet-wide limits a tier may have besides its per-node ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalField {
    Packets,
    Requests,
}

impl GlobalField {
    pub const ALL: [GlobalField; 2] = [GlobalField::Packets, GlobalField::Requests];

    pub const fn name(self) -> &'static str {
        match self {
            GlobalField::Packets => "global_packets",
            GlobalField::Requests => "global_requests",
        }
    }

    pub const fn burst_name(self) -> &'static str {
        match self {
            GlobalField::Packets => "global_packets_burst",
            GlobalField::Requests => "global_requests_burst",
        }
    }

    /// The per-node limit whose bucket measures a source's usage.
    pub const fn local(self) -> LimitField {
        match self {
            GlobalField::Packets => LimitField::Packets,
            GlobalField::Requests => LimitField::Requests,
        }
    }
}

/// Why a limit cannot be what it says. Shown after the field and its value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("byte rates must be at least 1B/s")]
    ByteRateBelowOne,
    #[error("must be at least 1")]
    BurstZero,
    #[error("{rate} is faster than {max}, the fastest rate a limit can hold")]
    RateTooFast { rate: String, max: String },
    #[error(
        "a burst of {burst} at {rate} is {window} of traffic: at most 24 hours' worth is supported (a burst of at most {max} at this rate)"
    )]
    BurstTooLong {
        burst: u64,
        rate: String,
        window: String,
        max: u64,
    },
    #[error("rate {rate} with a burst of {burst} is out of range")]
    OutOfRange { rate: String, burst: u64 },
    #[error(
        "{rate} with a burst of {burst} does not fit the {field} bucket, which counts in 1.024 µs ticks and holds at most 36 minutes (burst × interval) of work: use a faster rate or a smaller burst"
    )]
    TickBucket {
        rate: String,
        burst: u64,
        field: &'static str,
    },
    #[error("global limits are counted in 1-second windows: use a rate of at least 1/s")]
    GlobalBelowOne,
}

impl LimitError {
    /// Whether the burst, not the rate, is the problem (when a burst was given).
    pub fn is_burst(&self) -> bool {
        matches!(
            self,
            LimitError::BurstZero
                | LimitError::BurstTooLong { .. }
                | LimitError::OutOfRange { .. }
                | LimitError::TickBucket { .. }
        )
    }
}

/// One limit as configured: a rate and an optional explicit burst.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Canonical rate: "100/s", "6000/min", bytes "10MB/s".
    pub rate: String,
    /// Burst in units (bytes for the bytes limit); absent = one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// A limit resolved to numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedLimit {
    pub rate: Rate,
    pub burst: u64,
    pub limit: Limit,
}

/// A fleet-wide limit resolved to numbers: `per_second` units per second,
/// plus `extra` units per 1-second window (`global_*_burst`, default 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GlobalLimit {
    pub per_second: f64,
    pub extra: u64,
}

impl GlobalLimit {
    /// Units one source may use in a window of `window` (all nodes together).
    pub fn allowance(&self, window: Duration) -> u64 {
        (self.per_second * window.as_secs_f64()).floor() as u64 + self.extra
    }
}

/// The rate bound of a limit: count rates at most one per nanosecond, byte
/// rates at most [`MAX_BYTES_PER_SECOND`].
fn check_rate_bound(rate: &Rate, bytes: bool) -> Result<(), LimitError> {
    let max = if bytes {
        MAX_BYTES_PER_SECOND
    } else {
        MAX_COUNT_PER_SECOND
    };
    if rate.amount as u128 > max as u128 * rate.period.seconds() as u128 {
        let max = Rate::per_second(max);
        let (rate, max) = if bytes {
            (units::format_byte_rate(rate), units::format_byte_rate(&max))
        } else {
            (
                units::format_count_rate(rate),
                units::format_count_rate(&max),
            )
        };
        return Err(LimitError::RateTooFast { rate, max });
    }
    Ok(())
}

impl LimitSpec {
    /// The rate and burst in effect, and the kernel's form of them.
    pub fn resolve(&self, field: LimitField) -> Result<ResolvedLimit, LimitError> {
        let rate = field.parse_rate(&self.rate)?;
        if field.is_bytes() && rate.amount < rate.period.seconds() {
            return Err(LimitError::ByteRateBelowOne);
        }
        check_rate_bound(&rate, field.is_bytes())?;
        let burst = match self.burst {
            Some(b) => b,
            None if field.is_bytes() => rate.one_second_worth().max(MIN_DEFAULT_BYTES_BURST),
            None => rate.one_second_worth(),
        };
        if burst == 0 {
            return Err(LimitError::BurstZero);
        }
        // burst × (period / amount) <= MAX_BURST_WINDOW, in integers.
        let max_burst = (MAX_BURST_WINDOW.as_secs() as u128 * rate.amount as u128
            / rate.period.seconds() as u128)
            .max(1);
        if burst as u128 > max_burst {
            let secs = burst as u128 * rate.period.seconds() as u128 / rate.amount as u128;
            return Err(LimitError::BurstTooLong {
                burst,
                rate: field.format_rate(&rate),
                window: human_span(secs),
                max: max_burst.min(u64::MAX as u128) as u64,
            });
        }
        let limit =
            Limit::per_period(rate.amount, rate.period.nanos(), burst).ok_or_else(|| {
                LimitError::OutOfRange {
                    rate: self.rate.clone(),
                    burst,
                }
            })?;
        if matches!(field, LimitField::Connections | LimitField::Requests) && !limit.fits_ticks() {
            return Err(LimitError::TickBucket {
                rate: self.rate.clone(),
                burst,
                field: field.name(),
            });
        }
        Ok(ResolvedLimit { rate, burst, limit })
    }

    /// A `global_packets` / `global_requests` limit. Global limits are counted
    /// in 1-second windows, so rates below 1/s are refused. The burst (extra
    /// units per window) may be 0, its default.
    pub fn resolve_global(&self) -> Result<GlobalLimit, LimitError> {
        let rate = units::parse_count_rate(&self.rate)?;
        if rate.per_second_f64() < 1.0 {
            return Err(LimitError::GlobalBelowOne);
        }
        check_rate_bound(&rate, false)?;
        Ok(GlobalLimit {
            per_second: rate.per_second_f64(),
            extra: self.burst.unwrap_or(0),
        })
    }
}

/// "11 years", "3 days", "5 hours", for a burst window in seconds.
fn human_span(secs: u128) -> String {
    const YEAR: u128 = 365 * 86400;
    match secs {
        s if s >= 2 * YEAR => format!("{} years", s / YEAR),
        s if s >= 2 * 86400 => format!("{} days", s / 86400),
        s => format!("{} hours", s / 3600),
    }
}

/// Why a tier name is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("names are 1 to 32 characters long")]
    Length,
    #[error("use only letters, digits, '-', '_' and '.'")]
    Chars,
}

/// Tier names: 1 to 32 of letters, digits, '-', '_' and '.'.
pub fn check_tier_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 32 {
        return Err(NameError::Length);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(NameError::Chars);
    }
    Ok(())
}

/// `ipv6_prefix`: 1..=64.
pub fn check_ipv6_prefix(prefix: i64) -> Result<u32, TierProblem> {
    if IPV6_PREFIX_RANGE.contains(&prefix) {
        Ok(prefix as u32)
    } else {
        Err(TierProblem::Ipv6Prefix)
    }
}

/// Why one tier is not valid on its own (shown after the field and value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TierProblem {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("must be between 1 and 64")]
    Ipv6Prefix,
    #[error(transparent)]
    Adaptive(#[from] AdaptiveError),
    #[error("must be at least 1")]
    BurstBelowOne,
    #[error("must not be negative (0, the default, adds nothing)")]
    GlobalBurstNegative,
    #[error("write a number of bytes or a size such as \"1MiB\"")]
    SizeType,
    #[error("there is no {field} rate to apply it to (the tier has no {field} limit)")]
    BurstWithoutRate { field: &'static str },
    #[error(
        "needs a per-node {local} limit too (each node measures a source's usage with its {local} bucket): set {local}, e.g. to the same rate",
        local = field.local().name()
    )]
    GlobalNeedsLocal { field: GlobalField },
}

/// A problem with one field of one tier:
/// `tier "gold": packets = "100/x": unknown period ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "tier{}: {key}{}: {problem}",
    tier.as_ref().map(|t| format!(" \"{t}\"")).unwrap_or_default(),
    value.as_ref().map(|v| format!(" = {v}")).unwrap_or_default()
)]
pub struct TierFieldError {
    /// The tier, unless its name is the problem.
    pub tier: Option<String>,
    /// The field as written in the file: `packets_burst`.
    pub key: &'static str,
    /// The value as written in TOML (`"100/x"`, `5`), if one is at fault.
    pub value: Option<String>,
    pub problem: Box<TierProblem>,
}

impl TierFieldError {
    pub fn new(
        tier: &str,
        key: &'static str,
        value: Option<String>,
        problem: impl Into<TierProblem>,
    ) -> Self {
        TierFieldError {
            tier: (key != "name").then(|| tier.to_owned()),
            key,
            value,
            problem: Box::new(problem.into()),
        }
    }
}

/// A string value as TOML writes it.
pub fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// One tier as configured (also the form CLI changes are stored in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<LimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<LimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<LimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<LimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<LimitSpec>,
    /// New tracked sources per second; unset: [`default_new_sources`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_sources: Option<LimitSpec>,
    pub ipv6_prefix: u32,
    pub mode: TierMode,
    /// Fleet-wide packets limit per source, shared through `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_packets: Option<LimitSpec>,
    /// Fleet-wide HTTP requests limit per source, shared through `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_requests: Option<LimitSpec>,
    /// Limits that follow a signal of the host's load (see `adaptive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveSpec>,
}

impl TierSpec {
    /// A tier with no limits (everything passes, counted).
    pub fn unlimited(name: &str) -> TierSpec {
        TierSpec {
            name: name.to_owned(),
            packets: None,
            bytes: None,
            connections: None,
            requests: None,
            aggregate: None,
            new_sources: None,
            ipv6_prefix: 64,
            mode: TierMode::Enforce,
            global_packets: None,
            global_requests: None,
            adaptive: None,
        }
    }

    pub fn global(&self, field: GlobalField) -> Option<&LimitSpec> {
        match field {
            GlobalField::Packets => self.global_packets.as_ref(),
            GlobalField::Requests => self.global_requests.as_ref(),
        }
    }

    pub fn global_mut(&mut self, field: GlobalField) -> &mut Option<LimitSpec> {
        match field {
            GlobalField::Packets => &mut self.global_packets,
            GlobalField::Requests => &mut self.global_requests,
        }
    }

    pub fn has_global_limits(&self) -> bool {
        self.global_packets.is_some() || self.global_requests.is_some()
    }

    pub fn limit(&self, field: LimitField) -> Option<&LimitSpec> {
        match field {
            LimitField::Packets => self.packets.as_ref(),
            LimitField::Bytes => self.bytes.as_ref(),
            LimitField::Connections => self.connections.as_ref(),
            LimitField::Requests => self.requests.as_ref(),
            LimitField::Aggregate => self.aggregate.as_ref(),
            LimitField::NewSources => self.new_sources.as_ref(),
        }
    }

    pub fn limit_mut(&mut self, field: LimitField) -> &mut Option<LimitSpec> {
        match field {
            LimitField::Packets => &mut self.packets,
            LimitField::Bytes => &mut self.bytes,
            LimitField::Connections => &mut self.connections,
            LimitField::Requests => &mut self.requests,
            LimitField::Aggregate => &mut self.aggregate,
            LimitField::NewSources => &mut self.new_sources,
        }
    }

    /// Every rule a tier must satisfy on its own, and the kernel's form of it:
    /// the name, `ipv6_prefix`, each limit's rate and burst, and each global
    /// limit with the per-node limit that measures it. (Rules that relate
    /// tiers to each other or to `[cluster]` are `config::validate`'s.)
    pub fn to_kernel(&self) -> Result<TierConfig, TierFieldError> {
        check_tier_name(&self.name)
            .map_err(|e| TierFieldError::new(&self.name, "name", Some(quoted(&self.name)), e))?;
        let ipv6_prefix = check_ipv6_prefix(self.ipv6_prefix.into()).map_err(|e| {
            TierFieldError::new(
                &self.name,
                "ipv6_prefix",
                Some(self.ipv6_prefix.to_string()),
                e,
            )
        })?;
        let mut limits = [Limit::UNLIMITED; 4];
        let mut aggregate = Limit::UNLIMITED;
        let mut new_sources = Limit::UNLIMITED;
        for field in LimitField::ALL {
            let Some(spec) = self.limit(field) else {
                continue;
            };
            let resolved = spec
                .resolve(field)
                .map_err(|e| limit_error(&self.name, field.name(), field.burst_name(), spec, e))?;
            match field {
                LimitField::Packets => limits[LimitKind::Packets as usize] = resolved.limit,
                LimitField::Bytes => limits[LimitKind::Bytes as usize] = resolved.limit,
                LimitField::Connections => limits[LimitKind::Connections as usize] = resolved.limit,
                LimitField::Requests => limits[LimitKind::Requests as usize] = resolved.limit,
                LimitField::Aggregate => aggregate = resolved.limit,
                LimitField::NewSources => new_sources = resolved.limit,
            }
        }
        for field in GlobalField::ALL {
            let Some(spec) = self.global(field) else {
                continue;
            };
            spec.resolve_global()
                .map_err(|e| limit_error(&self.name, field.name(), field.burst_name(), spec, e))?;
            if self.limit(field.local()).is_none() {
                return Err(TierFieldError::new(
                    &self.name,
                    field.name(),
                    Some(quoted(&spec.rate)),
                    TierProblem::GlobalNeedsLocal { field },
                ));
            }
        }
        if let Some(a) = &self.adaptive {
            a.check()
                .map_err(|e| TierFieldError::new(&self.name, "adaptive", None, e))?;
        }
        Ok(TierConfig {
            limits,
            aggregate,
            new_sources,
            ipv6_prefix,
            flags: TIER_ACTIVE
                | match self.mode {
                    TierMode::Enforce => 0,
                    TierMode::Shadow => TIER_SHADOW,
                }
                // The cluster sync pushes what each source was admitted.
                | if self.has_global_limits() {
                    TIER_COUNT_ADMITTED
                } else {
                    0
                },
        })
    }
}

/// The new-source budget of a tier that sets none: a flood at this rate takes
/// [`NEW_SOURCES_TURNOVER`] to insert as many sources as the smaller source
/// map holds (`smallest_source_map`), so a source heard from more often than
/// that is not evicted by it. Burst: one second's worth.
pub fn default_new_sources(smallest_source_map: u32) -> Limit {
    let per_second = (smallest_source_map as u64 / NEW_SOURCES_TURNOVER.as_secs()).max(1);
    Limit::per_period(per_second, 1_000_000_000, per_second).unwrap_or(Limit::UNLIMITED)
}

/// See [`default_new_sources`].
pub const NEW_SOURCES_TURNOVER: std::time::Duration = std::time::Duration::from_secs(60);

/// Names the burst when it is the problem and was given, else the rate.
fn limit_error(
    tier: &str,
    rate_key: &'static str,
    burst_key: &'static str,
    spec: &LimitSpec,
    e: LimitError,
) -> TierFieldError {
    match spec.burst {
        Some(b) if e.is_burst() => TierFieldError::new(tier, burst_key, Some(b.to_string()), e),
        _ => TierFieldError::new(tier, rate_key, Some(quoted(&spec.rate)), e),
    }
}
