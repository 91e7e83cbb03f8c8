//! `tollgate run`: the daemon.
//!
//! Loads (or adopts) the XDP program, applies the effective configuration
//! (config file + changes made with the CLI), serves the control socket, and
//! reloads on SIGHUP. SIGTERM/SIGINT stop the daemon but leave the program
//! attached and pinned: enforcement never stops. `tollgate detach` removes it.

mod server;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use tollgate_common::{
    Counter, MAX_TIERS, RULE_ALLOW, RULE_DENY, RULE_TIER, RuleValue, TierConfig, VERDICT_COUNT,
    Verdict, names,
};
use tracing::{error, info, warn};

use crate::datapath::{
    dataplane::{self, Dataplane, LinkState, Plan, StartKind},
    guard, scan,
};
use crate::{
    apikeys::PinChange,
    cluster,
    config::{
        self, Config, ConfigError, ConfigSource, LimitField, LimitSpec, RuleSpec, RuleTarget,
        TierSpec, check_tier_name, parse_cidr,
    },
    datapath::kernel::{AttachMode, Maps},
    datapath::samples::Sample,
    metrics::{self, Snapshot, TierSnapshot, Usage},
    monitor::{Monitor, TierNames},
    proto::{
        Done, Fill, InterfaceStatus, LimitRow, Request, Response, RuleAction, RuleRow, StatsData,
        StatusData, TierRow, TierSetArgs, TierStats, TopData, TopRow, Traffic,
    },
    state::{self, Overlay, State},
    talkers::{Talkers, TopBy},
    units,
};

/// Capacity of the top-talkers summary.
pub const TALKERS_CAPACITY: usize = 1024;
/// The top-talkers counts halve this often.
pub const TALKERS_DECAY: Duration = Duration::from_secs(10);
/// Counters are sampled this often for `stats` rates.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stop waits for the control requests being handled.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// `tollgate run`'s options; anything set here overrides the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub mode: Option<AttachMode>,
    pub pin_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
}

impl RunOptions {
    /// The config file (or the embedded default) with the overrides applied.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => config::load_file(path)?,
            None => config::embedded_default(),
        };
        if !self.interfaces.is_empty() {
            for iface in &self.interfaces {
                config::check_interface_name(iface)
                    .map_err(|p| ConfigError(format!("--iface {iface}: {p}")))?;
            }
            c.interfaces = self.interfaces.clone();
        }
        if let Some(m) = self.mode {
            c.mode = m;
        }
        if let Some(p) = &self.pin_dir {
            c.pin_dir = absolute(p);
        }
        if let Some(p) = &self.socket {
            c.socket = absolute(p);
        }
        if let Some(p) = &self.state_file {
            c.state_file = absolute(p);
        }
        Ok(c)
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Two most recent counter samples, for rates.
#[derive(Default)]
struct Samples {
    prev: Option<(Instant, Vec<[Counter; VERDICT_COUNT as usize]>)>,
    last: Option<(Instant, Vec<[Counter; VERDICT_COUNT as usize]>)>,
}

impl Samples {
    fn push(&mut self, at: Instant, counters: Vec<[Counter; VERDICT_COUNT as usize]>) {
        self.prev = self.last.take();
        self.last = Some((at, counters));
    }

    /// Per-second (packets, bytes) of `tier`/`verdict` between the two samples.
    fn rate(&self, tier: usize, verdict: usize) -> (f64, f64) {
        match (&self.prev, &self.last) {
            (Some((t0, c0)), Some((t1, c1))) => {
                let dt = t1.duration_since(*t0).as_secs_f64();
                if dt <= 0.0 {
                    return (0.0, 0.0);
                }
                let (a, b) = (c0[tier][verdict], c1[tier][verdict]);
                (
                    b.packets.saturating_sub(a.packets) as f64 / dt,
                    b.bytes.saturating_sub(a.bytes) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        }
    }

    fn interval(&self) -> f64 {
        match (&self.prev, &self.last) {
            (Some((t0, _)), Some((t1, _))) => t1.duration_since(*t0).as_secs_f64(),
            _ => 0.0,
        }
    }
}

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
    reloads: u64,
    reload_failures: u64,
    /// Per-tier usage over the last period, by tier index.
    usage: Vec<Usage>,
    /// Tracked sources per family, from the last usage scan.
    tracked: (u64, u64),
    /// Bumped whenever the kernel's rules are rewritten from `effective`
    /// (the cluster sync then re-asserts its denies).
    generation: u64,
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
}

/// Ring-full losses (kernel totals) and their rate-limited log line.
#[derive(Default)]
struct RingLosses {
    /// Kernel total at the last check.
    seen: u64,
    /// Lost since the last log line.
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// At most one "ring full" log line this often.
const RING_FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the tasks of the daemon share.
pub struct Shared {
    daemon: Mutex<Daemon>,
    talkers: Mutex<Talkers>,
    monitor: Mutex<Monitor>,
    tiers: Mutex<TierNames>,
    shutdown: tokio::sync::Notify,
    /// Read-held by each control request being handled; a stop takes it for
    /// writing to let them finish (see [`STOP_GRACE`]).
    requests: tokio::sync::RwLock<()>,
    /// The cluster sync's state, when `[cluster]` is configured.
    cluster: Option<Arc<cluster::Status>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock must not take the daemon down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Whether the cluster sync reaches Redis: `None` without `[cluster]`,
    /// `Some(false)` while global limits are paused (local limits enforce).
    pub fn cluster_up(&self) -> Option<bool> {
        self.cluster.as_ref().map(|c| c.is_up())
    }

    /// Hook for the kernel's sampled verdicts: records one sample standing for
    /// `scale` packets of `bytes` bytes from `source` in tier index `tier`.
    /// `request` is whether the packet carried an HTTP request. Feeds
    /// `tollgate top`.
    pub fn on_verdict_sample(
        &self,
        source: IpAddr,
        tier: u32,
        verdict: Verdict,
        request: bool,
        bytes: u64,
        scale: u64,
    ) {
        lock(&self.talkers).observe(source, tier, verdict, request, bytes, scale);
    }

    /// Handles one control request. Returns the response and whether the
    /// daemon should exit after sending it.
    pub fn handle(&self, req: Request) -> (Response, bool) {
        let mut d = lock(&self.daemon);
        let result = match req {
            Request::Status {} => d.status().map(|mut s| {
                s.cluster = self.cluster.as_ref().map(|c| c.report());
                Response::success(s)
            }),
            Request::TierList {} => Ok(Response::success(d.tier_rows())),
            Request::TierSet(args) => d.tier_set(args).map(done),
            Request::TierRm { name } => d.tier_rm(&name).map(done),
            Request::RuleList {} => Ok(Response::success(d.rule_rows())),
            Request::RuleAdd { cidr, tier, action } => d.rule_add(&cidr, tier, action).map(done),
            Request::RuleRm { cidr } => d.rule_rm(&cidr).map(done),
            Request::Stats { tier } => d.stats(tier.as_deref()).map(Response::success),
            Request::Top { by, n } => {
                let names = d.index_names();
                drop(d);
                Ok(Response::success(self.top(by, n, &names)))
            }
            Request::Reload {} => {
                let result = d.reload();
                if result.is_ok() {
                    let (http, keys) = (d.effective.http.clone(), d.effective.api_keys.clone());
                    drop(d);
                    if let Err(e) = lock(&self.monitor).reconfigure(&http, &keys) {
                        warn!(error = %e, "reload: the HTTP monitor kept its previous settings");
                    }
                }
                result.map(done)
            }
            Request::HttpTop { by, n } => {
                drop(d);
                let rows = lock(&self.monitor).stats().top(by, n.clamp(1, 1000));
                let malformed = lock(&self.monitor).malformed;
                Ok(Response::success(crate::proto::HttpTopData {
                    by,
                    rows,
                    malformed,
                }))
            }
            Request::HttpTail {} => Err(
                "http_tail streams: the control server handles it, not this function".to_owned(),
            ),
            Request::Detach {} => {
                return match d.detach() {
                    Ok(msg) => (done(msg), true),
                    Err(e) => (Response::failure(e), false),
                };
            }
        };
        (result.unwrap_or_else(Response::failure), false)
    }

    fn top(&self, by: TopBy, n: usize, names: &BTreeMap<u32, String>) -> TopData {
        let t = lock(&self.talkers);
        let rows = t
            .top(by, n.clamp(1, TALKERS_CAPACITY))
            .iter()
            .map(|r| {
                let tier = names
                    .get(&r.tier)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", r.tier));
                top_row(r, tier)
            })
            .collect();
        TopData {
            by,
            rows,
            tracked: t.len(),
        }
    }

    /// Re-reads the config (SIGHUP); logs the outcome.
    fn reload_from_signal(&self) {
        let mut d = lock(&self.daemon);
        match d.reload() {
            Ok(msg) => {
                info!("SIGHUP: {msg}");
                let (http, keys) = (d.effective.http.clone(), d.effective.api_keys.clone());
                drop(d);
                if let Err(e) = lock(&self.monitor).reconfigure(&http, &keys) {
                    warn!(error = %e, "SIGHUP: the HTTP monitor kept its previous settings");
                }
            }
            Err(e) => error!("SIGHUP: {e}"),
        }
    }

    /// Subscribes to sampled requests for `http tail`.
    pub fn tail(&self) -> tokio::sync::broadcast::Receiver<crate::monitor::TailEvent> {
        lock(&self.monitor).subscribe()
    }

    /// Digests a batch of ring-buffer records; applies API-key pins.
    fn ingest(&self, records: &[Vec<u8>]) {
        let now = Instant::now();
        let tiers = lock(&self.tiers).clone();
        let mut pins = Vec::new();
        {
            let mut monitor = lock(&self.monitor);
            let mut talkers = lock(&self.talkers);
            for r in records {
                match Sample::decode(r) {
                    Err(_) => monitor.undecodable += 1,
                    Ok(s) if s.is_http() => {
                        talkers.observe_request(s.source(), s.header.tier, s.header.scale as u64);
                        if let Some(change) = monitor.ingest_http(&s, &tiers, now) {
                            pins.push(change);
                        }
                    }
                    Ok(s) => talkers.observe(
                        s.source(),
                        s.header.tier,
                        s.verdict(),
                        s.is_request(),
                        s.header.frame_len as u64,
                        s.header.scale as u64,
                    ),
                }
            }
        }
        if pins.is_empty() {
            return;
        }
        let mut d = lock(&self.daemon);
        for (change, evicted) in pins {
            if let Some(net) = evicted {
                d.unpin(net);
            }
            if let PinChange::Install { net, tier } = change {
                d.pin(net, &tier);
            }
        }
    }

    fn sample(&self) {
        let expired = lock(&self.monitor).expire_pins(Instant::now());
        let requests = lock(&self.monitor).take_requests();
        let mut d = lock(&self.daemon);
        for net in expired {
            d.unpin(net);
        }
        match d.maps.counters() {
            Ok(c) => d.samples.push(Instant::now(), c),
            Err(e) => warn!(error = %e, "sampling counters"),
        }
        d.check_ring_losses();
        let names = d.tier_names();
        d.update_usage(&requests, &names);
        drop(d);
        *lock(&self.tiers) = names;
    }

    /// What `/metrics` shows now.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = {
            let d = lock(&self.daemon);
            d.snapshot()
        };
        {
            let m = lock(&self.monitor);
            s.http = m.stats().counts().map(|(k, v)| (k.clone(), v)).collect();
            s.http_malformed = m.malformed;
            s.samples_undecodable = m.undecodable;
        }
        s.cluster_up = self.cluster_up();
        let k = lock(&self.daemon).effective.http.top_sources_metric;
        if k > 0 {
            s.top = lock(&self.talkers).top(TopBy::Packets, k);
        }
        s
    }
}

impl cluster::Host for Shared {
    fn view(&self, known: Option<u64>) -> Option<cluster::View> {
        let d = lock(&self.daemon);
        if known == Some(d.generation) {
            return None;
        }
        Some(cluster::View {
            generation: d.generation,
            tiers: d.effective.tiers.clone(),
            default_tier: d.effective.default_tier.clone(),
            rules: d.effective.rules.clone(),
            indices: d.state.tier_indices.clone(),
        })
    }

    fn update_rules(&self, upsert: &[(IpNet, RuleValue)], remove: &[IpNet]) -> Result<()> {
        lock(&self.daemon)
            .maps
            .update_rules(upsert, remove)
            .map_err(anyhow::Error::from)
    }
}

fn done(message: String) -> Response {
    Response::success(Done { message })
}

/// Writes `cfg` into the maps: tiers, default tier, rules; deactivates tier
/// slots no configured tier uses. Only entries that differ are written, and
/// bucket state (sources, aggregate) is never touched.
fn apply(
    maps: &mut Maps,
    cfg: &Config,
    indices: &BTreeMap<String, u32>,
    pinned: &BTreeMap<IpNet, RuleValue>,
) -> Result<()> {
    let index = |name: &str| {
        indices
            .get(name)
            .copied()
            .with_context(|| format!("tier {name} has no index"))
    };
    let mut active = BTreeSet::new();
    for t in &cfg.tiers {
        let i = index(&t.name)?;
        active.insert(i);
        let k = t.to_kernel().map_err(anyhow::Error::msg)?;
        if maps.tier(i)? != k {
            maps.set_tier(i, &k)?;
        }
    }
    let default = index(&cfg.default_tier)?;
    let current = maps.settings()?;
    let wanted = sampling_settings(
        &cfg.http,
        tollgate_common::Settings {
            default_tier: default,
            ..current
        },
    );
    if current != wanted {
        maps.set_settings(wanted)?;
    }
    let mut desired = BTreeMap::new();
    for r in &cfg.rules {
        let v = match &r.target {
            RuleTarget::Tier(t) => RuleValue {
                action: RULE_TIER,
                tier: index(t)?,
            },
            RuleTarget::Allow => RuleValue {
                action: RULE_ALLOW,
                tier: default,
            },
            RuleTarget::Deny => RuleValue {
                action: RULE_DENY,
                tier: default,
            },
        };
        desired.insert(r.cidr, v);
    }
    // API-key pins hold on top of tier rules, never over allow or deny.
    for (net, v) in pinned {
        match desired.get(net) {
            Some(r) if r.action != RULE_TIER => {}
            _ => {
                desired.insert(*net, *v);
            }
        }
    }
    let current: BTreeMap<IpNet, RuleValue> = maps.rules()?.into_iter().collect();
    let upsert: Vec<(IpNet, RuleValue)> = desired
        .iter()
        .filter(|(net, v)| current.get(net) != Some(v))
        .map(|(n, v)| (*n, *v))
        .collect();
    let remove: Vec<IpNet> = current
        .keys()
        .filter(|n| !desired.contains_key(n))
        .copied()
        .collect();
    maps.update_rules(&upsert, &remove)?;
    for i in 0..MAX_TIERS {
        if !active.contains(&i) && maps.tier(i)?.is_active() {
            maps.set_tier(i, &TierConfig::default())?;
        }
    }
    Ok(())
}

/// The kernel's sampling settings for `[http]`, keeping `base`'s other fields.
fn sampling_settings(
    http: &config::HttpConfig,
    base: tollgate_common::Settings,
) -> tollgate_common::Settings {
    let mut ports = [0u16; tollgate_common::MAX_HTTP_PORTS];
    for (slot, port) in ports.iter_mut().zip(&http.ports) {
        *slot = *port;
    }
    tollgate_common::Settings {
        http_ports: ports,
        http_snap_len: http.snap_len,
        http_sample_every: http.sample_every,
        http_budget: tollgate_common::Limit::per_period(
            http.budget_per_second,
            1_000_000_000,
            http.budget_burst,
        )
        .unwrap_or(tollgate_common::Limit::UNLIMITED),
        verdict_sample_every: http.verdict_sample_every,
        ..base
    }
}

impl Daemon {
    fn state_path(&self) -> &Path {
        &self.file.state_file
    }

    /// Makes `overlay` (and, for a reload, `new_file`) effective: validates,
    /// applies to the kernel, persists, and only then commits in memory. On any
    /// failure the kernel is put back as it was and nothing changes.
    fn commit(&mut self, new_file: Option<Config>, overlay: Overlay) -> Result<(), String> {
        let file = new_file.as_ref().unwrap_or(&self.file);
        let effective = overlay.apply(file)?;
        // apply() below rewrites the kernel's rules, dropping cluster denies.
        self.generation += 1;
        let mut state = self.state.clone();
        state.overlay = overlay;
        state.assign_indices(&effective)?;
        if let Err(e) = apply(
            &mut self.maps,
            &effective,
            &state.tier_indices,
            &self.pinned,
        ) {
            self.rollback();
            return Err(format!(
                "applying the change to the kernel failed: {e:#}; the previous configuration is still in effect"
            ));
        }
        if state != self.state
            && let Err(e) = state::save(self.state_path(), &state)
        {
            self.rollback();
            self.state_write_failures += 1;
            error!(state_file = %self.state_path().display(), error = %e,
                "could not save a change; it was rolled back and is not in effect");
            return Err(format!(
                "could not save the change to {}: {e}; it was rolled back and is not in effect",
                self.state_path().display()
            ));
        }
        self.state = state;
        self.effective = effective;
        if let Some(f) = new_file {
            self.file = f;
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if let Err(e) = apply(
            &mut self.maps,
            &self.effective,
            &self.state.tier_indices,
            &self.pinned,
        ) {
            error!(error = %format!("{e:#}"), "rolling back a failed change also failed: the kernel may hold a partial change");
        }
    }

    fn reload(&mut self) -> Result<String, String> {
        let result = self.reload_inner();
        match result {
            Ok(_) => self.reloads += 1,
            Err(_) => self.reload_failures += 1,
        }
        result
    }

    fn reload_inner(&mut self) -> Result<String, String> {
        let mut new_file = self
            .opts
            .load_config()
            .map_err(|e| format!("reload failed, the running configuration is unchanged: {e}"))?;
        // These only take effect on a restart; keep what is running.
        for (what, changed) in [
            ("interfaces", new_file.interfaces != self.file.interfaces),
            ("mode", new_file.mode != self.file.mode),
            ("maps", new_file.maps != self.file.maps),
            ("socket", new_file.socket != self.file.socket),
            ("pin_dir", new_file.pin_dir != self.file.pin_dir),
            ("state_file", new_file.state_file != self.file.state_file),
            ("allow_uids", new_file.allow_uids != self.file.allow_uids),
            ("[cluster]", new_file.cluster != self.file.cluster),
        ] {
            if changed {
                warn!("reload: {what} changed in the config; restart the daemon to apply it");
            }
        }
        new_file.interfaces = self.file.interfaces.clone();
        new_file.mode = self.file.mode;
        new_file.maps = self.file.maps;
        new_file.socket = self.file.socket.clone();
        new_file.pin_dir = self.file.pin_dir.clone();
        new_file.state_file = self.file.state_file.clone();
        new_file.allow_uids = self.file.allow_uids.clone();
        new_file.cluster = self.file.cluster.clone();
        let overlay = self.state.overlay.clone();
        self.commit(Some(new_file), overlay)
            .map_err(|e| format!("reload failed, the running configuration is unchanged: {e}"))?;
        let msg = format!(
            "reloaded {}: {} tiers, {} rules{}",
            self.file.source,
            self.effective.tiers.len(),
            self.effective.rules.len(),
            if self.state.overlay.is_empty() {
                String::new()
            } else {
                " (including changes made with the CLI)".to_owned()
            }
        );
        info!("{msg}");
        Ok(msg)
    }

    fn tier_set(&mut self, args: TierSetArgs) -> Result<String, String> {
        let name = args.name.trim().to_owned();
        check_tier_name(&name).map_err(|e| format!("tier name \"{name}\": {e}"))?;
        let existing = self.effective.tier(&name).cloned();
        let creating = existing.is_none();
        if creating && self.effective.tiers.len() >= MAX_TIERS as usize {
            return Err(format!(
                "cannot create tier \"{name}\": all {MAX_TIERS} tier slots are in use"
            ));
        }
        let mut spec = existing.unwrap_or_else(|| TierSpec::unlimited(&name));
        let bytes_burst = match &args.bytes_burst {
            None => None,
            Some(s) => Some(
                units::parse_size(s)
                    .map_err(|e| format!("tier \"{name}\": bytes_burst = \"{s}\": {e}"))?,
            ),
        };
        let changes = [
            (LimitField::Packets, &args.packets, args.packets_burst),
            (LimitField::Bytes, &args.bytes, bytes_burst),
            (
                LimitField::Connections,
                &args.connections,
                args.connections_burst,
            ),
            (LimitField::Requests, &args.requests, args.requests_burst),
            (LimitField::Aggregate, &args.aggregate, args.aggregate_burst),
        ];
        for (field, rate, burst) in changes {
            if let Some(rate) = rate {
                if rate.trim() == "unlimited" {
                    *spec.limit_mut(field) = None;
                } else {
                    let parsed = field.parse_rate(rate).map_err(|e| {
                        format!("tier \"{name}\": {} = \"{rate}\": {e}", field.name())
                    })?;
                    let old_burst = spec.limit(field).and_then(|l| l.burst);
                    *spec.limit_mut(field) = Some(LimitSpec {
                        rate: field.format_rate(&parsed),
                        burst: old_burst,
                    });
                }
            }
            if let Some(b) = burst {
                match spec.limit_mut(field) {
                    Some(l) => l.burst = Some(b),
                    None => {
                        return Err(format!(
                            "tier \"{name}\": {}_burst = {b}: the tier has no {} limit to apply it to (set one with --{} RATE)",
                            field.name(),
                            field.name(),
                            field.name()
                        ));
                    }
                }
            }
        }
        if let Some(p) = args.ipv6_prefix {
            spec.ipv6_prefix = p;
        }
        if let Some(m) = args.mode {
            spec.mode = m;
        }
        spec.to_kernel()?;
        if !creating && self.effective.tier(&name) == Some(&spec) {
            return Ok(format!("tier {name} unchanged"));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.set_tier(spec);
        self.commit(None, overlay)?;
        let index = self.state.index_of(&name).unwrap_or_default();
        Ok(format!(
            "tier {name} {} (index {index})",
            if creating { "created" } else { "updated" }
        ))
    }

    fn tier_rm(&mut self, name: &str) -> Result<String, String> {
        if self.effective.tier(name).is_none() {
            return Err(format!(
                "no tier named \"{name}\" (tiers: {})",
                self.effective.tier_names()
            ));
        }
        if self.effective.default_tier == name {
            return Err(format!(
                "tier \"{name}\" is the default tier and cannot be removed: set another default_tier in the config file and reload first"
            ));
        }
        let users: Vec<String> = self
            .effective
            .rules
            .iter()
            .filter(|r| r.target == RuleTarget::Tier(name.to_owned()))
            .map(|r| r.cidr.to_string())
            .collect();
        if !users.is_empty() {
            return Err(format!(
                "tier \"{name}\" is used by {} rule{} ({}): remove {} first with `tollgate rule rm CIDR`",
                users.len(),
                if users.len() == 1 { "" } else { "s" },
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" },
            ));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.remove_tier(name, self.file.tier(name).is_some());
        self.commit(None, overlay)?;
        Ok(format!("tier {name} removed"))
    }

    fn rule_add(
        &mut self,
        cidr: &str,
        tier: Option<String>,
        action: Option<RuleAction>,
    ) -> Result<String, String> {
        let net = parse_cidr(cidr).map_err(|e| format!("cidr = \"{cidr}\": {e}"))?;
        let target = match (tier, action) {
            (Some(t), None) => {
                if self.effective.tier(&t).is_none() {
                    return Err(format!(
                        "rule {net}: tier = \"{t}\": no such tier (tiers: {})",
                        self.effective.tier_names()
                    ));
                }
                RuleTarget::Tier(t)
            }
            (None, Some(RuleAction::Allow)) => RuleTarget::Allow,
            (None, Some(RuleAction::Deny)) => RuleTarget::Deny,
            _ => return Err("give exactly one of --tier NAME, --allow or --deny".to_owned()),
        };
        let replaced = self.effective.rule(&net).map(|r| r.target.clone());
        if replaced.as_ref() == Some(&target) {
            return Ok(format!("rule {net} ({target}) unchanged"));
        }
        let rule = RuleSpec {
            cidr: net,
            target: target.clone(),
        };
        let mut overlay = self.state.overlay.clone();
        overlay.add_rule(&rule);
        self.commit(None, overlay)?;
        Ok(match replaced {
            Some(old) => format!("rule {net} changed from {old} to {target}"),
            None => format!("rule {net} added ({target})"),
        })
    }

    fn rule_rm(&mut self, cidr: &str) -> Result<String, String> {
        let net = parse_cidr(cidr).map_err(|e| format!("cidr = \"{cidr}\": {e}"))?;
        if self.effective.rule(&net).is_none() {
            return Err(format!("no rule for {net} (see `tollgate rule list`)"));
        }
        let mut overlay = self.state.overlay.clone();
        overlay.remove_rule(&net, self.file.rule(&net).is_some());
        self.commit(None, overlay)?;
        Ok(format!("rule {net} removed"))
    }

    fn detach(&mut self) -> Result<String, String> {
        // Let go of the objects first, or the guard would re-pin them.
        self.guard = None;
        let pin_dir = self.file.pin_dir.clone();
        let n = dataplane::remove_pins(&pin_dir).map_err(|e| format!("detach failed: {e:#}"))?;
        let msg = format!(
            "detached from {}; removed {n} pins and {}; the daemon exits",
            if self.file.interfaces.is_empty() {
                "no interfaces".to_owned()
            } else {
                self.file.interfaces.join(", ")
            },
            pin_dir.display()
        );
        info!("{msg}");
        Ok(msg)
    }

    fn index_names(&self) -> BTreeMap<u32, String> {
        self.effective
            .tiers
            .iter()
            .filter_map(|t| self.state.index_of(&t.name).map(|i| (i, t.name.clone())))
            .collect()
    }

    fn tier_source(&self, name: &str) -> &'static str {
        if self.state.overlay.tiers.contains_key(name) {
            "cli"
        } else {
            match self.file.source {
                ConfigSource::File(_) if self.file.tier(name).is_some() => "file",
                _ => "embedded",
            }
        }
    }

    fn tier_rows(&self) -> Vec<TierRow> {
        let row = |spec: &TierSpec, field: LimitField| {
            let l = spec.limit(field)?;
            let r = l.resolve(field).ok()?;
            Some(LimitRow {
                rate: l.rate.clone(),
                per_second: r.rate.per_second_f64(),
                burst: r.burst,
                burst_explicit: l.burst.is_some(),
            })
        };
        let mut rows: Vec<TierRow> = self
            .effective
            .tiers
            .iter()
            .map(|t| TierRow {
                name: t.name.clone(),
                index: self.state.index_of(&t.name).unwrap_or_default(),
                default: t.name == self.effective.default_tier,
                source: self.tier_source(&t.name).to_owned(),
                mode: t.mode,
                ipv6_prefix: t.ipv6_prefix,
                packets: row(t, LimitField::Packets),
                bytes: row(t, LimitField::Bytes),
                connections: row(t, LimitField::Connections),
                requests: row(t, LimitField::Requests),
                aggregate: row(t, LimitField::Aggregate),
                rules: self
                    .effective
                    .rules
                    .iter()
                    .filter(|r| r.target == RuleTarget::Tier(t.name.clone()))
                    .count(),
            })
            .collect();
        rows.sort_by_key(|r| r.index);
        rows
    }

    fn rule_rows(&self) -> Vec<RuleRow> {
        let mut rules = self.effective.rules.clone();
        rules.sort_by_key(|r| r.cidr);
        rules
            .iter()
            .map(|r| {
                let (action, tier) = match &r.target {
                    RuleTarget::Tier(t) => ("tier", t.clone()),
                    RuleTarget::Allow => ("allow", self.effective.default_tier.clone()),
                    RuleTarget::Deny => ("deny", self.effective.default_tier.clone()),
                };
                RuleRow {
                    cidr: r.cidr.to_string(),
                    action: action.to_owned(),
                    tier,
                    source: if self.state.overlay.rules.contains_key(&r.cidr.to_string()) {
                        "cli"
                    } else {
                        "file"
                    }
                    .to_owned(),
                }
            })
            .collect()
    }

    fn stats(&self, only: Option<&str>) -> Result<StatsData, String> {
        if let Some(t) = only
            && self.effective.tier(t).is_none()
        {
            return Err(format!(
                "no tier named \"{t}\" (tiers: {})",
                self.effective.tier_names()
            ));
        }
        let counters = self
            .maps
            .counters()
            .map_err(|e| format!("reading counters: {e}"))?;
        let names = self.index_names();
        let mut tiers = Vec::new();
        for (index, per_verdict) in counters.iter().enumerate() {
            let index = index as u32;
            let name = names.get(&index).cloned();
            let any = per_verdict.iter().any(|c| c.packets > 0);
            match (&name, only) {
                (Some(n), Some(o)) if n != o => continue,
                (None, Some(_)) => continue,
                (None, None) if !any => continue,
                _ => {}
            }
            let mut ts = TierStats {
                name: name.unwrap_or_else(|| format!("#{index}")),
                index,
                passed: Traffic::default(),
                dropped: Traffic::default(),
                verdicts: BTreeMap::new(),
                usage: self.usage.get(index as usize).cloned().unwrap_or_default(),
            };
            for v in Verdict::ALL {
                let c = per_verdict[v as usize];
                let (pps, bps) = self.samples.rate(index as usize, v as usize);
                let t = Traffic {
                    packets: c.packets,
                    bytes: c.bytes,
                    packets_per_sec: pps,
                    bytes_per_sec: bps,
                };
                let sum = if v.drops() {
                    &mut ts.dropped
                } else {
                    &mut ts.passed
                };
                sum.packets += t.packets;
                sum.bytes += t.bytes;
                sum.packets_per_sec += t.packets_per_sec;
                sum.bytes_per_sec += t.bytes_per_sec;
                ts.verdicts.insert(v.name().to_owned(), t);
            }
            tiers.push(ts);
        }
        Ok(StatsData {
            sample_interval_secs: self.samples.interval(),
            tiers,
        })
    }

    /// Tier names and IPv6 prefixes by kernel index.
    fn tier_names(&self) -> TierNames {
        let mut names = vec![None; MAX_TIERS as usize];
        for t in &self.effective.tiers {
            if let Some(&i) = self.state.tier_indices.get(&t.name) {
                let prefix = t.to_kernel().map_or(64, |k| k.ipv6_prefix as u8);
                names[i as usize] = Some((t.name.clone(), prefix));
            }
        }
        TierNames { names }
    }

    /// Pins `net` to `tier` in the kernel (an API key's tier), unless the
    /// config has an allow or deny rule for exactly that prefix.
    fn pin(&mut self, net: IpNet, tier: &str) {
        let Some(&index) = self.state.tier_indices.get(tier) else {
            return;
        };
        if let Some(rule) = self.effective.rule(&net)
            && !matches!(rule.target, RuleTarget::Tier(_))
        {
            return;
        }
        let value = RuleValue {
            action: RULE_TIER,
            tier: index,
        };
        match self.maps.set_rule(net, value) {
            Ok(()) => {
                info!(source = %net, tier, "API key: source pinned to its key's tier");
                self.pinned.insert(net, value);
            }
            Err(e) => warn!(source = %net, error = %e, "API key: pinning the source failed"),
        }
    }

    /// Ends a pin: restores the configured rule for exactly `net`, if any.
    fn unpin(&mut self, net: IpNet) {
        if self.pinned.remove(&net).is_none() {
            return;
        }
        let restored = match self.effective.rule(&net).map(|r| r.target.clone()) {
            Some(target) => {
                let default = self
                    .state
                    .tier_indices
                    .get(&self.effective.default_tier)
                    .copied()
                    .unwrap_or(0);
                let value = match target {
                    RuleTarget::Tier(t) => RuleValue {
                        action: RULE_TIER,
                        tier: self.state.tier_indices.get(&t).copied().unwrap_or(default),
                    },
                    RuleTarget::Allow => RuleValue {
                        action: RULE_ALLOW,
                        tier: default,
                    },
                    RuleTarget::Deny => RuleValue {
                        action: RULE_DENY,
                        tier: default,
                    },
                };
                self.maps.set_rule(net, value).map(|_| ())
            }
            None => self.maps.remove_rule(net).map(|_| ()),
        };
        match restored {
            Ok(()) => info!(source = %net, "API key pin expired"),
            Err(e) => warn!(source = %net, error = %e, "removing an expired API key pin failed"),
        }
    }

    /// Samples lost to a full ring since the program was loaded (all CPUs).
    fn ring_full_total(&self) -> Option<u64> {
        let t = self.maps.sampler_totals().ok()?;
        Some(t.http_ring_full + t.verdict_ring_full)
    }

    /// Losses from before this daemon (e.g. while none ran to drain the
    /// ring) are reported once, not blamed on it.
    fn baseline_ring_losses(&mut self) {
        let total = self.ring_full_total().unwrap_or(0);
        if total > 0 {
            info!(
                lost = total,
                "samples were lost to a full sample ring before this daemon started (nothing drains it while no daemon runs)"
            );
        }
        self.ring_losses.seen = total;
    }

    /// A full ring loses samples, never verdicts; say so (at most every
    /// [`RING_FULL_LOG_EVERY`]), since the HTTP stats and `top` miss them.
    fn check_ring_losses(&mut self) {
        let Some(total) = self.ring_full_total() else {
            return;
        };
        let r = &mut self.ring_losses;
        r.unlogged += total.saturating_sub(r.seen);
        r.seen = total;
        if r.unlogged > 0
            && r.logged_at
                .is_none_or(|at| at.elapsed() >= RING_FULL_LOG_EVERY)
        {
            warn!(
                lost = r.unlogged,
                "the sample ring buffer was full: samples were lost (verdicts are unaffected; \
                 HTTP stats and `tollgate top` miss them). Is the daemon short of CPU? \
                 A larger [maps] sample_ring_bytes or a larger sample_every helps"
            );
            r.unlogged = 0;
            r.logged_at = Some(Instant::now());
        }
    }

    /// Runs every [`guard::CHECK_INTERVAL`]: repairs removed pins and
    /// re-created interfaces, and notices a config file that went missing.
    fn guard_tick(&mut self) {
        if let Some(g) = &mut self.guard {
            let repairs = g.check();
            if !repairs.reattached.is_empty() {
                for (iface, mode) in repairs.reattached {
                    self.state.attachments.insert(iface, mode);
                }
                if let Err(e) = state::save(self.state_path(), &self.state) {
                    warn!(error = %e, "could not record the re-attached interfaces' modes");
                }
            }
        }
        self.check_config_file();
    }

    /// A missing or unreadable config file does not stop enforcement (the
    /// running configuration stays), but the next reload or restart would
    /// fail: say so when it happens, not only then.
    fn check_config_file(&mut self) {
        let Some(path) = &self.opts.config else {
            return;
        };
        let problem = match std::fs::File::open(path).and_then(|f| f.metadata()) {
            Ok(m) if m.is_file() => None,
            Ok(_) => Some("not a regular file".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        let readable = problem.is_none();
        if self.config_readable != Some(readable) {
            match &problem {
                Some(p) => error!(config = %path.display(), error = %p,
                    "the config file cannot be read: the running configuration stays in effect, \
                     but a reload or a restart will fail until it is restored"),
                None if self.config_readable.is_some() => {
                    info!(config = %path.display(), "the config file is readable again")
                }
                None => {}
            }
        }
        self.config_readable = Some(readable);
    }

    /// Pins survive in the pinned rule map across a daemon restart, but their
    /// expiry does not: make the kernel's rules exactly the configuration's.
    fn clear_stale_pins(&mut self) {
        if let Err(e) = apply(
            &mut self.maps,
            &self.effective,
            &self.state.tier_indices,
            &BTreeMap::new(),
        ) {
            warn!(error = %format!("{e:#}"), "clearing API key pins left by a previous daemon");
        }
    }

    /// Recomputes per-tier usage over the last sampling period.
    fn update_usage(&mut self, requests: &[u64], names: &TierNames) {
        let dt = self.samples.interval();
        let mut usage = vec![Usage::default(); MAX_TIERS as usize];
        if dt > 0.0 {
            for (i, u) in usage.iter_mut().enumerate() {
                if names.names[i].is_none() {
                    continue;
                }
                for v in 0..VERDICT_COUNT as usize {
                    let (p, b) = self.samples.rate(i, v);
                    u.packets_per_second += p;
                    u.bytes_per_second += b;
                }
                u.requests_per_second = requests.get(i).copied().unwrap_or(0) as f64 / dt;
            }
        }
        let scan = scan::scan(&self.maps, &|t| names.names[t as usize].is_some());
        for (i, u) in usage.iter_mut().enumerate() {
            u.active_sources = scan.active[i];
            u.limited_sources = scan.limited[i];
        }
        self.tracked = scan.tracked;
        self.usage = usage;
    }

    /// The daemon's part of a metrics snapshot (fresh kernel counters).
    fn snapshot(&self) -> Snapshot {
        let names = self.tier_names();
        let counters = self.maps.counters().unwrap_or_default();
        let mut tiers = Vec::new();
        for (i, name) in names.names.iter().enumerate() {
            let Some((name, _)) = name else { continue };
            let mut admitted = 0.0;
            let mut dropped = 0.0;
            for v in Verdict::ALL {
                let (p, _) = self.samples.rate(i, v as usize);
                if v.drops() {
                    dropped += p;
                } else {
                    admitted += p;
                }
            }
            tiers.push(TierSnapshot {
                name: name.clone(),
                counters: counters.get(i).map(|c| c.to_vec()).unwrap_or_default(),
                admitted_pps: admitted,
                dropped_pps: dropped,
                usage: self.usage[i].clone(),
            });
        }
        let status = self.status().ok();
        let (rules_v4, rules_v6) = self.maps.rules().map_or((0, 0), |r| {
            r.iter().fold((0, 0), |(a, b), (n, _)| match n {
                IpNet::V4(_) => (a + 1, b),
                IpNet::V6(_) => (a, b + 1),
            })
        });
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            tiers,
            tracked_v4: self.tracked.0,
            tracked_v6: self.tracked.1,
            capacity_v4: status.as_ref().map_or(0, |s| s.sources_v4.max),
            capacity_v6: status.as_ref().map_or(0, |s| s.sources_v6.max),
            rules_v4,
            rules_v6,
            sampler: self.maps.sampler_totals().unwrap_or_default(),
            interfaces: status
                .map(|s| {
                    s.interfaces
                        .into_iter()
                        .map(|i| metrics::InterfaceInfo {
                            name: i.name,
                            mode: i
                                .mode
                                .map_or("unknown".to_owned(), |m| format!("{m:?}").to_lowercase()),
                            program_id: i.program_id.unwrap_or(0),
                            attached: i.attached,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            reloads: self.reloads,
            reload_failures: self.reload_failures,
            repairs: self.guard.as_ref().map(|g| g.totals()).unwrap_or_default(),
            config_readable: self.config_readable,
            state_write_failures: self.state_write_failures,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ..Default::default()
        }
    }

    fn status(&self) -> Result<StatusData, String> {
        let pin_dir = &self.file.pin_dir;
        let max = |name: &str| {
            aya::maps::MapInfo::from_pin(pin_dir.join(name))
                .map(|i| i.max_entries() as u64)
                .unwrap_or(0)
        };
        let (v4, v6) = self.maps.tracked_sources();
        let (r4, r6) = self
            .effective
            .rules
            .iter()
            .fold((0, 0), |(a, b), r| match r.cidr {
                IpNet::V4(_) => (a + 1, b),
                IpNet::V6(_) => (a, b + 1),
            });
        let interfaces = self
            .file
            .interfaces
            .iter()
            .map(|iface| {
                // The guard holds the link, also while its pin is being
                // re-created.
                let link = match &self.guard {
                    Some(g) => g.link_state(iface),
                    None => dataplane::link_state(pin_dir, iface),
                };
                let (attached, link_id, program_id) = match link {
                    LinkState::Live { link_id, prog_id } => (true, Some(link_id), Some(prog_id)),
                    _ => (false, None, None),
                };
                InterfaceStatus {
                    name: iface.clone(),
                    mode: self.state.attachments.get(iface).copied(),
                    attached,
                    link_id,
                    program_id,
                }
            })
            .collect();
        Ok(StatusData {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            start: self.start.name().to_owned(),
            program_id: dataplane::pinned_program_id(pin_dir),
            interfaces,
            config_source: self.file.source.to_string(),
            pin_dir: pin_dir.clone(),
            socket: self.file.socket.clone(),
            state_file: self.file.state_file.clone(),
            default_tier: self.effective.default_tier.clone(),
            tiers: Fill {
                used: self.effective.tiers.len() as u64,
                max: MAX_TIERS as u64,
            },
            sources_v4: Fill {
                used: v4 as u64,
                max: max(names::SOURCES_V4),
            },
            sources_v6: Fill {
                used: v6 as u64,
                max: max(names::SOURCES_V6),
            },
            rules_v4: Fill {
                used: r4,
                max: max(names::RULES_V4),
            },
            rules_v6: Fill {
                used: r6,
                max: max(names::RULES_V6),
            },
            cli_changes: {
                let o = &self.state.overlay;
                o.tiers.len() + o.removed_tiers.len() + o.rules.len() + o.removed_rules.len()
            },
            // Filled in by Shared::handle, which owns the cluster state.
            cluster: None,
        })
    }
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
    state
        .assign_indices(&effective)
        .map_err(anyhow::Error::msg)?;
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
        let indices = state.tier_indices.clone();
        let Dataplane {
            mut maps,
            start,
            modes,
            logger,
        } = dataplane::bring_up(&plan, &mut |maps| {
            apply(maps, &effective, &indices, &BTreeMap::new())
        })?;
        state.attachments = modes;
        let guard = guard::Guard::new(&file.pin_dir, pin_lock, &file.interfaces, file.mode)?;
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
        if cluster.is_none()
            && let Some(t) = effective.tiers.iter().find(|t| t.has_global_limits())
        {
            warn!(tier = %t.name, "the tier has global limits but no [cluster] is configured: they have no effect");
        }
        let ring = maps.take_samples();
        let monitor = Monitor::new(&effective.http, &effective.api_keys).map_err(anyhow::Error::msg)?;
        let metrics_address = file.metrics_address;
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
            reloads: 0,
            reload_failures: 0,
            usage: vec![Usage::default(); MAX_TIERS as usize],
            tracked: (0, 0),
            generation: 0,
            guard: Some(guard),
            config_readable: None,
            state_write_failures: 0,
            ring_losses: RingLosses::default(),
        };
        daemon.baseline_ring_losses();
        let names = daemon.tier_names();
        daemon.clear_stale_pins();
        let shared = Arc::new(Shared {
            daemon: Mutex::new(daemon),
            talkers: Mutex::new(Talkers::new(TALKERS_CAPACITY)),
            monitor: Mutex::new(monitor),
            tiers: Mutex::new(names),
            shutdown: tokio::sync::Notify::new(),
            requests: tokio::sync::RwLock::new(()),
            cluster: cluster.as_ref().map(|c| Arc::new(cluster::Status::new(c))),
        });
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
        serve(shared, listener, allowed, cluster).await
    }
    .await;
    let _ = std::fs::remove_file(&socket_path);
    result
}

/// Kernels before 5.11 charge BPF map memory to RLIMIT_MEMLOCK (the reason
/// the systemd unit grants CAP_SYS_RESOURCE); newer ones use memory cgroups.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}

async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::UnixListener,
    allowed: Vec<u32>,
    cluster: Option<config::ClusterConfig>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    let server = tokio::spawn(server::serve(listener, shared.clone(), allowed));
    let sampler = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                tick.tick().await;
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.sample()).await;
            }
        })
    };
    let guard = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(guard::CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || lock(&s.daemon).guard_tick()).await;
            }
        })
    };
    let decay = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TALKERS_DECAY);
            tick.tick().await;
            loop {
                tick.tick().await;
                lock(&shared.talkers).decay();
            }
        })
    };

    // Fleet-wide limits: a task of its own, never on the packet path.
    let cluster_stop = Arc::new(tokio::sync::Notify::new());
    let cluster_task = match (cluster, &shared.cluster) {
        (Some(cfg), Some(status)) => {
            info!(redis = %cfg.redis, node_id = %cfg.node_id, interval = ?cfg.sync_interval,
                "cluster: syncing global limits through Redis");
            let pin_dir = lock(&shared.daemon).file.pin_dir.clone();
            let host: Arc<dyn cluster::Host> = shared.clone();
            Some(tokio::spawn(cluster::run(
                cfg,
                pin_dir,
                host,
                status.clone(),
                cluster_stop.clone(),
            )))
        }
        _ => None,
    };

    loop {
        tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM: exiting; the program stays attached and pinned (`tollgate detach` removes it)");
                break;
            }
            _ = int.recv() => {
                info!("SIGINT: exiting; the program stays attached and pinned (`tollgate detach` removes it)");
                break;
            }
            _ = hup.recv() => {
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.reload_from_signal()).await;
            }
            _ = shared.shutdown.notified() => {
                info!("detached: exiting");
                break;
            }
        }
    }
    // No new connections; requests already being handled finish and are
    // answered (a CLI change is never applied without its answer), and no
    // new one starts.
    server.abort();
    match tokio::time::timeout(STOP_GRACE, shared.requests.write()).await {
        // Never released: a request waiting for the lock must not start
        // while the runtime shuts down, or its change would be applied (the
        // blocking task runs to the end) without its answer being written.
        Ok(no_more_requests) => std::mem::forget(no_more_requests),
        Err(_) => warn!("stopping with control requests still running after {STOP_GRACE:?}"),
    }
    sampler.abort();
    guard.abort();
    decay.abort();
    if let Some(task) = cluster_task {
        // Lifts its denies (the rules would outlive the daemon otherwise).
        cluster_stop.notify_one();
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            warn!("cluster: the sync did not stop in time; its denies stay until the next start");
        }
    }
    Ok(())
}

/// Reads the kernel's sample ring as it fills (epoll on its fd) and hands the
/// records to [`Shared::ingest`] in batches, off the async threads.
async fn drain_samples(ring: aya::maps::RingBuf<aya::maps::MapData>, shared: Arc<Shared>) {
    use tokio::io::{Interest, unix::AsyncFd};
    const BATCH: usize = 4096;
    // SAFETY: the ring buffer owns its fd and keeps it open (and unreplaced)
    // for as long as the AsyncFd owns the ring buffer.
    let mut fd = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "cannot poll the sample ring buffer: no HTTP monitor or top talkers");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "polling the sample ring buffer failed");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        let mut records = Vec::new();
        while records.len() < BATCH {
            match ring.next() {
                Some(item) => records.push(item.to_vec()),
                None => break,
            }
        }
        if records.len() < BATCH {
            guard.clear_ready();
        }
        drop(guard);
        if !records.is_empty() {
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || s.ingest(&records)).await;
        }
    }
}

async fn drain_program_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    use tokio::io::{Interest, unix::AsyncFd};
    // SAFETY: the logger owns its ring buffer fd and keeps it open (and
    // unreplaced) for as long as the AsyncFd owns the logger.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "cannot poll the program's log ring buffer");
            return;
        }
    };
    loop {
        match fd.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(e) => {
                warn!(error = %e, "polling the program's log ring buffer");
                return;
            }
        }
    }
}

fn top_row(row: &crate::talkers::TalkerRow, tier: String) -> TopRow {
    TopRow {
        source: row.source,
        tier,
        packets: row.packets,
        bytes: row.bytes,
        drops: row.drops,
        requests: row.requests,
        error: row.error,
    }
}
