//! `cargo xtask`: developer tasks for tollgate.
//!
//! * `cargo xtask setup [--check]`: install (or just check for) everything a
//!   fresh Debian 12 machine needs to build and test tollgate.
//! * `cargo xtask build [--release]`: build the agent (and, through its build
//!   script, the XDP program).
//! * `cargo xtask test [--no-lint] [-- <cargo test args>]`: setup, the whole
//!   test suite, then fmt and clippy (host crates and the eBPF crate).
//! * `cargo xtask demo`: the limiter at work on a throwaway veth, ~20 s.
//! * `cargo xtask bench micro|flood|http|control|ddos`: benchmarks in the real
//!   kernel (see `bench.rs`; `ddos`: nginx under a spoofed flood).
//! * `cargo xtask fuzz [--packets N] [--seed S]`: a long packet-fuzzing run
//!   against the reference model in the real kernel.
//! * `cargo xtask soak [--minutes N] [--seed S] [--restart-every SECS]`: the
//!   daemon under mixed traffic with config reloads and restarts every few
//!   seconds; reports lost CLI changes, enforcement gaps, leaked programs and
//!   memory growth.

mod bench;
mod build;
mod demo;
mod fuzz;
mod install;
mod setup;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "tollgate developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install (idempotently) the system packages, toolchains and bpffs mount
    /// tollgate needs.
    Setup(setup::Args),
    /// Build the agent binary (which embeds the XDP program).
    Build(build::Args),
    /// Run setup, the workspace tests, then the lints.
    Test(test::Args),
    /// Run setup, build, and show tollgate limiting simulated clients on a
    /// throwaway namespace and veth for about 20 seconds (root).
    Demo,
    /// Run setup, then a benchmark in the real kernel (root).
    Bench(bench::Args),
    /// Run setup, then a long packet-fuzzing run against the reference model
    /// in the real kernel (root).
    Fuzz(fuzz::Args),
    /// Run setup, build, then the daemon under mixed traffic with config
    /// reloads and restarts every few seconds for --minutes (root); fails on a
    /// lost CLI change, an enforcement gap or a leaked program.
    Soak(soak::Args),
    /// Build the release binary and install it with the systemd unit and the
    /// example config (root; or stage with --destdir).
    Install(install::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(args),
        Command::Build(args) => build::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Install(args) => install::run(args),
        Command::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::{Cli, Command};

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_extra_args_to_cargo_test() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--no-lint",
            "--",
            "-p",
            "tollgate-common",
            "--",
            "--nocapture",
        ])
        .unwrap();
        let Command::Test(args) = cli.command else {
            panic!("not test: {cli:?}");
        };
        assert!(args.no_lint);
        assert_eq!(
            args.cargo_test_args,
            ["-p", "tollgate-common", "--", "--nocapture"]
        );
    }

    #[test]
    fn flags_default_off() {
        let cli = Cli::try_parse_from(["xtask", "test"]).unwrap();
        let Command::Test(args) = cli.command else {
            panic!("not test: {cli:?}");
        };
        assert!(!args.no_lint && args.cargo_test_args.is_empty());
        let cli = Cli::try_parse_from(["xtask", "setup", "--check"]).unwrap();
        assert!(matches!(cli.command, Command::Setup(a) if a.check));
        let cli = Cli::try_parse_from(["xtask", "build", "--release"]).unwrap();
        assert!(matches!(cli.command, Command::Build(a) if a.release));
    }

    #[test]
    fn soak_takes_minutes_and_a_seed() {
        let cli =
            Cli::try_parse_from(["xtask", "soak", "--minutes", "1.5", "--seed", "0x2a"]).unwrap();
        let Command::Soak(args) = cli.command else {
            panic!("not soak: {cli:?}");
        };
        assert_eq!(args.minutes, 1.5);
        assert_eq!(args.seed.as_deref(), Some("0x2a"));
        assert_eq!(args.restart_every, None);
        let cli = Cli::try_parse_from(["xtask", "soak"]).unwrap();
        assert!(matches!(cli.command, Command::Soak(a) if a.minutes == 10.0 && a.seed.is_none()));
        let cli = Cli::try_parse_from(["xtask", "soak", "--restart-every", "60"]).unwrap();
        assert!(matches!(cli.command, Command::Soak(a) if a.restart_every == Some(60.0)));
        assert!(Cli::try_parse_from(["xtask", "soak", "--minutes", "ten"]).is_err());
    }
}
