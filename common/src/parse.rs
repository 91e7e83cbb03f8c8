//! Header walk, shared by the XDP program and the host's reference model.
//!
//! Shaped after xdp-tools' `parsing_helpers.h`: a cursor that only moves forward,
//! a bounds check before every read, bounded loops for VLAN tags and IPv6
//! extension headers, and the TCP header length taken from `doff`. The walk is
//! generic over [`PacketReader`] so the same code runs on XDP packet pointers in
//! the kernel and on byte slices in tests and fuzzers.

/// Source of packet bytes. Implementations must return `None` rather than read
/// past the end of the packet.
pub trait PacketReader {
    /// The `N` bytes at `offset`, or `None` when the packet is shorter.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
    /// Length of the whole frame in bytes.
    fn frame_len(&self) -> usize;
}

impl PacketReader for [u8] {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let slice = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Some(out)
    }

    fn frame_len(&self) -> usize {
        self.len()
    }
}

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// VLAN tags walked before giving up (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceAddr {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A complete TCP header. `new_connection`: SYN without ACK. `payload`:
    /// offset of the first payload byte in the frame.
    Tcp {
        new_connection: bool,
        payload: usize,
        dst_port: u16,
    },
    Udp,
    /// A non-first fragment: no transport header to read.
    Fragment,
    /// A protocol tollgate does not look into (ICMP, GRE, ESP, ...).
    Other,
    /// The transport header (or IPv6 extension chain) is truncated, invalid, or
    /// longer than [`MAX_IPV6_EXT_HEADERS`].
    Malformed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub src: SourceAddr,
    pub transport: Transport,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp,
    /// No source address can be trusted: truncated Ethernet/VLAN/IP header, bad
    /// IP version or header length, too many VLAN tags.
    Malformed,
    Ip(IpPacket),
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Walks the headers of one frame.
#[inline(always)]
pub fn parse<R: PacketReader + ?Sized>(r: &R) -> Parsed {
    let Some(mut proto) = r.bytes::<2>(12).map(be16) else {
        return Parsed::Malformed;
    };
    let mut cursor = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        // struct vlan_hdr { __be16 tci; __be16 encapsulated_proto; }
        let Some(inner) = r.bytes::<2>(cursor + 2).map(be16) else {
            return Parsed::Malformed;
        };
        proto = inner;
        cursor += 4;
    }
    match proto {
        ETH_P_IP => parse_ipv4(r, cursor),
        ETH_P_IPV6 => parse_ipv6(r, cursor),
        ETH_P_8021Q | ETH_P_8021AD => Parsed::Malformed,
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4<R: PacketReader + ?Sized>(r: &R, cursor: usize) -> Parsed {
    let Some(h) = r.bytes::<20>(cursor) else {
        return Parsed::Malformed;
    };
    let ihl = (h[0] & 0x0f) as usize;
    if h[0] >> 4 != 4 || ihl < 5 {
        return Parsed::Malformed;
    }
    let header_len = ihl * 4;
    // Options present: the whole header must be in the frame.
    if header_len > 20 && r.bytes::<1>(cursor + header_len - 1).is_none() {
        return Parsed::Malformed;
    }
    let src = SourceAddr::V4([h[12], h[13], h[14], h[15]]);
    let fragment_offset = be16([h[6], h[7]]) & 0x1fff;
    let transport = if fragment_offset != 0 {
        Transport::Fragment
    } else {
        parse_transport(r, h[9], cursor + header_len)
    };
    Parsed::Ip(IpPacket { src, transport })
}

#[inline(always)]
fn parse_ipv6<R: PacketReader + ?Sized>(r: &R, cursor: usize) -> Parsed {
    let Some(h) = r.bytes::<40>(cursor) else {
        return Parsed::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let src = SourceAddr::V6(src);
    let mut next = h[6];
    let mut cursor = cursor + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // struct ipv6_opt_hdr { u8 nexthdr; u8 hdrlen (8-octet units, not counting the first); }
                let Some(ext) = r.bytes::<2>(cursor) else {
                    return malformed_from(src);
                };
                next = ext[0];
                cursor += (ext[1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(frag) = r.bytes::<8>(cursor) else {
                    return malformed_from(src);
                };
                if be16([frag[2], frag[3]]) >> 3 != 0 {
                    return Parsed::Ip(IpPacket {
                        src,
                        transport: Transport::Fragment,
                    });
                }
                next = frag[0];
                cursor += 8;
            }
            _ => {
                return Parsed::Ip(IpPacket {
                    src,
                    transport: parse_transport(r, next, cursor),
                });
            }
        }
    }
    // Still an extension header after the bound: refuse to guess.
    let transport = match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            Transport::Malformed
        }
        _ => parse_transport(r, next, cursor),
    };
    Parsed::Ip(IpPacket { src, transport })
}

#[inline(always)]
fn malformed_from(src: SourceAddr) -> Parsed {
    Parsed::Ip(IpPacket {
        src,
        transport: Transport::Malformed,
    })
}

#[inline(always)]
fn parse_transport<R: PacketReader + ?Sized>(r: &R, proto: u8, cursor: usize) -> Transport {
    match proto {
        IPPROTO_TCP => {
            let Some(tcp) = r.bytes::<20>(cursor) else {
                return Transport::Malformed;
            };
            let doff = (tcp[12] >> 4) as usize;
            if doff < 5 {
                return Transport::Malformed;
            }
            let header_len = doff * 4;
            if header_len > 20 && r.bytes::<1>(cursor + header_len - 1).is_none() {
                return Transport::Malformed;
            }
            let flags = tcp[13];
            Transport::Tcp {
                new_connection: flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0,
                payload: cursor + header_len,
                dst_port: be16([tcp[2], tcp[3]]),
            }
        }
        IPPROTO_UDP => match r.bytes::<8>(cursor) {
            Some(_) => Transport::Udp,
            None => Transport::Malformed,
        },
        _ => Transport::Other,
    }
}

/// Whether a TCP payload at `payload` begins an HTTP/1.x request.
#[inline(always)]
pub fn is_http_request<R: PacketReader + ?Sized>(r: &R, payload: usize) -> bool {
    match r.bytes::<{ crate::http::PREFIX_LEN }>(payload) {
        Some(prefix) => crate::http::starts_request(prefix),
        None => false,
    }
}

/// Bucket key of an IPv6 source: its first 64 bits masked to `prefix` bits
/// (clamped to 1..=64), big-endian as a number.
#[inline(always)]
pub fn ipv6_key(addr: &[u8; 16], prefix: u32) -> u64 {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let prefix = if prefix == 0 || prefix > 64 {
        64
    } else {
        prefix
    };
    hi & (u64::MAX << (64 - prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(proto: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&proto.to_be_bytes());
        f
    }

    fn ipv4(proto: u8, ihl: u8, frag: u16) -> Vec<u8> {
        let mut h = vec![0u8; ihl as usize * 4];
        h[0] = 0x40 | ihl;
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&[10, 0, 0, 1]);
        h
    }

    fn tcp(flags: u8, doff: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; doff.max(5) as usize * 4];
        t[12] = doff << 4;
        t[13] = flags;
        t.extend_from_slice(payload);
        t
    }

    #[test]
    fn ipv4_tcp_syn() {
        let mut f = eth(ETH_P_IP);
        f.extend(ipv4(IPPROTO_TCP, 5, 0));
        f.extend(tcp(TCP_FLAG_SYN, 5, b""));
        assert_eq!(
            parse(&f[..]),
            Parsed::Ip(IpPacket {
                src: SourceAddr::V4([10, 0, 0, 1]),
                transport: Transport::Tcp {
                    new_connection: true,
                    payload: 54,
                    dst_port: 0,
                }
            })
        );
    }

    #[test]
    fn qinq_ipv4_options_tcp_options_http() {
        let mut f = eth(ETH_P_8021AD);
        f.extend_from_slice(&[0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend(ipv4(IPPROTO_TCP, 7, 0));
        f.extend(tcp(TCP_FLAG_ACK, 8, b"GET / HTTP/1.1\r\n"));
        let Parsed::Ip(p) = parse(&f[..]) else {
            panic!()
        };
        let Transport::Tcp { payload, .. } = p.transport else {
            panic!()
        };
        assert_eq!(payload, 14 + 8 + 28 + 32);
        assert!(is_http_request(&f[..], payload));
    }

    #[test]
    fn three_vlan_tags_are_malformed() {
        let mut f = eth(ETH_P_8021Q);
        f.extend_from_slice(&[0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00]);
        f.extend(ipv4(IPPROTO_UDP, 5, 0));
        assert_eq!(parse(&f[..]), Parsed::Malformed);
    }

    #[test]
    fn truncation_at_every_length_never_panics_and_never_invents_a_source() {
        let mut f = eth(ETH_P_IP);
        f.extend(ipv4(IPPROTO_TCP, 6, 0));
        f.extend(tcp(0, 6, b"POST /a HTTP/1.1"));
        for len in 0..f.len() {
            let p = parse(&f[..len]);
            if len < 14 + 24 {
                assert_eq!(p, Parsed::Malformed, "len {len}");
            } else if len < 14 + 24 + 24 {
                assert!(matches!(
                    p,
                    Parsed::Ip(IpPacket {
                        transport: Transport::Malformed,
                        ..
                    })
                ));
            }
        }
    }

    #[test]
    fn ipv4_non_first_fragment() {
        let mut f = eth(ETH_P_IP);
        f.extend(ipv4(IPPROTO_UDP, 5, 185));
        assert!(matches!(
            parse(&f[..]),
            Parsed::Ip(IpPacket {
                transport: Transport::Fragment,
                ..
            })
        ));
    }

    fn ipv6(next: u8) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[6] = next;
        h[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]);
        h
    }

    #[test]
    fn ipv6_extension_chain() {
        let mut f = eth(ETH_P_IPV6);
        f.extend(ipv6(IPPROTO_HOPOPTS));
        f.extend_from_slice(&[IPPROTO_ROUTING, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[
            IPPROTO_FRAGMENT,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        f.extend_from_slice(&[IPPROTO_DSTOPTS, 0, 0, 1, 0, 0, 0, 0]); // first fragment (offset 0, M=1)
        f.extend_from_slice(&[IPPROTO_UDP, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[0u8; 8]);
        assert!(matches!(
            parse(&f[..]),
            Parsed::Ip(IpPacket {
                transport: Transport::Udp,
                ..
            })
        ));
    }

    #[test]
    fn ipv6_seven_extension_headers_are_malformed() {
        let mut f = eth(ETH_P_IPV6);
        f.extend(ipv6(IPPROTO_DSTOPTS));
        for _ in 0..7 {
            f.extend_from_slice(&[IPPROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert!(matches!(
            parse(&f[..]),
            Parsed::Ip(IpPacket {
                transport: Transport::Malformed,
                ..
            })
        ));
    }

    #[test]
    fn ipv6_key_groups_by_prefix() {
        let a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut b = a;
        b[15] = 0xff;
        b[8] = 0xff;
        assert_eq!(ipv6_key(&a, 64), ipv6_key(&b, 64));
        let mut c = a;
        c[7] = 2;
        assert_ne!(ipv6_key(&a, 64), ipv6_key(&c, 64));
        assert_eq!(ipv6_key(&a, 48), ipv6_key(&c, 48));
    }
}
