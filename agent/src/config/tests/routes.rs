//! `[[route]]`: each rule reads the same from the file (with its line), the
//! control protocol's `route_add` and the `route add` flags; and the rules
//! that relate routes to the rest of the configuration.

use super::*;
use crate::spec::{RouteInput, TierMode};

/// A tier whose requests burst is 10, and two HTTP ports.
const BASE: &str = "[[tier]]\nname = \"default\"\nrequests = \"100/s\"\nrequests_burst = 10\n[http]\nports = [80, 8080]\n";

/// `route add` as the command line gives it.
#[derive(clap::Parser)]
struct RouteAddFlags {
    #[command(flatten)]
    route: RouteInput,
}

/// One rule, three ways in: a `[[route]]` table appended to `base` (the
/// problem at `line`), the same fields as a `route_add` request, and, when
/// given, `route add` flags. All must fail with the same words.
#[track_caller]
fn same_words(base: &str, fields: &str, flags: &[&str], line: usize, words: &str) {
    let file = format!("{base}[[route]]\n{fields}");
    let err = parse_str(&file)
        .expect_err("the file should fail")
        .to_string();
    assert_eq!(err, format!("tollgate.toml:{line}: {words}"), "file");
    let running = parse_str(base).unwrap();
    let input: RouteInput = toml::from_str(fields).unwrap();
    let json = serde_json::to_string(&crate::proto::Request::RouteAdd(Box::new(input))).unwrap();
    let crate::proto::Request::RouteAdd(input) = serde_json::from_str(&json).unwrap() else {
        panic!("{json}")
    };
    let err = running
        .with_route(&input)
        .expect_err("route_add should fail");
    assert_eq!(err.to_string(), words, "route_add");
    if !flags.is_empty() {
        let mut argv = vec!["route-add"];
        argv.extend_from_slice(flags);
        let cli = <RouteAddFlags as clap::Parser>::try_parse_from(&argv).unwrap();
        let err = running
            .with_route(&cli.route)
            .expect_err("route add should fail");
        assert_eq!(err.to_string(), words, "route add {flags:?}");
    }
}

#[test]
fn each_route_rule_reads_the_same_from_the_file_the_socket_and_the_command_line() {
    let long = format!("/{}", "a".repeat(60));
    let long_match = format!("GET {long}");
    let cases: Vec<(String, Vec<&str>, usize, String)> = vec![
        (
            "name = \"a b\"\nmatch = \"GET\"\n".into(),
            vec!["a b", "--match", "GET"],
            8,
            "route: name = \"a b\": route names are 1 to 64 letters, digits, '-', '_' or '.'"
                .into(),
        ),
        (
            "name = \"r\"\nmatch = \"post /x\"\n".into(),
            vec!["r", "--match", "post /x"],
            9,
            "route \"r\": match = \"post /x\": methods are uppercase: write \"POST /x\" (the kernel compares bytes)".into(),
        ),
        (
            "name = \"r\"\nmatch = \"FETCH /x\"\n".into(),
            vec!["r", "--match", "FETCH /x"],
            9,
            "route \"r\": match = \"FETCH /x\": unknown method \"FETCH\" (use one of GET, PUT, POST, HEAD, PATCH, TRACE, DELETE, OPTIONS, CONNECT)".into(),
        ),
        (
            "name = \"r\"\nmatch = \"GET api\"\n".into(),
            vec!["r", "--match", "GET api"],
            9,
            "route \"r\": match = \"GET api\": the path prefix must start with '/' (absolute-form and '*' targets are not matched)".into(),
        ),
        (
            format!("name = \"r\"\nmatch = \"{long_match}\"\n"),
            vec!["r", "--match", &long_match],
            9,
            format!("route \"r\": match = \"{long_match}\": is 65 bytes: a route matches at most 56 bytes of the request line (method, space and path prefix)"),
        ),
        (
            "name = \"r\"\nmatch = \"GET\"\ncost = 0\n".into(),
            vec!["r", "--match", "GET", "--cost", "0"],
            10,
            "route \"r\": cost = 0: must be between 1 and 10000".into(),
        ),
        (
            "name = \"r\"\nmatch = \"GET\"\ncost = -3\n".into(),
            vec!["r", "--match", "GET", "--cost", "-3"],
            10,
            "route \"r\": cost = -3: must be between 1 and 10000".into(),
        ),
        (
            "name = \"r\"\nmatch = \"POST /api/search\"\ncost = 20\n".into(),
            vec!["r", "--match", "POST /api/search", "--cost", "20"],
            10,
            "route \"r\": cost = 20: more than tier \"default\"'s requests burst of 10: no request to this route from the tier's sources could ever pass (lower the cost, or raise the tier's requests_burst to at least 20)".into(),
        ),
        (
            "name = \"r\"\nmatch = \"GET\"\nceiling = \"10/x\"\n".into(),
            vec!["r", "--match", "GET", "--ceiling", "10/x"],
            10,
            "route \"r\": ceiling = \"10/x\": unknown period \"x\" (use /s, /min or /h)".into(),
        ),
        (
            "name = \"r\"\nmatch = \"GET\"\nceiling = \"10/s\"\nceiling_burst = 0\n".into(),
            vec!["r", "--match", "GET", "--ceiling", "10/s", "--ceiling-burst", "0"],
            11,
            "route \"r\": ceiling_burst = 0: must be at least 1".into(),
        ),
        (
            "name = \"r\"\nmatch = \"GET\"\nceiling_burst = 5\n".into(),
            vec!["r", "--match", "GET", "--ceiling-burst", "5"],
            10,
            "route \"r\": ceiling_burst = 5: there is no ceiling to apply it to: set ceiling = \"N/s\" too".into(),
        ),
        (
            "name = \"r\"\nmatch = \"GET\"\nport = 9000\n".into(),
            vec!["r", "--match", "GET", "--port", "9000"],
            10,
            "route \"r\": port = 9000: not one of the [http] ports (80, 8080): requests to other ports are never scanned; add it to [http] ports".into(),
        ),
        (
            "name = \"r\"\nport = 0\n".into(),
            vec!["r", "--port", "0"],
            9,
            "route \"r\": port = 0: not a TCP port (1-65535)".into(),
        ),
        (
            "name = \"r\"\n".into(),
            vec!["r"],
            8,
            "route \"r\": a route needs match = \"METHOD /path\", or port = N alone for a route of a whole port".into(),
        ),
        (
            "name = \"r\"\nmatch = \"GET\"\nhost = \"http://api.example\"\n".into(),
            vec!["r", "--match", "GET", "--host", "http://api.example"],
            10,
            "route \"r\": host = \"http://api.example\": a host is 1 to 64 letters, digits, '-' and '.', without a port or a scheme (e.g. \"api.example.com\")".into(),
        ),
    ];
    for (fields, flags, line, words) in &cases {
        same_words(BASE, fields, flags, *line, words);
    }
}

#[test]
fn a_shadow_route_may_cost_more_than_a_burst_and_a_tier_without_requests_is_not_bound() {
    // Shadow routes charge 1: their cost is not held against bursts.
    let c = parse_str(&format!(
        "{BASE}[[route]]\nname = \"r\"\nmatch = \"GET\"\ncost = 500\nmode = \"shadow\"\n"
    ))
    .unwrap();
    assert_eq!(c.route("r").unwrap().mode, TierMode::Shadow);
    // A tier without a requests limit is never charged.
    parse_str(
        "[[tier]]\nname = \"default\"\npackets = \"10/s\"\n[[route]]\nname = \"r\"\nmatch = \"GET\"\ncost = 500\n",
    )
    .unwrap();
    // Lowering a tier's burst under a route's cost is refused, naming the route.
    let running = parse_str(&format!(
        "{BASE}[[route]]\nname = \"r\"\nmatch = \"GET\"\ncost = 10\n"
    ))
    .unwrap();
    let patch = crate::spec::TierPatch {
        name: "default".into(),
        requests_burst: Some(5),
        ..Default::default()
    };
    assert_eq!(
        running.with_tier(&patch).unwrap_err().to_string(),
        "route \"r\": cost = 10: more than tier \"default\"'s requests burst of 5: no request to this route from the tier's sources could ever pass (lower the cost, or raise the tier's requests_burst to at least 10)"
    );
}

#[test]
fn duplicates_are_named_with_the_first_ones_line() {
    let first = "[[route]]\nname = \"a\"\nmatch = \"GET /x\"\n";
    // Same name.
    let e = parse_str(&format!(
        "{BASE}{first}[[route]]\nname = \"a\"\nmatch = \"GET /y\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tollgate.toml:11: route: name = \"a\": a route with this name is already defined (line 8)"
    );
    // Same match on a port both have (a route without a port is on every one).
    let e = parse_str(&format!(
        "{BASE}{first}[[route]]\nname = \"b\"\nmatch = \"GET /x\"\nport = 8080\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tollgate.toml:12: route \"b\": match = \"GET /x\": route \"a\" already matches this on port 8080 (line 8)"
    );
    // The same through `route add`: no line to name.
    let running = parse_str(&format!("{BASE}{first}")).unwrap();
    let input = RouteInput {
        name: "b".into(),
        matches: Some("GET /x".into()),
        ..Default::default()
    };
    assert_eq!(
        running.with_route(&input).unwrap_err().to_string(),
        "route \"b\": match = \"GET /x\": route \"a\" already matches this on port 80"
    );
    // Two whole-port routes on one port.
    let e = parse_str(&format!(
        "{BASE}[[route]]\nname = \"a\"\nport = 80\n[[route]]\nname = \"b\"\nport = 80\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tollgate.toml:12: route \"b\": port = 80: route \"a\" already matches this on port 80 (line 8)"
    );
    // `route add` of an existing name replaces it.
    let input = RouteInput {
        name: "a".into(),
        matches: Some("GET /z".into()),
        cost: Some(3),
        ..Default::default()
    };
    let (c, spec) = running.with_route(&input).unwrap();
    assert_eq!(c.routes.len(), 1);
    assert_eq!(spec.line.as_deref(), Some("GET /z"));
}

#[test]
fn routes_need_http_ports_and_at_most_max_routes() {
    let e = parse_str(
        "[[tier]]\nname = \"default\"\n[http]\nports = []\n[[route]]\nname = \"r\"\nmatch = \"GET\"\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tollgate.toml:6: route \"r\": routes are found on the [http] ports, and [http] ports is empty: list the ports your HTTP servers listen on (e.g. ports = [80, 8080])"
    );
    let mut text = BASE.to_owned();
    for i in 0..=tollgate_common::route::MAX_ROUTES {
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\nmatch = \"GET /{i}\"\n"
        ));
    }
    let e = parse_str(&text).unwrap_err().to_string();
    assert!(
        e.ends_with("route \"r256\": 257 routes configured: at most 256 are supported"),
        "{e}"
    );
    assert!(e.starts_with("tollgate.toml:776:"), "{e}");
}

#[test]
fn the_example_config_parses_with_its_routes() {
    let c = parse_str(include_str!("../../../../deploy/tollgate.toml")).unwrap();
    assert!(!c.routes.is_empty(), "deploy/tollgate.toml shows [[route]]");
}

#[test]
fn the_readme_routes_example_parses() {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme
        .find("## Routes")
        .expect("README has a Routes section")..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let c = parse_str(example).unwrap();
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["search", "admin", "export"]);
    assert_eq!(c.route("admin").unwrap().match_label(), "*");
}
