//! Frame builder for test_run verdict tests: Ethernet, VLAN tags, IPv4 with
//! options and fragment offsets, IPv6 with extension chains, TCP/UDP/ICMP.

use std::net::IpAddr;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_PSH: u8 = 0x08;

#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DstOpts,
    /// A fragment header with this offset (8-byte units); 0 is a first fragment.
    Fragment(u16),
}

impl Ext {
    fn proto(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::DstOpts => 60,
            Ext::Fragment(_) => 44,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum L4 {
    /// TCP with these flags and this many bytes of options (multiple of 4).
    Tcp {
        flags: u8,
        options: usize,
    },
    Udp,
    Icmp,
}

#[derive(Clone, Debug)]
pub struct Packet {
    vlans: Vec<u16>,
    src: IpAddr,
    ipv4_options: usize,
    ipv4_fragment_offset: u16,
    ipv6_ext: Vec<Ext>,
    l4: L4,
    payload: Vec<u8>,
    dst_port: u16,
}

impl Packet {
    pub fn from(src: impl Into<IpAddr>) -> Packet {
        Packet {
            vlans: Vec::new(),
            src: src.into(),
            ipv4_options: 0,
            ipv4_fragment_offset: 0,
            ipv6_ext: Vec::new(),
            l4: L4::Udp,
            payload: Vec::new(),
            dst_port: 80,
        }
    }

    /// Adds a VLAN tag with this TPID (0x8100 or 0x88a8), outermost first.
    pub fn vlan(mut self, tpid: u16) -> Self {
        self.vlans.push(tpid);
        self
    }

    pub fn ipv4_options(mut self, bytes: usize) -> Self {
        assert!(bytes.is_multiple_of(4) && bytes <= 40);
        self.ipv4_options = bytes;
        self
    }

    pub fn ipv4_fragment(mut self, offset: u16) -> Self {
        self.ipv4_fragment_offset = offset;
        self
    }

    pub fn ext(mut self, ext: Ext) -> Self {
        self.ipv6_ext.push(ext);
        self
    }

    pub fn tcp(mut self, flags: u8) -> Self {
        self.l4 = L4::Tcp { flags, options: 0 };
        self
    }

    pub fn tcp_options(mut self, flags: u8, options: usize) -> Self {
        assert!(options.is_multiple_of(4) && options <= 40);
        self.l4 = L4::Tcp { flags, options };
        self
    }

    /// The TCP or UDP destination port (80 unless set).
    pub fn dst_port(mut self, port: u16) -> Self {
        self.dst_port = port;
        self
    }

    pub fn udp(mut self) -> Self {
        self.l4 = L4::Udp;
        self
    }

    pub fn icmp(mut self) -> Self {
        self.l4 = L4::Icmp;
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        for (i, tpid) in self.vlans.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        let l4 = self.l4_bytes();
        let l4_proto = match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp => 17,
            L4::Icmp => {
                if self.src.is_ipv4() {
                    1
                } else {
                    58
                }
            }
        };
        match self.src {
            IpAddr::V4(src) => {
                let hl = 20 + self.ipv4_options;
                let mut h = vec![0u8; hl];
                h[0] = 0x40 | (hl / 4) as u8;
                h[2..4].copy_from_slice(&((hl + l4.len()) as u16).to_be_bytes());
                h[6..8].copy_from_slice(&(self.ipv4_fragment_offset & 0x1fff).to_be_bytes());
                h[8] = 64;
                h[9] = l4_proto;
                h[12..16].copy_from_slice(&src.octets());
                h[16..20].copy_from_slice(&[198, 18, 0, 1]);
                for b in h.iter_mut().skip(20) {
                    *b = 1; // NOP options
                }
                f.extend(h);
                if self.ipv4_fragment_offset == 0 {
                    f.extend(l4);
                } else {
                    f.extend_from_slice(&self.payload);
                }
            }
            IpAddr::V6(src) => {
                let mut exts = Vec::new();
                for (i, e) in self.ipv6_ext.iter().enumerate() {
                    let next = self
                        .ipv6_ext
                        .get(i + 1)
                        .map(|n| n.proto())
                        .unwrap_or(l4_proto);
                    let mut h = vec![0u8; 8];
                    h[0] = next;
                    if let Ext::Fragment(off) = e {
                        h[2..4].copy_from_slice(&(off << 3).to_be_bytes());
                    }
                    exts.extend(h);
                }
                let first = self.ipv6_ext.first().map(|e| e.proto()).unwrap_or(l4_proto);
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
                h[6] = first;
                h[7] = 64;
                h[8..24].copy_from_slice(&src.octets());
                h[24..40]
                    .copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                f.extend(h);
                f.extend(exts);
                f.extend(l4);
            }
        }
        f
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = match self.l4 {
            L4::Tcp { flags, options } => {
                let mut t = vec![0u8; 20 + options];
                t[0..2].copy_from_slice(&40000u16.to_be_bytes());
                t[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                t[12] = (((20 + options) / 4) as u8) << 4;
                t[13] = flags;
                t[14..16].copy_from_slice(&65535u16.to_be_bytes());
                for b in t.iter_mut().skip(20) {
                    *b = 1; // NOP options
                }
                t
            }
            L4::Udp => {
                let mut u = vec![0u8; 8];
                u[0..2].copy_from_slice(&40000u16.to_be_bytes());
                u[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                u[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                u
            }
            L4::Icmp => vec![8, 0, 0, 0, 0, 1, 0, 1],
        };
        b.extend_from_slice(&self.payload);
        b
    }
}

/// The `i`-th source of a spoofed flood: a bijection of `i` over the whole
/// 32-bit space (an invertible integer hash, "lowbias32"), so the sources look
/// random, cover every /8, and never repeat within 2^32 packets.
pub fn spoofed_v4(i: u32) -> std::net::Ipv4Addr {
    let mut x = i;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    std::net::Ipv4Addr::from(x)
}

/// The `i`-th IPv6 source of a spoofed flood: a distinct random-looking /64
/// for every `i` (a bijection of the first 64 bits, the splitmix64 finaliser),
/// with the interface identifier varied too.
pub fn spoofed_v6(i: u64) -> std::net::Ipv6Addr {
    let mut x = i;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let iid = x.rotate_left(17) ^ i;
    std::net::Ipv6Addr::from(((x as u128) << 64) | iid as u128)
}
