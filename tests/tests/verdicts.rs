//! test_run verdict tests: every parser path, rule kind, limit kind and mode,
//! run through the real program in the kernel.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use ipnet::IpNet;
use tollgate_common::{RULE_ALLOW, RULE_DENY, RULE_TIER, RuleValue, Verdict};
use tollgate_tests::{
    packet::{Ext, Packet, TCP_ACK, TCP_PSH, TCP_SYN},
    privileged,
    probes::{self, Probes},
    program::{TestProgram, TierSpec, XDP_DROP, XDP_PASS},
};

const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn program(default: TierSpec) -> TestProgram {
    let mut p = TestProgram::load().expect("load");
    p.maps.set_tier(0, &default.config()).unwrap();
    p
}

fn count(p: &TestProgram, tier: u32, v: Verdict) -> u64 {
    p.maps.counter(tier, v).unwrap().packets
}

/// Runs `frame` `n` times, returning how many passed.
fn passes(p: &mut TestProgram, frame: &[u8], n: usize) -> usize {
    (0..n)
        .filter(|_| {
            let action = p.run(frame).unwrap();
            assert!(action == XDP_PASS || action == XDP_DROP, "action {action}");
            action == XDP_PASS
        })
        .count()
}

#[test]
fn parser_paths_pass_under_no_limits() {
    if !privileged("parser_paths_pass_under_no_limits") {
        return;
    }
    let mut p = program(TierSpec::default());
    let v6: Ipv6Addr = "2001:db8:1:2::9".parse().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ipv4 udp", Packet::from(A).udp().payload(b"hi").build()),
        ("ipv4 tcp syn", Packet::from(A).tcp(TCP_SYN).build()),
        (
            "ipv4 tcp options",
            Packet::from(A)
                .tcp_options(TCP_ACK, 12)
                .payload(b"x")
                .build(),
        ),
        (
            "ipv4 options",
            Packet::from(A).ipv4_options(8).udp().build(),
        ),
        ("ipv4 icmp", Packet::from(A).icmp().build()),
        ("802.1Q", Packet::from(A).vlan(0x8100).udp().build()),
        ("802.1ad", Packet::from(A).vlan(0x88a8).udp().build()),
        (
            "QinQ",
            Packet::from(A)
                .vlan(0x88a8)
                .vlan(0x8100)
                .tcp(TCP_SYN)
                .build(),
        ),
        (
            "ipv4 non-first fragment",
            Packet::from(A).ipv4_fragment(100).payload(&[0; 32]).build(),
        ),
        ("ipv6 udp", Packet::from(v6).udp().build()),
        ("ipv6 tcp", Packet::from(v6).tcp(TCP_SYN).build()),
        (
            "ipv6 hop-by-hop",
            Packet::from(v6).ext(Ext::HopByHop).udp().build(),
        ),
        (
            "ipv6 routing",
            Packet::from(v6).ext(Ext::Routing).tcp(TCP_ACK).build(),
        ),
        (
            "ipv6 dstopts",
            Packet::from(v6).ext(Ext::DstOpts).udp().build(),
        ),
        (
            "ipv6 first fragment",
            Packet::from(v6).ext(Ext::Fragment(0)).udp().build(),
        ),
        (
            "ipv6 non-first fragment",
            Packet::from(v6).ext(Ext::Fragment(10)).udp().build(),
        ),
        (
            "ipv6 six extension headers",
            Packet::from(v6)
                .ext(Ext::HopByHop)
                .ext(Ext::DstOpts)
                .ext(Ext::Routing)
                .ext(Ext::Fragment(0))
                .ext(Ext::DstOpts)
                .ext(Ext::DstOpts)
                .tcp(TCP_SYN)
                .build(),
        ),
        (
            "vlan + ipv6 ext",
            Packet::from(v6)
                .vlan(0x8100)
                .ext(Ext::Routing)
                .udp()
                .build(),
        ),
    ];
    for (name, frame) in &cases {
        assert_eq!(p.run(frame).unwrap(), XDP_PASS, "{name}");
    }
    assert_eq!(count(&p, 0, Verdict::Passed), cases.len() as u64);
    assert_eq!(count(&p, 0, Verdict::Malformed), 0);
}

#[test]
fn malformed_and_truncated_frames_have_defined_verdicts() {
    if !privileged("malformed_and_truncated_frames_have_defined_verdicts") {
        return;
    }
    let mut p = program(TierSpec::default());
    // Not IP: passed and counted as such.
    let mut arp = Packet::from(A).udp().build();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(p.run(&arp).unwrap(), XDP_PASS);
    assert_eq!(count(&p, 0, Verdict::NotIp), 1);

    // Every truncation of a QinQ IPv4 TCP frame with options: never aborted;
    // cut inside L2/L3 -> dropped as malformed; cut inside TCP -> dropped as
    // malformed but charged to its source; whole frame -> passed.
    let frame = Packet::from(A)
        .vlan(0x88a8)
        .vlan(0x8100)
        .ipv4_options(8)
        .tcp_options(TCP_ACK, 8)
        .build();
    // (test_run refuses frames shorter than an Ethernet header.)
    let l3_end = 14 + 8 + 28;
    for len in 14..l3_end {
        assert_eq!(
            p.run(&frame[..len]).unwrap(),
            XDP_DROP,
            "truncated at {len}"
        );
    }
    assert!(
        p.maps.source_v4(A).is_none(),
        "no source is invented from a cut IP header"
    );
    for len in l3_end..frame.len() {
        assert_eq!(
            p.run(&frame[..len]).unwrap(),
            XDP_DROP,
            "truncated at {len}"
        );
    }
    // Cuts after the IP header were charged to the source (it has state now).
    assert!(p.maps.source_v4(A).is_some());
    assert_eq!(p.run(&frame).unwrap(), XDP_PASS);
    assert_eq!(count(&p, 0, Verdict::Malformed), (frame.len() - 14) as u64);

    // Bad IPv4 header length, bad version, TCP doff < 5, 3 VLAN tags, 7 IPv6
    // extension headers: all dropped as malformed.
    let mut bad_ihl = Packet::from(A).udp().build();
    bad_ihl[14] = 0x43;
    let mut bad_version = Packet::from(A).udp().build();
    bad_version[14] = 0x55;
    let mut bad_doff = Packet::from(A).tcp(TCP_ACK).build();
    bad_doff[14 + 20 + 12] = 0x40;
    let three_tags = Packet::from(A)
        .vlan(0x88a8)
        .vlan(0x8100)
        .vlan(0x8100)
        .udp()
        .build();
    let mut seven = Packet::from("2001:db8::1".parse::<Ipv6Addr>().unwrap());
    for _ in 0..7 {
        seven = seven.ext(Ext::DstOpts);
    }
    let seven = seven.udp().build();
    let before = count(&p, 0, Verdict::Malformed);
    for (name, f) in [
        ("ihl 3", &bad_ihl),
        ("version 5", &bad_version),
        ("doff 4", &bad_doff),
        ("three vlan tags", &three_tags),
        ("seven ipv6 extension headers", &seven),
    ] {
        assert_eq!(p.run(f).unwrap(), XDP_DROP, "{name}");
    }
    assert_eq!(count(&p, 0, Verdict::Malformed), before + 5);
}

#[test]
fn rules_allow_deny_and_tiers() {
    if !privileged("rules_allow_deny_and_tiers") {
        return;
    }
    // Default tier 0: 1 packet burst; tier 1: unlimited-ish.
    let mut p = program(TierSpec {
        packets: Some((1, 1)),
        ..Default::default()
    });
    p.maps
        .set_tier(
            1,
            &TierSpec {
                packets: Some((1000, 1000)),
                ..Default::default()
            }
            .config(),
        )
        .unwrap();
    let rule = |action, tier| RuleValue {
        action,
        tier,
        expires_ns: 0,
    };
    p.maps
        .set_rule(
            "198.51.100.0/24".parse::<IpNet>().unwrap(),
            rule(RULE_TIER, 1),
        )
        .unwrap();
    p.maps
        .set_rule(
            "198.51.100.64/26".parse::<IpNet>().unwrap(),
            rule(RULE_DENY, 1),
        )
        .unwrap();
    p.maps
        .set_rule(
            "192.0.2.0/24".parse::<IpNet>().unwrap(),
            rule(RULE_ALLOW, 0),
        )
        .unwrap();
    p.maps
        .set_rule(
            "2001:db8:aa::/48".parse::<IpNet>().unwrap(),
            rule(RULE_DENY, 0),
        )
        .unwrap();

    let tiered = Packet::from(Ipv4Addr::new(198, 51, 100, 5)).udp().build();
    assert_eq!(passes(&mut p, &tiered, 50), 50, "tier 1 has room for 50");
    let denied = Packet::from(Ipv4Addr::new(198, 51, 100, 70)).udp().build();
    assert_eq!(passes(&mut p, &denied, 5), 0, "longest prefix (deny) wins");
    let allowed = Packet::from(Ipv4Addr::new(192, 0, 2, 1)).udp().build();
    assert_eq!(
        passes(&mut p, &allowed, 50),
        50,
        "allow bypasses the 1-packet default"
    );
    let default = Packet::from(A).udp().build();
    assert_eq!(
        passes(&mut p, &default, 5),
        1,
        "unmatched: default tier, burst 1"
    );
    let denied6 = Packet::from("2001:db8:aa:1::1".parse::<Ipv6Addr>().unwrap())
        .udp()
        .build();
    assert_eq!(passes(&mut p, &denied6, 3), 0);

    assert_eq!(count(&p, 1, Verdict::Passed), 50);
    assert_eq!(count(&p, 1, Verdict::Denied), 5);
    assert_eq!(count(&p, 0, Verdict::Allowed), 50);
    assert_eq!(count(&p, 0, Verdict::Passed), 1);
    assert_eq!(count(&p, 0, Verdict::DroppedPackets), 4);
    assert_eq!(count(&p, 0, Verdict::Denied), 3);

    // Removing the deny rule restores the /24's tier.
    assert!(
        p.maps
            .remove_rule("198.51.100.64/26".parse().unwrap())
            .unwrap()
    );
    assert_eq!(passes(&mut p, &denied, 5), 5);
    // Moving the default tier.
    p.maps.set_default_tier(1).unwrap();
    let fresh = Packet::from(Ipv4Addr::new(203, 0, 113, 99)).udp().build();
    assert_eq!(passes(&mut p, &fresh, 20), 20);
}

/// A deny with an expiry (a fleet deny until its window ends, a ban) stops
/// in the kernel at that instant: after it, the source is judged in the
/// rule's tier, with nothing from the daemon.
#[test]
fn an_expiring_deny_ends_in_the_kernel_at_its_time() {
    if !privileged("an_expiring_deny_ends_in_the_kernel_at_its_time") {
        return;
    }
    // Default tier 0 unlimited-ish; tier 1: burst 3.
    let mut p = program(TierSpec::default());
    p.maps
        .set_tier(
            1,
            &TierSpec {
                packets: Some((1, 3)),
                ..Default::default()
            }
            .config(),
        )
        .unwrap();
    let now = tollgate::datapath::kernel::clock_ns();
    let deny_until = |expires_ns| RuleValue {
        action: RULE_DENY,
        tier: 1,
        expires_ns,
    };
    let src = |i| Ipv4Addr::new(198, 18, 0, i);
    let frame = |i| Packet::from(src(i)).udp().build();
    let rule = |i| format!("{}/32", src(i)).parse::<IpNet>().unwrap();
    // Expired a second ago: judged in tier 1 (burst 3), as a tier rule.
    p.maps
        .set_rule(rule(1), deny_until(now - 1_000_000_000))
        .unwrap();
    // Expires in an hour, and never: denied.
    p.maps
        .set_rule(rule(2), deny_until(now + 3_600_000_000_000))
        .unwrap();
    p.maps.set_rule(rule(3), deny_until(0)).unwrap();
    assert_eq!(passes(&mut p, &frame(1), 5), 3, "expired: tier 1's burst");
    assert_eq!(passes(&mut p, &frame(2), 5), 0, "not yet expired");
    assert_eq!(passes(&mut p, &frame(3), 5), 0, "no expiry");
    assert_eq!(count(&p, 1, Verdict::Denied), 10);
    assert_eq!(count(&p, 1, Verdict::DroppedPackets), 2);

    // One that expires 300 ms from now: denied before, judged after,
    // without anything changing the rule.
    let expires = tollgate::datapath::kernel::clock_ns() + 300_000_000;
    p.maps.set_rule(rule(4), deny_until(expires)).unwrap();
    assert_eq!(passes(&mut p, &frame(4), 2), 0);
    while tollgate::datapath::kernel::clock_ns() < expires {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(passes(&mut p, &frame(4), 5), 3, "expired: tier 1's burst");
}

#[test]
fn ipv6_sources_are_grouped_by_tier_prefix() {
    if !privileged("ipv6_sources_are_grouped_by_tier_prefix") {
        return;
    }
    let mut p = program(TierSpec {
        packets: Some((1, 3)),
        ipv6_prefix: 64,
        ..Default::default()
    });
    // Three packets from three addresses of one /64 exhaust a burst of 3...
    for host in [
        "2001:db8:5:6::1",
        "2001:db8:5:6:ffff::2",
        "2001:db8:5:6:1:2:3:4",
    ] {
        let f = Packet::from(host.parse::<Ipv6Addr>().unwrap())
            .udp()
            .build();
        assert_eq!(p.run(&f).unwrap(), XDP_PASS, "{host}");
    }
    let rotated = Packet::from("2001:db8:5:6:dead:beef::9".parse::<Ipv6Addr>().unwrap())
        .udp()
        .build();
    assert_eq!(
        p.run(&rotated).unwrap(),
        XDP_DROP,
        "rotating within the /64 does not help"
    );
    // ...while the neighbouring /64 has its own bucket.
    let other = Packet::from("2001:db8:5:7::1".parse::<Ipv6Addr>().unwrap())
        .udp()
        .build();
    assert_eq!(p.run(&other).unwrap(), XDP_PASS);

    // A /48 tier groups the two /64s together.
    p.maps
        .set_tier(
            2,
            &TierSpec {
                packets: Some((1, 2)),
                ipv6_prefix: 48,
                ..Default::default()
            }
            .config(),
        )
        .unwrap();
    p.maps
        .set_rule(
            "2001:db8:77::/48".parse().unwrap(),
            RuleValue {
                action: RULE_TIER,
                tier: 2,
                expires_ns: 0,
            },
        )
        .unwrap();
    let a = Packet::from("2001:db8:77:1::1".parse::<Ipv6Addr>().unwrap())
        .udp()
        .build();
    let b = Packet::from("2001:db8:77:2::1".parse::<Ipv6Addr>().unwrap())
        .udp()
        .build();
    assert_eq!(p.run(&a).unwrap(), XDP_PASS);
    assert_eq!(p.run(&b).unwrap(), XDP_PASS);
    assert_eq!(p.run(&a).unwrap(), XDP_DROP);
    assert_eq!(p.maps.tracked_sources().1, 3);
}

/// A request cut in two at any byte, each half a segment of its own (what
/// an adversarial client does to hide its method or its head end), is still
/// charged: at least once, at most twice (the documented over-count when the
/// second half starts with the rest of a line ending).
#[test]
fn a_request_split_across_segments_is_charged_wherever_it_is_cut() {
    if !privileged("a_request_split_across_segments_is_charged_wherever_it_is_cut") {
        return;
    }
    let mut p = program(TierSpec {
        requests: Some((1, 2)),
        ..Default::default()
    });
    p.count_requests_on(&[80]).unwrap();
    let request = b"GET /api/v1/items?id=7 HTTP/1.1\r\nHost: a\r\n\r\n";
    for cut in 0..=request.len() {
        let src = Ipv4Addr::new(10, 1, (cut / 250) as u8, (cut % 250) as u8 + 1);
        let (a, b) = request.split_at(cut);
        let segment = |payload: &[u8]| {
            Packet::from(src)
                .tcp(TCP_ACK | TCP_PSH)
                .payload(payload)
                .build()
        };
        passes(&mut p, &segment(a), 1);
        passes(&mut p, &segment(b), 1);
        // Burst 2: if the halves were charged k (1 or 2), the whole request
        // passes 2 - k more times.
        let more = passes(&mut p, &segment(request), 2);
        assert!(
            more <= 1,
            "cut at {cut}: {:?} | {:?} was not charged",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn each_limit_kind_drops_with_its_own_reason() {
    if !privileged("each_limit_kind_drops_with_its_own_reason") {
        return;
    }
    // Packets: burst 5.
    let mut p = program(TierSpec {
        packets: Some((1, 5)),
        ..Default::default()
    });
    let f = Packet::from(A).udp().build();
    assert_eq!(passes(&mut p, &f, 20), 5);
    assert_eq!(count(&p, 0, Verdict::DroppedPackets), 15);

    // Bytes: 1000-byte burst, 300-byte frames -> 3 pass.
    let mut p = program(TierSpec {
        bytes: Some((1, 1000)),
        ..Default::default()
    });
    let f = Packet::from(A).udp().payload(&[0u8; 300 - 42]).build();
    assert_eq!(f.len(), 300);
    assert_eq!(passes(&mut p, &f, 10), 3);
    assert_eq!(count(&p, 0, Verdict::DroppedBytes), 7);

    // Connections: SYNs limited, established traffic is not.
    let mut p = program(TierSpec {
        connections: Some((1, 2)),
        ..Default::default()
    });
    let syn = Packet::from(A).tcp(TCP_SYN).build();
    let synack = Packet::from(A).tcp(TCP_SYN | TCP_ACK).build();
    let data = Packet::from(A)
        .tcp(TCP_ACK | TCP_PSH)
        .payload(b"hello world")
        .build();
    assert_eq!(passes(&mut p, &syn, 6), 2);
    assert_eq!(
        passes(&mut p, &synack, 6),
        6,
        "SYN+ACK is not a new connection"
    );
    assert_eq!(passes(&mut p, &data, 6), 6);
    assert_eq!(count(&p, 0, Verdict::DroppedConnections), 4);

    // Requests: each request head a segment ends costs one (pipelined ones
    // all, or the segment is refused whole); other payloads cost nothing.
    let mut p = program(TierSpec {
        requests: Some((1, 3)),
        ..Default::default()
    });
    p.count_requests_on(&[80]).unwrap();
    let get = Packet::from(A)
        .tcp(TCP_ACK | TCP_PSH)
        .payload(b"GET /api/v1/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .build();
    let post = Packet::from(A)
        .tcp(TCP_ACK | TCP_PSH)
        .payload(b"POST /login HTTP/1.1\r\nHost: a\r\n\r\n")
        .build();
    let body = Packet::from(A)
        .tcp(TCP_ACK | TCP_PSH)
        .payload(b"{\"json\": \"GET / \"}")
        .build();
    let head_without_end = Packet::from(A)
        .tcp(TCP_ACK | TCP_PSH)
        .payload(b"POST /login HTTP/1.1\r\n")
        .build();
    let get_vlan6 = Packet::from("2001:db8::5".parse::<Ipv6Addr>().unwrap())
        .vlan(0x8100)
        .ext(Ext::DstOpts)
        .tcp_options(TCP_ACK, 12)
        .payload(b"DELETE /item/7 HTTP/1.1\r\n\r\n")
        .build();
    let pipelined_two = Packet::from("2001:db8::5".parse::<Ipv6Addr>().unwrap())
        .tcp(TCP_ACK | TCP_PSH)
        .payload(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2))
        .build();
    let other_port = Packet::from(A)
        .tcp(TCP_ACK | TCP_PSH)
        .dst_port(5432)
        .payload(b"GET /api/v1/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .build();
    assert_eq!(passes(&mut p, &get, 2), 2);
    assert_eq!(passes(&mut p, &post, 3), 1);
    assert_eq!(passes(&mut p, &body, 5), 5, "a body is not a request");
    assert_eq!(
        passes(&mut p, &head_without_end, 5),
        5,
        "a head is charged where it ends"
    );
    assert_eq!(passes(&mut p, &other_port, 5), 5, "not an HTTP port");
    assert_eq!(count(&p, 0, Verdict::DroppedRequests), 2);
    assert_eq!(passes(&mut p, &get_vlan6, 1), 1, "its own bucket: burst 3");
    assert_eq!(
        passes(&mut p, &pipelined_two, 3),
        1,
        "two of the three left"
    );
    assert_eq!(passes(&mut p, &get_vlan6, 3), 0);

    // Aggregate: per-source room, but the tier as a whole admits 10.
    let mut p = program(TierSpec {
        packets: Some((1000, 1000)),
        aggregate: Some((1, 10)),
        ..Default::default()
    });
    let admitted: usize = (0..40u8)
        .map(|i| {
            passes(
                &mut p,
                &Packet::from(Ipv4Addr::new(100, 64, 0, i)).udp().build(),
                1,
            )
        })
        .sum();
    assert_eq!(admitted, 10);
    assert_eq!(count(&p, 0, Verdict::DroppedAggregate), 30);
}

#[test]
fn shadow_mode_counts_but_passes() {
    if !privileged("shadow_mode_counts_but_passes") {
        return;
    }
    let mut p = program(TierSpec {
        packets: Some((1, 2)),
        shadow: true,
        ..Default::default()
    });
    let f = Packet::from(A).udp().build();
    assert_eq!(passes(&mut p, &f, 10), 10);
    assert_eq!(count(&p, 0, Verdict::Passed), 2);
    assert_eq!(count(&p, 0, Verdict::ShadowWouldDrop), 8);
    // Switching to enforce keeps the bucket: the source is already over.
    p.maps
        .set_tier(
            0,
            &TierSpec {
                packets: Some((1, 2)),
                ..Default::default()
            }
            .config(),
        )
        .unwrap();
    assert_eq!(passes(&mut p, &f, 3), 0);
}

#[test]
fn non_first_fragments_and_unknown_protocols_are_charged_to_their_source() {
    if !privileged("non_first_fragments_and_unknown_protocols_are_charged_to_their_source") {
        return;
    }
    let mut p = program(TierSpec {
        packets: Some((1, 4)),
        ..Default::default()
    });
    let frag = Packet::from(A).ipv4_fragment(64).payload(&[0; 64]).build();
    let icmp = Packet::from(A).icmp().build();
    let udp = Packet::from(A).udp().build();
    assert_eq!(passes(&mut p, &frag, 2), 2);
    assert_eq!(passes(&mut p, &icmp, 2), 2);
    assert_eq!(
        passes(&mut p, &udp, 1),
        0,
        "fragments and ICMP used the burst"
    );
    let v6 = "2001:db8:9::1".parse::<Ipv6Addr>().unwrap();
    let frag6 = Packet::from(v6)
        .ext(Ext::HopByHop)
        .ext(Ext::Fragment(3))
        .payload(&[1; 16])
        .build();
    assert_eq!(passes(&mut p, &frag6, 6), 4);
}

/// A tier with a new-source budget of 3 and an aggregate ceiling of 6 (one an
/// hour each, so nothing refills during the test), per-source burst 2.
fn admission_tier(shadow: bool) -> tollgate_common::TierConfig {
    use tollgate_common::Limit;
    const HOUR: u64 = 3600 * tollgate_tests::program::SECOND;
    let mut t = TierSpec {
        shadow,
        ..Default::default()
    }
    .config();
    t.limits[tollgate_common::LimitKind::Packets as usize] = Limit::per_period(1, HOUR, 2).unwrap();
    t.aggregate = Limit::per_period(1, HOUR, 6).unwrap();
    t.new_sources = Limit::per_period(1, HOUR, 3).unwrap();
    t
}

#[test]
fn over_the_new_source_budget_sources_are_untracked_and_share_their_own_ceiling() {
    if !privileged("over_the_new_source_budget_sources_are_untracked_and_share_their_own_ceiling") {
        return;
    }
    use tollgate_tests::packet::{spoofed_v4, spoofed_v6};
    let mut p = TestProgram::load().expect("load");
    p.maps.set_tier(0, &admission_tier(false)).unwrap();
    let established = Packet::from(A).udp().build();
    assert_eq!(p.run(&established).unwrap(), XDP_PASS);
    // Ten spoofed IPv4 sources and ten IPv6 /64s: two more fit the budget
    // (3), six pass untracked within the untracked ceiling (6), the other
    // twelve are dropped.
    let flood: Vec<Vec<u8>> = (0..10)
        .map(|i| Packet::from(spoofed_v4(i)).udp().build())
        .chain((0..10).map(|i| Packet::from(spoofed_v6(i)).udp().build()))
        .collect();
    let passed = flood
        .iter()
        .filter(|f| p.run(f).unwrap() == XDP_PASS)
        .count();
    assert_eq!(passed, 8);
    assert_eq!(count(&p, 0, Verdict::Passed), 3);
    assert_eq!(count(&p, 0, Verdict::Untracked), 6);
    assert_eq!(count(&p, 0, Verdict::DroppedUntracked), 12);
    // Nothing over the budget was inserted.
    assert_eq!(p.maps.tracked_sources(), (3, 0));
    // The established source never shared a ceiling with the untracked
    // flood: its own burst (2) is all it is limited by; the aggregate (6)
    // holds the three tracked sources' first packets and this one.
    assert_eq!(passes(&mut p, &established, 3), 1);
    assert_eq!(count(&p, 0, Verdict::DroppedPackets), 2);
    assert_eq!(count(&p, 0, Verdict::DroppedAggregate), 0);
}

#[test]
fn admission_control_in_a_shadow_tier_passes_but_still_tracks_nothing_new() {
    if !privileged("admission_control_in_a_shadow_tier_passes_but_still_tracks_nothing_new") {
        return;
    }
    use tollgate_tests::packet::spoofed_v4;
    let mut p = TestProgram::load().expect("load");
    p.maps.set_tier(0, &admission_tier(true)).unwrap();
    let flood: Vec<Vec<u8>> = (0..10)
        .map(|i| Packet::from(spoofed_v4(i)).udp().build())
        .collect();
    assert_eq!(
        flood
            .iter()
            .filter(|f| p.run(f).unwrap() == XDP_PASS)
            .count(),
        10
    );
    assert_eq!(count(&p, 0, Verdict::Passed), 3);
    assert_eq!(count(&p, 0, Verdict::Untracked), 6);
    assert_eq!(count(&p, 0, Verdict::ShadowWouldDrop), 1);
    assert_eq!(p.maps.tracked_sources(), (3, 0));
}

/// The eviction this prevents: with no budget a flood of new sources turns a
/// small source map over and the established sources' state is gone; with a
/// budget every established source keeps its entry.
#[test]
fn a_flood_beyond_the_budget_cannot_evict_established_sources() {
    if !privileged("a_flood_beyond_the_budget_cannot_evict_established_sources") {
        return;
    }
    use tollgate::datapath::kernel::MapSizes;
    use tollgate_tests::packet::spoofed_v4;
    const ESTABLISHED: u32 = 100;
    const FLOOD: u32 = 20_000;
    let established: Vec<Ipv4Addr> = (0..ESTABLISHED)
        .map(|i| Ipv4Addr::new(10, 77, (i >> 8) as u8, i as u8))
        .collect();
    let survivors = |budget: bool| {
        let mut p = TestProgram::load_sized(&MapSizes {
            sources_v4: 4096,
            sources_v6: 4096,
            rules_v4: 16,
            rules_v6: 16,
            ..Default::default()
        })
        .expect("load");
        let mut t = admission_tier(false);
        t.aggregate = tollgate_common::Limit::UNLIMITED;
        if !budget {
            t.new_sources = tollgate_common::Limit::UNLIMITED;
        } else {
            t.new_sources = tollgate_common::Limit::per_period(
                1,
                3600 * tollgate_tests::program::SECOND,
                ESTABLISHED as u64 + 10,
            )
            .unwrap();
        }
        p.maps.set_tier(0, &t).unwrap();
        for a in &established {
            assert_eq!(p.run(&Packet::from(*a).udp().build()).unwrap(), XDP_PASS);
        }
        let mut frame = Packet::from(spoofed_v4(0)).udp().build();
        for i in 0..FLOOD {
            let src = spoofed_v4(i);
            if src.octets()[..2] == [10, 77] {
                continue;
            }
            frame[26..30].copy_from_slice(&src.octets());
            p.run(&frame).unwrap();
        }
        let (tracked, _) = p.maps.tracked_sources();
        let kept = established
            .iter()
            .filter(|a| p.maps.source_v4(**a).is_some())
            .count();
        (tracked, kept)
    };
    let (tracked, kept) = survivors(false);
    assert!(
        kept < ESTABLISHED as usize,
        "no budget: {kept} kept, {tracked} tracked"
    );
    let (tracked, kept) = survivors(true);
    assert_eq!(kept, ESTABLISHED as usize);
    assert_eq!(tracked, ESTABLISHED as usize + 10);
}

/// The verifier walks every path of the program up to 1,000,000 instructions;
/// a change that brings it near the limit would make tollgate unloadable on
/// the next one. The charge step is a global function (verified once), which
/// keeps the count far below it.
#[test]
fn the_program_stays_well_inside_the_verifier_limit() {
    if !privileged("the_program_stays_well_inside_the_verifier_limit") {
        return;
    }
    let p = TestProgram::load().expect("load");
    let verified = p
        .xdp_ref()
        .info()
        .unwrap()
        .verified_instruction_count()
        .expect("the kernel reports verified instructions");
    eprintln!("the verifier processed {verified} instructions (limit 1,000,000)");
    assert!(verified <= 750_000, "{verified} verified instructions");
}

/// The object the agent ships holds the `tollgate` program and its own maps
/// only: the benchmark floors and probes live in the probes object.
#[test]
fn the_production_object_holds_only_tollgate() {
    let obj = aya_obj::Object::parse(tollgate::datapath::EBPF_OBJECT).expect("parse");
    let programs: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
    assert_eq!(
        programs,
        BTreeSet::from([tollgate_common::names::PROGRAM]),
        "programs in the production object"
    );
    let maps: BTreeSet<&str> = obj.maps.keys().map(String::as_str).collect();
    for name in tollgate::datapath::kernel::MAP_NAMES {
        assert!(maps.contains(name), "{name} missing from {maps:?}");
    }
    assert!(
        !maps.iter().any(|m| m.starts_with("PROBE")),
        "a probe map in the production object: {maps:?}"
    );
    // Apart from tollgate's own maps (pinned, and per-packet scratch), only
    // aya-log's and the data sections.
    let others: Vec<_> = maps
        .iter()
        .filter(|m| !tollgate::datapath::kernel::MAP_NAMES.contains(m))
        .filter(|m| !tollgate::datapath::kernel::SCRATCH_MAP_NAMES.contains(m))
        .filter(|m| !m.starts_with("AYA_LOG") && !m.starts_with('.'))
        .collect();
    assert!(others.is_empty(), "unexpected maps: {others:?}");
}

/// The probes object holds the floors and probes the benchmarks load.
#[test]
fn the_probes_object_holds_the_probes() {
    let obj = aya_obj::Object::parse(probes::PROBES_OBJECT).expect("parse");
    let programs: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
    assert_eq!(programs, BTreeSet::from(probes::PROGRAMS));
    assert!(
        obj.maps.contains_key(probes::PROBE_SOURCES_V4),
        "{:?}",
        obj.maps.keys()
    );
    assert!(
        !obj.maps.keys().any(|m| m.starts_with("TG_")),
        "a production map in the probes object: {:?}",
        obj.maps.keys()
    );
}

/// Every probe loads and returns what the benchmarks expect of it.
#[test]
fn the_probes_load_and_return_their_verdicts() {
    if !privileged("the_probes_load_and_return_their_verdicts") {
        return;
    }
    let mut p = Probes::load(&probes::PROGRAMS).expect("load the probes");
    let frame = Packet::from(A).udp().build();
    let run = |p: &Probes, name: &str| {
        p.xdp(name)
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: 1,
                ..Default::default()
            })
            .unwrap()
            .return_value
    };
    assert_eq!(run(&p, probes::FLOOR_PASS), XDP_PASS);
    assert_eq!(run(&p, probes::FLOOR_DROP), XDP_DROP);
    assert_eq!(run(&p, probes::PROBE_CLOCK), XDP_PASS);
    assert_eq!(run(&p, probes::PROBE_COARSE_CLOCK), XDP_PASS);
    assert_eq!(run(&p, probes::PROBE_JIFFIES), XDP_PASS);
    // The call returns its argument; the loops pass only if every
    // iteration ran.
    assert_eq!(run(&p, probes::PROBE_CALL), XDP_PASS);
    assert_eq!(run(&p, probes::PROBE_LOOP_1), XDP_PASS);
    assert_eq!(run(&p, probes::PROBE_LOOP_8), XDP_PASS);
    // The key is absent until the host tracks it.
    assert_eq!(run(&p, probes::PROBE_SOURCE_LOOKUP), XDP_DROP);
    p.track_probe_source().unwrap();
    assert_eq!(run(&p, probes::PROBE_SOURCE_LOOKUP), XDP_PASS);
}
