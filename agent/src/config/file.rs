//! The file format: TOML deserialized into plain structs (tiers and rules in
//! the same types the control protocol uses), lowered into a [`Config`] and
//! validated; every error's field path is mapped back to `file:line`.

use std::{
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use serde::Deserialize;
use toml_edit::{ImDocument, Item};

use super::{
    ApiKeysConfig, ClusterConfig, Config, ConfigSource, DEFAULT_METRICS_ADDRESS, DEFAULT_PIN_DIR,
    DEFAULT_SHARE, DEFAULT_SOCKET, DEFAULT_STATE_FILE, DEFAULT_SYNC_INTERVAL, EMBEDDED_DEFAULT,
    HttpConfig, MAX_MAP_ENTRIES, MAX_SYNC_INTERVAL, MIN_SYNC_INTERVAL, RedisTarget,
    check_interface_name,
    error::{ConfigError, FieldPath, Invalid, Problem, Section},
    validate::{route_invalid, rule_from_input, tier_invalid, validate},
};
use crate::{
    datapath::kernel::{AttachMode, MapSizes},
    openapi::ApiSpec,
    spec::{
        Evidence, ResponseMode, ResponseRule, RouteInput, RuleInput, TierPatch, parse_cidr, quoted,
    },
    units,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interfaces: Option<Vec<String>>,
    mode: Option<AttachMode>,
    default_tier: Option<String>,
    #[serde(default)]
    tier: Vec<TierPatch>,
    #[serde(default)]
    rule: Vec<RuleInput>,
    #[serde(default)]
    route: Vec<RouteInput>,
    maps: Option<RawMaps>,
    socket: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
    state_file: Option<PathBuf>,
    metrics_address: Option<String>,
    allow_uids: Option<Vec<u32>>,
    http: Option<RawHttp>,
    api_keys: Option<RawApiKeys>,
    cluster: Option<RawCluster>,
    #[serde(default)]
    response: Vec<RawResponse>,
    crowdsec: Option<super::crowdsec::RawCrowdsec>,
}

/// `[[response]]` as written; lowered by [`lower_response`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    name: String,
    refused_seconds: Option<i64>,
    refused_over: Option<i64>,
    window: Option<String>,
    ban: Option<String>,
    max_ban: Option<String>,
    forget_after: Option<String>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    tiers: Vec<String>,
    #[serde(default)]
    evidence: Evidence,
    #[serde(default)]
    mode: ResponseMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    ports: Option<Vec<i64>>,
    snap_len: Option<i64>,
    sample_every: Option<i64>,
    budget: Option<String>,
    budget_burst: Option<i64>,
    verdict_sample_every: Option<i64>,
    redact_headers: Option<Vec<String>>,
    max_routes: Option<i64>,
    max_hosts: Option<i64>,
    top_sources_metric: Option<i64>,
    max_endpoints: Option<i64>,
    openapi: Option<PathBuf>,
    max_content_length: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeys {
    salt: String,
    ttl_seconds: Option<i64>,
    #[serde(default)]
    key: Vec<RawApiKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    sha256: String,
    tier: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    /// A URL (standalone) or a list of URLs (Redis Cluster seed nodes).
    redis: toml::Value,
    node_id: Option<String>,
    sync_interval: Option<String>,
    /// A number (integer or float).
    share: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaps {
    sources_v4: Option<i64>,
    sources_v6: Option<i64>,
    rules_v4: Option<i64>,
    rules_v6: Option<i64>,
    sample_ring_bytes: Option<i64>,
}

/// Bounds of `[maps] sample_ring_bytes` (a power of two: the kernel's rule).
const MIN_SAMPLE_RING_BYTES: i64 = 4096;
const MAX_SAMPLE_RING_BYTES: i64 = 1 << 30;

/// Maps errors to the text they came from.
struct Ctx<'a> {
    file: String,
    text: &'a str,
    /// The same text with spans, to find a field's line.
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Ctx<'a> {
    fn new(file: String, text: &'a str) -> Ctx<'a> {
        Ctx {
            file,
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    fn line_of(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    }

    /// Where `path` is written: the deepest part of it the file has.
    fn span(&self, path: &FieldPath) -> Option<Range<usize>> {
        let root = self.doc.as_ref()?.as_table();
        enum Seg {
            Key(&'static str),
            Index(usize),
        }
        let mut segs = match &path.section {
            Section::Top => vec![],
            Section::Tier { index, .. } => vec![Seg::Key("tier"), Seg::Index(*index)],
            Section::Rule { index, .. } => vec![Seg::Key("rule"), Seg::Index(*index)],
            Section::Route { index, .. } => vec![Seg::Key("route"), Seg::Index(*index)],
            Section::Maps => vec![Seg::Key("maps")],
            Section::Http => vec![Seg::Key("http")],
            Section::Cluster => vec![Seg::Key("cluster")],
            Section::Response { index, .. } => vec![Seg::Key("response"), Seg::Index(*index)],
            Section::Crowdsec => vec![Seg::Key("crowdsec")],
            Section::ApiKeys => vec![Seg::Key("api_keys")],
            Section::ApiKey { index } => {
                vec![Seg::Key("api_keys"), Seg::Key("key"), Seg::Index(*index)]
            }
        };
        // A problem with a whole tier, rule or route is shown at its name or CIDR.
        let key = path.key.or(match path.section {
            Section::Tier { .. } | Section::Route { .. } | Section::Response { .. } => Some("name"),
            Section::Rule { .. } => Some("cidr"),
            _ => None,
        });
        if let Some(k) = key {
            segs.push(Seg::Key(k));
        }
        if let Some(i) = path.item {
            segs.push(Seg::Index(i));
        }
        let mut item: Option<&Item> = None;
        let mut best = None;
        for seg in segs {
            let next = match (item, seg) {
                (None, Seg::Key(k)) => root.get(k),
                (None, Seg::Index(_)) => None,
                (Some(it), Seg::Key(k)) => it.get(k),
                (Some(it), Seg::Index(i)) => it.get(i),
            };
            let Some(next) = next else { break };
            if let Some(s) = next.span() {
                best = Some(s);
            }
            item = Some(next);
        }
        best
    }

    fn line(&self, path: &FieldPath) -> Option<usize> {
        self.span(path).map(|s| self.line_of(s.start).0)
    }

    /// `file:line: place: problem`, or `file: place: problem` when the
    /// problem has no line (a whole-file one).
    fn locate(&self, mut invalid: Invalid) -> ConfigError {
        match invalid.problem.as_mut() {
            Problem::DuplicateTier { first, first_line } => {
                *first_line = self.line(&FieldPath::new(
                    Section::Tier {
                        index: *first,
                        name: None,
                    },
                    Some("name"),
                ));
            }
            Problem::DuplicateRule {
                first, first_line, ..
            } => {
                *first_line = self.line(&FieldPath::new(
                    Section::Rule {
                        index: *first,
                        cidr: None,
                    },
                    Some("cidr"),
                ));
            }
            Problem::DuplicateRoute { first, first_line }
            | Problem::DuplicateRouteMatch {
                first, first_line, ..
            } => {
                *first_line = self.line(&FieldPath::new(
                    Section::Route {
                        index: *first,
                        name: None,
                    },
                    Some("name"),
                ));
            }
            _ => {}
        }
        let whole = matches!(invalid.path.section, Section::Top) && invalid.path.key.is_none();
        match self.line(&invalid.path).filter(|_| !whole) {
            Some(line) => ConfigError::AtLine {
                file: self.file.clone(),
                line,
                invalid: Box::new(invalid),
            },
            None => ConfigError::InFile {
                file: self.file.clone(),
                invalid: Box::new(invalid),
            },
        }
    }

    fn toml(&self, err: &toml::de::Error) -> ConfigError {
        let message = err
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let (position, message) = match err.span() {
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
                let message = match key {
                    Some(key) => format!("{key}: {message}{context}"),
                    None => format!("{message}{context}"),
                };
                (format!(":{line}:{col}"), message)
            }
            None => (String::new(), message),
        };
        ConfigError::Syntax {
            file: self.file.clone(),
            position,
            message,
        }
    }
}

/// Reads and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(&text, ConfigSource::File(path.to_owned()))
}

/// The built-in configuration (see [`EMBEDDED_DEFAULT`]).
pub fn embedded_default() -> Config {
    parse(EMBEDDED_DEFAULT, ConfigSource::Embedded).expect("the embedded default config is valid")
}

/// Parses and validates configuration text.
pub fn parse(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
    let ctx = Ctx::new(source.to_string(), text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml(&e))?;
    let config = lower(raw, source).map_err(|e| ctx.locate(e))?;
    validate(&config).map_err(|e| ctx.locate(e))?;
    Ok(config)
}

/// `lo..=hi` or the error naming `key = value` in `section`.
fn ranged(section: Section, key: &'static str, v: i64, lo: i64, hi: i64) -> Result<i64, Invalid> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Invalid::new(
            section,
            Some(key),
            Some(v.to_string()),
            Problem::Between { lo, hi },
        ))
    }
}

/// The file's values in their validated types, with the file-only rules
/// (map sizes, `[http]`, `[cluster]`, ...) checked; [`validate`] does the rest.
fn lower(raw: RawConfig, source: ConfigSource) -> Result<Config, Invalid> {
    let mut interfaces: Vec<String> = Vec::new();
    for (i, iface) in raw.interfaces.unwrap_or_default().into_iter().enumerate() {
        let err = |p: Problem| {
            Invalid::new(Section::Top, Some("interfaces"), Some(quoted(&iface)), p).item(i)
        };
        check_interface_name(&iface).map_err(|p| err(p.into()))?;
        if interfaces.contains(&iface) {
            return Err(err(Problem::ListedTwice));
        }
        interfaces.push(iface);
    }

    let builtin_tiers = raw.tier.is_empty() && source != ConfigSource::Embedded;
    let patches = if raw.tier.is_empty() {
        embedded_patches()
    } else {
        raw.tier
    };
    let mut tiers = Vec::new();
    for (index, patch) in patches.iter().enumerate() {
        tiers.push(
            patch
                .apply(None)
                .map_err(|e| tier_invalid(index, patch.tier_name(), e))?,
        );
    }
    // Unset when it cannot be inferred: `validate` says so.
    let default_tier = match raw.default_tier {
        Some(d) => d,
        None if tiers.iter().any(|t| t.name == "default") => "default".to_owned(),
        None if tiers.len() == 1 => tiers[0].name.clone(),
        None => String::new(),
    };
    let rules = raw
        .rule
        .iter()
        .enumerate()
        .map(|(i, r)| rule_from_input(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let routes = raw
        .route
        .iter()
        .enumerate()
        .map(|(i, r)| r.to_spec().map_err(|e| route_invalid(i, r.route_name(), e)))
        .collect::<Result<Vec<_>, _>>()?;

    let mut maps = MapSizes::default();
    if let Some(m) = raw.maps {
        for (name, value, slot) in [
            ("sources_v4", m.sources_v4, &mut maps.sources_v4),
            ("sources_v6", m.sources_v6, &mut maps.sources_v6),
            ("rules_v4", m.rules_v4, &mut maps.rules_v4),
            ("rules_v6", m.rules_v6, &mut maps.rules_v6),
        ] {
            if let Some(v) = value {
                *slot = ranged(Section::Maps, name, v, 1, MAX_MAP_ENTRIES)? as u32;
            }
        }
        if let Some(n) = m.sample_ring_bytes {
            if !(MIN_SAMPLE_RING_BYTES..=MAX_SAMPLE_RING_BYTES).contains(&n)
                || !(n as u64).is_power_of_two()
            {
                return Err(Invalid::new(
                    Section::Maps,
                    Some("sample_ring_bytes"),
                    Some(n.to_string()),
                    Problem::PowerOfTwo {
                        lo: MIN_SAMPLE_RING_BYTES,
                        hi: MAX_SAMPLE_RING_BYTES,
                    },
                ));
            }
            maps.sample_ring_bytes = n as u32;
        }
    }

    let metrics_address = match raw.metrics_address {
        Some(a) => SocketAddr::from_str(a.trim()).map_err(|_| {
            Invalid::new(
                Section::Top,
                Some("metrics_address"),
                Some(quoted(&a)),
                Problem::NotASocketAddr,
            )
        })?,
        None => DEFAULT_METRICS_ADDRESS.parse().expect("valid default"),
    };

    let api_keys = match raw.api_keys {
        None => ApiKeysConfig::default(),
        Some(k) => {
            let ttl_seconds = match k.ttl_seconds {
                None => 300,
                Some(t) => ranged(Section::ApiKeys, "ttl_seconds", t, 1, 86_400)? as u64,
            };
            let mut keys = Vec::new();
            for (index, key) in k.key.into_iter().enumerate() {
                let hash = key.sha256.trim().to_ascii_lowercase();
                if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(Invalid::new(
                        Section::ApiKey { index },
                        Some("sha256"),
                        None,
                        Problem::Sha256,
                    ));
                }
                keys.push((hash, key.tier));
            }
            ApiKeysConfig {
                salt: k.salt,
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
        routes,
        maps,
        socket: raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
        pin_dir: raw.pin_dir.unwrap_or_else(|| DEFAULT_PIN_DIR.into()),
        state_file: raw.state_file.unwrap_or_else(|| DEFAULT_STATE_FILE.into()),
        metrics_address,
        allow_uids: raw.allow_uids.unwrap_or_default(),
        http: lower_http(raw.http)?,
        api_keys,
        cluster: raw.cluster.map(lower_cluster).transpose()?,
        responses: raw
            .response
            .into_iter()
            .enumerate()
            .map(|(i, r)| lower_response(i, r))
            .collect::<Result<_, _>>()?,
        crowdsec: raw
            .crowdsec
            .map(super::crowdsec::lower_crowdsec)
            .transpose()?,
        builtin_tiers,
    };
    for (name, path) in [
        ("socket", &config.socket),
        ("pin_dir", &config.pin_dir),
        ("state_file", &config.state_file),
    ] {
        if !path.is_absolute() {
            return Err(Invalid::new(
                Section::Top,
                Some(name),
                Some(quoted(&path.display().to_string())),
                Problem::NotAbsolute,
            ));
        }
    }
    Ok(config)
}

/// The embedded default's `[[tier]]` tables.
fn embedded_patches() -> Vec<TierPatch> {
    let raw: RawConfig = toml::from_str(EMBEDDED_DEFAULT).expect("embedded default parses");
    raw.tier
}

/// `[http]`, with defaults for what is left out.
fn lower_http(raw: Option<RawHttp>) -> Result<HttpConfig, Invalid> {
    let mut http = HttpConfig::default();
    let Some(raw) = raw else {
        return Ok(http);
    };
    let ranged = |v: i64, key, lo, hi| ranged(Section::Http, key, v, lo, hi);
    if let Some(ports) = raw.ports {
        if ports.len() > tollgate_common::MAX_HTTP_PORTS {
            return Err(Invalid::new(
                Section::Http,
                Some("ports"),
                None,
                Problem::TooManyPorts {
                    max: tollgate_common::MAX_HTTP_PORTS,
                },
            ));
        }
        http.ports = Vec::new();
        for (i, p) in ports.into_iter().enumerate() {
            if !(1..=65535).contains(&p) {
                return Err(Invalid::new(
                    Section::Http,
                    Some("ports"),
                    Some(p.to_string()),
                    Problem::NotAPort,
                )
                .item(i));
            }
            http.ports.push(p as u16);
        }
    }
    if let Some(v) = raw.snap_len {
        http.snap_len = ranged(v, "snap_len", 1, tollgate_common::MAX_SNAP_LEN as i64)? as u32;
    }
    if let Some(v) = raw.sample_every {
        http.sample_every = ranged(v, "sample_every", 0, 1 << 20)? as u32;
    }
    if let Some(b) = raw.budget {
        let rate = units::parse_count_rate(&b)
            .map_err(|e| Invalid::new(Section::Http, Some("budget"), Some(quoted(&b)), e))?;
        http.budget_per_second = rate.one_second_worth().max(1);
        http.budget_burst = http.budget_per_second;
    }
    if let Some(v) = raw.budget_burst {
        http.budget_burst = ranged(v, "budget_burst", 1, 1 << 24)? as u64;
    }
    if let Some(v) = raw.verdict_sample_every {
        http.verdict_sample_every = ranged(v, "verdict_sample_every", 0, 1 << 20)? as u32;
    }
    if let Some(h) = raw.redact_headers {
        http.redact_headers = h;
    }
    if let Some(v) = raw.max_routes {
        http.max_routes = ranged(v, "max_routes", 1, 10_000)? as usize;
    }
    if let Some(v) = raw.max_hosts {
        http.max_hosts = ranged(v, "max_hosts", 1, 10_000)? as usize;
    }
    if let Some(v) = raw.top_sources_metric {
        http.top_sources_metric = ranged(v, "top_sources_metric", 0, 100)? as usize;
    }
    if let Some(v) = raw.max_endpoints {
        http.max_endpoints = ranged(v, "max_endpoints", 1, 100_000)? as usize;
    }
    if let Some(s) = raw.max_content_length {
        let n = units::parse_size(&s).map_err(|e| {
            Invalid::new(
                Section::Http,
                Some("max_content_length"),
                Some(quoted(&s)),
                e,
            )
        })?;
        http.max_content_length = Some(n);
    }
    if let Some(path) = raw.openapi {
        let err = |p: Problem| {
            Invalid::new(
                Section::Http,
                Some("openapi"),
                Some(quoted(&path.display().to_string())),
                p,
            )
        };
        if !path.is_absolute() {
            return Err(err(Problem::NotAbsolute));
        }
        let spec = ApiSpec::load(&path).map_err(|e| err(Problem::OpenApi(e)))?;
        http.openapi = Some(Arc::new(spec));
    }
    Ok(http)
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

/// Defaults of `[[response]]`.
const DEFAULT_RESPONSE_WINDOW: &str = "60s";
const DEFAULT_BAN: &str = "10m";
const DEFAULT_MAX_BAN: &str = "24h";
const DEFAULT_FORGET_AFTER: &str = "24h";

/// A `[[response]]` table's values in their types (durations as ages:
/// "90s", "10m", "2h", "7d"); `validate` checks it against the rest.
fn lower_response(index: usize, r: RawResponse) -> Result<ResponseRule, Invalid> {
    let section = || Section::Response {
        index,
        name: Some(r.name.clone()),
    };
    let age = |key: &'static str, v: &Option<String>, default: &str| {
        let text = v.as_deref().unwrap_or(default);
        units::parse_age(text)
            .map_err(|e| Invalid::new(section(), Some(key), Some(quoted(text)), e))
    };
    let count = |key: &'static str, v: Option<i64>, lo: i64, hi: i64| {
        v.map(|v| ranged(section(), key, v, lo, hi)).transpose()
    };
    let ignore = r
        .ignore
        .iter()
        .enumerate()
        .map(|(i, c)| {
            parse_cidr(c)
                .map_err(|e| Invalid::new(section(), Some("ignore"), Some(quoted(c)), e).item(i))
        })
        .collect::<Result<_, _>>()?;
    Ok(ResponseRule {
        name: r.name.clone(),
        refused_seconds: count("refused_seconds", r.refused_seconds, 1, 3600)?.map(|v| v as u32),
        refused_over: count("refused_over", r.refused_over, 0, 1 << 40)?.map(|v| v as u64),
        window: age("window", &r.window, DEFAULT_RESPONSE_WINDOW)?,
        ban: age("ban", &r.ban, DEFAULT_BAN)?,
        max_ban: age("max_ban", &r.max_ban, DEFAULT_MAX_BAN)?,
        forget_after: age("forget_after", &r.forget_after, DEFAULT_FORGET_AFTER)?,
        ignore,
        tiers: r.tiers,
        evidence: r.evidence,
        mode: r.mode,
    })
}

fn lower_cluster(c: RawCluster) -> Result<ClusterConfig, Invalid> {
    let err =
        |key, value: String, p: Problem| Invalid::new(Section::Cluster, Some(key), Some(value), p);
    let check_url = |url: &str, value: String| -> Result<String, Invalid> {
        let url = url.trim();
        redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| err("redis", value, Problem::RedisUrl(e.to_string())))?;
        Ok(url.to_owned())
    };
    let redis = match &c.redis {
        toml::Value::String(u) => RedisTarget::Standalone(check_url(u, quoted(u))?),
        toml::Value::Array(nodes) if !nodes.is_empty() => {
            let mut urls = Vec::new();
            for n in nodes {
                let Some(u) = n.as_str() else {
                    return Err(err("redis", n.to_string(), Problem::RedisNodes));
                };
                urls.push(check_url(u, format!("[.. \"{u}\" ..]"))?);
            }
            RedisTarget::Cluster(urls)
        }
        other => return Err(err("redis", other.to_string(), Problem::RedisValue)),
    };
    let node_id = match c.node_id {
        None => hostname(),
        Some(n) => {
            let id = n.trim();
            if id.is_empty() || id.len() > 64 || !id.chars().all(node_id_char) {
                return Err(err("node_id", quoted(&n), Problem::NodeId));
            }
            id.to_owned()
        }
    };
    let sync_interval = match c.sync_interval {
        None => DEFAULT_SYNC_INTERVAL,
        Some(s) => {
            let d = units::parse_duration(&s)
                .map_err(|e| err("sync_interval", quoted(&s), e.into()))?;
            if !(MIN_SYNC_INTERVAL..=MAX_SYNC_INTERVAL).contains(&d) {
                return Err(err("sync_interval", quoted(&s), Problem::SyncInterval));
            }
            d
        }
    };
    let share = match c.share {
        None => DEFAULT_SHARE,
        Some(v) => {
            let x = match &v {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(i) => *i as f64,
                _ => return Err(err("share", v.to_string(), Problem::ShareNotNumber)),
            };
            if !(0.0..1.0).contains(&x) {
                return Err(err("share", v.to_string(), Problem::ShareRange));
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
