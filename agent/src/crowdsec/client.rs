//! The local API client: `GET /v1/decisions/stream` with the bouncer's
//! `X-Api-Key`, one HTTP/1.1 connection per pull (hyper).

use std::{path::Path, time::Duration};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;

use super::stream::StreamAnswer;

/// Longest a pull may take, connection to the last byte (a startup answer of
/// 100,000 decisions is ~20 MB).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the API key file {path}: {error}")]
    KeyFile { path: String, error: std::io::Error },
    #[error(
        "the API key file {path} is empty (write the key `cscli bouncers add tollgate` printed)"
    )]
    KeyEmpty { path: String },
    #[error("the API key file holds characters an HTTP header cannot carry")]
    KeyChars,
    #[error("not a local API URL: {0}")]
    Url(String),
    #[error("cannot connect to {authority}: {error}")]
    Connect {
        authority: String,
        error: std::io::Error,
    },
    #[error("no answer from the local API within {}s", PULL_TIMEOUT.as_secs())]
    Timeout,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error(
        "the local API refused the bouncer's key (HTTP 403): register tollgate with `cscli bouncers add tollgate` and put the key in api_key_file"
    )]
    Forbidden,
    #[error("the local API answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("reading the answer: {0}")]
    Body(String),
    #[error("the answer is not a decisions stream: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where and how to ask. Its `Debug` leaves the key out.
#[derive(Clone)]
pub struct Client {
    /// `host:port` to connect to.
    authority: String,
    /// The base path, ending in `/`.
    base_path: String,
    key: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .field("key", &"(hidden)")
            .finish()
    }
}

impl Client {
    /// A client for `lapi_url` (validated by `[crowdsec]`: http, a host, a
    /// trailing `/`) with the key read from `key_file`.
    pub fn new(lapi_url: &str, key_file: &Path) -> Result<Client, ClientError> {
        let key = read_key(key_file)?;
        let uri: hyper::Uri = lapi_url
            .parse()
            .map_err(|_| ClientError::Url(lapi_url.to_owned()))?;
        let host = uri.host().unwrap_or("127.0.0.1");
        let port = uri.port_u16().unwrap_or(80);
        // An IPv6 literal keeps its brackets in the authority.
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Client {
            authority,
            base_path: uri.path().to_owned(),
            key,
        })
    }

    /// One pull of the stream: every active decision (`startup`) or what
    /// changed since this bouncer's last pull.
    pub async fn stream(&self, startup: bool) -> Result<StreamAnswer, ClientError> {
        tokio::time::timeout(PULL_TIMEOUT, self.stream_inner(startup))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn stream_inner(&self, startup: bool) -> Result<StreamAnswer, ClientError> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|error| ClientError::Connect {
                authority: self.authority.clone(),
                error,
            })?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let conn = tokio::spawn(conn);
        let path = format!(
            "{}v1/decisions/stream?startup={}",
            self.base_path,
            if startup { "true" } else { "false" }
        );
        let request = Request::get(path)
            .header(header::HOST, &self.authority)
            .header("X-Api-Key", &self.key)
            .header(
                header::USER_AGENT,
                concat!("tollgate-bouncer/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|_| ClientError::KeyChars)?;
        let answer = sender.send_request(request).await?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Body(e.to_string()))?
            .to_bytes();
        conn.abort();
        match status {
            StatusCode::OK => Ok(serde_json::from_slice(&body)?),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(ClientError::Forbidden),
            s => Err(ClientError::Status {
                status: s.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
        }
    }
}

/// The bouncer's key: the file's content without surrounding whitespace.
fn read_key(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|error| ClientError::KeyFile {
        path: path.display().to_string(),
        error,
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(ClientError::KeyEmpty {
            path: path.display().to_string(),
        });
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::KeyChars);
    }
    Ok(key.to_owned())
}
