//! The request pipeline (design §1). [`handle`] is the outer handler: it assigns the request
//! id, times the request, turns any error into its response and records metrics and the audit
//! event exactly once. [`authorize_and_forward`] is the inner one and uses `?` at every step.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::app::App;
use crate::audit::{self, AuditEvent};
use crate::auth::extract;
use crate::auth::verify::VerifiedToken;
use crate::authz::path::{CanonicalPath, canonicalize};
use crate::authz::{self, Permit};
use crate::error::{ProxyError, Rejection, RequestError, UpstreamError};
use crate::headers::{self, X_REQUEST_ID};
use crate::state::Snapshot;
use crate::upstream::{Upgraded, UpstreamBody};

/// Response body: the upstream's stream, or a small body of our own.
pub type Body = Either<UpstreamBody, Full<Bytes>>;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as `X-Forwarded-For` carries it (formatted once).
    pub client: headers::ClientAddr,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            tls,
            client: headers::ClientAddr::new(peer.ip()),
        }
    }
}

/// Request extension set by the server when the request's head had ambiguous framing
/// (`Content-Length` with `Transfer-Encoding`, or two `Content-Length` lines): the request
/// is refused with 400 and its connection closed.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// Filled in by the inner handler as it goes, read by the outer one for the audit event.
#[derive(Default)]
pub struct Trace {
    path: Option<CanonicalPath>,
    route: Option<usize>,
    /// The verified token (provider and subject), shared with the cache: no copies.
    token: Option<Arc<VerifiedToken>>,
    account: Option<String>,
    mapping: Option<String>,
    source: Option<&'static str>,
}

/// Handles one request on the public listener. Never fails: errors become responses.
pub async fn handle(app: Arc<App>, conn: ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let snap = app.snapshot();
    let request_id = headers::client_request_id(req.headers()).unwrap_or_else(new_request_id);
    let method = req.method().clone();
    let mut trace = Trace::default();

    let (mut resp, reason, permit) =
        match authorize_and_forward(&app, &snap, &conn, req, &request_id, &mut trace).await {
            Ok((resp, permit)) => (resp, permit.reason(), Some(permit)),
            Err(e) => {
                if let ProxyError::Upstream(u) = &e {
                    app.metrics.upstream_error(*u);
                }
                tracing::debug!(error = %e, "request refused");
                let rej = e.rejection();
                let mut resp = error_response(&rej, &request_id);
                if matches!(e, ProxyError::Request(RequestError::AmbiguousFraming)) {
                    // The rest of the connection cannot be trusted to be framed as the
                    // client meant.
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                (resp, rej.reason, None)
            }
        };
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());

    let principal = permit
        .as_ref()
        .and_then(Permit::grant)
        .map(|g| &g.principal);
    let latency = start.elapsed();
    app.metrics.request(reason, latency.as_secs_f64());
    audit::record(
        snap.config.audit,
        &AuditEvent {
            request_id: request_id.to_str().unwrap_or(""),
            client: conn.peer,
            method: method.as_str(),
            path: trace.path.as_ref().map(CanonicalPath::as_str),
            route: trace.route,
            provider: trace.token.as_ref().map(|t| t.provider.as_str()),
            subject: trace.token.as_ref().map(|t| t.subject.as_str()),
            account: principal
                .map(|p| p.account.as_str())
                .or(trace.account.as_deref()),
            mapping: principal
                .map(|p| p.mapping.as_str())
                .or(trace.mapping.as_deref()),
            permission_source: trace.source,
            reason,
            status: resp.status().as_u16(),
            latency,
        },
    );
    resp
}

async fn authorize_and_forward(
    app: &App,
    snap: &Snapshot,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<(Response<Body>, Permit), ProxyError> {
    // 0. Framing the server found ambiguous: nothing of this request is trusted.
    if req.extensions().get::<AmbiguousFraming>().is_some() {
        return Err(RequestError::AmbiguousFraming.into());
    }
    // The upgrade wish is read before the headers are stripped: `Upgrade` is hop-by-hop.
    let upgrade = headers::upgrade_request(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let mut added = headers::Added::default();

    let permit = prepare(
        app,
        snap,
        conn,
        (&mut parts, &mut added),
        upgrade.as_ref(),
        request_id,
        trace,
    )
    .await?;

    // 10. Forward.
    let mut resp = snap
        .upstream
        .send(Request::from_parts(parts, body), added.as_bytes())
        .await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(UpstreamError::Protocol.into());
        };
        let Some(upstream_upgrade) = resp.body_mut().take_upgrade() else {
            return Err(UpstreamError::Protocol.into());
        };
        // The head comes without hop-by-hop headers except, for a 101, `Upgrade` (the
        // upstream codec leaves the others out as it parses): only `Connection` is ours.
        if resp.headers().contains_key(header::UPGRADE) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
    }
    Ok((resp.map(Either::Left), permit))
}

/// Steps 1–9 without the network: canonical path, header hygiene, route, token, identity,
/// permissions, decision, and the upstream request head rewritten in place, with the
/// identity headers in `added` (they follow the map's on the wire). Public for the
/// in-memory pipeline benchmark.
pub async fn prepare(
    app: &App,
    snap: &Snapshot,
    conn: &ConnInfo,
    (parts, added): (&mut http::request::Parts, &mut headers::Added),
    upgrade: Option<&HeaderValue>,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Permit, ProxyError> {
    let cfg = &snap.config;

    // 1. Canonical path: matched and forwarded as the same string.
    let path: &CanonicalPath = trace
        .path
        .insert(canonicalize(parts.uri.path(), cfg.paths.allow_semicolons)?);

    // 2. Strip hop-by-hop and client-supplied identity headers, on every path.
    headers::strip_hop_by_hop(&mut parts.headers);
    let stripped = headers::strip_identity(&mut parts.headers, &cfg.headers.identity_prefix);
    app.metrics.identity_headers_stripped(stripped);

    // 3. Route.
    let route = cfg.routes.find(&parts.method, path);
    trace.route = route.map(|r| r.index);
    let mode = authz::auth_mode(route, cfg.unmatched)?;

    // 4–8. Token, identity, permissions, decision (public routes never look at a token).
    let permit = if mode == authz::route::AuthMode::Public {
        authz::decide(
            route,
            mode,
            None,
            &snap.policy(),
            &mut authz::Observed::default(),
        )?
    } else {
        let verified = match extract::extract(&parts.headers, parts.uri.query(), &cfg.tokens)? {
            None => None,
            Some(token) => {
                let started = Instant::now();
                let result = snap
                    .verifier
                    .verify(token.expose(), &app.token_cache, cfg.tokens.cache_max_ttl)
                    .await;
                app.metrics.auth_duration(started.elapsed().as_secs_f64());
                let (v, hit) = result?;
                app.metrics.token_cache(hit);
                trace.token = Some(v.clone());
                Some(v)
            }
        };
        let with_provider = match &verified {
            Some(v) => Some((
                v.as_ref(),
                &snap
                    .verifier
                    .provider(&v.provider)
                    .ok_or(crate::error::AuthError::UnknownIssuer)?
                    .config,
            )),
            None => None,
        };
        let mut seen = authz::Observed::default();
        let decided = authz::decide(route, mode, with_provider, &snap.policy(), &mut seen);
        trace.account = seen.account;
        trace.mapping = seen.mapping;
        trace.source = seen.source;
        decided?
    };

    // 9. Forward. The headers set here go to `added` (written after the map's by the
    // upstream encoder), each once the map holds none of its name; only `Host` replaces
    // the client's in the map.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let trusted = headers::is_trusted(conn.client.ip(), &cfg.headers.trusted_proxies);
    let proto = if conn.tls { "https" } else { "http" };
    headers::set_forwarded(
        (&mut parts.headers, added),
        &conn.client,
        trusted,
        proto,
        host.clone(),
    );
    // The client's Host, or the upstream's own name when configured so or when the client
    // sent none (HTTP/1.0): the one place the upstream request's Host is decided.
    if let Some(h) = host
        .filter(|_| cfg.upstream.preserve_host)
        .or_else(|| snap.upstream.host().cloned())
    {
        parts.headers.insert(header::HOST, h);
    }
    if !cfg.upstream.forward_token {
        headers::strip_bearer(&mut parts.headers);
        if let Some(name) = &cfg.tokens.cookie {
            headers::strip_cookie(&mut parts.headers, name);
        }
    }
    headers::remove_present(&mut parts.headers, &[&X_REQUEST_ID]);
    added.put(&X_REQUEST_ID, request_id.as_bytes());
    let injected = headers::inject_identity(added, &permit, &snap.identity_headers);
    if injected.groups_truncated {
        app.metrics.identity_groups_truncated();
    }
    if let Some(a) = &cfg.assertion
        && let Some(v) = crate::assertion::for_permit(&permit, a, std::time::SystemTime::now())
    {
        added.put(&snap.identity_headers.assertion, v.as_bytes());
    }
    if let Some(u) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    let query = match (&cfg.tokens.query_param, parts.uri.query()) {
        (Some(name), Some(q)) => extract::strip_query_param(q, name),
        (None, Some(q)) => Some(q.to_string()),
        (_, None) => None,
    };
    parts.uri = snap.upstream.uri_for(path.as_str(), query.as_deref())?;
    parts.version = Version::HTTP_11;

    Ok(permit)
}

/// Joins an upgraded client connection to the upgraded upstream one.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: Upgraded) {
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    if let Err(e) = upstream.tunnel(&mut client).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
    request_id: &'a str,
}

/// The JSON error response of design §7.
pub fn error_response(rej: &Rejection, request_id: &HeaderValue) -> Response<Body> {
    let body = serde_json::to_vec(&ErrorBody {
        error: rej.error,
        error_description: rej.description,
        request_id: request_id.to_str().unwrap_or(""),
    })
    .unwrap_or_default();
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = rej.status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let challenge = match &rej.www_authenticate {
        Some(std::borrow::Cow::Borrowed(c)) => Some(HeaderValue::from_static(c)),
        Some(std::borrow::Cow::Owned(c)) => HeaderValue::from_str(c).ok(),
        None => None,
    };
    if let Some(c) = challenge {
        h.insert(header::WWW_AUTHENTICATE, c);
    }
    if let Some(secs) = rej.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    resp
}

/// A new request id: a per-process random prefix and a counter (unique, not secret).
fn new_request_id() -> HeaderValue {
    static PREFIX: LazyLock<u64> = LazyLock::new(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // One allocation, shared by the upstream request and the response (no copy on clone).
    HeaderValue::from_maybe_shared(Bytes::from_owner(hex32(*PREFIX, n)))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `hi` then `lo` as 32 lower-case hex digits, written directly (no formatting machinery).
fn hex32(hi: u64, lo: u64) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let word = if i < 16 { hi } else { lo };
        let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
        *o = HEX.get(nibble as usize).copied().unwrap_or(b'0');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_32_hex_digits_and_unique() {
        let (a, b) = (new_request_id(), new_request_id());
        for id in [&a, &b] {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32, "{s}");
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        // Same process prefix, counter one apart.
        assert_eq!(a[..16], b[..16]);
        let (na, nb) = (
            u64::from_str_radix(&a[16..], 16).unwrap(),
            u64::from_str_radix(&b[16..], 16).unwrap(),
        );
        assert!(nb > na, "{a} then {b}");
    }

    #[test]
    fn hex32_matches_the_formatter() {
        for (hi, lo) in [
            (0, 0),
            (u64::MAX, 1),
            (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
        ] {
            assert_eq!(
                std::str::from_utf8(&hex32(hi, lo)).unwrap(),
                format!("{hi:016x}{lo:016x}")
            );
        }
    }
}
