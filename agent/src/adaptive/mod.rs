//! Adaptive limits: one controller per adaptive tier, stepped once a second
//! by the daemon with its signal's reading. The law is pure (`law`), the
//! readings are I/O (`signal`); this module keeps each tier's state, follows
//! the configuration in force, logs each change of a factor once and says
//! which factors the kernel applies (enforce mode) and which are only shown
//! (shadow mode).
//!
//! While no daemon runs the kernel keeps the scaled limits it last got. A
//! restart starts every factor at 1 (the configured limits): the state is
//! not persisted, because a factor is only as good as the pressure reading
//! behind it, and the first seconds of readings after a start bring it back
//! within `seconds_to_min` if the pressure is still there.

pub mod law;
pub mod signal;

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use tracing::{info, warn};

use crate::{
    proto::AdaptiveRow,
    spec::{AdaptiveParams, SignalSource, TierMode, TierSpec},
};
use law::{LawState, Zone};

/// Probes are judged by the median of this many last readings, so one slow
/// answer (a GC pause, a cold cache) does not cut the limits.
pub const PROBE_MEDIAN_OF: usize = 3;

/// One adaptive tier's controller.
#[derive(Debug)]
struct Controller {
    params: AdaptiveParams,
    state: LawState,
    /// The signal as the law saw it last (a probe: the median).
    value: Option<f64>,
    /// A probe's last readings.
    recent: VecDeque<f64>,
    /// Whether the last reading failed (logged once per failure spell).
    failing: bool,
}

/// A signal to read for one tier.
#[derive(Clone, Debug)]
pub struct SignalRead {
    pub tier: String,
    pub source: SignalSource,
    pub timeout: Duration,
}

/// Every adaptive tier's controller.
#[derive(Debug, Default)]
pub struct Adaptive {
    tiers: BTreeMap<String, Controller>,
}

impl Adaptive {
    /// Follows the tiers in force: a new adaptive tier starts at 1; a tier
    /// whose `adaptive` table changed keeps its factor (within its new
    /// `[min, 1]`); a tier no longer adaptive (or gone) is dropped, and its
    /// limits are the configured ones again.
    pub fn follow(&mut self, tiers: &[TierSpec]) {
        let mut next = BTreeMap::new();
        for t in tiers {
            let Some(params) = t.adaptive.as_ref().and_then(|a| a.check().ok()) else {
                continue;
            };
            let c = match self.tiers.remove(&t.name) {
                Some(mut c) => {
                    if c.params != params {
                        c.state.factor = c.state.factor.clamp(params.law.min, 1.0);
                        c.recent.clear();
                        c.params = params;
                    }
                    c
                }
                None => {
                    info!(tier = %t.name, signal = %params.signal, threshold = params.law.threshold,
                        unit = params.source.unit(), min = params.law.min, mode = params.mode.name(),
                        "adaptive: tier {} follows {} (threshold {}{})",
                        t.name, params.signal, params.law.threshold, params.source.unit());
                    Controller {
                        params,
                        state: LawState::START,
                        value: None,
                        recent: VecDeque::new(),
                        failing: false,
                    }
                }
            };
            next.insert(t.name.clone(), c);
        }
        for name in self.tiers.keys() {
            info!(tier = %name, "adaptive: tier {name} is no longer adaptive: its configured limits apply");
        }
        self.tiers = next;
    }

    /// The signals to read this second.
    pub fn signals(&self) -> Vec<SignalRead> {
        self.tiers
            .iter()
            .map(|(tier, c)| SignalRead {
                tier: tier.clone(),
                source: c.params.source.clone(),
                timeout: c.params.timeout,
            })
            .collect()
    }

    /// One second of every controller, with the readings of [`Self::signals`]
    /// (a tier without a reading holds). Logs each change of a factor once.
    pub fn step(&mut self, readings: BTreeMap<String, Result<f64, signal::SignalError>>) {
        for (tier, c) in self.tiers.iter_mut() {
            let reading = match readings.get(tier) {
                Some(Ok(v)) => {
                    if c.failing {
                        info!(tier = %tier, signal = %c.params.signal, "adaptive: {} reads again", c.params.signal);
                        c.failing = false;
                    }
                    Some(*v)
                }
                Some(Err(e)) => {
                    if !c.failing {
                        warn!(tier = %tier, signal = %c.params.signal, error = %e,
                            "adaptive: no reading of the signal: the factor holds until it reads again");
                        c.failing = true;
                    }
                    None
                }
                None => None,
            };
            let value = match reading {
                Some(v) if c.params.source.is_probe() => {
                    c.recent.push_back(v);
                    while c.recent.len() > PROBE_MEDIAN_OF {
                        c.recent.pop_front();
                    }
                    Some(median(&c.recent))
                }
                other => other,
            };
            c.value = value;
            let before = c.state;
            c.state = law::step(&c.params.law, before, value);
            if c.state.factor != before.factor {
                let why = match law::zone(&c.params.law, value) {
                    Zone::Over => "over the threshold",
                    _ => "calm",
                };
                let shown = value.map_or("none".to_owned(), |v| format!("{v:.2}"));
                info!(tier = %tier, factor = c.state.factor, previous = before.factor,
                    signal = %c.params.signal, value = %shown, threshold = c.params.law.threshold,
                    mode = c.params.mode.name(),
                    "adaptive: tier {tier} factor {:.3} -> {:.3} ({} {shown}{} {why}{})",
                    before.factor, c.state.factor, c.params.signal, c.params.source.unit(),
                    if c.params.mode == TierMode::Shadow { ", shadow: not applied" } else { "" });
            }
        }
    }

    /// The factors the kernel applies: enforce-mode tiers under 1.
    pub fn applied(&self) -> BTreeMap<String, f64> {
        self.tiers
            .iter()
            .filter(|(_, c)| c.params.mode == TierMode::Enforce && c.state.factor < 1.0)
            .map(|(t, c)| (t.clone(), c.state.factor))
            .collect()
    }

    /// Every adaptive tier's state, for `status`, `tier list` and `/metrics`.
    pub fn rows(&self) -> Vec<AdaptiveRow> {
        self.tiers
            .iter()
            .map(|(tier, c)| AdaptiveRow {
                tier: tier.clone(),
                signal: c.params.signal.clone(),
                unit: c.params.source.unit().to_owned(),
                mode: c.params.mode,
                factor: c.state.factor,
                value: c.value,
                threshold: c.params.law.threshold,
                recover: c.params.law.recover,
                min: c.params.law.min,
            })
            .collect()
    }
}

/// The median (of an even count, the lower middle: two readings, one of
/// them slow, are not yet a slow backend).
fn median(v: &VecDeque<f64>) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(f64::total_cmp);
    s[(s.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AdaptiveSpec;

    fn tier(name: &str, signal: &str, mode: Option<TierMode>) -> TierSpec {
        let mut t = TierSpec::unlimited(name);
        t.adaptive = Some(AdaptiveSpec {
            signal: signal.into(),
            threshold: 40.0,
            recover: None,
            min: Some(0.5),
            decrease: Some(0.5),
            increase: None,
            calm: None,
            pressure: None,
            mode,
        });
        t
    }

    fn over(a: &mut Adaptive, tier: &str) {
        a.step([(tier.to_owned(), Ok(90.0))].into());
    }

    #[test]
    fn shadow_factors_are_shown_not_applied() {
        let mut a = Adaptive::default();
        a.follow(&[
            tier("gold", "cpu", None),
            tier("free", "io", Some(TierMode::Shadow)),
        ]);
        a.step([("gold".into(), Ok(90.0)), ("free".into(), Ok(90.0))].into());
        assert_eq!(a.applied(), [("gold".to_owned(), 0.5)].into());
        let rows = a.rows();
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .all(|r| r.factor == 0.5 && r.value == Some(90.0))
        );
    }

    #[test]
    fn a_reload_keeps_the_factor_and_a_removal_drops_it() {
        let mut a = Adaptive::default();
        a.follow(&[tier("gold", "cpu", None)]);
        over(&mut a, "gold");
        a.follow(&[tier("gold", "cpu", None), TierSpec::unlimited("free")]);
        assert_eq!(a.applied()["gold"], 0.5);
        a.follow(&[TierSpec::unlimited("gold")]);
        assert!(a.applied().is_empty() && a.rows().is_empty());
    }

    #[test]
    fn one_slow_probe_answer_does_not_cut_the_limits() {
        let mut a = Adaptive::default();
        a.follow(&[tier("api", "tcp:127.0.0.1:9", None)]);
        for ms in [5.0, 500.0, 6.0] {
            a.step([("api".to_owned(), Ok(ms))].into());
        }
        assert!(a.applied().is_empty());
        for ms in [500.0, 600.0] {
            a.step([("api".to_owned(), Ok(ms))].into());
        }
        assert_eq!(a.applied()["api"], 0.5);
    }

    #[test]
    fn a_failing_read_holds_the_factor() {
        let mut a = Adaptive::default();
        a.follow(&[tier("gold", "cpu", None)]);
        over(&mut a, "gold");
        let gone = signal::SignalError::Format {
            path: "x".into(),
            line: "some",
            window: "avg10",
        };
        a.step([("gold".to_owned(), Err(gone))].into());
        assert_eq!(a.applied()["gold"], 0.5);
    }
}
