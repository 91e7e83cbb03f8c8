//! `cargo xtask bench http`: what the HTTP monitor costs.
//!
//! * kernel: test_run ns/packet of an HTTP request packet with sampling off
//!   and with every request sampled (ring drained between rounds, so every
//!   sample is really written), against the minimal XDP program (`floor_pass`
//!   from the probes object);
//! * daemon: samples/s that one core decodes, parses, templates, redacts and
//!   aggregates (`Monitor::ingest_http`), on a realistic mix of request heads,
//!   with the API inventory and an OpenAPI document to match (`[http] openapi`:
//!   shadow and drift counted per sample).

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use tollgate::{
    apikeys::hash_key,
    config::{self, ApiKeysConfig, Effective, HttpConfig, Publisher, TierNames},
    datapath::samples::Sample,
    monitor::Monitor,
    openapi::ApiSpec,
};
use tollgate_common::{Limit, SAMPLE_HTTP, SampleHeader};
use tollgate_tests::{
    packet::{Packet, TCP_ACK, TCP_PSH},
    probes::{self, Probes},
    program::{TestProgram, TierSpec, XDP_PASS},
};

const ROUNDS: usize = 9;
/// Repetitions per round: fewer than the ring holds, so no sample is lost.
const REPEAT: u32 = 10_000;
const INGEST_SAMPLES: usize = 1_000_000;

fn main() -> Result<()> {
    kernel_cost()?;
    ingest()?;
    Ok(())
}

fn run(xdp: &Xdp, frame: &[u8]) -> Result<f64> {
    let r = xdp
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    if r.return_value != XDP_PASS {
        bail!("expected XDP_PASS, got {}", r.return_value);
    }
    Ok(r.duration.as_nanos() as f64)
}

fn median(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn kernel_cost() -> Result<()> {
    let mut p = TestProgram::load()?;
    p.maps.set_tier(
        0,
        &TierSpec {
            packets: Some((1_000_000_000, 1_000_000_000)),
            requests: Some((100_000_000, 100_000_000)),
            ..Default::default()
        }
        .config(),
    )?;
    let mut ring = p.maps.take_samples().context("sample ring")?;
    let reference = Probes::load(&[probes::FLOOR_PASS])?;
    let floor = reference.xdp(probes::FLOOR_PASS)?;
    let head = b"GET /api/v1/users/12345/orders?page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nAuthorization: Bearer 0123456789abcdef\r\n\r\n";
    let frame = Packet::from(Ipv4Addr::new(203, 0, 113, 5))
        .tcp(TCP_ACK | TCP_PSH)
        .payload(head)
        .build();
    let mut frame80 = frame.clone();
    frame80[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&80u16.to_be_bytes());

    let mut results = Vec::new();
    for (name, sample) in [
        ("HTTP request, sampling off", false),
        ("HTTP request, every request sampled", true),
    ] {
        let mut s = p.maps.settings()?;
        s.http_ports = [0; tollgate_common::MAX_HTTP_PORTS];
        if sample {
            s.http_ports[0] = 80;
        }
        s.http_snap_len = 512;
        s.http_sample_every = 1;
        s.http_budget = Limit::UNLIMITED;
        s.verdict_sample_every = 0;
        p.maps.set_settings(s)?;
        let mut t = Vec::new();
        let mut f = Vec::new();
        let before = p.maps.sampler_totals()?;
        for _ in 0..ROUNDS {
            let xdp = p.xdp_ref();
            t.push(run(xdp, &frame80)?);
            while ring.next().is_some() {}
            f.push(run(floor, &frame80)?);
        }
        let after = p.maps.sampler_totals()?;
        let written = after.http_sampled - before.http_sampled;
        let lost = after.http_ring_full - before.http_ring_full;
        results.push((name, median(t), median(f), written, lost));
    }
    println!(
        "## Kernel: cost of sampling (test_run, {REPEAT} runs x {ROUNDS} rounds, ring drained between rounds)\n"
    );
    println!(
        "| packet | tollgate ns/pkt median (min–max) | minimal ns/pkt | samples written | ring full |"
    );
    println!("|---|---|---|---|---|");
    for (name, (t, tmin, tmax), (f, _, _), written, lost) in &results {
        println!("| {name} | {t:.1} ({tmin:.1}–{tmax:.1}) | {f:.1} | {written} | {lost} |");
    }
    let delta = results[1].1.0 - results[0].1.0;
    println!(
        "\nA sampled request costs {delta:.1} ns more than an unsampled one (ring reserve, header, a {}-byte copy with bpf_xdp_load_bytes, submit).\n",
        head.len()
    );
    Ok(())
}

/// Documents some of the mix's endpoints (the rest are shadow), with a
/// security default, a request body and a servers' base path to strip.
const BENCH_SPEC: &str = r#"
openapi: 3.1.0
info: {title: bench, version: "1"}
servers: [{url: "https://api.example.com/api/v1"}, {url: "/"}]
security: [{bearer: []}]
paths:
  /users/{userId}/orders: {get: {responses: {"200": {description: ok}}}}
  /orders/{orderId}:
    post:
      requestBody: {content: {application/json: {schema: {maxLength: 4096}}}}
      responses: {"200": {description: ok}}
  /sessions/{sessionId}: {delete: {responses: {"204": {description: gone}}}}
  /items/{itemId}: {put: {requestBody: {content: {text/plain: {}}}, responses: {"200": {description: ok}}}}
  /health: {get: {security: [], responses: {"200": {description: ok}}}}
  /search: {get: {responses: {"200": {description: ok}}}}
  /products/{id}: {get: {responses: {"200": {description: ok}}}}
  /products/{id}/reviews: {get: {responses: {"200": {description: ok}}}}
  /carts/{cartId}/items/{itemId}: {patch: {responses: {"200": {description: ok}}}}
components: {securitySchemes: {bearer: {type: http, scheme: bearer}}}
"#;

fn ingest() -> Result<()> {
    let keys = ApiKeysConfig {
        salt: "bench".into(),
        ttl_seconds: 60,
        keys: vec![(hash_key("bench", b"gold-key"), "gold".into())],
    };
    let mut config = config::embedded_default();
    config.http = HttpConfig {
        openapi: Some(Arc::new(ApiSpec::parse(BENCH_SPEC, "bench.yaml")?)),
        max_content_length: Some(1 << 20),
        ..HttpConfig::default()
    };
    config.api_keys = keys;
    let publisher = Publisher::new(Arc::new(Effective::new(0, config, Default::default())));
    let mut monitor = Monitor::new(publisher.subscribe())?;
    let tiers = TierNames {
        names: vec![Some(("default".into(), 64)), Some(("gold".into(), 64))],
    };
    // A mix: ids, UUIDs, query strings, secrets, partial heads, garbage.
    let heads: Vec<String> = (0..512)
        .map(|i| match i % 8 {
            0 => format!("GET /api/v1/users/{i}/orders?page={i}&token=t{i} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n"),
            1 => format!("POST /api/v1/orders/550e8400-e29b-41d4-a716-4466554{i:05} HTTP/1.1\r\nHost: shop.example.com\r\nContent-Type: application/json\r\nContent-Length: 42\r\nAuthorization: Bearer abc{i}\r\n\r\n"),
            2 => format!("GET /static/app.{i}.js HTTP/1.1\r\nHost: cdn.example.com\r\nCookie: sid={i}; theme=dark\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept-Encoding: gzip, br\r\n\r\n"),
            3 => format!("GET /search?q=term{i} HTTP/1.1\r\nHost: api.example.com\r\nX-Api-Key: gold-key\r\n\r\n"),
            4 => format!("DELETE /api/v1/sessions/{i:x}{i:x}{i:x}{i:x}deadbeefcafe HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic dXNlcjpwYXNz\r\nX-Request-Id: {i}\r\n"),
            5 => format!("PUT /api/v1/items/{i} HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 10\r\nX-Forwarded-For: 10.0.0.{}\r\nUser-Ag", i % 250),
            6 => format!("GET /health HTTP/1.1\r\nHost: h{i}.example.com\r\n\r\n"),
            _ => format!("GET \x01\x02 garbage {i}\r\n"),
        })
        .collect();
    let records: Vec<Vec<u8>> = heads
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let header = SampleHeader {
                kind: SAMPLE_HTTP,
                family: 4,
                src: [
                    10,
                    0,
                    (i >> 8) as u8,
                    i as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
                tier: (i % 2) as u32,
                captured: h.len().min(512) as u16,
                scale: 1,
                dst_port: 80,
                ..Default::default()
            };
            let mut v = vec![0u8; std::mem::size_of::<SampleHeader>()];
            // SAFETY: v holds a whole header.
            unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<SampleHeader>(), header) };
            v.extend_from_slice(&h.as_bytes()[..h.len().min(512)]);
            v
        })
        .collect();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let now = Instant::now();
        for i in 0..INGEST_SAMPLES {
            let r = &records[i % records.len()];
            let s = Sample::decode(r).expect("valid record");
            let _ = monitor.ingest_http(&s, &tiers, now);
        }
        rates.push(INGEST_SAMPLES as f64 / start.elapsed().as_secs_f64());
    }
    let (m, lo, hi) = median(rates);
    println!("## Daemon: HTTP sample ingest on one core\n");
    println!("| samples | samples/s median (min–max of 5) | ns/sample |");
    println!("|---|---|---|");
    println!(
        "| {INGEST_SAMPLES} (8 request shapes, 1/8 malformed) | {:.0} ({:.0}–{:.0}) | {:.0} |",
        m,
        lo,
        hi,
        1e9 / m
    );
    println!(
        "\nDecode + httparse + route template + redaction + bounded aggregation + API-key hash lookup + API inventory + OpenAPI match (shadow and drift per sample), single thread; target 300,000 samples/s."
    );
    let _ = Duration::ZERO;
    Ok(())
}
