//! The daemon's consumer of the kernel's samples: HTTP request samples become
//! route statistics, `http tail` events and API-key tier pins; verdict samples
//! feed the top-talkers summary. Nothing here touches the kernel: pin changes
//! are returned for the caller to apply.

use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use tokio::sync::broadcast;
use tollgate_common::MAX_TIERS;

use crate::{
    apikeys::{ApiKeyError, ApiKeys, PinChange, Pins, source_prefix},
    config::{ApiKeysConfig, HttpConfig},
    datapath::samples::Sample,
    http::{self, HttpStats, redact::Redactor, stats::Limits},
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
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// Header names seen in the captured bytes (values never shown).
    pub headers: Vec<String>,
    /// Whether the whole request head fit in the sample.
    pub complete: bool,
    /// Requests this sample stands for (1-in-K sampling).
    pub scale: u32,
}

/// Tier names and IPv6 prefixes by index, as the kernel holds them now.
#[derive(Clone, Debug, Default)]
pub struct TierNames {
    pub names: Vec<Option<(String, u8)>>,
}

impl TierNames {
    pub fn name(&self, index: u32) -> String {
        match self.names.get(index as usize) {
            Some(Some((n, _))) => n.clone(),
            _ => format!("#{index}"),
        }
    }

    pub fn prefix_of(&self, name: &str) -> u8 {
        self.names
            .iter()
            .flatten()
            .find(|(n, _)| n == name)
            .map_or(64, |(_, p)| *p)
    }
}

pub struct Monitor {
    stats: HttpStats,
    redactor: Redactor,
    keys: ApiKeys,
    pins: Pins,
    /// Estimated requests per tier index since the last [`Monitor::take_requests`].
    requests: Vec<u64>,
    pub malformed: u64,
    pub undecodable: u64,
    tail: broadcast::Sender<TailEvent>,
}

impl Monitor {
    pub fn new(http: &HttpConfig, keys: &ApiKeysConfig) -> Result<Monitor, ApiKeyError> {
        let (tail, _) = broadcast::channel(TAIL_BUFFER);
        let mut m = Monitor {
            stats: HttpStats::new(Limits {
                methods: 16,
                routes: http.max_routes,
                hosts: http.max_hosts,
            }),
            redactor: Redactor::default(),
            keys: ApiKeys::default(),
            pins: Pins::new(Duration::from_secs(keys.ttl_seconds.max(1)), MAX_PINS),
            requests: vec![0; MAX_TIERS as usize],
            malformed: 0,
            undecodable: 0,
            tail,
        };
        m.reconfigure(http, keys)?;
        Ok(m)
    }

    /// Applies a reloaded `[http]`/`[api_keys]` (statistics are kept).
    pub fn reconfigure(
        &mut self,
        http: &HttpConfig,
        keys: &ApiKeysConfig,
    ) -> Result<(), ApiKeyError> {
        self.redactor = Redactor::new(&http.redact_headers);
        self.keys = ApiKeys::new(&keys.salt, &keys.keys)?;
        Ok(())
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
        self.stats.record(
            &req.method,
            &req.route,
            req.host.as_deref(),
            &tier,
            verdict,
            scale,
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikeys::hash_key;
    use tollgate_common::{SAMPLE_HTTP, SampleHeader};

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
        let keys = ApiKeysConfig {
            salt: "s".into(),
            ttl_seconds: 60,
            keys: vec![(hash_key("s", b"gold-key"), "gold".into())],
        };
        let mut m = Monitor::new(&HttpConfig::default(), &keys).unwrap();
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
}
