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
use futures_util::StreamExt as _;
use tokio::{
    io::AsyncWriteExt as _,
    net::{UnixListener, UnixStream},
    sync::Semaphore,
    time::timeout,
};
use tokio_util::{
    codec::{FramedRead, LinesCodec, LinesCodecError},
    task::TaskTracker,
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
pub(super) fn bind(path: &Path, others_allowed: bool) -> Result<UnixListener> {
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

/// Accepts connections until the daemon stops; each is served on `tasks`,
/// which the stop waits for.
pub(super) async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    allow_uids: Vec<u32>,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let allow_uids = Arc::new(allow_uids);
    loop {
        let permit = tokio::select! {
            _ = shared.stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let allow_uids = allow_uids.clone();
                tasks.spawn(async move {
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
    stream_to(write, shared, shared.tail()).await
}

/// Streams one broadcast (sampled requests, drop-log lines) to a client
/// until it hangs up or the daemon stops.
async fn stream_to<T: serde::Serialize + Clone>(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    shared: &Shared,
    mut events: tokio::sync::broadcast::Receiver<T>,
) -> io::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            event = events.recv() => event,
        };
        let resp = match event {
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
    uid == 0 || uid == nix::unistd::geteuid().as_raw() || allow_uids.contains(&uid)
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
    // One request per line, at most MAX_REQUEST_LINE bytes with its newline.
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_REQUEST_LINE - 1));
    loop {
        let next = tokio::select! {
            // A stop ends idle connections; a request being handled is
            // answered first (this loop only gets here between requests).
            _ = shared.stop.cancelled() => return Ok(()),
            next = timeout(IDLE_TIMEOUT, lines.next()) => next,
        };
        let line = match next {
            Err(_) => return Ok(()),   // idle
            Ok(None) => return Ok(()), // closed
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => {
                // The codec gives up on the connection after an error: answer
                // it, then close.
                let problem = match e {
                    LinesCodecError::MaxLineLengthExceeded => {
                        format!("request too long: at most {MAX_REQUEST_LINE} bytes per line")
                    }
                    LinesCodecError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                        "invalid request: not UTF-8 text".to_owned()
                    }
                    LinesCodecError::Io(e) => return Err(e),
                };
                let resp = Response::failure(problem);
                let _ = timeout(WRITE_TIMEOUT, write.write_all(&resp.to_line())).await;
                return Ok(());
            }
        };
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let (resp, exit) = match serde_json::from_str::<Request>(text) {
            Err(e) => (Response::failure(format!("invalid request: {e}")), false),
            Ok(Request::HttpTail {}) => return tail(&mut write, &shared).await,
            Ok(Request::Events {}) => {
                return stream_to(&mut write, &shared, shared.drop_events()).await;
            }
            // Read before the stop, but not started: left undone.
            Ok(_) if shared.stop.is_cancelled() => return Ok(()),
            Ok(req) => {
                debug!(?req, uid, "control request");
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
                    shared.stop.cancel();
                }
                return Err(e);
            }
            Err(_) => {
                if exit {
                    shared.stop.cancel();
                }
                return Ok(());
            }
        }
        if exit {
            let _ = write.flush().await;
            shared.stop.cancel();
            return Ok(());
        }
    }
}
