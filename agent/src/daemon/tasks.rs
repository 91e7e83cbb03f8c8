//! The daemon's long-running tasks: the signal loop with its timers, and the
//! readers of the kernel's sample and log rings.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use tracing::{info, warn};

use super::{SAMPLE_INTERVAL, STOP_GRACE, Shared, TALKERS_DECAY, lock, server};
use crate::datapath::guard;
use crate::{
    cluster,
    config::{self},
};

pub(super) async fn serve(
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
