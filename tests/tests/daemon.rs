//! End to end: the real `tollgate` binary as an operator uses it. A daemon runs
//! on the host side of a veth pair whose peer lives in a test namespace; the
//! CLI talks to it over its socket; UDP traffic from the namespace is judged
//! by the attached XDP program.
//!
//! Every daemon runs with its own `--pin-dir /sys/fs/bpf/tg-<id>`, `--socket`
//! and `--state` under `/tmp/tg-<id>/`, and is killed and detached when its
//! guard drops (also while a failing test unwinds), so nothing stays attached.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, UdpSocket},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tollgate::datapath::kernel::Maps;
use tollgate_common::{LimitKind, Meta, Verdict, names};
use tollgate_tests::{
    daemon::{Env, bin, u64_at},
    net::{PinDir, sh},
    privileged,
    traffic::send_udp_paced,
    unique_id,
};

fn packets(tier_stats: &Value, verdict: Verdict) -> u64 {
    u64_at(tier_stats, &["verdicts", verdict.name(), "packets"])
}

const BASE_CONFIG: &str = r#"# test config
[[tier]]
name = "default"
packets = "1000/s"
bytes = "10MB/s"
"#;

#[test]
fn live_tier_and_rule_changes_take_effect() {
    if !privileged("live_tier_and_rule_changes_take_effect") {
        return;
    }
    let env = Env::new();
    env.write_config(&format!(
        "socket = \"{}\"\n{BASE_CONFIG}",
        env.socket.display()
    ));
    let _d = env.start();
    assert!(env.xdp_attached());

    // status: what is attached where, from which config.
    let status = env.json(&["status"]);
    assert_eq!(status["start"], "fresh");
    assert_eq!(status["interfaces"][0]["name"], env.veth.host.as_str());
    assert_eq!(status["interfaces"][0]["attached"], true);
    assert!(
        status["interfaces"][0]["mode"] == "native" || status["interfaces"][0]["mode"] == "generic"
    );
    assert_eq!(status["config_source"], env.config.to_str().unwrap());
    assert_eq!(status["pin_dir"], env.pins.path.to_str().unwrap());
    assert_eq!(u64_at(&status, &["sources_v4", "max"]), 1 << 20);
    assert_eq!(u64_at(&status, &["tiers", "used"]), 1);
    let text = env.ok(&["status"]);
    assert!(
        text.contains("sources v4") && text.contains("1,048,576"),
        "{text}"
    );
    // The CLI finds the socket through --config alone.
    let out = Command::new(bin())
        .arg("--config")
        .arg(&env.config)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // top: the plumbing answers (the kernel does not feed it yet).
    let top = env.json(&["top", "--by", "drops", "-n", "5"]);
    assert_eq!(top["by"], "drops");
    assert!(top["rows"].is_array());
    if top["rows"].as_array().unwrap().is_empty() {
        assert!(env.ok(&["top"]).contains("no sources observed yet"));
    }

    let out = env.ok(&[
        "tier",
        "set",
        "default",
        "--packets",
        "10/s",
        "--burst",
        "10",
    ]);
    assert!(out.contains("tier default updated"), "{out}");
    // Resolve ARP and let the bucket fill back up.
    env.send(1);
    std::thread::sleep(Duration::from_millis(1200));

    let before = env.stats("default");
    env.send(100);
    let mut after = Value::Null;
    env.eventually(Duration::from_secs(3), "100 packets judged", || {
        after = env.stats("default");
        packets(&after, Verdict::Passed) + packets(&after, Verdict::DroppedPackets)
            >= packets(&before, Verdict::Passed) + packets(&before, Verdict::DroppedPackets) + 100
    });
    let passed = packets(&after, Verdict::Passed) - packets(&before, Verdict::Passed);
    let dropped =
        packets(&after, Verdict::DroppedPackets) - packets(&before, Verdict::DroppedPackets);
    assert!(
        (10..=30).contains(&passed),
        "burst 10 at 10/s let {passed} of 100 through"
    );
    assert!(dropped >= 70, "only {dropped} of 100 dropped");

    // Deny the sender outright.
    let peer = format!("{}/32", env.veth.peer_ip);
    let out = env.ok(&["rule", "add", &peer, "--deny"]);
    assert!(out.contains("added (deny)"), "{out}");
    let rules = env.json(&["rule", "list"]);
    assert_eq!(rules[0]["cidr"], peer.as_str());
    assert_eq!(rules[0]["action"], "deny");
    assert_eq!(rules[0]["source"], "cli");
    let before = env.stats("default");
    env.send(50);
    env.eventually(Duration::from_secs(3), "50 denied", || {
        packets(&env.stats("default"), Verdict::Denied) >= packets(&before, Verdict::Denied) + 50
    });
    assert_eq!(
        packets(&env.stats("default"), Verdict::Denied),
        packets(&before, Verdict::Denied) + 50
    );

    // Remove the rule: no more denials, the tier limits apply again.
    env.ok(&["rule", "rm", &peer]);
    assert_eq!(env.json(&["rule", "list"]), Value::Array(vec![]));
    std::thread::sleep(Duration::from_millis(1100));
    let before = env.stats("default");
    env.send(20);
    env.eventually(Duration::from_secs(3), "20 judged", || {
        let s = env.stats("default");
        packets(&s, Verdict::Passed) + packets(&s, Verdict::DroppedPackets)
            >= packets(&before, Verdict::Passed) + packets(&before, Verdict::DroppedPackets) + 20
    });
    let s = env.stats("default");
    assert_eq!(
        packets(&s, Verdict::Denied),
        packets(&before, Verdict::Denied),
        "denials stopped"
    );
    assert!(packets(&s, Verdict::Passed) >= packets(&before, Verdict::Passed) + 10);

    // Human output: a table with human units.
    let table = env.ok(&["stats"]);
    assert!(
        table.contains("dropped_packets") && table.contains("PACKETS/S"),
        "{table}"
    );
}

#[test]
fn bad_config_and_bad_cli_input_give_clear_errors_and_change_nothing() {
    if !privileged("bad_config_and_bad_cli_input_give_clear_errors_and_change_nothing") {
        return;
    }
    let env = Env::new();
    env.write_config(
        r#"default_tier = "default"
[[tier]]
name = "default"
packets = "1000/s"
[[tier]]
name = "gold"
packets = "5000/s"
[[rule]]
cidr = "10.0.0.0/8"
tier = "gold"
"#,
    );
    let d = env.start();
    let tiers = env.json(&["tier", "list"]);
    let rules = env.json(&["rule", "list"]);

    let cases: &[(&[&str], &[&str])] = &[
        (
            &["tier", "set", "default", "--packets", "100/x"],
            &["tier \"default\": packets = \"100/x\": unknown period \"x\" (use /s, /min or /h)"],
        ),
        (
            &["tier", "set", "gold", "--ipv6-prefix", "65"],
            &["tier \"gold\": ipv6_prefix = 65: must be between 1 and 64"],
        ),
        (
            &["rule", "add", "10.0.0.300/8", "--deny"],
            &["cidr = \"10.0.0.300/8\": not a valid CIDR"],
        ),
        (
            &["rule", "add", "192.0.2.0/24", "--tier", "platinum"],
            &["tier = \"platinum\": no such tier (tiers: default, gold)"],
        ),
        (
            &["tier", "set", "gold", "--bytes", "10XB/s"],
            &["bytes = \"10XB/s\": unknown unit \"XB\""],
        ),
        (
            &["tier", "set", "gold", "--packets", "0/s"],
            &["packets = \"0/s\": must be greater than zero"],
        ),
        (
            &["tier", "set", "silver", "--burst", "5"],
            &["packets_burst = 5", "no packets limit"],
        ),
        (
            &["tier", "set", "bad name", "--packets", "1/s"],
            &["tier: name = \"bad name\": use only letters, digits"],
        ),
        (
            &["tier", "rm", "default"],
            &["\"default\" is the default tier"],
        ),
        (
            &["tier", "rm", "gold"],
            &["used by 1 rule (10.0.0.0/8)", "tollgate rule rm"],
        ),
        (&["tier", "rm", "nope"], &["no tier named \"nope\""]),
        (
            &["rule", "rm", "172.16.0.0/12"],
            &["no rule for 172.16.0.0/12"],
        ),
        (
            &["rule", "add", "10.1.0.0/8", "--deny"],
            &["host bits are set (did you mean \"10.0.0.0/8\"?)"],
        ),
        (&["stats", "--tier", "nope"], &["no tier named \"nope\""]),
    ];
    for (args, expected) in cases {
        env.fails(args, expected);
    }

    // Garbage on the socket gets an error answer, never a crash.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for (line, expected) in [
        ("not json", "invalid request"),
        (r#"{"cmd":"launch"}"#, "unknown variant"),
        (r#"{"cmd":"status","x":1}"#, "unknown field"),
        (
            r#"{"cmd":"tier_set","name":"gold","packets":5}"#,
            "invalid type",
        ),
        (r#"{"cmd":"top","by":"drops","n":-1}"#, "invalid"),
    ] {
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut resp = String::new();
        r.read_line(&mut resp).unwrap();
        let v: Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["ok"], false, "{line} -> {resp}");
        assert!(
            v["error"].as_str().unwrap().contains(expected),
            "{line} -> {resp}"
        );
    }
    // An over-long line is refused and the connection closed.
    let long = format!(
        "{{\"cmd\":\"tier_rm\",\"name\":\"{}\"}}\n",
        "x".repeat(70_000)
    );
    let _ = s.write_all(long.as_bytes());
    let mut resp = String::new();
    r.read_line(&mut resp).unwrap();
    assert!(resp.contains("request too long"), "{resp}");
    drop((s, r));

    // Nothing changed, and the daemon is still serving.
    assert_eq!(env.json(&["tier", "list"]), tiers);
    assert_eq!(env.json(&["rule", "list"]), rules);
    assert!(d.log().contains("tollgate is enforcing"));

    // A bad file makes `tollgate run` fail before touching anything, naming
    // the file, the line and the field.
    let other_pins = PinDir::new(&format!("{}x", unique_id()));
    let run_bad = |text: &str| -> String {
        let bad = env.dir.join("bad.toml");
        fs::write(&bad, text).unwrap();
        let out = Command::new(bin())
            .arg("--socket")
            .arg(env.dir.join("other.sock"))
            .arg("run")
            .arg("--config")
            .arg(&bad)
            .args(["--iface", &env.veth.host])
            .arg("--pin-dir")
            .arg(&other_pins.path)
            .arg("--state")
            .arg(env.dir.join("other-state.json"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            !other_pins.path.exists(),
            "a rejected config touched the kernel"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bad_toml = env.dir.join("bad.toml").display().to_string();
    let err = run_bad("[[tier]]\nname = \"default\"\n\npackets = \"100/x\"\n");
    assert!(
        err.contains(&format!(
            "{bad_toml}:4: tier \"default\": packets = \"100/x\": unknown period \"x\""
        )),
        "{err}"
    );
    let err = run_bad("[[tier]]\nname = \"default\"\npakets = \"1/s\"\n");
    assert!(
        err.contains(&format!("{bad_toml}:3:")) && err.contains("unknown field `pakets`"),
        "{err}"
    );
    let err = run_bad("[[tier]]\nname = \"default\"\nipv6_prefix = 65\n");
    assert!(
        err.contains(&format!("{bad_toml}:3: tier \"default\": ipv6_prefix = 65")),
        "{err}"
    );
    let err = run_bad("[[rule]]\ncidr = \"10.0.0.0/8\"\ntier = \"gold\"\n");
    assert!(
        err.contains(&format!(
            "{bad_toml}:3: rule 10.0.0.0/8: tier = \"gold\": no such tier"
        )),
        "{err}"
    );
    let err = run_bad("[[rule]]\ncidr = \"10.0.0.300/8\"\naction = \"deny\"\n");
    assert!(
        err.contains(&format!("{bad_toml}:2: rule: cidr = \"10.0.0.300/8\"")),
        "{err}"
    );
    // The running daemon did not notice any of it.
    assert_eq!(env.json(&["tier", "list"]), tiers);
}

#[test]
fn kill_9_during_traffic_keeps_enforcing_and_the_restart_adopts() {
    if !privileged("kill_9_during_traffic_keeps_enforcing_and_the_restart_adopts") {
        return;
    }
    let env = Env::new();
    env.write_config(&format!(
        r#"{BASE_CONFIG}
[[tier]]
name = "slow"
packets = "10/s"
packets_burst = 10

[[rule]]
cidr = "{}"
tier = "slow"
"#,
        env.veth.peer_ip
    ));
    let mut d = env.start();
    let slow = env.tier_index("slow");
    let status = env.json(&["status"]);
    assert_eq!(status["start"], "fresh");
    let program_id = status["program_id"].as_u64().unwrap();

    // 200 packets/s for 6 s from the namespace: 190/s over the limit.
    let dst = SocketAddr::from((env.veth.host_ip, 9));
    let sender = env.ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        send_udp_paced(&s, dst, 200, Duration::from_secs(6)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(2500));
    // Current rates, from the daemon's 1 s samples: ~10/s pass, ~190/s drop.
    let s = env.json(&["stats", "--tier", "slow"]);
    assert!(s["sample_interval_secs"].as_f64().unwrap() > 0.5, "{s}");
    let t = &s["tiers"][0];
    let pass_rate = t["verdicts"]["passed"]["packets_per_sec"].as_f64().unwrap();
    let drop_rate = t["verdicts"]["dropped_packets"]["packets_per_sec"]
        .as_f64()
        .unwrap();
    assert!(pass_rate <= 25.0, "passing {pass_rate}/s at a 10/s limit");
    assert!(
        (80.0..=320.0).contains(&drop_rate),
        "dropping {drop_rate}/s of 200/s"
    );
    assert!(t["dropped"]["bytes_per_sec"].as_f64().unwrap() > 0.0);
    let before_kill = packets(&env.stats("slow"), Verdict::DroppedPackets);
    assert!(before_kill > 0, "the over-limit source is being dropped");

    d.kill9();
    assert!(
        env.xdp_attached(),
        "the pinned link keeps the program attached"
    );
    // The daemon is dead; the kernel keeps dropping, into the pinned maps.
    let maps = Maps::from_pins(&env.pins.path).expect("pinned maps");
    let dead0 = maps.counter(slow, Verdict::DroppedPackets).unwrap().packets;
    std::thread::sleep(Duration::from_millis(800));
    let dead1 = maps.counter(slow, Verdict::DroppedPackets).unwrap().packets;
    assert!(dead0 >= before_kill);
    assert!(
        dead1 > dead0 + 50,
        "drops must continue while the daemon is dead: {dead0} -> {dead1}"
    );
    let passed_dead = maps.counter(slow, Verdict::Passed).unwrap().packets;
    assert!(
        maps.source_v4(env.veth.peer_ip).is_some(),
        "bucket state for the source"
    );
    let bucket = maps.source_v4(env.veth.peer_ip).unwrap();
    drop(maps);

    // Restart: adopts the pinned program (same id), keeps state and counters.
    let _d = env.start();
    let status = env.json(&["status"]);
    assert_eq!(status["start"], "adopted", "{status}");
    assert_eq!(status["program_id"].as_u64().unwrap(), program_id);
    assert_eq!(status["interfaces"][0]["attached"], true);
    let after = env.stats("slow");
    assert!(packets(&after, Verdict::DroppedPackets) >= dead1);
    assert!(packets(&after, Verdict::Passed) >= passed_dead);
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    let now = maps.source_v4(env.veth.peer_ip).expect("bucket state kept");
    assert!(
        now.packets_tat >= bucket.packets_tat,
        "the same bucket, moving forward"
    );
    assert!(status["sources_v4"]["used"].as_u64().unwrap() >= 1);

    let sent = sender.join().unwrap().unwrap();
    assert!(sent.packets > 500);
    // Over the whole run about 10/s (+ burst) passed: the restart did not
    // reset the bucket and let a fresh burst through.
    let passed = packets(&env.stats("slow"), Verdict::Passed);
    let secs = sent.span.as_secs_f64() + 1.0;
    assert!(
        (passed as f64) <= 10.0 * secs + 10.0 + 5.0,
        "{passed} passed in {secs:.1}s at 10/s burst 10"
    );
}

#[test]
fn detach_leaves_no_pins_and_no_program() {
    if !privileged("detach_leaves_no_pins_and_no_program") {
        return;
    }
    let env = Env::new();
    env.write_config(BASE_CONFIG);
    let mut d = env.start();
    let status = env.json(&["status"]);
    let program_id = status["program_id"].as_u64().unwrap() as u32;
    assert!(env.xdp_attached());
    assert!(env.pins.path.join("prog").exists());

    let out = env.ok(&["detach"]);
    assert!(out.contains("detached from"), "{out}");
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    assert!(!env.pins.path.exists(), "pin dir removed");
    assert!(!env.xdp_attached(), "no XDP program on the interface");
    let net = sh(&["ip", "-d", "link", "show", "dev", &env.veth.host]).unwrap();
    assert!(!net.contains("xdp"), "{net}");
    env.eventually(Duration::from_secs(5), "the program to be unloaded", || {
        !aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .any(|p| p.id() == program_id)
    });
    assert!(!env.socket.exists(), "socket removed");

    // Without a daemon (killed -9): `detach --pin-dir` cleans up alone. (This
    // one runs in generic mode.)
    let mut d = env.start_with(&["--mode", "generic"]);
    assert!(env.xdp_attached());
    assert_eq!(env.json(&["status"])["interfaces"][0]["mode"], "generic");
    let link = sh(&["ip", "-d", "link", "show", "dev", &env.veth.host]).unwrap();
    assert!(link.contains("xdpgeneric"), "{link}");
    let program_id = env.json(&["status"])["program_id"].as_u64().unwrap() as u32;
    d.kill9();
    let out = env.ok(&["detach", "--pin-dir", env.pins.path.to_str().unwrap()]);
    assert!(out.contains("no daemon was running"), "{out}");
    assert!(!env.pins.path.exists());
    assert!(
        !env.xdp_attached(),
        "detach returns once the interface is free"
    );
    env.eventually(Duration::from_secs(5), "the program to be unloaded", || {
        !aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .any(|p| p.id() == program_id)
    });
    // Detaching twice is harmless.
    let out = env.ok(&["detach", "--pin-dir", env.pins.path.to_str().unwrap()]);
    assert!(out.contains("nothing to detach"), "{out}");
}

#[test]
fn cli_changes_survive_restart_and_reload() {
    if !privileged("cli_changes_survive_restart_and_reload") {
        return;
    }
    let env = Env::new();
    env.write_config(&format!(
        "{BASE_CONFIG}\n[[rule]]\ncidr = \"198.51.100.0/24\"\naction = \"deny\"\n"
    ));
    let mut d = env.start();
    env.ok(&[
        "tier",
        "set",
        "gold",
        "--packets",
        "5/s",
        "--burst",
        "7",
        "--requests",
        "6000/min",
        "--shadow",
    ]);
    env.ok(&["rule", "add", "192.0.2.0/24", "--tier", "gold"]);
    env.ok(&["rule", "rm", "198.51.100.0/24"]);
    let tiers = env.json(&["tier", "list"]);
    let rules = env.json(&["rule", "list"]);
    let gold = tiers
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gold")
        .unwrap()
        .clone();
    assert_eq!(gold["source"], "cli");
    assert_eq!(gold["mode"], "shadow");
    assert_eq!(u64_at(&gold, &["packets", "burst"]), 7);
    assert_eq!(gold["requests"]["rate"], "6000/min");
    assert_eq!(rules.as_array().unwrap().len(), 1);
    let gold_index = gold["index"].as_u64().unwrap() as u32;

    // SIGTERM: the daemon exits, the program stays.
    assert!(d.terminate(Duration::from_secs(10)).success());
    assert!(env.xdp_attached(), "SIGTERM leaves the program attached");
    assert!(env.pins.path.join("prog").exists());
    env.fails(&["status"], &["tollgate daemon is not running"]);

    let d = env.start();
    assert_eq!(env.json(&["status"])["start"], "adopted");
    assert_eq!(env.json(&["tier", "list"]), tiers);
    assert_eq!(env.json(&["rule", "list"]), rules);
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    let k = maps.tier(gold_index).unwrap();
    assert!(k.is_shadow());
    assert_eq!(k.limits[LimitKind::Packets as usize].burst(), 7);
    drop(maps);

    // SIGHUP and `tollgate reload` re-read the file and keep the CLI changes.
    d.signal(libc::SIGHUP);
    env.eventually(Duration::from_secs(5), "the SIGHUP reload", || {
        d.log().contains("SIGHUP: reloaded")
    });
    assert_eq!(env.json(&["tier", "list"]), tiers);
    assert_eq!(env.json(&["rule", "list"]), rules);
    env.write_config(&format!(
        "{BASE_CONFIG}\n[[tier]]\nname = \"silver\"\npackets = \"50/s\"\n"
    ));
    let out = env.ok(&["reload"]);
    assert!(out.contains("including changes made with the CLI"), "{out}");
    let after = env.json(&["tier", "list"]);
    let names: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "gold", "silver"]);
    assert_eq!(
        env.tier_index("gold"),
        gold_index,
        "tier indices are stable"
    );
    assert_eq!(
        env.json(&["rule", "list"]),
        rules,
        "the file's rule stays removed"
    );
    // The state file has them too.
    let state: Value = serde_json::from_str(&fs::read_to_string(&env.state).unwrap()).unwrap();
    assert_eq!(state["overlay"]["tiers"]["gold"]["packets"]["burst"], 7);
    assert_eq!(state["tier_indices"]["gold"], gold_index);
}

#[test]
fn daemon_not_running_error_is_clear() {
    if !privileged("daemon_not_running_error_is_clear") {
        return;
    }
    let dir = PathBuf::from(format!("/tmp/tg-{}", unique_id()));
    fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("nope.sock");
    for args in [
        &["status"][..],
        &["tier", "list"],
        &["stats"],
        &["rule", "add", "10.0.0.0/8", "--deny"],
    ] {
        let out = Command::new(bin())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "tollgate daemon is not running (no socket at {}): start it with `tollgate run`",
                socket.display()
            )),
            "{args:?}: {err}"
        );
    }
    // The environment variable works too, and a stale socket is recognized.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let out = Command::new(bin())
        .env("TOLLGATE_SOCKET", &stale)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tollgate daemon is not running (stale socket at"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn reload_with_a_bad_file_keeps_the_old_config_and_sighup_applies_a_good_one() {
    if !privileged("reload_with_a_bad_file_keeps_the_old_config_and_sighup_applies_a_good_one") {
        return;
    }
    let env = Env::new();
    let config =
        |gold: &str| format!("{BASE_CONFIG}\n[[tier]]\nname = \"gold\"\npackets = \"{gold}\"\n");
    env.write_config(&config("100/s"));
    let d = env.start();
    let tiers = env.json(&["tier", "list"]);
    let gold = env.tier_index("gold");

    // Bad file: reload fails naming file, line and field; nothing changes.
    env.write_config(&config("100/x"));
    let path = env.config.display().to_string();
    env.fails(
        &["reload"],
        &[
            "reload failed, the running configuration is unchanged",
            &format!("{path}:9: tier \"gold\": packets = \"100/x\": unknown period \"x\""),
        ],
    );
    assert_eq!(env.json(&["tier", "list"]), tiers);
    // Same through SIGHUP: logged, nothing changes, the daemon keeps serving.
    d.signal(libc::SIGHUP);
    env.eventually(
        Duration::from_secs(5),
        "the SIGHUP error in the log",
        || d.log().contains("SIGHUP: reload failed"),
    );
    assert_eq!(env.json(&["tier", "list"]), tiers);

    // A good file through `tollgate reload`: applied when the command returns.
    env.write_config(&config("200/s"));
    env.ok(&["reload"]);
    let after = env.json(&["tier", "list"]);
    assert_eq!(after[gold as usize]["packets"]["rate"], "200/s", "{after}");

    // A good file through SIGHUP: in the kernel within 100 ms.
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    let rate =
        |m: &Maps| m.tier(gold).unwrap().limits[LimitKind::Packets as usize].rate_per_second();
    assert!((rate(&maps) - 200.0).abs() < 0.01);
    env.write_config(&config("300/s"));
    let sent = Instant::now();
    d.signal(libc::SIGHUP);
    while (rate(&maps) - 300.0).abs() > 0.01 {
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "SIGHUP never applied"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "SIGHUP took {took:?} to reach the kernel"
    );
    let after = env.json(&["tier", "list"]);
    assert_eq!(after[gold as usize]["packets"]["rate"], "300/s");
}

#[test]
fn a_change_that_cannot_be_saved_is_rolled_back() {
    if !privileged("a_change_that_cannot_be_saved_is_rolled_back") {
        return;
    }
    let env = Env::new();
    env.write_config(BASE_CONFIG);
    let _d = env.start();
    let tiers = env.json(&["tier", "list"]);
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    let kernel_before = maps.tier(0).unwrap();

    // The state directory disappears: saving fails, so the change must not stay.
    let state_dir = env.state.parent().unwrap();
    fs::remove_dir_all(state_dir).unwrap();
    env.fails(
        &["tier", "set", "default", "--packets", "1/s"],
        &["could not save the change to", "rolled back"],
    );
    env.fails(
        &["tier", "set", "new", "--packets", "1/s"],
        &["rolled back"],
    );
    assert_eq!(env.json(&["tier", "list"]), tiers);
    assert_eq!(
        maps.tier(0).unwrap(),
        kernel_before,
        "the kernel change was undone"
    );
    assert!(!maps.tier(1).unwrap().is_active());

    fs::create_dir_all(state_dir).unwrap();
    env.ok(&["tier", "set", "default", "--packets", "1/s"]);
    assert_ne!(maps.tier(0).unwrap(), kernel_before);
    assert!(env.state.exists());
}

#[test]
fn a_pinned_program_of_another_layout_is_replaced_without_detaching() {
    if !privileged("a_pinned_program_of_another_layout_is_replaced_without_detaching") {
        return;
    }
    let env = Env::new();
    env.write_config(BASE_CONFIG);
    let mut d = env.start();
    env.ok(&[
        "tier",
        "set",
        "default",
        "--packets",
        "10/s",
        "--burst",
        "10",
    ]);
    let before = env.json(&["status"]);
    let link_id = before["interfaces"][0]["link_id"].as_u64().unwrap();
    let old_program = before["program_id"].as_u64().unwrap();
    d.kill9();

    // Pretend an older build pinned these maps.
    {
        let data = aya::maps::MapData::from_pin(env.pins.path.join(names::META)).unwrap();
        let map = aya::maps::Map::from_map_data(data).unwrap();
        let mut meta: aya::maps::Array<aya::maps::MapData, Meta> = map.try_into().unwrap();
        meta.set(
            0,
            Meta {
                layout_version: 999,
                _reserved: 0,
            },
            0,
        )
        .unwrap();
    }
    assert!(Maps::from_pins(&env.pins.path).is_err());

    let _d = env.start();
    let after = env.json(&["status"]);
    assert_eq!(after["start"], "upgraded", "{after}");
    assert_eq!(
        after["interfaces"][0]["link_id"].as_u64().unwrap(),
        link_id,
        "same link, updated in place"
    );
    assert_ne!(after["program_id"].as_u64().unwrap(), old_program);
    assert_eq!(after["interfaces"][0]["program_id"], after["program_id"]);
    assert!(env.xdp_attached());
    assert!(!env.pins.path.join("next").exists());
    Maps::from_pins(&env.pins.path).expect("the new pins have this build's layout");
    // The CLI change was re-applied to the fresh maps, and enforces.
    assert_eq!(env.json(&["tier", "list"])[0]["packets"]["rate"], "10/s");
    env.send(1);
    std::thread::sleep(Duration::from_millis(1100));
    env.send(60);
    env.eventually(Duration::from_secs(3), "drops by the new program", || {
        packets(&env.stats("default"), Verdict::DroppedPackets) >= 40
    });
}

#[test]
fn the_control_socket_checks_peer_credentials() {
    if !privileged("the_control_socket_checks_peer_credentials") {
        return;
    }
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
    const ALLOWED: u32 = 64_123;
    const OTHER: u32 = 64_124;
    let env = Env::new();
    env.write_config(&format!("allow_uids = [{ALLOWED}]\n{BASE_CONFIG}"));
    let _d = env.start();
    let as_uid = |uid: u32| {
        let out = Command::new(bin())
            .arg("--socket")
            .arg(&env.socket)
            .arg("--json")
            .arg("tier")
            .arg("list")
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // With allow_uids the socket is world-connectable; SO_PEERCRED decides.
    fs::set_permissions(&env.dir, fs::Permissions::from_mode(0o711)).unwrap();
    let (ok, err) = as_uid(ALLOWED);
    assert!(ok, "uid {ALLOWED} is in allow_uids: {err}");
    let (ok, err) = as_uid(OTHER);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "permission denied: uid {OTHER} may not control tollgate"
        )),
        "{err}"
    );

    // Without allow_uids the socket is 0600: other users cannot even connect.
    let env = Env::new();
    env.write_config(BASE_CONFIG);
    let _d = env.start();
    let mode = fs::metadata(&env.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    fs::set_permissions(&env.dir, fs::Permissions::from_mode(0o711)).unwrap();
    let out = Command::new(bin())
        .arg("--socket")
        .arg(&env.socket)
        .arg("status")
        .uid(OTHER)
        .gid(OTHER)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied connecting to"));
}

#[test]
fn the_programs_aya_log_records_reach_the_daemon_log() {
    if !privileged("the_programs_aya_log_records_reach_the_daemon_log") {
        return;
    }
    let env = Env::new();
    env.write_config(BASE_CONFIG);
    let daemon = env.start();
    // Corrupt the settings behind the daemon's back (a tier index out of
    // range): the program's "cannot fail" lookup fails, it passes the packet
    // and logs through aya-log, and the daemon drains that into its log.
    let mut maps = Maps::from_pins(&env.pins.path).unwrap();
    let mut settings = maps.settings().unwrap();
    let good = settings.default_tier;
    settings.default_tier = 70;
    maps.set_settings(settings).unwrap();
    env.send(5);
    env.eventually(Duration::from_secs(5), "the program's log line", || {
        daemon.log().contains("internal error judging a packet")
    });

    // A restarted daemon adopts the running program, and its log ring too.
    let mut daemon = daemon;
    assert!(daemon.terminate(Duration::from_secs(10)).success());
    let adopter = env.start();
    assert_eq!(env.json(&["status"])["start"], "adopted");
    // (It re-applied the config on adoption, repairing the settings.)
    settings.default_tier = 70;
    maps.set_settings(settings).unwrap();
    env.send(5);
    env.eventually(
        Duration::from_secs(5),
        "the program's log line in the adopting daemon's log",
        || adopter.log().contains("internal error judging a packet"),
    );
    settings.default_tier = good;
    maps.set_settings(settings).unwrap();
}

/// `http tail` follows the daemon: when the daemon dies under it, tail says so
/// and exits non-zero instead of ending silently with success. The daemon's
/// log, written to a file (as under journald), carries no colour codes.
#[test]
fn http_tail_fails_when_the_daemon_dies_and_logs_to_a_file_are_plain() {
    if !privileged("http_tail_fails_when_the_daemon_dies_and_logs_to_a_file_are_plain") {
        return;
    }
    let env = Env::new();
    env.write_config(BASE_CONFIG);
    let mut d = env.start();
    let mut tail = Command::new(bin())
        .arg("--socket")
        .arg(&env.socket)
        .args(["http", "tail"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Tail has subscribed once it waits for the stream's first line: its
    // request written, a thread blocked reading the socket. (Killing the
    // daemon earlier, while tail's connection waits in the listen backlog,
    // is another case: tail's write gets EPIPE.)
    let subscribed = Instant::now() + Duration::from_secs(10);
    while !blocked_reading(tail.id()) {
        assert!(Instant::now() < subscribed, "http tail never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill9();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = tail.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = tail.kill();
            panic!("http tail still running 5 s after the daemon died");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = tail.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !status.success(),
        "http tail exited {status} after the daemon died"
    );
    assert!(
        stderr.contains("the daemon closed the stream (it stopped or restarted)"),
        "{stderr}"
    );
    let log = d.log();
    assert!(log.contains("tollgate is enforcing"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
}

/// `status` with no daemon reads the pins: after kill -9 it names the program
/// still attached and enforcing (text and JSON) and exits non-zero; after an
/// offline detach it says nothing is attached.
#[test]
fn status_without_a_daemon_says_what_is_still_enforcing() {
    if !privileged("status_without_a_daemon_says_what_is_still_enforcing") {
        return;
    }
    let env = Env::new();
    env.write_config(BASE_CONFIG);
    let mut d = env.start();
    let program_id = env.json(&["status"])["program_id"].as_u64().unwrap();
    d.kill9();
    assert!(env.xdp_attached(), "kill -9 leaves the program attached");
    let pin_dir = env.pins.path.to_str().unwrap().to_owned();
    let out = env.cli(&["status", "--pin-dir", &pin_dir]);
    assert!(
        !out.status.success(),
        "status exits non-zero without a daemon"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "daemon not running; program {program_id} (loaded "
        )) && text.contains(&format!(
            "still attached to {} and enforcing the last configuration",
            env.veth.host
        )),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tollgate daemon is not running"),
        "{out:?}"
    );
    let out = env.cli(&["--json", "status", "--pin-dir", &pin_dir]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemon_running"], false);
    assert_eq!(v["program_id"].as_u64(), Some(program_id));
    assert_eq!(v["links"][0]["interface"], env.veth.host.as_str());
    assert_eq!(v["links"][0]["attached"], true);
    assert_eq!(v["links"][0]["program_id"].as_u64(), Some(program_id));

    env.ok(&["detach", "--pin-dir", &pin_dir]);
    let out = env.cli(&["status", "--pin-dir", &pin_dir]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("daemon not running; nothing attached"),
        "{text}"
    );
}

/// Whether a thread of `pid` is blocked in `read` or `recvfrom` (x86_64
/// syscall numbers 0 and 45, from `/proc/<pid>/task/<tid>/syscall`).
fn blocked_reading(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("syscall"))
            .is_ok_and(|s| matches!(s.split_whitespace().next(), Some("0" | "45")))
    })
}
