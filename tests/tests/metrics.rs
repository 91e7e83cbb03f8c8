//! End to end: `/metrics` as Prometheus scrapes it, checked against the
//! kernel's own per-CPU counters, the traffic sent, `promtool check metrics`,
//! and a cardinality bound under 100,000 sources and 10,000 paths.

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;
use tollgate::datapath::kernel::Maps;
use tollgate_common::Verdict;
use tollgate_tests::{
    daemon::{Env, free_port, metric_value as value, scrape_metrics},
    packet::{Packet, TCP_ACK, TCP_PSH},
    privileged,
    traffic::{Receiver, send_udp_paced},
};

fn promtool(body: &str) {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if !tollgate_tests::privileged_required() => {
            eprintln!(
                "!!!! promtool missing ({e}): run `cargo xtask setup`; skipping the lint !!!!"
            );
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scraped_counters_match_the_kernel_and_the_traffic_sent() {
    if !privileged("scraped_counters_match_the_kernel_and_the_traffic_sent") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    env.write_config(&format!(
        "metrics_address = \"127.0.0.1:{port}\"\n[[tier]]\nname = \"default\"\npackets = \"1000/s\"\npackets_burst = 100\n"
    ));
    let _daemon = env.start_with(&[]);
    let dst = SocketAddr::from((env.veth.host_ip, 9));

    let sender = env.ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        send_udp_paced(&s, dst, 2000, Duration::from_millis(1500)).unwrap()
    });
    // A scrape during traffic is valid exposition.
    std::thread::sleep(Duration::from_millis(500));
    promtool(&scrape_metrics(port));
    let sent = sender.join().unwrap().unwrap();

    let maps = Maps::from_pins(&env.pins.path).unwrap();
    // Wait until the counters stop moving (the last datagrams are judged).
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = maps.counter(0, Verdict::Passed).unwrap().packets
            + maps.counter(0, Verdict::DroppedPackets).unwrap().packets;
        if c == last || Instant::now() > deadline {
            break;
        }
        last = c;
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = scrape_metrics(port);
    promtool(&body);
    let passed = value(
        &body,
        r#"tollgate_packets_total{reason="within_limits",tier="default",verdict="passed"}"#,
    );
    let dropped = value(
        &body,
        r#"tollgate_packets_total{reason="packets_limit",tier="default",verdict="dropped"}"#,
    );
    let kernel_passed = maps.counter(0, Verdict::Passed).unwrap();
    let kernel_dropped = maps.counter(0, Verdict::DroppedPackets).unwrap();
    assert_eq!(
        passed as u64, kernel_passed.packets,
        "passed packets = kernel per-CPU sum"
    );
    assert_eq!(
        dropped as u64, kernel_dropped.packets,
        "dropped packets = kernel per-CPU sum"
    );
    assert_eq!(
        value(
            &body,
            r#"tollgate_bytes_total{reason="within_limits",tier="default",verdict="passed"}"#
        ) as u64,
        kernel_passed.bytes
    );
    assert_eq!(
        passed as u64 + dropped as u64,
        sent.packets,
        "every datagram sent was judged once"
    );
    assert!(dropped > 0.0 && passed > 0.0);
    // The families the dashboards use are all there.
    for family in [
        "tollgate_tier_admitted_packets_per_second",
        "tollgate_tier_dropped_packets_per_second",
        "tollgate_tier_usage_packets_per_second",
        "tollgate_tier_active_sources",
        "tollgate_tier_limited_sources",
        "tollgate_tracked_sources",
        "tollgate_source_map_fill_ratio",
        "tollgate_samples_total",
        "tollgate_samples_lost_total",
        "tollgate_program_info",
        "tollgate_config_reloads_total",
        "tollgate_build_info",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    assert!(value(&body, r#"tollgate_tracked_sources{family="ipv4"}"#) >= 1.0);
    // The filter's size as the kernel's map has it: every word of the map
    // but the generation and size words (no fill yet: the first ageing is a
    // minute away).
    let filter_bytes = (u64::from(maps.tracked.len()) - 2) * 8;
    assert!(
        filter_bytes > 0,
        "the filter is on at the default map sizes"
    );
    assert_eq!(
        value(&body, "tollgate_tracked_filter_bytes") as u64,
        filter_bytes
    );
    assert!(!body.contains("tollgate_tracked_filter_fill_ratio"));

    // `tollgate stats --tier default` shows the same usage numbers as /metrics
    // (both read the daemon's per-second aggregate; retried across a tick).
    let same = (0..50).any(|_| {
        let stats: serde_json::Value =
            serde_json::from_str(&env.ok(&["--json", "stats", "--tier", "default"])).unwrap();
        let body = scrape_metrics(port);
        let u = &stats["tiers"][0]["usage"];
        let pairs = [
            (
                "packets_per_second",
                r#"tollgate_tier_usage_packets_per_second{tier="default"}"#,
            ),
            (
                "bytes_per_second",
                r#"tollgate_tier_usage_bytes_per_second{tier="default"}"#,
            ),
            (
                "active_sources",
                r#"tollgate_tier_active_sources{tier="default"}"#,
            ),
            (
                "limited_sources",
                r#"tollgate_tier_limited_sources{tier="default"}"#,
            ),
        ];
        let equal = pairs
            .iter()
            .all(|(k, series)| (u[*k].as_f64().unwrap() - value(&body, series)).abs() < 1e-6);
        if !equal {
            std::thread::sleep(Duration::from_millis(100));
        }
        equal
    });
    assert!(same, "stats --tier and /metrics show the same usage");
}

#[test]
fn label_cardinality_stays_bounded_under_100k_sources_and_10k_paths() {
    if !privileged("label_cardinality_stays_bounded_under_100k_sources_and_10k_paths") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    env.write_config(&format!(
        "metrics_address = \"127.0.0.1:{port}\"\n\
         [maps]\nsources_v4 = 131072\n\
         [http]\nports = [8080]\nbudget = \"10000000/s\"\nverdict_sample_every = 1\nmax_routes = 200\nmax_hosts = 50\ntop_sources_metric = 10\n\
         [[tier]]\nname = \"default\"\npackets = \"1000/s\"\nnew_sources = \"1000000/s\"\n"
    ));
    // (A budget for the 100,000 new sources: the default, 1/60 of the map
    // per second, would leave most of them untracked.)
    let _daemon = env.start_with(&[]);
    // Frames go through the daemon's own pinned program with BPF_PROG_TEST_RUN:
    // the real program and maps, 100,000 spoofed sources without a packet
    // generator. Its samples reach the daemon's ring buffer like any others.
    let prog = Xdp::from_pin(env.pins.path.join("prog"), XdpAttachType::Interface).unwrap();
    for i in 0..100_000u32 {
        let src = Ipv4Addr::from(0x0a00_0000 + i);
        let payload = format!(
            "GET /p{}/item HTTP/1.1\r\nHost: h{}.example\r\n\r\n",
            i % 10_000,
            i % 1000
        );
        let frame = Packet::from(src)
            .tcp(TCP_ACK | TCP_PSH)
            .payload(payload.as_bytes())
            .build();
        let frame = retarget(frame, 8080);
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            ..Default::default()
        })
        .unwrap();
    }
    // The daemon drains samples and scans sources asynchronously: scrape until
    // the route overflow label and the scanned sources show up (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = scrape_metrics(port);
        let scanned = body
            .lines()
            .find_map(|l| l.strip_prefix(r#"tollgate_tracked_sources{family="ipv4"} "#))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|v| v >= 50_000.0);
        if (body.contains(r#"route="other""#) && scanned) || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    promtool(&body);
    let labels = |family: &str, label: &str| -> BTreeSet<String> {
        body.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter_map(|l| {
                let start = l.find(&format!("{label}=\""))? + label.len() + 2;
                Some(l[start..start + l[start..].find('"')?].to_owned())
            })
            .collect()
    };
    let routes = labels("tollgate_http_requests_total", "route");
    let hosts = labels("tollgate_http_requests_total", "host");
    eprintln!(
        "distinct route labels {}, host labels {}, series {}",
        routes.len(),
        hosts.len(),
        body.lines().count()
    );
    assert!(
        routes.len() > 100,
        "requests were sampled: {} routes",
        routes.len()
    );
    assert!(routes.len() <= 201, "{} route labels", routes.len());
    assert!(routes.contains("other"));
    assert!(hosts.len() <= 51, "{} host labels", hosts.len());
    let top = body
        .lines()
        .filter(|l| l.starts_with("tollgate_top_source_packets{"))
        .count();
    assert!(top <= 10, "{top} top-source series");
    let sources = labels("tollgate_top_source_packets", "source");
    assert!(sources.len() <= 10);
    assert!(
        body.lines().count() < 20_000,
        "the exposition stays small: {} lines",
        body.lines().count()
    );
    assert!(value(&body, r#"tollgate_tracked_sources{family="ipv4"}"#) >= 50_000.0);
}

/// Sets the TCP destination port of a frame built by `Packet` (IPv4, no options).
fn retarget(mut frame: Vec<u8>, port: u16) -> Vec<u8> {
    frame[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&port.to_be_bytes());
    frame
}

/// "LIMITED NOW" (`stats`' `limited_sources`, `tollgate_tier_limited_sources`)
/// counts a source held at three times its limit in every sample, and a
/// source sending at half its limit in none; once the abuser stops, the
/// count returns to 0. Both sources are counted at their own receivers.
#[test]
fn a_source_held_over_its_limit_is_limited_in_every_sample() {
    if !privileged("a_source_held_over_its_limit_is_limited_in_every_sample") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    env.write_config(&format!(
        "metrics_address = \"127.0.0.1:{port}\"\n[[tier]]\nname = \"default\"\npackets = \"20/s\"\npackets_burst = 5\n"
    ));
    let _daemon = env.start_with(&[]);
    // A second address in the namespace for the polite source.
    let polite_ip = Ipv4Addr::from(u32::from(env.veth.peer_ip) + 1);
    env.add_peer_address(polite_ip);
    let abusive_rx = Receiver::bind(SocketAddr::from((env.veth.host_ip, 0))).unwrap();
    let polite_rx = Receiver::bind(SocketAddr::from((env.veth.host_ip, 0))).unwrap();
    let (abusive_dst, polite_dst) = (abusive_rx.addr, polite_rx.addr);
    let run_for = Duration::from_secs(10);
    let abuser = env.ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        send_udp_paced(&s, abusive_dst, 60, run_for).unwrap()
    });
    let polite = env.ns.run(move || {
        let s = UdpSocket::bind((polite_ip, 0)).unwrap();
        send_udp_paced(&s, polite_dst, 10, run_for).unwrap()
    });
    // Two scans in, then 16 samples, every 500 ms, while both still send.
    std::thread::sleep(Duration::from_millis(2200));
    let mut seen = Vec::new();
    for _ in 0..16 {
        let stats = env.stats("default");
        let metric = value(
            &scrape_metrics(port),
            r#"tollgate_tier_limited_sources{tier="default"}"#,
        );
        seen.push((stats["usage"]["limited_sources"].as_u64().unwrap(), metric));
        std::thread::sleep(Duration::from_millis(500));
    }
    let abusive_sent = abuser.join().unwrap().unwrap();
    let polite_sent = polite.join().unwrap().unwrap();
    assert!(
        seen.iter().all(|&(s, m)| s == 1 && m == 1.0),
        "limited sources in each sample (stats, metrics): {seen:?}"
    );
    let abusive_got = abusive_rx.settle(Duration::from_millis(300));
    let polite_got = polite_rx.settle(Duration::from_millis(300));
    // Held at its limit, not blocked: rate × span + burst, within a packet.
    let bound = (20.0 * abusive_sent.span.as_secs_f64()).floor() as u64 + 5;
    assert!(
        abusive_got <= bound + 1 && abusive_got + 20 >= bound,
        "abusive source: {abusive_got} received of {} sent, bound {bound}",
        abusive_sent.packets
    );
    assert_eq!(
        polite_got, polite_sent.packets,
        "the polite source loses nothing"
    );
    env.eventually(
        Duration::from_secs(4),
        "no limited source once idle",
        || env.stats("default")["usage"]["limited_sources"].as_u64() == Some(0),
    );
}
