//! The control socket: newline-delimited JSON over a Unix stream socket, with
//! peer credentials checked on every connection.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
    time::timeout,
};
use tracing::{debug, warn};

use super::Shared;
use crate::proto::{IDLE_TIMEOUT, MAX_REQUEST_LINE, Request, Response};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the control socket: creates its directory if needed, replaces a
/// stale socket, refuses if a daemon answers there. The socket is 0600 in a
/// 0700 directory; when `allow_uids` lets other users in, 0666 in a 0711
/// directory (peer credentials are checked on every connection either way).
pub fn bind(path: &Path, others_allowed: bool) -> Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(if others_allowed { 0o711 } else { 0o700 })
            .create(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket: remove it or choose another socket path",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another tollgate daemon is already running (it answers on {}): stop it first, or use another --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    let mode = if others_allowed { 0o666 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Accepts connections until the task is aborted.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, allow_uids: Vec<u32>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let allow_uids = Arc::new(allow_uids);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let allow_uids = allow_uids.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, shared, &allow_uids).await {
                        debug!(error = %e, "control connection ended");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(error = %e, "accepting a control connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Streams sampled requests to one `http tail` client until it hangs up.
async fn tail(write: &mut tokio::net::unix::OwnedWriteHalf, shared: &Shared) -> io::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = shared.tail();
    loop {
        let resp = match events.recv().await {
            Ok(event) => Response::success(event),
            // A slow reader misses events rather than slowing the daemon.
            Err(RecvError::Lagged(n)) => Response::success(serde_json::json!({ "missed": n })),
            Err(RecvError::Closed) => return Ok(()),
        };
        match timeout(WRITE_TIMEOUT, write.write_all(&resp.to_line())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
    }
}

fn allowed(uid: u32, allow_uids: &[u32]) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() } || allow_uids.contains(&uid)
}

async fn connection(stream: UnixStream, shared: Arc<Shared>, allow_uids: &[u32]) -> io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    if !allowed(uid, allow_uids) {
        warn!(uid, "refused a control connection");
        let resp = Response::failure(format!(
            "permission denied: uid {uid} may not control tollgate (root only, unless listed in allow_uids in the config)"
        ));
        let _ = timeout(WRITE_TIMEOUT, write.write_all(&resp.to_line())).await;
        return Ok(());
    }
    let mut reader = BufReader::new(read);
    loop {
        let mut inflight = None;
        let mut line = Vec::new();
        let limit = MAX_REQUEST_LINE as u64 + 1;
        match timeout(
            IDLE_TIMEOUT,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await
        {
            Err(_) => return Ok(()), // idle
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Ok(()), // closed
            Ok(Ok(_)) => {}
        }
        if line.len() > MAX_REQUEST_LINE
            || (line.last() != Some(&b'\n') && line.len() == MAX_REQUEST_LINE)
        {
            let resp = Response::failure(format!(
                "request too long: at most {MAX_REQUEST_LINE} bytes per line"
            ));
            let _ = timeout(WRITE_TIMEOUT, write.write_all(&resp.to_line())).await;
            return Ok(());
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let (resp, exit) = match serde_json::from_slice::<Request>(text) {
            Err(e) => (Response::failure(format!("invalid request: {e}")), false),
            Ok(Request::HttpTail {}) => return tail(&mut write, &shared).await,
            Ok(req) => {
                debug!(?req, uid, "control request");
                // Held until the answer is written: a graceful stop waits
                // for it, so a change is never applied without its answer.
                inflight = Some(shared.requests.read().await);
                let shared = shared.clone();
                match tokio::task::spawn_blocking(move || shared.handle(req)).await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(error = %e, "a control request failed internally");
                        (
                            Response::failure(
                                "internal error handling the request (see the daemon's log)",
                            ),
                            false,
                        )
                    }
                }
            }
        };
        match timeout(WRITE_TIMEOUT, write.write_all(&resp.to_line())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if exit {
                    shared.shutdown.notify_one();
                }
                return Err(e);
            }
            Err(_) => {
                if exit {
                    shared.shutdown.notify_one();
                }
                return Ok(());
            }
        }
        drop(inflight);
        if exit {
            let _ = write.flush().await;
            shared.shutdown.notify_one();
            return Ok(());
        }
    }
}
