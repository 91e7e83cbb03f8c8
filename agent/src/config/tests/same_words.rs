//! One test per rule: each reads the same from the file, the control
//! protocol and the command line.

use super::*;

/// The configuration the CLI-change cases start from (with `[cluster]`, so
/// global limits are allowed), and the same text for the file cases.
const BASE: &str =
    "[cluster]\nredis = \"redis://h/\"\n[[tier]]\nname = \"default\"\npackets = \"100/s\"\n";

/// `tier set` as the command line gives it: the patch's own clap flags.
#[derive(clap::Parser)]
struct TierSetFlags {
    #[command(flatten)]
    patch: crate::spec::TierPatch,
}

/// One rule, three ways in: a `[[tier]]` table in the file (at `line`), the
/// same fields as a `tier_set` request (the patch's serde form, which the
/// control protocol carries), and, when given, `tier set` flags. All three
/// must fail with the same words.
#[track_caller]
fn same_words(base: &str, fields: &str, flags: &[&str], line: usize, words: &str) {
    let file = format!("{base}[[tier]]\n{fields}");
    let err = parse_str(&file)
        .expect_err("the file should fail")
        .to_string();
    assert!(
        err.contains(&format!("tollgate.toml:{line}: {words}")),
        "file: {err:?} should contain line {line} and {words:?}"
    );
    let running = parse_str(base).unwrap();
    let patch: crate::spec::TierPatch = toml::from_str(fields).unwrap();
    let json = serde_json::to_string(&crate::proto::Request::TierSet(Box::new(patch))).unwrap();
    let crate::proto::Request::TierSet(patch) = serde_json::from_str(&json).unwrap() else {
        panic!("{json}")
    };
    let err = running.with_tier(&patch).expect_err("tier_set should fail");
    assert_eq!(err.to_string(), words, "tier_set");
    if !flags.is_empty() {
        let mut argv = vec!["tier-set"];
        argv.extend_from_slice(flags);
        let cli = <TierSetFlags as clap::Parser>::try_parse_from(&argv).unwrap();
        let err = running
            .with_tier(&cli.patch)
            .expect_err("tier set should fail");
        assert_eq!(err.to_string(), words, "tier set {flags:?}");
    }
}

#[test]
fn each_tier_rule_reads_the_same_from_the_file_the_socket_and_the_command_line() {
    let no_cluster = "[[tier]]\nname = \"default\"\npackets = \"100/s\"\n";
    let cases: &[(&str, &str, &[&str], usize, &str)] = &[
        (
            BASE,
            "name = \"t\"\npackets = \"100/x\"\n",
            &["t", "--packets", "100/x"],
            8,
            "tier \"t\": packets = \"100/x\": unknown period \"x\" (use /s, /min or /h)",
        ),
        (
            BASE,
            "name = \"a b\"\n",
            &["a b"],
            7,
            "tier: name = \"a b\": use only letters, digits, '-', '_' and '.'",
        ),
        (
            BASE,
            "name = \"t\"\npackets = \"0/s\"\n",
            &["t", "--packets", "0/s"],
            8,
            "tier \"t\": packets = \"0/s\": must be greater than zero",
        ),
        (
            BASE,
            "name = \"t\"\npackets = \"-5/s\"\n",
            &["t", "--packets", "-5/s"],
            8,
            "tier \"t\": packets = \"-5/s\": \"-5\" must not be negative",
        ),
        (
            BASE,
            "name = \"t\"\nbytes = \"10XB/s\"\n",
            &["t", "--bytes", "10XB/s"],
            8,
            "tier \"t\": bytes = \"10XB/s\": unknown unit \"XB\" (use B, KB, MB, GB, KiB, MiB or GiB)",
        ),
        (
            BASE,
            "name = \"t\"\nbytes = \"1MB/s\"\nbytes_burst = \"1e30GB\"\n",
            &["t", "--bytes", "1MB/s", "--bytes-burst", "1e30GB"],
            9,
            "tier \"t\": bytes_burst = \"1e30GB\": \"1e30GB\" is not a number",
        ),
        (
            BASE,
            "name = \"t\"\nbytes = \"30B/min\"\n",
            &["t", "--bytes", "30B/min"],
            8,
            "tier \"t\": bytes = \"30B/min\": byte rates must be at least 1B/s",
        ),
        (
            BASE,
            "name = \"t\"\npackets = \"10/s\"\npackets_burst = 0\n",
            &["t", "--packets", "10/s", "--burst", "0"],
            9,
            "tier \"t\": packets_burst = 0: must be at least 1",
        ),
        (
            BASE,
            "name = \"t\"\npackets = \"10/s\"\npackets_burst = -5\n",
            &["t", "--packets", "10/s", "--burst", "-5"],
            9,
            "tier \"t\": packets_burst = -5: must be at least 1",
        ),
        (
            BASE,
            "name = \"t\"\npackets_burst = 5\n",
            &["t", "--burst", "5"],
            8,
            "tier \"t\": packets_burst = 5: there is no packets rate to apply it to (the tier has no packets limit)",
        ),
        (
            BASE,
            "name = \"t\"\nrequests = \"1/min\"\nrequests_burst = 40\n",
            &["t", "--requests", "1/min", "--requests-burst", "40"],
            9,
            "tier \"t\": requests_burst = 40: 1/min with a burst of 40 does not fit the requests bucket",
        ),
        // Issue 12: a burst of 31 years, a rate of 5e12/s.
        (
            BASE,
            "name = \"t\"\npackets = \"1/h\"\npackets_burst = 271560\n",
            &["t", "--packets", "1/h", "--burst", "271560"],
            9,
            "tier \"t\": packets_burst = 271560: a burst of 271560 at 1/h is 31 years of traffic: at most 24 hours' worth is supported (a burst of at most 24 at this rate)",
        ),
        (
            BASE,
            "name = \"t\"\npackets = \"5000000000000/s\"\n",
            &["t", "--packets", "5000000000000/s"],
            8,
            "tier \"t\": packets = \"5000000000000/s\": 5000000000000/s is faster than 1000000000/s, the fastest rate a limit can hold",
        ),
        (
            BASE,
            "name = \"t\"\nbytes = \"100GB/s\"\n",
            &["t", "--bytes", "100GB/s"],
            8,
            "tier \"t\": bytes = \"100GB/s\": 100GB/s is faster than 64GB/s, the fastest rate a limit can hold",
        ),
        (
            BASE,
            "name = \"t\"\nipv6_prefix = 65\n",
            &["t", "--ipv6-prefix", "65"],
            8,
            "tier \"t\": ipv6_prefix = 65: must be between 1 and 64",
        ),
        (
            BASE,
            "name = \"t\"\nipv6_prefix = -1\n",
            &["t", "--ipv6-prefix", "-1"],
            8,
            "tier \"t\": ipv6_prefix = -1: must be between 1 and 64",
        ),
        (
            BASE,
            "name = \"t\"\nglobal_packets = \"100/s\"\n",
            &["t", "--global-packets", "100/s"],
            8,
            "tier \"t\": global_packets = \"100/s\": needs a per-node packets limit too",
        ),
        (
            BASE,
            "name = \"t\"\npackets = \"1/s\"\nglobal_packets = \"30/min\"\n",
            &["t", "--packets", "1/s", "--global-packets", "30/min"],
            9,
            "tier \"t\": global_packets = \"30/min\": global limits are counted in 1-second windows: use a rate of at least 1/s",
        ),
        (
            BASE,
            "name = \"t\"\nrequests = \"1/s\"\nglobal_requests_burst = 3\n",
            &["t", "--requests", "1/s", "--global-requests-burst", "3"],
            9,
            "tier \"t\": global_requests_burst = 3: there is no global_requests rate to apply it to",
        ),
        (
            BASE,
            "name = \"t\"\npackets = \"1/s\"\nglobal_packets = \"10/s\"\nglobal_packets_burst = -1\n",
            &[],
            10,
            "tier \"t\": global_packets_burst = -1: must not be negative (0, the default, adds nothing)",
        ),
        (
            no_cluster,
            "name = \"t\"\npackets = \"1/s\"\nglobal_packets = \"10/s\"\n",
            &["t", "--packets", "1/s", "--global-packets", "10/s"],
            7,
            "tier \"t\": global_packets = \"10/s\": global limits need a [cluster] section (redis = \"redis://...\")",
        ),
    ];
    for (base, fields, flags, line, words) in cases {
        // Prefixes of the full message are checked as such.
        let file = format!("{base}[[tier]]\n{fields}");
        let full = parse_str(&file).unwrap_err().to_string();
        assert!(full.contains(words), "{full:?} / {words:?}");
        let words = full
            .split_once(&format!("tollgate.toml:{line}: "))
            .unwrap_or_else(|| panic!("{full:?} is not at line {line}"))
            .1;
        same_words(base, fields, flags, *line, words);
    }
}

/// The tier count limit, from the file (65 tables) and from `tier set`
/// (a 65th tier on a full configuration): the same words.
#[test]
fn at_most_64_tiers_from_the_file_and_tier_set() {
    let tiers: String = (0..64)
        .map(|i| format!("[[tier]]\nname = \"t{i}\"\n"))
        .collect();
    let full = format!("default_tier = \"t0\"\n{tiers}");
    let running = parse_str(&full).unwrap();
    let words = "tier: name = \"t64\": 65 tiers configured: at most 64 are supported";
    let err = parse_str(&format!("{full}[[tier]]\nname = \"t64\"\n"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, format!("tollgate.toml:131: {words}"));
    let patch = crate::spec::TierPatch {
        name: "t64".into(),
        ..Default::default()
    };
    assert_eq!(running.with_tier(&patch).unwrap_err().to_string(), words);
}

/// Rule rules, from `[[rule]]` in the file and from `rule add`: the same words.
#[test]
fn each_rule_rule_reads_the_same_from_the_file_and_rule_add() {
    let base = "[[tier]]\nname = \"default\"\n[[tier]]\nname = \"gold\"\n";
    let running = parse_str(base).unwrap();
    let cases: &[(&str, usize, &str)] = &[
        (
            "cidr = \"10.0.0.300/8\"\naction = \"deny\"\n",
            6,
            "rule: cidr = \"10.0.0.300/8\": not a valid CIDR (write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\")",
        ),
        (
            "cidr = \"10.1.0.0/8\"\naction = \"deny\"\n",
            6,
            "rule: cidr = \"10.1.0.0/8\": host bits are set (did you mean \"10.0.0.0/8\"?)",
        ),
        (
            "cidr = \"192.0.2.0/24\"\ntier = \"platinum\"\n",
            7,
            "rule 192.0.2.0/24: tier = \"platinum\": no such tier (tiers: default, gold)",
        ),
        (
            "cidr = \"192.0.2.0/24\"\naction = \"block\"\n",
            7,
            "rule 192.0.2.0/24: action = \"block\": unknown action (use \"allow\" or \"deny\", or tier = \"NAME\")",
        ),
        (
            "cidr = \"192.0.2.0/24\"\n",
            6,
            "rule 192.0.2.0/24: set exactly one of tier = \"NAME\" or action = \"allow\"/\"deny\"",
        ),
    ];
    for (fields, line, words) in cases {
        let err = parse_str(&format!("{base}[[rule]]\n{fields}"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("tollgate.toml:{line}: {words}"));
        let input: crate::spec::RuleInput = toml::from_str(fields).unwrap();
        assert_eq!(running.with_rule(&input).unwrap_err().to_string(), *words);
    }
}

/// Issue 12: `ports = [80, 80]` was accepted.
#[test]
fn duplicate_http_ports_are_refused_naming_the_port() {
    assert_err(
        "[http]\nports = [80, 8080, 80]\n",
        &["tollgate.toml:2: http: ports: 80: listed twice"],
    );
    assert_eq!(
        parse_str("[http]\nports = [80, 8080]\n")
            .unwrap()
            .http
            .ports,
        [80, 8080]
    );
}

/// Issue 12: a file without `[[tier]]` ran the built-in default silently.
/// It still runs it (like every other section left out), but says so.
#[test]
fn a_file_without_tiers_says_it_runs_the_built_in_tier() {
    let c = parse_str("interfaces = [\"eth0\"]\n").unwrap();
    assert!(c.builtin_tiers);
    let note = c.notice().expect("a notice");
    assert!(
        note.starts_with("tollgate.toml defines no [[tier]]: using the built-in tier \"default\""),
        "{note}"
    );
    assert!(parse_str(GOOD).unwrap().notice().is_none());
    // The daemon without a config file runs the embedded default quietly.
    assert!(embedded_default().notice().is_none());
}

/// Issue 19: every default the shipped example documents in comments is
/// what the parser accepts: the commented `[cluster]` block and global
/// limits, uncommented, parse; `_burst = 0` is the documented default.
#[test]
fn the_example_parses_with_its_commented_defaults() {
    let example = include_str!("../../../../deploy/tollgate.toml");
    let start = example.find("# [cluster]").expect("commented [cluster]");
    let block = &example[start..];
    let block = &block[..block.find("\n\n").unwrap_or(block.len())];
    let (mut cluster, mut globals) = (String::new(), String::new());
    for line in block.lines() {
        let Some(l) = line.strip_prefix("# ") else {
            continue;
        };
        let l = l.trim();
        if l.starts_with("global_") {
            globals.push_str(l);
            globals.push('\n');
        } else if l.contains(" = ") || l == "[cluster]" {
            cluster.push_str(l);
            cluster.push('\n');
        }
    }
    assert!(cluster.contains("redis = ") && globals.contains("global_packets_burst"));
    let text = example.replacen(
        "name = \"default\"\n",
        &format!("name = \"default\"\n{globals}"),
        1,
    ) + "\n"
        + &cluster;
    let c = parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let t = c.tier("default").unwrap();
    assert!(t.global_packets.is_some() && t.global_requests.is_some());
    let zero = text.replace("global_packets_burst = 200", "global_packets_burst = 0");
    let c = parse_str(&zero).unwrap();
    let extra = c.tier("default").unwrap().global_packets.as_ref().unwrap();
    assert_eq!(extra.resolve_global().unwrap().extra, 0);
}
