//! `cargo xtask test [--no-lint] [-- <cargo test args>]`: setup, the whole
//! test suite, the alert rules' checks (`promtool check/test rules`), then the
//! lints. Every step runs even when an earlier test or
//! lint step failed; the summary names the failures and the exit status is
//! non-zero if there were any.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::setup;
use crate::util::{self, cargo, in_ci, is_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and the clippy runs.
    #[arg(long)]
    pub no_lint: bool,

    /// Extra arguments for `cargo test` (after `--`; use `-- -- ARGS` to reach
    /// the test binaries).
    #[arg(
        last = true,
        allow_hyphen_values = true,
        value_name = "CARGO_TEST_ARGS"
    )]
    pub cargo_test_args: Vec<OsString>,
}

/// One step's name, outcome and duration.
struct Step {
    name: &'static str,
    result: Result<()>,
    took: Duration,
}

fn step(name: &'static str, mut cmd: Command, path: Option<&OsString>) -> Step {
    println!("\n==> {name}");
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let start = Instant::now();
    let result = util::run(&mut cmd);
    if let Err(err) = &result {
        eprintln!("error: {err:#}");
    }
    Step {
        name,
        result,
        took: start.elapsed(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `cargo xtask test`.
pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();

    println!("==> setup");
    setup::run(setup::Args { check: false }).context("setup failed; not running the tests")?;
    let path = setup::preflight()?;

    let ci = in_ci();
    if !is_root() {
        if ci {
            bail!("the tests must run as root under CI (privileged tests attach XDP programs)");
        }
        eprintln!("warning: not root: the privileged tests will skip themselves");
    }

    let mut steps = Vec::new();

    let mut test = cargo();
    test.args(["test", "--workspace", "--no-fail-fast"])
        .args(&args.cargo_test_args);
    if ci {
        // Privileged tests fail instead of skipping when they can't run.
        test.env("TOLLGATE_REQUIRE_PRIVILEGED", "1");
    }
    steps.push(step("test", test, path.as_ref()));

    // The shipped alert rules are valid, and their unit tests (series that
    // fire each alert and series that must not) pass. Seconds, no cargo.
    let mut check_rules = Command::new("promtool");
    check_rules.current_dir(util::root_dir()).args([
        "check",
        "rules",
        "deploy/prometheus/alerts.yml",
    ]);
    steps.push(step("promtool check rules", check_rules, path.as_ref()));
    let mut test_rules = Command::new("promtool");
    test_rules.current_dir(util::root_dir()).args([
        "test",
        "rules",
        "deploy/prometheus/alerts_test.yml",
    ]);
    steps.push(step("promtool test rules", test_rules, path.as_ref()));

    if !args.no_lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--check"]);
        steps.push(step("fmt", fmt, path.as_ref()));

        // The eBPF crates (the production program and the benchmark probes)
        // are linted for their own target below.
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--exclude",
            "tollgate-ebpf",
            "--exclude",
            "tollgate-probes",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        steps.push(step("clippy", clippy, path.as_ref()));

        let mut clippy_ebpf = cargo();
        clippy_ebpf.args([
            "+nightly",
            "clippy",
            "--package",
            "tollgate-ebpf",
            "--package",
            "tollgate-probes",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ]);
        steps.push(step("clippy (ebpf)", clippy_ebpf, path.as_ref()));
    }

    let summary = steps
        .iter()
        .map(|s| {
            let verdict = if s.result.is_ok() { "ok" } else { "FAILED" };
            format!("{} {verdict} ({})", s.name, secs(s.took))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let failed: Vec<_> = steps
        .iter()
        .filter(|s| s.result.is_err())
        .map(|s| s.name)
        .collect();
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\nxtask test: {verdict}: {summary}{}; total {}",
        if args.no_lint { ", lint skipped" } else { "" },
        secs(start.elapsed())
    );
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
