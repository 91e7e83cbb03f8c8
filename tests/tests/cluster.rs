//! Fleet-wide limits through Redis (agent/src/cluster).
//!
//! * The Lua script against a real `redis-server`: counts from two "nodes"
//!   add up, counters over their allowance are reported, a flushed script
//!   cache falls back to EVAL without counting twice.
//! * End to end: two real daemons, each on its own veth pair and namespace,
//!   sharing one Redis; one client (the same source address in both
//!   namespaces) sends to both at twice the global limit. The fleet admits
//!   the global limit within the documented bound; with Redis killed each node
//!   still enforces its local limit and answers `status` (cluster down); after
//!   a Redis restart the sync resumes and so does global limiting.
//!
//! Every process, namespace, interface and directory is named tg-* and goes
//! away with its guard.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde_json::Value;
use tollgate::{
    cluster::store::{self, Conn, Entry},
    config::RedisTarget,
    datapath::kernel::Maps,
};
use tollgate_common::{RULE_DENY, RULE_TIER};
use tollgate_tests::{
    daemon::{Daemon, Env},
    privileged,
    redis::{self, RedisServer},
    traffic::{Sent, send_udp_paced},
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn entry(key: &str, delta: u64, allowance: u64) -> Entry {
    Entry {
        key: key.to_owned(),
        delta,
        allowance,
    }
}

#[test]
fn the_script_adds_up_nodes_and_reports_counters_over_allowance() {
    if !redis::required("the_script_adds_up_nodes_and_reports_counters_over_allowance") {
        return;
    }
    let server = RedisServer::start().unwrap();
    let target = RedisTarget::Standalone(server.url());
    let script = store::script();
    let ttl = Duration::from_secs(3);
    runtime().block_on(async {
        let t = Duration::from_secs(2);
        let mut a = Conn::connect(&target, "a", t).await.unwrap();
        let mut b = Conn::connect(&target, "b", t).await.unwrap();
        let k = |s: &str| store::key(7, "api", 'p', s);
        let m = |node: &str, seq: u64| store::batch_marker(7, node, seq);
        // Node a: 60 of 100 for x, 10 of 100 for y: nobody over.
        let first = [entry(&k("x"), 60, 100), entry(&k("y"), 10, 100)];
        let over = a.push(&script, &m("a", 1), &first, ttl).await.unwrap();
        assert!(over.is_empty(), "{over:?}");
        // The same batch again (its answer was lost): counted once.
        let over = a.push(&script, &m("a", 1), &first, ttl).await.unwrap();
        assert!(over.is_empty(), "{over:?}");
        // Node b: 40 more for x is exactly the allowance (not over), 41 is.
        let over = b
            .push(
                &script,
                &m("b", 1),
                &[entry(&k("y"), 1, 100), entry(&k("x"), 40, 100)],
                ttl,
            )
            .await
            .unwrap();
        assert!(over.is_empty(), "{over:?}");
        let last = [entry(&k("y"), 1, 100), entry(&k("x"), 1, 100)];
        let over = b.push(&script, &m("b", 2), &last, ttl).await.unwrap();
        assert_eq!(over, [1], "x (index 1) is over");
        // Sent again: nothing added, and the answer is the same.
        let over = b.push(&script, &m("b", 2), &last, ttl).await.unwrap();
        assert_eq!(over, [1], "x (index 1) is still over");
        // More than one chunk in one round trip: indices stay global.
        let many: Vec<Entry> = (0..2500)
            .map(|i| entry(&k(&format!("s{i}")), if i == 2100 { 9 } else { 1 }, 5))
            .collect();
        assert_eq!(
            a.push(&script, &m("a", 2), &many, ttl).await.unwrap(),
            [2100]
        );
        // A restarted or flushed Redis has no script: EVAL, counted once.
        server.command("SCRIPT FLUSH").unwrap();
        let over = a
            .push(
                &script,
                &m("a", 3),
                &[entry(&k("z"), 5, 5), entry(&k("z2"), 6, 5)],
                ttl,
            )
            .await
            .unwrap();
        assert_eq!(over, [1]);
        a.ping().await.unwrap();
    });
    let get = |key: &str| server.command(&format!("GET {key}")).unwrap();
    assert!(
        get("tg:{7}:api:p:x").contains("\r\n101\r\n"),
        "x: 60 + 40 + 1, each batch once"
    );
    assert!(get("tg:{7}:api:p:z").contains("\r\n5\r\n"), "counted once");
    let ttl = server.command("PTTL tg:{7}:api:p:x").unwrap();
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ms > 0 && ms <= 3000, "TTL {ms} ms");
}

#[test]
fn the_script_runs_on_redis_cluster_one_slot_per_window() {
    if !redis::required("the_script_runs_on_redis_cluster_one_slot_per_window") {
        return;
    }
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_cluster_node().unwrap())
        .collect();
    redis::create_cluster(&nodes).unwrap();
    let target = RedisTarget::Cluster(nodes.iter().map(RedisServer::url).collect());
    let script = store::script();
    let ttl = Duration::from_secs(3);
    runtime().block_on(async {
        let t = Duration::from_secs(2);
        let mut a = Conn::connect(&target, "a", t).await.unwrap();
        let mut b = Conn::connect(&target, "b", t).await.unwrap();
        // Windows hash to different slots (and so, here, different shards).
        for window in [
            1_700_000_000u64,
            1_700_000_001,
            1_700_000_002,
            1_700_000_003,
        ] {
            let k = |s: &str| store::key(window, "api", 'p', s);
            let batch: Vec<Entry> = (0..1500)
                .map(|i| entry(&k(&format!("10.0.{}.{}", i / 256, i % 256)), 3, 5))
                .collect();
            let m = |node: &str| store::batch_marker(window, node, 1);
            assert!(
                a.push(&script, &m("a"), &batch, ttl)
                    .await
                    .unwrap()
                    .is_empty()
            );
            let over = b.push(&script, &m("b"), &batch, ttl).await.unwrap();
            assert_eq!(over.len(), 1500, "every counter is at 6 of 5");
        }
        b.ping().await.unwrap();
    });
}

#[test]
fn connecting_to_nothing_fails_within_the_timeout() {
    // Nothing listens on a port we just freed: refused or timed out, quickly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = RedisTarget::Standalone(format!("redis://127.0.0.1:{port}/"));
    let started = Instant::now();
    let r = runtime().block_on(Conn::connect(&target, "a", Duration::from_millis(200)));
    assert!(r.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---- End to end -----------------------------------------------------------

/// Per-node local limit, its burst, the global limit, the sync interval.
const LOCAL: u64 = 350;
const LOCAL_BURST: u64 = 10;
const GLOBAL: u64 = 400;
const SHARE: f64 = 0.05;
const INTERVAL_MS: u64 = 50;
/// What the client offers each node: the global limit, so twice it in all.
const OFFERED: u64 = GLOBAL;
const NODES: u64 = 2;
/// δ of the bound: round trip, rule update and scheduling delays, generous
/// for two daemons, two senders and Redis on a shared 2-core machine.
const DELTA: Duration = Duration::from_millis(100);

/// One node: a daemon in its own [`Env`] (namespace, veth pair, pins,
/// scratch dir). Field order is drop order (the daemon first).
struct Node {
    daemon: Daemon,
    env: Env,
}

impl std::ops::Deref for Node {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl Node {
    /// A node whose config has `extra` appended (`{peer}` stands for its
    /// peer's address).
    fn new(name: &str, redis_port: u16, extra: &str) -> Node {
        let env = Env::new();
        env.write_config(&format!(
            r#"default_tier = "g"

[cluster]
redis = "redis://127.0.0.1:{redis_port}/"
node_id = "{name}"
sync_interval = "{INTERVAL_MS}ms"
share = {SHARE}

[[tier]]
name = "g"
packets = "{LOCAL}/s"
packets_burst = {LOCAL_BURST}
global_packets = "{GLOBAL}/s"
{}"#,
            extra.replace("{peer}", &env.veth.peer_ip.to_string())
        ));
        let daemon = env.start();
        Node { daemon, env }
    }

    fn log(&self) -> String {
        self.daemon.log()
    }

    fn cluster(&self) -> Value {
        self.json(&["status"])["cluster"].clone()
    }

    /// (passed, dropped by the packets limit, denied) of tier g.
    fn counts(&self) -> Counts {
        let s = &self.json(&["stats", "--tier", "g"])["tiers"][0]["verdicts"];
        let n = |v: &str| s[v]["packets"].as_u64().unwrap_or(0);
        Counts {
            passed: n("passed"),
            dropped: n("dropped_packets"),
            denied: n("denied"),
        }
    }

    #[track_caller]
    fn wait_until(&mut self, what: &str, within: Duration, f: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if f(self) {
                return;
            }
            if let Some(status) = self
                .daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().unwrap())
            {
                panic!(
                    "daemon exited ({status}) waiting until {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not {what} within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    passed: u64,
    dropped: u64,
    denied: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            passed: self.passed - o.passed,
            dropped: self.dropped - o.dropped,
            denied: self.denied - o.denied,
        }
    }
}

fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The client: `source` sends OFFERED/s to each node's host side for
/// `secs`, from both namespaces at once. Returns what each sender did and the
/// wall-clock span [start, end] in seconds.
fn send_both(nodes: &[Node; 2], source: Ipv4Addr, secs: u64) -> (Vec<Sent>, f64, f64) {
    let start = unix_secs();
    let handles: Vec<_> = nodes
        .iter()
        .map(|n| {
            let dst = SocketAddr::from((n.veth.host_ip, 9));
            n.ns.run(move || -> anyhow::Result<Sent> {
                let s = UdpSocket::bind((source, 0))?;
                send_udp_paced(&s, dst, OFFERED, Duration::from_secs(secs))
            })
        })
        .collect();
    let sent = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap().unwrap())
        .collect();
    let end = unix_secs();
    // Let the last packets be judged and counted.
    std::thread::sleep(Duration::from_millis(200));
    (sent, start, end)
}

/// The documented bound on what the fleet admits over [start, end] under a
/// global limit: per 1-second window, the allowance plus each node's
/// admissions over one (jittered) interval plus δ, its burst and its unpushed
/// share, never more than the nodes' own GCRA bound for the part of the window
/// inside the span; plus one interval per node for usage charged across a
/// window boundary.
fn global_bound(start: f64, end: f64) -> f64 {
    let interval = 1.25 * INTERVAL_MS as f64 / 1000.0;
    let overshoot = NODES as f64
        * (LOCAL as f64 * (interval + DELTA.as_secs_f64())
            + LOCAL_BURST as f64
            + SHARE * GLOBAL as f64 * interval);
    let mut total = NODES as f64 * LOCAL as f64 * interval;
    let mut t = start;
    while t < end {
        let next = (t.floor() + 1.0).min(end);
        let gcra = NODES as f64 * (LOCAL as f64 * (next - t) + LOCAL_BURST as f64);
        total += (GLOBAL as f64 + overshoot).min(gcra);
        t = next;
    }
    total
}

/// What the fleet admits at least under a global limit in the whole windows of
/// [start, end]: the allowance, less what the estimate may over-count (one
/// interval per node at each of a window's two transitions).
fn global_floor(start: f64, end: f64) -> f64 {
    let interval = 1.25 * INTERVAL_MS as f64 / 1000.0;
    let whole = (end.floor() - start.ceil()).max(0.0);
    whole * (GLOBAL as f64 - NODES as f64 * 2.0 * LOCAL as f64 * interval)
}

#[track_caller]
fn assert_global_limit(phase: &str, admitted: u64, start: f64, end: f64) {
    let (floor, bound) = (global_floor(start, end), global_bound(start, end));
    let local_only = NODES as f64 * (LOCAL as f64 * (end - start) + LOCAL_BURST as f64);
    eprintln!(
        "{phase}: fleet admitted {admitted} over {:.2} s: global floor {floor:.0}, bound {bound:.0} (local limits alone: {local_only:.0})",
        end - start
    );
    assert!(
        (admitted as f64) <= bound,
        "{phase}: admitted {admitted} > bound {bound:.0}"
    );
    assert!(
        (admitted as f64) >= floor,
        "{phase}: admitted {admitted} < floor {floor:.0}"
    );
}

/// The GCRA bound of one node's local limit over `span`, within 5%.
#[track_caller]
fn assert_local_limit(node: &str, passed: u64, span: Duration) {
    let expected = LOCAL as f64 * span.as_secs_f64() + LOCAL_BURST as f64;
    let error = (passed as f64 - expected) / expected;
    eprintln!(
        "{node}: passed {passed}, local bound {expected:.0} over {span:?} ({:+.1}%)",
        error * 100.0
    );
    assert!(
        error.abs() <= 0.05,
        "{node}: passed {passed} vs {expected:.0}"
    );
}

#[test]
fn two_nodes_share_a_global_limit_and_fail_open_without_redis() {
    if !privileged("two_nodes_share_a_global_limit_and_fail_open_without_redis")
        || !redis::required("two_nodes_share_a_global_limit_and_fail_open_without_redis")
    {
        return;
    }
    let mut server = RedisServer::start().unwrap();
    let port = server.port;
    // Node a has a rule for exactly the client's address: its denies must
    // put it back when they end.
    let exact = "\n[[rule]]\ncidr = \"{peer}\"\ntier = \"g\"\n";
    let mut nodes = [
        Node::new("tg-node-a", port, exact),
        Node::new("tg-node-b", port, ""),
    ];

    // One client, one address: node a's peer address, also on node b's peer
    // (separate namespaces). Node b's namespace answers ARP from its own
    // address, so the root namespace's reverse-path checks never see it.
    let source = nodes[0].veth.peer_ip;
    nodes[1].add_foreign_source(source);

    for n in nodes.iter_mut() {
        n.wait_until("cluster up", Duration::from_secs(10), |n| {
            n.cluster()["up"] == true
        });
    }

    // 1. Redis up: the fleet is held to the global limit.
    let before: Vec<Counts> = nodes.iter().map(Node::counts).collect();
    let (_, start, end) = send_both(&nodes, source, 6);
    let delta: Vec<Counts> = nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| n.counts() - *b)
        .collect();
    eprintln!("with Redis: {delta:?}");
    assert_global_limit("with Redis", delta[0].passed + delta[1].passed, start, end);
    for (n, d) in nodes.iter().zip(&delta) {
        assert!(
            d.denied > 0,
            "node {} denied nothing: {d:?}\n{}",
            n.veth.host,
            n.log()
        );
    }
    for n in &nodes {
        let c = n.cluster();
        assert!(c["denies_total"].as_u64().unwrap() > 0, "{c}");
        assert!(c["tracked_sources"].as_u64().unwrap() >= 1, "{c}");
    }

    // 2. Redis killed: local limits keep enforcing, the daemons keep serving
    //    and say the cluster is down.
    server.stop();
    for n in nodes.iter_mut() {
        n.wait_until("cluster down", Duration::from_secs(5), |n| {
            n.cluster()["up"] == false
        });
    }
    // Denies already made end with their window.
    std::thread::sleep(Duration::from_millis(1100));
    let before: Vec<Counts> = nodes.iter().map(Node::counts).collect();
    let (sent, start, end) = send_both(&nodes, source, 4);
    let delta: Vec<Counts> = nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| n.counts() - *b)
        .collect();
    eprintln!("without Redis: {delta:?}");
    for ((n, d), s) in nodes.iter().zip(&delta).zip(&sent) {
        assert_eq!(d.denied, 0, "no global denies without Redis");
        assert!(d.dropped > 0, "the local limit drops the excess: {d:?}");
        assert_eq!(d.passed + d.dropped, s.packets, "every packet judged");
        assert_local_limit(&n.veth.host, d.passed, s.span);
    }
    let admitted = delta[0].passed + delta[1].passed;
    assert!(
        admitted as f64 > global_bound(start, end),
        "without Redis the global limit is not enforced (fail-open): {admitted}"
    );
    let c = nodes[0].cluster();
    assert_eq!(c["up"], false);
    assert!(
        c["failures"].as_u64().unwrap() > 0 && c["last_error"].is_string(),
        "{c}"
    );
    let text = String::from_utf8(nodes[0].cli(&["status"]).stdout).unwrap();
    assert!(text.contains("DOWN"), "{text}");
    assert_eq!(
        nodes[0].log().matches("Redis is unreachable").count(),
        1,
        "logged once"
    );

    // 3. Redis restarted: the sync resumes, and so does global limiting.
    server = RedisServer::start_on(port).unwrap();
    for n in nodes.iter_mut() {
        n.wait_until("cluster up again", Duration::from_secs(10), |n| {
            n.cluster()["up"] == true
        });
    }
    let before: Vec<Counts> = nodes.iter().map(Node::counts).collect();
    let (_, start, end) = send_both(&nodes, source, 4);
    let delta: Vec<Counts> = nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| n.counts() - *b)
        .collect();
    eprintln!("Redis back: {delta:?}");
    assert_global_limit("Redis back", delta[0].passed + delta[1].passed, start, end);
    assert!(delta.iter().all(|d| d.denied > 0), "{delta:?}");
    assert_eq!(
        nodes[0].log().matches("global limits are in force").count(),
        2,
        "logged once per recovery"
    );

    // 4. A daemon stopping while it denies the client lifts the deny: the
    //    program stays attached, a stale deny would outlive the window.
    let rules = |n: &Node| {
        Maps::from_pins(&n.pins.path)
            .expect("pinned maps")
            .rules()
            .unwrap()
    };
    let senders: Vec<_> = nodes
        .iter()
        .map(|n| {
            let dst = SocketAddr::from((n.veth.host_ip, 9));
            n.ns.run(move || -> anyhow::Result<Sent> {
                let s = UdpSocket::bind((source, 0))?;
                // Long enough to stay over the fleet quota through the wait
                // for the deny and both commits below: a deny legitimately
                // ends with the window once the client falls silent.
                send_udp_paced(&s, dst, OFFERED, Duration::from_secs(6))
            })
        })
        .collect();
    let denied = IpNet::from(std::net::IpAddr::from(source));
    let is_denied = |n: &Node| {
        rules(n)
            .iter()
            .any(|(net, v)| *net == denied && v.action == RULE_DENY)
    };
    nodes[0].wait_until("the client is denied", Duration::from_secs(3), is_denied);
    // A CLI change rewrites the kernel's rules from the configuration (the
    // client's exact rule is back to tier g): the sync receives the committed
    // configuration on the daemon's channel and puts its deny back within a
    // sync or two.
    // The two nodes offer twice the fleet quota, so the client is denied from
    // about 0.6 s into each 1 s window (measured: 603 to 632 ms) to its end. Each change is made
    // while it is denied there, and the deny must be back before that window
    // ends: then it came back through the daemon's channel, not from a new
    // window's count.
    let ms_into_window = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
    };
    for change in [
        &["rule", "add", "192.0.2.0/24", "--tier", "g"][..],
        &["rule", "rm", "192.0.2.0/24"][..],
    ] {
        let deadline = Instant::now() + Duration::from_secs(4);
        while !((640..720).contains(&ms_into_window()) && is_denied(&nodes[0])) {
            assert!(Instant::now() < deadline, "never denied mid-window for 4 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = Duration::from_millis(990 - u64::from(ms_into_window()));
        let commit = Instant::now();
        nodes[0].ok(change);
        nodes[0].wait_until(
            "the deny is back after a commit, before the window ends",
            left.saturating_sub(commit.elapsed()),
            is_denied,
        );
    }
    let status = nodes[0].daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    for s in senders {
        s.join().unwrap().unwrap().unwrap();
    }
    let left = rules(&nodes[0]);
    assert_eq!(left.len(), 1, "no deny left behind: {left:?}");
    assert_eq!(left[0].0, denied);
    assert_eq!(left[0].1.action, RULE_TIER, "the configured rule is back");
    drop(server);
}
