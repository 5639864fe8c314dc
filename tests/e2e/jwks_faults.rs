//! Key-server faults a real IdP cannot produce on demand, from a small in-test server:
//! hanging, 500, garbage, an oversized body, and a discovery document naming another issuer.
//! In every case Tollgate stays up, answers 503 (keys unavailable), and says why in /readyz.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::idp::{AUDIENCE, assemble, now};
use crate::support::*;

#[derive(Clone, Copy)]
enum Fault {
    Hang,
    Status500,
    Garbage,
    Huge,
    OtherIssuer,
}

/// Serves discovery (naming itself, or another issuer) and a faulty JWKS.
async fn faulty_idp(fault: Fault) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let me = format!("http://{addr}");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let me = me.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(reply(fault, &me, req.uri().path()).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn reply(fault: Fault, me: &str, path: &str) -> Response<TestBody> {
    if path == "/.well-known/openid-configuration" {
        let issuer = match fault {
            Fault::OtherIssuer => "https://someone-else.example.com".to_string(),
            _ => me.to_string(),
        };
        let doc = json!({"issuer": issuer, "jwks_uri": format!("{me}/jwks")});
        return Response::new(full(doc.to_string()));
    }
    match fault {
        Fault::Hang => {
            std::future::pending::<()>().await;
            Response::new(empty())
        }
        Fault::Status500 => {
            let mut r = Response::new(full("oops"));
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
        Fault::Garbage => Response::new(full("\u{0}\u{1}not json at all{{{{")),
        Fault::Huge => {
            // 5 MiB of a syntactically plausible key set.
            let mut body = String::from("{\"keys\":[");
            body.push_str(
                &"{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"},".repeat(5 * 1024 * 1024 / 40),
            );
            body.push_str("{}]}");
            Response::new(Full::new(Bytes::from(body)).boxed())
        }
        Fault::OtherIssuer => Response::new(full(json!({"keys": []}).to_string())),
    }
}

use http_body_util::Full;

async fn check(fault: Fault, expect_error: &str) {
    let idp = faulty_idp(fault).await;
    let issuer = format!("http://{idp}");
    let echo = Echo::start().await;
    let provider = format!(
        "[[providers]]\nname = \"flaky\"\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\nmin_refetch_interval = \"0s\"\nkid_wait = \"500ms\"\n"
    );
    let gate = Gate::start(&config(
        &echo.url(),
        &format!("{provider}[[routes]]\npath = \"/api/**\"\n"),
    ))
    .await;
    let token = assemble(
        &json!({"alg": "RS256", "kid": "k1"}),
        &json!({"iss": issuer, "aud": AUDIENCE, "sub": "s", "exp": now() + 600}),
        b"sig",
    );
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        get_with(
            &gate.url("/api/x"),
            &[("authorization", &format!("Bearer {token}"))],
        ),
    )
    .await
    .expect("request hung");
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("retry-after"), Some("5"));
    // Health is unaffected; readiness says what is wrong (once the first attempt ended).
    assert_eq!(get(&gate.admin_url("/healthz")).await.status, 200);
    if !expect_error.is_empty() {
        let start = std::time::Instant::now();
        loop {
            let r = get(&gate.admin_url("/readyz")).await;
            assert_eq!(r.status, 503);
            let err = r.json()["providers"][0]["last_error"]
                .as_str()
                .map(str::to_string);
            if let Some(e) = err {
                assert!(e.contains(expect_error), "{e}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no error reported"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let m = String::from_utf8_lossy(&get(&gate.admin_url("/metrics")).await.body).into_owned();
    assert!(
        m.contains("tollgate_requests_total{decision=\"error\",reason=\"keys_unavailable\"} 1"),
        "{m}"
    );
    let _ = Arc::new(());
}

#[tokio::test]
async fn jwks_that_hangs_gives_503_after_kid_wait() {
    check(Fault::Hang, "").await;
}

#[tokio::test]
async fn jwks_500_gives_503() {
    check(Fault::Status500, "HTTP 500").await;
}

#[tokio::test]
async fn jwks_garbage_gives_503() {
    check(Fault::Garbage, "not a JSON object").await;
}

#[tokio::test]
async fn jwks_over_the_size_cap_gives_503() {
    check(Fault::Huge, "exceeded").await;
}

#[tokio::test]
async fn discovery_naming_another_issuer_gives_503() {
    check(Fault::OtherIssuer, "different issuer").await;
}
