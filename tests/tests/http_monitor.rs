//! End to end: the L7 monitor with a real HTTP server on the protected host
//! side of the veth and real clients in the test namespace (keep-alive,
//! fresh connections, and curl), read back through the CLI and /metrics.

use std::{net::SocketAddr, process::Command, time::Duration};

use serde_json::Value;
use tollgate::{apikeys::hash_key, datapath::kernel::Maps};
use tollgate_tests::{
    daemon::{Env, free_port, scrape_metrics},
    httpd::{Client, Server, request_once},
    privileged,
};

const PORT: u16 = 8080;
const SALT: &str = "pepper-for-tests";
const GOLD_KEY: &str = "k-gold-8c1f27";
/// Planted in headers and query strings; must never come out of the daemon.
const SECRETS: [&str; 5] = [
    "SECRETAUTH",
    "SECRETQUERY",
    "SECRETCOOKIE",
    GOLD_KEY,
    "SECRETUNKNOWNKEY",
];

fn config(env: &Env, metrics_port: u16, default_requests: &str) -> String {
    format!(
        r#"interfaces = ["{iface}"]
mode = "native"
metrics_address = "127.0.0.1:{metrics_port}"
default_tier = "default"

[[tier]]
name = "default"
packets = "100000/s"
{default_requests}

[[tier]]
name = "gold"
packets = "100000/s"
requests = "10000/s"

[http]
ports = [{PORT}]
snap_len = 512
sample_every = 1
budget = "100000/s"
verdict_sample_every = 1

[api_keys]
salt = "{SALT}"
ttl_seconds = 2

[[api_keys.key]]
sha256 = "{hash}"
tier = "gold"
"#,
        iface = env.veth.host,
        hash = hash_key(SALT, GOLD_KEY.as_bytes()),
    )
}

fn route_count(top: &Value, route: &str) -> u64 {
    top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == route)
        .map_or(0, |r| r[1].as_u64().unwrap())
}

#[test]
fn routes_are_counted_and_secrets_never_leave_the_daemon() {
    if !privileged("routes_are_counted_and_secrets_never_leave_the_daemon") {
        return;
    }
    let env = Env::new();
    let metrics_port = free_port();
    env.write_config(&config(&env, metrics_port, "requests = \"10000/s\""));
    let daemon = env.start_with(&[]);
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    let addr = server.addr;

    // `http tail` runs for the whole traffic phase; its output is checked too.
    let mut tail = env.http_tail(false);
    std::thread::sleep(Duration::from_millis(300)); // let tail subscribe

    // Keep-alive: 20 GETs on one connection. Fresh connections: 10 POSTs.
    let keepalive = env.ns.run(move || -> anyhow::Result<()> {
        let mut c = Client::connect(addr, Duration::from_secs(3))?;
        for i in 0..20 {
            c.request(&format!(
                "GET /users/{i}?token=SECRETQUERY{i}&page=2 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer SECRETAUTH\r\nCookie: sid=SECRETCOOKIE\r\nX-Api-Key: SECRETUNKNOWNKEY"
            ))?;
        }
        for i in 0..10 {
            request_once(
                addr,
                &format!("POST /orders/550e8400-e29b-41d4-a716-4466554400{i:02} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 0"),
                Duration::from_secs(3),
            )?;
        }
        Ok(())
    });
    keepalive.join().unwrap().unwrap().unwrap();
    // curl, 5 fresh connections.
    for _ in 0..5 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &env.ns.name,
                "curl",
                "-sS",
                "--max-time",
                "3",
            ])
            .arg(format!("http://{addr}/health?key=SECRETQUERYCURL"))
            .output()
            .expect("curl (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::Relaxed),
        35
    );

    let json = |args: &[&str]| -> Value {
        serde_json::from_str(&env.ok(&[&["--json"], args].concat())).unwrap()
    };
    env.eventually(
        Duration::from_secs(5),
        "all 35 requests in http top",
        || {
            let top = json(&["http", "top", "--by", "route"]);
            route_count(&top, "/users/{id}")
                + route_count(&top, "/orders/{id}")
                + route_count(&top, "/health")
                >= 35
        },
    );
    let by_route = json(&["http", "top", "--by", "route"]);
    // Sampling 1 in 1: exact (a TCP retransmission would be sampled twice).
    assert_eq!(route_count(&by_route, "/users/{id}"), 20, "{by_route}");
    assert_eq!(route_count(&by_route, "/orders/{id}"), 10, "{by_route}");
    assert_eq!(route_count(&by_route, "/health"), 5, "{by_route}");
    let by_host = json(&["http", "top", "--by", "host"]);
    assert_eq!(route_count(&by_host, "api.test"), 20);
    assert_eq!(route_count(&by_host, "shop.test"), 10);
    let by_method = json(&["http", "top", "--by", "method"]);
    assert_eq!(route_count(&by_method, "GET"), 25);
    assert_eq!(route_count(&by_method, "POST"), 10);

    let _ = tail.kill();
    let tail_out = tail.wait_with_output().unwrap();
    let tail_text = String::from_utf8_lossy(&tail_out.stdout).into_owned();
    assert!(
        tail_text.contains("GET /users/{id}?token=<redacted>&page=<redacted> host=api.test"),
        "{tail_text}"
    );
    assert!(tail_text.lines().count() >= 35, "{tail_text}");

    // Everything the daemon exposes or writes, checked for every secret.
    let metrics = scrape_metrics(metrics_port);
    assert!(metrics.contains(r#"route="/users/{id}""#), "{metrics}");
    let mut everything = vec![
        ("http tail", tail_text),
        ("metrics", metrics),
        ("http top", format!("{by_route}{by_host}{by_method}")),
        ("top", env.ok(&["--json", "top", "--by", "requests"])),
        ("stats", env.ok(&["--json", "stats"])),
        ("status", env.ok(&["--json", "status"])),
        ("http inventory", env.ok(&["http", "inventory"])),
        (
            "http inventory --json",
            env.ok(&["--json", "http", "inventory"]),
        ),
    ];
    // The inventory file is written at the stop.
    let mut daemon = daemon;
    daemon.terminate(Duration::from_secs(10));
    assert!(env.dir.join("state/inventory.json").exists());
    everything.push(("daemon log", daemon.log()));
    everything.extend(files_under(&env.dir));
    for (what, text) in &everything {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked into {what}");
        }
    }
}

/// Every file the daemon wrote under `dir` (state, logs), as text to search.
fn files_under(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    walk(dir)
        .into_iter()
        .map(|entry| {
            (
                "file under the state/scratch dir",
                String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()).into_owned(),
            )
        })
        .collect()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_none_or(|x| x != "sock") {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_api_key_moves_its_client_to_the_keys_tier_until_the_pin_expires() {
    if !privileged("an_api_key_moves_its_client_to_the_keys_tier_until_the_pin_expires") {
        return;
    }
    let env = Env::new();
    // The default tier allows a burst of 2 requests, then one every 10 s.
    env.write_config(&config(
        &env,
        free_port(),
        "requests = \"6/min\"\nrequests_burst = 2",
    ));
    let _daemon = env.start_with(&[]);
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    let addr = server.addr;
    let gold = env.tier_index("gold");

    // 12 requests with the key on one keep-alive connection: the first is
    // sampled, the key pins the client's /32 to gold, and all 12 are served
    // although the default tier would have dropped every one after the second.
    let mut client = env
        .ns
        .run(move || -> anyhow::Result<Client> {
            let mut c = Client::connect(addr, Duration::from_secs(5))?;
            c.request(&format!(
                "GET /a HTTP/1.1\r\nHost: t\r\nX-Api-Key: {GOLD_KEY}"
            ))?;
            Ok(c)
        })
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    let pinned = |maps: &Maps| {
        maps.rules()
            .unwrap()
            .into_iter()
            .any(|(net, v)| net.to_string() == format!("{}/32", env.veth.peer_ip) && v.tier == gold)
    };
    env.eventually(Duration::from_secs(5), "the key's pin", || pinned(&maps));
    for _ in 0..11 {
        client
            .request(&format!(
                "GET /a HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {GOLD_KEY}"
            ))
            .unwrap();
    }
    assert!(pinned(&maps));
    let stats: Value =
        serde_json::from_str(&env.ok(&["--json", "stats", "--tier", "gold"])).unwrap();
    let passed = stats["tiers"][0]["verdicts"]["passed"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        passed >= 11,
        "gold admitted the key holder's traffic: {stats}"
    );

    // Without the key, a client (another address) gets the default tier: its
    // third request is dropped at XDP, so it does not complete in time.
    let other = std::net::Ipv4Addr::new(
        env.veth.peer_ip.octets()[0],
        env.veth.peer_ip.octets()[1],
        env.veth.peer_ip.octets()[2],
        77,
    );
    env.add_peer_address(other);
    let served = env
        .ns
        .run(move || -> usize {
            let Ok(s) = socket2_bind(other, addr) else {
                return 0;
            };
            let mut c = s;
            (0..3)
                .filter(|_| c.request("GET /b HTTP/1.1\r\nHost: t").is_ok())
                .count()
        })
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(
        served, 2,
        "the default tier serves its burst of 2 and drops the rest"
    );

    // The pin expires (ttl 2 s) and the kernel rule goes with it.
    env.eventually(Duration::from_secs(6), "the pin to expire", || {
        !pinned(&maps)
    });
}

/// `[api_keys]` reach the HTTP monitor on the daemon's configuration channel:
/// a key that a reload adds pins its client from the next request on.
#[test]
fn a_key_added_by_a_reload_pins_its_client_from_the_next_request() {
    if !privileged("a_key_added_by_a_reload_pins_its_client_from_the_next_request") {
        return;
    }
    let env = Env::new();
    let with_key = config(&env, free_port(), "requests = \"10000/s\"");
    // The same file with another key's hash in place of GOLD_KEY's.
    let without_key = with_key.replace(
        &hash_key(SALT, GOLD_KEY.as_bytes()),
        &hash_key(SALT, b"another-key"),
    );
    assert_ne!(with_key, without_key);
    env.write_config(&without_key);
    let _daemon = env.start_with(&[]);
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    let addr = server.addr;
    let gold = env.tier_index("gold");
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    let pinned = || {
        maps.rules()
            .unwrap()
            .into_iter()
            .any(|(net, v)| net.to_string() == format!("{}/32", env.veth.peer_ip) && v.tier == gold)
    };
    let get = |path: &'static str| {
        env.ns
            .run(move || {
                request_once(
                    addr,
                    &format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Api-Key: {GOLD_KEY}"),
                    Duration::from_secs(3),
                )
            })
            .join()
            .unwrap()
            .unwrap()
            .unwrap();
    };
    let sampled = |route: &str| {
        let top: Value =
            serde_json::from_str(&env.ok(&["--json", "http", "top", "--by", "route"])).unwrap();
        route_count(&top, route) > 0
    };

    get("/before");
    env.eventually(Duration::from_secs(5), "/before sampled", || {
        sampled("/before")
    });
    assert!(!pinned(), "the key is not configured yet");

    env.write_config(&with_key);
    env.ok(&["reload"]);
    get("/after");
    env.eventually(Duration::from_secs(5), "the key's pin", pinned);
    assert!(sampled("/after"));
}

/// A keep-alive client whose connection comes from `from`.
fn socket2_bind(from: std::net::Ipv4Addr, to: SocketAddr) -> anyhow::Result<Client> {
    // std has no bind-before-connect; a TcpStream from a bound socket via libc.
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a fresh fd we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let local = sin(from, 0);
    let SocketAddr::V4(to4) = to else {
        anyhow::bail!("IPv4 only")
    };
    let remote = sin(*to4.ip(), to4.port());
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    unsafe {
        let stream = std::net::TcpStream::from_raw_fd(fd);
        anyhow::ensure!(
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) == 0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        anyhow::ensure!(
            libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) == 0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
        Client::from_stream(stream, Duration::from_millis(1500))
    }
}

#[test]
fn malformed_and_truncated_requests_are_counted_and_never_crash_the_daemon() {
    if !privileged("malformed_and_truncated_requests_are_counted_and_never_crash_the_daemon") {
        return;
    }
    let env = Env::new();
    let metrics_port = free_port();
    env.write_config(&config(&env, metrics_port, "requests = \"10000/s\""));
    let _daemon = env.start_with(&[]);
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    let addr = server.addr;
    env.ns
        .run(move || {
            for bad in [
                &b"GET \x00\x01\x02\x03 HTTP/1.1\r\n\r\n"[..],
                b"POST /x HTTP/9.9\r\n\r\n",
                b"PUT /y\r\n",
                b"DELETE /z HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
            ] {
                if let Ok(mut c) = Client::connect(addr, Duration::from_secs(2)) {
                    let _ = c.send_raw(bad);
                }
            }
            // A huge head: only snap_len bytes are captured.
            if let Ok(mut c) = Client::connect(addr, Duration::from_secs(2)) {
                let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(3000));
                let _ = c.send_raw(long.as_bytes());
            }
        })
        .join()
        .unwrap()
        .unwrap();
    env.eventually(Duration::from_secs(5), "malformed samples counted", || {
        let top: Value = serde_json::from_str(&env.ok(&["--json", "http", "top"])).unwrap();
        top["malformed"].as_u64().unwrap_or(0) >= 3
    });
    let metrics = scrape_metrics(metrics_port);
    let malformed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_http_malformed_samples_total "))
        .expect("malformed metric")
        .parse()
        .unwrap();
    assert!(malformed >= 3.0, "{malformed}");
    // Still serving, and a good request is still understood.
    env.ok(&["status"]);
    env.ns
        .run(move || {
            request_once(
                addr,
                "GET /fine HTTP/1.1\r\nHost: t",
                Duration::from_secs(3),
            )
        })
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    env.eventually(
        Duration::from_secs(5),
        "the good request after the bad ones",
        || {
            let top: Value = serde_json::from_str(&env.ok(&["--json", "http", "top"])).unwrap();
            route_count(&top, "/fine") == 1
        },
    );
}

/// Samples name their tier from the first request after a change, not after
/// the next once-a-second refresh: `tier set` + `rule add` moving the client
/// to a new tier, then a reload moving it to a tier the file adds.
#[test]
fn sampled_requests_name_the_tier_at_once_after_tier_set_and_reload() {
    if !privileged("sampled_requests_name_the_tier_at_once_after_tier_set_and_reload") {
        return;
    }
    let env = Env::new();
    let metrics_port = free_port();
    let base = config(&env, metrics_port, "requests = \"10000/s\"");
    env.write_config(&base);
    let _daemon = env.start_with(&[]);
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    let addr = server.addr;
    let mut tail = env.http_tail(false);
    std::thread::sleep(Duration::from_millis(300)); // let tail subscribe
    let get = |path: &'static str| {
        env.ns
            .run(move || {
                request_once(
                    addr,
                    &format!("GET {path} HTTP/1.1\r\nHost: tiers.test"),
                    Duration::from_secs(3),
                )
            })
            .join()
            .unwrap()
            .unwrap()
            .unwrap();
    };
    let client = format!("{}/32", env.veth.peer_ip);

    env.ok(&["tier", "set", "silver", "--packets", "100000/s"]);
    env.ok(&["rule", "add", &client, "--tier", "silver"]);
    get("/after-tier-set");

    env.ok(&["rule", "rm", &client]);
    env.write_config(&format!(
        "{base}\n[[tier]]\nname = \"bronze\"\npackets = \"100000/s\"\n\n[[rule]]\ncidr = \"{client}\"\ntier = \"bronze\"\n"
    ));
    env.ok(&["reload"]);
    get("/after-reload");

    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    std::thread::sleep(Duration::from_millis(500)); // the samples reach tail
    let _ = tail.kill();
    let out = tail.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line_of = |path: &str| {
        text.lines()
            .find(|l| l.contains(&format!(" {path} ")))
            .unwrap_or_else(|| panic!("no tail line for {path}:\n{text}"))
            .to_owned()
    };
    assert!(line_of("/after-tier-set").contains(" silver ["), "{text}");
    assert!(line_of("/after-reload").contains(" bronze ["), "{text}");
}

/// Secrets a request carries in its path and query, of every class the
/// templates know (integers, UUIDs, object ids, mixed alphanumerics, JWTs,
/// base64 tokens, e-mails, path parameters, a bare query, percent-encoded
/// `key=value`, absolute-form userinfo), and secrets in a Host's userinfo and
/// a Content-Type, reach none of `http tail` (text and JSON), `http top`,
/// `http inventory` (text and JSON), `/metrics`, the daemon's log at trace
/// level or its files (the state file and the inventory file included).
#[test]
fn secrets_in_paths_and_queries_reach_no_output() {
    if !privileged("secrets_in_paths_and_queries_reach_no_output") {
        return;
    }
    const PLANTED: [(&str, &str); 11] = [
        ("/accounts/48213977/statement", "48213977"),
        (
            "/o/9b2f61c4-1d7e-4a55-8f0e-3c2a7d9e1b60",
            "9b2f61c4-1d7e-4a55-8f0e-3c2a7d9e1b60",
        ),
        (
            "/objects/65f1c0ffee1234abcd567890",
            "65f1c0ffee1234abcd567890",
        ),
        ("/reset/k8d3m2x9q7w4", "k8d3m2x9q7w4"),
        (
            "/session/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.Zm9vYmFyYmF6cXV4",
            "eyJzdWIiOiJib2IifQ",
        ),
        (
            "/dl/QmFzZTY0U2VjcmV0VG9rZW45OTk",
            "QmFzZTY0U2VjcmV0VG9rZW45OTk",
        ),
        (
            "/inbox/carol.secret@mail.test/unread",
            "carol.secret@mail.test",
        ),
        ("/cart;jsessionid=PARAMSECRET77", "PARAMSECRET77"),
        ("/search?Zq81kXp3BareSecret0Tw2", "Zq81kXp3BareSecret0Tw2"),
        ("/q?apikey%3DENCODEDSECRET55", "ENCODEDSECRET55"),
        (
            "http://admin:USERINFOSECRET@api.test/proxy",
            "USERINFOSECRET",
        ),
    ];
    // Secrets in the headers the inventory keeps (Host, Content-Type).
    const IN_HEADERS: [(&str, &str); 2] = [
        (
            "GET /profile HTTP/1.1\r\nHost: admin:HOSTUSERINFOSECRET@api.test",
            "HOSTUSERINFOSECRET",
        ),
        (
            "GET /profile HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/x-Zq81kXp3CtSecret0Tw2",
            "Zq81kXp3CtSecret0Tw2",
        ),
    ];
    let env = Env::new();
    let metrics_port = free_port();
    env.write_config(&config(&env, metrics_port, "requests = \"10000/s\""));
    let mut daemon = env.start_logging(&[], "trace");
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    let addr = server.addr;
    let (mut text_tail, mut json_tail) = (env.http_tail(false), env.http_tail(true));
    std::thread::sleep(Duration::from_millis(300)); // let both subscribe
    env.ns
        .run(move || -> anyhow::Result<()> {
            let mut c = Client::connect(addr, Duration::from_secs(3))?;
            for (target, _) in PLANTED {
                c.request(&format!("GET {target} HTTP/1.1\r\nHost: api.test"))?;
            }
            for (head, _) in IN_HEADERS {
                c.request(head)?;
            }
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    let sent = (PLANTED.len() + IN_HEADERS.len()) as u64;
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::Relaxed),
        sent
    );
    let json = |args: &[&str]| -> Value {
        serde_json::from_str(&env.ok(&[&["--json"], args].concat())).unwrap()
    };
    env.eventually(Duration::from_secs(5), "every request in http top", || {
        let top = json(&["http", "top", "--by", "method"]);
        route_count(&top, "GET") >= sent
    });
    std::thread::sleep(Duration::from_millis(300)); // the samples reach tail
    let _ = text_tail.kill();
    let _ = json_tail.kill();
    let text = String::from_utf8_lossy(&text_tail.wait_with_output().unwrap().stdout).into_owned();
    let json_text =
        String::from_utf8_lossy(&json_tail.wait_with_output().unwrap().stdout).into_owned();
    assert_eq!(text.lines().count() as u64, sent, "{text}");
    assert!(text.contains("GET /accounts/{id}/statement "), "{text}");
    assert!(text.contains("GET /inbox/{email}/unread "), "{text}");
    assert!(text.contains("GET /cart;{param} "), "{text}");
    let mut everything = vec![
        ("http tail", text),
        ("http tail --json", json_text),
        ("metrics", scrape_metrics(metrics_port)),
        (
            "http top",
            format!(
                "{}{}",
                json(&["http", "top", "--by", "route", "-n", "100"]),
                json(&["http", "top", "--by", "host"])
            ),
        ),
    ];
    let inventory_text = env.ok(&["http", "inventory"]);
    assert!(
        inventory_text.contains("/accounts/{id}/statement"),
        "{inventory_text}"
    );
    assert!(
        inventory_text.contains("application/{id}"),
        "{inventory_text}"
    );
    let inventory = json(&["http", "inventory"]);
    let seen: u64 = inventory["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(seen, sent, "{inventory:#}");
    everything.push(("http inventory", inventory_text));
    everything.push(("http inventory --json", inventory.to_string()));
    // The inventory file is written at the stop; the log is complete then.
    daemon.terminate(Duration::from_secs(10));
    assert!(env.dir.join("state/inventory.json").exists());
    let log = daemon.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "not a trace-level log:\n{log}"
    );
    everything.push(("daemon log (trace)", log));
    everything.extend(files_under(&env.dir));
    for (what, out) in &everything {
        for (target, secret) in PLANTED.iter().chain(&IN_HEADERS) {
            assert!(
                !out.contains(secret),
                "{secret} (from {target}) leaked into {what}:\n{out}"
            );
        }
    }
}
