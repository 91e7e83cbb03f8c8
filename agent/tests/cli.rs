//! The `tollgate` binary without a daemon or privileges: help text, config
//! checking, and the errors a user sees first. (Having an integration test
//! here also makes `cargo test` build the binary that the end-to-end tests in
//! `tests/tests/daemon.rs` run.)

use std::{path::PathBuf, process::Command};

fn tollgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env_remove("TOLLGATE_SOCKET")
        .output()
        .expect("running tollgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_teaches_every_command_with_examples() {
    let (ok, help, _) = tollgate(&["--help"]);
    assert!(ok);
    for cmd in [
        "run", "status", "tier", "rule", "stats", "top", "reload", "detach", "check",
    ] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "--help lacks {cmd}:\n{help}"
        );
    }
    assert!(
        help.contains("Examples:") && help.contains("TOLLGATE_SOCKET"),
        "{help}"
    );
    for sub in [
        &["tier", "set", "--help"][..],
        &["rule", "add", "--help"],
        &["run", "--help"],
        &["top", "--help"],
    ] {
        let (ok, text, _) = tollgate(sub);
        assert!(ok, "{sub:?}");
        assert!(text.matches("Example").count() >= 3, "{sub:?}:\n{text}");
    }
}

#[test]
fn the_example_config_is_valid() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tollgate.toml");
    let (ok, out, err) = tollgate(&["check", "--config", example.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("OK (2 tiers, default tier default, 4 rules"),
        "{out}"
    );
}

#[test]
fn a_bad_config_is_rejected_naming_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("tg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, "[[tier]]\nname = \"gold\"\npackets = \"100/x\"\n").unwrap();
    let p = path.to_str().unwrap();
    let (ok, _, err) = tollgate(&["check", "--config", p]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{p}:3: tier \"gold\": packets = \"100/x\": unknown period \"x\" (use /s, /min or /h)"
        )),
        "{err}"
    );
    // `run` checks the file before anything else (no root needed to see it).
    let (ok, _, err) = tollgate(&["run", "--config", p, "--iface", "lo"]);
    assert!(!ok);
    assert!(err.contains(&format!("{p}:3:")), "{err}");
    let (ok, _, err) = tollgate(&["check", "--config", &format!("{p}.missing")]);
    assert!(!ok && err.contains("cannot read the config file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn commands_without_a_daemon_say_so() {
    let (ok, _, err) = tollgate(&["--socket", "/nonexistent/tg.sock", "status"]);
    assert!(!ok);
    assert!(
        err.contains("tollgate daemon is not running (no socket at /nonexistent/tg.sock): start it with `tollgate run`"),
        "{err}"
    );
    let (ok, _, err) = tollgate(&["rule", "add", "10.0.0.0/8"]);
    assert!(
        !ok && err.contains("--tier") && err.contains("--allow"),
        "clap names the missing choice: {err}"
    );
}
