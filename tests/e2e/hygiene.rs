//! Client-supplied identity headers never reach the upstream, whatever their spelling, on
//! every path; hop-by-hop headers and those named in Connection are removed.

use crate::support::*;

const SPOOFS: &[(&str, &str)] = &[
    ("x-auth-account", "admin"),
    ("X-Auth-Roles", "admin"),
    ("x_auth_email", "root@example.com"),
    ("X_AUTH-Permissions", "*"),
    ("x-AUTH_subject", "root"),
];

fn assert_clean(seen: &Seen) {
    for name in seen.header_names() {
        let norm = name.to_ascii_lowercase().replace('_', "-");
        assert!(!norm.starts_with("x-auth-"), "{name} reached the upstream");
    }
}

async fn stripped_total(gate: &Gate) -> u64 {
    let m = get(&gate.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&m.body).into_owned();
    text.lines()
        .find(|l| l.starts_with("tollgate_identity_headers_stripped_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn identity_headers_are_stripped_on_public_routes() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let got = get_with(&gate.url("/public/x"), SPOOFS).await;
    assert_clean(&got.seen());
    assert_eq!(stripped_total(&gate).await, SPOOFS.len() as u64);
}

#[tokio::test]
async fn identity_headers_are_stripped_on_denied_and_preflight_requests() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(
        &echo.url(),
        &format!("unmatched = \"deny\"\n{ROUTES}"),
    ))
    .await;
    // 401 (protected), 403 (unmatched deny): nothing forwarded, but the strip step ran.
    assert_eq!(get_with(&gate.url("/private/x"), SPOOFS).await.status, 401);
    assert_eq!(get_with(&gate.url("/nowhere"), SPOOFS).await.status, 403);
    assert_eq!(stripped_total(&gate).await, 2 * SPOOFS.len() as u64);
    // CORS preflight on a public route: forwarded, stripped.
    let mut b = http::Request::options(gate.url("/public/x"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST");
    for (k, v) in SPOOFS {
        b = b.header(*k, *v);
    }
    let got = send(b.body(empty()).unwrap()).await;
    let seen = got.seen();
    assert_eq!(seen.0["method"], "OPTIONS");
    assert_clean(&seen);
}

#[tokio::test]
async fn upstream_404_passes_through_and_headers_were_stripped() {
    // The upstream answers 404 for an unknown path: still no identity header reached it.
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let got = get_with(&gate.url("/public/anything"), SPOOFS).await;
    assert_clean(&got.seen());
}

#[tokio::test]
async fn connection_cannot_remove_or_smuggle_headers() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    // A raw HTTP/1.1 request so that hop-by-hop headers are sent exactly as written.
    let req = "GET /public/x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Custom, x-request-id, close\r\n\
               X-Custom: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
               Upgrade: h2c\r\nX-Keep: yes\r\nX_Auth_Account: admin\r\n\r\n";
    let resp = raw(gate.addr, req.as_bytes()).await;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON object is the body's first {...}.
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    let seen = Seen(serde_json::from_str(&body[start..=end]).unwrap());
    let names = seen.header_names();
    for gone in [
        "x-custom",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
        "x_auth_account",
    ] {
        assert!(
            !names.contains(&gone.to_string()),
            "{gone} was forwarded: {names:?}"
        );
    }
    assert_eq!(seen.header("x-keep").as_deref(), Some("yes"));
    // x-request-id named in Connection was removed, then ours was set.
    assert_eq!(seen.header("x-request-id").map(|v| v.len()), Some(32));
}
