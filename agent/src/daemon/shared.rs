//! What the daemon's tasks share, and the entry points they call: control
//! requests, sample ingestion, the per-second tick, the metrics snapshot.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use anyhow::Result;
use ipnet::IpNet;
use tollgate_common::{RuleValue, Verdict};
use tracing::{error, info, warn};

use super::{Daemon, TALKERS_CAPACITY, error::CommandError, top_row};
use tokio_util::sync::CancellationToken;

use crate::datapath::{
    scan::{self, ScanInput},
    walk::SourceWalk,
};
use crate::{
    adaptive,
    apikeys::PinChange,
    cluster,
    config::Subscription,
    datapath::samples::Sample,
    droplog::{DropEvent, DropLog, TierInfo},
    metrics::Snapshot,
    monitor::Monitor,
    proto::{Done, RecentTraffic, Request, Response, TopData},
    talkers::{Talkers, TopBy},
};

/// A scan of the source maps runs at most once every SCAN_DUTY times its own
/// duration (and at most once a second, on the sampling tick).
const SCAN_DUTY: u32 = 10;

/// What the tasks of the daemon share.
pub(crate) struct Shared {
    pub(super) daemon: Mutex<Daemon>,
    pub(super) talkers: Mutex<Talkers>,
    /// Follows the configuration in force on its own subscription.
    pub(super) monitor: Mutex<Monitor>,
    /// The configuration in force, as of the last committed change (the
    /// daemon publishes it with every commit, so tiers are named right from
    /// the first tick after a reload or `tier set`).
    pub(super) config: Subscription,
    /// Cancelled when the daemon stops (a signal, or `tollgate detach`): no
    /// new control request starts, and every task winds down.
    pub(super) stop: CancellationToken,
    /// Handles on the source maps for the per-second scan (`None` if they
    /// could not be opened: no active/limited source counts then).
    pub(super) walk: Option<SourceWalk>,
    /// When the next scan of the source maps may start.
    pub(super) next_scan: Mutex<Instant>,
    /// The cluster sync's state, when `[cluster]` is configured.
    pub(super) cluster: Option<Arc<cluster::Status>>,
    /// The automated response's engine (`[[response]]`).
    pub(super) response: Mutex<super::response::ResponseState>,
    /// The CrowdSec bouncer's state, when `[crowdsec]` is configured.
    pub(super) crowdsec: Option<Arc<crate::crowdsec::Status>>,
    /// Where the API inventory is kept (next to the state file).
    pub(super) inventory_file: PathBuf,
    /// Which sources are limited, for the drop log.
    pub(super) drops: Mutex<DropLog>,
    /// The drop log's lines, for `tollgate events`.
    pub(super) events: tokio::sync::broadcast::Sender<DropEvent>,
    /// Drop-log lines as JSON (else text through the log).
    pub(super) drop_log_json: bool,
}

/// Tier names and IPv6 prefixes by index, for the drop log.
struct Tiers(BTreeMap<u32, (String, u32)>);

impl TierInfo for Tiers {
    fn name(&self, tier: u32) -> String {
        self.0
            .get(&tier)
            .map_or_else(|| format!("#{tier}"), |(n, _)| n.clone())
    }
    fn ipv6_prefix(&self, tier: u32) -> u32 {
        self.0.get(&tier).map_or(64, |(_, p)| *p)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock must not take the daemon down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Whether the cluster sync reaches Redis: `None` without `[cluster]`,
    /// `Some(false)` while global limits are paused (local limits enforce).
    pub(crate) fn cluster_up(&self) -> Option<bool> {
        self.cluster.as_ref().map(|c| c.is_up())
    }

    /// Handles one control request. Returns the response and whether the
    /// daemon should exit after sending it.
    pub(crate) fn handle(&self, req: Request) -> (Response, bool) {
        let mut d = lock(&self.daemon);
        let result = match req {
            Request::Status {} => {
                let mut s = d.status();
                s.cluster = self.cluster.as_ref().map(|c| c.report());
                s.crowdsec = self.crowdsec.as_ref().map(|c| d.bouncer_report(c));
                Ok(Response::success(s))
            }
            Request::TierList {} => Ok(Response::success(d.tier_rows())),
            Request::TierSet(patch) => d.tier_set(*patch).map(done),
            Request::TierRm { name } => d.tier_rm(&name).map(done),
            Request::RuleList {} => Ok(Response::success(d.rule_rows())),
            Request::RuleAdd(rule) => d.rule_add(&rule).map(done),
            Request::RuleRm { cidr } => d.rule_rm(&cidr).map(done),
            Request::RouteList {} => d.route_rows().map(Response::success),
            Request::RouteAdd(route) => d.route_add(&route).map(done),
            Request::RouteRm { name } => d.route_rm(&name).map(done),
            Request::Stats { tier } => d.stats(tier.as_deref()).map(Response::success),
            Request::Top { by, n, source } => {
                drop(d);
                match source.as_deref().map(parse_source).transpose() {
                    Ok(net) => Ok(Response::success(self.top(by, n, net))),
                    Err(e) => Err(e),
                }
            }
            Request::Explain { address } => {
                let explained = d.explain(address);
                drop(d);
                explained.map(|mut e| {
                    e.recent = self.recent(&e);
                    Response::success(e)
                })
            }
            Request::TierReset { name } => d.tier_reset(&name).map(done),
            Request::RuleReset { cidr } => d.rule_reset(&cidr).map(done),
            Request::Events {} => Err(CommandError::Streams),
            Request::Reload {} => d.reload().map(done),
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
            Request::HttpTail {} => Err(CommandError::Streams),
            Request::HttpInventory { since_secs } => {
                drop(d);
                let since = since_secs.map(|s| unix_now().saturating_sub(s));
                Ok(Response::success(lock(&self.monitor).inventory(since)))
            }
            Request::BanList {} => Ok(Response::success(d.ban_rows())),
            Request::BanAdd {
                cidr,
                duration,
                reason,
            } => d.ban_add(&cidr, &duration, reason).map(done),
            Request::BanRm { cidr } => d.ban_rm(&cidr).map(done),
            Request::Detach {} => {
                return match d.detach() {
                    Ok(msg) => (done(msg), true),
                    Err(e) => (Response::failure(e.to_string()), false),
                };
            }
        };
        (
            result.unwrap_or_else(|e| Response::failure(e.to_string())),
            false,
        )
    }

    /// `top`: the heaviest tracked buckets (IPv6 sources summed per the
    /// prefix their tier enforces), within `net` if given.
    pub(super) fn top(&self, by: TopBy, n: usize, net: Option<IpNet>) -> TopData {
        let in_force = self.config.borrow().clone();
        let names = in_force.names.by_index();
        let prefix = |tier: u32| {
            names
                .get(&tier)
                .and_then(|n| in_force.config.tier(n))
                .map_or(64, |t| t.ipv6_prefix)
        };
        let t = lock(&self.talkers);
        let mut buckets = t.buckets(by, net, prefix);
        buckets.truncate(n.clamp(1, TALKERS_CAPACITY));
        let rows = buckets
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
            source: net.map(|n| n.to_string()),
            tracked: t.len(),
        }
    }

    /// `explain`'s recent traffic: the talkers' view of the explained key.
    fn recent(&self, e: &crate::proto::ExplainData) -> Option<RecentTraffic> {
        let key: IpNet = match e.address {
            IpAddr::V4(_) => IpNet::from(e.address),
            IpAddr::V6(_) => e.key.parse().ok()?,
        };
        let prefix = |_| e.ipv6_prefix;
        let t = lock(&self.talkers);
        let rank = |by| {
            t.buckets(by, None, prefix)
                .iter()
                .position(|r| r.bucket == key)
                .map(|i| i + 1)
        };
        let (rank_packets, rank_drops) = (rank(TopBy::Packets), rank(TopBy::Drops));
        let row = t
            .buckets(TopBy::Packets, Some(key), prefix)
            .into_iter()
            .next()?;
        Some(RecentTraffic {
            addresses: row.addresses,
            packets: row.packets,
            drops: row.drops,
            requests: row.requests,
            verdicts: Verdict::ALL
                .iter()
                .filter(|v| row.verdicts[**v as usize] > 0)
                .map(|v| (v.name().to_owned(), row.verdicts[*v as usize]))
                .collect(),
            rank_packets,
            rank_drops,
        })
    }

    /// Re-reads the config (SIGHUP); logs the outcome.
    pub(super) fn reload_from_signal(&self) {
        match lock(&self.daemon).reload() {
            Ok(msg) => info!("SIGHUP: {msg}"),
            Err(e) => error!("SIGHUP: {e}"),
        }
    }

    /// Subscribes to sampled requests for `http tail`.
    pub(crate) fn tail(&self) -> tokio::sync::broadcast::Receiver<crate::monitor::TailEvent> {
        lock(&self.monitor).subscribe()
    }

    /// Digests a batch of ring-buffer records; applies API-key pins.
    pub(super) fn ingest(&self, records: &[Vec<u8>]) {
        let now = Instant::now();
        let mut pins = Vec::new();
        let mut refusals = Vec::new();
        {
            let mut monitor = lock(&self.monitor);
            // The batch is judged by the configuration in force now.
            let in_force = monitor.follow();
            let respond = !in_force.config.responses.is_empty();
            let http_sampled = in_force.config.http.sample_every != 0;
            let tiers = &in_force.names;
            let mut talkers = lock(&self.talkers);
            for r in records {
                let sample = Sample::decode(r);
                if respond
                    && let Ok(s) = &sample
                    && let Some(f) = super::response::refusal(s, http_sampled)
                {
                    refusals.push(f);
                }
                match sample {
                    Err(_) => monitor.undecodable += 1,
                    Ok(s) if s.is_http() => {
                        talkers.observe_request(s.source(), s.header.tier, s.header.scale as u64);
                        if let Some(change) = monitor.ingest_http(&s, tiers, now) {
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
            self.observe_refusals(&refusals, &in_force);
        }
        if pins.is_empty() {
            return;
        }
        let mut d = lock(&self.daemon);
        // A batch of many pins (a restart's clients coming back) is one line.
        let quiet = pins.len() > 1;
        let mut by_tier: BTreeMap<String, u64> = BTreeMap::new();
        for (change, evicted) in pins {
            if let Some(net) = evicted {
                d.unpin(net);
            }
            if let PinChange::Install { net, tier } = change
                && d.pin(net, &tier, quiet)
            {
                *by_tier.entry(tier).or_default() += 1;
            }
        }
        if quiet && !by_tier.is_empty() {
            let total: u64 = by_tier.values().sum();
            let tiers = by_tier
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            info!(pinned = total, %tiers, "API key: {total} sources pinned to their keys' tiers ({tiers})");
        }
    }

    pub(super) fn sample(&self) {
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
        d.sample_routes();
        let in_force = self.config.borrow().clone();
        d.update_usage(&requests, &in_force.names);
        drop(d);
        self.respond();
        // A walk costs about 250 ns per tracked source (a quarter of a core
        // at 1,000,000): with many sources, scan less often, so scanning
        // takes at most 1/SCAN_DUTY of one core.
        if *lock(&self.next_scan) <= Instant::now() {
            self.scan_sources();
        }
    }

    /// One second of the adaptive tiers: follows the tiers in force, reads
    /// each signal (probes in parallel, each within its timeout, without
    /// the daemon's lock), steps each controller and writes the tiers whose
    /// applied factor changed (the difference only: bucket state untouched).
    pub(super) fn adapt(&self) {
        let reads = {
            let tiers = self.config.borrow().config.tiers.clone();
            let mut d = lock(&self.daemon);
            d.adaptive.follow(&tiers);
            d.adaptive.signals()
        };
        if reads.is_empty() && lock(&self.daemon).factors.is_empty() {
            return;
        }
        let readings = std::thread::scope(|scope| {
            let handles: Vec<_> = reads
                .iter()
                .map(|r| {
                    (
                        r.tier.clone(),
                        scope.spawn(|| adaptive::signal::read(&r.source, r.timeout)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|(tier, h)| h.join().ok().map(|v| (tier, v)))
                .collect()
        });
        let mut d = lock(&self.daemon);
        d.adaptive.step(readings);
        let applied = d.adaptive.applied();
        d.set_factors(applied);
    }

    /// Counts the tracked sources per tier (active, limited) for `stats`,
    /// `status` and `/metrics`. Also run once before the daemon serves, so
    /// its first answers already count the sources an adopted program holds.
    pub(super) fn scan_sources(&self) {
        let input = {
            let in_force = self.config.borrow().clone();
            let d = lock(&self.daemon);
            ScanInput::read(&d.maps, |t| in_force.names.is_used(t))
        };
        // The walk of up to millions of sources runs without the daemon's
        // lock: control requests and scrapes are not held up by it.
        let (Some(walk), Ok(input)) = (&self.walk, input) else {
            return;
        };
        let started = Instant::now();
        match scan::scan(&input, walk) {
            Ok(scan) => {
                let lines = {
                    let in_force = self.config.borrow().clone();
                    let tiers = Tiers(
                        in_force
                            .names
                            .by_index()
                            .into_iter()
                            .map(|(i, n)| {
                                let p = in_force.config.tier(&n).map_or(64, |t| t.ipv6_prefix);
                                (i, (n, p))
                            })
                            .collect(),
                    );
                    let unix = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    lock(&self.drops).update(
                        &scan.limited_sources,
                        scan.limited_over,
                        &scan.limited,
                        &tiers,
                        Instant::now(),
                        unix,
                    )
                };
                lock(&self.daemon).apply_scan(scan);
                for line in lines {
                    self.drop_line(line);
                }
            }
            Err(e) => warn!(error = %e, "scanning the source maps"),
        }
        *lock(&self.next_scan) = started + started.elapsed() * SCAN_DUTY;
    }

    /// Writes one drop-log line (JSON or text) and sends it to `events`.
    fn drop_line(&self, e: DropEvent) {
        if self.drop_log_json {
            if let Ok(mut line) = serde_json::to_vec(&e) {
                line.push(b'\n');
                // One write: lines of other threads do not interleave.
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &line);
            }
        } else if e.event == "suppressed" {
            warn!(target: "tollgate::drops", started = e.started, stopped = e.stopped, "{}", e.text());
        } else {
            info!(target: "tollgate::drops", event = %e.event, source = %e.source, tier = %e.tier,
                reason = %e.reason, tier_limited = e.tier_limited, "{}", e.text());
        }
        let _ = self.events.send(e);
    }

    /// Subscribes to the drop log for `tollgate events`.
    pub(super) fn drop_events(&self) -> tokio::sync::broadcast::Receiver<DropEvent> {
        self.events.subscribe()
    }

    /// Writes the API inventory to its file if it changed since the last
    /// write (`force`: in any case, as at a stop). The monitor's lock is held
    /// only to serialize it.
    pub(super) fn save_inventory(&self, force: bool) {
        let Some(bytes) = lock(&self.monitor).inventory_json(force) else {
            return;
        };
        if let Err(e) = crate::state::write_atomic(&self.inventory_file, &bytes) {
            warn!(file = %self.inventory_file.display(), error = %e, "cannot save the API inventory");
        }
    }

    /// What `/metrics` shows now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = {
            let d = lock(&self.daemon);
            let mut s = d.snapshot();
            s.crowdsec = self.crowdsec.as_ref().map(|c| d.bouncer_metrics(c));
            s
        };
        {
            let m = lock(&self.monitor);
            s.http = m.stats().counts().map(|(k, v)| (k.clone(), v)).collect();
            s.http_malformed = m.malformed;
            s.http_shadow = m.shadow_requests();
            s.http_drift = m.drift_requests();
            s.samples_undecodable = m.undecodable;
        }
        s.cluster_up = self.cluster_up();
        let k = self.config.borrow().config.http.top_sources_metric;
        if k > 0 {
            s.top = lock(&self.talkers).top(TopBy::Packets, k);
        }
        s
    }
}

impl cluster::Host for Shared {
    fn update_rules(&self, upsert: &[(IpNet, RuleValue)], remove: &[IpNet]) -> Result<()> {
        let mut d = lock(&self.daemon);
        // A prefix a daemon-owned rule layer holds (a ban, a CrowdSec
        // decision) keeps that rule: the cluster's deny (shorter) and its
        // lift (which would remove the rule) leave it alone.
        if d.banned.is_empty() && d.crowdsec.is_empty() {
            return d
                .maps
                .update_rules(upsert, remove)
                .map_err(anyhow::Error::from);
        }
        let held = |n: &IpNet| d.banned.contains_key(n) || d.crowdsec.holds(n);
        let upsert: Vec<(IpNet, RuleValue)> =
            upsert.iter().filter(|(n, _)| !held(n)).copied().collect();
        let remove: Vec<IpNet> = remove.iter().filter(|n| !held(n)).copied().collect();
        d.maps
            .update_rules(&upsert, &remove)
            .map_err(anyhow::Error::from)
    }
}

impl crate::crowdsec::Host for Shared {
    fn apply_bans(&self, change: &crate::crowdsec::Change, reset: bool) -> Result<()> {
        lock(&self.daemon).apply_bans(change, reset)
    }
}

/// `top --source CIDR`.
fn parse_source(cidr: &str) -> Result<IpNet, CommandError> {
    crate::spec::parse_cidr(cidr).map_err(|error| CommandError::SourceFilter {
        cidr: cidr.to_owned(),
        error,
    })
}

pub(super) fn done(message: String) -> Response {
    Response::success(Done { message })
}
