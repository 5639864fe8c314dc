//! The admin listener: health, readiness with per-provider state, Prometheus metrics.

use crate::support::*;

#[tokio::test]
async fn healthz_readyz_and_metrics() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let h = get(&gate.admin_url("/healthz")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    let r = get(&gate.admin_url("/readyz")).await;
    assert_eq!(
        r.status, 200,
        "no providers: ready once the config is loaded"
    );
    assert_eq!(r.json()["config"]["routes"], 3);

    let _ = get(&gate.url("/public/x")).await;
    let _ = get(&gate.url("/private/x")).await;
    let m = get(&gate.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&m.body).into_owned();
    assert!(
        text.contains("tollgate_requests_total{decision=\"allow\",reason=\"public\"} 1"),
        "{text}"
    );
    assert!(text.contains("tollgate_requests_total{decision=\"deny\",reason=\"missing_token\"} 1"));
    assert!(text.contains("tollgate_request_duration_seconds_count 2"));
    assert!(text.contains(&format!(
        "tollgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert_eq!(get(&gate.admin_url("/nope")).await.status, 404);
    // The admin listener is not the proxy: nothing is forwarded from it.
    assert_eq!(get(&gate.admin_url("/public/x")).await.status, 404);
}

#[tokio::test]
async fn readyz_reports_providers_without_keys_as_not_ready() {
    let echo = Echo::start().await;
    let providers = r#"
[[providers]]
name = "corp"
issuer = "https://login.example.com"
audiences = ["api"]
"#;
    let gate = Gate::start(&config(&echo.url(), &format!("{providers}{ROUTES}"))).await;
    let r = get(&gate.admin_url("/readyz")).await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["providers"][0]["name"], "corp");
    assert_eq!(v["providers"][0]["keys"], 0);
}
