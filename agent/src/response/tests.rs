use std::collections::BTreeSet;

use super::*;
use crate::spec::{Offences, ResponseMode};

fn rule(name: &str) -> ResponseRule {
    ResponseRule {
        name: name.to_owned(),
        refused_seconds: Some(3),
        refused_over: None,
        window: Duration::from_secs(10),
        ban: Duration::from_secs(60),
        max_ban: Duration::from_secs(600),
        forget_after: Duration::from_secs(3600),
        ignore: Vec::new(),
        tiers: Vec::new(),
        evidence: Evidence::Requests,
        mode: ResponseMode::Enforce,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[derive(Default)]
struct Ctx {
    allowed: Vec<IpNet>,
    banned: BTreeSet<IpNet>,
}

impl Judging for Ctx {
    fn tier_name(&self, tier: u32) -> Option<String> {
        ["free", "gold"].get(tier as usize).map(|s| s.to_string())
    }
    fn allow_listed(&self, n: &IpNet) -> bool {
        self.allowed.iter().any(|a| a.contains(n))
    }
    fn banned(&self, n: &IpNet) -> bool {
        self.banned.contains(n)
    }
}

#[test]
fn a_source_refused_in_n_of_the_last_m_seconds_is_found_and_not_before() {
    let mut e = Engine::default();
    let rules = [rule("r")];
    let a = net("192.0.2.1/32");
    let ctx = Ctx::default();
    // Refusals in seconds 100 and 105: two seconds, under N = 3.
    e.observe(a, 0, Evidence::Requests, 5, 100);
    e.observe(a, 0, Evidence::Requests, 5, 100);
    e.observe(a, 0, Evidence::Requests, 1, 105);
    assert!(e.judge(105, &rules, &ctx).is_empty());
    assert!(e.requests_refused_since(105) && !e.requests_refused_since(106));
    // Second 111: 100 has left the 10 s window (102..=111): still two.
    e.observe(a, 0, Evidence::Requests, 1, 111);
    assert!(e.judge(111, &rules, &ctx).is_empty());
    // A third second within the window: found, with its counts.
    e.observe(a, 0, Evidence::Requests, 2, 112);
    let f = e.judge(112, &rules, &ctx);
    assert_eq!(
        f,
        vec![Finding {
            net: a,
            tier: 0,
            rule: 0,
            refused_seconds: 3,
            refused: 4
        }]
    );
    // Its counts start over.
    assert_eq!(e.tracked(), 0);
    assert!(e.judge(113, &rules, &ctx).is_empty());
}

#[test]
fn the_refusal_count_threshold_is_strictly_more_than() {
    let mut e = Engine::default();
    let mut r = rule("count");
    r.refused_seconds = None;
    r.refused_over = Some(100);
    let rules = [r];
    let a = net("192.0.2.1/32");
    e.observe(a, 0, Evidence::Requests, 100, 7);
    assert!(e.judge(7, &rules, &Ctx::default()).is_empty());
    e.observe(a, 0, Evidence::Requests, 1, 8);
    assert_eq!(e.judge(8, &rules, &Ctx::default())[0].refused, 101);
}

#[test]
fn packet_evidence_never_counts_for_a_requests_rule() {
    let mut e = Engine::default();
    let rules = [rule("r")];
    let a = net("192.0.2.1/32");
    for s in 0..10 {
        e.observe(a, 0, Evidence::Packets, 1000, s);
    }
    assert!(e.judge(9, &rules, &Ctx::default()).is_empty());
    let mut p = rule("p");
    p.evidence = Evidence::Packets;
    assert_eq!(e.judge(9, &[p], &Ctx::default()).len(), 1);
}

#[test]
fn ignored_allow_listed_banned_and_out_of_scope_sources_are_never_found() {
    let mut r = rule("r");
    r.ignore = vec![net("10.0.0.0/8")];
    r.tiers = vec!["gold".to_owned()];
    let rules = [r];
    let ctx = Ctx {
        allowed: vec![net("172.16.0.0/12")],
        banned: [net("198.51.100.9/32")].into(),
    };
    let mut e = Engine::default();
    let ignored = net("10.1.2.3/32");
    let allowed = net("172.16.5.5/32");
    let banned = net("198.51.100.9/32");
    let free = net("203.0.113.1/32");
    let gold = net("203.0.113.2/32");
    for s in 0..5 {
        for n in [ignored, allowed, banned] {
            e.observe(n, 1, Evidence::Requests, 1, s);
        }
        e.observe(free, 0, Evidence::Requests, 1, s);
        e.observe(gold, 1, Evidence::Requests, 1, s);
    }
    let f = e.judge(4, &rules, &ctx);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].net, gold);
}

#[test]
fn the_first_rule_that_fires_wins() {
    let mut strict = rule("strict");
    strict.refused_seconds = Some(5);
    let lenient = rule("lenient");
    let rules = [strict, lenient];
    let mut e = Engine::default();
    let a = net("192.0.2.1/32");
    for s in 0..3 {
        e.observe(a, 0, Evidence::Requests, 1, s);
    }
    assert_eq!(e.judge(2, &rules, &Ctx::default())[0].rule, 1);
}

#[test]
fn tracked_sources_are_bounded() {
    let mut e = Engine::default();
    for i in 0..(MAX_TRACKED as u32 + 10) {
        let n = IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i)));
        e.observe(n, 0, Evidence::Requests, 1, 0);
    }
    assert_eq!(e.tracked(), MAX_TRACKED);
    assert_eq!(e.untracked, 10);
    // Old seconds are forgotten, and so are sources with nothing left.
    assert!(e.judge(1000, &[rule("r")], &Ctx::default()).is_empty());
    assert_eq!(e.tracked(), 0);
}

#[test]
fn bans_double_per_offence_up_to_the_maximum() {
    let r = rule("r");
    let secs = |o| ban_length(&r, o, 0.0).as_secs_f64();
    assert_eq!(secs(1), 60.0);
    assert_eq!(secs(2), 120.0);
    assert_eq!(secs(3), 240.0);
    assert_eq!(secs(4), 480.0);
    assert_eq!(secs(5), 600.0);
    assert_eq!(secs(60), 600.0);
    assert_eq!(secs(u32::MAX), 600.0);
}

#[test]
fn jitter_stays_within_its_bounds() {
    let r = rule("r");
    assert_eq!(ban_length(&r, 1, -1.0).as_secs_f64(), 54.0);
    assert_eq!(ban_length(&r, 1, 1.0).as_secs_f64(), 66.0);
    // Out-of-range draws are clamped.
    assert_eq!(ban_length(&r, 1, 7.0).as_secs_f64(), 66.0);
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    for o in 1..8 {
        let base = ban_length(&r, o, 0.0).as_secs_f64();
        for _ in 0..1000 {
            let d = ban_length(&r, o, rng.gen_range(-1.0..=1.0)).as_secs_f64();
            assert!(
                d >= base * 0.9 - 1e-9 && d <= base * 1.1 + 1e-9,
                "{d} vs {base}"
            );
        }
    }
}

#[test]
fn offences_count_up_until_forgotten() {
    let r = rule("r");
    let a = net("192.0.2.1/32");
    let mut book = BanBook::default();
    assert_eq!(offence_number(&book, &a, &r, 1000.0), 1);
    book.offences.insert(
        a,
        Offences {
            count: 2,
            last_until: 1000.0,
        },
    );
    assert_eq!(offence_number(&book, &a, &r, 1000.0 + 3599.0), 3);
    assert_eq!(offence_number(&book, &a, &r, 1000.0 + 3600.0), 1);
}

#[test]
fn confirmations_hold_for_the_window_and_cover_prefixes() {
    let mut c = Confirmations::default();
    c.record(
        ["2001:db8::7".parse().unwrap(), "192.0.2.1".parse().unwrap()],
        100,
    );
    let w = Duration::from_secs(10);
    assert!(c.confirms(&net("192.0.2.1/32"), 109, w));
    assert!(!c.confirms(&net("192.0.2.1/32"), 110, w));
    assert!(!c.confirms(&net("192.0.2.2/32"), 100, w));
    assert!(c.confirms(&net("2001:db8::/64"), 105, w));
    c.forget_before(101);
    assert!(!c.confirms(&net("192.0.2.1/32"), 105, w));
}
