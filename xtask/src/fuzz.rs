//! `cargo xtask fuzz [--packets N] [--seed S]`: a long run of the packet fuzzer
//! (`tests/tests/fuzz_packets.rs`, which CI runs short): random and mutated
//! frames through the real XDP program via BPF_PROG_TEST_RUN, each checked
//! against the userspace reference model.

use anyhow::Result;

use crate::{
    setup,
    util::{self, cargo},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Frames to run.
    #[arg(long, default_value_t = 1_000_000)]
    pub packets: u64,
    /// Seed to replay (decimal or 0x-hex); random by default. Every run prints
    /// its seed.
    #[arg(long)]
    pub seed: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let path = setup::ready_as_root("the fuzzer loads BPF programs")?;
    let mut test = cargo();
    test.args([
        "test",
        "--release",
        "--package",
        "tollgate-tests",
        "--test",
        "fuzz_packets",
        "--",
        "--nocapture",
    ])
    .env("TOLLGATE_FUZZ_PACKETS", args.packets.to_string())
    // A skipped fuzz run must not look like a passed one.
    .env("TOLLGATE_REQUIRE_PRIVILEGED", "1");
    if let Some(seed) = &args.seed {
        test.env("TOLLGATE_FUZZ_SEED", seed);
    }
    if let Some(path) = &path {
        test.env("PATH", path);
    }
    util::run(&mut test)
}
