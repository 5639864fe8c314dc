//! Step 2 and the header part of step 9: pure functions over `HeaderMap` (design §5.1–5.2).
//!
//! Order matters: hop-by-hop headers (and those named in `Connection`) go first, then every
//! variant of an identity header, and only then are our own headers set (inserted into the
//! map, never appended; identity headers may instead go in [`Added`], which only holds
//! names the map no longer has), so that neither `Connection: x-auth-account` nor
//! `X_Auth_Account` can remove or spoof what the upstream trusts.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the older `Proxy-Connection`, `Keep-Alive`,
/// `Trailer` and `Proxy-Authorization`/`Proxy-Authenticate` from RFC 7230/2616).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Whether `name` is one of [`HOP_BY_HOP`] (comparisons, no hashing).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|h| h == name)
}

/// Whether a raw header name is one of [`HOP_BY_HOP`], in any letter case.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Common case (no hop-by-hop header at all): one pass over the names, no hashing, no
    // allocation.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names listed in Connection (possibly over several header lines, comma-separated),
    // matched against the names present: a listed name that is absent costs nothing.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if let Some(k) = headers
            .keys()
            .find(|k| k.as_str().eq_ignore_ascii_case(token))
        {
            doomed.push(k.clone());
        }
    }
    doomed.extend(headers.keys().filter(|k| is_hop_by_hop(k)).cloned());
    for name in doomed {
        headers.remove(name);
    }
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`);
/// returns the `Upgrade` value to re-add after stripping.
pub fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Whether `name` (already lower-case, as `http` stores it) is an identity header for the
/// lower-case `prefix`, reading `_` as `-`.
pub fn is_identity_header(name: &str, prefix: &str) -> bool {
    let n = name.as_bytes();
    let p = prefix.as_bytes();
    n.len() >= p.len()
        && n.iter().zip(p).all(|(&a, &b)| {
            let a = if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            };
            a == b
        })
}

/// Removes every client-supplied identity header; returns how many header names were removed.
pub fn strip_identity(headers: &mut HeaderMap, prefix: &str) -> usize {
    // Common case: nothing to remove, nothing allocated.
    if !headers
        .keys()
        .any(|k| is_identity_header(k.as_str(), prefix))
    {
        return 0;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_identity_header(k.as_str(), prefix))
        .cloned()
        .collect();
    for name in &doomed {
        headers.remove(name);
    }
    doomed.len()
}

/// Whether `peer` is one of the configured trusted proxies.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|n| n.contains(&peer))
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client address (IPv4-mapped IPv6 read as IPv4), formatted once per connection for
/// `X-Forwarded-For`.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    ip: IpAddr,
    value: HeaderValue,
}

impl ClientAddr {
    pub fn new(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        // An address's text is always a valid header value.
        let value = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { ip, value }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// Sets `X-Forwarded-For` / `-Proto` / `-Host`. Incoming values are kept (and For appended
/// to) only when the peer is a trusted proxy; otherwise they are replaced, and the other
/// client-address headers an upstream might believe (`Forwarded`, `X-Real-IP`) are removed.
/// A value of ours goes to `out` once the map holds none of that name (so [`Added`] can take
/// it: the map never grows for it).
pub fn set_forwarded(
    (headers, out): (&mut HeaderMap, &mut Added),
    peer: &ClientAddr,
    trusted: bool,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let (xff, keep_proto, keep_host) = if trusted {
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let xff = if prior.is_empty() {
            Some(peer.value.clone())
        } else {
            let peer_str = peer.value.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{}, {peer_str}", prior.join(", "))).ok()
        };
        headers.remove(&X_FORWARDED_FOR);
        (
            xff,
            headers.contains_key(&X_FORWARDED_PROTO),
            headers.contains_key(&X_FORWARDED_HOST),
        )
    } else {
        remove_present(
            headers,
            &[
                &header::FORWARDED,
                &X_REAL_IP,
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
            ],
        );
        (Some(peer.value.clone()), false, false)
    };
    if let Some(v) = xff {
        out.put(&X_FORWARDED_FOR, v.as_bytes());
    }
    if !keep_proto {
        out.put(&X_FORWARDED_PROTO, proto.as_bytes());
    }
    if let Some(h) = host.filter(|_| !keep_host) {
        out.put(&X_FORWARDED_HOST, h.as_bytes());
    }
}

/// Removes those of `names` that the map holds: one pass over its names finds them, so the
/// common case (none sent) hashes nothing.
pub fn remove_present(headers: &mut HeaderMap, names: &[&HeaderName]) {
    if !headers.keys().any(|k| names.contains(&k)) {
        return;
    }
    for name in names {
        headers.remove(*name);
    }
}

/// The client's `X-Request-Id` when it is a sane token (1–128 characters of
/// `A-Z a-z 0-9 - _ . : / + =`), else `None`.
pub fn client_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all(&X_REQUEST_ID).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let b = v.as_bytes();
    let sane = (1..=128).contains(&b.len())
        && b.iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        });
    sane.then(|| v.clone())
}

/// Removes a bearer token from `Authorization` (other schemes are left alone).
pub fn strip_bearer(headers: &mut HeaderMap) {
    let is_bearer = headers.get_all(header::AUTHORIZATION).iter().any(|v| {
        v.as_bytes()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
    });
    if is_bearer {
        headers.remove(header::AUTHORIZATION);
    }
}

/// Removes the cookie `name` from every `Cookie` header, keeping the others.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let has = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(';')
                .any(|p| p.trim().split('=').next() == Some(name))
        });
    if !has {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

/// The identity header names for one prefix (design §5.2), built once per snapshot.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    provider: HeaderName,
    subject: HeaderName,
    account: HeaderName,
    account_kind: HeaderName,
    email: HeaderName,
    name: HeaderName,
    roles: HeaderName,
    permissions: HeaderName,
    groups: HeaderName,
    permission_source: HeaderName,
    mapping: HeaderName,
    pub assertion: HeaderName,
    max_bytes: usize,
}

impl IdentityHeaders {
    /// `prefix` lower-case (e.g. `x-auth-`); `max_bytes` caps the total size of the values.
    pub fn new(prefix: &str, max_bytes: usize) -> Result<Self, http::header::InvalidHeaderName> {
        let n = |suffix: &str| HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes());
        Ok(Self {
            provider: n("provider")?,
            subject: n("subject")?,
            account: n("account")?,
            account_kind: n("account-kind")?,
            email: n("email")?,
            name: n("name")?,
            roles: n("roles")?,
            permissions: n("permissions")?,
            groups: n("groups")?,
            permission_source: n("permission-source")?,
            mapping: n("mapping")?,
            assertion: n("assertion")?,
            max_bytes,
        })
    }
}

/// Sets `name` to `parts` joined by `, `, unless the value holds a control character (CR,
/// LF, NUL, tab, DEL…: no claim can add or split headers). Returns the name's and the
/// value's length together when it went in (what counts against `max_identity_bytes`).
fn put_joined<'a>(
    headers: &mut Added,
    name: &HeaderName,
    parts: impl Iterator<Item = &'a str>,
) -> Option<usize> {
    headers
        .put_with(name, |out| {
            let start = out.len();
            for (i, part) in parts.enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(part.as_bytes());
            }
            // `Added` refuses the other control characters; identity values refuse tab too.
            !out.get(start..).unwrap_or_default().contains(&b'\t')
        })
        .map(|len| name.as_str().len() + len)
}

/// The length of `v` as an RFC 8941 sf-string (`"..."` with `\` and `\"` escaped), or
/// `None` for characters an sf-string cannot hold (anything outside 0x20–0x7E).
fn sf_string_len(v: &str) -> Option<usize> {
    v.bytes()
        .all(|b| (0x20..=0x7e).contains(&b))
        .then(|| v.len() + 2 + v.bytes().filter(|&b| b == b'"' || b == b'\\').count())
}

/// Appends `v` as an sf-string (see [`sf_string_len`]; `v` is printable ASCII).
fn push_sf_string(buf: &mut Vec<u8>, v: &str) {
    buf.extend_from_slice(b"\"");
    for b in v.bytes() {
        if b == b'"' || b == b'\\' {
            buf.extend_from_slice(b"\\");
        }
        buf.extend_from_slice(&[b]);
    }
    buf.extend_from_slice(b"\"");
}

/// Header lines the upstream request carries after its map's, encoded as they go on the
/// wire (`name: value\r\n`) by the time they are added: no name is cloned, no value is
/// shared, nothing is hashed, and the map never grows. Only for names the map no longer
/// holds, so appending is inserting: identity headers, every spelling of which
/// [`strip_identity`] has removed, and the forwarding headers and request id, removed just
/// before theirs are added.
#[derive(Debug, Default)]
pub struct Added(Vec<u8>);

impl Added {
    /// Appends `name: value`, unless `value` is not a field value (the rule `HeaderValue`
    /// applies: no control character but tab, no DEL): nothing here can split the head.
    /// Returns whether the header went in.
    pub fn put(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        self.put_with(name, |out| {
            out.extend_from_slice(value);
            true
        })
        .is_some()
    }

    /// As [`Self::put`], with the value written in place by `value`, which may refuse it
    /// (by returning false). A refused value leaves nothing behind. Returns the value's
    /// length when it went in.
    fn put_with(
        &mut self,
        name: &HeaderName,
        value: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> Option<usize> {
        if self.0.capacity() == 0 {
            self.0.reserve_exact(512);
        }
        let line = self.0.len();
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        let start = self.0.len();
        let wanted = value(&mut self.0);
        let written = self.0.get(start..).unwrap_or_default();
        // `fold` with `&`, not `all`: no early exit, so the check vectorizes.
        let field_value = written.iter().fold(true, |ok, &b| {
            ok & (((b >= 0x20) & (b != 0x7f)) | (b == b'\t'))
        });
        if !(wanted && field_value) {
            self.0.truncate(line);
            return None;
        }
        let len = written.len();
        self.0.extend_from_slice(b"\r\n");
        Some(len)
    }

    /// The encoded lines, each ending in CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Each header as (name, value).
    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let (name, value) = line.split_at(colon);
                Some((name, value.get(2..).unwrap_or_default()))
            })
    }
}

/// What [`inject_identity`] had to leave out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    /// Groups dropped to respect `max_identity_bytes`.
    pub groups_truncated: bool,
}

/// Sets the identity headers of an authorized request, into [`Added`] (after
/// [`strip_identity`] emptied the map of them). Takes the [`crate::authz::Permit`]: only an
/// authorization decision can produce identity. Call after [`strip_hop_by_hop`] and
/// [`strip_identity`].
pub fn inject_identity(
    headers: &mut Added,
    permit: &crate::authz::Permit,
    names: &IdentityHeaders,
) -> Injected {
    let mut out = Injected::default();
    let Some(grant) = permit.grant() else {
        return out;
    };
    let p = &grant.principal;
    let once = std::iter::once;
    let mut used = 0usize;
    for (name, value) in [
        (&names.account_kind, p.kind.as_str()),
        (&names.permission_source, grant.permissions.source.as_str()),
        (&names.provider, p.provider.as_str()),
        (&names.subject, p.subject.as_str()),
        (&names.account, p.account.as_str()),
    ] {
        used += put_joined(headers, name, once(value)).unwrap_or(0);
    }
    if let Some(e) = &p.email {
        used += put_joined(headers, &names.email, once(e.as_str())).unwrap_or(0);
    }
    if let Some(n) = &p.name {
        used += put_joined(headers, &names.name, once(n.as_str())).unwrap_or(0);
    }
    let roles = p.roles.iter().map(String::as_str);
    used += put_joined(headers, &names.roles, roles).unwrap_or(0);
    let granted = grant.permissions.granted.iter().map(String::as_str);
    used += put_joined(headers, &names.permissions, granted).unwrap_or(0);
    used += put_joined(headers, &names.mapping, once(p.mapping.as_str())).unwrap_or(0);
    // Groups last: they are what gets truncated when the total would exceed the cap.
    let budget = names
        .max_bytes
        .saturating_sub(used + names.groups.as_str().len());
    headers.put_with(&names.groups, |buf| {
        let start = buf.len();
        for (g, len) in p.groups.iter().filter_map(|g| Some((g, sf_string_len(g)?))) {
            let written = buf.len() - start;
            let sep = if written == 0 { 0 } else { 2 };
            if written + sep + len > budget {
                out.groups_truncated = true;
                break;
            }
            if sep > 0 {
                buf.extend_from_slice(b", ");
            }
            push_sf_string(buf, g);
        }
        buf.len() > start
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever spelling a client uses, no identity header survives stripping, and no
        /// other header is lost.
        #[test]
        fn no_identity_header_survives(
            names in proptest::collection::vec("[xX][-_][aA][uU][tT][hH][-_][a-zA-Z_-]{0,12}|[a-zA-Z][a-zA-Z0-9_-]{0,16}", 1..24)
        ) {
            let mut h = HeaderMap::new();
            for n in &names {
                if let Ok(name) = HeaderName::from_bytes(n.as_bytes()) {
                    h.append(name, HeaderValue::from_static("v"));
                }
            }
            let others: Vec<String> = h
                .keys()
                .filter(|k| !is_identity_header(k.as_str(), "x-auth-"))
                .map(|k| k.to_string())
                .collect();
            strip_identity(&mut h, "x-auth-");
            for k in h.keys() {
                let norm = k.as_str().to_ascii_lowercase().replace('_', "-");
                proptest::prop_assert!(!norm.starts_with("x-auth-"), "{} survived", k);
            }
            for o in others {
                proptest::prop_assert!(h.contains_key(o.as_str()), "{} was removed", o);
            }
        }
    }

    #[test]
    fn sf_strings_escape_quotes_and_backslashes() {
        let sf = |v: &str| {
            let len = sf_string_len(v)?;
            let mut buf = Vec::new();
            push_sf_string(&mut buf, v);
            assert_eq!(buf.len(), len, "{v:?}");
            Some(String::from_utf8(buf).unwrap())
        };
        assert_eq!(sf("CN=Eng,OU=x").as_deref(), Some("\"CN=Eng,OU=x\""));
        assert_eq!(sf("a\"b\\c").as_deref(), Some("\"a\\\"b\\\\c\""));
        assert_eq!(sf("caf\u{e9}"), None);
        assert_eq!(sf("a\tb"), None);
    }

    #[test]
    fn identity_values_refuse_control_characters() {
        let name = HeaderName::from_static("x-auth-name");
        let value = |parts: &[&str]| {
            let mut added = Added::default();
            added.put(&X_REQUEST_ID, b"before");
            let len = put_joined(&mut added, &name, parts.iter().copied());
            let lines: Vec<_> = added.iter().map(|(_, v)| v.to_vec()).collect();
            match len {
                Some(len) => {
                    assert_eq!(len, name.as_str().len() + lines[1].len());
                    Some(String::from_utf8(lines[1].clone()).unwrap())
                }
                None => {
                    assert_eq!(lines, [b"before"], "a refused value leaves nothing behind");
                    None
                }
            }
        };
        assert_eq!(value(&["Sally Jones"]).as_deref(), Some("Sally Jones"));
        assert_eq!(value(&["Jos\u{e9}"]).as_deref(), Some("Jos\u{e9}"));
        assert_eq!(value(&["a", "b"]).as_deref(), Some("a, b"));
        assert_eq!(value(&[]).as_deref(), Some(""));
        for bad in [
            "a\r\nX-Auth-Account: admin",
            "a\nb",
            "a\u{0}",
            "a\tb",
            "a\u{7f}",
        ] {
            assert_eq!(value(&["ok", bad]), None, "{bad:?}");
        }
    }

    /// The identity headers' names and values together stay within `max_identity_bytes`:
    /// groups are cut at a whole group, the cut is reported, and a refused value counts
    /// for nothing.
    #[test]
    fn identity_headers_stay_within_their_cap() {
        let principal = |groups: Vec<String>| crate::identity::Principal {
            provider: "corp".into(),
            subject: "u-1".into(),
            account: "alice".into(),
            kind: crate::config::AccountKind::User,
            email: Some("alice@example.com".into()),
            name: Some("Alice\r\nx-auth-account: root".into()),
            roles: vec!["engineer".into(), "viewer".into()],
            groups,
            mapping: "alice".into(),
            assertion_audience: None,
        };
        let permit = |groups| {
            crate::authz::Permit::granted(crate::authz::Grant {
                principal: principal(groups),
                permissions: crate::authz::permissions::Permissions {
                    granted: vec!["items:read".into()],
                    source: crate::authz::permissions::Source::Roles,
                },
            })
        };
        let total = |added: &Added| added.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        let run = |groups: Vec<String>, cap: usize| {
            let names = IdentityHeaders::new("x-auth-", cap).unwrap();
            let mut added = Added::default();
            let injected = inject_identity(&mut added, &permit(groups), &names);
            let sent: Vec<_> = added.iter().map(|(n, _)| n.to_vec()).collect();
            assert!(
                !sent.contains(&b"x-auth-name".to_vec()),
                "the CRLF name went in"
            );
            assert_eq!(sent.iter().filter(|n| *n == b"x-auth-account").count(), 1);
            let groups = added
                .iter()
                .find(|(n, _)| *n == b"x-auth-groups")
                .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap());
            (total(&added), groups, injected.groups_truncated)
        };
        // Everything but the groups: never cut, whatever the cap.
        let (base, none, cut) = run(vec![], 0);
        assert_eq!((none, cut), (None, false));
        let groups: Vec<String> = (0..50).map(|i| format!("group-{i:02}")).collect();
        // Each group is `"group-NN"` (10 bytes) and `, ` between two; `x-auth-groups` is 13.
        let exactly_three = base + 13 + 10 + 12 + 12;
        assert_eq!(
            run(groups.clone(), exactly_three),
            (
                exactly_three,
                Some(r#""group-00", "group-01", "group-02""#.to_string()),
                true
            )
        );
        assert_eq!(run(groups.clone(), exactly_three - 1).1.unwrap().len(), 22);
        assert_eq!(run(groups.clone(), base + 13 + 9), (base, None, true));
        let (_, all, cut) = run(groups, 8192);
        assert_eq!((all.unwrap().matches(", ").count(), cut), (49, false));
    }

    #[test]
    fn token_cookie_is_removed_and_others_kept() {
        let mut h = map(&[("cookie", "a=1; tg=secret"), ("cookie", "b=2")]);
        strip_cookie(&mut h, "tg");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut h = map(&[("cookie", "tg=secret")]);
        strip_cookie(&mut h, "tg");
        assert!(h.is_empty());
        let mut h = map(&[("cookie", "tgx=1")]);
        strip_cookie(&mut h, "tg");
        assert_eq!(h["cookie"], "tgx=1");
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret , x-auth-account"),
            ("connection", "foo"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("foo", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn identity_headers_match_in_any_case_and_with_underscores() {
        for n in [
            "x-auth-account",
            "x_auth_account",
            "x-auth_roles",
            "x_auth-",
            "x-auth-",
        ] {
            assert!(is_identity_header(n, "x-auth-"), "{n}");
        }
        for n in ["x-auth", "x-authz", "xauth-account", "accept", "x-au"] {
            assert!(!is_identity_header(n, "x-auth-"), "{n}");
        }
        let mut h = map(&[
            ("X-Auth-Account", "admin"),
            ("X_AUTH_ROLES", "admin"),
            ("x-Auth_Email", "a@b"),
            ("x-authorization", "keep"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_identity(&mut h, "x-auth-"), 3);
        assert_eq!(h.len(), 2);
        assert_eq!(strip_identity(&mut h, "x-auth-"), 0);
    }

    /// The request as the upstream encoder writes it: the map's headers, then `added`.
    fn merged(mut h: HeaderMap, added: Added) -> HeaderMap {
        for (n, v) in added.iter() {
            let n = HeaderName::from_bytes(n).unwrap();
            assert!(!h.contains_key(&n), "{n} is in the map and in added");
            h.append(n, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        let peer = ClientAddr::new("10.0.0.9".parse().unwrap());
        let mut added = Added::default();
        set_forwarded(
            (&mut h, &mut added),
            &peer,
            false,
            "http",
            Some(HeaderValue::from_static("api.example.com")),
        );
        // Ours are in `added`, none left in the map.
        let names: Vec<_> = added.iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names,
            [
                &b"x-forwarded-for"[..],
                b"x-forwarded-proto",
                b"x-forwarded-host"
            ]
        );
        assert_eq!(h.len(), 0);
        let h = merged(h, added);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert!(!h.contains_key("forwarded"));
        assert!(!h.contains_key("x-real-ip"));
    }

    #[test]
    fn forwarded_headers_from_trusted_peers_are_kept_and_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ]);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert!(is_trusted(peer, &trusted));
        let mut added = Added::default();
        set_forwarded(
            (&mut h, &mut added),
            &ClientAddr::new(peer),
            true,
            "http",
            Some(HeaderValue::from_static("inner")),
        );
        let h = merged(h, added);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");

        // A trusted proxy that sent none of them gets ours.
        let mut h = map(&[("forwarded", "for=1.2.3.4")]);
        let mut added = Added::default();
        set_forwarded(
            (&mut h, &mut added),
            &ClientAddr::new(peer),
            true,
            "https",
            Some(HeaderValue::from_static("inner")),
        );
        let h = merged(h, added);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "inner");
        assert_eq!(h["forwarded"], "for=1.2.3.4");
    }

    #[test]
    fn added_lines_hold_only_field_values() {
        let name = HeaderName::from_static("x-auth-name");
        let mut added = Added::default();
        assert!(added.put(&name, b"Ann\tLee \xc3\xa9"));
        for bad in [
            &b"a\r\nx-auth-account: root"[..],
            b"a\nb",
            b"a\rb",
            b"a\0b",
            b"a\x7fb",
        ] {
            assert!(!added.put(&name, bad), "{bad:?} went in");
        }
        assert!(added.put(&X_REQUEST_ID, b""));
        assert_eq!(
            added.as_bytes(),
            b"x-auth-name: Ann\tLee \xc3\xa9\r\nx-request-id: \r\n"
        );
        let lines: Vec<_> = added.iter().collect();
        assert_eq!(
            lines,
            [
                (&b"x-auth-name"[..], &b"Ann\tLee \xc3\xa9"[..]),
                (&b"x-request-id"[..], &b""[..])
            ]
        );
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(client_request_id(&map(&[("x-request-id", "abc-123_x.y")])).is_some());
        assert!(client_request_id(&map(&[("x-request-id", "a b")])).is_none());
        assert!(client_request_id(&map(&[("x-request-id", "")])).is_none());
        assert!(client_request_id(&map(&[("x-request-id", &"a".repeat(129))])).is_none());
        assert!(client_request_id(&map(&[("x-request-id", "a"), ("x-request-id", "b")])).is_none());
    }

    #[test]
    fn upgrade_is_detected_before_stripping() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_request(&h).unwrap(), "websocket");
        assert!(upgrade_request(&map(&[("upgrade", "websocket")])).is_none());
    }

    #[test]
    fn only_bearer_authorization_is_stripped() {
        let mut h = map(&[("authorization", "Bearer abc")]);
        strip_bearer(&mut h);
        assert!(h.is_empty());
        let mut h = map(&[("authorization", "Basic abc")]);
        strip_bearer(&mut h);
        assert_eq!(h.len(), 1);
    }
}
