//! `http inventory`'s answer, and its comparison with an OpenAPI document:
//! each observed endpoint is **documented** or **shadow** (seen, not in the
//! document), each documented operation never seen is an **orphan**, and a
//! documented endpoint's requests are checked for **drift** (a content type
//! the operation does not accept, a Content-Length over its limit, requests
//! without credentials to an operation that requires them).
//!
//! The comparison reads only the inventory's rows, so the daemon (with
//! `[http] openapi`) and the CLI (`--openapi FILE`) make the same one.

use serde::{Deserialize, Serialize};

use super::inventory::{EndpointRow, OTHER};
use crate::openapi::{ApiSpec, DriftKind, body_limit};

/// `http inventory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryData {
    /// When the daemon answered (Unix seconds).
    pub now: u64,
    /// Only endpoints last seen at or after this (Unix seconds).
    pub since: Option<u64>,
    /// The bound (`[http] max_endpoints`) and how many are kept.
    pub max_endpoints: usize,
    pub kept: usize,
    pub endpoints: Vec<EndpointRow>,
    /// Set by a comparison with an OpenAPI document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<Orphan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftRow>,
}

/// The document compared with, and the counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecSummary {
    pub source: String,
    pub version: String,
    pub operations: usize,
    pub documented: usize,
    pub shadow: usize,
    pub orphan: usize,
    pub drift: usize,
    /// `[http] max_content_length`, when the daemon compared.
    pub max_content_length: Option<u64>,
}

/// A documented operation no sampled request reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub method: String,
    pub path: String,
    pub operation_id: Option<String>,
}

/// Requests of a documented endpoint that the operation does not allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRow {
    /// `content_type`, `content_length` or `unauthenticated`.
    pub kind: String,
    pub method: String,
    pub host: String,
    pub route: String,
    pub operation: String,
    /// Estimated requests, when the inventory can tell (not for a length:
    /// it keeps only the largest).
    pub requests: Option<u64>,
    pub detail: String,
}

pub(crate) const DOCUMENTED: &str = "documented";
pub(crate) const SHADOW: &str = "shadow";

impl InventoryData {
    /// Compares the endpoints with `spec` (`limit`: the configured
    /// Content-Length limit), replacing any earlier comparison.
    pub fn compare(&mut self, spec: &ApiSpec, limit: Option<u64>) {
        let mut seen = vec![false; spec.operations.len()];
        self.drift.clear();
        let (mut documented, mut shadow) = (0, 0);
        for e in &mut self.endpoints {
            e.status = None;
            e.operation = None;
            if e.route == OTHER {
                continue;
            }
            let Some(i) = spec.operation(&e.method, &e.route) else {
                e.status = Some(SHADOW.to_owned());
                shadow += 1;
                continue;
            };
            seen[i] = true;
            documented += 1;
            let op = &spec.operations[i];
            e.status = Some(DOCUMENTED.to_owned());
            e.operation = Some(op.name());
            let row = |kind: DriftKind, requests, detail| DriftRow {
                kind: kind.name().to_owned(),
                method: e.method.clone(),
                host: e.host.clone(),
                route: e.route.clone(),
                operation: op.name(),
                requests,
                detail,
            };
            let documents = if op.accepts.is_empty() {
                "the operation documents no request body".to_owned()
            } else {
                format!("it accepts {}", op.accepts.join(", "))
            };
            for (t, n) in &e.content_types {
                if t != "other" && !op.accepts(t) {
                    self.drift.push(row(
                        DriftKind::ContentType,
                        Some(*n),
                        format!("Content-Type {t}: {documents}"),
                    ));
                }
            }
            if let (Some(largest), Some(l)) = (e.max_content_length, body_limit(op, limit))
                && largest > l
            {
                self.drift.push(row(
                    DriftKind::ContentLength,
                    None,
                    format!("largest Content-Length {largest} is over the limit of {l} bytes"),
                ));
            }
            let bare = e.auth.get("none").copied().unwrap_or(0);
            if op.requires_credentials && bare > 0 {
                self.drift.push(row(
                    DriftKind::Unauthenticated,
                    Some(bare),
                    "requests without credentials; the operation's security requires them"
                        .to_owned(),
                ));
            }
        }
        self.orphans = spec
            .operations
            .iter()
            .zip(&seen)
            .filter(|(_, s)| !**s)
            .map(|(op, _)| Orphan {
                method: op.method.clone(),
                path: op.path.clone(),
                operation_id: op.operation_id.clone(),
            })
            .collect();
        self.orphans
            .sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
        self.drift.sort_by(|a, b| {
            (&a.route, &a.method, &a.host, &a.kind).cmp(&(&b.route, &b.method, &b.host, &b.kind))
        });
        self.spec = Some(SpecSummary {
            source: spec.source.clone(),
            version: spec.version.clone(),
            operations: spec.operations.len(),
            documented,
            shadow,
            orphan: self.orphans.len(),
            drift: self.drift.len(),
            max_content_length: limit,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::inventory::OTHER;

    fn spec() -> ApiSpec {
        ApiSpec::parse(crate::openapi::tests::SPEC_31, "shop.yaml").unwrap()
    }

    fn row(method: &str, route: &str, requests: u64) -> EndpointRow {
        EndpointRow {
            method: method.into(),
            host: "api.test".into(),
            route: route.into(),
            first_seen: 1,
            last_seen: 2,
            requests,
            sources: 1,
            content_types: Default::default(),
            max_content_length: None,
            auth: [("bearer".to_owned(), requests)].into(),
            status: None,
            operation: None,
        }
    }

    #[test]
    fn comparison_reports_documented_shadow_orphan_and_drift() {
        let s = spec();
        let mut put = row("PUT", "/v1/users/{id}", 5);
        put.content_types = [("application/json".into(), 3), ("text/xml".into(), 2)].into();
        put.max_content_length = Some(2000);
        put.auth = [("none".into(), 1), ("bearer".into(), 4)].into();
        let mut data = InventoryData {
            now: 3,
            since: None,
            max_endpoints: 10,
            kept: 4,
            endpoints: vec![
                row("GET", "/v1/users/{id}", 9),
                put,
                row("GET", "/v1/admin/export", 2),
                row(OTHER, OTHER, 1),
            ],
            spec: None,
            orphans: vec![],
            drift: vec![],
        };
        data.compare(&s, None);
        let status: Vec<_> = data.endpoints.iter().map(|e| e.status.as_deref()).collect();
        assert_eq!(
            status,
            [Some("documented"), Some("documented"), Some("shadow"), None]
        );
        assert_eq!(
            data.endpoints[0].operation.as_deref(),
            Some("GET /users/{userId}")
        );
        let orphans: Vec<_> = data
            .orphans
            .iter()
            .map(|o| format!("{} {}", o.method, o.path))
            .collect();
        assert_eq!(
            orphans,
            [
                "GET /files/{name}.json",
                "GET /health",
                "POST /orders",
                "GET /users/me"
            ]
        );
        let drift: Vec<_> = data
            .drift
            .iter()
            .map(|d| (d.kind.as_str(), d.requests))
            .collect();
        assert_eq!(
            drift,
            [
                ("content_length", None),
                ("content_type", Some(2)),
                ("unauthenticated", Some(1))
            ]
        );
        let summary = data.spec.as_ref().unwrap();
        assert_eq!(
            (
                summary.documented,
                summary.shadow,
                summary.orphan,
                summary.drift
            ),
            (2, 1, 4, 3)
        );
        // A second comparison replaces the first.
        data.compare(&s, Some(10));
        assert_eq!(data.drift.len(), 3);
    }
}
