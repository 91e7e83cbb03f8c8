//! End to end: `[[response]]` bans at a real HTTP server. The daemon runs on
//! the veth with one tier (requests = 10/s, burst 10 per source) and a rule
//! that bans a source refused in 3 of the last 10 seconds for 4 s, doubling
//! per repeat. Clients in the test namespace, each from its own address,
//! send keep-alive requests; every count is the server's own.
//!
//! The bound on the time to a ban: an abuser sending `R` requests/s over a
//! limit of `r`/s with burst `b` is first refused after `b / (R - r)` s; it is
//! then refused in every second, so the engine's `N`th second with a refusal
//! starts at most `N - 1` s after the first refusal, and the once-a-second
//! judgement sees it within 1 s more: banned by `b / (R - r) + N` s after its
//! first request, plus [`SLACK`] for the ring, the TCP-stack read and the
//! state file's fsync.
//!
//! * an abuser is banned within that bound, a polite client of the same tier
//!   (half its limit) never is and loses nothing;
//! * the ban ends on time (± 1 s), measured by the first request that
//!   reaches the server after it; a second offence doubles it (within the
//!   ±10% jitter), a third again, and that ban survives a `kill -9` (the
//!   kernel keeps enforcing with no daemon) and a restart;
//! * an `ignore`d and an allow-listed abuser are never banned; a UDP flood
//!   from a client's address (over its packets limit) does not get it banned
//!   (packet evidence is opt-in: a shadow rule that opts in counts it); lone
//!   TCP segments carrying requests, from a forged source with no
//!   connection, are found but not banned (the TCP stack does not confirm
//!   them), and that source's real requests then reach the server.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::FromRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tollgate_tests::{
    daemon::{Env, free_port, metric_value, scrape_metrics},
    generator::PacketSocket,
    httpd::{Client, Server},
    packet::Packet,
    privileged,
    traffic::close_with_reset,
};

/// The tier: requests per second per source, and the burst.
const RATE: f64 = 10.0;
const BURST: f64 = 10.0;
/// The rule: banned when refused in N of the last WINDOW seconds.
const N: f64 = 3.0;
const WINDOW_SECS: u64 = 10;
/// The first ban; each repeat doubles it.
const BAN_SECS: f64 = 4.0;
/// The jitter the daemon applies to every ban (±10%).
const JITTER: f64 = 0.10;
/// The abuser's rate (requests/s, one per write, never waiting for answers).
const ABUSE_RATE: f64 = 50.0;
/// For the ring, the TCP-stack read and the state file's fsync.
const SLACK: f64 = 0.5;

const ABUSED: u16 = 8091;
const POLITE: u16 = 8092;
const OTHER: u16 = 8093;

const REQUEST: &[u8] = b"GET /api/v1/items?id=7 HTTP/1.1\r\nHost: api.test\r\n\r\n";

/// One e2e test of this file at a time: their timing bounds assume the
/// machine is not running another daemon's load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn ban_bound() -> f64 {
    BURST / (ABUSE_RATE - RATE) + N + SLACK
}

fn config(env: &Env, metrics: u16, extra: &str) -> String {
    format!(
        r#"interfaces = ["{iface}"]
mode = "native"
metrics_address = "127.0.0.1:{metrics}"
default_tier = "default"

[[tier]]
name = "default"
packets = "300/s"
packets_burst = 300
requests = "{RATE}/s"
requests_burst = {BURST}

[http]
ports = [{ABUSED}, {POLITE}, {OTHER}]

[[response]]
name = "abuse"
refused_seconds = {N}
window = "{WINDOW_SECS}s"
ban = "{BAN_SECS}s"
max_ban = "1m"
{extra}
"#,
        iface = env.veth.host,
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The `index`th extra address of the namespace (in the peer's /24).
fn peer(env: &Env, last: u8) -> Ipv4Addr {
    let o = env.veth.peer_ip.octets();
    Ipv4Addr::new(o[0], o[1], o[2], last)
}

/// A TCP connection from `from` (std has no bind-before-connect), giving up
/// after `timeout` (SO_SNDTIMEO bounds a blocking connect).
fn connect_from(from: Ipv4Addr, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
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
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
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
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        ) != 0
            || libc::bind(fd, (&raw const local).cast(), len) != 0
            || libc::connect(fd, (&raw const remote).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// An abusive client in the namespace: one keep-alive connection from `from`,
/// a request per write at [`ABUSE_RATE`], never waiting for answers, until
/// `stop` or `cap`; then the connection is reset. Returns the requests written.
fn abuse(
    env: &Env,
    from: Ipv4Addr,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    cap: Duration,
) -> std::thread::JoinHandle<anyhow::Result<u64>> {
    env.ns.run(move || {
        let stream = connect_from(from, to, Duration::from_secs(2)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut reader = stream.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let reading = stop.clone();
        let answers = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !reading.load(Ordering::Relaxed) {
                if let Ok(0) = reader.read(&mut buf) {
                    return;
                }
            }
        });
        let every = Duration::from_secs_f64(1.0 / ABUSE_RATE);
        let start = Instant::now();
        let mut sent = 0;
        let mut w = &stream;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < cap {
            let _ = w.write_all(REQUEST);
            sent += 1;
            std::thread::sleep(every);
        }
        stop.store(true, Ordering::Relaxed);
        close_with_reset(stream);
        let _ = answers.join();
        sent
    })
}

/// A polite client: one keep-alive connection from `from`, a request every
/// 200 ms (half the limit), each waiting for its answer, for `secs`.
/// Returns (sent, answered).
fn polite(
    env: &Env,
    from: Ipv4Addr,
    to: SocketAddr,
    secs: f64,
) -> std::thread::JoinHandle<anyhow::Result<(u64, u64)>> {
    env.ns.run(move || {
        let stream = connect_from(from, to, Duration::from_secs(2)).unwrap();
        let mut c = Client::from_stream(stream, Duration::from_secs(2)).unwrap();
        let start = Instant::now();
        let (mut sent, mut answered) = (0, 0);
        while start.elapsed().as_secs_f64() < secs {
            sent += 1;
            if c.request("GET /api/v1/items HTTP/1.1\r\nHost: api.test")
                .is_ok()
            {
                answered += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (sent, answered)
    })
}

/// Fresh connections from `from`, each with one request, every 50 ms or
/// so, until one is answered (returns the unix time of its answer) or
/// `deadline` (unix) passes. Connection attempts time out after 100 ms:
/// while the source is banned its SYNs are dropped. Returns (time, failed
/// attempts).
fn first_pass(env: &Env, from: Ipv4Addr, to: SocketAddr, deadline: f64) -> (Option<f64>, u64) {
    env.ns
        .run(move || {
            let mut failed = 0;
            while unix_now() < deadline {
                if let Ok(s) = connect_from(from, to, Duration::from_millis(100))
                    && let Ok(mut c) = Client::from_stream(s, Duration::from_millis(300))
                    && c.request("GET /probe HTTP/1.1\r\nHost: api.test").is_ok()
                {
                    return (Some(unix_now()), failed);
                }
                failed += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (None, failed)
        })
        .join()
        .unwrap()
        .unwrap()
}

/// The ban of `ip` in `ban list`, if any.
fn ban_of(env: &Env, ip: Ipv4Addr) -> Option<Value> {
    let want = format!("{ip}/32");
    env.json(&["ban", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["source"] == want.as_str())
        .cloned()
}

/// Waits (polling every 50 ms) until `ip` is banned or `within` passes.
fn wait_ban(env: &Env, ip: Ipv4Addr, within: Duration) -> Option<Value> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(b) = ban_of(env, ip) {
            return Some(b);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// One offence: abuse from `ip` until banned; checks the time to the ban
/// against the bound, that the server stops counting the abuser's requests,
/// and returns the ban (as `ban list` shows it).
fn offend(env: &Env, server: &Server, ip: Ipv4Addr) -> Value {
    let stop = Arc::new(AtomicBool::new(false));
    let started = unix_now();
    let writer = abuse(env, ip, server.addr, stop.clone(), Duration::from_secs(20));
    let ban = wait_ban(env, ip, Duration::from_secs_f64(ban_bound() + 5.0));
    // The abuser keeps writing for a second more: nothing of it reaches the
    // server while it is banned (its segments in flight at the ban may).
    std::thread::sleep(Duration::from_millis(300));
    let before = server.requests.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    let after = server.requests.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap().unwrap();
    let ban = ban.unwrap_or_else(|| panic!("{ip} not banned within {:.2} s", ban_bound() + 5.0));
    let took = ban["since"].as_f64().unwrap() - started;
    eprintln!(
        "{ip}: banned {took:.2} s after its first request (bound {:.2} s), offence {}, for {:.2} s; {sent} requests written",
        ban_bound(),
        ban["offence"],
        ban["until"].as_f64().unwrap() - ban["since"].as_f64().unwrap()
    );
    assert!(
        took <= ban_bound(),
        "banned after {took:.2} s, bound {:.2} s",
        ban_bound()
    );
    assert_eq!(
        after, before,
        "the server counted requests of a banned source"
    );
    ban
}

/// Measures the end of `ban` at the server: the first request from `ip` that
/// is answered must come within 1 s of the ban's end.
fn check_end(env: &Env, server: &Server, ip: Ipv4Addr, ban: &Value) {
    let until = ban["until"].as_f64().unwrap();
    let before = server.requests.load(Ordering::SeqCst);
    let (passed, failed) = first_pass(env, ip, server.addr, until + 5.0);
    let passed = passed.unwrap_or_else(|| panic!("{ip}: no request passed by {until} + 5 s"));
    assert_eq!(server.requests.load(Ordering::SeqCst), before + 1);
    eprintln!(
        "{ip}: first request answered {:+.3} s from the ban's end ({failed} attempts refused before)",
        passed - until
    );
    assert!(
        (passed - until).abs() <= 1.0,
        "the ban ended {:+.3} s from its time",
        passed - until
    );
    assert!(
        failed > 0,
        "no attempt was refused: the probe did not see the ban"
    );
    // The daemon lifts it within a second of its end (its once-a-second tick).
    env.eventually(Duration::from_secs(3), "the ban to be lifted", || {
        ban_of(env, ip).is_none()
    });
}

fn ban_length(ban: &Value) -> f64 {
    ban["until"].as_f64().unwrap() - ban["since"].as_f64().unwrap()
}

fn within_jitter(length: f64, nominal: f64) -> bool {
    length >= nominal * (1.0 - JITTER) - 0.01 && length <= nominal * (1.0 + JITTER) + 0.01
}

#[test]
fn an_abuser_is_banned_on_time_escalates_and_its_ban_survives_kill_9() {
    if !privileged("an_abuser_is_banned_on_time_escalates_and_its_ban_survives_kill_9") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    env.write_config(&config(&env, free_port(), ""));
    let mut daemon = env.start();
    let abused = Server::bind(SocketAddr::from((env.veth.host_ip, ABUSED))).unwrap();
    let polite_server = Server::bind(SocketAddr::from((env.veth.host_ip, POLITE))).unwrap();
    let abuser = env.veth.peer_ip;
    let good = peer(&env, 60);
    env.add_peer_address(good);

    // First offence, with a polite client of the same tier alongside.
    // As long as the abuser can take to be banned, and over before the
    // earliest end of the first ban (refusals in N distinct seconds take
    // more than N - 1 s, the ban at least 0.9 × its length), which is
    // probed after it.
    let polite_secs = ban_bound();
    assert!(
        polite_secs < N - 1.0 + 0.9 * BAN_SECS,
        "the polite client would outlast the first ban"
    );
    let polite_client = polite(&env, good, polite_server.addr, polite_secs);
    let first = offend(&env, &abused, abuser);
    assert_eq!(first["offence"], 1);
    assert_eq!(first["rule"], "abuse");
    assert!(within_jitter(ban_length(&first), BAN_SECS), "{first}");
    // Explain names the ban while it is in force (the polite client runs
    // longer than the ban, and an ended ban is explained as its tier).
    let e = env.json(&["explain", &abuser.to_string()]);
    assert_eq!(e["action"], "denied", "{e}");
    assert_eq!(e["rule"]["origin"], "ban", "{e}");
    assert_eq!(e["ban"]["rule"], "abuse", "{e}");
    let (sent, answered) = polite_client.join().unwrap().unwrap();
    assert_eq!(answered, sent, "the polite client lost requests");
    assert_eq!(polite_server.requests.load(Ordering::SeqCst), sent);
    assert!(ban_of(&env, good).is_none(), "the polite client was banned");
    check_end(&env, &abused, abuser, &first);

    // Second offence: doubled.
    let second = offend(&env, &abused, abuser);
    assert_eq!(second["offence"], 2);
    assert!(
        within_jitter(ban_length(&second), 2.0 * BAN_SECS),
        "{second}"
    );
    check_end(&env, &abused, abuser, &second);

    // Third: doubled again; the daemon is killed during it.
    let third = offend(&env, &abused, abuser);
    assert_eq!(third["offence"], 3);
    assert!(within_jitter(ban_length(&third), 4.0 * BAN_SECS), "{third}");
    let until = third["until"].as_f64().unwrap();
    daemon.kill9();
    // One log line per ban, with its source, rule, length and offence.
    let log = daemon.log();
    let banned = format!("banned {abuser}/32 for");
    assert_eq!(log.matches(&banned).count(), 3, "{log}");
    assert!(log.contains("offence 3, by abuse"), "{log}");
    // No daemon: the kernel still drops the banned source (counted at the
    // server: nothing arrives).
    let before = abused.requests.load(Ordering::SeqCst);
    let (passed, failed) = first_pass(&env, abuser, abused.addr, unix_now() + 1.0);
    assert!(
        passed.is_none() && failed > 0,
        "a banned source got through with no daemon"
    );
    assert_eq!(abused.requests.load(Ordering::SeqCst), before);
    let mut daemon = env.start();
    let restored = ban_of(&env, abuser).expect("the ban is restored from the state file");
    assert!((restored["until"].as_f64().unwrap() - until).abs() < 1e-3);
    assert_eq!(restored["offence"], 3);
    // And across a clean restart.
    daemon.terminate(Duration::from_secs(10));
    let daemon = env.start();
    assert!(
        ban_of(&env, abuser).is_some(),
        "the ban is gone after a restart"
    );
    assert!(
        unix_now() < until - 1.0,
        "the restarts took too long to check the end of the ban"
    );
    check_end(&env, &abused, abuser, &third);

    // One log line per lift.
    let log = daemon.log();
    assert_eq!(
        log.matches(&format!("ban of {abuser}/32 lifted (expired)"))
            .count(),
        1,
        "{log}"
    );
    drop(daemon);
}

#[test]
fn ignored_allowed_and_forged_sources_are_never_banned() {
    if !privileged("ignored_allowed_and_forged_sources_are_never_banned") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let ignored = peer(&env, 70);
    let allowed = peer(&env, 71);
    let victim = peer(&env, 72);
    let forged = peer(&env, 73);
    for ip in [ignored, allowed, victim, forged] {
        env.add_peer_address(ip);
    }
    let metrics = free_port();
    let text = config(
        &env,
        metrics,
        &format!(
            r#"ignore = ["{ignored}/32"]

[[response]]
name = "packet-floods"
evidence = "packets"
refused_seconds = 2
window = "10s"
mode = "shadow"

[[rule]]
cidr = "{allowed}/32"
action = "allow"
"#
        ),
    );
    env.write_config(&text);
    let daemon = env.start();
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, ABUSED))).unwrap();
    let other = Server::bind(SocketAddr::from((env.veth.host_ip, OTHER))).unwrap();
    let span = Duration::from_secs_f64(ban_bound() + 2.0);

    // An ignored and an allow-listed abuser.
    let stops = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let writers = [
        abuse(&env, ignored, server.addr, stops[0].clone(), span),
        abuse(&env, allowed, other.addr, stops[1].clone(), span),
    ];
    // A UDP flood over the packets limit from a client's address, while
    // that client holds a keep-alive connection (so the TCP stack would
    // confirm it).
    let victim_client = polite(&env, victim, other.addr, span.as_secs_f64());
    let host = env.veth.host_ip;
    let flooded = Arc::new(AtomicU64::new(0));
    let udp = {
        let flooded = flooded.clone();
        env.ns.run(move || {
            let s = std::net::UdpSocket::bind((victim, 0)).unwrap();
            let start = Instant::now();
            while start.elapsed() < span {
                for _ in 0..20 {
                    let _ = s.send_to(&[0x5a; 64], (host, 9));
                    flooded.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Lone TCP segments carrying requests from a forged source that holds no
    // connection: the kernel refuses them over the requests limit.
    let peer_if = env.veth.peer.clone();
    let forged_frames = env.ns.run(move || {
        let s = PacketSocket::open(&peer_if).expect("packet socket");
        let frame = Packet::from(forged)
            .tcp(0x18)
            .dst_port(OTHER)
            .payload(b"GET /login HTTP/1.1\r\nHost: api.test\r\n\r\n")
            .build();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < span {
            sent += s.send_batch(&[&frame]).unwrap_or(0) as u64;
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    });
    udp.join().unwrap().unwrap();
    let forged_sent = forged_frames.join().unwrap().unwrap();
    for s in &stops {
        s.store(true, Ordering::Relaxed);
    }
    let written: Vec<u64> = writers
        .into_iter()
        .map(|w| w.join().unwrap().unwrap())
        .collect();
    let _ = victim_client.join().unwrap().unwrap();
    eprintln!(
        "over {:.1} s: ignored and allowed abusers wrote {written:?} requests, {} UDP datagrams from {victim}, {forged_sent} forged request segments from {forged}",
        span.as_secs_f64(),
        flooded.load(Ordering::Relaxed)
    );
    assert!(
        written
            .iter()
            .all(|w| *w as f64 >= ABUSE_RATE * ban_bound())
    );
    let bans = env.json(&["ban", "list"]);
    assert_eq!(bans.as_array().unwrap().len(), 0, "bans: {bans}");

    // Not vacuous: the engine saw what it did not ban.
    let body = scrape_metrics(metrics);
    let unconfirmed = metric_value(&body, "tollgate_bans_unconfirmed_total");
    let would = metric_value(&body, "tollgate_bans_shadow_total{rule=\"packet-floods\"}");
    assert_eq!(would, 1.0, "one would-be ban, for the flooded address");
    eprintln!("unconfirmed findings {unconfirmed}, shadow would-bans {would}");
    assert!(unconfirmed >= 1.0, "the forged source was never found");
    assert!(would >= 1.0, "the UDP flood never reached the packet rule");
    // The ignored abuser was limited (not allowed), so it had evidence.
    assert!(
        (server.requests.load(Ordering::SeqCst) as f64)
            < RATE * span.as_secs_f64() + BURST + RATE * 2.0
    );
    // The forged source's and the victim's own requests reach the server.
    for ip in [forged, victim] {
        let before = other.requests.load(Ordering::SeqCst);
        let (passed, _) = first_pass(&env, ip, other.addr, unix_now() + 3.0);
        assert!(passed.is_some(), "{ip} cannot reach the server");
        assert_eq!(other.requests.load(Ordering::SeqCst), before + 1);
    }
    // An allow-listed source cannot be banned by hand either.
    env.fails(
        &["ban", "add", &allowed.to_string(), "--for", "1m"],
        &["allow-listed"],
    );
    let log = daemon.log();
    for line in log
        .lines()
        .filter(|l| l.contains("would ban") || l.contains("not banned"))
    {
        eprintln!("{line}");
    }
    // Once for the flooded address, and for no other.
    let would: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shadow: would ban"))
        .collect();
    assert_eq!(would.len(), 1, "{log}");
    assert!(
        would[0].contains(&format!("would ban {victim}/32")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "came with no TCP connection to an HTTP port (forged?), e.g. {forged}/32"
        )),
        "{log}"
    );
}

#[test]
fn bans_by_hand_list_end_and_lift() {
    if !privileged("bans_by_hand_list_end_and_lift") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    env.write_config(&config(&env, free_port(), ""));
    let daemon = env.start();
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, POLITE))).unwrap();
    let ip = env.veth.peer_ip;
    // `rule add --deny --for` is a ban; `ban rm` lifts it at once.
    env.ok(&["rule", "add", &ip.to_string(), "--deny", "--for", "1h"]);
    let b = ban_of(&env, ip).expect("listed");
    assert_eq!(b["rule"], "cli");
    assert!((ban_length(&b) - 3600.0).abs() < 1.0);
    let (passed, failed) = first_pass(&env, ip, server.addr, unix_now() + 1.0);
    assert!(
        passed.is_none() && failed > 0,
        "a banned source got through"
    );
    env.ok(&["ban", "rm", &ip.to_string()]);
    let (passed, _) = first_pass(&env, ip, server.addr, unix_now() + 2.0);
    assert!(
        passed.is_some(),
        "the lifted source cannot reach the server"
    );
    // `ban add --for 3s` ends by itself, on time, at the server.
    env.ok(&[
        "ban",
        "add",
        &ip.to_string(),
        "--for",
        "3s",
        "--reason",
        "test",
    ]);
    let b = ban_of(&env, ip).expect("listed");
    assert_eq!(b["reason"], "test");
    assert_eq!(env.json(&["status"])["bans"], 1);
    check_end(&env, &server, ip, &b);
    // Errors name the bad value.
    env.fails(
        &["ban", "add", "10.0.0.300", "--for", "1m"],
        &["10.0.0.300"],
    );
    env.fails(&["ban", "add", &ip.to_string(), "--for", "10x"], &["10x"]);
    env.fails(
        &["ban", "rm", "192.0.2.99"],
        &["192.0.2.99/32 is not banned"],
    );
    env.fails(
        &["rule", "add", &ip.to_string(), "--for", "1m"],
        &["--deny"],
    );
    drop(daemon);
}
