//! TLS on the public listener (HTTP/1.1 and h2 by ALPN), h2c with prior knowledge, and an
//! https:// upstream trusted through `forward.ca_file`.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

fn tls_client(
    pki: &TestPki,
    h2: bool,
) -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TestBody,
> {
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(pki.client_config())
        .https_only();
    let connector = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    let mut builder = Client::builder(TokioExecutor::new());
    if h2 {
        builder.http2_only(true);
    }
    builder.build(connector)
}

#[tokio::test]
async fn tls_listener_serves_http1_and_h2() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = pki.write(dir.path());
    let echo = Echo::start().await;
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let gate = Gate::start(&config(&echo.url(), &format!("{tls}{ROUTES}"))).await;
    let url = format!("https://localhost:{}/public/x", gate.addr.port());

    for h2 in [false, true] {
        let resp = tls_client(&pki, h2)
            .request(
                http::Request::get(&url)
                    .header("x-auth-account", "admin")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            resp.version(),
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        let got = collect(resp).await;
        let seen = got.seen();
        assert_eq!(seen.path(), "/public/x");
        assert_eq!(
            seen.0["version"], "HTTP/1.1",
            "upstream is spoken to in HTTP/1.1"
        );
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(
            seen.header("host"),
            Some(format!("localhost:{}", gate.addr.port()))
        );
        assert_eq!(seen.header("x-auth-account"), None);
    }
}

/// The framing watcher sits on the decrypted stream: ambiguous framing inside TLS is
/// refused the same way as in clear text.
#[tokio::test]
async fn ambiguous_framing_inside_tls_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = pki.write(dir.path());
    let echo = Echo::start().await;
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let gate = Gate::start(&config(&echo.url(), &format!("{tls}{ROUTES}"))).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config()));
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(
        b"GET /public/first HTTP/1.1\r\nHost: h\r\n\r\n\
          POST /public/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n\
          GET /public/smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the connection was not closed");
    // A close without TLS close_notify is fine here; what was read is what counts.
    let _ = read;
    let out = String::from_utf8_lossy(&out);
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| out.get(i + 9..i + 12))
        .collect();
    assert_eq!(statuses, ["200", "400"], "{out}");
    assert!(!out.contains("smuggled"), "{out}");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let client: Client<_, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = client
        .request(
            http::Request::get(gate.url("/public/h2"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = collect(resp).await;
    assert_eq!(got.seen().path(), "/public/h2");
    // Streaming works over h2 too.
    let resp = client
        .request(
            http::Request::get(gate.url("/public/../stream/down?bytes=1000000"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "canonical /stream/down is not public here"
    );
    let _ = resp.into_body().collect().await;
}

#[tokio::test]
async fn https_upstream_is_verified_with_the_configured_ca() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let echo = Echo::start_tls(Some(pki.server_config(&[b"http/1.1"]))).await;
    let upstream = format!("https://localhost:{}", echo.addr.port());

    let fwd = format!("[forward]\nca_file = {:?}\n", ca.display().to_string());
    let gate = Gate::start(&config(&upstream, &format!("{fwd}{ROUTES}"))).await;
    let got = get(&gate.url("/public/tls")).await;
    assert_eq!(got.seen().path(), "/public/tls");

    // Without the CA the upstream's certificate is not trusted: 502.
    let gate = Gate::start(&config(&upstream, ROUTES)).await;
    let got = get(&gate.url("/public/tls")).await;
    assert_eq!(got.status, 502);
    let _ = Arc::new(());
}
