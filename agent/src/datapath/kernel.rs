//! The loaded XDP program and typed access to its maps.
//!
//! Everything userspace does to the data path goes through here: loading the
//! embedded object with map sizes from configuration, pinning and adopting maps,
//! attaching to interfaces, writing tiers/rules/settings, and reading counters.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{ProgramError, Xdp, XdpMode},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tollgate_common::{
    COUNTER_SLOTS, Counter, LAYOUT_VERSION, MAX_TIERS, Meta, RuleValue, SETTINGS_RULES_V4,
    SETTINGS_RULES_V6, SamplerState, Settings, SourceState, TierConfig, VERDICT_COUNT, Verdict,
    names,
    route::RouteCounter,
    route_table::{RouteBucket, RouteEntry, RouteHeader},
    tracked,
};

/// Errors from the kernel side, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "loading the XDP object failed (is this root with CAP_BPF, on a kernel with BTF?): {0}"
    )]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no map named {0}")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("program: {0}")]
    Program(#[from] ProgramError),
    #[error("the XDP object has no program named {0}")]
    MissingProgram(&'static str),
    #[error("tier index {0} is out of range (0..{MAX_TIERS})")]
    TierIndex(u32),
    #[error("route index {0} is out of range (0..{MAX_ROUTES})", MAX_ROUTES = tollgate_common::route::MAX_ROUTES)]
    RouteIndex(u32),
    #[error("route table: {0}")]
    RouteTable(#[from] super::route_table::RouteTableError),
    #[error("pinned maps in {dir} have layout version {found}, this build uses {LAYOUT_VERSION}")]
    LayoutMismatch { dir: PathBuf, found: u32 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(crate) type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Sizes of the maps that configuration controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapSizes {
    pub sources_v4: u32,
    pub sources_v6: u32,
    pub rules_v4: u32,
    pub rules_v6: u32,
    /// Bytes of the sample ring buffer (a power of two, at least a page).
    #[serde(default = "default_sample_ring_bytes")]
    pub sample_ring_bytes: u32,
}

fn default_sample_ring_bytes() -> u32 {
    4 << 20
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            sources_v4: 1 << 20,
            sources_v6: 1 << 18,
            rules_v4: 1 << 16,
            rules_v6: 1 << 16,
            sample_ring_bytes: default_sample_ring_bytes(),
        }
    }
}

/// Every map the program uses, in the order they are pinned.
pub const MAP_NAMES: [&str; 17] = [
    names::SETTINGS,
    names::META,
    names::TIERS,
    names::AGGREGATE,
    names::RULES_V4,
    names::RULES_V6,
    names::SOURCES_V4,
    names::SOURCES_V6,
    names::COUNTERS,
    names::SAMPLES,
    names::SAMPLER,
    names::ROUTE_HEADERS,
    names::ROUTE_BUCKETS,
    names::ROUTES,
    names::ROUTE_CEILINGS,
    names::ROUTE_COUNTERS,
    names::TRACKED,
];

/// Maps the program uses within one packet only (scratch space): not pinned,
/// as nothing in them outlives the packet; an adopted program keeps its own.
pub const SCRATCH_MAP_NAMES: [&str; 1] = [names::SCAN];

/// CLOCK_MONOTONIC in nanoseconds: the kernel's `bpf_ktime_get_ns`.
pub fn clock_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Nanoseconds of one jiffy, 1/HZ: the resolution of
/// `CLOCK_MONOTONIC_COARSE`, which advances once a tick as `jiffies` does.
pub fn jiffy_ns() -> u32 {
    let res = nix::time::clock_getres(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .expect("CLOCK_MONOTONIC_COARSE is always available");
    (res.tv_sec() as u64 * 1_000_000_000 + res.tv_nsec() as u64) as u32
}

/// Loads the embedded XDP object. With `pin_dir`, every map is pinned there, and
/// maps already pinned there are reused (their state survives the reload).
pub fn load(object: &[u8], sizes: &MapSizes, pin_dir: Option<&Path>) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::SOURCES_V4, sizes.sources_v4)
        .map_max_entries(names::SOURCES_V6, sizes.sources_v6)
        .map_max_entries(names::RULES_V4, sizes.rules_v4)
        .map_max_entries(names::RULES_V6, sizes.rules_v6)
        .map_max_entries(names::SAMPLES, sizes.sample_ring_bytes)
        .map_max_entries(
            names::TRACKED,
            tracked::filter_entries(tracked::filter_bits(sizes.sources_v4.max(sizes.sources_v6))),
        );
    if let Some(dir) = pin_dir {
        std::fs::create_dir_all(dir)?;
        for name in MAP_NAMES {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(object)?;
    program_mut(&mut ebpf)?.load()?;
    Ok(ebpf)
}

/// The XDP program in a loaded object.
pub fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(names::PROGRAM)
        .ok_or(KernelError::MissingProgram(names::PROGRAM))?
        .try_into()
        .map_err(KernelError::Program)
}

/// Typed handles on all of the program's maps.
pub struct Maps {
    pub settings: Array<MapData, Settings>,
    pub meta: Array<MapData, Meta>,
    pub tiers: Array<MapData, TierConfig>,
    pub aggregate: Array<MapData, u64>,
    pub rules_v4: LpmTrie<MapData, [u8; 4], RuleValue>,
    pub rules_v6: LpmTrie<MapData, [u8; 16], RuleValue>,
    pub sources_v4: HashMap<MapData, u32, SourceState>,
    pub sources_v6: HashMap<MapData, u64, SourceState>,
    pub counters: PerCpuArray<MapData, Counter>,
    /// Not a field: the sample ring has a single consumer, so whoever drains it
    /// takes it with [`Maps::take_samples`].
    samples: Option<RingBuf<MapData>>,
    pub sampler: PerCpuArray<MapData, SamplerState>,
    /// The route table (`common::route_table`): see `datapath::routes`.
    pub route_headers: Array<MapData, RouteHeader>,
    pub route_buckets: Array<MapData, RouteBucket>,
    pub routes: Array<MapData, RouteEntry>,
    pub route_ceilings: Array<MapData, u64>,
    pub route_counters: PerCpuArray<MapData, RouteCounter>,
    /// The tracked-source filter (`common::tracked`): see `datapath::tracked`.
    pub tracked: Array<MapData, u64>,
}

fn typed<T>(name: &'static str, map: Map) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(map).map_err(|source| KernelError::Map { name, source })
}

impl Maps {
    /// Takes the maps out of a freshly loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Maps> {
        Maps::assemble(|name| ebpf.take_map(name).ok_or(KernelError::MissingMap(name)))
    }

    /// Opens maps pinned in `dir`, checking they have this build's layout.
    pub fn from_pins(dir: &Path) -> Result<Maps> {
        let maps = Maps::assemble(|name| {
            let data = MapData::from_pin(dir.join(name))
                .map_err(|source| KernelError::Map { name, source })?;
            Map::from_map_data(data).map_err(|source| KernelError::Map { name, source })
        })?;
        let found = maps.layout_version()?;
        if found != LAYOUT_VERSION {
            return Err(KernelError::LayoutMismatch {
                dir: dir.to_owned(),
                found,
            });
        }
        Ok(maps)
    }

    /// Types every map that `get` provides by name.
    fn assemble(mut get: impl FnMut(&'static str) -> Result<Map>) -> Result<Maps> {
        fn one<T: TryFrom<Map, Error = MapError>>(
            get: &mut impl FnMut(&'static str) -> Result<Map>,
            name: &'static str,
        ) -> Result<T> {
            typed(name, get(name)?)
        }
        let mut maps = Maps {
            settings: one(&mut get, names::SETTINGS)?,
            meta: one(&mut get, names::META)?,
            tiers: one(&mut get, names::TIERS)?,
            aggregate: one(&mut get, names::AGGREGATE)?,
            rules_v4: one(&mut get, names::RULES_V4)?,
            rules_v6: one(&mut get, names::RULES_V6)?,
            sources_v4: one(&mut get, names::SOURCES_V4)?,
            sources_v6: one(&mut get, names::SOURCES_V6)?,
            counters: one(&mut get, names::COUNTERS)?,
            samples: Some(one(&mut get, names::SAMPLES)?),
            sampler: one(&mut get, names::SAMPLER)?,
            route_headers: one(&mut get, names::ROUTE_HEADERS)?,
            route_buckets: one(&mut get, names::ROUTE_BUCKETS)?,
            routes: one(&mut get, names::ROUTES)?,
            route_ceilings: one(&mut get, names::ROUTE_CEILINGS)?,
            route_counters: one(&mut get, names::ROUTE_COUNTERS)?,
            tracked: one(&mut get, names::TRACKED)?,
        };
        // The untracked clock's tick is this machine's from the start.
        let settings = maps.settings()?;
        if settings.jiffy_ns != jiffy_ns() {
            maps.set_settings(settings)?;
        }
        // The filter's size word follows the map's real size.
        super::tracked::init(&mut maps.tracked).map_err(|source| KernelError::Map {
            name: names::TRACKED,
            source,
        })?;
        Ok(maps)
    }

    /// Takes the consumer end of the sample ring buffer (once).
    pub fn take_samples(&mut self) -> Option<RingBuf<MapData>> {
        self.samples.take()
    }

    /// Sampler accounting summed over CPUs (the per-CPU 1-in-K and budget
    /// state fields are summed too and mean little).
    pub fn sampler_totals(&self) -> Result<SamplerState> {
        let per_cpu = self.sampler.get(&0, 0).map_err(|source| KernelError::Map {
            name: names::SAMPLER,
            source,
        })?;
        Ok(per_cpu
            .iter()
            .fold(SamplerState::default(), |a, c| SamplerState {
                http_seen: a.http_seen + c.http_seen,
                verdict_seen: a.verdict_seen + c.verdict_seen,
                budget_tat: a.budget_tat.max(c.budget_tat),
                http_sampled: a.http_sampled + c.http_sampled,
                http_budget_skipped: a.http_budget_skipped + c.http_budget_skipped,
                http_ring_full: a.http_ring_full + c.http_ring_full,
                verdict_sampled: a.verdict_sampled + c.verdict_sampled,
                verdict_ring_full: a.verdict_ring_full + c.verdict_ring_full,
            }))
    }

    pub fn layout_version(&self) -> Result<u32> {
        Ok(self
            .meta
            .get(&0, 0)
            .map_err(|source| KernelError::Map {
                name: names::META,
                source,
            })?
            .layout_version)
    }

    /// Marks the maps as written by this build (see [`Maps::from_pins`]).
    pub fn stamp_layout(&mut self) -> Result<()> {
        let meta = Meta {
            layout_version: LAYOUT_VERSION,
            _reserved: 0,
        };
        self.meta
            .set(0, meta, 0)
            .map_err(|source| KernelError::Map {
                name: names::META,
                source,
            })
    }

    pub fn settings(&self) -> Result<Settings> {
        self.settings.get(&0, 0).map_err(|source| KernelError::Map {
            name: names::SETTINGS,
            source,
        })
    }

    /// Writes the settings; `jiffy_ns` is always this machine's tick
    /// ([`jiffy_ns`]), whatever the caller's copy holds.
    pub fn set_settings(&mut self, mut settings: Settings) -> Result<()> {
        settings.jiffy_ns = jiffy_ns();
        self.settings
            .set(0, settings, 0)
            .map_err(|source| KernelError::Map {
                name: names::SETTINGS,
                source,
            })
    }

    /// Sets the default tier, keeping the rule flags.
    pub fn set_default_tier(&mut self, tier: u32) -> Result<()> {
        check_tier(tier)?;
        let mut s = self.settings()?;
        s.default_tier = tier;
        self.set_settings(s)
    }

    pub fn tier(&self, index: u32) -> Result<TierConfig> {
        check_tier(index)?;
        self.tiers
            .get(&index, 0)
            .map_err(|source| KernelError::Map {
                name: names::TIERS,
                source,
            })
    }

    pub fn set_tier(&mut self, index: u32, tier: &TierConfig) -> Result<()> {
        check_tier(index)?;
        self.tiers
            .set(index, tier, 0)
            .map_err(|source| KernelError::Map {
                name: names::TIERS,
                source,
            })
    }

    /// Adds or replaces the rule for `net`, and turns on rule lookups for its family.
    pub fn set_rule(&mut self, net: IpNet, rule: RuleValue) -> Result<()> {
        self.update_rules(&[(net, rule)], &[])
    }

    /// Removes the rule for exactly `net`. Returns whether there was one.
    pub fn remove_rule(&mut self, net: IpNet) -> Result<bool> {
        let removed = match net.trunc() {
            IpNet::V4(n) => self.rules_v4.remove(&v4_key(n)),
            IpNet::V6(n) => self.rules_v6.remove(&v6_key(n)),
        };
        let removed = match removed {
            Ok(()) => true,
            Err(MapError::KeyNotFound) => false,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                false
            }
            Err(source) => {
                return Err(KernelError::Map {
                    name: names::RULES_V4,
                    source,
                });
            }
        };
        self.refresh_rule_flags()?;
        Ok(removed)
    }

    /// Inserts or replaces every rule of `upsert`, then removes every rule of
    /// `remove` (absent ones are ignored), refreshing the rule flags once:
    /// [`Maps::set_rule`] and [`Maps::remove_rule`] refresh them per call,
    /// which walks the tries and makes bulk changes quadratic.
    pub fn update_rules(&mut self, upsert: &[(IpNet, RuleValue)], remove: &[IpNet]) -> Result<()> {
        for (net, rule) in upsert {
            check_tier(rule.tier)?;
            match net.trunc() {
                IpNet::V4(n) => self
                    .rules_v4
                    .insert(&v4_key(n), rule, 0)
                    .map_err(|source| KernelError::Map {
                        name: names::RULES_V4,
                        source,
                    })?,
                IpNet::V6(n) => self
                    .rules_v6
                    .insert(&v6_key(n), rule, 0)
                    .map_err(|source| KernelError::Map {
                        name: names::RULES_V6,
                        source,
                    })?,
            }
        }
        for net in remove {
            let (name, removed) = match net.trunc() {
                IpNet::V4(n) => (names::RULES_V4, self.rules_v4.remove(&v4_key(n))),
                IpNet::V6(n) => (names::RULES_V6, self.rules_v6.remove(&v6_key(n))),
            };
            match removed {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => return Err(KernelError::Map { name, source }),
            }
        }
        self.refresh_rule_flags()
    }

    /// All rules, as CIDR and value.
    pub fn rules(&self) -> Result<Vec<(IpNet, RuleValue)>> {
        let mut out = Vec::new();
        for entry in self.rules_v4.iter() {
            let (key, value) = entry.map_err(|source| KernelError::Map {
                name: names::RULES_V4,
                source,
            })?;
            let net = Ipv4Net::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8)
                .expect("kernel returned a valid prefix");
            out.push((IpNet::V4(net), value));
        }
        for entry in self.rules_v6.iter() {
            let (key, value) = entry.map_err(|source| KernelError::Map {
                name: names::RULES_V6,
                source,
            })?;
            let net = Ipv6Net::new(Ipv6Addr::from(key.data()), key.prefix_len() as u8)
                .expect("kernel returned a valid prefix");
            out.push((IpNet::V6(net), value));
        }
        Ok(out)
    }

    /// Keeps the "consult the trie" flags in step with whether a trie has entries,
    /// so a host without rules pays no LPM lookup.
    fn refresh_rule_flags(&mut self) -> Result<()> {
        let mut s = self.settings()?;
        let has_v4 = self.rules_v4.keys().next().is_some();
        let has_v6 = self.rules_v6.keys().next().is_some();
        s.flags &= !(SETTINGS_RULES_V4 | SETTINGS_RULES_V6);
        if has_v4 {
            s.flags |= SETTINGS_RULES_V4;
        }
        if has_v6 {
            s.flags |= SETTINGS_RULES_V6;
        }
        self.set_settings(s)
    }

    /// Counters summed over CPUs: `result[tier][verdict]`.
    pub fn counters(&self) -> Result<Vec<[Counter; VERDICT_COUNT as usize]>> {
        let mut out = vec![[Counter::default(); VERDICT_COUNT as usize]; MAX_TIERS as usize];
        for slot in 0..COUNTER_SLOTS {
            let per_cpu = self
                .counters
                .get(&slot, 0)
                .map_err(|source| KernelError::Map {
                    name: names::COUNTERS,
                    source,
                })?;
            let (tier, verdict) = (
                (slot / VERDICT_COUNT) as usize,
                (slot % VERDICT_COUNT) as usize,
            );
            for c in per_cpu.iter() {
                out[tier][verdict].packets += c.packets;
                out[tier][verdict].bytes += c.bytes;
            }
        }
        Ok(out)
    }

    /// One counter summed over CPUs.
    pub fn counter(&self, tier: u32, verdict: Verdict) -> Result<Counter> {
        Ok(self
            .counter_per_cpu(tier, verdict)?
            .iter()
            .fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }))
    }

    /// One counter per CPU (to see which CPUs ran the program).
    pub fn counter_per_cpu(&self, tier: u32, verdict: Verdict) -> Result<Vec<Counter>> {
        check_tier(tier)?;
        let per_cpu = self
            .counters
            .get(&verdict.counter_index(tier), 0)
            .map_err(|source| KernelError::Map {
                name: names::COUNTERS,
                source,
            })?;
        Ok(per_cpu.iter().copied().collect())
    }

    /// Number of tracked sources per family (walks the LRU maps' keys).
    pub fn tracked_sources(&self) -> (usize, usize) {
        (
            self.sources_v4.keys().filter(|k| k.is_ok()).count(),
            self.sources_v6.keys().filter(|k| k.is_ok()).count(),
        )
    }

    /// Bucket state of an IPv4 source, if tracked.
    pub fn source_v4(&self, addr: Ipv4Addr) -> Option<SourceState> {
        self.sources_v4
            .get(&u32::from_ne_bytes(addr.octets()), 0)
            .ok()
    }
}

fn check_tier(index: u32) -> Result<()> {
    if index < MAX_TIERS {
        Ok(())
    } else {
        Err(KernelError::TierIndex(index))
    }
}

fn v4_key(net: Ipv4Net) -> Key<[u8; 4]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

fn v6_key(net: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

/// The attach mode is operator intent; its type lives in `spec`.
pub use crate::spec::AttachMode;

/// Attaches `program` to `iface`; returns the mode actually used.
pub fn attach(
    program: &mut Xdp,
    iface: &str,
    mode: AttachMode,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachMode)> {
    match mode {
        AttachMode::Native => Ok((program.attach(iface, XdpMode::Driver)?, AttachMode::Native)),
        AttachMode::Generic => Ok((program.attach(iface, XdpMode::Skb)?, AttachMode::Generic)),
        AttachMode::Auto => match program.attach(iface, XdpMode::Driver) {
            Ok(id) => Ok((id, AttachMode::Native)),
            Err(native) => {
                tracing::warn!(%iface, error = %native, "native XDP attach failed; falling back to generic mode");
                Ok((program.attach(iface, XdpMode::Skb)?, AttachMode::Generic))
            }
        },
    }
}
