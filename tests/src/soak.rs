//! Soak: the real daemon under mixed traffic while its control plane churns
//! and it is restarted over and over (`cargo xtask soak`, and a short run in
//! `tests/tests/soak.rs`).
//!
//! For the whole run, from the test namespace to the host side of the veth:
//!
//! * an abusive UDP source (its own address) sends at 2.5x its tier's packet
//!   limit;
//! * a legitimate UDP source, in another tier, sends well under its limit;
//! * an HTTP client makes keep-alive requests to a real server (for the mix:
//!   the daemon samples them).
//!
//! Meanwhile, every ~2 s (seeded), the control plane churns: `tollgate tier
//! set/rm` and `rule add/rm` on tiers and CIDRs no traffic uses, SIGHUP and
//! `tollgate reload` after a harmless change to the config file. Every ~10 s
//! the daemon is restarted, alternately with SIGTERM and with `kill -9`, with
//! a CLI change racing the stop.
//!
//! What is measured:
//!
//! * **Lost CLI changes.** Every change the CLI acknowledged (exit 0) is
//!   expected in `tier list`/`rule list` after every restart, every reload and
//!   at the end, until a later change of the same tier or CIDR. A change the
//!   CLI did not acknowledge (it raced a stop) may or may not have happened:
//!   both outcomes are accepted.
//! * **Enforcement gaps.** A host-side receiver counts the abusive source's
//!   datagrams per 1-second window of their kernel receive timestamps
//!   (`SO_TIMESTAMPNS`). GCRA admits at most `rate × w + burst` in any window
//!   of length `w` of verdict times. The receive timestamp is taken in the same
//!   NAPI poll as the XDP verdict, microseconds later; we allow
//!   [`VERDICT_TO_TIMESTAMP`] (5 ms, for a vCPU preempted in between on a noisy
//!   VM) plus the measured drift between the realtime clock of the timestamps
//!   and the monotonic clock of the program, on both sides of the window:
//!   bound `rate × (1 s + 2J) + burst`. A window over it, a sliding 1-second
//!   window over it, or a whole-run total over `rate × (span + 2J) + burst` is
//!   a gap. If the program were ever detached, or a bucket reset, or the source
//!   briefly fell out of its tier (the default tier is generous), the 2.5x
//!   source would overshoot the bound.
//! * **Memory.** Each daemon instance's RSS at ~2 s of age and at its last
//!   sample; the kernel memory (memlock) of the program and maps at start and
//!   end, and how many `tollgate` programs use this run's pinned maps (one,
//!   unless restarts leak programs); after the final `tollgate detach`, none.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fmt,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::Value;

use crate::{
    daemon::{Daemon, Env, bin, free_port, rss_kib},
    httpd,
    net::sh,
    traffic::{Sent, send_udp_paced_until},
};

/// Environment variable with a seed to replay (decimal or 0x-hex).
pub const SEED_ENV: &str = "TOLLGATE_SOAK_SEED";

/// Longest time between an XDP verdict and the kernel receive timestamp of
/// the same datagram (same NAPI poll; the margin is for vCPU preemption).
pub const VERDICT_TO_TIMESTAMP: Duration = Duration::from_millis(5);

/// Tiers the churn creates, changes and removes (no traffic uses them).
const CHURN_TIERS: [&str; 6] = ["soak-0", "soak-1", "soak-2", "soak-3", "soak-4", "soak-5"];
/// CIDRs the churn adds and removes rules for: documentation ranges, far from
/// the veth's 198.18.0.0/15 addresses, so no traffic matches them.
const CHURN_CIDRS: [&str; 8] = [
    "203.0.113.0/28",
    "203.0.113.16/28",
    "203.0.113.128/25",
    "198.51.100.0/24",
    "198.51.100.7/32",
    "192.0.2.0/25",
    "2001:db8:1::/48",
    "2001:db8:2:3::/64",
];
const CHURN_RATES: [u64; 6] = [50, 100, 250, 500, 1000, 5000];
/// Longest a CLI call may take before it is killed (and counted as failed).
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a SIGHUP may take to show in `tier list`.
const SIGHUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Notes kept in the report (the counters keep counting).
const MAX_NOTES: usize = 30;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long traffic flows; the churn stops a little before.
    pub duration: Duration,
    pub seed: u64,
    /// Mean time between control-plane changes (jittered ±25%).
    pub churn_every: Duration,
    /// Time between daemon restarts: restart k comes at k × this, plus up to
    /// a fifth of it (seeded), alternately SIGTERM and kill -9.
    pub restart_every: Duration,
    /// The abusive source's tier: packets/s and burst.
    pub abusive_limit: u64,
    pub abusive_burst: u64,
    /// What the abusive source offers, packets/s.
    pub abusive_rate: u64,
    /// The legitimate source's tier limit (burst: one second's worth) and offer.
    pub legit_limit: u64,
    pub legit_rate: u64,
    /// HTTP requests per second (keep-alive, a new connection every 50).
    pub http_rate: u64,
    /// Print a line per restart and reload to stderr.
    pub progress: bool,
}

impl Config {
    /// The defaults: churn every 2 s, a restart every 10 s, the abusive source
    /// at 500/s against 200/s burst 20, the legitimate one at 100/s under
    /// 1000/s, 20 HTTP requests/s.
    pub fn new(duration: Duration, seed: u64) -> Config {
        Config {
            duration,
            seed,
            churn_every: Duration::from_secs(2),
            restart_every: Duration::from_secs(10),
            abusive_limit: 200,
            abusive_burst: 20,
            abusive_rate: 500,
            legit_limit: 1000,
            legit_rate: 100,
            http_rate: 20,
            progress: true,
        }
    }
}

/// The abusive source: what it sent, what got through, and the bounds.
#[derive(Clone, Debug, Default)]
pub struct Abusive {
    pub addr: Option<Ipv4Addr>,
    pub limit: u64,
    pub burst: u64,
    pub offered: u64,
    pub sent: u64,
    pub delivered: u64,
    /// Fixed 1-second windows of receive time with traffic.
    pub windows: u64,
    /// The most delivered in one fixed window.
    pub worst_fixed_window: u64,
    /// The most delivered in any 1-second window (sliding).
    pub worst_window: u64,
    /// `rate × (1 s + 2J) + burst`.
    pub window_bound: u64,
    /// Fixed windows over the bound.
    pub windows_over: u64,
    /// `rate × (span + 2J) + burst` for the whole run.
    pub total_bound: u64,
    /// J: [`VERDICT_TO_TIMESTAMP`] plus the measured clock drift.
    pub jitter: Duration,
}

impl Abusive {
    /// Windows over the bound, plus one if the sliding window or the whole
    /// run overshot without a fixed window showing it.
    pub fn gaps(&self) -> u64 {
        let mut gaps = self.windows_over;
        if gaps == 0 && self.worst_window > self.window_bound {
            gaps += 1;
        }
        if self.delivered > self.total_bound {
            gaps += 1;
        }
        gaps
    }
}

/// The legitimate source: everything it sent should arrive.
#[derive(Clone, Debug, Default)]
pub struct Legit {
    pub addr: Option<Ipv4Addr>,
    pub limit: u64,
    pub offered: u64,
    pub sent: u64,
    pub delivered: u64,
}

impl Legit {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.delivered)
    }
}

/// One `tollgate run` process of the soak.
#[derive(Clone, Debug, Default)]
pub struct Instance {
    pub pid: u32,
    /// Seconds into the soak it was started.
    pub started_at: f64,
    /// `fresh` or `adopted` (from `tollgate status`).
    pub start: String,
    pub program_id: u64,
    /// Seconds from spawning it to its answering `status`.
    pub ready_secs: f64,
    /// Seconds without a daemon before it answered (from the stop of the
    /// previous one); `None` for the first.
    pub down_secs: Option<f64>,
    /// Seconds from SIGTERM or kill -9 to its exit.
    pub stop_secs: Option<f64>,
    /// (age s, VmRSS KiB): the first sample at >= 2 s of age, and the last.
    pub rss_first: Option<(f64, u64)>,
    pub rss_last: Option<(f64, u64)>,
    pub rss_max_kib: u64,
    /// How it ended: `SIGTERM`, `kill -9`, `crashed`, `detach`.
    pub ended: String,
}

/// BPF objects of this run: programs named `tollgate` using its pinned maps,
/// and their kernel memory.
#[derive(Clone, Debug, Default)]
pub struct BpfUsage {
    pub programs: Vec<u32>,
    pub maps: usize,
    /// memlock of the programs and of their and the pinned maps, bytes.
    pub memlock_bytes: u64,
}

/// What a soak run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub duration: Duration,
    /// CLI changes (`tier set/rm`, `rule add/rm`) that exited 0.
    pub cli_acknowledged: u64,
    /// CLI changes that failed while racing a stop (either outcome accepted).
    pub cli_failed_during_restart: u64,
    /// CLI changes that failed while the daemon was up (unexpected).
    pub cli_failed_while_up: u64,
    /// Failed CLI changes that were in effect at the next check anyway.
    pub cli_failed_but_applied: u64,
    /// Of those, the ones that raced a graceful stop (SIGTERM), which must
    /// answer every change it applies.
    pub cli_failed_but_applied_sigterm: u64,
    /// Acknowledged changes missing (or altered) at a later check.
    pub lost_changes: u64,
    /// `tier list` + `rule list` comparisons against the expected state.
    pub state_checks: u64,
    pub sighup_reloads: u64,
    pub cli_reloads: u64,
    /// Reloads that did not bring the file's change into effect.
    pub reloads_unapplied: u64,
    /// Checks where the file's tiers or rules (the abusive and legitimate
    /// sources') were not in effect.
    pub config_mismatches: u64,
    pub restarts_sigterm: u64,
    pub restarts_kill9: u64,
    /// Restarts whose daemon did not adopt the pinned program.
    pub restarts_not_adopted: u64,
    /// Times XDP was found detached while the daemon was down.
    pub detached_while_down: u64,
    /// Daemons that exited on their own.
    pub crashes: u64,
    pub abusive: Abusive,
    pub legit: Legit,
    pub http_ok: u64,
    pub http_failed: u64,
    pub instances: Vec<Instance>,
    pub bpf_start: BpfUsage,
    pub bpf_end: BpfUsage,
    /// Programs of this run still loaded 5 s after the final `tollgate detach`.
    pub programs_after_detach: usize,
    /// Longest time from the kernel receive timestamp to the receiver's
    /// recvmsg returning (informational).
    pub max_receive_lag: Duration,
    /// Drift of the realtime clock against the monotonic one over the run.
    pub clock_drift: Duration,
    /// What went wrong, the first [`MAX_NOTES`] times.
    pub notes: Vec<String>,
}

impl Report {
    pub fn restarts(&self) -> u64 {
        self.restarts_sigterm + self.restarts_kill9
    }

    pub fn reloads(&self) -> u64 {
        self.sighup_reloads + self.cli_reloads
    }

    pub fn enforcement_gaps(&self) -> u64 {
        self.abusive.gaps()
    }

    /// Programs left over: more at the end than at the start, or any after
    /// the final detach.
    pub fn leaked_programs(&self) -> usize {
        self.bpf_end
            .programs
            .len()
            .saturating_sub(self.bpf_start.programs.len())
            + self.programs_after_detach
    }

    /// Fails on a lost CLI change or an enforcement gap, and on the other
    /// things that must never happen: leaked programs, a crash, a reload or
    /// the file's config not in effect, a restart that did not adopt, the
    /// program detached while the daemon was down. Also fails when the run
    /// measured nothing: the abusive source must have had at least half its
    /// limit delivered (it offers 2.5x), so a gap could have shown.
    pub fn verdict(&self) -> Result<()> {
        let mut failures = Vec::new();
        let mut fail = |n: u64, what: &str| {
            if n > 0 {
                failures.push(format!("{n} {what}"));
            }
        };
        fail(self.lost_changes, "lost CLI change(s)");
        fail(
            self.cli_failed_but_applied_sigterm,
            "CLI change(s) applied by a daemon stopping on SIGTERM without an answer",
        );
        fail(self.enforcement_gaps(), "enforcement gap(s)");
        fail(self.leaked_programs() as u64, "leaked program(s)");
        fail(self.crashes, "daemon crash(es)");
        fail(self.reloads_unapplied, "reload(s) not applied");
        fail(
            self.config_mismatches,
            "check(s) with the file's config not in effect",
        );
        fail(
            self.restarts_not_adopted,
            "restart(s) that did not adopt the program",
        );
        fail(
            self.detached_while_down,
            "time(s) detached while the daemon was down",
        );
        let a = &self.abusive;
        if (a.delivered as f64) < 0.5 * a.limit as f64 * self.duration.as_secs_f64() {
            failures.push(format!(
                "the abusive source had only {} delivered in {:.0} s at a limit of {}/s: nothing was measured",
                a.delivered,
                self.duration.as_secs_f64(),
                a.limit
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!(
                "soak failed (seed {:#x}): {}",
                self.seed,
                failures.join(", ")
            )
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.abusive;
        let l = &self.legit;
        writeln!(
            f,
            "soak: {:.0} s, seed {:#x}",
            self.duration.as_secs_f64(),
            self.seed
        )?;
        writeln!(
            f,
            "  CLI changes   {} acknowledged, {} lost; {} failed racing a stop, {} failed while up, {} of the failed ones applied anyway; {} state checks",
            self.cli_acknowledged,
            self.lost_changes,
            self.cli_failed_during_restart,
            self.cli_failed_while_up,
            self.cli_failed_but_applied,
            self.state_checks
        )?;
        writeln!(
            f,
            "  reloads       {} SIGHUP + {} `tollgate reload`, {} not applied; {} checks with the file's config not in effect",
            self.sighup_reloads, self.cli_reloads, self.reloads_unapplied, self.config_mismatches
        )?;
        writeln!(
            f,
            "  restarts      {} SIGTERM + {} kill -9, {} not adopted, {} detached while down, {} crashes",
            self.restarts_sigterm,
            self.restarts_kill9,
            self.restarts_not_adopted,
            self.detached_while_down,
            self.crashes
        )?;
        writeln!(
            f,
            "  abusive       {} at {}/s against {}/s burst {}: {} sent, {} delivered; worst 1 s window {} (fixed {}) vs bound {}; total {} vs bound {}; {} enforcement gaps (J = {:.2} ms)",
            a.addr.map(|a| a.to_string()).unwrap_or_default(),
            a.offered,
            a.limit,
            a.burst,
            a.sent,
            a.delivered,
            a.worst_window,
            a.worst_fixed_window,
            a.window_bound,
            a.delivered,
            a.total_bound,
            a.gaps(),
            a.jitter.as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "  legit         {} at {}/s under {}/s: {} sent, {} delivered, {} lost",
            l.addr.map(|a| a.to_string()).unwrap_or_default(),
            l.offered,
            l.limit,
            l.sent,
            l.delivered,
            l.lost()
        )?;
        writeln!(
            f,
            "  http          {} requests answered, {} failed",
            self.http_ok, self.http_failed
        )?;
        writeln!(
            f,
            "  kernel        {} program(s) {:?} -> {} {:?}, {} after detach; {} maps; memlock {} -> {}",
            self.bpf_start.programs.len(),
            self.bpf_start.programs,
            self.bpf_end.programs.len(),
            self.bpf_end.programs,
            self.programs_after_detach,
            self.bpf_end.maps,
            mib(self.bpf_start.memlock_bytes),
            mib(self.bpf_end.memlock_bytes)
        )?;
        let rss = |s: Option<(f64, u64)>| match s {
            Some((age, kib)) => format!("{kib} KiB at {age:.0} s"),
            None => "-".to_owned(),
        };
        writeln!(
            f,
            "  daemon RSS    {} instances (first sample at >= 2 s of age -> last sample):",
            self.instances.len()
        )?;
        let show: Vec<usize> = if self.instances.len() <= 12 {
            (0..self.instances.len()).collect()
        } else {
            let n = self.instances.len();
            vec![0, 1, 2, n / 2, n - 3, n - 2, n - 1]
        };
        let mut prev = None;
        for i in show {
            if prev.is_some_and(|p| p + 1 != i) {
                writeln!(f, "                ...")?;
            }
            prev = Some(i);
            let x = &self.instances[i];
            writeln!(
                f,
                "    #{i:<3} pid {:<7} at {:>6.1} s, ready in {:.2} s, {:<7} program {:<6} {} -> {} (max {} KiB), ended: {}",
                x.pid,
                x.started_at,
                x.ready_secs,
                x.start,
                x.program_id,
                rss(x.rss_first),
                rss(x.rss_last),
                x.rss_max_kib,
                x.ended
            )?;
        }
        let growth: Vec<i64> = self
            .instances
            .iter()
            .filter_map(|x| Some(x.rss_last?.1 as i64 - x.rss_first?.1 as i64))
            .collect();
        if let (Some(max), Some(first), Some(last)) = (
            growth.iter().max(),
            self.instances.iter().find_map(|x| x.rss_first),
            self.instances.iter().rev().find_map(|x| x.rss_last),
        ) {
            writeln!(
                f,
                "    largest growth within one instance {max:+} KiB; first instance at 2 s {} KiB, last instance at its end {} KiB",
                first.1, last.1
            )?;
        }
        writeln!(
            f,
            "  receiver      longest receive lag {:.1} ms; clock drift {:.3} ms",
            self.max_receive_lag.as_secs_f64() * 1e3,
            self.clock_drift.as_secs_f64() * 1e3
        )?;
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Clocks and the timestamping receiver

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, ns (changes when realtime is slewed
/// or stepped).
fn realtime_offset() -> i64 {
    let a = clock_ns(libc::CLOCK_MONOTONIC);
    let r = clock_ns(libc::CLOCK_REALTIME);
    let b = clock_ns(libc::CLOCK_MONOTONIC);
    r - (a + (b - a) / 2)
}

/// Datagrams of one source, by kernel receive time (ns since the soak's t0).
#[derive(Default)]
struct Flow {
    total: u64,
    windows: Vec<u64>,
    sliding: VecDeque<i64>,
    worst_sliding: u64,
    first: Option<i64>,
    last: i64,
}

impl Flow {
    fn add(&mut self, t: i64) {
        self.total += 1;
        let w = t.max(0) as usize / 1_000_000_000;
        if self.windows.len() <= w {
            self.windows.resize(w + 1, 0);
        }
        self.windows[w] += 1;
        // Timestamps of one socket's queue are in order; a window (t - 1 s, t].
        self.sliding.push_back(t);
        while self
            .sliding
            .front()
            .is_some_and(|&f| f <= t - 1_000_000_000)
        {
            self.sliding.pop_front();
        }
        self.worst_sliding = self.worst_sliding.max(self.sliding.len() as u64);
        self.first.get_or_insert(t);
        self.last = t;
    }
}

struct Received {
    flows: HashMap<Ipv4Addr, Flow>,
    max_lag_ns: i64,
    no_timestamp: u64,
}

/// A UDP receiver on the host side that timestamps in the kernel.
struct Receiver {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Received>>,
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> Result<()> {
    // SAFETY: a valid fd and a pointer to an int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    ensure!(
        r == 0,
        "setsockopt({level}, {name}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// One datagram: its source and its kernel receive time (realtime ns).
fn recv_timestamped(fd: i32, buf: &mut [u8]) -> std::io::Result<(Ipv4Addr, Option<i64>)> {
    // SAFETY: plain C structs, zeroed, pointing at live local buffers for
    // the duration of the call; the control messages are parsed with the
    // libc macros within msg_controllen.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut control = [0u64; 32];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut addr as *mut libc::sockaddr_in as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control);
        if libc::recvmsg(fd, &mut msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let src = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                return Ok((src, Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((src, None))
    }
}

impl Receiver {
    /// Binds `addr`; arrival times are counted from `t0` (realtime ns).
    fn bind(addr: SocketAddr, t0: i64) -> Result<Receiver> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let fd = socket.as_raw_fd();
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20)?;
        let addr = socket.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (count, stop) = (count.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut got = Received {
                    flows: HashMap::new(),
                    max_lag_ns: 0,
                    no_timestamp: 0,
                };
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((src, ts)) = recv_timestamped(socket.as_raw_fd(), &mut buf) else {
                        continue;
                    };
                    let now = clock_ns(libc::CLOCK_REALTIME);
                    let ts = ts.unwrap_or_else(|| {
                        got.no_timestamp += 1;
                        now
                    });
                    got.max_lag_ns = got.max_lag_ns.max(now - ts);
                    got.flows.entry(src).or_default().add(ts - t0);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                got
            })
        };
        Ok(Receiver {
            addr,
            count,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits until nothing arrived for 300 ms (at most 5 s), then stops.
    fn finish(mut self) -> Received {
        let start = Instant::now();
        let mut last = self.count.load(Ordering::Relaxed);
        while start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.count.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("receiver thread")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The CLI, with a timeout

struct CliOut {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn cli_at(tollgate: &Path, socket: &Path, args: &[String]) -> Result<CliOut> {
    let mut child = Command::new(tollgate)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} {args:?}", tollgate.display()))?;
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().expect("piped")));
    let err = read(Box::new(child.stderr.take().expect("piped")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > CLI_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("(killed after {CLI_TIMEOUT:?})"));
    }
    Ok(CliOut {
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr: stderr.trim().to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Expected control-plane state

/// What one tier or CIDR may look like: one value when known, several after
/// changes that were not acknowledged.
struct Expect {
    possible: Vec<Option<String>>,
    /// Values of failed changes since the last check that differ from what
    /// was known before them.
    unacknowledged: Vec<(Option<String>, String)>,
    /// The last acknowledged change of this key (op number, description, time).
    op: u64,
    what: String,
    at: f64,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<String, Expect>,
    /// (op, key) of the losses already counted.
    lost_ops: HashSet<(u64, String)>,
    /// Failed changes found applied at the next check (descriptions).
    failed_but_applied: Vec<String>,
}

impl Model {
    fn new() -> Model {
        let mut m = Model::default();
        for t in CHURN_TIERS {
            m.register(tier_key(t));
        }
        for c in CHURN_CIDRS {
            m.register(rule_key(c));
        }
        m
    }

    fn register(&mut self, key: String) -> &mut Expect {
        self.keys.entry(key).or_insert(Expect {
            possible: vec![None],
            unacknowledged: Vec::new(),
            op: 0,
            what: "the initial state".into(),
            at: 0.0,
        })
    }

    fn certain(&self, key: &str) -> Option<&Option<String>> {
        self.keys
            .get(key)
            .filter(|e| e.possible.len() == 1)
            .map(|e| &e.possible[0])
    }

    fn acknowledged(&mut self, key: &str, value: Option<String>, op: u64, what: String, at: f64) {
        let e = self.register(key.to_owned());
        e.possible = vec![value];
        e.unacknowledged.clear();
        (e.op, e.what, e.at) = (op, what, at);
    }

    fn unacknowledged(&mut self, key: &str, value: Option<String>, what: String) {
        let e = self.register(key.to_owned());
        if !e.possible.contains(&value) {
            e.possible.push(value.clone());
            e.unacknowledged.push((value, what));
        }
    }

    /// Compares with what the daemon lists; returns descriptions of the
    /// acknowledged changes newly found missing, and resynchronises.
    fn check(&mut self, actual: &BTreeMap<String, String>) -> Vec<String> {
        for k in actual.keys() {
            self.register(k.clone());
        }
        let mut lost = Vec::new();
        for (key, e) in &mut self.keys {
            let now = actual.get(key).cloned();
            if let Some((_, what)) = e.unacknowledged.iter().find(|(v, _)| *v == now) {
                self.failed_but_applied.push(what.clone());
            }
            e.unacknowledged.clear();
            // Counted once per acknowledged change, however many checks see it.
            if !e.possible.contains(&now) && self.lost_ops.insert((e.op, key.clone())) {
                lost.push(format!(
                    "{key}: expected {} after {} (op #{}, acknowledged at {:.1} s), found {}",
                    e.possible
                        .iter()
                        .map(|p| p.as_deref().unwrap_or("absent"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    e.what,
                    e.op,
                    e.at,
                    now.as_deref().unwrap_or("absent")
                ));
            }
            e.possible = vec![now];
        }
        lost
    }

    /// Whether a rule may point at `tier`.
    fn tier_maybe_used(&self, tier: &str) -> bool {
        let target = Some(format!("tier {tier}"));
        CHURN_CIDRS.iter().any(|c| {
            self.keys
                .get(&rule_key(c))
                .is_some_and(|e| e.possible.contains(&target))
        })
    }
}

fn tier_key(name: &str) -> String {
    format!("tier {name}")
}

fn rule_key(cidr: &str) -> String {
    format!("rule {cidr}")
}

/// `tier list` row as the model spells it: `300/s burst 30 enforce`.
fn tier_value(t: &Value) -> String {
    let p = &t["packets"];
    if p.is_null() {
        return format!("no packets limit {}", t["mode"].as_str().unwrap_or("?"));
    }
    format!(
        "{}/s burst {} {}",
        p["per_second"].as_f64().unwrap_or(-1.0).round(),
        p["burst"].as_u64().unwrap_or(0),
        t["mode"].as_str().unwrap_or("?")
    )
}

/// `rule list` row: `tier soak-1`, `allow`, `deny`.
fn rule_value(r: &Value) -> String {
    match r["action"].as_str() {
        Some("tier") => format!("tier {}", r["tier"].as_str().unwrap_or("?")),
        Some(a) => a.to_owned(),
        None => "?".into(),
    }
}

/// One CLI change: arguments, the key it changes and the value it sets.
struct Change {
    args: Vec<String>,
    key: String,
    value: Option<String>,
}

impl Change {
    fn describe(&self) -> String {
        format!("`tollgate {}`", self.args.join(" "))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Churn {
    TierSet,
    TierRm,
    RuleAdd,
    RuleRm,
    Sighup,
    CliReload,
}

/// Every kind comes up once per deck, in seeded order, so a short run cannot
/// miss one.
const DECK: [Churn; 8] = [
    Churn::TierSet,
    Churn::TierSet,
    Churn::TierRm,
    Churn::RuleAdd,
    Churn::RuleAdd,
    Churn::RuleRm,
    Churn::Sighup,
    Churn::CliReload,
];

// ---------------------------------------------------------------------------
// Kernel objects

/// `memlock:` of one of our fds.
fn fd_memlock(fd: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The programs named `tollgate` that use a map pinned in `pin_dir`, and the
/// kernel memory of them and of their and the pinned maps.
pub fn bpf_usage(pin_dir: &Path) -> Result<BpfUsage> {
    let mut pinned = HashSet::new();
    for entry in std::fs::read_dir(pin_dir).with_context(|| format!("{}", pin_dir.display()))? {
        // The program and link pins are not maps: skipped.
        if let Ok(info) = aya::maps::MapInfo::from_pin(entry?.path()) {
            pinned.insert(info.id());
        }
    }
    ensure!(
        !pinned.is_empty(),
        "no maps pinned in {}",
        pin_dir.display()
    );
    let mut usage = BpfUsage::default();
    let mut maps = pinned.clone();
    for p in aya::programs::loaded_programs().flatten() {
        if p.name_as_str() != Some("tollgate") {
            continue;
        }
        let Ok(Some(ids)) = p.map_ids() else {
            continue;
        };
        if ids.iter().any(|id| pinned.contains(id)) {
            usage.programs.push(p.id());
            usage.memlock_bytes += u64::from(p.memory_locked().unwrap_or(0));
            maps.extend(ids);
        }
    }
    usage.programs.sort_unstable();
    for id in &maps {
        if let Ok(fd) = aya::maps::MapInfo::from_id(*id).and_then(|m| m.fd()) {
            usage.memlock_bytes += fd_memlock(fd.as_fd().as_raw_fd());
            usage.maps += 1;
        }
    }
    Ok(usage)
}

/// Which of `ids` are still loaded.
fn still_loaded(ids: &[u32]) -> Vec<u32> {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| p.id())
        .filter(|id| ids.contains(id))
        .collect()
}

/// Lets go of a daemon that has exited (reaped by `kill9` or `wait_exit`)
/// without its guard's `tollgate detach`: the next daemon adopts the pins.
/// Its paths are taken out first, so forgetting it leaks nothing.
fn release(mut d: Daemon) {
    assert!(d.child.is_none(), "release a stopped daemon only");
    drop((
        std::mem::take(&mut d.socket),
        std::mem::take(&mut d.pin_dir),
        std::mem::take(&mut d.log),
    ));
    std::mem::forget(d);
}

/// Sets the flag when dropped (also while unwinding): the traffic threads
/// stop.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The run

struct Soak<'a> {
    cfg: &'a Config,
    env: Env,
    tollgate: PathBuf,
    rng: StdRng,
    start: Instant,
    model: Model,
    ops: u64,
    report: Report,
    daemon: Option<Daemon>,
    spawned: Instant,
    /// Generation of the config file (its harmless change).
    generation: u64,
    abusive_ip: Ipv4Addr,
    legit_ip: Ipv4Addr,
    http_port: u16,
    metrics_port: u16,
}

impl Soak<'_> {
    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn progress(&self, line: &str) {
        if self.cfg.progress {
            eprintln!("[soak {:>7.1} s] {line}", self.t());
        }
    }

    fn note(&mut self, line: String) {
        self.progress(&format!("NOTE {line}"));
        if self.report.notes.len() < MAX_NOTES {
            let t = self.t();
            self.report.notes.push(format!("{t:.1} s: {line}"));
        }
    }

    fn cli(&self, args: &[String]) -> Result<CliOut> {
        cli_at(&self.tollgate, &self.env.socket, args)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut a = vec!["--json".to_owned()];
        a.extend(args.iter().map(|s| s.to_string()));
        let out = self.cli(&a)?;
        ensure!(out.ok, "tollgate {args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("tollgate {args:?}: bad JSON: {}", out.stdout))
    }

    /// The spare tier's rate in this generation of the file.
    fn spare_rate(&self) -> u64 {
        100 + self.generation
    }

    fn write_config(&self) {
        let c = self.cfg;
        self.env.write_config(&format!(
            "# tollgate soak, generation {gen}\n\
             metrics_address = \"127.0.0.1:{metrics}\"\n\
             default_tier = \"default\"\n\
             [http]\nports = [{http}]\n\
             [[tier]]\nname = \"default\"\npackets = \"10000/s\"\n\
             [[tier]]\nname = \"abuse\"\npackets = \"{al}/s\"\npackets_burst = {ab}\n\
             [[tier]]\nname = \"legit\"\npackets = \"{ll}/s\"\n\
             [[tier]]\nname = \"spare\"\npackets = \"{spare}/s\"\n\
             [[rule]]\ncidr = \"{abusive}/32\"\ntier = \"abuse\"\n\
             [[rule]]\ncidr = \"{legit}/32\"\ntier = \"legit\"\n",
            gen = self.generation,
            metrics = self.metrics_port,
            http = self.http_port,
            al = c.abusive_limit,
            ab = c.abusive_burst,
            ll = c.legit_limit,
            spare = self.spare_rate(),
            abusive = self.abusive_ip,
            legit = self.legit_ip,
        ));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("a daemon is running")
    }

    /// Starts a daemon and records the instance.
    fn start_daemon(&mut self) -> Result<()> {
        self.spawned = Instant::now();
        let d = self.env.start();
        let ready_secs = self.spawned.elapsed().as_secs_f64();
        let pid = d.pid() as u32;
        self.daemon = Some(d);
        let status = self.json(&["status"])?;
        let start = status["start"].as_str().unwrap_or("?").to_owned();
        let program_id = status["program_id"].as_u64().unwrap_or(0);
        self.report.instances.push(Instance {
            pid,
            started_at: self.t(),
            start: start.clone(),
            program_id,
            ready_secs,
            ..Default::default()
        });
        self.progress(&format!(
            "daemon #{} pid {pid} up in {ready_secs:.2} s: {start}, program {program_id}",
            self.report.instances.len() - 1
        ));
        Ok(())
    }

    fn sample_rss(&mut self) {
        let Some(d) = &self.daemon else { return };
        let Some(kib) = rss_kib(d.pid() as u32) else {
            return;
        };
        let age = self.spawned.elapsed().as_secs_f64();
        let i = self.report.instances.last_mut().expect("an instance");
        if age >= 2.0 && i.rss_first.is_none() {
            i.rss_first = Some((age, kib));
        }
        i.rss_last = Some((age, kib));
        i.rss_max_kib = i.rss_max_kib.max(kib);
    }

    /// A random CLI change the model can judge.
    fn pick_change(&mut self, kind: Churn) -> Change {
        let existing: Vec<&str> = CHURN_TIERS
            .iter()
            .copied()
            .filter(|t| matches!(self.model.certain(&tier_key(t)), Some(Some(_))))
            .collect();
        let kind = match kind {
            Churn::TierRm => {
                let removable: Vec<&str> = existing
                    .iter()
                    .copied()
                    .filter(|t| !self.model.tier_maybe_used(t))
                    .collect();
                if let Some(t) = removable.choose(&mut self.rng) {
                    let args = vec!["tier".into(), "rm".into(), t.to_string()];
                    return Change {
                        args,
                        key: tier_key(t),
                        value: None,
                    };
                }
                Churn::TierSet
            }
            Churn::RuleRm => {
                let present: Vec<&str> = CHURN_CIDRS
                    .iter()
                    .copied()
                    .filter(|c| matches!(self.model.certain(&rule_key(c)), Some(Some(_))))
                    .collect();
                if let Some(c) = present.choose(&mut self.rng) {
                    let args = vec!["rule".into(), "rm".into(), c.to_string()];
                    return Change {
                        args,
                        key: rule_key(c),
                        value: None,
                    };
                }
                Churn::RuleAdd
            }
            k => k,
        };
        if kind == Churn::RuleAdd {
            let cidr = *CHURN_CIDRS.choose(&mut self.rng).expect("cidrs");
            let mut targets = vec!["allow".to_owned(), "deny".to_owned()];
            targets.extend(existing.iter().map(|t| format!("tier {t}")));
            let target = targets.choose(&mut self.rng).expect("targets").clone();
            let mut args = vec!["rule".into(), "add".into(), cidr.into()];
            match target.strip_prefix("tier ") {
                Some(t) => args.extend(["--tier".into(), t.into()]),
                None => args.push(format!("--{target}")),
            }
            return Change {
                args,
                key: rule_key(cidr),
                value: Some(target),
            };
        }
        let name = *CHURN_TIERS.choose(&mut self.rng).expect("tiers");
        let rate = *CHURN_RATES.choose(&mut self.rng).expect("rates");
        let burst = self.rng.gen_range(1..=2 * rate);
        let mode = if self.rng.gen_bool(0.25) {
            "shadow"
        } else {
            "enforce"
        };
        Change {
            args: vec![
                "tier".into(),
                "set".into(),
                name.into(),
                "--packets".into(),
                format!("{rate}/s"),
                "--burst".into(),
                burst.to_string(),
                format!("--{mode}"),
            ],
            key: tier_key(name),
            value: Some(format!("{rate}/s burst {burst} {mode}")),
        }
    }

    /// Records the outcome of a change.
    fn record(&mut self, change: &Change, out: &CliOut, racing_stop: Option<&str>) {
        self.ops += 1;
        let t = self.t();
        if out.ok {
            self.report.cli_acknowledged += 1;
            self.model.acknowledged(
                &change.key,
                change.value.clone(),
                self.ops,
                change.describe(),
                t,
            );
        } else {
            let what = match racing_stop {
                Some(how) => format!("{} (racing {how})", change.describe()),
                None => change.describe(),
            };
            self.model
                .unacknowledged(&change.key, change.value.clone(), what);
            if racing_stop.is_some() {
                self.report.cli_failed_during_restart += 1;
            } else {
                self.report.cli_failed_while_up += 1;
                self.note(format!(
                    "{} failed while the daemon was up: {}",
                    change.describe(),
                    out.stderr
                ));
            }
        }
    }

    fn change(&mut self, kind: Churn) -> Result<()> {
        let change = self.pick_change(kind);
        let out = self.cli(&change.args)?;
        self.record(&change, &out, None);
        Ok(())
    }

    /// Compares the daemon's tiers and rules with what was acknowledged, and
    /// the file's part with the file.
    fn check(&mut self, when: &str) -> Result<()> {
        let tiers = self.json(&["tier", "list"])?;
        let rules = self.json(&["rule", "list"])?;
        self.report.state_checks += 1;
        let mut actual = BTreeMap::new();
        let mut file = BTreeMap::new();
        for t in tiers.as_array().context("tier list")? {
            let name = t["name"].as_str().unwrap_or("?");
            if t["source"] == "cli" || name.starts_with("soak-") {
                actual.insert(tier_key(name), tier_value(t));
            } else {
                file.insert(tier_key(name), tier_value(t));
            }
        }
        for r in rules.as_array().context("rule list")? {
            let cidr = r["cidr"].as_str().unwrap_or("?");
            if r["source"] == "cli" || CHURN_CIDRS.contains(&cidr) {
                actual.insert(rule_key(cidr), rule_value(r));
            } else {
                file.insert(rule_key(cidr), rule_value(r));
            }
        }
        let lost = self.model.check(&actual);
        for what in std::mem::take(&mut self.model.failed_but_applied) {
            self.report.cli_failed_but_applied += 1;
            if what.contains("(racing SIGTERM)") {
                self.report.cli_failed_but_applied_sigterm += 1;
            }
            self.note(format!("{when}: {what} failed, but is in effect"));
        }
        self.report.lost_changes += lost.len() as u64;
        for l in lost {
            self.note(format!("LOST {when}: {l}"));
        }
        let c = self.cfg;
        let expected_file: BTreeMap<String, String> = [
            (
                tier_key("default"),
                "10000/s burst 10000 enforce".to_owned(),
            ),
            (
                tier_key("abuse"),
                format!("{}/s burst {} enforce", c.abusive_limit, c.abusive_burst),
            ),
            (
                tier_key("legit"),
                format!("{}/s burst {} enforce", c.legit_limit, c.legit_limit),
            ),
            (
                tier_key("spare"),
                format!("{0}/s burst {0} enforce", self.spare_rate()),
            ),
            (
                rule_key(&format!("{}/32", self.abusive_ip)),
                "tier abuse".into(),
            ),
            (
                rule_key(&format!("{}/32", self.legit_ip)),
                "tier legit".into(),
            ),
        ]
        .into_iter()
        .collect();
        if file != expected_file {
            self.report.config_mismatches += 1;
            self.note(format!(
                "{when}: the file's tiers and rules are not in effect: expected {expected_file:?}, found {file:?}"
            ));
        }
        Ok(())
    }

    fn spare_in_effect(&self) -> Result<bool> {
        let want = self.spare_rate() as f64;
        let tiers = self.json(&["tier", "list"])?;
        Ok(tiers
            .as_array()
            .context("tier list")?
            .iter()
            .any(|t| t["name"] == "spare" && t["packets"]["per_second"].as_f64() == Some(want)))
    }

    fn reload(&mut self, sighup: bool) -> Result<()> {
        self.generation += 1;
        self.write_config();
        let how = if sighup { "SIGHUP" } else { "tollgate reload" };
        let applied = if sighup {
            self.daemon().signal(libc::SIGHUP);
            let sent = Instant::now();
            loop {
                if self.spare_in_effect()? {
                    break true;
                }
                if sent.elapsed() > SIGHUP_TIMEOUT {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            let out = self.cli(&["reload".to_owned()])?;
            if !out.ok {
                self.note(format!("`tollgate reload` failed: {}", out.stderr));
            }
            out.ok && self.spare_in_effect()?
        };
        if applied {
            if sighup {
                self.report.sighup_reloads += 1;
            } else {
                self.report.cli_reloads += 1;
            }
        } else {
            self.report.reloads_unapplied += 1;
            self.note(format!(
                "{how}: generation {} of the file not in effect",
                self.generation
            ));
        }
        self.progress(&format!("{how} (file generation {})", self.generation));
        self.check(&format!("after {how}"))
    }

    /// Stops the daemon (SIGTERM or kill -9) while a CLI change is in flight,
    /// leaves it down a moment, starts it again and checks the state.
    fn restart(&mut self, kill9: bool) -> Result<()> {
        let kind = [Churn::TierSet, Churn::RuleAdd, Churn::RuleRm, Churn::TierRm]
            [self.rng.gen_range(0..4)];
        let change = self.pick_change(kind);
        let racer = {
            let (tollgate, socket, args) = (
                self.tollgate.clone(),
                self.env.socket.clone(),
                change.args.clone(),
            );
            std::thread::spawn(move || cli_at(&tollgate, &socket, &args))
        };
        let raced = Instant::now();
        std::thread::sleep(Duration::from_micros(self.rng.gen_range(0..20_000)));
        let mut d = self.daemon.take().expect("a daemon is running");
        let stopping = Instant::now();
        let how = if kill9 {
            d.kill9();
            self.report.restarts_kill9 += 1;
            "kill -9"
        } else {
            let status = d.terminate(STOP_TIMEOUT);
            if !status.success() {
                self.note(format!("SIGTERM: the daemon exited with {status}"));
            }
            self.report.restarts_sigterm += 1;
            "SIGTERM"
        };
        release(d);
        let stop_secs = stopping.elapsed().as_secs_f64();
        let ended = self.report.instances.last_mut().expect("an instance");
        ended.ended = how.into();
        ended.stop_secs = Some(stop_secs);
        let out = racer.join().expect("CLI thread")?;
        let racer_secs = raced.elapsed().as_secs_f64();
        self.record(&change, &out, Some(how));
        if !self.env.xdp_attached() {
            self.report.detached_while_down += 1;
            self.note(format!(
                "after {how}: XDP not attached while the daemon is down"
            ));
        }
        std::thread::sleep(Duration::from_millis(self.rng.gen_range(0..300)));
        self.start_daemon()?;
        let n = self.report.restarts();
        let new = self.report.instances.last_mut().expect("instance");
        let down_secs = stopping.elapsed().as_secs_f64();
        new.down_secs = Some(down_secs);
        let start = new.start.clone();
        if start != "adopted" {
            self.report.restarts_not_adopted += 1;
            self.note(format!(
                "restart #{n} ({how}): the daemon started {start}, not adopted"
            ));
        }
        self.progress(&format!(
            "restart #{n} ({how}): stopped in {stop_secs:.2} s, down {down_secs:.2} s; racing change {} {} after {racer_secs:.2} s",
            change.describe(),
            if out.ok {
                "acknowledged".to_owned()
            } else {
                format!("failed ({})", out.stderr)
            }
        ));
        self.check(&format!("after restart #{n} ({how})"))
    }

    /// A daemon that exited on its own: recorded, and replaced.
    fn check_alive(&mut self) -> Result<()> {
        let exited = match self.daemon.as_mut().and_then(|d| d.child.as_mut()) {
            Some(c) => c.try_wait()?,
            None => None,
        };
        if let Some(status) = exited {
            let mut d = self.daemon.take().expect("a daemon");
            d.child = None;
            let log = d.log();
            release(d);
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            self.report.crashes += 1;
            self.report.instances.last_mut().expect("an instance").ended = "crashed".into();
            self.note(format!(
                "the daemon exited on its own ({status}); log tail: {:?}",
                tail
            ));
            self.start_daemon()?;
            self.check("after a crash")?;
        }
        Ok(())
    }
}

/// Runs the soak (root: it creates a namespace and attaches XDP).
pub fn run(cfg: &Config) -> Result<Report> {
    ensure!(
        cfg.duration >= Duration::from_secs(10),
        "a soak needs at least 10 s"
    );
    ensure!(
        cfg.abusive_rate >= 2 * cfg.abusive_limit && cfg.legit_rate * 2 <= cfg.legit_limit,
        "the abusive source must send at least twice its limit, the legitimate one at most half"
    );
    let env = Env::new();
    let base = env.veth.peer_ip.octets();
    let abusive_ip = Ipv4Addr::new(base[0], base[1], base[2], 10);
    let legit_ip = Ipv4Addr::new(base[0], base[1], base[2], 11);
    for ip in [abusive_ip, legit_ip] {
        sh(&[
            "ip",
            "-n",
            &env.ns.name,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &env.veth.peer,
        ])?;
    }
    let server = httpd::Server::bind(SocketAddr::from((env.veth.host_ip, 0)))?;
    let mut soak = Soak {
        cfg,
        tollgate: bin(),
        env,
        rng: StdRng::seed_from_u64(cfg.seed),
        start: Instant::now(),
        model: Model::new(),
        ops: 0,
        report: Report {
            seed: cfg.seed,
            ..Default::default()
        },
        daemon: None,
        spawned: Instant::now(),
        generation: 0,
        abusive_ip,
        legit_ip,
        http_port: server.addr.port(),
        metrics_port: free_port(),
    };
    soak.progress(&format!(
        "seed {:#x}: {:.0} s on {} (abusive {abusive_ip}, legit {legit_ip}), pins {}",
        cfg.seed,
        cfg.duration.as_secs_f64(),
        soak.env.veth.host,
        soak.env.pins.path.display()
    ));
    soak.write_config();
    soak.start_daemon()?;
    soak.check("at the start")?;
    soak.report.bpf_start = bpf_usage(&soak.env.pins.path)?;

    // Traffic, for the whole duration.
    let offset0 = realtime_offset();
    let t0 = clock_ns(libc::CLOCK_REALTIME);
    let receiver = Receiver::bind(SocketAddr::from((soak.env.veth.host_ip, 0)), t0)?;
    let dst = receiver.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let udp = |ip: Ipv4Addr, rate: u64| -> JoinHandle<Result<Result<Sent>>> {
        let (duration, stop) = (cfg.duration, stop.clone());
        soak.env.ns.run(move || {
            let s = UdpSocket::bind(SocketAddrV4::new(ip, 0))?;
            Ok(send_udp_paced_until(&s, dst, rate, duration, &stop))
        })
    };
    let traffic_start = Instant::now();
    let abusive = udp(abusive_ip, cfg.abusive_rate);
    let legit = udp(legit_ip, cfg.legit_rate);
    let http = {
        let (addr, rate, duration, stop) = (server.addr, cfg.http_rate, cfg.duration, stop.clone());
        soak.env
            .ns
            .run(move || http_client(addr, rate, duration, &stop))
    };

    // Churn and restarts until shortly before the traffic ends.
    let control_end = cfg
        .duration
        .saturating_sub(cfg.churn_every.max(Duration::from_secs(2)));
    let mut deck: Vec<Churn> = Vec::new();
    let jitter = |rng: &mut StdRng, d: Duration, frac: f64| {
        d.mul_f64(rng.gen_range(1.0 - frac..=1.0 + frac))
    };
    let mut next_churn = jitter(&mut soak.rng, cfg.churn_every, 0.25);
    let mut restarts = 1u32;
    let mut next_restart = cfg.restart_every + jitter(&mut soak.rng, cfg.restart_every / 10, 1.0);
    let mut next_sample = Duration::ZERO;
    let result = (|| -> Result<()> {
        while traffic_start.elapsed() < control_end {
            let now = traffic_start.elapsed();
            soak.check_alive()?;
            if now >= next_sample {
                soak.sample_rss();
                next_sample = now + Duration::from_secs(1);
            }
            if now >= next_restart {
                soak.restart(restarts.is_multiple_of(2))?;
                restarts += 1;
                next_restart = cfg.restart_every * restarts
                    + jitter(&mut soak.rng, cfg.restart_every / 10, 1.0);
                next_churn = next_churn.max(traffic_start.elapsed() + cfg.churn_every / 4);
            } else if now >= next_churn {
                if deck.is_empty() {
                    deck = DECK.to_vec();
                    deck.shuffle(&mut soak.rng);
                }
                match deck.pop().expect("a full deck") {
                    Churn::Sighup => soak.reload(true)?,
                    Churn::CliReload => soak.reload(false)?,
                    k => soak.change(k)?,
                }
                // And up to two more changes at once.
                for _ in 0..soak.rng.gen_range(0..=2) {
                    let k = [Churn::TierSet, Churn::RuleAdd, Churn::RuleRm, Churn::TierRm]
                        [soak.rng.gen_range(0..4)];
                    soak.change(k)?;
                }
                next_churn += jitter(&mut soak.rng, cfg.churn_every, 0.25);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        soak.check("at the end")?;
        soak.sample_rss();
        soak.report.bpf_end = bpf_usage(&soak.env.pins.path)?;
        Ok(())
    })();
    if result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }

    // Traffic ends on its own (bounded in count and time).
    let joined = |h: JoinHandle<Result<Result<Sent>>>| -> Result<Sent> {
        h.join().map_err(|_| anyhow::anyhow!("sender panicked"))??
    };
    let abusive = joined(abusive);
    let legit = joined(legit);
    let traffic_took = traffic_start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let http = http
        .join()
        .map_err(|_| anyhow::anyhow!("HTTP client panicked"))?;
    let received = receiver.finish();
    let offset1 = realtime_offset();
    drop(server);
    result?;
    let (abusive, legit) = (abusive?, legit?);
    let (http_ok, http_failed) = http?;

    // Detach: the daemon exits, and every program of this run must go.
    let out = soak.cli(&["detach".to_owned()])?;
    if !out.ok {
        soak.note(format!("`tollgate detach` failed: {}", out.stderr));
    }
    if let Some(mut d) = soak.daemon.take() {
        if out.ok {
            d.wait_exit(STOP_TIMEOUT);
            soak.report.instances.last_mut().expect("an instance").ended = "detach".into();
        }
        drop(d);
    }
    let ours = soak.report.bpf_end.programs.clone();
    let gone_by = Instant::now() + Duration::from_secs(5);
    let mut left = still_loaded(&ours);
    while !left.is_empty() && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(50));
        left = still_loaded(&ours);
    }
    soak.report.programs_after_detach = left.len();

    // The figures.
    let r = &mut soak.report;
    r.duration = traffic_took;
    r.http_ok = http_ok;
    r.http_failed = http_failed;
    let drift = (offset1 - offset0).unsigned_abs();
    r.clock_drift = Duration::from_nanos(drift);
    r.max_receive_lag = Duration::from_nanos(received.max_lag_ns.max(0) as u64);
    let j = VERDICT_TO_TIMESTAMP + r.clock_drift;
    let flow = received.flows.get(&abusive_ip);
    let a = &mut r.abusive;
    a.addr = Some(abusive_ip);
    (a.limit, a.burst, a.offered) = (cfg.abusive_limit, cfg.abusive_burst, cfg.abusive_rate);
    a.sent = abusive.packets;
    a.jitter = j;
    let rate = cfg.abusive_limit as f64;
    a.window_bound = (rate * (1.0 + 2.0 * j.as_secs_f64()) + cfg.abusive_burst as f64) as u64;
    if let Some(f) = flow {
        a.delivered = f.total;
        a.windows = f.windows.iter().filter(|&&n| n > 0).count() as u64;
        a.worst_fixed_window = f.windows.iter().copied().max().unwrap_or(0);
        a.windows_over = f.windows.iter().filter(|&&n| n > a.window_bound).count() as u64;
        a.worst_window = f.worst_sliding;
        let span = (f.last - f.first.unwrap_or(f.last)) as f64 / 1e9;
        a.total_bound = (rate * (span + 2.0 * j.as_secs_f64()) + cfg.abusive_burst as f64) as u64;
    }
    let l = &mut r.legit;
    l.addr = Some(legit_ip);
    (l.limit, l.offered, l.sent) = (cfg.legit_limit, cfg.legit_rate, legit.packets);
    l.delivered = received.flows.get(&legit_ip).map_or(0, |f| f.total);
    if received.no_timestamp > 0 {
        soak.note(format!(
            "{} datagrams came without a kernel timestamp (timed at recvmsg)",
            received.no_timestamp
        ));
    }
    if soak.report.abusive.gaps() > 0 {
        let f = flow.map(|f| f.windows.clone()).unwrap_or_default();
        soak.note(format!("abusive source per 1 s window: {f:?}"));
    }
    soak.progress("done");
    Ok(soak.report)
}

/// Keep-alive HTTP requests at `rate`/s until `duration` or `stop`; a new
/// connection every 50 requests or after an error. (answered, failed)
fn http_client(addr: SocketAddr, rate: u64, duration: Duration, stop: &AtomicBool) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    let mut client: Option<httpd::Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if n >= due {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        n += 1;
        if client.is_none() || n.is_multiple_of(50) {
            client = httpd::Client::connect(addr, Duration::from_secs(2)).ok();
        }
        let path = match n % 3 {
            0 => format!("/items/{n}"),
            1 => format!("/users/{}/orders", n * 7919),
            _ => "/health".to_owned(),
        };
        let head = format!("GET {path} HTTP/1.1\r\nHost: soak.test\r\nUser-Agent: tollgate-soak");
        match client.as_mut().map(|c| c.request(&head)) {
            Some(Ok(())) => ok += 1,
            _ => {
                failed += 1;
                client = None;
            }
        }
    }
    (ok, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actual(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_acknowledged_change_that_disappears_is_lost_once() {
        let mut m = Model::new();
        let k = tier_key("soak-1");
        m.acknowledged(
            &k,
            Some("50/s burst 5 enforce".into()),
            1,
            "set".into(),
            1.0,
        );
        assert!(m.check(&actual(&[(&k, "50/s burst 5 enforce")])).is_empty());
        m.acknowledged(
            &k,
            Some("100/s burst 5 enforce".into()),
            2,
            "set".into(),
            2.0,
        );
        let lost = m.check(&actual(&[(&k, "50/s burst 5 enforce")]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("op #2"), "{lost:?}");
        // Resynchronised: the same loss is not counted again.
        assert!(m.check(&actual(&[(&k, "50/s burst 5 enforce")])).is_empty());
        // A key nobody set showing up is a mismatch too.
        let lost = m.check(&actual(&[
            (&k, "50/s burst 5 enforce"),
            ("rule 192.0.2.0/25", "deny"),
        ]));
        assert_eq!(lost.len(), 1, "{lost:?}");
    }

    #[test]
    fn an_unacknowledged_change_may_or_may_not_have_happened() {
        for outcome in [None, Some("deny")] {
            let mut m = Model::new();
            let k = rule_key("192.0.2.0/25");
            m.unacknowledged(&k, Some("deny".into()), "rule add".into());
            assert_eq!(m.certain(&k), None);
            let now: Vec<(&str, &str)> = outcome.iter().map(|v| (k.as_str(), *v)).collect();
            assert!(m.check(&actual(&now)).is_empty());
            assert_eq!(m.certain(&k), Some(&outcome.map(str::to_owned)));
            assert_eq!(m.failed_but_applied.len(), usize::from(outcome.is_some()));
        }
    }

    #[test]
    fn a_rule_that_may_point_at_a_tier_keeps_it_from_removal() {
        let mut m = Model::new();
        assert!(!m.tier_maybe_used("soak-2"));
        m.unacknowledged(
            &rule_key("203.0.113.0/28"),
            Some("tier soak-2".into()),
            "rule add".into(),
        );
        assert!(m.tier_maybe_used("soak-2"));
    }

    #[test]
    fn windows_fixed_and_sliding() {
        let mut f = Flow::default();
        // 10 at 0.9 s, 10 at 1.1 s: 10 per fixed window, 20 in (0.2, 1.2].
        for _ in 0..10 {
            f.add(900_000_000);
        }
        for _ in 0..10 {
            f.add(1_100_000_000);
        }
        f.add(2_500_000_000);
        assert_eq!(f.windows, [10, 10, 1]);
        assert_eq!(f.worst_sliding, 20);
        assert_eq!(f.total, 21);
        assert_eq!((f.first, f.last), (Some(900_000_000), 2_500_000_000));
    }

    #[test]
    fn gaps_count_windows_and_the_total() {
        let mut a = Abusive {
            window_bound: 222,
            total_bound: 1000,
            worst_window: 200,
            delivered: 900,
            ..Default::default()
        };
        assert_eq!(a.gaps(), 0);
        a.worst_window = 230;
        assert_eq!(a.gaps(), 1, "a sliding window over the bound");
        a.windows_over = 3;
        assert_eq!(a.gaps(), 3);
        a.delivered = 1001;
        assert_eq!(a.gaps(), 4);
    }
}
