//! End to end: tollgate attached (native XDP) to a veth whose peer lives in a
//! test namespace; real UDP traffic; admitted counts checked against the GCRA
//! bound `rate × t + burst`.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use ipnet::IpNet;
use tollgate::datapath::kernel::{self, AttachMode};
use tollgate_common::{RULE_TIER, RuleValue, Verdict};
use tollgate_tests::{
    net::{Netns, Veth, pin_to_cpu},
    privileged,
    program::{TestProgram, TierSpec},
    traffic::{Receiver, Sent, send_udp_paced},
    unique_id,
};

const TIER: u32 = 1;
const RATE: u64 = 1000;
const BURST: u64 = 100;

struct Setup {
    // Field order is drop order: detach (program) before deleting the link.
    program: TestProgram,
    veth: Veth,
    ns: Netns,
}

/// A veth pair with `queues` queues, tollgate attached natively on the host
/// side, and the peer's address mapped to a tier of RATE/s, burst BURST.
fn setup(queues: u32) -> Setup {
    let id = unique_id();
    let ns = Netns::new(&id).expect("netns");
    let veth = Veth::new(&id, &ns, queues).expect("veth");
    let mut program = TestProgram::load().expect("load");
    program
        .maps
        .set_tier(0, &TierSpec::default().config())
        .unwrap();
    program
        .maps
        .set_tier(
            TIER,
            &TierSpec {
                packets: Some((RATE, BURST)),
                ..Default::default()
            }
            .config(),
        )
        .unwrap();
    program
        .maps
        .set_rule(
            IpNet::from(std::net::IpAddr::from(veth.peer_ip)),
            RuleValue {
                action: RULE_TIER,
                tier: TIER,
                expires_ns: 0,
            },
        )
        .unwrap();
    let (_, mode) = kernel::attach(program.xdp(), &veth.host, AttachMode::Native).expect("attach");
    assert_eq!(mode, AttachMode::Native);
    Setup { program, veth, ns }
}

/// Sends from `threads` sender threads in the namespace, thread i pinned to CPU i,
/// each at `rate_each` for `secs`. Returns what each sent.
fn send(s: &Setup, threads: usize, rate_each: u64, secs: u64, dst: SocketAddr) -> Vec<Sent> {
    let handles: Vec<_> = (0..threads)
        .map(|cpu| {
            let peer_ip = s.veth.peer_ip;
            s.ns.run(move || -> anyhow::Result<Sent> {
                pin_to_cpu(cpu)?;
                let socket = UdpSocket::bind((peer_ip, 0))?;
                send_udp_paced(&socket, dst, rate_each, Duration::from_secs(secs))
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .expect("sender thread")
                .expect("netns")
                .expect("send")
        })
        .collect()
}

fn passed_and_dropped(s: &Setup) -> (u64, u64) {
    let m = &s.program.maps;
    (
        m.counter(TIER, Verdict::Passed).unwrap().packets,
        m.counter(TIER, Verdict::DroppedPackets).unwrap().packets,
    )
}

/// The GCRA bound over the observed span, and the 2% band around it.
fn assert_within_two_percent(admitted: u64, span: Duration) {
    let expected = RATE as f64 * span.as_secs_f64() + BURST as f64;
    let error = (admitted as f64 - expected) / expected;
    eprintln!(
        "admitted {admitted}, expected {expected:.0} over {span:?} ({:+.2}%)",
        error * 100.0
    );
    assert!(
        error.abs() <= 0.02,
        "admitted {admitted} vs {expected:.0}: {:+.2}%",
        error * 100.0
    );
}

#[test]
fn one_source_at_twice_its_limit_is_held_to_rate_times_t_plus_burst() {
    if !privileged("one_source_at_twice_its_limit_is_held_to_rate_times_t_plus_burst") {
        return;
    }
    let s = setup(1);
    let rx = Receiver::bind(SocketAddr::from((s.veth.host_ip, 0))).unwrap();
    let sent = send(&s, 1, 2 * RATE, 5, rx.addr);
    let received = rx.settle(Duration::from_millis(300));
    let (passed, dropped) = passed_and_dropped(&s);
    assert_eq!(passed + dropped, sent[0].packets, "every packet was judged");
    assert_within_two_percent(passed, sent[0].span);
    assert_eq!(
        received, passed,
        "every admitted datagram reached the socket"
    );
}

#[test]
fn one_source_from_two_cpus_on_two_queues_stays_exact() {
    if !privileged("one_source_from_two_cpus_on_two_queues_stays_exact") {
        return;
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(
        cpus >= 2,
        "this test needs two CPUs to exercise the shared bucket"
    );
    let s = setup(2);
    s.veth.steer_queues_to_cpus(&s.ns, 2).expect("xps");
    let rx = Receiver::bind(SocketAddr::from((s.veth.host_ip, 0))).unwrap();
    let sent = send(&s, 2, RATE, 5, rx.addr);
    let total: u64 = sent.iter().map(|x| x.packets).sum();
    let span = sent.iter().map(|x| x.span).max().unwrap();
    let _ = rx.settle(Duration::from_millis(300));
    let (passed, dropped) = passed_and_dropped(&s);
    assert_eq!(passed + dropped, total);
    // Both CPUs really ran the program for this one source.
    let per_cpu = s
        .program
        .maps
        .counter_per_cpu(TIER, Verdict::Passed)
        .unwrap();
    let per_cpu_drops = s
        .program
        .maps
        .counter_per_cpu(TIER, Verdict::DroppedPackets)
        .unwrap();
    let judged: Vec<u64> = per_cpu
        .iter()
        .zip(&per_cpu_drops)
        .map(|(p, d)| p.packets + d.packets)
        .collect();
    eprintln!("packets judged per CPU: {judged:?}");
    assert!(
        judged.iter().filter(|&&n| n >= total / 5).count() >= 2,
        "expected two CPUs to share the load, got {judged:?}"
    );
    assert_within_two_percent(passed, span);
}

#[test]
fn a_source_under_its_limit_loses_nothing() {
    if !privileged("a_source_under_its_limit_loses_nothing") {
        return;
    }
    let s = setup(1);
    let rx = Receiver::bind(SocketAddr::from((s.veth.host_ip, 0))).unwrap();
    let sent = send(&s, 1, RATE / 2, 3, rx.addr);
    let received = rx.settle(Duration::from_millis(300));
    let (passed, dropped) = passed_and_dropped(&s);
    assert_eq!(dropped, 0);
    assert_eq!(passed, sent[0].packets);
    assert_eq!(received, sent[0].packets);
}
