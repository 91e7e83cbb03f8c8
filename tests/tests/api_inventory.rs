//! End to end: the API inventory with a real HTTP server on the protected
//! host side of the veth and real clients in the test namespace, compared
//! with an OpenAPI 3.1 document the test writes: shadow endpoints, orphan
//! operations and drift reported exactly (text, JSON and /metrics), and the
//! inventory surviving a restart of the daemon.

use std::{net::SocketAddr, sync::atomic::Ordering, time::Duration};

use serde_json::{Value, json};
use tollgate_tests::{
    daemon::{Env, free_port, scrape_metrics},
    httpd::{Client, Server},
    privileged,
};

const PORT: u16 = 8080;

/// Four operations under the server's base path /v1; bearer required by
/// default, not for /health; PUT /users/{userId} takes JSON up to 64 bytes.
const SPEC: &str = r#"openapi: 3.1.0
info: {title: shop, version: "1"}
servers:
  - url: http://api.test/v1
security:
  - bearer: []
paths:
  /users/{userId}:
    get:
      operationId: getUser
      responses: {"200": {description: ok}}
    put:
      operationId: putUser
      requestBody:
        content:
          application/json:
            schema: {type: object, maxLength: 64}
      responses: {"200": {description: ok}}
  /health:
    get:
      operationId: health
      security: []
      responses: {"200": {description: ok}}
  /orders:
    post:
      operationId: createOrder
      requestBody:
        content:
          application/json: {}
      responses: {"201": {description: created}}
components:
  securitySchemes:
    bearer: {type: http, scheme: bearer}
"#;

fn config(env: &Env, metrics_port: u16, openapi: Option<&std::path::Path>) -> String {
    let openapi = openapi
        .map(|p| {
            format!(
                "openapi = \"{}\"\nmax_content_length = \"1KB\"\n",
                p.display()
            )
        })
        .unwrap_or_default();
    format!(
        r#"interfaces = ["{iface}"]
mode = "native"
metrics_address = "127.0.0.1:{metrics_port}"

[[tier]]
name = "default"
packets = "100000/s"
requests = "10000/s"

[http]
ports = [{PORT}]
snap_len = 512
sample_every = 1
budget = "100000/s"
{openapi}"#,
        iface = env.veth.host,
    )
}

/// Sends the test's traffic: 16 requests on one keep-alive connection.
fn traffic(env: &Env, addr: SocketAddr) {
    env.ns
        .run(move || -> anyhow::Result<()> {
            let mut c = Client::connect(addr, Duration::from_secs(3))?;
            let bearer = "Authorization: Bearer tok-5e1c";
            for id in [7, 8, 9] {
                c.request(&format!(
                    "GET /v1/users/{id} HTTP/1.1\r\nHost: api.test\r\n{bearer}"
                ))?;
            }
            // No credentials, to an operation that requires them: drift.
            for id in [10, 11] {
                c.request(&format!("GET /v1/users/{id} HTTP/1.1\r\nHost: api.test"))?;
            }
            for id in [12, 13] {
                c.request_with_body(
                    &format!(
                        "PUT /v1/users/{id} HTTP/1.1\r\nHost: api.test\r\n{bearer}\r\nContent-Type: application/json"
                    ),
                    br#"{"a":1}"#,
                )?;
            }
            // A content type the operation does not accept, and a body over
            // its 64-byte maxLength: drift twice.
            c.request_with_body(
                &format!(
                    "PUT /v1/users/14 HTTP/1.1\r\nHost: api.test\r\n{bearer}\r\nContent-Type: text/xml; charset=utf-8"
                ),
                &[b'x'; 100],
            )?;
            for _ in 0..4 {
                c.request("GET /v1/health HTTP/1.1\r\nHost: api.test")?;
            }
            // Shadow: not in the document.
            for _ in 0..3 {
                c.request(&format!(
                    "GET /v1/admin/export HTTP/1.1\r\nHost: api.test\r\n{bearer}"
                ))?;
            }
            c.request(&format!(
                "DELETE /v1/users/15 HTTP/1.1\r\nHost: api.test\r\n{bearer}"
            ))?;
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
}

/// (method, route) -> the endpoint's row.
fn endpoint<'a>(inv: &'a Value, method: &str, route: &str) -> &'a Value {
    inv["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == method && e["route"] == route)
        .unwrap_or_else(|| panic!("no {method} {route} in {inv:#}"))
}

fn total_requests(inv: &Value) -> u64 {
    inv["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum()
}

/// What a comparison reports, without the times.
fn report(inv: &Value) -> Value {
    let endpoints: Vec<Value> = inv["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!([
                e["method"],
                e["route"],
                e["requests"],
                e["status"],
                e["operation"],
                e["auth"],
                e["content_types"],
                e["max_content_length"],
                e["sources"]
            ])
        })
        .collect();
    let mut spec = inv["spec"].clone();
    if let Some(s) = spec.as_object_mut() {
        s.remove("source");
        s.remove("max_content_length");
    }
    json!({"endpoints": endpoints, "spec": spec, "orphans": inv["orphans"], "drift": inv["drift"]})
}

#[test]
fn shadow_orphan_and_drift_against_openapi_31_survive_a_restart() {
    if !privileged("shadow_orphan_and_drift_against_openapi_31_survive_a_restart") {
        return;
    }
    let env = Env::new();
    let spec = env.dir.join("shop.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let metrics_port = free_port();
    env.write_config(&config(&env, metrics_port, Some(&spec)));
    let mut daemon = env.start();
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, PORT))).unwrap();
    traffic(&env, server.addr);
    assert_eq!(
        server.requests.load(Ordering::Relaxed),
        16,
        "the server answered all"
    );
    env.eventually(
        Duration::from_secs(5),
        "16 requests in the inventory",
        || total_requests(&env.json(&["http", "inventory"])) == 16,
    );

    let inv = env.json(&["http", "inventory"]);
    let users = endpoint(&inv, "GET", "/v1/users/{id}");
    assert_eq!(users["requests"], 5);
    assert_eq!(users["sources"], 1);
    assert_eq!(users["host"], "api.test");
    assert_eq!(users["status"], "documented");
    assert_eq!(users["operation"], "GET /users/{userId}");
    assert_eq!(users["auth"], json!({"bearer": 3, "none": 2}));
    let put = endpoint(&inv, "PUT", "/v1/users/{id}");
    assert_eq!(put["requests"], 3);
    assert_eq!(
        put["content_types"],
        json!({"application/json": 2, "text/xml": 1})
    );
    assert_eq!(put["max_content_length"], 100);
    assert_eq!(endpoint(&inv, "GET", "/v1/health")["status"], "documented");
    assert_eq!(
        endpoint(&inv, "GET", "/v1/health")["auth"],
        json!({"none": 4})
    );
    for (method, route, requests) in [
        ("GET", "/v1/admin/export", 3),
        ("DELETE", "/v1/users/{id}", 1),
    ] {
        let e = endpoint(&inv, method, route);
        assert_eq!(
            (e["status"].as_str(), e["requests"].as_u64()),
            (Some("shadow"), Some(requests))
        );
        assert!(e.get("operation").is_none(), "{e}");
    }
    assert_eq!(inv["endpoints"].as_array().unwrap().len(), 5, "{inv:#}");
    let summary = &inv["spec"];
    assert_eq!(summary["version"], "3.1.0");
    assert_eq!(
        [
            &summary["operations"],
            &summary["documented"],
            &summary["shadow"],
            &summary["orphan"],
            &summary["drift"]
        ],
        [4, 3, 2, 1, 3]
    );
    assert_eq!(
        inv["orphans"],
        json!([{"method": "POST", "path": "/orders", "operation_id": "createOrder"}])
    );
    let drift: Vec<Value> = inv["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            json!([
                d["kind"],
                d["method"],
                d["route"],
                d["operation"],
                d["requests"]
            ])
        })
        .collect();
    assert_eq!(
        drift,
        [
            json!([
                "unauthenticated",
                "GET",
                "/v1/users/{id}",
                "GET /users/{userId}",
                2
            ]),
            json!([
                "content_length",
                "PUT",
                "/v1/users/{id}",
                "PUT /users/{userId}",
                null
            ]),
            json!([
                "content_type",
                "PUT",
                "/v1/users/{id}",
                "PUT /users/{userId}",
                1
            ]),
        ]
    );

    // The text form says the same.
    let text = env.ok(&["http", "inventory"]);
    eprintln!("$ tollgate http inventory\n{text}");
    for want in [
        "OpenAPI ",
        "(3.1.0): 4 operations; 3 documented, 2 shadow, 1 orphan, 3 drift",
        "Shadow endpoints (seen, not in the document):",
        "Orphan operations (documented, never seen):",
        "POST    /orders  createOrder",
        "Drift (requests a documented operation does not allow):",
        "largest Content-Length 100 is over the limit of 64 bytes (PUT /users/{userId})",
        "Content-Type text/xml: it accepts application/json (PUT /users/{userId})",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let shadow_lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Shadow endpoints"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        shadow_lines.len(),
        4,
        "title, header, two endpoints: {shadow_lines:?}"
    );
    assert!(
        shadow_lines[2].starts_with("GET     api.test  /v1/admin/export"),
        "{shadow_lines:?}"
    );
    assert!(
        shadow_lines[3].starts_with("DELETE  api.test  /v1/users/{id}"),
        "{shadow_lines:?}"
    );

    // Per-sample counts in /metrics.
    let metrics = scrape_metrics(metrics_port);
    for series in [
        r#"tollgate_http_shadow_requests_total{method="GET",route="/v1/admin/export"} 3"#,
        r#"tollgate_http_shadow_requests_total{method="DELETE",route="/v1/users/{id}"} 1"#,
        r#"tollgate_http_drift_total{kind="content_type"} 1"#,
        r#"tollgate_http_drift_total{kind="content_length"} 1"#,
        r#"tollgate_http_drift_total{kind="unauthenticated"} 2"#,
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }

    // A reload with a broken document is refused, naming the file and the
    // JSON path; the document in force stays.
    let good = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, SPEC.replace("maxLength: 64", "maxLength: -1")).unwrap();
    env.fails(
        &["reload"],
        &[&format!(
            "http: openapi = \"{0}\": {0}: at $.paths[\"/users/{{userId}}\"].put.requestBody",
            spec.display()
        )],
    );
    assert_eq!(report(&env.json(&["http", "inventory"])), report(&inv));
    std::fs::write(&spec, good).unwrap();
    env.ok(&["reload"]);

    // Restart: the inventory comes back from the state directory, and the
    // same comparison holds with the daemon's document...
    let before = report(&inv);
    daemon.terminate(Duration::from_secs(10));
    assert!(env.dir.join("state/inventory.json").exists());
    let mut daemon = env.start();
    let after = env.json(&["http", "inventory"]);
    assert_eq!(report(&after), before);
    let first_seen = endpoint(&inv, "GET", "/v1/users/{id}")["first_seen"].clone();
    assert_eq!(
        endpoint(&after, "GET", "/v1/users/{id}")["first_seen"],
        first_seen
    );

    // ...and with the document given to the CLI, against a daemon that has
    // none (a JSON copy of it, to read both formats).
    daemon.terminate(Duration::from_secs(10));
    env.write_config(&config(&env, metrics_port, None));
    let _daemon = env.start();
    let plain = env.json(&["http", "inventory"]);
    assert!(plain.get("spec").is_none(), "{plain:#}");
    assert_eq!(total_requests(&plain), 16);
    let as_json = env.dir.join("shop.json");
    std::fs::write(&as_json, SPEC_JSON).unwrap();
    let cli_side = env.json(&["http", "inventory", "--openapi", as_json.to_str().unwrap()]);
    assert_eq!(report(&cli_side), before);
    let text = env.ok(&[
        "http",
        "inventory",
        "--openapi",
        spec.to_str().unwrap(),
        "--sort",
        "route",
    ]);
    assert!(
        text.contains("3 documented, 2 shadow, 1 orphan, 3 drift"),
        "{text}"
    );
    let routes: Vec<&str> = text
        .lines()
        .skip(1)
        .take(5)
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        routes,
        [
            "/v1/admin/export",
            "/v1/health",
            "/v1/users/{id}",
            "/v1/users/{id}",
            "/v1/users/{id}"
        ]
    );

    // A bad document: the CLI names the file and the JSON path.
    let bad = env.dir.join("bad.yaml");
    std::fs::write(&bad, SPEC.replace("security: []", "security: 7")).unwrap();
    env.fails(
        &["http", "inventory", "--openapi", bad.to_str().unwrap()],
        &[&format!(
            "{}: at $.paths[\"/health\"].get.security",
            bad.display()
        )],
    );
}

/// [`SPEC`] in JSON.
const SPEC_JSON: &str = r##"{"openapi": "3.1.0", "info": {"title": "shop", "version": "1"},
 "servers": [{"url": "http://api.test/v1"}],
 "security": [{"bearer": []}],
 "paths": {
  "/users/{userId}": {
   "get": {"operationId": "getUser", "responses": {"200": {"description": "ok"}}},
   "put": {"operationId": "putUser",
     "requestBody": {"content": {"application/json": {"schema": {"type": "object", "maxLength": 64}}}},
     "responses": {"200": {"description": "ok"}}}},
  "/health": {"get": {"operationId": "health", "security": [], "responses": {"200": {"description": "ok"}}}},
  "/orders": {"post": {"operationId": "createOrder",
     "requestBody": {"content": {"application/json": {}}},
     "responses": {"201": {"description": "created"}}}}},
 "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}"##;
