//! The paced flood's rate for `cargo xtask bench ddos` ([`crate::ddos`]):
//! chosen by measurement on the XDP_DROP floor, before the runs.

use std::{
    net::UdpSocket,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    ddos::{Flood, SERVER_CPU, join_flood, start_flood, wait_started},
    flood::{self, Bed, System},
    http_load::set_nice,
};

/// Paced rates tried by [`calibrate`], frames/s, highest first.
pub const PACED_LADDER: [u64; 4] = [2_000_000, 1_000_000, 500_000, 250_000];
/// Each calibration step's flood.
pub const CALIBRATION_SECS: f64 = 1.5;
/// The rule: the floor takes at least this share of the offered frames off
/// the ring...
pub const RULE_TAKEN: f64 = 0.99;
/// ...with its NAPI thread at most this busy (the cheapest possible filter
/// takes at most a quarter of the server CPU, leaving the rest for a real
/// filter and nginx)...
pub const RULE_NAPI_BUSY: f64 = 0.25;
/// ...and the generator offers at least this share of the rate tried.
pub const RULE_OFFERED: f64 = 0.9;

/// One step of [`calibrate`].
#[derive(Clone, Debug)]
pub struct Rung {
    pub rate: u64,
    pub offered_pps: f64,
    /// Share of the offered frames the floor took off the ring.
    pub taken: f64,
    /// Share of the flood's run the NAPI thread ran.
    pub napi_busy: f64,
}

impl Rung {
    /// One line: the rate, what was offered and taken, and the verdict.
    pub fn describe(&self) -> String {
        format!(
            "{:.2} Mpps: offered {:.3} Mpps, floor took {:.2}% off the ring, NAPI {:.0}% busy: {}",
            self.rate as f64 / 1e6,
            self.offered_pps / 1e6,
            self.taken * 100.0,
            self.napi_busy * 100.0,
            if self.qualifies() {
                "qualifies"
            } else {
                "does not qualify"
            }
        )
    }

    pub fn qualifies(&self) -> bool {
        self.offered_pps >= RULE_OFFERED * self.rate as f64
            && self.taken >= RULE_TAKEN
            && self.napi_busy <= RULE_NAPI_BUSY
    }
}

/// The paced rate: the highest qualifying rung, else (flagged) the lowest tried.
pub fn choose_paced_rate(rungs: &[Rung]) -> (u64, bool) {
    match rungs.iter().filter(|r| r.qualifies()).map(|r| r.rate).max() {
        Some(rate) => (rate, true),
        None => (rungs.iter().map(|r| r.rate).min().unwrap_or(0), false),
    }
}

/// The paced flood's rate, from a measurement: the XDP_DROP floor on the
/// bed's veth, each rate of [`PACED_LADDER`] from the highest down until one
/// qualifies ([`Rung::qualifies`]).
pub fn calibrate(bed: &Bed, sink: &UdpSocket) -> Result<Calibration> {
    let floor = bed.install(System::Floor, 0, 0)?;
    bed.set_threaded(true)?;
    let napi = bed.napi_thread(SERVER_CPU)?;
    set_nice(napi, 0)?;
    let mut rungs = Vec::new();
    for rate in PACED_LADDER {
        flood::check_stop()?;
        let (stop, started) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let secs = Duration::from_secs_f64(CALIBRATION_SECS);
        let taken0 = bed.veth_stat("rx_queue_0_xdp_packets")?;
        let napi0 = flood::schedstat_ns(napi)?;
        let t0 = Instant::now();
        let blaster = start_flood(bed, sink, Flood::Paced, rate, secs, &stop, &started)?;
        let waited = wait_started(&started);
        if waited.is_ok() {
            std::thread::sleep(secs);
        }
        let joined = join_flood(&stop, blaster);
        waited?;
        let (offered_pps, frames) = joined?;
        // The ring's last frames.
        std::thread::sleep(Duration::from_millis(20));
        let wall = t0.elapsed().as_nanos() as f64;
        let taken = (bed.veth_stat("rx_queue_0_xdp_packets")? - taken0) as f64;
        let rung = Rung {
            rate,
            offered_pps,
            taken: taken / frames.max(1) as f64,
            napi_busy: (flood::schedstat_ns(napi)? - napi0) as f64 / wall,
        };
        eprintln!("  calibration, floor: paced {}", rung.describe());
        let done = rung.qualifies();
        rungs.push(rung);
        if done {
            break;
        }
    }
    drop(floor);
    let (rate, qualified) = choose_paced_rate(&rungs);
    Ok(Calibration {
        rate,
        qualified,
        rungs,
        overridden: false,
    })
}

/// The paced rate and how it was found.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub rate: u64,
    /// Whether a rung met the rule (else the lowest rung is used).
    pub qualified: bool,
    pub rungs: Vec<Rung>,
    /// Set by `TOLLGATE_DDOS_PACED_PPS` (development), not measured.
    pub overridden: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_rate_is_the_highest_rung_meeting_the_rule() {
        let rung = |rate: u64, offered: f64, taken: f64, napi: f64| Rung {
            rate,
            offered_pps: offered,
            taken,
            napi_busy: napi,
        };
        let rungs = [
            rung(2_000_000, 1_950_000.0, 0.93, 0.20), // ring drops
            rung(1_000_000, 990_000.0, 0.999, 0.20),
            rung(500_000, 499_000.0, 1.0, 0.10),
        ];
        assert_eq!(choose_paced_rate(&rungs), (1_000_000, true));
        // Too busy, or the generator could not hold the rate.
        assert!(!rung(1_000_000, 990_000.0, 1.0, 0.3).qualifies());
        assert!(!rung(1_000_000, 800_000.0, 1.0, 0.2).qualifies());
        assert_eq!(
            choose_paced_rate(&rungs[..1]),
            (2_000_000, false),
            "none qualifies: the lowest tried, flagged"
        );
    }
}
