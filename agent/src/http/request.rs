//! Parsing a sampled request head with httparse. A sample holds only the first
//! bytes of the request, so a partial header block is the normal case: whatever
//! parsed completely is kept.

use super::{inventory::AuthScheme, redact::Redactor, route};

/// Headers parsed per sample at most (the rest of the head is ignored).
pub(crate) const MAX_HEADERS: usize = 32;

/// What the monitor keeps of one sampled request. Nothing secret: the target
/// is redacted, credential header values are not kept, the API key (if any) is
/// kept only long enough to be hashed by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedRequest {
    pub method: String,
    /// Route template (ids folded, no query string).
    pub route: String,
    /// Target as `http tail` shows it: the route template with its query
    /// keys, every value redacted (`redact::target`).
    pub target: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// Header names seen (values of secret ones never kept).
    pub header_names: Vec<String>,
    /// The whole head was captured.
    pub complete: bool,
    /// The Content-Type's essence (`type/subtype`), cleaned ([`content_type`]).
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// The credentials presented, by scheme (never their value).
    pub auth: AuthScheme,
}

/// Credential a request presents for API-key tiering: `X-Api-Key: K` or
/// `Authorization: Bearer K`. Returned separately so it is never stored.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Presented<'a>(pub &'a [u8]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RequestError {
    #[error("not an HTTP/1.x request line: {0}")]
    Invalid(&'static str),
    #[error("request line truncated before the target")]
    Truncated,
}

/// Parses a sampled request head.
pub(crate) fn parse_request<'a>(
    payload: &'a [u8],
    redactor: &Redactor,
) -> Result<(ParsedRequest, Option<Presented<'a>>), RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let complete = match req.parse(payload) {
        Ok(httparse::Status::Complete(_)) => true,
        Ok(httparse::Status::Partial) => false,
        // Too many headers for our array: the request line parsed; keep it.
        Err(httparse::Error::TooManyHeaders) => false,
        Err(e) => return Err(RequestError::Invalid(error_name(e))),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(RequestError::Truncated);
    };
    // On Partial, httparse leaves the headers it parsed completely in place;
    // the rest of the array is EMPTY_HEADER (empty name).
    let mut host = None;
    let mut user_agent = None;
    let mut presented = None;
    let mut header_names = Vec::new();
    let mut content_type = None;
    let mut content_length = None;
    let mut auth = AuthScheme::None;
    for h in req.headers.iter().take_while(|h| !h.name.is_empty()) {
        header_names.push(h.name.to_ascii_lowercase());
        let scheme = auth_scheme(h.name, h.value);
        if rank(scheme) > rank(auth) {
            auth = scheme;
        }
        if h.name.eq_ignore_ascii_case("host") {
            host = Some(clean_host(h.value));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(self::content_type(h.value));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(trim(h.value))
                .ok()
                .and_then(|v| v.parse().ok());
        } else if h.name.eq_ignore_ascii_case("user-agent") && !redactor.is_secret("user-agent") {
            user_agent = Some(String::from_utf8_lossy(h.value).chars().take(64).collect());
        } else if h.name.eq_ignore_ascii_case("x-api-key") {
            presented = Some(Presented(trim(h.value)));
        } else if h.name.eq_ignore_ascii_case("authorization") && presented.is_none() {
            let v = trim(h.value);
            if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
                presented = Some(Presented(trim(&v[7..])));
            }
        }
    }
    if auth == AuthScheme::None && query_credentials(path) {
        auth = AuthScheme::ApiKey;
    }
    let route = route::template(path);
    Ok((
        ParsedRequest {
            method: method.to_string(),
            target: super::redact::shown_target(route.clone(), path),
            route,
            host,
            user_agent,
            header_names,
            complete,
            content_type,
            content_length,
            auth,
        },
        presented,
    ))
}

/// The scheme of the credentials a header carries, if it carries any.
/// `Authorization` outranks an API-key header, which outranks a cookie
/// ([`rank`]).
fn auth_scheme(name: &str, value: &[u8]) -> AuthScheme {
    if name.eq_ignore_ascii_case("authorization") {
        let v = trim(value);
        let scheme = v.split(|c| *c == b' ').next().unwrap_or(b"");
        return if scheme.eq_ignore_ascii_case(b"bearer") {
            AuthScheme::Bearer
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            AuthScheme::Basic
        } else {
            AuthScheme::Other
        };
    }
    if name.eq_ignore_ascii_case("cookie") {
        return AuthScheme::Cookie;
    }
    let n = name.as_bytes();
    let has = |needle: &[u8]| {
        n.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if has(b"api-key")
        || has(b"apikey")
        || has(b"api_key")
        || has(b"auth-token")
        || has(b"access-token")
    {
        return AuthScheme::ApiKey;
    }
    AuthScheme::None
}

/// Which scheme a request with several credentials is counted under.
fn rank(a: AuthScheme) -> u8 {
    match a {
        AuthScheme::None => 0,
        AuthScheme::Cookie => 1,
        AuthScheme::ApiKey => 2,
        AuthScheme::Other | AuthScheme::Basic | AuthScheme::Bearer => 3,
    }
}

/// Whether the query carries a credential under a well-known key
/// (`api_key`, `apikey`, `api-key`, `access_token`).
fn query_credentials(target: &str) -> bool {
    let Some((_, query)) = target.split_once('?') else {
        return false;
    };
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        ["api_key", "apikey", "api-key", "access_token"]
            .iter()
            .any(|k| key.eq_ignore_ascii_case(k))
    })
}

/// Longest host and content type kept.
const MAX_NAME: usize = 64;

/// A Host header as outputs show it: lower case, any userinfo
/// (`user:password@`) dropped, only host-name characters, at most 64 of them.
fn clean_host(value: &[u8]) -> String {
    let v = trim(value);
    let v = match v.iter().rposition(|c| *c == b'@') {
        Some(i) => &v[i + 1..],
        None => v,
    };
    let host: String = v
        .iter()
        .take(MAX_NAME)
        .map(|c| match c.to_ascii_lowercase() {
            c @ (b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b':' | b'[' | b']' | b'_') => c as char,
            _ => '_',
        })
        .collect();
    if host.is_empty() {
        "-".to_owned()
    } else {
        host
    }
}

/// A Content-Type as the inventory keeps it: its essence (`type/subtype`,
/// lower case, parameters such as a boundary dropped). A subtype that is not
/// a plain name (`x-7f3a9c2e41d8b6f0`) becomes its class's placeholder, so a
/// secret cannot ride in it.
pub(crate) fn content_type(value: &[u8]) -> String {
    let raw = String::from_utf8_lossy(value);
    let essence = crate::openapi::essence(&raw);
    let Some((kind, sub)) = essence.split_once('/') else {
        return "{invalid}".to_owned();
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_NAME
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
    };
    if !token(kind) || !token(sub) || !kind.bytes().all(|c| c.is_ascii_alphabetic()) {
        return "{invalid}".to_owned();
    }
    // Classified as sent (case tells a base64 token from a word): unless it
    // is words only (`X-WWW-Form-Urlencoded`), the whole subtype must not be
    // a token (a JWT's parts alone look harmless); and each of its parts
    // must be a plain name.
    let sent = raw.split(';').next().unwrap_or("").trim();
    let sent_sub = sent.split_once('/').map_or("", |(_, s)| s);
    let word = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty()
            && b.iter().all(u8::is_ascii_alphabetic)
            && (b[1..].iter().all(u8::is_ascii_lowercase) || b.iter().all(u8::is_ascii_uppercase))
    };
    let words = sent_sub.split(['.', '+', '-']).all(word);
    let plain = (words
        || !matches!(
            route::classify(sent_sub),
            route::Segment::Token | route::Segment::Email
        ))
        && sent_sub
            .split(['.', '+', '-'])
            .all(|part| route::classify(part) == route::Segment::Literal);
    if plain {
        essence
    } else {
        format!("{kind}/{{id}}")
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn error_name(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "bad header name",
        httparse::Error::HeaderValue => "bad header value",
        httparse::Error::NewLine => "bad line ending",
        httparse::Error::Status => "bad status",
        httparse::Error::Token => "bad method token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "bad HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn complete_and_partial_heads() {
        let r = Redactor::default();
        let full =
            b"GET /users/7?token=zz HTTP/1.1\r\nHost: API.example\r\nX-Api-Key: k-123\r\n\r\n";
        let (p, key) = parse_request(full, &r).unwrap();
        assert_eq!(p.method, "GET");
        assert_eq!(p.route, "/users/{id}");
        assert_eq!(p.target, "/users/{id}?token=<redacted>");
        assert_eq!(p.host.as_deref(), Some("api.example"));
        assert!(p.complete);
        assert_eq!(key, Some(Presented(b"k-123")));

        // Cut in the middle of a header: the request line and whole headers stay.
        let cut = b"POST /login HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer tok\r\nUser-Ag";
        let (p, key) = parse_request(cut, &r).unwrap();
        assert_eq!((p.method.as_str(), p.route.as_str()), ("POST", "/login"));
        assert!(!p.complete);
        assert_eq!(key, Some(Presented(b"tok")));
        assert_eq!(p.host.as_deref(), Some("a"));

        assert_eq!(
            parse_request(b"GET /abc", &r).unwrap_err(),
            RequestError::Truncated
        );
        assert!(parse_request(b"\x16\x03\x01\x00", &r).is_err());
    }

    #[test]
    fn content_type_length_and_auth_scheme_without_values() {
        let r = Redactor::default();
        let parse = |head: &str| parse_request(head.as_bytes(), &r).unwrap().0;
        let p = parse(
            "POST /u HTTP/1.1\r\nHost: alice:s3cret@API.test:8080\r\nContent-Type: Application/JSON; charset=utf-8\r\nContent-Length: 512\r\nCookie: a=b\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n",
        );
        assert_eq!(p.host.as_deref(), Some("api.test:8080"));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.content_length, Some(512));
        assert_eq!(p.auth, AuthScheme::Basic, "Authorization outranks a cookie");
        for (head, want) in [
            (
                "GET / HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n",
                AuthScheme::Bearer,
            ),
            (
                "GET / HTTP/1.1\r\nAuthorization: Digest x\r\n\r\n",
                AuthScheme::Other,
            ),
            (
                "GET / HTTP/1.1\r\nX-Api-Key: k\r\nCookie: c\r\n\r\n",
                AuthScheme::ApiKey,
            ),
            (
                "GET / HTTP/1.1\r\nX-Auth-Token: k\r\n\r\n",
                AuthScheme::ApiKey,
            ),
            ("GET /?api_key=k HTTP/1.1\r\n\r\n", AuthScheme::ApiKey),
            ("GET / HTTP/1.1\r\nCookie: c\r\n\r\n", AuthScheme::Cookie),
            ("GET /?q=1 HTTP/1.1\r\nX-Csrf: 1\r\n\r\n", AuthScheme::None),
        ] {
            assert_eq!(parse(head).auth, want, "{head}");
        }
        for (value, want) in [
            (
                "multipart/form-data; boundary=9f86d081884c7d659a2f",
                "multipart/form-data",
            ),
            ("application/vnd.api+json", "application/vnd.api+json"),
            (
                "application/vnd.github.v3+json",
                "application/vnd.github.v3+json",
            ),
            (
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
            (
                "Application/X-WWW-Form-Urlencoded",
                "application/x-www-form-urlencoded",
            ),
            ("application/x-7f3a9c2e41d8b6f0aa", "application/{id}"),
            (
                "application/x-eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2ln",
                "application/{id}",
            ),
            ("text", "{invalid}"),
            ("a b/c", "{invalid}"),
        ] {
            assert_eq!(content_type(value.as_bytes()), want, "{value}");
        }
    }

    proptest! {
        /// A secret of any class planted in a Content-Type's subtype or a
        /// Host's userinfo is not in what the parser keeps.
        #[test]
        fn no_secret_in_a_kept_content_type_or_host(
            secret in prop_oneof![
                "[0-9]{6,12}",
                "[0-9a-f]{24,40}",
                "[a-z]{3,6}[0-9]{2,4}[a-z]{3,6}",
                "eyJ[A-Za-z0-9_-]{8,20}\\.[A-Za-z0-9_-]{8,20}\\.[A-Za-z0-9_-]{8,20}",
                "[A-Za-z0-9_]{10,20}[0-9][A-Z][A-Za-z0-9_]{8,20}",
            ],
            prefix in "(x-|vnd\\.|)",
            suffix in "(\\+json|)",
        ) {
            let head = format!(
                "POST / HTTP/1.1\r\nHost: u:{secret}@api.test\r\nContent-Type: application/{prefix}{secret}{suffix}\r\n\r\n"
            );
            let (p, _) = parse_request(head.as_bytes(), &Redactor::default()).unwrap();
            let kept = format!("{:?} {:?}", p.host, p.content_type);
            prop_assert!(!kept.contains(&secret.to_ascii_lowercase()), "{secret} in {kept}");
        }

        #[test]
        fn never_panics_on_hostile_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
            let _ = parse_request(&bytes, &Redactor::default());
        }

        #[test]
        fn never_panics_on_request_like_input(
            method in "(GET|POST|PUT|DELETE)",
            path in "/[ -~]{0,300}",
            tail in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut b = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
            b.extend(tail);
            let _ = parse_request(&b, &Redactor::default());
        }
    }
}
