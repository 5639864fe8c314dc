//! Tollgate's own responses (design §7): JSON bodies, statuses, challenges.

use crate::support::*;

fn assert_error_body(got: &Got, error: &str) {
    assert_eq!(got.header("content-type"), Some("application/json"));
    let v = got.json();
    assert_eq!(v["error"], error, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(v["request_id"].as_str(), got.header("x-request-id"));
}

#[tokio::test]
async fn protected_routes_answer_401_with_a_bearer_challenge() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    for p in ["/private/x", "/unmatched"] {
        let got = get(&gate.url(p)).await;
        assert_eq!(got.status, 401, "{p}");
        assert_eq!(
            got.header("www-authenticate"),
            Some("Bearer realm=\"tollgate\"")
        );
        assert_error_body(&got, "unauthorized");
    }
    let got = get_with(
        &gate.url("/private/x"),
        &[("authorization", "Bearer a b c")],
    )
    .await;
    assert_eq!(got.status, 401);
    assert!(
        got.header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let dup = get_with(
        &gate.url("/private/x"),
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    )
    .await;
    assert_eq!(dup.status, 400);
    assert_error_body(&dup, "invalid_request");
}

#[tokio::test]
async fn bad_paths_answer_400() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    for p in [
        "/public/a%2Fb",
        "/public/a%5Cb",
        "/public/a%00",
        "/public/%zz",
        "/public/../../etc/passwd",
        "/public/a;b",
    ] {
        let got = get(&gate.url(p)).await;
        assert_eq!(got.status, 400, "{p}");
        assert_error_body(&got, "invalid_request");
        assert!(
            !String::from_utf8_lossy(&got.body).contains(p),
            "path echoed for {p}"
        );
    }
}

#[tokio::test]
async fn semicolons_can_be_allowed_and_are_matched_without_parameters() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[paths]\nallow_semicolons = true\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;
    let got = get(&gate.url("/public;jsessionid=1/x")).await;
    assert_eq!(got.seen().path(), "/public;jsessionid=1/x");
    assert_eq!(get(&gate.url("/private;x/y")).await.status, 401);
    assert_eq!(get(&gate.url("/public/..;/private/x")).await.status, 400);
}

#[tokio::test]
async fn unmatched_deny_answers_403() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(
        &echo.url(),
        &format!("unmatched = \"deny\"\n{ROUTES}"),
    ))
    .await;
    let got = get(&gate.url("/elsewhere")).await;
    assert_eq!(got.status, 403);
    assert_error_body(&got, "access_denied");
}

#[tokio::test]
async fn unreachable_upstream_answers_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gate = Gate::start(&config(&format!("http://127.0.0.1:{port}"), ROUTES)).await;
    let got = get(&gate.url("/public/x")).await;
    assert_eq!(got.status, 502);
    assert_error_body(&got, "upstream_unavailable");
}

#[tokio::test]
async fn slow_upstream_answers_504() {
    // The echo server holds /hold until released, which this test never does.
    let echo = Echo::start().await;
    let routes = "[[routes]]\npath = \"/hold\"\nauth = \"public\"\n";
    let main = config(
        &echo.url(),
        &format!("[forward]\ntimeout = \"300ms\"\n{routes}"),
    );
    let gate = Gate::start(&main).await;
    let got = get(&gate.url("/hold")).await;
    assert_eq!(got.status, 504);
    assert_error_body(&got, "upstream_timeout");
    let metrics =
        String::from_utf8_lossy(&get(&gate.admin_url("/metrics")).await.body).into_owned();
    assert!(
        metrics.contains("tollgate_upstream_errors_total{kind=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("tollgate_requests_total{decision=\"error\",reason=\"upstream_timeout\"} 1")
    );
}

#[tokio::test]
async fn asterisk_and_absolute_form_targets() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let resp = raw(
        gate.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // Absolute form: the path decides the route, not the authority in the target.
    let resp = raw(
        gate.addr,
        b"GET http://evil.example.com/private/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
}
