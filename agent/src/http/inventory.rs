//! The API inventory: every endpoint (method, host, route template) the
//! sampled traffic shows, with when it was first and last seen, estimated
//! requests, distinct sources, the content types and the largest
//! Content-Length of its requests, and which auth schemes they presented.
//! Never a value: routes are templates, hosts are cleaned by the parser,
//! content types are cleaned here, sources are kept only as a HyperLogLog
//! sketch and credentials only as the name of their scheme.
//!
//! Bounded: at most `[http] max_endpoints` endpoints; what comes after is
//! counted in one `(other)` row. Kept in the state directory across restarts
//! ([`Inventory::save_json`], [`Inventory::from_json`]; the daemon writes it).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::route;

/// Content types kept per endpoint; the rest are counted as `other`.
pub(crate) const MAX_CONTENT_TYPES: usize = 8;
/// Method, host and route of the row that counts endpoints over the limit.
pub(crate) const OTHER: &str = "(other)";
/// Version of the persisted form.
const FILE_VERSION: u32 = 1;
/// HyperLogLog registers per endpoint (2^8: about 6.5% standard error,
/// exact in practice for a handful of sources).
const REGISTERS: usize = 256;
const REGISTER_BITS: u32 = 8;
/// Methods kept as they are; any other token is counted as `OTHER`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// The credentials a request presented, by scheme. Never their value.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: Basic`.
    Basic,
    /// An API-key header (`X-Api-Key`, `Api-Key`, `X-Auth-Token`, ...) or
    /// query key (`api_key`, `apikey`, `access_token`).
    ApiKey,
    /// A `Cookie` header.
    Cookie,
    /// `Authorization` with another scheme (Digest, AWS4-HMAC-SHA256, ...).
    Other,
}

impl AuthScheme {
    pub const ALL: [AuthScheme; 6] = [
        AuthScheme::None,
        AuthScheme::Bearer,
        AuthScheme::Basic,
        AuthScheme::ApiKey,
        AuthScheme::Cookie,
        AuthScheme::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            AuthScheme::None => "none",
            AuthScheme::Bearer => "bearer",
            AuthScheme::Basic => "basic",
            AuthScheme::ApiKey => "api_key",
            AuthScheme::Cookie => "cookie",
            AuthScheme::Other => "other",
        }
    }

    fn from_name(s: &str) -> Option<AuthScheme> {
        AuthScheme::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// What one sampled request adds to the inventory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observation<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub route: &'a str,
    pub source: IpAddr,
    /// Requests the sample stands for.
    pub scale: u64,
    /// Unix seconds.
    pub now: u64,
    /// Essence (`type/subtype`), cleaned by the parser.
    pub content_type: Option<&'a str>,
    pub content_length: Option<u64>,
    pub auth: AuthScheme,
}

/// Distinct sources, estimated: a HyperLogLog sketch of a hash of each
/// address (the addresses themselves are not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sources(Box<[u8; REGISTERS]>);

impl Default for Sources {
    fn default() -> Self {
        Sources(Box::new([0; REGISTERS]))
    }
}

impl Sources {
    pub(crate) fn add(&mut self, source: IpAddr) {
        let h = match source {
            IpAddr::V4(a) => mix(u32::from(a) as u64 ^ 0x4_0000_0000),
            IpAddr::V6(a) => {
                let b = u128::from(a);
                mix(mix(b as u64) ^ (b >> 64) as u64)
            }
        };
        let index = (h >> (64 - REGISTER_BITS)) as usize;
        let rank = ((h << REGISTER_BITS) | (1 << (REGISTER_BITS - 1))).leading_zeros() as u8 + 1;
        let r = &mut self.0[index];
        *r = (*r).max(rank);
    }

    /// The estimate (linear counting while registers are empty, as HLL++ does).
    pub(crate) fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let zeros = self.0.iter().filter(|r| **r == 0).count();
        let sum: f64 = self.0.iter().map(|r| 2f64.powi(-(*r as i32))).sum();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        let e = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        e.round() as u64
    }

    fn to_hex(&self) -> String {
        hex::encode(&self.0[..])
    }

    fn from_hex(s: &str) -> Option<Sources> {
        let v = hex::decode(s).ok()?;
        let regs: [u8; REGISTERS] = v.try_into().ok()?;
        Some(Sources(Box::new(regs)))
    }
}

/// splitmix64's finalizer: a fast, stable 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One endpoint's record.
#[derive(Clone, Debug, Default)]
pub(crate) struct Endpoint {
    pub first_seen: u64,
    pub last_seen: u64,
    pub requests: u64,
    pub sources: Sources,
    pub content_types: Vec<(String, u64)>,
    pub max_content_length: Option<u64>,
    /// Requests by [`AuthScheme`] (index: its position in `AuthScheme::ALL`).
    pub auth: [u64; 6],
    /// The document operation this endpoint matched, and the document's
    /// generation it was matched against (not persisted).
    pub matched: Option<(u64, Option<usize>)>,
}

impl Endpoint {
    fn observe(&mut self, o: &Observation<'_>) {
        if self.requests == 0 {
            self.first_seen = o.now;
        }
        self.first_seen = self.first_seen.min(o.now);
        self.last_seen = self.last_seen.max(o.now);
        self.requests += o.scale;
        self.sources.add(o.source);
        if let Some(t) = o.content_type {
            let types = &mut self.content_types;
            match types.iter().position(|(k, _)| k == t) {
                Some(i) => types[i].1 += o.scale,
                None if types.len() < MAX_CONTENT_TYPES - 1 => types.push((t.to_owned(), o.scale)),
                None => match types.iter().position(|(k, _)| k == "other") {
                    Some(i) => types[i].1 += o.scale,
                    None => types.push(("other".to_owned(), o.scale)),
                },
            }
        }
        if let Some(n) = o.content_length {
            self.max_content_length = Some(self.max_content_length.map_or(n, |m| m.max(n)));
        }
        self.auth[o.auth as usize] += o.scale;
    }
}

/// The inventory.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    limit: usize,
    /// Route -> (method, host, endpoint): looked up by borrowed strings, no
    /// allocation for an endpoint already known.
    by_route: HashMap<String, Vec<(String, String, Endpoint)>>,
    len: usize,
    /// Whether it changed since the last [`Inventory::save_json`].
    dirty: bool,
    /// Rows of a persisted inventory that were not read back (see
    /// [`Inventory::from_json`]).
    pub dropped: usize,
}

/// One endpoint as `http inventory` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRow {
    pub method: String,
    pub host: String,
    pub route: String,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Estimated requests (samples × their 1-in-K scale).
    pub requests: u64,
    /// Distinct sources (a HyperLogLog estimate).
    pub sources: u64,
    /// Estimated requests by content type (`type/subtype`).
    pub content_types: BTreeMap<String, u64>,
    pub max_content_length: Option<u64>,
    /// Estimated requests by the auth scheme they presented (`none`,
    /// `bearer`, `basic`, `api_key`, `cookie`, `other`).
    pub auth: BTreeMap<String, u64>,
    /// Against an OpenAPI document: `documented` or `shadow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The documented operation (`GET /users/{userId}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// The persisted form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    endpoints: Vec<Persisted>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    method: String,
    host: String,
    route: String,
    first_seen: u64,
    last_seen: u64,
    requests: u64,
    /// HyperLogLog registers, hex.
    sources: String,
    content_types: BTreeMap<String, u64>,
    max_content_length: Option<u64>,
    auth: BTreeMap<String, u64>,
}

/// Why a persisted inventory was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InventoryError {
    #[error("not an inventory file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("inventory file version {0}: this tollgate reads version {FILE_VERSION}")]
    Version(u32),
    #[error("endpoint {method} {route}: {problem}")]
    Endpoint {
        method: String,
        route: String,
        problem: &'static str,
    },
}

impl Inventory {
    pub(crate) fn new(limit: usize) -> Inventory {
        Inventory {
            limit: limit.max(1),
            ..Default::default()
        }
    }

    /// A new bound (from a reload); endpoints already kept stay.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Records one request; returns its endpoint, and whether that is the
    /// `(other)` row (whose requests are of many routes).
    pub(crate) fn record(&mut self, o: &Observation<'_>) -> (&mut Endpoint, bool) {
        let method = if METHODS.contains(&o.method) {
            o.method
        } else {
            "OTHER"
        };
        let host = o.host.unwrap_or("-");
        self.dirty = true;
        let known = self
            .by_route
            .get(o.route)
            .and_then(|v| v.iter().position(|(m, h, _)| m == method && h == host));
        let (method, host, route, other) = match known {
            Some(_) => (method, host, o.route, false),
            None if self.len < self.limit => {
                self.len += 1;
                self.by_route.entry(o.route.to_owned()).or_default().push((
                    method.to_owned(),
                    host.to_owned(),
                    Endpoint::default(),
                ));
                (method, host, o.route, false)
            }
            None => (OTHER, OTHER, OTHER, true),
        };
        let list = self.by_route.entry(route.to_owned()).or_default();
        let i = match list.iter().position(|(m, h, _)| m == method && h == host) {
            Some(i) => i,
            None => {
                list.push((method.to_owned(), host.to_owned(), Endpoint::default()));
                list.len() - 1
            }
        };
        let e = &mut list[i].2;
        e.observe(o);
        (e, other)
    }

    /// Endpoints last seen at or after `since` (Unix seconds), heaviest first.
    pub(crate) fn rows(&self, since: Option<u64>) -> Vec<EndpointRow> {
        let mut rows: Vec<EndpointRow> = self
            .by_route
            .iter()
            .flat_map(|(route, v)| v.iter().map(move |(m, h, e)| (route, m, h, e)))
            .filter(|(_, _, _, e)| since.is_none_or(|s| e.last_seen >= s))
            .map(|(route, method, host, e)| EndpointRow {
                method: method.clone(),
                host: host.clone(),
                route: route.clone(),
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                requests: e.requests,
                sources: e.sources.estimate(),
                content_types: e.content_types.iter().cloned().collect(),
                max_content_length: e.max_content_length,
                auth: auth_map(&e.auth),
                status: None,
                operation: None,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| (&a.route, &a.method, &a.host).cmp(&(&b.route, &b.method, &b.host)))
        });
        rows
    }

    /// The persisted form (and the inventory counts as saved).
    pub(crate) fn save_json(&mut self) -> Vec<u8> {
        self.dirty = false;
        let endpoints = self
            .by_route
            .iter()
            .flat_map(|(route, v)| {
                v.iter().map(move |(m, h, e)| Persisted {
                    method: m.clone(),
                    host: h.clone(),
                    route: route.clone(),
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    requests: e.requests,
                    sources: e.sources.to_hex(),
                    content_types: e.content_types.iter().cloned().collect(),
                    max_content_length: e.max_content_length,
                    auth: auth_map(&e.auth),
                })
            })
            .collect();
        serde_json::to_vec(&File {
            version: FILE_VERSION,
            endpoints,
        })
        .unwrap_or_default()
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// An inventory read back from [`Inventory::save_json`]'s bytes, bounded
    /// by `limit` like a live one (endpoints over it are counted as `(other)`).
    /// Rows whose route or host is not what the parser makes are dropped
    /// (and counted in `dropped`); a file that is not an inventory is an error.
    pub(crate) fn from_json(bytes: &[u8], limit: usize) -> Result<Inventory, InventoryError> {
        let file: File = serde_json::from_slice(bytes)?;
        if file.version != FILE_VERSION {
            return Err(InventoryError::Version(file.version));
        }
        let mut inv = Inventory::new(limit);
        for p in file.endpoints {
            let bad = |problem| InventoryError::Endpoint {
                method: p.method.clone(),
                route: p.route.clone(),
                problem,
            };
            let sources = Sources::from_hex(&p.sources).ok_or_else(|| bad("bad sources sketch"))?;
            let mut auth = [0u64; 6];
            for (k, v) in &p.auth {
                let a = AuthScheme::from_name(k).ok_or_else(|| bad("unknown auth scheme"))?;
                auth[a as usize] = *v;
            }
            // Never trust a file more than the parser: a row whose route is
            // not a template (or whose host is not a cleaned one) is dropped.
            let host_ok = p.host.len() <= 64
                && p.host.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || b".-:[]_()".contains(&c)
                });
            if p.route != OTHER && (route::template(&p.route) != p.route || !host_ok) {
                inv.dropped += 1;
                continue;
            }
            let e = Endpoint {
                first_seen: p.first_seen,
                last_seen: p.last_seen,
                requests: p.requests,
                sources,
                content_types: p
                    .content_types
                    .into_iter()
                    .take(MAX_CONTENT_TYPES)
                    .collect(),
                max_content_length: p.max_content_length,
                auth,
                matched: None,
            };
            let (route, method, host) = if p.route != OTHER && inv.len < inv.limit {
                inv.len += 1;
                (p.route, p.method, p.host)
            } else {
                (OTHER.to_owned(), OTHER.to_owned(), OTHER.to_owned())
            };
            let list = inv.by_route.entry(route).or_default();
            match list.iter_mut().find(|(m, h, _)| *m == method && *h == host) {
                Some((_, _, into)) => merge(into, &e),
                None => list.push((method, host, e)),
            }
        }
        Ok(inv)
    }
}

/// Adds `e`'s counts to `into` (two persisted rows folded into `(other)`).
fn merge(into: &mut Endpoint, e: &Endpoint) {
    into.first_seen = into.first_seen.min(e.first_seen);
    into.last_seen = into.last_seen.max(e.last_seen);
    into.requests += e.requests;
    for (r, s) in into.sources.0.iter_mut().zip(e.sources.0.iter()) {
        *r = (*r).max(*s);
    }
    into.max_content_length = into.max_content_length.max(e.max_content_length);
    for (a, b) in into.auth.iter_mut().zip(e.auth) {
        *a += b;
    }
    for (t, n) in &e.content_types {
        let types = &mut into.content_types;
        match types.iter().position(|(k, _)| k == t) {
            Some(i) => types[i].1 += n,
            None if types.len() < MAX_CONTENT_TYPES => types.push((t.clone(), *n)),
            None => {}
        }
    }
}

fn auth_map(counts: &[u64; 6]) -> BTreeMap<String, u64> {
    AuthScheme::ALL
        .into_iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(a, n)| (a.name().to_owned(), *n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs<'a>(method: &'a str, route: &'a str, source: u8, now: u64) -> Observation<'a> {
        Observation {
            method,
            host: Some("api.test"),
            route,
            source: IpAddr::from([10, 0, 0, source]),
            scale: 2,
            now,
            content_type: None,
            content_length: None,
            auth: AuthScheme::None,
        }
    }

    #[test]
    fn endpoints_count_requests_sources_types_lengths_and_schemes() {
        let mut inv = Inventory::new(10);
        inv.record(&obs("GET", "/users/{id}", 1, 100));
        inv.record(&Observation {
            content_type: Some("application/json"),
            content_length: Some(42),
            auth: AuthScheme::Bearer,
            ..obs("GET", "/users/{id}", 2, 110)
        });
        inv.record(&Observation {
            content_length: Some(7),
            ..obs("GET", "/users/{id}", 2, 105)
        });
        inv.record(&obs("POST", "/users", 1, 120));
        let rows = inv.rows(None);
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(
            (r.method.as_str(), r.route.as_str(), r.host.as_str()),
            ("GET", "/users/{id}", "api.test")
        );
        assert_eq!(
            (r.first_seen, r.last_seen, r.requests, r.sources),
            (100, 110, 6, 2)
        );
        assert_eq!(
            r.content_types,
            BTreeMap::from([("application/json".into(), 2)])
        );
        assert_eq!(r.max_content_length, Some(42));
        assert_eq!(
            r.auth,
            BTreeMap::from([("bearer".into(), 2), ("none".into(), 4)])
        );
        assert_eq!(inv.rows(Some(111)).len(), 1, "--since keeps the recent one");
        assert_eq!(inv.rows(Some(111))[0].method, "POST");
    }

    #[test]
    fn bounded_by_the_limit_and_overflow_is_one_row() {
        let mut inv = Inventory::new(3);
        for i in 0..100 {
            let route = format!("/r{}", "x".repeat(i + 1));
            let (_, other) = inv.record(&obs("GET", &route, i as u8, 1));
            assert_eq!(other, i >= 3, "{i}");
        }
        // Known endpoints keep counting when the inventory is full.
        let (_, other) = inv.record(&obs("GET", "/rx", 1, 1));
        assert!(!other);
        let rows = inv.rows(None);
        assert_eq!(rows.len(), 4, "3 admitted and (other)");
        let other = rows.iter().find(|r| r.route == OTHER).unwrap();
        assert_eq!((other.method.as_str(), other.requests), (OTHER, 2 * 97));
        let total: u64 = rows.iter().map(|r| r.requests).sum();
        assert_eq!(total, 2 * 101);

        // Methods outside the standard set are one method.
        let mut inv = Inventory::new(3);
        inv.record(&obs("X-SECRET-7f3a9c2e", "/a", 1, 1));
        inv.record(&obs("PROPFIND", "/a", 1, 1));
        let rows = inv.rows(None);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].method.as_str(), rows[0].requests), ("OTHER", 4));
    }

    #[test]
    fn distinct_sources_are_estimated_within_a_few_percent() {
        let mut s = Sources::default();
        for n in 1..=5u32 {
            s.add(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
            assert_eq!(s.estimate(), n as u64, "small counts are exact");
        }
        for n in 6..=20_000u32 {
            s.add(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
            s.add(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
        }
        let e = s.estimate() as f64;
        assert!((e / 20_000.0 - 1.0).abs() < 0.15, "{e}");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut t = Sources::default();
        t.add(v6);
        t.add(v6);
        assert_eq!(t.estimate(), 1);
    }

    #[test]
    fn persists_and_reloads_and_distrusts_the_file() {
        let mut inv = Inventory::new(10);
        inv.record(&Observation {
            content_type: Some("text/plain"),
            content_length: Some(9),
            auth: AuthScheme::ApiKey,
            ..obs("PUT", "/items/{id}", 3, 50)
        });
        inv.record(&obs("GET", "/", 4, 60));
        assert!(inv.is_dirty());
        let bytes = inv.save_json();
        assert!(!inv.is_dirty());
        let back = Inventory::from_json(&bytes, 10).unwrap();
        assert_eq!(back.rows(None), inv.rows(None));
        assert_eq!(back.len(), 2);
        // Reloaded under a smaller bound: the rest is (other).
        let small = Inventory::from_json(&bytes, 1).unwrap();
        assert_eq!(small.rows(None).len(), 2);
        assert!(small.rows(None).iter().any(|r| r.route == OTHER));

        let text = String::from_utf8(bytes).unwrap();
        let forged = text
            .replace("/items/{id}", "/items/12345")
            .replace("api.test", "user:SECRET@api.test");
        let read = Inventory::from_json(forged.as_bytes(), 10).unwrap();
        assert_eq!((read.len(), read.dropped), (0, 2), "{:?}", read.rows(None));
        let forged = text.replace("\"auth\":{\"api_key\"", "\"auth\":{\"password\"");
        assert!(matches!(
            Inventory::from_json(forged.as_bytes(), 10),
            Err(InventoryError::Endpoint { .. })
        ));
        assert!(Inventory::from_json(b"{}", 10).is_err());
    }
}
