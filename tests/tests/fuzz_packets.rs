//! Packet fuzzing through BPF_PROG_TEST_RUN against the reference model: random
//! and mutated frames under random policies must never abort, must get the
//! model's verdict, and the counters must add up (see `tollgate_tests::fuzz`).
//!
//! `TOLLGATE_FUZZ_PACKETS` sets the number of frames (default 200,000, the CI
//! run), `TOLLGATE_FUZZ_SEED` replays a seed. `cargo xtask fuzz` runs a long one.

use tollgate_common::Verdict;
use tollgate_tests::{fuzz, privileged};

/// Frames in the default (CI) run.
const DEFAULT_PACKETS: u64 = 200_000;
/// From this many frames on, every verdict must have been seen at least once
/// (the generator and the policies are meant to reach all of them).
const COVERAGE_PACKETS: u64 = 50_000;

#[test]
fn fuzzed_frames_agree_with_the_model() {
    if !privileged("fuzzed_frames_agree_with_the_model") {
        return;
    }
    let config = fuzz::Config::from_env(DEFAULT_PACKETS).expect("fuzz configuration");
    eprintln!(
        "fuzz: {} frames, seed {:#x} (replay with {}={:#x})",
        config.packets,
        config.seed,
        fuzz::SEED_ENV,
        config.seed
    );
    let report = fuzz::run(&config).expect("fuzz harness");
    eprintln!("{report}");
    assert!(
        report.disagreements.is_empty(),
        "{} disagreement(s) between kernel and model; replay with {}={:#x}:\n{}",
        report.disagreements.len(),
        fuzz::SEED_ENV,
        config.seed,
        report.disagreements.join("\n")
    );
    if report.packets >= COVERAGE_PACKETS {
        let unseen: Vec<&str> = Verdict::ALL
            .iter()
            .filter(|v| report.by_verdict[**v as usize].packets == 0)
            .map(|v| v.name())
            .collect();
        assert!(
            unseen.is_empty(),
            "verdicts never produced: {unseen:?} (seed {:#x})",
            config.seed
        );
    }
}
