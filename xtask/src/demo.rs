//! `cargo xtask demo`: setup, build, then tollgate's job on a throwaway
//! namespace and veth for about 20 seconds (see tests/src/bin/tollgate-demo.rs).

use anyhow::Result;

use crate::{setup, util};

pub fn run() -> Result<()> {
    let path = setup::ready_as_root("the demo creates a network namespace and loads XDP")?;
    let debug = util::build_bins(
        &path,
        false,
        &["tollgate", "tollgate-tests"],
        &["tollgate", "tollgate-demo"],
    )?;
    util::run(std::process::Command::new(debug.join("tollgate-demo")).arg(debug.join("tollgate")))
}
