//! Typed configuration errors: what is wrong ([`Problem`]), where in the
//! configuration ([`FieldPath`]), and, for a file, at which line.

use std::path::PathBuf;

use ipnet::IpNet;
use tollgate_common::{MAX_TIERS, route::MAX_ROUTES};

use crate::{
    openapi::SpecError,
    spec::{CidrError, NameError, RouteProblem, TargetError, TierProblem},
    units::{DurationError, UnitError},
};

/// The table a field is in, as an operator reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Section {
    /// Top-level keys (`default_tier`, `socket`, ...).
    Top,
    /// The `index`th tier; `name` is shown unless the name is the problem.
    Tier {
        index: usize,
        name: Option<String>,
    },
    /// The `index`th rule; `cidr` is shown once it is known to be one.
    Rule {
        index: usize,
        cidr: Option<IpNet>,
    },
    /// The `index`th route; `name` is shown unless the name is the problem.
    Route {
        index: usize,
        name: Option<String>,
    },
    /// The `index`th `[[response]]`.
    Response {
        index: usize,
        name: Option<String>,
    },
    Maps,
    Http,
    Cluster,
    Crowdsec,
    ApiKeys,
    /// The `index`th `[[api_keys.key]]`.
    ApiKey {
        index: usize,
    },
}

/// Where a problem is: a section, a key in it, and an element of the key's
/// list. The file layer turns it into a line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    pub section: Section,
    pub key: Option<&'static str>,
    pub item: Option<usize>,
}

impl FieldPath {
    pub fn new(section: Section, key: Option<&'static str>) -> FieldPath {
        FieldPath {
            section,
            key,
            item: None,
        }
    }

    pub fn item(mut self, item: usize) -> FieldPath {
        self.item = Some(item);
        self
    }
}

/// Why an interface name is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceNameError {
    #[error("interface names are 1 to 15 characters long")]
    Length,
    #[error("not a valid interface name")]
    Invalid,
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// What is wrong with a value, shown after the field and the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Tier(#[from] TierProblem),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Route(#[from] RouteProblem),
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error(transparent)]
    Interface(#[from] InterfaceNameError),
    #[error("a tier with this name is already defined{}", at_line(first_line))]
    DuplicateTier {
        /// Index of the first tier of that name, and its line in the file.
        first: usize,
        first_line: Option<usize>,
    },
    #[error("{count} tiers configured: at most {MAX_TIERS} are supported")]
    TooManyTiers { count: usize },
    #[error("no such tier (tiers: {tiers})")]
    NoSuchTier { tiers: String },
    #[error("default_tier is missing: set it to one of the tiers ({tiers})")]
    DefaultTierMissing { tiers: String },
    #[error("{cidr} already has a rule{}", at_line(first_line))]
    DuplicateRule {
        cidr: IpNet,
        first: usize,
        first_line: Option<usize>,
    },
    #[error("a route with this name is already defined{}", at_line(first_line))]
    DuplicateRoute {
        first: usize,
        first_line: Option<usize>,
    },
    #[error(
        "route \"{other}\" already matches this on port {port}{}",
        at_line(first_line)
    )]
    DuplicateRouteMatch {
        other: String,
        port: u16,
        /// Index of the route that matches it first, and its line in the file.
        first: usize,
        first_line: Option<usize>,
    },
    #[error("{count} routes configured: at most {MAX_ROUTES} are supported")]
    TooManyRoutes { count: usize },
    #[error(
        "routes are found on the [http] ports, and [http] ports is empty: \
         list the ports your HTTP servers listen on (e.g. ports = [80, 8080])"
    )]
    RoutesNeedHttpPorts,
    #[error(
        "not one of the [http] ports ({ports}): requests to other ports are never scanned; add it to [http] ports"
    )]
    RoutePortNotHttp { ports: String },
    #[error(
        "more than tier \"{tier}\"'s requests burst of {burst}: no request to this route from the tier's sources could ever pass (lower the cost, or raise the tier's requests_burst to at least {cost})"
    )]
    CostOverBurst { tier: String, burst: u64, cost: u32 },
    #[error("global limits need a [cluster] section (redis = \"redis://...\")")]
    GlobalNeedsCluster,
    #[error(
        "requests are counted on the [http] ports, and [http] ports is empty: \
         list the ports your HTTP servers listen on (e.g. ports = [80, 8080])"
    )]
    RequestsNeedHttpPorts,
    #[error("listed twice")]
    ListedTwice,
    #[error("must be between {lo} and {hi}")]
    Between { lo: i64, hi: i64 },
    #[error("must be a power of two between {lo} and {hi} (e.g. 4194304)")]
    PowerOfTwo { lo: i64, hi: i64 },
    #[error("at most {max} ports can be sampled")]
    TooManyPorts { max: usize },
    #[error("not a TCP port (1-65535)")]
    NotAPort,
    #[error("not an IP address and port (write e.g. \"127.0.0.1:9810\" or \"[::1]:9810\")")]
    NotASocketAddr,
    #[error("must be 64 hex digits (make one with `tollgate api-key hash --salt SALT KEY`)")]
    Sha256,
    #[error("not a Redis URL ({0}); write e.g. \"redis://127.0.0.1:6379/\"")]
    RedisUrl(String),
    #[error("list Redis Cluster nodes as URLs, e.g. [\"redis://10.0.0.1:6379\"]")]
    RedisNodes,
    #[error("write a URL (\"redis://host:6379/\") or, for Redis Cluster, a list of node URLs")]
    RedisValue,
    #[error("1 to 64 letters, digits, '-', '_' or '.'")]
    NodeId,
    #[error("must be between 10ms and 1s")]
    SyncInterval,
    #[error("must be a number, e.g. 0.05")]
    ShareNotNumber,
    #[error("must be at least 0 and below 1 (a share of the global limit)")]
    ShareRange,
    #[error("must be an absolute path")]
    NotAbsolute,
    #[error("a response rule with this name is already defined")]
    DuplicateResponse,
    #[error(
        "set refused_seconds (refused in N of the window's seconds), refused_over (more than X refusals in the window), or both"
    )]
    ResponseWithoutThreshold,
    #[error("must be between 1s and 1h (whole seconds)")]
    ResponseWindow,
    #[error("must be at least {least} (refused_seconds) and at most 1h")]
    ResponseWindowShort { least: u32 },
    #[error("must be at least 1s")]
    BanTooShort,
    #[error("must be at least ban ({ban})")]
    MaxBanUnderBan { ban: String },
    #[error(
        "request evidence comes from the [http] ports, and [http] ports is empty: \
         list the ports your HTTP servers listen on (e.g. ports = [80, 8080])"
    )]
    ResponseNeedsHttpPorts,
    #[error("not a local API URL ({0}); write e.g. \"http://127.0.0.1:8080/\"")]
    LapiUrl(String),
    #[error("must be between 200ms and 600s")]
    PollInterval,
    #[error("not a decision scope tollgate enforces: write \"Ip\" or \"Range\"")]
    DecisionScope,
    /// The OpenAPI document (`[http] openapi`): its file and the JSON path
    /// of the bad node.
    #[error(transparent)]
    OpenApi(#[from] SpecError),
}

/// A problem at a place in the configuration, without a file:
/// `tier "gold": packets = "100/x": unknown period "x" (use /s, /min or /h)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", self.place())]
pub struct Invalid {
    pub path: FieldPath,
    /// The value at fault as TOML writes it (`"100/x"`, `5`), if any.
    pub value: Option<String>,
    pub problem: Box<Problem>,
}

impl Invalid {
    pub fn new(
        section: Section,
        key: Option<&'static str>,
        value: Option<String>,
        problem: impl Into<Problem>,
    ) -> Invalid {
        Invalid {
            path: FieldPath::new(section, key),
            value,
            problem: Box::new(problem.into()),
        }
    }

    pub fn item(mut self, item: usize) -> Invalid {
        self.path.item = Some(item);
        self
    }

    /// `tier "gold": packets = "100/x": ` (empty for a whole-file problem).
    fn place(&self) -> String {
        let section = match &self.path.section {
            Section::Top => None,
            Section::Tier { name: Some(n), .. } => Some(format!("tier \"{n}\"")),
            Section::Tier { name: None, .. } => Some("tier".to_owned()),
            Section::Rule { cidr: Some(c), .. } => Some(format!("rule {c}")),
            Section::Rule { cidr: None, .. } => Some("rule".to_owned()),
            Section::Route { name: Some(n), .. } => Some(format!("route \"{n}\"")),
            Section::Route { name: None, .. } => Some("route".to_owned()),
            Section::Response { name: Some(n), .. } => Some(format!("response \"{n}\"")),
            Section::Response { name: None, .. } => Some("response".to_owned()),
            Section::Maps => Some("maps".to_owned()),
            Section::Http => Some("http".to_owned()),
            Section::Cluster => Some("cluster".to_owned()),
            Section::Crowdsec => Some("crowdsec".to_owned()),
            Section::ApiKeys => Some("api_keys".to_owned()),
            Section::ApiKey { .. } => Some("api_keys.key".to_owned()),
        };
        let field = match (self.path.key, self.path.item, &self.value) {
            (Some(k), Some(_), Some(v)) => Some(format!("{k}: {v}")),
            (Some(k), None, Some(v)) => Some(format!("{k} = {v}")),
            (Some(k), _, None) => Some(k.to_owned()),
            (None, _, Some(v)) => Some(v.clone()),
            (None, _, None) => None,
        };
        let mut out = String::new();
        for part in [section, field].into_iter().flatten() {
            out.push_str(&part);
            out.push_str(": ");
        }
        out
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// TOML syntax or types, as the parser words it: `file:line:col: message`.
    #[error("{file}{position}: {message}")]
    Syntax {
        file: String,
        /// `:3:1`, or empty when the parser gave no place.
        position: String,
        message: String,
    },
    #[error("{file}:{line}: {invalid}")]
    AtLine {
        file: String,
        line: usize,
        invalid: Box<Invalid>,
    },
    #[error("{file}: {invalid}")]
    InFile { file: String, invalid: Box<Invalid> },
    /// A change made with the CLI.
    #[error(transparent)]
    Invalid(Box<Invalid>),
    /// The file with the changes made with the CLI (the state file).
    #[error("with the changes made with the CLI: {0}")]
    WithChanges(Box<Invalid>),
    #[error("--iface {iface}: {problem}")]
    Interface {
        iface: String,
        problem: InterfaceNameError,
    },
}

impl From<Invalid> for ConfigError {
    fn from(e: Invalid) -> Self {
        ConfigError::Invalid(Box::new(e))
    }
}

impl ConfigError {
    /// The problem and where, when it is a semantic one.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::AtLine { invalid, .. }
            | ConfigError::InFile { invalid, .. }
            | ConfigError::Invalid(invalid)
            | ConfigError::WithChanges(invalid) => Some(invalid),
            _ => None,
        }
    }
}
