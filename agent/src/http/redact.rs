//! Secrets never leave the daemon's memory: header values of credential
//! headers and every query-string value are replaced before anything is
//! logged, printed, exported or stored.

/// Headers whose values are always redacted (case-insensitive).
pub const DEFAULT_SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

pub const REDACTED: &str = "<redacted>";

/// The set of header names to redact: the defaults plus configured extras.
#[derive(Clone, Debug)]
pub struct Redactor {
    secret_headers: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(&[])
    }
}

impl Redactor {
    pub fn new(extra: &[String]) -> Redactor {
        let mut secret_headers: Vec<String> = DEFAULT_SECRET_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        secret_headers.extend(extra.iter().map(|s| s.to_ascii_lowercase()));
        Redactor { secret_headers }
    }

    pub fn is_secret(&self, header: &str) -> bool {
        self.secret_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(header))
    }

    /// A header value as it may be shown.
    pub fn header_value<'a>(&self, name: &str, value: &'a str) -> &'a str {
        if self.is_secret(name) {
            REDACTED
        } else {
            value
        }
    }
}

/// The request target with every query value replaced: `/a?x=1&y` -> `/a?x=<redacted>&y`.
pub fn target(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = path.split('#').next().unwrap_or("");
    let Some(query) = query else {
        return path.to_string();
    };
    let query = query.split('#').next().unwrap_or("");
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}={REDACTED}"),
            None => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_secret_headers_are_redacted() {
        assert_eq!(
            target("/a?token=abc&x=1&flag"),
            "/a?token=<redacted>&x=<redacted>&flag"
        );
        assert_eq!(target("/a"), "/a");
        assert_eq!(target("/a?k=v#frag"), "/a?k=<redacted>");
        let r = Redactor::new(&["X-Session".into()]);
        assert_eq!(r.header_value("Authorization", "Bearer s3cr3t"), REDACTED);
        assert_eq!(r.header_value("COOKIE", "a=b"), REDACTED);
        assert_eq!(r.header_value("x-session", "zzz"), REDACTED);
        assert_eq!(r.header_value("User-Agent", "curl/8"), "curl/8");
    }
}
