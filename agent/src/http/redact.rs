//! Secrets never leave the daemon's memory: header values of credential
//! headers, every query-string value and every path segment that is not a
//! literal word are replaced before anything is logged, printed, exported or
//! stored.

use super::route;

/// Headers whose values are always redacted (case-insensitive).
pub(crate) const DEFAULT_SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

pub(crate) const REDACTED: &str = "<redacted>";

/// The set of header names to redact: the defaults plus configured extras.
#[derive(Clone, Debug)]
pub(crate) struct Redactor {
    secret_headers: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(&[])
    }
}

impl Redactor {
    pub(crate) fn new(extra: &[String]) -> Redactor {
        let mut secret_headers: Vec<String> = DEFAULT_SECRET_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        secret_headers.extend(extra.iter().map(|s| s.to_ascii_lowercase()));
        Redactor { secret_headers }
    }

    pub(crate) fn is_secret(&self, header: &str) -> bool {
        self.secret_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(header))
    }
}

/// The one redaction of a request target, applied before it leaves the
/// parser (for `http tail` and everything else that shows a target): the path
/// templated ([`route::template`]: ids, tokens, e-mails and path parameters
/// become placeholders; absolute-form authority and userinfo dropped), every
/// query value replaced, a query key kept only if it is a literal word, and a
/// value-less query item (`?<token>`) kept only if it is one too.
/// `/a/7?x=1&y` -> `/a/{id}?x=<redacted>&y`. (The parser calls
/// [`shown_target`] with the template it has made already.)
#[cfg(test)]
pub(crate) fn target(target: &str) -> String {
    shown_target(route::template(target), target)
}

/// The shown form of `target` (see `target`), for a caller that has its
/// route template `path` already.
pub(crate) fn shown_target(path: String, target: &str) -> String {
    let Some((_, query)) = target.split_once('?') else {
        return path;
    };
    let query = query.split('#').next().unwrap_or("");
    let shown = |key: &str| {
        let decoded = route::percent_decode(key);
        // `key%3Dvalue`: the decoded key carries a value too.
        let (key, has_value) = match decoded.split_once('=') {
            Some((k, _)) => (k.to_owned(), true),
            None => (decoded, false),
        };
        let word = route::classify(&key) == route::Segment::Literal
            && key.len() <= 64
            && key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_-.[]".contains(&c));
        (if word { key } else { REDACTED.to_owned() }, has_value)
    };
    let redacted: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{}={REDACTED}", shown(k).0),
            None => match shown(pair) {
                (k, true) => format!("{k}={REDACTED}"),
                (k, false) => k,
            },
        })
        .collect();
    if redacted.is_empty() {
        return path;
    }
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
        assert_eq!(target("/users/7/x"), "/users/{id}/x");
        assert_eq!(target("/a?Zx81kQp3Lm90TtYw2bNc"), "/a?<redacted>");
        assert_eq!(target("/a?key%3Dvalue"), "/a?key=<redacted>");
        assert_eq!(target("/a?ab%3Dc1=2"), "/a?ab=<redacted>");
        assert_eq!(
            target("http://user:password@host.test/p?q=1"),
            "/p?q=<redacted>"
        );
        let r = Redactor::new(&["X-Session".into()]);
        assert!(r.is_secret("Authorization"));
        assert!(r.is_secret("COOKIE"));
        assert!(r.is_secret("x-session"));
        assert!(!r.is_secret("User-Agent"));
    }
}

#[cfg(test)]
mod planted {
    //! Secrets of every class, planted in every part of a target, never come
    //! out of `target` or `route::template`.
    use proptest::prelude::*;

    use super::target;
    use crate::http::route::template;

    /// A secret of each class, with a marker no template keeps.
    fn secret() -> impl Strategy<Value = (String, &'static str)> {
        prop_oneof![
            "[0-9]{4,12}".prop_map(|s| (s, "integer")),
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                .prop_map(|s| (s, "uuid")),
            "[0-9a-f]{24,40}".prop_map(|s| (s, "hex or object id")),
            "[a-z]{3,6}[0-9]{2,4}[a-z]{3,6}".prop_map(|s| (s, "mixed alphanumeric")),
            "eyJ[A-Za-z0-9_-]{8,20}\\.[A-Za-z0-9_-]{8,20}\\.[A-Za-z0-9_-]{8,20}"
                .prop_map(|s| (s, "jwt")),
            // Standard base64's '/' is a path separator: in a path such a
            // token arrives percent-encoded (place 7), so plain it is base64url.
            "[A-Za-z0-9+_-]{10,20}[0-9][A-Z][A-Za-z0-9+_-]{8,20}".prop_map(|s| (s, "base64 token")),
            "[a-z]{3,8}\\.[a-z]{3,8}@[a-z]{3,8}\\.(com|org|test)".prop_map(|s| (s, "e-mail")),
        ]
    }

    fn encode(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn no_planted_secret_reaches_a_template_or_a_shown_target(
            (secret, class) in secret(),
            word in "(users|orders|api|v1|items)",
            place in 0usize..9,
        ) {
            let raw = match place {
                0 => format!("/{word}/{secret}"),
                1 => format!("/{word}/{secret}/{word}"),
                2 => format!("/{word};jsessionid={secret}"),
                3 => format!("/{word}?token={secret}"),
                4 => format!("/{word}?{secret}"),
                5 => format!("/{word}?{}", encode(&format!("key={secret}"))),
                6 => format!("http://user:{secret}@host.test/{word}"),
                7 => format!("/{word}/{}", encode(&secret)),
                _ => format!("/{word}?a=1&{secret}=x#frag{secret}"),
            };
            for out in [template(&raw), target(&raw)] {
                prop_assert!(
                    !out.contains(secret.as_str()),
                    "{class} secret {secret:?} in {out:?} (from {raw:?})"
                );
            }
        }
    }
}
