//! Adaptive tiers as the operator states them (`adaptive = { ... }` in a
//! `[[tier]]`), the rules such a table must satisfy, and the one way a
//! factor scales a tier's kernel limits ([`scale_tier`]).
//!
//! Scaling keeps each bucket's depth in *time* (`capacity_ns`, burst ×
//! interval) and stretches its emission interval by `1 / factor`: the rate
//! and the burst in units both shrink by the factor. A TAT is a point in
//! time, so a bucket's state means the same under either interval: a
//! source at its limit stays at its limit (no fresh burst when the factor
//! falls), and what it was admitted before is never charged again (no
//! retroactive debt when it falls, no windfall when it rises beyond the
//! burst of the new rate). See the tests at the end.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use tollgate_common::{Limit, LimitKind, TierConfig, gcra::INTERVAL_SHIFT};

use super::tier::{MIN_DEFAULT_BYTES_BURST, TierMode};

/// The smallest `min` a tier may scale to: 1% of its configured limits.
pub const MIN_FACTOR: f64 = 0.01;
/// Defaults of the control law.
pub const DEFAULT_MIN: f64 = 0.2;
pub const DEFAULT_DECREASE: f64 = 0.8;
pub const DEFAULT_INCREASE: f64 = 0.05;
pub const DEFAULT_CALM_SECONDS: u32 = 5;
/// A probe that takes longer than this counts as this slow (and over any
/// threshold under it): the control loop runs once a second.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_millis(900);

/// `adaptive = { ... }` of a tier, as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSpec {
    /// "cpu", "memory", "io" (the host's PSI), "cgroup:/sys/fs/cgroup/…/cpu.pressure"
    /// (a cgroup v2's PSI), "tcp:127.0.0.1:5432" (connect latency) or
    /// "http://127.0.0.1:8080/health" (GET latency).
    pub signal: String,
    /// Over this the factor falls: percent of time stalled for a PSI signal,
    /// milliseconds for a probe.
    pub threshold: f64,
    /// Under this (and only under it) a second counts as calm [default:
    /// half the threshold]. Between `recover` and `threshold` the factor holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<f64>,
    /// The lowest factor [default: 0.2].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The factor is multiplied by this each second over the threshold [default: 0.8].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrease: Option<f64>,
    /// The factor grows by this each calm second once `calm` seconds in a
    /// row were calm [default: 0.05].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increase: Option<f64>,
    /// Calm seconds in a row before the factor grows [default: 5].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calm: Option<i64>,
    /// Which PSI line and average: "some avg10" (default), "some avg60",
    /// "full avg10", "full avg60". Probes ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<String>,
    /// enforce: the kernel applies the factor; shadow: computed, logged and
    /// exported only [default: enforce].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TierMode>,
}

/// Every number of a valid table is finite (`check` refuses NaN), so
/// equality is an equivalence on the tables a configuration can hold.
impl Eq for AdaptiveSpec {}

/// Which PSI line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsiLine {
    Some,
    Full,
}

/// Which PSI average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsiWindow {
    Avg10,
    Avg60,
}

/// Where a signal is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalSource {
    /// A `*.pressure` file (`/proc/pressure/cpu` or a cgroup's).
    Pressure {
        path: PathBuf,
        line: PsiLine,
        window: PsiWindow,
    },
    /// TCP connect latency.
    Tcp { address: SocketAddr },
    /// HTTP GET latency (to the status line).
    Http {
        address: SocketAddr,
        host: String,
        path: String,
    },
}

impl SignalSource {
    /// The label of `tollgate_adaptive_signal`: "cpu", "cgroup:…", "tcp:…".
    pub fn is_probe(&self) -> bool {
        !matches!(self, SignalSource::Pressure { .. })
    }

    /// The signal's unit: "%" (PSI) or "ms" (probes).
    pub fn unit(&self) -> &'static str {
        if self.is_probe() { "ms" } else { "%" }
    }
}

/// An adaptive tier's parameters, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveParams {
    /// The signal as written (the metric's label).
    pub signal: String,
    pub source: SignalSource,
    pub law: Law,
    pub mode: TierMode,
    /// A probe's timeout: 3 × threshold, at most [`MAX_PROBE_TIMEOUT`].
    pub timeout: Duration,
}

/// The control law's constants (see `adaptive::law`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Law {
    pub threshold: f64,
    pub recover: f64,
    pub min: f64,
    pub decrease: f64,
    pub increase: f64,
    pub calm: u32,
}

/// Why an `adaptive` table is not valid; shown after `adaptive`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdaptiveError {
    #[error(
        "signal = \"{0}\": use \"cpu\", \"memory\", \"io\", \"cgroup:/sys/fs/cgroup/<service>/cpu.pressure\", \"tcp:127.0.0.1:5432\" or \"http://127.0.0.1:8080/health\""
    )]
    Signal(String),
    #[error(
        "signal = \"{0}\": a cgroup signal names a cgroup v2 *.pressure file, e.g. \"cgroup:/sys/fs/cgroup/system.slice/nginx.service/cpu.pressure\""
    )]
    CgroupFile(String),
    #[error(
        "signal = \"{0}\": a probe's address is an IP address and port on this host, e.g. \"tcp:127.0.0.1:5432\""
    )]
    ProbeAddress(String),
    #[error("threshold = {0}: {1}")]
    Threshold(String, &'static str),
    #[error("recover = {0}: must be at least 0 and below the threshold ({1})")]
    Recover(String, String),
    #[error("min = {0}: must be between 0.01 and 1")]
    Min(String),
    #[error("decrease = {0}: must be above 0 and below 1 (the factor is multiplied by it)")]
    Decrease(String),
    #[error("increase = {0}: must be above 0 and at most 1 (added to the factor)")]
    Increase(String),
    #[error("calm = {0}: must be between 1 and 3600 (seconds)")]
    Calm(i64),
    #[error(
        "pressure = \"{0}\": use \"some avg10\", \"some avg60\", \"full avg10\" or \"full avg60\""
    )]
    Pressure(String),
}

fn num(v: f64) -> String {
    format!("{v}")
}

fn parse_pressure(s: Option<&str>) -> Result<(PsiLine, PsiWindow), AdaptiveError> {
    let Some(s) = s else {
        return Ok((PsiLine::Some, PsiWindow::Avg10));
    };
    let words: Vec<&str> = s.split_whitespace().collect();
    let line = match words.first().copied() {
        Some("some") => PsiLine::Some,
        Some("full") => PsiLine::Full,
        _ => return Err(AdaptiveError::Pressure(s.to_owned())),
    };
    let window = match words.get(1).copied() {
        Some("avg10") => PsiWindow::Avg10,
        Some("avg60") => PsiWindow::Avg60,
        _ => return Err(AdaptiveError::Pressure(s.to_owned())),
    };
    if words.len() != 2 {
        return Err(AdaptiveError::Pressure(s.to_owned()));
    }
    Ok((line, window))
}

fn parse_signal(s: &str, pressure: Option<&str>) -> Result<SignalSource, AdaptiveError> {
    let psi = |path: PathBuf| -> Result<SignalSource, AdaptiveError> {
        let (line, window) = parse_pressure(pressure)?;
        Ok(SignalSource::Pressure { path, line, window })
    };
    let probe_addr = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|_| AdaptiveError::ProbeAddress(s.to_owned()))
    };
    match s {
        "cpu" | "memory" | "io" => psi(PathBuf::from(format!("/proc/pressure/{s}"))),
        _ if s.starts_with("cgroup:") => {
            let path = PathBuf::from(&s["cgroup:".len()..]);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !path.is_absolute()
                || !matches!(name, "cpu.pressure" | "memory.pressure" | "io.pressure")
            {
                return Err(AdaptiveError::CgroupFile(s.to_owned()));
            }
            psi(path)
        }
        _ if s.starts_with("tcp:") => Ok(SignalSource::Tcp {
            address: probe_addr(&s["tcp:".len()..])?,
        }),
        _ if s.starts_with("http://") => {
            let rest = &s["http://".len()..];
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            Ok(SignalSource::Http {
                address: probe_addr(authority)?,
                host: authority.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => Err(AdaptiveError::Signal(s.to_owned())),
    }
}

impl AdaptiveSpec {
    /// Every rule an `adaptive` table must satisfy, and its parameters.
    pub fn check(&self) -> Result<AdaptiveParams, AdaptiveError> {
        let source = parse_signal(self.signal.trim(), self.pressure.as_deref())?;
        let t = self.threshold;
        if !t.is_finite() || t <= 0.0 {
            return Err(AdaptiveError::Threshold(num(t), "must be above 0"));
        }
        if !source.is_probe() && t >= 100.0 {
            return Err(AdaptiveError::Threshold(
                num(t),
                "a PSI signal is a percentage of time: use a value below 100",
            ));
        }
        let recover = self.recover.unwrap_or(t / 2.0);
        if !recover.is_finite() || recover < 0.0 || recover >= t {
            return Err(AdaptiveError::Recover(num(recover), num(t)));
        }
        let min = self.min.unwrap_or(DEFAULT_MIN);
        if !(MIN_FACTOR..=1.0).contains(&min) {
            return Err(AdaptiveError::Min(num(min)));
        }
        let decrease = self.decrease.unwrap_or(DEFAULT_DECREASE);
        if !(decrease > 0.0 && decrease < 1.0) {
            return Err(AdaptiveError::Decrease(num(decrease)));
        }
        let increase = self.increase.unwrap_or(DEFAULT_INCREASE);
        if !(increase > 0.0 && increase <= 1.0) {
            return Err(AdaptiveError::Increase(num(increase)));
        }
        let calm = self.calm.unwrap_or(DEFAULT_CALM_SECONDS.into());
        if !(1..=3600).contains(&calm) {
            return Err(AdaptiveError::Calm(calm));
        }
        let timeout = if source.is_probe() {
            Duration::from_secs_f64(t * 3.0 / 1000.0).min(MAX_PROBE_TIMEOUT)
        } else {
            Duration::ZERO
        };
        Ok(AdaptiveParams {
            signal: self.signal.trim().to_owned(),
            source,
            law: Law {
                threshold: t,
                recover,
                min,
                decrease,
                increase,
                calm: calm as u32,
            },
            mode: self.mode.unwrap_or_default(),
            timeout,
        })
    }
}

impl fmt::Display for AdaptiveSpec {
    /// As `tier list` shows the setting: `cpu > 40 (min 0.2, shadow)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", self.signal, self.threshold)?;
        if let Some(m) = self.min {
            write!(f, " min {m}")?;
        }
        if self.mode == Some(TierMode::Shadow) {
            write!(f, " shadow")?;
        }
        Ok(())
    }
}

/// One limit scaled by `factor` (in (0, 1]): the interval stretched by
/// `1 / factor`, the depth in time kept, but never under `floor_units` of
/// the new interval (one unit; for bytes, the configured burst up to 64 KiB,
/// so a full-size frame still fits a fresh bucket).
pub fn scale_limit(limit: Limit, factor: f64, floor_units: u64) -> Limit {
    if limit.is_unlimited() || factor >= 1.0 {
        return limit;
    }
    let interval_fp = (limit.interval_fp as f64 / factor).ceil();
    let interval_fp = if interval_fp >= u64::MAX as f64 / 2.0 {
        u64::MAX / 2
    } else {
        interval_fp as u64
    };
    let floor = ((interval_fp as u128 * floor_units as u128) >> INTERVAL_SHIFT)
        .min(u64::MAX as u128 / 2) as u64;
    Limit {
        interval_fp,
        capacity_ns: limit.capacity_ns.max(floor),
    }
}

/// A tier's kernel form with its per-source limits and its aggregate ceiling
/// scaled by `factor`. The new-source budget is not scaled: it protects the
/// source map, not the service behind it.
pub fn scale_tier(tier: &TierConfig, factor: f64) -> TierConfig {
    let mut t = *tier;
    for (kind, limit) in t.limits.iter_mut().enumerate() {
        let floor = if kind == LimitKind::Bytes as usize {
            let burst = if limit.interval_fp == 0 {
                0
            } else {
                ((limit.capacity_ns as u128) << INTERVAL_SHIFT) / limit.interval_fp as u128
            };
            (burst as u64).clamp(1, MIN_DEFAULT_BYTES_BURST)
        } else {
            1
        };
        *limit = scale_limit(*limit, factor, floor);
    }
    t.aggregate = scale_limit(t.aggregate, factor, 1);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tollgate_common::{
        SourceState,
        limiter::{Costs, charge_source},
    };

    fn spec(signal: &str, threshold: f64) -> AdaptiveSpec {
        AdaptiveSpec {
            signal: signal.into(),
            threshold,
            recover: None,
            min: None,
            decrease: None,
            increase: None,
            calm: None,
            pressure: None,
            mode: None,
        }
    }

    #[test]
    fn signals_parse_into_their_sources() {
        let p = spec("cpu", 40.0).check().unwrap();
        assert_eq!(
            p.source,
            SignalSource::Pressure {
                path: "/proc/pressure/cpu".into(),
                line: PsiLine::Some,
                window: PsiWindow::Avg10
            }
        );
        assert_eq!(p.law.recover, 20.0);
        let p = spec(
            "cgroup:/sys/fs/cgroup/system.slice/nginx.service/cpu.pressure",
            30.0,
        )
        .check()
        .unwrap();
        assert!(matches!(p.source, SignalSource::Pressure { .. }));
        let p = spec("http://127.0.0.1:8080/health", 200.0).check().unwrap();
        assert_eq!(
            p.source,
            SignalSource::Http {
                address: "127.0.0.1:8080".parse().unwrap(),
                host: "127.0.0.1:8080".into(),
                path: "/health".into()
            }
        );
        assert_eq!(p.timeout, Duration::from_millis(600));
        let p = spec("tcp:127.0.0.1:5432", 500.0).check().unwrap();
        assert_eq!(p.timeout, MAX_PROBE_TIMEOUT);
    }

    #[test]
    fn bad_tables_are_named() {
        let e = |s: AdaptiveSpec| s.check().unwrap_err().to_string();
        assert!(e(spec("load", 40.0)).starts_with("signal = \"load\""));
        assert!(e(spec("cgroup:relative/cpu.pressure", 40.0)).contains("cgroup v2"));
        assert!(e(spec("cgroup:/sys/fs/cgroup/x/cpu.max", 40.0)).contains("*.pressure"));
        assert!(e(spec("tcp:localhost:80", 40.0)).contains("IP address and port"));
        assert!(e(spec("cpu", 140.0)).contains("below 100"));
        assert!(e(spec("cpu", 0.0)).contains("above 0"));
        let mut s = spec("cpu", 40.0);
        s.recover = Some(50.0);
        assert_eq!(
            e(s),
            "recover = 50: must be at least 0 and below the threshold (40)"
        );
        let mut s = spec("cpu", 40.0);
        s.min = Some(0.0);
        assert!(e(s).starts_with("min = 0:"));
        let mut s = spec("cpu", 40.0);
        s.decrease = Some(1.0);
        assert!(e(s).starts_with("decrease = 1:"));
        let mut s = spec("cpu", 40.0);
        s.calm = Some(0);
        assert!(e(s).starts_with("calm = 0:"));
        let mut s = spec("cpu", 40.0);
        s.pressure = Some("some avg300".into());
        assert!(e(s).starts_with("pressure = \"some avg300\""));
    }

    fn limit(per_second: u64, burst: u64) -> Limit {
        Limit::per_period(per_second, 1_000_000_000, burst).unwrap()
    }

    #[test]
    fn scaling_stretches_the_interval_and_keeps_the_depth_in_time() {
        let l = limit(1000, 1000);
        let s = scale_limit(l, 0.2, 1);
        assert_eq!(s.capacity_ns, l.capacity_ns);
        assert!((s.rate_per_second() - 200.0).abs() < 0.01);
        assert_eq!(scale_limit(l, 1.0, 1), l);
        assert_eq!(scale_limit(Limit::UNLIMITED, 0.5, 1), Limit::UNLIMITED);
        // A burst of one packet at 10/s: the floor keeps one unit.
        let one = limit(10, 1);
        let s = scale_limit(one, 0.5, 1);
        assert_eq!(s.capacity_ns, s.interval_fp >> INTERVAL_SHIFT);
    }

    #[test]
    fn a_scaled_byte_bucket_still_fits_a_full_frame() {
        let mut t = TierConfig::default();
        t.limits[LimitKind::Bytes as usize] = limit(100_000, 100_000);
        let s = scale_tier(&t, 0.01);
        let b = s.limits[LimitKind::Bytes as usize];
        assert!(b.capacity_ns >= b.increment_ns(1514));
    }

    #[test]
    fn the_new_source_budget_is_not_scaled() {
        let t = TierConfig {
            new_sources: limit(1000, 1000),
            aggregate: limit(5000, 5000),
            ..TierConfig::default()
        };
        let s = scale_tier(&t, 0.5);
        assert_eq!(s.new_sources, t.new_sources);
        assert!((s.aggregate.rate_per_second() - 2500.0).abs() < 0.1);
    }

    /// A packets-only tier.
    fn packets_tier(per_second: u64, burst: u64) -> TierConfig {
        let mut t = TierConfig::default();
        t.limits[LimitKind::Packets as usize] = limit(per_second, burst);
        t
    }

    /// Packets admitted at `at` (all at once, up to `n`).
    fn offer(state: &mut SourceState, tier: &TierConfig, at: u64, n: u64) -> u64 {
        let costs = Costs {
            bytes: 100,
            ..Costs::default()
        };
        (0..n)
            // SAFETY: `state` is a valid, aligned SourceState we own.
            .filter(|_| unsafe { charge_source(state, tier, at, &costs) }.is_ok())
            .count() as u64
    }

    #[test]
    fn a_fall_hands_out_no_fresh_burst_to_a_source_at_its_limit() {
        let full = packets_tier(1000, 1000);
        let mut st = SourceState::default();
        let t0 = 1u64 << 40;
        assert_eq!(offer(&mut st, &full, t0, 5000), 1000);
        // At its limit: the scaled tier admits nothing more at once.
        assert_eq!(offer(&mut st, &scale_tier(&full, 0.2), t0, 5000), 0);
        // A second later, what drained is one second at the new rate.
        assert_eq!(
            offer(&mut st, &scale_tier(&full, 0.2), t0 + 1_000_000_000, 5000),
            200
        );
    }

    #[test]
    fn a_rise_gives_an_idle_source_the_new_burst_and_no_more() {
        let full = packets_tier(1000, 1000);
        let low = scale_tier(&full, 0.2);
        let mut st = SourceState::default();
        let t0 = 1u64 << 40;
        assert_eq!(offer(&mut st, &low, t0, 5000), 200);
        // Back to 1: the bucket's debt is the same time; ten seconds idle
        // refill it to the full burst, never beyond.
        assert_eq!(offer(&mut st, &full, t0 + 10_000_000_000, 5000), 1000);
    }

    proptest! {
        /// Whatever the factors along the way, over any stretch of constant
        /// factor starting at `a`, admitted units stay within what the bucket
        /// held at `a` (its depth in time, at most capacity) plus the rate
        /// times the stretch: no fresh burst from a change.
        #[test]
        fn a_change_of_factor_never_adds_a_burst(
            factors in prop::collection::vec(0.05f64..=1.0, 1..8),
            offered in prop::collection::vec(0u64..3000, 8),
            gaps in prop::collection::vec(0u64..2_000_000_000, 8),
        ) {
            let full = packets_tier(1000, 500);
            let mut st = SourceState::default();
            let mut now = 1u64 << 40;
            offer(&mut st, &full, now, 500);
            for ((f, n), gap) in factors.iter().zip(&offered).zip(&gaps) {
                let tier = scale_tier(&full, *f);
                let l = tier.limits[LimitKind::Packets as usize];
                let headroom = l.capacity_ns.saturating_sub(st.packets_tat.saturating_sub(now));
                now += gap;
                let got = offer(&mut st, &tier, now, *n);
                let interval = l.increment_ns(1);
                let bound = (headroom + gap) / interval + 1;
                prop_assert!(got <= bound, "factor {f}: {got} admitted, bound {bound}");
            }
        }

        /// A source sending at the scaled rate or under it is never dropped
        /// after the change, whatever it sent before at the full rate.
        #[test]
        fn a_conforming_source_is_not_punished_retroactively(
            f in 0.05f64..1.0,
            before in 0u64..1000,
        ) {
            let full = packets_tier(1000, 1000);
            let low = scale_tier(&full, f);
            let mut st = SourceState::default();
            let t0 = 1u64 << 40;
            offer(&mut st, &full, t0, before);
            let interval = low.limits[LimitKind::Packets as usize].increment_ns(1);
            // From one interval after the change on, the source sends
            // exactly at the scaled rate, whatever its debt from before.
            let mut now = t0 + interval;
            for _ in 0..50 {
                prop_assert_eq!(offer(&mut st, &low, now, 1), 1);
                now += interval;
            }
        }
    }
}
