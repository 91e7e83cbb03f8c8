//! Routes: what one HTTP request to an endpoint charges its source's
//! requests bucket (`cost`), and the ceiling all sources share for it (the
//! backend's capacity for that endpoint).
//!
//! The kernel finds a request's route by a longest-prefix match over bytes
//! (`TG_ROUTES`, an LPM trie keyed by [`RouteKey`]): the destination port,
//! a host tag, two zero bytes (so the line is 8-aligned and the kernel copies
//! it a word at a time), then the request line's first bytes as they arrive
//! (`POST /api/search?q=...`). A route of a whole port is the 16-bit prefix
//! (the port alone); a route of a method and path prefix on a port is that
//! port, a zero host tag, and the bytes `METHOD SP path-prefix`.
//!
//! Which request a head belongs to: the head scan ([`crate::http::HeadEnds`])
//! counts head ends and notes where each request line that follows a head
//! end starts. Head `j` of a segment (0-based, by its end) starts at the
//! segment's first byte when the segment begins with a request line, else it
//! began in an earlier segment (a *split head*); head `j >= 1` starts at the
//! `j - 1`th noted start. Heads whose request line is in the segment (the
//! first [`ROUTED_HEADS`] + 1) are routed; the others, split heads included,
//! are charged [`crate::Settings::split_head_cost`] (the dearest enforced
//! route's cost) and no ceiling: a client cannot make a request cheaper by
//! splitting it.

use crate::Limit;

/// Bytes of a route key: port, host tag, padding, request line.
pub const ROUTE_KEY_LEN: usize = 64;
/// Where the host tag starts in a key.
pub const ROUTE_HOST_OFFSET: usize = 2;
/// Where the request line starts in a key (8-aligned).
pub const ROUTE_LINE_OFFSET: usize = 8;
/// Request-line bytes a key holds: a route's `METHOD SP path-prefix` is at
/// most this long.
pub const ROUTE_LINE_LEN: usize = ROUTE_KEY_LEN - ROUTE_LINE_OFFSET;
/// Routes the kernel can hold (indices into the ceiling and counter maps).
pub const MAX_ROUTES: u32 = 256;
/// The largest cost one request may have.
pub const MAX_ROUTE_COST: u32 = 10_000;
/// Heads per segment, after the first, whose route is looked up.
pub const ROUTED_HEADS: usize = 8;
/// Distinct routes one segment can charge; a segment carrying more distinct
/// routes is refused (fail closed) when any of them has a ceiling.
pub const ROUTE_SLOTS: usize = 4;

/// [`RouteValue::flags`]: count and pass (cost 1, the ceiling's would-drops
/// counted, never dropped).
pub const ROUTE_SHADOW: u32 = 1 << 0;
/// [`RouteValue::flags`]: the route names a host (its key carries the host's
/// tag). The kernel looks a request up with its Host header's tag first and
/// keeps what it finds only if it is such a route, else looks it up again
/// without a host: a route with a host wins over every route without one.
pub const ROUTE_HOST: u32 = 1 << 1;

/// Host bytes a tag covers (a longer host is told apart by these only).
pub const HOST_MAX: u32 = 64;
/// Head bytes after a request line's start searched for its Host header.
pub const HOST_SCAN_MAX: u32 = 1024;

/// The tag of a host name in a route key: FNV-1a over the name's first
/// [`HOST_MAX`] bytes, ASCII lower-cased, never 0 (0 is "any host"). Fed a
/// byte at a time by the kernel as it reads a Host header, and over the
/// whole name by the daemon for a route's `host`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTag {
    hash: u32,
    len: u32,
}

impl HostTag {
    pub const fn new() -> HostTag {
        HostTag {
            hash: 0x811c_9dc5,
            len: 0,
        }
    }

    /// Feeds one byte of the name (bytes past [`HOST_MAX`] are ignored).
    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        if self.len < HOST_MAX {
            self.hash = (self.hash ^ b.to_ascii_lowercase() as u32).wrapping_mul(0x0100_0193);
            self.len += 1;
        }
    }

    /// The tag: nonzero.
    #[inline(always)]
    pub const fn finish(&self) -> u32 {
        if self.hash == 0 { 1 } else { self.hash }
    }
}

impl Default for HostTag {
    fn default() -> Self {
        HostTag::new()
    }
}

/// The tag of `host` (a name without port).
pub fn host_tag(host: &[u8]) -> u32 {
    let mut tag = HostTag::new();
    for &b in host {
        tag.byte(b);
    }
    tag.finish()
}

/// LPM key data of `TG_ROUTES` (the kernel's `Key<RouteKey>` adds the prefix
/// length in bits).
pub type RouteKey = [u8; ROUTE_KEY_LEN];

/// A route's key and its prefix length in bits: `port` big-endian, then the
/// host tag (0: any host) and two zero bytes, then `line` (`METHOD SP path-prefix`, or empty for
/// a route of the whole port, whose prefix is the port alone).
pub fn route_key(port: u16, line: &[u8]) -> Option<(u32, RouteKey)> {
    route_key_for_host(port, 0, line)
}

/// [`route_key`] for a route of one host (`host_tag` from [`host_tag`]; 0:
/// any host). A host's route of a whole port is the port and the tag.
pub fn route_key_for_host(port: u16, host_tag: u32, line: &[u8]) -> Option<(u32, RouteKey)> {
    if line.len() > ROUTE_LINE_LEN {
        return None;
    }
    let mut key = [0u8; ROUTE_KEY_LEN];
    key[..2].copy_from_slice(&port.to_be_bytes());
    key[ROUTE_HOST_OFFSET..ROUTE_HOST_OFFSET + 4].copy_from_slice(&host_tag.to_be_bytes());
    if line.is_empty() {
        return Some((if host_tag == 0 { 16 } else { 48 }, key));
    }
    key[ROUTE_LINE_OFFSET..ROUTE_LINE_OFFSET + line.len()].copy_from_slice(line);
    Some((((ROUTE_LINE_OFFSET + line.len()) * 8) as u32, key))
}

/// Value of `TG_ROUTES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteValue {
    /// The route's slot in `TG_ROUTE_CEILINGS` and `TG_ROUTE_COUNTERS`
    /// (below [`MAX_ROUTES`]); stable across reloads for the same route.
    pub index: u32,
    /// Requests one request to the route charges its source (1..=[`MAX_ROUTE_COST`]).
    pub cost: u32,
    /// Requests/s for all sources together; unlimited: no ceiling.
    pub ceiling: Limit,
    /// [`ROUTE_SHADOW`].
    pub flags: u32,
    pub _reserved: u32,
}

impl RouteValue {
    #[inline(always)]
    pub const fn is_shadow(&self) -> bool {
        self.flags & ROUTE_SHADOW != 0
    }

    /// What one request to the route charges its source: a shadow route
    /// charges what an unrouted request does.
    #[inline(always)]
    pub const fn charge(&self) -> u32 {
        if self.is_shadow() || self.cost == 0 {
            1
        } else {
            self.cost
        }
    }
}

/// Per-CPU counters of one route (value of `TG_ROUTE_COUNTERS`), in requests.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCounter {
    /// Requests routed here (every verdict).
    pub requests: u64,
    /// Requests routed here in segments that were dropped, for any reason.
    pub dropped: u64,
    /// Requests refused by this route's ceiling.
    pub dropped_ceiling: u64,
    /// Requests this shadow route's ceiling would have refused.
    pub shadow_would_drop: u64,
}

/// One distinct route a segment charges.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteSlot {
    pub index: u32,
    /// Requests of this segment routed here.
    pub count: u32,
    pub flags: u32,
    /// Set when the ceiling refused (or, shadow, would have refused) them.
    pub refused: u32,
    pub ceiling: Limit,
    /// Nanoseconds charged to the ceiling, given back if the segment is dropped later.
    pub charged_ns: u64,
}

/// The routes of one segment's requests and what they charge: filled by the
/// kernel's route pass, then charged against the ceilings once the source's
/// rule is known.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentRoutes {
    pub slots: [RouteSlot; ROUTE_SLOTS],
    /// Slots in use.
    pub used: u32,
    /// A request's route with a ceiling found no free slot: the segment is
    /// refused rather than let it past the ceiling.
    pub overflow: u32,
    /// What the segment charges its source's requests bucket: every routed
    /// request its route's charge, every other head the split-head cost.
    pub requests: u32,
    pub _reserved: u32,
}

impl SegmentRoutes {
    /// Notes one request routed to `route`.
    #[inline(always)]
    pub fn add(&mut self, route: &RouteValue) {
        self.requests = self.requests.saturating_add(route.charge());
        let mut i = 0;
        while i < ROUTE_SLOTS {
            if (i as u32) < self.used && self.slots[i].index == route.index {
                self.slots[i].count += 1;
                return;
            }
            i += 1;
        }
        let used = self.used as usize;
        if used < ROUTE_SLOTS {
            self.slots[used] = RouteSlot {
                index: route.index,
                count: 1,
                flags: route.flags,
                refused: 0,
                ceiling: route.ceiling,
                charged_ns: 0,
            };
            self.used += 1;
        } else if !route.ceiling.is_unlimited() {
            self.overflow = 1;
        }
    }

    /// Notes `heads` requests whose route is unknown (split, or past
    /// [`ROUTED_HEADS`]): each charges `cost`.
    #[inline(always)]
    pub fn add_unrouted(&mut self, heads: u32, cost: u32) {
        self.requests = self
            .requests
            .saturating_add(heads.saturating_mul(if cost == 0 { 1 } else { cost }));
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)] plain integers.
    unsafe impl aya::Pod for RouteValue {}
    unsafe impl aya::Pod for RouteCounter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(index: u32, cost: u32, ceiling: bool, flags: u32) -> RouteValue {
        RouteValue {
            index,
            cost,
            ceiling: if ceiling {
                Limit::per_period(200, 1_000_000_000, 20).unwrap()
            } else {
                Limit::UNLIMITED
            },
            flags,
            _reserved: 0,
        }
    }

    #[test]
    fn keys_put_the_port_first_and_the_line_after_the_host_tag() {
        let (bits, key) = route_key(8080, b"POST /api").unwrap();
        assert_eq!(bits, (8 + 9) * 8);
        assert_eq!(&key[..2], &8080u16.to_be_bytes());
        assert_eq!(&key[2..8], &[0; 6]);
        assert_eq!(&key[8..17], b"POST /api");
        assert_eq!(
            route_key(443, b""),
            Some((16, {
                let mut k = [0u8; ROUTE_KEY_LEN];
                k[..2].copy_from_slice(&443u16.to_be_bytes());
                k
            }))
        );
        assert!(route_key(80, &[b'a'; ROUTE_LINE_LEN]).is_some());
        assert!(route_key(80, &[b'a'; ROUTE_LINE_LEN + 1]).is_none());
    }

    #[test]
    fn host_tags_ignore_case_and_never_are_zero() {
        assert_eq!(host_tag(b"API.Example.com"), host_tag(b"api.example.com"));
        assert_ne!(host_tag(b"api.example.com"), host_tag(b"www.example.com"));
        assert_ne!(host_tag(b""), 0);
        let long = [b'a'; 100];
        assert_eq!(host_tag(&long), host_tag(&long[..HOST_MAX as usize]));
        let (bits, key) = route_key_for_host(80, 0xdead_beef, b"GET /").unwrap();
        assert_eq!(bits, (8 + 5) * 8);
        assert_eq!(&key[2..6], &0xdead_beefu32.to_be_bytes());
        assert_eq!(route_key_for_host(80, 7, b"").unwrap().0, 48);
    }

    #[test]
    fn a_segment_sums_charges_and_merges_slots_by_route() {
        let mut s = SegmentRoutes::default();
        s.add(&route(3, 20, false, 0));
        s.add(&route(3, 20, false, 0));
        s.add(&route(7, 5, true, ROUTE_SHADOW));
        s.add_unrouted(2, 20);
        assert_eq!(s.requests, 20 + 20 + 1 + 40);
        assert_eq!(s.used, 2);
        assert_eq!((s.slots[0].index, s.slots[0].count), (3, 2));
        assert_eq!((s.slots[1].index, s.slots[1].count), (7, 1));
        assert_eq!(s.overflow, 0);
    }

    #[test]
    fn a_fifth_distinct_route_overflows_only_when_it_has_a_ceiling() {
        let mut s = SegmentRoutes::default();
        for i in 0..ROUTE_SLOTS as u32 {
            s.add(&route(i, 1, false, 0));
        }
        s.add(&route(10, 1, false, 0));
        assert_eq!(s.overflow, 0);
        s.add(&route(11, 1, true, 0));
        assert_eq!(s.overflow, 1);
        assert_eq!(s.requests, ROUTE_SLOTS as u32 + 2);
    }
}
