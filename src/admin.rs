//! The admin listener (design §8.1): `/healthz`, `/readyz`, `/metrics`. It is meant to stay
//! on a private address; it exposes state but never a token or a secret.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::app::App;

#[derive(Serialize)]
struct Readiness<'a> {
    ready: bool,
    config: ConfigState<'a>,
    providers: Vec<ProviderState<'a>>,
}

#[derive(Serialize)]
struct ConfigState<'a> {
    loaded: bool,
    main_file: String,
    accounts_file: String,
    routes: usize,
    accounts: usize,
    upstream: &'a str,
}

#[derive(Serialize)]
struct ProviderState<'a> {
    name: &'a str,
    issuer: &'a str,
    enabled: bool,
    #[serde(flatten)]
    keys: crate::auth::jwks::KeyStatus,
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answers one admin request.
pub fn handle<B>(app: &App, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            br#"{"error":"method_not_allowed"}"#.to_vec(),
        );
    }
    match req.uri().path() {
        "/healthz" => json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
        "/readyz" => readyz(app),
        "/.well-known/jwks.json" => {
            let snap = app.snapshot();
            let keys: Vec<&serde_json::Value> = snap
                .config
                .assertion
                .iter()
                .map(|a| &a.key.public_jwk)
                .collect();
            let mut r = json(
                StatusCode::OK,
                serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap_or_default(),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r
        }
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(app.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => json(StatusCode::NOT_FOUND, br#"{"error":"not_found"}"#.to_vec()),
    }
}

fn readyz(app: &App) -> Response<Full<Bytes>> {
    let snap = app.snapshot();
    let cfg = &snap.config;
    let ready = snap.ready();
    let upstream = format!("{}://{}", cfg.upstream.scheme, cfg.upstream.authority);
    let body = Readiness {
        ready,
        config: ConfigState {
            loaded: true,
            main_file: cfg.main_file.display().to_string(),
            accounts_file: cfg.accounts_file.display().to_string(),
            routes: cfg.routes.len(),
            accounts: cfg.accounts.len(),
            upstream: &upstream,
        },
        providers: cfg
            .providers
            .iter()
            .map(|p| ProviderState {
                name: &p.name,
                issuer: &p.issuer,
                enabled: p.enabled,
                keys: snap
                    .verifier
                    .provider(&p.name)
                    .map(|v| v.keys.status())
                    .unwrap_or_default(),
            })
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// `GET /healthz` on `addr` with a 2 s budget: `Ok` on 200 (`tollgate healthcheck`).
pub fn probe_health(addr: std::net::SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let timeout = Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    match head.get(9..12) {
        Some(b"200") => Ok(()),
        _ => Err(format!("answered {:?}", String::from_utf8_lossy(&head))),
    }
}
