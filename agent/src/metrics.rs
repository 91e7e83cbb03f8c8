//! Prometheus exposition of everything the daemon knows, rendered from a
//! [`Snapshot`] on each scrape with the `prometheus` crate's text encoder.
//!
//! Kernel counters are absolute and per-CPU summed, so each scrape builds a
//! fresh registry from the snapshot instead of incrementing long-lived
//! counters: values are exactly the kernel's, and a counter can never drift
//! from them. Every label set is bounded: tiers (<= 64), verdicts (11), HTTP
//! dimensions (capped in `http::stats`), routes (<= 256, configured), top
//! talkers (K, off by default).

use std::collections::BTreeMap;

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tollgate_common::{Counter, SamplerState, VERDICT_COUNT, Verdict, route::RouteCounter};

use crate::{datapath::guard::RepairTotals, http::HttpKey, openapi::DriftKind, talkers::TalkerRow};

/// Per-tier numbers.
#[derive(Clone, Debug, Default)]
pub(crate) struct TierSnapshot {
    pub name: String,
    pub counters: Vec<Counter>,
    /// Packets/s admitted (passed, allowed, shadow) over the last second.
    pub admitted_pps: f64,
    /// Packets/s dropped over the last second.
    pub dropped_pps: f64,
    /// Usage over the last second.
    pub usage: Usage,
}

pub(crate) use crate::proto::Usage;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct InterfaceInfo {
    pub name: String,
    pub mode: String,
    pub program_id: u32,
    pub attached: bool,
}

/// Everything one scrape shows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub version: &'static str,
    pub tiers: Vec<TierSnapshot>,
    pub tracked_v4: u64,
    pub tracked_v6: u64,
    pub capacity_v4: u64,
    pub capacity_v6: u64,
    pub rules_v4: u64,
    pub rules_v6: u64,
    /// The tracked-source filter's bits per generation (0: off).
    pub tracked_filter_bits: u64,
    /// The bits set in the generation its last ageing cleared: what a
    /// generation gathers in its period as the current one (`None` before
    /// the first ageing, a minute after the start).
    pub tracked_filter_cleared_bits: Option<u64>,
    pub sampler: SamplerState,
    /// Ring records the daemon could not decode.
    pub samples_undecodable: u64,
    pub http: Vec<(HttpKey, u64)>,
    pub http_malformed: u64,
    /// Estimated requests to endpoints `[http] openapi` does not document,
    /// by (method, route), bounded by `max_routes`.
    pub http_shadow: Vec<((String, String), u64)>,
    /// Estimated drifting requests by kind; `None` without `[http] openapi`.
    pub http_drift: Option<Vec<(DriftKind, u64)>>,
    pub interfaces: Vec<InterfaceInfo>,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Repairs by the daemon's guard.
    pub repairs: RepairTotals,
    /// Whether the config file was readable at the last check (`None`
    /// without a config file).
    pub config_readable: Option<bool>,
    pub state_write_failures: u64,
    pub uptime_seconds: f64,
    /// Heavy hitters, when the top-K metric is enabled.
    pub top: Vec<TalkerRow>,
    /// `Some` when cluster sync is configured.
    pub cluster_up: Option<bool>,
    /// Configured routes and their counters, as of the last per-second read.
    pub routes: Vec<(String, RouteCounter)>,
    /// Adaptive tiers: factor and signal.
    pub adaptive: Vec<crate::proto::AdaptiveRow>,
    /// Bans in force, by the rule that issued them (or "cli").
    pub bans_active: BTreeMap<String, u64>,
    /// What the automated response did since the daemon started.
    pub bans: BanTotals,
    /// `Some` when `[crowdsec]` is configured.
    pub crowdsec: Option<CrowdsecSnapshot>,
}

/// What the automated response did (`[[response]]`, `tollgate ban`).
#[derive(Clone, Debug, Default)]
pub(crate) struct BanTotals {
    /// Bans issued, by response rule (or "cli").
    pub issued: BTreeMap<String, u64>,
    /// Bans of a repeat offence (longer than a first offence's).
    pub escalations: u64,
    /// Bans a shadow rule would have issued, by rule.
    pub would_ban: BTreeMap<String, u64>,
    /// Findings on request evidence the TCP stack did not confirm (the source
    /// held no connection to an HTTP port): not banned.
    pub unconfirmed: u64,
    /// Bans lifted (expired or removed).
    pub lifted: u64,
}

/// The CrowdSec bouncer: its state and the active bans by (scope, origin).
#[derive(Clone, Debug, Default)]
pub(crate) struct CrowdsecSnapshot {
    pub status: crate::proto::CrowdsecStatus,
    pub decisions: Vec<(String, String, u64)>,
}

/// `tollgate_crowdsec_*`: bounded labels (2 scopes, a few origins, 3 reasons).
fn render_crowdsec(r: &Registry, c: &CrowdsecSnapshot) -> Result<(), prometheus::Error> {
    let decisions = IntGaugeVec::new(
        Opts::new(
            "tollgate_crowdsec_decisions",
            "CrowdSec ban decisions held as kernel denies, by scope (Ip, Range) and origin (cscli, crowdsec, CAPI, lists).",
        ),
        &["scope", "origin"],
    )?;
    for (scope, origin, n) in &c.decisions {
        decisions.with_label_values(&[scope, origin]).set(*n as i64);
    }
    r.register(Box::new(decisions))?;
    let gauge = |name: &str, help: &str, v: f64| -> Result<(), prometheus::Error> {
        let g = Gauge::new(name, help)?;
        g.set(v);
        r.register(Box::new(g))
    };
    let counter = |name: &str, help: &str, v: u64| -> Result<(), prometheus::Error> {
        let g = IntCounter::new(name, help)?;
        g.inc_by(v);
        r.register(Box::new(g))
    };
    let s = &c.status;
    gauge(
        "tollgate_crowdsec_up",
        "1 when the last pull from the CrowdSec local API succeeded (0: the last decisions still enforce).",
        s.up as u8 as f64,
    )?;
    gauge(
        "tollgate_crowdsec_last_sync_timestamp_seconds",
        "Unix time of the last successful pull from the local API (0: none yet).",
        s.last_sync_unix,
    )?;
    gauge(
        "tollgate_crowdsec_allow_listed",
        "Banned prefixes a configured allow rule keeps from being denied.",
        s.allow_listed as f64,
    )?;
    counter(
        "tollgate_crowdsec_pulls_total",
        "Successful pulls of the decisions stream.",
        s.pulls,
    )?;
    counter(
        "tollgate_crowdsec_sync_failures_total",
        "Failed pulls of the decisions stream (or kernel writes).",
        s.failures,
    )?;
    let ignored = IntCounterVec::new(
        Opts::new(
            "tollgate_crowdsec_decisions_ignored_total",
            "Decisions not applied: reason type (not a ban), scope (not configured) or value (unparsable).",
        ),
        &["reason"],
    )?;
    for (reason, n) in &s.ignored {
        ignored.with_label_values(&[reason]).inc_by(*n);
    }
    r.register(Box::new(ignored))
}

fn verdict_reason(v: Verdict) -> (&'static str, &'static str) {
    // (verdict, reason): drops carry the limit that dropped them.
    match v {
        Verdict::Passed => ("passed", "within_limits"),
        Verdict::Allowed => ("passed", "allow_rule"),
        Verdict::ShadowWouldDrop => ("passed", "shadow_would_drop"),
        Verdict::NotIp => ("passed", "not_ip"),
        Verdict::DroppedPackets => ("dropped", "packets_limit"),
        Verdict::DroppedBytes => ("dropped", "bytes_limit"),
        Verdict::DroppedConnections => ("dropped", "connections_limit"),
        Verdict::DroppedRequests => ("dropped", "requests_limit"),
        Verdict::DroppedAggregate => ("dropped", "aggregate_limit"),
        Verdict::Denied => ("dropped", "deny_rule"),
        Verdict::Malformed => ("dropped", "malformed"),
        Verdict::Untracked => ("passed", "untracked"),
        Verdict::DroppedUntracked => ("dropped", "untracked_limit"),
        Verdict::DroppedRouteCeiling => ("dropped", "route_ceiling"),
    }
}

/// The automated response's series.
fn render_bans(s: &Snapshot, r: &Registry) -> Result<(), prometheus::Error> {
    let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), &["rule"])?;
        r.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let active = IntGaugeVec::new(
        Opts::new(
            "tollgate_bans_active",
            "Bans in force, by the [[response]] rule that issued them (\"cli\": tollgate ban add).",
        ),
        &["rule"],
    )?;
    r.register(Box::new(active.clone()))?;
    for (rule, n) in &s.bans_active {
        active.with_label_values(&[rule]).set(*n as i64);
    }
    let issued = counter(
        "tollgate_bans_issued_total",
        "Bans issued, by [[response]] rule (\"cli\": tollgate ban add).",
    )?;
    for (rule, n) in &s.bans.issued {
        issued.with_label_values(&[rule]).inc_by(*n);
    }
    let would = counter(
        "tollgate_bans_shadow_total",
        "Bans a shadow [[response]] rule would have issued, by rule.",
    )?;
    for (rule, n) in &s.bans.would_ban {
        would.with_label_values(&[rule]).inc_by(*n);
    }
    for (name, help, value) in [
        (
            "tollgate_ban_escalations_total",
            "Bans of a repeat offence (doubled per repeat, up to max_ban).",
            s.bans.escalations,
        ),
        (
            "tollgate_bans_lifted_total",
            "Bans lifted: expired or removed with tollgate ban rm.",
            s.bans.lifted,
        ),
        (
            "tollgate_bans_unconfirmed_total",
            "Sources a rule found on request evidence but did not ban: the TCP stack showed no \
             connection from them to an HTTP port (forged sources).",
            s.bans.unconfirmed,
        ),
    ] {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        r.register(Box::new(c))?;
    }
    Ok(())
}

/// Renders the snapshot in the Prometheus text exposition format.
pub(crate) fn render(s: &Snapshot) -> Result<String, prometheus::Error> {
    let r = Registry::new();
    let counter =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        r.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let int_gauge =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };

    let packets = counter(
        "tollgate_packets_total",
        "Packets judged by the XDP program, by tier, verdict and reason.",
        &["tier", "verdict", "reason"],
    )?;
    let bytes = counter(
        "tollgate_bytes_total",
        "Bytes judged by the XDP program, by tier, verdict and reason.",
        &["tier", "verdict", "reason"],
    )?;
    let admitted = gauge(
        "tollgate_tier_admitted_packets_per_second",
        "Packets per second admitted in the tier over the last second.",
        &["tier"],
    )?;
    let dropped = gauge(
        "tollgate_tier_dropped_packets_per_second",
        "Packets per second dropped in the tier over the last second.",
        &["tier"],
    )?;
    let usage_pps = gauge(
        "tollgate_tier_usage_packets_per_second",
        "Tier usage: packets per second.",
        &["tier"],
    )?;
    let usage_bps = gauge(
        "tollgate_tier_usage_bytes_per_second",
        "Tier usage: bytes per second.",
        &["tier"],
    )?;
    let usage_rps = gauge(
        "tollgate_tier_usage_requests_per_second",
        "Tier usage: estimated HTTP requests per second (from samples).",
        &["tier"],
    )?;
    let active = int_gauge(
        "tollgate_tier_active_sources",
        "Sources of the tier active in the last period.",
        &["tier"],
    )?;
    let limited = int_gauge(
        "tollgate_tier_limited_sources",
        "Sources of the tier whose packets bucket is full now.",
        &["tier"],
    )?;
    for t in &s.tiers {
        for (i, c) in t.counters.iter().enumerate().take(VERDICT_COUNT as usize) {
            let (verdict, reason) = verdict_reason(Verdict::ALL[i]);
            packets
                .with_label_values(&[&t.name, verdict, reason])
                .inc_by(c.packets);
            bytes
                .with_label_values(&[&t.name, verdict, reason])
                .inc_by(c.bytes);
        }
        admitted.with_label_values(&[&t.name]).set(t.admitted_pps);
        dropped.with_label_values(&[&t.name]).set(t.dropped_pps);
        usage_pps
            .with_label_values(&[&t.name])
            .set(t.usage.packets_per_second);
        usage_bps
            .with_label_values(&[&t.name])
            .set(t.usage.bytes_per_second);
        usage_rps
            .with_label_values(&[&t.name])
            .set(t.usage.requests_per_second);
        active
            .with_label_values(&[&t.name])
            .set(t.usage.active_sources as i64);
        limited
            .with_label_values(&[&t.name])
            .set(t.usage.limited_sources as i64);
    }

    let tracked = int_gauge(
        "tollgate_tracked_sources",
        "Sources with bucket state in the kernel.",
        &["family"],
    )?;
    tracked
        .with_label_values(&["ipv4"])
        .set(s.tracked_v4 as i64);
    tracked
        .with_label_values(&["ipv6"])
        .set(s.tracked_v6 as i64);
    let fill = gauge(
        "tollgate_source_map_fill_ratio",
        "Tracked sources over the source map's capacity (LRU evicts beyond it).",
        &["family"],
    )?;
    fill.with_label_values(&["ipv4"])
        .set(ratio(s.tracked_v4, s.capacity_v4));
    fill.with_label_values(&["ipv6"])
        .set(ratio(s.tracked_v6, s.capacity_v6));
    let filter_bytes = IntGauge::new(
        "tollgate_tracked_filter_bytes",
        "Size of the tracked-source filter, both generations of one bit per slot (0: off); a source whose bit is clear skips the source-map lookup.",
    )?;
    filter_bytes.set((s.tracked_filter_bits / 8 * 2) as i64);
    r.register(Box::new(filter_bytes))?;
    if let Some(cleared) = s.tracked_filter_cleared_bits {
        let fill = Gauge::new(
            "tollgate_tracked_filter_fill_ratio",
            "Share of a filter generation's bits set when it was last aged (what it gathered in its minute as the current one). An untracked source still pays a source-map lookup with a chance of about 1 - (1 - fill)^2 (both generations are tested); above about 0.5 the filter spares a spoofed flood little.",
        )?;
        fill.set(ratio(cleared, s.tracked_filter_bits));
        r.register(Box::new(fill))?;
    }
    let rules = int_gauge(
        "tollgate_rules",
        "CIDR rules installed in the kernel.",
        &["family"],
    )?;
    rules.with_label_values(&["ipv4"]).set(s.rules_v4 as i64);
    rules.with_label_values(&["ipv6"]).set(s.rules_v6 as i64);

    let samples = counter(
        "tollgate_samples_total",
        "Ring-buffer samples written by the XDP program, by kind.",
        &["kind"],
    )?;
    samples
        .with_label_values(&["http"])
        .inc_by(s.sampler.http_sampled);
    samples
        .with_label_values(&["verdict"])
        .inc_by(s.sampler.verdict_sampled);
    let skipped = counter(
        "tollgate_samples_skipped_total",
        "HTTP samples not taken because the per-CPU sample budget was spent.",
        &["kind"],
    )?;
    skipped
        .with_label_values(&["http"])
        .inc_by(s.sampler.http_budget_skipped);
    let lost = counter(
        "tollgate_samples_lost_total",
        "Samples lost: ring buffer full (kernel) or undecodable (daemon).",
        &["kind", "cause"],
    )?;
    lost.with_label_values(&["http", "ring_full"])
        .inc_by(s.sampler.http_ring_full);
    lost.with_label_values(&["verdict", "ring_full"])
        .inc_by(s.sampler.verdict_ring_full);
    lost.with_label_values(&["any", "undecodable"])
        .inc_by(s.samples_undecodable);

    let http = counter(
        "tollgate_http_requests_total",
        "Estimated HTTP requests (sampled × 1-in-K scale) by tier, method, route template, host and verdict.",
        &["tier", "method", "route", "host", "verdict"],
    )?;
    for (k, v) in &s.http {
        http.with_label_values(&[&k.tier, &k.method, &k.route, &k.host, &k.verdict])
            .inc_by(*v);
    }
    let http_bad = IntCounter::new(
        "tollgate_http_malformed_samples_total",
        "Sampled request heads that did not parse as HTTP/1.x.",
    )?;
    http_bad.inc_by(s.http_malformed);
    r.register(Box::new(http_bad))?;
    if let Some(drift) = &s.http_drift {
        let shadow = counter(
            "tollgate_http_shadow_requests_total",
            "Estimated HTTP requests to endpoints the [http] openapi document does not have, by method and route template (at most max_routes routes; the rest as \"other\").",
            &["method", "route"],
        )?;
        for ((method, route), v) in &s.http_shadow {
            shadow.with_label_values(&[method, route]).inc_by(*v);
        }
        let kinds = counter(
            "tollgate_http_drift_total",
            "Estimated HTTP requests to documented operations that the [http] openapi document does not allow, by kind (content_type, content_length, unauthenticated).",
            &["kind"],
        )?;
        for (kind, v) in drift {
            kinds.with_label_values(&[kind.name()]).inc_by(*v);
        }
    }

    let route_requests = counter(
        "tollgate_route_requests_total",
        "HTTP requests routed to the configured route, every verdict.",
        &["route"],
    )?;
    let route_dropped = counter(
        "tollgate_route_dropped_total",
        "Requests to the route in dropped segments: reason=\"ceiling\" refused by the route's \
         own ceiling, reason=\"other\" any other drop (the source's limits, its cost \
         included; deny rules; another route's ceiling in the same segment).",
        &["route", "reason"],
    )?;
    let route_shadow = counter(
        "tollgate_route_shadow_would_drop_total",
        "Requests a shadow route's ceiling would have refused (they passed).",
        &["route"],
    )?;
    for (name, c) in &s.routes {
        route_requests.with_label_values(&[name]).inc_by(c.requests);
        route_dropped
            .with_label_values(&[name, "ceiling"])
            .inc_by(c.dropped_ceiling);
        route_dropped
            .with_label_values(&[name, "other"])
            .inc_by(c.dropped.saturating_sub(c.dropped_ceiling));
        route_shadow
            .with_label_values(&[name])
            .inc_by(c.shadow_would_drop);
    }

    let factor = gauge(
        "tollgate_adaptive_factor",
        "An adaptive tier's factor: its limits in force are the configured ones times this \
         (in shadow mode computed and exported, not applied; mode label).",
        &["tier", "mode"],
    )?;
    let signal = gauge(
        "tollgate_adaptive_signal",
        "The signal an adaptive tier follows, as its control law saw it last: percent of time \
         stalled for PSI signals, milliseconds for probes.",
        &["tier", "signal"],
    )?;
    for a in &s.adaptive {
        factor
            .with_label_values(&[a.tier.as_str(), a.mode.name()])
            .set(a.factor);
        if let Some(v) = a.value {
            signal
                .with_label_values(&[a.tier.as_str(), a.signal.as_str()])
                .set(v);
        }
    }

    let info = int_gauge(
        "tollgate_program_info",
        "The attached XDP program: interface, mode and program id (value 1).",
        &["interface", "mode", "program_id"],
    )?;
    for i in &s.interfaces {
        info.with_label_values(&[&i.name, &i.mode, &i.program_id.to_string()])
            .set(1);
    }
    let reloads = counter(
        "tollgate_config_reloads_total",
        "Configuration reloads, by result.",
        &["result"],
    )?;
    reloads.with_label_values(&["success"]).inc_by(s.reloads);
    reloads
        .with_label_values(&["failure"])
        .inc_by(s.reload_failures);
    let attached = int_gauge(
        "tollgate_interface_attached",
        "1 while the program is attached to the interface; 0 while the interface is gone \
         (the daemon re-attaches when it is back).",
        &["interface"],
    )?;
    for i in &s.interfaces {
        attached
            .with_label_values(&[&i.name])
            .set(i64::from(i.attached));
    }
    let repairs = counter(
        "tollgate_dataplane_repairs_total",
        "Repairs made while running: pins re-created after removal (repin), \
         programs re-attached to re-created interfaces (reattach).",
        &["action"],
    )?;
    repairs
        .with_label_values(&["repin"])
        .inc_by(s.repairs.repinned);
    repairs
        .with_label_values(&["reattach"])
        .inc_by(s.repairs.reattached);
    if let Some(ok) = s.config_readable {
        let readable = IntGauge::new(
            "tollgate_config_file_readable",
            "1 if the config file can be read; 0 while it is missing or unreadable \
             (the running configuration stays; reloads and restarts would fail).",
        )?;
        readable.set(i64::from(ok));
        r.register(Box::new(readable))?;
    }
    let state_failures = IntCounter::new(
        "tollgate_state_write_failures_total",
        "CLI changes refused (and rolled back) because the state file could not be written.",
    )?;
    state_failures.inc_by(s.state_write_failures);
    r.register(Box::new(state_failures))?;
    render_bans(s, &r)?;
    let build = int_gauge(
        "tollgate_build_info",
        "tollgate build (value 1).",
        &["version"],
    )?;
    build.with_label_values(&[s.version]).set(1);
    let uptime = Gauge::new(
        "tollgate_uptime_seconds",
        "Seconds since the daemon started.",
    )?;
    uptime.set(s.uptime_seconds);
    r.register(Box::new(uptime))?;

    if !s.top.is_empty() {
        let top = int_gauge(
            "tollgate_top_source_packets",
            "Heaviest sources now (space-saving estimate, bounded to K rows).",
            &["rank", "source", "tier"],
        )?;
        let tier_name = |i: u32| {
            s.tiers
                .get(i as usize)
                .map(|t| t.name.as_str())
                .unwrap_or("?")
        };
        for (rank, row) in s.top.iter().enumerate() {
            top.with_label_values(&[
                &(rank + 1).to_string(),
                &row.source.to_string(),
                tier_name(row.tier),
            ])
            .set(row.packets as i64);
        }
    }
    if let Some(up) = s.cluster_up {
        let g = IntGauge::new(
            "tollgate_cluster_up",
            "1 when the cluster store (Redis) is reachable.",
        )?;
        g.set(up as i64);
        r.register(Box::new(g))?;
    }
    if let Some(c) = &s.crowdsec {
        render_crowdsec(&r, c)?;
    }

    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    Ok(String::from_utf8(out).expect("the text encoder writes UTF-8"))
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Serves `GET /metrics` on `addr` until the listener fails, rendering a fresh
/// snapshot from `snapshot` on every scrape.
pub(crate) async fn serve<F>(listener: tokio::net::TcpListener, snapshot: F) -> std::io::Result<()>
where
    F: Fn() -> Snapshot + Clone + Send + Sync + 'static,
{
    use axum::{http::header, response::IntoResponse, routing::get};
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let snapshot = snapshot.clone();
            async move {
                match render(&snapshot()) {
                    Ok(body) => (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(e) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("rendering metrics failed: {e}\n"),
                    )
                        .into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crowdsec_series_render_with_bounded_labels() {
        let s = Snapshot {
            crowdsec: Some(CrowdsecSnapshot {
                status: crate::proto::CrowdsecStatus {
                    up: true,
                    last_sync_unix: 1_700_000_000.5,
                    failures: 2,
                    pulls: 9,
                    ignored: vec![("type".into(), 3), ("scope".into(), 1)],
                    ..Default::default()
                },
                decisions: vec![
                    ("Ip".into(), "cscli".into(), 4),
                    ("Range".into(), "CAPI".into(), 2),
                ],
            }),
            ..Default::default()
        };
        let text = render(&s).unwrap();
        for line in [
            "tollgate_crowdsec_decisions{origin=\"cscli\",scope=\"Ip\"} 4",
            "tollgate_crowdsec_decisions{origin=\"CAPI\",scope=\"Range\"} 2",
            "tollgate_crowdsec_up 1",
            "tollgate_crowdsec_last_sync_timestamp_seconds 1700000000.5",
            "tollgate_crowdsec_sync_failures_total 2",
            "tollgate_crowdsec_pulls_total 9",
            "tollgate_crowdsec_decisions_ignored_total{reason=\"type\"} 3",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Without [crowdsec], no series.
        assert!(!render(&Snapshot::default()).unwrap().contains("crowdsec"));
    }

    #[test]
    fn renders_every_family_with_bounded_labels() {
        let mut counters = vec![Counter::default(); VERDICT_COUNT as usize];
        counters[Verdict::Passed as usize] = Counter {
            packets: 10,
            bytes: 1000,
        };
        counters[Verdict::DroppedPackets as usize] = Counter {
            packets: 5,
            bytes: 500,
        };
        let s = Snapshot {
            version: "0.1.0",
            tiers: vec![TierSnapshot {
                name: "default".into(),
                counters,
                ..Default::default()
            }],
            http: vec![(
                HttpKey {
                    method: "GET".into(),
                    route: "/users/{id}".into(),
                    host: "api".into(),
                    tier: "default".into(),
                    verdict: "passed".into(),
                    config_route: "-".into(),
                },
                7,
            )],
            cluster_up: Some(true),
            routes: vec![(
                "search".into(),
                RouteCounter {
                    requests: 100,
                    dropped: 30,
                    dropped_ceiling: 12,
                    shadow_would_drop: 0,
                },
            )],
            ..Default::default()
        };
        let text = render(&s).unwrap();
        assert!(text.contains(r#"tollgate_packets_total{reason="within_limits",tier="default",verdict="passed"} 10"#), "{text}");
        assert!(text.contains(r#"tollgate_route_requests_total{route="search"} 100"#));
        assert!(
            text.contains(r#"tollgate_route_dropped_total{reason="ceiling",route="search"} 12"#)
        );
        assert!(text.contains(r#"tollgate_route_dropped_total{reason="other",route="search"} 18"#));
        assert!(text.contains(r#"tollgate_route_shadow_would_drop_total{route="search"} 0"#));
        assert!(text.contains(
            r#"tollgate_packets_total{reason="packets_limit",tier="default",verdict="dropped"} 5"#
        ));
        assert!(text.contains(r#"route="/users/{id}""#));
        assert!(text.contains("tollgate_cluster_up 1"));
        assert!(text.contains("# TYPE tollgate_bytes_total counter"));
        promtool_accepts(&text);
    }

    #[test]
    fn the_tracked_source_filter_shows_its_size_and_its_fill_once_aged() {
        let mut s = Snapshot {
            tracked_filter_bits: 1 << 23,
            ..Default::default()
        };
        let text = render(&s).unwrap();
        assert!(
            text.contains("tollgate_tracked_filter_bytes 2097152"),
            "{text}"
        );
        // Before the first ageing there is no fill to show.
        assert!(
            !text.contains("tollgate_tracked_filter_fill_ratio"),
            "{text}"
        );
        s.tracked_filter_cleared_bits = Some(1 << 21);
        let text = render(&s).unwrap();
        assert!(
            text.contains("tollgate_tracked_filter_fill_ratio 0.25"),
            "{text}"
        );
        promtool_accepts(&text);
    }

    #[test]
    fn shadow_and_drift_only_with_a_document() {
        let mut s = Snapshot::default();
        assert!(!render(&s).unwrap().contains("tollgate_http_drift_total"));
        s.http_shadow = vec![(("GET".into(), "/admin/{id}".into()), 3)];
        s.http_drift = Some(DriftKind::ALL.iter().map(|k| (*k, 2)).collect());
        let text = render(&s).unwrap();
        assert!(text.contains(
            r#"tollgate_http_shadow_requests_total{method="GET",route="/admin/{id}"} 3"#
        ));
        for kind in ["content_type", "content_length", "unauthenticated"] {
            assert!(
                text.contains(&format!("tollgate_http_drift_total{{kind=\"{kind}\"}} 2")),
                "{text}"
            );
        }
        promtool_accepts(&text);
    }

    /// Every metric the shipped Grafana dashboard queries exists.
    #[test]
    fn the_dashboard_only_uses_exported_metrics() {
        let dashboard = include_str!("../../deploy/grafana/tollgate-dashboard.json");
        let s = Snapshot {
            tiers: vec![TierSnapshot {
                name: "t".into(),
                counters: vec![Counter::default(); VERDICT_COUNT as usize],
                ..Default::default()
            }],
            top: vec![TalkerRow {
                source: "10.0.0.1".parse().unwrap(),
                tier: 0,
                packets: 1,
                bytes: 1,
                drops: 0,
                requests: 0,
                error: 0,
            }],
            http: vec![(
                HttpKey {
                    method: "GET".into(),
                    route: "/".into(),
                    host: "h".into(),
                    tier: "t".into(),
                    verdict: "passed".into(),
                    config_route: "-".into(),
                },
                1,
            )],
            cluster_up: Some(true),
            ..Default::default()
        };
        let text = render(&s).unwrap();
        let mut names: Vec<&str> = dashboard
            .match_indices("tollgate_")
            .map(|(i, _)| {
                let rest = &dashboard[i..];
                &rest[..rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len())]
            })
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() > 10, "{names:?}");
        for n in names {
            assert!(
                text.contains(&format!("# TYPE {n} ")),
                "the dashboard queries {n}, which is not exported"
            );
        }
    }

    /// `promtool check metrics` (from the prometheus package `cargo xtask setup`
    /// installs) lints names, units, `_total` suffixes and help strings.
    pub(crate) fn promtool_accepts(text: &str) {
        use std::io::Write;
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if std::env::var("CI").is_err() => {
                eprintln!("!!!! promtool not found ({e}); run `cargo xtask setup` !!!!");
                return;
            }
            Err(e) => panic!("promtool is required under CI: {e}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
