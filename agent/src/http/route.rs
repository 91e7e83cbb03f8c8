//! Route templates: `/users/42/orders/9f1c…` becomes `/users/{id}/orders/{id}`,
//! so per-route metrics stay bounded however many ids clients use, and no
//! identifier or secret a path carries reaches an output.
//!
//! Each segment is percent-decoded and classified (in the style of Akto's
//! typed segments): numbers, UUIDs, hex and object ids, and alphanumerics that
//! mix letters and digits are `{id}`; JWT-like and base64 tokens are
//! `{token}`; e-mail addresses are `{email}`; path parameters
//! (`;jsessionid=…`) are `;{param}`. A segment of letters only (an English
//! word, `administrators`) is kept.

/// Longest template kept; longer paths are cut (with a trailing `…`).
pub(crate) const MAX_TEMPLATE_LEN: usize = 128;
/// Segments kept; deeper paths end in `/…`.
pub(crate) const MAX_SEGMENTS: usize = 12;

/// What a path segment (or a query key) is, as far as redaction cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Kept as it is: a word, a version, a file name.
    Literal,
    Id,
    Token,
    Email,
}

impl Segment {
    pub(crate) const fn placeholder(self) -> &'static str {
        match self {
            Segment::Literal => "",
            Segment::Id => "{id}",
            Segment::Token => "{token}",
            Segment::Email => "{email}",
        }
    }
}

/// The path of a request target: fragment and query dropped, absolute-form
/// (`http://user:password@host/path`) reduced to its path, so the authority
/// and its userinfo never reach an output.
pub(crate) fn path_of(target: &str) -> &str {
    let path = target.split(['?', '#']).next().unwrap_or("");
    match path.find("://") {
        Some(i) => path[i + 3..]
            .find('/')
            .map(|j| &path[i + 3 + j..])
            .unwrap_or("/"),
        None => path,
    }
}

/// The template of a request target: the query string is dropped (its values
/// are secrets as often as not) and every segment that is not a literal
/// becomes its placeholder.
pub(crate) fn template(target: &str) -> String {
    let path = path_of(target);
    if !path.starts_with('/') {
        return if path == "*" {
            "*".into()
        } else {
            "{invalid}".into()
        };
    }
    let mut out = String::with_capacity(path.len().min(MAX_TEMPLATE_LEN));
    for (i, segment) in path.split('/').skip(1).enumerate() {
        if i == MAX_SEGMENTS {
            out.push_str("/…");
            break;
        }
        out.push('/');
        push_segment(&mut out, segment);
        if out.len() > MAX_TEMPLATE_LEN {
            let mut cut = MAX_TEMPLATE_LEN;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// One segment, templated: path parameters dropped, the rest classified.
fn push_segment(out: &mut String, raw: &str) {
    let (base, params) = match raw.split_once(';') {
        Some((b, p)) => (b, Some(p)),
        None => (raw, None),
    };
    let decoded = percent_decode(base);
    match classify(&decoded) {
        // A literal is shown decoded only if decoding did not reveal
        // separators a secret could hide behind (`key%3Dvalue`).
        Segment::Literal if !decoded.contains(['=', '&', '?', ';', '/']) => {
            out.push_str(&sanitize(&decoded))
        }
        Segment::Literal => out.push_str(Segment::Id.placeholder()),
        class => out.push_str(class.placeholder()),
    }
    if params.is_some() {
        out.push_str(";{param}");
    }
}

/// Control characters and spaces never reach an output.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() || c == ' ' { '_' } else { c })
        .collect()
}

/// `%XX` decoded (invalid escapes kept as they are), lossy UTF-8.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// What a (decoded) segment is.
pub(crate) fn classify(s: &str) -> Segment {
    let b = s.as_bytes();
    if b.is_empty() {
        return Segment::Literal;
    }
    if is_email(s) {
        return Segment::Email;
    }
    if is_jwt(b) {
        return Segment::Token;
    }
    if b.iter().all(u8::is_ascii_digit) || is_uuid(b) {
        return Segment::Id;
    }
    // Hex ids (Mongo object ids are 24 hex digits, hashes longer).
    if b.len() >= 12 && b.iter().all(u8::is_ascii_hexdigit) {
        return Segment::Id;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    // Tokens: long, from the base64(url) alphabet, mixing classes (a long
    // plain word like "administrators" is not a token).
    if b.len() >= 20
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+/=-_.~".contains(c))
    {
        let upper = b.iter().any(u8::is_ascii_uppercase);
        let lower = b.iter().any(u8::is_ascii_lowercase);
        if (digits > 0) as u8 + upper as u8 + lower as u8 >= 2 {
            return Segment::Token;
        }
    }
    // Mixed ids: letters and digits together ("a8f3k2p9", "user_1234",
    // "ord-20240101-77"); short ones such as "v1", "oauth2" or "ipv6" stay.
    if digits > 0 && (letters > 0 && b.len() >= 8 || digits * 2 >= b.len() && b.len() >= 6) {
        return Segment::Id;
    }
    Segment::Literal
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Three dot-separated base64url parts (a JWT, a signed cookie value).
fn is_jwt(b: &[u8]) -> bool {
    let parts: Vec<&[u8]> = b.split(|c| *c == b'.').collect();
    parts.len() == 3
        && b.len() >= 16
        && parts[..2].iter().all(|p| p.len() >= 4)
        && parts.iter().all(|p| {
            p.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        })
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identifiers_become_placeholders() {
        for (target, want) in [
            ("/users/42", "/users/{id}"),
            (
                "/users/42/orders/7?sort=asc&token=abc",
                "/users/{id}/orders/{id}",
            ),
            ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/{id}"),
            ("/blob/9f86d081884c7d659a2feaa0c55ad015", "/blob/{id}"),
            ("/obj/507f1f77bcf86cd799439011", "/obj/{id}"),
            ("/t/eyJhbGciOiJIUzI1NiJ9eyJzdWIiOiIxMjM0In0", "/t/{token}"),
            (
                "/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
                "/t/{token}",
            ),
            ("/u/alice@example.com/inbox", "/u/{email}/inbox"),
            ("/u/alice%40example.com", "/u/{email}"),
            ("/cart;jsessionid=ABCDEF123456", "/cart;{param}"),
            ("/k/key%3Dvalue", "/k/{id}"),
            ("/x/a8f3k2p9", "/x/{id}"),
            ("/api/v1/administrators", "/api/v1/administrators"),
            ("/oauth2/ipv6/v2", "/oauth2/ipv6/v2"),
            ("/", "/"),
            ("", "{invalid}"),
            ("*", "*"),
            ("http://example.com/a/123", "/a/{id}"),
            ("http://user:password@example.com/a", "/a"),
            ("/x/user_123456", "/x/{id}"),
        ] {
            assert_eq!(template(target), want, "{target}");
        }
    }

    #[test]
    fn deep_and_long_paths_are_bounded() {
        let deep = "/a".repeat(100);
        assert!(template(&deep).ends_with("/…"));
        let long = format!("/{}", "a".repeat(1000));
        assert!(template(&long).chars().count() <= MAX_TEMPLATE_LEN + 1);
    }

    proptest! {
        #[test]
        fn templates_are_bounded_and_never_keep_the_query(s in "\\PC{0,600}") {
            let t = template(&s);
            prop_assert!(t.len() <= MAX_TEMPLATE_LEN + 4 + "/…".len());
            prop_assert!(!t.contains('?'));
        }
    }
}
