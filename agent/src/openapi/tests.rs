use super::*;

/// A 3.1 document with a base path, a security default, an operation that
/// drops it, a request body with a size limit, and paths of the same shape.
pub(crate) const SPEC_31: &str = r##"
openapi: 3.1.0
info: {title: shop, version: "1"}
servers:
  - url: https://{region}.api.test/v1
    variables:
      region: {default: eu}
security:
  - bearer: []
paths:
  /users/{userId}:
    get: {operationId: getUser, responses: {"200": {description: ok}}}
    put:
      requestBody:
        content:
          application/json:
            schema: {type: object, maxLength: 1024}
      responses: {"200": {description: ok}}
  /users/me:
    get: {responses: {"200": {description: ok}}}
  /health:
    get: {security: [], responses: {"200": {description: ok}}}
  /files/{name}.json:
    get: {security: [{}, {bearer: []}], responses: {"200": {description: ok}}}
  /orders:
    post:
      requestBody: {$ref: "#/components/requestBodies/Order"}
      responses: {"201": {description: created}}
components:
  requestBodies:
    Order:
      content:
        application/*: {schema: {type: string, maxLength: 100}}
        text/plain; charset=utf-8: {schema: {type: string, maxLength: 50}}
  securitySchemes:
    bearer: {type: http, scheme: bearer}
"##;

fn spec() -> ApiSpec {
    ApiSpec::parse(SPEC_31, "shop.yaml").unwrap()
}

fn op_name(s: &ApiSpec, method: &str, route: &str) -> Option<String> {
    s.operation(method, route).map(|i| s.operations[i].name())
}

#[test]
fn templates_match_parameters_and_base_paths_are_stripped() {
    let s = spec();
    assert_eq!(s.base_paths, ["/v1"]);
    assert_eq!(s.operations.len(), 6);
    for (method, route, want) in [
        ("GET", "/v1/users/{id}", Some("GET /users/{userId}")),
        ("GET", "/v1/users/alice", Some("GET /users/{userId}")),
        ("GET", "/v1/users/me", Some("GET /users/me")),
        (
            "PUT",
            "/v1/users/{token};{param}",
            Some("PUT /users/{userId}"),
        ),
        ("GET", "/v1/files/{id}", Some("GET /files/{name}.json")),
        ("GET", "/v1/health", Some("GET /health")),
        ("POST", "/v1/orders", Some("POST /orders")),
        // Not documented: another method, no base path, deeper, truncated.
        ("DELETE", "/v1/users/{id}", None),
        ("GET", "/users/{id}", None),
        ("GET", "/v1/users/{id}/orders", None),
        ("GET", "/v1/users/…", None),
        ("GET", "/v10/health", None),
        ("GET", "/v1", None),
    ] {
        assert_eq!(
            op_name(&s, method, route).as_deref(),
            want,
            "{method} {route}"
        );
    }
}

#[test]
fn security_bodies_and_limits_are_read() {
    let s = spec();
    let op = |m: &str, r: &str| &s.operations[s.operation(m, r).unwrap()];
    assert!(
        op("GET", "/v1/users/{id}").requires_credentials,
        "inherited"
    );
    assert!(
        !op("GET", "/v1/health").requires_credentials,
        "security: []"
    );
    assert!(
        !op("GET", "/v1/files/{id}").requires_credentials,
        "{{}} is optional"
    );
    let put = op("PUT", "/v1/users/{id}");
    assert_eq!(
        (put.accepts.clone(), put.max_body),
        (vec!["application/json".to_owned()], Some(1024))
    );
    let post = op("POST", "/v1/orders");
    assert_eq!(post.accepts, ["application/*", "text/plain"]);
    assert_eq!(post.max_body, Some(100), "the largest of the media types'");
    assert!(post.accepts("application/xml") && post.accepts("text/plain"));
    assert!(!post.accepts("text/html"));

    let put_i = s.operation("PUT", "/v1/users/{id}").unwrap();
    let drift = |ct, cl, cred, limit| s.drift(put_i, ct, cl, cred, limit).collect::<Vec<_>>();
    assert!(drift(Some("application/json"), Some(1024), true, None).is_empty());
    assert_eq!(
        drift(Some("text/xml"), Some(1025), false, None),
        [
            DriftKind::ContentType,
            DriftKind::ContentLength,
            DriftKind::Unauthenticated
        ]
    );
    assert_eq!(
        drift(None, Some(600), true, Some(512)),
        [DriftKind::ContentLength],
        "the configured limit applies too"
    );
}

#[test]
fn openapi_30_json_and_servers_at_the_root() {
    let doc = r#"{"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
      "servers": [{"url": "http://localhost:8080/"}, {"url": "/api"}],
      "paths": {"/items/{id}": {"get": {"responses": {"200": {"description": "ok"}},
        "parameters": [{"name": "id", "in": "path", "required": true,
          "schema": {"type": "integer", "minimum": 1, "exclusiveMinimum": true, "nullable": true}}]}}}}"#;
    let s = ApiSpec::parse(doc, "t.json").unwrap();
    assert_eq!(s.version, "3.0.3");
    assert_eq!(s.base_paths, ["/api", ""]);
    assert!(s.operation("GET", "/items/{id}").is_some());
    assert!(s.operation("GET", "/api/items/{id}").is_some());
    assert!(!s.operations[0].requires_credentials);
}

#[test]
fn bad_documents_name_the_file_and_the_json_path() {
    let e = ApiSpec::parse("openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      requestBody:\n        content: 7\n", "bad.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("bad.yaml: at $.paths[\"/a\"].get.requestBody"),
        "{e}"
    );
    let e = ApiSpec::parse("swagger: '2.0'\n", "old.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("old.yaml") && e.contains("Swagger 2.0"), "{e}");
    let e = ApiSpec::parse("openapi: 3.1.0\n  x: [\n", "syn.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("syn.yaml:") && e.contains("YAML"), "{e}");
    let e = ApiSpec::parse("{\"openapi\": ", "syn.json")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("syn.json:1:") && e.contains("JSON"), "{e}");
    let e = ApiSpec::parse(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  a: {}\n",
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("$.paths[\"a\"]") && e.contains("start with '/'"),
        "{e}"
    );
    let e = ApiSpec::load(Path::new("/nonexistent/spec.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/spec.yaml: cannot read"), "{e}");
}
