//! A throwaway CrowdSec local API (the Debian package's `crowdsec`, LAPI
//! only: `-no-cs -no-capi`) on a free loopback port, with its own config,
//! SQLite database and credentials under `/tmp/tg-crowdsec-<id>/`, run as
//! `tg-lapi-<id>` (a symlink to the binary) and killed on drop. Nothing
//! touches the network: no Central API, no hub downloads.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const CROWDSEC: &str = "/usr/bin/crowdsec";
const CSCLI: &str = "/usr/bin/cscli";

/// Whether the `crowdsec` package is installed (`cargo xtask setup`).
pub fn available() -> bool {
    Path::new(CROWDSEC).is_file() && Path::new(CSCLI).is_file()
}

/// Returns true when the test may run a local API. Without the package it
/// prints a loud skip notice and returns false; under CI it panics instead.
pub fn required(test: &str) -> bool {
    if available() {
        return true;
    }
    if crate::privileged_required() {
        panic!(
            "{test}: needs the crowdsec package (cargo xtask setup), and CI=true forbids skipping"
        );
    }
    eprintln!("\n!!!! SKIPPED {test}: needs the crowdsec package (cargo xtask setup) !!!!\n");
    false
}

pub struct Lapi {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    id: String,
}

impl Lapi {
    /// Writes a config for a free port, registers a machine (for `cscli
    /// decisions`) and starts the local API.
    pub fn start() -> Result<Lapi> {
        let id = crate::unique_id();
        let dir = PathBuf::from(format!("/tmp/tg-crowdsec-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("hub"))?;
        let port = crate::daemon::free_port();
        let d = dir.display().to_string();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: {d}
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
cscli:
  output: human
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
api:
  client:
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 127.0.0.1:{port}
    profiles_path: {d}/profiles.yaml
    trusted_ips: [127.0.0.1]
prometheus:
  enabled: false
"
            ),
        )?;
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n")?;
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )?;
        std::os::unix::fs::symlink(CROWDSEC, dir.join(format!("tg-lapi-{id}")))?;
        let mut lapi = Lapi {
            child: None,
            port,
            dir,
            id,
        };
        lapi.cscli(&[
            "machines",
            "add",
            "tg-test",
            "--password",
            "tg-test-password-0123456789",
            "-f",
            &format!("{d}/local_api_credentials.yaml"),
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])?;
        lapi.spawn()?;
        Ok(lapi)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Starts (again, after [`Lapi::stop`]) the local API on the same port
    /// and database, and waits until it answers.
    pub fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("lapi.log"))?;
        let child = Command::new(self.dir.join(format!("tg-lapi-{}", self.id)))
            .arg("-c")
            .arg(self.dir.join("config.yaml"))
            .args(["-no-cs", "-no-capi"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning crowdsec")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Any HTTP answer (403 without a key) means it serves.
            if self.get("/v1/decisions", "").is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("crowdsec exited ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                bail!("crowdsec did not answer within 20 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the local API (a crash, as far as bouncers can tell).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lapi.log")).unwrap_or_default()
    }

    /// Runs `cscli -c <this config> ARGS`; returns stdout.
    pub fn cscli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(CSCLI)
            .arg("-c")
            .arg(self.dir.join("config.yaml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running cscli")?;
        if !out.status.success() {
            bail!(
                "cscli {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `cscli bouncers add NAME -o raw`: the new bouncer's key.
    pub fn bouncer_key(&self, name: &str) -> Result<String> {
        let key = self.cscli(&["bouncers", "add", name, "-o", "raw"])?;
        let key = key.trim().to_owned();
        if key.is_empty() {
            bail!("cscli bouncers add printed no key");
        }
        Ok(key)
    }

    /// One GET with `X-Api-Key: key`: (status, body).
    pub fn get(&self, path: &str, key: &str) -> Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {key}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((status, body))
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
