//! test_run verdict tests for routes (`common::route`): what each request
//! head costs its source by the longest matching route, the ceilings all
//! sources share, shadow routes, and the heads whose route the kernel cannot
//! see (split across segments, past the routed heads of a segment).

use std::net::Ipv4Addr;

use tollgate_common::{RULE_ALLOW, RULE_TIER, RuleValue, Verdict, route::ROUTED_HEADS};
use tollgate_tests::{
    packet::{Packet, TCP_ACK, TCP_PSH},
    privileged,
    program::{TestProgram, TierSpec, XDP_DROP, XDP_PASS, route},
};

/// A program with `default` as tier 0, HTTP on ports 80 and 8443, and the
/// routes of [`routes`].
fn program(default: TierSpec) -> TestProgram {
    let mut p = TestProgram::load().expect("load");
    p.maps.set_tier(0, &default.config()).unwrap();
    p.count_requests_on(&[80, 8443]).unwrap();
    p
}

/// Slots of the routes `with_routes` writes.
const SEARCH: u32 = 0;
const API: u32 = 1;
const ROOT: u32 = 2;
const SERVICE: u32 = 3;

/// `POST /api/search` costs 20, `POST /api` 5, `GET /` 1 (on port 80); the
/// whole of port 8443 costs 10. Split heads cost the dearest: 20.
fn with_routes(default: TierSpec) -> TestProgram {
    let mut p = program(default);
    p.add_route(80, "POST /api/search", route(SEARCH, 20, None, false))
        .unwrap();
    p.add_route(80, "POST /api", route(API, 5, None, false))
        .unwrap();
    p.add_route(80, "GET /", route(ROOT, 1, None, false))
        .unwrap();
    p.add_route(8443, "", route(SERVICE, 10, None, false))
        .unwrap();
    p.set_split_head_cost(20).unwrap();
    p
}

fn segment(src: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    Packet::from(src)
        .tcp(TCP_ACK | TCP_PSH)
        .dst_port(port)
        .payload(payload)
        .build()
}

fn request(line: &str) -> Vec<u8> {
    format!("{line} HTTP/1.1\r\nHost: api.example\r\n\r\n").into_bytes()
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

/// One program with the routes of [`with_routes`], where every question
/// gets a fresh source in a tier of its own (a rule maps it there), so that
/// it starts with a full bucket of the burst it asks for.
struct Fresh {
    p: TestProgram,
    used: u32,
}

impl Fresh {
    fn new() -> Fresh {
        Fresh {
            p: with_routes(TierSpec::default()),
            used: 0,
        }
    }

    /// How many of `n` copies of `payload` to `port` pass from a fresh
    /// source with a requests burst of `burst` and no refill to speak of
    /// (1/s): a segment charged `c` passes `burst / c` times.
    fn passes_within(&mut self, burst: u64, port: u16, payload: &[u8], n: usize) -> usize {
        self.used += 1;
        let tier = self.used;
        let src = Ipv4Addr::new(10, 2, 0, tier as u8);
        self.p
            .maps
            .set_tier(
                tier,
                &TierSpec {
                    requests: Some((1, burst)),
                    ..Default::default()
                }
                .config(),
            )
            .unwrap();
        self.p
            .maps
            .set_rule(
                format!("{src}/32").parse().unwrap(),
                RuleValue {
                    action: RULE_TIER,
                    tier,
                    expires_ns: 0,
                },
            )
            .unwrap();
        passes(&mut self.p, &segment(src, port, payload), n)
    }
}

const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

#[test]
fn each_request_is_charged_its_longest_matching_routes_cost() {
    if !privileged("each_request_is_charged_its_longest_matching_routes_cost") {
        return;
    }
    // Burst 40: a cost-20 request passes twice, a cost-5 one eight times.
    let mut fresh = Fresh::new();
    let cases: [(&str, u16, Vec<u8>, usize); 10] = [
        ("longest prefix", 80, request("POST /api/search?q=1"), 2),
        ("byte prefix", 80, request("POST /api/searchers"), 2),
        ("shorter prefix", 80, request("POST /api/items"), 8),
        ("method differs", 80, request("PUT /api/search"), 40),
        ("case differs: a path", 80, request("POST /API/search"), 40),
        ("no route", 80, request("DELETE /x"), 40),
        ("a whole port", 8443, request("GET /anything"), 4),
        (
            "a path longer than a key",
            80,
            request(&format!("POST /api/search/{}", "a".repeat(3000))),
            2,
        ),
        // A lowercase method is not a request line: the head it ends is
        // charged as a head whose route is unknown, the dearest cost.
        ("case differs: a method", 80, request("post /api/x"), 2),
        // Not HTTP: no head ends, nothing charged.
        (
            "binary payload",
            80,
            vec![0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3],
            45,
        ),
    ];
    for (what, port, payload, expected) in cases {
        assert_eq!(
            fresh.passes_within(40, port, &payload, 45),
            expected,
            "{what}"
        );
    }
    // Off the HTTP ports the same bytes charge nothing.
    assert_eq!(
        fresh.passes_within(40, 9000, &request("POST /api/search"), 45),
        45
    );
}

#[test]
fn pipelined_requests_are_each_charged_their_own_route() {
    if !privileged("pipelined_requests_are_each_charged_their_own_route") {
        return;
    }
    let mut fresh = Fresh::new();
    // 1 + 20 + 5 = 26 per segment: burst 40 admits one segment.
    let mut pipelined = request("GET /a");
    pipelined.extend(request("POST /api/search"));
    pipelined.extend(request("POST /api/x"));
    assert_eq!(fresh.passes_within(40, 80, &pipelined, 3), 1);
    assert_eq!(fresh.passes_within(52, 80, &pipelined, 3), 2);
    // A cheap request first does not make the dear ones behind it cheap.
    let mut cheap_first = request("GET /a");
    cheap_first.extend(request("POST /api/search").repeat(2));
    assert_eq!(fresh.passes_within(40, 80, &cheap_first, 3), 0);
    assert_eq!(fresh.passes_within(41, 80, &cheap_first, 3), 1);

    // The first request and ROUTED_HEADS more are looked up; the heads past
    // them cost the dearest route's 20 each.
    let heads = ROUTED_HEADS + 4;
    let many = request("GET /a").repeat(heads);
    let cost = (ROUTED_HEADS + 1) as u64 + 3 * 20;
    assert_eq!(fresh.passes_within(cost, 80, &many, 3), 1);
    assert_eq!(fresh.passes_within(cost - 1, 80, &many, 3), 0);
}

#[test]
fn a_request_split_across_segments_costs_at_least_its_route() {
    if !privileged("a_request_split_across_segments_costs_at_least_its_route") {
        return;
    }
    let whole = request("POST /api/search");
    // Burst 40: each split request charges 20 (the dearest route) where its
    // head ends, never less; so two pass, whichever way it is cut. One
    // source per cut, so each starts with a full bucket.
    let mut p = with_routes(TierSpec {
        requests: Some((1, 40)),
        ..Default::default()
    });
    for cut in 1..whole.len() {
        let (a, b) = whole.split_at(cut);
        let src = Ipv4Addr::new(10, 1, 0, cut as u8);
        let mut passed = 0;
        for _ in 0..3 {
            let first = p.run(&segment(src, 80, a)).unwrap() == XDP_PASS;
            let second = p.run(&segment(src, 80, b)).unwrap() == XDP_PASS;
            passed += (first && second) as usize;
        }
        // Never more than two (the split request costs its route's 20 at
        // least); a cut just before a line end makes the segment after it
        // begin with the rest of a head end, which is charged as one more
        // head (`HeadEnds`' conservative start), so then only one passes.
        assert!(
            (1..=2).contains(&passed),
            "cut at {cut}: {:?} | {:?}: {passed} passed",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
        if !b.starts_with(b"\r\n") && !b.starts_with(b"\n") {
            assert_eq!(passed, 2, "cut at {cut}");
        }
    }
}

#[test]
fn a_route_ceiling_is_shared_by_every_source_and_spares_cheap_routes() {
    if !privileged("a_route_ceiling_is_shared_by_every_source_and_spares_cheap_routes") {
        return;
    }
    let mut p = program(TierSpec {
        requests: Some((1, 10)),
        ..Default::default()
    });
    p.add_route(80, "GET /report", route(0, 1, Some((1, 5)), false))
        .unwrap();
    p.add_route(80, "GET /cheap", route(1, 1, None, false))
        .unwrap();
    let sources: Vec<Ipv4Addr> = (1..=20).map(|i| Ipv4Addr::new(10, 9, 0, i)).collect();
    let dear = request("GET /report/2026");
    let cheap = request("GET /cheap");
    let mut passed = 0;
    for &src in &sources {
        passed += passes(&mut p, &segment(src, 80, &dear), 1);
        assert_eq!(passes(&mut p, &segment(src, 80, &cheap), 1), 1, "{src}");
    }
    assert_eq!(passed, 5, "20 sources share a ceiling of burst 5");
    assert_eq!(
        p.maps
            .counter(0, Verdict::DroppedRouteCeiling)
            .unwrap()
            .packets,
        15
    );
    let counters = p.maps.route_counters().unwrap();
    assert_eq!(counters[0].requests, 20);
    assert_eq!(counters[0].dropped_ceiling, 15);
    assert_eq!(counters[0].dropped, 15);
    assert_eq!(counters[1].requests, 20);
    assert_eq!(counters[1].dropped, 0);

    // An allow-listed source is not limited, routes' ceilings included.
    let trusted = Ipv4Addr::new(10, 9, 1, 1);
    p.maps
        .set_rule(
            format!("{trusted}/32").parse().unwrap(),
            RuleValue {
                action: RULE_ALLOW,
                tier: 0,
                expires_ns: 0,
            },
        )
        .unwrap();
    assert_eq!(passes(&mut p, &segment(trusted, 80, &dear), 3), 3);
}

#[test]
fn a_request_dropped_later_gives_its_ceiling_back() {
    if !privileged("a_request_dropped_later_gives_its_ceiling_back") {
        return;
    }
    // Burst 2 per source; a ceiling of burst 4 for the route.
    let mut p = program(TierSpec {
        requests: Some((1, 2)),
        ..Default::default()
    });
    p.add_route(80, "GET /report", route(0, 1, Some((1, 4)), false))
        .unwrap();
    // Three pipelined requests exceed the source's burst: dropped, and the
    // ceiling keeps all four for others.
    let three = request("GET /report").repeat(3);
    assert_eq!(passes(&mut p, &segment(A, 80, &three), 5), 0);
    let two = request("GET /report").repeat(2);
    let others = [Ipv4Addr::new(10, 8, 0, 1), Ipv4Addr::new(10, 8, 0, 2)];
    for src in others {
        assert_eq!(passes(&mut p, &segment(src, 80, &two), 1), 1, "{src}");
    }
    // Now the ceiling is spent.
    assert_eq!(
        passes(
            &mut p,
            &segment(Ipv4Addr::new(10, 8, 0, 3), 80, &request("GET /report")),
            1
        ),
        0
    );
    let counters = p.maps.route_counters().unwrap();
    assert_eq!(counters[0].requests, 3 * 5 + 4 + 1);
    assert_eq!(counters[0].dropped_ceiling, 1);
}

#[test]
fn shadow_routes_count_and_pass() {
    if !privileged("shadow_routes_count_and_pass") {
        return;
    }
    // A shadow route charges what an unrouted request does (1) and its
    // ceiling only counts what it would refuse.
    let mut p = program(TierSpec {
        requests: Some((1, 10)),
        ..Default::default()
    });
    p.add_route(80, "POST /api/search", route(0, 20, Some((1, 3)), true))
        .unwrap();
    let frame = segment(A, 80, &request("POST /api/search"));
    assert_eq!(passes(&mut p, &frame, 12), 10, "charged 1 each, burst 10");
    let counters = p.maps.route_counters().unwrap();
    assert_eq!(counters[0].requests, 12);
    assert_eq!(counters[0].shadow_would_drop, 12 - 3);
    assert_eq!(counters[0].dropped_ceiling, 0);
    assert_eq!(
        p.maps
            .counter(0, Verdict::DroppedRouteCeiling)
            .unwrap()
            .packets,
        0
    );

    // An enforced ceiling in a shadow tier: counted as a would-drop, passed.
    let mut p = program(TierSpec {
        shadow: true,
        ..Default::default()
    });
    p.add_route(80, "GET /", route(0, 1, Some((1, 2)), false))
        .unwrap();
    assert_eq!(passes(&mut p, &segment(A, 80, &request("GET /x")), 5), 5);
    assert_eq!(
        p.maps.counter(0, Verdict::ShadowWouldDrop).unwrap().packets,
        3
    );
    let counters = p.maps.route_counters().unwrap();
    assert_eq!(
        (
            counters[0].dropped_ceiling,
            counters[0].shadow_would_drop,
            counters[0].dropped
        ),
        (0, 3, 0),
        "refused but passed: would-drops"
    );
}

#[test]
fn a_segment_with_more_distinct_ceilinged_routes_than_slots_is_refused() {
    if !privileged("a_segment_with_more_distinct_ceilinged_routes_than_slots_is_refused") {
        return;
    }
    let mut p = program(TierSpec::default());
    let paths = ["/a", "/b", "/c", "/d", "/e"];
    for (i, path) in paths.iter().enumerate() {
        p.add_route(
            80,
            &format!("GET {path}"),
            route(i as u32, 1, Some((1, 100)), false),
        )
        .unwrap();
    }
    p.add_route(80, "GET /f", route(5, 1, None, false)).unwrap();
    let mut four = Vec::new();
    for path in &paths[..4] {
        four.extend(request(&format!("GET {path}")));
    }
    four.extend(request("GET /f"));
    assert_eq!(
        passes(&mut p, &segment(A, 80, &four), 1),
        1,
        "four ceilings and a plain route"
    );
    let mut five = Vec::new();
    for path in paths {
        five.extend(request(&format!("GET {path}")));
    }
    assert_eq!(
        passes(&mut p, &segment(A, 80, &five), 1),
        0,
        "five ceilings"
    );
    assert_eq!(
        p.maps
            .counter(0, Verdict::DroppedRouteCeiling)
            .unwrap()
            .packets,
        1
    );
}

#[test]
fn untracked_sources_go_through_the_ceilings() {
    if !privileged("untracked_sources_go_through_the_ceilings") {
        return;
    }
    // No new sources at all are tracked (a budget spent by the first), so
    // every other source is untracked; the ceiling still holds them.
    let mut p = program(TierSpec {
        new_sources: Some((1, 1)),
        ..Default::default()
    });
    p.add_route(80, "GET /report", route(0, 1, Some((1, 3)), false))
        .unwrap();
    let mut passed = 0;
    for i in 1..=10 {
        passed += passes(
            &mut p,
            &segment(Ipv4Addr::new(10, 7, 0, i), 80, &request("GET /report")),
            1,
        );
    }
    assert_eq!(passed, 3);
    assert!(p.maps.counter(0, Verdict::Untracked).unwrap().packets >= 2);
}

#[test]
fn a_route_of_a_host_matches_that_hosts_requests_only() {
    if !privileged("a_route_of_a_host_matches_that_hosts_requests_only") {
        return;
    }
    let mut p = program(TierSpec::default());
    // Burst 40 per source: cost 20 (api.example's search), 5 (any host's
    // search), 10 (anything else to admin.example).
    p.add_host_route(
        80,
        "api.example",
        "POST /api/search",
        route(0, 20, None, false),
    )
    .unwrap();
    p.add_route(80, "POST /api/search", route(1, 5, None, false))
        .unwrap();
    p.add_host_route(80, "admin.example", "", route(2, 10, None, false))
        .unwrap();
    let flags = p.maps.settings().unwrap().flags;
    assert_ne!(flags & tollgate_common::SETTINGS_ROUTE_HOSTS, 0);
    let mut fresh = Fresh { p, used: 0 };
    let with_host = |host: &str, line: &str, before: &str| {
        format!("{line} HTTP/1.1\r\n{before}{host}\r\nAccept: */*\r\n\r\n").into_bytes()
    };
    let cases: [(&str, Vec<u8>, usize); 9] = [
        (
            "the host's route",
            with_host("Host: api.example", "POST /api/search", ""),
            2,
        ),
        (
            "case and port ignored",
            with_host("hOsT:API.Example:8080", "POST /api/search?x", ""),
            2,
        ),
        (
            "Host after other headers",
            with_host(
                "Host: api.example",
                "POST /api/search",
                "User-Agent: x\r\nX-Pad: yyyy\r\n",
            ),
            2,
        ),
        (
            "another host: the hostless route",
            with_host("Host: www.example", "POST /api/search", ""),
            8,
        ),
        (
            "no Host header",
            b"POST /api/search HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec(),
            8,
        ),
        // A host's whole-port route wins over longer hostless routes.
        (
            "a host's whole port",
            with_host("Host: admin.example", "POST /api/search", ""),
            4,
        ),
        (
            "a host's whole port, any line",
            with_host("Host: admin.example", "GET /", ""),
            4,
        ),
        // Not a header name at a line start; an empty value.
        (
            "X-Host is not Host",
            with_host("X-Host: api.example", "POST /api/search", ""),
            8,
        ),
        ("empty Host", with_host("Host: ", "POST /api/search", ""), 8),
    ];
    for (what, payload, expected) in cases {
        assert_eq!(
            fresh.passes_within(40, 80, &payload, 45),
            expected,
            "{what}"
        );
    }
    // Pipelined: each request's own Host.
    let mut two = with_host("Host: api.example", "POST /api/search", "");
    two.extend(with_host("Host: www.example", "POST /api/search", ""));
    assert_eq!(
        fresh.passes_within(25, 80, &two, 3),
        1,
        "20 + 5 per segment"
    );
    assert_eq!(fresh.passes_within(24, 80, &two, 3), 0);
}
