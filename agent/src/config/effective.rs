//! The configuration in force, as the daemon's tasks see it: one immutable
//! [`Effective`] per committed change, published on a `tokio::sync::watch`
//! channel by the config transaction. The HTTP monitor, the cluster sync and
//! the readers of tier names subscribe to it; none of them asks the daemon.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;
use tollgate_common::MAX_TIERS;

use super::Config;

/// What the channel carries.
pub type Published = Arc<Effective>;
/// The daemon's end: the config transaction sends on every successful commit.
pub type Publisher = watch::Sender<Published>;
/// A task's end.
pub type Subscription = watch::Receiver<Published>;

/// One committed configuration, with the tier indices the kernel holds it at.
#[derive(Debug)]
pub struct Effective {
    /// Counts the times the kernel's tiers and rules were written from a
    /// configuration (each commit, and each rollback of a failed one): the
    /// writes drop rules that are not in the configuration, such as the
    /// cluster sync's denies.
    pub generation: u64,
    /// The config file (or embedded default) + the changes made with the CLI.
    pub config: Config,
    /// Tier name -> kernel tier index.
    pub indices: BTreeMap<String, u32>,
    /// The same tiers by kernel index (what samples and counters carry).
    pub names: TierNames,
}

impl Effective {
    pub fn new(generation: u64, config: Config, indices: BTreeMap<String, u32>) -> Effective {
        let names = TierNames::new(&config, &indices);
        Effective {
            generation,
            config,
            indices,
            names,
        }
    }
}

/// Tier names and IPv6 prefixes by index, as the kernel holds them now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierNames {
    pub names: Vec<Option<(String, u8)>>,
}

impl TierNames {
    /// The configuration's tiers at their indices (a tier without an index
    /// is left out).
    pub fn new(config: &Config, indices: &BTreeMap<String, u32>) -> TierNames {
        let mut names = vec![None; MAX_TIERS as usize];
        for t in &config.tiers {
            if let Some(slot) = indices
                .get(&t.name)
                .and_then(|&i| names.get_mut(i as usize))
            {
                let prefix = t.to_kernel().map_or(64, |k| k.ipv6_prefix as u8);
                *slot = Some((t.name.clone(), prefix));
            }
        }
        TierNames { names }
    }

    pub fn name(&self, index: u32) -> String {
        match self.names.get(index as usize) {
            Some(Some((n, _))) => n.clone(),
            _ => format!("#{index}"),
        }
    }

    pub fn prefix_of(&self, name: &str) -> u8 {
        self.names
            .iter()
            .flatten()
            .find(|(n, _)| n == name)
            .map_or(64, |(_, p)| *p)
    }

    /// Whether a tier uses the kernel slot `index`.
    pub fn is_used(&self, index: u32) -> bool {
        matches!(self.names.get(index as usize), Some(Some(_)))
    }

    /// Kernel index -> tier name, for the tiers in use.
    pub fn by_index(&self) -> BTreeMap<u32, String> {
        (0..)
            .zip(&self.names)
            .filter_map(|(i, n)| n.as_ref().map(|(name, _)| (i, name.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, parse};

    #[test]
    fn names_follow_the_indices_and_prefixes() {
        let c = parse(
            r#"
default_tier = "free"
[[tier]]
name = "free"
packets = "10/s"
[[tier]]
name = "api"
packets = "100/s"
ipv6_prefix = 48
[[tier]]
name = "spare"
packets = "1/s"
"#,
            ConfigSource::Embedded,
        )
        .unwrap();
        let indices: BTreeMap<String, u32> = [("free".to_owned(), 2), ("api".to_owned(), 0)].into();
        let e = Effective::new(3, c, indices);
        assert_eq!(e.generation, 3);
        assert_eq!(e.names.names.len(), MAX_TIERS as usize);
        assert_eq!(e.names.name(2), "free");
        assert_eq!(e.names.name(0), "api");
        assert_eq!(e.names.name(1), "#1");
        assert_eq!(e.names.prefix_of("api"), 48);
        assert_eq!(e.names.prefix_of("free"), 64);
        assert!(e.names.is_used(0) && e.names.is_used(2));
        assert!(!e.names.is_used(1) && !e.names.is_used(MAX_TIERS));
        assert_eq!(
            e.names.by_index(),
            [(0, "api".to_owned()), (2, "free".to_owned())].into()
        );
    }
}
