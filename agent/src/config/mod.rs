//! The configuration: its validated form ([`Config`]), the file format
//! (`file`: TOML with line numbers in errors), and the one validation all
//! changes go through (`validate`); the configuration in force as the
//! daemon's tasks receive it (`effective`: a `watch` channel).
//!
//! Every file error names the file, the line and the field with its value, e.g.
//! `tollgate.toml:7: tier "gold": packets = "100/x": unknown period "x" (use /s, /min or /h)`.
//! See `deploy/tollgate.toml` for a commented example.

mod crowdsec;
mod effective;
mod error;
mod file;
mod validate;

use std::{fmt, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use ipnet::IpNet;

pub use crowdsec::{CrowdsecConfig, DEFAULT_POLL_INTERVAL, DecisionScope};
pub use effective::{Effective, Published, Publisher, Subscription, TierNames};
pub use error::{ConfigError, FieldPath, InterfaceNameError, Invalid, Problem, Section};
pub use file::{embedded_default, load_file, parse};
pub use validate::validate;

use crate::{
    datapath::kernel::{AttachMode, MapSizes},
    openapi::ApiSpec,
    spec::{ResponseRule, RouteSpec, RuleSpec, TierSpec},
};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/tollgate/tollgate.toml";
pub const DEFAULT_SOCKET: &str = "/run/tollgate/tollgate.sock";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tollgate/default";
pub const DEFAULT_STATE_FILE: &str = "/var/lib/tollgate/state.json";
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9810";
/// Largest map size accepted (entries).
pub const MAX_MAP_ENTRIES: i64 = 1 << 24;
/// `[cluster]` defaults.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(250);
pub const DEFAULT_SHARE: f64 = 0.05;
/// Range of `[cluster] sync_interval` (global windows are 1 s long).
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The configuration used when `tollgate run` gets no `--config`, and the
/// tiers of a file that defines none: one tier, "default", with limits that
/// only bite on abusive sources.
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
    /// `[[route]]`: per-endpoint cost and ceilings.
    pub routes: Vec<RouteSpec>,
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
    /// `[[response]]`: when sources that keep being refused are banned.
    pub responses: Vec<ResponseRule>,
    /// `[crowdsec]`: ban decisions from a CrowdSec local API.
    pub crowdsec: Option<CrowdsecConfig>,
    /// The file has no `[[tier]]`: its tiers are the embedded default's
    /// (see [`Config::notice`]).
    pub builtin_tiers: bool,
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
    /// Endpoints (method, host, route) the API inventory keeps; the rest
    /// are counted in one `(other)` row.
    pub max_endpoints: usize,
    /// The OpenAPI document traffic is compared with (read at start and on
    /// every reload; `http inventory` and the shadow and drift metrics).
    pub openapi: Option<Arc<ApiSpec>>,
    /// Requests to a documented operation with a larger Content-Length are
    /// drift (besides the operation's own `maxLength`).
    pub max_content_length: Option<u64>,
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
            max_endpoints: 1000,
            openapi: None,
            max_content_length: None,
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

    pub fn route(&self, name: &str) -> Option<&RouteSpec> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// What an operator should know about a valid configuration: that a file
    /// without `[[tier]]` runs on the built-in default tier.
    pub fn notice(&self) -> Option<String> {
        self.builtin_tiers.then(|| {
            format!(
                "{} defines no [[tier]]: using the built-in tier \"default\" (1000 packets/s, 10MB/s, 50 connections/s, 100 requests/s per source; 100000 packets/s in all); add [[tier]] tables to set your own",
                self.source
            )
        })
    }

    pub fn tier_names(&self) -> String {
        self.tiers
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Interface names: what the kernel accepts (1..=15 bytes, no '/', ':' or
/// whitespace).
pub fn check_interface_name(name: &str) -> Result<(), InterfaceNameError> {
    if name.is_empty() || name.len() > 15 {
        return Err(InterfaceNameError::Length);
    }
    if name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace)
        || name == "."
        || name == ".."
    {
        return Err(InterfaceNameError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
