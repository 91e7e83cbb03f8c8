use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use tollgate_common::{
    COUNTER_SLOTS, Counter, MAX_TIERS, Meta, RULE_ALLOW, RULE_DENY, RuleValue, SETTINGS_RULES_V4,
    SETTINGS_RULES_V6, Settings, SourceState, TierConfig, Verdict,
    limiter::{self, Costs},
    parse::{self, IpPacket, PacketReader, Parsed, SourceAddr, Transport},
};

/// Default sizes; the daemon sets the real ones from its configuration at load.
const DEFAULT_SOURCES: u32 = 1 << 20;
const DEFAULT_RULES: u32 = 1 << 16;

#[map(name = "TG_SETTINGS")]
static TG_SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map(name = "TG_META")]
static TG_META: Array<Meta> = Array::with_max_entries(1, 0);
#[map(name = "TG_TIERS")]
static TG_TIERS: Array<TierConfig> = Array::with_max_entries(MAX_TIERS, 0);
/// Aggregate-ceiling TAT per tier, apart from the config so reloads keep it.
#[map(name = "TG_AGGREGATE")]
static TG_AGGREGATE: Array<u64> = Array::with_max_entries(MAX_TIERS, 0);
#[map(name = "TG_RULES_V4")]
static TG_RULES_V4: LpmTrie<[u8; 4], RuleValue> = LpmTrie::with_max_entries(DEFAULT_RULES, 0);
#[map(name = "TG_RULES_V6")]
static TG_RULES_V6: LpmTrie<[u8; 16], RuleValue> = LpmTrie::with_max_entries(DEFAULT_RULES, 0);
/// Bucket state per IPv4 source (/32), keyed by the address as read (network order).
#[map(name = "TG_SOURCES_V4")]
static TG_SOURCES_V4: LruHashMap<u32, SourceState> =
    LruHashMap::with_max_entries(DEFAULT_SOURCES, 0);
/// Bucket state per IPv6 source prefix (see `parse::ipv6_key`).
#[map(name = "TG_SOURCES_V6")]
static TG_SOURCES_V6: LruHashMap<u64, SourceState> =
    LruHashMap::with_max_entries(DEFAULT_SOURCES, 0);
#[map(name = "TG_COUNTERS")]
static TG_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// A map lookup that cannot fail did (an index out of range, an LRU insert
/// refused): the program fails open rather than dropping traffic it cannot judge.
struct Internal;

/// XDP packet bytes behind the bounds checks the verifier wants: every read is
/// preceded by `data + offset + N <= data_end`.
struct Frame<'a>(&'a XdpContext);

impl PacketReader for Frame<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.0.data();
        let end = self.0.data_end();
        if start + offset + N > end {
            return None;
        }
        // SAFETY: bounds checked above; the packet is readable up to data_end.
        Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }
}

#[xdp]
pub fn tollgate(ctx: XdpContext) -> u32 {
    match try_tollgate(&ctx) {
        Ok(action) => action,
        Err(Internal) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn try_tollgate(ctx: &XdpContext) -> Result<u32, Internal> {
    let frame = Frame(ctx);
    let len = frame.frame_len() as u64;
    let settings = TG_SETTINGS.get(0).ok_or(Internal)?;
    let (tier, verdict) = match parse::parse(&frame) {
        Parsed::NotIp => (settings.default_tier, Verdict::NotIp),
        Parsed::Malformed => (settings.default_tier, Verdict::Malformed),
        Parsed::Ip(packet) => judge(&frame, settings, &packet, len)?,
    };
    count(tier, verdict, len);
    Ok(if verdict.drops() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    })
}

/// Rules, then the source's buckets, then the tier's aggregate ceiling.
#[inline(always)]
fn judge(
    frame: &Frame,
    settings: &Settings,
    packet: &IpPacket,
    len: u64,
) -> Result<(u32, Verdict), Internal> {
    let tier_index = match lookup_rule(settings, &packet.src) {
        Some(rule) if rule.action == RULE_ALLOW => return Ok((rule.tier, Verdict::Allowed)),
        Some(rule) if rule.action == RULE_DENY => return Ok((rule.tier, Verdict::Denied)),
        Some(rule) => rule.tier,
        None => settings.default_tier,
    };
    let tier = TG_TIERS.get(tier_index).ok_or(Internal)?;
    if !tier.is_active() {
        return Ok((tier_index, Verdict::Passed));
    }
    let costs = Costs {
        bytes: len,
        connection: matches!(
            packet.transport,
            Transport::Tcp {
                new_connection: true,
                ..
            }
        ),
        request: match packet.transport {
            Transport::Tcp { payload, .. } => parse::is_http_request(frame, payload),
            _ => false,
        },
    };
    // SAFETY: a BPF helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let state = source_state(&packet.src, tier.ipv6_prefix, now)?;
    // SAFETY: `state` is a live map value, `aggregate` an array slot; both are
    // only ever changed through the limiter's atomics.
    let mut verdict = match unsafe { limiter::charge_source(state, tier, now, &costs) } {
        Err(kind) => kind.drop_verdict(),
        Ok(()) => {
            let aggregate = TG_AGGREGATE.get_ptr_mut(tier_index).ok_or(Internal)?;
            if unsafe { limiter::charge_aggregate(aggregate, &tier.aggregate, now) } {
                Verdict::Passed
            } else {
                Verdict::DroppedAggregate
            }
        }
    };
    if verdict == Verdict::Passed && packet.transport == Transport::Malformed {
        verdict = Verdict::Malformed;
    }
    if verdict.drops() && tier.is_shadow() {
        verdict = Verdict::ShadowWouldDrop;
    }
    Ok((tier_index, verdict))
}

#[inline(always)]
fn lookup_rule(settings: &Settings, src: &SourceAddr) -> Option<RuleValue> {
    match src {
        SourceAddr::V4(addr) if settings.flags & SETTINGS_RULES_V4 != 0 => {
            TG_RULES_V4.get(Key::new(32, *addr)).copied()
        }
        SourceAddr::V6(addr) if settings.flags & SETTINGS_RULES_V6 != 0 => {
            TG_RULES_V6.get(Key::new(128, *addr)).copied()
        }
        _ => None,
    }
}

/// The source's bucket state, created idle on first sight. Two CPUs may race to
/// create it: BPF_NOEXIST makes one insert win and both then use that entry.
#[inline(always)]
fn source_state(
    src: &SourceAddr,
    ipv6_prefix: u32,
    now: u64,
) -> Result<*mut SourceState, Internal> {
    match src {
        SourceAddr::V4(addr) => {
            let key = u32::from_ne_bytes(*addr);
            if let Some(state) = TG_SOURCES_V4.get_ptr_mut(key) {
                return Ok(state);
            }
            let _ = TG_SOURCES_V4.insert(key, limiter::fresh_state(now), BPF_NOEXIST as u64);
            TG_SOURCES_V4.get_ptr_mut(key).ok_or(Internal)
        }
        SourceAddr::V6(addr) => {
            let key = parse::ipv6_key(addr, ipv6_prefix);
            if let Some(state) = TG_SOURCES_V6.get_ptr_mut(key) {
                return Ok(state);
            }
            let _ = TG_SOURCES_V6.insert(key, limiter::fresh_state(now), BPF_NOEXIST as u64);
            TG_SOURCES_V6.get_ptr_mut(key).ok_or(Internal)
        }
    }
}

#[inline(always)]
fn count(tier: u32, verdict: Verdict, len: u64) {
    if let Some(counter) = TG_COUNTERS.get_ptr_mut(verdict.counter_index(tier)) {
        // SAFETY: per-CPU slot; XDP runs with preemption disabled.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}

/// Reference program for benchmarks: the cheapest possible XDP_PASS, the floor
/// that `cargo xtask bench micro` divides by. Loaded only by benchmarks.
#[xdp]
pub fn floor_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Reference program for benchmarks: the cheapest possible XDP_DROP, the floor
/// of `cargo xtask bench flood`. Loaded only by benchmarks.
#[xdp]
pub fn floor_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Benchmark probe: one `bpf_ktime_get_ns` call, to price the clock read.
#[xdp]
pub fn probe_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: a BPF helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Benchmark probe: one `bpf_jiffies64` call (inlined by the verifier), the
/// cheap but 1/HZ-coarse clock tollgate does not use.
#[xdp]
pub fn probe_jiffies(_ctx: XdpContext) -> u32 {
    // SAFETY: a BPF helper with no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() };
    if now == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Benchmark probe: one lookup of a present key in the IPv4 source LRU map.
#[xdp]
pub fn probe_source_lookup(_ctx: XdpContext) -> u32 {
    match TG_SOURCES_V4.get_ptr_mut(PROBE_SOURCE) {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}

/// The source key `probe_source_lookup` looks up (100.64.1.1 as read from a packet).
pub const PROBE_SOURCE: u32 = u32::from_ne_bytes([100, 64, 1, 1]);
