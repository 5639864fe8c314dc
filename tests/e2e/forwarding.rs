//! Public routes are forwarded with the canonical path, the query unchanged, Host kept,
//! X-Forwarded-* set and a request id.

use crate::support::*;

#[tokio::test]
async fn public_route_is_forwarded_with_canonical_path_and_unchanged_query() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let got = get(&gate.url("/public//a/./b/../c/%7Euser?x=%2F..&y=1&y=2")).await;
    let seen = got.seen();
    assert_eq!(seen.path(), "/public/a/c/~user");
    assert_eq!(seen.query(), Some("x=%2F..&y=1&y=2"));
    assert_eq!(seen.0["method"], "GET");
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_public_prefix() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    // Canonicalized to /private/x before matching, so the private rule applies.
    for p in [
        "/public/../private/x",
        "/public/%2e%2e/private/x",
        "/public/.%2E/private/x",
    ] {
        let got = get(&gate.url(p)).await;
        assert_eq!(got.status, 401, "{p}");
    }
}

#[tokio::test]
async fn host_is_preserved_and_forwarded_headers_are_set() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let got = get_with(
        &gate.url("/public/x"),
        &[
            ("host", "api.example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example.com"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ],
    )
    .await;
    let seen = got.seen();
    assert_eq!(seen.header("host").as_deref(), Some("api.example.com"));
    // The test client is not a trusted proxy: its claims are replaced.
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-real-ip"), None);
    assert_eq!(seen.0["version"], "HTTP/1.1");
}

#[tokio::test]
async fn trusted_proxies_may_set_forwarded_headers() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[headers]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;
    let got = get_with(
        &gate.url("/public/x"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "outer.example.com"),
        ],
    )
    .await;
    let seen = got.seen();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("outer.example.com")
    );
}

#[tokio::test]
async fn preserve_host_false_sends_the_upstream_authority() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[forward]\npreserve_host = false\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;
    let got = get_with(&gate.url("/public/x"), &[("host", "api.example.com")]).await;
    assert_eq!(got.seen().header("host"), Some(echo.addr.to_string()));
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_generated_otherwise() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let got = get_with(&gate.url("/public/x"), &[("x-request-id", "abc-123")]).await;
    assert_eq!(got.header("x-request-id"), Some("abc-123"));
    assert_eq!(
        got.seen().header("x-request-id").as_deref(),
        Some("abc-123")
    );

    let got = get_with(&gate.url("/public/x"), &[("x-request-id", "bad id\"")]).await;
    let generated = got.header("x-request-id").unwrap().to_string();
    assert_eq!(generated.len(), 32);
    assert_eq!(got.seen().header("x-request-id"), Some(generated.clone()));

    let other = get(&gate.url("/public/x")).await;
    assert_ne!(other.header("x-request-id").unwrap(), generated);
}

#[tokio::test]
async fn bearer_token_is_not_forwarded_from_public_routes() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let got = get_with(
        &gate.url("/public/x"),
        &[("authorization", "Bearer abc.def.ghi")],
    )
    .await;
    assert_eq!(got.seen().header("authorization"), None);
    let got = get_with(&gate.url("/public/x"), &[("authorization", "Basic dTpw")]).await;
    assert_eq!(
        got.seen().header("authorization").as_deref(),
        Some("Basic dTpw")
    );
}

#[tokio::test]
async fn optional_route_without_token_is_forwarded_without_identity() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let got = get_with(&gate.url("/maybe/x"), &[("x-auth-account", "admin")]).await;
    let seen = got.seen();
    assert_eq!(seen.path(), "/maybe/x");
    assert!(seen.header_names().iter().all(|n| !n.starts_with("x-auth")));
    // With a token it must be verified; verification is not built yet, so it is refused.
    let got = get_with(
        &gate.url("/maybe/x"),
        &[("authorization", "Bearer abc.def.ghi")],
    )
    .await;
    assert_eq!(got.status, 401);
}

#[tokio::test]
async fn route_methods_and_order_decide() {
    let echo = Echo::start().await;
    let routes = r#"
[[routes]]
methods = ["GET", "HEAD"]
path = "/items/*"
auth = "public"

[[routes]]
path = "/items/**"
"#;
    let gate = Gate::start(&config(&echo.url(), routes)).await;
    assert_eq!(get(&gate.url("/items/1")).await.status, 200);
    let post = send(
        http::Request::post(gate.url("/items/1"))
            .body(full("x"))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, 401);
    // `*` is exactly one segment: the second rule applies.
    assert_eq!(get(&gate.url("/items/1/2")).await.status, 401);
}

#[tokio::test]
async fn case_insensitive_paths_match_but_forward_the_original_case() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        "[paths]\ncase_insensitive_paths = true\n[[routes]]\npath = \"/Admin/**\"\n[[routes]]\npath = \"/**\"\nauth = \"public\"\n",
    );
    let gate = Gate::start(&main).await;
    assert_eq!(get(&gate.url("/ADMIN/x")).await.status, 401);
    assert_eq!(get(&gate.url("/admin/x")).await.status, 401);
    let got = get(&gate.url("/Other/X")).await;
    assert_eq!(got.seen().path(), "/Other/X");
    // Case-sensitive by default: /ADMIN is not /admin.
    let main = config(
        &echo.url(),
        "[[routes]]\npath = \"/admin/**\"\n[[routes]]\npath = \"/**\"\nauth = \"public\"\n",
    );
    let gate = Gate::start(&main).await;
    assert_eq!(get(&gate.url("/admin/x")).await.status, 401);
    assert_eq!(get(&gate.url("/ADMIN/x")).await.status, 200);
}

/// The upstream receives exactly the canonical path that was matched, for arbitrary paths.
#[tokio::test]
async fn the_upstream_receives_exactly_the_authorized_canonical_path() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let echo = Echo::start().await;
    let gate = Gate::start(&config(
        &echo.url(),
        "[[routes]]\npath = \"/**\"\nauth = \"public\"\n",
    ))
    .await;
    let strategy = "/([a-zA-Z0-9._~!$&'()*+,=:@-]|%[0-9a-fA-F]{2}|/|\\.\\.?/){0,24}";
    let mut runner = TestRunner::deterministic();
    for _ in 0..200 {
        let raw = strategy.new_tree(&mut runner).unwrap().current();
        let want = tollgate::authz::path::canonicalize(&raw, false);
        let resp = raw_request(gate.addr, &raw).await;
        match want {
            Ok(c) => {
                assert!(
                    resp.starts_with("HTTP/1.1 200"),
                    "{raw}: {}",
                    &resp[..resp.len().min(120)]
                );
                let body = &resp[resp.find('{').unwrap()..=resp.rfind('}').unwrap()];
                let seen: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(seen["path"], c.as_str(), "{raw}");
            }
            Err(_) => assert!(
                resp.starts_with("HTTP/1.1 400"),
                "{raw}: {}",
                &resp[..resp.len().min(120)]
            ),
        }
    }
}

async fn raw_request(addr: std::net::SocketAddr, path: &str) -> String {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn a_request_without_host_reaches_the_upstream_with_its_authority() {
    // HTTP/1.0 allows no Host; the upstream request still needs one.
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let out = raw(gate.addr, b"GET /public/h10 HTTP/1.0\r\n\r\n").await;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let seen = Seen(serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}")));
    assert_eq!(seen.path(), "/public/h10");
    assert_eq!(seen.header_all("host"), [echo.addr.to_string()]);
}
