//! `cargo xtask install [--destdir DIR]`: the release binary to
//! /usr/local/bin, the systemd unit, and the example config (never over an
//! existing one: that is left alone and the new example is written beside it
//! as `tollgate.toml.new`).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, ensure};

use crate::{
    setup,
    util::{self, is_root, root_dir},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stage everything under this directory instead of / (for packaging).
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    setup::run(setup::Args { check: false })?;
    let path = setup::preflight()?;
    let release = util::build_bins(&path, true, &["tollgate"], &["tollgate"])?;
    let dest = args.destdir.unwrap_or_else(|| PathBuf::from("/"));
    ensure!(
        dest != Path::new("/") || is_root(),
        "installing into / needs root (or stage with --destdir DIR)"
    );
    let installed = stage(&dest, &release.join("tollgate"), &root_dir().join("deploy"))?;
    for line in &installed {
        println!("{line}");
    }
    if dest == Path::new("/") && Path::new("/run/systemd/system").exists() {
        util::run(std::process::Command::new("systemctl").arg("daemon-reload"))?;
        println!(
            "next: edit /etc/tollgate/tollgate.toml (interfaces), then `systemctl enable --now tollgate`"
        );
    }
    Ok(())
}

/// Copies the binary, unit and config under `dest`; returns what it did.
pub fn stage(dest: &Path, binary: &Path, deploy: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut copy = |from: &Path, to: &Path, mode: u32| -> Result<()> {
        fs::create_dir_all(to.parent().expect("absolute path"))
            .with_context(|| format!("creating {}", to.parent().unwrap().display()))?;
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
        done.push(format!("installed {}", to.display()));
        Ok(())
    };
    copy(binary, &dest.join("usr/local/bin/tollgate"), 0o755)?;
    copy(
        &deploy.join("tollgate.service"),
        &dest.join("etc/systemd/system/tollgate.service"),
        0o644,
    )?;
    let config = dest.join("etc/tollgate/tollgate.toml");
    if config.exists() {
        let new = config.with_extension("toml.new");
        copy(&deploy.join("tollgate.toml"), &new, 0o644)?;
        done.push(format!(
            "kept the existing {} (the example is {})",
            config.display(),
            new.display()
        ));
    } else {
        copy(&deploy.join("tollgate.toml"), &config, 0o644)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_the_layout_and_never_overwrites_a_config() {
        let dir = std::env::temp_dir().join(format!("tg-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let deploy = root_dir().join("deploy");
        let bin = dir.join("fake-tollgate");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let dest = dir.join("root");
        stage(&dest, &bin, &deploy).unwrap();
        let installed = dest.join("usr/local/bin/tollgate");
        assert_eq!(
            fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(dest.join("etc/systemd/system/tollgate.service").exists());
        let config = dest.join("etc/tollgate/tollgate.toml");
        fs::write(&config, "# mine\n").unwrap();
        let out = stage(&dest, &bin, &deploy).unwrap();
        assert_eq!(fs::read_to_string(&config).unwrap(), "# mine\n");
        assert!(dest.join("etc/tollgate/tollgate.toml.new").exists());
        assert!(out.iter().any(|l| l.contains("kept the existing")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
