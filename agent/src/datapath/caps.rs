//! The capabilities `tollgate run` needs, checked before anything touches
//! the kernel, so a missing one is named in one line rather than surfacing
//! as an EPERM from deep inside the loader.

use std::io;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process (`CapEff` in
/// /proc/self/status).
pub fn effective() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status).ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

fn has(eff: u64, cap: u32) -> bool {
    eff & (1 << cap) != 0
}

/// The capabilities `run` cannot do without that `eff` lacks, each with what
/// it is for. CAP_SYS_ADMIN stands in for CAP_BPF (kernels before 5.8).
pub fn missing(eff: u64) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !has(eff, CAP_BPF) && !has(eff, CAP_SYS_ADMIN) {
        out.push("CAP_BPF (to load the XDP program and create, pin and update its maps)");
    }
    if !has(eff, CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN (to attach the program to interfaces)");
    }
    out
}

/// CAP_BPF without CAP_PERFMON (and without CAP_SYS_ADMIN): the verifier
/// applies the unprivileged mitigations, which may reject the program.
pub fn lacks_perfmon(eff: u64) -> bool {
    !has(eff, CAP_PERFMON) && !has(eff, CAP_SYS_ADMIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let status = "Name:\ttollgate\nCapEff:\t0000000000001000\n";
        let eff = parse_cap_eff(status).unwrap();
        assert_eq!(eff, 1 << CAP_NET_ADMIN);
        let m = missing(eff);
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("CAP_BPF"));
        assert!(missing(0).len() == 2);
        assert!(missing((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)).is_empty());
        assert!(missing((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)).is_empty());
        assert!(lacks_perfmon(1 << CAP_BPF));
        assert!(!lacks_perfmon(u64::MAX));
    }
}
