//! A throwaway `redis-server` on a free loopback port, killed on drop.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Whether `redis-server` is installed (`cargo xtask setup` installs it).
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns true when the test may use redis-server. Without it, prints a loud
/// skip notice and returns false; under CI it panics instead.
pub fn required(test: &str) -> bool {
    if available() {
        return true;
    }
    if crate::privileged_required() {
        panic!("{test}: needs redis-server (cargo xtask setup), and CI=true forbids skipping");
    }
    eprintln!("\n!!!! SKIPPED {test}: needs redis-server (cargo xtask setup) !!!!\n");
    false
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl RedisServer {
    /// Starts a server on a free port, without persistence.
    pub fn start() -> Result<RedisServer> {
        let mut last = None;
        for _ in 0..5 {
            match Self::start_on(free_port()?) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    /// Starts a server on `port` (e.g. again, after [`RedisServer::stop`]).
    pub fn start_on(port: u16) -> Result<RedisServer> {
        Self::start_with(port, &[])
    }

    /// Starts a Redis Cluster node (cluster mode, no slots yet) on a free port.
    pub fn start_cluster_node() -> Result<RedisServer> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            match Self::start_with(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                ],
            ) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    fn start_with(port: u16, extra: &[&str]) -> Result<RedisServer> {
        let dir = PathBuf::from(format!("/tmp/tg-redis-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning redis-server")?;
        let mut s = RedisServer {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if s.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(s);
            }
            if let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "redis-server on port {port} exited ({status}): {}",
                    std::fs::read_to_string(s.dir.join("redis.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer within 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (a crash, as far as clients can tell).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` to the server (SIGSTOP: a hung Redis; SIGCONT: resumed).
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// Sends one inline command; returns the raw reply (bounded wait).
    pub fn command(&self, cmd: &str) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        // A reply is complete when it ends in CRLF and a bulk reply has all
        // its announced bytes; INFO is one bulk string.
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"\r\n") && bulk_complete(&out) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `INFO <section>` as numbers (non-numeric fields left out).
    pub fn info(&self, section: &str) -> Result<HashMap<String, u64>> {
        let reply = self.command(&format!("INFO {section}"))?;
        Ok(reply
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
            .collect())
    }
}

fn bulk_complete(reply: &[u8]) -> bool {
    if reply.first() != Some(&b'$') {
        return true;
    }
    let Some(eol) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let len: i64 = std::str::from_utf8(&reply[1..eol])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    len < 0 || reply.len() >= eol + 2 + len as usize + 2
}

/// Joins cluster-mode servers into one Redis Cluster (no replicas) and waits
/// until it is up.
pub fn create_cluster(nodes: &[RedisServer]) -> Result<()> {
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli --cluster create")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.iter().all(|n| {
        n.command("CLUSTER INFO")
            .is_ok_and(|i| i.contains("cluster_state:ok"))
    }) {
        if Instant::now() > deadline {
            bail!("the Redis Cluster did not become ok within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
