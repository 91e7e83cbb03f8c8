//! The control law of an adaptive tier, pure: one step a second from the
//! signal's reading to the next factor.
//!
//! - over `threshold`: multiplicative decrease (`factor × decrease`), down to `min`;
//! - between `recover` and `threshold`: hold (hysteresis: a signal hovering
//!   at the threshold does not make the limits oscillate);
//! - under `recover`: a calm second; from the `calm`-th calm second in a row
//!   on, additive increase (`factor + increase`), up to 1 (the configured
//!   limits are the ceiling: the factor never grows without bound);
//! - no reading (a PSI file gone, ...): hold, and the calm streak restarts.
//!
//! So from any factor `f`, `calm − 1 + ⌈(1 − f) / increase⌉` calm seconds
//! in a row bring it back to 1 ([`seconds_to_recover`]), and `⌈ln(min / f) /
//! ln(decrease)⌉` seconds over the threshold bring it to `min`
//! ([`seconds_to_min`]): the bounds the end-to-end tests use.

use crate::spec::Law;

/// Factors within this of 1 are 1 (so float steps end exactly at 1).
const EPSILON: f64 = 1e-9;

/// One tier's controller state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LawState {
    /// In `[min, 1]`.
    pub factor: f64,
    /// Calm seconds in a row so far.
    pub calm_streak: u32,
}

impl LawState {
    /// The state at the start: the configured limits (see README: a restart
    /// starts at 1).
    pub const START: LawState = LawState {
        factor: 1.0,
        calm_streak: 0,
    };
}

/// What the step saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    Over,
    Band,
    Calm,
    NoReading,
}

/// The zone of a reading.
pub fn zone(law: &Law, reading: Option<f64>) -> Zone {
    match reading {
        None => Zone::NoReading,
        Some(v) if v.is_nan() => Zone::NoReading,
        Some(v) if v > law.threshold => Zone::Over,
        Some(v) if v >= law.recover => Zone::Band,
        Some(_) => Zone::Calm,
    }
}

/// One second of the law.
pub fn step(law: &Law, s: LawState, reading: Option<f64>) -> LawState {
    let factor = s.factor.clamp(law.min, 1.0);
    match zone(law, reading) {
        Zone::Over => LawState {
            factor: (factor * law.decrease).max(law.min),
            calm_streak: 0,
        },
        Zone::Band | Zone::NoReading => LawState {
            factor,
            calm_streak: 0,
        },
        Zone::Calm => {
            let streak = s.calm_streak.saturating_add(1);
            let mut factor = factor;
            if streak >= law.calm {
                factor = (factor + law.increase).min(1.0);
                if 1.0 - factor < EPSILON {
                    factor = 1.0;
                }
            }
            LawState {
                factor,
                calm_streak: streak,
            }
        }
    }
}

/// Calm seconds in a row that bring `factor` back to 1.
pub fn seconds_to_recover(law: &Law, factor: f64) -> u32 {
    if factor >= 1.0 {
        return 0;
    }
    let steps = ((1.0 - factor) / law.increase - EPSILON).ceil().max(1.0) as u32;
    law.calm - 1 + steps
}

/// Seconds over the threshold that bring `factor` down to `min`.
pub fn seconds_to_min(law: &Law, factor: f64) -> u32 {
    if factor <= law.min {
        return 0;
    }
    ((law.min / factor).ln() / law.decrease.ln() - EPSILON)
        .ceil()
        .max(1.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn law(min: f64, decrease: f64, increase: f64, calm: u32) -> Law {
        Law {
            threshold: 40.0,
            recover: 20.0,
            min,
            decrease,
            increase,
            calm,
        }
    }

    #[test]
    fn falls_holds_and_recovers() {
        let l = law(0.2, 0.5, 0.25, 2);
        let mut s = LawState::START;
        s = step(&l, s, Some(90.0));
        assert_eq!(s.factor, 0.5);
        s = step(&l, s, Some(30.0)); // the band: hold
        assert_eq!(s.factor, 0.5);
        s = step(&l, s, Some(90.0));
        s = step(&l, s, Some(90.0));
        assert_eq!(s.factor, 0.2); // clamped at min
        s = step(&l, s, Some(5.0)); // first calm second: not yet
        assert_eq!(s.factor, 0.2);
        s = step(&l, s, Some(5.0));
        assert_eq!(s.factor, 0.45);
        s = step(&l, s, None); // no reading: hold, streak restarts
        assert_eq!((s.factor, s.calm_streak), (0.45, 0));
        for _ in 0..seconds_to_recover(&l, 0.45) {
            s = step(&l, s, Some(0.0));
        }
        assert_eq!(s.factor, 1.0);
        assert_eq!(seconds_to_recover(&l, 0.45), 1 + 3);
        assert_eq!(seconds_to_min(&l, 1.0), 3);
    }

    fn arb_law() -> impl Strategy<Value = Law> {
        (0.01f64..=1.0, 0.05f64..0.99, 0.01f64..=1.0, 1u32..10)
            .prop_map(|(min, d, i, c)| law(min, d, i, c))
    }

    fn arb_reading() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![Just(None), (0.0f64..100.0).prop_map(Some)]
    }

    proptest! {
        /// The factor is always within [min, 1], whatever the readings.
        #[test]
        fn always_within_min_and_one(l in arb_law(),
            readings in prop::collection::vec(arb_reading(), 0..200)) {
            let mut s = LawState::START;
            for r in readings {
                s = step(&l, s, r);
                prop_assert!(s.factor >= l.min && s.factor <= 1.0, "{s:?}");
            }
        }

        /// Over the threshold, in the band or without a reading the factor
        /// never increases; over it, it falls until min.
        #[test]
        fn never_increases_unless_calm(l in arb_law(), f in 0.0f64..=1.0,
            r in arb_reading()) {
            let s = LawState { factor: f.max(l.min), calm_streak: 100 };
            let next = step(&l, s, r);
            if zone(&l, r) != Zone::Calm {
                prop_assert!(next.factor <= s.factor);
            }
            if zone(&l, r) == Zone::Over && s.factor > l.min {
                prop_assert!(next.factor < s.factor);
            }
        }

        /// From any state, `seconds_to_recover` calm seconds bring it to 1,
        /// and not one second fewer.
        #[test]
        fn recovers_in_the_computed_time(l in arb_law(), f in 0.0f64..=1.0,
            calm in 0.0f64..20.0) {
            let start = LawState { factor: f.max(l.min), calm_streak: 0 };
            let n = seconds_to_recover(&l, start.factor);
            let mut s = start;
            for i in 0..n {
                prop_assert!(s.factor < 1.0 || start.factor >= 1.0, "at 1 after {i} of {n}");
                s = step(&l, s, Some(calm.min(l.recover - 1e-6).max(0.0)));
            }
            prop_assert_eq!(s.factor, 1.0);
        }

        /// `seconds_to_min` seconds over the threshold reach min, not fewer.
        #[test]
        fn falls_to_min_in_the_computed_time(l in arb_law(), f in 0.0f64..=1.0) {
            let mut s = LawState { factor: f.max(l.min), calm_streak: 0 };
            let n = seconds_to_min(&l, s.factor);
            for _ in 0..n {
                prop_assert!(s.factor > l.min);
                s = step(&l, s, Some(99.0));
            }
            prop_assert!((s.factor - l.min).abs() < 1e-12);
        }
    }
}
