//! `cargo xtask soak [--minutes N] [--seed S] [--restart-every SECS]`: the real daemon under mixed
//! traffic for a long time while its control plane churns (tier and rule
//! changes, SIGHUP and `tollgate reload`) and it is restarted every few
//! seconds (SIGTERM and kill -9); reports lost CLI changes, enforcement gaps,
//! leaked programs and memory growth (tests/src/bin/tollgate-soak.rs;
//! `tests/tests/soak.rs` is the short CI run).

use anyhow::{Result, ensure};

use crate::{setup, util};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to run, in minutes (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Seed to replay (decimal or 0x-hex); random by default. Every run prints
    /// its seed.
    #[arg(long)]
    pub seed: Option<String>,
    /// Seconds between daemon restarts (default 10); a long interval shows
    /// memory growth within one daemon.
    #[arg(long, value_name = "SECS")]
    pub restart_every: Option<f64>,
}

pub fn run(args: Args) -> Result<()> {
    ensure!(
        args.minutes.is_finite() && args.minutes * 60.0 >= 10.0,
        "--minutes must be at least 10 seconds' worth"
    );
    let path = setup::ready_as_root("the soak creates a network namespace and loads XDP")?;
    let release = util::build_bins(
        &path,
        true,
        &["tollgate", "tollgate-tests"],
        &["tollgate", "tollgate-soak"],
    )?;
    // tollgate-soak runs the `tollgate` next to it: the release build.
    let mut soak = std::process::Command::new(release.join("tollgate-soak"));
    soak.arg("--minutes").arg(args.minutes.to_string());
    if let Some(seed) = &args.seed {
        soak.arg("--seed").arg(seed);
    }
    if let Some(secs) = args.restart_every {
        soak.arg("--restart-every").arg(secs.to_string());
    }
    util::run(&mut soak)
}
