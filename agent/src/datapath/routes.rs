//! The kernel's routes (`TG_ROUTES`, `TG_ROUTE_CEILINGS`, `TG_ROUTE_COUNTERS`):
//! writing the route trie and reading the per-route counters. What a route
//! is and how its key is built lives in `tollgate_common::route`; which
//! routes to write is the configuration's business.

use aya::maps::{MapError, PerCpuValues, lpm_trie::Key};
use tollgate_common::{
    SETTINGS_ROUTE_HOSTS, SETTINGS_ROUTES, names,
    route::{MAX_ROUTES, ROUTE_HOST, RouteCounter, RouteKey, RouteValue},
};

use super::kernel::{KernelError, Maps, Result};

/// One entry of the route trie: prefix length in bits, key bytes.
pub type RoutePrefix = (u32, RouteKey);

fn absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

impl Maps {
    /// Every entry of the route trie.
    pub fn routes(&self) -> Result<Vec<(RoutePrefix, RouteValue)>> {
        let mut out = Vec::new();
        for entry in self.routes.iter() {
            let (key, value) = entry.map_err(|source| KernelError::Map {
                name: names::ROUTES,
                source,
            })?;
            out.push(((key.prefix_len(), key.data()), value));
        }
        Ok(out)
    }

    /// Inserts or replaces every entry of `upsert`, removes every prefix of
    /// `remove` (absent ones are ignored), and keeps the program's "look up
    /// routes" flag in step with whether the trie has entries. A route whose
    /// index is new to the trie starts with an idle ceiling.
    pub fn update_routes(
        &mut self,
        upsert: &[(RoutePrefix, RouteValue)],
        remove: &[RoutePrefix],
    ) -> Result<()> {
        let known: std::collections::BTreeSet<u32> =
            self.routes()?.iter().map(|(_, v)| v.index).collect();
        for ((bits, key), value) in upsert {
            if value.index >= MAX_ROUTES {
                return Err(KernelError::RouteIndex(value.index));
            }
            if !known.contains(&value.index) {
                self.route_ceilings
                    .set(value.index, 0, 0)
                    .map_err(|source| KernelError::Map {
                        name: names::ROUTE_CEILINGS,
                        source,
                    })?;
            }
            self.routes
                .insert(&Key::new(*bits, *key), value, 0)
                .map_err(|source| KernelError::Map {
                    name: names::ROUTES,
                    source,
                })?;
        }
        for (bits, key) in remove {
            match self.routes.remove(&Key::new(*bits, *key)) {
                Ok(()) => {}
                Err(e) if absent(&e) => {}
                Err(source) => {
                    return Err(KernelError::Map {
                        name: names::ROUTES,
                        source,
                    });
                }
            }
        }
        // The flags follow the trie: "look up routes" while it has entries,
        // "find the Host header" while one of them names a host.
        let mut settings = self.settings()?;
        let entries = self.routes()?;
        let mut flags = settings.flags & !(SETTINGS_ROUTES | SETTINGS_ROUTE_HOSTS);
        if !entries.is_empty() {
            flags |= SETTINGS_ROUTES;
        }
        if entries.iter().any(|(_, v)| v.flags & ROUTE_HOST != 0) {
            flags |= SETTINGS_ROUTE_HOSTS;
        }
        if flags != settings.flags {
            settings.flags = flags;
            self.set_settings(settings)?;
        }
        Ok(())
    }

    /// Gives `indices` an idle ceiling and zero counters: for an index taken
    /// over from a route that is gone, so the new route inherits neither.
    pub fn reset_routes(&mut self, indices: &[u32]) -> Result<()> {
        for &index in indices {
            if index >= MAX_ROUTES {
                return Err(KernelError::RouteIndex(index));
            }
            let map = |name| move |source| KernelError::Map { name, source };
            self.route_ceilings
                .set(index, 0, 0)
                .map_err(map(names::ROUTE_CEILINGS))?;
            let cpus = self
                .route_counters
                .get(&index, 0)
                .map_err(map(names::ROUTE_COUNTERS))?
                .len();
            let zero = PerCpuValues::try_from(vec![RouteCounter::default(); cpus])?;
            self.route_counters
                .set(index, zero, 0)
                .map_err(map(names::ROUTE_COUNTERS))?;
        }
        Ok(())
    }

    /// Per-route counters summed over CPUs, indexed by `RouteValue::index`.
    pub fn route_counters(&self) -> Result<Vec<RouteCounter>> {
        (0..MAX_ROUTES)
            .map(|index| self.route_counter(index))
            .collect()
    }

    /// One route's counters summed over CPUs (one syscall: the daemon reads
    /// only the indices it has assigned).
    pub fn route_counter(&self, index: u32) -> Result<RouteCounter> {
        let per_cpu = self
            .route_counters
            .get(&index, 0)
            .map_err(|source| KernelError::Map {
                name: names::ROUTE_COUNTERS,
                source,
            })?;
        Ok(per_cpu
            .iter()
            .fold(RouteCounter::default(), |a, c| RouteCounter {
                requests: a.requests + c.requests,
                dropped: a.dropped + c.dropped,
                dropped_ceiling: a.dropped_ceiling + c.dropped_ceiling,
                shadow_would_drop: a.shadow_would_drop + c.shadow_would_drop,
            }))
    }
}
