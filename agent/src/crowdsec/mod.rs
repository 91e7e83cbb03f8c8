//! tollgate as a CrowdSec bouncer: pulls the local API's decisions stream
//! (startup, then deltas), keeps the view of ban decisions ([`view`]), and
//! hands each change to the daemon, which holds them as a rule layer
//! ([`layer`]) the config transaction includes, so no commit drops them.
//!
//! Fail open: while the local API is down the kernel keeps the last view
//! (each deny still ends at its time, and the view still lapses them); the
//! task logs once, retries with backoff, and pulls a startup answer (the
//! whole truth) once the API answers again. Nothing is persisted: a daemon
//! start forgets every ban and takes the startup answer as the truth, so a
//! decision deleted while the daemon was down is never re-applied.

pub mod client;
pub mod layer;
pub mod stream;
pub mod view;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use client::{Client, ClientError};
pub use layer::Layer;
pub use stream::{Decision, Ignored, StreamAnswer};
pub use view::{Ban, Change, View};

use crate::{config::CrowdsecConfig, datapath::kernel, proto::CrowdsecStatus};

/// First wait after a failed pull; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the bouncer needs of the daemon.
pub trait Host: Send + Sync + 'static {
    /// Applies a step of the view to the rule layer and the kernel (under
    /// the daemon's lock). `reset`: the change is the whole view (the layer
    /// forgets what it held first).
    fn apply_bans(&self, change: &Change, reset: bool) -> anyhow::Result<()>;
}

/// The bouncer's state for `status` and metrics; cheap to read from anywhere.
#[derive(Debug)]
pub struct Status {
    lapi_url: String,
    poll_interval: Duration,
    up: AtomicBool,
    pulls: AtomicU64,
    failures: AtomicU64,
    last_sync_unix_ms: AtomicU64,
    applied_total: AtomicU64,
    removed_total: AtomicU64,
    /// By [`Ignored`] reason: type, scope, value.
    ignored: [AtomicU64; 3],
    /// Of the last pull that changed something: pull and apply times (µs),
    /// prefixes changed.
    last_pull_us: AtomicU64,
    last_apply_us: AtomicU64,
    last_changed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Status {
    pub fn new(cfg: &CrowdsecConfig) -> Status {
        Status {
            lapi_url: cfg.lapi_url.clone(),
            poll_interval: cfg.poll_interval,
            up: AtomicBool::new(false),
            pulls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_sync_unix_ms: AtomicU64::new(0),
            applied_total: AtomicU64::new(0),
            removed_total: AtomicU64::new(0),
            ignored: Default::default(),
            last_pull_us: AtomicU64::new(0),
            last_apply_us: AtomicU64::new(0),
            last_changed: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The report; the daemon fills in `banned_prefixes` and `allow_listed`
    /// from its layer.
    pub fn report(&self) -> CrowdsecStatus {
        let last = self.last_sync_unix_ms.load(Ordering::Relaxed);
        CrowdsecStatus {
            up: self.is_up(),
            lapi_url: self.lapi_url.clone(),
            poll_interval_ms: self.poll_interval.as_millis() as u64,
            pulls: self.pulls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_sync_secs_ago: (last > 0).then(|| unix_ms().saturating_sub(last) as f64 / 1000.0),
            last_sync_unix: last as f64 / 1000.0,
            banned_prefixes: 0,
            allow_listed: 0,
            applied_total: self.applied_total.load(Ordering::Relaxed),
            last_pull_ms: self.last_pull_us.load(Ordering::Relaxed) as f64 / 1000.0,
            last_apply_ms: self.last_apply_us.load(Ordering::Relaxed) as f64 / 1000.0,
            last_changed: self.last_changed.load(Ordering::Relaxed),
            removed_total: self.removed_total.load(Ordering::Relaxed),
            ignored: [Ignored::Type, Ignored::Scope, Ignored::Value]
                .iter()
                .map(|r| {
                    (
                        r.label().to_owned(),
                        self.ignored[*r as usize].load(Ordering::Relaxed),
                    )
                })
                .collect(),
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

    fn count(&self, change: &Change) {
        self.applied_total
            .fetch_add(change.upsert.len() as u64, Ordering::Relaxed);
        self.removed_total
            .fetch_add(change.remove.len() as u64, Ordering::Relaxed);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The decisions of an answer as the view takes them, ignored ones counted.
pub fn decisions(
    answer: StreamAnswer,
    cfg: &CrowdsecConfig,
    now_ns: u64,
    ignored: &mut [u64; 3],
) -> (Vec<Decision>, Vec<view::Deletion>) {
    let mut new = Vec::new();
    for raw in answer.new.unwrap_or_default() {
        match raw.to_decision(&cfg.scopes, now_ns) {
            Ok(d) => new.push(d),
            Err(why) => ignored[why as usize] += 1,
        }
    }
    let deleted = answer
        .deleted
        .unwrap_or_default()
        .iter()
        .map(|d| (d.id, d.net()))
        .collect();
    (new, deleted)
}

/// The bouncer's task: pulls until `stop`.
pub async fn run(
    cfg: CrowdsecConfig,
    host: Arc<dyn Host>,
    status: Arc<Status>,
    stop: CancellationToken,
) {
    let mut view = View::default();
    // The first pull, and the first after a failure, asks for the whole truth.
    let mut startup = true;
    let mut backoff = BACKOFF_MIN;
    let mut down_logged = false;
    loop {
        let pull_start = Instant::now();
        let pulled = match Client::new(&cfg.lapi_url, &cfg.api_key_file) {
            Ok(c) => c.stream(startup).await,
            Err(e) => Err(e),
        };
        let pulled_in = pull_start.elapsed();
        let apply_start = Instant::now();
        let now = kernel::clock_ns();
        let wait = match pulled {
            Ok(answer) => {
                let mut ignored = [0u64; 3];
                let (new, deleted) = decisions(answer, &cfg, now, &mut ignored);
                for (slot, n) in status.ignored.iter().zip(ignored) {
                    slot.fetch_add(n, Ordering::Relaxed);
                }
                let (mut change, reset) = if startup {
                    (view.replace(new, now), true)
                } else {
                    (view.delta(new, &deleted, now), false)
                };
                let lapsed = view.expire(now);
                change.upsert.retain(|(n, _)| !lapsed.remove.contains(n));
                change.remove.extend(lapsed.remove);
                let whole = if reset {
                    Change {
                        upsert: view.bans(),
                        remove: Vec::new(),
                    }
                } else {
                    change.clone()
                };
                // Nothing new (the usual poll): the daemon is not disturbed.
                let applied = if !reset && whole.is_empty() {
                    Ok(())
                } else {
                    apply(&host, whole, reset).await
                };
                match applied {
                    Ok(()) => {
                        status.count(&change);
                        if !change.is_empty() {
                            let us = |d: Duration| d.as_micros() as u64;
                            status.last_pull_us.store(us(pulled_in), Ordering::Relaxed);
                            status
                                .last_apply_us
                                .store(us(apply_start.elapsed()), Ordering::Relaxed);
                            status.last_changed.store(
                                (change.upsert.len() + change.remove.len()) as u64,
                                Ordering::Relaxed,
                            );
                            info!(
                                applied = change.upsert.len(),
                                removed = change.remove.len(),
                                banned = view.len(),
                                startup,
                                pull_ms = pulled_in.as_millis() as u64,
                                apply_ms = apply_start.elapsed().as_millis() as u64,
                                "crowdsec: decisions applied"
                            );
                            for (net, ban) in change.upsert.iter().take(5) {
                                debug!(source = %net, origin = %ban.origin, scenario = %ban.scenario, "crowdsec: ban");
                            }
                        }
                        status.pulls.fetch_add(1, Ordering::Relaxed);
                        status.last_sync_unix_ms.store(unix_ms(), Ordering::Relaxed);
                        status.up.store(true, Ordering::Relaxed);
                        status.set_error(None);
                        if down_logged {
                            info!(lapi = %cfg.lapi_url, banned = view.len(), "crowdsec: the local API answers again");
                            down_logged = false;
                        }
                        startup = false;
                        backoff = BACKOFF_MIN;
                        cfg.poll_interval
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "crowdsec: writing decisions to the kernel failed; pulling them all again");
                        fail(&status, format!("kernel: {e:#}"));
                        view = View::default();
                        startup = true;
                        next_backoff(&mut backoff)
                    }
                }
            }
            Err(e) => {
                fail(&status, e.to_string());
                if !down_logged {
                    warn!(lapi = %cfg.lapi_url, error = %e, banned = view.len(),
                        "crowdsec: the local API does not answer; enforcing the last decisions (they still end at their time) and retrying");
                    down_logged = true;
                }
                // Bans still lapse while the API is down.
                let lapsed = view.expire(now);
                if !lapsed.is_empty() && apply(&host, lapsed.clone(), false).await.is_ok() {
                    status.count(&lapsed);
                }
                startup = true;
                next_backoff(&mut backoff)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Hands a change to the daemon off the async threads (it takes the
/// daemon's lock and writes the kernel: seconds for 100,000 bans).
async fn apply(host: &Arc<dyn Host>, change: Change, reset: bool) -> anyhow::Result<()> {
    let host = host.clone();
    tokio::task::spawn_blocking(move || host.apply_bans(&change, reset))
        .await
        .map_err(|e| anyhow::anyhow!("the apply task failed: {e}"))?
}

fn fail(status: &Status, error: String) {
    status.failures.fetch_add(1, Ordering::Relaxed);
    status.up.store(false, Ordering::Relaxed);
    status.set_error(Some(error));
}

/// The wait before the next try: the current backoff, then double it.
fn next_backoff(backoff: &mut Duration) -> Duration {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    wait
}
