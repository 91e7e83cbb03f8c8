use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::{
        bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_xdp_load_bytes},
    },
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use tollgate_common::{
    AGGREGATE_SLOTS, COUNTER_SLOTS, Counter, HttpSample, MAX_SNAP_LEN, MAX_TIERS, Meta, RULE_ALLOW,
    RULE_DENY, RuleValue, SAMPLE_FLAG_REQUEST, SAMPLE_HTTP, SAMPLE_VERDICT,
    SETTINGS_COUNT_REQUESTS, SETTINGS_ROUTE_HOSTS, SETTINGS_ROUTE_TABLE, SETTINGS_ROUTES,
    SETTINGS_RULES_V4, SETTINGS_RULES_V6, SampleHeader, SamplerState, Settings, SourceState,
    TierConfig, Verdict, aggregate_slot, gcra,
    http::{self, HeadEnds},
    limiter::{self, Costs, NewSource},
    new_sources_slot,
    parse::{self, IpPacket, PacketReader, Parsed, SourceAddr, Transport},
    route::{
        HOST_SCAN_MAX, HostTag, MAX_ROUTES, ROUTE_LINE_LEN, ROUTE_SHADOW, ROUTE_SLOTS,
        ROUTED_HEADS, RouteCounter, SegmentRoutes,
    },
    route_table::{
        self, ROUTE_BUCKET_SLOTS, ROUTE_BUCKETS, ROUTE_CLASSES, ROUTE_ENTRIES, ROUTE_GENERATIONS,
        ROUTE_KEY_WORDS, ROUTE_LENGTHS, RouteBucket, RouteEntry, RouteHeader,
    },
    tracked::{
        self, FilterBit, TRACKED_FILTER_GENERATION, TRACKED_FILTER_MAX_BITS,
        TRACKED_FILTER_MIN_BITS, TRACKED_FILTER_SIZE,
    },
    untracked_slot,
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
/// Per tier, the TATs of the aggregate ceiling, the untracked ceiling and the
/// new-source budget (`aggregate_slot`, `untracked_slot`, `new_sources_slot`),
/// apart from the config so reloads keep them.
#[map(name = "TG_AGGREGATE")]
static TG_AGGREGATE: Array<u64> = Array::with_max_entries(AGGREGATE_SLOTS, 0);
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
/// HTTP request samples and verdict samples for the daemon.
#[map(name = "TG_SAMPLES")]
static TG_SAMPLES: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map(name = "TG_SAMPLER")]
static TG_SAMPLER: PerCpuArray<SamplerState> = PerCpuArray::with_max_entries(1, 0);

const DEFAULT_RING_BYTES: u32 = 4 << 20;

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
        Err(Internal) => {
            // Rare by construction (a lookup that cannot fail did): say so in
            // the daemon's log, through aya-log.
            aya_log_ebpf::warn!(
                &ctx,
                "internal error judging a packet (settings, tier or source state unavailable): passed"
            );
            xdp_action::XDP_PASS
        }
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
        Parsed::Ip(packet) => {
            let (request, heads) = match packet.transport {
                Transport::Tcp {
                    payload, dst_port, ..
                } => {
                    let request = parse::is_http_request(&frame, payload);
                    let heads = if settings.flags & (SETTINGS_COUNT_REQUESTS | SETTINGS_ROUTES) != 0
                        && settings.is_http_port(dst_port)
                    {
                        request_heads(ctx, settings, payload as u32, len as u32, dst_port, request)?
                    } else {
                        Heads::NONE
                    };
                    (request, heads)
                }
                _ => (false, Heads::NONE),
            };
            let judged = judge(settings, &packet, len, heads)?;
            if heads.counted {
                tg_route_count(judged.1.drops() as u32);
            }
            sample(ctx, settings, &packet, judged, len, request);
            judged
        }
    };
    count(tier, verdict, len);
    Ok(if verdict.drops() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    })
}

/// Rules, then admission control for a source the tier does not track yet,
/// then the source's buckets, then the tier's aggregate ceiling.
#[inline(always)]
fn judge(
    settings: &Settings,
    packet: &IpPacket,
    len: u64,
    heads: Heads,
) -> Result<(u32, Verdict), Internal> {
    let tier_index = match lookup_rule(settings, &packet.src) {
        Some(rule) if rule.action == RULE_ALLOW => return Ok((rule.tier, Verdict::Allowed)),
        // A deny with an expiry reads the clock; past it, the source is
        // judged in the rule's tier.
        Some(rule)
            if rule.action == RULE_DENY
                // SAFETY: a BPF helper with no preconditions.
                && (rule.expires_ns == 0 || rule.denies_at(unsafe { bpf_ktime_get_ns() })) =>
        {
            return Ok((rule.tier, Verdict::Denied));
        }
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
        requests: heads.requests,
    };
    let verdict = match source_state(&packet.src, tier_index, tier, settings.jiffy_ns)? {
        Ok(state) => {
            // SAFETY: a BPF helper with no preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            let aggregate = TG_AGGREGATE
                .get_ptr_mut(aggregate_slot(tier_index))
                .ok_or(Internal)?;
            let tier_ptr: *const TierConfig = tier;
            let charge = Charge {
                costs,
                routed: heads.routed as u32,
            };
            let verdict = charged_verdict(tg_charge(state, tier_ptr, aggregate, now, &charge))?;
            if verdict == Verdict::Passed && tier.counts_admitted() {
                // SAFETY: a live map value, only changed through atomics.
                unsafe { limiter::count_admitted(state, &charge.costs) };
            }
            verdict
        }
        // An untracked source's requests still go through their routes'
        // ceilings: the backend's capacity is every source's.
        // SAFETY: a BPF helper with no preconditions.
        Err(Verdict::Untracked)
            if heads.routed && tg_route_ceilings(unsafe { bpf_ktime_get_ns() }) != 0 =>
        {
            Verdict::DroppedRouteCeiling
        }
        Err(untracked) => untracked,
    };
    Ok((tier_index, finish(verdict, packet, tier)))
}

/// What [`tg_charge`] returns when a pointer it was given is null.
const CHARGE_INTERNAL: u32 = u32::MAX;

/// The verdict [`tg_charge`] returned.
#[inline(always)]
fn charged_verdict(code: u32) -> Result<Verdict, Internal> {
    Ok(match code {
        c if c == Verdict::Passed as u32 => Verdict::Passed,
        c if c == Verdict::DroppedPackets as u32 => Verdict::DroppedPackets,
        c if c == Verdict::DroppedBytes as u32 => Verdict::DroppedBytes,
        c if c == Verdict::DroppedConnections as u32 => Verdict::DroppedConnections,
        c if c == Verdict::DroppedRequests as u32 => Verdict::DroppedRequests,
        c if c == Verdict::DroppedAggregate as u32 => Verdict::DroppedAggregate,
        c if c == Verdict::DroppedRouteCeiling as u32 => Verdict::DroppedRouteCeiling,
        _ => return Err(Internal),
    })
}

/// What [`tg_charge`] charges: the packet's costs, and whether its request
/// heads have routes (`TG_SCAN`'s routes, charged first).
#[repr(C)]
pub struct Charge {
    costs: Costs,
    routed: u32,
}

/// Charges a tracked source's packet: its routes' ceilings, then the
/// source's buckets, then the tier's aggregate ceiling; whatever refuses it
/// gives back what the steps before charged. A global function: the
/// verifier checks it once, on its own, instead of once per path through the
/// parser that reaches it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_charge(
    state: *mut SourceState,
    tier: *const TierConfig,
    aggregate: *mut u64,
    now: u64,
    charge: *const Charge,
) -> u32 {
    if state.is_null() || tier.is_null() || aggregate.is_null() || charge.is_null() {
        return CHARGE_INTERNAL;
    }
    // SAFETY: non-null pointers to a live map value, a tier, an array slot
    // and the caller's costs; the buckets only change through the atomics.
    let (tier, charge) = unsafe { (&*tier, &*charge) };
    let routed = charge.routed != 0;
    // A request its route's ceiling refuses costs its source nothing.
    if routed && tg_route_ceilings(now) != 0 {
        return Verdict::DroppedRouteCeiling as u32;
    }
    let verdict = match unsafe { limiter::charge_source(state, tier, now, &charge.costs) } {
        Err(kind) => kind.drop_verdict(),
        Ok(charges) => {
            if unsafe { limiter::charge_aggregate(aggregate, &tier.aggregate, now) } {
                return Verdict::Passed as u32;
            }
            // Not admitted: the source keeps its budget for its next packet.
            unsafe { limiter::refund_source(state, &charges) };
            Verdict::DroppedAggregate
        }
    };
    if routed {
        tg_route_refund();
    }
    verdict as u32
}

/// Admission control for a source the tier does not track, in a tier with a
/// new-source budget (`limiter::admit_new_source`): `None` when the source is
/// within the budget and is to be tracked, else the untracked packet's verdict.
#[inline(always)]
fn admit_new_source(
    tier_index: u32,
    tier: &TierConfig,
    now: u64,
) -> Result<Option<Verdict>, Internal> {
    let budget = TG_AGGREGATE
        .get_ptr_mut(new_sources_slot(tier_index))
        .ok_or(Internal)?;
    let untracked = TG_AGGREGATE
        .get_ptr_mut(untracked_slot(tier_index))
        .ok_or(Internal)?;
    // SAFETY: array slots, only changed through the limiter's atomics.
    Ok(
        match unsafe { limiter::admit_new_source(budget, untracked, tier, now) } {
            NewSource::Track => None,
            NewSource::Untracked => Some(Verdict::Untracked),
            NewSource::OverCeiling => Some(Verdict::DroppedUntracked),
        },
    )
}

/// The verdict as counted: an admitted (or untracked but passed) packet whose
/// transport header is malformed is dropped; a shadow tier passes what it
/// would drop.
#[inline(always)]
fn finish(verdict: Verdict, packet: &IpPacket, tier: &TierConfig) -> Verdict {
    let verdict = if matches!(verdict, Verdict::Passed | Verdict::Untracked)
        && packet.transport == Transport::Malformed
    {
        Verdict::Malformed
    } else {
        verdict
    };
    if verdict.drops() && tier.is_shadow() {
        Verdict::ShadowWouldDrop
    } else {
        verdict
    }
}

/// Feeds the daemon: 1-in-K verdict samples (top talkers) and budgeted 1-in-K
/// HTTP request samples with the first bytes of the payload. Every skip for
/// budget and every full-ring loss is counted in `TG_SAMPLER`.
#[inline(always)]
fn sample(
    ctx: &XdpContext,
    settings: &Settings,
    packet: &IpPacket,
    (tier, verdict): (u32, Verdict),
    len: u64,
    request: bool,
) {
    // Most packets are neither: decide before touching the sampler's map.
    let http_port = match packet.transport {
        Transport::Tcp { dst_port, .. } if request => dst_port,
        _ => 0,
    };
    let wants_http =
        http_port != 0 && settings.http_sample_every != 0 && settings.is_http_port(http_port);
    if settings.verdict_sample_every == 0 && !wants_http {
        return;
    }
    let Some(state) = TG_SAMPLER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; XDP runs with preemption disabled.
    let state = unsafe { &mut *state };
    let header = |kind: u8, dst_port: u16, captured: u16, scale: u32, now: u64| {
        let (family, src) = match packet.src {
            SourceAddr::V4(a) => (
                4,
                [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            SourceAddr::V6(a) => (6, a),
        };
        SampleHeader {
            time_ns: now,
            src,
            kind,
            family,
            verdict: verdict as u8,
            flags: if request { SAMPLE_FLAG_REQUEST } else { 0 },
            tier,
            ifindex: ctx.ingress_ifindex() as u32,
            dst_port,
            captured,
            frame_len: len as u32,
            scale,
        }
    };

    let every = settings.verdict_sample_every;
    if every != 0 {
        state.verdict_seen += 1;
        if state.verdict_seen % every as u64 == 0 {
            match TG_SAMPLES.reserve::<SampleHeader>(0) {
                Some(mut entry) => {
                    // SAFETY: a BPF helper with no preconditions.
                    let now = unsafe { bpf_ktime_get_ns() };
                    entry.write(header(SAMPLE_VERDICT, 0, 0, every, now));
                    entry.submit(0);
                    state.verdict_sampled += 1;
                }
                None => state.verdict_ring_full += 1,
            }
        }
    }

    let Transport::Tcp { payload, .. } = packet.transport else {
        return;
    };
    if !wants_http {
        return;
    }
    let (dst_port, every) = (http_port, settings.http_sample_every);
    state.http_seen += 1;
    if state.http_seen % every as u64 != 0 {
        return;
    }
    // SAFETY: a BPF helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let budget = &settings.http_budget;
    if !budget.is_unlimited() {
        match gcra::admit(
            state.budget_tat,
            now,
            budget.increment_ns(1),
            budget.capacity_ns,
        ) {
            Some(tat) => state.budget_tat = tat,
            None => {
                state.http_budget_skipped += 1;
                return;
            }
        }
    }
    let available = len.saturating_sub(payload as u64);
    let snap = settings.http_snap_len.min(MAX_SNAP_LEN) as u64;
    let want = if available < snap { available } else { snap } as u32;
    let written = if want <= 128 {
        write_http::<128>(ctx, payload as u32, want, || {
            header(SAMPLE_HTTP, dst_port, want as u16, every, now)
        })
    } else if want <= 256 {
        write_http::<256>(ctx, payload as u32, want, || {
            header(SAMPLE_HTTP, dst_port, want as u16, every, now)
        })
    } else if want <= 512 {
        write_http::<512>(ctx, payload as u32, want, || {
            header(SAMPLE_HTTP, dst_port, want as u16, every, now)
        })
    } else {
        write_http::<1024>(ctx, payload as u32, want, || {
            header(SAMPLE_HTTP, dst_port, want as u16, every, now)
        })
    };
    if written {
        state.http_sampled += 1;
    } else {
        state.http_ring_full += 1;
    }
}

/// Reserves an N-byte-payload record, copies `want` (<= N) payload bytes with
/// `bpf_xdp_load_bytes` (safe for any offset, also on multi-buffer frames).
/// Returns false when the ring is full.
#[inline(always)]
fn write_http<const N: usize>(
    ctx: &XdpContext,
    offset: u32,
    want: u32,
    header: impl FnOnce() -> SampleHeader,
) -> bool {
    let Some(mut entry) = TG_SAMPLES.reserve::<HttpSample<N>>(0) else {
        return false;
    };
    let record = entry.as_mut_ptr();
    let mut h = header();
    // Bound the length for the verifier: 1..=N.
    let len = if want == 0 || want as usize > N {
        0
    } else {
        want
    };
    let copied = len != 0
        && unsafe {
            bpf_xdp_load_bytes(
                ctx.as_ptr() as *mut _,
                offset,
                (&raw mut (*record).payload) as *mut _,
                len,
            )
        } == 0;
    if !copied {
        h.captured = 0;
    }
    // SAFETY: `record` points to the reserved entry.
    unsafe { (&raw mut (*record).header).write(h) };
    entry.submit(0);
    true
}

/// Payload bytes scanned at most: more than any frame this program sees
/// carries (it is loaded without `xdp.frags`, so a frame is one buffer of at
/// most a page), and a bound the verifier can check packet offsets against.
const SCAN_MAX: u32 = 4096;

/// Payload bytes one step of the head scan skips at most, 32 at a time
/// ([`scan_step`]): every four more cost the verifier about 18,000
/// instructions (256 verifies in 720,405, 512 in 793,717).
const SCAN_STEP: u32 = 256;

/// Where the head scan and the route pass stand between `bpf_loop` steps.
#[repr(C)]
#[derive(Clone, Copy)]
struct ScanState {
    offset: u32,
    end: u32,
    heads: HeadEnds,
    /// Route pass: the payload's offset, whether it begins with a request
    /// line (1) or inside a head (0), the destination port, the heads
    /// routed so far, the heads routed before the pass's `bpf_loop` (its
    /// index 0 is head `skip`), and the route table's generation in use.
    payload: u32,
    first: u32,
    port: u32,
    routed_heads: u32,
    skip: u32,
    table: u32,
    /// Whether some route names a host; the Host header search of the head
    /// being routed: where it stands, where it stops, its state, the tag.
    hosts: u32,
    host_at: u32,
    host_end: u32,
    host_state: u32,
    tag: HostTag,
    /// The route key of the head being routed (`common::route`: the port,
    /// the host tag, then the request line's first bytes), and its prefix
    /// hashes (`route_table::prefix_hashes_into`).
    key: [u64; ROUTE_KEY_WORDS],
    prefix: [u64; ROUTE_KEY_WORDS],
    routes: SegmentRoutes,
}

/// The head scan's state, per CPU. It lives in a map rather than on the
/// stack so that the verifier treats its fields as unknown numbers: on the
/// stack it would follow the exact offset and count through every step as
/// constants and never see two steps as the same state.
#[map(name = "TG_SCAN")]
static TG_SCAN: PerCpuArray<ScanState> = PerCpuArray::with_max_entries(1, 0);

/// The route table (`common::route_table`), two generations: per
/// generation a header (hash seed, the length lists), the buckets, and the
/// routes (port, host tag and request-line prefix to what a request costs;
/// a route without a port is written once per HTTP port).
#[map(name = "TG_ROUTE_HEADERS")]
static TG_ROUTE_HEADERS: Array<RouteHeader> = Array::with_max_entries(ROUTE_GENERATIONS, 0);
#[map(name = "TG_ROUTE_BUCKETS")]
static TG_ROUTE_BUCKETS: Array<RouteBucket> =
    Array::with_max_entries(ROUTE_GENERATIONS * ROUTE_BUCKETS, 0);
#[map(name = "TG_ROUTES")]
static TG_ROUTES: Array<RouteEntry> = Array::with_max_entries(ROUTE_GENERATIONS * ROUTE_ENTRIES, 0);
/// Per route, the TAT of its ceiling (all sources together), apart from the
/// routes so reloads keep it.
#[map(name = "TG_ROUTE_CEILINGS")]
static TG_ROUTE_CEILINGS: Array<u64> = Array::with_max_entries(MAX_ROUTES, 0);
/// Per route, per CPU: requests, dropped, refused by the ceiling, shadow would-drops.
#[map(name = "TG_ROUTE_COUNTERS")]
static TG_ROUTE_COUNTERS: PerCpuArray<RouteCounter> = PerCpuArray::with_max_entries(MAX_ROUTES, 0);

/// What a segment's request heads charge: `requests` for the source's
/// requests bucket; `routed` when some head's route has a ceiling (or a
/// ceiling found no slot), whose ceilings then take the segment; `counted`
/// when some head has a route, whose counters then take it (`TG_SCAN`'s
/// `routes`). Routes without a ceiling skip the ceiling steps: they would
/// charge and refund nothing.
#[derive(Clone, Copy)]
struct Heads {
    requests: u32,
    routed: bool,
    counted: bool,
}

impl Heads {
    const NONE: Heads = Heads {
        requests: 0,
        routed: false,
        counted: false,
    };
}

/// What the callbacks get besides the map: the packet.
#[repr(C)]
struct ScanContext {
    ctx: *mut aya_ebpf::bindings::xdp_md,
}

/// The HTTP request heads the TCP payload from `payload` to `end` ends
/// (`HeadEnds`), and with routes configured what they charge
/// (`common::route`): what the segment charges a requests limit and the
/// routes' ceilings. The scan runs in a `bpf_loop` callback, which the
/// verifier checks as one loop body rather than per iteration: up to
/// [`SCAN_STEP`] bytes of a body and one block of a head a step (see
/// [`scan_step`]). The route of a
/// segment's first request, when the segment begins with one and no route
/// names a host, is one global function call ([`tg_route_first`]); the
/// other heads are a second `bpf_loop`, one step per head whose request
/// line is in the segment.
#[inline(always)]
fn request_heads(
    ctx: &XdpContext,
    settings: &Settings,
    payload: u32,
    end: u32,
    port: u16,
    starts_request: bool,
) -> Result<Heads, Internal> {
    if payload >= end {
        return Ok(Heads::NONE);
    }
    let end = end.min(payload + SCAN_MAX);
    let state = TG_SCAN.get_ptr_mut(0).ok_or(Internal)?;
    // SAFETY: this CPU's slot; XDP runs with preemption disabled. Only the
    // scan's fields are written: the route pass sets its own before use.
    unsafe {
        (*state).offset = payload;
        (*state).end = end;
        (*state).heads.reset();
    }
    let mut scan = ScanContext { ctx: ctx.ctx };
    // Every step but the last takes 32 bytes at least.
    let steps = (end - payload) / 32 + 1;
    // SAFETY: `scan` outlives the call; the callback only reads it.
    unsafe {
        bpf_loop(
            steps,
            scan_step as *mut core::ffi::c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
    // SAFETY: as above; the loop has returned.
    let state = unsafe { &mut *state };
    let ends = state.heads.ends;
    if settings.flags & SETTINGS_ROUTES == 0 || ends == 0 {
        return Ok(Heads {
            requests: ends,
            routed: false,
            counted: false,
        });
    }
    let first = starts_request as u32;
    // Heads whose request line is in the segment: all when it begins with
    // one, else all but the first; at most the first and the noted starts.
    let known = ends - (1 - first);
    let routable = known.min(first + ROUTED_HEADS as u32);
    state.routes.used = 0;
    state.routes.overflow = 0;
    state.routes.requests = 0;
    state.routed_heads = 0;
    let hosts = settings.flags & SETTINGS_ROUTE_HOSTS != 0;
    state.table = (settings.flags & SETTINGS_ROUTE_TABLE != 0) as u32;
    // The common case: the segment begins with a request line; without
    // routes of hosts its route is one lookup, without a loop.
    let skip = if first != 0 && !hosts {
        tg_route_first(ctx.ctx, payload, port as u32)
    } else {
        0
    };
    if routable > skip {
        state.payload = payload;
        state.first = first;
        state.port = port as u32;
        state.hosts = hosts as u32;
        state.skip = skip;
        // SAFETY: as the scan above.
        unsafe {
            bpf_loop(
                routable - skip,
                route_step as *mut core::ffi::c_void,
                (&raw mut scan).cast(),
                0,
            )
        };
    }
    let state = TG_SCAN.get_ptr_mut(0).ok_or(Internal)?;
    // SAFETY: as above.
    let state = unsafe { &mut *state };
    let unrouted = ends.saturating_sub(state.routed_heads);
    let routes = &mut state.routes;
    routes.add_unrouted(unrouted, settings.split_head_cost);
    let mut ceilings = routes.overflow != 0;
    let mut i = 0;
    while i < ROUTE_SLOTS {
        if (i as u32) < routes.used && !routes.slots[i].ceiling.is_unlimited() {
            ceilings = true;
        }
        i += 1;
    }
    Ok(Heads {
        requests: routes.requests,
        routed: ceilings,
        counted: routes.used != 0 || routes.overflow != 0,
    })
}

/// The route of a segment's first head when the segment begins with its
/// request line and the frame holds the key's whole line window: the
/// line's words copied into the key and one route lookup. Returns the heads
/// it routed (1), or 0 when it left the head to the route pass. A global
/// function: the verifier checks it once, not once per path to it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_route_first(
    ctx: *mut aya_ebpf::bindings::xdp_md,
    payload: u32,
    port: u32,
) -> u32 {
    let frame = XdpContext::new(ctx);
    if payload > SCAN_MAX {
        return 0;
    }
    let at = frame.data() + payload as usize;
    if at + ROUTE_LINE_LEN > frame.data_end() {
        return 0;
    }
    let Some(state) = TG_SCAN.get_ptr_mut(0) else {
        return 0;
    };
    // The port, a zero host tag and padding in one word (see `route_step`),
    // then the line window.
    // SAFETY: this CPU's scan slot, written by `request_heads`; the packet
    // bounds are checked above. The borrow ends before the lookup, which
    // takes the slot itself.
    unsafe {
        let key = &mut (*state).key;
        key[0] = (port as u16).to_be() as u64;
        let mut i = 0;
        while i < ROUTE_LINE_LEN / 8 {
            key[1 + i] = core::ptr::read_unaligned((at + i * 8) as *const u64);
            i += 1;
        }
        (*state).routed_heads += 1;
    }
    tg_route_lookup(0);
    1
}

/// Finds the route of the key in `TG_SCAN` (`common::route_table`, the
/// generation `request_heads` noted): the lengths of its class's list (of
/// routes of hosts with `hosted`), longest first, one bucket each, until an
/// entry matches the key; notes that route in the segment's routes and
/// returns 1. Else 0, and without `hosted` the request is charged as one of
/// no route (1); a miss among the routes of hosts charges nothing, as the
/// caller looks again without a host. A global function: the verifier
/// checks the probe loop once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_route_lookup(hosted: u32) -> u32 {
    let Some(state) = TG_SCAN.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scan slot; the caller wrote its key.
    let state = unsafe { &mut *state };
    let found = route_lookup(state, hosted);
    if found == 0 && hosted == 0 {
        state.routes.requests = state.routes.requests.saturating_add(1);
    }
    found
}

/// The probes of [`tg_route_lookup`].
#[inline(always)]
fn route_lookup(state: &mut ScanState, hosted: u32) -> u32 {
    let generation = state.table & 1;
    let Some(header) = TG_ROUTE_HEADERS.get(generation) else {
        return 0;
    };
    let class = route_table::class_of(state.key[1]) as usize & (ROUTE_CLASSES - 1);
    let list = &header.lengths[(hosted as usize & 1) * ROUTE_CLASSES + class];
    let count = list.count;
    if count == 0 {
        return 0;
    }
    route_table::prefix_hashes_into(header.seed, &state.key, &mut state.prefix);
    let mut i = 0;
    while i < ROUTE_LENGTHS {
        if i as u32 >= count {
            break;
        }
        // 64 bits wide, so the verifier bounds the word index taken from it.
        let len = list.lengths[i] as u64;
        if len > ROUTE_LINE_LEN as u64 {
            break;
        }
        let len = len as u32;
        let hash = route_table::key_probe_hash(&state.key, &state.prefix, len);
        if let Some(bucket) =
            TG_ROUTE_BUCKETS.get(generation * ROUTE_BUCKETS + route_table::bucket_of(hash))
        {
            let mut s = 0;
            while s < ROUTE_BUCKET_SLOTS {
                // Only an entry the header counts: a bucket a crashed
                // writer left behind can name nothing removed.
                if bucket.checks[s] == hash
                    && bucket.entries[s] < header.entries.min(ROUTE_ENTRIES)
                    && let Some(entry) =
                        TG_ROUTES.get(generation * ROUTE_ENTRIES + bucket.entries[s])
                    && entry.len == len
                    && route_table::entry_matches(entry, &state.key)
                {
                    state.routes.add(&entry.value);
                    return 1;
                }
                s += 1;
            }
        }
        i += 1;
    }
    0
}

/// One step of the route pass: the route of head `index` (by its end) of
/// the segment, whose request line begins at the payload's first byte
/// (`first`, head 0) or at the start the scan noted after the head before.
extern "C" fn route_step(index: u64, data: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `data` is the `ScanContext` that `request_heads` passed.
    let frame = XdpContext::new(unsafe { (*data.cast::<ScanContext>()).ctx });
    let Some(state_ptr) = TG_SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, written by `request_heads` before the loop.
    let state = unsafe { &mut *state_ptr };
    let index = index + state.skip as u64;
    let noted = if state.first != 0 {
        if index == 0 {
            None
        } else {
            Some(index as usize - 1)
        }
    } else {
        Some(index as usize)
    };
    let start = match noted {
        None => 0,
        Some(n) if n < ROUTED_HEADS => state.heads.start_at[n],
        Some(_) => return 1,
    };
    let offset = state.payload.wrapping_add(start) as usize;
    let frame_len = frame.data_end() - frame.data();
    state.routed_heads += 1;
    if start > SCAN_MAX || offset >= frame_len || offset > SCAN_MAX as usize * 2 {
        state.routes.requests = state.routes.requests.saturating_add(1);
        return 0;
    }
    // A bound the verifier sees on the packet offset (a frame is one page at
    // most, so the mask changes nothing).
    let offset = offset & 0x3fff;
    // The port, a zero host tag and padding in one word (little-endian
    // memory: the port's big-endian bytes first).
    let head = (state.port as u16).to_be() as u64;
    state.key[0] = head;
    // The line window: ROUTE_LINE_LEN bytes, or the bytes the frame has and
    // zeros after; 1..=ROUTE_LINE_LEN, in a form whose lower bound the
    // verifier sees (`offset < frame_len` above): the minimum is taken
    // before the +1.
    let len = (frame_len - offset - 1).min(ROUTE_LINE_LEN - 1) + 1;
    if len < ROUTE_LINE_LEN {
        let mut i = 1;
        while i < ROUTE_KEY_WORDS {
            state.key[i] = 0;
            i += 1;
        }
    }
    // One helper call (a kernel memcpy; the BPF backend would read the
    // packet a byte at a time).
    // SAFETY: 1..=ROUTE_LINE_LEN bytes into the key's line words.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            frame.ctx as *mut _,
            offset as u32,
            (&raw mut state.key[1]).cast(),
            len as u32,
        )
    } == 0;
    if !loaded {
        state.routes.requests = state.routes.requests.saturating_add(1);
        return 0;
    }
    // With routes of hosts, the head's Host header first: a route of that
    // host wins over every route without one.
    if state.hosts != 0 && host_tag(data, state, offset as u32, frame_len as u32) {
        let tag = state.tag.finish();
        state.key[0] = head | ((tag.to_be() as u64) << 16);
        let found = tg_route_lookup(1);
        // SAFETY: the slot again, after the lookup that used it.
        let state = unsafe { &mut *state_ptr };
        state.key[0] = head;
        if found != 0 {
            return 0;
        }
    }
    tg_route_lookup(0);
    0
}

/// Host header search states (`ScanState::host_state`).
const H_LINE: u32 = 0;
const H_LINE_START: u32 = 1;
const H_LINE_START_CR: u32 = 2;
/// `H_NAME + k`: the first `k` bytes of `host:` matched at a line start.
const H_NAME: u32 = 3;
const H_SPACE: u32 = 8;
const H_VALUE: u32 = 9;
const H_FOUND: u32 = 10;
const H_NONE: u32 = 11;

/// Finds the Host header of the head whose request line begins at `from`
/// (within [`HOST_SCAN_MAX`] bytes, before the head ends) and leaves its
/// tag in `state.tag`: whether it found one. A nested `bpf_loop`.
#[inline(always)]
fn host_tag(
    data: *mut core::ffi::c_void,
    state: &mut ScanState,
    from: u32,
    frame_len: u32,
) -> bool {
    state.host_at = from;
    state.host_end = (from + HOST_SCAN_MAX).min(frame_len);
    state.host_state = H_LINE;
    state.tag = HostTag::new();
    // SAFETY: `data` is the caller's `ScanContext`; the callback only reads it.
    unsafe { bpf_loop(HOST_SCAN_MAX, host_step as *mut core::ffi::c_void, data, 0) };
    state.host_state == H_FOUND
}

/// One step of [`host_tag`]: eight bytes at once inside a line without a
/// line end, else one byte through the header-name matcher.
extern "C" fn host_step(_index: u64, data: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `data` is the `ScanContext` that `request_heads` passed.
    let frame = XdpContext::new(unsafe { (*data.cast::<ScanContext>()).ctx });
    let Some(state) = TG_SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot.
    let state = unsafe { &mut *state };
    let at = state.host_at;
    if at >= state.host_end || at > SCAN_MAX * 2 {
        if state.host_state != H_FOUND {
            state.host_state = H_NONE;
        }
        return 1;
    }
    // Every read is of a whole word (a one-byte packet read would need a
    // bounds check in a form the compiler does not keep): the word at `at`,
    // or near the frame's end the last word of the frame.
    let frame_len = (frame.data_end() - frame.data()) as u32;
    let word_at = if at + 8 <= frame_len {
        at
    } else {
        frame_len.wrapping_sub(8)
    };
    if word_at > SCAN_MAX * 2 || at < word_at {
        state.host_state = H_NONE;
        return 1;
    }
    let p = frame.data() + word_at as usize;
    if p + 8 > frame.data_end() {
        state.host_state = H_NONE;
        return 1;
    }
    // SAFETY: bounds checked above.
    let word = unsafe { core::ptr::read_unaligned(p as *const u64) };
    // SAFETY: a field of this CPU's slot (volatile: see `HeadEnds`).
    let current = unsafe { core::ptr::read_volatile(&state.host_state) };
    if current == H_LINE
        && word_at == at
        && at + 8 <= state.host_end
        && !tollgate_common::http::has_byte(word, b'\n')
    {
        state.host_at = at + 8;
        return 0;
    }
    let b = (word >> (((at - word_at) & 7) * 8)) as u8;
    state.host_at = at + 1;
    let lower = b.to_ascii_lowercase();
    let next = match current {
        H_LINE => {
            if b == b'\n' {
                H_LINE_START
            } else {
                H_LINE
            }
        }
        H_LINE_START if b == b'\n' => H_NONE,
        H_LINE_START if b == b'\r' => H_LINE_START_CR,
        H_LINE_START_CR if b == b'\n' => H_NONE,
        H_LINE_START if lower == b'h' => H_NAME + 1,
        c if c == H_NAME + 1 && lower == b'o' => H_NAME + 2,
        c if c == H_NAME + 2 && lower == b's' => H_NAME + 3,
        c if c == H_NAME + 3 && lower == b't' => H_NAME + 4,
        c if c == H_NAME + 4 && b == b':' => H_SPACE,
        H_SPACE if b == b' ' || b == b'\t' => H_SPACE,
        H_SPACE if b == b'\r' || b == b'\n' || b == b':' => H_NONE,
        H_SPACE | H_VALUE => {
            if b == b':' || b == b' ' || b == b'\t' || b == b'\r' || b == b'\n' {
                H_FOUND
            } else {
                state.tag.byte(b);
                H_VALUE
            }
        }
        _ if b == b'\n' => H_LINE_START,
        _ => H_LINE,
    };
    state.host_state = next;
    if next == H_FOUND || next == H_NONE {
        1
    } else {
        0
    }
}

/// Charges the segment's requests (`TG_SCAN`'s routes) to their routes'
/// ceilings: 0 when every enforced ceiling admits them (a shadow ceiling
/// that would refuse is noted and passes), else 1 with nothing charged. A
/// global function: the verifier checks it once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_route_ceilings(now: u64) -> u32 {
    let Some(state) = TG_SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scan slot, filled by the route pass of this packet.
    let routes = unsafe { &mut (*state).routes };
    if routes.overflow != 0 {
        return 1;
    }
    let mut i = 0;
    while i < ROUTE_SLOTS {
        if i as u32 >= routes.used {
            break;
        }
        let slot = &mut routes.slots[i];
        slot.charged_ns = 0;
        slot.refused = 0;
        if !slot.ceiling.is_unlimited() {
            let one = slot.ceiling.increment_ns(1);
            // More at once than the burst is refused outright; below it the
            // product fits: a burst is at most a day of nanoseconds (< 2^47)
            // and a segment carries fewer than 2^16 requests.
            let admitted = one <= slot.ceiling.capacity_ns && slot.count < 0x1_0000 && {
                let increment = one * slot.count as u64;
                match TG_ROUTE_CEILINGS.get_ptr_mut(slot.index) {
                    // SAFETY: an array slot, only changed through the atomics.
                    Some(tat) => unsafe {
                        limiter::charge_u64(tat, now, increment, slot.ceiling.capacity_ns) && {
                            slot.charged_ns = increment;
                            true
                        }
                    },
                    None => false,
                }
            };
            if !admitted {
                slot.refused = 1;
                if slot.flags & ROUTE_SHADOW == 0 {
                    refund_routes(routes);
                    return 1;
                }
            }
        }
        i += 1;
    }
    0
}

/// Gives the ceilings back what [`tg_route_ceilings`] charged them.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_route_refund() -> u32 {
    let Some(state) = TG_SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scan slot.
    refund_routes(unsafe { &mut (*state).routes });
    0
}

/// (Slots past `used` hold an earlier segment's routes: never touched.)
#[inline(always)]
fn refund_routes(routes: &mut SegmentRoutes) {
    let mut i = 0;
    while i < ROUTE_SLOTS {
        if i as u32 >= routes.used {
            break;
        }
        let slot = &mut routes.slots[i];
        if slot.charged_ns != 0
            && let Some(tat) = TG_ROUTE_CEILINGS.get_ptr_mut(slot.index)
        {
            // SAFETY: an array slot, only changed through the atomics.
            unsafe { limiter::refund_u64(tat, slot.charged_ns) };
            slot.charged_ns = 0;
        }
        i += 1;
    }
}

/// Counts the segment's routed requests under their routes
/// (`TG_ROUTE_COUNTERS`), `dropped` when the segment was.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_route_count(dropped: u32) -> u32 {
    let Some(state) = TG_SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scan slot.
    let routes = unsafe { &(*state).routes };
    let mut i = 0;
    while i < ROUTE_SLOTS {
        if i as u32 >= routes.used {
            break;
        }
        let slot = &routes.slots[i];
        if let Some(counter) = TG_ROUTE_COUNTERS.get_ptr_mut(slot.index) {
            let n = slot.count as u64;
            // SAFETY: per-CPU slot; XDP runs with preemption disabled.
            let counter = unsafe { &mut *counter };
            counter.requests += n;
            if dropped != 0 {
                counter.dropped += n;
            }
            // A refusal that did not drop the segment (a shadow route, or
            // any route in a shadow tier) is a would-drop.
            if slot.refused != 0 {
                if slot.flags & ROUTE_SHADOW != 0 || dropped == 0 {
                    counter.shadow_would_drop += n;
                } else {
                    counter.dropped_ceiling += n;
                }
            }
        }
        i += 1;
    }
    0
}

/// One step of [`request_heads`]: the next blocks of 32 bytes that leave
/// the state as it is (inside a line, no `\n`: most of a body), one test
/// each, up to [`SCAN_STEP`] bytes; then the first block that does not, a
/// word at a time, or, when fewer than 32 bytes are left, the last 1 to 31
/// as a filled block (`http::last_block`; then it returns 1: stop). A step
/// is a callback call, which costs about as much as a dozen words' tests on
/// the benchmark machine (BENCHMARKS.md), so bodies take few steps and a
/// head one per 32 bytes. One block fed a word at a time per step, and
/// whether it was the last read back from the map, keep the verifier's
/// check of the body to one pass over the four words.
extern "C" fn scan_step(_index: u64, data: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `data` is the `ScanContext` that `request_heads` passed.
    let frame = XdpContext::new(unsafe { (*data.cast::<ScanContext>()).ctx });
    let Some(state) = TG_SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, written by `request_heads` before the loop.
    let state = unsafe { &mut *state };
    let offset = state.offset;
    if offset >= state.end || offset > SCAN_MAX * 2 {
        return 1;
    }
    let left = state.end - offset;
    // SAFETY (both): the caller checked the word's bounds.
    let word = |at: usize| u64::from_le(unsafe { core::ptr::read_unaligned(at as *const u64) });
    let words = |at: usize| [word(at), word(at + 8), word(at + 16), word(at + 24)];
    let blocks = (left / 32).min(SCAN_STEP / 32);
    let mut skipped = 0;
    while skipped < SCAN_STEP / 32 {
        if skipped >= blocks {
            break;
        }
        let at = frame.data() + (offset + skipped * 32) as usize;
        if at + 32 > frame.data_end() {
            return 1;
        }
        if !state.heads.skips(&words(at)) {
            break;
        }
        skipped += 1;
    }
    state.heads.skip(skipped * 32);
    let offset = offset + skipped * 32;
    state.offset = offset;
    if skipped == SCAN_STEP / 32 {
        return 0;
    }
    let left = left - skipped * 32;
    if left == 0 {
        return 1;
    }
    // Then one block a word at a time: the next 32 bytes, or the last
    // 1 to 31 as a filled block (`http::last_block`; the 32 bytes that end
    // the segment start inside the headers at worst).
    let last = left < 32;
    let from = if last {
        state.end.wrapping_sub(32)
    } else {
        offset
    };
    if from > SCAN_MAX * 2 {
        return 1;
    }
    let at = frame.data() + from as usize;
    if at + 32 > frame.data_end() {
        return 1;
    }
    let block = if last {
        state.offset = state.end;
        http::last_block(words(at), left)
    } else {
        state.offset = offset + 32;
        words(at)
    };
    state.heads.words(block);
    // Whether it was the last block, read back from the map: carried in a
    // register, the verifier would check the four words once per value.
    // SAFETY: fields of this CPU's slot.
    unsafe {
        (core::ptr::read_volatile(&state.offset) >= core::ptr::read_volatile(&state.end)) as i64
    }
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

/// The tracked-source filter (`tollgate_common::tracked`): a clear bit in
/// both generations means no source map holds the source, and its lookup is
/// skipped. Sized by the loader from the source maps (its size word); the
/// daemon ages it (clears the older generation and flips the generation
/// word).
#[map(name = "TG_TRACKED")]
static TG_TRACKED: Array<u64> =
    Array::with_max_entries(tracked::filter_entries(TRACKED_FILTER_MIN_BITS), 0);

/// A source's bit in [`TG_TRACKED`] and the current generation, or `None`
/// while the filter is off (its size word is not a size: a map nobody sized).
#[inline(always)]
fn tracked_slot(key: u64, v6: u32) -> Option<(FilterBit, u64)> {
    let generation = *TG_TRACKED.get(TRACKED_FILTER_GENERATION)?;
    let bits = *TG_TRACKED.get(TRACKED_FILTER_SIZE)?;
    if !(TRACKED_FILTER_MIN_BITS as u64..=TRACKED_FILTER_MAX_BITS as u64).contains(&bits) {
        return None;
    }
    let bit = if v6 != 0 {
        FilterBit::v6(key, bits as u32)
    } else {
        FilterBit::v4(key as u32, bits as u32)
    };
    Some((bit, generation))
}

/// Whether a source may be tracked (1): its bit is set in either generation,
/// or the filter is off. 0: no source map holds it. A global function (as
/// is [`tg_mark_tracked`]): the verifier checks the filter once, not on
/// every path through the parser.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_tracked_seen(key: u64, v6: u32) -> u32 {
    let Some((bit, generation)) = tracked_slot(key, v6) else {
        return 1;
    };
    let (Some(current), Some(older)) = (
        TG_TRACKED.get_ptr_mut(bit.index(generation)),
        TG_TRACKED.get(bit.index(generation ^ 1)),
    ) else {
        return 1;
    };
    // SAFETY: a live array slot, written only through the common atomics (and
    // the daemon's clearing of the older generation).
    let seen = unsafe { core::ptr::read_volatile(current) } | *older;
    (seen & bit.mask != 0) as u32
}

/// Sets a source's bit in the filter's current generation (`tracked::mark`:
/// one read when it is set, a bounded compare-and-swap loop when not);
/// nothing while the filter is off.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tg_mark_tracked(key: u64, v6: u32) -> u32 {
    let Some((bit, generation)) = tracked_slot(key, v6) else {
        return 0;
    };
    let Some(current) = TG_TRACKED.get_ptr_mut(bit.index(generation)) else {
        return 0;
    };
    // SAFETY: a live `TG_TRACKED` slot, written only through the common
    // atomics and the daemon's clearing of the older generation.
    unsafe { tracked::mark(current, bit.mask) as u32 }
}

/// The clock of a source no map holds: the tick count
/// (`bpf_jiffies64`, inlined by the verifier into one load) times the
/// tick's nanoseconds the daemon wrote (`Settings::jiffy_ns`); before any
/// settings write, `bpf_ktime_get_coarse_ns`, which advances on the same
/// tick. It times the tier's new-source budget and untracked ceiling, which
/// only this clock ever charges; a tracked source's buckets (a new one's
/// included) keep the precise clock. The bound this costs is in the README
/// ("Spoofed floods"): a ceiling of `rate` with a burst admits at most
/// `rate × (t + tick) + burst` in any `t`.
#[inline(always)]
fn untracked_clock(jiffy_ns: u32) -> u64 {
    if jiffy_ns != 0 {
        // SAFETY: a BPF helper with no preconditions.
        unsafe { bpf_jiffies64() }.wrapping_mul(jiffy_ns as u64)
    } else {
        // SAFETY: a BPF helper with no preconditions.
        unsafe { bpf_ktime_get_coarse_ns() }
    }
}

/// The source's bucket state; a source seen for the first time is tracked
/// (its buckets idle) if its tier admits it (`admit_new_source`), else its
/// verdict as an untracked source. A source the tracked-source filter has
/// never seen skips the map lookup; a tracked source's bit is set in the
/// filter's current generation before its insert and kept there by its
/// packets. Two CPUs may race to track the same source: BPF_NOEXIST makes
/// one insert win and both then use that entry. (One match per family: the
/// verifier walks each arm once.)
#[inline(always)]
fn source_state(
    src: &SourceAddr,
    tier_index: u32,
    tier: &TierConfig,
    jiffy_ns: u32,
) -> Result<Result<*mut SourceState, Verdict>, Internal> {
    match src {
        SourceAddr::V4(addr) => {
            let key = u32::from_ne_bytes(*addr);
            if tg_tracked_seen(key as u64, 0) != 0
                && let Some(state) = TG_SOURCES_V4.get_ptr_mut(key)
            {
                tg_mark_tracked(key as u64, 0);
                return Ok(Ok(state));
            }
            if tier.admits_new_sources()
                && let Some(verdict) =
                    admit_new_source(tier_index, tier, untracked_clock(jiffy_ns))?
            {
                return Ok(Err(verdict));
            }
            tg_mark_tracked(key as u64, 0);
            // SAFETY: a BPF helper with no preconditions.
            let fresh = limiter::fresh_state(unsafe { bpf_ktime_get_ns() });
            let _ = TG_SOURCES_V4.insert(key, fresh, BPF_NOEXIST as u64);
            TG_SOURCES_V4.get_ptr_mut(key).ok_or(Internal).map(Ok)
        }
        SourceAddr::V6(addr) => {
            let key = parse::ipv6_key(addr, tier.ipv6_prefix);
            if tg_tracked_seen(key, 1) != 0
                && let Some(state) = TG_SOURCES_V6.get_ptr_mut(key)
            {
                tg_mark_tracked(key, 1);
                return Ok(Ok(state));
            }
            if tier.admits_new_sources()
                && let Some(verdict) =
                    admit_new_source(tier_index, tier, untracked_clock(jiffy_ns))?
            {
                return Ok(Err(verdict));
            }
            tg_mark_tracked(key, 1);
            // SAFETY: a BPF helper with no preconditions.
            let fresh = limiter::fresh_state(unsafe { bpf_ktime_get_ns() });
            let _ = TG_SOURCES_V6.insert(key, fresh, BPF_NOEXIST as u64);
            TG_SOURCES_V6.get_ptr_mut(key).ok_or(Internal).map(Ok)
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
