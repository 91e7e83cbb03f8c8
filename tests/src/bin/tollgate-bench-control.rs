//! `cargo xtask bench control`: how the daemon's read paths and control
//! requests hold up with a million tracked sources.
//!
//! Starts the real daemon on a `tg-` veth, fills its pinned IPv4 source map
//! with 1,000,000 sources (bucket state written through the pin, as if that
//! many clients had sent a packet), waits until the per-second scan has seen
//! them all, then measures:
//! * a `/metrics` scrape and a `tollgate status` request, one at a time;
//! * control requests (`tier set`, alternating two rates) issued while
//!   another thread scrapes `/metrics` back to back;
//! * for comparison, what the old per-scrape count cost: a key-by-key walk of
//!   the map (one syscall per key), and the batched walk the scan uses now.

use std::{
    net::{Ipv4Addr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use tollgate::{
    client,
    datapath::{kernel::Maps, walk::SourceWalk},
    proto::{Request, StatusData},
    spec::TierPatch,
};
use tollgate_common::SourceState;
use tollgate_tests::daemon::{Env, free_port, scrape_metrics};

const SOURCES: u32 = 1_000_000;
const ROUNDS: usize = 20;

fn main() -> Result<()> {
    if !tollgate_tests::privileged("tollgate-bench-control") {
        bail!("the control benchmark needs root");
    }
    let env = Env::new();
    let port = free_port();
    env.write_config(&format!(
        "metrics_address = \"127.0.0.1:{port}\"\n\
         [maps]\nsources_v4 = 1200000\n\
         [[tier]]\nname = \"default\"\npackets = \"1000/s\"\npackets_burst = 100\n"
    ));
    let _daemon = env.start_with(&[]);

    let maps = Maps::from_pins(&env.pins.path)?;
    let fill = Instant::now();
    let now = tollgate::datapath::kernel::clock_ns();
    let state = SourceState {
        packets_tat: now,
        bytes_tat: now,
        l7_tats: 0,
        admitted: 0,
    };
    let mut sources_v4 = maps.sources_v4;
    for i in 0..SOURCES {
        // 10.0.0.0/8 onwards, as the kernel keys them (network order).
        let addr = Ipv4Addr::from(0x0a00_0000 + i);
        sources_v4
            .insert(u32::from_ne_bytes(addr.octets()), state, 0)
            .context("filling the source map")?;
    }
    println!(
        "filled {SOURCES} IPv4 sources through the pin in {:.1} s",
        fill.elapsed().as_secs_f64()
    );

    let status =
        || -> Result<StatusData> { Ok(client::request_as(&env.socket, &Request::Status {})?) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let used = status()?.sources_v4.used;
        if used >= SOURCES as u64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the scan saw {used} of {SOURCES} sources after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The two walks, as the scan and the old count did them.
    let walk = SourceWalk::open(&env.pins.path)?;
    let t = Instant::now();
    let n = walk.v4(|_, _| {})?;
    let batched = t.elapsed();
    ensure!(n >= SOURCES as u64, "batched walk saw {n}");
    let t = Instant::now();
    let n = sources_v4.keys().filter(|k| k.is_ok()).count();
    let by_key = t.elapsed();
    ensure!(n >= SOURCES as usize, "key walk saw {n}");

    let mut scrape_ms = Vec::new();
    let mut status_ms = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let body = scrape_metrics(port);
        scrape_ms.push(ms(t.elapsed()));
        ensure!(
            body.contains("tollgate_tracked_sources"),
            "scrape lacks sources"
        );
        let t = Instant::now();
        status()?;
        status_ms.push(ms(t.elapsed()));
    }

    // Control requests during back-to-back scrapes.
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    scrape_metrics(port);
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut control_ms = Vec::new();
    for i in 0..ROUNDS {
        let req = Request::TierSet(Box::new(TierPatch {
            name: "default".into(),
            packets: Some(if i % 2 == 0 { "900/s" } else { "1000/s" }.into()),
            ..TierPatch::default()
        }));
        let t = Instant::now();
        client::request(&env.socket, &req)?;
        control_ms.push(ms(t.elapsed()));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    scraper.join().expect("scraper thread");

    println!("\nwith {SOURCES} tracked IPv4 sources:");
    println!("| operation | median ms | max ms | target |");
    println!("|---|---|---|---|");
    let row = |what: &str, xs: &mut Vec<f64>, target: &str| {
        xs.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {what} | {:.2} | {:.2} | {target} |",
            xs[xs.len() / 2],
            xs[xs.len() - 1]
        );
    };
    row("/metrics scrape", &mut scrape_ms, "<= 50");
    row("`status` request", &mut status_ms, "<= 50");
    row(
        &format!(
            "`tier set` during back-to-back scrapes ({} scrapes)",
            scrapes.load(Ordering::Relaxed)
        ),
        &mut control_ms,
        "<= 100",
    );
    println!(
        "| walk of the map, batched (the per-second scan, off the daemon's lock) | {:.1} | | |",
        ms(batched)
    );
    println!(
        "| walk of the map, key by key (what every scrape and status did before) | {:.1} | | |",
        ms(by_key)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
