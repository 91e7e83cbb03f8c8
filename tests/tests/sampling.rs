//! HTTP request and verdict sampling into the ring buffer, through test_run.

use std::net::Ipv4Addr;

use aya::maps::{MapData, RingBuf};
use tollgate::datapath::samples::Sample;
use tollgate_common::{Limit, SETTINGS_COUNT_REQUESTS, SampleHeader, Settings, Verdict};
use tollgate_tests::{
    packet::{Packet, TCP_ACK, TCP_PSH},
    privileged,
    program::{SECOND, TestProgram, TierSpec, XDP_DROP, XDP_PASS},
};

const SRC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 40);

fn program(
    settings: impl FnOnce(&mut Settings),
    tier: TierSpec,
) -> (TestProgram, RingBuf<MapData>) {
    let mut p = TestProgram::load().unwrap();
    p.maps.set_tier(0, &tier.config()).unwrap();
    let mut s = p.maps.settings().unwrap();
    s.http_ports[0] = 80;
    s.http_snap_len = 512;
    s.http_sample_every = 1;
    settings(&mut s);
    p.maps.set_settings(s).unwrap();
    let ring = p.maps.take_samples().unwrap();
    (p, ring)
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<(SampleHeader, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        let s = Sample::decode(&item).expect("well-formed record");
        out.push((s.header, s.payload.to_vec()));
    }
    out
}

fn request(path: &str) -> Vec<u8> {
    let body =
        format!("GET {path} HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer s3cr3t\r\n\r\n");
    Packet::from(SRC)
        .tcp(TCP_ACK | TCP_PSH)
        .payload(body.as_bytes())
        .build()
}

#[test]
fn http_requests_are_sampled_with_metadata_and_payload() {
    if !privileged("http_requests_are_sampled_with_metadata_and_payload") {
        return;
    }
    let (mut p, mut ring) = program(|_| {}, TierSpec::default());
    let frame = request("/users/42");
    assert_eq!(p.run(&frame).unwrap(), XDP_PASS);
    // Not a request (a body), and a request to an unsampled port: no HTTP sample.
    let body = Packet::from(SRC)
        .tcp(TCP_ACK)
        .payload(b"{\"k\": 1, \"GET \": 2}")
        .build();
    assert_eq!(p.run(&body).unwrap(), XDP_PASS);
    let samples = drain(&mut ring);
    assert_eq!(samples.len(), 1, "{samples:?}");
    let (h, payload) = &samples[0];
    assert_eq!(&h.src[..4], &SRC.octets());
    assert_eq!(h.family, 4);
    assert_eq!(h.dst_port, 80);
    assert_eq!(h.verdict, Verdict::Passed as u8);
    assert_eq!(h.frame_len as usize, frame.len());
    assert_eq!(h.scale, 1);
    assert!(payload.starts_with(b"GET /users/42 HTTP/1.1\r\n"));
    assert_eq!(payload.len(), frame.len() - 54);
    assert_eq!(p.maps.sampler_totals().unwrap().http_sampled, 1);
}

#[test]
fn snap_length_one_in_k_and_budget_are_honoured_and_counted() {
    if !privileged("snap_length_one_in_k_and_budget_are_honoured_and_counted") {
        return;
    }
    // Snap 16 bytes.
    let (mut p, mut ring) = program(|s| s.http_snap_len = 16, TierSpec::default());
    p.run(&request("/a")).unwrap();
    let s = drain(&mut ring);
    assert_eq!(s[0].1, b"GET /a HTTP/1.1\r");

    // 1 in 4: 10 requests -> 2 samples, each standing for 4.
    let (mut p, mut ring) = program(|s| s.http_sample_every = 4, TierSpec::default());
    for _ in 0..10 {
        p.run(&request("/b")).unwrap();
    }
    let s = drain(&mut ring);
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|(h, _)| h.scale == 4));

    // Budget of 3 samples (1/s, burst 3): 10 requests -> 3 samples, 7 skips counted.
    let (mut p, mut ring) = program(
        |s| s.http_budget = Limit::per_period(1, SECOND, 3).unwrap(),
        TierSpec::default(),
    );
    for _ in 0..10 {
        p.run(&request("/c")).unwrap();
    }
    assert_eq!(drain(&mut ring).len(), 3);
    let totals = p.maps.sampler_totals().unwrap();
    assert_eq!((totals.http_sampled, totals.http_budget_skipped), (3, 7));
}

#[test]
fn dropped_requests_are_sampled_and_marked() {
    if !privileged("dropped_requests_are_sampled_and_marked") {
        return;
    }
    // Request counting on, as the daemon sets it for a tier that limits requests.
    let (mut p, mut ring) = program(
        |s| s.flags |= SETTINGS_COUNT_REQUESTS,
        TierSpec {
            requests: Some((1, 1)),
            ..Default::default()
        },
    );
    assert_eq!(p.run(&request("/x")).unwrap(), XDP_PASS);
    assert_eq!(p.run(&request("/x")).unwrap(), XDP_DROP);
    let s = drain(&mut ring);
    let verdicts: Vec<u8> = s.iter().map(|(h, _)| h.verdict).collect();
    assert_eq!(
        verdicts,
        [Verdict::Passed as u8, Verdict::DroppedRequests as u8]
    );
}

#[test]
fn a_full_ring_is_counted_not_silent() {
    if !privileged("a_full_ring_is_counted_not_silent") {
        return;
    }
    let mut p = TestProgram::load_sized(&tollgate::datapath::kernel::MapSizes {
        sources_v4: 64,
        sources_v6: 64,
        rules_v4: 16,
        rules_v6: 16,
        sample_ring_bytes: 4096,
    })
    .unwrap();
    p.maps.set_tier(0, &TierSpec::default().config()).unwrap();
    let mut s = p.maps.settings().unwrap();
    s.http_ports[0] = 80;
    s.http_snap_len = 1024;
    s.http_sample_every = 1;
    p.maps.set_settings(s).unwrap();
    let big = Packet::from(SRC)
        .tcp(TCP_ACK)
        .payload(&[b"POST /upload HTTP/1.1\r\n".as_slice(), &[b'x'; 1100]].concat())
        .build();
    for _ in 0..10 {
        assert_eq!(
            p.run(&big).unwrap(),
            XDP_PASS,
            "a full ring never changes the verdict"
        );
    }
    let t = p.maps.sampler_totals().unwrap();
    assert_eq!(t.http_sampled + t.http_ring_full, 10);
    assert!(t.http_ring_full >= 7, "{t:?}");
}

#[test]
fn verdict_samples_feed_top_talkers() {
    if !privileged("verdict_samples_feed_top_talkers") {
        return;
    }
    let (mut p, mut ring) = program(
        |s| {
            s.http_sample_every = 0;
            s.verdict_sample_every = 5;
        },
        TierSpec {
            packets: Some((1, 10)),
            ..Default::default()
        },
    );
    let udp = Packet::from(SRC).udp().build();
    for _ in 0..50 {
        p.run(&udp).unwrap();
    }
    let s = drain(&mut ring);
    assert_eq!(s.len(), 10);
    let dropped = s
        .iter()
        .filter(|(h, _)| h.verdict == Verdict::DroppedPackets as u8)
        .count();
    assert_eq!(
        dropped, 8,
        "first 10 passed (2 samples), 40 dropped (8 samples)"
    );
    assert!(s.iter().all(|(h, _)| h.scale == 5 && h.captured == 0));
}
