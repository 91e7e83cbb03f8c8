//! A spoofed flood of 5,000,000 packets, each from a random source, through
//! the daemon's own pinned program (BPF_PROG_TEST_RUN on the real program and
//! maps): the source map's kernel memory stays at its configured bound, the
//! tier's new-source budget and untracked ceiling hold, a known client in its own tier keeps every
//! packet, and the daemon's memory stays flat while it drains the samples.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;
use tollgate::datapath::kernel::Maps;
use tollgate_common::Verdict;
use tollgate_tests::{
    daemon::{Env, free_port, rss_kib},
    packet::Packet,
    privileged,
};

const FLOOD: u32 = 5_000_000;
const SOURCES_MAX: u32 = 65_536;
const KNOWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The known client sends one packet per this many flood packets.
const KNOWN_EVERY: u32 = 1000;

/// memlock of the open BPF map with this max_entries (the source map).
fn memlock_of_map_with(max_entries: u32) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |n: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(n))
                .map(|v| v.trim().to_owned())
        };
        if field("max_entries:").as_deref() == Some(&max_entries.to_string())
            && field("map_type:").as_deref() == Some("9")
        {
            return field("memlock:").and_then(|v| v.parse().ok());
        }
    }
    None
}

#[test]
fn a_five_million_packet_spoofed_flood_stays_bounded() {
    if !privileged("a_five_million_packet_spoofed_flood_stays_bounded") {
        return;
    }
    let env = Env::new();
    env.write_config(&format!(
        "metrics_address = \"127.0.0.1:{}\"\n\
         [maps]\nsources_v4 = {SOURCES_MAX}\n\
         [http]\nverdict_sample_every = 64\n\
         [[tier]]\nname = \"default\"\npackets = \"10/s\"\npackets_burst = 5\naggregate = \"20000/s\"\naggregate_burst = 1000\n\
         [[tier]]\nname = \"known\"\npackets = \"100000/s\"\n\
         [[rule]]\ncidr = \"{KNOWN}/32\"\ntier = \"known\"\n",
        free_port()
    ));
    let daemon = env.start();
    let pid = daemon.child.as_ref().unwrap().id();
    let maps = Maps::from_pins(&env.pins.path).unwrap();
    let memlock_before = memlock_of_map_with(SOURCES_MAX).expect("the source map");
    let rss_before = rss_kib(pid).expect("daemon RSS");

    let prog = Xdp::from_pin(env.pins.path.join("prog"), XdpAttachType::Interface).unwrap();
    let mut frame = Packet::from(Ipv4Addr::new(10, 0, 0, 1))
        .udp()
        .payload(&[0; 18])
        .build();
    let known = Packet::from(KNOWN).udp().payload(&[0; 18]).build();
    // Every flood packet from a new source (a bijection of the counter,
    // skipping what falls outside the range): a repeated random address of a
    // tracked source would pass again and break the count of tracked
    // packets below for a reason that is not the limiter's.
    let mut next_source = 0u32;
    let mut new_source = move || loop {
        next_source += 1;
        let src = next_source.wrapping_mul(0x9e37_79b1);
        if (0x0100_0000..0xdfff_ffff).contains(&src) && src != u32::from(KNOWN) {
            return src;
        }
    };
    let run = |prog: &Xdp, f: &[u8]| {
        prog.test_run(TestRunOptions {
            data_in: Some(f),
            repeat: 1,
            ..Default::default()
        })
        .unwrap()
        .return_value
    };
    let start = Instant::now();
    let mut known_passed = 0u32;
    let mut known_sent = 0u32;
    for i in 0..FLOOD {
        // A source never seen, outside the known client's /32 (and not 0.0.0.0).
        let src = new_source();
        frame[26..30].copy_from_slice(&src.to_be_bytes());
        run(&prog, &frame);
        if i % KNOWN_EVERY == 0 {
            known_sent += 1;
            if run(&prog, &known) == 2 {
                known_passed += 1;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "bounded in time"
        );
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Kernel memory: the LRU map never grows past its configured size.
    let (v4, _) = maps.tracked_sources();
    assert!(v4 as u32 <= SOURCES_MAX, "{v4} tracked");
    assert_eq!(memlock_of_map_with(SOURCES_MAX), Some(memlock_before));
    // Admission control (the default budget, 1/60 of the map per second):
    // at most budget × t + burst new sources were tracked and passed, and the
    // untracked rest passed within their own ceiling (the aggregate's size),
    // rate × t + burst, over the loop's span (the kernel's first-to-last span
    // is inside it; +1 each for rounding the float span). Both are timed by
    // the coarse clock, up to one tick behind: rate × (t + tick) + burst.
    let budget = (SOURCES_MAX / 60) as f64;
    let tick = tollgate_tests::tick_secs();
    let tracked = maps.counter(0, Verdict::Passed).unwrap().packets;
    let untracked = maps.counter(0, Verdict::Untracked).unwrap().packets;
    let tracked_bound = budget * (elapsed + tick) + budget + 1.0;
    let bound = 20_000.0 * (elapsed + tick) + 1000.0 + 1.0;
    eprintln!(
        "{FLOOD} packets in {elapsed:.1} s: {tracked} tracked and passed (bound {tracked_bound:.0}), \
         {untracked} passed untracked (bound {bound:.0}), {v4} sources tracked, known client {known_passed}/{known_sent}"
    );
    assert!(
        (tracked as f64) <= tracked_bound,
        "{tracked} > {tracked_bound:.0}"
    );
    assert!(
        (v4 as f64) <= tracked_bound,
        "{v4} sources > {tracked_bound:.0}"
    );
    assert!((untracked as f64) <= bound, "{untracked} > {bound:.0}");
    let untracked_drops = maps.counter(0, Verdict::DroppedUntracked).unwrap().packets;
    assert!(
        untracked_drops > 0,
        "the flood reached the untracked ceiling"
    );
    // The known client, in its own tier, kept every packet.
    assert_eq!(known_passed, known_sent);
    // The daemon drained ~78k verdict samples; its memory stayed flat.
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid).expect("daemon RSS");
    eprintln!("daemon RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "daemon RSS grew from {rss_before} to {rss_after} KiB"
    );
    env.ok(&["status"]);
}
