//! The control socket's client, used by the CLI (and the tests): connects,
//! sends one request line, reads the answer line (or a stream of them for
//! `http tail`), and names what went wrong in an operator's terms.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;

use crate::proto::{CLIENT_TIMEOUT, MAX_RESPONSE_LINE, Request, Response};

/// Why a request failed, as the CLI shows it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tollgate daemon is not running (no socket at {}): start it with `tollgate run`", .0.display())]
    NoSocket(PathBuf),
    #[error(
        "tollgate daemon is not running (stale socket at {}, nothing listening): start it with `tollgate run`", .0.display()
    )]
    Refused(PathBuf),
    #[error("permission denied connecting to {}: run as root, or add your uid to allow_uids in the config", .0.display())]
    Permission(PathBuf),
    #[error("cannot talk to the daemon at {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("the daemon at {} sent an invalid response: {detail}", path.display())]
    Protocol { path: PathBuf, detail: String },
    /// The daemon refused the request; the message is its explanation.
    #[error("{0}")]
    Daemon(String),
}

impl ClientError {
    /// Whether there is no daemon to talk to.
    pub fn not_running(&self) -> bool {
        matches!(self, ClientError::NoSocket(_) | ClientError::Refused(_))
    }
}

/// Connects to the daemon's socket, naming why not in operator terms.
fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ClientError::NoSocket(socket.to_owned()),
        io::ErrorKind::ConnectionRefused => ClientError::Refused(socket.to_owned()),
        io::ErrorKind::PermissionDenied => ClientError::Permission(socket.to_owned()),
        _ => ClientError::Io {
            path: socket.to_owned(),
            error: e,
        },
    })
}

/// Sends one request to the daemon at `socket`; returns the response's `data`.
pub fn request(socket: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let io_err = |error: io::Error| ClientError::Io {
        path: socket.to_owned(),
        error,
    };
    let stream = connect(socket)?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    // A daemon that refuses the connection answers and closes without
    // reading: read its answer even if sending the request failed.
    let sent = (&stream).write_all(&line);
    let mut reader = BufReader::new((&stream).take(MAX_RESPONSE_LINE as u64));
    let mut buf = Vec::new();
    let read = reader.read_until(b'\n', &mut buf);
    if buf.is_empty() {
        sent.map_err(io_err)?;
        read.map_err(io_err)?;
        return Err(ClientError::Protocol {
            path: socket.to_owned(),
            detail: "connection closed without an answer (is the daemon shutting down?)".into(),
        });
    }
    let resp: Response = serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol {
        path: socket.to_owned(),
        detail: e.to_string(),
    })?;
    if resp.ok {
        Ok(resp.data.unwrap_or(serde_json::Value::Null))
    } else {
        Err(ClientError::Daemon(resp.error.unwrap_or_else(|| {
            "the daemon reported an unspecified error".into()
        })))
    }
}

/// Sends a streaming request (`http_tail`): calls `each` with the `data` of
/// every line the daemon sends until it hangs up or `each` returns false.
pub fn stream(
    socket: &Path,
    req: &Request,
    mut each: impl FnMut(serde_json::Value) -> bool,
) -> Result<(), ClientError> {
    let stream = connect(socket)?;
    let io_err = |error: io::Error| ClientError::Io {
        path: socket.to_owned(),
        error,
    };
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_err)?;
    let mut reader = BufReader::new(&stream);
    loop {
        let mut buf = Vec::new();
        let n = (&mut reader)
            .take(MAX_RESPONSE_LINE as u64)
            .read_until(b'\n', &mut buf)
            .map_err(io_err)?;
        if n == 0 {
            // The daemon never ends a stream by itself: it stopped or crashed.
            return Err(ClientError::Protocol {
                path: socket.to_owned(),
                detail: "the daemon closed the stream (it stopped or restarted)".into(),
            });
        }
        let resp: Response = serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol {
            path: socket.to_owned(),
            detail: e.to_string(),
        })?;
        if !resp.ok {
            return Err(ClientError::Daemon(resp.error.unwrap_or_default()));
        }
        if !each(resp.data.unwrap_or(serde_json::Value::Null)) {
            return Ok(());
        }
    }
}

/// Like [`request`], decoding `data` as `T`.
pub fn request_as<T: DeserializeOwned>(socket: &Path, req: &Request) -> Result<T, ClientError> {
    let data = request(socket, req)?;
    serde_json::from_value(data).map_err(|e| ClientError::Protocol {
        path: socket.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_says_the_daemon_is_not_running() {
        let err =
            request(Path::new("/nonexistent/tollgate.sock"), &Request::Status {}).unwrap_err();
        assert!(err.not_running());
        assert_eq!(
            err.to_string(),
            "tollgate daemon is not running (no socket at /nonexistent/tollgate.sock): start it with `tollgate run`"
        );
    }
}
