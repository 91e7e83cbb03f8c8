//! `cargo xtask soak --minutes N`: the real daemon under mixed traffic for a
//! long time while its control plane churns and it is restarted every few
//! seconds (see `tollgate_tests::soak`). Prints the report; exits non-zero if
//! a CLI change was lost, enforcement had a gap, or programs leaked.
//!
//! Usage: tollgate-soak [--minutes N | --seconds N] [--seed S]
//!                      [--restart-every SECS] [--churn-every SECS]
//!
//! The `tollgate` binary is taken from this binary's directory (build both
//! with the same profile).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tollgate_tests::{fuzz::parse_seed, soak};

const USAGE: &str = "usage: tollgate-soak [--minutes N | --seconds N] [--seed S] [--restart-every SECS] [--churn-every SECS]";

fn config() -> Result<soak::Config> {
    let mut duration = Duration::from_secs(600);
    let mut seed = None;
    let mut restart_every = None;
    let mut churn_every = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        let secs = |v: String, scale: f64| -> Result<Duration> {
            let n: f64 = v
                .parse()
                .with_context(|| format!("{arg} {v}: not a number"))?;
            if !(n.is_finite() && n > 0.0) {
                bail!("{arg} {v}: must be positive");
            }
            Ok(Duration::from_secs_f64(n * scale))
        };
        match arg.as_str() {
            "--minutes" => duration = secs(value()?, 60.0)?,
            "--seconds" => duration = secs(value()?, 1.0)?,
            "--seed" => seed = Some(parse_seed(&value()?).context("--seed")?),
            "--restart-every" => restart_every = Some(secs(value()?, 1.0)?),
            "--churn-every" => churn_every = Some(secs(value()?, 1.0)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    let seed = match seed {
        Some(s) => s,
        None => match std::env::var(soak::SEED_ENV) {
            Ok(v) => parse_seed(&v).with_context(|| format!("{}={v}", soak::SEED_ENV))?,
            Err(_) => rand::random(),
        },
    };
    let mut cfg = soak::Config::new(duration, seed);
    if let Some(r) = restart_every {
        cfg.restart_every = r;
    }
    if let Some(c) = churn_every {
        cfg.churn_every = c;
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let result = (|| -> Result<()> {
        let cfg = config()?;
        if !tollgate_tests::privileged("tollgate-soak") {
            bail!("the soak creates a network namespace and attaches XDP: run it as root");
        }
        println!(
            "tollgate soak: {:.1} min, seed {:#x} (replay with --seed {:#x}); a restart every {:.0} s, churn every {:.1} s",
            cfg.duration.as_secs_f64() / 60.0,
            cfg.seed,
            cfg.seed,
            cfg.restart_every.as_secs_f64(),
            cfg.churn_every.as_secs_f64()
        );
        let report = soak::run(&cfg)?;
        println!("\n{report}");
        report.verdict()?;
        println!("soak passed");
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
