//! Which setting wins: the changes made with the CLI (the state file's
//! overlay) replace whole tiers and rules of the config file. This module
//! says, field by field, where a value in force comes from, and which edits
//! of the file a CLI change hides at a reload.

use std::collections::BTreeMap;

use crate::{
    config::Config,
    spec::{LimitSpec, TierSpec},
    state::Overlay,
};

/// The fields of a tier, in `tier list` order.
pub const TIER_FIELDS: [&str; 11] = [
    "packets",
    "bytes",
    "connections",
    "requests",
    "aggregate",
    "new_sources",
    "global_packets",
    "global_requests",
    "ipv6_prefix",
    "mode",
    "adaptive",
];

fn limit(l: &Option<LimitSpec>) -> Option<String> {
    l.as_ref().map(|l| match l.burst {
        Some(b) => format!("{} burst {b}", l.rate),
        None => l.rate.clone(),
    })
}

/// A tier's field as written (`None`: not set, its default applies).
pub fn tier_field(spec: &TierSpec, field: &str) -> Option<String> {
    match field {
        "packets" => limit(&spec.packets),
        "bytes" => limit(&spec.bytes),
        "connections" => limit(&spec.connections),
        "requests" => limit(&spec.requests),
        "aggregate" => limit(&spec.aggregate),
        "new_sources" => limit(&spec.new_sources),
        "global_packets" => limit(&spec.global_packets),
        "global_requests" => limit(&spec.global_requests),
        "ipv6_prefix" => Some(spec.ipv6_prefix.to_string()),
        "mode" => Some(format!("{:?}", spec.mode).to_lowercase()),
        "adaptive" => spec.adaptive.as_ref().map(|a| a.to_string()),
        _ => None,
    }
}

/// Where each field of tier `name` comes from: "cli" (a `tier set` that
/// differs from the file), "file", or "default" (set nowhere). `from_file`:
/// whether `file` is a config file (not the embedded default).
pub fn tier_field_sources(
    name: &str,
    file: &Config,
    from_file: bool,
    overlay: &Overlay,
) -> BTreeMap<String, String> {
    let in_file = file.tier(name).filter(|_| from_file);
    let cli = overlay.tiers.get(name);
    TIER_FIELDS
        .iter()
        .map(|&f| {
            let file_value = in_file.and_then(|t| tier_field(t, f));
            let source = match cli {
                Some(c) if tier_field(c, f) != file_value => "cli",
                _ if file_value.is_some() => "file",
                _ => "default",
            };
            (f.to_owned(), source.to_owned())
        })
        .collect()
}

/// A value the file now has that a CLI change keeps from applying.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overridden {
    /// `tier gold` or `rule 10.0.0.0/8`.
    pub what: String,
    /// The tier's field ("packets"), or "target" for a rule.
    pub field: String,
    /// The file's new value ("unset" when the file has none).
    pub file: String,
    /// The value in force, from the CLI ("removed" after `tier rm`/`rule rm`).
    pub cli: String,
    /// What applies the file's value.
    pub reset: String,
}

impl std::fmt::Display for Overridden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: the file now says {}, the CLI's {} stays in force (`{}` applies the file's)",
            self.what, self.field, self.file, self.cli, self.reset
        )
    }
}

fn shown(v: Option<String>) -> String {
    v.unwrap_or_else(|| "unset".to_owned())
}

/// The edits between `old` and `new` (the config file before and after a
/// reload) that `overlay` hides: every field whose file value changed and
/// differs from the CLI's.
pub fn overridden(old: &Config, new: &Config, overlay: &Overlay) -> Vec<Overridden> {
    let mut out = Vec::new();
    for (name, cli) in &overlay.tiers {
        let (was, now) = (old.tier(name), new.tier(name));
        let Some(now) = now else { continue };
        for f in TIER_FIELDS {
            let file_now = tier_field(now, f);
            let file_was = was.and_then(|t| tier_field(t, f));
            let cli_value = tier_field(cli, f);
            if file_now != file_was && cli_value != file_now {
                out.push(Overridden {
                    what: format!("tier {name}"),
                    field: f.to_owned(),
                    file: shown(file_now),
                    cli: shown(cli_value),
                    reset: format!("tollgate tier reset {name}"),
                });
            }
        }
    }
    for name in &overlay.removed_tiers {
        if let Some(now) = new.tier(name)
            && old.tier(name) != Some(now)
        {
            out.push(Overridden {
                what: format!("tier {name}"),
                field: "tier".to_owned(),
                file: "changed".to_owned(),
                cli: "removed".to_owned(),
                reset: format!("tollgate tier reset {name}"),
            });
        }
    }
    let rule = |c: &Config, cidr: &str| {
        c.rules
            .iter()
            .find(|r| r.cidr.to_string() == cidr)
            .map(|r| r.target.to_string())
    };
    for (cidr, target) in &overlay.rules {
        let (was, now) = (rule(old, cidr), rule(new, cidr));
        let cli = target.to_string();
        if now != was && now.as_ref() != Some(&cli) {
            out.push(Overridden {
                what: format!("rule {cidr}"),
                field: "target".to_owned(),
                file: shown(now),
                cli,
                reset: format!("tollgate rule reset {cidr}"),
            });
        }
    }
    for cidr in &overlay.removed_rules {
        let (was, now) = (rule(old, cidr), rule(new, cidr));
        if now.is_some() && now != was {
            out.push(Overridden {
                what: format!("rule {cidr}"),
                field: "target".to_owned(),
                file: shown(now),
                cli: "removed".to_owned(),
                reset: format!("tollgate rule reset {cidr}"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, parse};

    fn cfg(packets: &str, rule: &str) -> Config {
        parse(
            &format!(
                "[[tier]]\nname = \"default\"\npackets = \"{packets}\"\nbytes = \"1MB/s\"\n\
                 [[tier]]\nname = \"gold\"\n\
                 [[rule]]\ncidr = \"10.0.0.0/8\"\n{rule}\n"
            ),
            ConfigSource::Embedded,
        )
        .unwrap()
    }

    #[test]
    fn a_file_edit_hidden_by_a_cli_change_is_named_with_both_values() {
        let old = cfg("100/s", "tier = \"gold\"");
        let new = cfg("200/s", "action = \"deny\"");
        let mut overlay = Overlay::default();
        let mut cli = old.tier("default").unwrap().clone();
        cli.packets = Some(LimitSpec {
            rate: "50/s".into(),
            burst: Some(5),
        });
        overlay.set_tier(cli);
        overlay.add_rule(&crate::spec::RuleSpec {
            cidr: "10.0.0.0/8".parse().unwrap(),
            target: crate::spec::RuleTarget::Allow,
        });
        let o = overridden(&old, &new, &overlay);
        assert_eq!(o.len(), 2, "{o:?}");
        assert_eq!(
            (
                o[0].what.as_str(),
                o[0].field.as_str(),
                o[0].file.as_str(),
                o[0].cli.as_str()
            ),
            ("tier default", "packets", "200/s", "50/s burst 5")
        );
        assert!(
            o[0].to_string().contains("tollgate tier reset default"),
            "{}",
            o[0]
        );
        assert_eq!(
            (o[1].what.as_str(), o[1].file.as_str()),
            ("rule 10.0.0.0/8", "deny")
        );
        // An edit that is not hidden (bytes: the CLI tier keeps the file's) is not named.
        assert!(o.iter().all(|x| x.field != "bytes"));
        // Field sources: packets from the CLI, bytes from the file, aggregate nowhere.
        let src = tier_field_sources("default", &new, true, &overlay);
        assert_eq!(src["packets"], "cli");
        assert_eq!(src["bytes"], "file");
        assert_eq!(src["aggregate"], "default");
        // Without a CLI change, nothing is hidden.
        assert!(overridden(&old, &new, &Overlay::default()).is_empty());
    }
}
