//! The Markdown report of `cargo xtask bench ddos` ([`crate::ddos`]).

use std::{process::Command, time::Duration};

use crate::{
    ddos::{
        AGGREGATE, CLIENT_CPU, CONNECTIONS, Calibration, Cell, FLOOD_LEAD, Flood, MEASURE_SECS,
        NEW_SOURCES, PACE_BATCH, PACE_CHUNK, PER_SOURCE, Protection, SERVER_CPU, SERVER_NICE,
        WARMUP_SECS,
    },
    ddos_pacing::{CALIBRATION_SECS, PACED_LADDER, RULE_NAPI_BUSY, RULE_OFFERED, RULE_TAKEN},
    flood::{self, Bed, spread},
    generator::THIN_RUN_RATE,
};

fn fmt_duration(d: f64) -> String {
    if d >= 1.0 {
        format!("{d:.2} s")
    } else if d >= 1e-3 {
        format!("{:.2} ms", d * 1e3)
    } else {
        format!("{:.0} µs", d * 1e6)
    }
}

pub fn print_report(
    bed: &Bed,
    cells: &[Cell],
    calibration: &Calibration,
    reps: usize,
    elapsed: Duration,
    load_before: &str,
) {
    let of = |p: Protection, flood: Flood| -> Vec<&Cell> {
        cells
            .iter()
            .filter(|c| c.protection == p && c.flood == flood)
            .collect()
    };
    // (NaN for a cell left out by TOLLGATE_DDOS_CELLS.)
    let med = |cs: &[&Cell], f: &dyn Fn(&Cell) -> f64| {
        if cs.is_empty() {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            spread(cs.iter().map(|c| f(c)).collect())
        }
    };
    // A run with no completed request has no p99: it counts as its timeout.
    let p99 = |c: &Cell| c.wrk.p99.map_or(2.0, |d| d.as_secs_f64());
    println!(
        "### `cargo xtask bench ddos`: nginx under a spoofed flood ({MEASURE_SECS} s wrk runs, {reps} runs, median (min–max))\n"
    );
    println!(
        "| protection | flood | requests/s | p99 latency | requests/s vs no flood | p99 × no flood | flood offered, Mpps | taken off the veth ring, Mpps | flood reaching the UDP socket/s | client TCP segments retransmitted | server CPU: receive (NAPI) / nginx | wrk errors (connect/read/write/timeout), non-2xx |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for p in Protection::ALL {
        let base = of(p, Flood::Off);
        let (base_rps, _, _) = med(&base, &|c| c.wrk.requests_per_sec);
        let (base_p99, _, _) = med(&base, &p99);
        for kind in Flood::ALL {
            let flood = kind != Flood::Off;
            let cs = of(p, kind);
            if cs.is_empty() {
                continue;
            }
            let (rps, rlo, rhi) = med(&cs, &|c| c.wrk.requests_per_sec);
            let (l, llo, lhi) = med(&cs, &p99);
            let (share, slo, shi) = med(&cs, &|c| c.wrk.requests_per_sec / base_rps * 100.0);
            let (times, tlo, thi) = med(&cs, &|c| p99(c) / base_p99);
            let (offered, _, _) = med(&cs, &|c| c.offered_pps / 1e6);
            let (taken, _, _) = med(&cs, &|c| c.taken_pps / 1e6);
            let (admitted, _, _) = med(&cs, &|c| c.admitted_pps);
            let (retrans, _, _) = med(&cs, &|c| c.retrans * 100.0);
            let (napi, _, _) = med(&cs, &|c| c.napi_busy * 100.0);
            let (ngx, _, _) = med(&cs, &|c| c.nginx_busy * 100.0);
            let mut errors = [0u64; 4];
            let mut non_2xx = 0;
            for c in &cs {
                for (e, n) in errors.iter_mut().zip(c.wrk.errors) {
                    *e += n;
                }
                non_2xx += c.wrk.non_2xx;
            }
            let (vs, x) = if flood {
                (
                    format!("{share:.0}% ({slo:.0}–{shi:.0}%)"),
                    format!("{times:.2}x ({tlo:.2}–{thi:.2}x)"),
                )
            } else {
                ("100%".into(), "1.00x".into())
            };
            println!(
                "| {} | {} | {rps:.0} ({rlo:.0}–{rhi:.0}) | {} ({}–{}) | {vs} | {x} | {} | {taken:.2} | {} | {retrans:.1}% | {napi:.0}% / {ngx:.0}% | {}, {non_2xx} |",
                p.label(bed),
                flood_label(kind, calibration),
                fmt_duration(l),
                fmt_duration(llo),
                fmt_duration(lhi),
                if flood {
                    format!("{offered:.2}")
                } else {
                    "—".into()
                },
                if flood {
                    format!("{admitted:.0}")
                } else {
                    "—".into()
                },
                errors.map(|e| e.to_string()).join("/"),
            );
            if flood && p == Protection::Tollgate {
                verdicts.push((kind, share, times));
            }
        }
    }
    println!();
    for (kind, share, times) in verdicts {
        let ok = |b: bool| if b { "met" } else { "missed" };
        println!(
            "- tollgate under the {}: {share:.0}% of its no-flood requests/s (target ≥ 90%: {}), p99 {times:.2}× its no-flood p99 (target ≤ 2×: {}).",
            if kind == Flood::Paced {
                "paced flood"
            } else {
                "full-rate flood (the issue's target)"
            },
            ok(share >= 90.0),
            ok(times <= 2.0)
        );
    }
    if cells.iter().any(|c| c.flood == Flood::Paced) {
        print_calibration(calibration);
    }
    println!(
        "\nSetup: nginx {} (1 worker, `return 200 \"ok\\n\"`, keep-alive) on the host veth {}; wrk {} (`-t1 -c{CONNECTIONS} --latency --timeout 2s`, {WARMUP_SECS} s warm-up before every run, so the client is established before any flood) from its own namespace, routed through the flood's namespace into the same host veth ring as the flood. Flood: UDP datagrams with a random 32-bit IPv4 source each (the live-frames XDP generator, paced or at its full rate, started {:.1} s before the measured run and stopped after it) to a UDP socket on the host that is never read. CPUs: generator and wrk (nice -20) on CPU {CLIENT_CPU}; the host veth's threaded NAPI and nginx on CPU {SERVER_CPU}, both at nice {SERVER_NICE} (equal, so they share that CPU as softirq work and a server do under sustained load; the generator runs at nice 0).",
        nginx_version(),
        bed.veth.host,
        wrk_version(),
        FLOOD_LEAD.as_secs_f64(),
    );
    println!(
        "Policy (nftables and tollgate): {}/s burst {} packets per source (the legitimate client is one source sending about one packet per request), {}/s burst {} for all sources together (tollgate: the tier aggregate, with the untracked ceiling at the same rate; nftables: `limit rate over` after the meter); tollgate's new-source budget {}/s burst {}. nftables hook: {}.",
        PER_SOURCE.0,
        PER_SOURCE.1,
        AGGREGATE.0,
        AGGREGATE.1,
        NEW_SOURCES.0,
        NEW_SOURCES.1,
        bed.nft_hook.describe()
    );
    println!(
        "Machine: {}. Load average before / after: {load_before} / {}. Total {:.0} s.",
        flood::machine(),
        flood::loadavg(),
        elapsed.as_secs_f64()
    );
}

fn nginx_version() -> String {
    // `nginx -v` prints to stderr.
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_else(|_| "nginx".into())
}

fn wrk_version() -> String {
    Command::new("wrk")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// The flood column: `off`, `paced, 1.00 Mpps`, `full rate`.
fn flood_label(kind: Flood, calibration: &Calibration) -> String {
    match kind {
        Flood::Off => "off".into(),
        Flood::Paced => format!("paced, {:.2} Mpps", calibration.rate as f64 / 1e6),
        Flood::Full => "full rate".into(),
    }
}

fn print_calibration(c: &Calibration) {
    if c.overridden {
        println!(
            "\nPaced flood: {:.2} Mpps set by TOLLGATE_DDOS_PACED_PPS (development override, not calibrated).",
            c.rate as f64 / 1e6
        );
        return;
    }
    println!(
        "\nPaced flood rate, chosen before the runs by measurement: the highest of {} Mpps at which the XDP_DROP floor on the same veth (alone, no wrk) takes ≥ {:.0}% of the offered frames off the ring with its NAPI thread ≤ {:.0}% busy, the generator offering ≥ {:.0}% of the rate ({:.1} s per rate, highest first, stopping at the first that qualifies). Pacing: the generator program redirects a random rate/{:.0} M of the frames it runs and drops the rest, in calls of {} frames run (flushed into the veth every {}), sleeping between calls when ahead of the rate (each live test_run call also waits ~25 ms in the kernel, so short calls cannot reach these rates); offered = frames run × the redirected share:",
        PACED_LADDER
            .map(|r| format!("{:.2}", r as f64 / 1e6))
            .join(" / "),
        RULE_TAKEN * 100.0,
        RULE_NAPI_BUSY * 100.0,
        RULE_OFFERED * 100.0,
        CALIBRATION_SECS,
        THIN_RUN_RATE as f64 / 1e6,
        PACE_CHUNK,
        PACE_BATCH,
    );
    for r in &c.rungs {
        println!("- {}", r.describe());
    }
    if !c.qualified {
        println!("- no rate qualified: the lowest tried is used.");
    }
}
