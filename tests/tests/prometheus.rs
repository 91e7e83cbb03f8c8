//! End to end with a real Prometheus server: the shipped scrape config
//! (`deploy/prometheus/prometheus.yml`, pointed at the test's daemon, 1 s
//! scrapes) and alert rules load, and every PromQL expression of the shipped
//! Grafana dashboard (`deploy/grafana/tollgate-dashboard.json`) parses and
//! returns series whose values fit the traffic sent.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tollgate_tests::{
    daemon::{Env, free_port},
    httpd::{Client, Server},
    privileged,
    prometheus::Prometheus,
    redis::{self, RedisServer},
    traffic::send_udp_paced_until,
};

const HTTP_PORT: u16 = 8080;
/// The tier's per-source packet limit and burst.
const LIMIT: f64 = 1000.0;
const BURST: f64 = 100.0;
/// The flood's offered rate (3× the limit: both passes and drops).
const FLOOD_PPS: u64 = 3000;
const FLOOD_FOR: Duration = Duration::from_secs(20);

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// The shipped prometheus.yml, scraping `target` every second and loading the
/// shipped alert rules by absolute path.
fn prometheus_config(target: &str) -> String {
    let shipped = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    let rules = deploy("prometheus/alerts.yml").canonicalize().unwrap();
    let mut config = shipped.clone();
    for (from, to) in [
        ("\"127.0.0.1:9810\"", format!("\"{target}\"")),
        ("scrape_interval: 5s", "scrape_interval: 1s".to_owned()),
        (
            "evaluation_interval: 15s",
            "evaluation_interval: 1s".to_owned(),
        ),
        ("- alerts.yml", format!("- {}", rules.display())),
    ] {
        assert!(
            config.contains(from),
            "the shipped prometheus.yml no longer has {from:?}; update this test:\n{shipped}"
        );
        config = config.replace(from, &to);
    }
    config
}

/// Every `expr` in the dashboard, in order.
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(deploy("grafana/tollgate-dashboard.json")).unwrap();
    let mut out = Vec::new();
    walk(&serde_json::from_str(&text).unwrap(), &mut out);
    out
}

/// Substitutes Grafana's variables the way Grafana would with `$instance`
/// set to "All" (a regex alternation of its regex-escaped values).
fn substitute(expr: &str, instance: &str) -> String {
    let escaped = instance.replace('.', r"\\.");
    let out = expr
        .replace("${instance}", &format!("({escaped})"))
        .replace("$instance", &format!("({escaped})"))
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1s")
        .replace("$__range", "5m");
    assert!(
        !out.contains('$'),
        "unhandled Grafana variable in {expr:?}: teach substitute()"
    );
    out
}

/// A vector result as (labels, value).
fn series(data: &Value, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    assert_eq!(data["resultType"], "vector", "{expr}: {data}");
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            (labels, v)
        })
        .collect()
}

/// Sets the flag when dropped: the traffic threads stop even if the test
/// panics.
struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn every_dashboard_expression_returns_plausible_series_from_a_real_prometheus() {
    let name = "every_dashboard_expression_returns_plausible_series_from_a_real_prometheus";
    if !privileged(name) || !tollgate_tests::prometheus::required(name) || !redis::required(name) {
        return;
    }
    let redis = RedisServer::start().unwrap();
    let env = Env::new();
    let metrics_port = free_port();
    env.write_config(&format!(
        r#"metrics_address = "127.0.0.1:{metrics_port}"
default_tier = "default"

[http]
ports = [{HTTP_PORT}]
sample_every = 1
budget = "100000/s"
verdict_sample_every = 1
top_sources_metric = 5

[cluster]
redis = "{redis}"
node_id = "prom"

[[tier]]
name = "default"
packets = "{LIMIT}/s"
packets_burst = {BURST}
"#,
        redis = redis.url(),
    ));
    let _daemon = env.start_with(&[]);
    let instance = format!("127.0.0.1:{metrics_port}");
    let prom = Prometheus::start(&prometheus_config(&instance)).unwrap();

    // Prometheus hands new targets to its scrapers in batches (every 5 s):
    // wait (bounded) for the first scrape before the traffic starts, so the
    // whole of it is scraped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !prom
        .query(r#"up{job="tollgate"} == 1"#, None)
        .is_ok_and(|d| !d["result"].as_array().unwrap().is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the daemon within 20 s; its log:\n{}\ntargets: {:?}",
            prom.log(),
            prom.api("/api/v1/targets")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    // HTTP from the peer's address, 10 requests/s on one keep-alive
    // connection: well within the limit, spread over many scrapes.
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, HTTP_PORT))).unwrap();
    let http_ok = Arc::new(AtomicU64::new(0));
    let http = {
        let (addr, stop, ok) = (server.addr, stop.clone(), http_ok.clone());
        env.ns.run(move || -> anyhow::Result<()> {
            let mut c = Client::connect(addr, Duration::from_secs(3))?;
            for i in 0..300 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                c.request(&format!("GET /items/{i} HTTP/1.1\r\nHost: shop.test"))?;
                ok.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })
    };
    // A UDP flood at 3× the limit from a second address: passes and drops.
    let flooder = Ipv4Addr::new(
        env.veth.peer_ip.octets()[0],
        env.veth.peer_ip.octets()[1],
        env.veth.peer_ip.octets()[2],
        200,
    );
    env.add_peer_address(flooder);
    let flood = {
        let (dst, stop) = (SocketAddr::from((env.veth.host_ip, 9)), stop.clone());
        env.ns.run(move || {
            let s = UdpSocket::bind((flooder, 0)).unwrap();
            send_udp_paced_until(&s, dst, FLOOD_PPS, FLOOD_FOR, &stop)
        })
    };
    let started = Instant::now();

    // Wait (bounded) until Prometheus has scraped the traffic for a while:
    // drops and HTTP requests show, and 6 s (6 scrapes) have passed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dropping = prom
            .query(
                "sum(tollgate_tier_dropped_packets_per_second) > 0 and sum(rate(tollgate_http_requests_total[1m])) > 0",
                None,
            )
            .map(|d| !d["result"].as_array().unwrap().is_empty())
            .unwrap_or(false);
        if dropping && started.elapsed() > Duration::from_secs(6) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not see the traffic within 15 s; its log:\n{}\ntargets: {:?}",
            prom.log(),
            prom.api("/api/v1/targets")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // One evaluation time for every query, while the traffic still runs.
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let elapsed = started.elapsed().as_secs_f64();

    // The dashboard's $instance variable: label_values(tollgate_build_info, instance).
    let instances = prom
        .api(&format!(
            "/api/v1/label/instance/values?match[]={}",
            tollgate_tests::prometheus::encode("tollgate_build_info")
        ))
        .unwrap();
    assert_eq!(instances, serde_json::json!([instance]));

    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "dashboard expressions: {exprs:?}");
    let mut results = BTreeMap::new();
    for expr in &exprs {
        let q = substitute(expr, &instance);
        let data = prom
            .query(&q, Some(at))
            .unwrap_or_else(|e| panic!("dashboard expression {expr:?} as {q:?}: {e:#}"));
        let s = series(&data, &q);
        assert!(!s.is_empty(), "{q}: no series");
        for (labels, v) in &s {
            assert!(v.is_finite() && *v >= 0.0, "{q}: {labels:?} = {v}");
        }
        eprintln!("{q}\n    {s:?}");
        results.insert(expr.clone(), s);
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap().unwrap();
    http.join().unwrap().unwrap().unwrap();
    let requests = http_ok.load(Ordering::Relaxed) as f64;
    eprintln!(
        "flood sent {} packets in {:?}; {requests} HTTP requests; evaluated at {elapsed:.1}s",
        sent.packets, sent.span
    );

    // The values, by what the traffic makes plausible.
    let find = |needle: &str| -> &Vec<(BTreeMap<String, String>, f64)> {
        results
            .iter()
            .find(|(e, _)| e.contains(needle))
            .unwrap_or_else(|| panic!("no dashboard expression with {needle}"))
            .1
    };
    let one = |needle: &str, label: &str, value: &str| -> f64 {
        find(needle)
            .iter()
            .find(|(l, _)| l.get(label).map(String::as_str) == Some(value))
            .unwrap_or_else(|| panic!("{needle}: no series with {label}={value}"))
            .1
    };
    let admitted = one(
        "tollgate_tier_admitted_packets_per_second",
        "tier",
        "default",
    );
    assert!(
        admitted > 0.0 && admitted <= 2.0 * LIMIT + BURST,
        "admitted {admitted}/s with a limit of {LIMIT}/s"
    );
    let dropped = one(
        "tollgate_tier_dropped_packets_per_second",
        "tier",
        "default",
    );
    assert!(
        dropped > 0.0 && dropped <= 2.0 * FLOOD_PPS as f64 && dropped <= sent.packets as f64,
        "dropped {dropped}/s of a {FLOOD_PPS}/s flood"
    );
    let reasons = find("rate(tollgate_packets_total{verdict=\"dropped\"");
    for (labels, v) in reasons {
        let reason = labels["reason"].as_str();
        if reason == "packets_limit" {
            // A 1m rate of drops that all happened within the minute: ×60,
            // about the 2/3 of the flood over the limit, never more than
            // was sent (a margin for Prometheus's extrapolation).
            let n = v * 60.0;
            let sent = sent.packets as f64;
            assert!(
                n >= 0.25 * sent && n <= 1.2 * sent,
                "{reason}: {v}/s over 1m = {n} packets; the flood sent {sent}"
            );
        } else {
            assert_eq!(*v, 0.0, "nothing is dropped for {reason}");
        }
    }
    assert!(one("tollgate_tier_usage_bytes_per_second", "tier", "default") > 0.0);
    assert!(one("tollgate_tier_active_sources", "tier", "default") >= 1.0);
    let by_route = find("topk(10, sum by (route)");
    let route_rate: f64 = by_route.iter().map(|(_, v)| v).sum();
    let by_verdict: BTreeMap<_, _> = find("sum by (verdict) (rate(tollgate_http_requests_total")
        .iter()
        .map(|(l, v)| (l["verdict"].clone(), *v))
        .collect();
    // 5m rates of requests all made within the window: ×300, about the
    // requests made (sample_every = 1, so every request is counted).
    for (what, v) in [
        ("by route", route_rate),
        ("passed", by_verdict.get("passed").copied().unwrap_or(0.0)),
    ] {
        assert!(
            v * 300.0 >= 0.5 * requests && v * 300.0 <= 1.5 * requests,
            "HTTP {what} {v}/s over 5m = {} requests; {requests} were made",
            v * 300.0
        );
    }
    assert!(
        one("tollgate_source_map_fill_ratio", "family", "ipv4") > 0.0,
        "sources are tracked"
    );
    let samples = find("rate(tollgate_samples_total");
    assert!(
        samples.iter().all(|(_, v)| *v > 0.0),
        "HTTP and verdict samples are taken: {samples:?}"
    );
    assert!(
        find("tollgate_top_source_packets")
            .iter()
            .any(|(l, v)| l["source"] == flooder.to_string() && *v > 0.0),
        "the flooder is a top source"
    );
    let reload_failures = find("result=\"failure\"");
    assert_eq!(reload_failures[0].1, 0.0);
    let cluster_up = find("tollgate_cluster_up");
    assert_eq!(cluster_up[0].1, 1.0, "Redis is up");

    // The shipped alert rules loaded and evaluate without errors.
    let rules = prom.api("/api/v1/rules").unwrap();
    let loaded: Vec<_> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(loaded.len() >= 6, "{rules}");
    for r in &loaded {
        assert_ne!(r["health"], "err", "alert rule failed: {r}");
    }
    let alerts = prom.api("/api/v1/alerts").unwrap();
    assert!(
        !alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "TollgateDown"),
        "{alerts}"
    );
    drop(server);
}
