//! A small real HTTP/1.1 server (keep-alive) and client for end-to-end tests
//! of the HTTP monitor. Bounded: the server stops when dropped, every socket
//! has timeouts.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};

/// Answers every request with `200 OK` and a 2-byte body, keeping
/// connections open; counts the requests it answered. Each answer waits
/// `delay_ms` first (0 unless a test sets it: a backend that slows down).
pub struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn bind(addr: SocketAddr) -> Result<Server> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop, delay_ms) = (requests.clone(), stop.clone(), delay_ms.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (requests, stop, delay_ms) =
                                (requests.clone(), stop.clone(), delay_ms.clone());
                            std::thread::spawn(move || {
                                let _ = serve(stream, &requests, &stop, &delay_ms);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(Server {
            addr,
            requests,
            delay_ms,
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(
    stream: TcpStream,
    requests: &AtomicU64,
    stop: &AtomicBool,
    delay_ms: &AtomicU64,
) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while !stop.load(Ordering::Relaxed) {
        let mut content_length = 0usize;
        let mut line = String::new();
        // Request line, then headers up to the blank line.
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        requests.fetch_add(1, Ordering::Relaxed);
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
        )?;
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A keep-alive client: sends requests on one connection and reads each response.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        Client::from_stream(stream, timeout)
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: TcpStream, timeout: Duration) -> Result<Client> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one request (`head` without the final blank line) and waits for
    /// the `200 OK`.
    pub fn request(&mut self, head: &str) -> Result<()> {
        self.writer
            .write_all(format!("{head}\r\n\r\n").as_bytes())?;
        self.read_ok()
    }

    /// Reads a `200 OK` with its 2-byte body.
    fn read_ok(&mut self) -> Result<()> {
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        if !status.starts_with("HTTP/1.1 200") {
            bail!("unexpected response {status:?}");
        }
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = [0u8; 2];
        self.reader.read_exact(&mut body)?;
        Ok(())
    }

    /// Sends one request with a body: `head` (without the final blank line)
    /// gets its Content-Length, then `body`; waits for the `200 OK`.
    pub fn request_with_body(&mut self, head: &str, body: &[u8]) -> Result<()> {
        let head = format!("{head}\r\nContent-Length: {}", body.len());
        self.writer
            .write_all(format!("{head}\r\n\r\n").as_bytes())?;
        self.writer.write_all(body)?;
        self.read_ok()
    }

    /// Sends raw bytes (for malformed requests) without waiting for an answer.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes)?;
        Ok(())
    }
}

/// One request on a fresh connection.
pub fn request_once(addr: SocketAddr, head: &str, timeout: Duration) -> Result<()> {
    Client::connect(addr, timeout)?.request(head)
}
