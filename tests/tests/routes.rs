//! End to end: routes hold at a real HTTP server. The daemon runs on the
//! veth with one tier (requests = 100/s, burst 100 per source) and three
//! routes; clients in the test namespace, each from its own address, write
//! keep-alive requests at a steady pace without waiting for answers (so TCP
//! retransmits refused ones, coalesced into later segments), and every count
//! is the server's own, read at a time `t` after the first byte, against the
//! bound the maths gives:
//!
//! * a costly route (cost 20): one source's searches ≤ (100 × t + 100) / 20,
//!   while another source's cheap requests all reach the server;
//! * a ceilinged route (200/s, burst 20) hammered from 20 addresses:
//!   ≤ 200 × t + 20 in total, while each address's cheap requests, well
//!   within its own limit, all reach the server;
//! * a shadow route (added with `tollgate route add`): everything passes, its
//!   counters (route list, /metrics) count requests and would-drops; it
//!   keeps its index and counters across a daemon restart.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::FromRawFd,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use tollgate::datapath::kernel::Maps;
use tollgate_tests::{
    daemon::{Env, free_port, metric_value, scrape_metrics},
    httpd::Server,
    privileged,
    traffic::close_with_reset,
};

/// The tier's requests limit per source, and its burst.
const RATE: f64 = 100.0;
const BURST: f64 = 100.0;
/// The costly route's cost.
const COST: f64 = 20.0;
/// The ceilinged route's ceiling and burst.
const CEILING: f64 = 200.0;
const CEILING_BURST: f64 = 20.0;
/// One server per stream of requests, each port an HTTP port.
const SEARCH_PORT: u16 = 8091;
const CHEAP_A_PORT: u16 = 8092;
const EXPORT_PORT: u16 = 8093;
const CHEAP_B_PORT: u16 = 8094;
const PROBE_PORT: u16 = 8095;
/// Addresses hammering the ceilinged route.
const SOURCES: usize = 20;
/// How long each scenario sends, and how long retransmissions get after the
/// last write before the count.
const SENDING: Duration = Duration::from_secs(4);
const DRAIN: Duration = Duration::from_secs(1);

const SEARCH: &[u8] =
    b"POST /api/search?q=x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\n\r\n";
const CHEAP: &[u8] = b"GET /api/items/7 HTTP/1.1\r\nHost: api.test\r\n\r\n";
const EXPORT: &[u8] = b"GET /api/export?all=1 HTTP/1.1\r\nHost: api.test\r\n\r\n";
const PROBE: &[u8] = b"GET /api/probe HTTP/1.1\r\nHost: api.test\r\n\r\n";

fn config(env: &Env, metrics: u16) -> String {
    let ports = [
        SEARCH_PORT,
        CHEAP_A_PORT,
        EXPORT_PORT,
        CHEAP_B_PORT,
        PROBE_PORT,
    ]
    .map(|p| p.to_string())
    .join(", ");
    format!(
        r#"interfaces = ["{iface}"]
mode = "native"
metrics_address = "127.0.0.1:{metrics}"

[[tier]]
name = "default"
packets = "100000/s"
requests = "{RATE}/s"
requests_burst = {BURST}

[http]
ports = [{ports}]

[[route]]
name = "search"
match = "POST /api/search"
cost = {COST}

[[route]]
name = "export"
match = "GET /api/export"
ceiling = "{CEILING}/s"
ceiling_burst = {CEILING_BURST}
"#,
        iface = env.veth.host,
    )
}

/// One client stream: from `from`, to `to`, `request` every `every` until
/// `stop`; answers are read and thrown away. The connection is reset
/// (SO_LINGER 0) after `close`, so nothing it still holds reaches the server
/// after the count. Returns the requests written.
fn drive(
    from: Ipv4Addr,
    to: SocketAddr,
    request: &'static [u8],
    every: Duration,
    stop: Instant,
    close: Instant,
) -> u64 {
    let stream = connect_from(from, to).unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let answers = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while Instant::now() < close {
            if let Ok(0) = reader.read(&mut buf) {
                return;
            }
        }
    });
    let mut w = &stream;
    let mut sent = 0;
    let mut next = Instant::now();
    while Instant::now() < stop {
        let _ = w.write_all(request);
        sent += 1;
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    std::thread::sleep(close.saturating_duration_since(Instant::now()));
    close_with_reset(stream);
    let _ = answers.join();
    sent
}

/// A TCP connection from `from` (std has no bind-before-connect).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fresh fd that the TcpStream owns (and
    // closes) from its creation on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sin(from, 0);
        let remote = sin(*to.ip(), to.port());
        if libc::bind(fd, (&raw const local).cast(), len) != 0
            || libc::connect(fd, (&raw const remote).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// One stream of a scenario: from, to, what, how often.
type Stream = (Ipv4Addr, SocketAddr, &'static [u8], Duration);

/// Runs `streams` together in the namespace for [`SENDING`], waits
/// [`DRAIN`], and reads `servers`' counts; returns the requests each stream
/// wrote, the counts, and `t`, the seconds from before the first write to
/// the count.
fn scenario(env: &Env, streams: Vec<Stream>, servers: &[&Server]) -> (Vec<u64>, Vec<u64>, f64) {
    let start = Instant::now();
    let stop = start + SENDING;
    let count_at = stop + DRAIN;
    let close = count_at + Duration::from_millis(300);
    let streams = Arc::new(streams);
    let driver = {
        let streams = streams.clone();
        env.ns.run(move || {
            let threads: Vec<_> = streams
                .iter()
                .map(|&(from, to, request, every)| {
                    std::thread::spawn(move || drive(from, to, request, every, stop, close))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<u64>>()
        })
    };
    std::thread::sleep(count_at.saturating_duration_since(Instant::now()));
    let counted: Vec<u64> = servers
        .iter()
        .map(|s| s.requests.load(Ordering::SeqCst))
        .collect();
    let t = start.elapsed().as_secs_f64();
    let sent = driver.join().unwrap().unwrap();
    (sent, counted, t)
}

fn route(env: &Env, name: &str) -> Value {
    let routes = env.json(&["route", "list"]);
    routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {routes}"))
        .clone()
}

fn counter(route: &Value, key: &str) -> u64 {
    route[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {route}"))
}

/// The `n`th extra address of the namespace's /24 (the peer is .2).
fn address(env: &Env, n: u8) -> Ipv4Addr {
    let [a, b, c, _] = env.veth.peer_ip.octets();
    Ipv4Addr::new(a, b, c, n)
}

#[test]
fn routes_hold_their_cost_ceiling_and_shadow_at_a_real_server() {
    if !privileged("routes_hold_their_cost_ceiling_and_shadow_at_a_real_server") {
        return;
    }
    let env = Env::new();
    let metrics = free_port();
    env.write_config(&config(&env, metrics));
    let mut daemon = env.start_with(&[]);
    let at = |port| SocketAddr::from((env.veth.host_ip, port));
    let listed = env.json(&["route", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // (a) A costly route: source A's searches against source B's cheap
    // requests (B at 40/s, well within its 100/s).
    let (a, b) = (address(&env, 40), address(&env, 41));
    env.add_peer_address(a);
    env.add_peer_address(b);
    let search = Server::bind(at(SEARCH_PORT)).unwrap();
    let cheap_a = Server::bind(at(CHEAP_A_PORT)).unwrap();
    let (sent, counted, t) = scenario(
        &env,
        vec![
            (a, search.addr, SEARCH, Duration::from_millis(20)),
            (b, cheap_a.addr, CHEAP, Duration::from_millis(25)),
        ],
        &[&search, &cheap_a],
    );
    let bound = (RATE * t + BURST) / COST;
    eprintln!(
        "costly route: A sent {} searches, the server answered {} in {t:.2} s (bound (rate × t + burst) / cost = {bound:.1}); \
         B sent {} cheap requests, the server answered {}",
        sent[0], counted[0], sent[1], counted[1]
    );
    assert!(
        counted[0] as f64 <= bound,
        "searches answered: {} > {bound:.1}",
        counted[0]
    );
    assert!(
        counted[0] as f64 >= BURST / COST,
        "the burst's worth of searches passes: {}",
        counted[0]
    );
    assert_eq!(
        counted[1], sent[1],
        "B's cheap requests all reach the server"
    );
    let r = route(&env, "search");
    assert!(
        counter(&r, "requests") >= counted[0] && counter(&r, "dropped") > 0,
        "{r}"
    );
    assert_eq!(counter(&r, "dropped_ceiling"), 0, "{r}");
    // `http top` names the configured route of sampled requests.
    let top = env.json(&["http", "top", "--by", "config-route"]);
    let rows = top["rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r[0] == "search") && rows.iter().any(|r| r[0] == "-"),
        "{top}"
    );

    // (b) A ceilinged route hammered from 20 addresses, each at 20/s (400/s
    // in all against 200/s), each also sending cheap requests at 5/s: 25/s
    // per address, a quarter of its own limit.
    let export = Server::bind(at(EXPORT_PORT)).unwrap();
    let cheap_b = Server::bind(at(CHEAP_B_PORT)).unwrap();
    let mut streams = Vec::new();
    for i in 0..SOURCES as u8 {
        let from = address(&env, 100 + i);
        env.add_peer_address(from);
        streams.push((from, export.addr, EXPORT, Duration::from_millis(50)));
        streams.push((from, cheap_b.addr, CHEAP, Duration::from_millis(200)));
    }
    let (sent, counted, t) = scenario(&env, streams, &[&export, &cheap_b]);
    let exports_sent: u64 = sent.iter().step_by(2).sum();
    let cheap_sent: u64 = sent.iter().skip(1).step_by(2).sum();
    let bound = CEILING * t + CEILING_BURST;
    eprintln!(
        "ceilinged route: {SOURCES} sources sent {exports_sent} exports, the server answered {} in {t:.2} s \
         (bound ceiling × t + burst = {bound:.1}); they sent {cheap_sent} cheap requests, the server answered {}",
        counted[0], counted[1]
    );
    assert!(
        counted[0] as f64 <= bound,
        "exports answered: {} > {bound:.1}",
        counted[0]
    );
    assert!(
        counted[0] as f64 >= CEILING_BURST,
        "the ceiling's burst passes: {}",
        counted[0]
    );
    assert_eq!(
        counted[1], cheap_sent,
        "every source's cheap requests reach the server"
    );
    let r = route(&env, "export");
    assert!(counter(&r, "dropped_ceiling") > 0, "{r}");
    assert!(
        counter(&r, "dropped") >= counter(&r, "dropped_ceiling"),
        "{r}"
    );
    env.eventually(
        Duration::from_secs(5),
        "the ceiling's refusals in /metrics",
        || {
            let body = scrape_metrics(metrics);
            metric_value(
                &body,
                r#"tollgate_route_dropped_total{reason="ceiling",route="export"}"#,
            ) >= counter(&r, "dropped_ceiling") as f64
        },
    );

    // (c) A shadow route added with the CLI: a ceiling of 10/s (burst 5)
    // that would refuse most of 40/s, and refuses nothing.
    let out = env.ok(&[
        "route",
        "add",
        "probe",
        "--match",
        "GET /api/probe",
        "--ceiling",
        "10/s",
        "--ceiling-burst",
        "5",
        "--mode",
        "shadow",
    ]);
    assert!(out.contains("route probe added"), "{out}");
    let probe = Server::bind(at(PROBE_PORT)).unwrap();
    let (sent, counted, t) = scenario(
        &env,
        vec![(
            env.veth.peer_ip,
            probe.addr,
            PROBE,
            Duration::from_millis(25),
        )],
        &[&probe],
    );
    let r = route(&env, "probe");
    let would = counter(&r, "shadow_would_drop");
    eprintln!(
        "shadow route: sent {}, the server answered {} in {t:.2} s; the route counted {} requests, {would} would-drops",
        sent[0],
        counted[0],
        counter(&r, "requests")
    );
    assert_eq!(counted[0], sent[0], "a shadow route drops nothing");
    assert_eq!(counter(&r, "requests"), sent[0], "{r}");
    assert_eq!(counter(&r, "dropped"), 0, "{r}");
    // What a 10/s ceiling admits at most; the rest it would have refused.
    assert!(
        would as f64 >= sent[0] as f64 - (10.0 * t + 5.0),
        "would-drops {would} of {} in {t:.2} s",
        sent[0]
    );
    env.eventually(
        Duration::from_secs(5),
        "the would-drops in /metrics",
        || {
            let body = scrape_metrics(metrics);
            metric_value(
                &body,
                r#"tollgate_route_shadow_would_drop_total{route="probe"}"#,
            ) == would as f64
                && metric_value(&body, r#"tollgate_route_requests_total{route="probe"}"#)
                    == sent[0] as f64
        },
    );

    // The kernel holds every route once per HTTP port, and split heads cost
    // the dearest enforced route's cost (the shadow route's is not charged).
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    assert_eq!(maps.routes().unwrap().len(), 3 * 5);
    assert_eq!(maps.settings().unwrap().split_head_cost, COST as u32);
    // A reload that lowers the search's cost and puts the export route on
    // one port: only the difference is written, and search keeps its index.
    let search_index = counter(&route(&env, "search"), "index");
    let reloaded = config(&env, metrics)
        .replace(&format!("cost = {COST}"), "cost = 10")
        .replace("name = \"export\"", "name = \"export\"\nport = 8093");
    env.write_config(&reloaded);
    let out = env.ok(&["reload"]);
    assert!(out.contains("3 routes"), "{out}");
    assert_eq!(counter(&route(&env, "search"), "index"), search_index);
    assert_eq!(counter(&route(&env, "search"), "cost"), 10);
    assert_eq!(maps.routes().unwrap().len(), 5 + 1 + 5);
    assert_eq!(maps.settings().unwrap().split_head_cost, 10);

    // A restart adopts the pinned maps: the CLI's route is still there, at
    // the same index, with its counters.
    let index = counter(&r, "index");
    assert!(daemon.terminate(Duration::from_secs(10)).success());
    // (The first guard stays alive: dropping it would detach the adopter.)
    let adopter = env.start_with(&[]);
    let again = route(&env, "probe");
    assert_eq!(counter(&again, "index"), index, "{again}");
    assert_eq!(again["source"], "cli", "{again}");
    assert_eq!(counter(&again, "requests"), sent[0], "{again}");
    // And `route rm` takes it out of the kernel.
    env.ok(&["route", "rm", "probe"]);
    env.fails(&["route", "rm", "probe"], &["no route named \"probe\""]);
    assert_eq!(env.json(&["route", "list"]).as_array().unwrap().len(), 2);
    drop(adopter);
}

/// `tollgate check` (no daemon, no root) names a bad route's file and line,
/// and counts the routes of a good file.
#[test]
fn check_names_a_bad_routes_line() {
    let dir = std::env::temp_dir().join(format!("tg-{}", tollgate_tests::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tollgate.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(tollgate_tests::daemon::bin())
            .arg("--config")
            .arg(&path)
            .arg("check")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let good = "[[tier]]\nname = \"default\"\nrequests = \"100/s\"\n[[route]]\nname = \"search\"\nmatch = \"POST /api/search\"\ncost = 20\n";
    let (ok, out) = check(good);
    assert!(ok && out.contains("1 routes"), "{out}");
    let (ok, out) = check(&good.replace("cost = 20", "cost = 200"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{}:7: route \"search\": cost = 200: more than tier \"default\"'s requests burst of 100",
            path.display()
        )),
        "{out}"
    );
}

/// With every route index taken, a new route takes over the index of a
/// route that is gone, and starts with zero counters (and an idle ceiling),
/// not the old route's.
#[test]
fn a_reclaimed_route_index_starts_from_zero() {
    if !privileged("a_reclaimed_route_index_starts_from_zero") {
        return;
    }
    const PORT: u16 = 8096;
    let env = Env::new();
    let file = |names: &mut dyn Iterator<Item = String>| {
        let mut text = format!(
            "interfaces = [\"{}\"]\nmetrics_address = \"127.0.0.1:{}\"\n[[tier]]\nname = \"default\"\npackets = \"100000/s\"\n[http]\nports = [{PORT}]\n",
            env.veth.host,
            free_port()
        );
        for name in names {
            text.push_str(&format!(
                "[[route]]\nname = \"{name}\"\nmatch = \"GET /{name}\"\n"
            ));
        }
        text
    };
    let max = tollgate_common::route::MAX_ROUTES;
    env.write_config(&file(&mut (0..max).map(|i| format!("r{i}"))));
    let _daemon = env.start_with(&[]);
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    let addr = server.addr;
    env.ns
        .run(move || {
            let mut c = tollgate_tests::httpd::Client::connect(addr, Duration::from_secs(3))?;
            for _ in 0..3 {
                c.request("GET /r0 HTTP/1.1\r\nHost: t")?;
            }
            anyhow::Ok(())
        })
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    let r0 = route(&env, "r0");
    assert_eq!(counter(&r0, "requests"), 3, "{r0}");
    env.write_config(&file(
        &mut (1..max).map(|i| format!("r{i}")).chain(["late".to_owned()]),
    ));
    env.ok(&["reload"]);
    let late = route(&env, "late");
    assert_eq!(counter(&late, "index"), counter(&r0, "index"), "{late}");
    assert_eq!(counter(&late, "requests"), 0, "{late}");
}
