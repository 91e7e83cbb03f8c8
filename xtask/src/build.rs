//! `cargo xtask build [--release]`: build the agent. Its build script compiles
//! the XDP program (nightly, `-Z build-std=core`, bpf-linker) with aya-build.

use anyhow::{Result, ensure};

use crate::setup;
use crate::util::{self, cargo, target_dir};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// `cargo xtask build [--release]`.
pub fn run(args: Args) -> Result<()> {
    let path = setup::preflight()?;
    let mut cmd = cargo();
    cmd.args(["build", "--package", "tollgate"]);
    if args.release {
        cmd.arg("--release");
    }
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    util::run(&mut cmd)?;

    let profile = if args.release { "release" } else { "debug" };
    let binary = target_dir().join(profile).join("tollgate");
    ensure!(
        binary.is_file(),
        "cargo build succeeded but {} does not exist",
        binary.display()
    );
    println!("built: {}", binary.display());
    Ok(())
}
