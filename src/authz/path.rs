//! Step 1 of the pipeline: path canonicalization (design §6.3).
//!
//! The canonical path is both what route rules are matched against and what the upstream
//! receives, so the two can never disagree. Anything ambiguous between us and an upstream
//! (encoded `/` or `\`, NUL, climbing above the root, `;` path parameters by default) is
//! rejected instead of guessed.

use std::fmt;

/// Why a request path was rejected (→ 400 `invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    #[error("the path contains an encoded slash")]
    EncodedSlash,
    #[error("the path contains an encoded backslash")]
    EncodedBackslash,
    #[error("the path contains an encoded NUL")]
    EncodedNul,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains an invalid percent escape")]
    InvalidEscape,
    #[error("the path contains a control character")]
    ControlCharacter,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("the path contains a semicolon")]
    Semicolon,
    #[error("the path contains a dot segment with parameters")]
    DotSegmentParameters,
}

/// A path that went through [`canonicalize`]: starts with `/`, no empty or dot segments, no
/// encoded `/`, `\` or NUL, unreserved characters decoded and other escapes in upper-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath(String);

// === impl CanonicalPath ===

impl CanonicalPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The non-empty segments, in order (a trailing `/` adds none).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters RFC 3986 allows raw in a path segment besides unreserved ones.
fn is_pchar_extra(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    let hex = |n: u8| {
        char::from_digit(u32::from(n), 16)
            .unwrap_or('0')
            .to_ascii_uppercase()
    };
    out.push('%');
    out.push(hex(b >> 4));
    out.push(hex(b & 0xF));
}

/// Canonicalize the path part of a request target (no query string).
///
/// Rules, in order, per segment: percent-decode unreserved characters and upper-case every
/// other escape; reject `%2F`, `%5C`, `%00`, raw `\`, control characters and malformed
/// escapes; percent-encode any other byte that is not allowed raw in a path; reject `;`
/// unless `allow_semicolons`. Then remove `.` and `..` segments (RFC 3986 §5.2.4; `..`
/// above the root is an error) and merge repeated slashes. A trailing `/` is kept.
pub fn canonicalize(raw: &str, allow_semicolons: bool) -> Result<CanonicalPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = String::with_capacity(raw.len());
    // Start offsets (in `out`) of the segments written so far, for `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    let mut seg = String::new();

    for raw_seg in raw[1..].split('/') {
        seg.clear();
        let sb = raw_seg.as_bytes();
        let mut i = 0;
        while let Some(&b) = sb.get(i) {
            match b {
                b'%' => {
                    let (Some(h), Some(l)) = (
                        sb.get(i + 1).copied().and_then(hex_val),
                        sb.get(i + 2).copied().and_then(hex_val),
                    ) else {
                        return Err(PathError::InvalidEscape);
                    };
                    let v = (h << 4) | l;
                    match v {
                        b'/' => return Err(PathError::EncodedSlash),
                        b'\\' => return Err(PathError::EncodedBackslash),
                        0 => return Err(PathError::EncodedNul),
                        v if is_unreserved(v) => seg.push(char::from(v)),
                        v => push_escaped(&mut seg, v),
                    }
                    i += 3;
                    continue;
                }
                b'\\' => return Err(PathError::Backslash),
                b';' if !allow_semicolons => return Err(PathError::Semicolon),
                b if b < 0x20 || b == 0x7F => return Err(PathError::ControlCharacter),
                b if is_unreserved(b) || is_pchar_extra(b) => seg.push(char::from(b)),
                b => push_escaped(&mut seg, b),
            }
            i += 1;
        }
        // A dot segment hidden behind parameters (`..;x`) is resolved by some servers
        // and not by others: refuse rather than guess.
        let bare = seg.split(';').next().unwrap_or("");
        if bare != seg.as_str() && (bare == "." || bare == "..") {
            return Err(PathError::DotSegmentParameters);
        }
        match seg.as_str() {
            "" => {
                trailing_slash = true;
            }
            "." => {
                trailing_slash = true;
            }
            ".." => {
                let start = starts.pop().ok_or(PathError::AboveRoot)?;
                out.truncate(start);
                trailing_slash = true;
            }
            s => {
                starts.push(out.len());
                out.push('/');
                out.push_str(s);
                trailing_slash = false;
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(CanonicalPath(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(p: &str) -> Result<String, PathError> {
        canonicalize(p, false).map(|c| c.0)
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/items/42", "/a:b@c!$&'()*+,="] {
            assert_eq!(c(p).as_deref(), Ok(p), "{p}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_uppercased() {
        assert_eq!(c("/%61%62%7e%2d%2E%5f").as_deref(), Ok("/ab~-._"));
        assert_eq!(c("/a%3fb%3Bc%25").as_deref(), Ok("/a%3Fb%3Bc%25"));
        assert_eq!(c("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn bytes_not_allowed_raw_are_encoded() {
        assert_eq!(c("/a b").as_deref(), Ok("/a%20b"));
        assert_eq!(c("/a\"{}|^`").as_deref(), Ok("/a%22%7B%7D%7C%5E%60"));
        assert_eq!(c("/é").as_deref(), Ok("/%C3%A9"));
    }

    #[test]
    fn dangerous_encodings_are_rejected() {
        assert_eq!(c("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(c("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(c("/a%5cb"), Err(PathError::EncodedBackslash));
        assert_eq!(c("/a%00"), Err(PathError::EncodedNul));
        assert_eq!(c("/a\\b"), Err(PathError::Backslash));
        assert_eq!(c("/a%"), Err(PathError::InvalidEscape));
        assert_eq!(c("/a%4"), Err(PathError::InvalidEscape));
        assert_eq!(c("/a%zz"), Err(PathError::InvalidEscape));
        assert_eq!(c("/a\tb"), Err(PathError::ControlCharacter));
        assert_eq!(c("*"), Err(PathError::NotAbsolute));
        assert_eq!(c(""), Err(PathError::NotAbsolute));
        assert_eq!(c("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(c("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(c("/a/../b").as_deref(), Ok("/b"));
        assert_eq!(c("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(c("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(c("/a/%2e%2E/b").as_deref(), Ok("/b"));
        assert_eq!(c("/a/.%2e/b").as_deref(), Ok("/b"));
        assert_eq!(c("/a/...").as_deref(), Ok("/a/..."));
        assert_eq!(c("/public/../admin").as_deref(), Ok("/admin"));
    }

    #[test]
    fn climbing_above_the_root_is_rejected() {
        assert_eq!(c("/.."), Err(PathError::AboveRoot));
        assert_eq!(c("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(c("/%2e%2e/etc/passwd"), Err(PathError::AboveRoot));
    }

    #[test]
    fn repeated_slashes_are_merged() {
        assert_eq!(c("//a///b//").as_deref(), Ok("/a/b/"));
        assert_eq!(c("//").as_deref(), Ok("/"));
        assert_eq!(c("/a//../b").as_deref(), Ok("/b"));
    }

    #[test]
    fn semicolons_are_rejected_unless_allowed() {
        assert_eq!(c("/admin;x"), Err(PathError::Semicolon));
        assert_eq!(
            canonicalize("/admin;x/y", true).map(|c| c.0).as_deref(),
            Ok("/admin;x/y")
        );
        assert_eq!(
            canonicalize("/public/..;/admin", true),
            Err(PathError::DotSegmentParameters)
        );
        // An encoded semicolon is data, not a parameter delimiter.
        assert_eq!(c("/a%3bb").as_deref(), Ok("/a%3Bb"));
    }

    #[test]
    fn segments_skip_the_trailing_slash() {
        let p = canonicalize("/a/b/", false).unwrap();
        assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b"]);
        let root = canonicalize("/", false).unwrap();
        assert_eq!(root.segments().count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn canonicalization_is_idempotent_and_clean(
            raw in "/((%[0-9a-fA-F]{2})|[a-z.%/;\\\\:@ ]|(\\.\\.)|(%2[eE])){0,24}",
            semis in any::<bool>(),
        ) {
            if let Ok(once) = canonicalize(&raw, semis) {
                let twice = canonicalize(once.as_str(), semis);
                prop_assert_eq!(Ok(once.clone()), twice);
                let s = once.as_str();
                prop_assert!(s.starts_with('/'));
                for bad in ["//", "/./", "/../", "\\"] {
                    prop_assert!(!s.contains(bad), "{s} contains {bad}");
                }
                prop_assert!(!s.to_ascii_uppercase().contains("%2F"), "{}", s);
                prop_assert!(!s.ends_with("/.") && !s.ends_with("/.."), "{}", s);
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(raw in ".{0,64}", semis in any::<bool>()) {
            let _ = canonicalize(&raw, semis);
        }
    }
}
