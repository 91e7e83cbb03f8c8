//! Packet fuzzing through BPF_PROG_TEST_RUN, checked against the userspace
//! reference model (`tollgate_common::model`).
//!
//! Frames come from a corpus of valid ones built with [`crate::packet`] (VLAN
//! and QinQ tags, IPv4 options and fragments, IPv6 extension chains, TCP with
//! options and HTTP payloads, UDP, ICMP, non-IP) plus mutations: bit flips,
//! interesting byte values, truncation, insertion and deletion, VLAN and
//! extension-header stacking, header field rewrites, splices, and sources drawn
//! from a small pool so buckets fill and drops happen.
//!
//! The run is cut into epochs. Each epoch draws a random policy (tiers with
//! any of the four limits and an aggregate, shadow mode, IPv6 prefixes, rules
//! of every kind), writes it to the program, forgets all bucket state on both
//! sides, and runs up to a few thousand frames. For every frame the XDP action
//! must be the model's, never XDP_ABORTED, and the counter slot the model
//! counted it in must have moved by exactly one packet and the frame's length.
//! At the end of an epoch every counter, the set of tracked sources, the units
//! held in every source bucket and every aggregate must agree too.
//!
//! Time: the model's clock stands still. The limits used here refill so
//! slowly (one packet an hour, one byte per 2^31 ns, one connection or request
//! per 40 s) that no bucket gains a unit within an epoch, which takes well under
//! a second (checked, see [`MAX_EPOCH`]); capacities are whole numbers of
//! intervals. Within an epoch the kernel's verdicts then cannot depend on when
//! each frame ran, and the comparison is exact.

use std::{
    collections::HashSet,
    env,
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use ipnet::IpNet;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use tollgate::datapath::kernel::MapSizes;
use tollgate_common::{
    AGGREGATE_SLOTS, AdmittedDelta, Counter, Limit, LimitKind, MAX_HTTP_PORTS, MAX_TIERS,
    RULE_ALLOW, RULE_DENY, RULE_TIER, RuleValue, SETTINGS_COUNT_REQUESTS, Settings, TIER_ACTIVE,
    TIER_COUNT_ADMITTED, TIER_SHADOW, TierConfig, VERDICT_COUNT, Verdict, aggregate_slot,
    gcra::TICK_SHIFT,
    model::{Judgement, Model, Network, Policy, Route, SourceKey},
    new_sources_slot, parse,
    route::{MAX_ROUTES, ROUTE_HOST, ROUTE_SHADOW, RouteValue, host_tag, route_key_for_host},
    untracked_slot,
};

use crate::{
    packet::{Ext, Packet, TCP_ACK, TCP_PSH, TCP_SYN},
    program::{SECOND, TestProgram, XDP_ABORTED, XDP_DROP, XDP_PASS},
};

/// Environment variable with the seed to replay (decimal or 0x-hex).
pub const SEED_ENV: &str = "TOLLGATE_FUZZ_SEED";
/// Environment variable with the number of frames to run.
pub const PACKETS_ENV: &str = "TOLLGATE_FUZZ_PACKETS";

pub const HOUR: u64 = 3600 * SECOND;
/// Per-byte interval of byte limits: the longest one that is not clamped
/// (`MAX_BYTE_INTERVAL_FP`), 2.1 s per byte.
pub const BYTE_INTERVAL_NS: u64 = 1 << 31;
/// Per-unit interval of connection and request limits. With bursts of at most
/// [`MAX_L7_BURST`] the capacity stays below the 2^31-tick ceiling.
pub const L7_INTERVAL_NS: u64 = 40 * SECOND;
pub const MAX_L7_BURST: u64 = 40;
/// Longest wall time an epoch may take for its verdicts to be independent of
/// time: under the shortest interval above.
pub const MAX_EPOCH: Duration = Duration::from_millis(1000);
/// Longest epoch, in frames.
pub const MAX_EPOCH_FRAMES: usize = 4096;
/// Largest frame run (test_run takes up to about a page).
pub const MAX_FRAME: usize = 1514;
/// The model's fixed clock.
pub const MODEL_NOW: u64 = 1 << 42;
/// Disagreements reported before the run stops.
pub const MAX_DISAGREEMENTS: usize = 10;

/// Tiers the random policies use (others stay unconfigured).
pub const TIERS: [u32; 5] = [0, 1, 2, 7, 63];

pub const V4_POOL: [Ipv4Addr; 12] = [
    Ipv4Addr::new(203, 0, 113, 1),
    Ipv4Addr::new(203, 0, 113, 2),
    Ipv4Addr::new(203, 0, 113, 3),
    Ipv4Addr::new(203, 0, 113, 200),
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(198, 51, 100, 77),
    Ipv4Addr::new(100, 64, 0, 1),
    Ipv4Addr::new(100, 64, 0, 2),
    Ipv4Addr::new(100, 64, 1, 1),
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(10, 255, 0, 9),
    Ipv4Addr::new(192, 0, 2, 1),
];

/// Several addresses per /64 and per /48, so prefix grouping matters.
pub const V6_POOL: [Ipv6Addr; 9] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0xa, 1, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0xa, 1, 0, 0, 0, 2),
    Ipv6Addr::new(0x2001, 0xdb8, 0xa, 1, 0x8000, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0xa, 2, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0xff00, 0, 0, 0, 7),
    Ipv6Addr::new(0x2001, 0xdb8, 0xb, 1, 0, 0, 0, 5),
    Ipv6Addr::new(0x2001, 0xdb8, 0xb, 2, 0, 0, 0, 5),
    Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
];

const METHODS: [&str; 9] = [
    "GET", "PUT", "POST", "HEAD", "PATCH", "TRACE", "DELETE", "OPTIONS", "CONNECT",
];

const NEAR_MISSES: [&[u8]; 8] = [
    b"GETX / HTTP/1.1\r\n",
    b"get / HTTP/1.1\r\n",
    b"POSTED / HTTP/1.1",
    b"HTTP/1.1 200 OK\r\n",
    b"PRI * HTTP/2.0\r\n",
    b"OPTIONS\t/ HTTP/1.1",
    b"CONNECTX host:443",
    b"DELETE/x HTTP/1.1",
];

const INTERESTING: [u8; 24] = [
    0x00, 0xff, 0x81, 0x86, 0xdd, 0x2c, 0x88, 0xa8, 0x08, 0x06, 0x11, 0x3c, 0x2b, 0x02, 0x12, 0x45,
    0x46, 0x4f, 0x60, 0x50, 0xf0, 0x7f, 0x80, 0x01,
];

/// Run parameters.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub packets: u64,
    pub seed: u64,
}

impl Config {
    /// From [`PACKETS_ENV`] (else `default_packets`) and [`SEED_ENV`] (else random).
    pub fn from_env(default_packets: u64) -> Result<Config> {
        let packets = match env::var(PACKETS_ENV) {
            Ok(v) => v
                .trim()
                .replace('_', "")
                .parse()
                .with_context(|| format!("{PACKETS_ENV}={v}"))?,
            Err(_) => default_packets,
        };
        let seed = match env::var(SEED_ENV) {
            Ok(v) => parse_seed(&v).with_context(|| format!("{SEED_ENV}={v}"))?,
            Err(_) => rand::random(),
        };
        Ok(Config { packets, seed })
    }
}

/// A seed in decimal or 0x-hex.
pub fn parse_seed(s: &str) -> Result<u64> {
    let s = s.trim();
    Ok(match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16)?,
        None => s.parse()?,
    })
}

// ---------------------------------------------------------------------------
// Policies

/// A packets limit: one an hour, `burst` at once.
pub fn packets_limit(burst: u64) -> Limit {
    Limit::per_period(1, HOUR, burst).expect("valid limit")
}

/// A bytes limit: one byte per [`BYTE_INTERVAL_NS`], `burst` bytes at once.
pub fn bytes_limit(burst: u64) -> Limit {
    Limit::per_period(1, BYTE_INTERVAL_NS, burst).expect("valid limit")
}

/// A connections or requests limit: one per [`L7_INTERVAL_NS`].
pub fn l7_limit(burst: u64) -> Limit {
    assert!(burst <= MAX_L7_BURST);
    Limit::per_period(1, L7_INTERVAL_NS, burst).expect("valid limit")
}

/// Whether `tier`'s verdicts are exact against a frozen clock for epochs
/// shorter than [`MAX_EPOCH`]: every interval longer than it and every capacity
/// a whole number of intervals (in the unit the kernel compares in).
pub fn time_independent(tier: &TierConfig) -> Result<()> {
    let epoch_ns = MAX_EPOCH.as_nanos() as u64;
    let ns = |l: &Limit, cost: u64| -> Result<()> {
        if l.is_unlimited() {
            return Ok(());
        }
        let inc = l.increment_ns(1);
        ensure!(inc > epoch_ns, "interval {inc} ns refills within an epoch");
        ensure!(
            l.capacity_ns.is_multiple_of(inc) && l.increment_ns(cost) == cost * inc,
            "{l:?}: capacity or cost not whole intervals"
        );
        Ok(())
    };
    let ticks = |l: &Limit| -> Result<()> {
        if l.is_unlimited() {
            return Ok(());
        }
        let inc = l.increment_ticks() as u64;
        ensure!(
            inc << TICK_SHIFT > epoch_ns,
            "{inc} ticks refill within an epoch"
        );
        ensure!(
            (l.capacity_ticks() as u64).is_multiple_of(inc) && l.capacity_ticks() as u64 >= inc,
            "{l:?}: capacity not whole intervals"
        );
        Ok(())
    };
    ns(&tier.limits[LimitKind::Packets as usize], 1)?;
    ns(&tier.limits[LimitKind::Bytes as usize], MAX_FRAME as u64)?;
    ticks(&tier.limits[LimitKind::Connections as usize])?;
    ticks(&tier.limits[LimitKind::Requests as usize])?;
    ns(&tier.aggregate, 1)?;
    ns(&tier.new_sources, 1)
}

/// A policy for the model plus the settings written next to it.
#[derive(Clone, Debug)]
pub struct FuzzPolicy {
    pub policy: Policy,
    /// Written as is except `flags`, which follow the rules.
    pub settings: Settings,
}

fn small(rng: &mut StdRng, max: u64) -> u64 {
    // Mostly small values, sometimes up to max.
    if rng.gen_bool(0.7) {
        rng.gen_range(1..=max.min(8))
    } else {
        rng.gen_range(1..=max)
    }
}

fn random_tier(rng: &mut StdRng) -> TierConfig {
    let mut limits = [Limit::UNLIMITED; 4];
    // Often a single limit, so the later ones get to reject too.
    let only = if rng.gen_bool(0.3) {
        Some(rng.gen_range(0..4))
    } else {
        None
    };
    let pick = |rng: &mut StdRng, i: usize| match only {
        Some(o) => o == i,
        None => rng.gen_bool(0.5),
    };
    if pick(rng, 0) {
        limits[LimitKind::Packets as usize] = packets_limit(small(rng, 300));
    }
    if pick(rng, 1) {
        limits[LimitKind::Bytes as usize] = bytes_limit(rng.gen_range(14..=20_000));
    }
    if pick(rng, 2) {
        limits[LimitKind::Connections as usize] = l7_limit(small(rng, MAX_L7_BURST));
    }
    if pick(rng, 3) {
        limits[LimitKind::Requests as usize] = l7_limit(small(rng, MAX_L7_BURST));
    }
    let aggregate = if rng.gen_bool(0.3) {
        packets_limit(rng.gen_range(1..=500))
    } else {
        Limit::UNLIMITED
    };
    // A new-source budget (admission control) in some tiers: the pools hold
    // 21 sources, so small budgets leave some untracked.
    let new_sources = if rng.gen_bool(0.35) {
        packets_limit(small(rng, 24))
    } else {
        Limit::UNLIMITED
    };
    let ipv6_prefix = if rng.gen_bool(0.2) {
        rng.gen_range(1..=64)
    } else {
        *[48, 64, 56, 32].choose(rng).expect("non-empty")
    };
    TierConfig {
        limits,
        aggregate,
        new_sources,
        ipv6_prefix,
        flags: TIER_ACTIVE
            | if rng.gen_bool(0.25) { TIER_SHADOW } else { 0 }
            | if rng.gen_bool(0.3) {
                TIER_COUNT_ADMITTED
            } else {
                0
            },
    }
}

/// A random policy over [`TIERS`], the address pools and sampling settings.
pub fn random_policy(rng: &mut StdRng) -> FuzzPolicy {
    let mut policy = Policy::new();
    for t in TIERS {
        if rng.gen_bool(0.85) {
            policy.tiers[t as usize] = random_tier(rng);
        }
    }
    policy.default_tier = *[0, 0, 1, 63].choose(rng).expect("non-empty");
    // Some epochs put the default tier under a spoofed flood's conditions: a
    // small new-source budget and a small aggregate, so that sources past
    // the budget also overflow the untracked ceiling (left to the draws
    // above, a whole run could miss it).
    if rng.gen_bool(0.1) {
        let mut tier = random_tier(rng);
        tier.aggregate = packets_limit(small(rng, 16));
        tier.new_sources = packets_limit(small(rng, 4));
        policy.tiers[policy.default_tier as usize] = tier;
    }
    if rng.gen_bool(0.6) {
        for _ in 0..rng.gen_range(1..=6) {
            let (network, prefix_len) = if rng.gen_bool(0.55) {
                let a = V4_POOL.choose(rng).expect("non-empty");
                let len = *[32, 32, 24, 16, 8, 0, rng.gen_range(0..=32)]
                    .choose(rng)
                    .expect("non-empty");
                (Network::V4(a.octets()), len)
            } else {
                let a = V6_POOL.choose(rng).expect("non-empty");
                let len = *[128, 64, 64, 48, 32, 0, rng.gen_range(0..=128)]
                    .choose(rng)
                    .expect("non-empty");
                (Network::V6(a.octets()), len)
            };
            let action = *[RULE_ALLOW, RULE_DENY, RULE_TIER, RULE_TIER]
                .choose(rng)
                .expect("non-empty");
            let tier = *TIERS.choose(rng).expect("non-empty");
            // Denies sometimes with an expiry long past or far ahead of
            // both clocks (the kernel's and the model's frozen one).
            let expires_ns = if action == RULE_DENY {
                *[0, 0, 1, u64::MAX].choose(rng).expect("non-empty")
            } else {
                0
            };
            policy.set_rule(
                network,
                prefix_len,
                RuleValue {
                    action,
                    tier,
                    expires_ns,
                },
            );
        }
    }
    let mut http_ports = [0u16; MAX_HTTP_PORTS];
    if rng.gen_bool(0.7) {
        http_ports[0] = 80;
        http_ports[3] = 8080;
    }
    policy.http_ports = http_ports.iter().copied().filter(|&p| p != 0).collect();
    if !policy.http_ports.is_empty() && rng.gen_bool(0.5) {
        policy.routes = random_routes(rng, &policy.http_ports);
        policy.split_head_cost = policy
            .routes
            .iter()
            .filter(|r| r.value.flags & ROUTE_SHADOW == 0)
            .map(|r| r.value.cost)
            .max()
            .unwrap_or(1)
            .max(1);
    }
    // As the daemon sets it: on when some tier limits requests (and at times
    // when none does, where it must change nothing).
    let limits_requests = policy.tiers.iter().any(TierConfig::limits_requests);
    let settings = Settings {
        default_tier: policy.default_tier,
        flags: if limits_requests || rng.gen_bool(0.3) {
            SETTINGS_COUNT_REQUESTS
        } else {
            0
        },
        http_ports,
        http_snap_len: rng.gen_range(1..=1024),
        http_sample_every: *[0, 1, 3].choose(rng).expect("non-empty"),
        http_budget: if rng.gen_bool(0.5) {
            Limit::UNLIMITED
        } else {
            Limit::per_period(1000, SECOND, 20).expect("valid limit")
        },
        verdict_sample_every: *[0, 1, 7].choose(rng).expect("non-empty"),
        split_head_cost: policy.split_head_cost,
        // `Maps::set_settings` writes this machine's tick.
        jiffy_ns: 0,
    };
    policy.count_requests = settings.flags & SETTINGS_COUNT_REQUESTS != 0;
    FuzzPolicy { policy, settings }
}

/// Route lines the generator's requests hit and miss ([`ROUTE_PATHS`]).
const ROUTE_LINES: [&str; 9] = [
    "GET /",
    "GET /a",
    "GET /api/v1",
    "POST /api",
    "POST /api/search",
    "PUT /p",
    "DELETE /a/b",
    "GET /api/v1/items/",
    "HEAD /",
];

/// Paths the generator's requests use, so that routes match often.
const ROUTE_PATHS: [&str; 8] = [
    "/",
    "/a",
    "/ab",
    "/api",
    "/api/search?q=1",
    "/api/v1/items/7",
    "/p",
    "/a/b/c",
];

/// Hosts of the routes of one host.
const ROUTE_HOSTS: [&str; 2] = ["api.example", "www.example"];

/// Host headers (and their absence) of the generator's requests.
const HOST_HEADERS: [&str; 8] = [
    "Host: x\r\n",
    "Host: api.example\r\n",
    "host:API.EXAMPLE:8080\r\n",
    "Host: www.example\r\n",
    "Accept: */*\r\nHost:\twww.example \r\n",
    "X-Host: api.example\r\n",
    "Host: \r\n",
    "",
];

/// Up to eight routes on the HTTP ports: lines, whole ports, costs, ceilings
/// (one an hour, bursts from 1: exact against the frozen clock), shadow.
fn random_routes(rng: &mut StdRng, ports: &[u16]) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for index in 0..rng.gen_range(1..=8u32) {
        let port = *ports.choose(rng).expect("non-empty");
        let line = if rng.gen_bool(0.15) {
            Vec::new()
        } else {
            ROUTE_LINES
                .choose(rng)
                .expect("non-empty")
                .as_bytes()
                .to_vec()
        };
        let host = if rng.gen_bool(0.3) {
            host_tag(ROUTE_HOSTS.choose(rng).expect("non-empty").as_bytes())
        } else {
            0
        };
        if routes
            .iter()
            .any(|r| r.port == port && r.host == host && r.line == line)
        {
            continue;
        }
        let value = RouteValue {
            // Sparse slots, some high, as the daemon may assign them.
            index: if rng.gen_bool(0.2) {
                MAX_ROUTES - 1 - index
            } else {
                index
            },
            cost: if rng.gen_bool(0.5) {
                1
            } else {
                rng.gen_range(1..=12)
            },
            ceiling: if rng.gen_bool(0.5) {
                Limit::per_period(1, HOUR, small(rng, 30)).expect("valid limit")
            } else {
                Limit::UNLIMITED
            },
            flags: if rng.gen_bool(0.2) { ROUTE_SHADOW } else { 0 }
                | if host != 0 { ROUTE_HOST } else { 0 },
            _reserved: 0,
        };
        routes.push(Route {
            port,
            host,
            line,
            value,
        });
    }
    routes
}

fn describe_limit(l: &Limit) -> String {
    if l.is_unlimited() {
        "-".into()
    } else {
        format!("burst {} per {} ns", l.burst(), l.increment_ns(1))
    }
}

/// The policy as a few readable lines.
pub fn describe(fp: &FuzzPolicy) -> String {
    let p = &fp.policy;
    let mut s = format!(
        "default tier {} (tiers not listed are unconfigured)\n",
        p.default_tier
    );
    for (i, t) in p.tiers.iter().enumerate() {
        if !t.is_active() {
            continue;
        }
        let _ = writeln!(
            s,
            "tier {i}{}: packets {}, bytes {}, connections {}, requests {}, aggregate {}, new sources {}, ipv6 /{}",
            if t.is_shadow() { " (shadow)" } else { "" },
            describe_limit(&t.limits[0]),
            describe_limit(&t.limits[1]),
            describe_limit(&t.limits[2]),
            describe_limit(&t.limits[3]),
            describe_limit(&t.aggregate),
            describe_limit(&t.new_sources),
            t.ipv6_prefix,
        );
    }
    for r in p.rules() {
        let action = match r.value.action {
            RULE_ALLOW => "allow",
            RULE_DENY => "deny",
            _ => "tier",
        };
        let _ = writeln!(
            s,
            "rule {} -> {action} (tier {}, expires {})",
            rule_net(r.network, r.prefix_len),
            r.value.tier,
            r.value.expires_ns
        );
    }
    for r in &p.routes {
        let _ = writeln!(
            s,
            "route {:?} on {} host tag {:#x} -> slot {} cost {} ceiling {}{}",
            String::from_utf8_lossy(&r.line),
            r.port,
            r.host,
            r.value.index,
            r.value.cost,
            describe_limit(&r.value.ceiling),
            if r.value.flags & ROUTE_SHADOW != 0 {
                " (shadow)"
            } else {
                ""
            }
        );
    }
    if !p.routes.is_empty() {
        let _ = writeln!(s, "split heads cost {}", p.split_head_cost);
    }
    let st = &fp.settings;
    let _ = write!(
        s,
        "sampling: verdict 1/{}, http 1/{} ports {:?} snap {} budget {}",
        st.verdict_sample_every,
        st.http_sample_every,
        st.http_ports,
        st.http_snap_len,
        describe_limit(&st.http_budget)
    );
    s
}

fn rule_net(network: Network, prefix_len: u32) -> IpNet {
    match network {
        Network::V4(a) => IpNet::new(IpAddr::from(a), prefix_len as u8),
        Network::V6(a) => IpNet::new(IpAddr::from(a), prefix_len as u8),
    }
    .expect("valid prefix")
    .trunc()
}

// ---------------------------------------------------------------------------
// Frames

/// Offsets of the interesting fields of a (possibly mangled) frame, found by a
/// forgiving walk of its own (the generator must not trust the parser it tests).
#[derive(Clone, Debug, Default)]
struct Layout {
    /// Offset of the innermost EtherType.
    ethertype_at: usize,
    /// The IP header's offset and version (4 or 6).
    ip: Option<(usize, u8)>,
    /// Offset of the byte naming the next protocol (IPv4 protocol, or the last
    /// IPv6 next-header field).
    next_at: Option<usize>,
    /// Offsets of IPv6 extension headers.
    exts: Vec<usize>,
    /// Transport protocol and offset.
    l4: Option<(u8, usize)>,
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    f.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn locate(f: &[u8]) -> Layout {
    let mut layout = Layout {
        ethertype_at: 12,
        ..Default::default()
    };
    let mut ty = be16(f, 12);
    let mut cursor = 14;
    for _ in 0..8 {
        match ty {
            Some(0x8100 | 0x88a8) => {
                layout.ethertype_at = cursor + 2;
                ty = be16(f, cursor + 2);
                cursor += 4;
            }
            _ => break,
        }
    }
    match ty {
        Some(0x0800) if f.len() >= cursor + 20 => {
            layout.ip = Some((cursor, 4));
            layout.next_at = Some(cursor + 9);
            let ihl = (f[cursor] & 0x0f) as usize;
            layout.l4 = Some((f[cursor + 9], cursor + ihl.max(5) * 4));
        }
        Some(0x86dd) if f.len() >= cursor + 40 => {
            layout.ip = Some((cursor, 6));
            layout.next_at = Some(cursor + 6);
            let mut next = f[cursor + 6];
            let mut c = cursor + 40;
            for _ in 0..10 {
                match next {
                    0 | 43 | 60 | 44 if c + 8 <= f.len() => {
                        layout.exts.push(c);
                        layout.next_at = Some(c);
                        let len = if next == 44 {
                            8
                        } else {
                            (f[c + 1] as usize + 1) * 8
                        };
                        next = f[c];
                        c += len;
                    }
                    _ => break,
                }
            }
            layout.l4 = Some((next, c));
        }
        _ => {}
    }
    layout
}

/// Seeded source of valid and mutated frames.
pub struct Generator {
    rng: StdRng,
    corpus: Vec<Vec<u8>>,
    /// Frames that were mutated at least once.
    pub mutated: u64,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut g = Generator {
            rng: StdRng::seed_from_u64(seed),
            corpus: Vec::new(),
            mutated: 0,
        };
        for _ in 0..512 {
            let f = g.valid_frame();
            g.corpus.push(f);
        }
        g
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The next frame to run: valid or mutated, 14..=[`MAX_FRAME`] bytes.
    pub fn frame(&mut self) -> Vec<u8> {
        let mut f = if self.rng.gen_bool(0.5) {
            self.valid_frame()
        } else {
            self.corpus.choose(&mut self.rng).expect("corpus").clone()
        };
        let mutations = match self.rng.gen_range(0..100) {
            0..35 => 0,
            35..70 => 1,
            70..88 => 2,
            _ => self.rng.gen_range(3..=6),
        };
        if mutations > 0 {
            self.mutated += 1;
        }
        for _ in 0..mutations {
            self.mutate(&mut f);
        }
        f.truncate(MAX_FRAME);
        while f.len() < 14 {
            f.push(self.rng.r#gen());
        }
        f
    }

    /// A well-formed frame of a random shape from the address pools.
    pub fn valid_frame(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        if r.gen_ratio(1, 25) {
            return non_ip_frame(r);
        }
        let v4 = r.gen_bool(0.55);
        let src: IpAddr = if v4 {
            (*V4_POOL.choose(r).expect("pool")).into()
        } else {
            (*V6_POOL.choose(r).expect("pool")).into()
        };
        let mut p = Packet::from(src);
        match r.gen_range(0..100) {
            0..60 => {}
            60..85 => p = p.vlan(*[0x8100, 0x88a8].choose(r).expect("tpid")),
            85..97 => p = p.vlan(0x88a8).vlan(0x8100),
            _ => p = p.vlan(0x88a8).vlan(0x8100).vlan(0x8100),
        }
        if v4 {
            if r.gen_bool(0.3) {
                p = p.ipv4_options(4 * r.gen_range(1..=10));
            }
            if r.gen_bool(0.08) {
                p = p.ipv4_fragment(r.gen_range(1..0x2000));
            }
        } else if r.gen_bool(0.5) {
            for _ in 0..r.gen_range(1..=7) {
                p = p.ext(match r.gen_range(0..5) {
                    0 => Ext::HopByHop,
                    1 => Ext::Routing,
                    2 => Ext::DstOpts,
                    3 => Ext::Fragment(0),
                    _ => Ext::Fragment(r.gen_range(0..0x2000)),
                });
            }
        }
        match r.gen_range(0..100) {
            0..55 => {
                let flags = match r.gen_range(0..100) {
                    0..25 => TCP_SYN,
                    25..35 => TCP_SYN | TCP_ACK,
                    35..75 => TCP_ACK | TCP_PSH,
                    75..85 => TCP_ACK,
                    _ => r.r#gen(),
                };
                let options = if r.gen_bool(0.3) {
                    4 * r.gen_range(1..=10)
                } else {
                    0
                };
                let payload = tcp_payload(r);
                let port = *[80, 80, 8080, 443].choose(r).expect("non-empty");
                p = p
                    .tcp_options(flags, options)
                    .dst_port(port)
                    .payload(&payload);
            }
            55..85 => {
                let payload = random_bytes(r, 0, 64);
                p = p.udp().payload(&payload);
            }
            _ => {
                let payload = random_bytes(r, 0, 64);
                p = p.icmp().payload(&payload);
            }
        }
        p.build()
    }

    fn mutate(&mut self, f: &mut Vec<u8>) {
        let layout = locate(f);
        let r = &mut self.rng;
        match r.gen_range(0..20) {
            // Bit flips, mostly in the headers.
            0 | 1 => {
                for _ in 0..r.gen_range(1..=8) {
                    let at = header_biased(r, f.len());
                    f[at] ^= 1 << r.gen_range(0..8);
                }
            }
            // A byte set to an interesting value.
            2 | 3 => {
                let at = header_biased(r, f.len());
                f[at] = *INTERESTING.choose(r).expect("values");
            }
            // Truncation.
            4 => {
                let len = r.gen_range(14..=f.len().max(14));
                f.truncate(len);
            }
            // Insertion of random bytes.
            5 => {
                let at = r.gen_range(0..=f.len());
                let bytes = random_bytes(r, 1, 16);
                f.splice(at..at, bytes);
            }
            // Deletion of a range.
            6 => {
                let at = r.gen_range(0..f.len());
                let end = (at + r.gen_range(1..=16)).min(f.len());
                f.drain(at..end);
            }
            // One more VLAN tag, outermost.
            7 => {
                let tpid: u16 = *[0x8100, 0x88a8].choose(r).expect("tpid");
                let mut tag = tpid.to_be_bytes().to_vec();
                tag.extend_from_slice(&r.gen_range(0u16..4096).to_be_bytes());
                f.splice(12..12, tag);
            }
            // One more IPv6 extension header, first in the chain.
            8 => {
                if let Some((ip, 6)) = layout.ip {
                    let kind = *[0u8, 43, 60, 44].choose(r).expect("kind");
                    let mut h = vec![0u8; 8];
                    h[0] = f[ip + 6];
                    if kind == 44 && r.gen_bool(0.5) {
                        h[2..4].copy_from_slice(&(r.gen_range(1u16..0x2000) << 3).to_be_bytes());
                    }
                    f[ip + 6] = kind;
                    f.splice(ip + 40..ip + 40, h);
                }
            }
            // An extension header's length or fragment offset.
            9 => {
                if let Some(&at) = layout.exts.choose(r) {
                    if r.gen_bool(0.5) {
                        f[at + 1] = *[1u8, 2, 0xff, r.r#gen()].choose(r).expect("len");
                        let grow = random_bytes(r, 8, 16);
                        f.splice(at + 8..at + 8, grow);
                    } else {
                        f[at + 2] = r.r#gen();
                        f[at + 3] = r.r#gen();
                    }
                }
            }
            // Another source from the pool.
            10 | 11 => match layout.ip {
                Some((ip, 4)) => {
                    let a = V4_POOL.choose(r).expect("pool").octets();
                    f[ip + 12..ip + 16].copy_from_slice(&a);
                }
                Some((ip, _)) => {
                    let a = V6_POOL.choose(r).expect("pool").octets();
                    f[ip + 8..ip + 24].copy_from_slice(&a);
                }
                None => {}
            },
            // TCP flags, data offset or destination port.
            12 | 13 => {
                if let Some((6, l4)) = layout.l4
                    && l4 + 14 <= f.len()
                {
                    match r.gen_range(0..4) {
                        0 => {
                            f[l4 + 13] = *[TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, r.r#gen()]
                                .choose(r)
                                .expect("flags")
                        }
                        1 => f[l4 + 12] = r.gen_range(0u8..16) << 4,
                        2 => f[l4 + 2..l4 + 4].copy_from_slice(
                            &[80u16, 8080, 443].choose(r).expect("port").to_be_bytes(),
                        ),
                        _ => f[l4 + 13] = r.r#gen(),
                    }
                }
            }
            // A payload starting an HTTP request (or nearly).
            14 => {
                if let Some((6, l4)) = layout.l4
                    && l4 + 13 < f.len()
                {
                    let payload_at = l4 + (f[l4 + 12] >> 4) as usize * 4;
                    if payload_at <= f.len() {
                        f.truncate(payload_at);
                        let payload = tcp_payload(r);
                        f.extend_from_slice(&payload);
                    }
                }
            }
            // The innermost EtherType.
            15 => {
                if layout.ethertype_at + 2 <= f.len() {
                    let ty: u16 = *[0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, r.r#gen()]
                        .choose(r)
                        .expect("type");
                    f[layout.ethertype_at..layout.ethertype_at + 2]
                        .copy_from_slice(&ty.to_be_bytes());
                }
            }
            // IPv4 version/IHL, fragment offset or protocol.
            16 => {
                if let Some((ip, 4)) = layout.ip {
                    match r.gen_range(0..3) {
                        0 => {
                            f[ip] = *[0x45, 0x44, 0x4f, 0x46, 0x65, r.r#gen()]
                                .choose(r)
                                .expect("vihl")
                        }
                        1 => {
                            let off: u16 =
                                *[0, 1, 0x1fff, 0x2000, r.r#gen()].choose(r).expect("off");
                            f[ip + 6..ip + 8].copy_from_slice(&off.to_be_bytes());
                        }
                        _ => {
                            f[ip + 9] =
                                *[6u8, 17, 1, 0, 43, 44, r.r#gen()].choose(r).expect("proto")
                        }
                    }
                }
            }
            // The next protocol after IP (IPv4 protocol, last IPv6 next header).
            17 => {
                if let Some(at) = layout.next_at {
                    f[at] = *[0u8, 6, 17, 43, 44, 60, 58, 59, r.r#gen()]
                        .choose(r)
                        .expect("next");
                }
            }
            // Splice: this frame's start, another frame's end.
            18 => {
                let other = self.corpus.choose(&mut self.rng).expect("corpus");
                let cut = self.rng.gen_range(0..=f.len());
                let from = self.rng.gen_range(0..=other.len());
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            // IPv6 version nibble or a TCP-sized hole in the transport header.
            _ => {
                if let Some((ip, 6)) = layout.ip {
                    f[ip] = (r.gen_range(0u8..16) << 4) | (f[ip] & 0x0f);
                } else if let Some((_, l4)) = layout.l4
                    && l4 < f.len()
                {
                    f.truncate(l4 + r.gen_range(0..=(f.len() - l4).min(24)));
                }
            }
        }
        if f.len() < 14 {
            f.resize(14, 0);
        }
    }
}

/// A position, within the first 80 bytes three times in four.
fn header_biased(r: &mut StdRng, len: usize) -> usize {
    if r.gen_bool(0.75) {
        r.gen_range(0..len.min(80))
    } else {
        r.gen_range(0..len)
    }
}

fn random_bytes(r: &mut StdRng, min: usize, max: usize) -> Vec<u8> {
    let n = r.gen_range(min..=max);
    (0..n).map(|_| r.r#gen()).collect()
}

fn tcp_payload(r: &mut StdRng) -> Vec<u8> {
    match r.gen_range(0..100) {
        0..40 => {
            let method = METHODS.choose(r).expect("method");
            let path: String = (0..r.gen_range(0..20))
                .map(|_| r.gen_range(b'a'..=b'z') as char)
                .collect();
            format!("{method} /{path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
        }
        // Pipelined requests, LF-only line endings, blank lines between them,
        // and a head cut anywhere (what a segment after a split carries).
        40..46 => {
            let one: &[u8] = if r.gen_bool(0.5) {
                b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n"
            } else {
                b"POST /p HTTP/1.1\nHost: x\n\n\r\n"
            };
            let all = one.repeat(r.gen_range(1..=40));
            let from = r.gen_range(0..one.len());
            let to = r.gen_range(from..=all.len());
            all[from..to].to_vec()
        }
        // Requests to the routes' paths, alone or pipelined with others,
        // and sometimes cut (the tail of a head, a head's start).
        46..58 => {
            let mut all = Vec::new();
            for _ in 0..*[1, 1, 2, 3, 5, 12].choose(r).expect("non-empty") {
                let method = *["GET", "POST", "PUT", "DELETE", "HEAD", "GET"]
                    .choose(r)
                    .expect("method");
                let path = ROUTE_PATHS.choose(r).expect("path");
                let host = HOST_HEADERS.choose(r).expect("host");
                all.extend(format!("{method} {path} HTTP/1.1\r\n{host}\r\n").bytes());
            }
            if r.gen_bool(0.25) {
                let from = r.gen_range(0..all.len());
                all.drain(..from);
            }
            all
        }
        58..62 => NEAR_MISSES.choose(r).expect("near miss").to_vec(),
        // A request line cut shorter than the 8 bytes the check needs.
        62..66 => {
            let line = format!("{} / HTTP/1.1", METHODS.choose(r).expect("method"));
            line.as_bytes()[..r.gen_range(0..8)].to_vec()
        }
        66..74 => Vec::new(),
        // A body of any length inside a line (the scan skips it 32 bytes at
        // a time, up to 256 a step), then heads: the skip's last block, the
        // block a word at a time after it and the segment's filled last
        // block fall anywhere.
        74..82 => {
            let mut all = vec![b'b'; r.gen_range(0..600)];
            for _ in 0..r.gen_range(0..3) {
                all.extend_from_slice(b"\r\n\r\nGET /p HTTP/1.1\r\nHost: x");
                all.extend(std::iter::repeat_n(b'c', r.gen_range(0..200)));
            }
            if r.gen_bool(0.5) {
                all.extend_from_slice(b"\r\n\r\n");
            }
            all
        }
        _ => random_bytes(r, 1, 300),
    }
}

fn non_ip_frame(r: &mut StdRng) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 3]);
    if r.gen_bool(0.3) {
        f.extend_from_slice(&[0x81, 0x00, 0, 5]);
    }
    let ty: u16 = *[
        0x0806,
        0x88cc,
        0x8035,
        0x0000,
        0xffff,
        0x0801,
        0x86de,
        r.r#gen(),
    ]
    .choose(r)
    .expect("type");
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend(random_bytes(r, 0, 60));
    f
}

// ---------------------------------------------------------------------------
// The run

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Frames changed by at least one mutation.
    pub mutated: u64,
    pub elapsed: Duration,
    /// Time inside BPF_PROG_TEST_RUN calls.
    pub kernel: Duration,
    pub epochs: u64,
    pub longest_epoch: Duration,
    /// Epochs that took longer than [`MAX_EPOCH`] (their verdicts may
    /// legitimately depend on time).
    pub slow_epochs: u64,
    /// Kernel counters summed over tiers, by verdict.
    pub by_verdict: [Counter; VERDICT_COUNT as usize],
    /// XDP actions of every run (including replays while minimising).
    pub passed: u64,
    pub dropped: u64,
    pub disagreements: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "seed {:#x}: {} frames ({} mutated, {} bytes) in {:.1} s: {:.0} frames/s \
             ({:.1} s in test_run, {:.0} ns per call); {} epochs, longest {:.0} ms, {} over {} ms",
            self.seed,
            self.packets,
            self.mutated,
            self.bytes,
            secs,
            self.packets as f64 / secs,
            self.kernel.as_secs_f64(),
            self.kernel.as_nanos() as f64 / self.packets.max(1) as f64,
            self.epochs,
            self.longest_epoch.as_secs_f64() * 1e3,
            self.slow_epochs,
            MAX_EPOCH.as_millis(),
        )?;
        writeln!(
            f,
            "actions: {} XDP_PASS, {} XDP_DROP",
            self.passed, self.dropped
        )?;
        for v in Verdict::ALL {
            let c = self.by_verdict[v as usize];
            writeln!(
                f,
                "  {:<20} {:>9} packets {:>11} bytes",
                v.name(),
                c.packets,
                c.bytes
            )?;
        }
        write!(f, "disagreements: {}", self.disagreements.len())
    }
}

/// Why a frame disagreed.
#[derive(Debug)]
struct Mismatch {
    expected: Judgement,
    action: u32,
    /// Kernel counter slots that moved differently from the model's, as
    /// (tier, verdict, kernel packets - model packets).
    slots: Vec<(u32, Verdict, i64)>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model: tier {} {} ({}); kernel: {}",
            self.expected.tier,
            self.expected.verdict.name(),
            action_name(self.expected.action()),
            action_name(self.action),
        )?;
        if self.slots.is_empty() {
            write!(f, ", counted where the model counted it")
        } else {
            write!(f, ", counter slots off (kernel - model):")?;
            for (tier, v, d) in &self.slots {
                write!(f, " tier {tier} {} {d:+}", v.name())?;
            }
            Ok(())
        }
    }
}

fn action_name(action: u32) -> &'static str {
    match action {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown action",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kernel program and the model, side by side.
struct Pair {
    program: TestProgram,
    model: Model,
    /// Every frame run in the kernel (fuzzed and replayed), for the totals.
    runs: Counter,
    passed: u64,
    dropped: u64,
}

impl Pair {
    fn load() -> Result<Pair> {
        // Room for every source an epoch can create, so the LRU never evicts.
        let program = TestProgram::load_sized(&MapSizes {
            sources_v4: 1 << 16,
            sources_v6: 1 << 16,
            rules_v4: 1024,
            rules_v6: 1024,
            ..Default::default()
        })?;
        Ok(Pair {
            program,
            model: Model::new(Policy::new(), MODEL_NOW),
            runs: Counter::default(),
            passed: 0,
            dropped: 0,
        })
    }

    /// Writes `fp` to the program and the model.
    fn apply(&mut self, fp: &FuzzPolicy) -> Result<()> {
        for t in &fp.policy.tiers {
            time_independent(t)?;
        }
        let maps = &mut self.program.maps;
        maps.set_settings(fp.settings)?;
        for t in 0..MAX_TIERS {
            maps.set_tier(t, &fp.policy.tiers[t as usize])?;
        }
        let upsert: Vec<(IpNet, RuleValue)> = fp
            .policy
            .rules()
            .iter()
            .map(|r| (rule_net(r.network, r.prefix_len), r.value))
            .collect();
        let remove: Vec<IpNet> = maps
            .rules()?
            .into_iter()
            .map(|(net, _)| net)
            .filter(|net| !upsert.iter().any(|(n, _)| n == net))
            .collect();
        maps.update_rules(&upsert, &remove)?;
        let old: Vec<_> = maps
            .routes()?
            .into_iter()
            .map(|(prefix, _)| prefix)
            .collect();
        maps.update_routes(&[], &old)?;
        let routes: Vec<_> = fp
            .policy
            .routes
            .iter()
            .map(|r| {
                (
                    route_key_for_host(r.port, r.host, &r.line).expect("short line"),
                    r.value,
                )
            })
            .collect();
        maps.update_routes(&routes, &[])?;
        self.model.policy = fp.policy.clone();
        Ok(())
    }

    /// Forgets every source and aggregate on both sides.
    fn clear_buckets(&mut self) -> Result<()> {
        let maps = &mut self.program.maps;
        let v4: Vec<u32> = maps.sources_v4.keys().collect::<Result<_, _>>()?;
        for k in &v4 {
            maps.sources_v4.remove(k)?;
        }
        let v6: Vec<u64> = maps.sources_v6.keys().collect::<Result<_, _>>()?;
        for k in &v6 {
            maps.sources_v6.remove(k)?;
        }
        for slot in 0..AGGREGATE_SLOTS {
            maps.aggregate.set(slot, 0, 0)?;
        }
        for slot in 0..MAX_ROUTES {
            maps.route_ceilings.set(slot, 0, 0)?;
        }
        self.model.clear_buckets();
        Ok(())
    }

    /// Runs one frame on both sides; `Ok(None)` when they agree.
    fn run(&mut self, frame: &[u8], kernel_time: &mut Duration) -> Result<Option<Mismatch>> {
        let expected = self.model.judge(frame);
        let start = Instant::now();
        let action = self
            .program
            .run(frame)
            .with_context(|| format!("test_run refused a {}-byte frame", frame.len()))?;
        *kernel_time += start.elapsed();
        self.runs.packets += 1;
        self.runs.bytes += frame.len() as u64;
        match action {
            XDP_PASS => self.passed += 1,
            XDP_DROP => self.dropped += 1,
            _ => {}
        }
        let want = self.model.counters()[expected.tier as usize][expected.verdict as usize];
        let got = self.program.maps.counter(expected.tier, expected.verdict)?;
        if action == expected.action() && got == want {
            return Ok(None);
        }
        Ok(Some(Mismatch {
            expected,
            action,
            slots: self.counter_diff()?,
        }))
    }

    /// Every counter slot where kernel and model differ.
    fn counter_diff(&self) -> Result<Vec<(u32, Verdict, i64)>> {
        let kernel = self.program.maps.counters()?;
        let mut out = Vec::new();
        for (t, (k, m)) in kernel.iter().zip(self.model.counters()).enumerate() {
            for v in Verdict::ALL {
                let (k, m) = (k[v as usize], m[v as usize]);
                if k != m {
                    out.push((t as u32, v, k.packets as i64 - m.packets as i64));
                }
            }
        }
        Ok(out)
    }

    /// Takes the kernel's counters as the model's (after a disagreement).
    fn resync_counters(&mut self) -> Result<()> {
        let kernel = self.program.maps.counters()?;
        self.model.set_counters(kernel);
        self.model
            .set_route_counters(self.program.maps.route_counters()?);
        Ok(())
    }

    /// End-of-epoch comparison of everything but counters: the tracked sources,
    /// the units held in each of their buckets, the aggregates. `kernel_base`
    /// is the monotonic time the epoch started at, `untracked_base` the
    /// untracked clock's (`untracked_clock_ns`: the kernel times the
    /// untracked ceiling and the new-source budget by jiffies × tick).
    fn compare_state(&self, kernel_base: u64, untracked_base: u64) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let maps = &self.program.maps;
        let mut kernel = Vec::new();
        for k in maps.sources_v4.keys() {
            let k = k?;
            kernel.push((SourceKey::V4(k.to_ne_bytes()), maps.sources_v4.get(&k, 0)?));
        }
        for k in maps.sources_v6.keys() {
            let k = k?;
            kernel.push((SourceKey::V6(k), maps.sources_v6.get(&k, 0)?));
        }
        let model = self.model.sources();
        let kernel_keys: HashSet<SourceKey> = kernel.iter().map(|(k, _)| *k).collect();
        let model_keys: HashSet<SourceKey> = model.keys().copied().collect();
        for k in kernel_keys.symmetric_difference(&model_keys) {
            problems.push(format!(
                "source {k:?} tracked by the {} only",
                if kernel_keys.contains(k) {
                    "kernel"
                } else {
                    "model"
                }
            ));
        }
        // Units held = (TAT - epoch start) / interval: the kernel's TATs start
        // somewhere within the epoch, which is shorter than any interval.
        let units_ns = |tat: u64, base: u64, inc: u64| tat.saturating_sub(base) / inc;
        let units_ticks = |tat: u32, base: u64, inc: u32| {
            tat.wrapping_sub((base >> TICK_SHIFT) as u32) / inc.max(1)
        };
        let packets = packets_limit(1).increment_ns(1);
        let bytes = bytes_limit(1).increment_ns(1);
        let l7 = l7_limit(1).increment_ticks();
        for (key, k) in &kernel {
            let Some(m) = model.get(key) else { continue };
            let m = m.to_state();
            let got = [
                units_ns(k.packets_tat, kernel_base, packets),
                units_ns(k.bytes_tat, kernel_base, bytes),
                units_ticks(k.connections_tat(), kernel_base, l7) as u64,
                units_ticks(k.requests_tat(), kernel_base, l7) as u64,
            ];
            let want = [
                units_ns(m.packets_tat, MODEL_NOW, packets),
                units_ns(m.bytes_tat, MODEL_NOW, bytes),
                units_ticks(m.connections_tat(), MODEL_NOW, l7) as u64,
                units_ticks(m.requests_tat(), MODEL_NOW, l7) as u64,
            ];
            if got != want {
                problems.push(format!(
                    "source {key:?} holds (packets, bytes, connections, requests) {got:?} \
                     in the kernel, {want:?} in the model"
                ));
            }
            // The admitted counters are exact on both sides.
            if k.admitted != m.admitted {
                problems.push(format!(
                    "source {key:?} was admitted (packets, requests) {:?} by the kernel's \
                     count, {:?} by the model's",
                    AdmittedDelta::since_zero(k.admitted),
                    AdmittedDelta::since_zero(m.admitted),
                ));
            }
        }
        for t in 0..MAX_TIERS {
            let ceilings = [
                ("aggregate", aggregate_slot(t), self.model.aggregate_tat(t)),
                (
                    "untracked ceiling",
                    untracked_slot(t),
                    self.model.untracked_tat(t),
                ),
                (
                    "new-source budget",
                    new_sources_slot(t),
                    self.model.new_sources_tat(t),
                ),
            ];
            for (what, slot, model_tat) in ceilings {
                let base = if slot == aggregate_slot(t) {
                    kernel_base
                } else {
                    untracked_base
                };
                let k = units_ns(maps.aggregate.get(&slot, 0)?, base, packets);
                let m = units_ns(model_tat, MODEL_NOW, packets);
                if k != m {
                    problems.push(format!(
                        "tier {t} {what} holds {k} packets in the kernel, {m} in the model"
                    ));
                }
            }
        }
        // Route ceilings (one an hour, like packets) and route counters.
        let kernel_routes = maps.route_counters()?;
        for index in 0..MAX_ROUTES {
            let k = units_ns(maps.route_ceilings.get(&index, 0)?, kernel_base, packets);
            let m = units_ns(self.model.route_tat(index), MODEL_NOW, packets);
            if k != m {
                problems.push(format!(
                    "route {index}'s ceiling holds {k} requests in the kernel, {m} in the model"
                ));
            }
            let (k, m) = (
                kernel_routes[index as usize],
                self.model.route_counters()[index as usize],
            );
            if k != m {
                problems.push(format!(
                    "route {index}'s counters are {k:?} in the kernel, {m:?} in the model"
                ));
            }
        }
        Ok(problems)
    }

    /// Replays `frames` from empty buckets: the first frame that disagrees,
    /// else the end-of-replay state problems, else `None`.
    fn replay(&mut self, frames: &[Vec<u8>]) -> Result<Option<Found>> {
        self.clear_buckets()?;
        self.resync_counters()?;
        let base = tollgate::datapath::kernel::clock_ns();
        let untracked_base = crate::untracked_clock_ns();
        let mut unused = Duration::ZERO;
        for (i, f) in frames.iter().enumerate() {
            if let Some(m) = self.run(f, &mut unused)? {
                self.resync_counters()?;
                return Ok(Some(Found::Frame(i, m)));
            }
        }
        let problems = self.compare_state(base, untracked_base)?;
        Ok((!problems.is_empty()).then_some(Found::State(problems)))
    }

    /// Shrinks `frames` to a short sequence that still disagrees under the
    /// current policy (greedy chunk removal, bounded).
    fn minimize(&mut self, frames: &[Vec<u8>]) -> Result<Option<(Vec<Vec<u8>>, Found)>> {
        let Some(found) = self.replay(frames)? else {
            return Ok(None);
        };
        let mut current = match found {
            Found::Frame(i, _) => frames[..=i].to_vec(),
            Found::State(_) => frames.to_vec(),
        };
        let mut chunk = current.len().div_ceil(2);
        let mut trials = 0;
        while trials < 400 {
            let mut removed = false;
            let mut at = 0;
            while at < current.len() && current.len() > 1 && trials < 400 {
                let mut candidate = current.clone();
                candidate.drain(at..(at + chunk).min(candidate.len()));
                trials += 1;
                match self.replay(&candidate)? {
                    Some(_) if candidate.is_empty() => at += chunk,
                    Some(Found::Frame(j, _)) => {
                        candidate.truncate(j + 1);
                        current = candidate;
                        removed = true;
                    }
                    Some(Found::State(_)) => {
                        current = candidate;
                        removed = true;
                    }
                    None => at += chunk,
                }
            }
            if !removed {
                if chunk == 1 {
                    break;
                }
                chunk = chunk.div_ceil(2);
            }
        }
        let found = self.replay(&current)?;
        self.resync_counters()?;
        Ok(found.map(|f| (current, f)))
    }
}

/// A disagreement found by a replay.
#[derive(Debug)]
enum Found {
    /// This frame's verdict or counting differs.
    Frame(usize, Mismatch),
    /// Every frame agreed, but the state afterwards differs.
    State(Vec<String>),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Frame(i, m) => write!(f, "frame {}: {m}", i + 1),
            Found::State(problems) => write!(f, "state afterwards: {}", problems.join("; ")),
        }
    }
}

/// A minimal reproducer of a disagreement under `fp`, as text.
fn reproducer(pair: &mut Pair, fp: &FuzzPolicy, frames: &[Vec<u8>]) -> Result<String> {
    let Some((frames, found)) = pair.minimize(frames)? else {
        return Ok("did not reproduce on a replay of the epoch (timing?)\n".into());
    };
    let mut text = format!(
        "minimal reproducer ({} frames, run in order from empty buckets under the policy above):\n",
        frames.len()
    );
    let mut model = Model::new(fp.policy.clone(), MODEL_NOW);
    for f in &frames {
        let j = model.judge(f);
        let _ = writeln!(
            text,
            "  {} -> model: tier {} {}",
            hex(f),
            j.tier,
            j.verdict.name()
        );
    }
    let _ = writeln!(text, "  disagreement: {found}");
    Ok(text)
}

/// Runs `config.packets` frames. Disagreements are collected in the report
/// (the run stops after [`MAX_DISAGREEMENTS`]); errors are harness failures.
pub fn run(config: &Config) -> Result<Report> {
    let mut report = Report {
        seed: config.seed,
        ..Default::default()
    };
    let mut generator = Generator::new(config.seed);
    let mut pair = Pair::load()?;
    let start = Instant::now();
    let mut epoch_frames: Vec<Vec<u8>> = Vec::with_capacity(MAX_EPOCH_FRAMES);

    while report.packets < config.packets && report.disagreements.len() < MAX_DISAGREEMENTS {
        let fp = random_policy(generator.rng());
        let len = if generator.rng().gen_bool(0.5) {
            generator.rng().gen_range(16..=512)
        } else {
            generator.rng().gen_range(512..=MAX_EPOCH_FRAMES)
        }
        .min((config.packets - report.packets) as usize);
        pair.apply(&fp)?;
        pair.clear_buckets()?;
        epoch_frames.clear();
        report.epochs += 1;

        let kernel_base = tollgate::datapath::kernel::clock_ns();
        let untracked_base = crate::untracked_clock_ns();
        let epoch_start = Instant::now();
        let mut mismatch = None;
        for _ in 0..len {
            let frame = generator.frame();
            report.packets += 1;
            report.bytes += frame.len() as u64;
            epoch_frames.push(frame);
            let frame = epoch_frames.last().expect("pushed");
            match pair.run(frame, &mut report.kernel)? {
                None => {}
                Some(m) => {
                    mismatch = Some(m);
                    break;
                }
            }
        }
        let took = epoch_start.elapsed();
        report.longest_epoch = report.longest_epoch.max(took);
        let slow = took > MAX_EPOCH;
        if slow {
            report.slow_epochs += 1;
        }

        if let Some(m) = mismatch {
            let frame = epoch_frames.last().expect("a frame disagreed");
            let mut text = format!(
                "DISAGREEMENT in epoch {} (frame {} of the epoch, {} overall; epoch ran {:.1} ms{})\n\
                 frame ({} bytes): {}\nparsed: {:?}\n{m}\npolicy:\n{}\n",
                report.epochs,
                epoch_frames.len(),
                report.packets,
                took.as_secs_f64() * 1e3,
                if slow {
                    ", LONGER THAN ANY BUCKET'S INTERVAL: may be timing"
                } else {
                    ""
                },
                frame.len(),
                hex(frame),
                parse::parse(&frame[..]),
                describe(&fp),
            );
            pair.resync_counters()?;
            text.push_str(&reproducer(&mut pair, &fp, &epoch_frames)?);
            pair.resync_counters()?;
            eprintln!("{text}");
            report.disagreements.push(text);
            continue;
        }

        let mut problems = pair.compare_state(kernel_base, untracked_base)?;
        problems.extend(
            pair.counter_diff()?
                .into_iter()
                .map(|(t, v, d)| format!("counter tier {t} {} off by {d:+}", v.name())),
        );
        if !problems.is_empty() {
            pair.resync_counters()?;
            let mut text = format!(
                "STATE DISAGREEMENT after epoch {} ({} frames, {:.1} ms{}):\n  {}\npolicy:\n{}\n",
                report.epochs,
                epoch_frames.len(),
                took.as_secs_f64() * 1e3,
                if slow { ", may be timing" } else { "" },
                problems.join("\n  "),
                describe(&fp),
            );
            text.push_str(&reproducer(&mut pair, &fp, &epoch_frames)?);
            eprintln!("{text}");
            report.disagreements.push(text);
        }
    }

    report.elapsed = start.elapsed();
    report.mutated = generator.mutated;
    let counters = pair.program.maps.counters()?;
    let mut total = Counter::default();
    for tier in &counters {
        for v in Verdict::ALL {
            let c = tier[v as usize];
            report.by_verdict[v as usize].packets += c.packets;
            report.by_verdict[v as usize].bytes += c.bytes;
            total.packets += c.packets;
            total.bytes += c.bytes;
        }
    }
    report.passed = pair.passed;
    report.dropped = pair.dropped;
    if total != pair.runs || pair.passed + pair.dropped != pair.runs.packets {
        let text = format!(
            "COUNTERS DO NOT ADD UP: {} packets / {} bytes counted, {} / {} run \
             ({} passed + {} dropped)",
            total.packets,
            total.bytes,
            pair.runs.packets,
            pair.runs.bytes,
            pair.passed,
            pair.dropped
        );
        eprintln!("{text}");
        report.disagreements.push(text);
    }
    if report.packets == 0 {
        bail!("no frames run");
    }
    Ok(report)
}
