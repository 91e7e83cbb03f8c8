//! Request counts by method, route template, host, tier and verdict, with
//! bounded cardinality: each dimension admits its first `limit` distinct values
//! and folds the rest into `other`, so neither memory nor metric labels grow
//! with what clients send. Label sets stay stable once admitted, which keeps
//! exported counters monotonic.

use std::collections::{HashMap, HashSet};

pub(crate) const OTHER: &str = "other";

/// Per-dimension distinct-value limits.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub methods: usize,
    pub routes: usize,
    pub hosts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            methods: 16,
            routes: 200,
            hosts: 50,
        }
    }
}

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct HttpKey {
    pub method: String,
    pub route: String,
    pub host: String,
    pub tier: String,
    pub verdict: String,
    /// The configured route (`[[route]]`) the request matched, `-` for none
    /// (not a metric label: the routes' own counters are).
    pub config_route: String,
}

/// One sampled request's dimensions.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub host: Option<&'a str>,
    pub tier: &'a str,
    pub verdict: &'a str,
    pub config_route: Option<&'a str>,
}

#[derive(Default)]
struct Dimension {
    admitted: HashSet<String>,
}

impl Dimension {
    fn admit(&mut self, value: &str, limit: usize) -> String {
        if self.admitted.contains(value) {
            return value.to_string();
        }
        if self.admitted.len() < limit {
            self.admitted.insert(value.to_string());
            return value.to_string();
        }
        OTHER.to_string()
    }
}

/// The aggregate. Counts are estimated requests (samples × their 1-in-K scale).
#[derive(Default)]
pub struct HttpStats {
    limits: Limits,
    methods: Dimension,
    routes: Dimension,
    hosts: Dimension,
    counts: HashMap<HttpKey, u64>,
    /// Samples that could not be parsed as an HTTP request (counted, never fatal).
    pub malformed: u64,
}

impl HttpStats {
    pub fn new(limits: Limits) -> HttpStats {
        HttpStats {
            limits,
            ..Default::default()
        }
    }

    pub fn record(&mut self, o: Observation<'_>, scale: u64) {
        let key = HttpKey {
            method: self.methods.admit(o.method, self.limits.methods),
            route: self.routes.admit(o.route, self.limits.routes),
            host: self.hosts.admit(o.host.unwrap_or("-"), self.limits.hosts),
            tier: o.tier.to_string(),
            verdict: o.verdict.to_string(),
            // Bounded by the configuration (at most MAX_ROUTES names).
            config_route: o.config_route.unwrap_or("-").to_string(),
        };
        *self.counts.entry(key).or_default() += scale;
    }

    pub fn counts(&self) -> impl Iterator<Item = (&HttpKey, u64)> {
        self.counts.iter().map(|(k, v)| (k, *v))
    }

    /// Totals grouped by one dimension, heaviest first.
    pub fn top(&self, by: Group, n: usize) -> Vec<(String, u64)> {
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for (k, v) in &self.counts {
            let label = match by {
                Group::Route => k.route.as_str(),
                Group::Host => k.host.as_str(),
                Group::Method => k.method.as_str(),
                Group::Tier => k.tier.as_str(),
                Group::ConfigRoute => k.config_route.as_str(),
            };
            *totals.entry(label).or_default() += v;
        }
        let mut rows: Vec<(String, u64)> = totals
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rows.truncate(n);
        rows
    }

    pub fn distinct_keys(&self) -> usize {
        self.counts.len()
    }
}

/// What `tollgate http top --by` groups on.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// The route template (`/users/{id}`).
    Route,
    Host,
    Method,
    Tier,
    /// The configured route (`[[route]]`, `tollgate route add`) the request
    /// matched, found as the kernel finds it (longest byte prefix of the
    /// request line on its port); `-`: none.
    #[serde(rename = "config-route")]
    #[value(name = "config-route")]
    ConfigRoute,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinality_is_bounded_and_overflow_folds_into_other() {
        let mut s = HttpStats::new(Limits {
            methods: 4,
            routes: 10,
            hosts: 2,
        });
        for i in 0..10_000 {
            s.record(
                Observation {
                    method: "GET",
                    route: &format!("/r{i}"),
                    host: Some(&format!("h{i}")),
                    tier: "default",
                    verdict: "passed",
                    config_route: None,
                },
                1,
            );
        }
        let routes = s.top(Group::Route, 100);
        assert_eq!(routes.len(), 11, "10 admitted + other");
        assert_eq!(routes[0], (OTHER.to_string(), 9990));
        assert!(s.distinct_keys() <= 11 * 3);
        let total: u64 = s.counts().map(|(_, v)| v).sum();
        assert_eq!(total, 10_000);
    }
}
