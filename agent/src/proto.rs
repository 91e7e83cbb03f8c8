//! The control protocol between the CLI and the daemon: its wire types only
//! (the client is the `client` module, the server `daemon::server`).
//!
//! A Unix stream socket carrying newline-delimited JSON: one request object
//! per line, answered by one response line, `{"ok":true,"data":...}` or
//! `{"ok":false,"error":"message"}`. Requests are tagged by `"cmd"`, e.g.
//! `{"cmd":"tier_set","name":"gold","packets":"100/s"}`; unknown commands and
//! fields are rejected. A request line may be at most [`MAX_REQUEST_LINE`] bytes.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::spec::{AttachMode, RouteInput, RuleInput, TierMode, TierPatch};

/// Longest request line the daemon reads (bytes, newline included).
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest response line the client reads.
pub const MAX_RESPONSE_LINE: usize = 256 * 1024 * 1024;
/// How long the daemon waits for a request line on an open connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client waits for the daemon's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A request from the CLI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Unit-like variants are written `{}` so unknown fields are rejected for
    // them too (serde ignores extra fields on unit variants of tagged enums).
    Status {},
    TierList {},
    /// `tier set`: see [`TierPatch`].
    TierSet(Box<TierPatch>),
    TierRm {
        name: String,
    },
    RuleList {},
    /// `rule add`: a CIDR with `tier` or `action` ("allow"/"deny").
    RuleAdd(RuleInput),
    RuleRm {
        cidr: String,
    },
    /// `route list`: the routes with their counters.
    RouteList {},
    /// `route add`: see [`RouteInput`].
    RouteAdd(Box<RouteInput>),
    RouteRm {
        name: String,
    },
    Stats {
        #[serde(default)]
        tier: Option<String>,
    },
    Top {
        by: TopBy,
        n: usize,
        /// Only sources within this CIDR (`top --source`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// `explain`: what the data path does to one address and why
    /// (answered with [`ExplainData`]).
    Explain {
        address: IpAddr,
    },
    /// `tier reset`: drop the CLI changes of a tier so the file's values apply.
    TierReset {
        name: String,
    },
    /// `rule reset`: drop the CLI change of a rule so the file's rule (or
    /// none) applies.
    RuleReset {
        cidr: String,
    },
    /// Streams drop-log events (one [`DropEvent`] JSON per line) until the
    /// client hangs up.
    Events {},
    Reload {},
    Detach {},
    HttpTop {
        by: crate::http::stats::Group,
        n: usize,
    },
    /// Streams sampled requests (one `TailEvent` JSON per line) until the
    /// client hangs up.
    HttpTail {},
    /// The API inventory (answered with [`InventoryData`]): endpoints seen in
    /// the last `since_secs` seconds (all when absent), compared with
    /// `[http] openapi` when the daemon has one.
    HttpInventory {
        #[serde(default)]
        since_secs: Option<u64>,
    },
    /// `ban list`: the bans in force (answered with a list of [`BanRow`]).
    BanList {},
    /// `ban add` (and `rule add CIDR --deny --for T`): ban `cidr` (an
    /// address or a prefix) for `duration` ("90s", "10m", "2h", "7d").
    BanAdd {
        cidr: String,
        duration: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// `ban rm`: lift the ban of exactly `cidr`.
    BanRm {
        cidr: String,
    },
}

/// One ban, as `ban list` and `explain` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BanRow {
    /// The banned prefix (an IPv4 /32, or an IPv6 prefix as the source's tier
    /// keys it).
    pub source: String,
    /// The `[[response]]` rule that issued it, or "cli".
    pub rule: String,
    pub reason: String,
    /// Unix seconds.
    pub since: f64,
    pub until: f64,
    /// Seconds left.
    pub left_secs: f64,
    /// 1 for a first offence; each repeat doubled the ban.
    pub offence: u32,
}

impl BanRow {
    pub fn new(net: ipnet::IpNet, b: &crate::spec::Ban, now: f64) -> BanRow {
        BanRow {
            source: net.to_string(),
            rule: b.rule.clone(),
            reason: b.reason.clone(),
            since: b.since,
            until: b.until,
            left_secs: (b.until - now).max(0.0),
            offence: b.offence,
        }
    }
}

pub use crate::http::{AuthScheme, DriftRow, EndpointRow, InventoryData, Orphan, SpecSummary};

/// `http top`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpTopData {
    pub by: crate::http::stats::Group,
    /// (label, estimated requests), heaviest first.
    pub rows: Vec<(String, u64)>,
    /// Sampled heads that did not parse as HTTP/1.x (estimated requests).
    pub malformed: u64,
}

/// The response envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn success(data: impl Serialize) -> Response {
        Response {
            ok: true,
            data: Some(serde_json::to_value(data).unwrap_or(serde_json::Value::Null)),
            error: None,
        }
    }

    pub fn failure(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: None,
            error: Some(error.into()),
        }
    }

    /// One JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self)
            .unwrap_or_else(|_| br#"{"ok":false,"error":"unserializable response"}"#.to_vec());
        v.push(b'\n');
        v
    }
}

/// `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusData {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// How this daemon came up: "fresh" (loaded and attached), "adopted"
    /// (took over pinned program and maps), "repaired" (adopted, re-attached
    /// some interfaces), "upgraded" (replaced a pinned program of another layout).
    pub start: String,
    pub program_id: Option<u32>,
    pub interfaces: Vec<InterfaceStatus>,
    pub config_source: String,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
    pub state_file: PathBuf,
    pub default_tier: String,
    pub tiers: Fill,
    pub sources_v4: Fill,
    pub sources_v6: Fill,
    pub rules_v4: Fill,
    pub rules_v6: Fill,
    /// Changes made with the CLI on top of the config file.
    pub cli_changes: usize,
    /// Bans in force (`tollgate ban list`).
    #[serde(default)]
    pub bans: usize,
    /// Fleet-wide limits through Redis, when `[cluster]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// Adaptive tiers: each one's factor and signal.
    #[serde(default)]
    pub adaptive: Vec<AdaptiveRow>,
    /// The CrowdSec bouncer, when `[crowdsec]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<CrowdsecStatus>,
}

/// An adaptive tier's state (`status`, `tier list`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveRow {
    pub tier: String,
    /// As configured: "cpu", "cgroup:/…/cpu.pressure", "tcp:…", "http://…".
    pub signal: String,
    /// "%" (PSI) or "ms" (probes).
    pub unit: String,
    /// enforce: the kernel applies `factor`; shadow: only shown.
    pub mode: TierMode,
    /// The configured limits are multiplied by this (in `[min, 1]`).
    pub factor: f64,
    /// The signal as the control law saw it last (`None`: no reading yet).
    pub value: Option<f64>,
    pub threshold: f64,
    pub recover: f64,
    pub min: f64,
}

/// `status`: the CrowdSec bouncer (see `crowdsec`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrowdsecStatus {
    /// Whether the last pull from the local API succeeded (false: the kernel
    /// keeps the last view, bans still end at their time).
    pub up: bool,
    pub lapi_url: String,
    pub poll_interval_ms: u64,
    /// Successful and failed pulls since the daemon started.
    pub pulls: u64,
    pub failures: u64,
    pub last_sync_secs_ago: Option<f64>,
    /// Unix time (s) of the last successful pull (0: none yet).
    pub last_sync_unix: f64,
    /// Banned prefixes in the daemon's rule layer.
    pub banned_prefixes: u64,
    /// Of those, prefixes a configured allow rule covers (not enforced).
    pub allow_listed: u64,
    /// Bans applied and ended since the daemon started.
    pub applied_total: u64,
    pub removed_total: u64,
    /// The last pull that changed something: its answer's time (request to
    /// parsed JSON), the time to apply it (view, layer, kernel writes), and
    /// the prefixes it changed.
    pub last_pull_ms: f64,
    pub last_apply_ms: f64,
    pub last_changed: u64,
    /// Decisions not applied, by reason (`type`, `scope`, `value`).
    pub ignored: Vec<(String, u64)>,
    pub last_error: Option<String>,
}

/// `status`: the cluster sync (see `cluster`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Whether the last sync with Redis succeeded (false: global limits are
    /// paused, local limits still enforce).
    pub up: bool,
    /// The Redis URL(s), passwords hidden.
    pub redis: String,
    pub node_id: String,
    pub sync_interval_ms: u64,
    /// Successful and failed syncs since the daemon started.
    pub syncs: u64,
    pub failures: u64,
    pub last_sync_secs_ago: Option<f64>,
    pub round_trip_ms: Option<f64>,
    /// Sources of tiers with global limits being measured.
    pub tracked_sources: u64,
    /// Counters updated by the last sync.
    pub pushed_last: u64,
    /// Sources denied now for being over a global limit, and in total.
    pub denied_sources: u64,
    pub denies_total: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// The XDP mode in use, when known.
    pub mode: Option<AttachMode>,
    /// Whether the pinned link is attached to this interface now.
    pub attached: bool,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
}

/// A fill level: `used` of `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub used: u64,
    pub max: u64,
}

/// One row of `tier list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierRow {
    pub name: String,
    pub index: u32,
    pub default: bool,
    /// "file", "embedded" or "cli" (set with `tollgate tier set`).
    pub source: String,
    pub mode: TierMode,
    pub ipv6_prefix: u32,
    pub packets: Option<LimitRow>,
    pub bytes: Option<LimitRow>,
    pub connections: Option<LimitRow>,
    pub requests: Option<LimitRow>,
    pub aggregate: Option<LimitRow>,
    /// Rules that send sources to this tier.
    pub rules: usize,
    /// Where each field's value comes from: "cli" (`tier set`, which wins
    /// over the file until `tier reset`), "file" or "default" (set nowhere).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The factor in force and its signal, for an adaptive tier: the limits
    /// above are the configured ones; the kernel holds them × factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitRow {
    /// As configured: "100/s", "10MB/s".
    pub rate: String,
    pub per_second: f64,
    /// Burst in effect (units; bytes for the bytes limit).
    pub burst: u64,
    /// Whether the burst was set explicitly (otherwise one second's worth).
    pub burst_explicit: bool,
}

/// One row of `rule list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRow {
    pub cidr: String,
    /// "tier", "allow" or "deny".
    pub action: String,
    /// The tier (for allow/deny: the tier the traffic is counted under).
    pub tier: String,
    /// "file" or "cli".
    pub source: String,
}

/// One row of `route list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteRow {
    pub name: String,
    /// Slot of the route's ceiling and counters in the kernel.
    pub index: u32,
    /// "file" or "cli".
    pub source: String,
    /// What it matches: `POST /api/search`, `GET` (every GET), or `*` (the
    /// whole port).
    #[serde(rename = "match")]
    pub matches: String,
    /// The host whose requests it takes (`None`: any host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The ports it is written for (its own, or every HTTP port).
    pub ports: Vec<u16>,
    pub cost: u32,
    /// The ceiling (all sources together), if any.
    pub ceiling: Option<LimitRow>,
    pub mode: TierMode,
    /// Counters since the program was loaded (requests, not segments).
    pub requests: u64,
    /// Routed here in segments that were dropped, for any reason.
    pub dropped: u64,
    /// Refused by this route's ceiling.
    pub dropped_ceiling: u64,
    /// What this shadow route's ceiling would have refused.
    pub shadow_would_drop: u64,
}

/// `stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsData {
    /// Seconds between the two samples the rates come from (0: no rates yet).
    pub sample_interval_secs: f64,
    pub tiers: Vec<TierStats>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierStats {
    /// Tier name; `#N` for an index no configured tier has now.
    pub name: String,
    pub index: u32,
    pub passed: Traffic,
    pub dropped: Traffic,
    /// By verdict name (`passed`, `dropped_packets`, `denied`, ...).
    pub verdicts: BTreeMap<String, Traffic>,
    /// Usage over the last aggregation period (the numbers /metrics exports
    /// as `tollgate_tier_usage_*`, `_active_sources`, `_limited_sources`).
    #[serde(default)]
    pub usage: Usage,
}

/// What a tier used over the last aggregation period.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
    /// Estimated HTTP requests/s (sampled requests × their scale).
    pub requests_per_second: f64,
    /// Sources of the tier with bucket activity in the period.
    pub active_sources: u64,
    /// Sources whose packets bucket is full right now (their next packet drops).
    pub limited_sources: u64,
}

/// Totals since the program was loaded, and current per-second rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
}

/// What `tollgate top` ranks by.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TopBy {
    Packets,
    Drops,
    Requests,
}

/// `top`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopData {
    pub by: TopBy,
    pub rows: Vec<TopRow>,
    /// The `--source` filter, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Sources (addresses) the summary holds.
    pub tracked: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// The bucket's first address (an IPv4 source, or the network of an
    /// IPv6 prefix).
    pub source: IpAddr,
    /// What the kernel tracks: an IPv4 address, or the IPv6 prefix its tier
    /// groups sources by (`2001:db8:1::/48`).
    #[serde(default)]
    pub bucket: String,
    /// Addresses seen in the bucket (IPv4: 1).
    #[serde(default)]
    pub addresses: u64,
    pub tier: String,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub requests: u64,
    pub error: u64,
}

/// `status` when no daemon answers: what the pins say is still enforcing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfflineStatus {
    pub daemon_running: bool,
    pub pin_dir: PathBuf,
    /// The pinned program, if any.
    pub program_id: Option<u32>,
    /// When that program was loaded (Unix seconds).
    pub program_loaded_unix: Option<u64>,
    pub links: Vec<OfflineLink>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfflineLink {
    pub interface: String,
    /// The pinned link is live on the interface (the program enforces there).
    pub attached: bool,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
}

pub use crate::droplog::DropEvent;

/// `explain ADDRESS`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExplainData {
    pub address: IpAddr,
    /// "limited" (a tier's limits apply), "allowed" (an allow rule: passed
    /// without limits) or "denied" (a deny rule: dropped).
    pub action: String,
    /// The kernel rule that matches (longest prefix), if any.
    pub rule: Option<ExplainRule>,
    /// The tier the address is counted under.
    pub tier: String,
    pub tier_index: u32,
    pub default_tier: bool,
    pub mode: TierMode,
    pub ipv6_prefix: u32,
    /// The key the kernel tracks the address under: the address (IPv4) or
    /// its tier's IPv6 prefix (`2001:db8:1::/48`).
    pub key: String,
    /// Whether the kernel holds bucket state for the key now (false: the
    /// address would start with full buckets).
    pub tracked: bool,
    /// Per-source buckets of the tier's limits, as they are now.
    pub buckets: Vec<BucketState>,
    /// The tier's aggregate ceiling (shared by all its tracked sources).
    pub aggregate: Option<BucketState>,
    /// What the sampled verdicts say about the key recently (`None`: not in
    /// the top-talkers summary).
    pub recent: Option<RecentTraffic>,
    /// The ban that covers the address, if any (its rule is the deny above).
    #[serde(default)]
    pub ban: Option<BanRow>,
    /// One sentence for the operator.
    pub summary: String,
}

/// The rule an address matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainRule {
    pub cidr: String,
    /// "tier", "allow" or "deny".
    pub action: String,
    /// Where the rule comes from: "file", "cli", "api-key pin" (an API
    /// key's tier, until the pin expires), "cluster deny" (over a global
    /// limit, until the window ends), "crowdsec decision ID (...)" (a
    /// CrowdSec ban: scope, prefix, origin, scenario, time left) or "kernel"
    /// (none of these).
    pub origin: String,
}

/// One bucket as an operator reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketState {
    /// "packets", "bytes", "connections", "requests" or "aggregate".
    pub limit: String,
    /// As configured ("100/s"), and in units per second.
    pub rate: String,
    pub per_second: f64,
    /// The burst in effect (units; bytes for bytes).
    pub burst: u64,
    /// Units that would be admitted back to back now (a full bucket: `burst`).
    pub available: f64,
    /// Seconds until the next unit is admitted (0: now).
    pub next_in_secs: f64,
    /// Seconds until the bucket is full again (0: full).
    pub full_in_secs: f64,
}

/// Recent sampled traffic of an address (an IPv6 key: of every address in
/// its prefix), from the top-talkers summary: estimates, decaying by half
/// every 10 s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentTraffic {
    /// Addresses of the key in the summary (IPv4: 1).
    pub addresses: u64,
    pub packets: u64,
    pub drops: u64,
    pub requests: u64,
    /// Estimated packets by verdict name.
    pub verdicts: BTreeMap<String, u64>,
    /// Place in `top --by packets` and `top --by drops` (1 = heaviest).
    pub rank_packets: Option<usize>,
    pub rank_drops: Option<usize>,
}

/// What mutations return.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_reject_unknown_fields() {
        let reqs = [
            Request::Status {},
            Request::TierSet(Box::new(TierPatch {
                name: "gold".into(),
                packets: Some("100/s".into()),
                packets_burst: Some(10),
                mode: Some(TierMode::Shadow),
                ..Default::default()
            })),
            Request::RuleAdd(RuleInput {
                cidr: "10.0.0.0/8".into(),
                tier: None,
                action: Some("deny".into()),
            }),
            Request::Top {
                by: TopBy::Drops,
                n: 5,
                source: None,
            },
            Request::Top {
                by: TopBy::Packets,
                n: 5,
                source: Some("2001:db8::/32".into()),
            },
            Request::Explain {
                address: "2001:db8::1".parse().unwrap(),
            },
            Request::TierReset {
                name: "gold".into(),
            },
            Request::RuleReset {
                cidr: "10.0.0.0/8".into(),
            },
            Request::Events {},
            Request::HttpInventory {
                since_secs: Some(3600),
            },
            Request::HttpInventory { since_secs: None },
            Request::RouteAdd(Box::new(RouteInput {
                name: "search".into(),
                matches: Some("POST /api/search".into()),
                cost: Some(20),
                ceiling: Some("200/s".into()),
                ..Default::default()
            })),
            Request::RouteRm { name: "x".into() },
        ];
        for r in reqs {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&Request::TierRm { name: "x".into() }).unwrap(),
            r#"{"cmd":"tier_rm","name":"x"}"#
        );
        for bad in [
            r#"{"cmd":"status","extra":1}"#,
            r#"{"cmd":"tier_set","name":"x","packetz":"1/s"}"#,
            r#"{"cmd":"route_add","name":"x","matches":"GET"}"#,
            r#"{"cmd":"launch_missiles"}"#,
            r#"{"name":"x"}"#,
            r#"{"cmd":"tier_rm"}"#,
            r#"{"cmd":"top","by":"bytes","n":3}"#,
            r#"{"cmd":"top","by":"drops","n":-3}"#,
            r#"{"cmd":"http_inventory","since_secs":-1}"#,
            r#"{"cmd":"http_inventory","sort":"x"}"#,
            r#"{"cmd":"explain","address":"not-an-ip"}"#,
            r#"{"cmd":"explain"}"#,
            r#"[]"#,
            r#""status""#,
        ] {
            assert!(
                serde_json::from_str::<Request>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn responses_have_the_documented_shape() {
        let ok = Response::success(Done {
            message: "hi".into(),
        });
        assert_eq!(
            String::from_utf8(ok.to_line()).unwrap(),
            "{\"ok\":true,\"data\":{\"message\":\"hi\"}}\n"
        );
        assert_eq!(
            String::from_utf8(Response::failure("nope").to_line()).unwrap(),
            "{\"ok\":false,\"error\":\"nope\"}\n"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Whatever a client sends, decoding a request line never panics.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = serde_json::from_slice::<Request>(&bytes);
        }

        /// Well-formed JSON with hostile field values decodes or fails cleanly,
        /// and what decodes encodes back to the same request.
        #[test]
        fn json_shaped_requests_round_trip(
            cmd in "(status|explain|tier_reset|rule_reset|events|tier_list|tier_set|tier_rm|rule_list|rule_add|rule_rm|route_list|route_add|route_rm|stats|top|reload|detach|http_top|http_tail|http_inventory|bogus)",
            key in "(address|name|cidr|tier|action|by|n|packets|since_secs|match|cost|x)",
            value in prop_oneof![
                "\\PC{0,64}".prop_map(serde_json::Value::String),
                any::<i64>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ],
        ) {
            let mut obj = serde_json::Map::new();
            obj.insert("cmd".into(), serde_json::Value::String(cmd));
            obj.insert(key, value);
            let line = serde_json::to_vec(&obj).unwrap();
            if let Ok(req) = serde_json::from_slice::<Request>(&line) {
                let again: Request = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
                prop_assert_eq!(again, req);
            }
        }
    }
}
