//! Route templates: `/users/42/orders/9f1c…` becomes `/users/{id}/orders/{id}`,
//! so per-route metrics stay bounded however many ids clients use.

/// Longest template kept; longer paths are cut (with a trailing `…`).
pub const MAX_TEMPLATE_LEN: usize = 128;
/// Segments kept; deeper paths end in `/…`.
pub const MAX_SEGMENTS: usize = 12;

/// The template of a request target: the query string is dropped (its values
/// are secrets as often as not) and every segment that looks like an
/// identifier becomes `{id}`.
pub fn template(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    // Absolute-form targets (proxies): keep only the path.
    let path = match path.find("://") {
        Some(i) => path[i + 3..]
            .find('/')
            .map(|j| &path[i + 3 + j..])
            .unwrap_or("/"),
        None => path,
    };
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
        if is_identifier(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
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

/// Numbers, UUIDs, long hex strings and long base64/base64url tokens.
fn is_identifier(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let b = s.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) {
        return true;
    }
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Tokens: long, from the base64(url) alphabet, and mixing classes (a plain
    // long word like "administrators" is not a token).
    if b.len() >= 20
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+/=-_".contains(c))
    {
        let digits = b.iter().any(u8::is_ascii_digit);
        let upper = b.iter().any(u8::is_ascii_uppercase);
        let lower = b.iter().any(u8::is_ascii_lowercase);
        return (digits as u8 + upper as u8 + lower as u8) >= 2;
    }
    // Mixed ids like "user_1234" or "ord-20240101-77": mostly digits.
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    b.len() >= 6 && digits * 2 >= b.len()
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
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
            ("/t/eyJhbGciOiJIUzI1NiJ9eyJzdWIiOiIxMjM0In0", "/t/{id}"),
            ("/api/v1/administrators", "/api/v1/administrators"),
            ("/", "/"),
            ("", "{invalid}"),
            ("*", "*"),
            ("http://example.com/a/123", "/a/{id}"),
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
