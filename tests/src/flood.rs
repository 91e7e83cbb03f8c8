//! `cargo xtask bench flood`: the same spoofed flood, over the same veth, into
//! each receiving side in turn — a minimal XDP_DROP (the floor), tollgate, an
//! nftables meter, iptables hashlimit, and two references (an XDP program that
//! only reads the source address, and nftables dropping everything without a
//! meter) — then the admitted rate of one paced source at 2x and 10x its
//! limit for each limiter.
//!
//! The flood runs twice: as XDP frames redirected into the veth (the receive
//! side sees raw buffers, as from a NIC ring) and as skbs from an AF_PACKET
//! socket (the container case). See [`Path`] for how each is measured.
//!
//! Everything created is named `tg-<id>…` and removed by guards on drop (also
//! while a panic unwinds, and after SIGINT/SIGTERM, which stop the loops).
//! Only the benchmark's own rules, tables, links and namespaces are touched.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::Ebpf;
use aya::programs::{Xdp, xdp::XdpLinkId};
use tollgate::datapath::kernel::{self, AttachMode, MapSizes, Maps};
use tollgate_common::Verdict;

use crate::{
    generator::{self, Flood, PacketSocket, Sent},
    net::{Netns, Veth, pin_to_cpu, sh},
    probes::{self, Probes},
    program::TierSpec,
    rawbpf::{self, Spoof},
    traffic::send_udp_paced,
    unique_id,
};

/// Set by SIGINT/SIGTERM: every loop checks it, so guards get to clean up.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

pub fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// The parameters of one `flood` run (constants, printed with the results).
#[derive(Clone, Debug)]
pub struct Config {
    /// Per-source limit in the flood: packets/s and burst.
    pub flood_rate: u64,
    pub flood_burst: u64,
    pub abusive_sources: u32,
    pub legit_sources: u32,
    /// Each legitimate source's rate (under `flood_rate`).
    pub legit_rate: u64,
    pub flood_secs: f64,
    /// Abusive frames per run at most (a bound; the duration ends runs first).
    pub flood_max_packets: u64,
    /// Limit for the accuracy runs.
    pub acc_rate: u64,
    pub acc_burst: u64,
    pub acc_secs: u64,
    pub acc_reps: usize,
    /// CPU the generator (and the paced sender) runs on.
    pub gen_cpu: usize,
    /// CPU the receiving side's threaded NAPI poller is pinned to.
    pub rx_cpu: usize,
    /// Receiving sides of the flood, in the order they run each repetition.
    pub systems: Vec<System>,
    /// Flood paths, each with its number of repetitions.
    pub paths: Vec<(Path, usize)>,
    pub accuracy: bool,
    /// How the XDP-frames flood spoofs its sources ([`Spoof::LastOctet`]:
    /// the `abusive_sources`; the others: random sources, see `--spoofed`).
    pub spoof: Spoof,
    /// The legitimate sources send alone for this long before the flood, so
    /// they are established (tracked) when it starts.
    pub legit_lead: Duration,
    /// A ceiling for all sources together (packets/s, burst) in every
    /// limiter: tollgate's tier aggregate, an nftables `limit rate over`,
    /// a hashlimit without a mode.
    pub aggregate: Option<(u64, u64)>,
    /// tollgate's new-source budget (new tracked sources/s, burst).
    pub new_sources: Option<(u64, u64)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            flood_rate: 10,
            flood_burst: 5,
            abusive_sources: 256,
            legit_sources: 4,
            legit_rate: 5,
            flood_secs: 3.0,
            flood_max_packets: 100_000_000,
            acc_rate: 1000,
            acc_burst: 100,
            acc_secs: 3,
            acc_reps: 5,
            gen_cpu: 0,
            rx_cpu: 1,
            systems: System::FLOOD.to_vec(),
            paths: vec![(Path::XdpFrames, 5), (Path::Skbs, 5)],
            accuracy: true,
            spoof: Spoof::LastOctet,
            legit_lead: Duration::ZERO,
            aggregate: None,
            new_sources: None,
        }
    }
}

impl Config {
    /// `bench flood --spoofed`: random sources over the whole IPv4 space or
    /// random IPv6 /64s (XDP frames only: every frame gets a new source),
    /// four legitimate IPv4 and two IPv6 sources established first, and the
    /// issue's policy: 10/s burst 5 per source, 20,000/s burst 1,000 for all
    /// sources together, tollgate's new-source budget 2,000/s burst 200 (a
    /// newly tracked source's first packet shares the aggregate ceiling with
    /// the established sources: a budget under the ceiling, in rate and in
    /// burst, leaves them the rest).
    pub fn spoofed(spoof: Spoof) -> Config {
        Config {
            spoof,
            legit_lead: Duration::from_secs(1),
            aggregate: Some((20_000, 1_000)),
            new_sources: Some((2_000, 200)),
            paths: vec![(Path::XdpFrames, 3)],
            accuracy: false,
            systems: match spoof {
                Spoof::V6Prefix => vec![System::Floor, System::Tollgate, System::NftMeter],
                _ => vec![
                    System::Floor,
                    System::FloorRead,
                    System::Tollgate,
                    System::NftMeter,
                    System::Hashlimit,
                ],
            },
            ..Config::default()
        }
    }

    /// Legitimate IPv6 sources (only in spoofed runs).
    pub fn legit_v6_sources(&self) -> u32 {
        if self.spoof == Spoof::LastOctet { 0 } else { 2 }
    }
}

impl Config {
    /// The default, with development overrides from the environment:
    /// `TOLLGATE_FLOOD_QUICK=1` (one short repetition of everything),
    /// `TOLLGATE_FLOOD_SYSTEMS=floor,floor-read,tollgate,nft,hashlimit,nft-drop-all`,
    /// `TOLLGATE_FLOOD_PATHS=frames,skbs`, `TOLLGATE_FLOOD_REPS`,
    /// `TOLLGATE_FLOOD_SECS`, `TOLLGATE_FLOOD_ACCURACY=0`.
    /// The published numbers come from the default.
    pub fn from_env() -> Result<Config> {
        let mut cfg = Config::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if var("TOLLGATE_FLOOD_QUICK").is_some_and(|v| v == "1") {
            cfg.paths = vec![(Path::XdpFrames, 1), (Path::Skbs, 1)];
            cfg.acc_reps = 1;
            cfg.flood_secs = 2.0;
            cfg.acc_secs = 2;
        }
        if let Some(systems) = systems_from_env()? {
            cfg.systems = systems;
        }
        if let Some(v) = var("TOLLGATE_FLOOD_REPS") {
            let reps: usize = v.parse().context("TOLLGATE_FLOOD_REPS")?;
            cfg.acc_reps = reps;
            for (_, n) in cfg.paths.iter_mut() {
                *n = reps;
            }
        }
        if let Some(v) = var("TOLLGATE_FLOOD_PATHS") {
            let want: Vec<&str> = v.split(',').map(str::trim).collect();
            cfg.paths.retain(|(p, _)| {
                want.contains(&match p {
                    Path::XdpFrames => "frames",
                    Path::Skbs => "skbs",
                })
            });
        }
        if let Some(v) = var("TOLLGATE_FLOOD_SECS") {
            cfg.flood_secs = v.parse().context("TOLLGATE_FLOOD_SECS")?;
        }
        if var("TOLLGATE_FLOOD_ACCURACY").is_some_and(|v| v == "0") {
            cfg.accuracy = false;
        }
        ensure!(
            cfg.paths.iter().all(|&(_, n)| (1..=50).contains(&n))
                && (1..=50).contains(&cfg.acc_reps)
                && cfg.flood_secs > 0.0
                && cfg.flood_secs <= 30.0,
            "bounded runs only: 1..=50 repetitions of at most 30 s"
        );
        Ok(cfg)
    }
}

/// A receiving side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// `floor_drop` (the probes object): XDP_DROP everything, natively on the veth.
    Floor,
    /// Reference: an XDP program that reads the IPv4 source, then drops.
    FloorRead,
    /// tollgate with a default tier of `rate`/s, burst `burst` per source.
    Tollgate,
    /// An nftables dynamic set (meter) with `limit rate over` per source.
    NftMeter,
    /// `iptables -t raw ... -m hashlimit --hashlimit-above`.
    Hashlimit,
    /// Reference: nftables at the same hook dropping every IPv4 packet.
    NftDropAll,
}

impl System {
    pub const FLOOD: [System; 6] = [
        System::Floor,
        System::FloorRead,
        System::Tollgate,
        System::NftMeter,
        System::Hashlimit,
        System::NftDropAll,
    ];
    pub const LIMITERS: [System; 3] = [System::Tollgate, System::NftMeter, System::Hashlimit];

    pub fn label(self, nft_hook: &str) -> String {
        match self {
            System::Floor => "floor: minimal XDP_DROP (native)".into(),
            System::FloorRead => "ref: XDP reading the IPv4 source, then XDP_DROP".into(),
            System::Tollgate => "tollgate (native XDP)".into(),
            System::NftMeter => format!("nftables meter ({nft_hook})"),
            System::Hashlimit => "iptables hashlimit (raw PREROUTING)".into(),
            System::NftDropAll => format!("ref: nftables drop-all, no meter ({nft_hook})"),
        }
    }
}

/// Which nftables hook the meter uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NftHook {
    NetdevIngress,
    PreroutingRaw,
}

impl NftHook {
    pub fn describe(self) -> &'static str {
        match self {
            NftHook::NetdevIngress => "netdev ingress",
            NftHook::PreroutingRaw => "ip prerouting, priority -300",
        }
    }
}

/// A receiving side installed on the host veth; uninstalled on drop.
pub enum Installed {
    Xdp {
        ebpf: Box<Ebpf>,
        /// tollgate's maps (None for the floor).
        maps: Option<Box<Maps>>,
        name: &'static str,
        link: Option<XdpLinkId>,
    },
    Nft {
        family: &'static str,
        table: String,
    },
    /// A hand-assembled program; dropping the link fd detaches it.
    RawXdp {
        link: std::os::fd::OwnedFd,
        prog: std::os::fd::OwnedFd,
    },
    /// Each rule (after `-t raw -A`) with its hashlimit name.
    Iptables {
        rules: Vec<(String, Vec<String>)>,
        /// We created iptables-nft's `table ip raw`: delete it when empty.
        remove_raw_table: bool,
    },
}

impl Installed {
    /// Packets this side itself counted as dropped.
    pub fn dropped(&self) -> Result<u64> {
        match self {
            Installed::RawXdp { .. } => {
                bail!("the reference has no counter of its own; use the veth's xdp_drops")
            }
            Installed::Xdp { maps, .. } => match maps {
                Some(maps) => Verdict::ALL
                    .iter()
                    .filter(|v| v.drops())
                    .map(|v| Ok(maps.counter(0, *v)?.packets))
                    .sum(),
                None => bail!("the floor has no counter of its own; use the veth's xdp_drops"),
            },
            Installed::Nft { family, table } => {
                let out = sh(&["nft", "list", "table", family, table])?;
                let mut rest = out.as_str();
                let mut total = None;
                while let Some(n) = nft_counter(rest) {
                    *total.get_or_insert(0) += n;
                    let i = rest.find("counter packets ").expect("found above");
                    rest = &rest[i + 1..];
                }
                total.context("no counter in our nft table")
            }
            Installed::Iptables { rules, .. } => {
                let out = sh(&["iptables", "-t", "raw", "-S", "PREROUTING", "-v"])?;
                rules
                    .iter()
                    .map(|(name, _)| {
                        iptables_counter(&out, name).context("our iptables rule is gone")
                    })
                    .sum()
            }
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        match self {
            Installed::Xdp {
                ebpf, name, link, ..
            } => {
                if let Some(link) = link.take()
                    && let Some(p) = ebpf.program_mut(name)
                {
                    let xdp: Result<&mut Xdp, _> = p.try_into();
                    if let Ok(xdp) = xdp {
                        let _ = xdp.detach(link);
                    }
                }
            }
            Installed::RawXdp { .. } => {} // the fds close after this
            Installed::Nft { family, table } => {
                let _ = Command::new("nft")
                    .args(["delete", "table", family, table])
                    .status();
            }
            Installed::Iptables {
                rules,
                remove_raw_table,
            } => {
                for (_, rule) in rules.iter() {
                    let mut args: Vec<&str> = vec!["-t", "raw", "-D"];
                    args.extend(rule.iter().map(String::as_str));
                    let _ = Command::new("iptables").args(&args).status();
                }
                if *remove_raw_table && raw_table_is_empty() {
                    let _ = Command::new("nft")
                        .args(["delete", "table", "ip", "raw"])
                        .status();
                }
            }
        }
    }
}

/// Whether iptables' raw table holds no rules and no user chains (only the
/// built-in chains' policies).
fn raw_table_is_empty() -> bool {
    match sh(&["iptables", "-t", "raw", "-S"]) {
        Ok(out) => out.lines().all(|l| l.starts_with("-P ") || l.is_empty()),
        Err(_) => false,
    }
}

/// The `counter packets N` of the (only) counter in an `nft list table` output.
pub fn nft_counter(out: &str) -> Option<u64> {
    let i = out.find("counter packets ")?;
    out[i + "counter packets ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Packets of the rule naming hashlimit `name` in `iptables -S -v` output
/// (`... -c <packets> <bytes>`).
pub fn iptables_counter(out: &str, name: &str) -> Option<u64> {
    let line = out.lines().find(|l| {
        l.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "--hashlimit-name" && w[1] == name)
    })?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "-c")?;
    words.get(i + 1)?.parse().ok()
}

/// `iptables -V`, e.g. `iptables v1.8.9 (nf_tables)`.
pub fn iptables_version() -> String {
    sh(&["iptables", "-V"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("iptables unavailable: {e}"))
}

/// The test bed: one namespace and veth pair for every run, the host side
/// with GRO on and threaded NAPI pinned to `rx_cpu`, and sockets counting
/// what gets through per source.
pub struct Bed {
    pub id: String,
    // Field order is drop order: sockets, then the link, then the namespace.
    pub legit_rx: SourceCounter,
    pub abuse_rx: SourceCounter,
    /// The same on the host side's IPv6 address, [`Bed::host_ip6`].
    pub legit6_rx: SourceCounter,
    pub abuse6_rx: SourceCounter,
    pub host_ip6: Ipv6Addr,
    pub veth: Veth,
    pub ns: Netns,
    pub host_mac: [u8; 6],
    pub peer_mac: [u8; 6],
    pub nft_hook: NftHook,
    pub iptables_nft: bool,
    seq: AtomicU64,
}

impl Bed {
    pub fn new(cfg: &Config) -> Result<Bed> {
        let id = unique_id();
        let ns = Netns::new(&id)?;
        let veth = Veth::new(&id, &ns, 1)?;
        // NAPI on the host side for every system (XDP would turn it on; GRO
        // does without XDP), so every system receives through the same veth ring
        // and poll loop; threaded, so the poller is one kthread we can pin and
        // whose CPU time we can read exactly.
        sh(&["ethtool", "-K", &veth.host, "gro", "on"])?;
        // veth only hands a sender's skbs to the peer's NAPI (rather than
        // netif_rx) when they could be aggregated: with TSO off on the sender.
        sh(&[
            "ip", "netns", "exec", &ns.name, "ethtool", "-K", &veth.peer, "tso", "off",
        ])?;
        std::fs::write(format!("/sys/class/net/{}/threaded", veth.host), "1")
            .context("enabling threaded NAPI")?;
        let host_mac = generator::parse_mac(&std::fs::read_to_string(format!(
            "/sys/class/net/{}/address",
            veth.host
        ))?)?;
        let peer_line = sh(&[
            "ip", "-n", &ns.name, "-br", "link", "show", "dev", &veth.peer,
        ])?;
        let peer_mac = generator::parse_mac(
            peer_line
                .split_whitespace()
                .nth(2)
                .context("peer MAC in `ip -br link`")?,
        )?;
        // The paced sender resolves nothing: a permanent neighbour entry.
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "neigh",
            "replace",
            &veth.host_ip.to_string(),
            "lladdr",
            &format_mac(host_mac),
            "dev",
            &veth.peer,
            "nud",
            "permanent",
        ])?;
        let legit_rx = SourceCounter::bind(veth.host_ip, cfg.gen_cpu)?;
        let abuse_rx = SourceCounter::bind(veth.host_ip, cfg.gen_cpu)?;
        // An IPv6 address on the host side (a ULA derived from the veth's
        // IPv4 subnet, no DAD), for the IPv6 runs; and, as the random
        // sources of a spoofed flood are not on the veth's subnet, no
        // reverse-path filter on it (the machine-wide setting must allow it).
        let o = veth.host_ip.octets();
        let host_ip6 = Ipv6Addr::new(
            0xfd00,
            0x7467,
            (o[1] as u16) << 8 | o[2] as u16,
            0,
            0,
            0,
            0,
            1,
        );
        // (The harness creates veths with IPv6 off.)
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", veth.host),
            "0",
        )
        .context("IPv6 on the host veth")?;
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{host_ip6}/64"),
            "dev",
            &veth.host,
            "nodad",
        ])?;
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/rp_filter", veth.host),
            "0",
        )
        .context("rp_filter off on the host veth")?;
        let rp_all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")?;
        ensure!(
            rp_all.trim() == "0",
            "net.ipv4.conf.all.rp_filter is {}: spoofed sources would be dropped by the stack, not by the system measured",
            rp_all.trim()
        );
        let legit6_rx = SourceCounter::bind(host_ip6, cfg.gen_cpu)?;
        let abuse6_rx = SourceCounter::bind(host_ip6, cfg.gen_cpu)?;
        let iptables_nft = iptables_version().contains("nf_tables");
        let mut bed = Bed {
            id,
            legit_rx,
            abuse_rx,
            legit6_rx,
            abuse6_rx,
            host_ip6,
            veth,
            ns,
            host_mac,
            peer_mac,
            nft_hook: NftHook::NetdevIngress,
            iptables_nft,
            seq: AtomicU64::new(0),
        };
        // Probe: can a dynamic set be updated from the netdev ingress hook?
        let probe = bed.install(System::NftMeter, 100, 10);
        match probe {
            Ok(p) => drop(p),
            Err(e) => {
                eprintln!("nftables meter at netdev ingress failed ({e:#}); using prerouting raw");
                bed.nft_hook = NftHook::PreroutingRaw;
                drop(bed.install(System::NftMeter, 100, 10)?);
            }
        }
        Ok(bed)
    }

    fn next_name(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("tg-{}-{n:x}", self.id)
    }

    /// Installs `system` with a per-source limit of `rate`/s, burst `burst`.
    pub fn install(&self, system: System, rate: u64, burst: u64) -> Result<Installed> {
        self.install_limits(system, rate, burst, None, None)
    }

    /// [`Bed::install`] plus a ceiling for all sources together
    /// (`aggregate`, packets/s and burst) and tollgate's new-source budget.
    pub fn install_limits(
        &self,
        system: System,
        rate: u64,
        burst: u64,
        aggregate: Option<(u64, u64)>,
        new_sources: Option<(u64, u64)>,
    ) -> Result<Installed> {
        match system {
            System::Floor => {
                // floor_drop from the probes object (its one small map is
                // created, unused).
                let name = probes::FLOOR_DROP;
                let mut ebpf = Box::new(Probes::load(&[name])?.ebpf);
                let xdp: &mut Xdp = ebpf
                    .program_mut(name)
                    .context("program floor_drop")?
                    .try_into()?;
                let (link, mode) = kernel::attach(xdp, &self.veth.host, AttachMode::Native)?;
                ensure!(mode == AttachMode::Native, "native XDP on veth");
                Ok(Installed::Xdp {
                    ebpf,
                    maps: None,
                    name,
                    link: Some(link),
                })
            }
            System::FloorRead => {
                let prog =
                    rawbpf::load_xdp(&rawbpf::read_source_and_drop_program(), "tg_floor_read")?;
                let link = rawbpf::attach_xdp_native(&prog, self.veth.ifindex)?;
                Ok(Installed::RawXdp { link, prog })
            }
            System::Tollgate => {
                let sizes = MapSizes {
                    sources_v4: 65536,
                    sources_v6: 65536,
                    rules_v4: 1024,
                    rules_v6: 1024,
                    ..MapSizes::default()
                };
                let mut ebpf =
                    Box::new(kernel::load(tollgate::datapath::EBPF_OBJECT, &sizes, None)?);
                let mut maps = Box::new(Maps::from_ebpf(&mut ebpf)?);
                maps.stamp_layout()?;
                // One tier, the default, with the per-source packet limit; no rules.
                maps.set_tier(
                    0,
                    &TierSpec {
                        packets: Some((rate, burst)),
                        aggregate,
                        new_sources,
                        ..Default::default()
                    }
                    .config(),
                )?;
                maps.set_default_tier(0)?;
                let (link, mode) = kernel::attach(
                    kernel::program_mut(&mut ebpf)?,
                    &self.veth.host,
                    AttachMode::Native,
                )?;
                ensure!(mode == AttachMode::Native, "native XDP on veth");
                Ok(Installed::Xdp {
                    ebpf,
                    maps: Some(maps),
                    name: tollgate_common::names::PROGRAM,
                    link: Some(link),
                })
            }
            System::NftMeter | System::NftDropAll => {
                let table = self.next_name();
                let verdict = if system == System::NftMeter {
                    let mut v = format!(
                        "meta protocol ip update @src {{ ip saddr limit rate over {rate}/second burst {burst} packets }} counter drop\n\
                         \t\tmeta protocol ip6 update @src6 {{ ip6 saddr and ffff:ffff:ffff:ffff:: limit rate over {rate}/second burst {burst} packets }} counter drop"
                    );
                    if let Some((a, b)) = aggregate {
                        v.push_str(&format!(
                            "\n\t\tmeta protocol {{ ip, ip6 }} limit rate over {a}/second burst {b} packets counter drop"
                        ));
                    }
                    v
                } else {
                    "meta protocol ip counter drop".to_string()
                };
                let lines = verdict.lines().map(str::trim);
                let (family, script) = match self.nft_hook {
                    NftHook::NetdevIngress => (
                        "netdev",
                        format!(
                            "table netdev {table} {{\n\
                             \tset src {{ type ipv4_addr; size 65535; flags dynamic; }}\n\
                             \tset src6 {{ type ipv6_addr; size 65535; flags dynamic; }}\n\
                             \tchain ingress {{\n\
                             \t\ttype filter hook ingress device \"{dev}\" priority -500; policy accept;\n\
                             {rules}\
                             \t}}\n\
                             }}\n",
                            dev = self.veth.host,
                            rules = lines.map(|l| format!("\t\t{l}\n")).collect::<String>(),
                        ),
                    ),
                    NftHook::PreroutingRaw => (
                        "inet",
                        format!(
                            "table inet {table} {{\n\
                             \tset src {{ type ipv4_addr; size 65535; flags dynamic; }}\n\
                             \tset src6 {{ type ipv6_addr; size 65535; flags dynamic; }}\n\
                             \tchain pre {{\n\
                             \t\ttype filter hook prerouting priority -300; policy accept;\n\
                             {rules}\
                             \t}}\n\
                             }}\n",
                            rules = lines
                                .map(|l| format!("\t\tiifname \"{}\" {l}\n", self.veth.host))
                                .collect::<String>(),
                        ),
                    ),
                };
                // The guard exists before the table does: a half-applied
                // script is still removed.
                let guard = Installed::Nft { family, table };
                nft_apply(&script)?;
                Ok(guard)
            }
            System::Hashlimit => {
                let name = self.next_name();
                ensure!(name.len() <= 15, "hashlimit names are at most 15 bytes");
                let remove_raw_table = self.iptables_nft
                    && Command::new("nft")
                        .args(["list", "table", "ip", "raw"])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .map(|s| !s.success())
                        .unwrap_or(false);
                let hashlimit = |name: &str, rate: u64, burst: u64, mode: bool| -> Vec<String> {
                    let rate = format!("{rate}/sec");
                    let burst = burst.to_string();
                    let mut rule = vec![
                        "PREROUTING",
                        "-i",
                        &self.veth.host,
                        "-m",
                        "hashlimit",
                        "--hashlimit-above",
                        &rate,
                        "--hashlimit-burst",
                        &burst,
                    ];
                    if mode {
                        rule.extend(["--hashlimit-mode", "srcip"]);
                    }
                    rule.extend(["--hashlimit-name", name, "-j", "DROP"]);
                    rule.into_iter().map(str::to_string).collect()
                };
                // The guard exists before the rules do: what was added is removed.
                let mut installed = Installed::Iptables {
                    rules: Vec::new(),
                    remove_raw_table,
                };
                let mut wanted = vec![(name.clone(), hashlimit(&name, rate, burst, true))];
                if let Some((a, b)) = aggregate {
                    // No mode: one bucket for every source together.
                    let global = self.next_name();
                    ensure!(global.len() <= 15, "hashlimit names are at most 15 bytes");
                    wanted.push((global.clone(), hashlimit(&global, a, b, false)));
                }
                for (name, rule) in wanted {
                    let mut args: Vec<&str> = vec!["iptables", "-t", "raw", "-A"];
                    args.extend(rule.iter().map(String::as_str));
                    sh(&args)?;
                    if let Installed::Iptables { rules, .. } = &mut installed {
                        rules.push((name, rule));
                    }
                }
                Ok(installed)
            }
        }
    }

    /// Threaded NAPI on the host side on or off.
    pub fn set_threaded(&self, on: bool) -> Result<()> {
        std::fs::write(
            format!("/sys/class/net/{}/threaded", self.veth.host),
            if on { "1" } else { "0" },
        )
        .context("setting threaded NAPI")
    }

    /// Host veth `ethtool -S` counter (e.g. `rx_queue_0_xdp_drops`).
    pub fn veth_stat(&self, key: &str) -> Result<u64> {
        let out = sh(&["ethtool", "-S", &self.veth.host])?;
        for line in out.lines() {
            if let Some((k, v)) = line.trim().split_once(':')
                && k.trim() == key
            {
                return Ok(v.trim().parse()?);
            }
        }
        bail!("no {key} in ethtool -S {}", self.veth.host)
    }

    /// The host veth's NAPI kthread (`napi/<dev>-<id>`, name truncated to 15
    /// bytes), pinned to `cpu`. Looked up per run: attaching XDP may
    /// recreate it.
    pub fn napi_thread(&self, cpu: usize) -> Result<i32> {
        let comm: String = format!("napi/{}-", self.veth.host)
            .chars()
            .take(15)
            .collect();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                && c.trim_end().starts_with(&comm)
            {
                found.push(pid);
            }
        }
        ensure!(
            found.len() == 1,
            "expected one NAPI thread named {comm}*, found {found:?}"
        );
        let tid = found[0];
        set_affinity(tid, cpu)?;
        boost(tid)?;
        Ok(tid)
    }

    fn addresses(&self, cfg: &Config) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
        let o = self.veth.host_ip.octets();
        let legit: Vec<Ipv4Addr> = (0..cfg.legit_sources)
            .map(|i| Ipv4Addr::new(o[0], o[1], o[2], 10 + i as u8))
            .collect();
        // Abusive sources: two /24s of 198.19.0.0/16 other than the veth's own.
        let base = if o[1] == 19 && (250..=251).contains(&o[2]) {
            252
        } else {
            250
        };
        let abusive: Vec<Ipv4Addr> = (0..cfg.abusive_sources)
            .map(|i| Ipv4Addr::new(198, 19, base + (i / 128) as u8, 1 + (i % 128) as u8))
            .collect();
        (legit, abusive)
    }
}

/// Pins thread `tid` to `cpu`.
fn set_affinity(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: plain data; affects only thread `tid`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({tid}, {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Nice -20 for thread `tid` (0: the calling thread): builds or tests
/// running at the same time (nice 0) get about 1% of a CPU our threads want,
/// instead of half of it.
pub fn boost(tid: i32) -> Result<()> {
    // SAFETY: no memory is passed; affects only thread `tid`.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20) } != 0 {
        bail!(
            "setpriority({tid}, -20): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn nft_apply(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("spawning nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A UDP socket on the host side counting datagrams per source address.
pub struct SourceCounter {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<IpAddr, u64>>>,
    total: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// The receiving thread's tid (0 until it has started).
    tid: Arc<std::sync::atomic::AtomicI32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SourceCounter {
    /// Moves the receiving thread to `cpu`.
    pub fn pin(&self, cpu: usize) -> Result<()> {
        let start = Instant::now();
        let mut tid = self.tid.load(Ordering::Relaxed);
        while tid == 0 && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(1));
            tid = self.tid.load(Ordering::Relaxed);
        }
        ensure!(tid != 0, "receiver thread did not start");
        set_affinity(tid, cpu)
    }

    pub fn bind(ip: impl Into<IpAddr>, cpu: usize) -> Result<SourceCounter> {
        let ip = ip.into();
        let socket = UdpSocket::bind((ip, 0)).with_context(|| format!("binding {ip}"))?;
        let size: libc::c_int = 1 << 30;
        // SAFETY: an int option of the stated length (root may exceed rmem_max).
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = socket.local_addr()?;
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let total = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let thread = {
            let (counts, total, stop, tid) =
                (counts.clone(), total.clone(), stop.clone(), tid.clone());
            std::thread::spawn(move || {
                let _ = pin_to_cpu(cpu);
                let _ = boost(0);
                tid.store(generator::gettid(), Ordering::Relaxed);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        // IPv4 sources as IPv4, also from a dual-stack socket.
                        let ip = match from.ip() {
                            IpAddr::V6(v6) => {
                                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                            }
                            v4 => v4,
                        };
                        *counts.lock().unwrap().entry(ip).or_insert(0) += 1;
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(SourceCounter {
            addr,
            counts,
            total,
            stop,
            tid,
            thread: Some(thread),
        })
    }

    /// Waits (at most `max`) until nothing has arrived for `quiet`, then takes
    /// the counts, leaving the counter empty.
    pub fn settle_and_take(&self, quiet: Duration, max: Duration) -> HashMap<IpAddr, u64> {
        let start = Instant::now();
        let mut last = self.total.load(Ordering::Relaxed);
        while start.elapsed() < max {
            std::thread::sleep(quiet);
            let now = self.total.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

impl Drop for SourceCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per-CPU `/proc/stat` times in USER_HZ: (busy, softirq).
fn proc_stat() -> Result<Vec<(u64, u64)>> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let mut out = Vec::new();
    for line in s.lines() {
        let mut w = line.split_whitespace();
        let Some(cpu) = w.next() else { continue };
        if !cpu.starts_with("cpu") || cpu == "cpu" {
            continue;
        }
        let v: Vec<u64> = w.filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        out.push((busy, v[6]));
    }
    Ok(out)
}

fn user_hz() -> f64 {
    // SAFETY: no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Scheduler CPU time of a task in ns (`/proc/<tid>/schedstat`, exact).
pub fn schedstat_ns(tid: i32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .with_context(|| format!("/proc/{tid}/schedstat"))?;
    Ok(s.split_whitespace().next().context("schedstat")?.parse()?)
}

/// `Udp: ... RcvbufErrors` of the root namespace.
fn udp_rcvbuf_errors() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("Udp:")).collect();
    if lines.len() < 2 {
        return 0;
    }
    let keys: Vec<&str> = lines[0].split_whitespace().collect();
    let vals: Vec<&str> = lines[1].split_whitespace().collect();
    keys.iter()
        .position(|k| *k == "RcvbufErrors")
        .and_then(|i| vals.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How the flood reaches the host veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// XDP frames: a live-frames BPF_PROG_TEST_RUN program in the namespace
    /// redirects each frame out of the peer veth, so the host side receives
    /// raw buffers, as from a NIC ring (XDP runs before any skb exists).
    XdpFrames,
    /// skbs: AF_PACKET sendmmsg in the namespace; veth must copy each skb
    /// into an XDP buffer before XDP runs (the container case).
    Skbs,
}

impl Path {
    pub fn describe(self) -> &'static str {
        match self {
            Path::XdpFrames => "XDP frames (live-frames test_run redirecting into the veth)",
            Path::Skbs => "skbs (AF_PACKET sendmmsg, PACKET_QDISC_BYPASS)",
        }
    }

    /// Where the receive work runs and how its CPU time is measured.
    pub fn method(self) -> &'static str {
        match self {
            Path::XdpFrames => {
                "receive = CPU time of the host veth's threaded NAPI kthread (exact, from the scheduler), pinned alone to its own CPU"
            }
            Path::Skbs => {
                "NAPI not threaded, so veth's receive work runs in softirq on the sending CPU, inline in the generator thread, as it does for containers. The generator thread's CPU time (exact; this kernel has no IRQ time accounting, so it includes that softirq work) is generator + receive. Receive = the floor's softirq share of it (tick-sampled from /proc/stat at 250 Hz) + this run's exact CPU per frame over the floor's: the generator's own work is the same in every run, so it cancels"
            }
        }
    }
}

/// One flood run's measurements.
#[derive(Clone, Debug)]
pub struct FloodRun {
    pub system: System,
    pub path: Path,
    /// Abusive frames the generator produced.
    pub offered: u64,
    pub legit_sent: Vec<u64>,
    /// Frames the receiving side took off its ring (veth `xdp_packets`).
    pub processed: u64,
    pub dropped: u64,
    pub wall: Duration,
    /// The generator's own CPU time.
    pub gen_cpu_ns: f64,
    /// The receiving side's CPU time (see [`Path::method`]).
    pub rx_cpu_ns: f64,
    /// Generator and receiving side together, exact: the generator thread's
    /// CPU time (with the inline softirq work, for skbs) plus the NAPI
    /// thread's (for frames).
    pub total_cpu_ns: f64,
    /// `/proc/stat` busy time of the receive CPU (tick-sampled cross-check).
    pub rx_cpu_stat_ns: f64,
    /// Softirq time (tick-sampled) on the generator's CPU: receive work that
    /// escaped the NAPI thread would show up here.
    pub gen_cpu_softirq_ns: f64,
    pub legit_received: Vec<u64>,
    pub abusive_admitted: u64,
    pub rcvbuf_errors: u64,
    /// tollgate's own counts, for tollgate runs.
    pub tollgate: Option<TollgateStats>,
}

/// What tollgate's maps say after a flood run (tier 0).
#[derive(Clone, Debug, Default)]
pub struct TollgateStats {
    pub passed: u64,
    pub untracked: u64,
    pub dropped_untracked: u64,
    pub dropped_packets: u64,
    pub dropped_aggregate: u64,
    /// Sources in the maps at the end (IPv4, IPv6 /64s): every one was an insert.
    pub tracked: (usize, usize),
    /// Legitimate sources no longer in the maps (evicted).
    pub legit_evicted: usize,
}

impl TollgateStats {
    fn read(maps: &Maps, legit: &[IpAddr]) -> Result<TollgateStats> {
        let c = |v| -> Result<u64> { Ok(maps.counter(0, v)?.packets) };
        let evicted = legit
            .iter()
            .filter(|a| match a {
                IpAddr::V4(a) => maps.source_v4(*a).is_none(),
                IpAddr::V6(a) => {
                    let key = tollgate_common::parse::ipv6_key(&a.octets(), 64);
                    maps.sources_v6.get(&key, 0).is_err()
                }
            })
            .count();
        Ok(TollgateStats {
            passed: c(Verdict::Passed)?,
            untracked: c(Verdict::Untracked)?,
            dropped_untracked: c(Verdict::DroppedUntracked)?,
            dropped_packets: c(Verdict::DroppedPackets)?,
            dropped_aggregate: c(Verdict::DroppedAggregate)?,
            tracked: maps.tracked_sources(),
            legit_evicted: evicted,
        })
    }
}

impl FloodRun {
    pub fn rx_ns_per_packet(&self) -> f64 {
        self.rx_cpu_ns / self.processed.max(1) as f64
    }
    pub fn total_ns_per_packet(&self) -> f64 {
        self.total_cpu_ns / self.processed.max(1) as f64
    }
    pub fn gen_ns_per_packet(&self) -> f64 {
        self.gen_cpu_ns / self.offered.max(1) as f64
    }
    pub fn dropped_pps(&self) -> f64 {
        self.dropped as f64 / self.wall.as_secs_f64()
    }
    pub fn rx_busy(&self) -> f64 {
        self.rx_cpu_ns / self.wall.as_nanos() as f64
    }
    pub fn legit_intact(&self) -> bool {
        self.legit_received == self.legit_sent
    }
}

/// One flood run against `system` over `path`.
pub fn flood_run(bed: &Bed, cfg: &Config, system: System, path: Path) -> Result<FloodRun> {
    check_stop()?;
    ensure!(
        cfg.spoof == Spoof::LastOctet || path == Path::XdpFrames,
        "random sources need the XDP frames path (the skbs path replays prebuilt frames)"
    );
    let (legit4, abusive) = bed.addresses(cfg);
    let frame = |src: IpAddr, port: u16| match src {
        IpAddr::V4(src) => generator::udp_frame(
            bed.host_mac,
            bed.peer_mac,
            src,
            bed.veth.host_ip,
            40000,
            port,
        ),
        IpAddr::V6(src) => {
            generator::udp6_frame(bed.host_mac, bed.peer_mac, src, bed.host_ip6, 40000, port)
        }
    };
    let legit: Vec<IpAddr> = legit4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain((0..cfg.legit_v6_sources()).map(|i| {
            let mut o = bed.host_ip6.octets();
            o[15] = 0x10 + i as u8;
            IpAddr::V6(Ipv6Addr::from(o))
        }))
        .collect();
    let legit_frames: Vec<Vec<u8>> = legit
        .iter()
        .map(|&s| {
            let port = match s {
                IpAddr::V4(_) => bed.legit_rx.addr.port(),
                IpAddr::V6(_) => bed.legit6_rx.addr.port(),
            };
            frame(s, port)
        })
        .collect();
    let abusive_frames: Vec<Vec<u8>> = match cfg.spoof {
        Spoof::LastOctet | Spoof::V4 => abusive
            .iter()
            .map(|&s| frame(IpAddr::V4(s), bed.abuse_rx.addr.port()))
            .collect(),
        // The template the generator gives random /64s: first 64 bits zero.
        Spoof::V6Prefix => vec![frame(
            IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0x7467, 0, 0, 1)),
            bed.abuse6_rx.addr.port(),
        )],
    };

    let installed = bed.install_limits(
        system,
        cfg.flood_rate,
        cfg.flood_burst,
        cfg.aggregate,
        cfg.new_sources,
    )?;
    // Threaded NAPI for frames (the receiver gets a CPU of its own); inline
    // softirq on the sender's CPU for skbs (one wake-up per packet across
    // CPUs would cost more than the receive work itself).
    let threaded = path == Path::XdpFrames;
    bed.set_threaded(threaded)?;
    // Sockets' readers away from the CPU whose time is measured per frame:
    // with the generator for frames, on the otherwise idle CPU for skbs.
    let reader_cpu = if threaded { cfg.gen_cpu } else { cfg.rx_cpu };
    bed.legit_rx.pin(reader_cpu)?;
    bed.abuse_rx.pin(reader_cpu)?;
    let napi = if threaded {
        Some(bed.napi_thread(cfg.rx_cpu)?)
    } else {
        None
    };
    for rx in [&bed.legit_rx, &bed.abuse_rx, &bed.legit6_rx, &bed.abuse6_rx] {
        rx.pin(reader_cpu)?;
        let _ = rx.settle_and_take(Duration::ZERO, Duration::ZERO);
    }
    let packets0 = bed.veth_stat("rx_queue_0_xdp_packets")?;
    let xdp_drops0 = bed.veth_stat("rx_queue_0_xdp_drops")?;
    let rcvbuf0 = udp_rcvbuf_errors();
    let stat0 = proc_stat()?;
    let napi0 = napi.map(schedstat_ns).transpose()?.unwrap_or(0);

    let gen_cpu = cfg.gen_cpu;
    let duration = Duration::from_secs_f64(cfg.flood_secs);
    let max_packets = cfg.flood_max_packets;
    let legit_rate = cfg.legit_rate;
    let (offered, legit_sent, wall, gen_cpu_ns) = match path {
        Path::Skbs => {
            let peer = bed.veth.peer.clone();
            let sent = bed
                .ns
                .run(move || -> Result<Sent> {
                    pin_to_cpu(gen_cpu)?;
                    boost(0)?;
                    let socket = PacketSocket::open(&peer)?;
                    generator::flood(
                        &socket,
                        &Flood {
                            abusive: &abusive_frames,
                            legit: &legit_frames,
                            legit_rate,
                            duration,
                            max_packets,
                            stop: &STOP,
                        },
                    )
                })
                .join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))???;
            (
                sent.abusive,
                sent.legit,
                sent.wall,
                sent.thread_cpu.as_nanos() as u64,
            )
        }
        Path::XdpFrames => {
            let peer = bed.veth.peer.clone();
            // One template; the program randomises its source (cfg.spoof).
            let template = abusive_frames[0].clone();
            let (spoof, lead) = (cfg.spoof, cfg.legit_lead);
            let peer_for_legit = peer.clone();
            // The legitimate sources first: established before the flood.
            let legit_sender = bed.ns.run(move || -> Result<Vec<u64>> {
                pin_to_cpu(gen_cpu)?;
                boost(0)?;
                let socket = PacketSocket::open(&peer_for_legit)?;
                generator::paced(&socket, &legit_frames, legit_rate, lead + duration, &STOP)
            });
            let blaster = bed.ns.run(move || -> Result<generator::Blasted> {
                pin_to_cpu(gen_cpu)?;
                boost(0)?;
                let redirector = generator::Redirector::load(&peer, spoof)?;
                std::thread::sleep(lead);
                generator::blast(&redirector, &template, duration, max_packets, &STOP)
            });
            let blasted = blaster
                .join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))???;
            eprintln!(
                "    generator: {} frames in {} calls, {:.2}s wall ({:.2}s in calls), {:.2}s thread CPU, kernel {:.0} ns/frame",
                blasted.frames,
                blasted.calls,
                blasted.wall.as_secs_f64(),
                blasted.call_ns as f64 / 1e9,
                blasted.thread_cpu.as_secs_f64(),
                blasted.kernel_ns as f64 / blasted.frames.max(1) as f64
            );
            let legit_sent = legit_sender
                .join()
                .map_err(|_| anyhow::anyhow!("legitimate sender panicked"))???;
            (
                blasted.frames,
                legit_sent,
                blasted.wall,
                blasted.thread_cpu.as_nanos() as u64,
            )
        }
    };

    // The ring drains within microseconds; then let the sockets settle.
    std::thread::sleep(Duration::from_millis(50));
    let napi1 = napi.map(schedstat_ns).transpose()?.unwrap_or(0);
    let stat1 = proc_stat()?;
    let processed = bed.veth_stat("rx_queue_0_xdp_packets")? - packets0;
    let mut legit_counts = bed
        .legit_rx
        .settle_and_take(Duration::from_millis(150), Duration::from_secs(3));
    legit_counts.extend(
        bed.legit6_rx
            .settle_and_take(Duration::from_millis(150), Duration::from_secs(3)),
    );
    let mut abuse_counts = bed
        .abuse_rx
        .settle_and_take(Duration::from_millis(150), Duration::from_secs(5));
    for (a, n) in bed
        .abuse6_rx
        .settle_and_take(Duration::from_millis(150), Duration::from_secs(5))
    {
        *abuse_counts.entry(a).or_insert(0) += n;
    }
    let tollgate = match &installed {
        Installed::Xdp {
            maps: Some(maps), ..
        } => Some(TollgateStats::read(maps, &legit)?),
        _ => None,
    };
    let dropped = match system {
        System::Floor | System::FloorRead => bed.veth_stat("rx_queue_0_xdp_drops")? - xdp_drops0,
        _ => installed.dropped()?,
    };
    drop(installed);
    let tick_ns = 1e9 / user_hz();
    let gen_softirq_ns = (stat1[cfg.gen_cpu].1 - stat0[cfg.gen_cpu].1) as f64 * tick_ns;
    let total_cpu_ns = gen_cpu_ns as f64 + (napi1 - napi0) as f64;
    let (rx_cpu_ns, gen_cpu_ns) = if threaded {
        ((napi1 - napi0) as f64, gen_cpu_ns as f64)
    } else {
        (
            gen_softirq_ns,
            (gen_cpu_ns as f64 - gen_softirq_ns).max(0.0),
        )
    };
    let run = FloodRun {
        system,
        path,
        offered,
        legit_sent,
        processed,
        dropped,
        wall,
        gen_cpu_ns,
        rx_cpu_ns,
        total_cpu_ns,
        rx_cpu_stat_ns: (stat1[cfg.rx_cpu].0 - stat0[cfg.rx_cpu].0) as f64 * tick_ns,
        gen_cpu_softirq_ns: gen_softirq_ns,
        legit_received: legit
            .iter()
            .map(|a| legit_counts.get(a).copied().unwrap_or(0))
            .collect(),
        abusive_admitted: abuse_counts
            .iter()
            .filter(|(a, _)| !legit.contains(a))
            .map(|(_, n)| n)
            .sum(),
        rcvbuf_errors: udp_rcvbuf_errors() - rcvbuf0,
        tollgate,
    };
    if let Some(t) = &run.tollgate {
        eprintln!("    tollgate: {t:?}");
    }
    eprintln!(
        "  {:?} over {:?}: offered {} in {:.2}s, processed {}, dropped {}, rx {:.1} ns/pkt ({:.0}% busy; stat {:.1}), gen {:.1} ns/pkt, gen-CPU softirq {:.1} ns/pkt, legit {:?}/{:?}, abusive admitted {}, rcvbuf errors {}",
        system,
        path,
        run.offered,
        run.wall.as_secs_f64(),
        run.processed,
        run.dropped,
        run.rx_ns_per_packet(),
        run.rx_busy() * 100.0,
        run.rx_cpu_stat_ns / run.processed.max(1) as f64,
        run.gen_ns_per_packet(),
        run.gen_cpu_softirq_ns / run.processed.max(1) as f64,
        run.legit_received,
        run.legit_sent,
        run.abusive_admitted,
        run.rcvbuf_errors,
    );
    Ok(run)
}

/// One accuracy run: a single paced source at `overload` × the limit.
#[derive(Clone, Copy, Debug)]
pub struct AccuracyRun {
    pub sent: u64,
    pub admitted: u64,
    pub expected: f64,
}

impl AccuracyRun {
    pub fn error(&self) -> f64 {
        (self.admitted as f64 - self.expected) / self.expected
    }
}

pub fn accuracy_run(bed: &Bed, cfg: &Config, system: System, overload: u64) -> Result<AccuracyRun> {
    check_stop()?;
    let installed = bed.install(system, cfg.acc_rate, cfg.acc_burst)?;
    let _ = bed.abuse_rx.settle_and_take(Duration::ZERO, Duration::ZERO);
    let (peer_ip, gen_cpu) = (bed.veth.peer_ip, cfg.gen_cpu);
    let dst = bed.abuse_rx.addr;
    let rate = cfg.acc_rate * overload;
    let secs = cfg.acc_secs;
    let sent = bed
        .ns
        .run(move || -> Result<crate::traffic::Sent> {
            pin_to_cpu(gen_cpu)?;
            boost(0)?;
            let socket = UdpSocket::bind((peer_ip, 0))?;
            send_udp_paced(&socket, dst, rate, Duration::from_secs(secs))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))???;
    let counts = bed
        .abuse_rx
        .settle_and_take(Duration::from_millis(200), Duration::from_secs(3));
    drop(installed);
    let admitted = counts.get(&IpAddr::V4(peer_ip)).copied().unwrap_or(0);
    let expected = cfg.acc_rate as f64 * sent.span.as_secs_f64() + cfg.acc_burst as f64;
    let run = AccuracyRun {
        sent: sent.packets,
        admitted,
        expected,
    };
    eprintln!(
        "  {system:?} at {overload}x: sent {} over {:.3}s, admitted {admitted}, expected {expected:.0} ({:+.2}%)",
        sent.packets,
        sent.span.as_secs_f64(),
        run.error() * 100.0
    );
    Ok(run)
}

/// (median, min, max).
pub fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (median, xs[0], xs[n - 1])
}

/// `CPU model, kernel, vCPUs` for the header line.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let vcpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = sh(&["uname", "-r"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{model}, {vcpus} vCPUs, Linux {kernel}")
}

/// The whole `flood` benchmark: prints markdown tables to stdout.
pub fn run(cfg: &Config) -> Result<()> {
    install_signal_handlers();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    ensure!(
        cpus > cfg.gen_cpu.max(cfg.rx_cpu) && cfg.gen_cpu != cfg.rx_cpu,
        "the flood bench needs two CPUs (generator and receiver)"
    );
    let started = Instant::now();
    let load_before = loadavg();
    let bed = Bed::new(cfg)?;
    let nft_hook = bed.nft_hook.describe();
    eprintln!(
        "bed: {} <-> {} (netns {}), {}, nft meter at {nft_hook}",
        bed.veth.host,
        bed.veth.peer,
        bed.ns.name,
        iptables_version()
    );

    // Flood: systems interleaved within each repetition, so drift and
    // background load spread evenly over all of them.
    let mut flood: HashMap<(Path, &'static str), Vec<FloodRun>> = HashMap::new();
    for &(path, reps) in &cfg.paths {
        for rep in 0..reps {
            eprintln!("flood over {path:?}, repetition {}/{reps}", rep + 1);
            for &system in &cfg.systems {
                let run = flood_run(&bed, cfg, system, path)?;
                flood.entry((path, key(system))).or_default().push(run);
            }
        }
    }
    let mut accuracy: HashMap<(&'static str, u64), Vec<AccuracyRun>> = HashMap::new();
    for rep in 0..if cfg.accuracy { cfg.acc_reps } else { 0 } {
        eprintln!("accuracy repetition {}/{}", rep + 1, cfg.acc_reps);
        for system in System::LIMITERS {
            for overload in [2, 10] {
                let run = accuracy_run(&bed, cfg, system, overload)?;
                accuracy
                    .entry((key(system), overload))
                    .or_default()
                    .push(run);
            }
        }
    }
    let elapsed = started.elapsed();
    print_report(cfg, &bed, &flood, &accuracy, elapsed, &load_before);
    Ok(())
}

/// `cargo xtask bench flood --spoofed`: [`Config::spoofed`] for random IPv4
/// sources, then random IPv6 /64s, systems interleaved in each repetition;
/// prints one Markdown table per family.
pub fn run_spoofed(reps: usize) -> Result<()> {
    install_signal_handlers();
    ensure!((1..=20).contains(&reps), "1..=20 repetitions");
    // Development override: `TOLLGATE_FLOOD_SPOOF=v4` or `v6` runs one flood.
    let only = std::env::var("TOLLGATE_FLOOD_SPOOF").unwrap_or_default();
    for spoof in [Spoof::V4, Spoof::V6Prefix] {
        match (only.as_str(), spoof) {
            ("v4", Spoof::V6Prefix) | ("v6", Spoof::V4) => continue,
            _ => {}
        }
        let mut cfg = Config::spoofed(spoof);
        cfg.paths = vec![(Path::XdpFrames, reps)];
        // Development override: `TOLLGATE_FLOOD_SYSTEMS=floor,tollgate`
        // (the floor stays first: every ratio is against it).
        if let Some(want) = systems_from_env()? {
            cfg.systems
                .retain(|s| *s == System::Floor || want.contains(s));
        }
        let bed = Bed::new(&cfg)?;
        let mut runs: Vec<(System, Vec<FloodRun>)> =
            cfg.systems.iter().map(|s| (*s, Vec::new())).collect();
        for rep in 0..reps {
            eprintln!("{spoof:?} flood, repetition {}/{reps}", rep + 1);
            for (system, out) in runs.iter_mut() {
                out.push(flood_run(&bed, &cfg, *system, Path::XdpFrames)?);
            }
        }
        let floor = median_of(&runs[0].1, FloodRun::rx_ns_per_packet).0;
        let tollgate = runs
            .iter()
            .find(|(s, _)| *s == System::Tollgate)
            .map(|(_, r)| median_of(r, FloodRun::rx_ns_per_packet).0)
            .unwrap_or(f64::NAN);
        println!(
            "\n### {} flood ({} s per run after a {} s head start of the legitimate clients, {reps} runs, median (min–max))\n",
            match spoof {
                Spoof::V6Prefix => "Random IPv6 /64",
                _ => "Random 32-bit IPv4 source",
            },
            cfg.flood_secs,
            cfg.legit_lead.as_secs_f64()
        );
        println!(
            "| receiver | receive CPU ns/frame | × floor | tollgate cheaper by | legitimate received / sent | flood admitted/s | inserts/s | established evicted |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (system, r) in &runs {
            let (m, lo, hi) = median_of(r, FloodRun::rx_ns_per_packet);
            let recv: u64 = r.iter().flat_map(|x| x.legit_received.iter()).sum();
            let sent: u64 = r.iter().flat_map(|x| x.legit_sent.iter()).sum();
            let admitted = median_of(r, |x| x.abusive_admitted as f64 / x.wall.as_secs_f64()).0;
            let (inserts, evicted) = match r[0].tollgate {
                Some(_) => (
                    format!(
                        "{:.0}",
                        median_of(r, |x| {
                            let t = x.tollgate.as_ref().expect("tollgate run");
                            (t.tracked.0 + t.tracked.1).saturating_sub(x.legit_sent.len()) as f64
                                / (x.wall.as_secs_f64() + cfg.legit_lead.as_secs_f64())
                        })
                        .0
                    ),
                    r.iter()
                        .map(|x| x.tollgate.as_ref().expect("tollgate run").legit_evicted)
                        .sum::<usize>()
                        .to_string(),
                ),
                None => ("not measured".into(), "not measured".into()),
            };
            let legit = match system {
                System::Floor | System::FloorRead => "— (drops all)".to_string(),
                _ => format!("{recv} / {sent}"),
            };
            let cheaper = match system {
                System::NftMeter | System::Hashlimit => format!("{:.1}x", m / tollgate),
                _ => "".into(),
            };
            println!(
                "| {} | {m:.0} ({lo:.0}–{hi:.0}) | {:.2}x | {cheaper} | {legit} | {admitted:.0} | {inserts} | {evicted} |",
                system.label(bed.nft_hook.describe()),
                m / floor,
            );
        }
        println!(
            "\nPolicy: {}/s burst {} per source, {}/s burst {} for all sources together in every limiter, tollgate's new-source budget {}/s burst {}; {} legitimate IPv4 and {} IPv6 sources at {}/s each. Machine: {}",
            cfg.flood_rate,
            cfg.flood_burst,
            cfg.aggregate.map_or(0, |a| a.0),
            cfg.aggregate.map_or(0, |a| a.1),
            cfg.new_sources.map_or(0, |a| a.0),
            cfg.new_sources.map_or(0, |a| a.1),
            cfg.legit_sources,
            cfg.legit_v6_sources(),
            cfg.legit_rate,
            machine()
        );
    }
    Ok(())
}

/// `TOLLGATE_FLOOD_SYSTEMS=floor,tollgate,...`, if set: an unknown name is
/// an error naming it.
fn systems_from_env() -> Result<Option<Vec<System>>> {
    let Some(v) = std::env::var("TOLLGATE_FLOOD_SYSTEMS")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    v.split(',')
        .map(|k| {
            System::FLOOD
                .into_iter()
                .find(|s| key(*s) == k.trim())
                .with_context(|| format!("TOLLGATE_FLOOD_SYSTEMS: unknown system {k:?}"))
        })
        .collect::<Result<_>>()
        .map(Some)
}

fn key(s: System) -> &'static str {
    match s {
        System::Floor => "floor",
        System::FloorRead => "floor-read",
        System::Tollgate => "tollgate",
        System::NftMeter => "nft",
        System::Hashlimit => "hashlimit",
        System::NftDropAll => "nft-drop-all",
    }
}

fn median_of(runs: &[FloodRun], f: impl Fn(&FloodRun) -> f64) -> (f64, f64, f64) {
    spread(runs.iter().map(f).collect())
}

/// Receive CPU ns per frame for each of `runs`. Frames: the NAPI thread's
/// exact CPU time. Skbs: the floor's tick-sampled softirq share (median) plus
/// this run's exact total CPU per frame over the floor's (median): the
/// generator's own share is the same in every run, so it cancels out.
fn receive_ns(
    path: Path,
    flood: &HashMap<(Path, &'static str), Vec<FloodRun>>,
    runs: &[FloodRun],
) -> Vec<f64> {
    let floor = flood.get(&(path, "floor"));
    match (path, floor) {
        (Path::Skbs, Some(floor)) => {
            let soft = median_of(floor, FloodRun::rx_ns_per_packet).0;
            let total = median_of(floor, FloodRun::total_ns_per_packet).0;
            runs.iter()
                .map(|r| soft + r.total_ns_per_packet() - total)
                .collect()
        }
        _ => runs.iter().map(FloodRun::rx_ns_per_packet).collect(),
    }
}

fn print_flood_table(
    cfg: &Config,
    hook: &str,
    path: Path,
    flood: &HashMap<(Path, &'static str), Vec<FloodRun>>,
) {
    let get = |k: &'static str| flood.get(&(path, k));
    let rx_runs = |k: &'static str| get(k).map(|runs| receive_ns(path, flood, runs));
    let rx = |k: &'static str| rx_runs(k).map(|v| spread(v).0);
    let floor_rx = rx("floor");
    println!(
        "| receiving side | receive CPU ns/frame | × floor | over floor | dropped, Mpps | receive CPU busy | capacity at that cost, Mpps/core | legitimate received / sent | abusive admitted per source (rate·t + burst) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &system in &cfg.systems {
        let Some(runs) = get(key(system)) else {
            continue;
        };
        let (r, rmin, rmax) = spread(receive_ns(path, flood, runs));
        let (d, dmin, dmax) = median_of(runs, |r| r.dropped_pps() / 1e6);
        let (busy, _, _) = median_of(runs, |r| r.rx_busy() * 100.0);
        let drops_all = matches!(
            system,
            System::Floor | System::FloorRead | System::NftDropAll
        );
        let legit_recv: u64 = runs
            .iter()
            .map(|r| r.legit_received.iter().sum::<u64>())
            .sum();
        let legit_sent: u64 = runs.iter().map(|r| r.legit_sent.iter().sum::<u64>()).sum();
        let intact = runs.iter().filter(|r| r.legit_intact()).count();
        let legit = if drops_all {
            format!("{legit_recv} / {legit_sent} (drops all)")
        } else {
            format!(
                "{legit_recv} / {legit_sent} ({intact} of {} runs lossless)",
                runs.len()
            )
        };
        let admitted = if drops_all {
            "—".to_string()
        } else {
            let (a, amin, amax) = median_of(runs, |r| {
                r.abusive_admitted as f64 / cfg.abusive_sources as f64
            });
            let (x, _, _) = median_of(runs, |r| {
                cfg.flood_rate as f64 * r.wall.as_secs_f64() + cfg.flood_burst as f64
            });
            format!("{a:.1} ({amin:.1}–{amax:.1}) ({x:.1})")
        };
        let (ratio, over) = match floor_rx {
            Some(f) => (format!("{:.2}x", r / f), format!("{:+.0} ns", r - f)),
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {} | {r:.0} ({rmin:.0}–{rmax:.0}) | {ratio} | {over} | {d:.2} ({dmin:.2}–{dmax:.2}) | {busy:.0}% | {:.2} | {legit} | {admitted} |",
            system.label(hook),
            1e3 / r,
        );
    }
    println!();
    if let (Some(tg), Some(floor)) = (rx("tollgate"), floor_rx) {
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        println!(
            "- tollgate: {:.2}x the floor per frame (target ≤ 1.5x: {}).",
            tg / floor,
            verdict(tg / floor <= 1.5)
        );
        if let Some(read) = rx("floor-read") {
            println!(
                "- tollgate: {:.2}x the reference that only reads the source and drops ({:+.0} ns over it; reading the packet costs {:+.0} ns over the floor).",
                tg / read,
                tg - read,
                read - floor
            );
        }
        for (k, name) in [
            ("nft", "nftables meter"),
            ("hashlimit", "iptables hashlimit"),
        ] {
            if let Some(other) = rx(k) {
                println!(
                    "- {name}: {:.2}x tollgate's receive CPU per frame (target ≥ 5x: {}); {:.1}x counting only the cost over the floor.",
                    other / tg,
                    verdict(other / tg >= 5.0),
                    (other - floor) / (tg - floor).max(1.0)
                );
            }
        }
    }
    let cross: Vec<String> = cfg
        .systems
        .iter()
        .filter_map(|&s| {
            let runs = get(key(s))?;
            let per =
                |f: fn(&FloodRun) -> f64| median_of(runs, |r| f(r) / r.processed.max(1) as f64).0;
            let total = median_of(runs, FloodRun::total_ns_per_packet).0;
            let offered = median_of(runs, |r| r.offered as f64 / r.wall.as_secs_f64() / 1e6).0;
            Some(match path {
                Path::XdpFrames => format!(
                    "{} {:.0} / {:.0} / {total:.0} / {offered:.2}",
                    key(s),
                    per(|r| r.rx_cpu_stat_ns),
                    per(|r| r.gen_cpu_softirq_ns),
                ),
                Path::Skbs => format!(
                    "{} {:.0} / {total:.0} / {offered:.2}",
                    key(s),
                    per(|r| r.gen_cpu_softirq_ns),
                ),
            })
        })
        .collect();
    match path {
        Path::XdpFrames => println!(
            "- Cross-checks, medians: receive CPU busy per /proc/stat, ns/frame (tick-sampled; includes anything else that ran on that CPU) / softirq on the generator's CPU, ns/frame (receive work escaping the NAPI thread would show here) / generator + receive CPU, ns/frame (exact) / offered Mpps — {}.",
            cross.join("; ")
        ),
        Path::Skbs => println!(
            "- Cross-checks, medians: each system's own softirq share on the sending CPU, ns/frame (tick-sampled, includes any other softirq there) / generator + receive CPU, ns/frame (exact) / offered Mpps — {}.",
            cross.join("; ")
        ),
    }
}

fn print_report(
    cfg: &Config,
    bed: &Bed,
    flood: &HashMap<(Path, &'static str), Vec<FloodRun>>,
    accuracy: &HashMap<(&'static str, u64), Vec<AccuracyRun>>,
    elapsed: Duration,
    load_before: &str,
) {
    let hook = bed.nft_hook.describe();
    println!("## Flood: tollgate vs nftables meter vs iptables hashlimit, against the floor\n");
    println!("Machine: {}", machine());
    println!(
        "Tools: {}; {}",
        iptables_version(),
        sh(&["nft", "-v"]).unwrap_or_default().trim()
    );
    println!("Command: `cargo xtask bench flood` (as root)");
    println!(
        "Load average before / after: {} / {}\n",
        load_before,
        loadavg()
    );
    println!(
        "{} spoofed sources over their limit and {} legitimate sources at {}/s each (paced, AF_PACKET); per-source limit {}/s, burst {}; 60-byte UDP frames. Generator in a namespace on CPU {}; receive CPU {} (threaded NAPI runs; the UDP sockets' readers run on whichever CPU is not being measured). Host veth with GRO on and the peer's TSO off, so every system receives through veth's NAPI ring; per-frame costs are per frame taken off that ring. Our threads run at nice -20. {} s per run, the receiving sides interleaved within each repetition; median (min–max).",
        cfg.abusive_sources,
        cfg.legit_sources,
        cfg.legit_rate,
        cfg.flood_rate,
        cfg.flood_burst,
        cfg.gen_cpu,
        cfg.rx_cpu,
        cfg.flood_secs,
    );
    for &(path, reps) in &cfg.paths {
        println!("\n### Flood as {}, {reps} repetitions\n", path.describe());
        println!("Method: {}.\n", path.method());
        print_flood_table(cfg, hook, path, flood);
    }
    let rcvbuf: u64 = flood.values().flatten().map(|r| r.rcvbuf_errors).sum();
    println!("\nUDP receive-buffer overflows over all flood runs: {rcvbuf}.");

    if cfg.accuracy {
        println!(
            "\n## Accuracy: one paced source at 2x and 10x its limit ({}/s, burst {})\n",
            cfg.acc_rate, cfg.acc_burst
        );
        println!(
            "Admitted = datagrams reaching a UDP socket on the host side; expected = rate × (first-to-last send span) + burst. {} runs of {} s per cell; median (min–max) of (admitted − expected) ÷ expected.\n",
            cfg.acc_reps, cfg.acc_secs
        );
        println!(
            "| limiter | 2x: admitted / expected | 2x: error | 10x: admitted / expected | 10x: error |"
        );
        println!("|---|---|---|---|---|");
        for system in System::LIMITERS {
            let mut cells = Vec::new();
            for overload in [2u64, 10] {
                let Some(runs) = accuracy.get(&(key(system), overload)) else {
                    continue;
                };
                let (e, emin, emax) = spread(runs.iter().map(|r| r.error() * 100.0).collect());
                let (a, _, _) = spread(runs.iter().map(|r| r.admitted as f64).collect());
                let (x, _, _) = spread(runs.iter().map(|r| r.expected).collect());
                cells.push(format!("{a:.0} / {x:.0}"));
                cells.push(format!("{e:+.2}% ({emin:+.2}% to {emax:+.2}%)"));
            }
            println!("| {} | {} |", system.label(hook), cells.join(" | "));
        }
    }
    println!("\nTotal bench time {:.0} s.", elapsed.as_secs_f64());
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nft_counters() {
        let out = "table netdev tg-x {\n\tchain ingress {\n\t\tmeta protocol ip update @src { ip saddr limit rate over 100/second burst 10 packets } counter packets 1234 bytes 56 drop\n\t}\n}\n";
        assert_eq!(nft_counter(out), Some(1234));
        assert_eq!(nft_counter("table ip x {}"), None);
    }

    #[test]
    fn parses_iptables_counters() {
        let out = "-P PREROUTING ACCEPT -c 0 0\n-A PREROUTING -i tg-h1 -m hashlimit --hashlimit-above 100/sec --hashlimit-burst 10 --hashlimit-mode srcip --hashlimit-name tg-1-0 -c 77 4620 -j DROP\n";
        assert_eq!(iptables_counter(out, "tg-1-0"), Some(77));
        assert_eq!(iptables_counter(out, "tg-1-1"), None);
    }

    #[test]
    fn spread_is_median_min_max() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(spread(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }
}
