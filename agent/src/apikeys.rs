//! API-key tiers: a client presenting a known key gets its key's tier at XDP
//! speed, by pinning its source (/32, or its tier's IPv6 prefix) to that tier
//! in the rule trie for a while.
//!
//! Keys are configured only as salted SHA-256 hashes (`tollgate api-key hash`
//! prints one); the daemon hashes what a sampled request presents and never
//! stores the key itself.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::spec::SourceKey;

/// `hex(sha256(salt || key))`.
pub fn hash_key(salt: &str, key: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(key);
    hex::encode(h.finalize())
}

/// Known key hashes and the tier each grants.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    salt: String,
    tiers: HashMap<[u8; 32], String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeyError {
    #[error("api key hash {0:?} is not 64 hex digits (sha256)")]
    BadHash(String),
}

impl ApiKeys {
    /// `entries`: (hex sha256 of salt||key, tier name).
    pub fn new(salt: &str, entries: &[(String, String)]) -> Result<ApiKeys, ApiKeyError> {
        let mut tiers = HashMap::new();
        for (hash, tier) in entries {
            let bytes = hex::decode(hash.trim().to_ascii_lowercase())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| ApiKeyError::BadHash(hash.clone()))?;
            tiers.insert(bytes, tier.clone());
        }
        Ok(ApiKeys {
            salt: salt.to_string(),
            tiers,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The tier a presented key grants, if it is known.
    pub fn tier_for(&self, presented: &[u8]) -> Option<&str> {
        if self.tiers.is_empty() {
            return None;
        }
        let mut h = Sha256::new();
        h.update(self.salt.as_bytes());
        h.update(presented);
        let digest: [u8; 32] = h.finalize().into();
        self.tiers.get(&digest).map(String::as_str)
    }
}

/// The prefix a source is pinned by: /32 for IPv4, the tier's prefix (at
/// most /64, what the kernel keys the source by) for IPv6.
pub fn source_prefix(source: IpAddr, ipv6_prefix: u8) -> IpNet {
    let prefix = u32::from(ipv6_prefix);
    SourceKey::of(source, prefix).net(prefix)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub tier: String,
    pub expires: Instant,
}

/// What the caller must do in the kernel after an observation.
#[derive(Debug, PartialEq, Eq)]
pub enum PinChange {
    /// Install (or change) the rule `net -> tier`.
    Install { net: IpNet, tier: String },
    /// Already pinned to that tier; only the expiry moved.
    Refreshed,
}

/// Source pins with expiry. Bounded: at most `capacity` pins; when full, the
/// pin closest to expiry is dropped (the caller removes it from the kernel).
pub struct Pins {
    ttl: Duration,
    capacity: usize,
    pins: HashMap<IpNet, Pin>,
}

impl Pins {
    pub fn new(ttl: Duration, capacity: usize) -> Pins {
        Pins {
            ttl,
            capacity: capacity.max(1),
            pins: HashMap::new(),
        }
    }

    /// Records that `net` presented a key for `tier` at `now`. Returns the kernel
    /// change to make and, when the table was full, the pin it evicted.
    pub fn observe(&mut self, now: Instant, net: IpNet, tier: &str) -> (PinChange, Option<IpNet>) {
        let expires = now + self.ttl;
        if let Some(pin) = self.pins.get_mut(&net) {
            pin.expires = expires;
            if pin.tier == tier {
                return (PinChange::Refreshed, None);
            }
            pin.tier = tier.to_string();
            return (
                PinChange::Install {
                    net,
                    tier: tier.to_string(),
                },
                None,
            );
        }
        let mut evicted = None;
        if self.pins.len() >= self.capacity
            && let Some((&oldest, _)) = self.pins.iter().min_by_key(|(_, p)| p.expires)
        {
            self.pins.remove(&oldest);
            evicted = Some(oldest);
        }
        self.pins.insert(
            net,
            Pin {
                tier: tier.to_string(),
                expires,
            },
        );
        (
            PinChange::Install {
                net,
                tier: tier.to_string(),
            },
            evicted,
        )
    }

    /// Removes and returns the pins that expired by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<IpNet> {
        let expired: Vec<IpNet> = self
            .pins
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in &expired {
            self.pins.remove(n);
        }
        expired
    }

    pub fn get(&self, net: &IpNet) -> Option<&Pin> {
        self.pins.get(net)
    }

    pub fn len(&self) -> usize {
        self.pins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_map_to_tiers_and_unknown_do_not() {
        let h = hash_key("pepper", b"key-gold-1");
        let keys = ApiKeys::new("pepper", &[(h.clone(), "gold".into())]).unwrap();
        assert_eq!(keys.tier_for(b"key-gold-1"), Some("gold"));
        assert_eq!(keys.tier_for(b"key-gold-2"), None);
        let unsalted = ApiKeys::new("", &[(h, "gold".into())]).unwrap();
        assert_eq!(
            unsalted.tier_for(b"key-gold-1"),
            None,
            "the salt is part of the hash"
        );
        assert!(matches!(
            ApiKeys::new("s", &[("abc".into(), "t".into())]),
            Err(ApiKeyError::BadHash(_))
        ));
    }

    #[test]
    fn pins_refresh_change_expire_and_stay_bounded() {
        let t0 = Instant::now();
        let mut pins = Pins::new(Duration::from_secs(10), 2);
        let a = source_prefix("10.0.0.1".parse().unwrap(), 64);
        let b = source_prefix("2001:db8:1:2::9".parse().unwrap(), 64);
        assert_eq!(b.to_string(), "2001:db8:1:2::/64");
        assert!(matches!(
            pins.observe(t0, a, "gold").0,
            PinChange::Install { .. }
        ));
        assert_eq!(
            pins.observe(t0 + Duration::from_secs(5), a, "gold").0,
            PinChange::Refreshed
        );
        assert!(matches!(
            pins.observe(t0 + Duration::from_secs(5), a, "silver").0,
            PinChange::Install { .. }
        ));
        pins.observe(t0, b, "gold");
        let c = source_prefix("10.0.0.3".parse().unwrap(), 64);
        let (_, evicted) = pins.observe(t0 + Duration::from_secs(1), c, "gold");
        assert_eq!(evicted, Some(b));
        assert_eq!(pins.get(&a).unwrap().tier, "silver");
        assert_eq!(pins.expire(t0 + Duration::from_secs(11)), vec![c]);
        assert_eq!(pins.expire(t0 + Duration::from_secs(16)), vec![a]);
        assert!(pins.is_empty());
    }
}
