//! Adaptive limits end to end, with real pressure: the daemon follows a
//! signal (a cgroup's CPU pressure driven by stress-ng under a CPU quota, or
//! an HTTP backend's latency), its tier's factor falls, the rate admitted
//! from a client in a `tg-` namespace, counted at a UDP receiver on the host,
//! falls with it, and both recover once the pressure ends.
//!
//! Every bound comes from the control law (`adaptive::law`) and from PSI's
//! averaging: `avg10` is an exponential average with a 10 s time constant,
//! updated every 2 s, so after the pressure ends it falls from its peak
//! under `recover` within `10 s × ln(peak / recover)` plus one update period
//! (plus one more for the period still holding pressure). The only slack is
//! [`TICK_SLACK`]: the daemon's 1-s tick and the CLI's round trip on a
//! shared, loaded host.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tollgate_tests::{
    cgroup::StressCgroup,
    daemon::{Daemon, Env, free_port, metric_value, scrape_metrics},
    httpd, privileged,
    traffic::{Receiver, send_udp_paced_until},
    unique_id,
};

/// The tier's configured packets rate (per source) and what the client sends.
const RATE: f64 = 1000.0;
const OFFERED: u64 = 3000;
/// The control law of both tests (see `law()`): from 1, `SECONDS_TO_MIN`
/// seconds over the threshold reach `MIN`; from `MIN`, `SECONDS_TO_RECOVER`
/// calm seconds reach 1.
const MIN: f64 = 0.25;
const DECREASE: f64 = 0.5;
const INCREASE: f64 = 0.25;
const CALM: u32 = 2;
/// ⌈ln(MIN) / ln(DECREASE)⌉.
const SECONDS_TO_MIN: u64 = 2;
/// CALM − 1 + ⌈(1 − MIN) / INCREASE⌉.
const SECONDS_TO_RECOVER: u64 = 4;
/// The daemon reads its signal once a second: a change of the signal is seen
/// within one tick.
const TICK: Duration = Duration::from_secs(1);
/// Scheduling on a shared 2-core host: a tick that runs late, the CLI's
/// round trip.
const TICK_SLACK: Duration = Duration::from_secs(2);
/// Each admitted-rate window.
const WINDOW: Duration = Duration::from_secs(3);

fn law_keys() -> String {
    format!("min = {MIN}, decrease = {DECREASE}, increase = {INCREASE}, calm = {CALM}")
}

#[test]
fn the_law_constants_match_the_law() {
    assert_eq!(
        SECONDS_TO_MIN,
        (MIN.ln() / DECREASE.ln()).ceil() as u64,
        "SECONDS_TO_MIN"
    );
    assert_eq!(
        SECONDS_TO_RECOVER,
        CALM as u64 - 1 + ((1.0 - MIN) / INCREASE).ceil() as u64,
        "SECONDS_TO_RECOVER"
    );
}

/// The adaptive state of tier `web` from `tier list --json`.
fn adaptive(env: &Env) -> Value {
    let tiers = env.json(&["tier", "list"]);
    tiers
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "web")
        .unwrap_or_else(|| panic!("no tier web in {tiers}"))["adaptive"]
        .clone()
}

fn factor(env: &Env) -> f64 {
    let a = adaptive(env);
    a["factor"]
        .as_f64()
        .unwrap_or_else(|| panic!("no factor in {a}"))
}

/// Polls until the factor is `want` (within 1e-9), asserting on the way that
/// it moves only in `direction` (-1 falling, +1 rising); panics at `deadline`.
/// Returns when it got there.
#[track_caller]
fn factor_reaches(env: &Env, want: f64, direction: f64, deadline: Instant, what: &str) -> Instant {
    let mut last = factor(env);
    loop {
        let f = factor(env);
        assert!(
            (f - last) * direction >= -1e-9,
            "{what}: the factor went from {last} to {f}, against the expected direction"
        );
        last = f;
        if (f - want).abs() < 1e-9 {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: factor {f}, not {want}, by the bound; adaptive state {}",
            adaptive(env)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Packets per second the receiver counted over [`WINDOW`].
fn admitted_rate(rx: &Receiver) -> f64 {
    let (c0, t0) = (rx.count(), Instant::now());
    std::thread::sleep(WINDOW);
    (rx.count() - c0) as f64 / t0.elapsed().as_secs_f64()
}

/// The admitted rate is the configured rate × factor, within 10 %: the client
/// offers 3× the configured rate, so the bucket is always at its limit and
/// admits exactly its rate (GCRA: rate × t, the burst spent long before).
#[track_caller]
fn assert_rate(rate: f64, factor: f64, what: &str) {
    let want = RATE * factor;
    assert!(
        (rate - want).abs() <= 0.1 * want,
        "{what}: admitted {rate:.0}/s at the receiver, expected {want:.0}/s ± 10 %"
    );
}

/// A client in the namespace sending `OFFERED`/s to the receiver until the
/// guard drops (bounded: at most 10 minutes).
struct Client {
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Client {
    fn start(env: &Env, dst: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let peer = env.veth.peer_ip;
        let s = stop.clone();
        let thread = env.ns.run(move || {
            let socket = UdpSocket::bind((peer, 0)).unwrap();
            send_udp_paced_until(&socket, dst, OFFERED, Duration::from_secs(600), &s);
        });
        Client {
            started: Instant::now(),
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the bucket's burst (one second's worth, the default) is
    /// spent: the client's surplus over the rate drains it in
    /// RATE / (OFFERED − RATE) seconds; twice that, for the sender's start.
    fn wait_burst_spent(&self) {
        let spent = self.started + Duration::from_secs_f64(2.0 * RATE / (OFFERED as f64 - RATE));
        std::thread::sleep(spent.saturating_duration_since(Instant::now()));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The daemon's factor changes, as logged: (previous, new) per line. Every
/// line must be a change, and each line must follow from the one before
/// (one line per change, none repeated while the factor holds).
fn logged_changes(d: &Daemon) -> Vec<(f64, f64)> {
    let log = d.log();
    let changes: Vec<(f64, f64)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split("adaptive: tier web factor ").nth(1)?;
            let mut it = rest.split_whitespace();
            let before: f64 = it.next()?.parse().ok()?;
            it.next()?; // "->"
            let after: f64 = it.next()?.parse().ok()?;
            Some((before, after))
        })
        .collect();
    for w in changes.windows(2) {
        assert!(
            (w[0].1 - w[1].0).abs() < 1e-3,
            "log lines do not chain: {w:?}\n{log}"
        );
    }
    for c in &changes {
        assert_ne!(c.0, c.1, "a line without a change: {c:?}");
    }
    changes
}

fn config(signal: &str, threshold: f64, recover: f64, extra: &str) -> String {
    format!(
        "default_tier = \"web\"\n{extra}\n[[tier]]\nname = \"web\"\npackets = \"{RATE}/s\"\n\
         adaptive = {{ signal = \"{signal}\", threshold = {threshold}, recover = {recover}, {} }}\n",
        law_keys()
    )
}

#[test]
fn cgroup_cpu_pressure_scales_the_limit_down_and_back() {
    if !privileged("cgroup_cpu_pressure_scales_the_limit_down_and_back") {
        return;
    }
    const THRESHOLD: f64 = 20.0;
    const RECOVER: f64 = 10.0;
    // 2 workers wanting 2 CPUs under a quota of 20 % of one: always waiting.
    let mut cg = StressCgroup::new(&unique_id(), 20).expect("cgroup");
    let env = Env::new();
    let signal = format!("cgroup:{}", cg.pressure_file.display());
    env.write_config(&config(&signal, THRESHOLD, RECOVER, ""));
    let d = env.start();
    let rx = Receiver::bind(SocketAddr::from((env.veth.host_ip, 0))).unwrap();
    let client = Client::start(&env, rx.addr);

    env.eventually(Duration::from_secs(5), "a first reading", || {
        adaptive(&env)["value"].is_number()
    });
    assert_eq!(factor(&env), 1.0);
    client.wait_burst_spent();
    let baseline = admitted_rate(&rx);
    assert_rate(baseline, 1.0, "before the pressure");

    cg.start(2, Duration::from_secs(180)).expect("stress-ng");
    // PSI's avg10 rises as 1 − e^(−t/10) of the stall share: the test reads
    // the same file as the daemon and notes when it crosses the threshold.
    let started = Instant::now();
    let over = loop {
        let p = cg.pressure().unwrap();
        if p > THRESHOLD {
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stress-ng under a 20 % quota did not raise the cgroup's cpu.pressure over {THRESHOLD} in 60 s (some avg10 = {p})"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let at_min = factor_reaches(
        &env,
        MIN,
        -1.0,
        over + TICK + Duration::from_secs(SECONDS_TO_MIN) + TICK_SLACK,
        "under pressure",
    );
    eprintln!(
        "pressure over {THRESHOLD} after {:.1} s; factor at min {:.1} s later",
        (over - started).as_secs_f64(),
        (at_min - over).as_secs_f64()
    );
    let low = adaptive(&env);
    let under = admitted_rate(&rx);
    assert_eq!(factor(&env), MIN, "the factor held at min while measuring");
    assert_rate(under, MIN, "under pressure");
    assert!(low["value"].as_f64().unwrap() > THRESHOLD, "{low}");

    cg.stop();
    let ended = Instant::now();
    let at_end = cg.pressure().unwrap();
    // The next update (within 2 s) still averages in up to 2 s of pressure:
    // avg10 ← avg10 × e^(−2/10) + sample × (1 − e^(−2/10)), sample ≤ 100.
    // From that peak, under RECOVER within 10 s × ln(peak / RECOVER), plus
    // that first update period and the last one's granularity.
    let keep = (-0.2f64).exp();
    let peak = at_end.max(at_end * keep + 100.0 * (1.0 - keep));
    let decay = Duration::from_secs_f64(10.0 * (peak / RECOVER).ln().max(0.0) + 4.0);
    let calm = loop {
        let p = cg.pressure().unwrap();
        if p < RECOVER {
            break Instant::now();
        }
        assert!(
            ended.elapsed() < decay,
            "avg10 still {p} after {:?}: PSI's averaging says under {RECOVER} by {decay:?}",
            ended.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let back = factor_reaches(
        &env,
        1.0,
        1.0,
        calm + TICK + Duration::from_secs(SECONDS_TO_RECOVER) + TICK_SLACK,
        "after the pressure",
    );
    eprintln!(
        "avg10 {at_end:.1} at the end (peak at most {peak:.1}); under {RECOVER} after {:.1} s (bound {:.1} s); factor 1 after {:.1} s more",
        (calm - ended).as_secs_f64(),
        decay.as_secs_f64(),
        (back - calm).as_secs_f64()
    );
    let after = admitted_rate(&rx);
    assert_rate(after, 1.0, "after the pressure");
    eprintln!("admitted: {baseline:.0}/s before, {under:.0}/s under pressure, {after:.0}/s after");

    let changes = logged_changes(&d);
    assert!(
        changes.len() >= 4,
        "at least 1 -> 0.5 -> 0.25 and back in 3 steps: {changes:?}"
    );
    assert_eq!(changes.first().unwrap().0, 1.0);
    assert_eq!(changes.last().unwrap().1, 1.0);
}

#[test]
fn a_slow_backend_scales_the_limit_down_and_back() {
    if !privileged("a_slow_backend_scales_the_limit_down_and_back") {
        return;
    }
    const THRESHOLD: f64 = 100.0;
    const RECOVER: f64 = 50.0;
    /// The probe's signal is the median of the last 3 readings: 2 readings
    /// of a new latency decide it.
    const MEDIAN_LAG: Duration = Duration::from_secs(2);
    let backend = httpd::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let env = Env::new();
    let port = free_port();
    let signal = format!("http://{}/health", backend.addr);
    env.write_config(&config(
        &signal,
        THRESHOLD,
        RECOVER,
        &format!("metrics_address = \"127.0.0.1:{port}\""),
    ));
    let d = env.start();
    let rx = Receiver::bind(SocketAddr::from((env.veth.host_ip, 0))).unwrap();
    let client = Client::start(&env, rx.addr);
    env.eventually(Duration::from_secs(5), "a first reading", || {
        adaptive(&env)["value"].is_number()
    });
    assert_eq!(factor(&env), 1.0);
    client.wait_burst_spent();
    let baseline = admitted_rate(&rx);
    assert_rate(baseline, 1.0, "before the backend slows down");

    // Slower than the threshold (and than the probe's 300 ms timeout, which
    // counts as 300 ms).
    backend.delay_ms.store(250, Ordering::Relaxed);
    let slowed = Instant::now();
    factor_reaches(
        &env,
        MIN,
        -1.0,
        slowed + MEDIAN_LAG + TICK + Duration::from_secs(SECONDS_TO_MIN) + TICK_SLACK,
        "with a slow backend",
    );
    let body = scrape_metrics(port);
    assert_eq!(
        metric_value(
            &body,
            "tollgate_adaptive_factor{mode=\"enforce\",tier=\"web\"}"
        ),
        MIN
    );
    let series = format!("tollgate_adaptive_signal{{signal=\"{signal}\",tier=\"web\"}}");
    assert!(metric_value(&body, &series) > THRESHOLD, "{body}");
    // A reload and a `tier set` are commits like any other: they keep the
    // factor in force (the kernel gets the new limits × factor).
    env.ok(&["reload"]);
    env.ok(&["tier", "set", "web", "--connections", "100/s"]);
    assert_eq!(factor(&env), MIN, "a commit kept the factor");
    let list = env.ok(&["tier", "list"]);
    assert!(list.contains("FACTOR") && list.contains("0.25"), "{list}");
    let under = admitted_rate(&rx);
    assert_rate(under, MIN, "with a slow backend");

    backend.delay_ms.store(0, Ordering::Relaxed);
    let fast = Instant::now();
    factor_reaches(
        &env,
        1.0,
        1.0,
        fast + MEDIAN_LAG + TICK + Duration::from_secs(SECONDS_TO_RECOVER) + TICK_SLACK,
        "with the backend fast again",
    );
    let after = admitted_rate(&rx);
    assert_rate(after, 1.0, "with the backend fast again");
    eprintln!("admitted: {baseline:.0}/s before, {under:.0}/s slow, {after:.0}/s after");
    let changes = logged_changes(&d);
    assert_eq!(
        changes.len(),
        2 + 3,
        "1 -> 0.5 -> 0.25, then 0.5, 0.75, 1: {changes:?}"
    );
    assert!(backend.requests.load(Ordering::Relaxed) > 0);
}

#[test]
fn shadow_mode_exports_the_factor_and_applies_nothing() {
    if !privileged("shadow_mode_exports_the_factor_and_applies_nothing") {
        return;
    }
    let backend = httpd::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    backend.delay_ms.store(250, Ordering::Relaxed);
    let env = Env::new();
    let signal = format!("http://{}/", backend.addr);
    let text = config(&signal, 100.0, 50.0, "").replace(" }\n", ", mode = \"shadow\" }\n");
    env.write_config(&text);
    let _d = env.start();
    let rx = Receiver::bind(SocketAddr::from((env.veth.host_ip, 0))).unwrap();
    let _client = Client::start(&env, rx.addr);
    let started = Instant::now();
    factor_reaches(
        &env,
        MIN,
        -1.0,
        started + Duration::from_secs(2) + TICK + Duration::from_secs(SECONDS_TO_MIN) + TICK_SLACK,
        "shadow",
    );
    // The computed factor is at min; the kernel keeps the configured rate.
    let rate = admitted_rate(&rx);
    assert_rate(rate, 1.0, "in shadow mode");
    let status = env.ok(&["status"]);
    assert!(status.contains("shadow (not applied)"), "{status}");
}

/// What a restart does (README, "Adaptive limits"): while no daemon runs the
/// kernel keeps the scaled limits it last got; a new daemon starts at factor
/// 1 and, the pressure still there, is back at min within the law's bound.
#[test]
fn a_restart_starts_at_one_and_the_kernel_keeps_the_scaled_limits_meanwhile() {
    if !privileged("a_restart_starts_at_one_and_the_kernel_keeps_the_scaled_limits_meanwhile") {
        return;
    }
    let backend = httpd::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    backend.delay_ms.store(250, Ordering::Relaxed);
    let env = Env::new();
    env.write_config(&config(
        &format!("http://{}/", backend.addr),
        100.0,
        50.0,
        "",
    ));
    let mut first = env.start();
    let rx = Receiver::bind(SocketAddr::from((env.veth.host_ip, 0))).unwrap();
    let _client = Client::start(&env, rx.addr);
    let started = Instant::now();
    // One reading decides at the start (the median of one).
    let bound = TICK + Duration::from_secs(SECONDS_TO_MIN) + TICK_SLACK;
    factor_reaches(&env, MIN, -1.0, started + bound, "first daemon");
    first.kill9();
    let dead = admitted_rate(&rx);
    assert_rate(dead, MIN, "with no daemon running");
    let second = env.start();
    let restarted = Instant::now();
    factor_reaches(&env, MIN, -1.0, restarted + bound, "after the restart");
    let changes = logged_changes(&second);
    assert_eq!(
        changes.first().map(|c| c.0),
        Some(1.0),
        "the new daemon starts at 1: {changes:?}"
    );
    eprintln!("admitted with no daemon: {dead:.0}/s; back at min after the restart");
}
