//! The service and the client of `cargo xtask bench ddos`: nginx (the
//! Debian package) as a child process with a private prefix, and the parser
//! for `wrk --latency` output.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

/// What `wrk --latency` reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkReport {
    pub requests_per_sec: f64,
    pub requests: u64,
    /// The 99th percentile latency (`None` when no request completed).
    pub p99: Option<Duration>,
    /// `Socket errors:` connect, read, write, timeout (0 when absent).
    pub errors: [u64; 4],
    /// `Non-2xx or 3xx responses:`.
    pub non_2xx: u64,
}

/// A wrk duration such as `812.00us`, `1.23ms`, `2.00s` or `1.50m`.
fn parse_wrk_time(s: &str) -> Result<Duration> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in wrk time {s:?}"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .with_context(|| format!("bad number in wrk time {s:?}"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("unknown unit {unit:?} in wrk time {s:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the output of `wrk --latency`.
pub fn parse_wrk(out: &str) -> Result<WrkReport> {
    let mut r = WrkReport::default();
    let mut rps = None;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(
                v.trim()
                    .parse()
                    .with_context(|| format!("bad Requests/sec line {line:?}"))?,
            );
        } else if words.first() == Some(&"99%") && words.len() == 2 {
            let t = parse_wrk_time(words[1])?;
            r.p99 = Some(t);
        } else if words.len() >= 3 && words[1] == "requests" && words[2] == "in" {
            r.requests = words[0]
                .parse()
                .with_context(|| format!("bad request count in {line:?}"))?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for part in v.split(',') {
                let mut kv = part.split_whitespace();
                let (Some(k), Some(n)) = (kv.next(), kv.next()) else {
                    bail!("bad socket errors line {line:?}");
                };
                let i = ["connect", "read", "write", "timeout"]
                    .iter()
                    .position(|x| *x == k)
                    .with_context(|| format!("unknown socket error {k:?} in {line:?}"))?;
                r.errors[i] = n
                    .parse()
                    .with_context(|| format!("bad count in {line:?}"))?;
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v
                .trim()
                .parse()
                .with_context(|| format!("bad non-2xx line {line:?}"))?;
        }
    }
    r.requests_per_sec = rps.with_context(|| format!("no Requests/sec in wrk output:\n{out}"))?;
    if r.requests == 0 {
        // wrk prints a zero distribution when nothing completed.
        r.p99 = None;
    } else {
        ensure!(r.p99.is_some(), "no 99% latency line in wrk output:\n{out}");
    }
    Ok(r)
}

/// nginx as our child process, in its own process group, with a private
/// prefix `/tmp/tg-ddos-<id>/` (configuration, pid, logs, temp paths);
/// stopped and removed on drop.
pub struct Nginx {
    pub addr: SocketAddr,
    pub prefix: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx on `ip` (a free port), pinned to `cpu`, at `nice`, and
    /// waits (at most 5 s) until it accepts connections.
    pub fn start(id: &str, ip: Ipv4Addr, cpu: usize, nice: i32) -> Result<Nginx> {
        let prefix = PathBuf::from(format!("/tmp/tg-ddos-{id}"));
        // The guard first: whatever is created below is removed.
        let mut nginx = Nginx {
            addr: SocketAddr::new(IpAddr::V4(ip), 0),
            prefix: prefix.clone(),
            child: None,
        };
        std::fs::create_dir_all(prefix.join("tmp"))
            .with_context(|| format!("creating {}", prefix.display()))?;
        // A free port on our own address (nobody else uses the address).
        let port = std::net::TcpListener::bind((ip, 0))
            .with_context(|| format!("binding {ip}:0"))?
            .local_addr()?
            .port();
        nginx.addr.set_port(port);
        let p = prefix.display();
        let conf = format!(
            "worker_processes 1;\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \taccess_log off;\n\
             \tclient_body_temp_path {p}/tmp/body;\n\
             \tproxy_temp_path {p}/tmp/proxy;\n\
             \tfastcgi_temp_path {p}/tmp/fastcgi;\n\
             \tuwsgi_temp_path {p}/tmp/uwsgi;\n\
             \tscgi_temp_path {p}/tmp/scgi;\n\
             \tkeepalive_requests 1000000;\n\
             \tserver {{\n\
             \t\tlisten {ip}:{port} backlog=4096;\n\
             \t\tlocation / {{ return 200 \"ok\\n\"; }}\n\
             \t}}\n\
             }}\n"
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string(), "nginx"])
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off; master_process on;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawning nginx")?;
        nginx.child = Some(child);
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&nginx.addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = nginx.child.as_mut().expect("spawned").try_wait()? {
                bail!(
                    "nginx exited ({status}) before listening on {}: {}",
                    nginx.addr,
                    std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
                );
            }
            ensure!(
                start.elapsed() < Duration::from_secs(5),
                "nginx is not listening on {} after 5 s",
                nginx.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in nginx.pids() {
            set_nice(pid, nice)?;
        }
        Ok(nginx)
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<i32> {
        let master = self.pid();
        let mut out = vec![master];
        out.extend(children(master));
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // SAFETY: signals to our own child's process group.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; the workers too, should any remain.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
        }
        if self.prefix.starts_with("/tmp") {
            let _ = std::fs::remove_dir_all(&self.prefix);
        }
    }
}

/// Children of `pid` (the `ppid` field of `/proc/<p>/stat`).
fn children(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // After the `(comm)`, which may hold spaces: state, ppid.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Sets the nice of process (or thread) `pid`; 0: the calling thread.
pub fn set_nice(pid: i32, nice: i32) -> Result<()> {
    // SAFETY: no memory is passed; affects only `pid`.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) } != 0 {
        bail!(
            "setpriority({pid}, {nice}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 5s test @ http://198.18.3.1:41234/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.34us  120.01us   5.21ms   91.02%
    Req/Sec    19.51k     1.02k   21.00k    70.00%
  Latency Distribution
     50%  790.00us
     75%  850.12us
     90%  920.00us
     99%    1.53ms
  97012 requests in 5.00s, 14.71MB read
  Socket errors: connect 0, read 2, write 0, timeout 7
  Non-2xx or 3xx responses: 3
Requests/sec:  19398.61
Transfer/sec:      2.94MB
";

    #[test]
    fn parses_wrk_latency_output() {
        let r = parse_wrk(OUT).unwrap();
        assert_eq!(r.requests_per_sec, 19398.61);
        assert_eq!(r.requests, 97012);
        assert_eq!(r.p99, Some(Duration::from_micros(1530)));
        assert_eq!(r.errors, [0, 2, 0, 7]);
        assert_eq!(r.non_2xx, 3);
    }

    #[test]
    fn parses_wrk_without_errors_and_with_nothing_completed() {
        let clean = OUT
            .lines()
            .filter(|l| !l.contains("Socket errors") && !l.contains("Non-2xx"))
            .collect::<Vec<_>>()
            .join("\n");
        let r = parse_wrk(&clean).unwrap();
        assert_eq!((r.errors, r.non_2xx), ([0; 4], 0));
        let none = OUT
            .replace("97012 requests", "0 requests")
            .replace("1.53ms", "0.00us")
            .replace("19398.61", "0.00");
        let r = parse_wrk(&none).unwrap();
        assert_eq!((r.requests, r.p99, r.requests_per_sec), (0, None, 0.0));
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn parses_wrk_times() {
        assert_eq!(parse_wrk_time("2.00s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_wrk_time("1.50m").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_wrk_time("250.00us").unwrap(),
            Duration::from_micros(250)
        );
        assert!(parse_wrk_time("12").is_err());
        assert!(parse_wrk_time("1.0x").is_err());
    }
}
