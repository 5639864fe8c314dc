//! Step 4: token extraction (design §2.1). Strict: exactly one `Authorization` header, a
//! `Bearer` scheme (case-insensitive) followed by spaces and a token68 value, a size cap,
//! and optional cookie / query sources that may not be combined with another source.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

use crate::config::Tokens;
use crate::error::{AuthError, ProxyError, RequestError};

/// Where a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Cookie,
    Query,
}

/// A bearer token as sent, borrowed from the request. Its `Debug` never shows the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    value: &'a str,
    pub source: TokenSource,
}

impl<'a> Token<'a> {
    /// The raw token. Never log it.
    pub fn expose(&self) -> &'a str {
        self.value
    }
}

impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?}, {} bytes)", self.source, self.value.len())
    }
}

/// token68 (RFC 9110 §11.2): `A-Z a-z 0-9 - . _ ~ + /` followed by optional `=` padding.
/// Whether `b` is a token68 character of RFC 9110 §11.2 (before the trailing `=`). Plain
/// comparisons, no table and no branch: the loop in [`is_token68`] compiles to vector
/// compares, 32 bytes at a time.
#[inline]
fn token68_char(b: u8) -> bool {
    // `b | 0x20` folds A–Z onto a–z and nothing else onto a–z.
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// The whole value is token68 (also what makes it visible ASCII).
fn is_token68(s: &[u8]) -> bool {
    let end = s.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body = s.get(..end).unwrap_or_default();
    // `fold` with `&`, not `all`: no early exit, so the loop vectorizes. A bad byte is
    // rare, and the value is bounded by `max_token_bytes` before this runs.
    !body.is_empty() && body.iter().fold(true, |ok, &b| ok & token68_char(b))
}

/// A token from `source` after the size and token68 checks. The bytes are read as text
/// only once they are known to be token68 (ASCII), so the value is scanned once.
fn checked<'a>(
    value: &'a [u8],
    source: TokenSource,
    opts: &Tokens,
) -> Result<Token<'a>, ProxyError> {
    if value.len() > opts.max_token_bytes {
        return Err(AuthError::TokenTooLarge.into());
    }
    if !is_token68(value) {
        return Err(AuthError::MalformedAuthorization.into());
    }
    let value = std::str::from_utf8(value).map_err(|_| AuthError::MalformedAuthorization)?;
    Ok(Token { value, source })
}

/// Finds the request's bearer token, if any. A non-Bearer `Authorization` scheme counts as
/// no token.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    opts: &Tokens,
) -> Result<Option<Token<'a>>, ProxyError> {
    let mut found: Option<Token<'a>> = None;
    let mut put = |t: Token<'a>| -> Result<(), ProxyError> {
        if found.is_some() {
            return Err(RequestError::TokenInTwoPlaces.into());
        }
        found = Some(t);
        Ok(())
    };

    let mut auth = headers.get_all(AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        if auth.next().is_some() {
            return Err(RequestError::DuplicateAuthorization.into());
        }
        let v = v.as_bytes();
        let split = v.iter().position(|&b| b == b' ').unwrap_or(v.len());
        let (scheme, rest) = v.split_at(split);
        if scheme.eq_ignore_ascii_case(b"bearer") {
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            let token = rest.get(start..).unwrap_or_default();
            put(checked(token, TokenSource::Header, opts)?)?;
        } else if !v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            // Another scheme is no token, but a value that is not visible ASCII (what
            // `HeaderValue::to_str` accepts) is refused.
            return Err(AuthError::MalformedAuthorization.into());
        }
    }

    if let Some(name) = &opts.cookie {
        for line in headers.get_all(COOKIE).iter() {
            let Ok(line) = line.to_str() else { continue };
            for pair in line.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k == name
                {
                    put(checked(v.as_bytes(), TokenSource::Cookie, opts)?)?;
                }
            }
        }
    }

    if let (Some(name), Some(q)) = (&opts.query_param, query) {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == name {
                put(checked(v.as_bytes(), TokenSource::Query, opts)?)?;
            }
        }
    }
    Ok(found)
}

/// The query string without the token parameter (for forwarding when the query source is on).
pub fn strip_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| p.split_once('=').map(|(k, _)| k).unwrap_or(p) != name)
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn opts() -> Tokens {
        Tokens {
            max_token_bytes: 64,
            cookie: Some("tg".into()),
            query_param: Some("access_token".into()),
            cache_max_entries: 10,
            cache_max_ttl: Duration::from_secs(1),
        }
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn status(r: Result<Option<Token<'_>>, ProxyError>) -> u16 {
        r.err()
            .map(|e| e.rejection().status.as_u16())
            .unwrap_or(200)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_spaces_are_allowed() {
        let o = opts();
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER   abc.def.ghi",
        ] {
            let m = h(&[("authorization", v)]);
            let t = extract(&m, None, &o).unwrap().unwrap();
            assert_eq!(t.expose(), "abc.def.ghi");
            assert_eq!(t.source, TokenSource::Header);
        }
        let m = h(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert!(extract(&m, None, &o).unwrap().is_none());
    }

    #[test]
    fn malformed_duplicate_and_oversized_tokens_are_refused() {
        let o = opts();
        assert_eq!(
            status(extract(&h(&[("authorization", "Bearer a b")]), None, &o)),
            401
        );
        assert_eq!(
            status(extract(&h(&[("authorization", "Bearer ")]), None, &o)),
            401
        );
        assert_eq!(
            status(extract(&h(&[("authorization", "Bearer a\"b")]), None, &o)),
            401
        );
        let dup = h(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]);
        assert_eq!(status(extract(&dup, None, &o)), 400);
        let long: &'static str = Box::leak(format!("Bearer {}", "a".repeat(65)).into_boxed_str());
        assert_eq!(
            status(extract(&h(&[("authorization", long)]), None, &o)),
            401
        );
    }

    #[test]
    fn cookie_and_query_sources_cannot_be_combined() {
        let o = opts();
        let m = h(&[("cookie", "a=1; tg=tok.en")]);
        assert_eq!(
            extract(&m, None, &o).unwrap().unwrap().source,
            TokenSource::Cookie
        );
        let empty = HeaderMap::new();
        let t = extract(&empty, Some("x=1&access_token=q.t"), &o)
            .unwrap()
            .unwrap();
        assert_eq!((t.expose(), t.source), ("q.t", TokenSource::Query));
        let both = h(&[("authorization", "Bearer a"), ("cookie", "tg=b")]);
        assert_eq!(status(extract(&both, None, &o)), 400);
        assert_eq!(
            status(extract(
                &h(&[("authorization", "Bearer a")]),
                Some("access_token=b"),
                &o
            )),
            400
        );
        // Sources that are not configured are ignored.
        let off = Tokens {
            cookie: None,
            query_param: None,
            ..opts()
        };
        assert!(extract(&m, Some("access_token=b"), &off).unwrap().is_none());
    }

    #[test]
    fn token68_characters_are_exactly_those_of_rfc_9110() {
        for b in 0..=255u8 {
            let reference =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(token68_char(b), reference, "byte {b:#04x}");
        }
        assert!(is_token68(b"abc.DEF-ghi_~+/09=="));
        assert!(!is_token68(b"==="));
        assert!(!is_token68(b""));
        assert!(!is_token68(b"a=b"));
        assert!(!is_token68("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn other_schemes_are_no_token_unless_the_value_is_not_visible_ascii() {
        let o = opts();
        let m = h(&[("authorization", "Basic dXNlcjpwYXNz\tx")]);
        assert!(extract(&m, None, &o).unwrap().is_none());
        // (Control bytes cannot be in a HeaderValue at all; bytes over 0x7e can.)
        for bad in [&b"Basic caf\xc3\xa9"[..], b"Basic a\xffb"] {
            let mut m = HeaderMap::new();
            m.insert(AUTHORIZATION, HeaderValue::from_bytes(bad).unwrap());
            assert_eq!(status(extract(&m, None, &o)), 401, "{bad:?}");
        }
        let mut m = HeaderMap::new();
        m.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer caf\xc3\xa9").unwrap(),
        );
        assert_eq!(status(extract(&m, None, &o)), 401);
    }

    proptest::proptest! {
        /// The vectorized check accepts exactly what the plain definition accepts.
        #[test]
        fn is_token68_matches_its_definition(v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let body_end = v.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
            let (body, pad) = v.split_at(body_end);
            let reference = !body.is_empty()
                && pad.iter().all(|&b| b == b'=')
                && body.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
            proptest::prop_assert_eq!(is_token68(&v), reference);
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let m = h(&[("authorization", "Bearer secretvalue")]);
        let t = extract(&m, None, &opts()).unwrap().unwrap();
        assert!(!format!("{t:?}").contains("secretvalue"));
    }

    #[test]
    fn query_param_is_removed() {
        assert_eq!(
            strip_query_param("a=1&access_token=x&b=2", "access_token").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(strip_query_param("access_token=x", "access_token"), None);
    }
}
