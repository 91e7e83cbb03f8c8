//! `#[repr(C)]` types stored in the BPF maps, and the constants both sides agree on.
//! Map names are part of the pinned layout: a daemon adopting pins checks
//! [`LAYOUT_VERSION`] before trusting them.

use crate::gcra::{INTERVAL_SHIFT, TICK_SHIFT};

/// Bumped whenever a map's key, value or meaning changes. Stored in the
/// `TG_META` map so a new daemon can tell a compatible pinned program from an
/// incompatible one.
pub const LAYOUT_VERSION: u32 = 6;

/// Tiers are indices into `TG_TIERS` (an array map).
pub const MAX_TIERS: u32 = 64;

/// Limit kinds, in the order of [`TierConfig::limits`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Packets = 0,
    Bytes = 1,
    Connections = 2,
    Requests = 3,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::Packets,
        LimitKind::Bytes,
        LimitKind::Connections,
        LimitKind::Requests,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            LimitKind::Packets => "packets",
            LimitKind::Bytes => "bytes",
            LimitKind::Connections => "connections",
            LimitKind::Requests => "requests",
        }
    }

    /// The verdict counted when this limit drops a packet.
    pub const fn drop_verdict(self) -> Verdict {
        match self {
            LimitKind::Packets => Verdict::DroppedPackets,
            LimitKind::Bytes => Verdict::DroppedBytes,
            LimitKind::Connections => Verdict::DroppedConnections,
            LimitKind::Requests => Verdict::DroppedRequests,
        }
    }
}

/// What happened to a packet; indexes the counters together with its tier.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within every limit: XDP_PASS.
    Passed = 0,
    DroppedPackets = 1,
    DroppedBytes = 2,
    DroppedConnections = 3,
    DroppedRequests = 4,
    /// The tier's aggregate packets/s ceiling was reached.
    DroppedAggregate = 5,
    /// Source matched a `deny` rule: XDP_DROP.
    Denied = 6,
    /// Source matched an `allow` rule: XDP_PASS without any limit.
    Allowed = 7,
    /// A shadow tier would have dropped it; passed.
    ShadowWouldDrop = 8,
    /// Headers could not be parsed (truncated, bad lengths, too many extension
    /// headers): XDP_DROP. Counted under the source's tier when the source is known.
    Malformed = 9,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): XDP_PASS, never limited.
    NotIp = 10,
    /// A source the tier does not track, over the tier's new-source budget:
    /// not tracked (nothing inserted), passed within the untracked ceiling.
    Untracked = 11,
    /// A source the tier does not track, over the tier's untracked ceiling
    /// (the aggregate limit applied to untracked sources apart): XDP_DROP.
    DroppedUntracked = 12,
    /// A request in the segment was refused by its route's ceiling (the
    /// requests/s all sources together may send to that endpoint), or the
    /// segment carried more distinct ceilinged routes than one segment may
    /// ([`crate::route::ROUTE_SLOTS`]): XDP_DROP.
    DroppedRouteCeiling = 13,
}

pub const VERDICT_COUNT: u32 = 14;

impl Verdict {
    pub const ALL: [Verdict; VERDICT_COUNT as usize] = [
        Verdict::Passed,
        Verdict::DroppedPackets,
        Verdict::DroppedBytes,
        Verdict::DroppedConnections,
        Verdict::DroppedRequests,
        Verdict::DroppedAggregate,
        Verdict::Denied,
        Verdict::Allowed,
        Verdict::ShadowWouldDrop,
        Verdict::Malformed,
        Verdict::NotIp,
        Verdict::Untracked,
        Verdict::DroppedUntracked,
        Verdict::DroppedRouteCeiling,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::DroppedPackets => "dropped_packets",
            Verdict::DroppedBytes => "dropped_bytes",
            Verdict::DroppedConnections => "dropped_connections",
            Verdict::DroppedRequests => "dropped_requests",
            Verdict::DroppedAggregate => "dropped_aggregate",
            Verdict::Denied => "denied",
            Verdict::Allowed => "allowed",
            Verdict::ShadowWouldDrop => "shadow_would_drop",
            Verdict::Malformed => "malformed",
            Verdict::NotIp => "not_ip",
            Verdict::Untracked => "untracked",
            Verdict::DroppedUntracked => "dropped_untracked",
            Verdict::DroppedRouteCeiling => "dropped_route_ceiling",
        }
    }

    /// Whether the packet leaves XDP with XDP_DROP.
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Verdict::DroppedPackets
                | Verdict::DroppedBytes
                | Verdict::DroppedConnections
                | Verdict::DroppedRequests
                | Verdict::DroppedAggregate
                | Verdict::DroppedUntracked
                | Verdict::DroppedRouteCeiling
                | Verdict::Denied
                | Verdict::Malformed
        )
    }

    /// Index into `TG_COUNTERS` for this verdict in `tier`.
    #[inline(always)]
    pub const fn counter_index(self, tier: u32) -> u32 {
        tier * VERDICT_COUNT + self as u32
    }
}

/// Number of slots in the counters array.
pub const COUNTER_SLOTS: u32 = MAX_TIERS * VERDICT_COUNT;

/// Slots of `TG_AGGREGATE`: per tier, the TAT of the aggregate ceiling for
/// tracked sources ([`aggregate_slot`]), of the same ceiling applied apart to
/// untracked sources ([`untracked_slot`]) and of the new-source budget
/// ([`new_sources_slot`]). 64 slots apart, so the three never share a cache line.
pub const AGGREGATE_SLOTS: u32 = 3 * MAX_TIERS;

#[inline(always)]
pub const fn aggregate_slot(tier: u32) -> u32 {
    tier
}

#[inline(always)]
pub const fn untracked_slot(tier: u32) -> u32 {
    MAX_TIERS + tier
}

#[inline(always)]
pub const fn new_sources_slot(tier: u32) -> u32 {
    2 * MAX_TIERS + tier
}

/// One rate limit as the kernel applies it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Nanoseconds per unit (packet, byte, connection, request) in fixed point
    /// with [`INTERVAL_SHIFT`] fractional bits. Zero means unlimited.
    pub interval_fp: u64,
    /// Bucket depth in nanoseconds: burst × interval.
    pub capacity_ns: u64,
}

impl Limit {
    pub const UNLIMITED: Limit = Limit {
        interval_fp: 0,
        capacity_ns: 0,
    };

    /// A limit of `rate` units per `period_ns` with a burst of `burst` units.
    /// Returns `None` for a zero rate, a zero burst, or values that overflow.
    pub fn per_period(rate: u64, period_ns: u64, burst: u64) -> Option<Limit> {
        if rate == 0 || burst == 0 {
            return None;
        }
        let interval_fp = ((period_ns as u128) << INTERVAL_SHIFT) / rate as u128;
        if interval_fp == 0 || interval_fp > u64::MAX as u128 {
            return None;
        }
        let capacity = (interval_fp * burst as u128) >> INTERVAL_SHIFT;
        if capacity > u64::MAX as u128 / 2 {
            return None;
        }
        Some(Limit {
            interval_fp: interval_fp as u64,
            capacity_ns: capacity as u64,
        })
    }

    #[inline(always)]
    pub const fn is_unlimited(&self) -> bool {
        self.interval_fp == 0
    }

    /// Emission time of `cost` units, in nanoseconds.
    ///
    /// Single units need no multiplication. Multi-unit costs (bytes) are
    /// clamped to [`MAX_COST`] and intervals to [`MAX_BYTE_INTERVAL_FP`] so the
    /// product fits 64 bits: BPF has no 128-bit multiply for an overflow check.
    #[inline(always)]
    pub const fn increment_ns(&self, cost: u64) -> u64 {
        if cost == 1 {
            return self.interval_fp >> INTERVAL_SHIFT;
        }
        let cost = if cost > MAX_COST { MAX_COST } else { cost };
        let fp = if self.interval_fp > MAX_BYTE_INTERVAL_FP {
            MAX_BYTE_INTERVAL_FP
        } else {
            self.interval_fp
        };
        (cost * fp) >> INTERVAL_SHIFT
    }

    /// Emission time of `cost` units in 32-bit ticks, rounded down (with
    /// [`Limit::capacity_ticks`] rounded up, a full burst always fits). The
    /// rounding over-admits by at most one tick per event: under 1% below
    /// 10,000 events/s.
    #[inline(always)]
    pub const fn increment_ticks(&self) -> u32 {
        let ticks = self.interval_fp >> (INTERVAL_SHIFT + TICK_SHIFT);
        if ticks > u32::MAX as u64 {
            u32::MAX
        } else {
            ticks as u32
        }
    }

    #[inline(always)]
    pub const fn capacity_ticks(&self) -> u32 {
        let ticks = (self.capacity_ns + (1 << TICK_SHIFT) - 1) >> TICK_SHIFT;
        if ticks > MAX_CAPACITY_TICKS as u64 {
            MAX_CAPACITY_TICKS
        } else {
            ticks as u32
        }
    }

    /// Whether this limit can run as a 32-bit tick bucket (connections,
    /// requests): at least one tick per unit and a depth under half the wrap.
    pub const fn fits_ticks(&self) -> bool {
        let interval_ticks = self.interval_fp >> (INTERVAL_SHIFT + TICK_SHIFT);
        self.is_unlimited()
            || (interval_ticks >= 1
                && interval_ticks <= MAX_CAPACITY_TICKS as u64
                && (self.capacity_ns >> TICK_SHIFT) < MAX_CAPACITY_TICKS as u64)
    }

    /// Units per second, for display.
    pub fn rate_per_second(&self) -> f64 {
        if self.is_unlimited() {
            return f64::INFINITY;
        }
        (1_000_000_000f64 * (1u64 << INTERVAL_SHIFT) as f64) / self.interval_fp as f64
    }

    /// Burst in units, for display.
    pub fn burst(&self) -> u64 {
        if self.is_unlimited() {
            return 0;
        }
        (((self.capacity_ns as u128) << INTERVAL_SHIFT) / self.interval_fp as u128) as u64
    }
}

/// Largest multi-unit cost: an XDP frame is shorter than 64 KiB.
pub const MAX_COST: u64 = 0xFFFF;
/// Largest interval a multi-unit (bytes) limit may have: 2^31 ns per byte with
/// 16 fractional bits, i.e. byte rates of at least 1 B/s.
pub const MAX_BYTE_INTERVAL_FP: u64 = 1 << 47;

/// The longest bucket the 32-bit (connections, requests) form can hold: under
/// half the 2^32-tick wrap. See [`crate::gcra::admit_wrapping`].
pub const MAX_CAPACITY_TICKS: u32 = (1 << 31) - 1;

/// `TierConfig::flags`: the tier is configured (unconfigured slots pass traffic
/// uncounted against limits).
pub const TIER_ACTIVE: u32 = 1 << 0;
/// `TierConfig::flags`: count would-drops but pass everything.
pub const TIER_SHADOW: u32 = 1 << 1;
/// `TierConfig::flags`: count what each source is admitted
/// ([`SourceState::admitted`]), for the tier's fleet-wide limits.
pub const TIER_COUNT_ADMITTED: u32 = 1 << 2;

/// One usage tier (value of `TG_TIERS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierConfig {
    /// Per-source limits, indexed by [`LimitKind`].
    pub limits: [Limit; 4],
    /// Packets/s ceiling for all tracked sources of the tier together. With a
    /// new-source budget, untracked sources get a ceiling of the same size of
    /// their own (see [`crate::limiter::admit_new_source`]).
    pub aggregate: Limit,
    /// New tracked sources per second (a GCRA limit on inserts into the source
    /// map). Unlimited: every new source is tracked (no admission control).
    pub new_sources: Limit,
    /// IPv6 sources are grouped by this prefix length (1..=64).
    pub ipv6_prefix: u32,
    pub flags: u32,
}

impl TierConfig {
    #[inline(always)]
    pub const fn is_shadow(&self) -> bool {
        self.flags & TIER_SHADOW != 0
    }
    #[inline(always)]
    pub const fn is_active(&self) -> bool {
        self.flags & TIER_ACTIVE != 0
    }
    /// Whether the program counts what each source of the tier is admitted.
    #[inline(always)]
    pub const fn counts_admitted(&self) -> bool {
        self.flags & TIER_COUNT_ADMITTED != 0
    }
    /// Whether new sources are admitted under a budget.
    #[inline(always)]
    pub const fn admits_new_sources(&self) -> bool {
        !self.new_sources.is_unlimited()
    }
    /// Whether the tier limits HTTP requests (so the program must count
    /// them: [`SETTINGS_COUNT_REQUESTS`]).
    #[inline(always)]
    pub const fn limits_requests(&self) -> bool {
        !self.limits[LimitKind::Requests as usize].is_unlimited()
    }
}

/// Rule actions (value of `TG_RULES_V4` / `TG_RULES_V6`).
pub const RULE_TIER: u32 = 0;
pub const RULE_ALLOW: u32 = 1;
pub const RULE_DENY: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    /// One of [`RULE_TIER`], [`RULE_ALLOW`], [`RULE_DENY`].
    pub action: u32,
    /// The tier, for [`RULE_TIER`]; for allow/deny, the tier they are counted under.
    pub tier: u32,
    /// For [`RULE_DENY`]: when the deny ends, in `bpf_ktime_get_ns` time
    /// (CLOCK_MONOTONIC ns); from then on the source is judged in `tier` as
    /// by a tier rule, whatever the daemon is doing (a fleet deny ends with
    /// its window, a ban with its time). 0: never.
    pub expires_ns: u64,
}

impl RuleValue {
    /// Whether the rule denies at `now_ns` (an expiring deny only before it expires).
    #[inline(always)]
    pub const fn denies_at(&self, now_ns: u64) -> bool {
        self.action == RULE_DENY && (self.expires_ns == 0 || now_ns < self.expires_ns)
    }
}

/// Per-source bucket state (value of `TG_SOURCES_V4` / `TG_SOURCES_V6`). 32
/// bytes: a tracked source costs about 105 bytes of kernel memory including
/// the LRU hash's own element header (48 bytes) and bucket array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// Nanosecond TAT of the packets bucket.
    pub packets_tat: u64,
    /// Nanosecond TAT of the bytes bucket.
    pub bytes_tat: u64,
    /// Two wrapping 32-bit tick TATs in one word (BPF compare-and-swap is
    /// 64-bit): new connections in the low half, HTTP requests in the high half.
    pub l7_tats: u64,
    /// What the source was admitted while its tier counts it
    /// ([`TIER_COUNT_ADMITTED`]), as two wrapping 32-bit counters in one word
    /// (one atomic add): packets in the low half, request units (route costs
    /// included) in the high half. The packets half carries into the requests
    /// half when it wraps; [`AdmittedDelta::between`] takes that back out.
    pub admitted: u64,
}

impl SourceState {
    pub const CONNECTIONS_SHIFT: u32 = 0;
    pub const REQUESTS_SHIFT: u32 = 32;
    pub const ADMITTED_REQUESTS_SHIFT: u32 = 32;

    /// What one admitted packet carrying `requests` request units adds to
    /// [`SourceState::admitted`].
    #[inline(always)]
    pub const fn admitted_increment(requests: u32) -> u64 {
        1 | (requests as u64) << Self::ADMITTED_REQUESTS_SHIFT
    }

    pub const fn connections_tat(&self) -> u32 {
        (self.l7_tats >> Self::CONNECTIONS_SHIFT) as u32
    }

    pub const fn requests_tat(&self) -> u32 {
        (self.l7_tats >> Self::REQUESTS_SHIFT) as u32
    }
}

/// What a source was admitted between two reads of
/// [`SourceState::admitted`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmittedDelta {
    pub packets: u64,
    pub requests: u64,
}

impl AdmittedDelta {
    /// The difference between two reads of one counter word, `before` then
    /// `after`, assuming fewer than 2^32 packets in between (at 250 ms reads
    /// that is 17 billion packets a second). A packets half that wrapped
    /// carried one into the requests half, which is taken back out. `None`
    /// when the word went backwards: the source's state was evicted and made
    /// again in between, so the counter restarted from zero.
    pub const fn between(before: u64, after: u64) -> Option<AdmittedDelta> {
        let (p0, p1) = (before as u32, after as u32);
        let (r0, r1) = (
            (before >> SourceState::ADMITTED_REQUESTS_SHIFT) as u32,
            (after >> SourceState::ADMITTED_REQUESTS_SHIFT) as u32,
        );
        let wrapped = (p1 < p0) as u32;
        let packets = p1.wrapping_sub(p0);
        let requests = r1.wrapping_sub(r0).wrapping_sub(wrapped);
        // Half the counter's range in one interval is not traffic: a restart.
        if packets >= 1 << 31 || requests >= 1 << 31 {
            return None;
        }
        Some(AdmittedDelta {
            packets: packets as u64,
            requests: requests as u64,
        })
    }

    /// Everything a counter word holds (a state made since the last read).
    pub const fn since_zero(word: u64) -> AdmittedDelta {
        AdmittedDelta {
            packets: word as u32 as u64,
            requests: (word >> SourceState::ADMITTED_REQUESTS_SHIFT) as u32 as u64,
        }
    }
}

/// Per-CPU counter slot (value of `TG_COUNTERS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// How many HTTP ports [`Settings::http_ports`] holds (0 = unused slot).
pub const MAX_HTTP_PORTS: usize = 8;

/// Global settings (single entry of `TG_SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Tier of sources that match no rule.
    pub default_tier: u32,
    pub flags: u32,
    /// The HTTP ports: TCP destination ports whose payload is HTTP/1.x. Their
    /// request heads are what a requests limit charges ([`crate::http::HeadEnds`])
    /// and their requests are sampled; all zero: no HTTP anywhere.
    pub http_ports: [u16; MAX_HTTP_PORTS],
    /// Payload bytes captured per HTTP sample (1..=[`MAX_SNAP_LEN`]).
    pub http_snap_len: u32,
    /// Sample one HTTP request in this many (per CPU); 0 disables.
    pub http_sample_every: u32,
    /// Per-CPU HTTP sample budget (samples/s with a burst), a GCRA limit.
    pub http_budget: Limit,
    /// Sample one judged packet in this many (per CPU) for the top-talkers
    /// summary; 0 disables.
    pub verdict_sample_every: u32,
    /// What a request head whose route is unknown charges its source's
    /// requests bucket (a head split across segments, or past the routed
    /// heads of a segment: [`crate::route`]): the dearest enforced route's
    /// cost, at least 1.
    pub split_head_cost: u32,
    /// Nanoseconds of one jiffy (`clock_getres(CLOCK_MONOTONIC_COARSE)`:
    /// 1/HZ), written by the daemon with every settings write: the
    /// new-source budget and the untracked ceiling are timed by
    /// `bpf_jiffies64() × jiffy_ns`. 0 (never written): they are timed by
    /// `bpf_ktime_get_coarse_ns` instead, on the same tick.
    pub jiffy_ns: u32,
}

impl Settings {
    #[inline(always)]
    pub fn is_http_port(&self, port: u16) -> bool {
        let mut i = 0;
        while i < MAX_HTTP_PORTS {
            if self.http_ports[i] == port && port != 0 {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Largest HTTP payload capture.
pub const MAX_SNAP_LEN: u32 = 1024;

/// Ring-buffer record kinds (`SampleHeader::kind`).
pub const SAMPLE_HTTP: u8 = 1;
pub const SAMPLE_VERDICT: u8 = 2;

/// Header of every record in `TG_SAMPLES`; HTTP records are followed by
/// `captured` payload bytes (the record itself is padded to a size class).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the packet was judged.
    pub time_ns: u64,
    /// Source address; IPv4 in the first four bytes.
    pub src: [u8; 16],
    /// [`SAMPLE_HTTP`] or [`SAMPLE_VERDICT`].
    pub kind: u8,
    /// 4 or 6.
    pub family: u8,
    /// A [`Verdict`] as u8.
    pub verdict: u8,
    /// [`SAMPLE_FLAG_REQUEST`]: the packet starts an HTTP request.
    pub flags: u8,
    pub tier: u32,
    pub ifindex: u32,
    pub dst_port: u16,
    /// Payload bytes that follow the header.
    pub captured: u16,
    pub frame_len: u32,
    /// Packets this sample stands for (the 1-in-K period).
    pub scale: u32,
}

pub const SAMPLE_FLAG_REQUEST: u8 = 1;

/// An HTTP sample record of one size class.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpSample<const N: usize> {
    pub header: SampleHeader,
    pub payload: [u8; N],
}

/// Per-CPU sampler state and its accounting (single entry of `TG_SAMPLER`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerState {
    /// HTTP requests seen on sampled ports (for 1-in-K).
    pub http_seen: u64,
    /// Packets judged (for verdict 1-in-K).
    pub verdict_seen: u64,
    /// TAT of this CPU's HTTP sample budget.
    pub budget_tat: u64,
    /// HTTP samples written.
    pub http_sampled: u64,
    /// HTTP samples skipped because the budget was spent.
    pub http_budget_skipped: u64,
    /// HTTP samples lost because the ring buffer was full.
    pub http_ring_full: u64,
    /// Verdict samples written.
    pub verdict_sampled: u64,
    /// Verdict samples lost because the ring buffer was full.
    pub verdict_ring_full: u64,
}

/// `Settings::flags`: consult `TG_RULES_V4` (skipped while empty, to save a lookup).
pub const SETTINGS_RULES_V4: u32 = 1 << 0;
/// `Settings::flags`: consult `TG_RULES_V6`.
pub const SETTINGS_RULES_V6: u32 = 1 << 1;
/// `Settings::flags`: count the HTTP request heads of TCP segments to the
/// HTTP ports (some tier limits requests; the scan costs nothing otherwise).
pub const SETTINGS_COUNT_REQUESTS: u32 = 1 << 2;
/// `Settings::flags`: look up the route of every request head on the HTTP
/// ports in the route table (some route is configured).
pub const SETTINGS_ROUTES: u32 = 1 << 3;
/// `Settings::flags`: some route names a host: find each routed request's
/// Host header ([`crate::route::ROUTE_HOST`]).
pub const SETTINGS_ROUTE_HOSTS: u32 = 1 << 4;
/// `Settings::flags`: the route table's generation in use (0 or this bit:
/// generation 1; [`crate::route_table`]).
pub const SETTINGS_ROUTE_TABLE: u32 = 1 << 5;

/// Layout identification (single entry of `TG_META`), written by the daemon that
/// loaded the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub layout_version: u32,
    pub _reserved: u32,
}

/// Map names, shared by the program and the daemon that pins them.
pub mod names {
    pub const SETTINGS: &str = "TG_SETTINGS";
    pub const TIERS: &str = "TG_TIERS";
    pub const AGGREGATE: &str = "TG_AGGREGATE";
    pub const RULES_V4: &str = "TG_RULES_V4";
    pub const RULES_V6: &str = "TG_RULES_V6";
    pub const SOURCES_V4: &str = "TG_SOURCES_V4";
    pub const SOURCES_V6: &str = "TG_SOURCES_V6";
    pub const COUNTERS: &str = "TG_COUNTERS";
    pub const SAMPLES: &str = "TG_SAMPLES";
    pub const SAMPLER: &str = "TG_SAMPLER";
    pub const META: &str = "TG_META";
    /// The request-head scan's per-CPU scratch state: lives for one packet.
    pub const SCAN: &str = "TG_SCAN";
    /// Routes ([`crate::route_table`]): the entries (port, host tag,
    /// request-line prefix and `RouteValue`), both generations.
    pub const ROUTES: &str = "TG_ROUTES";
    /// The route table's headers (seed, length lists), per generation.
    pub const ROUTE_HEADERS: &str = "TG_ROUTE_HEADERS";
    /// The route table's buckets, both generations.
    pub const ROUTE_BUCKETS: &str = "TG_ROUTE_BUCKETS";
    /// Per route (by `RouteValue::index`), the TAT of its ceiling.
    pub const ROUTE_CEILINGS: &str = "TG_ROUTE_CEILINGS";
    /// Per route, per CPU, `RouteCounter`.
    pub const ROUTE_COUNTERS: &str = "TG_ROUTE_COUNTERS";
    /// The tracked-source filter ([`crate::tracked`]).
    pub const TRACKED: &str = "TG_TRACKED";
    pub const PROGRAM: &str = "tollgate";
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)] plain integers with no padding holes that the
    // kernel would read as meaningful.
    unsafe impl aya::Pod for Limit {}
    unsafe impl aya::Pod for TierConfig {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for SourceState {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for Meta {}
    unsafe impl aya::Pod for SampleHeader {}
    unsafe impl aya::Pod for SamplerState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_deltas_survive_the_packets_half_wrapping_and_see_restarts() {
        let inc = |w: u64, requests: u32| w.wrapping_add(SourceState::admitted_increment(requests));
        let mut w = (u32::MAX - 1) as u64 | 5 << 32;
        let before = w;
        // Four packets, the second and fourth carrying 3 request units each:
        // the packets half wraps and carries one into the requests half.
        for r in [0, 3, 0, 3] {
            w = inc(w, r);
        }
        assert_eq!(
            AdmittedDelta::between(before, w),
            Some(AdmittedDelta {
                packets: 4,
                requests: 6
            })
        );
        assert_eq!(AdmittedDelta::between(w, w), Some(AdmittedDelta::default()));
        // A state made again counts from zero: the word went backwards.
        assert_eq!(AdmittedDelta::between(1_000 | 9 << 32, 7 | 1 << 32), None);
        assert_eq!(
            AdmittedDelta::since_zero(7 | 1 << 32),
            AdmittedDelta {
                packets: 7,
                requests: 1
            }
        );
    }

    #[test]
    fn state_is_32_bytes() {
        assert_eq!(core::mem::size_of::<SourceState>(), 32);
        assert_eq!(core::mem::size_of::<TierConfig>(), 104);
        assert_eq!(core::mem::size_of::<RuleValue>(), 16);
    }

    #[test]
    fn limit_round_trips_rate_and_burst() {
        let l = Limit::per_period(100, 1_000_000_000, 20).unwrap();
        assert_eq!(l.increment_ns(1), 10_000_000);
        assert_eq!(l.capacity_ns, 200_000_000);
        assert!((l.rate_per_second() - 100.0).abs() < 1e-6);
        assert_eq!(l.burst(), 20);
        // 10 MB/s: 100 ns per byte.
        let b = Limit::per_period(10_000_000, 1_000_000_000, 1_000_000).unwrap();
        assert_eq!(b.increment_ns(1500), 150_000);
        // 3 GB/s keeps sub-nanosecond precision per byte.
        let g = Limit::per_period(3_000_000_000, 1_000_000_000, 1 << 20).unwrap();
        assert!(g.increment_ns(3000).abs_diff(1000) <= 1);
    }

    #[test]
    fn rejects_degenerate_limits() {
        assert!(Limit::per_period(0, 1_000_000_000, 1).is_none());
        assert!(Limit::per_period(1, 1_000_000_000, 0).is_none());
        assert!(Limit::per_period(u64::MAX, 1, 1).is_none());
    }

    #[test]
    fn counter_indices_are_dense_and_disjoint() {
        let mut seen = std::collections::HashSet::new();
        for t in 0..MAX_TIERS {
            for v in Verdict::ALL {
                assert!(seen.insert(v.counter_index(t)));
                assert!(v.counter_index(t) < COUNTER_SLOTS);
            }
        }
    }
}
