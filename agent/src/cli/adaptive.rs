//! Rendering adaptive tiers: the FACTOR cell of `tier list` and the
//! adaptive table of `status`.

use super::render::Table;
use crate::proto::{AdaptiveRow, TierRow};
use crate::spec::TierMode;

fn value(a: &AdaptiveRow) -> String {
    a.value
        .map_or("no reading".to_owned(), |v| format!("{v:.1}{}", a.unit))
}

/// `tier list`'s FACTOR cell: "-" for a tier that is not adaptive, else the
/// factor and, in shadow mode, that it is not applied.
pub(super) fn factor_cell(r: &TierRow) -> String {
    match &r.adaptive {
        None => "-".to_owned(),
        Some(a) if a.mode == TierMode::Shadow => format!("{:.2} (shadow)", a.factor),
        Some(a) => format!("{:.2}", a.factor),
    }
}

/// `status`'s adaptive table (empty without adaptive tiers).
pub(super) fn render_adaptive(rows: &[AdaptiveRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut t = Table::new(&[
        "ADAPTIVE TIER",
        "SIGNAL",
        ">NOW",
        ">OVER",
        ">CALM UNDER",
        ">FACTOR",
        ">MIN",
        "MODE",
    ]);
    for a in rows {
        t.row(vec![
            a.tier.clone(),
            a.signal.clone(),
            value(a),
            format!("{}{}", a.threshold, a.unit),
            format!("{}{}", a.recover, a.unit),
            format!("{:.2}", a.factor),
            format!("{}", a.min),
            match a.mode {
                TierMode::Enforce => "enforce".to_owned(),
                TierMode::Shadow => "shadow (not applied)".to_owned(),
            },
        ]);
    }
    format!(
        "\n{}the kernel holds each enforce-mode tier's limits x FACTOR (`tollgate tier list` shows the configured ones)\n",
        t.render()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: TierMode, value: Option<f64>) -> AdaptiveRow {
        AdaptiveRow {
            tier: "web".into(),
            signal: "cpu".into(),
            unit: "%".into(),
            mode,
            factor: 0.64,
            value,
            threshold: 40.0,
            recover: 20.0,
            min: 0.2,
        }
    }

    #[test]
    fn status_shows_signal_value_thresholds_and_factor() {
        let out = render_adaptive(&[
            row(TierMode::Enforce, Some(55.25)),
            row(TierMode::Shadow, None),
        ]);
        assert!(out.contains("ADAPTIVE TIER"), "{out}");
        assert!(
            out.contains("55.2%") && out.contains("40%") && out.contains("20%"),
            "{out}"
        );
        assert!(out.contains("0.64") && out.contains("no reading"), "{out}");
        assert!(out.contains("shadow (not applied)"), "{out}");
        assert_eq!(render_adaptive(&[]), "");
    }
}
