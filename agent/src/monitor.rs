//! The daemon's consumer of the kernel's samples: HTTP request samples become
//! route statistics, `http tail` events and API-key tier pins; verdict samples
//! feed the top-talkers summary. Nothing here touches the kernel: pin changes
//! are returned for the caller to apply. Its settings (`[http]` redaction,
//! `[api_keys]`) follow the configuration the daemon publishes.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use tokio::sync::broadcast;
use tollgate_common::MAX_TIERS;
use tracing::warn;

use crate::{
    apikeys::{ApiKeyError, ApiKeys, PinChange, Pins, source_prefix},
    config::{ApiKeysConfig, HttpConfig, Published, Subscription, TierNames},
    datapath::samples::Sample,
    http::{
        self, HttpStats, InventoryData,
        inventory::{AuthScheme, Inventory, InventoryError, Observation},
        redact::Redactor,
        stats::{Limits, OTHER, Observation as StatsObservation},
    },
    openapi::{ApiSpec, DriftKind},
    spec::RouteTable,
};

/// Most pins (API-key clients) held at once.
pub const MAX_PINS: usize = 65_536;
/// Events buffered per `http tail` subscriber before it starts missing some.
pub const TAIL_BUFFER: usize = 1024;

/// One sampled request as `tollgate http tail` shows it: redacted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TailEvent {
    /// Milliseconds since the Unix epoch when the daemon read the sample.
    pub unix_ms: u64,
    pub source: IpAddr,
    pub dst_port: u16,
    pub tier: String,
    pub verdict: String,
    pub method: String,
    /// The target with query values redacted.
    pub target: String,
    pub route: String,
    /// The configured route (`[[route]]`) the request matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_route: Option<String>,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// Header names seen in the captured bytes (values never shown).
    pub headers: Vec<String>,
    /// Whether the whole request head fit in the sample.
    pub complete: bool,
    /// Requests this sample stands for (1-in-K sampling).
    pub scale: u32,
}

pub struct Monitor {
    stats: HttpStats,
    redactor: Redactor,
    /// The configured routes, to name the one a sampled request matched.
    routes: RouteTable,
    keys: ApiKeys,
    pins: Pins,
    /// Estimated requests per tier index since the last [`Monitor::take_requests`].
    requests: Vec<u64>,
    pub malformed: u64,
    pub undecodable: u64,
    tail: broadcast::Sender<TailEvent>,
    /// The configuration the daemon publishes with every committed change.
    config: Subscription,
    /// The configuration whose `[http]` and `[api_keys]` are in use.
    applied: Published,
    /// The API inventory (kept across restarts by the daemon).
    inventory: Inventory,
    /// `[http] openapi`, and a number that changes with it (endpoints cache
    /// the operation they matched under it).
    spec: Option<Arc<ApiSpec>>,
    spec_generation: u64,
    max_content_length: Option<u64>,
    /// Estimated requests to endpoints the document does not have, by route
    /// and method: the first `max_routes` routes, the rest as `other`.
    shadow: HashMap<String, Vec<(String, u64)>>,
    shadow_limit: usize,
    /// Estimated requests of documented operations showing drift, by kind.
    drift: [u64; 3],
}

impl Monitor {
    /// A monitor with the configuration in force on `config` (`[http]`'s
    /// table sizes and `[api_keys]`' TTL are read here only).
    pub fn new(mut config: Subscription) -> Result<Monitor, ApiKeyError> {
        let applied = config.borrow_and_update().clone();
        let (http, keys) = (&applied.config.http, &applied.config.api_keys);
        let (tail, _) = broadcast::channel(TAIL_BUFFER);
        let mut m = Monitor {
            stats: HttpStats::new(Limits {
                methods: 16,
                routes: http.max_routes,
                hosts: http.max_hosts,
            }),
            redactor: Redactor::default(),
            routes: RouteTable::new(&applied.config.routes, &http.ports),
            keys: ApiKeys::default(),
            pins: Pins::new(Duration::from_secs(keys.ttl_seconds.max(1)), MAX_PINS),
            requests: vec![0; MAX_TIERS as usize],
            malformed: 0,
            undecodable: 0,
            tail,
            config,
            applied: applied.clone(),
            inventory: Inventory::new(http.max_endpoints),
            spec: None,
            spec_generation: 0,
            max_content_length: None,
            shadow: HashMap::new(),
            shadow_limit: http.max_routes,
            drift: [0; 3],
        };
        m.reconfigure(&applied.config.http, &applied.config.api_keys)?;
        Ok(m)
    }

    /// The configuration in force, after applying its `[http]` and
    /// `[api_keys]` if a commit changed them since the last call (statistics
    /// and pins are kept). Called before each batch of samples, so a sample
    /// read after a commit is judged by the committed configuration.
    pub fn follow(&mut self) -> Published {
        if !self.config.has_changed().unwrap_or(false) {
            return self.config.borrow().clone();
        }
        let current = self.config.borrow_and_update().clone();
        self.routes = RouteTable::new(&current.config.routes, &current.config.http.ports);
        let (http, keys) = (&current.config.http, &current.config.api_keys);
        if *http != self.applied.config.http || *keys != self.applied.config.api_keys {
            match self.reconfigure(http, keys) {
                Ok(()) => self.applied = current.clone(),
                Err(e) => warn!(error = %e, generation = current.generation,
                    "the HTTP monitor kept its previous settings"),
            }
        }
        current
    }

    /// Applies `[http]`'s redaction and `[api_keys]`; on an error nothing
    /// changes.
    fn reconfigure(&mut self, http: &HttpConfig, keys: &ApiKeysConfig) -> Result<(), ApiKeyError> {
        let keys = ApiKeys::new(&keys.salt, &keys.keys)?;
        self.redactor = Redactor::new(&http.redact_headers);
        self.keys = keys;
        self.inventory.set_limit(http.max_endpoints);
        self.max_content_length = http.max_content_length;
        if self.spec != http.openapi {
            self.spec = http.openapi.clone();
            self.spec_generation += 1;
        }
        Ok(())
    }

    /// Replaces the inventory with one read back from the state directory;
    /// returns the endpoints kept and the rows dropped as not what the
    /// parser makes.
    pub(crate) fn restore_inventory(
        &mut self,
        bytes: &[u8],
    ) -> Result<(usize, usize), InventoryError> {
        let limit = self.applied.config.http.max_endpoints;
        self.inventory = Inventory::from_json(bytes, limit)?;
        Ok((self.inventory.len(), self.inventory.dropped))
    }

    /// The inventory's persisted form, if it changed since the last call
    /// (`force`: whether or not).
    pub(crate) fn inventory_json(&mut self, force: bool) -> Option<Vec<u8>> {
        (force || self.inventory.is_dirty()).then(|| self.inventory.save_json())
    }

    /// `http inventory`: endpoints last seen at or after `since` (Unix
    /// seconds), compared with `[http] openapi` when one is configured.
    pub(crate) fn inventory(&self, since: Option<u64>) -> InventoryData {
        let mut data = InventoryData {
            now: unix_now(),
            since,
            max_endpoints: self.applied.config.http.max_endpoints,
            kept: self.inventory.len(),
            endpoints: self.inventory.rows(since),
            spec: None,
            orphans: Vec::new(),
            drift: Vec::new(),
        };
        if let Some(spec) = &self.spec {
            data.compare(spec, self.max_content_length);
        }
        data
    }

    /// Estimated requests to endpoints `[http] openapi` does not document,
    /// by (method, route).
    pub(crate) fn shadow_requests(&self) -> Vec<((String, String), u64)> {
        self.shadow
            .iter()
            .flat_map(|(route, v)| v.iter().map(|(m, n)| ((m.clone(), route.clone()), *n)))
            .collect()
    }

    /// Estimated drifting requests by kind (`None` without `[http] openapi`).
    pub(crate) fn drift_requests(&self) -> Option<Vec<(DriftKind, u64)>> {
        self.spec.as_ref().map(|_| {
            DriftKind::ALL
                .iter()
                .map(|k| (*k, self.drift[*k as usize]))
                .collect()
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TailEvent> {
        self.tail.subscribe()
    }

    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// Takes the per-tier request estimates accumulated since the last call.
    pub fn take_requests(&mut self) -> Vec<u64> {
        std::mem::replace(&mut self.requests, vec![0; MAX_TIERS as usize])
    }

    /// Digests one HTTP sample. Returns the kernel pin change to make, if the
    /// request presented a known API key, and any pin evicted to make room.
    pub fn ingest_http(
        &mut self,
        sample: &Sample<'_>,
        tiers: &TierNames,
        now: Instant,
    ) -> Option<(PinChange, Option<IpNet>)> {
        let tier = tiers.name(sample.header.tier);
        let verdict = sample.verdict().name();
        let scale = sample.header.scale.max(1) as u64;
        if let Some(r) = self.requests.get_mut(sample.header.tier as usize) {
            *r += scale;
        }
        let (req, presented) = match http::parse_request(sample.payload, &self.redactor) {
            Ok(parsed) => parsed,
            Err(_) => {
                self.malformed += scale;
                return None;
            }
        };
        let host = req
            .host
            .as_deref()
            .map(|h| h.split(':').next().unwrap_or(h));
        let config_route = self
            .routes
            .lookup(sample.header.dst_port, host, sample.payload);
        self.stats.record(
            StatsObservation {
                method: &req.method,
                route: &req.route,
                host: req.host.as_deref(),
                tier: &tier,
                verdict,
                config_route,
            },
            scale,
        );
        let (endpoint, other) = self.inventory.record(&Observation {
            method: &req.method,
            host: req.host.as_deref(),
            route: &req.route,
            source: sample.source(),
            scale,
            now: unix_now(),
            content_type: req.content_type.as_deref(),
            content_length: req.content_length,
            auth: req.auth,
        });
        if let Some(spec) = &self.spec {
            let operation = match endpoint.matched {
                Some((generation, op)) if generation == self.spec_generation && !other => op,
                _ => {
                    let op = spec.operation(&req.method, &req.route);
                    endpoint.matched = Some((self.spec_generation, op));
                    op
                }
            };
            match operation {
                None => count_shadow(
                    &mut self.shadow,
                    self.shadow_limit,
                    &req.method,
                    &req.route,
                    scale,
                ),
                Some(op) => {
                    for kind in spec.drift(
                        op,
                        req.content_type.as_deref(),
                        req.content_length,
                        req.auth != AuthScheme::None,
                        self.max_content_length,
                    ) {
                        self.drift[kind as usize] += scale;
                    }
                }
            }
        }
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(TailEvent {
                unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                source: sample.source(),
                dst_port: sample.header.dst_port,
                tier: tier.clone(),
                verdict: verdict.to_owned(),
                method: req.method.clone(),
                target: req.target.clone(),
                route: req.route.clone(),
                config_route: config_route.map(str::to_owned),
                host: req.host.clone(),
                user_agent: req.user_agent.clone(),
                headers: req.header_names.clone(),
                complete: req.complete,
                scale: sample.header.scale,
            });
        }
        // A valid key earns its tier whatever the verdict (a client over the
        // default tier's limits is exactly who needs it), except under a deny
        // rule, which a key never overrides.
        if sample.verdict() == tollgate_common::Verdict::Denied {
            return None;
        }
        let key_tier = presented.and_then(|p| self.keys.tier_for(p.0))?;
        let net = source_prefix(sample.source(), tiers.prefix_of(key_tier));
        let key_tier = key_tier.to_owned();
        Some(self.pins.observe(now, net, &key_tier))
    }

    /// Pins that expired by `now` (the caller restores their rules).
    pub fn expire_pins(&mut self, now: Instant) -> Vec<IpNet> {
        self.pins.expire(now)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts shadow requests for the metric: routes admitted up to `limit`,
/// the rest under `other`, so the label set stays bounded.
fn count_shadow(
    shadow: &mut HashMap<String, Vec<(String, u64)>>,
    limit: usize,
    method: &str,
    route: &str,
    scale: u64,
) {
    let route = if shadow.contains_key(route) || shadow.len() < limit {
        route
    } else {
        OTHER
    };
    let methods = match shadow.get_mut(route) {
        Some(m) => m,
        None => shadow.entry(route.to_owned()).or_default(),
    };
    match methods.iter().position(|(m, _)| m == method) {
        Some(i) => methods[i].1 += scale,
        None if methods.len() < 16 => methods.push((method.to_owned(), scale)),
        None => match methods.iter().position(|(m, _)| m == OTHER) {
            Some(i) => methods[i].1 += scale,
            None => methods.push((OTHER.to_owned(), scale)),
        },
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::{
        apikeys::hash_key,
        config::{Effective, Publisher, embedded_default},
    };
    use tollgate_common::{SAMPLE_HTTP, SampleHeader};

    /// A configuration with these `[http]` and `[api_keys]`, as a commit
    /// publishes it.
    fn effective(generation: u64, http: HttpConfig, keys: ApiKeysConfig) -> Published {
        let mut config = embedded_default();
        config.http = http;
        config.api_keys = keys;
        Arc::new(Effective::new(generation, config, Default::default()))
    }

    fn gold_key() -> ApiKeysConfig {
        ApiKeysConfig {
            salt: "s".into(),
            ttl_seconds: 60,
            keys: vec![(hash_key("s", b"gold-key"), "gold".into())],
        }
    }

    fn sample(payload: &[u8]) -> Vec<u8> {
        let h = SampleHeader {
            kind: SAMPLE_HTTP,
            family: 4,
            src: [10, 9, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            tier: 0,
            captured: payload.len() as u16,
            scale: 2,
            dst_port: 80,
            ..Default::default()
        };
        let mut v = vec![0u8; std::mem::size_of::<SampleHeader>()];
        // SAFETY: v holds a whole header.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<SampleHeader>(), h) };
        v.extend_from_slice(payload);
        v
    }

    fn names() -> TierNames {
        TierNames {
            names: vec![Some(("default".into(), 64)), Some(("gold".into(), 64))],
        }
    }

    #[test]
    fn requests_are_counted_tailed_redacted_and_keys_pin() {
        let publisher = Publisher::new(effective(0, HttpConfig::default(), gold_key()));
        let mut m = Monitor::new(publisher.subscribe()).unwrap();
        let mut tail = m.subscribe();
        let rec =
            sample(b"GET /users/12?token=abc HTTP/1.1\r\nHost: api\r\nX-Api-Key: gold-key\r\n\r\n");
        let s = Sample::decode(&rec).unwrap();
        let change = m.ingest_http(&s, &names(), Instant::now());
        assert!(
            matches!(change, Some((PinChange::Install { ref tier, .. }, None)) if tier == "gold")
        );
        let ev = tail.try_recv().unwrap();
        assert_eq!(ev.route, "/users/{id}");
        assert_eq!(ev.target, "/users/{id}?token=<redacted>");
        let json = serde_json::to_string(&ev).unwrap();
        assert!(
            !json.contains("gold-key") && !json.contains("abc"),
            "{json}"
        );
        assert_eq!(
            m.stats().top(http::stats::Group::Route, 5)[0],
            ("/users/{id}".into(), 2)
        );
        assert_eq!(m.take_requests()[0], 2);

        let bad = sample(b"GET \x00\x01\x02 HTTP/1.1\r\n");
        assert!(
            m.ingest_http(&Sample::decode(&bad).unwrap(), &names(), Instant::now())
                .is_none()
        );
        assert_eq!(m.malformed, 2);
    }

    #[test]
    fn the_inventory_counts_shadow_and_drift_against_the_published_document() {
        let spec = crate::openapi::ApiSpec::parse(
            "openapi: 3.1.0\ninfo: {title: t, version: '1'}\nsecurity: [{k: []}]\npaths:\n  /users/{uid}:\n    put:\n      requestBody: {content: {application/json: {}}}\n      responses: {'200': {description: ok}}\n",
            "t.yaml",
        )
        .unwrap();
        let http = HttpConfig {
            openapi: Some(Arc::new(spec)),
            max_content_length: Some(100),
            ..HttpConfig::default()
        };
        let publisher = Publisher::new(effective(0, HttpConfig::default(), gold_key()));
        let mut m = Monitor::new(publisher.subscribe()).unwrap();
        let ingest = |m: &mut Monitor, head: &[u8]| {
            m.follow();
            m.ingest_http(
                &Sample::decode(&sample(head)).unwrap(),
                &names(),
                Instant::now(),
            );
        };
        let drifting = b"PUT /users/42 HTTP/1.1\r\nHost: api\r\nContent-Type: text/xml\r\nContent-Length: 500\r\n\r\n";
        ingest(&mut m, drifting);
        assert_eq!(m.drift_requests(), None, "no document yet");
        publisher.send_replace(effective(1, http, gold_key()));
        ingest(&mut m, drifting);
        ingest(&mut m, b"GET /users/42 HTTP/1.1\r\nHost: api\r\n\r\n");
        ingest(
            &mut m,
            b"PUT /users/7 HTTP/1.1\r\nHost: api\r\nX-Api-Key: k\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(
            m.drift_requests().unwrap(),
            [
                (DriftKind::ContentType, 2),
                (DriftKind::ContentLength, 2),
                (DriftKind::Unauthenticated, 2)
            ],
            "the sample before the document is not judged; scale 2"
        );
        assert_eq!(
            m.shadow_requests(),
            [(("GET".to_owned(), "/users/{id}".to_owned()), 2)]
        );
        let inv = m.inventory(None);
        assert_eq!(inv.endpoints.len(), 2);
        let s = inv.spec.as_ref().unwrap();
        assert_eq!((s.documented, s.shadow, s.orphan, s.drift), (1, 1, 0, 3));
        // Persisted and restored: the same rows.
        let bytes = m.inventory_json(false).unwrap();
        assert!(m.inventory_json(false).is_none(), "unchanged since");
        m.restore_inventory(&bytes).unwrap();
        assert_eq!(m.inventory(None).endpoints, inv.endpoints);
    }

    #[test]
    fn published_keys_and_redaction_apply_from_the_next_batch_on() {
        let publisher = Publisher::new(effective(0, HttpConfig::default(), gold_key()));
        let mut m = Monitor::new(publisher.subscribe()).unwrap();
        let mut tail = m.subscribe();
        let rec = sample(
            b"GET /a HTTP/1.1\r\nHost: api\r\nUser-Agent: curl\r\nX-Api-Key: silver-key\r\n\r\n",
        );
        // One batch: follow the channel, then ingest. Returns the generation
        // in force, the pin change and the user agent `http tail` shows.
        let mut batch = || {
            let in_force = m.follow();
            let change = m.ingest_http(&Sample::decode(&rec).unwrap(), &names(), Instant::now());
            let ua = tail.try_recv().unwrap().user_agent;
            (in_force.generation, change.map(|(c, _)| c), ua)
        };
        let (generation, change, ua) = batch();
        assert_eq!((generation, ua.as_deref()), (0, Some("curl")));
        assert!(change.is_none(), "silver-key is not configured yet");

        // A commit that changes neither [http] nor [api_keys] (a tier set)
        // keeps the settings; one that does replaces them.
        publisher.send_replace(effective(1, HttpConfig::default(), gold_key()));
        let (generation, change, ua) = batch();
        assert_eq!((generation, ua.as_deref()), (1, Some("curl")));
        assert!(change.is_none());
        let keys = ApiKeysConfig {
            keys: vec![(hash_key("s", b"silver-key"), "gold".into())],
            ..gold_key()
        };
        let redacting = HttpConfig {
            redact_headers: vec!["User-Agent".into()],
            ..HttpConfig::default()
        };
        publisher.send_replace(effective(2, redacting, keys));
        let (generation, change, ua) = batch();
        assert_eq!((generation, ua), (2, None), "User-Agent is redacted now");
        assert!(matches!(change, Some(PinChange::Install { ref tier, .. }) if tier == "gold"));

        // Keys that are not sha256 hashes leave the previous settings in force.
        let bad = ApiKeysConfig {
            keys: vec![("abc".into(), "gold".into())],
            ..gold_key()
        };
        publisher.send_replace(effective(3, HttpConfig::default(), bad));
        let (generation, change, ua) = batch();
        assert_eq!((generation, ua), (3, None), "still redacted");
        assert!(
            matches!(change, Some(PinChange::Refreshed)),
            "silver-key still known"
        );
        assert_eq!(m.stats().top(http::stats::Group::Route, 5)[0].1, 8);
    }
}
