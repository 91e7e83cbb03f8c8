//! What the daemon measures about itself and the kernel every second: counter
//! samples for rates, per-tier usage, sample-ring losses, the guard's repairs
//! and the config file's readability.

use std::time::{Duration, Instant};

use tollgate_common::{Counter, MAX_TIERS, VERDICT_COUNT};
use tracing::{debug, error, info, warn};

use super::Daemon;
use crate::datapath::{scan::Scan, tracked};
use crate::{
    config::TierNames,
    metrics::Usage,
    state::{self},
};

/// Two most recent counter samples, for rates.
#[derive(Default)]
pub(super) struct Samples {
    prev: Option<(Instant, Vec<[Counter; VERDICT_COUNT as usize]>)>,
    last: Option<(Instant, Vec<[Counter; VERDICT_COUNT as usize]>)>,
}

impl Samples {
    pub(super) fn push(&mut self, at: Instant, counters: Vec<[Counter; VERDICT_COUNT as usize]>) {
        self.prev = self.last.take();
        self.last = Some((at, counters));
    }

    /// Per-second (packets, bytes) of `tier`/`verdict` between the two samples.
    pub(super) fn rate(&self, tier: usize, verdict: usize) -> (f64, f64) {
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

    pub(super) fn interval(&self) -> f64 {
        match (&self.prev, &self.last) {
            (Some((t0, _)), Some((t1, _))) => t1.duration_since(*t0).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Ring-full losses (kernel totals) and their rate-limited log line.
#[derive(Default)]
pub(super) struct RingLosses {
    /// Kernel total at the last check.
    seen: u64,
    /// Lost since the last log line.
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// At most one "ring full" log line this often.
const RING_FULL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Daemon {
    /// Samples lost to a full ring since the program was loaded (all CPUs).
    pub(super) fn ring_full_total(&self) -> Option<u64> {
        let t = self.maps.sampler_totals().ok()?;
        Some(t.http_ring_full + t.verdict_ring_full)
    }

    /// Losses from before this daemon (e.g. while none ran to drain the
    /// ring) are reported once, not blamed on it.
    pub(super) fn baseline_ring_losses(&mut self) {
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
    pub(super) fn check_ring_losses(&mut self) {
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
    pub(super) fn guard_tick(&mut self) {
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

    /// One step of ageing the tracked-source filter (every
    /// [`tracked::AGING_PERIOD`], in steps with the daemon's lock released
    /// between them: `tasks::serve`). Returns whether there are steps left.
    /// A failure ends the ageing: it only leaves the filter fuller (more
    /// lookups, no wrong verdict); logged, retried at the next period.
    pub(super) fn age_tracked_filter(&mut self, ageing: &mut tracked::Ageing) -> bool {
        match ageing.step(&mut self.maps.tracked) {
            Ok(None) => true,
            Ok(Some(aged)) => {
                debug!(
                    generation = aged.generation,
                    cleared_bits = aged.cleared_bits,
                    bits = aged.bits,
                    "aged the tracked-source filter"
                );
                self.filter_aged = Some(aged);
                false
            }
            Err(e) => {
                warn!(error = %e,
                    "could not age the tracked-source filter (TG_TRACKED); retrying at the next period");
                false
            }
        }
    }

    /// A missing or unreadable config file does not stop enforcement (the
    /// running configuration stays), but the next reload or restart would
    /// fail: say so when it happens, not only then.
    pub(super) fn check_config_file(&mut self) {
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

    /// Recomputes per-tier rates over the last sampling period.
    pub(super) fn update_usage(&mut self, requests: &[u64], names: &TierNames) {
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
        // Source counts come from the last scan until the next one lands.
        for (u, old) in usage.iter_mut().zip(&self.usage) {
            u.active_sources = old.active_sources;
            u.limited_sources = old.limited_sources;
        }
        self.usage = usage;
    }

    /// Reads the counters of every route that has an index (one lookup
    /// each, at most `MAX_ROUTES`), for `/metrics`.
    pub(super) fn sample_routes(&mut self) {
        let mut counters = std::collections::BTreeMap::new();
        for &index in self.state.route_indices.values() {
            match self.maps.route_counter(index) {
                Ok(c) => {
                    counters.insert(index, c);
                }
                Err(e) => {
                    warn!(error = %e, "reading route counters");
                    return;
                }
            }
        }
        self.route_counters = counters;
    }

    /// Takes the source counts of a scan that ran without the lock.
    pub(super) fn apply_scan(&mut self, scan: Scan) {
        for (i, u) in self.usage.iter_mut().enumerate() {
            u.active_sources = scan.active[i];
            u.limited_sources = scan.limited[i];
        }
        self.tracked = scan.tracked;
    }
}
