//! A CPU-starved cgroup for tests with real pressure: `tg-<id>` with a CPU
//! quota below what stress-ng wants, so its `cpu.pressure` rises while
//! stress-ng runs in it. Removed (its processes killed first) when the guard
//! drops, also while a failing test unwinds.
//!
//! On a unified (cgroup v2 only) host the cgroup is `/sys/fs/cgroup/tg-<id>`
//! with `cpu.max`. On a hybrid host (v1 controllers, v2 mounted at
//! `/sys/fs/cgroup/unified` without them) the quota is the v1 cpu
//! controller's `cpu.cfs_quota_us` in `/sys/fs/cgroup/cpu/tg-<id>`, and the
//! pressure is read from the v2 cgroup `/sys/fs/cgroup/unified/tg-<id>`:
//! PSI is per v2 cgroup whatever the controllers, and a task throttled by
//! its quota is runnable but not running, which is what `some` counts.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

const PERIOD_US: u64 = 100_000;

/// The cgroup (one or two directories) and the stress-ng running in it.
pub struct StressCgroup {
    /// The v2 cgroup's `cpu.pressure`.
    pub pressure_file: PathBuf,
    /// Directories created, removed in reverse order.
    dirs: Vec<PathBuf>,
    child: Option<Child>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

impl StressCgroup {
    /// Creates `tg-<id>` with a quota of `quota_percent` % of one CPU.
    pub fn new(id: &str, quota_percent: u64) -> Result<StressCgroup> {
        let quota = PERIOD_US * quota_percent / 100;
        let name = format!("tg-{id}");
        let root = Path::new("/sys/fs/cgroup");
        let mut cg = StressCgroup {
            pressure_file: PathBuf::new(),
            dirs: Vec::new(),
            child: None,
        };
        if root.join("cgroup.controllers").exists() {
            // Unified: enable the cpu controller for children, then the quota.
            let _ = fs::write(root.join("cgroup.subtree_control"), "+cpu");
            let dir = root.join(&name);
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            cg.dirs.push(dir.clone());
            write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            cg.pressure_file = dir.join("cpu.pressure");
        } else if root.join("unified/cgroup.controllers").exists() && root.join("cpu").is_dir() {
            let v2 = root.join("unified").join(&name);
            fs::create_dir(&v2).with_context(|| format!("creating {}", v2.display()))?;
            cg.dirs.push(v2.clone());
            let v1 = root.join("cpu").join(&name);
            fs::create_dir(&v1).with_context(|| format!("creating {}", v1.display()))?;
            cg.dirs.push(v1.clone());
            write(&v1.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&v1.join("cpu.cfs_quota_us"), &quota.to_string())?;
            cg.pressure_file = v2.join("cpu.pressure");
        } else {
            bail!("no cgroup v2 hierarchy with a cpu controller or v1 cpu quota on this host");
        }
        if !cg.pressure_file.exists() {
            bail!(
                "{} is missing: the kernel has no PSI (boot with psi=1)",
                cg.pressure_file.display()
            );
        }
        Ok(cg)
    }

    /// Starts `stress-ng --cpu workers` in the cgroup, for at most `bound`
    /// (stress-ng's own timeout: it ends even if the test hangs).
    pub fn start(&mut self, workers: u32, bound: Duration) -> Result<()> {
        // A shell that moves itself into the cgroup, then becomes stress-ng:
        // stress-ng and its workers start inside it.
        let mut script = String::new();
        for d in &self.dirs {
            script.push_str(&format!(
                "echo $$ > '{}' && ",
                d.join("cgroup.procs").display()
            ));
        }
        script.push_str(&format!(
            "exec stress-ng --cpu {workers} --quiet --timeout {}s",
            bound.as_secs().max(1)
        ));
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = c
            .spawn()
            .context("starting stress-ng (cargo xtask setup installs it)")?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills stress-ng and every process left in the cgroup, and waits until
    /// the cgroup is empty (at most 5 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole process group: stress-ng and its workers.
            // SAFETY: kill(2) has no memory preconditions.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
        let started = Instant::now();
        for d in &self.dirs {
            while let Ok(pids) = fs::read_to_string(d.join("cgroup.procs")) {
                let pids: Vec<i32> = pids.lines().filter_map(|l| l.parse().ok()).collect();
                if pids.is_empty() || started.elapsed() > Duration::from_secs(5) {
                    break;
                }
                for pid in pids {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `some avg10` of the cgroup's CPU pressure, percent.
    pub fn pressure(&self) -> Result<f64> {
        let text = fs::read_to_string(&self.pressure_file)?;
        text.lines()
            .find(|l| l.starts_with("some "))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("avg10="))
            })
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no some avg10 in {text}"))
    }
}

impl Drop for StressCgroup {
    fn drop(&mut self) {
        self.stop();
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
