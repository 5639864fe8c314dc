//! `tollgate dev`: everything for a first look, with no files. An embedded development
//! issuer (its own ES256 key, discovery, JWKS and a `/token` minting endpoint, on loopback),
//! an echo upstream, and Tollgate running the built-in sample config (`config/dev/`), then
//! ready-to-paste `curl` commands with freshly minted tokens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::assertion::SigningKey;

const MAIN: &str = include_str!("../config/dev/tollgate.toml");
const ACCOUNTS: &str = include_str!("../config/dev/accounts.toml");
/// Placeholders in `config/dev/tollgate.toml`, replaced by the real loopback addresses.
const ISSUER_PLACEHOLDER: &str = "http://127.0.0.1:5556";
const UPSTREAM_PLACEHOLDER: &str = "http://127.0.0.1:9000";
const AUDIENCE: &str = "api://tollgate-dev";

/// Why dev mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Key(String),
    #[error("built-in configuration: {0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("{0}")]
    App(#[from] crate::app::AppError),
    #[error("{0}")]
    Start(#[from] crate::server::StartError),
    #[error("the embedded issuer's keys were not loaded in time")]
    NotReady,
}

/// Where dev mode listens (defaults from `config/dev/tollgate.toml`).
#[derive(Debug, Clone, Default)]
pub struct DevOptions {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

type DevBody = Full<Bytes>;

fn json_response(status: StatusCode, v: &Value) -> Response<DevBody> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<DevBody>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// The development issuer's token: ES256, one hour.
fn mint(key: &SigningKey, issuer: &str, sub: &str, scope: Option<&str>, extra: Value) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let mut claims =
        json!({"iss": issuer, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 3600});
    if let Some(c) = claims.as_object_mut() {
        if let Some(s) = scope {
            c.insert("scope".into(), json!(s));
        }
        if let Some(e) = extra.as_object() {
            c.extend(e.clone());
        }
    }
    key.sign(&claims).unwrap_or_default()
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Runs dev mode until SIGINT/SIGTERM.
pub async fn run(opts: DevOptions) -> Result<(), DevError> {
    // Handlers first: Ctrl-C during start-up must still stop everything cleanly.
    let (mut term, mut int) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
    );
    crate::app::install_crypto_provider();
    let key = Arc::new(SigningKey::generate_es256().map_err(DevError::Key)?);

    // The development issuer.
    let issuer_listener = TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", issuer_listener.local_addr()?);
    let (k, iss) = (key.clone(), issuer.clone());
    serve(issuer_listener, move |req: Request<Incoming>| {
        let (k, iss) = (k.clone(), iss.clone());
        async move {
            match req.uri().path() {
                "/.well-known/openid-configuration" => json_response(
                    StatusCode::OK,
                    &json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks"),
                            "token_endpoint": format!("{iss}/token"),
                            "id_token_signing_alg_values_supported": ["ES256"]}),
                ),
                "/jwks" => json_response(StatusCode::OK, &json!({"keys": [k.public_jwk]})),
                "/token" => {
                    let q = req.uri().query();
                    let sub = query_param(q, "sub").unwrap_or("alice");
                    let scope =
                        query_param(q, "scope").map(|s| s.replace('+', " ").replace("%20", " "));
                    let token = mint(&k, &iss, sub, scope.as_deref(), json!({}));
                    json_response(
                        StatusCode::OK,
                        &json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
                    )
                }
                _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
            }
        }
    });

    // The echo upstream.
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = format!("http://{}", upstream_listener.local_addr()?);
    serve(upstream_listener, |req: Request<Incoming>| async move {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        let (method, path, query) = (
            req.method().to_string(),
            req.uri().path().to_string(),
            req.uri().query().map(str::to_string),
        );
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        json_response(
            StatusCode::OK,
            &json!({"upstream": "tollgate dev echo", "method": method, "path": path,
                    "query": query, "body_bytes": body, "headers": headers}),
        )
    });

    // Tollgate on the built-in config.
    let mut main = MAIN
        .replace(ISSUER_PLACEHOLDER, &issuer)
        .replace(UPSTREAM_PLACEHOLDER, &upstream);
    if let Some(l) = opts.listen {
        main = main.replace("listen = \"127.0.0.1:8080\"", &format!("listen = \"{l}\""));
    }
    if let Some(a) = opts.admin {
        main = main.replace(
            "admin_listen = \"127.0.0.1:9901\"",
            &format!("admin_listen = \"{a}\""),
        );
    }
    let cfg = crate::config::load_from_str(Path::new("config/dev/tollgate.toml"), &main, ACCOUNTS)?;
    let app = crate::app::App::new(cfg)?;
    let running = crate::server::start(app.clone()).await?;
    let started = std::time::Instant::now();
    while !app.ready() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(DevError::NotReady);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let proxy = format!("http://{}", running.public_addr);
    let alice = mint(&key, &issuer, "alice", Some("read:items"), json!({}));
    let bob = mint(&key, &issuer, "bob", None, json!({}));
    let ci = mint(
        &key,
        &issuer,
        "repo:acme/api:ref:refs/heads/main",
        None,
        json!({"repository": "acme/api"}),
    );
    println!("Tollgate dev is running (built-in config: config/dev/).");
    println!("  proxy     {proxy}");
    println!(
        "  admin     http://{}  (/healthz /readyz /metrics)",
        running.admin_addr
    );
    println!("  issuer    {issuer}  (more tokens: curl '{issuer}/token?sub=bob&scope=read:items')");
    println!("  upstream  {upstream}  (echoes the request it receives)");
    println!();
    println!(
        "# expect 200: alice (engineer) reads with scope read:items; see the X-Auth-* headers in the echo"
    );
    println!("curl -i -H 'Authorization: Bearer {alice}' {proxy}/items/1");
    println!();
    println!("# expect 403: bob (viewer) lacks items:write (insufficient_scope)");
    println!("curl -i -X POST -H 'Authorization: Bearer {bob}' {proxy}/items/1");
    println!();
    println!("# expect 401: a token Tollgate cannot verify (invalid_token)");
    println!("curl -i -H 'Authorization: Bearer not.a.token' {proxy}/items/1");
    println!();
    println!(
        "# expect 200: a CI workload (repository acme/api) mapped to the ci-bot service account"
    );
    println!("curl -i -X POST -H 'Authorization: Bearer {ci}' {proxy}/deploy/now");
    println!();
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    running.shutdown();
    running.wait().await;
    Ok(())
}
