//! `cargo xtask bench ddos`: a real service under attack (issue 13).
//!
//! nginx (the Debian package) runs in the root namespace as our child
//! process, listening only on the host side of the flood bench's veth
//! ([`Bed`]) and answering `200 ok`. wrk, the legitimate client, runs in a
//! namespace of its own whose only way to the host is routed through the
//! flood's namespace, so its packets enter the host through the same veth
//! ring as the flood, as a real client's and an attacker's packets share a
//! NIC. The flood is the spoofed bench's live-frames generator: UDP
//! datagrams with a random 32-bit IPv4 source each, at the generator's full
//! rate, to a UDP socket on the host veth address that is never read (no
//! reply goes anywhere: replies to spoofed sources would leave the machine).
//!
//! Rows: no protection, nftables (per-source meter plus a global limit, as in
//! the spoofed bench) and tollgate (native XDP), each without and with the
//! flood, interleaved in every repetition; median (min–max).
//!
//! Everything created (namespaces, veths, the nginx process and its prefix
//! directory `/tmp/tg-ddos-<id>`) is named `tg-…` and removed on drop, also
//! while a panic unwinds and after SIGINT/SIGTERM (which stop the loops).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use tollgate_common::Verdict;

use crate::{
    flood::{self, Bed, Config, Installed, System, spread},
    generator,
    http_load::{Nginx, WrkReport, parse_wrk, set_nice},
    net::{Netns, pin_to_cpu, sh},
    rawbpf::Spoof,
    unique_id,
};

/// CPU of the "outside world": the flood generator and the wrk client.
const CLIENT_CPU: usize = 0;
/// CPU of the server: the host veth's receive (threaded NAPI) and nginx.
const SERVER_CPU: usize = 1;
/// Nice of the server's two tasks, nginx and the NAPI thread: equal, so they
/// share the server CPU fairly as softirq work under sustained load does with
/// a server's processes (in ksoftirqd); -20, so other users' work on this
/// shared machine (nice ≥ 0) barely delays either.
const SERVER_NICE: i32 = -20;
/// wrk connections (one thread).
const CONNECTIONS: u32 = 16;
/// Measured wrk run, seconds.
const MEASURE_SECS: u64 = 5;
/// wrk run before each measurement: the client is established (tracked).
const WARMUP_SECS: u64 = 1;
/// The flood runs this long before the measured wrk run starts.
const FLOOD_LEAD: Duration = Duration::from_millis(500);

/// The limiters' policy. nginx alone answers at most ~40,000 requests/s here
/// and wrk sends ~1.05 packets per request, so the ceiling for all sources
/// together is the server's capacity with 2x headroom, 100,000 packets/s
/// (burst 10,000); the legitimate client is a single source that may use all
/// of it, so the per-source limit is the same; tollgate's new-source budget
/// is the spoofed bench's, 2,000/s, burst 200.
pub const PER_SOURCE: (u64, u64) = (100_000, 10_000);
pub const AGGREGATE: (u64, u64) = (100_000, 10_000);
pub const NEW_SOURCES: (u64, u64) = (2_000, 200);

/// The protection in front of nginx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    None,
    Nftables,
    Tollgate,
}

impl Protection {
    pub const ALL: [Protection; 3] = [Protection::None, Protection::Nftables, Protection::Tollgate];

    pub fn label(self, bed: &Bed) -> String {
        match self {
            Protection::None => "no protection".into(),
            Protection::Nftables => System::NftMeter.label(bed.nft_hook.describe()),
            Protection::Tollgate => System::Tollgate.label(""),
        }
    }
}

/// The legitimate client's namespace `tg-<id>c`, linked to the flood's
/// namespace (which routes between it and the host veth) by a veth pair
/// `tg-r<id>` / `tg-c<id>`, in the upper half of the bed's /24: router side
/// `.129/25`, client `.130/25`; the host routes that /25 through the bed's
/// namespace. Removed on drop (with the namespace, the pair goes too).
pub struct ClientNet {
    pub ip: Ipv4Addr,
    // Drop order: the link (with the host's route through it), then the namespace.
    link: String,
    router_ns: String,
    pub ns: Netns,
}

impl ClientNet {
    pub fn new(bed: &Bed) -> Result<ClientNet> {
        let id = unique_id();
        let ns = Netns::new(&format!("{id}c"))?;
        let o = bed.veth.host_ip.octets();
        let (router_ip, ip) = (
            Ipv4Addr::new(o[0], o[1], o[2], 129),
            Ipv4Addr::new(o[0], o[1], o[2], 130),
        );
        let (link, peer) = (format!("tg-r{id}"), format!("tg-c{id}"));
        let net = ClientNet {
            ip,
            link: link.clone(),
            router_ns: bed.ns.name.clone(),
            ns,
        };
        let (rns, cns) = (net.router_ns.as_str(), net.ns.name.as_str());
        sh(&[
            "ip", "-n", rns, "link", "add", &link, "type", "veth", "peer", "name", &peer, "netns",
            cns,
        ])?;
        for (ns, dev) in [(rns, link.as_str()), (cns, peer.as_str())] {
            let key = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &key])?;
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            rns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        sh(&[
            "ip",
            "-n",
            rns,
            "addr",
            "add",
            &format!("{router_ip}/25"),
            "dev",
            &link,
        ])?;
        sh(&["ip", "-n", rns, "link", "set", &link, "up"])?;
        sh(&[
            "ip",
            "-n",
            cns,
            "addr",
            "add",
            &format!("{ip}/25"),
            "dev",
            &peer,
        ])?;
        sh(&["ip", "-n", cns, "link", "set", &peer, "up"])?;
        sh(&[
            "ip",
            "-n",
            cns,
            "route",
            "add",
            "default",
            "via",
            &router_ip.to_string(),
        ])?;
        // The host reaches the client through the bed's namespace.
        sh(&[
            "ip",
            "route",
            "add",
            &format!("{}/25", Ipv4Addr::new(o[0], o[1], o[2], 128)),
            "via",
            &bed.veth.peer_ip.to_string(),
            "dev",
            &bed.veth.host,
        ])?;
        Ok(net)
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        // The host's route through the bed goes with the bed's veth.
        let _ = Command::new("ip")
            .args(["-n", &self.router_ns, "link", "del", &self.link])
            .status();
    }
}

/// One measured cell.
#[derive(Clone, Debug)]
pub struct Cell {
    pub protection: Protection,
    pub flood: bool,
    pub wrk: WrkReport,
    /// Flood frames the generator produced per second over its run.
    pub offered_pps: f64,
    /// Flood datagrams that reached the host's UDP socket, per second of the
    /// measured window.
    pub admitted_pps: f64,
    /// The client's retransmitted TCP segments, as a share of the segments
    /// it sent in the measured window.
    pub retrans: f64,
    /// Share of the measured window the server CPU's NAPI thread ran.
    pub napi_busy: f64,
    /// Share of the measured window nginx (all its processes) ran.
    pub nginx_busy: f64,
}

/// wrk in the client namespace, pinned to [`CLIENT_CPU`] at nice -20 (the
/// flood generator on the same CPU stands for the network, not for the
/// client machine, so it gets only what the client leaves).
fn wrk(client: &ClientNet, url: &str, secs: u64) -> Result<WrkReport> {
    let out = Command::new("ip")
        .args(["netns", "exec", &client.ns.name, "taskset", "-c"])
        .arg(CLIENT_CPU.to_string())
        .args(["nice", "-n", "-20", "wrk", "-t1"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "2s", "--latency", url])
        .stdin(Stdio::null())
        .output()
        .context("spawning wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&stdout)
}

/// `drops` of the UDP socket bound to `addr` in `/proc/net/udp`.
fn udp_drops(addr: SocketAddr) -> Result<u64> {
    let IpAddr::V4(ip) = addr.ip() else {
        bail!("{addr} is not IPv4");
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp")?;
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .with_context(|| format!("no socket {local} ({addr}) in /proc/net/udp"))
}

/// `Tcp: OutSegs` and `RetransSegs` of the client's namespace (wrk is the
/// only thing there): lost requests and lost responses both show up as the
/// client's retransmissions.
fn client_tcp(client: &ClientNet) -> Result<(u64, u64)> {
    let snmp = sh(&[
        "ip",
        "netns",
        "exec",
        &client.ns.name,
        "cat",
        "/proc/net/snmp",
    ])?;
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    ensure!(
        lines.len() >= 2,
        "no Tcp lines in {}'s /proc/net/snmp",
        client.ns.name
    );
    let keys: Vec<&str> = lines[0].split_whitespace().collect();
    let vals: Vec<&str> = lines[1].split_whitespace().collect();
    let get = |k: &str| -> Result<u64> {
        let i = keys
            .iter()
            .position(|x| *x == k)
            .with_context(|| format!("no Tcp {k} in /proc/net/snmp"))?;
        vals.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bad Tcp {k} in /proc/net/snmp"))
    };
    Ok((get("OutSegs")?, get("RetransSegs")?))
}

/// One cell: warm-up, then (with the flood started first) the measured run.
fn cell(
    bed: &Bed,
    client: &ClientNet,
    nginx: &Nginx,
    sink: &UdpSocket,
    protection: Protection,
    flood_on: bool,
) -> Result<Cell> {
    flood::check_stop()?;
    let url = format!("http://{}/", nginx.addr);
    let installed: Option<Installed> = match protection {
        Protection::None => None,
        Protection::Nftables => Some(bed.install_limits(
            System::NftMeter,
            PER_SOURCE.0,
            PER_SOURCE.1,
            Some(AGGREGATE),
            None,
        )?),
        Protection::Tollgate => Some(bed.install_limits(
            System::Tollgate,
            PER_SOURCE.0,
            PER_SOURCE.1,
            Some(AGGREGATE),
            Some(NEW_SOURCES),
        )?),
    };
    // Attaching XDP may recreate the NAPI thread: looked up per cell, pinned
    // to the server CPU, at nice 0 (softirq work under sustained load runs in
    // ksoftirqd at nice 0, sharing the CPU with the server's processes).
    bed.set_threaded(true)?;
    let napi = bed.napi_thread(SERVER_CPU)?;
    set_nice(napi, 0)?;
    // The client is established (tracked by tollgate) before any flood.
    let warm = wrk(client, &url, WARMUP_SECS)?;
    ensure!(
        warm.requests > 0,
        "{protection:?}: the warm-up wrk run completed no request ({warm:?})"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let blaster = if flood_on {
        let peer = bed.veth.peer.clone();
        let template = generator::udp_frame(
            bed.host_mac,
            bed.peer_mac,
            Ipv4Addr::new(198, 51, 100, 1), // rewritten per frame
            bed.veth.host_ip,
            40000,
            sink.local_addr()?.port(),
        );
        let (stop, started) = (stop.clone(), started.clone());
        let limit = FLOOD_LEAD + Duration::from_secs(MEASURE_SECS + 10);
        Some(bed.ns.run(move || -> Result<generator::Blasted> {
            pin_to_cpu(CLIENT_CPU)?;
            set_nice(0, 0)?;
            let redirector = generator::Redirector::load(&peer, Spoof::V4)?;
            started.store(true, Ordering::Relaxed);
            generator::blast(&redirector, &template, limit, u64::MAX, &stop)
        }))
    } else {
        None
    };
    let result = (|| -> Result<(WrkReport, f64, f64, f64, f64)> {
        if flood_on {
            let t = Instant::now();
            while !started.load(Ordering::Relaxed) {
                ensure!(
                    t.elapsed() < Duration::from_secs(5),
                    "the flood generator did not start within 5 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(FLOOD_LEAD);
        }
        let pids = nginx.pids();
        let cpu = |tids: &[i32]| -> f64 {
            tids.iter()
                .filter_map(|t| flood::schedstat_ns(*t).ok())
                .sum::<u64>() as f64
        };
        let (napi0, nginx0, drops0) = (cpu(&[napi]), cpu(&pids), udp_drops(sink.local_addr()?)?);
        let tcp0 = client_tcp(client)?;
        let t0 = Instant::now();
        let report = wrk(client, &url, MEASURE_SECS)?;
        let wall = t0.elapsed().as_nanos() as f64;
        let admitted = udp_drops(sink.local_addr()?)? - drops0;
        let tcp1 = client_tcp(client)?;
        let retrans = (tcp1.1 - tcp0.1) as f64 / (tcp1.0 - tcp0.0).max(1) as f64;
        Ok((
            report,
            (cpu(&[napi]) - napi0) / wall,
            (cpu(&pids) - nginx0) / wall,
            admitted as f64 / (wall / 1e9),
            retrans,
        ))
    })();
    stop.store(true, Ordering::Relaxed);
    let offered_pps = match blaster {
        Some(b) => {
            let blasted = b
                .join()
                .map_err(|_| anyhow::anyhow!("flood generator panicked"))???;
            blasted.frames as f64 / blasted.wall.as_secs_f64()
        }
        None => 0.0,
    };
    if let Some(Installed::Xdp {
        maps: Some(maps), ..
    }) = &installed
    {
        let c = |v| maps.counter(0, v).map(|c| c.packets).unwrap_or(0);
        eprintln!(
            "    tollgate: passed {}, untracked {}, dropped untracked {}, dropped packets {}, dropped aggregate {}, client tracked {}",
            c(Verdict::Passed),
            c(Verdict::Untracked),
            c(Verdict::DroppedUntracked),
            c(Verdict::DroppedPackets),
            c(Verdict::DroppedAggregate),
            maps.source_v4(client.ip).is_some()
        );
    }
    drop(installed);
    let (wrk, napi_busy, nginx_busy, admitted_pps, retrans) = result?;
    let cell = Cell {
        protection,
        flood: flood_on,
        wrk,
        offered_pps,
        admitted_pps,
        retrans,
        napi_busy,
        nginx_busy,
    };
    eprintln!(
        "  {protection:?} flood {}: {:.0} req/s, p99 {:?}, errors {:?}, offered {:.2} Mpps, admitted {:.0}/s, client retransmits {:.1}% of its segments, NAPI {:.0}%, nginx {:.0}%",
        if flood_on { "on" } else { "off" },
        cell.wrk.requests_per_sec,
        cell.wrk.p99,
        cell.wrk.errors,
        offered_pps / 1e6,
        admitted_pps,
        retrans * 100.0,
        napi_busy * 100.0,
        nginx_busy * 100.0
    );
    Ok(cell)
}

/// The whole benchmark: `reps` repetitions of every cell, interleaved;
/// prints a Markdown report on stdout.
pub fn run(reps: usize) -> Result<()> {
    flood::install_signal_handlers();
    ensure!((1..=20).contains(&reps), "1..=20 repetitions, not {reps}");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        cpus > SERVER_CPU,
        "the ddos bench needs two CPUs (client side and server), found {cpus}"
    );
    let load_before = flood::loadavg();
    let started = Instant::now();
    let mut cfg = Config::spoofed(Spoof::V4);
    cfg.gen_cpu = CLIENT_CPU;
    cfg.rx_cpu = SERVER_CPU;
    let bed = Bed::new(&cfg)?;
    let client = ClientNet::new(&bed)?;
    // The flood's target: a UDP socket on the host veth address that is
    // never read (its small buffer fills, then every datagram is counted in
    // its `drops`).
    let sink = UdpSocket::bind((bed.veth.host_ip, 0)).context("binding the flood's UDP sink")?;
    let size: libc::c_int = 4096;
    // SAFETY: an int option of the stated length.
    unsafe {
        libc::setsockopt(
            sink.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    // The NAPI thread it shares its CPU with runs at the same nice.
    let nginx = Nginx::start(&bed.id, bed.veth.host_ip, SERVER_CPU, SERVER_NICE)?;
    eprintln!(
        "ddos bed: nginx {} (pid {}, prefix {}), client {} in {}, flood from {} via {} -> {}",
        nginx.addr,
        nginx.pid(),
        nginx.prefix.display(),
        client.ip,
        client.ns.name,
        bed.ns.name,
        bed.veth.peer,
        bed.veth.host
    );
    let order = cells_from_env()?;
    let mut cells: Vec<Cell> = Vec::new();
    for rep in 0..reps {
        eprintln!("ddos repetition {}/{reps}", rep + 1);
        for &(protection, flood_on) in &order {
            cells.push(cell(&bed, &client, &nginx, &sink, protection, flood_on)?);
        }
    }
    print_report(&bed, &cells, reps, started.elapsed(), &load_before);
    Ok(())
}

/// The cells of a repetition, in order: every protection without then with
/// the flood, or (development override) `TOLLGATE_DDOS_CELLS`, e.g.
/// `none-off,tollgate-on`.
fn cells_from_env() -> Result<Vec<(Protection, bool)>> {
    let Some(v) = std::env::var("TOLLGATE_DDOS_CELLS")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(Protection::ALL
            .into_iter()
            .flat_map(|p| [(p, false), (p, true)])
            .collect());
    };
    v.split(',')
        .map(|c| {
            let (p, f) = c.trim().split_once('-').with_context(|| {
                format!("TOLLGATE_DDOS_CELLS: {c:?} is not <protection>-<off|on>")
            })?;
            let p = match p {
                "none" => Protection::None,
                "nft" => Protection::Nftables,
                "tollgate" => Protection::Tollgate,
                _ => bail!("TOLLGATE_DDOS_CELLS: unknown protection {p:?} in {c:?}"),
            };
            let f = match f {
                "off" => false,
                "on" => true,
                _ => bail!("TOLLGATE_DDOS_CELLS: {f:?} in {c:?} is not off or on"),
            };
            Ok((p, f))
        })
        .collect()
}

fn fmt_duration(d: f64) -> String {
    if d >= 1.0 {
        format!("{d:.2} s")
    } else if d >= 1e-3 {
        format!("{:.2} ms", d * 1e3)
    } else {
        format!("{:.0} µs", d * 1e6)
    }
}

fn print_report(bed: &Bed, cells: &[Cell], reps: usize, elapsed: Duration, load_before: &str) {
    let of = |p: Protection, flood: bool| -> Vec<&Cell> {
        cells
            .iter()
            .filter(|c| c.protection == p && c.flood == flood)
            .collect()
    };
    // (NaN for a cell left out by TOLLGATE_DDOS_CELLS.)
    let med = |cs: &[&Cell], f: &dyn Fn(&Cell) -> f64| {
        if cs.is_empty() {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            spread(cs.iter().map(|c| f(c)).collect())
        }
    };
    // A run with no completed request has no p99: it counts as its timeout.
    let p99 = |c: &Cell| c.wrk.p99.map_or(2.0, |d| d.as_secs_f64());
    println!(
        "### `cargo xtask bench ddos`: nginx under a spoofed flood ({MEASURE_SECS} s wrk runs, {reps} runs, median (min–max))\n"
    );
    println!(
        "| protection | flood | requests/s | p99 latency | requests/s vs no flood | p99 × no flood | flood offered, Mpps | flood reaching the UDP socket/s | client TCP segments retransmitted | server CPU: receive (NAPI) / nginx | wrk errors (connect/read/write/timeout), non-2xx |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for p in Protection::ALL {
        let base = of(p, false);
        let (base_rps, _, _) = med(&base, &|c| c.wrk.requests_per_sec);
        let (base_p99, _, _) = med(&base, &p99);
        for flood in [false, true] {
            let cs = of(p, flood);
            if cs.is_empty() {
                continue;
            }
            let (rps, rlo, rhi) = med(&cs, &|c| c.wrk.requests_per_sec);
            let (l, llo, lhi) = med(&cs, &p99);
            let (share, slo, shi) = med(&cs, &|c| c.wrk.requests_per_sec / base_rps * 100.0);
            let (times, tlo, thi) = med(&cs, &|c| p99(c) / base_p99);
            let (offered, _, _) = med(&cs, &|c| c.offered_pps / 1e6);
            let (admitted, _, _) = med(&cs, &|c| c.admitted_pps);
            let (retrans, _, _) = med(&cs, &|c| c.retrans * 100.0);
            let (napi, _, _) = med(&cs, &|c| c.napi_busy * 100.0);
            let (ngx, _, _) = med(&cs, &|c| c.nginx_busy * 100.0);
            let mut errors = [0u64; 4];
            let mut non_2xx = 0;
            for c in &cs {
                for (e, n) in errors.iter_mut().zip(c.wrk.errors) {
                    *e += n;
                }
                non_2xx += c.wrk.non_2xx;
            }
            let (vs, x) = if flood {
                (
                    format!("{share:.0}% ({slo:.0}–{shi:.0}%)"),
                    format!("{times:.2}x ({tlo:.2}–{thi:.2}x)"),
                )
            } else {
                ("100%".into(), "1.00x".into())
            };
            println!(
                "| {} | {} | {rps:.0} ({rlo:.0}–{rhi:.0}) | {} ({}–{}) | {vs} | {x} | {} | {} | {retrans:.1}% | {napi:.0}% / {ngx:.0}% | {}, {non_2xx} |",
                p.label(bed),
                if flood { "on" } else { "off" },
                fmt_duration(l),
                fmt_duration(llo),
                fmt_duration(lhi),
                if flood {
                    format!("{offered:.2}")
                } else {
                    "—".into()
                },
                if flood {
                    format!("{admitted:.0}")
                } else {
                    "—".into()
                },
                errors.map(|e| e.to_string()).join("/"),
            );
            if flood && p == Protection::Tollgate {
                verdicts.push((share, times));
            }
        }
    }
    println!();
    for (share, times) in verdicts {
        let ok = |b: bool| if b { "met" } else { "missed" };
        println!(
            "- tollgate under the flood: {share:.0}% of its no-flood requests/s (target ≥ 90%: {}), p99 {times:.2}× its no-flood p99 (target ≤ 2×: {}).",
            ok(share >= 90.0),
            ok(times <= 2.0)
        );
    }
    println!(
        "\nSetup: nginx {} (1 worker, `return 200 \"ok\\n\"`, keep-alive) on the host veth {}; wrk {} (`-t1 -c{CONNECTIONS} --latency --timeout 2s`, {WARMUP_SECS} s warm-up before every run, so the client is established before any flood) from its own namespace, routed through the flood's namespace into the same host veth ring as the flood. Flood: UDP datagrams with a random 32-bit IPv4 source each (the live-frames XDP generator at its full rate, started {:.1} s before the measured run and stopped after it) to a UDP socket on the host that is never read. CPUs: generator and wrk (nice -20) on CPU {CLIENT_CPU}; the host veth's threaded NAPI and nginx on CPU {SERVER_CPU}, both at nice {SERVER_NICE} (equal, so they share that CPU as softirq work and a server do under sustained load; the generator runs at nice 0).",
        nginx_version(),
        bed.veth.host,
        wrk_version(),
        FLOOD_LEAD.as_secs_f64(),
    );
    println!(
        "Policy (nftables and tollgate): {}/s burst {} packets per source (the legitimate client is one source sending about one packet per request), {}/s burst {} for all sources together (tollgate: the tier aggregate, with the untracked ceiling at the same rate; nftables: `limit rate over` after the meter); tollgate's new-source budget {}/s burst {}. nftables hook: {}.",
        PER_SOURCE.0,
        PER_SOURCE.1,
        AGGREGATE.0,
        AGGREGATE.1,
        NEW_SOURCES.0,
        NEW_SOURCES.1,
        bed.nft_hook.describe()
    );
    println!(
        "Machine: {}. Load average before / after: {load_before} / {}. Total {:.0} s.",
        flood::machine(),
        flood::loadavg(),
        elapsed.as_secs_f64()
    );
}

fn nginx_version() -> String {
    // `nginx -v` prints to stderr.
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_else(|_| "nginx".into())
}

fn wrk_version() -> String {
    Command::new("wrk")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}
