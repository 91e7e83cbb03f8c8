//! A spoofed flood over a real veth, counted at an independent receiver
//! (UDP sockets on the host side): random IPv4 sources over the whole 32-bit
//! space, then random IPv6 /64s, at the generator's full rate, into tollgate
//! with a new-source budget. Four IPv4 and two IPv6 legitimate clients, well
//! under their limit, start a second before the flood. They must lose
//! nothing and keep their state, and what the flood gets through stays within
//! the bound from the policy's maths.

use std::{sync::Mutex, time::Instant};

use tollgate_tests::{
    flood::{self, Bed, Config, System},
    privileged,
    rawbpf::Spoof,
};

/// One flood at a time: each pins its generator and receiver to the CPUs.
static ONE_FLOOD: Mutex<()> = Mutex::new(());

fn spoofed_flood_keeps_established_clients_whole(spoof: Spoof) {
    let _one = ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = Config::spoofed(spoof);
    cfg.flood_secs = 2.0;
    cfg.systems = vec![System::Tollgate];
    let bed = Bed::new(&cfg).expect("test bed");
    let start = Instant::now();
    let run =
        flood::flood_run(&bed, &cfg, System::Tollgate, flood::Path::XdpFrames).expect("flood run");
    // Everything tollgate admitted, it admitted while installed: inside this span.
    let span = start.elapsed().as_secs_f64();
    let t = run.tollgate.clone().expect("tollgate's counters");
    eprintln!("{spoof:?}: {run:?}");
    assert!(
        run.processed > 100_000,
        "a flood reached the receiver: {} frames",
        run.processed
    );

    // Established clients: every packet received, their state kept.
    assert!(
        run.legit_intact(),
        "legitimate sent {:?}, received {:?}",
        run.legit_sent,
        run.legit_received
    );
    assert_eq!(t.legit_evicted, 0);

    // The flood's bound: untracked packets within the untracked ceiling
    // (the aggregate, rate × t + burst); at most budget × t + burst new
    // sources tracked, each within its own limit (rate × t + burst). The
    // untracked ceiling and the budget are timed by the coarse clock, up to
    // one tick behind: rate × (t + tick) + burst.
    let (agg, agg_burst) = cfg.aggregate.unwrap();
    let (budget, budget_burst) = cfg.new_sources.unwrap();
    let legit = run.legit_sent.len() as f64;
    let tick = tollgate_tests::tick_secs();
    let untracked_bound = agg as f64 * (span + tick) + agg_burst as f64;
    let new_bound = budget as f64 * (span + tick) + budget_burst as f64;
    let per_source = cfg.flood_rate as f64 * span + cfg.flood_burst as f64;
    assert!(
        (t.untracked as f64) <= untracked_bound,
        "{t:?} over {span:.2} s"
    );
    let tracked = (t.tracked.0 + t.tracked.1) as f64;
    assert!(
        tracked <= legit + new_bound,
        "{tracked} tracked over {span:.2} s"
    );
    let bound = untracked_bound + (tracked - legit) * per_source;
    assert!(
        (run.abusive_admitted as f64) <= bound,
        "flood admitted {} > bound {bound:.0} over {span:.2} s",
        run.abusive_admitted
    );
    // And tollgate's counters account for what the receiver saw.
    assert!(run.abusive_admitted <= t.untracked + t.passed);
    assert!(
        t.dropped_untracked > 0,
        "the flood reached the untracked ceiling"
    );
}

#[test]
fn a_random_ipv4_source_flood_leaves_established_clients_whole() {
    if !privileged("a_random_ipv4_source_flood_leaves_established_clients_whole") {
        return;
    }
    spoofed_flood_keeps_established_clients_whole(Spoof::V4);
}

#[test]
fn a_random_ipv6_prefix_flood_leaves_established_clients_whole() {
    if !privileged("a_random_ipv6_prefix_flood_leaves_established_clients_whole") {
        return;
    }
    spoofed_flood_keeps_established_clients_whole(Spoof::V6Prefix);
}
