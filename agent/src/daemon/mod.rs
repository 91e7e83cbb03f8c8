//! `tollgate run`: the daemon.
//!
//! Loads (or adopts) the XDP program, applies the effective configuration
//! (config file + changes made with the CLI), serves the control socket, and
//! reloads on SIGHUP. SIGTERM/SIGINT stop the daemon but leave the program
//! attached and pinned: enforcement never stops. `tollgate detach` removes it.

mod bans;
mod bouncer;
mod commands;
mod error;
mod explain;
mod options;
mod pins;
mod response;
mod server;
mod shared;
mod tasks;
mod telemetry;
mod transaction;
mod views;

use std::{
    collections::BTreeMap,
    os::unix::fs::DirBuilderExt as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use tollgate_common::{MAX_TIERS, RuleValue};
use tracing::{error, info, warn};

use crate::datapath::{
    dataplane::{self, Dataplane, Plan, StartKind},
    guard, tracked,
    walk::SourceWalk,
};
use crate::{
    adaptive::Adaptive,
    cluster,
    config::{Config, Effective, Publisher},
    crowdsec,
    datapath::kernel::Maps,
    metrics::{self, Usage},
    monitor::Monitor,
    state::{self, State},
    talkers::Talkers,
};

pub use options::RunOptions;
pub(crate) use shared::Shared;
use shared::lock;
use tasks::{drain_program_logs, drain_samples, serve};
use telemetry::{RingLosses, Samples};
use transaction::{Factors, Indices, apply};
use views::top_row;

/// Capacity of the top-talkers summary.
pub const TALKERS_CAPACITY: usize = 1024;
/// The top-talkers counts halve this often.
pub const TALKERS_DECAY: Duration = Duration::from_secs(10);
/// Adaptive tiers' signals are read and their factors stepped this often.
pub const ADAPT_INTERVAL: Duration = Duration::from_secs(1);
/// Counters are sampled this often for `stats` rates.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// The API inventory is written to its file this often (when it changed),
/// and at every stop.
pub const INVENTORY_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a stop waits for the control requests being handled.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The daemon's mutable state, behind one lock: every change is applied to the
/// kernel and persisted under it, so changes are serialized.
pub struct Daemon {
    opts: RunOptions,
    /// The config file (or embedded default), with run's overrides.
    file: Config,
    /// `file` + the CLI overlay: what the kernel holds.
    effective: Config,
    state: State,
    maps: Maps,
    start: StartKind,
    started: Instant,
    samples: Samples,
    /// Sources pinned to an API key's tier (kernel rules not in the config).
    pinned: BTreeMap<IpNet, RuleValue>,
    /// The bans of `state.bans` as this process wrote them to the kernel
    /// (expiry on the kernel's clock).
    banned: BTreeMap<IpNet, RuleValue>,
    /// What the responses did, for `/metrics`.
    ban_counters: metrics::BanTotals,
    /// CrowdSec ban decisions (kernel denies not in the config), a rule layer
    /// every commit includes.
    crowdsec: crowdsec::Layer,
    reloads: u64,
    reload_failures: u64,
    /// Per-tier usage over the last period, by tier index.
    usage: Vec<Usage>,
    /// Tracked sources per family, from the last usage scan.
    tracked: (u64, u64),
    /// The tracked-source filter's last ageing (`None` before the first).
    filter_aged: Option<tracked::Aged>,
    /// Per-route counters by route index, read every second (for `/metrics`).
    route_counters: BTreeMap<u32, tollgate_common::route::RouteCounter>,
    /// Re-pins removed pins and re-attaches to re-created interfaces; `None`
    /// once detached.
    guard: Option<guard::Guard>,
    /// Whether the config file could be opened at the last check (`None`
    /// without a config file).
    config_readable: Option<bool>,
    /// CLI changes refused because the state file could not be written.
    state_write_failures: u64,
    /// Samples lost to a full ring, as logged so far.
    ring_losses: RingLosses,
    /// Publishes `effective` (with the tier indices and names) to the tasks
    /// with every committed change (`transaction::commit`).
    published: Publisher,
    /// The adaptive tiers' controllers, stepped by `Shared::adapt`.
    adaptive: Adaptive,
    /// The adaptive factors the kernel holds (enforce mode, under 1): every
    /// commit, rollback and reload writes the tiers with them.
    factors: Factors,
}

/// Runs the daemon until SIGTERM/SIGINT (program stays attached) or
/// `tollgate detach` (program removed).
pub fn run(opts: RunOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: RunOptions) -> Result<()> {
    let file = opts.load_config()?;
    if let Some(note) = file.notice() {
        warn!("{note}");
    }
    check_capabilities()?;
    raise_memlock_limit();
    if file.interfaces.is_empty() {
        bail!(
            "no interfaces to protect: pass --iface IF (e.g. `tollgate run --iface eth0`) or set interfaces = [\"eth0\"] in the config"
        );
    }
    for iface in &file.interfaces {
        if dataplane::ifindex(iface) == 0 {
            bail!("interface {iface} does not exist (see `ip link`)");
        }
    }
    let mut state = state::load(&file.state_file)?;
    state.version = state::STATE_VERSION;
    let effective = state.overlay.apply(&file).map_err(|e| {
        anyhow::anyhow!(
            "{}: the changes made with the CLI (saved in {}) do not fit the config: {e}",
            file.source,
            file.state_file.display()
        )
    })?;
    let reclaimed = state.assign_indices(&effective)?;
    let deny_tier = state
        .tier_indices
        .get(&effective.default_tier)
        .copied()
        .unwrap_or(0);
    let banned = bans::restore(&mut state, deny_tier);
    if let Some(dir) = file.state_file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }

    // The socket first: fails fast if another daemon serves it, before the
    // kernel is touched.
    let listener = server::bind(&file.socket, !file.allow_uids.is_empty())?;
    let socket_path = file.socket.clone();
    let result = async {
        let pin_lock = dataplane::lock_pin_dir(&file.pin_dir)?;
        let plan = Plan {
            pin_dir: &file.pin_dir,
            interfaces: &file.interfaces,
            mode: file.mode,
            sizes: &file.maps,
            known_modes: &state.attachments,
        };
        let (tiers, routes) = (state.tier_indices.clone(), state.route_indices.clone());
        let indices = Indices {
            tiers: &tiers,
            routes: &routes,
        };
        let Dataplane {
            mut maps,
            start,
            modes,
            logger,
        } = dataplane::bring_up(&plan, &mut |maps| {
            maps.reset_routes(&reclaimed)?;
            // A start runs at the configured limits: adaptive factors start
            // at 1 (see `adaptive`).
            apply(
                maps,
                &effective,
                indices,
                transaction::Layers {
                    pinned: &BTreeMap::new(),
                    banned: &banned,
                    crowdsec: &crowdsec::Layer::default(),
                },
                &Factors::new(),
            )
        })?;
        state.attachments = modes;
        let guard = guard::Guard::new(&file.pin_dir, pin_lock, &file.interfaces, file.mode)?;
        let walk = SourceWalk::open(&file.pin_dir)
            .inspect_err(|e| warn!(error = %e, "no source counts in stats and metrics"))
            .ok();
        state::save(&file.state_file, &state)
            .with_context(|| format!("writing the state file {}", file.state_file.display()))?;
        info!(
            start = start.name(),
            interfaces = %file.interfaces.join(","),
            config = %file.source,
            socket = %file.socket.display(),
            pin_dir = %file.pin_dir.display(),
            "tollgate is enforcing"
        );
        if let Some(logger) = logger {
            tokio::spawn(drain_program_logs(logger));
        }
        let allowed = file.allow_uids.clone();
        let cluster = file.cluster.clone();
        let crowdsec_cfg = file.crowdsec.clone();
        if cluster.is_none()
            && let Some(t) = effective.tiers.iter().find(|t| t.has_global_limits())
        {
            warn!(tier = %t.name, "the tier has global limits but no [cluster] is configured: they have no effect");
        }
        let ring = maps.take_samples();
        // The start publishes the first configuration; every commit the next.
        let published = Publisher::new(Arc::new(Effective::new(
            0,
            effective.clone(),
            state.tier_indices.clone(),
        )));
        let mut monitor = Monitor::new(published.subscribe())?;
        let inventory_file = state::inventory_path(&file.state_file);
        restore_inventory(&mut monitor, &inventory_file);
        let metrics_address = file.metrics_address;
        let drop_log_json = opts.drop_log_json;
        let mut daemon = Daemon {
            opts,
            file,
            effective,
            state,
            maps,
            start,
            started: Instant::now(),
            samples: Samples::default(),
            pinned: BTreeMap::new(),
            banned,
            ban_counters: metrics::BanTotals::default(),
            crowdsec: crowdsec::Layer::default(),
            reloads: 0,
            reload_failures: 0,
            usage: vec![Usage::default(); MAX_TIERS as usize],
            tracked: (0, 0),
            filter_aged: None,
            route_counters: BTreeMap::new(),
            guard: Some(guard),
            config_readable: None,
            state_write_failures: 0,
            ring_losses: RingLosses::default(),
            published,
            adaptive: Adaptive::default(),
            factors: Factors::new(),
        };
        daemon.baseline_ring_losses();
        let config = daemon.subscribe();
        daemon.clear_stale_pins();
        let shared = Arc::new(Shared {
            daemon: Mutex::new(daemon),
            talkers: Mutex::new(Talkers::new(TALKERS_CAPACITY)),
            monitor: Mutex::new(monitor),
            config,
            walk,
            next_scan: Mutex::new(Instant::now()),
            stop: tokio_util::sync::CancellationToken::new(),
            cluster: cluster.as_ref().map(|c| Arc::new(cluster::Status::new(c))),
            crowdsec: crowdsec_cfg
                .as_ref()
                .map(|c| Arc::new(crowdsec::Status::new(c))),
            inventory_file,
            drops: Mutex::new(crate::droplog::DropLog::default()),
            events: tokio::sync::broadcast::channel(1024).0,
            drop_log_json,
            response: Mutex::new(response::ResponseState::default()),
        });
        {
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || s.scan_sources()).await;
        }
        if let Some(ring) = ring {
            tokio::spawn(drain_samples(ring, shared.clone()));
        }
        match tokio::net::TcpListener::bind(metrics_address).await {
            Ok(listener) => {
                info!(address = %metrics_address, "serving Prometheus metrics at /metrics");
                let s = shared.clone();
                tokio::spawn(async move {
                    let snapshot = move || s.snapshot();
                    if let Err(e) = metrics::serve(listener, snapshot).await {
                        error!(error = %e, "the metrics server stopped");
                    }
                });
            }
            Err(e) => error!(address = %metrics_address, error = %e, "cannot serve metrics (the daemon goes on without them)"),
        }
        serve(shared, listener, allowed, cluster, crowdsec_cfg).await
    }
    .await;
    let _ = std::fs::remove_file(&socket_path);
    result
}

/// Reads the API inventory kept by the last run. A file that does not read
/// is set aside (`inventory.json.unreadable`) and the inventory starts empty:
/// it never keeps the daemon from enforcing.
fn restore_inventory(monitor: &mut Monitor, path: &std::path::Path) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read the API inventory: starting an empty one");
            return;
        }
    };
    match monitor.restore_inventory(&bytes) {
        Ok((n, 0)) => info!(file = %path.display(), endpoints = n, "API inventory restored"),
        Ok((n, dropped)) => warn!(file = %path.display(), endpoints = n, dropped,
            "API inventory restored without rows that are not what the parser makes"),
        Err(e) => {
            let aside = path.with_extension("json.unreadable");
            let _ = std::fs::rename(path, &aside);
            warn!(file = %path.display(), moved_to = %aside.display(), error = %e,
                "the API inventory file does not read: starting an empty one");
        }
    }
}

/// Names the capabilities `run` needs and lacks, in one line, before
/// anything touches the kernel.
fn check_capabilities() -> Result<()> {
    use crate::datapath::caps;
    let eff = match caps::effective() {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "cannot read this process's capabilities; trying anyway");
            return Ok(());
        }
    };
    let missing = caps::missing(eff);
    if !missing.is_empty() {
        bail!(
            "tollgate run needs CAP_BPF and CAP_NET_ADMIN; this process lacks {}: run it as root, \
             or grant them (the systemd unit's AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_RESOURCE)",
            missing.join(" and ")
        );
    }
    if caps::lacks_perfmon(eff) {
        warn!(
            "running without CAP_PERFMON (or CAP_SYS_ADMIN): the verifier applies the unprivileged-BPF \
               mitigations and may reject the program; grant CAP_PERFMON if loading fails"
        );
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF map memory to RLIMIT_MEMLOCK (the reason
/// the systemd unit grants CAP_SYS_RESOURCE); newer ones use memory cgroups.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!(error = %e, "could not raise RLIMIT_MEMLOCK");
    }
}
