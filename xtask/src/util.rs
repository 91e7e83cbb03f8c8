//! Small helpers shared by the subcommands: running commands loudly, probing
//! quietly, finding executables, and where things are.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of xtask/).
pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a subdirectory of the workspace")
        .to_path_buf()
}

/// The workspace's target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root_dir().join(dir)
            }
        }
        _ => root_dir().join("target"),
    }
}

/// `cargo` (the rustup proxy from PATH, so `+nightly` works), run from the
/// workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root_dir());
    cmd
}

/// Quote one word for display the way a shell would need it.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+^@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command as a shell line: `[cd DIR &&] [VAR=value ...] program args...`.
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    if let Some(dir) = cmd.get_current_dir()
        && dir != root_dir()
    {
        words.push(format!("cd {} &&", quote(dir.as_os_str())));
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => words.push(format!("{}={}", key.to_string_lossy(), quote(value))),
            None => words.push(format!("-u {}", key.to_string_lossy())),
        }
    }
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// Print `$ <command line>`, run it with inherited stdio (output streams
/// through), and fail with the command line and exit status if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed: {status}");
    }
    Ok(())
}

/// Run a probe quietly and return its stdout if it exits successfully.
/// `None` when the program is missing or fails.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `name` if it's an executable file.
fn executable(path: PathBuf) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = path.metadata().ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).find_map(|dir| executable(dir.join(name)))
}

/// Whether `name` is on PATH.
pub fn have(name: &str) -> bool {
    which(name).is_some()
}

/// `$CARGO_HOME/bin`, or `$HOME/.cargo/bin`.
pub fn cargo_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME").filter(|h| !h.is_empty()) {
        let dir = PathBuf::from(home).join(".cargo").join("bin");
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// `name` on PATH, else in cargo's bin directory.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        cargo_bin_dirs()
            .into_iter()
            .find_map(|dir| executable(dir.join(name)))
    })
}

/// PATH with `dir` in front (unless it's already on PATH), for children that
/// must find a tool installed outside PATH.
pub fn path_with(dir: &Path) -> Option<std::ffi::OsString> {
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == dir) {
        return None;
    }
    env::join_paths(std::iter::once(dir.to_path_buf()).chain(env::split_paths(&path))).ok()
}

/// Whether we run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether we run under CI (`CI` set to anything but "", "0" or "false").
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `cargo build` of `bins` from `packages` (the release profile if
/// `release`), with `path` as PATH when preflight found bpf-linker off PATH;
/// returns the profile's output directory.
pub fn build_bins(
    path: &Option<std::ffi::OsString>,
    release: bool,
    packages: &[&str],
    bins: &[&str],
) -> Result<PathBuf> {
    let mut build = cargo();
    build.arg("build");
    if release {
        build.arg("--release");
    }
    for p in packages {
        build.args(["--package", p]);
    }
    for b in bins {
        build.args(["--bin", b]);
    }
    if let Some(path) = path {
        build.env("PATH", path);
    }
    run(&mut build)?;
    Ok(target_dir().join(if release { "release" } else { "debug" }))
}
