//! A throwaway Prometheus server (the Debian package `prometheus`, installed
//! by `cargo xtask setup`) on a free loopback port, with its own config and
//! TSDB under `/tmp/tg-prom-<id>/`; killed and removed on drop (also while a
//! failing test unwinds). Queried over its HTTP API with a minimal HTTP/1.0
//! GET, so the tests need no HTTP client crate.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Whether the `prometheus` binary is installed.
pub fn available() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns true when the test may run Prometheus. Without it, prints a loud
/// skip notice and returns false; under CI it panics instead.
pub fn required(test: &str) -> bool {
    if available() {
        return true;
    }
    if crate::privileged_required() {
        panic!("{test}: needs prometheus (cargo xtask setup), and CI=true forbids skipping");
    }
    eprintln!("\n!!!! SKIPPED {test}: needs prometheus (cargo xtask setup) !!!!\n");
    false
}

pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with `config` (a prometheus.yml) on a free loopback
    /// port and waits (at most 20 s) until it is ready.
    pub fn start(config: &str) -> Result<Prometheus> {
        let dir = PathBuf::from(format!("/tmp/tg-prom-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        // From here on, the guard removes the directory whatever happens.
        let mut p = Prometheus {
            child: None,
            port: 0,
            dir,
        };
        let config_path = p.dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        p.port = port;
        let log = std::fs::File::create(p.dir.join("prometheus.log"))?;
        p.child = Some(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    p.dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawning prometheus")?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = p.child.as_mut().unwrap().try_wait()? {
                bail!("prometheus exited ({status}):\n{}", p.log());
            }
            if p.get("/-/ready").is_ok_and(|(code, _)| code == 200) {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 20 s:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` (already encoded): (status code, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: the body runs to the end of the connection, never chunked.
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (head, body) = out
            .split_once("\r\n\r\n")
            .with_context(|| format!("no header end in {out:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        Ok((code, body.to_owned()))
    }

    /// `GET path` on the HTTP API, its JSON; fails unless `status` is
    /// `success`.
    pub fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = self.get(path)?;
        let v: Value =
            serde_json::from_str(&body).with_context(|| format!("{path}: {code} {body}"))?;
        if v["status"] != "success" {
            bail!("{path}: {code} {body}");
        }
        Ok(v["data"].clone())
    }

    /// An instant query (`/api/v1/query`) at `time` (Unix seconds; `None`:
    /// now): the result's `data`.
    pub fn query(&self, promql: &str, time: Option<f64>) -> Result<Value> {
        let mut path = format!("/api/v1/query?query={}", encode(promql));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        self.api(&path)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter's value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
