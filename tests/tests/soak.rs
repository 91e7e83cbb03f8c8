//! The soak, short (about 40 s): the real daemon under mixed traffic while
//! the control plane churns every 1.5 s and the daemon is restarted every 8 s,
//! alternately with SIGTERM and kill -9 (see `tollgate_tests::soak`).
//! `cargo xtask soak --minutes N` runs a long one.
//!
//! `TOLLGATE_SOAK_SEED` replays a seed (every run prints its own).

use std::time::Duration;

use tollgate_tests::{fuzz::parse_seed, privileged, soak};

#[test]
fn restarts_and_reloads_under_traffic_lose_no_change_and_leave_no_gap() {
    if !privileged("restarts_and_reloads_under_traffic_lose_no_change_and_leave_no_gap") {
        return;
    }
    let seed = match std::env::var(soak::SEED_ENV) {
        Ok(v) => parse_seed(&v).expect(soak::SEED_ENV),
        Err(_) => rand::random(),
    };
    eprintln!(
        "soak seed {seed:#x} (replay with {}={seed:#x})",
        soak::SEED_ENV
    );
    let mut cfg = soak::Config::new(Duration::from_secs(40), seed);
    cfg.restart_every = Duration::from_secs(8);
    cfg.churn_every = Duration::from_millis(1500);
    let r = soak::run(&cfg).expect("soak harness");
    eprintln!("{r}");

    // It really did what it claims: restarts of both kinds, reloads of both
    // kinds, CLI changes, checks, and the abusive source was limited, not
    // silent (at least half its limit arrived, and it offered over twice
    // what arrived).
    assert!(
        r.restarts_sigterm >= 2 && r.restarts_kill9 >= 2,
        "too few restarts: {r}"
    );
    assert!(
        r.sighup_reloads >= 2 && r.cli_reloads >= 2,
        "too few reloads: {r}"
    );
    assert!(r.cli_acknowledged >= 15, "too few CLI changes: {r}");
    assert!(r.state_checks >= 8, "too few state checks: {r}");
    let a = &r.abusive;
    let secs = r.duration.as_secs_f64();
    assert!(
        a.delivered as f64 >= 0.5 * a.limit as f64 * secs && a.sent > 2 * a.delivered,
        "the abusive source was not exercising its limit: {r}"
    );
    assert!(
        r.legit.sent > 0 && r.http_ok > 0,
        "no legitimate traffic: {r}"
    );

    assert_eq!(r.lost_changes, 0, "lost CLI changes: {r}");
    assert_eq!(r.enforcement_gaps(), 0, "enforcement gaps: {r}");
    assert_eq!(
        (r.bpf_start.programs.len(), r.bpf_end.programs.len()),
        (1, 1),
        "one program from start to end: {r}"
    );
    assert_eq!(
        r.programs_after_detach, 0,
        "programs left after detach: {r}"
    );
    // A source under its limit loses nothing (e2e_limits asserts the same
    // without the churn).
    assert_eq!(
        r.legit.lost(),
        0,
        "the legitimate source lost datagrams: {r}"
    );
    r.verdict().expect("soak verdict");
}
