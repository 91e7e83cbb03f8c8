//! Faults under a running daemon, end to end: what an operator's mistake or
//! the host does to tollgate, and that each has a defined behaviour, a log
//! line and a metric.
//!
//! * pins removed (`rm -r` of the pin directory): re-pinned within a second,
//!   enforcement never stops, a restart adopts the same objects;
//! * the interface deleted and created again: reported as detached, then
//!   re-attached, and enforcing again;
//! * the config file made unreadable or deleted: the running configuration
//!   stays, reloads fail with the reason, a restart refuses to start while the
//!   pinned program keeps enforcing;
//! * the disk full while persisting a CLI change: the change is refused and
//!   rolled back, and lands once there is space;
//! * the sample ring full (a stalled daemon): verdicts go on, the losses are
//!   counted and logged.
//!
//! Redis down and a corrupt config on reload are covered in `cluster.rs` and
//! `daemon.rs`.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tollgate::{
    datapath::dataplane::{PROG_PIN, link_pin},
    datapath::kernel::{MAP_NAMES, Maps},
};
use tollgate_common::Verdict;
use tollgate_tests::{
    daemon::{Daemon, Env, free_port, metric_value, scrape_metrics},
    net::sh,
    privileged,
};

/// A tier of 10 packets/s (burst 10) for the namespace's address, and
/// metrics on `port`.
fn config(env: &Env, port: u16) -> String {
    format!(
        r#"metrics_address = "127.0.0.1:{port}"

[[tier]]
name = "default"
packets = "1000/s"

[[tier]]
name = "slow"
packets = "10/s"
packets_burst = 10

[[rule]]
cidr = "{}"
tier = "slow"
"#,
        env.veth.peer_ip
    )
}

/// (passed, dropped_packets) of tier `slow`, read from the pinned maps (works
/// whether or not a daemon runs).
fn slow_counts(env: &Env, slow: u32) -> (u64, u64) {
    let maps = Maps::from_pins(&env.pins.path).expect("pinned maps");
    let get = |v| maps.counter(slow, v).unwrap().packets;
    (get(Verdict::Passed), get(Verdict::DroppedPackets))
}

/// Sends 200 datagrams at once from the namespace; asserts the 10/s tier held
/// them to its burst (plus what refilled meanwhile).
#[track_caller]
fn assert_enforcing(env: &Env, slow: u32) {
    let before = slow_counts(env, slow);
    let start = Instant::now();
    env.send(200);
    // The verdicts land in the counters as the frames cross the veth.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = slow_counts(env, slow);
    while after.0 + after.1 < before.0 + before.1 + 150 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = slow_counts(env, slow);
    }
    let passed = after.0 - before.0;
    let dropped = after.1 - before.1;
    // GCRA: at most burst + rate x elapsed pass.
    let bound = 10.0 + 10.0 * start.elapsed().as_secs_f64() + 1.0;
    assert!(
        (passed as f64) <= bound && dropped >= 150,
        "200 datagrams at a 10/s tier (burst 10): {passed} passed (bound {bound:.0}), {dropped} dropped"
    );
}

fn metrics(port: u16) -> String {
    scrape_metrics(port)
}

/// Every pin tollgate keeps for `iface` in `pin_dir`.
fn pins(pin_dir: &Path, iface: &str) -> Vec<PathBuf> {
    MAP_NAMES
        .iter()
        .chain([&PROG_PIN])
        .map(|n| pin_dir.join(n))
        .chain([link_pin(pin_dir, iface)])
        .collect()
}

fn map_ids(pin_dir: &Path) -> Vec<u32> {
    MAP_NAMES
        .iter()
        .map(|n| aya::maps::MapInfo::from_pin(pin_dir.join(n)).unwrap().id())
        .collect()
}

#[test]
fn pins_removed_under_a_running_daemon_are_re_pinned_and_enforcement_goes_on() {
    if !privileged("pins_removed_under_a_running_daemon_are_re_pinned_and_enforcement_goes_on") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    env.write_config(&config(&env, port));
    let mut d = env.start();
    let slow = env.tier_index("slow");
    let status = env.json(&["status"]);
    let program_id = status["program_id"].as_u64().unwrap();
    let link_id = status["interfaces"][0]["link_id"].as_u64().unwrap();
    let ids = map_ids(&env.pins.path);
    assert_enforcing(&env, slow);

    // What a careless cleanup does: the whole pin directory goes.
    fs::remove_dir_all(&env.pins.path).unwrap();
    assert!(!env.pins.path.exists());
    // The daemon holds the link, so the program stays attached meanwhile
    // (without that, removing the link pin would detach it at once).
    assert!(env.xdp_attached(), "removing the pins detached the program");

    let all = pins(&env.pins.path, &env.veth.host);
    env.eventually(Duration::from_secs(5), "the pins to be re-created", || {
        all.iter().all(|p| p.exists())
    });
    assert_eq!(map_ids(&env.pins.path), ids, "the same maps, re-pinned");
    let status = env.json(&["status"]);
    assert_eq!(status["program_id"].as_u64().unwrap(), program_id);
    assert_eq!(
        status["interfaces"][0]["link_id"].as_u64().unwrap(),
        link_id
    );
    assert_eq!(status["interfaces"][0]["attached"], true);
    let body = metrics(port);
    assert_eq!(
        metric_value(&body, "tollgate_dataplane_repairs_total{action=\"repin\"}"),
        all.len() as f64,
        "one repair per pin"
    );
    assert!(d.log().contains("re-pinned it"), "{}", d.log());
    assert!(d.log().contains("the pin directory was removed"));
    assert_enforcing(&env, slow);

    // Only the link pin, the one whose loss would detach: re-pinned too.
    fs::remove_file(link_pin(&env.pins.path, &env.veth.host)).unwrap();
    assert!(env.xdp_attached());
    env.eventually(
        Duration::from_secs(5),
        "the link pin to be re-created",
        || link_pin(&env.pins.path, &env.veth.host).exists(),
    );

    // A restart finds the re-pinned objects and adopts them.
    assert!(d.terminate(Duration::from_secs(10)).success());
    let _d = env.start();
    let status = env.json(&["status"]);
    assert_eq!(status["start"], "adopted", "{status}");
    assert_eq!(status["program_id"].as_u64().unwrap(), program_id);
    assert_enforcing(&env, slow);
}

#[test]
fn an_interface_deleted_and_created_again_is_re_attached() {
    if !privileged("an_interface_deleted_and_created_again_is_re_attached") {
        return;
    }
    let mut env = Env::new();
    let port = free_port();
    env.write_config(&config(&env, port));
    let mut d = env.start();
    let slow = env.tier_index("slow");
    let program_id = env.json(&["status"])["program_id"].as_u64().unwrap();
    let series = format!(
        "tollgate_interface_attached{{interface=\"{}\"}}",
        env.veth.host
    );
    assert_eq!(metric_value(&metrics(port), &series), 1.0);

    sh(&["ip", "link", "del", &env.veth.host]).unwrap();

    env.eventually(Duration::from_secs(5), "the daemon to notice", || {
        metric_value(&metrics(port), &series) == 0.0
    });
    let status = env.json(&["status"]);
    assert_eq!(status["interfaces"][0]["attached"], false, "{status}");
    assert!(d.log().contains("the interface was deleted"), "{}", d.log());

    let old_ifindex = env.veth.ifindex;
    env.veth.recreate(&env.ns, 1).unwrap();
    assert_ne!(env.veth.ifindex, old_ifindex);
    env.eventually(Duration::from_secs(5), "the daemon to re-attach", || {
        metric_value(&metrics(port), &series) == 1.0
    });
    assert!(env.xdp_attached());
    let status = env.json(&["status"]);
    assert_eq!(status["interfaces"][0]["attached"], true);
    assert_eq!(
        status["interfaces"][0]["program_id"].as_u64().unwrap(),
        program_id,
        "the same program (and so the same maps and buckets)"
    );
    assert_eq!(
        metric_value(
            &metrics(port),
            "tollgate_dataplane_repairs_total{action=\"reattach\"}"
        ),
        1.0
    );
    assert!(d.log().contains("re-attached the program"), "{}", d.log());
    assert_enforcing(&env, slow);

    // The new link is pinned: a restart adopts it.
    assert!(d.terminate(Duration::from_secs(10)).success());
    let _d = env.start();
    assert_eq!(env.json(&["status"])["start"], "adopted");
}

/// Starts the daemon without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, as the
/// systemd unit runs it, so file permissions apply to it although it is root.
fn start_like_the_unit(env: &Env) -> Daemon {
    let drop = "-dac_override,-dac_read_search";
    let mut d = env.spawn_via(
        &["setpriv", "--inh-caps", drop, "--bounding-set", drop],
        &[],
    );
    d.wait_ready();
    d
}

#[test]
fn a_config_file_made_unreadable_or_deleted_keeps_the_running_configuration() {
    if !privileged("a_config_file_made_unreadable_or_deleted_keeps_the_running_configuration") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let text = config(&env, port);
    env.write_config(&text);
    let mut d = start_like_the_unit(&env);
    let slow = env.tier_index("slow");
    let tiers = env.json(&["tier", "list"]);
    let readable = "tollgate_config_file_readable";
    env.eventually(Duration::from_secs(5), "the first check", || {
        metrics(port).contains(readable)
    });
    assert_eq!(metric_value(&metrics(port), readable), 1.0);
    let failures = "tollgate_config_reloads_total{result=\"failure\"}";

    // Unreadable.
    fs::set_permissions(&env.config, fs::Permissions::from_mode(0o000)).unwrap();
    env.eventually(Duration::from_secs(5), "the daemon to notice", || {
        metric_value(&metrics(port), readable) == 0.0
    });
    let log = d.log();
    assert!(
        log.contains("the config file cannot be read") && log.contains("Permission denied"),
        "{log}"
    );
    env.fails(
        &["reload"],
        &[
            "reload failed, the running configuration is unchanged",
            &env.config.display().to_string(),
            "Permission denied",
        ],
    );
    assert_eq!(metric_value(&metrics(port), failures), 1.0);
    assert_eq!(env.json(&["tier", "list"]), tiers);
    assert_enforcing(&env, slow);

    // Readable again.
    fs::set_permissions(&env.config, fs::Permissions::from_mode(0o600)).unwrap();
    env.eventually(Duration::from_secs(5), "the daemon to notice", || {
        metric_value(&metrics(port), readable) == 1.0
    });
    assert!(d.log().contains("the config file is readable again"));
    env.ok(&["reload"]);

    // Deleted.
    fs::remove_file(&env.config).unwrap();
    env.eventually(Duration::from_secs(5), "the daemon to notice", || {
        metric_value(&metrics(port), readable) == 0.0
    });
    assert!(d.log().contains("No such file"), "{}", d.log());
    env.fails(
        &["reload"],
        &["running configuration is unchanged", "No such file"],
    );
    assert_eq!(metric_value(&metrics(port), failures), 2.0);
    assert_eq!(env.json(&["tier", "list"]), tiers);

    // A restart without the file refuses to start, naming it; the pinned
    // program goes on enforcing the last configuration meanwhile.
    assert!(d.terminate(Duration::from_secs(10)).success());
    let mut failed = env.spawn(&[]);
    let status = failed.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let log = failed.log();
    assert!(
        log.contains(&env.config.display().to_string()) && log.contains("No such file"),
        "{log}"
    );
    assert!(env.xdp_attached());
    assert_enforcing(&env, slow);

    env.write_config(&text);
    let _d = env.start();
    assert_eq!(env.json(&["status"])["start"], "adopted");
    assert_eq!(env.json(&["tier", "list"]), tiers);
}

/// A tmpfs of `size` mounted at `path`, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        fs::create_dir_all(path).unwrap();
        let source = path.file_name().unwrap().to_string_lossy().into_owned();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            &source,
            &path.display().to_string(),
        ])
        .unwrap();
        SmallDisk {
            path: path.to_owned(),
        }
    }

    /// Writes a file until the disk is full (bounded by the disk's size).
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = [0u8; 4096];
        for _ in 0..100_000 {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return filler;
            }
        }
        panic!("the disk did not fill up");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", &self.path.display().to_string()]);
    }
}

#[test]
fn a_full_disk_refuses_a_cli_change_and_rolls_it_back() {
    if !privileged("a_full_disk_refuses_a_cli_change_and_rolls_it_back") {
        return;
    }
    let mut env = Env::new();
    let port = free_port();
    env.write_config(&config(&env, port));
    let disk = SmallDisk::mount(&env.dir.join("tg-disk"), "256k");
    env.state = disk.path.join("state.json");
    let mut d = env.start();
    let tiers = env.json(&["tier", "list"]);
    let kernel_before = Maps::from_pins(&env.pins.path).unwrap().tier(0).unwrap();
    let saved_before = fs::read_to_string(&env.state).unwrap();

    let filler = disk.fill();
    env.fails(
        &["tier", "set", "default", "--packets", "5/s"],
        &[
            "could not save the change to",
            "No space left on device",
            "rolled back",
        ],
    );
    assert_eq!(env.json(&["tier", "list"]), tiers);
    assert_eq!(
        Maps::from_pins(&env.pins.path).unwrap().tier(0).unwrap(),
        kernel_before,
        "the kernel change was undone"
    );
    assert_eq!(
        fs::read_to_string(&env.state).unwrap(),
        saved_before,
        "the saved state is intact"
    );
    assert_eq!(
        metric_value(&metrics(port), "tollgate_state_write_failures_total"),
        1.0
    );
    assert!(d.log().contains("could not save a change"), "{}", d.log());

    // Space again: the change lands, and survives a restart.
    fs::remove_file(filler).unwrap();
    env.ok(&["tier", "set", "default", "--packets", "5/s"]);
    assert!(d.terminate(Duration::from_secs(10)).success());
    let _d = env.start();
    let default = &env.json(&["tier", "list"])[0];
    assert_eq!(default["name"], "default");
    assert_eq!(default["packets"]["rate"], "5/s", "{default}");
}

#[test]
fn a_full_sample_ring_is_logged_and_counted_and_verdicts_go_on() {
    if !privileged("a_full_sample_ring_is_logged_and_counted_and_verdicts_go_on") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    // The smallest ring, and every verdict sampled: a stalled daemon lets it
    // fill within a few dozen packets.
    env.write_config(&format!(
        "{}\n[maps]\nsample_ring_bytes = 4096\n\n[http]\nverdict_sample_every = 1\n",
        config(&env, port)
    ));
    let d = env.start();
    let slow = env.tier_index("slow");
    let lost = "tollgate_samples_lost_total{cause=\"ring_full\",kind=\"verdict\"}";
    assert_eq!(metric_value(&metrics(port), lost), 0.0);

    // A daemon that does not drain (stopped, as if starved of CPU).
    d.signal(libc::SIGSTOP);
    let resume = scopeguard(|| d.signal(libc::SIGCONT));
    assert_enforcing(&env, slow);
    drop(resume);

    env.eventually(Duration::from_secs(5), "the ring-full log line", || {
        d.log().contains("the sample ring buffer was full")
    });
    assert!(metric_value(&metrics(port), lost) > 0.0);
    assert_enforcing(&env, slow);
}

/// Runs `f` on drop (also while a failing assertion unwinds).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
