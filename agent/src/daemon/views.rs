//! Read models: `tier list`, `rule list`, `stats`, `status` and the metrics
//! snapshot, computed from the daemon's state without changing it.

use std::collections::BTreeMap;

use anyhow::Result;
use ipnet::IpNet;
use tollgate_common::{MAX_TIERS, Verdict, names};

use super::{Daemon, error::CommandError};
use crate::datapath::dataplane::{self, LinkState};
use crate::datapath::tracked;
use crate::{
    config::ConfigSource,
    metrics::{self, Snapshot, TierSnapshot},
    proto::{
        Fill, InterfaceStatus, LimitRow, RouteRow, RuleRow, StatsData, StatusData, TierRow,
        TierStats, TopRow, Traffic,
    },
    spec::{LimitField, RuleTarget, TierSpec},
};

impl Daemon {
    pub(super) fn tier_source(&self, name: &str) -> &'static str {
        if self.state.overlay.tiers.contains_key(name) {
            "cli"
        } else {
            match self.file.source {
                ConfigSource::File(_) if self.file.tier(name).is_some() => "file",
                _ => "embedded",
            }
        }
    }

    pub(super) fn tier_rows(&self) -> Vec<TierRow> {
        let row = |spec: &TierSpec, field: LimitField| {
            let l = spec.limit(field)?;
            let r = l.resolve(field).ok()?;
            Some(LimitRow {
                rate: l.rate.clone(),
                per_second: r.rate.per_second_f64(),
                burst: r.burst,
                burst_explicit: l.burst.is_some(),
            })
        };
        let adaptive = self.adaptive.rows();
        let mut rows: Vec<TierRow> = self
            .effective
            .tiers
            .iter()
            .map(|t| TierRow {
                name: t.name.clone(),
                index: self.state.index_of(&t.name).unwrap_or_default(),
                default: t.name == self.effective.default_tier,
                source: self.tier_source(&t.name).to_owned(),
                mode: t.mode,
                ipv6_prefix: t.ipv6_prefix,
                packets: row(t, LimitField::Packets),
                bytes: row(t, LimitField::Bytes),
                connections: row(t, LimitField::Connections),
                requests: row(t, LimitField::Requests),
                aggregate: row(t, LimitField::Aggregate),
                rules: self
                    .effective
                    .rules
                    .iter()
                    .filter(|r| r.target == RuleTarget::Tier(t.name.clone()))
                    .count(),
                fields: crate::overrides::tier_field_sources(
                    &t.name,
                    &self.file,
                    matches!(self.file.source, ConfigSource::File(_)),
                    &self.state.overlay,
                ),
                adaptive: adaptive.iter().find(|a| a.tier == t.name).cloned(),
            })
            .collect();
        rows.sort_by_key(|r| r.index);
        rows
    }

    pub(super) fn rule_rows(&self) -> Vec<RuleRow> {
        let mut rules = self.effective.rules.clone();
        rules.sort_by_key(|r| r.cidr);
        rules
            .iter()
            .map(|r| {
                let (action, tier) = match &r.target {
                    RuleTarget::Tier(t) => ("tier", t.clone()),
                    RuleTarget::Allow => ("allow", self.effective.default_tier.clone()),
                    RuleTarget::Deny => ("deny", self.effective.default_tier.clone()),
                };
                RuleRow {
                    cidr: r.cidr.to_string(),
                    action: action.to_owned(),
                    tier,
                    source: if self.state.overlay.rules.contains_key(&r.cidr.to_string()) {
                        "cli"
                    } else {
                        "file"
                    }
                    .to_owned(),
                }
            })
            .collect()
    }

    /// `route list`, with each route's counters read now (one lookup per
    /// configured route).
    pub(super) fn route_rows(&self) -> Result<Vec<RouteRow>, CommandError> {
        let mut rows = Vec::new();
        for r in &self.effective.routes {
            let index = self.state.route_index(&r.name).unwrap_or_default();
            let c = self
                .maps
                .route_counter(index)
                .map_err(CommandError::Counters)?;
            let ceiling = r.ceiling.as_ref().and_then(|l| {
                let resolved = l.resolve(LimitField::Aggregate).ok()?;
                Some(LimitRow {
                    rate: l.rate.clone(),
                    per_second: resolved.rate.per_second_f64(),
                    burst: resolved.burst,
                    burst_explicit: l.burst.is_some(),
                })
            });
            rows.push(RouteRow {
                name: r.name.clone(),
                index,
                source: if self.state.overlay.routes.contains_key(&r.name) {
                    "cli"
                } else {
                    "file"
                }
                .to_owned(),
                matches: r.match_label().to_owned(),
                host: r.host.clone(),
                ports: r.ports(&self.effective.http.ports),
                cost: r.cost,
                ceiling,
                mode: r.mode,
                requests: c.requests,
                dropped: c.dropped,
                dropped_ceiling: c.dropped_ceiling,
                shadow_would_drop: c.shadow_would_drop,
            });
        }
        rows.sort_by_key(|r| r.index);
        Ok(rows)
    }

    pub(super) fn stats(&self, only: Option<&str>) -> Result<StatsData, CommandError> {
        if let Some(t) = only
            && self.effective.tier(t).is_none()
        {
            return Err(CommandError::NoSuchTier {
                name: t.to_owned(),
                tiers: self.effective.tier_names(),
            });
        }
        let counters = self.maps.counters().map_err(CommandError::Counters)?;
        let names = self.in_force().names.by_index();
        let mut tiers = Vec::new();
        for (index, per_verdict) in counters.iter().enumerate() {
            let index = index as u32;
            let name = names.get(&index).cloned();
            let any = per_verdict.iter().any(|c| c.packets > 0);
            match (&name, only) {
                (Some(n), Some(o)) if n != o => continue,
                (None, Some(_)) => continue,
                (None, None) if !any => continue,
                _ => {}
            }
            let mut ts = TierStats {
                name: name.unwrap_or_else(|| format!("#{index}")),
                index,
                passed: Traffic::default(),
                dropped: Traffic::default(),
                verdicts: BTreeMap::new(),
                usage: self.usage.get(index as usize).cloned().unwrap_or_default(),
            };
            for v in Verdict::ALL {
                let c = per_verdict[v as usize];
                let (pps, bps) = self.samples.rate(index as usize, v as usize);
                let t = Traffic {
                    packets: c.packets,
                    bytes: c.bytes,
                    packets_per_sec: pps,
                    bytes_per_sec: bps,
                };
                let sum = if v.drops() {
                    &mut ts.dropped
                } else {
                    &mut ts.passed
                };
                sum.packets += t.packets;
                sum.bytes += t.bytes;
                sum.packets_per_sec += t.packets_per_sec;
                sum.bytes_per_sec += t.bytes_per_sec;
                ts.verdicts.insert(v.name().to_owned(), t);
            }
            tiers.push(ts);
        }
        Ok(StatsData {
            sample_interval_secs: self.samples.interval(),
            tiers,
        })
    }

    /// The daemon's part of a metrics snapshot (fresh kernel counters).
    pub(super) fn snapshot(&self) -> Snapshot {
        let in_force = self.in_force();
        let names = &in_force.names;
        let counters = self.maps.counters().unwrap_or_default();
        let mut tiers = Vec::new();
        for (i, name) in names.names.iter().enumerate() {
            let Some((name, _)) = name else { continue };
            let mut admitted = 0.0;
            let mut dropped = 0.0;
            for v in Verdict::ALL {
                let (p, _) = self.samples.rate(i, v as usize);
                if v.drops() {
                    dropped += p;
                } else {
                    admitted += p;
                }
            }
            tiers.push(TierSnapshot {
                name: name.clone(),
                counters: counters.get(i).map(|c| c.to_vec()).unwrap_or_default(),
                admitted_pps: admitted,
                dropped_pps: dropped,
                usage: self.usage[i].clone(),
            });
        }
        let status = Some(self.status());
        let (rules_v4, rules_v6) = self.maps.rules().map_or((0, 0), |r| {
            r.iter().fold((0, 0), |(a, b), (n, _)| match n {
                IpNet::V4(_) => (a + 1, b),
                IpNet::V6(_) => (a, b + 1),
            })
        });
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            tiers,
            tracked_v4: self.tracked.0,
            tracked_v6: self.tracked.1,
            capacity_v4: status.as_ref().map_or(0, |s| s.sources_v4.max),
            capacity_v6: status.as_ref().map_or(0, |s| s.sources_v6.max),
            rules_v4,
            rules_v6,
            tracked_filter_bits: tracked::bits(&self.maps.tracked).unwrap_or(0),
            tracked_filter_cleared_bits: self.filter_aged.map(|a| a.cleared_bits),
            sampler: self.maps.sampler_totals().unwrap_or_default(),
            interfaces: status
                .map(|s| {
                    s.interfaces
                        .into_iter()
                        .map(|i| metrics::InterfaceInfo {
                            name: i.name,
                            mode: i
                                .mode
                                .map_or("unknown".to_owned(), |m| format!("{m:?}").to_lowercase()),
                            program_id: i.program_id.unwrap_or(0),
                            attached: i.attached,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            reloads: self.reloads,
            reload_failures: self.reload_failures,
            repairs: self.guard.as_ref().map(|g| g.totals()).unwrap_or_default(),
            config_readable: self.config_readable,
            adaptive: self.adaptive.rows(),
            state_write_failures: self.state_write_failures,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            bans_active: self.state.bans.bans.values().fold(
                std::collections::BTreeMap::new(),
                |mut by, b| {
                    *by.entry(b.rule.clone()).or_default() += 1;
                    by
                },
            ),
            bans: self.ban_counters.clone(),
            routes: self
                .effective
                .routes
                .iter()
                .filter_map(|r| {
                    let index = self.state.route_index(&r.name)?;
                    Some((
                        r.name.clone(),
                        self.route_counters.get(&index).copied().unwrap_or_default(),
                    ))
                })
                .collect(),
            ..Default::default()
        }
    }

    pub(super) fn status(&self) -> StatusData {
        let pin_dir = &self.file.pin_dir;
        let max = |name: &str| {
            aya::maps::MapInfo::from_pin(pin_dir.join(name))
                .map(|i| i.max_entries() as u64)
                .unwrap_or(0)
        };
        // From the last scan: a status never walks the source maps.
        let (v4, v6) = self.tracked;
        let (r4, r6) = self
            .effective
            .rules
            .iter()
            .fold((0, 0), |(a, b), r| match r.cidr {
                IpNet::V4(_) => (a + 1, b),
                IpNet::V6(_) => (a, b + 1),
            });
        let interfaces = self
            .file
            .interfaces
            .iter()
            .map(|iface| {
                // The guard holds the link, also while its pin is being
                // re-created.
                let link = match &self.guard {
                    Some(g) => g.link_state(iface),
                    None => dataplane::link_state(pin_dir, iface),
                };
                let (attached, link_id, program_id) = match link {
                    LinkState::Live { link_id, prog_id } => (true, Some(link_id), Some(prog_id)),
                    _ => (false, None, None),
                };
                InterfaceStatus {
                    name: iface.clone(),
                    mode: self.state.attachments.get(iface).copied(),
                    attached,
                    link_id,
                    program_id,
                }
            })
            .collect();
        StatusData {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            start: self.start.name().to_owned(),
            program_id: dataplane::pinned_program_id(pin_dir),
            interfaces,
            config_source: self.file.source.to_string(),
            pin_dir: pin_dir.clone(),
            socket: self.file.socket.clone(),
            state_file: self.file.state_file.clone(),
            default_tier: self.effective.default_tier.clone(),
            tiers: Fill {
                used: self.effective.tiers.len() as u64,
                max: MAX_TIERS as u64,
            },
            sources_v4: Fill {
                used: v4,
                max: max(names::SOURCES_V4),
            },
            sources_v6: Fill {
                used: v6,
                max: max(names::SOURCES_V6),
            },
            rules_v4: Fill {
                used: r4,
                max: max(names::RULES_V4),
            },
            rules_v6: Fill {
                used: r6,
                max: max(names::RULES_V6),
            },
            cli_changes: self.state.overlay.len(),
            bans: self.state.bans.bans.len(),
            // Filled in by Shared::handle, which owns the cluster state.
            cluster: None,
            adaptive: self.adaptive.rows(),
            crowdsec: None,
        }
    }
}

pub(super) fn top_row(row: &crate::talkers::BucketRow, tier: String) -> TopRow {
    TopRow {
        source: row.bucket.network(),
        bucket: match row.bucket {
            IpNet::V4(n) => n.addr().to_string(),
            IpNet::V6(n) => n.to_string(),
        },
        addresses: row.addresses,
        tier,
        packets: row.packets,
        bytes: row.bytes,
        drops: row.drops,
        requests: row.requests,
        error: row.error,
    }
}
