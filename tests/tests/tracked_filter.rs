//! The tracked-source filter (`common::tracked`, `TG_TRACKED`) by test_run
//! on the loaded program: a source the filter has not seen skips the source
//! map's lookup (that is what makes a spoofed flood's packets cheap), and the
//! daemon's ageing (`datapath::tracked::age`) keeps every source seen within
//! a period while forgetting those silent for two.

use std::net::Ipv4Addr;

use tollgate::datapath::tracked;
use tollgate_common::{
    Limit, LimitKind, SourceState, Verdict,
    tracked::{FilterBit, TRACKED_FILTER_SIZE, filter_bits},
};
use tollgate_tests::{
    packet::{Packet, spoofed_v4},
    privileged,
    program::{SECOND, TestProgram, TierSpec, XDP_DROP, XDP_PASS},
};

const TALKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const SILENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

/// A default tier with a new-source budget of `budget`, an aggregate ceiling
/// of 20 (tracked sources together, and untracked ones apart: one an hour,
/// so nothing refills during a test), per-source burst 100.
fn program(budget: u64) -> TestProgram {
    const HOUR: u64 = 3600 * SECOND;
    let mut t = TierSpec::default().config();
    t.limits[LimitKind::Packets as usize] = Limit::per_period(1, HOUR, 100).unwrap();
    t.aggregate = Limit::per_period(1, HOUR, 20).unwrap();
    t.new_sources = Limit::per_period(1, HOUR, budget).unwrap();
    let mut p = TestProgram::load().expect("load");
    p.maps.set_tier(0, &t).unwrap();
    p
}

fn count(p: &TestProgram, v: Verdict) -> u64 {
    p.maps.counter(0, v).unwrap().packets
}

fn key(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// Spends the rest of the budget and the untracked ceiling on spoofed sources.
fn exhaust(p: &mut TestProgram) {
    for i in 0..60 {
        p.run(&Packet::from(spoofed_v4(i)).udp().build()).unwrap();
    }
    assert!(count(p, Verdict::DroppedUntracked) > 0, "budget spent");
}

#[test]
fn a_source_the_filter_has_not_seen_is_judged_without_a_lookup() {
    if !privileged("a_source_the_filter_has_not_seen_is_judged_without_a_lookup") {
        return;
    }
    let mut p = program(2);
    let talker = Packet::from(TALKER).udp().build();
    assert_eq!(p.run(&talker).unwrap(), XDP_PASS);
    exhaust(&mut p);
    // A state the kernel did not insert (so its bit is clear): over the
    // budget, its source is judged as untracked, which it can only be if
    // the map was not asked.
    p.maps
        .sources_v4
        .insert(key(SILENT), SourceState::default(), 0)
        .unwrap();
    let before = count(&p, Verdict::DroppedUntracked);
    assert_eq!(
        p.run(&Packet::from(SILENT).udp().build()).unwrap(),
        XDP_DROP
    );
    assert_eq!(count(&p, Verdict::DroppedUntracked), before + 1);
    // The source the kernel tracked is found: its bucket judges it.
    let passed = count(&p, Verdict::Passed);
    assert_eq!(p.run(&talker).unwrap(), XDP_PASS);
    assert_eq!(count(&p, Verdict::Passed), passed + 1);
    // A filter whose size word is not a size is off: every source is looked
    // up, so the state inserted from here is found.
    p.maps.tracked.set(TRACKED_FILTER_SIZE, 0, 0).unwrap();
    assert_eq!(
        p.run(&Packet::from(SILENT).udp().build()).unwrap(),
        XDP_PASS
    );
    assert_eq!(count(&p, Verdict::Passed), passed + 2);
}

#[test]
fn ageing_keeps_sources_seen_within_a_period_and_forgets_those_silent_for_two() {
    if !privileged("ageing_keeps_sources_seen_within_a_period_and_forgets_those_silent_for_two") {
        return;
    }
    let mut p = program(2);
    let bits = p.maps.tracked.get(&TRACKED_FILTER_SIZE, 0).unwrap() as u32;
    assert_eq!(
        bits,
        filter_bits(4096),
        "the loader sized the filter for TestProgram::load's 4,096-source maps"
    );
    assert_ne!(
        FilterBit::v4(key(TALKER), bits),
        FilterBit::v4(key(SILENT), bits),
        "the test's two sources must not share a bit"
    );
    let talker = Packet::from(TALKER).udp().build();
    let silent = Packet::from(SILENT).udp().build();
    assert_eq!(p.run(&talker).unwrap(), XDP_PASS);
    assert_eq!(p.run(&silent).unwrap(), XDP_PASS);
    exhaust(&mut p);
    let passed = count(&p, Verdict::Passed);

    // One ageing: both were seen in the period before, both are still known.
    let aged = tracked::age(&mut p.maps.tracked).unwrap();
    assert_eq!(aged.generation, 1);
    assert_eq!(aged.cleared_bits, 0, "the older generation was empty");
    assert_eq!(p.run(&talker).unwrap(), XDP_PASS);
    assert_eq!(p.run(&silent).unwrap(), XDP_PASS);
    assert_eq!(count(&p, Verdict::Passed), passed + 2);

    // Only the talker speaks in the next period.
    let aged = tracked::age(&mut p.maps.tracked).unwrap();
    assert_eq!(aged.generation, 0);
    assert!(aged.cleared_bits >= 2, "{aged:?}");
    assert_eq!(p.run(&talker).unwrap(), XDP_PASS);
    let aged = tracked::age(&mut p.maps.tracked).unwrap();
    assert_eq!(aged.generation, 1);
    // The talker is still known; the silent source, two ageings after its
    // last packet, is judged like a new one: over the spent budget, as
    // untracked (dropped over the spent untracked ceiling), although its
    // state is still in the map.
    assert_eq!(p.run(&talker).unwrap(), XDP_PASS);
    assert_eq!(count(&p, Verdict::Passed), passed + 4);
    let dropped = count(&p, Verdict::DroppedUntracked);
    assert_eq!(p.run(&silent).unwrap(), XDP_DROP);
    assert_eq!(count(&p, Verdict::DroppedUntracked), dropped + 1);
    assert!(p.maps.source_v4(SILENT).is_some(), "its state stays");
}

#[test]
fn a_forgotten_source_admitted_again_keeps_its_buckets() {
    if !privileged("a_forgotten_source_admitted_again_keeps_its_buckets") {
        return;
    }
    // A budget that does not run out: a forgotten source comes back through
    // it, the insert finds its entry, and its bucket (100 packets of burst,
    // 3 spent) goes on from where it was.
    let mut p = program(1000);
    let silent = Packet::from(SILENT).udp().build();
    for _ in 0..3 {
        assert_eq!(p.run(&silent).unwrap(), XDP_PASS);
    }
    let before = p.maps.source_v4(SILENT).unwrap();
    for _ in 0..2 {
        tracked::age(&mut p.maps.tracked).unwrap();
    }
    assert_eq!(p.run(&silent).unwrap(), XDP_PASS);
    let after = p.maps.source_v4(SILENT).unwrap();
    assert!(
        after.packets_tat > before.packets_tat,
        "the old bucket was charged: {before:?} -> {after:?}"
    );
    assert_eq!(p.maps.tracked_sources(), (1, 0));
}

/// At the default map size (1,048,576 sources) the loader sizes the filter at
/// 2^23 bits a generation, and ageing walks all of it (the time it takes is
/// printed: the daemon does it in chunks, its lock released between them).
#[test]
fn a_default_sized_filter_ages_whole() {
    if !privileged("a_default_sized_filter_ages_whole") {
        return;
    }
    let mut p =
        TestProgram::load_sized(&tollgate::datapath::kernel::MapSizes::default()).expect("load");
    let start = std::time::Instant::now();
    let aged = tracked::age(&mut p.maps.tracked).unwrap();
    let took = start.elapsed();
    eprintln!(
        "aged a filter of {} bits a generation in {took:?}",
        aged.bits
    );
    assert_eq!(aged.bits, 1 << filter_bits(1 << 20));
}
