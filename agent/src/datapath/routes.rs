//! The kernel's routes (`TG_ROUTE_HEADERS`, `TG_ROUTE_BUCKETS`, `TG_ROUTES`,
//! `TG_ROUTE_CEILINGS`, `TG_ROUTE_COUNTERS`): writing the route table and
//! reading the per-route counters. What a route is and how its key is built
//! lives in `tollgate_common::route`, how the table is laid out in
//! `tollgate_common::route_table`, how a generation is built in
//! `datapath::route_table`; which routes to write is the configuration's
//! business.

use aya::maps::PerCpuValues;
use tollgate_common::{
    SETTINGS_ROUTE_HOSTS, SETTINGS_ROUTE_TABLE, SETTINGS_ROUTES, names,
    route::{MAX_ROUTES, ROUTE_HOST, RouteCounter, RouteValue},
    route_table::{ROUTE_BUCKETS, ROUTE_ENTRIES},
};

pub use super::route_table::RoutePrefix;
use super::{
    kernel::{KernelError, Maps, Result},
    route_table::{self, prefix_of},
};

impl Maps {
    /// The route table's generation in use (`SETTINGS_ROUTE_TABLE`).
    fn route_generation(&self) -> Result<u32> {
        Ok((self.settings()?.flags & SETTINGS_ROUTE_TABLE != 0) as u32)
    }

    /// Every route of the table in use.
    pub fn routes(&self) -> Result<Vec<(RoutePrefix, RouteValue)>> {
        let map = |name| move |source| KernelError::Map { name, source };
        let generation = self.route_generation()?;
        let header = self
            .route_headers
            .get(&generation, 0)
            .map_err(map(names::ROUTE_HEADERS))?;
        (0..header.entries.min(ROUTE_ENTRIES))
            .map(|i| {
                let entry = self
                    .routes
                    .get(&(generation * ROUTE_ENTRIES + i), 0)
                    .map_err(map(names::ROUTES))?;
                Ok((prefix_of(&entry), entry.value))
            })
            .collect()
    }

    /// Inserts or replaces every entry of `upsert` and removes every prefix
    /// of `remove` (absent ones are ignored): the whole table is built anew
    /// in the generation not in use, then one settings write switches the
    /// program to it, with the "look up routes" flags in step with what it
    /// holds. A route whose index is new to the table starts with an idle
    /// ceiling.
    pub fn update_routes(
        &mut self,
        upsert: &[(RoutePrefix, RouteValue)],
        remove: &[RoutePrefix],
    ) -> Result<()> {
        let map = |name| move |source| KernelError::Map { name, source };
        let mut want: std::collections::BTreeMap<RoutePrefix, RouteValue> =
            self.routes()?.into_iter().collect();
        let known: std::collections::BTreeSet<u32> = want.values().map(|v| v.index).collect();
        for (prefix, value) in upsert {
            if value.index >= MAX_ROUTES {
                return Err(KernelError::RouteIndex(value.index));
            }
            want.insert(*prefix, *value);
        }
        for prefix in remove {
            want.remove(prefix);
        }
        let entries: Vec<(RoutePrefix, RouteValue)> = want.into_iter().collect();
        let table = route_table::build(&entries)?;
        for (_, value) in upsert {
            if !known.contains(&value.index) {
                self.route_ceilings
                    .set(value.index, 0, 0)
                    .map_err(map(names::ROUTE_CEILINGS))?;
            }
        }
        let mut settings = self.settings()?;
        let next = (settings.flags & SETTINGS_ROUTE_TABLE == 0) as u32;
        for (i, entry) in table.entries.iter().enumerate() {
            self.routes
                .set(next * ROUTE_ENTRIES + i as u32, entry, 0)
                .map_err(map(names::ROUTES))?;
        }
        for (i, bucket) in table.buckets.iter().enumerate() {
            self.route_buckets
                .set(next * ROUTE_BUCKETS + i as u32, bucket, 0)
                .map_err(map(names::ROUTE_BUCKETS))?;
        }
        self.route_headers
            .set(next, table.header, 0)
            .map_err(map(names::ROUTE_HEADERS))?;
        // The flags follow the table: "look up routes" while it has entries,
        // "find the Host header" while one of them names a host.
        let mut flags =
            settings.flags & !(SETTINGS_ROUTES | SETTINGS_ROUTE_HOSTS | SETTINGS_ROUTE_TABLE);
        if next == 1 {
            flags |= SETTINGS_ROUTE_TABLE;
        }
        if !entries.is_empty() {
            flags |= SETTINGS_ROUTES;
        }
        if entries.iter().any(|(_, v)| v.flags & ROUTE_HOST != 0) {
            flags |= SETTINGS_ROUTE_HOSTS;
        }
        settings.flags = flags;
        self.set_settings(settings)
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
