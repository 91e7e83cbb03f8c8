//! Reading a signal: a PSI file's average, or a probe's latency.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use crate::spec::{PsiLine, PsiWindow, SignalSource};

/// Why a signal has no reading this second.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} has no \"{line} {window}=\" value (is it a PSI file?)")]
    Format {
        path: String,
        line: &'static str,
        window: &'static str,
    },
}

/// The value of `window` on `line` of a PSI file's text:
/// `some avg10=1.23 avg60=0.50 avg300=0.10 total=12345`.
pub fn parse_psi(text: &str, line: PsiLine, window: PsiWindow) -> Option<f64> {
    let (line, window) = names(line, window);
    let l = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(line))?;
    l.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == window)
        .and_then(|(_, v)| v.parse().ok())
}

fn names(line: PsiLine, window: PsiWindow) -> (&'static str, &'static str) {
    (
        match line {
            PsiLine::Some => "some",
            PsiLine::Full => "full",
        },
        match window {
            PsiWindow::Avg10 => "avg10",
            PsiWindow::Avg60 => "avg60",
        },
    )
}

fn read_psi(path: &Path, line: PsiLine, window: PsiWindow) -> Result<f64, SignalError> {
    let text = std::fs::read_to_string(path).map_err(|error| SignalError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse_psi(&text, line, window).ok_or_else(|| {
        let (line, window) = names(line, window);
        SignalError::Format {
            path: path.display().to_string(),
            line,
            window,
        }
    })
}

/// What a probe saw.
#[derive(Debug, PartialEq)]
pub enum Probe {
    /// Answered in this many milliseconds.
    Answered(f64),
    /// No answer within the timeout, refused, or not HTTP: counted as the
    /// timeout (over any threshold under it: a backend that does not answer
    /// is treated as overloaded).
    Failed { ms: f64, error: String },
}

impl Probe {
    pub fn ms(&self) -> f64 {
        match self {
            Probe::Answered(ms) | Probe::Failed { ms, .. } => *ms,
        }
    }
}

fn probe_tcp(address: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&address, timeout)
}

/// An HTTP/1.0 GET to the end of the status line. A hand-written request of
/// one line: an HTTP client crate would bring a pool, TLS and redirects the
/// probe must not have (each probe is one fresh connection, as a new client
/// sees the service).
fn probe_http(
    address: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    started: Instant,
) -> std::io::Result<()> {
    let mut s = probe_tcp(address, timeout)?;
    let left = |started: Instant| {
        timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
    };
    s.set_write_timeout(Some(left(started)?))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tollgate-probe\r\nConnection: close\r\n\r\n"
    )?;
    let mut got = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !got.contains(&b'\n') {
        s.set_read_timeout(Some(left(started)?))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    if got.starts_with(b"HTTP/") {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not HTTP",
        ))
    }
}

/// Reads one signal now. PSI: the average in percent; probes: milliseconds
/// (a probe takes at most `timeout`).
pub fn read(source: &SignalSource, timeout: Duration) -> Result<f64, SignalError> {
    let started = Instant::now();
    let probe = |r: std::io::Result<()>| {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok(()) => Probe::Answered(ms),
            Err(e) => Probe::Failed {
                ms: (timeout.as_secs_f64() * 1000.0).max(ms),
                error: e.to_string(),
            },
        }
    };
    match source {
        SignalSource::Pressure { path, line, window } => read_psi(path, *line, *window),
        SignalSource::Tcp { address } => Ok(probe(probe_tcp(*address, timeout).map(drop)).ms()),
        SignalSource::Http {
            address,
            host,
            path,
        } => Ok(probe(probe_http(*address, host, path, timeout, started)).ms()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: &str = "some avg10=96.46 avg60=65.51 avg300=20.88 total=2567178088\n\
                       full avg10=1.50 avg60=0.25 avg300=0.00 total=0\n";

    #[test]
    fn psi_lines_and_windows() {
        assert_eq!(parse_psi(CPU, PsiLine::Some, PsiWindow::Avg10), Some(96.46));
        assert_eq!(parse_psi(CPU, PsiLine::Some, PsiWindow::Avg60), Some(65.51));
        assert_eq!(parse_psi(CPU, PsiLine::Full, PsiWindow::Avg10), Some(1.5));
        assert_eq!(parse_psi("nonsense", PsiLine::Some, PsiWindow::Avg10), None);
    }

    #[test]
    fn a_closed_port_counts_as_the_timeout() {
        // Bind then drop: a port that refuses.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let t = Duration::from_millis(300);
        let ms = read(&SignalSource::Tcp { address: port }, t).unwrap();
        assert!(ms >= 300.0, "{ms}");
    }

    #[test]
    fn an_http_server_is_timed_to_its_status_line() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf);
            std::thread::sleep(Duration::from_millis(50));
            c.write_all(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        });
        let source = SignalSource::Http {
            address,
            host: address.to_string(),
            path: "/".into(),
        };
        let ms = read(&source, Duration::from_millis(800)).unwrap();
        server.join().unwrap();
        assert!((50.0..800.0).contains(&ms), "{ms}");
    }
}
