//! A freshly loaded, unpinned copy of tollgate's XDP program for test_run tests.

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use tollgate::datapath::kernel::{self, MapSizes, Maps};
use tollgate_common::{
    Limit, LimitKind, MAX_HTTP_PORTS, SETTINGS_COUNT_REQUESTS, TIER_ACTIVE, TIER_SHADOW,
    TierConfig,
    route::{ROUTE_HOST, ROUTE_SHADOW, RouteValue, host_tag, route_key, route_key_for_host},
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub const SECOND: u64 = 1_000_000_000;

pub struct TestProgram {
    pub ebpf: Ebpf,
    pub maps: Maps,
}

impl TestProgram {
    /// Loads the program with every tier unconfigured and tier 0 as default.
    pub fn load() -> Result<TestProgram> {
        Self::load_sized(&MapSizes {
            sources_v4: 4096,
            sources_v6: 4096,
            rules_v4: 1024,
            rules_v6: 1024,
            ..Default::default()
        })
    }

    pub fn load_sized(sizes: &MapSizes) -> Result<TestProgram> {
        let mut ebpf = kernel::load(tollgate::datapath::EBPF_OBJECT, sizes, None)
            .context("loading XDP program")?;
        let mut maps = Maps::from_ebpf(&mut ebpf)?;
        maps.stamp_layout()?;
        Ok(TestProgram { ebpf, maps })
    }

    /// Makes `ports` the HTTP ports and turns request counting on, as the
    /// daemon does when a tier limits requests.
    pub fn count_requests_on(&mut self, ports: &[u16]) -> Result<()> {
        let mut settings = self.maps.settings()?;
        settings.http_ports = [0; MAX_HTTP_PORTS];
        for (slot, port) in settings.http_ports.iter_mut().zip(ports) {
            *slot = *port;
        }
        settings.flags |= SETTINGS_COUNT_REQUESTS;
        Ok(self.maps.set_settings(settings)?)
    }

    /// Adds a route as the daemon writes one: `line` is `METHOD SP
    /// path-prefix` on `port`, or empty for the whole port.
    pub fn add_route(&mut self, port: u16, line: &str, value: RouteValue) -> Result<()> {
        let prefix = route_key(port, line.as_bytes()).context("route line too long")?;
        Ok(self.maps.update_routes(&[(prefix, value)], &[])?)
    }

    /// Adds a route of one host (the value is marked [`ROUTE_HOST`]).
    pub fn add_host_route(
        &mut self,
        port: u16,
        host: &str,
        line: &str,
        mut value: RouteValue,
    ) -> Result<()> {
        let prefix = route_key_for_host(port, host_tag(host.as_bytes()), line.as_bytes())
            .context("route line too long")?;
        value.flags |= ROUTE_HOST;
        Ok(self.maps.update_routes(&[(prefix, value)], &[])?)
    }

    /// What a head whose route is unknown costs (the daemon sets the
    /// dearest enforced route's cost).
    pub fn set_split_head_cost(&mut self, cost: u32) -> Result<()> {
        let mut settings = self.maps.settings()?;
        settings.split_head_cost = cost;
        Ok(self.maps.set_settings(settings)?)
    }

    pub fn xdp(&mut self) -> &mut Xdp {
        kernel::program_mut(&mut self.ebpf).expect("program present")
    }

    pub fn xdp_ref(&self) -> &Xdp {
        self.ebpf
            .program(tollgate_common::names::PROGRAM)
            .expect("program present")
            .try_into()
            .expect("an XDP program")
    }

    /// Runs the program once on `frame`; returns the XDP action.
    pub fn run(&mut self, frame: &[u8]) -> Result<u32> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        Ok(self
            .xdp()
            .test_run(opts)
            .context("BPF_PROG_TEST_RUN")?
            .return_value)
    }

    /// Runs `frame` `repeat` times in the kernel; returns (action, mean ns/run).
    pub fn run_repeated(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let r = self.xdp().test_run(opts).context("BPF_PROG_TEST_RUN")?;
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }
}

/// Builder for a tier's limits: rates per second and bursts in units.
#[derive(Clone, Copy, Debug, Default)]
pub struct TierSpec {
    pub packets: Option<(u64, u64)>,
    pub bytes: Option<(u64, u64)>,
    pub connections: Option<(u64, u64)>,
    pub requests: Option<(u64, u64)>,
    pub aggregate: Option<(u64, u64)>,
    /// New tracked sources per second, burst (admission control).
    pub new_sources: Option<(u64, u64)>,
    pub ipv6_prefix: u32,
    pub shadow: bool,
}

impl TierSpec {
    pub fn config(&self) -> TierConfig {
        let mk = |l: Option<(u64, u64)>| {
            l.map(|(rate, burst)| Limit::per_period(rate, SECOND, burst).expect("valid limit"))
                .unwrap_or(Limit::UNLIMITED)
        };
        let mut limits = [Limit::UNLIMITED; 4];
        limits[LimitKind::Packets as usize] = mk(self.packets);
        limits[LimitKind::Bytes as usize] = mk(self.bytes);
        limits[LimitKind::Connections as usize] = mk(self.connections);
        limits[LimitKind::Requests as usize] = mk(self.requests);
        TierConfig {
            limits,
            aggregate: mk(self.aggregate),
            new_sources: mk(self.new_sources),
            ipv6_prefix: if self.ipv6_prefix == 0 {
                64
            } else {
                self.ipv6_prefix
            },
            flags: TIER_ACTIVE | if self.shadow { TIER_SHADOW } else { 0 },
        }
    }
}

/// A route's kernel value: slot `index`, `cost` per request, an optional
/// ceiling (requests/s, burst) for all sources together, shadow or enforced.
pub fn route(index: u32, cost: u32, ceiling: Option<(u64, u64)>, shadow: bool) -> RouteValue {
    RouteValue {
        index,
        cost,
        ceiling: ceiling
            .map(|(rate, burst)| Limit::per_period(rate, SECOND, burst).expect("valid limit"))
            .unwrap_or(Limit::UNLIMITED),
        flags: if shadow { ROUTE_SHADOW } else { 0 },
        _reserved: 0,
    }
}
