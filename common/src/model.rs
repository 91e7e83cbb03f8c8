//! Userspace reference model of the data path's policy, for differential tests
//! (`tests/tests/fuzz_packets.rs` runs the same frames through the kernel
//! program and through this model and compares verdicts and counters).
//!
//! It is a plain restatement of the policy, deliberately not the kernel's
//! control flow: rules are a list searched linearly for the longest matching
//! prefix, source buckets live in a `HashMap`, a packet's charges are computed
//! on a copy of its buckets and committed only when every per-source limit
//! admits it (which is what the kernel's refunds amount to), and time is a
//! constant `now` (see [`Model::new`]).
//!
//! It reuses the shared header walk ([`crate::parse`], tested separately) and
//! the one-bucket GCRA steps ([`crate::gcra`]) with the [`Limit`] unit
//! conversions, so a disagreement points at the data path's decisions, not at
//! arithmetic both sides share.
//!
//! The policy, for a frame of `len` bytes:
//!
//! 1. Not IPv4/IPv6: [`Verdict::NotIp`]; no trustworthy source address:
//!    [`Verdict::Malformed`]. Both counted under the default tier.
//! 2. The longest rule prefix containing the source: `allow` gives
//!    [`Verdict::Allowed`], `deny` [`Verdict::Denied`], counted under the rule's
//!    tier; a tier rule selects the tier. No rule: the default tier. A deny
//!    with an expiry at or before now is a tier rule for its tier.
//! 3. An inactive tier passes the packet ([`Verdict::Passed`]) and tracks nothing.
//! 4. Admission control, in a tier with a new-source budget, for a source not
//!    tracked yet: within the budget, the budget is charged and the source is
//!    tracked from now on (steps 5-8, as any tracked source). Over it, nothing
//!    is tracked: untracked sources share a ceiling of their own, the size of
//!    the tier's aggregate. Within it: [`Verdict::Untracked`] (passed), the
//!    ceiling charged; over it: [`Verdict::DroppedUntracked`], nothing charged.
//!    Without a budget every new source is tracked.
//! 5. The source's buckets (IPv4: the address; IPv6: the first 64 bits masked to
//!    the tier's prefix length), created idle, are charged in order: one packet,
//!    `len` bytes, one connection (TCP SYN without ACK), and one request per
//!    HTTP request head the TCP payload ends, on the HTTP ports only
//!    ([`request_heads`]). Unlimited kinds cost nothing. The first limit that
//!    rejects gives its drop verdict and nothing is charged.
//! 6. Otherwise the tier's aggregate takes one packet, and the source's charges
//!    are kept; or it gives [`Verdict::DroppedAggregate`] and nothing is charged.
//! 7. An admitted (or untracked but passed) packet whose transport header is
//!    malformed is [`Verdict::Malformed`] (dropped, but charged).
//! 8. In a shadow tier every dropping verdict of steps 4-7 becomes
//!    [`Verdict::ShadowWouldDrop`].
//!
//! Routes ([`Route`], with any configured): a TCP segment to an HTTP port
//! ends request heads ([`request_heads`]); each head is *routed* when its
//! request line is in the segment (the first head when the payload begins
//! with a request line, every later one: its first line, less one leading
//! `\r`) and it is among the first [`ROUTED_HEADS`] + 1 heads. A routed
//! head takes the route on its port whose line is the longest prefix of the
//! request line's first [`ROUTE_LINE_LEN`] bytes (a route with an empty line
//! is the whole port), and charges its source that route's cost (1 for a
//! shadow route, 1 without a route); every other head charges
//! [`Policy::split_head_cost`]. The distinct routes of a segment, in order of
//! appearance, are its first four; a later distinct route with a ceiling
//! refuses the segment. For a tracked source the ceilings come first (step
//! 5): a ceiling that cannot take its route's requests at once gives
//! [`Verdict::DroppedRouteCeiling`] (a shadow route's only counts), and the
//! ceilings keep their charges only if the packet passes. For an untracked
//! source they come after its [`Verdict::Untracked`]. Allow and deny rules
//! and inactive tiers skip them. Every routed segment's routes count its
//! requests, whatever the verdict; a refusal counts as a would-drop when the
//! segment was not dropped (a shadow route, a shadow tier).

extern crate std;

use std::{collections::HashMap, vec, vec::Vec};

use crate::{
    Counter, Limit, LimitKind, MAX_TIERS, RULE_ALLOW, RULE_DENY, RuleValue, TierConfig,
    VERDICT_COUNT, Verdict, gcra,
    gcra::TICK_SHIFT,
    http,
    parse::{self, Parsed, SourceAddr, Transport},
    route::{HOST_SCAN_MAX, MAX_ROUTES, ROUTE_LINE_LEN, ROUTED_HEADS, RouteCounter, RouteValue},
};

/// A route as the daemon writes it: requests to `port` whose request line
/// begins with `line` (empty: every request to the port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub port: u16,
    /// The tag of the route's host ([`crate::route::host_tag`]); 0: any host.
    pub host: u32,
    pub line: Vec<u8>,
    pub value: RouteValue,
}

/// A rule's network: the address with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// One rule: a prefix and what to do with sources inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub network: Network,
    pub prefix_len: u32,
    pub value: RuleValue,
}

/// Whether the first `prefix_len` bits of `a` and `b` are equal.
fn same_prefix(a: &[u8], b: &[u8], prefix_len: u32) -> bool {
    (0..prefix_len as usize).all(|bit| {
        let mask = 0x80u8 >> (bit % 8);
        a[bit / 8] & mask == b[bit / 8] & mask
    })
}

/// `addr` with every bit after the first `prefix_len` cleared.
fn truncate<const N: usize>(addr: [u8; N], prefix_len: u32) -> [u8; N] {
    let mut out = [0u8; N];
    for bit in 0..(prefix_len as usize).min(N * 8) {
        out[bit / 8] |= addr[bit / 8] & (0x80 >> (bit % 8));
    }
    out
}

impl Rule {
    /// Whether `src` lies inside this rule's network.
    pub fn contains(&self, src: &SourceAddr) -> bool {
        match (self.network, src) {
            (Network::V4(net), SourceAddr::V4(a)) => same_prefix(&net, a, self.prefix_len),
            (Network::V6(net), SourceAddr::V6(a)) => same_prefix(&net, a, self.prefix_len),
            _ => false,
        }
    }
}

/// Everything configuration decides: default tier, tiers, rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub default_tier: u32,
    pub tiers: [TierConfig; MAX_TIERS as usize],
    /// The HTTP ports: TCP destination ports whose payload requests limits count.
    pub http_ports: Vec<u16>,
    /// Whether request heads are counted on the HTTP ports while no route is
    /// configured (the daemon counts them when some tier limits requests);
    /// routes always count them.
    pub count_requests: bool,
    rules: Vec<Rule>,
    /// Routes; none: request heads cost one each.
    pub routes: Vec<Route>,
    /// What a head whose route is unknown costs (0 counts as 1).
    pub split_head_cost: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new()
    }
}

impl Policy {
    /// Default tier 0, every tier inactive, no rules (what a fresh load has).
    pub fn new() -> Policy {
        Policy {
            default_tier: 0,
            tiers: [TierConfig::default(); MAX_TIERS as usize],
            http_ports: Vec::new(),
            count_requests: true,
            rules: Vec::new(),
            routes: Vec::new(),
            split_head_cost: 1,
        }
    }

    /// The route of a request whose line begins `request` and whose Host
    /// header has the tag `host` (if it has one): the longest line among the
    /// routes of `port` and that host that begins the request line (as far
    /// as a key holds of it), else the longest among `port`'s routes of any
    /// host.
    pub fn route(&self, port: u16, host: Option<u32>, request: &[u8]) -> Option<RouteValue> {
        let seen = &request[..request.len().min(ROUTE_LINE_LEN)];
        let best = |host: u32| {
            self.routes
                .iter()
                .filter(|r| r.port == port && r.host == host && seen.starts_with(&r.line))
                .max_by_key(|r| r.line.len())
                .map(|r| r.value)
        };
        host.filter(|&h| h != 0).and_then(best).or_else(|| best(0))
    }

    /// Adds or replaces the rule for `network/prefix_len` (host bits ignored).
    ///
    /// # Panics
    /// On a prefix longer than the address or a tier out of range (the daemon
    /// refuses both).
    pub fn set_rule(&mut self, network: Network, prefix_len: u32, value: RuleValue) {
        assert!(value.tier < MAX_TIERS, "tier {} out of range", value.tier);
        let network = match network {
            Network::V4(a) => {
                assert!(prefix_len <= 32);
                Network::V4(truncate(a, prefix_len))
            }
            Network::V6(a) => {
                assert!(prefix_len <= 128);
                Network::V6(truncate(a, prefix_len))
            }
        };
        let rule = Rule {
            network,
            prefix_len,
            value,
        };
        match self
            .rules
            .iter_mut()
            .find(|r| r.network == network && r.prefix_len == prefix_len)
        {
            Some(existing) => *existing = rule,
            None => self.rules.push(rule),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule with the longest prefix containing `src`, if any.
    pub fn lookup(&self, src: &SourceAddr) -> Option<RuleValue> {
        let mut best: Option<&Rule> = None;
        for rule in &self.rules {
            if rule.contains(src) && best.is_none_or(|b| rule.prefix_len > b.prefix_len) {
                best = Some(rule);
            }
        }
        best.map(|r| r.value)
    }
}

/// Key of a source's buckets, as the kernel keys them: the IPv4 address, or the
/// first 64 bits of the IPv6 address masked to the tier's prefix
/// ([`parse::ipv6_key`]). One key space per family, shared by all tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4([u8; 4]),
    V6(u64),
}

/// A source's four buckets, unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// Nanosecond TATs.
    pub packets: u64,
    pub bytes: u64,
    /// Wrapping tick TATs.
    pub connections: u32,
    pub requests: u32,
    /// What the source was admitted while its tier counts it: packets in the
    /// low 32 bits, request units in the high 32 (one wrapping 64-bit sum).
    pub admitted: u64,
}

impl Buckets {
    /// Idle buckets for a source first seen at `now_ns`, by the convention of
    /// [`crate::limiter::fresh_state`]: 64-bit TATs at zero (far in the past),
    /// 32-bit TATs at `now` in ticks (equal to now means idle).
    pub fn idle(now_ns: u64) -> Buckets {
        let ticks = (now_ns >> TICK_SHIFT) as u32;
        Buckets {
            packets: 0,
            bytes: 0,
            connections: ticks,
            requests: ticks,
            admitted: 0,
        }
    }

    /// These buckets as the kernel stores them.
    pub fn to_state(self) -> crate::SourceState {
        crate::SourceState {
            packets_tat: self.packets,
            bytes_tat: self.bytes,
            l7_tats: (self.connections as u64) << crate::SourceState::CONNECTIONS_SHIFT
                | (self.requests as u64) << crate::SourceState::REQUESTS_SHIFT,
            admitted: self.admitted,
        }
    }
}

/// The verdict of one frame and the tier it is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub tier: u32,
    pub verdict: Verdict,
}

impl Judgement {
    /// The XDP action: `XDP_DROP` (1) or `XDP_PASS` (2).
    pub fn action(&self) -> u32 {
        if self.verdict.drops() { 1 } else { 2 }
    }
}

/// The policy plus everything it accumulates: buckets, aggregates, counters.
#[derive(Clone, Debug)]
pub struct Model {
    pub policy: Policy,
    now_ns: u64,
    sources: HashMap<SourceKey, Buckets>,
    aggregate: [u64; MAX_TIERS as usize],
    /// The untracked ceiling's and the new-source budget's TATs per tier.
    untracked: [u64; MAX_TIERS as usize],
    new_sources: [u64; MAX_TIERS as usize],
    counters: Vec<[Counter; VERDICT_COUNT as usize]>,
    /// Per route slot: the ceiling's TAT and the counters.
    route_tats: Vec<u64>,
    route_counters: Vec<RouteCounter>,
    /// The routes whose ceiling refused the segment being judged.
    route_refused: Vec<u32>,
}

impl Model {
    /// A model whose clock stands still at `now_ns`.
    ///
    /// The kernel reads a real clock, so the two agree exactly only while no
    /// bucket refills between the packets compared: every limit's interval
    /// (per packet, per byte, per connection, per request) must be longer than
    /// the wall time the compared packets take, and every capacity a whole
    /// number of intervals (in ticks, for connections and requests).
    pub fn new(policy: Policy, now_ns: u64) -> Model {
        Model {
            policy,
            now_ns,
            sources: HashMap::new(),
            aggregate: [0; MAX_TIERS as usize],
            untracked: [0; MAX_TIERS as usize],
            new_sources: [0; MAX_TIERS as usize],
            counters: vec![[Counter::default(); VERDICT_COUNT as usize]; MAX_TIERS as usize],
            route_tats: vec![0; MAX_ROUTES as usize],
            route_counters: vec![RouteCounter::default(); MAX_ROUTES as usize],
            route_refused: Vec::new(),
        }
    }

    /// The TAT of the ceiling of route slot `index`.
    pub fn route_tat(&self, index: u32) -> u64 {
        self.route_tats[index as usize]
    }

    /// Per route slot, requests counted so far.
    pub fn route_counters(&self) -> &[RouteCounter] {
        &self.route_counters
    }

    /// Replaces the route counters (to resynchronise with the kernel).
    pub fn set_route_counters(&mut self, counters: Vec<RouteCounter>) {
        assert_eq!(counters.len(), MAX_ROUTES as usize);
        self.route_counters = counters;
    }

    /// Forgets every source's buckets and every aggregate (as deleting the
    /// kernel's source entries and zeroing its aggregates does); keeps counters.
    pub fn clear_buckets(&mut self) {
        self.sources.clear();
        self.aggregate = [0; MAX_TIERS as usize];
        self.untracked = [0; MAX_TIERS as usize];
        self.new_sources = [0; MAX_TIERS as usize];
        self.route_tats = vec![0; MAX_ROUTES as usize];
    }

    /// `counters()[tier][verdict]`: packets and bytes judged so far.
    pub fn counters(&self) -> &[[Counter; VERDICT_COUNT as usize]] {
        &self.counters
    }

    /// Replaces the counters (to resynchronise with the kernel after a
    /// reported disagreement).
    pub fn set_counters(&mut self, counters: Vec<[Counter; VERDICT_COUNT as usize]>) {
        assert_eq!(counters.len(), MAX_TIERS as usize);
        self.counters = counters;
    }

    /// Every tracked source.
    pub fn sources(&self) -> &HashMap<SourceKey, Buckets> {
        &self.sources
    }

    pub fn aggregate_tat(&self, tier: u32) -> u64 {
        self.aggregate[tier as usize]
    }

    /// The TAT of the tier's ceiling for untracked sources.
    pub fn untracked_tat(&self, tier: u32) -> u64 {
        self.untracked[tier as usize]
    }

    /// The TAT of the tier's new-source budget.
    pub fn new_sources_tat(&self, tier: u32) -> u64 {
        self.new_sources[tier as usize]
    }

    /// Judges one frame, updating buckets and counters.
    pub fn judge(&mut self, frame: &[u8]) -> Judgement {
        let (judgement, routed) = self.decide(frame);
        if let Some(routed) = routed {
            self.count_routes(&routed, judgement.verdict);
        }
        let counter = &mut self.counters[judgement.tier as usize][judgement.verdict as usize];
        counter.packets += 1;
        counter.bytes += frame.len() as u64;
        judgement
    }

    fn decide(&mut self, frame: &[u8]) -> (Judgement, Option<Routed>) {
        let default_tier = self.policy.default_tier;
        let packet = match parse::parse(frame) {
            Parsed::NotIp => return (judgement(default_tier, Verdict::NotIp), None),
            Parsed::Malformed => return (judgement(default_tier, Verdict::Malformed), None),
            Parsed::Ip(packet) => packet,
        };
        let (connection, requests, routed) = match packet.transport {
            Transport::Tcp {
                new_connection,
                payload,
                dst_port,
            } if dst_port != 0 && self.policy.http_ports.contains(&dst_port) => {
                let payload = frame.get(payload..).unwrap_or(&[]);
                if self.policy.routes.is_empty() {
                    let requests = if self.policy.count_requests {
                        request_heads(payload)
                    } else {
                        0
                    };
                    (new_connection, requests, None)
                } else {
                    let routed = self.route_heads(dst_port, payload);
                    let requests = routed.requests;
                    let routed = (!routed.slots.is_empty() || routed.overflow).then_some(routed);
                    (new_connection, requests, routed)
                }
            }
            Transport::Tcp { new_connection, .. } => (new_connection, 0, None),
            _ => (false, 0, None),
        };
        let judged = self.decide_ip(
            &packet,
            frame.len() as u64,
            connection,
            requests,
            routed.as_ref(),
        );
        (judged, routed)
    }

    fn decide_ip(
        &mut self,
        packet: &parse::IpPacket,
        len: u64,
        connection: bool,
        requests: u32,
        routed: Option<&Routed>,
    ) -> Judgement {
        let default_tier = self.policy.default_tier;

        let tier_index = match self.policy.lookup(&packet.src) {
            Some(rule) if rule.action == RULE_ALLOW => {
                return judgement(rule.tier, Verdict::Allowed);
            }
            Some(rule)
                if rule.action == RULE_DENY
                    && (rule.expires_ns == 0 || self.now_ns < rule.expires_ns) =>
            {
                return judgement(rule.tier, Verdict::Denied);
            }
            Some(rule) => rule.tier,
            None => default_tier,
        };
        let tier = self.policy.tiers[tier_index as usize];
        if !tier.is_active() {
            return judgement(tier_index, Verdict::Passed);
        }

        let key = match packet.src {
            SourceAddr::V4(a) => SourceKey::V4(a),
            SourceAddr::V6(a) => SourceKey::V6(parse::ipv6_key(&a, tier.ipv6_prefix)),
        };
        let now = self.now_ns;
        let t = tier_index as usize;
        if !tier.new_sources.is_unlimited() && !self.sources.contains_key(&key) {
            match step_ns(self.new_sources[t], now, &tier.new_sources, 1) {
                Some(budget) => self.new_sources[t] = budget,
                None => {
                    let verdict = match step_ns(self.untracked[t], now, &tier.aggregate, 1) {
                        None => Verdict::DroppedUntracked,
                        Some(ceiling) => {
                            self.untracked[t] = ceiling;
                            match routed.map(|r| self.route_ceilings(r)) {
                                Some(Err(())) => Verdict::DroppedRouteCeiling,
                                admitted => {
                                    if let Some(Ok(tats)) = admitted {
                                        self.commit_route_tats(tats);
                                    }
                                    if packet.transport == Transport::Malformed {
                                        Verdict::Malformed
                                    } else {
                                        Verdict::Untracked
                                    }
                                }
                            }
                        }
                    };
                    return judgement(tier_index, shadowed(&tier, verdict));
                }
            }
        }
        self.sources
            .entry(key)
            .or_insert_with(|| Buckets::idle(now));
        let ceilings = match routed.map(|r| self.route_ceilings(r)) {
            Some(Err(())) => {
                return judgement(tier_index, shadowed(&tier, Verdict::DroppedRouteCeiling));
            }
            Some(Ok(tats)) => Some(tats),
            None => None,
        };
        let buckets = self.sources.get_mut(&key).expect("inserted above");
        let per_source = charge(*buckets, &tier, now, len, connection, requests);
        let mut verdict = match per_source {
            Err(kind) => kind.drop_verdict(),
            Ok(charged) => {
                let aggregate = &mut self.aggregate[t];
                match step_ns(*aggregate, now, &tier.aggregate, 1) {
                    Some(tat) => {
                        *buckets = charged;
                        if tier.counts_admitted() {
                            buckets.admitted =
                                buckets.admitted.wrapping_add(1 + ((requests as u64) << 32));
                        }
                        *aggregate = tat;
                        Verdict::Passed
                    }
                    None => Verdict::DroppedAggregate,
                }
            }
        };
        if verdict == Verdict::Passed
            && let Some(tats) = ceilings
        {
            self.commit_route_tats(tats);
        }
        if verdict == Verdict::Passed && packet.transport == Transport::Malformed {
            verdict = Verdict::Malformed;
        }
        judgement(tier_index, shadowed(&tier, verdict))
    }
}

/// The routes of one segment's request heads ([`Model::route_heads`]).
#[derive(Clone, Debug, Default)]
struct Routed {
    /// What the heads charge the source's requests bucket.
    requests: u32,
    /// The segment's first distinct routes, with the requests of each.
    slots: Vec<(RouteValue, u32)>,
    /// A later distinct route had a ceiling.
    overflow: bool,
}

/// Route slots a segment has (the kernel's `ROUTE_SLOTS`, restated).
const SEGMENT_ROUTES: usize = 4;

impl Model {
    /// Restates what a segment's heads charge and which routes they take.
    fn route_heads(&self, port: u16, payload: &[u8]) -> Routed {
        let begins_with_request = payload.len() >= http::PREFIX_LEN
            && http::starts_request(payload[..8].try_into().expect("8 bytes"));
        let mut routed = Routed::default();
        for (i, start) in head_starts(payload, begins_with_request)
            .into_iter()
            .enumerate()
        {
            let route = match start {
                Some(at) if i <= ROUTED_HEADS => {
                    let request = &payload[at..];
                    let host = if self.policy.routes.iter().any(|r| r.host != 0) {
                        host_header(&request[..request.len().min(HOST_SCAN_MAX as usize)])
                    } else {
                        None
                    };
                    self.policy.route(port, host, request)
                }
                _ => {
                    routed.requests += self.policy.split_head_cost.max(1);
                    continue;
                }
            };
            let Some(route) = route else {
                routed.requests += 1;
                continue;
            };
            routed.requests += if route.flags & crate::route::ROUTE_SHADOW != 0 {
                1
            } else {
                route.cost.max(1)
            };
            if let Some(slot) = routed
                .slots
                .iter_mut()
                .find(|(r, _)| r.index == route.index)
            {
                slot.1 += 1;
            } else if routed.slots.len() < SEGMENT_ROUTES {
                routed.slots.push((route, 1));
            } else if !route.ceiling.is_unlimited() {
                routed.overflow = true;
            }
        }
        routed
    }

    /// The route ceilings' TATs after taking the segment's requests, or
    /// `Err` when an enforced ceiling (or the overflow) refuses them.
    fn route_ceilings(&mut self, routed: &Routed) -> Result<Vec<(u32, u64)>, ()> {
        if routed.overflow {
            return Err(());
        }
        let mut tats = Vec::new();
        for (route, count) in &routed.slots {
            if route.ceiling.is_unlimited() {
                continue;
            }
            let one = route.ceiling.increment_ns(1);
            let next = (one <= route.ceiling.capacity_ns && *count < 0x1_0000)
                .then(|| {
                    gcra::admit(
                        self.route_tats[route.index as usize],
                        self.now_ns,
                        one * *count as u64,
                        route.ceiling.capacity_ns,
                    )
                })
                .flatten();
            match next {
                Some(tat) => tats.push((route.index, tat)),
                None if route.flags & crate::route::ROUTE_SHADOW != 0 => {
                    self.route_refused.push(route.index);
                }
                None => {
                    self.route_refused.push(route.index);
                    return Err(());
                }
            }
        }
        Ok(tats)
    }

    fn commit_route_tats(&mut self, tats: Vec<(u32, u64)>) {
        for (index, tat) in tats {
            self.route_tats[index as usize] = tat;
        }
    }

    fn count_routes(&mut self, routed: &Routed, verdict: Verdict) {
        for (route, count) in &routed.slots {
            let n = *count as u64;
            let refused = self.route_refused.contains(&route.index);
            let c = &mut self.route_counters[route.index as usize];
            c.requests += n;
            if verdict.drops() {
                c.dropped += n;
            }
            if refused {
                if route.flags & crate::route::ROUTE_SHADOW != 0 || !verdict.drops() {
                    c.shadow_would_drop += n;
                } else {
                    c.dropped_ceiling += n;
                }
            }
        }
        self.route_refused.clear();
    }
}

/// The tag of the Host header of the head whose request line begins
/// `window`, restated over lines: after the request line, header lines up
/// to the first empty one; the first that begins `host:` (any case) gives
/// the name after it (blanks skipped) up to a `:`, blank or line end, if
/// that end is inside the window; an empty name ends the search.
fn host_header(window: &[u8]) -> Option<u32> {
    let mut i = window.iter().position(|&b| b == b'\n')? + 1;
    loop {
        let rest = &window[i..];
        if rest.is_empty() || rest[0] == b'\n' || rest.starts_with(b"\r\n") {
            return None;
        }
        if rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(b"host:") {
            let blank = |b: &u8| *b == b' ' || *b == b'\t';
            let start = 5 + rest[5..].iter().take_while(|b| blank(b)).count();
            let name = &rest[start..];
            let len = name
                .iter()
                .position(|b| matches!(b, b':' | b' ' | b'\t' | b'\r' | b'\n'))?;
            return (len != 0).then(|| crate::route::host_tag(&name[..len]));
        }
        i += rest.iter().position(|&b| b == b'\n')? + 1;
    }
}

/// For each request head a payload ends, in order, where its request line
/// begins in the payload when the payload holds it: the first head's at 0
/// when the payload begins with one; a later head's at its first line, less
/// one leading `\r`. Lines as [`request_heads`] reads them.
fn head_starts(payload: &[u8], begins_with_request: bool) -> Vec<Option<usize>> {
    let complete = payload.iter().filter(|&&b| b == b'\n').count();
    let mut starts = Vec::new();
    let mut in_head = true;
    let mut start = begins_with_request.then_some(0);
    let mut offset = 0;
    for line in payload.split(|&b| b == b'\n').take(complete) {
        let empty = line.is_empty() || line == b"\r";
        if !empty && !in_head {
            in_head = true;
            start = Some(offset + (line[0] == b'\r') as usize);
        } else if empty && in_head {
            starts.push(start);
            in_head = false;
            start = None;
        }
        offset += line.len() + 1;
    }
    starts
}

fn judgement(tier: u32, verdict: Verdict) -> Judgement {
    Judgement { tier, verdict }
}

/// A shadow tier passes what it would drop.
fn shadowed(tier: &TierConfig, verdict: Verdict) -> Verdict {
    if tier.is_shadow() && verdict.drops() {
        Verdict::ShadowWouldDrop
    } else {
        verdict
    }
}

/// `buckets` after charging one packet, or the first limit that rejects it.
fn charge(
    mut buckets: Buckets,
    tier: &TierConfig,
    now: u64,
    len: u64,
    connection: bool,
    requests: u32,
) -> Result<Buckets, LimitKind> {
    let limit = |kind: LimitKind| &tier.limits[kind as usize];
    let now_ticks = (now >> TICK_SHIFT) as u32;

    buckets.packets =
        step_ns(buckets.packets, now, limit(LimitKind::Packets), 1).ok_or(LimitKind::Packets)?;
    buckets.bytes =
        step_ns(buckets.bytes, now, limit(LimitKind::Bytes), len).ok_or(LimitKind::Bytes)?;
    if connection {
        buckets.connections = step_ticks(
            buckets.connections,
            now_ticks,
            limit(LimitKind::Connections),
        )
        .ok_or(LimitKind::Connections)?;
    }
    // Requests one at a time: a segment is admitted if all of them fit.
    for _ in 0..requests {
        buckets.requests = step_ticks(buckets.requests, now_ticks, limit(LimitKind::Requests))
            .ok_or(LimitKind::Requests)?;
    }
    Ok(buckets)
}

/// HTTP request heads a TCP segment's payload ends, restated line by line: the
/// payload's complete lines (ended by `\n`) are read in order, as if the
/// segment began inside a request head; an empty line (nothing, or a lone
/// `\r`) ends the head when a non-empty line came before it since the last
/// end, and is skipped otherwise.
pub fn request_heads(payload: &[u8]) -> u32 {
    let complete = payload.iter().filter(|&&b| b == b'\n').count();
    let mut in_head = true;
    let mut ends = 0;
    for line in payload.split(|&b| b == b'\n').take(complete) {
        let empty = line.is_empty() || line == b"\r";
        if !empty {
            in_head = true;
        } else if in_head {
            ends += 1;
            in_head = false;
        }
    }
    ends
}

/// One nanosecond-bucket step costing `cost` units; unlimited costs nothing.
fn step_ns(tat: u64, now: u64, limit: &Limit, cost: u64) -> Option<u64> {
    if limit.is_unlimited() {
        return Some(tat);
    }
    gcra::admit(tat, now, limit.increment_ns(cost), limit.capacity_ns)
}

/// One tick-bucket step costing one unit; unlimited costs nothing.
fn step_ticks(tat: u32, now: u32, limit: &Limit) -> Option<u32> {
    if limit.is_unlimited() {
        return Some(tat);
    }
    gcra::admit_wrapping(tat, now, limit.increment_ticks(), limit.capacity_ticks())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RULE_TIER, TIER_ACTIVE, TIER_SHADOW};
    use proptest::strategy::Just;

    const HOUR: u64 = 3_600_000_000_000;
    const NOW: u64 = 1 << 40;

    fn eth(proto: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&proto.to_be_bytes());
        f
    }

    fn v4(src: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(0x0800);
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        f.extend_from_slice(&h);
        f.extend_from_slice(l4);
        f
    }

    fn udp(src: [u8; 4]) -> Vec<u8> {
        v4(src, 17, &[0; 8])
    }

    fn tcp(src: [u8; 4], flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t.extend_from_slice(payload);
        v4(src, 6, &t)
    }

    fn v6(src: [u8; 16]) -> Vec<u8> {
        let mut f = eth(0x86dd);
        let mut h = [0u8; 40];
        h[0] = 0x60;
        h[6] = 17;
        h[8..24].copy_from_slice(&src);
        f.extend_from_slice(&h);
        f.extend_from_slice(&[0; 8]);
        f
    }

    fn per_hour(burst: u64) -> Limit {
        Limit::per_period(1, HOUR, burst).unwrap()
    }

    fn tier(limits: [Option<Limit>; 4], aggregate: Option<Limit>, flags: u32) -> TierConfig {
        TierConfig {
            limits: limits.map(|l| l.unwrap_or(Limit::UNLIMITED)),
            aggregate: aggregate.unwrap_or(Limit::UNLIMITED),
            new_sources: Limit::UNLIMITED,
            ipv6_prefix: 64,
            flags: TIER_ACTIVE | flags,
        }
    }

    fn verdicts(m: &mut Model, frame: &[u8], n: usize) -> Vec<Verdict> {
        (0..n).map(|_| m.judge(frame).verdict).collect()
    }

    #[test]
    fn longest_prefix_wins_regardless_of_insertion_order() {
        let mut p = Policy::new();
        let rule = |action, tier| RuleValue {
            action,
            tier,
            expires_ns: 0,
        };
        p.set_rule(Network::V4([10, 1, 2, 3]), 8, rule(RULE_DENY, 0));
        p.set_rule(Network::V4([10, 1, 2, 0]), 24, rule(RULE_ALLOW, 3));
        p.set_rule(Network::V4([10, 1, 0, 0]), 16, rule(RULE_TIER, 2));
        p.set_rule(Network::V4([0, 0, 0, 0]), 0, rule(RULE_TIER, 9));
        let at = |p: &Policy, a| p.lookup(&SourceAddr::V4(a));
        assert_eq!(at(&p, [10, 1, 2, 200]), Some(rule(RULE_ALLOW, 3)));
        assert_eq!(at(&p, [10, 1, 3, 1]), Some(rule(RULE_TIER, 2)));
        assert_eq!(at(&p, [10, 2, 0, 1]), Some(rule(RULE_DENY, 0)));
        assert_eq!(at(&p, [11, 0, 0, 1]), Some(rule(RULE_TIER, 9)));
        assert_eq!(p.lookup(&SourceAddr::V6([0; 16])), None);
        // Same network and length (host bits differ): replaced, not added.
        p.set_rule(Network::V4([10, 1, 2, 99]), 24, rule(RULE_DENY, 1));
        assert_eq!(p.rules().len(), 4);
        assert_eq!(at(&p, [10, 1, 2, 200]), Some(rule(RULE_DENY, 1)));
    }

    #[test]
    fn rules_and_inactive_tiers() {
        let mut p = Policy::new();
        p.tiers[0] = tier([Some(per_hour(1)), None, None, None], None, 0);
        p.set_rule(
            Network::V4([1, 1, 1, 1]),
            32,
            RuleValue {
                action: RULE_ALLOW,
                tier: 4,
                expires_ns: 0,
            },
        );
        p.set_rule(
            Network::V4([2, 2, 2, 0]),
            24,
            RuleValue {
                action: RULE_DENY,
                tier: 5,
                expires_ns: 0,
            },
        );
        p.set_rule(
            Network::V4([3, 3, 3, 3]),
            32,
            RuleValue {
                action: RULE_TIER,
                tier: 6,
                expires_ns: 0,
            },
        );
        let mut m = Model::new(p, NOW);
        assert_eq!(m.judge(&udp([1, 1, 1, 1])), judgement(4, Verdict::Allowed));
        assert_eq!(m.judge(&udp([2, 2, 2, 9])), judgement(5, Verdict::Denied));
        // Tier 6 is not configured: passed, nothing tracked.
        assert_eq!(
            verdicts(&mut m, &udp([3, 3, 3, 3]), 3),
            [Verdict::Passed; 3]
        );
        assert!(m.sources().is_empty());
        assert_eq!(
            verdicts(&mut m, &udp([4, 4, 4, 4]), 2),
            [Verdict::Passed, Verdict::DroppedPackets]
        );
        assert_eq!(m.counters()[6][Verdict::Passed as usize].packets, 3);
        assert_eq!(m.counters()[0][Verdict::DroppedPackets as usize].packets, 1);
        assert_eq!(
            m.counters()[0][Verdict::DroppedPackets as usize].bytes,
            udp([4, 4, 4, 4]).len() as u64
        );
    }

    #[test]
    fn a_rejecting_limit_charges_nothing() {
        let frame = udp([5, 5, 5, 5]);
        let bytes = Limit::per_period(1, 1 << 31, 2 * frame.len() as u64).unwrap();
        let mut p = Policy::new();
        p.tiers[0] = tier([Some(per_hour(3)), Some(bytes), None, None], None, 0);
        let mut m = Model::new(p, NOW);
        assert_eq!(
            verdicts(&mut m, &frame, 4),
            [
                Verdict::Passed,
                Verdict::Passed,
                Verdict::DroppedBytes,
                Verdict::DroppedBytes
            ]
        );
        // The packets bucket holds the two admitted packets only.
        let state = m.sources()[&SourceKey::V4([5, 5, 5, 5])];
        assert_eq!(state.packets, NOW + 2 * HOUR);
    }

    #[test]
    fn connections_and_requests_count_only_their_packets() {
        let minute = 60_000_000_000;
        let mut p = Policy::new();
        let one = Limit::per_period(1, minute, 1).unwrap();
        p.tiers[0] = tier([None, None, Some(one), Some(one)], None, 0);
        p.http_ports = vec![80];
        let mut m = Model::new(p, NOW);
        let syn = tcp([6, 6, 6, 6], 0x02, b"");
        let synack = tcp([6, 6, 6, 6], 0x12, b"");
        let get = tcp([6, 6, 6, 6], 0x18, b"GET / HTTP/1.1\r\n\r\n");
        let body = tcp([6, 6, 6, 6], 0x18, b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(
            verdicts(&mut m, &syn, 2),
            [Verdict::Passed, Verdict::DroppedConnections]
        );
        assert_eq!(verdicts(&mut m, &synack, 2), [Verdict::Passed; 2]);
        assert_eq!(
            verdicts(&mut m, &get, 2),
            [Verdict::Passed, Verdict::DroppedRequests]
        );
        assert_eq!(verdicts(&mut m, &body, 2), [Verdict::Passed; 2]);
        // A SYN carrying a request that the request limit rejects gives its
        // connection back: two more SYNs fit a burst of two.
        let mut p = Policy::new();
        let two = Limit::per_period(1, minute, 2).unwrap();
        p.tiers[0] = tier([None, None, Some(two), Some(one)], None, 0);
        p.http_ports = vec![80];
        let mut m = Model::new(p, NOW);
        let syn_get = tcp([6, 6, 6, 6], 0x02, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(m.judge(&get).verdict, Verdict::Passed);
        assert_eq!(m.judge(&syn_get).verdict, Verdict::DroppedRequests);
        assert_eq!(
            verdicts(&mut m, &syn, 3),
            [
                Verdict::Passed,
                Verdict::Passed,
                Verdict::DroppedConnections
            ]
        );
    }

    #[test]
    fn aggregate_shadow_and_malformed_transport() {
        let mut p = Policy::new();
        p.tiers[0] = tier([Some(per_hour(2)), None, None, None], Some(per_hour(3)), 0);
        let mut m = Model::new(p.clone(), NOW);
        let a = verdicts(&mut m, &udp([8, 0, 0, 1]), 3);
        let b = verdicts(&mut m, &udp([8, 0, 0, 2]), 3);
        assert_eq!(
            a,
            [Verdict::Passed, Verdict::Passed, Verdict::DroppedPackets]
        );
        // The aggregate's drops charge nothing to the source, so b never
        // reaches its own packets limit.
        assert_eq!(
            b,
            [
                Verdict::Passed,
                Verdict::DroppedAggregate,
                Verdict::DroppedAggregate
            ]
        );

        p.tiers[0].flags |= TIER_SHADOW;
        let mut m = Model::new(p, NOW);
        // Truncated UDP header: admitted but malformed, so a shadow would-drop.
        let mut short = udp([8, 0, 0, 3]);
        short.truncate(14 + 20 + 4);
        assert_eq!(
            verdicts(&mut m, &short, 3),
            [
                Verdict::ShadowWouldDrop,
                Verdict::ShadowWouldDrop,
                Verdict::ShadowWouldDrop
            ]
        );
        assert_eq!(
            m.sources()[&SourceKey::V4([8, 0, 0, 3])].packets,
            NOW + 2 * HOUR
        );
    }

    #[test]
    fn admission_control_tracks_within_the_budget_and_bounds_the_rest() {
        let mut p = Policy::new();
        p.tiers[0] = tier([Some(per_hour(2)), None, None, None], Some(per_hour(4)), 0);
        p.tiers[0].new_sources = per_hour(2);
        let mut m = Model::new(p.clone(), NOW);
        let src = |i: u8| udp([9, 0, 0, i]);
        // Two new sources are tracked, four more pass untracked within their
        // own ceiling, then that ceiling is full.
        let got: Vec<Verdict> = (1..=8).map(|i| m.judge(&src(i)).verdict).collect();
        use Verdict::*;
        let untracked = [Untracked; 4];
        assert_eq!(got[..2], [Passed, Passed]);
        assert_eq!(got[2..6], untracked);
        assert_eq!(got[6..], [DroppedUntracked, DroppedUntracked]);
        assert_eq!(m.sources().len(), 2);
        assert_eq!(m.untracked_tat(0), NOW + 4 * HOUR);
        assert_eq!(m.new_sources_tat(0), NOW + 2 * HOUR);
        // The aggregate ceiling holds the tracked sources' packets only.
        assert_eq!(m.aggregate_tat(0), NOW + 2 * HOUR);
        assert_eq!(verdicts(&mut m, &src(1), 2), [Passed, DroppedPackets]);
        assert_eq!(verdicts(&mut m, &src(2), 2), [Passed, DroppedPackets]);
        assert_eq!(m.aggregate_tat(0), NOW + 4 * HOUR);
        // A shadow tier passes what it would drop, and still tracks nothing new.
        p.tiers[0].flags |= TIER_SHADOW;
        let mut m = Model::new(p, NOW);
        let got: Vec<Verdict> = (1..=7).map(|i| m.judge(&src(i)).verdict).collect();
        assert_eq!(got[2..6], untracked);
        assert_eq!(got[6], ShadowWouldDrop);
        assert_eq!(m.sources().len(), 2);
    }

    #[test]
    fn unparsable_frames_count_under_the_default_tier() {
        let mut p = Policy::new();
        p.default_tier = 7;
        p.tiers[7] = tier([Some(per_hour(1)), None, None, None], None, 0);
        let mut m = Model::new(p, NOW);
        assert_eq!(m.judge(&eth(0x0806)), judgement(7, Verdict::NotIp));
        assert_eq!(m.judge(&eth(0x0800)), judgement(7, Verdict::Malformed));
        assert!(m.sources().is_empty());
    }

    #[test]
    fn ipv6_sources_share_buckets_by_prefix() {
        let mut p = Policy::new();
        p.tiers[0] = tier([Some(per_hour(1)), None, None, None], None, 0);
        p.tiers[0].ipv6_prefix = 48;
        let mut m = Model::new(p, NOW);
        let mut a = [0u8; 16];
        a[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
        let mut b = a;
        b[6] = 0xff; // same /48, different /64
        let mut c = a;
        c[5] = 2; // different /48
        assert_eq!(m.judge(&v6(a)).verdict, Verdict::Passed);
        assert_eq!(m.judge(&v6(b)).verdict, Verdict::DroppedPackets);
        assert_eq!(m.judge(&v6(c)).verdict, Verdict::Passed);
        assert_eq!(m.sources().len(), 2);
    }

    #[test]
    fn idle_buckets_match_the_kernels_fresh_state() {
        assert_eq!(
            Buckets::idle(NOW + 12_345).to_state(),
            crate::limiter::fresh_state(NOW + 12_345)
        );
    }

    #[test]
    fn a_segment_is_charged_every_request_head_it_ends_on_the_http_ports_only() {
        let minute = 60_000_000_000;
        let mut p = Policy::new();
        let ten = Limit::per_period(1, minute, 10).unwrap();
        p.tiers[0] = tier([None, None, None, Some(ten)], None, 0);
        p.http_ports = vec![80];
        let mut m = Model::new(p.clone(), NOW);
        let four = b"GET / HTTP/1.1\r\n\r\n".repeat(4);
        let pipelined = tcp([7, 7, 7, 7], 0x18, &four);
        // 4 + 4 fit a burst of 10, the next 4 do not (and charge nothing).
        assert_eq!(
            verdicts(&mut m, &pipelined, 3),
            [Verdict::Passed, Verdict::Passed, Verdict::DroppedRequests]
        );
        // A segment that begins with the rest of a head end is charged for it.
        assert_eq!(
            m.judge(&tcp([7, 7, 7, 7], 0x18, b"\n")).verdict,
            Verdict::Passed
        );
        assert_eq!(
            verdicts(&mut m, &tcp([7, 7, 7, 7], 0x18, b"\r\n"), 2),
            [Verdict::Passed, Verdict::DroppedRequests]
        );
        // Off the HTTP ports nothing is a request.
        p.http_ports.clear();
        let mut m = Model::new(p, NOW);
        assert_eq!(verdicts(&mut m, &pipelined, 5), [Verdict::Passed; 5]);
        assert_eq!(request_heads(b"GET / HTTP/1.1\n\n\r\n\n"), 1);
        assert_eq!(request_heads(b"\r\nGET / HTTP/1.1\r\n\r"), 1);
    }

    proptest::proptest! {
        /// The kernel's word-at-a-time scan (`http::HeadEnds`, fed as the
        /// program feeds it: blocks of 32 bytes, then the last 1 to 31 as a
        /// filled block, `http::last_block`) and this line-by-line
        /// restatement agree on any payload.
        #[test]
        fn the_head_scan_agrees_with_the_restatement(
            payload in proptest::collection::vec(
                proptest::prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b'G'), proptest::num::u8::ANY
                ],
                0..400,
            )
        ) {
            // (0xee for the headers before a short segment: any bytes.)
            let scan = crate::http::scan_as_the_program_does(&payload, 0xee);
            proptest::prop_assert_eq!(scan.ends, request_heads(&payload));
            // And on where the request lines after head ends begin: the
            // kernel's noted starts are the starts of heads 1, 2, ...
            let starts = head_starts(&payload, false);
            for (i, start) in starts.iter().enumerate().skip(1).take(ROUTED_HEADS) {
                proptest::prop_assert_eq!(Some(scan.start_at[i - 1] as usize), *start, "head {}", i);
            }
        }
    }

    fn route(index: u32, cost: u32, ceiling: Option<u64>, shadow: bool) -> RouteValue {
        RouteValue {
            index,
            cost,
            ceiling: ceiling.map_or(Limit::UNLIMITED, per_hour),
            flags: if shadow {
                crate::route::ROUTE_SHADOW
            } else {
                0
            },
            _reserved: 0,
        }
    }

    #[test]
    fn routed_heads_charge_their_routes_and_ceilings_hold_across_sources() {
        let mut policy = Policy::new();
        policy.http_ports = vec![80];
        let forty = Limit::per_period(1, 10_000_000_000, 40).unwrap();
        policy.tiers[0] = tier([None, None, None, Some(forty)], None, TIER_ACTIVE);
        policy.routes = vec![
            Route {
                port: 80,
                host: 0,
                line: b"POST /api/search".to_vec(),
                value: route(0, 20, None, false),
            },
            Route {
                port: 80,
                host: 0,
                line: b"GET /r".to_vec(),
                value: route(1, 1, Some(3), false),
            },
            Route {
                port: 80,
                host: 0,
                line: Vec::new(),
                value: route(2, 2, None, false),
            },
        ];
        policy.split_head_cost = 20;
        let mut m = Model::new(policy, NOW);
        let req = |line: &str| format!("{line} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        let dear = tcp([1, 1, 1, 1], 0x18, &req("POST /api/search?q"));
        assert_eq!(
            verdicts(&mut m, &dear, 3),
            [Verdict::Passed, Verdict::Passed, Verdict::DroppedRequests]
        );
        // The port's route (cost 2) for anything else: 20 of burst 40.
        let other = tcp([1, 1, 1, 2], 0x18, &req("GET /x"));
        assert_eq!(
            verdicts(&mut m, &other, 21)
                .iter()
                .filter(|v| **v == Verdict::Passed)
                .count(),
            20
        );
        // A ceiling of 3 across sources.
        let passed = (0..6u8)
            .filter(|&i| {
                m.judge(&tcp([2, 2, 2, i], 0x18, &req("GET /r/1"))).verdict == Verdict::Passed
            })
            .count();
        assert_eq!(passed, 3);
        assert_eq!(m.route_counters()[1].requests, 6);
        assert_eq!(m.route_counters()[1].dropped_ceiling, 3);
        // A split head costs the dearest route.
        let tail = tcp([3, 3, 3, 3], 0x18, b"Host: x\r\n\r\n");
        assert_eq!(
            verdicts(&mut m, &tail, 3),
            [Verdict::Passed, Verdict::Passed, Verdict::DroppedRequests]
        );
    }
}
