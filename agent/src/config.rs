//! The configuration file (TOML), its validation and its conversion into what
//! the kernel maps hold.
//!
//! Every error names the file, the line and the field with its value, e.g.
//! `tollgate.toml:7: tier "gold": packets = "100/x": unknown period "x" (use /s, /min or /h)`.
//! See `deploy/tollgate.toml` for a commented example.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tollgate_common::{Limit, LimitKind, MAX_TIERS, TIER_ACTIVE, TIER_SHADOW, TierConfig};
use toml::Spanned;

use crate::{
    datapath::kernel::{AttachMode, MapSizes},
    units::{self, Rate},
};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/tollgate/tollgate.toml";
pub const DEFAULT_SOCKET: &str = "/run/tollgate/tollgate.sock";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tollgate/default";
pub const DEFAULT_STATE_FILE: &str = "/var/lib/tollgate/state.json";
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9810";
/// Byte bursts default to at least this much, so a full-size frame (and a
/// little more) always fits in a fresh bucket.
pub const MIN_DEFAULT_BYTES_BURST: u64 = 64 * 1024;
/// Largest map size accepted (entries).
pub const MAX_MAP_ENTRIES: i64 = 1 << 24;
/// `[cluster]` defaults.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(250);
pub const DEFAULT_SHARE: f64 = 0.05;
/// Range of `[cluster] sync_interval` (global windows are 1 s long).
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The configuration used when `tollgate run` gets no `--config`: one tier,
/// "default", with limits that only bite on abusive sources.
pub const EMBEDDED_DEFAULT: &str = r#"
[[tier]]
name = "default"
packets = "1000/s"
packets_burst = 2000
bytes = "10MB/s"
connections = "50/s"
requests = "100/s"
aggregate = "100000/s"
ipv6_prefix = 64
mode = "enforce"
"#;

/// What a tier does with traffic over its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// The six limits of a tier.
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

    pub const fn is_bytes(self) -> bool {
        matches!(self, LimitField::Bytes)
    }

    /// Parses a rate for this limit ("10MB/s" for bytes, "100/s" otherwise).
    pub fn parse_rate(self, s: &str) -> Result<Rate, units::UnitError> {
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

impl LimitSpec {
    /// The rate and burst in effect, and the kernel's form of them. The error
    /// is the problem only (callers add the field and value).
    pub fn resolve(&self, field: LimitField) -> Result<ResolvedLimit, String> {
        let rate = field.parse_rate(&self.rate).map_err(|e| e.to_string())?;
        if field.is_bytes() && rate.amount < rate.period.seconds() {
            return Err("byte rates must be at least 1B/s".to_owned());
        }
        let burst = match self.burst {
            Some(b) => b,
            None if field.is_bytes() => rate.one_second_worth().max(MIN_DEFAULT_BYTES_BURST),
            None => rate.one_second_worth(),
        };
        if burst == 0 {
            return Err("burst must be at least 1".to_owned());
        }
        let limit = Limit::per_period(rate.amount, rate.period.nanos(), burst)
            .ok_or_else(|| format!("rate {} with a burst of {burst} is out of range", self.rate))?;
        if matches!(field, LimitField::Connections | LimitField::Requests) && !limit.fits_ticks() {
            return Err(format!(
                "{} with a burst of {burst} does not fit the {} bucket, which counts in 1.024 µs ticks and holds at most 36 minutes (burst × interval) of work: use a faster rate or a smaller burst",
                self.rate,
                field.name()
            ));
        }
        Ok(ResolvedLimit { rate, burst, limit })
    }
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

impl LimitSpec {
    /// A `global_packets` / `global_requests` limit. Global limits are counted
    /// in 1-second windows, so rates below 1/s are refused. The error is the
    /// problem only.
    pub fn resolve_global(&self) -> Result<GlobalLimit, String> {
        let rate = units::parse_count_rate(&self.rate).map_err(|e| e.to_string())?;
        if rate.per_second_f64() < 1.0 {
            return Err(
                "global limits are counted in 1-second windows: use a rate of at least 1/s"
                    .to_owned(),
            );
        }
        Ok(GlobalLimit {
            per_second: rate.per_second_f64(),
            extra: self.burst.unwrap_or(0),
        })
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

    /// The per-node limit whose bucket measures a source's usage.
    pub const fn local(self) -> LimitField {
        match self {
            GlobalField::Packets => LimitField::Packets,
            GlobalField::Requests => LimitField::Requests,
        }
    }
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
        }
    }

    pub fn global(&self, field: GlobalField) -> Option<&LimitSpec> {
        match field {
            GlobalField::Packets => self.global_packets.as_ref(),
            GlobalField::Requests => self.global_requests.as_ref(),
        }
    }

    pub fn has_global_limits(&self) -> bool {
        self.global_packets.is_some() || self.global_requests.is_some()
    }

    /// Checks the global limits: each parses and has the per-node limit that
    /// measures it. Errors read `tier "g": global_packets = "10/s": ...`.
    pub fn check_globals(&self) -> Result<(), String> {
        for field in GlobalField::ALL {
            let Some(spec) = self.global(field) else {
                continue;
            };
            let what = format!(
                "tier \"{}\": {} = \"{}\"",
                self.name,
                field.name(),
                spec.rate
            );
            spec.resolve_global()
                .map_err(|problem| format!("{what}: {problem}"))?;
            if self.limit(field.local()).is_none() {
                return Err(format!("{what}: {}", missing_local(field)));
            }
        }
        Ok(())
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

    /// Checks everything and builds the kernel's form (an unset `new_sources`
    /// is unlimited here; the daemon writes [`default_new_sources`] for it).
    /// Errors read `tier "gold": packets = "100/x": unknown period ...`.
    pub fn to_kernel(&self) -> Result<TierConfig, String> {
        check_tier_name(&self.name).map_err(|e| format!("tier name \"{}\": {e}", self.name))?;
        self.check_globals()?;
        if !(1..=64).contains(&self.ipv6_prefix) {
            return Err(format!(
                "tier \"{}\": ipv6_prefix = {}: must be between 1 and 64",
                self.name, self.ipv6_prefix
            ));
        }
        let mut limits = [Limit::UNLIMITED; 4];
        let mut aggregate = Limit::UNLIMITED;
        let mut new_sources = Limit::UNLIMITED;
        for field in LimitField::ALL {
            let Some(spec) = self.limit(field) else {
                continue;
            };
            let resolved = spec.resolve(field).map_err(|problem| {
                let what = match spec.burst {
                    Some(b) if problem.contains("burst") => format!("{}_burst = {b}", field.name()),
                    _ => format!("{} = \"{}\"", field.name(), spec.rate),
                };
                format!("tier \"{}\": {what}: {problem}", self.name)
            })?;
            match field {
                LimitField::Packets => limits[LimitKind::Packets as usize] = resolved.limit,
                LimitField::Bytes => limits[LimitKind::Bytes as usize] = resolved.limit,
                LimitField::Connections => limits[LimitKind::Connections as usize] = resolved.limit,
                LimitField::Requests => limits[LimitKind::Requests as usize] = resolved.limit,
                LimitField::Aggregate => aggregate = resolved.limit,
                LimitField::NewSources => new_sources = resolved.limit,
            }
        }
        Ok(TierConfig {
            limits,
            aggregate,
            new_sources,
            ipv6_prefix: self.ipv6_prefix,
            flags: TIER_ACTIVE
                | match self.mode {
                    TierMode::Enforce => 0,
                    TierMode::Shadow => TIER_SHADOW,
                },
        })
    }
}

/// The new-source budget of a tier that sets none: a flood at this rate takes
/// [`NEW_SOURCES_TURNOVER`] to insert as many sources as the smaller source
/// map holds, so a source heard from more often than that is not evicted by
/// it. Burst: one second's worth.
pub fn default_new_sources(maps: &MapSizes) -> Limit {
    let per_second =
        (maps.sources_v4.min(maps.sources_v6) as u64 / NEW_SOURCES_TURNOVER.as_secs()).max(1);
    Limit::per_period(per_second, 1_000_000_000, per_second).unwrap_or(Limit::UNLIMITED)
}

/// See [`default_new_sources`].
pub const NEW_SOURCES_TURNOVER: Duration = Duration::from_secs(60);

fn missing_local(field: GlobalField) -> String {
    let local = field.local().name();
    format!(
        "needs a per-node {local} limit too (each node measures a source's usage with its {local} bucket): set {local}, e.g. to the same rate"
    )
}

/// Tier names: 1 to 32 of letters, digits, '-', '_' and '.'.
pub fn check_tier_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 32 {
        return Err("names are 1 to 32 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("use only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// What a rule does with matching sources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleTarget {
    /// Limit the sources with this tier.
    Tier(String),
    /// Pass without limits (counted under the default tier).
    Allow,
    /// Drop (counted under the default tier).
    Deny,
}

impl fmt::Display for RuleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleTarget::Tier(t) => write!(f, "tier {t}"),
            RuleTarget::Allow => f.write_str("allow"),
            RuleTarget::Deny => f.write_str("deny"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub cidr: IpNet,
    pub target: RuleTarget,
}

/// Parses a CIDR as operators write it: "10.0.0.0/8", "2001:db8::/32", or a
/// bare address meaning just that host. Host bits must be zero.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = match IpNet::from_str(s) {
        Ok(net) => net,
        Err(_) => match std::net::IpAddr::from_str(s) {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err("not a valid CIDR (write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\")".to_owned());
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "host bits are set (did you mean \"{}\"?)",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Where the configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Embedded => f.write_str("embedded default"),
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub source: ConfigSource,
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    pub tiers: Vec<TierSpec>,
    pub default_tier: String,
    pub rules: Vec<RuleSpec>,
    pub maps: MapSizes,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub state_file: PathBuf,
    pub metrics_address: SocketAddr,
    pub allow_uids: Vec<u32>,
    pub http: HttpConfig,
    pub api_keys: ApiKeysConfig,
    /// `[cluster]`: fleet-wide limits through Redis.
    pub cluster: Option<ClusterConfig>,
}

/// `[http]`: the L7 monitor's sampling (kernel) and aggregation (daemon).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// TCP destination ports whose HTTP requests are sampled (at most 8; empty: off).
    pub ports: Vec<u16>,
    /// Payload bytes captured per sample (1..=1024).
    pub snap_len: u32,
    /// One sampled request in this many, per CPU (0: off).
    pub sample_every: u32,
    /// Per-CPU sample budget, samples per second, and its burst.
    pub budget_per_second: u64,
    pub budget_burst: u64,
    /// One judged packet in this many feeds `tollgate top` (0: off).
    pub verdict_sample_every: u32,
    /// Header names redacted besides Authorization, Proxy-Authorization,
    /// Cookie, Set-Cookie and X-Api-Key.
    pub redact_headers: Vec<String>,
    pub max_routes: usize,
    pub max_hosts: usize,
    /// Export the K heaviest sources as a metric (0: off).
    pub top_sources_metric: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            ports: vec![80, 8080],
            snap_len: 512,
            sample_every: 1,
            budget_per_second: 2000,
            budget_burst: 2000,
            verdict_sample_every: 64,
            redact_headers: Vec::new(),
            max_routes: 200,
            max_hosts: 50,
            top_sources_metric: 0,
        }
    }
}

/// Where the shared counters live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis = "redis://host:6379/0"`.
    Standalone(String),
    /// `redis = ["redis://a:6379", "redis://b:6379"]`: Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

impl fmt::Display for RedisTarget {
    /// The URLs with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redact(url: &str) -> String {
            match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme + 3 => {
                    format!("{}***{}", &url[..scheme + 3], &url[at..])
                }
                _ => url.to_owned(),
            }
        }
        match self {
            RedisTarget::Standalone(u) => f.write_str(&redact(u)),
            RedisTarget::Cluster(nodes) => write!(
                f,
                "cluster {}",
                nodes
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// `[api_keys]`: API keys (as salted SHA-256 hashes) that move a client to a tier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiKeysConfig {
    pub salt: String,
    /// How long a source stays pinned to its key's tier after its last sampled request.
    pub ttl_seconds: u64,
    /// (hex sha256 of salt || key, tier name).
    pub keys: Vec<(String, String)>,
}

/// `[cluster]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    pub redis: RedisTarget,
    /// This node's name in logs and in Redis `CLIENT LIST` (default: hostname).
    pub node_id: String,
    /// How often usage is pushed and over-quota sources read back.
    pub sync_interval: Duration,
    /// Only sources that used more than this share of a global limit's
    /// allowance per interval are pushed (0 pushes every active source).
    pub share: f64,
}

impl Config {
    pub fn tier(&self, name: &str) -> Option<&TierSpec> {
        self.tiers.iter().find(|t| t.name == name)
    }

    pub fn rule(&self, cidr: &IpNet) -> Option<&RuleSpec> {
        self.rules.iter().find(|r| &r.cidr == cidr)
    }

    /// Checks the parts that relate to each other: tier names unique, at most
    /// [`MAX_TIERS`] tiers, the default tier and rule tiers exist, every tier
    /// converts to the kernel's form. (File parsing checks these with line
    /// numbers first; this catches combinations made by CLI changes.)
    pub fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for t in &self.tiers {
            t.check_globals()?;
            if !names.insert(t.name.as_str()) {
                return Err(format!("tier \"{}\" is defined twice", t.name));
            }
            t.to_kernel()?;
        }
        if self.tiers.len() > MAX_TIERS as usize {
            return Err(format!(
                "{} tiers configured: at most {MAX_TIERS} are supported",
                self.tiers.len()
            ));
        }
        if !names.contains(self.default_tier.as_str()) {
            return Err(format!(
                "default_tier = \"{}\": no such tier (tiers: {})",
                self.default_tier,
                self.tier_names()
            ));
        }
        for (_, tier) in &self.api_keys.keys {
            if !names.contains(tier.as_str()) {
                return Err(format!(
                    "api_keys: tier = \"{tier}\": no such tier (tiers: {})",
                    self.tier_names()
                ));
            }
        }
        let mut cidrs = HashSet::new();
        for r in &self.rules {
            if !cidrs.insert(r.cidr) {
                return Err(format!("rule {}: defined twice", r.cidr));
            }
            if let RuleTarget::Tier(t) = &r.target
                && !names.contains(t.as_str())
            {
                return Err(format!(
                    "rule {}: tier = \"{t}\": no such tier (tiers: {})",
                    r.cidr,
                    self.tier_names()
                ));
            }
        }
        Ok(())
    }

    pub fn tier_names(&self) -> String {
        self.tiers
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A configuration error, already formatted for an operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "{}: cannot read the config file: {e}",
            path.display()
        ))
    })?;
    parse(&text, ConfigSource::File(path.to_owned()))
}

/// The built-in configuration (see [`EMBEDDED_DEFAULT`]).
pub fn embedded_default() -> Config {
    parse(EMBEDDED_DEFAULT, ConfigSource::Embedded).expect("the embedded default config is valid")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interfaces: Option<Vec<Spanned<String>>>,
    mode: Option<AttachMode>,
    default_tier: Option<Spanned<String>>,
    #[serde(default)]
    tier: Vec<RawTier>,
    #[serde(default)]
    rule: Vec<RawRule>,
    maps: Option<RawMaps>,
    socket: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
    state_file: Option<PathBuf>,
    metrics_address: Option<Spanned<String>>,
    allow_uids: Option<Vec<u32>>,
    http: Option<RawHttp>,
    api_keys: Option<RawApiKeys>,
    cluster: Option<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    ports: Option<Spanned<Vec<i64>>>,
    snap_len: Option<Spanned<i64>>,
    sample_every: Option<Spanned<i64>>,
    budget: Option<Spanned<String>>,
    budget_burst: Option<Spanned<i64>>,
    verdict_sample_every: Option<Spanned<i64>>,
    redact_headers: Option<Vec<String>>,
    max_routes: Option<Spanned<i64>>,
    max_hosts: Option<Spanned<i64>>,
    top_sources_metric: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeys {
    salt: Spanned<String>,
    ttl_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    key: Vec<RawApiKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    sha256: Spanned<String>,
    tier: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    /// A URL (standalone) or a list of URLs (Redis Cluster seed nodes).
    redis: Spanned<toml::Value>,
    node_id: Option<Spanned<String>>,
    sync_interval: Option<Spanned<String>>,
    /// A number (integer or float).
    share: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: Spanned<String>,
    packets: Option<Spanned<String>>,
    packets_burst: Option<Spanned<i64>>,
    bytes: Option<Spanned<String>>,
    /// Bytes, as an integer or a size string ("1MiB").
    bytes_burst: Option<Spanned<toml::Value>>,
    connections: Option<Spanned<String>>,
    connections_burst: Option<Spanned<i64>>,
    requests: Option<Spanned<String>>,
    requests_burst: Option<Spanned<i64>>,
    aggregate: Option<Spanned<String>>,
    aggregate_burst: Option<Spanned<i64>>,
    new_sources: Option<Spanned<String>>,
    new_sources_burst: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    mode: Option<TierMode>,
    global_packets: Option<Spanned<String>>,
    global_packets_burst: Option<Spanned<i64>>,
    global_requests: Option<Spanned<String>>,
    global_requests_burst: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    cidr: Spanned<String>,
    tier: Option<Spanned<String>>,
    action: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaps {
    sources_v4: Option<Spanned<i64>>,
    sources_v6: Option<Spanned<i64>>,
    rules_v4: Option<Spanned<i64>>,
    rules_v6: Option<Spanned<i64>>,
    sample_ring_bytes: Option<Spanned<i64>>,
}

/// Bounds of `[maps] sample_ring_bytes` (a power of two: the kernel's rule).
const MIN_SAMPLE_RING_BYTES: i64 = 4096;
const MAX_SAMPLE_RING_BYTES: i64 = 1 << 30;

/// Formats errors against the text they came from.
struct Ctx<'a> {
    file: String,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    }

    /// `file:line: what: problem`.
    fn at(
        &self,
        span: Range<usize>,
        what: impl fmt::Display,
        problem: impl fmt::Display,
    ) -> ConfigError {
        let (line, _) = self.line_of(span.start);
        ConfigError(format!("{}:{line}: {what}: {problem}", self.file))
    }

    /// `file: what: problem` (for things with no place in the file).
    fn whole(&self, what: impl fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {what}", self.file))
    }

    fn toml(&self, err: &toml::de::Error) -> ConfigError {
        let message = err
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let message = message.as_str();
        match err.span() {
            Some(span) => {
                let (line, col) = self.line_of(span.start);
                let text = self.text.lines().nth(line - 1).unwrap_or("").trim();
                let key = text
                    .split_once('=')
                    .map(|(k, _)| k.trim())
                    .filter(|k| !k.is_empty() && !message.contains(&format!("`{k}`")));
                let context = if text.is_empty() {
                    String::new()
                } else {
                    format!(" (in `{text}`)")
                };
                match key {
                    Some(key) => ConfigError(format!(
                        "{}:{line}:{col}: {key}: {message}{context}",
                        self.file
                    )),
                    None => ConfigError(format!("{}:{line}:{col}: {message}{context}", self.file)),
                }
            }
            None => ConfigError(format!("{}: {message}", self.file)),
        }
    }
}

/// Parses and validates configuration text.
pub fn parse(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
    let ctx = Ctx {
        file: source.to_string(),
        text,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml(&e))?;

    let mut interfaces = Vec::new();
    for iface in raw.interfaces.unwrap_or_default() {
        check_interface_name(iface.get_ref()).map_err(|p| {
            ctx.at(
                iface.span(),
                format_args!("interfaces: \"{}\"", iface.get_ref()),
                p,
            )
        })?;
        if interfaces.contains(iface.get_ref()) {
            return Err(ctx.at(
                iface.span(),
                format_args!("interfaces: \"{}\"", iface.get_ref()),
                "listed twice",
            ));
        }
        interfaces.push(iface.into_inner());
    }

    let cluster = match raw.cluster {
        Some(c) => Some(parse_cluster(&ctx, c)?),
        None => None,
    };

    let tiers_from_file = !raw.tier.is_empty();
    let mut tiers = Vec::new();
    let mut tier_lines = BTreeMap::new();
    for t in raw.tier {
        let spec = parse_tier(&ctx, t, &tier_lines, cluster.is_some())?;
        tier_lines.insert(spec.0.name.clone(), spec.1);
        tiers.push(spec.0);
    }
    if tiers.len() > MAX_TIERS as usize {
        return Err(ctx.whole(format_args!(
            "{} tiers configured: at most {MAX_TIERS} are supported",
            tiers.len()
        )));
    }
    if !tiers_from_file {
        tiers = embedded_tiers();
    }

    let default_tier = match raw.default_tier {
        Some(d) => {
            if !tiers.iter().any(|t| &t.name == d.get_ref()) {
                let names: Vec<_> = tiers.iter().map(|t| t.name.as_str()).collect();
                return Err(ctx.at(
                    d.span(),
                    format_args!("default_tier = \"{}\"", d.get_ref()),
                    format_args!("no such tier (tiers: {})", names.join(", ")),
                ));
            }
            d.into_inner()
        }
        None if tiers.iter().any(|t| t.name == "default") => "default".to_owned(),
        None if tiers.len() == 1 => tiers[0].name.clone(),
        None => {
            let names: Vec<_> = tiers.iter().map(|t| t.name.as_str()).collect();
            return Err(ctx.whole(format_args!(
                "default_tier is missing: set it to one of the tiers ({})",
                names.join(", ")
            )));
        }
    };

    let mut rules: Vec<RuleSpec> = Vec::new();
    let mut rule_lines: BTreeMap<IpNet, usize> = BTreeMap::new();
    for r in raw.rule {
        let cidr = parse_cidr(r.cidr.get_ref()).map_err(|p| {
            ctx.at(
                r.cidr.span(),
                format_args!("rule: cidr = \"{}\"", r.cidr.get_ref()),
                p,
            )
        })?;
        if let Some(first) = rule_lines.get(&cidr) {
            return Err(ctx.at(
                r.cidr.span(),
                format_args!("rule: cidr = \"{}\"", r.cidr.get_ref()),
                format_args!("{cidr} already has a rule (line {first})"),
            ));
        }
        let target = match (r.tier, r.action) {
            (Some(t), None) => {
                if !tiers.iter().any(|x| &x.name == t.get_ref()) {
                    let names: Vec<_> = tiers.iter().map(|t| t.name.as_str()).collect();
                    return Err(ctx.at(
                        t.span(),
                        format_args!("rule {cidr}: tier = \"{}\"", t.get_ref()),
                        format_args!("no such tier (tiers: {})", names.join(", ")),
                    ));
                }
                RuleTarget::Tier(t.into_inner())
            }
            (None, Some(a)) => match a.get_ref().as_str() {
                "allow" => RuleTarget::Allow,
                "deny" => RuleTarget::Deny,
                other => {
                    return Err(ctx.at(
                        a.span(),
                        format_args!("rule {cidr}: action = \"{other}\""),
                        "unknown action (use \"allow\" or \"deny\", or tier = \"NAME\")",
                    ));
                }
            },
            _ => {
                return Err(ctx.at(
                    r.cidr.span(),
                    format_args!("rule {cidr}"),
                    "set exactly one of tier = \"NAME\" or action = \"allow\"/\"deny\"",
                ));
            }
        };
        rule_lines.insert(cidr, ctx.line_of(r.cidr.span().start).0);
        rules.push(RuleSpec { cidr, target });
    }

    let mut maps = MapSizes::default();
    if let Some(m) = raw.maps {
        for (name, value, slot) in [
            ("sources_v4", m.sources_v4, &mut maps.sources_v4),
            ("sources_v6", m.sources_v6, &mut maps.sources_v6),
            ("rules_v4", m.rules_v4, &mut maps.rules_v4),
            ("rules_v6", m.rules_v6, &mut maps.rules_v6),
        ] {
            if let Some(v) = value {
                if !(1..=MAX_MAP_ENTRIES).contains(v.get_ref()) {
                    return Err(ctx.at(
                        v.span(),
                        format_args!("maps: {name} = {}", v.get_ref()),
                        format_args!("must be between 1 and {MAX_MAP_ENTRIES}"),
                    ));
                }
                *slot = *v.get_ref() as u32;
            }
        }
        if let Some(v) = m.sample_ring_bytes {
            let n = *v.get_ref();
            if !(MIN_SAMPLE_RING_BYTES..=MAX_SAMPLE_RING_BYTES).contains(&n)
                || !(n as u64).is_power_of_two()
            {
                return Err(ctx.at(
                    v.span(),
                    format_args!("maps: sample_ring_bytes = {n}"),
                    format_args!(
                        "must be a power of two between {MIN_SAMPLE_RING_BYTES} and {MAX_SAMPLE_RING_BYTES} (e.g. 4194304)"
                    ),
                ));
            }
            maps.sample_ring_bytes = n as u32;
        }
    }

    let metrics_address = match raw.metrics_address {
        Some(a) => SocketAddr::from_str(a.get_ref().trim()).map_err(|_| {
            ctx.at(
                a.span(),
                format_args!("metrics_address = \"{}\"", a.get_ref()),
                "not an IP address and port (write e.g. \"127.0.0.1:9810\" or \"[::1]:9810\")",
            )
        })?,
        None => DEFAULT_METRICS_ADDRESS.parse().expect("valid default"),
    };

    let http = parse_http(&ctx, raw.http)?;
    let api_keys = match raw.api_keys {
        None => ApiKeysConfig::default(),
        Some(k) => {
            let ttl_seconds = match k.ttl_seconds {
                None => 300,
                Some(t) if (1..=86_400).contains(t.get_ref()) => *t.get_ref() as u64,
                Some(t) => {
                    return Err(ctx.at(
                        t.span(),
                        format_args!("api_keys: ttl_seconds = {}", t.get_ref()),
                        "must be between 1 and 86400",
                    ));
                }
            };
            let mut keys = Vec::new();
            for key in k.key {
                let hash = key.sha256.get_ref().trim().to_ascii_lowercase();
                if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ctx.at(
                        key.sha256.span(),
                        "api_keys.key: sha256",
                        "must be 64 hex digits (make one with `tollgate api-key hash --salt SALT KEY`)",
                    ));
                }
                if !tiers.iter().any(|t| &t.name == key.tier.get_ref()) {
                    let names: Vec<_> = tiers.iter().map(|t| t.name.as_str()).collect();
                    return Err(ctx.at(
                        key.tier.span(),
                        format_args!("api_keys.key: tier = \"{}\"", key.tier.get_ref()),
                        format_args!("no such tier (tiers: {})", names.join(", ")),
                    ));
                }
                keys.push((hash, key.tier.into_inner()));
            }
            ApiKeysConfig {
                salt: k.salt.into_inner(),
                ttl_seconds,
                keys,
            }
        }
    };

    let config = Config {
        source,
        interfaces,
        mode: raw.mode.unwrap_or(AttachMode::Auto),
        tiers,
        default_tier,
        rules,
        maps,
        socket: raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
        pin_dir: raw.pin_dir.unwrap_or_else(|| DEFAULT_PIN_DIR.into()),
        state_file: raw.state_file.unwrap_or_else(|| DEFAULT_STATE_FILE.into()),
        metrics_address,
        allow_uids: raw.allow_uids.unwrap_or_default(),
        http,
        api_keys,
        cluster,
    };
    for (name, path) in [
        ("socket", &config.socket),
        ("pin_dir", &config.pin_dir),
        ("state_file", &config.state_file),
    ] {
        if !path.is_absolute() {
            return Err(ctx.whole(format_args!(
                "{name} = \"{}\": must be an absolute path",
                path.display()
            )));
        }
    }
    // Anything the checks above missed (they have line numbers; this does not).
    config.validate().map_err(|e| ctx.whole(e))?;
    Ok(config)
}

/// `[http]`, with defaults for what is left out.
fn parse_http(ctx: &Ctx<'_>, raw: Option<RawHttp>) -> Result<HttpConfig, ConfigError> {
    let mut http = HttpConfig::default();
    let Some(raw) = raw else {
        return Ok(http);
    };
    let ranged = |v: &Spanned<i64>, name: &str, lo: i64, hi: i64| -> Result<i64, ConfigError> {
        if (lo..=hi).contains(v.get_ref()) {
            Ok(*v.get_ref())
        } else {
            Err(ctx.at(
                v.span(),
                format_args!("http: {name} = {}", v.get_ref()),
                format_args!("must be between {lo} and {hi}"),
            ))
        }
    };
    if let Some(ports) = raw.ports {
        if ports.get_ref().len() > tollgate_common::MAX_HTTP_PORTS {
            return Err(ctx.at(
                ports.span(),
                "http: ports",
                format_args!(
                    "at most {} ports can be sampled",
                    tollgate_common::MAX_HTTP_PORTS
                ),
            ));
        }
        http.ports = Vec::new();
        for p in ports.get_ref() {
            if !(1..=65535).contains(p) {
                return Err(ctx.at(
                    ports.span(),
                    format_args!("http: ports: {p}"),
                    "not a TCP port (1-65535)",
                ));
            }
            http.ports.push(*p as u16);
        }
    }
    if let Some(v) = &raw.snap_len {
        http.snap_len = ranged(v, "snap_len", 1, tollgate_common::MAX_SNAP_LEN as i64)? as u32;
    }
    if let Some(v) = &raw.sample_every {
        http.sample_every = ranged(v, "sample_every", 0, 1 << 20)? as u32;
    }
    if let Some(b) = &raw.budget {
        let rate = units::parse_count_rate(b.get_ref()).map_err(|e| {
            ctx.at(
                b.span(),
                format_args!("http: budget = \"{}\"", b.get_ref()),
                e,
            )
        })?;
        http.budget_per_second = rate.one_second_worth().max(1);
        http.budget_burst = http.budget_per_second;
    }
    if let Some(v) = &raw.budget_burst {
        http.budget_burst = ranged(v, "budget_burst", 1, 1 << 24)? as u64;
    }
    if let Some(v) = &raw.verdict_sample_every {
        http.verdict_sample_every = ranged(v, "verdict_sample_every", 0, 1 << 20)? as u32;
    }
    if let Some(h) = raw.redact_headers {
        http.redact_headers = h;
    }
    if let Some(v) = &raw.max_routes {
        http.max_routes = ranged(v, "max_routes", 1, 10_000)? as usize;
    }
    if let Some(v) = &raw.max_hosts {
        http.max_hosts = ranged(v, "max_hosts", 1, 10_000)? as usize;
    }
    if let Some(v) = &raw.top_sources_metric {
        http.top_sources_metric = ranged(v, "top_sources_metric", 0, 100)? as usize;
    }
    Ok(http)
}

fn embedded_tiers() -> Vec<TierSpec> {
    let raw: RawConfig = toml::from_str(EMBEDDED_DEFAULT).expect("embedded default parses");
    let ctx = Ctx {
        file: "embedded default".to_owned(),
        text: EMBEDDED_DEFAULT,
    };
    raw.tier
        .into_iter()
        .map(|t| {
            parse_tier(&ctx, t, &BTreeMap::new(), false)
                .expect("embedded default is valid")
                .0
        })
        .collect()
}

/// The machine's hostname, for the default `node_id`.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let clean: String = name
        .chars()
        .map(|c| if node_id_char(c) { c } else { '-' })
        .take(64)
        .collect();
    if clean.is_empty() {
        "node".to_owned()
    } else {
        clean
    }
}

fn node_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn parse_cluster(ctx: &Ctx<'_>, c: RawCluster) -> Result<ClusterConfig, ConfigError> {
    let check_url = |url: &str, span: Range<usize>, what: &str| -> Result<String, ConfigError> {
        let url = url.trim();
        redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
            ctx.at(
                span.clone(),
                what,
                format_args!("not a Redis URL ({e}); write e.g. \"redis://127.0.0.1:6379/\""),
            )
        })?;
        Ok(url.to_owned())
    };
    let span = c.redis.span();
    let redis = match c.redis.get_ref() {
        toml::Value::String(u) => RedisTarget::Standalone(check_url(
            u,
            span.clone(),
            &format!("cluster: redis = \"{u}\""),
        )?),
        toml::Value::Array(nodes) if !nodes.is_empty() => {
            let mut urls = Vec::new();
            for n in nodes {
                let Some(u) = n.as_str() else {
                    return Err(ctx.at(
                        span,
                        format_args!("cluster: redis = {n}"),
                        "list Redis Cluster nodes as URLs, e.g. [\"redis://10.0.0.1:6379\"]",
                    ));
                };
                urls.push(check_url(
                    u,
                    span.clone(),
                    &format!("cluster: redis = [.. \"{u}\" ..]"),
                )?);
            }
            RedisTarget::Cluster(urls)
        }
        other => {
            return Err(ctx.at(
                span,
                format_args!("cluster: redis = {other}"),
                "write a URL (\"redis://host:6379/\") or, for Redis Cluster, a list of node URLs",
            ));
        }
    };
    let node_id = match c.node_id {
        None => hostname(),
        Some(n) => {
            let id = n.get_ref().trim();
            if id.is_empty() || id.len() > 64 || !id.chars().all(node_id_char) {
                return Err(ctx.at(
                    n.span(),
                    format_args!("cluster: node_id = \"{}\"", n.get_ref()),
                    "1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            id.to_owned()
        }
    };
    let sync_interval = match c.sync_interval {
        None => DEFAULT_SYNC_INTERVAL,
        Some(s) => {
            let what = format!("cluster: sync_interval = \"{}\"", s.get_ref());
            let d = units::parse_duration(s.get_ref()).map_err(|e| ctx.at(s.span(), &what, e))?;
            if !(MIN_SYNC_INTERVAL..=MAX_SYNC_INTERVAL).contains(&d) {
                return Err(ctx.at(s.span(), &what, "must be between 10ms and 1s"));
            }
            d
        }
    };
    let share = match c.share {
        None => DEFAULT_SHARE,
        Some(v) => {
            let what = format!("cluster: share = {}", v.get_ref());
            let x = match v.get_ref() {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(i) => *i as f64,
                _ => return Err(ctx.at(v.span(), &what, "must be a number, e.g. 0.05")),
            };
            if !(0.0..1.0).contains(&x) {
                return Err(ctx.at(
                    v.span(),
                    &what,
                    "must be at least 0 and below 1 (a share of the global limit)",
                ));
            }
            x
        }
    };
    Ok(ClusterConfig {
        redis,
        node_id,
        sync_interval,
        share,
    })
}

fn parse_tier(
    ctx: &Ctx<'_>,
    t: RawTier,
    seen: &BTreeMap<String, usize>,
    cluster: bool,
) -> Result<(TierSpec, usize), ConfigError> {
    let name = t.name.get_ref().clone();
    let line = ctx.line_of(t.name.span().start).0;
    check_tier_name(&name)
        .map_err(|p| ctx.at(t.name.span(), format_args!("tier: name = \"{name}\""), p))?;
    if let Some(first) = seen.get(&name) {
        return Err(ctx.at(
            t.name.span(),
            format_args!("tier: name = \"{name}\""),
            format_args!("a tier with this name is already defined (line {first})"),
        ));
    }
    let mut spec = TierSpec::unlimited(&name);
    spec.mode = t.mode.unwrap_or_default();
    if let Some(p) = t.ipv6_prefix {
        if !(1..=64).contains(p.get_ref()) {
            return Err(ctx.at(
                p.span(),
                format_args!("tier \"{name}\": ipv6_prefix = {}", p.get_ref()),
                "must be between 1 and 64",
            ));
        }
        spec.ipv6_prefix = *p.get_ref() as u32;
    }

    // A burst without its rate is a mistake, not a no-op.
    let burst_needs_rate =
        |field: &str, burst: Option<(u64, Range<usize>)>| -> Result<(), ConfigError> {
            match burst {
                Some((b, span)) => Err(ctx.at(
                    span,
                    format_args!("tier \"{name}\": {field}_burst = {b}"),
                    format_args!("there is no {field} rate to apply it to"),
                )),
                None => Ok(()),
            }
        };
    let count_burst = |field: &str,
                       b: Option<Spanned<i64>>|
     -> Result<Option<(u64, Range<usize>)>, ConfigError> {
        match b {
            None => Ok(None),
            Some(b) if *b.get_ref() >= 1 => Ok(Some((*b.get_ref() as u64, b.span()))),
            Some(b) => Err(ctx.at(
                b.span(),
                format_args!("tier \"{name}\": {field}_burst = {}", b.get_ref()),
                "must be at least 1",
            )),
        }
    };
    let bytes_burst = match t.bytes_burst {
        None => None,
        Some(b) => {
            let what = format!("tier \"{name}\": bytes_burst = {}", b.get_ref());
            let bytes = match b.get_ref() {
                toml::Value::Integer(i) if *i >= 1 => *i as u64,
                toml::Value::Integer(_) => {
                    return Err(ctx.at(b.span(), what, "must be at least 1"));
                }
                toml::Value::String(s) => {
                    units::parse_size(s).map_err(|e| ctx.at(b.span(), what, e))?
                }
                _ => {
                    return Err(ctx.at(
                        b.span(),
                        what,
                        "write a number of bytes or a size such as \"1MiB\"",
                    ));
                }
            };
            Some((bytes, b.span()))
        }
    };

    let limits = [
        (
            LimitField::Packets,
            t.packets,
            count_burst(LimitField::Packets.name(), t.packets_burst)?,
        ),
        (LimitField::Bytes, t.bytes, bytes_burst),
        (
            LimitField::Connections,
            t.connections,
            count_burst(LimitField::Connections.name(), t.connections_burst)?,
        ),
        (
            LimitField::Requests,
            t.requests,
            count_burst(LimitField::Requests.name(), t.requests_burst)?,
        ),
        (
            LimitField::Aggregate,
            t.aggregate,
            count_burst(LimitField::Aggregate.name(), t.aggregate_burst)?,
        ),
        (
            LimitField::NewSources,
            t.new_sources,
            count_burst(LimitField::NewSources.name(), t.new_sources_burst)?,
        ),
    ];
    for (field, rate, burst) in limits {
        let Some(rate) = rate else {
            burst_needs_rate(field.name(), burst)?;
            continue;
        };
        let what = format!("tier \"{name}\": {} = \"{}\"", field.name(), rate.get_ref());
        if rate.get_ref().trim() == "unlimited" {
            continue;
        }
        let parsed = field
            .parse_rate(rate.get_ref())
            .map_err(|e| ctx.at(rate.span(), &what, e))?;
        let limit = LimitSpec {
            rate: field.format_rate(&parsed),
            burst: burst.as_ref().map(|(b, _)| *b),
        };
        if let Err(problem) = limit.resolve(field) {
            let span = match &burst {
                Some((_, span)) if problem.contains("burst") => span.clone(),
                _ => rate.span(),
            };
            return Err(ctx.at(span, &what, problem));
        }
        *spec.limit_mut(field) = Some(limit);
    }

    let globals = [
        (
            GlobalField::Packets,
            t.global_packets,
            count_burst(GlobalField::Packets.name(), t.global_packets_burst)?,
        ),
        (
            GlobalField::Requests,
            t.global_requests,
            count_burst(GlobalField::Requests.name(), t.global_requests_burst)?,
        ),
    ];
    for (field, rate, burst) in globals {
        let Some(rate) = rate else {
            burst_needs_rate(field.name(), burst)?;
            continue;
        };
        let what = format!("tier \"{name}\": {} = \"{}\"", field.name(), rate.get_ref());
        let parsed =
            units::parse_count_rate(rate.get_ref()).map_err(|e| ctx.at(rate.span(), &what, e))?;
        let limit = LimitSpec {
            rate: units::format_count_rate(&parsed),
            burst: burst.as_ref().map(|(b, _)| *b),
        };
        limit
            .resolve_global()
            .map_err(|problem| ctx.at(rate.span(), &what, problem))?;
        if !cluster {
            return Err(ctx.at(
                rate.span(),
                &what,
                "global limits need a [cluster] section (redis = \"redis://...\")",
            ));
        }
        if spec.limit(field.local()).is_none() {
            return Err(ctx.at(rate.span(), &what, missing_local(field)));
        }
        match field {
            GlobalField::Packets => spec.global_packets = Some(limit),
            GlobalField::Requests => spec.global_requests = Some(limit),
        }
    }
    Ok((spec, line))
}

/// Interface names: what the kernel accepts (1..=15 bytes, no '/', ':' or
/// whitespace).
pub fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("interface names are 1 to 15 characters long");
    }
    if name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace)
        || name == "."
        || name == ".."
    {
        return Err("not a valid interface name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, String> {
        parse(text, ConfigSource::File("tollgate.toml".into())).map_err(|e| e.0)
    }

    const GOOD: &str = r#"
interfaces = ["eth0", "eth1"]
mode = "native"
default_tier = "free"
socket = "/tmp/tg.sock"
metrics_address = "127.0.0.1:9999"
allow_uids = [1000]

[maps]
sources_v4 = 4096
rules_v6 = 128
sample_ring_bytes = 65536

[[tier]]
name = "free"
packets = "100/s"
packets_burst = 200
bytes = "10MB/s"
connections = "20/s"
requests = "6000/min"
aggregate = "10000/s"
ipv6_prefix = 56

[[tier]]
name = "gold"
packets = "1000/s"
bytes = "1GiB/h"
bytes_burst = "4MiB"
mode = "shadow"

[[rule]]
cidr = "10.0.0.0/8"
tier = "gold"

[[rule]]
cidr = "192.0.2.7"
action = "deny"

[[rule]]
cidr = "2001:db8::/32"
action = "allow"
"#;

    #[test]
    fn parses_a_full_config() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.interfaces, ["eth0", "eth1"]);
        assert_eq!(c.mode, AttachMode::Native);
        assert_eq!(c.default_tier, "free");
        assert_eq!(c.socket, PathBuf::from("/tmp/tg.sock"));
        assert_eq!(c.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        assert_eq!(c.metrics_address.port(), 9999);
        assert_eq!(c.allow_uids, [1000]);
        assert_eq!(c.maps.sources_v4, 4096);
        assert_eq!(c.maps.rules_v6, 128);
        assert_eq!(c.maps.sample_ring_bytes, 65536);
        assert_eq!(c.maps.sources_v6, MapSizes::default().sources_v6);
        let free = c.tier("free").unwrap();
        assert_eq!(free.ipv6_prefix, 56);
        assert_eq!(free.requests.as_ref().unwrap().rate, "6000/min");
        let k = free.to_kernel().unwrap();
        assert_eq!(k.limits[LimitKind::Packets as usize].burst(), 200);
        assert!((k.limits[LimitKind::Requests as usize].rate_per_second() - 100.0).abs() < 1e-6);
        // bytes: default burst is one second's worth (10 MB) since that is above 64 KiB.
        assert_eq!(k.limits[LimitKind::Bytes as usize].burst(), 10_000_000);
        assert!(k.is_active() && !k.is_shadow());
        let gold = c.tier("gold").unwrap().to_kernel().unwrap();
        assert!(gold.is_shadow());
        assert_eq!(gold.limits[LimitKind::Bytes as usize].burst(), 4 << 20);
        assert!(gold.limits[LimitKind::Connections as usize].is_unlimited());
        assert_eq!(c.rules.len(), 3);
        assert_eq!(c.rules[1].cidr, "192.0.2.7/32".parse::<IpNet>().unwrap());
        assert_eq!(c.rules[1].target, RuleTarget::Deny);
        assert_eq!(c.rules[0].target, RuleTarget::Tier("gold".into()));
    }

    #[test]
    fn embedded_default_has_sane_limits() {
        let c = embedded_default();
        assert_eq!(c.source, ConfigSource::Embedded);
        assert_eq!(c.default_tier, "default");
        let k = c.tier("default").unwrap().to_kernel().unwrap();
        assert_eq!(k.limits[LimitKind::Packets as usize].burst(), 2000);
        assert!((k.limits[LimitKind::Bytes as usize].rate_per_second() - 1e7).abs() < 1.0);
        assert!((k.aggregate.rate_per_second() - 100_000.0).abs() < 1e-3);
        assert_eq!(k.ipv6_prefix, 64);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
    }

    #[test]
    fn new_sources_is_a_tier_limit_with_a_default_from_the_map_size() {
        let c = parse_str(
            "[[tier]]\nname = \"default\"\nnew_sources = \"2000/s\"\nnew_sources_burst = 500\n\
             [[tier]]\nname = \"other\"\n",
        )
        .unwrap();
        let k = c.tier("default").unwrap().to_kernel().unwrap();
        assert!((k.new_sources.rate_per_second() - 2000.0).abs() < 1e-6);
        assert_eq!(k.new_sources.burst(), 500);
        assert!(k.admits_new_sources());
        // Unset: unlimited in the tier's own form; the daemon writes the
        // default, 1/60 of the smaller source map per second.
        assert!(
            c.tier("other")
                .unwrap()
                .to_kernel()
                .unwrap()
                .new_sources
                .is_unlimited()
        );
        let d = default_new_sources(&MapSizes {
            sources_v4: 1 << 20,
            sources_v6: 60_000,
            ..MapSizes::default()
        });
        assert!((d.rate_per_second() - 1000.0).abs() < 1e-6);
        assert_eq!(d.burst(), 1000);
        let e = parse_str("[[tier]]\nname = \"default\"\nnew_sources_burst = 5\n").unwrap_err();
        assert!(e.to_string().contains("new_sources_burst"), "{e}");
    }

    #[test]
    fn a_file_without_tiers_uses_the_default_tier() {
        let c = parse_str("interfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(c.tiers, embedded_default().tiers);
        assert_eq!(c.default_tier, "default");
    }

    #[test]
    fn connection_and_request_limits_must_fit_the_tick_bucket() {
        // One per hour cannot be a 32-bit tick bucket (36 minutes at most).
        let e = parse_str("[[tier]]\nname = \"t\"\nconnections = \"1/h\"\n").unwrap_err();
        assert!(
            e.contains("connections") && e.contains("1/h") && e.contains("36 minutes"),
            "{e}"
        );
        let e = parse_str("[[tier]]\nname = \"t\"\nrequests = \"1/min\"\nrequests_burst = 40\n")
            .unwrap_err();
        assert!(e.contains("requests") && e.contains("36 minutes"), "{e}");
        assert!(
            parse_str("[[tier]]\nname = \"t\"\nrequests = \"1/min\"\nrequests_burst = 30\n")
                .is_ok()
        );
    }

    #[test]
    fn http_and_api_key_sections() {
        let c = parse_str(
            "[[tier]]\nname = \"default\"\n[[tier]]\nname = \"gold\"\n[http]\nports = [8080]\nsnap_len = 256\nbudget = \"100/s\"\n[api_keys]\nsalt = \"s\"\n[[api_keys.key]]\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\ntier = \"gold\"\n",
        )
        .unwrap();
        assert_eq!(c.http.ports, [8080]);
        assert_eq!(c.http.snap_len, 256);
        assert_eq!(c.http.budget_per_second, 100);
        assert_eq!(c.api_keys.keys.len(), 1);
        let e = parse_str("[http]\nsnap_len = 4096\n").unwrap_err();
        assert!(e.contains(":2: http: snap_len = 4096"), "{e}");
        let e = parse_str(
            "[api_keys]\nsalt = \"s\"\n[[api_keys.key]]\nsha256 = \"abc\"\ntier = \"default\"\n",
        )
        .unwrap_err();
        assert!(e.contains("sha256") && e.contains("64 hex digits"), "{e}");
        let e = parse_str("[api_keys]\nsalt = \"s\"\n[[api_keys.key]]\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\ntier = \"platinum\"\n")
            .unwrap_err();
        assert!(
            e.contains("tier = \"platinum\"") && e.contains("no such tier"),
            "{e}"
        );
    }

    #[test]
    fn default_bursts() {
        let c = parse_str("[[tier]]\nname = \"t\"\npackets = \"6000/min\"\nbytes = \"1KB/s\"\nconnections = \"1/min\"\n")
            .unwrap();
        let k = c.tiers[0].to_kernel().unwrap();
        assert_eq!(k.limits[LimitKind::Packets as usize].burst(), 100);
        assert_eq!(
            k.limits[LimitKind::Bytes as usize].burst(),
            MIN_DEFAULT_BYTES_BURST
        );
        assert_eq!(k.limits[LimitKind::Connections as usize].burst(), 1);
    }

    #[track_caller]
    fn assert_err(text: &str, expected: &[&str]) {
        let err = parse_str(text).expect_err("should fail");
        for e in expected {
            assert!(err.contains(e), "error {err:?} should contain {e:?}");
        }
    }

    #[test]
    fn semantic_errors_name_file_line_field_and_value() {
        assert_err(
            "[[tier]]\nname = \"gold\"\npackets = \"100/x\"\n",
            &[
                "tollgate.toml:3: tier \"gold\": packets = \"100/x\": unknown period \"x\" (use /s, /min or /h)",
            ],
        );
        assert_err(
            "[[tier]]\nname = \"gold\"\npackets_burst = 5\n",
            &[
                "tollgate.toml:3: tier \"gold\": packets_burst = 5: there is no packets rate to apply it to",
            ],
        );
        assert_err(
            "[[tier]]\nname = \"gold\"\nglobal_requests_burst = 3\n",
            &[
                "tollgate.toml:3: tier \"gold\": global_requests_burst = 3: there is no global_requests rate to apply it to",
            ],
        );
        assert_err(
            "[maps]\nsample_ring_bytes = 5000\n",
            &[
                "tollgate.toml:2: maps: sample_ring_bytes = 5000: must be a power of two between 4096",
            ],
        );
        assert_err(
            "[[tier]]\nname = \"gold\"\n\nipv6_prefix = 65\n",
            &["tollgate.toml:4: tier \"gold\": ipv6_prefix = 65: must be between 1 and 64"],
        );
        assert_err(
            "[[tier]]\nname = \"gold\"\n[[rule]]\ncidr = \"10.0.0.0/8\"\ntier = \"silver\"\n",
            &["tollgate.toml:5: rule 10.0.0.0/8: tier = \"silver\": no such tier (tiers: gold)"],
        );
        assert_err(
            "[[rule]]\ncidr = \"10.0.0.300/8\"\naction = \"deny\"\n",
            &["tollgate.toml:2: rule: cidr = \"10.0.0.300/8\": not a valid CIDR"],
        );
        assert_err(
            "[[rule]]\ncidr = \"10.1.2.3/8\"\naction = \"deny\"\n",
            &[
                "tollgate.toml:2:",
                "host bits are set (did you mean \"10.0.0.0/8\"?)",
            ],
        );
        assert_err(
            "[[rule]]\ncidr = \"10.0.0.0/8\"\naction = \"block\"\n",
            &["tollgate.toml:3: rule 10.0.0.0/8: action = \"block\": unknown action"],
        );
        assert_err(
            "[[rule]]\ncidr = \"10.0.0.0/8\"\n",
            &["tollgate.toml:2: rule 10.0.0.0/8: set exactly one of"],
        );
        assert_err(
            "[[rule]]\ncidr = \"10.0.0.0/8\"\naction = \"deny\"\n[[rule]]\ncidr = \"10.0.0.0/8\"\naction = \"allow\"\n",
            &["tollgate.toml:5:", "already has a rule (line 2)"],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\n[[tier]]\nname = \"b\"\n",
            &["tollgate.toml: default_tier is missing"],
        );
        assert_err(
            "default_tier = \"gold\"\n",
            &["tollgate.toml:1: default_tier = \"gold\": no such tier (tiers: default)"],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\nbytes = \"10XB/s\"\n",
            &["tollgate.toml:3: tier \"a\": bytes = \"10XB/s\": unknown unit \"XB\""],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\npackets_burst = 5\n",
            &["tollgate.toml:3: tier \"a\": packets_burst = 5: there is no packets rate"],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\npackets = \"10/s\"\npackets_burst = 0\n",
            &["tollgate.toml:4: tier \"a\": packets_burst = 0: must be at least 1"],
        );
        assert_err(
            "[[tier]]\nname = \"a b\"\n",
            &["tollgate.toml:2: tier: name = \"a b\": use only letters"],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\n[[tier]]\nname = \"a\"\n",
            &["tollgate.toml:4:", "already defined (line 2)"],
        );
        assert_err(
            "metrics_address = \"localhost\"\n",
            &["tollgate.toml:1: metrics_address = \"localhost\": not an IP address"],
        );
        assert_err(
            "[maps]\nsources_v4 = 0\n",
            &["tollgate.toml:2: maps: sources_v4 = 0: must be between"],
        );
        assert_err(
            "interfaces = [\"a/b\"]\n",
            &["tollgate.toml:1: interfaces: \"a/b\""],
        );
        assert_err(
            "socket = \"relative.sock\"\n",
            &["socket = \"relative.sock\": must be an absolute path"],
        );
    }

    #[test]
    fn syntax_and_type_errors_name_file_line_and_field() {
        assert_err(
            "interfaces = [\"eth0\"]\n[[tier]]\nname = \"a\"\npakets = \"1/s\"\n",
            &["tollgate.toml:4:1:", "unknown field `pakets`"],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\npackets = 5\n",
            &["tollgate.toml:3:", "packets", "invalid type: integer `5`"],
        );
        assert_err(
            "mode = \"fast\"\n",
            &["tollgate.toml:1:", "mode", "unknown variant `fast`"],
        );
        assert_err(
            "interfaces = [\"eth0\"\n",
            &["tollgate.toml:2:", "invalid array: expected `]`"],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\nmode = \"dry\"\n",
            &[
                "tollgate.toml:3:",
                "unknown variant `dry`, expected `enforce` or `shadow`",
            ],
        );
    }

    #[test]
    fn tier_spec_errors_name_tier_field_and_value() {
        let mut t = TierSpec::unlimited("gold");
        t.packets = Some(LimitSpec {
            rate: "100/x".into(),
            burst: None,
        });
        assert_eq!(
            t.to_kernel().unwrap_err(),
            "tier \"gold\": packets = \"100/x\": unknown period \"x\" (use /s, /min or /h)"
        );
        t.packets = None;
        t.ipv6_prefix = 65;
        assert_eq!(
            t.to_kernel().unwrap_err(),
            "tier \"gold\": ipv6_prefix = 65: must be between 1 and 64"
        );
    }

    #[test]
    fn validate_catches_cross_references() {
        let mut c = parse_str(GOOD).unwrap();
        c.rules.push(RuleSpec {
            cidr: "172.16.0.0/12".parse().unwrap(),
            target: RuleTarget::Tier("platinum".into()),
        });
        assert!(
            c.validate()
                .unwrap_err()
                .contains("rule 172.16.0.0/12: tier = \"platinum\": no such tier")
        );
    }

    const CLUSTER: &str = r#"
[cluster]
redis = "redis://:secret@127.0.0.1:6379/"
node_id = "edge-1"
sync_interval = "100ms"
share = 0.1

[[tier]]
name = "api"
packets = "500/s"
requests = "50/s"
global_packets = "1000/s"
global_packets_burst = 200
global_requests = "6000/min"
"#;

    #[test]
    fn parses_cluster_and_global_limits() {
        let c = parse_str(CLUSTER).unwrap();
        let cl = c.cluster.as_ref().unwrap();
        assert_eq!(
            cl.redis,
            RedisTarget::Standalone("redis://:secret@127.0.0.1:6379/".into())
        );
        assert_eq!(cl.redis.to_string(), "redis://***@127.0.0.1:6379/");
        assert_eq!(cl.node_id, "edge-1");
        assert_eq!(cl.sync_interval, Duration::from_millis(100));
        assert!((cl.share - 0.1).abs() < 1e-12);
        let t = c.tier("api").unwrap();
        let gp = t.global_packets.as_ref().unwrap().resolve_global().unwrap();
        assert_eq!(gp.allowance(Duration::from_secs(1)), 1200);
        let gr = t
            .global_requests
            .as_ref()
            .unwrap()
            .resolve_global()
            .unwrap();
        assert_eq!(gr.allowance(Duration::from_secs(1)), 100);
        // Defaults, and Redis Cluster seed lists.
        let c = parse_str(
            "[cluster]\nredis = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\n",
        )
        .unwrap();
        let cl = c.cluster.unwrap();
        assert!(matches!(&cl.redis, RedisTarget::Cluster(n) if n.len() == 2));
        assert_eq!(cl.sync_interval, DEFAULT_SYNC_INTERVAL);
        assert_eq!(cl.share, DEFAULT_SHARE);
        assert!(!cl.node_id.is_empty());
        assert!(parse_str(GOOD).unwrap().cluster.is_none());
    }

    #[test]
    fn cluster_errors_name_file_line_field_and_value() {
        assert_err(
            "[cluster]\nredis = \"http://x\"\n",
            &["tollgate.toml:2: cluster: redis = \"http://x\": not a Redis URL"],
        );
        assert_err(
            "[cluster]\nredis = 5\n",
            &["tollgate.toml:2: cluster: redis = 5: write a URL"],
        );
        assert_err(
            "[cluster]\nredis = \"redis://h/\"\nsync_interval = \"5s\"\n",
            &["tollgate.toml:3: cluster: sync_interval = \"5s\": must be between 10ms and 1s"],
        );
        assert_err(
            "[cluster]\nredis = \"redis://h/\"\nsync_interval = \"250\"\n",
            &["tollgate.toml:3: cluster: sync_interval = \"250\": missing unit"],
        );
        assert_err(
            "[cluster]\nredis = \"redis://h/\"\nshare = 1.5\n",
            &["tollgate.toml:3: cluster: share = 1.5: must be at least 0 and below 1"],
        );
        assert_err(
            "[cluster]\nredis = \"redis://h/\"\nnode_id = \"a b\"\n",
            &["tollgate.toml:3: cluster: node_id = \"a b\": 1 to 64 letters"],
        );
        assert_err(
            "[cluster]\nredis = \"redis://h/\"\nnodes = 3\n",
            &["tollgate.toml:3:", "unknown field `nodes`"],
        );
        assert_err(
            "[cluster]\nsync_interval = \"1s\"\n",
            &["tollgate.toml:", "missing field `redis`"],
        );
        assert_err(
            "[[tier]]\nname = \"a\"\npackets = \"10/s\"\nglobal_packets = \"100/s\"\n",
            &[
                "tollgate.toml:4: tier \"a\": global_packets = \"100/s\": global limits need a [cluster] section",
            ],
        );
        let cluster = "[cluster]\nredis = \"redis://h/\"\n";
        assert_err(
            &format!("{cluster}[[tier]]\nname = \"a\"\nglobal_packets = \"100/s\"\n"),
            &[
                "tollgate.toml:5: tier \"a\": global_packets = \"100/s\": needs a per-node packets limit too",
            ],
        );
        assert_err(
            &format!(
                "{cluster}[[tier]]\nname = \"a\"\npackets = \"1/s\"\nglobal_packets = \"30/min\"\n"
            ),
            &[
                "tollgate.toml:6: tier \"a\": global_packets = \"30/min\": global limits are counted in 1-second windows",
            ],
        );
        assert_err(
            &format!(
                "{cluster}[[tier]]\nname = \"a\"\nrequests = \"1/s\"\nglobal_requests = \"10/x\"\n"
            ),
            &["tollgate.toml:6: tier \"a\": global_requests = \"10/x\": unknown period"],
        );
        assert_err(
            &format!(
                "{cluster}[[tier]]\nname = \"a\"\nrequests = \"1/s\"\nglobal_requests_burst = 3\n"
            ),
            &[
                "tollgate.toml:6: tier \"a\": global_requests_burst = 3: there is no global_requests rate",
            ],
        );
        assert_err(
            &format!(
                "{cluster}[[tier]]\nname = \"a\"\npackets = \"1/s\"\nglobal_packets = \"10/s\"\nglobal_packets_burst = 0\n"
            ),
            &["tollgate.toml:7: tier \"a\": global_packets_burst = 0: must be at least 1"],
        );
    }

    #[test]
    fn removing_the_local_limit_of_a_global_one_is_refused() {
        let c = parse_str(CLUSTER).unwrap();
        let mut t = c.tier("api").unwrap().clone();
        t.packets = None;
        assert!(
            t.to_kernel().unwrap_err().contains(
                "tier \"api\": global_packets = \"1000/s\": needs a per-node packets limit"
            )
        );
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(
            parse_cidr("10.0.0.300/8")
                .unwrap_err()
                .contains("not a valid CIDR")
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(
            parse_cidr("2001:db8::1/32")
                .unwrap_err()
                .contains("did you mean \"2001:db8::/32\"")
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn parse_any(text: &str) -> Result<Config, ConfigError> {
        parse(text, ConfigSource::File("fuzz.toml".into()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary text never panics, and every error names the file.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            if let Err(e) = parse_any(&text) {
                prop_assert!(e.0.starts_with("fuzz.toml"), "{}", e.0);
            }
        }

        /// The commented example with one byte replaced, inserted or removed
        /// never panics: errors name the file (and a line when there is one).
        #[test]
        fn mutated_example_never_panics(pos in 0usize..6000, byte in any::<u8>(), op in 0u8..3) {
            let mut text = include_str!("../../deploy/tollgate.toml").as_bytes().to_vec();
            let pos = pos % text.len();
            match op {
                0 => text[pos] = byte,
                1 => text.insert(pos, byte),
                _ => { text.remove(pos); }
            }
            let text = String::from_utf8_lossy(&text);
            if let Err(e) = parse_any(&text) {
                prop_assert!(e.0.starts_with("fuzz.toml"), "{}", e.0);
            }
        }

        /// Any rate or size string is rejected or accepted without panicking.
        #[test]
        fn any_limit_value_never_panics(rate in "[0-9a-zA-Z/. ]{0,24}", burst in any::<i64>()) {
            let text = format!("[[tier]]\nname = \"t\"\npackets = \"{rate}\"\npackets_burst = {burst}\nbytes = \"{rate}\"\nconnections = \"{rate}\"\n");
            let _ = parse_any(&text);
        }
    }
}
