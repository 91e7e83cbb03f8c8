//! Flood generator for `cargo xtask bench flood`: prebuilt Ethernet/IPv4/UDP
//! frames with spoofed sources, sent with `sendmmsg` on an AF_PACKET socket
//! with `PACKET_QDISC_BYPASS` (straight into the veth's `ndo_start_xmit`).
//!
//! Every loop is bounded by a deadline and a packet budget; the frames only
//! ever go to the interface the socket is bound to.

use std::{
    ffi::CString,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::rawbpf;

/// UDP payload bytes: with the 42 bytes of headers, a 60-byte frame (the
/// Ethernet minimum without FCS).
pub const PAYLOAD: usize = 18;

/// The ones' complement sum of 16-bit words, folded and inverted (RFC 1071).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in header.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One Ethernet/IPv4/UDP frame with a valid IPv4 header checksum and UDP
/// checksum 0 ("none", valid for IPv4).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 20 + 8 + PAYLOAD);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src_port.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5a; PAYLOAD]);
    f
}

/// One Ethernet/IPv6/UDP frame with a valid UDP checksum (mandatory over
/// IPv6), the same 18 payload bytes as [`udp_frame`].
pub fn udp6_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    src_port: u16,
    dst_port: u16,
) -> Vec<u8> {
    let udp_len = (8 + PAYLOAD) as u16;
    let mut f = Vec::with_capacity(14 + 40 + 8 + PAYLOAD);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let mut udp = Vec::with_capacity(8 + PAYLOAD);
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[0x5a; PAYLOAD]);
    // Pseudo-header: addresses, length, next header; then the datagram.
    let mut sum_over = Vec::with_capacity(40 + udp.len());
    sum_over.extend_from_slice(&src.octets());
    sum_over.extend_from_slice(&dst.octets());
    sum_over.extend_from_slice(&(udp_len as u32).to_be_bytes());
    sum_over.extend_from_slice(&[0, 0, 0, 17]);
    sum_over.extend_from_slice(&udp);
    let csum = match ipv4_checksum(&sum_over) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        bail!("not a MAC address: {s:?}");
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("MAC {s:?}"))?;
    }
    Ok(mac)
}

/// An AF_PACKET raw socket bound to one interface (in the calling thread's
/// network namespace), transmitting without the qdisc.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn open(ifname: &str) -> Result<PacketSocket> {
        let name = CString::new(ifname)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
        }
        // Protocol 0: this socket only sends, it never receives a copy of traffic.
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll of the stated length.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        } != 0
        {
            bail!(
                "bind AF_PACKET to {ifname}: {}",
                std::io::Error::last_os_error()
            );
        }
        let one: libc::c_int = 1;
        // SAFETY: an int option of the stated length.
        if unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        } != 0
        {
            bail!("PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends `frames` with one `sendmmsg`; returns how many the device took
    /// (the rest hit a full device ring: ENOBUFS/EAGAIN, not an error).
    pub fn send_batch(&self, frames: &[&[u8]]) -> Result<usize> {
        const MAX: usize = 64;
        let n = frames.len().min(MAX);
        // SAFETY: plain data, filled in below.
        let mut iov: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i] = libc::iovec {
                iov_base: frames[i].as_ptr() as *mut libc::c_void,
                iov_len: frames[i].len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `n` initialised headers pointing at live frames.
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EBUSY) => Ok(0),
            _ => Err(err).context("sendmmsg"),
        }
    }
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_time() -> Duration {
    // SAFETY: plain data out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::gettid() }
}

/// What to send: `abusive` frames round-robin as fast as the device takes
/// them, interleaved with each of `legit` at `legit_rate` per second.
pub struct Flood<'a> {
    pub abusive: &'a [Vec<u8>],
    pub legit: &'a [Vec<u8>],
    pub legit_rate: u64,
    /// Stop after this long...
    pub duration: Duration,
    /// ...or after this many abusive frames, whichever comes first.
    pub max_packets: u64,
    /// Set from outside (a signal) to stop early.
    pub stop: &'a AtomicBool,
}

/// What the generator did.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    pub abusive: u64,
    /// Per legitimate source, in the order of [`Flood::legit`].
    pub legit: Vec<u64>,
    /// sendmmsg calls that the device refused in full or in part (ring full).
    pub refused_batches: u64,
    pub wall: Duration,
    /// The generator thread's CPU time over the run (on a kernel without
    /// IRQ time accounting this includes softirq work run inline in its context).
    pub thread_cpu: Duration,
}

impl Sent {
    pub fn total(&self) -> u64 {
        self.abusive + self.legit.iter().sum::<u64>()
    }
}

/// Runs the flood from the calling thread. Bounded by `duration` and
/// `max_packets` (and by `stop`).
pub fn flood(socket: &PacketSocket, plan: &Flood) -> Result<Sent> {
    const BATCH: usize = 64;
    assert!(!plan.abusive.is_empty() && plan.legit.len() < BATCH);
    let mut sent = Sent {
        legit: vec![0; plan.legit.len()],
        ..Default::default()
    };
    let mut cursor = 0usize;
    let mut batch: Vec<&[u8]> = Vec::with_capacity(BATCH);
    let mut legit_idx: Vec<usize> = Vec::with_capacity(BATCH);
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= plan.duration
            || sent.abusive >= plan.max_packets
            || plan.stop.load(Ordering::Relaxed)
        {
            break;
        }
        batch.clear();
        legit_idx.clear();
        // Legitimate packets due by now (the first at t = 0), at most one
        // per source per batch: batches take well under a millisecond.
        let due = (elapsed.as_secs_f64() * plan.legit_rate as f64) as u64 + 1;
        for (j, frame) in plan.legit.iter().enumerate() {
            if sent.legit[j] < due {
                batch.push(frame);
                legit_idx.push(j);
            }
        }
        let first_abusive = batch.len();
        while batch.len() < BATCH {
            batch.push(&plan.abusive[(cursor + batch.len() - first_abusive) % plan.abusive.len()]);
        }
        let n = socket.send_batch(&batch)?;
        for &j in legit_idx.iter().take(n) {
            sent.legit[j] += 1;
        }
        let abusive = n.saturating_sub(first_abusive);
        sent.abusive += abusive as u64;
        cursor = (cursor + abusive) % plan.abusive.len();
        if n < batch.len() {
            sent.refused_batches += 1;
            std::hint::spin_loop();
        }
    }
    sent.wall = start.elapsed();
    sent.thread_cpu = thread_cpu_time() - cpu0;
    Ok(sent)
}

/// Sends each of `frames` at `rate` per second for `duration` (bounded by
/// `rate × duration` each, and by `stop`). Returns what each sent.
pub fn paced(
    socket: &PacketSocket,
    frames: &[Vec<u8>],
    rate: u64,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<Vec<u64>> {
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let mut sent = vec![0u64; frames.len()];
    let start = Instant::now();
    while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        for (frame, n) in frames.iter().zip(sent.iter_mut()) {
            // A refused frame (full ring) is retried on the next tick.
            if *n < due && socket.send_batch(&[frame])? == 1 {
                *n += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(sent)
}

/// The loaded redirecting generator program.
pub struct Redirector {
    prog: OwnedFd,
}

impl Redirector {
    /// Loads the program for `ifname` in the calling thread's namespace.
    pub fn load(ifname: &str, spoof: rawbpf::Spoof) -> Result<Redirector> {
        Redirector::load_thinned(ifname, spoof, rawbpf::THIN_ALL)
    }

    /// A redirector that sends on only `keep` in 65,536 of the frames it
    /// runs ([`rawbpf::redirect_program_thinned`]).
    pub fn load_thinned(ifname: &str, spoof: rawbpf::Spoof, keep: u32) -> Result<Redirector> {
        let ifindex = ifindex(ifname)?;
        Ok(Redirector {
            prog: rawbpf::load_xdp(
                &rawbpf::redirect_program_thinned(ifindex, spoof, keep),
                "tg_flood_gen",
            )?,
        })
    }

    /// Runs the program over `repeat` live copies of `frame` (each redirected
    /// out of the interface). Returns the kernel's mean ns per frame.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<u32> {
        rawbpf::test_run_live(&self.prog, frame, repeat)
    }

    /// [`Redirector::run`] flushing every `batch` frames into the interface.
    pub fn run_batched(&self, frame: &[u8], repeat: u32, batch: u32) -> Result<u32> {
        rawbpf::test_run_live_batched(&self.prog, frame, repeat, batch)
    }
}

/// The index of `ifname` in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> Result<u32> {
    let name = CString::new(ifname)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
    }
    Ok(ifindex)
}

/// What the live-frames flood did.
#[derive(Clone, Debug, Default)]
pub struct Blasted {
    /// Frames the program ran on (each redirected into the veth, or dropped
    /// by the veth when its ring was full).
    pub frames: u64,
    pub wall: Duration,
    pub thread_cpu: Duration,
    pub calls: u64,
    /// The kernel's own measure of the time spent running frames.
    pub kernel_ns: u64,
    /// Wall time inside the calls.
    pub call_ns: u64,
}

/// Runs `frame` through the redirector as fast as the kernel goes, in calls
/// of about 20 ms, until `duration` has passed (or `max_frames`, or `stop`).
pub fn blast(
    redirector: &Redirector,
    frame: &[u8],
    duration: Duration,
    max_frames: u64,
    stop: &AtomicBool,
) -> Result<Blasted> {
    let mut out = Blasted::default();
    // Each call sets up and tears down a page pool: make calls long (~50 ms).
    let mut repeat: u32 = 1 << 16;
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    while start.elapsed() < duration && out.frames < max_frames && !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ns = redirector.run(frame, repeat)?;
        out.frames += repeat as u64;
        out.calls += 1;
        out.kernel_ns += ns as u64 * repeat as u64;
        out.call_ns += t.elapsed().as_nanos() as u64;
        // Aim for ~200 ms of frames per call, whatever the fixed cost.
        let running = Duration::from_nanos(ns as u64 * repeat as u64);
        if running < Duration::from_millis(100) {
            repeat = (repeat * 2).min(1 << 24);
        } else if running > Duration::from_millis(400) {
            repeat = (repeat / 2).max(1 << 10);
        }
    }
    out.wall = start.elapsed();
    out.thread_cpu = thread_cpu_time() - cpu0;
    Ok(out)
}

/// What a paced generator does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run this many frames now.
    Run(u32),
    /// Nothing is due: sleep this long first.
    Sleep(Duration),
}

/// Pacing arithmetic for [`paced_blast`]: a token bucket of frames filled at
/// `rate` per second, spent a `chunk` at a time. The bucket holds at most two
/// chunks, so a late wake-up is not made up by a burst (frames not sent in
/// time are not sent: the offered rate is measured, not assumed).
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: f64,
    chunk: u32,
    credit: f64,
    last_ns: u64,
}

impl Pacer {
    /// A pacer whose first chunk is due at `now_ns`.
    pub fn new(rate: u64, chunk: u32, now_ns: u64) -> Pacer {
        assert!(rate > 0 && chunk > 0);
        Pacer {
            rate: rate as f64,
            chunk,
            credit: chunk as f64,
            last_ns: now_ns,
        }
    }

    /// The next step at `now_ns` (monotonic; earlier times count as `now`).
    pub fn step(&mut self, now_ns: u64) -> Step {
        let dt = now_ns.saturating_sub(self.last_ns) as f64;
        self.last_ns = self.last_ns.max(now_ns);
        let chunk = self.chunk as f64;
        self.credit = (self.credit + dt * self.rate / 1e9).min(2.0 * chunk);
        if self.credit >= chunk {
            self.credit -= chunk;
            Step::Run(self.chunk)
        } else {
            let ns = ((chunk - self.credit) * 1e9 / self.rate).ceil() as u64;
            Step::Sleep(Duration::from_nanos(ns.max(1)))
        }
    }
}

/// Frames per second the thinned generator is assumed to run through its
/// program (redirected and dropped together): [`thin_keep`] redirects about
/// `rate` of them, so the frames sent are spread over the call.
pub const THIN_RUN_RATE: u64 = 5_000_000;

/// The thinned redirector's `keep` (of 65,536) for `rate` frames/s sent:
/// `rate / THIN_RUN_RATE`, at least 1, at most all.
pub fn thin_keep(rate: u64) -> u32 {
    let keep = (rate as u128 * 65_536).div_ceil(THIN_RUN_RATE as u128);
    keep.clamp(1, rawbpf::THIN_ALL as u128) as u32
}

/// Like [`blast`], but holding `rate` frames sent per second on average.
/// `redirector` sends on `keep` in 65,536 of the frames it runs
/// ([`Redirector::load_thinned`]), so within a call the frames sent are
/// spread out; calls run `chunk` frames (flushed into the interface every
/// `batch`), with sleeps between calls when ahead of the rate. Each live
/// `test_run` call also waits ~25 ms in the kernel after its frames (on this
/// VM), which is why calls are long and thinned rather than short. The
/// result's `frames` are the frames sent (run × keep / 65,536, expected
/// value). Bounded by `duration`, `max_frames` (sent) and `stop`.
#[allow(clippy::too_many_arguments)]
pub fn paced_blast(
    redirector: &Redirector,
    keep: u32,
    frame: &[u8],
    rate: u64,
    chunk: u32,
    batch: u32,
    duration: Duration,
    max_frames: u64,
    stop: &AtomicBool,
) -> Result<Blasted> {
    let share = keep as f64 / rawbpf::THIN_ALL as f64;
    let run_rate = ((rate as f64 / share).round() as u64).max(1);
    let mut ran = 0u64;
    // Sleeps of ~100 µs: the default 50 µs timer slack would be half of one.
    // SAFETY: prctl with integer arguments, affecting the calling thread.
    let slack = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000, 0, 0, 0) };
    let mut out = Blasted::default();
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    let mut pacer = Pacer::new(run_rate, chunk, 0);
    let result = (|| -> Result<()> {
        while start.elapsed() < duration && out.frames < max_frames && !stop.load(Ordering::Relaxed)
        {
            match pacer.step(start.elapsed().as_nanos() as u64) {
                Step::Run(n) => {
                    let t = Instant::now();
                    let ns = redirector.run_batched(frame, n, batch)?;
                    ran += n as u64;
                    out.frames = (ran as f64 * share).round() as u64;
                    out.calls += 1;
                    out.kernel_ns += ns as u64 * n as u64;
                    out.call_ns += t.elapsed().as_nanos() as u64;
                }
                Step::Sleep(d) => std::thread::sleep(d),
            }
        }
        Ok(())
    })();
    out.wall = start.elapsed();
    out.thread_cpu = thread_cpu_time() - cpu0;
    if slack > 0 {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack as libc::c_ulong, 0, 0, 0) };
    }
    result.map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_share_follows_the_rate() {
        assert_eq!(thin_keep(1_000_000), 13_108); // 20.0%
        assert_eq!(thin_keep(2_500_000), 32_768);
        assert_eq!(thin_keep(5_000_000), rawbpf::THIN_ALL);
        assert_eq!(thin_keep(50_000_000), rawbpf::THIN_ALL);
        assert_eq!(thin_keep(1), 1);
    }

    #[test]
    fn pacer_holds_the_rate_without_bursts() {
        // 1 M frames/s in chunks of 250: one chunk due every 250 µs.
        let mut p = Pacer::new(1_000_000, 250, 0);
        assert_eq!(p.step(0), Step::Run(250));
        assert_eq!(p.step(0), Step::Sleep(Duration::from_micros(250)));
        assert_eq!(p.step(100_000), Step::Sleep(Duration::from_micros(150)));
        assert_eq!(p.step(250_000), Step::Run(250));
        // An exact simulation: waking when told, 10 ms hold 10,000 frames.
        let (mut now, mut frames) = (250_000u64, 250u64 * 2);
        while now < 10_000_000 {
            match p.step(now) {
                Step::Run(n) => frames += n as u64,
                Step::Sleep(d) => now += d.as_nanos() as u64,
            }
        }
        assert!((10_000..=10_250).contains(&frames), "{frames}");
        // A 5 ms late wake-up earns at most two chunks, not twenty.
        let mut p = Pacer::new(1_000_000, 250, 0);
        assert_eq!(p.step(0), Step::Run(250));
        assert_eq!(p.step(5_000_000), Step::Run(250));
        assert_eq!(p.step(5_000_000), Step::Run(250));
        assert!(matches!(p.step(5_000_000), Step::Sleep(_)));
        // Time going backwards is treated as no time.
        assert!(matches!(p.step(1_000), Step::Sleep(_)));
    }

    #[test]
    fn checksum_of_a_known_header() {
        // RFC 1071 example header from Wikipedia's IPv4 article.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
        let f = udp_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(198, 18, 0, 7),
            Ipv4Addr::new(198, 18, 0, 1),
            40000,
            9,
        );
        assert_eq!(f.len(), 60);
        // A header with its checksum in place sums to zero.
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
    }

    #[test]
    fn ipv6_udp_checksum_verifies_and_survives_a_complemented_prefix() {
        let src = std::net::Ipv6Addr::new(0, 0, 0, 0, 0x7467, 0, 0, 1);
        let dst = std::net::Ipv6Addr::new(0xfd00, 0x7467, 0x1201, 0, 0, 0, 0, 1);
        let mut f = udp6_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, 40000, 9);
        assert_eq!(f.len(), 14 + 40 + 8 + PAYLOAD);
        let verify = |f: &[u8]| {
            let mut v = Vec::new();
            v.extend_from_slice(&f[22..54]);
            v.extend_from_slice(&((8 + PAYLOAD) as u32).to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, 17]);
            v.extend_from_slice(&f[54..]);
            ipv4_checksum(&v)
        };
        assert_eq!(verify(&f), 0);
        // What the generator's V6Prefix program writes: r, then !r.
        let r: u32 = 0xdead_beef;
        f[22..26].copy_from_slice(&r.to_ne_bytes());
        f[26..30].copy_from_slice(&(!r).to_ne_bytes());
        assert_eq!(verify(&f), 0);
    }

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("02:fc:00:00:00:0a\n").unwrap(),
            [2, 0xfc, 0, 0, 0, 10]
        );
        assert!(parse_mac("02:fc:00").is_err());
    }
}
