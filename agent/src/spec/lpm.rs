//! The one userspace longest-prefix match over rules: which rule a tracked
//! source falls under (the kernel's LPM tries hold the same rules, but reading
//! them per source would cost a syscall each).
//!
//! A tracked IPv6 source is a key of at most 64 known bits (its tier's
//! prefix), so only rules of /64 or shorter decide it: a longer rule covers
//! part of the key's addresses at most, and is skipped ([`Lpm::lookup_key`]).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

use super::source::SourceKey;

/// A map from CIDRs to `T` answering longest-prefix queries: one hash map per
/// prefix length in use, probed from the longest.
#[derive(Clone, Debug)]
pub struct Lpm<T> {
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for Lpm<T> {
    fn default() -> Self {
        Lpm {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

impl<T> Lpm<T> {
    /// Adds or replaces the value of `net`.
    pub fn insert(&mut self, net: IpNet, value: T) {
        match net {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let key = u32::from(n.network()) & mask4(len);
                slot(&mut self.v4, len).insert(key, value);
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let key = u128::from(n.network()) & mask6(len);
                slot(&mut self.v6, len).insert(key, value);
            }
        }
    }

    /// The value of the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<&T> {
        let a = u32::from(addr);
        self.v4
            .iter()
            .find_map(|(len, m)| m.get(&(a & mask4(*len))))
    }

    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<&T> {
        self.lookup_v6_within(addr, 128)
    }

    /// Longest prefix of at most `known` bits containing `addr`.
    fn lookup_v6_within(&self, addr: Ipv6Addr, known: u8) -> Option<&T> {
        let a = u128::from(addr);
        self.v6
            .iter()
            .filter(|(len, _)| *len <= known)
            .find_map(|(len, m)| m.get(&(a & mask6(*len))))
    }

    /// The value of the longest prefix that contains every address of a
    /// tracked source: IPv4 keys are addresses; IPv6 keys know their first
    /// 64 bits only, so rules longer than /64 do not decide them.
    pub fn lookup_key(&self, key: SourceKey) -> Option<&T> {
        match (key, key.addr()) {
            (SourceKey::V4(_), IpAddr::V4(a)) => self.lookup_v4(a),
            (_, IpAddr::V6(a)) => self.lookup_v6_within(a, 64),
            (_, IpAddr::V4(a)) => self.lookup_v4(a),
        }
    }
}

/// The map for prefix length `len`, keeping the list sorted longest first.
fn slot<K, T>(levels: &mut Vec<(u8, HashMap<K, T>)>, len: u8) -> &mut HashMap<K, T> {
    let i = match levels.iter().position(|(l, _)| *l <= len) {
        Some(i) if levels[i].0 == len => i,
        Some(i) => {
            levels.insert(i, (len, HashMap::new()));
            i
        }
        None => {
            levels.push((len, HashMap::new()));
            levels.len() - 1
        }
    };
    &mut levels[i].1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut l = Lpm::default();
        l.insert(net("10.0.0.0/8"), "a");
        l.insert(net("10.1.0.0/16"), "b");
        l.insert(net("10.1.2.3/32"), "c");
        l.insert(net("0.0.0.0/0"), "all");
        l.insert(net("2001:db8::/32"), "v6");
        l.insert(net("2001:db8:1::/48"), "v6b");
        fn at(l: &Lpm<&'static str>, s: &str) -> Option<&'static str> {
            l.lookup(s.parse().unwrap()).copied()
        }
        assert_eq!(at(&l, "10.1.2.3"), Some("c"));
        assert_eq!(at(&l, "10.1.2.4"), Some("b"));
        assert_eq!(at(&l, "10.2.0.1"), Some("a"));
        assert_eq!(at(&l, "192.0.2.1"), Some("all"));
        assert_eq!(at(&l, "2001:db8:1::5"), Some("v6b"));
        assert_eq!(at(&l, "2001:db8:2::5"), Some("v6"));
        assert_eq!(at(&l, "2001:db9::"), None);
        l.insert(net("10.0.0.0/8"), "a2");
        assert_eq!(at(&l, "10.2.0.1"), Some("a2"));
    }

    /// The case the daemon's usage scan and the cluster sync used to answer
    /// differently: an IPv6 rule longer than /64 whose extra bits are zero.
    /// A key knows 64 bits, so the /80 rule does not decide it: the /32 does.
    #[test]
    fn ipv6_rules_longer_than_the_key_do_not_decide_it() {
        let mut l = Lpm::default();
        l.insert(net("2001:db8::/32"), "wide");
        l.insert(net("2001:db8::/80"), "narrow");
        let key = SourceKey::V6(0x2001_0db8_0000_0000);
        assert_eq!(l.lookup_key(key).copied(), Some("wide"));
        // A full address still gets the /80.
        assert_eq!(
            l.lookup("2001:db8::1".parse().unwrap()).copied(),
            Some("narrow")
        );
        // A /64 rule decides the key.
        l.insert(net("2001:db8::/64"), "exact");
        assert_eq!(l.lookup_key(key).copied(), Some("exact"));
        let v4 = SourceKey::v4("10.1.2.3".parse().unwrap());
        l.insert(net("10.1.2.3/32"), "host");
        assert_eq!(l.lookup_key(v4).copied(), Some("host"));
    }

    /// Agrees with a brute-force scan on random rules and addresses.
    #[test]
    fn agrees_with_brute_force() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut l = Lpm::default();
        let mut rules = Vec::new();
        for i in 0..300 {
            let len = (next() % 33) as u8;
            // Cluster addresses in 10.0.0.0/12 so prefixes overlap.
            let addr = Ipv4Addr::from(0x0a00_0000 | (next() as u32 & 0x000f_ffff));
            let n = IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc());
            l.insert(n, i);
            rules.retain(|(r, _)| *r != n);
            rules.push((n, i));
        }
        for _ in 0..2000 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (next() as u32 & 0x000f_ffff)));
            let brute = rules
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(_, v)| *v);
            assert_eq!(l.lookup(a).copied(), brute, "{a}");
        }
    }
}
