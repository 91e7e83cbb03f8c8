//! `cargo xtask bench <suite>`: benchmarks that need the real kernel.
//!
//! * `micro`: BPF_PROG_TEST_RUN ns/packet for each data-path case against the
//!   minimal XDP_PASS program, plus ablations and single-operation probes.
//! * `flood`: a spoofed flood from a namespace over a veth into the minimal
//!   XDP_DROP, tollgate, an nftables meter and iptables hashlimit in turn:
//!   receive CPU per packet, drop rate, legitimate sources' losses, and each
//!   limiter's accuracy at 2x and 10x its limit. Needs nft, iptables, ethtool.
//! * `http`: what a sampled HTTP request costs in the kernel, and the daemon's
//!   sample ingest rate on one core.
//! * `control`: `/metrics`, `status` and control requests with 1,000,000
//!   tracked sources (the real daemon on a throwaway veth).
//! * `ddos`: a real service under attack: nginx on the host side of a veth,
//!   wrk in a legitimate client's namespace (requests/s, p99 latency), a
//!   spoofed random-source flood from another namespace at the generator's
//!   full rate, and paced at a rate calibrated on an XDP_DROP floor; no
//!   protection, nftables and tollgate, each without the flood, paced and at
//!   full rate. Needs nginx, wrk, nft, ethtool.

use anyhow::{Result, ensure};

use crate::{setup, util};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Suite {
    /// test_run ns/packet per data path, vs the minimal XDP program.
    Micro,
    /// Flood over a veth: tollgate vs nftables meter vs iptables hashlimit vs
    /// the minimal XDP_DROP (about 6 minutes).
    Flood,
    /// HTTP monitor: kernel cost of a sampled request, daemon ingest rate.
    Http,
    /// Scrape, status and control-request latency with 1,000,000 tracked
    /// sources.
    Control,
    /// nginx under a spoofed flood, wrk as the legitimate client: no
    /// protection vs nftables vs tollgate, each with and without the flood
    /// (about 4 minutes).
    Ddos,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which benchmark to run.
    #[arg(value_enum)]
    pub suite: Suite,
    /// flood: random sources over the whole IPv4 space and random IPv6 /64s,
    /// legitimate clients established first, every limiter with a global
    /// ceiling (about 3 minutes).
    #[arg(long)]
    pub spoofed: bool,
}

pub fn run(args: Args) -> Result<()> {
    let path = setup::ready_as_root("benchmarks load BPF programs")?;
    // Each suite is one release binary of the tests crate.
    let (bin, arg) = match args.suite {
        Suite::Micro => ("tollgate-bench", Some("micro")),
        Suite::Flood => {
            for tool in ["nft", "iptables", "ethtool", "ip"] {
                ensure!(
                    util::have(tool),
                    "the flood benchmark needs `{tool}` on PATH"
                );
            }
            ("tollgate-bench", Some("flood"))
        }
        Suite::Ddos => {
            for tool in ["nginx", "wrk", "nft", "ethtool", "ip"] {
                ensure!(
                    util::have(tool),
                    "the ddos benchmark needs `{tool}` on PATH (nginx and wrk are \
                     Debian packages: run `cargo xtask setup`)"
                );
            }
            ("tollgate-bench", Some("ddos"))
        }
        Suite::Http => ("tollgate-bench-http", None),
        Suite::Control => ("tollgate-bench-control", None),
    };
    // The control benchmark starts the daemon binary built beside it.
    let release = util::build_bins(
        &path,
        true,
        &["tollgate-tests", "tollgate"],
        &[bin, "tollgate"],
    )?;
    let mut cmd = std::process::Command::new(release.join(bin));
    cmd.args(arg);
    if args.spoofed {
        ensure!(
            matches!(args.suite, Suite::Flood),
            "--spoofed is a flood option"
        );
        cmd.arg("--spoofed");
    }
    util::run(&mut cmd)
}
