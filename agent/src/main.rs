//! The `tollgate` binary: the daemon (`tollgate run`) and the CLI that talks to it.

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use tollgate::{
    cli::{self, Cli, Command},
    daemon::{self, RunOptions},
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs at info by default; CLI commands only warn.
    let default = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal: journald and log files get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let result = match &cli.command {
        Command::Run(args) => daemon::run(RunOptions {
            config: cli.config.clone(),
            interfaces: args.ifaces.clone(),
            mode: args.mode,
            pin_dir: args.pin_dir.clone(),
            socket: cli.socket.clone(),
            state_file: args.state.clone(),
            drop_log_json: match args.log_format {
                cli::LogFormat::Json => true,
                cli::LogFormat::Text => false,
                cli::LogFormat::Auto => !std::io::stderr().is_terminal(),
            },
        }),
        _ => cli::execute(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
