//! Fleet-wide limits through Redis: one quota per source for all nodes.
//!
//! A client spread over N nodes behind a load balancer gets N times its
//! per-node limit. Tiers may therefore also set `global_packets` and
//! `global_requests`, shared by every node configured with the same
//! `[cluster] redis`.
//!
//! # Algorithm
//!
//! Fixed windows of one second (wall clock, [`WINDOW`]). Every
//! `sync_interval` (jittered ±25% so no traffic pattern can hide between the
//! reads), this task, off the packet path:
//!
//! 1. walks the kernel's per-source maps (the one batched walk,
//!    [`SourceWalk`]) and, for the sources of tiers with global limits (found
//!    by longest-prefix match over the configured rules, [`lpm`]), reads what
//!    each was admitted since the last walk from the program's own count
//!    (`SourceState::admitted`, [`usage`]);
//! 2. pushes, in one pipelined round trip of Lua script calls (EVALSHA, EVAL
//!    on NOSCRIPT), the accumulated usage of each source above `share` of its
//!    global allowance per interval: `INCRBY tg:{<window>}:<tier>:<p|r>:<source>`
//!    (with a TTL); the script answers which counters are over
//!    `rate × window + global burst`. Each call carries a batch marker
//!    ([`store::batch_marker`]): a push whose answer was lost goes again in
//!    the same window with the same markers, and Redis counts it once;
//! 3. denies those sources in the kernel (an LPM rule on the address, or on
//!    the tier's IPv6 prefix, with `RULE_DENY`, counted under the tier) until
//!    the window ends: the rule carries the window's end (`expires_ns`) and
//!    the program stops applying it then, however late this loop runs; the
//!    daemon removes it [`DENY_MARGIN`] later and puts back whatever rule the
//!    configuration has for that exact CIDR.
//!
//! The configuration comes from the daemon's `watch` channel
//! ([`Subscription`]): a sync that finds a new one published (a commit or a
//! rollback rewrote the kernel's rules, dropping the denies) re-plans and puts
//! its denies back first.
//!
//! # Accuracy
//!
//! With N nodes, each admitting a source at most at its per-node rate `ρ`
//! with burst `b`, at most `I` between two syncs (1.25 × `sync_interval`, with
//! the jitter) and a round trip plus rule update `δ`, the fleet admits a source
//! in every window, while the sync is up, at most
//!
//! ```text
//! rate × 1 s + global burst + N × (ρ × (I + δ) + b) + N × θ
//! ```
//!
//! where `θ = share × rate × I` is what a node may leave unpushed (the share
//! threshold's leakage). The N × ρ × (I + δ) term: once the counter crosses,
//! every node keeps admitting until its next push is answered (at most one
//! interval since its previous push, which the counter did not have yet).
//! Usage read across a window boundary is charged to the new window, which
//! only lowers that window's admissions; so that this stays small, every
//! window's last sync walks the maps just before its end ([`next_wake`]):
//! a source under its quota is charged with at most the last [`END_LEAD`]
//! (plus a walk) of the window before. The counts are the kernel's own
//! (exact); a source under its quota is never denied. Nodes' clocks must
//! agree to well within a window (NTP).
//!
//! # Redis load
//!
//! One round trip per node per interval, and one more per window (the sync
//! before its end, [`next_wake`]): `ceil(pushed / 1000)` EVALSHA calls
//! (a PING when nothing is pushed), each counter costing about its key
//! (`tg:{1700000000}:<tier>:p:<address>`, ~40 bytes) plus two numbers. In
//! Redis Cluster every key of a window shares the window's hash tag, so a sync
//! touches one slot, and the slot moves with the window.
//!
//! # Failure
//!
//! Fail-open: with Redis unreachable or slower than the interval (plus 20 µs
//! per counter pushed: a big batch takes Redis longer), local limits keep
//! enforcing, denies run out at their window's end, the task reconnects
//! with exponential backoff (capped at [`MAX_BACKOFF`]) and logs once per
//! change of state; [`Status::is_up`] says which.

pub mod store;
pub mod usage;

use std::{
    collections::HashMap,
    io,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use ipnet::IpNet;
use tollgate_common::{RULE_DENY, RuleValue, SourceState};
use tracing::{debug, info, warn};

use crate::{
    config::{ClusterConfig, Effective, Subscription},
    datapath::{kernel, walk::SourceWalk},
    proto::ClusterStatus,
    spec::{GlobalField, LimitField, Lpm, RuleTarget, SourceKey, TierMode},
};
use store::{Conn, Entry};
use usage::{Delta, Kind, Measure, Measures, Usage};

/// Length of a global window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// A deny lasts until its window ends plus this (nodes' clocks differ a little).
pub const DENY_MARGIN: Duration = Duration::from_millis(20);
/// Counters outlive their window by this much.
pub const KEY_TTL: Duration = Duration::from_secs(3);
/// Reconnection backoff: doubles from the first to the cap.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the sync needs from the daemon besides the configuration (which it
/// reads from the daemon's channel).
pub trait Host: Send + Sync + 'static {
    /// Writes rules into the kernel (under the daemon's lock).
    fn update_rules(&self, upsert: &[(IpNet, RuleValue)], remove: &[IpNet]) -> Result<()>;
}

/// The sync's state for `status` and metrics; cheap to read from anywhere.
#[derive(Debug)]
pub struct Status {
    redis: String,
    node_id: String,
    sync_interval: Duration,
    up: AtomicBool,
    syncs: AtomicU64,
    failures: AtomicU64,
    last_sync_unix_ms: AtomicU64,
    round_trip_us: AtomicU64,
    tracked: AtomicU64,
    pushed: AtomicU64,
    denied: AtomicU64,
    denies_total: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Status {
    pub fn new(cfg: &ClusterConfig) -> Status {
        Status {
            redis: cfg.redis.to_string(),
            node_id: cfg.node_id.clone(),
            sync_interval: cfg.sync_interval,
            up: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_sync_unix_ms: AtomicU64::new(0),
            round_trip_us: AtomicU64::new(0),
            tracked: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            denies_total: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Whether the last sync with Redis succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn report(&self) -> ClusterStatus {
        let last = self.last_sync_unix_ms.load(Ordering::Relaxed);
        let rtt = self.round_trip_us.load(Ordering::Relaxed);
        ClusterStatus {
            up: self.is_up(),
            redis: self.redis.clone(),
            node_id: self.node_id.clone(),
            sync_interval_ms: self.sync_interval.as_millis() as u64,
            syncs: self.syncs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_sync_secs_ago: (last > 0).then(|| unix_ms().saturating_sub(last) as f64 / 1000.0),
            round_trip_ms: (last > 0).then(|| rtt as f64 / 1000.0),
            tracked_sources: self.tracked.load(Ordering::Relaxed),
            pushed_last: self.pushed.load(Ordering::Relaxed),
            denied_sources: self.denied.load(Ordering::Relaxed),
            denies_total: self.denies_total.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A tier with global limits, as the sync uses it.
#[derive(Clone, Debug)]
pub struct GlobalTier {
    pub name: String,
    /// Kernel tier index.
    pub index: u32,
    pub ipv6_prefix: u32,
    pub shadow: bool,
    pub measures: Measures,
    /// Units per window, by [`Kind`].
    pub allowance: [u64; 2],
}

/// The configuration turned into what one sync needs.
#[derive(Debug, Default)]
pub struct Plan {
    /// The generation of the configuration this plan was made from.
    pub generation: u64,
    pub tiers: Vec<GlobalTier>,
    /// Rule CIDR -> index into `tiers` (None: a tier without global limits,
    /// or an allow/deny rule).
    lpm: Lpm<Option<usize>>,
    default: Option<usize>,
    /// The configured rule of each CIDR, to put back when a deny ends.
    configured: HashMap<IpNet, RuleValue>,
}

impl Plan {
    pub fn new(effective: &Effective, cfg: &ClusterConfig) -> Plan {
        let (config, indices) = (&effective.config, &effective.indices);
        let index = |name: &str| indices.get(name).copied();
        let mut tiers = Vec::new();
        let mut by_name = HashMap::new();
        for t in config.tiers.iter().filter(|t| t.has_global_limits()) {
            let Some(kernel_index) = index(&t.name) else {
                continue;
            };
            let mut g = GlobalTier {
                name: t.name.clone(),
                index: kernel_index,
                ipv6_prefix: t.ipv6_prefix,
                shadow: t.mode == TierMode::Shadow,
                measures: Measures::default(),
                allowance: [0; 2],
            };
            for field in GlobalField::ALL {
                let (Some(global), Some(local)) = (t.global(field), t.limit(field.local())) else {
                    continue;
                };
                let (Ok(global), Ok(_)) = (global.resolve_global(), local.resolve(field.local()))
                else {
                    continue;
                };
                // Worth a push: `share` of the allowance per interval.
                let threshold = (cfg.share * global.per_second * cfg.sync_interval.as_secs_f64())
                    .floor()
                    .max(1.0) as u64;
                let kind = match field.local() {
                    LimitField::Packets => Kind::Packets,
                    _ => Kind::Requests,
                };
                let measure = Measure { threshold };
                match kind {
                    Kind::Packets => g.measures.packets = Some(measure),
                    Kind::Requests => g.measures.requests = Some(measure),
                }
                g.allowance[kind as usize] = global.allowance(WINDOW);
            }
            by_name.insert(t.name.clone(), tiers.len());
            tiers.push(g);
        }
        let default_index = index(&config.default_tier).unwrap_or(0);
        let mut lpm = Lpm::default();
        let mut configured = HashMap::new();
        for r in &config.rules {
            let value = r
                .target
                .to_kernel(|t| Some(index(t).unwrap_or(default_index)), default_index)
                .expect("every tier has an index here");
            let target = match &r.target {
                RuleTarget::Tier(t) => by_name.get(t).copied(),
                RuleTarget::Allow | RuleTarget::Deny => None,
            };
            lpm.insert(r.cidr, target);
            configured.insert(r.cidr, value);
        }
        Plan {
            generation: effective.generation,
            default: by_name.get(&config.default_tier).copied(),
            tiers,
            lpm,
            configured,
        }
    }

    /// The global tier (index into `tiers`) a source belongs to, if any.
    pub fn tier_of(&self, key: &SourceKey) -> Option<usize> {
        match self.lpm.lookup_key(*key) {
            Some(target) => *target,
            None => self.default,
        }
    }
}

/// Reads every source of a tier with global limits in the one batched walk of
/// the source maps ([`SourceWalk`]) and appends what to push to `out`. Runs on
/// a blocking thread. The walk is bounded by the maps' sizes; a source the
/// kernel hands over twice is read once ([`Usage::seen`]). What each source
/// was admitted is the kernel's own count ([`Usage::observe`]): no clock is
/// read and nothing is estimated.
///
/// On an error the deltas of the sources read so far are still in `out`, and
/// the sources not reached keep their last reads (the scan is not finished),
/// so the next complete walk counts them over the longer interval.
pub fn scan(
    walk: &SourceWalk,
    plan: &Plan,
    usage: &mut Usage,
    window: u64,
    out: &mut Vec<Delta>,
) -> io::Result<()> {
    usage.begin(window);
    if !plan.tiers.is_empty() {
        let mut read = |sk: SourceKey, state: &SourceState, out: &mut Vec<Delta>| {
            let Some(t) = plan.tier_of(&sk) else { return };
            if !usage.seen(&sk) {
                usage.observe(sk, t, &plan.tiers[t].measures, state, out);
            }
        };
        let v4 = walk.v4_batches(|keys, states| {
            for (k, state) in keys.iter().zip(states) {
                read(SourceKey::V4(*k), state, out);
            }
        });
        let v6 = walk.v6_batches(|keys, states| {
            for (k, state) in keys.iter().zip(states) {
                read(SourceKey::V6(*k), state, out);
            }
        });
        v4.and(v6)?;
    }
    usage.finish();
    Ok(())
}

/// The window (seconds since the epoch) it is now.
fn window_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() / WINDOW.as_nanos()) as u64
}

/// How long before a window's end its last sync starts walking, on top of
/// the last walk's duration (see [`next_wake`]).
pub const END_LEAD: Duration = Duration::from_millis(10);

/// How long from now the next sync runs: after `jittered`, unless the
/// window ends (`left` from now) before then, in which case a sync runs
/// `lead` before its end (when that is still ahead). That sync charges the
/// window with its usage up to about `lead` before its end, so the next
/// window is charged with at most `lead`'s worth of the previous one's
/// (with jittered syncs alone, up to a whole interval's). Extra syncs only
/// shorten the interval between two, so the bound of the module's
/// documentation holds as before.
pub fn next_wake(jittered: Duration, left: Duration, lead: Duration) -> Duration {
    match left.checked_sub(lead) {
        Some(before_end) if !before_end.is_zero() && before_end < jittered => before_end,
        _ => jittered,
    }
}

/// The time left in `window` now (zero once it is over), and the kernel's
/// clock read right after: the two name the same instant to within the
/// reads, so `kernel + left` is the window's end on the kernel's clock.
fn left_in(window: u64) -> (Duration, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let kernel = kernel::clock_ns();
    let end = Duration::from_nanos((WINDOW.as_nanos() as u64).saturating_mul(window + 1));
    (end.saturating_sub(now), kernel)
}

/// The Redis counters a batch of deltas updates.
pub fn entries(plan: &Plan, window: u64, deltas: &[Delta]) -> Vec<Entry> {
    deltas
        .iter()
        .map(|d| {
            let t = &plan.tiers[d.tier];
            Entry {
                key: store::key(
                    window,
                    &t.name,
                    d.kind.tag(),
                    &d.source.label(t.ipv6_prefix),
                ),
                delta: d.units,
                allowance: t.allowance[d.kind as usize],
            }
        })
        .collect()
}

struct Deny {
    until: Instant,
    rule: RuleValue,
}

/// The sources this node denies for being over a global limit.
#[derive(Default)]
struct Denies {
    active: HashMap<IpNet, Deny>,
}

/// A small xorshift for the read jitter (no need for a real RNG).
struct Jitter(u64);

impl Jitter {
    fn next(&mut self, interval: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // Uniform in [0.75, 1.25) × interval.
        let f = 0.75 + (self.0 >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        interval.mul_f64(f)
    }
}

/// The sync task: runs until `stop` is notified, then lifts its denies.
pub async fn run(
    cfg: ClusterConfig,
    pin_dir: PathBuf,
    mut config: Subscription,
    host: Arc<dyn Host>,
    status: Arc<Status>,
    stop: Arc<tokio::sync::Notify>,
) {
    let walk = match tokio::task::spawn_blocking(move || SourceWalk::open(&pin_dir)).await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            warn!(error = %e, "cluster: cannot open the source maps: global limits are off");
            return;
        }
        Err(e) => {
            warn!(error = %e, "cluster: cannot open the source maps: global limits are off");
            return;
        }
    };
    let in_force = config.borrow_and_update().clone();
    let mut sync = Syncer {
        plan: Arc::new(Plan::new(&in_force, &cfg)),
        config,
        script: store::script(),
        timeout: cfg
            .sync_interval
            .clamp(Duration::from_millis(50), Duration::from_secs(1)),
        cfg,
        host,
        status,
        scanner: Arc::new(Mutex::new((walk, Usage::default()))),
        walk_failing: false,
        denies: Denies::default(),
        conn: None,
        retry_at: Instant::now(),
        backoff: FIRST_BACKOFF,
        logged_up: None,
        unacked: Vec::new(),
        // A restarted node must not reuse a marker of its previous run.
        seq: unix_ms() << 16,
        last_walk: Duration::ZERO,
    };
    let mut jitter = Jitter(kernel::clock_ns() | 1);
    let mut next = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let jittered = (next + jitter.next(sync.cfg.sync_interval)).saturating_duration_since(now);
        let left = left_in(window_now()).0;
        next = now + next_wake(jittered, left, END_LEAD + sync.last_walk);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.notified() => break,
        }
        sync.once().await;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now; // a slow sync: skip, do not burst
        }
    }
    sync.lift_all().await;
}

struct Syncer {
    cfg: ClusterConfig,
    /// The daemon's configuration in force; `plan` is made from it.
    config: Subscription,
    script: redis::Script,
    timeout: Duration,
    host: Arc<dyn Host>,
    status: Arc<Status>,
    scanner: Arc<Mutex<(SourceWalk, Usage)>>,
    /// Whether the last walk of the source maps failed (logged once).
    walk_failing: bool,
    plan: Arc<Plan>,
    denies: Denies,
    conn: Option<Conn>,
    retry_at: Instant,
    backoff: Duration,
    /// What was last logged (None: nothing yet).
    logged_up: Option<bool>,
    /// Pushes of this window not answered yet, oldest first.
    unacked: Vec<Batch>,
    /// The last batch's sequence number (markers are unique per node).
    seq: u64,
    /// How long the last walk of the source maps took (capped at a quarter
    /// window): the sync before a window's end starts that much earlier.
    last_walk: Duration,
}

/// One scan's deltas as one push.
struct Batch {
    window: u64,
    /// The plan the entries were made with.
    generation: u64,
    marker: String,
    entries: Vec<store::Entry>,
    deltas: Vec<Delta>,
}

impl Syncer {
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        tokio::task::spawn_blocking(f).await.ok()
    }

    async fn update_rules(&self, upsert: Vec<(IpNet, RuleValue)>, remove: Vec<IpNet>) {
        if upsert.is_empty() && remove.is_empty() {
            return;
        }
        let host = self.host.clone();
        match Self::blocking(move || host.update_rules(&upsert, &remove)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => warn!(error = %format!("{e:#}"), "cluster: updating deny rules"),
            None => warn!("cluster: updating deny rules failed internally"),
        }
    }

    /// One sync: configuration, expiries, scan, round trip, denies.
    async fn once(&mut self) {
        // The configuration, when a new one was published (reloads, CLI
        // changes and rollbacks rewrite the kernel's rules: put the denies
        // back).
        if self.config.has_changed().unwrap_or(false) {
            let in_force = self.config.borrow_and_update().clone();
            debug!(
                generation = in_force.generation,
                "cluster: the configuration changed"
            );
            self.plan = Arc::new(Plan::new(&in_force, &self.cfg));
            self.scanner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .rebase_new_sources();
            let again: Vec<_> = self
                .denies
                .active
                .iter()
                .map(|(n, d)| (*n, d.rule))
                .collect();
            self.update_rules(again, Vec::new()).await;
        }
        self.expire(Instant::now()).await;

        let window = window_now();
        let (scanner, plan) = (self.scanner.clone(), self.plan.clone());
        let walk_started = Instant::now();
        let Some((deltas, walked, tracked)) = Self::blocking(move || {
            let mut s = scanner.lock().unwrap_or_else(|p| p.into_inner());
            let (walk, usage) = &mut *s;
            let mut deltas = Vec::new();
            let walked = scan(walk, &plan, usage, window, &mut deltas);
            (deltas, walked, usage.len())
        })
        .await
        else {
            return;
        };
        self.last_walk = walk_started.elapsed().min(WINDOW / 4);
        self.status.tracked.store(tracked as u64, Ordering::Relaxed);
        match walked {
            Ok(()) if self.walk_failing => {
                info!("cluster: the source maps are readable again");
                self.walk_failing = false;
            }
            Ok(()) => {}
            // What was read is pushed; the rest is measured by the next walk.
            Err(e) if !self.walk_failing => {
                warn!(error = %e, "cluster: walking the source maps failed: pushing what was read");
                self.walk_failing = true;
            }
            Err(e) => debug!(error = %e, "cluster: walking the source maps still fails"),
        }

        // This scan's deltas become a batch with a marker of its own; batches
        // of this window whose answer never came go again first, with their
        // markers, so Redis counts each once (`store::batch_marker`).
        self.unacked
            .retain(|b| b.window == window && b.generation == self.plan.generation);
        if !deltas.is_empty() {
            self.seq += 1;
            self.unacked.push(Batch {
                window,
                generation: self.plan.generation,
                marker: store::batch_marker(window, &self.cfg.node_id, self.seq),
                entries: entries(&self.plan, window, &deltas),
                deltas,
            });
        }

        if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return;
            }
            let connect = Conn::connect(&self.cfg.redis, &self.cfg.node_id, self.timeout);
            match tokio::time::timeout(self.timeout, connect).await {
                Ok(Ok(c)) => self.conn = Some(c),
                Ok(Err(e)) => return self.down(e.to_string()),
                Err(_) => return self.down(format!("no connection within {:?}", self.timeout)),
            }
        }
        let started = Instant::now();
        let conn = self.conn.as_mut().expect("connected above");
        if self.unacked.is_empty() {
            match tokio::time::timeout(self.timeout, conn.ping()).await {
                Ok(Ok(())) => return self.up(started.elapsed(), 0),
                Ok(Err(e)) => return self.down(e.to_string()),
                Err(_) => return self.down(format!("no answer within {:?}", self.timeout)),
            }
        }
        let mut pushed = 0;
        while let Some(batch) = self.unacked.first() {
            // Redis runs a script call of 1000 counters in a few
            // milliseconds: big batches get that much more time before
            // counting as slow.
            let timeout = self.timeout + Duration::from_micros(20 * batch.entries.len() as u64);
            let conn = self.conn.as_mut().expect("connected above");
            let push = conn.push(&self.script, &batch.marker, &batch.entries, KEY_TTL);
            let over = match tokio::time::timeout(timeout, push).await {
                Ok(Ok(over)) => over,
                Ok(Err(e)) => return self.down(e.to_string()),
                Err(_) => return self.down(format!("no answer within {timeout:?}")),
            };
            let batch = self.unacked.remove(0);
            pushed += batch.entries.len();
            self.deny(&batch.deltas, &over, window).await;
        }
        self.up(started.elapsed(), pushed);
    }

    fn up(&mut self, round_trip: Duration, pushed: usize) {
        let s = &self.status;
        s.up.store(true, Ordering::Relaxed);
        s.syncs.fetch_add(1, Ordering::Relaxed);
        s.last_sync_unix_ms.store(unix_ms(), Ordering::Relaxed);
        s.round_trip_us
            .store(round_trip.as_micros() as u64, Ordering::Relaxed);
        s.pushed.store(pushed as u64, Ordering::Relaxed);
        s.set_error(None);
        self.backoff = FIRST_BACKOFF;
        if self.logged_up != Some(true) {
            info!(redis = %self.status.redis, node_id = %self.cfg.node_id,
                "cluster: synced with Redis: global limits are in force");
            self.logged_up = Some(true);
        }
    }

    fn down(&mut self, error: String) {
        self.conn = None;
        self.retry_at = Instant::now() + self.backoff;
        let backoff = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        let s = &self.status;
        s.up.store(false, Ordering::Relaxed);
        s.failures.fetch_add(1, Ordering::Relaxed);
        s.set_error(Some(error.clone()));
        if self.logged_up != Some(false) {
            warn!(redis = %self.status.redis, %error,
                "cluster: Redis is unreachable: global limits are paused, local limits stay in force; reconnecting with backoff");
            self.logged_up = Some(false);
        } else {
            debug!(%error, retry_in = ?backoff, "cluster: Redis still unreachable");
        }
    }

    /// Denies the sources whose counters are over, until the window ends:
    /// the kernel's rule carries the window's end and stops applying then,
    /// whatever this loop is doing; the daemon removes it a margin later.
    async fn deny(&mut self, deltas: &[Delta], over: &[usize], window: u64) {
        // The window's end as of now, not as of the scan: the round trip
        // must not stretch the deny past it.
        let (left, now_ns) = left_in(window);
        if left.is_zero() || over.is_empty() {
            return;
        }
        let until = Instant::now() + left + DENY_MARGIN;
        let expires_ns = now_ns + left.as_nanos() as u64;
        let mut upsert = Vec::new();
        for &i in over {
            let Some(d) = deltas.get(i) else { continue };
            let t = &self.plan.tiers[d.tier];
            if t.shadow {
                debug!(tier = %t.name, source = %d.source.label(t.ipv6_prefix),
                    "cluster: over its global limit (shadow tier: not denied)");
                continue;
            }
            let net = d.source.net(t.ipv6_prefix);
            let rule = RuleValue {
                action: RULE_DENY,
                tier: t.index,
                expires_ns,
            };
            match self.denies.active.get_mut(&net) {
                Some(active) => {
                    active.until = active.until.max(until);
                    // Over again in a later window: the kernel's deny
                    // moves to that window's end.
                    if active.rule.expires_ns < expires_ns {
                        active.rule = rule;
                        upsert.push((net, rule));
                    }
                }
                None => {
                    debug!(tier = %t.name, source = %net, "cluster: over its global limit: denied until the window ends");
                    self.denies.active.insert(net, Deny { until, rule });
                    self.status.denies_total.fetch_add(1, Ordering::Relaxed);
                    upsert.push((net, rule));
                }
            }
        }
        self.status
            .denied
            .store(self.denies.active.len() as u64, Ordering::Relaxed);
        self.update_rules(upsert, Vec::new()).await;
    }

    /// Ends the denies due by `now`, restoring configured rules.
    async fn expire(&mut self, now: Instant) {
        let due: Vec<IpNet> = self
            .denies
            .active
            .iter()
            .filter(|(_, d)| d.until <= now)
            .map(|(n, _)| *n)
            .collect();
        self.lift(&due).await;
    }

    async fn lift(&mut self, nets: &[IpNet]) {
        if nets.is_empty() {
            return;
        }
        let (mut upsert, mut remove) = (Vec::new(), Vec::new());
        for net in nets {
            self.denies.active.remove(net);
            match self.plan.configured.get(net) {
                Some(v) => upsert.push((*net, *v)),
                None => remove.push(*net),
            }
        }
        self.status
            .denied
            .store(self.denies.active.len() as u64, Ordering::Relaxed);
        self.update_rules(upsert, remove).await;
    }

    async fn lift_all(&mut self) {
        let all: Vec<IpNet> = self.denies.active.keys().copied().collect();
        self.lift(&all).await;
        self.status.up.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, ConfigSource};
    use tollgate_common::RULE_TIER;

    fn plan(text: &str) -> Plan {
        let c = config::parse(text, ConfigSource::File("t.toml".into())).unwrap();
        let mut state = crate::state::State::default();
        state.assign_indices(&c).unwrap();
        let cluster = c.cluster.clone().unwrap();
        let effective = Effective::new(7, c, state.tier_indices.clone());
        Plan::new(&effective, &cluster)
    }

    const CFG: &str = r#"
default_tier = "free"
[cluster]
redis = "redis://127.0.0.1/"
sync_interval = "100ms"
share = 0.05

[[tier]]
name = "free"
packets = "100/s"

[[tier]]
name = "api"
packets = "1000/s"
packets_burst = 100
requests = "100/s"
global_packets = "2000/s"
global_packets_burst = 500
global_requests = "150/s"
ipv6_prefix = 48

[[rule]]
cidr = "10.0.0.0/8"
tier = "api"

[[rule]]
cidr = "10.9.0.0/16"
tier = "free"

[[rule]]
cidr = "10.1.2.3"
action = "allow"

[[rule]]
cidr = "2001:db8::/32"
tier = "api"
"#;

    #[test]
    fn plans_map_sources_to_global_tiers() {
        let p = plan(CFG);
        assert_eq!(p.generation, 7);
        assert_eq!(p.tiers.len(), 1);
        let api = &p.tiers[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.allowance, [2500, 150]);
        let m = api.measures.packets.unwrap();
        // 5% of 2000/s over 100 ms.
        assert_eq!(m.threshold, 10);
        assert!(api.measures.requests.is_some());
        let v4 = |a: [u8; 4]| SourceKey::v4(a.into());
        assert_eq!(p.tier_of(&v4([10, 0, 0, 1])), Some(0));
        assert_eq!(
            p.tier_of(&v4([10, 9, 0, 1])),
            None,
            "more specific rule to free"
        );
        assert_eq!(p.tier_of(&v4([10, 1, 2, 3])), None, "allow rule");
        assert_eq!(p.tier_of(&v4([192, 0, 2, 1])), None, "default tier free");
        assert_eq!(p.tier_of(&SourceKey::V6(0x2001_0db8_0001_0000)), Some(0));
        assert_eq!(p.configured.len(), 4);
        let free = p.configured[&"10.9.0.0/16".parse().unwrap()];
        assert_eq!(free.action, RULE_TIER);
    }

    #[test]
    fn entries_name_window_tier_kind_and_source() {
        let p = plan(CFG);
        let deltas = [
            Delta {
                source: SourceKey::v4([10, 0, 0, 1].into()),
                tier: 0,
                kind: Kind::Packets,
                units: 42,
            },
            Delta {
                source: SourceKey::V6(0x2001_0db8_0001_0000),
                tier: 0,
                kind: Kind::Requests,
                units: 3,
            },
        ];
        let e = entries(&p, 99, &deltas);
        assert_eq!(e[0].key, "tg:{99}:api:p:10.0.0.1");
        assert_eq!((e[0].delta, e[0].allowance), (42, 2500));
        assert_eq!(e[1].key, "tg:{99}:api:r:2001:db8:1::/48");
        assert_eq!((e[1].delta, e[1].allowance), (3, 150));
    }

    #[test]
    fn a_sync_runs_just_before_each_window_ends() {
        let ms = Duration::from_millis;
        let lead = ms(15);
        // The window ends before the jittered sync: walk `lead` before it.
        assert_eq!(next_wake(ms(250), ms(100), lead), ms(85));
        // The window ends after the jittered sync: the jittered one.
        assert_eq!(next_wake(ms(250), ms(600), lead), ms(250));
        // Too close to the end for a walk before it (the sync just ran):
        // the jittered one, which charges the next window.
        assert_eq!(next_wake(ms(250), ms(10), lead), ms(250));
        assert_eq!(next_wake(ms(250), ms(15), lead), ms(250));
    }

    #[test]
    fn jitter_stays_within_a_quarter_of_the_interval() {
        let mut j = Jitter(42);
        let i = Duration::from_millis(100);
        for _ in 0..1000 {
            let d = j.next(i);
            assert!(
                d >= Duration::from_millis(75) && d < Duration::from_millis(125),
                "{d:?}"
            );
        }
    }
}
