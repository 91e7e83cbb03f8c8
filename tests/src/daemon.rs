//! The real `tollgate` binary as an operator runs it, for end-to-end tests: a
//! daemon on the host side of a veth pair whose peer lives in a test
//! namespace, and the CLI talking to it over its socket.
//!
//! Every daemon runs with its own `--pin-dir /sys/fs/bpf/tg-<id>`, `--socket`
//! and `--state` under `/tmp/tg-<id>/`, and is killed and detached when its
//! guard drops (also while a failing test unwinds), so nothing stays attached.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    net::{Netns, PinDir, Veth, sh},
    unique_id,
};

/// The `tollgate` binary cargo built next to this test's executable (tests
/// run from `target/<profile>/deps/`, this crate's binaries such as
/// `tollgate-soak` from `target/<profile>/`).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let exe_dir = exe.parent().expect("target dir");
    let beside = exe_dir.join("tollgate");
    let path = if beside.is_file() {
        beside
    } else {
        exe_dir.parent().expect("target dir").join("tollgate")
    };
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p tollgate` first (`cargo test --workspace` builds it)",
        path.display()
    );
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    static NOTED: std::sync::Once = std::sync::Once::new();
    if let (Some(b), Some(t)) = (modified(&path), modified(&exe))
        && b < t
        && !NOTED.is_completed()
    {
        NOTED.call_once(|| {});
        eprintln!(
            "note: {} is older than this test binary; if you changed the agent, run `cargo build -p tollgate`",
            path.display()
        );
    }
    path
}

/// One test's world: namespace, veth pair, pin dir and a scratch directory.
/// Field order is drop order.
pub struct Env {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub pins: PinDir,
    pub veth: Veth,
    pub ns: Netns,
}

impl Env {
    /// Creates the namespace, veth pair and directories (not a `Default`:
    /// it touches the system).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Env {
        let id = unique_id();
        let ns = Netns::new(&id).expect("netns");
        let veth = Veth::new(&id, &ns, 1).expect("veth");
        let dir = PathBuf::from(format!("/tmp/tg-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("state")).unwrap();
        Env {
            socket: dir.join("tollgate.sock"),
            state: dir.join("state/state.json"),
            config: dir.join("tollgate.toml"),
            dir,
            pins: PinDir::new(&id),
            veth,
            ns,
        }
    }

    pub fn write_config(&self, text: &str) {
        fs::write(&self.config, text).unwrap();
    }

    /// Runs the CLI against this env's daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running tollgate")
    }

    /// Runs the CLI, asserting success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a read command with --json.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("tollgate {args:?}: bad JSON ({e}): {out}"))
    }

    /// Runs the CLI, asserting it fails with every `expected` substring in
    /// stderr; returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str], expected: &[&str]) -> String {
        let out = self.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "tollgate {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for e in expected {
            assert!(
                stderr.contains(e),
                "tollgate {args:?}: stderr {stderr:?} should contain {e:?}"
            );
        }
        stderr
    }

    /// Starts `tollgate run` on the host side of the veth with this env's
    /// config, and waits until it answers.
    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    pub fn start_with(&self, extra: &[&str]) -> Daemon {
        let mut d = self.spawn(extra);
        d.wait_ready();
        d
    }

    pub fn spawn(&self, extra: &[&str]) -> Daemon {
        self.spawn_via(&[], extra)
    }

    /// Like [`Env::spawn`], with the daemon started through `wrapper` (a
    /// command that execs its arguments, e.g. `setpriv ...`).
    pub fn spawn_via(&self, wrapper: &[&str], extra: &[&str]) -> Daemon {
        self.spawn_logging(wrapper, extra, "info")
    }

    /// Starts the daemon logging at `rust_log` (`RUST_LOG`, e.g. "trace")
    /// and waits until it answers.
    pub fn start_logging(&self, extra: &[&str], rust_log: &str) -> Daemon {
        let mut d = self.spawn_logging(&[], extra, rust_log);
        d.wait_ready();
        d
    }

    /// Like [`Env::spawn_via`], logging at `rust_log`.
    pub fn spawn_logging(&self, wrapper: &[&str], extra: &[&str], rust_log: &str) -> Daemon {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let log = self.dir.join(format!(
            "daemon-{}.log",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let logf = fs::File::create(&log).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = command
            .args(["--socket".as_ref(), self.socket.as_os_str()])
            .arg("run")
            .args(["--config".as_ref(), self.config.as_os_str()])
            .args(["--iface", &self.veth.host])
            .args(["--pin-dir".as_ref(), self.pins.path.as_os_str()])
            .args(["--state".as_ref(), self.state.as_os_str()])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawning tollgate run");
        Daemon {
            child: Some(child),
            socket: self.socket.clone(),
            pin_dir: self.pins.path.clone(),
            log,
        }
    }

    /// Sends `n` UDP datagrams from the namespace to the host side, as fast as
    /// the socket takes them.
    pub fn send(&self, n: usize) {
        let dst = SocketAddr::from((self.veth.host_ip, 9));
        self.ns
            .run(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..n {
                    let _ = s.send_to(&[0x5a; 64], dst);
                }
            })
            .join()
            .unwrap()
            .unwrap();
    }

    pub fn stats(&self, tier: &str) -> Value {
        let s = self.json(&["stats", "--tier", tier]);
        s["tiers"][0].clone()
    }

    /// Waits until `f` holds (polling every 20 ms) or panics after `within`.
    #[track_caller]
    pub fn eventually(&self, within: Duration, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < within, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adds `ip` (in the peer's /24) to the namespace side of the veth: a
    /// second client address.
    pub fn add_peer_address(&self, ip: std::net::Ipv4Addr) {
        sh(&[
            "ip",
            "-n",
            &self.ns.name,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &self.veth.peer,
        ])
        .unwrap();
    }

    /// Adds `ip`, another env's client address, to this namespace's side of
    /// the veth as a /32 that the namespace never announces in ARP (so the
    /// root namespace's reverse-path checks never see it): one client
    /// reaching several nodes from one address.
    pub fn add_foreign_source(&self, ip: std::net::Ipv4Addr) {
        sh(&[
            "ip",
            "-n",
            &self.ns.name,
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            &self.veth.peer,
        ])
        .unwrap();
        for key in ["all", self.veth.peer.as_str()] {
            sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns.name,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{key}.arp_announce=2"),
            ])
            .unwrap();
        }
    }

    /// Starts `tollgate [--json] http tail` against this env's daemon, its
    /// output piped.
    pub fn http_tail(&self, json: bool) -> std::process::Child {
        let mut c = Command::new(bin());
        c.arg("--socket").arg(&self.socket);
        if json {
            c.arg("--json");
        }
        c.args(["http", "tail"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning http tail")
    }

    pub fn xdp_attached(&self) -> bool {
        let out = sh(&["ip", "-d", "link", "show", "dev", &self.veth.host]).unwrap();
        out.contains("prog/xdp")
    }

    pub fn tier_index(&self, name: &str) -> u32 {
        let tiers = self.json(&["tier", "list"]);
        tiers
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no tier {name} in {tiers}"))["index"]
            .as_u64()
            .unwrap() as u32
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A `tollgate run` process. Dropping it kills the daemon and detaches its
/// pin dir, so nothing stays attached whatever the test did.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon answers `status` (the program is attached then);
    /// fails at once, with its log, if it exits instead.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if tollgate::client::request(&self.socket, &tollgate::proto::Request::Status {}).is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                panic!(
                    "daemon exited ({status}) instead of coming up; log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "daemon did not come up; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit: the daemon leaves the program
    /// pinned and attached. (Keep the guard: dropping it detaches.)
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(within)
    }

    /// Waits for the daemon to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < within,
                "daemon did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("detach")
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .output();
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log {} ----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

pub fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} not a number in {v}"))
}

/// A TCP port on loopback that was free a moment ago (for `metrics_address`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` on 127.0.0.1:`port`, as Prometheus scrapes it; the body.
pub fn scrape_metrics(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of the sample whose name and labels are exactly `series` in a
/// scraped body (e.g. `tollgate_interface_attached{interface="eth0"}`).
#[track_caller]
pub fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// VmRSS of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
