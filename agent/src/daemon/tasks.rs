//! The daemon's long-running tasks: the signal loop with its timers, and the
//! readers of the kernel's sample and log rings.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{
    ADAPT_INTERVAL, INVENTORY_SAVE_INTERVAL, SAMPLE_INTERVAL, STOP_GRACE, Shared, TALKERS_DECAY,
    lock, server,
};
use crate::datapath::{guard, tracked};
use crate::{
    cluster,
    config::{self},
};

pub(super) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::UnixListener,
    allowed: Vec<u32>,
    cluster: Option<config::ClusterConfig>,
    crowdsec: Option<config::CrowdsecConfig>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    // Every task but the cluster sync runs on `tasks`: a stop cancels
    // `shared.stop` and waits for them all, connections included.
    let tasks = TaskTracker::new();
    let stop = shared.stop.clone();
    tasks.spawn(server::serve(
        listener,
        shared.clone(),
        allowed,
        tasks.clone(),
    ));
    // A timer that runs `each` (off the async threads) until the stop.
    let every = |period: Duration, skip_first: bool, each: fn(&Shared)| {
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            if skip_first {
                tick.tick().await;
            }
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || each(&s)).await;
            }
        })
    };
    every(SAMPLE_INTERVAL, false, |s| s.sample());
    every(ADAPT_INTERVAL, false, |s| s.adapt());
    every(guard::CHECK_INTERVAL, false, |s| {
        lock(&s.daemon).guard_tick()
    });
    every(TALKERS_DECAY, true, |s| lock(&s.talkers).decay());
    every(INVENTORY_SAVE_INTERVAL, true, |s| s.save_inventory(false));
    // In chunks, the daemon's lock released between them.
    every(tracked::AGING_PERIOD, true, |s| {
        let mut ageing = tracked::Ageing::default();
        while lock(&s.daemon).age_tracked_filter(&mut ageing) {}
    });

    // Fleet-wide limits: a task of its own, never on the packet path.
    let cluster_stop = Arc::new(tokio::sync::Notify::new());
    let cluster_task = match (cluster, &shared.cluster) {
        (Some(cfg), Some(status)) => {
            info!(redis = %cfg.redis, node_id = %cfg.node_id, interval = ?cfg.sync_interval,
                "cluster: syncing global limits through Redis");
            let (pin_dir, config) = {
                let d = lock(&shared.daemon);
                (d.file.pin_dir.clone(), d.subscribe())
            };
            let host: Arc<dyn cluster::Host> = shared.clone();
            Some(tokio::spawn(cluster::run(
                cfg,
                pin_dir,
                config,
                host,
                status.clone(),
                cluster_stop.clone(),
            )))
        }
        _ => None,
    };

    // The CrowdSec bouncer: its bans are a rule layer of the daemon's.
    if let (Some(cfg), Some(status)) = (crowdsec, &shared.crowdsec) {
        info!(lapi = %cfg.lapi_url, every = ?cfg.poll_interval,
            "crowdsec: applying ban decisions from the local API");
        let host: Arc<dyn crate::crowdsec::Host> = shared.clone();
        tasks.spawn(crate::crowdsec::run(
            cfg,
            host,
            status.clone(),
            stop.clone(),
        ));
    }

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
            _ = stop.cancelled() => {
                info!("detached: exiting");
                break;
            }
        }
    }
    // No new connection or request starts; requests already being handled
    // finish and are answered (a CLI change is never applied without its
    // answer), and every task ends.
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(STOP_GRACE, tasks.wait())
        .await
        .is_err()
    {
        warn!("stopping with control requests still running after {STOP_GRACE:?}");
    }
    {
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || s.save_inventory(true)).await;
    }
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
pub(super) async fn drain_samples(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    shared: Arc<Shared>,
) {
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

pub(super) async fn drain_program_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
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
