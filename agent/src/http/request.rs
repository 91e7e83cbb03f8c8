//! Parsing a sampled request head with httparse. A sample holds only the first
//! bytes of the request, so a partial header block is the normal case: whatever
//! parsed completely is kept.

use super::{redact::Redactor, route};

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
    for h in req.headers.iter().take_while(|h| !h.name.is_empty()) {
        header_names.push(h.name.to_ascii_lowercase());
        if h.name.eq_ignore_ascii_case("host") {
            host = Some(String::from_utf8_lossy(h.value).to_ascii_lowercase());
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
        },
        presented,
    ))
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

    proptest! {
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
