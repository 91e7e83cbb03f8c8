//! Network namespaces and veth pairs for end-to-end tests.

use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};

/// Runs a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("spawning {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace `tg-<id>`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(id: &str) -> Result<Netns> {
        let name = format!("tg-{id}");
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<Result<T>> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_netns(&path)?;
            Ok(f())
        })
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter_netns(path: &str) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair: `host` (`tg-h<id>`) in the root namespace, where tollgate
/// attaches, and `peer` (`tg-n<id>`) inside the test's namespace, where traffic
/// comes from. Each side gets an address in a /24 of 198.18.0.0/15 (the
/// benchmarking range) chosen per pair, so concurrent tests never share routes.
pub struct Veth {
    pub host: String,
    pub peer: String,
    pub host_ip: Ipv4Addr,
    pub peer_ip: Ipv4Addr,
    pub ifindex: u32,
}

impl Veth {
    /// Creates the pair with `queues` TX and RX queues on each side.
    pub fn new(id: &str, ns: &Netns, queues: u32) -> Result<Veth> {
        static SUBNET: AtomicU32 = AtomicU32::new(0);
        let subnet = (std::process::id() * 7 + SUBNET.fetch_add(1, Ordering::Relaxed)) % 512;
        let (b2, b3) = (18 + (subnet / 256) as u8, (subnet % 256) as u8);
        let host_ip = Ipv4Addr::new(198, b2, b3, 1);
        let peer_ip = Ipv4Addr::new(198, b2, b3, 2);
        let mut veth = Veth {
            host: format!("tg-h{id}"),
            peer: format!("tg-n{id}"),
            host_ip,
            peer_ip,
            ifindex: 0,
        };
        veth.create(ns, queues)?;
        Ok(veth)
    }

    /// Creates the pair again, after it was deleted, with the same names and
    /// addresses (and a new ifindex).
    pub fn recreate(&mut self, ns: &Netns, queues: u32) -> Result<()> {
        self.create(ns, queues)
    }

    fn create(&mut self, ns: &Netns, queues: u32) -> Result<()> {
        let (host, peer) = (self.host.clone(), self.peer.clone());
        let (host_ip, peer_ip) = (self.host_ip, self.peer_ip);
        let q = queues.to_string();
        sh(&[
            "ip",
            "link",
            "add",
            &host,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &ns.name,
        ])?;
        // No IPv6 on the test link: router solicitations and MLD reports would
        // be extra sources in the counters.
        sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{host}.disable_ipv6=1"),
        ])?;
        let peer_key = format!("net.ipv6.conf.{peer}.disable_ipv6=1");
        sh(&["ip", "netns", "exec", &ns.name, "sysctl", "-qw", &peer_key])?;
        sh(&["ip", "addr", "add", &format!("{host_ip}/24"), "dev", &host])?;
        sh(&["ip", "link", "set", &host, "up"])?;
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{peer_ip}/24"),
            "dev",
            &peer,
        ])?;
        sh(&["ip", "-n", &ns.name, "link", "set", &peer, "up"])?;
        self.ifindex = std::fs::read_to_string(format!("/sys/class/net/{host}/ifindex"))?
            .trim()
            .parse()?;
        Ok(())
    }
}

impl Veth {
    /// Steers the namespace side's TX queue `q` to CPU `q` (XPS), so a sender
    /// thread on CPU q feeds RX queue q of the host side, whose NAPI (and so the
    /// XDP program) then runs on CPU q.
    pub fn steer_queues_to_cpus(&self, ns: &Netns, queues: u32) -> Result<()> {
        for q in 0..queues {
            let mask = format!("{:x}", 1u64 << q);
            let path = format!("/sys/class/net/{}/queues/tx-{q}/xps_cpus", self.peer);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns.name,
                "sh",
                "-c",
                &format!("echo {mask} > {path}"),
            ])?;
        }
        Ok(())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end removes both.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .status();
    }
}

/// A bpffs directory `/sys/fs/bpf/tg-<id>`, removed with its pins on drop.
pub struct PinDir {
    pub path: std::path::PathBuf,
}

impl PinDir {
    pub fn new(id: &str) -> PinDir {
        PinDir {
            path: std::path::PathBuf::from(format!("/sys/fs/bpf/tg-{id}")),
        }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) affects this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
