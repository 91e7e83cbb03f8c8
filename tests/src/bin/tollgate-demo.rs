//! `cargo xtask demo`: tollgate's job on a throwaway network, in 20 seconds.
//!
//! Creates a namespace and a veth pair (`tg-*`), starts the real daemon on the
//! host side with its embedded default configuration, and drives UDP traffic
//! from four simulated clients in the namespace:
//!
//! * well-behaved: steady, under the default tier's limit;
//! * bursty: quiet, then short bursts well over the limit;
//! * abusive: constantly three times over the limit;
//! * allow-listed: heavy, but `tollgate rule add ... --allow` exempts it.
//!
//! Halfway through it tightens the default tier live with `tollgate tier set`.
//! Every second it shows, per client, what was sent and what reached the
//! server (counted by source on a real socket), then `tollgate stats`.
//! Everything it created is removed at the end, also on Ctrl-C.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tollgate_tests::{
    net::{Netns, Veth, sh},
    unique_id,
};

const SECONDS: u64 = 20;
const PORT: u16 = 9999;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

struct Client {
    name: &'static str,
    ip: Ipv4Addr,
    sent: Arc<AtomicU64>,
}

/// The daemon process; killed (after `tollgate detach`) on drop.
struct Daemon {
    child: Child,
    tollgate: PathBuf,
    socket: PathBuf,
    pin_dir: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.tollgate)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running tollgate")?;
        if !out.status.success() {
            bail!(
                "tollgate {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new(&self.tollgate)
            .arg("--socket")
            .arg(&self.socket)
            .args(["detach", "--pin-dir"])
            .arg(&self.pin_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() -> Result<()> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates a network namespace and loads XDP: run it as root");
    }
    let tollgate = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: tollgate-demo PATH/TO/tollgate")?;

    let id = unique_id();
    println!("tollgate demo: namespace tg-{id}, veth tg-h{id} <-> tg-n{id}");
    let ns = Netns::new(&id)?;
    let veth = Veth::new(&id, &ns, 1)?;
    let base = veth.peer_ip.octets();
    let client_ip = |last: u8| Ipv4Addr::new(base[0], base[1], base[2], last);
    let clients = vec![
        Client {
            name: "well-behaved",
            ip: client_ip(10),
            sent: Arc::default(),
        },
        Client {
            name: "bursty",
            ip: client_ip(11),
            sent: Arc::default(),
        },
        Client {
            name: "abusive",
            ip: client_ip(12),
            sent: Arc::default(),
        },
        Client {
            name: "allow-listed",
            ip: client_ip(13),
            sent: Arc::default(),
        },
    ];
    for c in &clients {
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/24", c.ip),
            "dev",
            &veth.peer,
        ])?;
    }

    let dir = PathBuf::from(format!("/tmp/tg-{id}"));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("tollgate.sock");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/tg-{id}"));
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let child = Command::new(&tollgate)
        .args([
            "run",
            "--iface",
            &veth.host,
            "--mode",
            "native",
            "--pin-dir",
        ])
        .arg(&pin_dir)
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--socket")
        .arg(&socket)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting tollgate run")?;
    let daemon = Daemon {
        child,
        tollgate,
        socket,
        pin_dir,
        dir,
    };
    wait_for_socket(&daemon.socket)?;
    println!(
        "daemon up: tollgate run --iface {} (embedded default config)",
        veth.host
    );
    println!("$ tollgate rule add {}/32 --allow", clients[3].ip);
    daemon.cli(&["rule", "add", &format!("{}/32", clients[3].ip), "--allow"])?;

    // The server: one UDP socket on the host side, counting arrivals by source.
    let server = UdpSocket::bind(SocketAddr::from((veth.host_ip, PORT)))?;
    server.set_read_timeout(Some(Duration::from_millis(100)))?;
    let received: Arc<Mutex<HashMap<IpAddr, u64>>> = Arc::default();
    let rx = {
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !STOP.load(Ordering::Relaxed) {
                if let Ok((_, from)) = server.recv_from(&mut buf) {
                    *received.lock().unwrap().entry(from.ip()).or_default() += 1;
                }
            }
        })
    };

    let dst = SocketAddr::from((veth.host_ip, PORT));
    let start = Instant::now();
    let mut senders = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (ip, sent) = (c.ip, c.sent.clone());
        senders.push(ns.run(move || -> Result<()> {
            let socket = UdpSocket::bind((ip, 0))?;
            let payload = [0u8; 64];
            // Offered load per client, packets/s, as a function of time.
            let rate = |t: f64| -> f64 {
                match i {
                    0 => 150.0,
                    1 => {
                        if t % 4.0 < 0.5 {
                            6000.0
                        } else {
                            100.0
                        }
                    }
                    2 => 3000.0,
                    _ => 4000.0,
                }
            };
            let mut credit = 0.0;
            let mut last = Instant::now();
            while !STOP.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(SECONDS) {
                let now = Instant::now();
                credit +=
                    rate(start.elapsed().as_secs_f64()) * now.duration_since(last).as_secs_f64();
                last = now;
                while credit >= 1.0 {
                    if socket.send_to(&payload, dst).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    credit -= 1.0;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }));
    }

    let mut tightened = false;
    let mut prev_sent: Vec<u64> = vec![0; clients.len()];
    let mut prev_recv: Vec<u64> = vec![0; clients.len()];
    while !STOP.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(SECONDS) {
        std::thread::sleep(Duration::from_secs(1));
        let t = start.elapsed().as_secs();
        if t >= SECONDS / 2 && !tightened {
            tightened = true;
            daemon.cli(&[
                "tier",
                "set",
                "default",
                "--packets",
                "200/s",
                "--burst",
                "200",
            ])?;
        }
        let recv = received.lock().unwrap().clone();
        print!("\x1b[2J\x1b[H");
        println!(
            "tollgate demo  t={t:>2}s/{SECONDS}s   (Ctrl-C to stop)   default tier: {}",
            if tightened {
                "tightened live to 200 packets/s (tollgate tier set default --packets 200/s --burst 200)"
            } else {
                "embedded default, 1000 packets/s per source"
            }
        );
        println!();
        println!(
            "{:<14} {:<16} {:>12} {:>14} {:>12} {:>10}",
            "client", "source", "sent/s", "delivered/s", "dropped/s", "dropped"
        );
        for (i, c) in clients.iter().enumerate() {
            let s = c.sent.load(Ordering::Relaxed);
            let r = recv.get(&IpAddr::V4(c.ip)).copied().unwrap_or(0);
            let (ds, dr) = (s - prev_sent[i], r.saturating_sub(prev_recv[i]));
            let share = if ds == 0 {
                0.0
            } else {
                100.0 * ds.saturating_sub(dr) as f64 / ds as f64
            };
            println!(
                "{:<14} {:<16} {:>12} {:>14} {:>12} {:>9.0}%",
                c.name,
                c.ip.to_string(),
                ds,
                dr,
                ds.saturating_sub(dr),
                share
            );
            prev_sent[i] = s;
            prev_recv[i] = r;
        }
        println!("\n$ tollgate stats");
        match daemon.cli(&["stats"]) {
            Ok(out) => print!("{out}"),
            Err(e) => println!("{e:#}"),
        }
        println!("\n$ tollgate top -n 5");
        match daemon.cli(&["top", "-n", "5"]) {
            Ok(out) => print!("{out}"),
            Err(e) => println!("{e:#}"),
        }
    }
    STOP.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let _ = rx.join();
    println!("\ncleaning up: tollgate detach, daemon stopped, tg-{id} namespace and veth removed");
    drop(daemon);
    drop(veth);
    drop(ns);
    Ok(())
}

fn wait_for_socket(socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if socket.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the daemon did not create {} within 20 s", socket.display())
}
