//! Routes: what one HTTP request to an endpoint charges its source's requests
//! bucket (`cost`), and the ceiling all sources share for it. The input form
//! (`[[route]]` in the file, the `route_add` request, the `route add` flags),
//! the validated spec, the rules one route must satisfy on its own, its
//! kernel form, and the userspace longest-prefix match that names the route
//! of a sampled request the way the kernel finds it.
//!
//! Rules relating a route to the rest of the configuration (its port among
//! `[http] ports`, duplicates, a cost above a tier's requests burst) are
//! `config::validate`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tollgate_common::{
    Limit,
    route::{HOST_MAX, MAX_ROUTE_COST, ROUTE_HOST, ROUTE_LINE_LEN, ROUTE_SHADOW},
};

use super::tier::{LimitError, LimitField, LimitSpec, TierMode, quoted};
use crate::units::{self, UnitError};

/// Longest route name (it is a metric label).
pub const MAX_ROUTE_NAME: usize = 64;

/// The methods a route can match (what the kernel's head scan recognises).
pub const METHODS: [&str; 9] = [
    "GET", "PUT", "POST", "HEAD", "PATCH", "TRACE", "DELETE", "OPTIONS", "CONNECT",
];

/// A route as written in the file (`[[route]]`) and sent by `route add`:
/// numbers are signed so a negative one gets the same explanation from the
/// file, the socket and the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RouteInput {
    /// Route name: 1 to 64 letters, digits, '-', '_' or '.' (the `route`
    /// label of the route's metrics). Example: search
    pub name: String,
    /// The request line's start: a method, one space and a path prefix
    /// (byte prefix, case-sensitive, at most 56 bytes in all); a method
    /// alone matches every request with it. Without it the route is a whole
    /// port (needs --port). Example: --match "POST /api/search"
    #[arg(long = "match", value_name = "METHOD /PATH")]
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// Only requests to this TCP port (one of `[http] ports`) [default: every
    /// HTTP port]. Example: --port 8443
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Only requests whose Host header names this host (any case, its
    /// port ignored) [default: any host]. A route of a host wins over every
    /// route without one. Example: --host api.example.com
    #[arg(long, value_name = "HOST")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What one request to the route charges its source's requests limit
    /// (1 to 10000) [default: 1]. Example: --cost 20
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<i64>,
    /// Requests to the route from all sources together (the backend's
    /// capacity for it); N/s, N/min or N/h [default: no ceiling].
    /// Example: --ceiling 200/s
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<String>,
    /// Burst of the ceiling, in requests [default: one second's worth].
    /// Example: --ceiling-burst 20
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling_burst: Option<i64>,
    /// enforce: charge the cost and drop over the ceiling (the default);
    /// shadow: charge 1, count what the ceiling would drop, drop nothing.
    /// Example: --mode shadow
    #[arg(long, value_enum, value_name = "MODE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TierMode>,
}

/// One route as configured (also the form CLI changes are stored in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    /// Only requests whose Host header names this host (lower-case, no
    /// port); `None`: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The request-line prefix (`POST /api/search`, `GET ` for every GET);
    /// `None`: the whole port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// `None`: every `[http] ports` port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub cost: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<LimitSpec>,
    pub mode: TierMode,
}

/// Why one route is not valid on its own (shown after the field and value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteProblem {
    #[error("route names are 1 to {MAX_ROUTE_NAME} letters, digits, '-', '_' or '.'")]
    Name,
    #[error(
        "write a method, one space and a path prefix, e.g. \"POST /api/search\" (or a method alone, e.g. \"GET\")"
    )]
    MatchForm,
    #[error("methods are uppercase: write \"{0}\" (the kernel compares bytes)")]
    MethodCase(String),
    #[error("unknown method \"{0}\" (use one of {methods})", methods = METHODS.join(", "))]
    Method(String),
    #[error("the path prefix must start with '/' (absolute-form and '*' targets are not matched)")]
    PathSlash,
    #[error("the path prefix may not hold spaces, control bytes or non-ASCII bytes")]
    PathBytes,
    #[error(
        "is {len} bytes: a route matches at most {ROUTE_LINE_LEN} bytes of the request line (method, space and path prefix)"
    )]
    LineTooLong { len: usize },
    #[error("not a TCP port (1-65535)")]
    NotAPort,
    #[error(
        "a host is 1 to {HOST_MAX} letters, digits, '-' and '.', without a port or a scheme (e.g. \"api.example.com\")"
    )]
    Host,
    #[error(
        "a route needs match = \"METHOD /path\", or port = N alone for a route of a whole port"
    )]
    NothingToMatch,
    #[error("must be between 1 and {MAX_ROUTE_COST}")]
    Cost,
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("must be at least 1")]
    BurstBelowOne,
    #[error("there is no ceiling to apply it to: set ceiling = \"N/s\" too")]
    BurstWithoutCeiling,
}

/// A problem with one field of one route:
/// `route "search": cost = 0: must be between 1 and 10000`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "route{}: {}{problem}",
    route.as_ref().map(|t| format!(" \"{t}\"")).unwrap_or_default(),
    match (key, value) {
        (Some(k), Some(v)) => format!("{k} = {v}: "),
        (Some(k), None) => format!("{k}: "),
        (None, _) => String::new(),
    }
)]
pub struct RouteFieldError {
    /// The route, unless its name is the problem.
    pub route: Option<String>,
    /// The field as written in the file (`ceiling_burst`); `None`: the
    /// route as a whole.
    pub key: Option<&'static str>,
    pub value: Option<String>,
    pub problem: Box<RouteProblem>,
}

impl RouteFieldError {
    pub fn new(
        route: &str,
        key: &'static str,
        value: Option<String>,
        problem: impl Into<RouteProblem>,
    ) -> Self {
        RouteFieldError {
            route: (key != "name").then(|| route.to_owned()),
            key: Some(key),
            value,
            problem: Box::new(problem.into()),
        }
    }

    /// A problem with the route as a whole.
    pub fn whole(route: &str, problem: RouteProblem) -> Self {
        RouteFieldError {
            route: Some(route.to_owned()),
            key: None,
            value: None,
            problem: Box::new(problem),
        }
    }
}

/// Route names: 1 to 64 of letters, digits, '-', '_' and '.'.
pub fn check_route_name(name: &str) -> Result<(), RouteProblem> {
    if name.is_empty()
        || name.len() > MAX_ROUTE_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(RouteProblem::Name);
    }
    Ok(())
}

/// The request-line prefix a `match` stands for: `"POST /api"` as written,
/// `"GET"` as `"GET "` (every GET).
pub fn parse_match(m: &str) -> Result<String, RouteProblem> {
    let (method, path) = match m.split_once(' ') {
        Some((method, path)) => (method, Some(path)),
        None => (m, None),
    };
    if method.is_empty() {
        return Err(RouteProblem::MatchForm);
    }
    if !METHODS.contains(&method) {
        let upper = method.to_ascii_uppercase();
        if METHODS.contains(&upper.as_str()) {
            let fixed = match path {
                Some(p) => format!("{upper} {p}"),
                None => upper,
            };
            return Err(RouteProblem::MethodCase(fixed));
        }
        return Err(RouteProblem::Method(method.to_owned()));
    }
    let line = match path {
        None => format!("{method} "),
        Some("") => return Err(RouteProblem::MatchForm),
        Some(p) => {
            if !p.starts_with('/') {
                return Err(RouteProblem::PathSlash);
            }
            if !p.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err(RouteProblem::PathBytes);
            }
            format!("{method} {p}")
        }
    };
    if line.len() > ROUTE_LINE_LEN {
        return Err(RouteProblem::LineTooLong { len: line.len() });
    }
    Ok(line)
}

/// A route's host as the kernel compares it: lower-case letters, digits,
/// '-' and '.', at most [`HOST_MAX`] bytes (what a Host header's tag covers).
fn parse_host(host: &str) -> Result<String, RouteProblem> {
    let h = host.trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= HOST_MAX as usize
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok { Ok(h) } else { Err(RouteProblem::Host) }
}

/// What `match` a route line reads as (`"GET "` reads `"GET"`).
pub fn match_text(line: &str) -> &str {
    line.strip_suffix(' ').unwrap_or(line)
}

/// The default cost.
pub const DEFAULT_ROUTE_COST: u32 = 1;

impl RouteInput {
    pub fn route_name(&self) -> &str {
        self.name.trim()
    }

    /// The route this input describes: read, not yet related to the rest of
    /// the configuration (that is `config::validate`'s, which also runs
    /// [`RouteSpec::to_kernel`]).
    pub fn to_spec(&self) -> Result<RouteSpec, RouteFieldError> {
        let name = self.route_name();
        let err = |key, value, p: RouteProblem| RouteFieldError::new(name, key, value, p);
        check_route_name(name).map_err(|p| err("name", Some(quoted(&self.name)), p))?;
        let host = self
            .host
            .as_ref()
            .map(|h| parse_host(h).map_err(|p| err("host", Some(quoted(h)), p)))
            .transpose()?;
        let line = self
            .matches
            .as_ref()
            .map(|m| parse_match(m).map_err(|p| err("match", Some(quoted(m)), p)))
            .transpose()?;
        let port = match self.port {
            None => None,
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(p) => return Err(err("port", Some(p.to_string()), RouteProblem::NotAPort)),
        };
        if line.is_none() && port.is_none() {
            return Err(RouteFieldError::whole(name, RouteProblem::NothingToMatch));
        }
        let cost = match self.cost {
            None => DEFAULT_ROUTE_COST,
            Some(c) if (1..=MAX_ROUTE_COST as i64).contains(&c) => c as u32,
            Some(c) => return Err(err("cost", Some(c.to_string()), RouteProblem::Cost)),
        };
        let burst = match self.ceiling_burst {
            None => None,
            Some(b) if b >= 1 => Some(b as u64),
            Some(b) => {
                return Err(err(
                    "ceiling_burst",
                    Some(b.to_string()),
                    RouteProblem::BurstBelowOne,
                ));
            }
        };
        let ceiling = match &self.ceiling {
            None => None,
            Some(r) if r.trim() == "unlimited" => None,
            Some(r) => {
                let rate = units::parse_count_rate(r)
                    .map_err(|e| err("ceiling", Some(quoted(r)), e.into()))?;
                Some(LimitSpec {
                    rate: units::format_count_rate(&rate),
                    burst,
                })
            }
        };
        if let (None, Some(b)) = (&ceiling, burst) {
            return Err(err(
                "ceiling_burst",
                Some(b.to_string()),
                RouteProblem::BurstWithoutCeiling,
            ));
        }
        let spec = RouteSpec {
            name: name.to_owned(),
            host,
            line,
            port,
            cost,
            ceiling,
            mode: self.mode.unwrap_or_default(),
        };
        spec.to_kernel()?;
        Ok(spec)
    }
}

/// A route's kernel form, without its index and keys (the port, the index
/// and the key are the configuration's and the state's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteKernel {
    pub cost: u32,
    pub ceiling: Limit,
    pub flags: u32,
}

impl RouteSpec {
    /// Every rule a route must satisfy on its own, and its kernel form.
    pub fn to_kernel(&self) -> Result<RouteKernel, RouteFieldError> {
        let name = &self.name;
        check_route_name(name)
            .map_err(|p| RouteFieldError::new(name, "name", Some(quoted(name)), p))?;
        if let Some(line) = &self.line {
            let parsed = parse_match(match_text(line)).map_err(|p| {
                RouteFieldError::new(name, "match", Some(quoted(match_text(line))), p)
            })?;
            if &parsed != line {
                return Err(RouteFieldError::new(
                    name,
                    "match",
                    Some(quoted(line)),
                    RouteProblem::MatchForm,
                ));
            }
        } else if self.port.is_none() {
            return Err(RouteFieldError::whole(name, RouteProblem::NothingToMatch));
        }
        if !(1..=MAX_ROUTE_COST).contains(&self.cost) {
            return Err(RouteFieldError::new(
                name,
                "cost",
                Some(self.cost.to_string()),
                RouteProblem::Cost,
            ));
        }
        let ceiling = match &self.ceiling {
            None => Limit::UNLIMITED,
            // A count rate with the aggregate limit's rules: no tick bucket
            // (a ceiling's state is nanoseconds).
            Some(l) => {
                l.resolve(LimitField::Aggregate)
                    .map_err(|e| match l.burst {
                        Some(b) if e.is_burst() => {
                            RouteFieldError::new(name, "ceiling_burst", Some(b.to_string()), e)
                        }
                        _ => RouteFieldError::new(name, "ceiling", Some(quoted(&l.rate)), e),
                    })?
                    .limit
            }
        };
        if let Some(h) = &self.host
            && parse_host(h).as_deref() != Ok(h.as_str())
        {
            return Err(RouteFieldError::new(
                name,
                "host",
                Some(quoted(h)),
                RouteProblem::Host,
            ));
        }
        Ok(RouteKernel {
            cost: self.cost,
            ceiling,
            flags: match self.mode {
                TierMode::Enforce => 0,
                TierMode::Shadow => ROUTE_SHADOW,
            } | if self.host.is_some() { ROUTE_HOST } else { 0 },
        })
    }

    /// The tag of the route's host in its kernel keys (0: any host).
    pub fn host_tag(&self) -> u32 {
        self.host
            .as_deref()
            .map_or(0, |h| tollgate_common::route::host_tag(h.as_bytes()))
    }

    /// The ports the route is written for: its own, else every HTTP port.
    pub fn ports(&self, http_ports: &[u16]) -> Vec<u16> {
        match self.port {
            Some(p) => vec![p],
            None => http_ports.to_vec(),
        }
    }

    /// What `route list` shows as its match: `POST /api`, `GET`, or `*`
    /// (the whole port).
    pub fn match_label(&self) -> &str {
        self.line.as_deref().map_or("*", match_text)
    }
}

/// The configured routes by port, for naming the route of a sampled request
/// the way the kernel finds it: among the routes of the request's host, the
/// longest route line that is a byte prefix of the request (a route of the
/// whole port, the empty line, matches every request on it); else the same
/// among the routes of any host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    by_port: BTreeMap<TableKey, Vec<TableLine>>,
}

/// A [`RouteTable`]'s key: port, and host ("" for any).
type TableKey = (u16, String);
/// A route line and its route's name, longest line first.
type TableLine = (Vec<u8>, String);

impl RouteTable {
    pub fn new(routes: &[RouteSpec], http_ports: &[u16]) -> RouteTable {
        let mut by_port: BTreeMap<TableKey, Vec<TableLine>> = BTreeMap::new();
        for r in routes {
            for port in r.ports(http_ports) {
                let line = r.line.as_deref().unwrap_or("").as_bytes().to_vec();
                by_port
                    .entry((port, r.host.clone().unwrap_or_default()))
                    .or_default()
                    .push((line, r.name.clone()));
            }
        }
        for lines in by_port.values_mut() {
            lines.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
        RouteTable { by_port }
    }

    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }

    /// The route of a request to `port` whose head starts with `head` and
    /// whose Host header names `host` (without its port).
    pub fn lookup(&self, port: u16, host: Option<&str>, head: &[u8]) -> Option<&str> {
        let head = &head[..head.len().min(ROUTE_LINE_LEN)];
        let best = |host: &str| {
            self.by_port
                .get(&(port, host.to_owned()))?
                .iter()
                .find(|(line, _)| head.starts_with(line))
                .map(|(_, name)| name.as_str())
        };
        host.map(|h| h.to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .and_then(|h| best(&h))
            .or_else(|| best(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, m: Option<&str>) -> RouteInput {
        RouteInput {
            name: name.into(),
            matches: m.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn matches_read_as_the_kernel_compares_them() {
        assert_eq!(parse_match("POST /api/search").unwrap(), "POST /api/search");
        assert_eq!(parse_match("GET").unwrap(), "GET ");
        assert_eq!(parse_match("GET /").unwrap(), "GET /");
        assert_eq!(
            parse_match("post /x"),
            Err(RouteProblem::MethodCase("POST /x".into()))
        );
        assert_eq!(
            parse_match("FETCH /x"),
            Err(RouteProblem::Method("FETCH".into()))
        );
        assert_eq!(parse_match("GET api"), Err(RouteProblem::PathSlash));
        assert_eq!(parse_match("GET /a b"), Err(RouteProblem::PathBytes));
        assert_eq!(parse_match("GET /a\tb"), Err(RouteProblem::PathBytes));
        assert_eq!(parse_match("GET /é"), Err(RouteProblem::PathBytes));
        assert_eq!(parse_match(" /x"), Err(RouteProblem::MatchForm));
        assert_eq!(parse_match("GET "), Err(RouteProblem::MatchForm));
        let long = format!("GET /{}", "a".repeat(ROUTE_LINE_LEN - 5));
        assert_eq!(parse_match(&long).unwrap().len(), ROUTE_LINE_LEN);
        let longer = format!("{long}b");
        assert_eq!(
            parse_match(&longer),
            Err(RouteProblem::LineTooLong {
                len: ROUTE_LINE_LEN + 1
            })
        );
    }

    #[test]
    fn inputs_become_specs_with_defaults_and_canonical_rates() {
        let mut i = input("search", Some("POST /api/search"));
        i.cost = Some(20);
        i.ceiling = Some("12000/min".into());
        i.ceiling_burst = Some(20);
        let s = i.to_spec().unwrap();
        assert_eq!(s.line.as_deref(), Some("POST /api/search"));
        assert_eq!(s.cost, 20);
        assert_eq!(s.ceiling.as_ref().unwrap().rate, "12000/min");
        let k = s.to_kernel().unwrap();
        assert_eq!(
            k.ceiling,
            Limit::per_period(200, 1_000_000_000, 20).unwrap()
        );
        assert_eq!(k.flags, 0);
        let mut shadow = input("s", Some("GET"));
        shadow.mode = Some(TierMode::Shadow);
        let s = shadow.to_spec().unwrap();
        assert_eq!(s.cost, 1);
        assert!(s.to_kernel().unwrap().ceiling.is_unlimited());
        assert_eq!(s.to_kernel().unwrap().flags, ROUTE_SHADOW);
        assert_eq!(s.match_label(), "GET");
    }

    #[test]
    fn each_field_names_itself_when_wrong() {
        let e = |i: RouteInput| i.to_spec().unwrap_err().to_string();
        assert_eq!(
            e(input("a b", Some("GET"))),
            "route: name = \"a b\": route names are 1 to 64 letters, digits, '-', '_' or '.'"
        );
        assert_eq!(
            e(input("r", None)),
            "route \"r\": a route needs match = \"METHOD /path\", or port = N alone for a route of a whole port"
        );
        let mut i = input("r", Some("GET"));
        i.host = Some("api.example:8080".into());
        assert!(
            e(i.clone())
                .starts_with("route \"r\": host = \"api.example:8080\": a host is 1 to 64 letters"),
            "{}",
            e(i)
        );
        let mut i = input("r", Some("GET"));
        i.host = Some("API.Example".into());
        assert_eq!(i.to_spec().unwrap().host.as_deref(), Some("api.example"));
        let mut i = input("r", Some("GET"));
        i.cost = Some(0);
        assert_eq!(e(i), "route \"r\": cost = 0: must be between 1 and 10000");
        let mut i = input("r", Some("GET"));
        i.ceiling_burst = Some(5);
        assert_eq!(
            e(i),
            "route \"r\": ceiling_burst = 5: there is no ceiling to apply it to: set ceiling = \"N/s\" too"
        );
        let mut i = input("r", Some("GET"));
        i.ceiling = Some("10/s".into());
        i.ceiling_burst = Some(0);
        assert_eq!(e(i), "route \"r\": ceiling_burst = 0: must be at least 1");
        let mut i = input("r", Some("GET"));
        i.port = Some(70000);
        assert_eq!(e(i), "route \"r\": port = 70000: not a TCP port (1-65535)");
    }

    #[test]
    fn the_table_finds_the_longest_prefix_on_the_port() {
        let spec = |name: &str, line: Option<&str>, port: Option<u16>| RouteSpec {
            name: name.into(),
            host: None,
            line: line.map(str::to_owned),
            port,
            cost: 1,
            ceiling: None,
            mode: TierMode::Enforce,
        };
        let t = RouteTable::new(
            &[
                spec("api", Some("GET /api"), None),
                spec("search", Some("GET /api/search"), None),
                spec("admin", None, Some(8443)),
                spec("posts", Some("POST "), Some(8080)),
            ],
            &[80, 8080],
        );
        assert_eq!(
            t.lookup(80, None, b"GET /api/search?q=1 HTTP/1.1"),
            Some("search")
        );
        assert_eq!(t.lookup(80, None, b"GET /api/items HTTP/1.1"), Some("api"));
        assert_eq!(
            t.lookup(80, None, b"GET /API HTTP/1.1"),
            None,
            "case-sensitive"
        );
        assert_eq!(t.lookup(80, None, b"POST /x HTTP/1.1"), None);
        assert_eq!(t.lookup(8080, None, b"POST /x HTTP/1.1"), Some("posts"));
        assert_eq!(t.lookup(8443, None, b"anything"), Some("admin"));
        assert_eq!(t.lookup(9000, None, b"GET /api"), None);
        // A route of a host wins over longer routes of any host.
        let mut hosted = spec("hosted", Some("GET "), None);
        hosted.host = Some("api.example".into());
        let t = RouteTable::new(
            &[spec("search", Some("GET /api/search"), None), hosted],
            &[80],
        );
        assert_eq!(
            t.lookup(80, Some("API.example"), b"GET /api/search"),
            Some("hosted")
        );
        assert_eq!(
            t.lookup(80, Some("www.example"), b"GET /api/search"),
            Some("search")
        );
        assert_eq!(t.lookup(80, None, b"GET /api/search"), Some("search"));
    }
}
