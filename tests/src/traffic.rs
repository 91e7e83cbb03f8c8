//! Bounded traffic generators and receivers for end-to-end tests.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// What a paced sender did.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub packets: u64,
    /// Time from the first to the last packet.
    pub span: Duration,
}

/// Sends `rate` UDP datagrams per second to `dst` for `duration` (bounded by
/// `rate × duration` packets), from the calling thread. Pacing catches up in
/// small batches, so the offered load is steady at the millisecond scale.
pub fn send_udp_paced(
    socket: &UdpSocket,
    dst: SocketAddr,
    rate: u64,
    duration: Duration,
) -> Result<Sent> {
    Ok(send_udp_paced_until(
        socket,
        dst,
        rate,
        duration,
        &AtomicBool::new(false),
    ))
}

/// [`send_udp_paced`] that also ends early once `stop` is set.
pub fn send_udp_paced_until(
    socket: &UdpSocket,
    dst: SocketAddr,
    rate: u64,
    duration: Duration,
    stop: &AtomicBool,
) -> Sent {
    paced(socket, dst, rate, duration, stop, u64::MAX)
}

/// [`send_udp_paced`] that never bursts to catch up: after a stall (a
/// starved sender thread) the slots it missed beyond 10 ms' worth are
/// skipped, not sent late, so the client's rate stays under `rate` in every
/// window of the run, however loaded the machine. It may send fewer than
/// `rate × duration` (its [`Sent`] says how many).
pub fn send_udp_paced_smooth(
    socket: &UdpSocket,
    dst: SocketAddr,
    rate: u64,
    duration: Duration,
) -> Sent {
    let catch_up = (rate / 100).max(1);
    paced(
        socket,
        dst,
        rate,
        duration,
        &AtomicBool::new(false),
        catch_up,
    )
}

/// The paced sender: at most `catch_up` late slots are sent at once; older
/// ones are skipped.
fn paced(
    socket: &UdpSocket,
    dst: SocketAddr,
    rate: u64,
    duration: Duration,
    stop: &AtomicBool,
    catch_up: u64,
) -> Sent {
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let payload = [0x5au8; 32];
    let start = Instant::now();
    let mut sent = 0u64;
    // Slots taken: sent, or skipped after a stall.
    let mut slots = 0u64;
    let mut last = start;
    while slots < total && !stop.load(Ordering::Relaxed) {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        slots = slots.max(due.saturating_sub(catch_up));
        while slots < due {
            // ENOBUFS/EAGAIN from a full qdisc is not a send; try again next tick.
            if socket.send_to(&payload, dst).is_ok() {
                sent += 1;
                slots += 1;
                last = Instant::now();
            } else {
                break;
            }
        }
        if start.elapsed() > duration * 2 {
            break; // bounded in time even if the host is starved
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Sent {
        packets: sent,
        span: last.duration_since(start),
    }
}

/// Counts datagrams arriving on a UDP socket until stopped.
pub struct Receiver {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn bind(addr: SocketAddr) -> Result<Receiver> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (count, stop) = (count.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if socket.recv_from(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(Receiver {
            addr,
            count,
            stop,
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until no datagram has arrived for `quiet`, then returns the count.
    pub fn settle(&self, quiet: Duration) -> u64 {
        let mut last = self.count();
        loop {
            std::thread::sleep(quiet);
            let now = self.count();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `SIOCGSTAMPNS` (linux/sockios.h; on 64-bit targets the timespec form):
/// the receive time of the last datagram read, as a `timespec`.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// Records the kernel's receive time (CLOCK_REALTIME, `SIOCGSTAMPNS`) of
/// every datagram arriving on a UDP socket until stopped, at most
/// [`TimedReceiver::MAX`] of them.
pub struct TimedReceiver {
    pub addr: SocketAddr,
    times: Arc<std::sync::Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TimedReceiver {
    pub const MAX: usize = 1 << 22;

    pub fn bind(addr: SocketAddr) -> Result<TimedReceiver> {
        use std::os::fd::AsRawFd;
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        // The first SIOCGSTAMPNS turns receive timestamps on (and fails: no
        // datagram yet).
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as below.
        unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSTAMPNS as _, &mut ts) };
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (times, stop) = (times.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if socket.recv_from(&mut buf).is_err() {
                        continue;
                    }
                    let mut ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: SIOCGSTAMPNS writes one timespec: the receive
                    // time of the last datagram read from this socket.
                    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSTAMPNS as _, &mut ts) };
                    let ns = if rc == 0 {
                        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
                    } else {
                        unix_ns()
                    };
                    let mut t = times.lock().unwrap();
                    if t.len() < Self::MAX {
                        t.push(ns);
                    }
                }
            })
        };
        Ok(TimedReceiver {
            addr,
            times,
            stop,
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> u64 {
        self.times.lock().unwrap().len() as u64
    }

    /// Receive times so far (unix nanoseconds), in arrival order.
    pub fn times(&self) -> Vec<u64> {
        self.times.lock().unwrap().clone()
    }
}

impl Drop for TimedReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Now, in unix nanoseconds.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// Closes `stream` with a reset (`SO_LINGER` 0): the peer sees a RST at
/// once, and nothing lingers retransmitting data a limiter keeps dropping.
pub fn close_with_reset(stream: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(stream);
}
