//! An OpenAPI document as the HTTP inventory compares traffic with it: its
//! operations (method and path template), the servers' base paths, what each
//! operation accepts (request content types, a body size limit) and whether
//! it requires credentials.
//!
//! OpenAPI 3.0 and 3.1, YAML or JSON. The document is read into JSON values
//! (YAML with `yaml_serde`), a 3.0 document's two schema keywords whose type
//! changed in 3.1 are lifted to their 3.1 form, and the result is read into
//! `oas3`'s object model with the JSON path of any node that does not fit
//! (`serde_path_to_error`). Path templates are matched with `matchit`.
//!
//! Observed routes are templates too (`/users/{id}`): a segment the route
//! templating replaced (`{id}`, `{token}`, `{email}`) matches a parameter of
//! the document's path (`/users/{userId}`) and nothing else.

use std::{collections::HashMap, fmt, path::Path};

use serde_json::Value;

/// The HTTP methods an OpenAPI path item can document.
pub const METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: cannot read the OpenAPI document: {error}")]
    Read { file: String, error: String },
    #[error("{file}{position}: not valid {format}: {message}")]
    Syntax {
        file: String,
        format: &'static str,
        /// `:3:7`, or empty when the parser gave no place.
        position: String,
        message: String,
    },
    #[error(
        "{file}: {found}: only OpenAPI 3.0 and 3.1 documents are supported (write `openapi: 3.1.0`)"
    )]
    Version { file: String, found: String },
    /// A node that does not fit the OpenAPI object model.
    #[error("{file}: at {json_path}: {message}")]
    Invalid {
        file: String,
        /// `$.paths["/users/{id}"].get.requestBody`.
        json_path: String,
        message: String,
    },
}

/// One documented operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Upper case (`GET`).
    pub method: String,
    /// The path template as the document writes it (`/users/{userId}`).
    pub path: String,
    pub operation_id: Option<String>,
    /// Media ranges of the documented request body (`application/json`,
    /// `image/*`), lower case, parameters dropped; empty: no request body.
    pub accepts: Vec<String>,
    /// The request body schema's `maxLength` (the largest of the media
    /// types'), if every documented media type sets one.
    pub max_body: Option<u64>,
    /// Every security requirement of the operation (its own, or the
    /// document's) needs credentials: none of them is `{}`.
    pub requires_credentials: bool,
}

impl Operation {
    /// `GET /users/{userId}`.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether a request body of `content_type` (an essence: `type/subtype`,
    /// lower case) is one the operation documents.
    pub fn accepts(&self, content_type: &str) -> bool {
        self.accepts
            .iter()
            .any(|range| media_match(range, content_type))
    }
}

/// `*/*`, `type/*` or an exact `type/subtype`.
fn media_match(range: &str, essence: &str) -> bool {
    if range == "*/*" || range == essence {
        return true;
    }
    match (range.strip_suffix("/*"), essence.split_once('/')) {
        (Some(t), Some((et, _))) => t == et,
        _ => false,
    }
}

/// What a request showed that its documented operation does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriftKind {
    /// A request body content type the operation does not document.
    ContentType,
    /// A Content-Length over the operation's `maxLength` or the configured
    /// `[http] max_content_length`.
    ContentLength,
    /// No credentials, to an operation whose security requires them.
    Unauthenticated,
}

impl DriftKind {
    pub const ALL: [DriftKind; 3] = [
        DriftKind::ContentType,
        DriftKind::ContentLength,
        DriftKind::Unauthenticated,
    ];

    /// The `kind` label and JSON name.
    pub const fn name(self) -> &'static str {
        match self {
            DriftKind::ContentType => "content_type",
            DriftKind::ContentLength => "content_length",
            DriftKind::Unauthenticated => "unauthenticated",
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed document, ready to match routes.
pub struct ApiSpec {
    /// The file it came from, as the operator wrote it.
    pub source: String,
    /// Its `openapi` version (`3.1.0`).
    pub version: String,
    pub operations: Vec<Operation>,
    /// The servers' base paths (`/v1`), longest first; `""` when a server is
    /// at the root or none is listed.
    pub base_paths: Vec<String>,
    /// Method -> the document's paths (parameters renamed `{p0}`, `{p1}`, ...)
    /// -> index into `operations`.
    routers: HashMap<String, matchit::Router<usize>>,
    /// Of the document's text, to tell a changed document from the same one.
    digest: [u8; 32],
}

impl fmt::Debug for ApiSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSpec")
            .field("source", &self.source)
            .field("version", &self.version)
            .field("operations", &self.operations.len())
            .field("base_paths", &self.base_paths)
            .finish()
    }
}

/// Two documents are the same if they came from the same file with the same text.
impl PartialEq for ApiSpec {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.digest == other.digest
    }
}

impl Eq for ApiSpec {}

impl ApiSpec {
    /// Reads and parses the document at `path` (named as `path` in errors).
    pub fn load(path: &Path) -> Result<ApiSpec, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read {
            file: file.clone(),
            error: e.to_string(),
        })?;
        ApiSpec::parse(&text, &file)
    }

    /// Parses a document (JSON if it starts with `{`, YAML otherwise).
    pub fn parse(text: &str, file: &str) -> Result<ApiSpec, SpecError> {
        let mut doc: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| SpecError::Syntax {
                file: file.to_owned(),
                format: "JSON",
                position: format!(":{}:{}", e.line(), e.column()),
                message: e.to_string(),
            })?
        } else {
            yaml_serde::from_str(text).map_err(|e| SpecError::Syntax {
                file: file.to_owned(),
                format: "YAML",
                position: e
                    .location()
                    .map(|l| format!(":{}:{}", l.line(), l.column()))
                    .unwrap_or_default(),
                message: e.to_string(),
            })?
        };
        let version = match doc.get("openapi") {
            Some(Value::String(v)) if v.starts_with("3.0") || v.starts_with("3.1") => v.clone(),
            Some(other) => {
                return Err(SpecError::Version {
                    file: file.to_owned(),
                    found: format!("openapi = {other}"),
                });
            }
            None => {
                return Err(SpecError::Version {
                    file: file.to_owned(),
                    found: match doc.get("swagger") {
                        Some(v) => format!("swagger = {v} (Swagger 2.0)"),
                        None => "no `openapi` field".to_owned(),
                    },
                });
            }
        };
        if version.starts_with("3.0") {
            lift_30(&mut doc);
        }
        let spec: oas3::Spec =
            serde_path_to_error::deserialize(&doc).map_err(|e| SpecError::Invalid {
                file: file.to_owned(),
                json_path: json_path(e.path()),
                message: e.inner().to_string(),
            })?;
        let digest = {
            use sha2::Digest as _;
            sha2::Sha256::digest(text.as_bytes()).into()
        };
        build(&spec, &doc, file, version, digest)
    }

    /// The operation `method route` is, if the document has it. `route` is a
    /// route template (`/v1/users/{id}`); the servers' base paths are tried
    /// longest first.
    pub fn operation(&self, method: &str, route: &str) -> Option<usize> {
        let router = self.routers.get(method)?;
        // Path parameters (`;{param}`) are not part of the OpenAPI path.
        let cleaned;
        let route = if route.contains(";{param}") {
            cleaned = route.replace(";{param}", "");
            cleaned.as_str()
        } else {
            route
        };
        if route.ends_with('…') {
            return None;
        }
        self.base_paths.iter().find_map(|base| {
            let rest = route.strip_prefix(base.as_str())?;
            let rest = match rest {
                "" => "/",
                r if r.starts_with('/') => r,
                _ => return None,
            };
            router.at(rest).ok().map(|m| *m.value)
        })
    }

    /// What a request to operation `op` showed that it does not allow:
    /// `content_type` (an essence), `content_length`, and whether it
    /// presented credentials; `limit` is `[http] max_content_length`.
    pub fn drift(
        &self,
        op: usize,
        content_type: Option<&str>,
        content_length: Option<u64>,
        credentials: bool,
        limit: Option<u64>,
    ) -> impl Iterator<Item = DriftKind> + use<> {
        let o = &self.operations[op];
        let bad_type = content_type.is_some_and(|t| !o.accepts(t));
        let over = match (content_length, body_limit(o, limit)) {
            (Some(n), Some(l)) => n > l,
            _ => false,
        };
        let unauthenticated = o.requires_credentials && !credentials;
        [
            (bad_type, DriftKind::ContentType),
            (over, DriftKind::ContentLength),
            (unauthenticated, DriftKind::Unauthenticated),
        ]
        .into_iter()
        .filter_map(|(hit, kind)| hit.then_some(kind))
    }
}

/// The body limit an operation is held to: the smaller of its schema's
/// `maxLength` and the configured limit.
pub fn body_limit(op: &Operation, configured: Option<u64>) -> Option<u64> {
    match (op.max_body, configured) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `$.paths["/users/{id}"].get` from serde_path_to_error's path.
fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key }
                if key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    && !key.is_empty() =>
            {
                out.push('.');
                out.push_str(key);
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&format!("[{}]", Value::String(key.clone())))
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// OpenAPI 3.0 schemas to their 3.1 form where the keyword's type changed:
/// `exclusiveMinimum: true` with `minimum: 5` is `exclusiveMinimum: 5`
/// (likewise for the maximum); `false` is dropped.
fn lift_30(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (exclusive, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(on)) = map.get(exclusive).cloned() {
                    map.remove(exclusive);
                    if on && let Some(b) = map.remove(bound) {
                        map.insert(exclusive.to_owned(), b);
                    }
                }
            }
            map.values_mut().for_each(lift_30);
        }
        Value::Array(items) => items.iter_mut().for_each(lift_30),
        _ => {}
    }
}

/// The base path of a server URL: `https://{host}/v1/` -> `/v1`, variables
/// replaced by their defaults.
fn base_path(server: &oas3::spec::Server) -> String {
    let mut url = server.url.clone();
    for (name, var) in &server.variables {
        url = url.replace(&format!("{{{name}}}"), &var.default);
    }
    let path = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("", |j| &url[i + 3 + j..]),
        None => url.as_str(),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/').to_owned()
}

/// A document path in the router's syntax: every segment with a parameter
/// is one parameter (matchit has no partial segments), braces elsewhere escaped.
fn router_path(path: &str) -> String {
    let mut out = String::new();
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if seg.contains('{') && seg.contains('}') {
            out.push_str(&format!("{{p{i}}}"));
        } else {
            out.push_str(&seg.replace('{', "{{").replace('}', "}}"));
        }
    }
    out
}

fn build(
    spec: &oas3::Spec,
    doc: &Value,
    file: &str,
    version: String,
    digest: [u8; 32],
) -> Result<ApiSpec, SpecError> {
    let invalid = |json_path: String, message: String| SpecError::Invalid {
        file: file.to_owned(),
        json_path,
        message,
    };
    let mut base_paths: Vec<String> = spec.servers.iter().map(base_path).collect();
    if base_paths.is_empty() {
        base_paths.push(String::new());
    }
    base_paths.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    base_paths.dedup();
    let root_security = requires_credentials(&spec.security);
    let mut operations = Vec::new();
    let mut routers: HashMap<String, matchit::Router<usize>> = HashMap::new();
    for (path, item) in spec.paths.iter().flatten() {
        let at = |rest: &str| format!("$.paths[{}]{rest}", Value::String(path.clone()));
        if !path.starts_with('/') {
            return Err(invalid(at(""), "a path must start with '/'".into()));
        }
        for (method, op) in item.methods() {
            let method = method.as_str().to_ascii_uppercase();
            let raw_op = doc
                .get("paths")
                .and_then(|p| p.get(path))
                .and_then(|i| i.get(method.to_ascii_lowercase()));
            // oas3 reads an absent `security` and `security: []` alike; the
            // first inherits the document's, the second removes it.
            let requires = match raw_op.and_then(|o| o.get("security")) {
                Some(_) => requires_credentials(&op.security),
                None => root_security,
            };
            let (accepts, max_body) = match &op.request_body {
                None => (Vec::new(), None),
                Some(body) => {
                    let body = body.resolve(spec).map_err(|e| {
                        invalid(
                            at(&format!(".{}.requestBody", method.to_ascii_lowercase())),
                            e.to_string(),
                        )
                    })?;
                    let mut accepts = Vec::new();
                    let mut limits = Vec::new();
                    for (media, m) in &body.content {
                        accepts.push(essence(media));
                        limits.push(m.schema.as_ref().and_then(|s| max_length(s, spec)));
                    }
                    let max_body = if limits.iter().all(Option::is_some) {
                        limits.into_iter().flatten().max()
                    } else {
                        None
                    };
                    (accepts, max_body)
                }
            };
            let index = operations.len();
            operations.push(Operation {
                method: method.clone(),
                path: path.clone(),
                operation_id: op.operation_id.clone(),
                accepts,
                max_body,
                requires_credentials: requires,
            });
            routers
                .entry(method.clone())
                .or_default()
                .insert(router_path(path), index)
                .map_err(|e| {
                    invalid(
                        at(""),
                        format!(
                            "{method} {path} cannot be routed ({e}): two paths of the same shape?"
                        ),
                    )
                })?;
        }
    }
    Ok(ApiSpec {
        source: file.to_owned(),
        version,
        operations,
        base_paths,
        routers,
        digest,
    })
}

/// `application/json; charset=utf-8` -> `application/json`.
pub fn essence(media: &str) -> String {
    media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn requires_credentials(reqs: &[oas3::spec::SecurityRequirement]) -> bool {
    !reqs.is_empty() && reqs.iter().all(|r| !r.0.is_empty())
}

fn max_length(schema: &oas3::spec::Schema, spec: &oas3::Spec) -> Option<u64> {
    match schema.resolve(spec).ok()? {
        oas3::spec::Schema::Object(o) => match *o {
            oas3::spec::ObjectOrReference::Object(s) => s.max_length,
            oas3::spec::ObjectOrReference::Ref { .. } => None,
        },
        oas3::spec::Schema::Boolean(_) => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
