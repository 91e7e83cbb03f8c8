//! `cargo xtask demo`: setup, build, then tollgate's job on a throwaway
//! namespace and veth for about 20 seconds (see tests/src/bin/tollgate-demo.rs).

use anyhow::{Result, ensure};

use crate::{
    setup,
    util::{self, cargo, is_root, target_dir},
};

pub fn run() -> Result<()> {
    setup::run(setup::Args { check: false })?;
    ensure!(
        is_root(),
        "the demo creates a network namespace and loads XDP: run it as root"
    );
    let path = setup::preflight()?;
    let mut build = cargo();
    build.args([
        "build",
        "--package",
        "tollgate",
        "--package",
        "tollgate-tests",
        "--bin",
        "tollgate",
        "--bin",
        "tollgate-demo",
    ]);
    if let Some(path) = &path {
        build.env("PATH", path);
    }
    util::run(&mut build)?;
    let debug = target_dir().join("debug");
    util::run(std::process::Command::new(debug.join("tollgate-demo")).arg(debug.join("tollgate")))
}
