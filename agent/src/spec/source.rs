//! Sources as the kernel keys their buckets, and the address each key stands for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A source as the kernel keys it: an IPv4 address (the map's native-endian
/// key) or the first 64 bits of an IPv6 address masked to its tier's prefix
/// (`tollgate_common::parse::ipv6_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(u32),
    V6(u64),
}

impl SourceKey {
    pub fn v4(addr: Ipv4Addr) -> SourceKey {
        SourceKey::V4(u32::from_ne_bytes(addr.octets()))
    }

    /// The key the kernel gives `addr` under a tier grouping IPv6 sources by
    /// `ipv6_prefix` bits.
    pub fn of(addr: IpAddr, ipv6_prefix: u32) -> SourceKey {
        match addr {
            IpAddr::V4(a) => SourceKey::v4(a),
            IpAddr::V6(a) => {
                SourceKey::V6(tollgate_common::parse::ipv6_key(&a.octets(), ipv6_prefix))
            }
        }
    }

    /// The first address the key covers (IPv6: the prefix, zero below it).
    pub fn addr(&self) -> IpAddr {
        match *self {
            SourceKey::V4(k) => IpAddr::V4(Ipv4Addr::from(k.to_ne_bytes())),
            SourceKey::V6(p) => IpAddr::V6(Ipv6Addr::from((p as u128) << 64)),
        }
    }

    /// What a rule for this source covers: the address, or the IPv6 prefix
    /// its tier groups sources by.
    pub fn net(&self, ipv6_prefix: u32) -> IpNet {
        match self.addr() {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
            IpAddr::V6(a) => IpNet::V6(
                Ipv6Net::new(a, ipv6_prefix.clamp(1, 64) as u8)
                    .expect("prefix within 1..=64")
                    .trunc(),
            ),
        }
    }

    /// How the source is named in logs and Redis keys: `192.0.2.7`, `2001:db8::/64`.
    pub fn label(&self, ipv6_prefix: u32) -> String {
        match self {
            SourceKey::V4(_) => self.addr().to_string(),
            SourceKey::V6(_) => self.net(ipv6_prefix).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_to_their_prefix() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let k = SourceKey::of(a, 48);
        assert_eq!(k, SourceKey::V6(0x2001_0db8_0001_0000));
        assert_eq!(k.label(48), "2001:db8:1::/48");
        assert_eq!(
            SourceKey::of(a, 64).net(64).to_string(),
            "2001:db8:1:2::/64"
        );
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(SourceKey::of(v4, 48).addr(), v4);
        assert_eq!(SourceKey::of(v4, 48).net(48).to_string(), "192.0.2.7/32");
    }
}
