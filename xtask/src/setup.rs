//! `cargo xtask setup [--check]`: check for, and install what's missing of,
//! everything tollgate needs on a Debian 12 machine. Idempotent: each item is
//! checked first and only installed when missing.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{self, find_tool, have, is_root, probe};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only report what is installed and what is missing; install nothing.
    /// Exits non-zero if anything is missing.
    #[arg(long)]
    pub check: bool,
}

/// Debian packages: LLVM 22 (bpf-linker links against it), and the tools the
/// tests and the daemon use.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "bpftool",
    "xdp-tools",
    "nftables",
    "iptables",
    "redis-server",
    "prometheus",
    // The CrowdSec local API for tests/tests/crowdsec.rs (see
    // `prepare_crowdsec`: no Central API registration, nothing online).
    "crowdsec",
    "ethtool",
    "curl",
    "stress-ng",
    // `cargo xtask bench ddos`: the service under attack and the legitimate
    // client. The bench runs its own nginx as a child process (private
    // prefix, host veth address only); the package's system service must
    // not run (see `install_quietly`).
    "nginx",
    "wrk",
];

const NIGHTLY: &str = "nightly";
const BPF_LINKER: &str = "bpf-linker";
const BPF_LINKER_VERSION: &str = "bpf-linker 0.13";
const LLVM_MAJOR: &str = "22";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS: &str = "/sys/fs/bpf";

/// One thing setup checks for and can install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Apt(&'static str),
    Nightly,
    RustSrc,
    BpfLinker,
    Bpffs,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Apt(pkg) => write!(f, "{pkg}"),
            Item::Nightly => write!(f, "rust {NIGHTLY} toolchain"),
            Item::RustSrc => write!(f, "rust-src for {NIGHTLY}"),
            Item::BpfLinker => write!(f, "bpf-linker 0.13 (LLVM {LLVM_MAJOR})"),
            Item::Bpffs => write!(f, "bpffs at {BPFFS}"),
        }
    }
}

/// Every item, in install order (LLVM before bpf-linker).
fn all_items() -> Vec<Item> {
    APT_PACKAGES
        .iter()
        .copied()
        .map(Item::Apt)
        .chain([Item::Nightly, Item::RustSrc, Item::BpfLinker, Item::Bpffs])
        .collect()
}

impl Item {
    /// `Ok(how it was found)` or `Err(why it counts as missing)`.
    fn probe(self) -> Result<String, String> {
        match self {
            Item::Apt(pkg) => probe_apt(pkg),
            Item::Nightly => probe_nightly(),
            Item::RustSrc => probe_rust_src(),
            Item::BpfLinker => probe_bpf_linker(),
            Item::Bpffs => probe_bpffs(),
        }
    }
}

fn probe_apt(pkg: &str) -> Result<String, String> {
    let out = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}\t${Version}", pkg]))
        .ok_or("not installed")?;
    let (status, version) = out.split_once('\t').unwrap_or((out.as_str(), ""));
    if status.contains("install ok installed") {
        Ok(format!("dpkg {version}"))
    } else {
        Err(format!("dpkg status: {status}"))
    }
}

fn probe_nightly() -> Result<String, String> {
    if !have("rustup") {
        return Err("rustup is not on PATH".to_owned());
    }
    let list = probe(Command::new("rustup").args(["toolchain", "list"]))
        .ok_or("`rustup toolchain list` failed (is rustup installed?)")?;
    let toolchain = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .find(|name| *name == NIGHTLY || name.starts_with("nightly-"))
        .ok_or("not in `rustup toolchain list`")?
        .to_owned();
    let version = probe(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .arg("--version"),
    )
    .map(|v| v.trim().to_owned())
    .unwrap_or_else(|| "rustc version unknown".to_owned());
    Ok(format!("{toolchain}, {version}"))
}

fn probe_rust_src() -> Result<String, String> {
    let list = probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))
    .ok_or(format!("no {NIGHTLY} toolchain"))?;
    if list
        .lines()
        .any(|line| line.trim() == "rust-src" || line.starts_with("rust-src-"))
    {
        Ok(format!("rustup component of {NIGHTLY}"))
    } else {
        Err(format!("not an installed component of {NIGHTLY}"))
    }
}

fn probe_bpf_linker() -> Result<String, String> {
    let path = find_tool(BPF_LINKER)
        .ok_or("not on PATH, in $CARGO_HOME/bin or in ~/.cargo/bin".to_owned())?;
    let version = probe(Command::new(&path).arg("--version"))
        .map(|v| v.trim().to_owned())
        .ok_or(format!("`{} --version` failed", path.display()))?;
    if !version.starts_with(BPF_LINKER_VERSION) {
        return Err(format!(
            "{} is `{version}`, want {BPF_LINKER_VERSION}",
            path.display()
        ));
    }
    // bpf-linker links libLLVM dynamically when built against the system LLVM;
    // when ldd names it, it must be LLVM 22.
    let llvm = probe(Command::new("ldd").arg(&path)).and_then(|ldd| {
        ldd.split_whitespace()
            .find_map(|word| word.strip_prefix("libLLVM.so.").map(str::to_owned))
            .or_else(|| {
                ldd.split_whitespace().find_map(|w| {
                    w.strip_prefix("libLLVM-")
                        .map(|v| v.trim_end_matches(".so").to_owned())
                })
            })
    });
    match llvm {
        Some(llvm) if llvm.split('.').next() != Some(LLVM_MAJOR) => Err(format!(
            "{} links libLLVM {llvm}, want LLVM {LLVM_MAJOR}",
            path.display()
        )),
        Some(llvm) => Ok(format!("{version}, LLVM {llvm}, {}", path.display())),
        None => Ok(format!("{version}, {}", path.display())),
    }
}

fn probe_bpffs() -> Result<String, String> {
    let mounts =
        fs::read_to_string("/proc/mounts").map_err(|e| format!("reading /proc/mounts: {e}"))?;
    let mounted = mounts.lines().any(|line| {
        let fields: Vec<_> = line.split_whitespace().collect();
        fields.get(1) == Some(&BPFFS) && fields.get(2) == Some(&"bpf")
    });
    if mounted {
        Ok("bpf filesystem in /proc/mounts".to_owned())
    } else {
        Err("no bpf filesystem mounted there".to_owned())
    }
}

/// The package's postinst registers with CrowdSec's Central API (online)
/// unless `/etc/crowdsec/online_api_credentials.yaml` exists and is not
/// empty (README.Debian: the way to opt out), and fails the install when
/// the machine has no Internet access. The tests run their own local API
/// with the Central API off, so setup opts out before installing.
fn prepare_crowdsec() -> Result<()> {
    let capi = Path::new("/etc/crowdsec/online_api_credentials.yaml");
    if fs::metadata(capi).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    fs::create_dir_all("/etc/crowdsec")?;
    fs::write(
        capi,
        "# Central API registration disabled by `cargo xtask setup` (tollgate's tests\n\
         # run their own local API, offline). Delete this file and run\n\
         # `cscli capi register` to register.\n",
    )?;
    println!(
        "crowdsec: Central API registration disabled ({})",
        capi.display()
    );
    Ok(())
}

/// A service policy that forbids every start: `invoke-rc.d` (which package
/// maintainer scripts call, with or without systemd) asks
/// `/usr/sbin/policy-rc.d` first and does nothing when it exits 101.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_DENY_ALL: &str = "#!/bin/sh\n# Written by `cargo xtask setup` while it installs packages: no service\n# starts (removed afterwards).\nexit 101\n";

/// `apt-get install` of `apt` without starting any service. The Debian
/// nginx package's postinst would otherwise start a system nginx on
/// 0.0.0.0:80 (systemd is not running on these machines, so `invoke-rc.d`
/// falls back to the sysv script and really starts it), where it would
/// collide with the tests' own HTTP servers and nobody would stop it. So:
/// a `policy-rc.d` that denies every start for the duration of the install
/// (an existing one, e.g. a container's, is left as it is), then the
/// package's service disabled for future boots and a system nginx that is
/// running anyway (started by an earlier install) stopped. The benchmark
/// runs its own nginx as a child process on the veth address only.
fn install_quietly(apt: &[&str]) -> Result<()> {
    let policy = Path::new(POLICY_RC_D);
    let ours = !policy.exists();
    if ours {
        fs::write(policy, POLICY_DENY_ALL)?;
        fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let result = util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(apt),
    );
    if ours {
        let _ = fs::remove_file(policy);
    }
    result?;
    if apt.contains(&"nginx") {
        quiet_system_nginx();
    }
    Ok(())
}

/// The package's nginx service disabled (sysv links and systemd unit; both
/// best effort, as either may be absent) and a running system nginx (the
/// package's pid file) told to quit.
fn quiet_system_nginx() {
    let quiet = |cmd: &mut Command| {
        let _ = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    if have("update-rc.d") {
        quiet(Command::new("update-rc.d").args(["nginx", "disable"]));
    }
    if have("systemctl") {
        quiet(Command::new("systemctl").args(["disable", "nginx.service"]));
    }
    if let Ok(pid) = fs::read_to_string("/run/nginx.pid")
        && !pid.trim().is_empty()
        && Path::new(&format!("/proc/{}", pid.trim())).exists()
    {
        println!(
            "nginx: stopping the system nginx (pid {}) the package started",
            pid.trim()
        );
        quiet(Command::new("nginx").args(["-s", "quit"]));
    }
}

/// Probe every item, print `ok: ...` or `missing: ...`, return the missing ones.
fn report(items: &[Item]) -> Vec<Item> {
    let mut missing = Vec::new();
    for &item in items {
        match item.probe() {
            Ok(how) => println!("ok: {item} ({how})"),
            Err(why) => {
                println!("missing: {item} ({why})");
                missing.push(item);
            }
        }
    }
    missing
}

fn list(items: &[Item]) -> String {
    items
        .iter()
        .map(Item::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn install(missing: &[Item]) -> Result<()> {
    let apt: Vec<&str> = missing
        .iter()
        .filter_map(|item| match item {
            Item::Apt(pkg) => Some(*pkg),
            _ => None,
        })
        .collect();
    if !apt.is_empty() {
        if !have("apt-get") {
            bail!("apt-get is not on PATH: install {} by hand", apt.join(" "));
        }
        println!("installing: {} ...", apt.join(" "));
        if apt.contains(&"crowdsec") {
            prepare_crowdsec()?;
        }
        util::run(Command::new("apt-get").arg("update"))?;
        install_quietly(&apt)?;
        // A crowdsec left half-configured by an earlier install (its
        // postinst failed registering online) configures now.
        if apt.contains(&"crowdsec") && probe_apt("crowdsec").is_err() {
            util::run(
                Command::new("dpkg")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .args(["--configure", "crowdsec"]),
            )?;
        }
    }
    for &item in missing {
        match item {
            Item::Apt(_) => {}
            Item::Nightly => {
                println!("installing: {item} ...");
                util::run(Command::new("rustup").args([
                    "toolchain",
                    "install",
                    NIGHTLY,
                    "--profile",
                    "minimal",
                ]))?;
            }
            Item::RustSrc => {
                println!("installing: {item} ...");
                util::run(Command::new("rustup").args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    NIGHTLY,
                ]))?;
            }
            Item::BpfLinker => {
                println!("installing: {item} ... (cargo builds it from source: takes ~3 minutes)");
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut llvm_path = OsString::from(format!("{LLVM_PREFIX}/bin:"));
                llvm_path.push(path);
                let mut cmd = Command::new("cargo");
                cmd.env("LLVM_PREFIX", LLVM_PREFIX)
                    .env("PATH", llvm_path)
                    .args(["install", BPF_LINKER, "--version", "^0.13"])
                    .args(["--no-default-features", "--features", "llvm-22"]);
                // A bpf-linker of another version or LLVM is in the way.
                if find_tool(BPF_LINKER).is_some() {
                    cmd.arg("--force");
                }
                util::run(&mut cmd)?;
            }
            Item::Bpffs => {
                println!("installing: {item} ...");
                if !Path::new(BPFFS).is_dir() {
                    util::run(Command::new("mkdir").args(["-p", BPFFS]))?;
                }
                util::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
            }
        }
    }
    Ok(())
}

/// `cargo xtask setup [--check]`.
pub fn run(args: Args) -> Result<()> {
    let items = all_items();
    let missing = report(&items);
    if missing.is_empty() {
        println!("setup: all {} items present", items.len());
        return Ok(());
    }
    if args.check {
        bail!(
            "missing: {}; run `cargo xtask setup` (as root) to install",
            list(&missing)
        );
    }
    if !is_root() {
        bail!(
            "cargo xtask setup must run as root to install: {}",
            list(&missing)
        );
    }
    install(&missing)?;

    println!("setup: verifying ...");
    let still_missing = report(&missing);
    if !still_missing.is_empty() {
        bail!("still missing after installing: {}", list(&still_missing));
    }
    println!(
        "setup: all {} items present ({} installed)",
        items.len(),
        missing.len()
    );
    Ok(())
}

/// What every root-only command (demo, bench, fuzz, soak) does first: setup,
/// then checks it runs as root (`why` says what needs it), then [`preflight`].
pub fn ready_as_root(why: &str) -> Result<Option<OsString>> {
    run(Args { check: false })?;
    if !is_root() {
        bail!("{why}: run it as root");
    }
    preflight()
}

/// The quick check `cargo xtask build` does: the toolchain pieces that
/// building the XDP program needs. Returns a PATH for child processes when
/// bpf-linker was found outside PATH (in cargo's bin directory).
pub fn preflight() -> Result<Option<OsString>> {
    for item in [Item::Nightly, Item::RustSrc, Item::BpfLinker] {
        if let Err(why) = item.probe() {
            bail!("{item} is missing ({why}): run `cargo xtask setup`");
        }
    }
    Ok(match util::which(BPF_LINKER) {
        Some(_) => None,
        None => find_tool(BPF_LINKER).and_then(|linker| linker.parent().and_then(util::path_with)),
    })
}
