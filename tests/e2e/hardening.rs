//! Adversarial HTTP-level cases on real sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

#[tokio::test]
async fn odd_host_headers_do_not_change_the_route() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    for host in [
        "public",
        "localhost/public",
        "h:1/../public",
        "[::1]",
        "xn--e1a",
        "a b",
    ] {
        let req = format!("GET /private/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = raw(gate.addr, req.as_bytes()).await;
        assert!(
            resp.starts_with("HTTP/1.1 401") || resp.starts_with("HTTP/1.1 400"),
            "{host}: {resp}"
        );
    }
    // Absolute form with a "public" authority, a private path: still private.
    let resp = raw(
        gate.addr,
        b"GET http://public/private/x HTTP/1.1\r\nHost: public\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let resp = raw(
        gate.addr,
        b"GET http://private/public/x HTTP/1.1\r\nHost: private\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn an_upstream_reset_mid_response_fails_cleanly_and_tollgate_keeps_serving() {
    // An upstream that promises 1 MiB and hangs up after a few bytes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\npartial")
                    .await;
                drop(s);
            });
        }
    });
    let gate = Gate::start(&config(&format!("http://{addr}"), ROUTES)).await;
    for _ in 0..3 {
        let resp = open(&gate.url("/public/x")).await;
        assert_eq!(resp.status(), 200);
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await;
        assert!(
            body.is_err(),
            "a truncated body must surface as an error, not as success"
        );
    }
    // Tollgate itself is fine.
    assert_eq!(get(&gate.admin_url("/healthz")).await.status, 200);
    let ok = Echo::start().await;
    let gate2 = Gate::start(&config(&ok.url(), ROUTES)).await;
    assert_eq!(get(&gate2.url("/public/x")).await.status, 200);
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn two_thousand_garbage_authorization_values_never_5xx_and_memory_stays_flat() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let echo = Echo::start().await;
    let providers = "[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\nmin_refetch_interval = \"1h\"\nkid_wait = \"10ms\"\n";
    let gate = GateProcess::spawn(&config(&echo.url(), &format!("{providers}{ROUTES}")), "");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let nested = format!("{}{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    let mut values: Vec<Vec<u8>> = Vec::new();
    for i in 0..2000 {
        let v = match i % 6 {
            0 => noise(&mut seed, 1 + i % 300),
            1 => format!(
                "Bearer {}",
                URL_SAFE_NO_PAD.encode(noise(&mut seed, 12_000))
            )
            .into_bytes(),
            2 => format!(
                "Bearer {}.{}.{}",
                URL_SAFE_NO_PAD.encode(nested.as_bytes()),
                URL_SAFE_NO_PAD.encode(b"{}"),
                "c2ln"
            )
            .into_bytes(),
            3 => {
                let mut v = b"Bearer ".to_vec();
                v.extend(noise(&mut seed, 64).iter().map(|b| b | 0x80));
                v
            }
            4 => format!(
                "Bearer {}.{}.{}",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"x"}"#),
                URL_SAFE_NO_PAD.encode(
                    format!(
                        r#"{{"iss":"https://idp.example.com","aud":"api","sub":"s","exp":{}}}"#,
                        4_000_000_000u64
                    )
                    .as_bytes()
                ),
                URL_SAFE_NO_PAD.encode(noise(&mut seed, 256))
            )
            .into_bytes(),
            _ => format!("bEaReR  {}", String::from_utf8_lossy(&noise(&mut seed, 40))).into_bytes(),
        };
        values.push(v);
    }
    let (rss_before, _) = gate.memory_kib();
    let mut statuses = std::collections::BTreeMap::new();
    let mut pending = values.into_iter();
    loop {
        let chunk: Vec<Vec<u8>> = pending.by_ref().take(100).collect();
        if chunk.is_empty() {
            break;
        }
        let mut set = tokio::task::JoinSet::new();
        for v in chunk {
            let addr = gate.addr;
            set.spawn(async move {
                let mut req =
                    b"GET /private/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nAuthorization: "
                        .to_vec();
                req.extend(
                    v.iter()
                        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
                );
                req.extend(b"\r\n\r\n");
                let resp = tokio::time::timeout(Duration::from_secs(20), raw(addr, &req))
                    .await
                    .expect("hung");
                resp.get(9..12).unwrap_or("EOF").to_string()
            });
        }
        while let Some(s) = set.join_next().await {
            *statuses.entry(s.unwrap()).or_insert(0) += 1;
        }
    }
    for (status, n) in &statuses {
        assert!(
            !status.starts_with('5') || status == "503",
            "{n} × {status}: {statuses:?}"
        );
        assert_ne!(
            status, "EOF",
            "a connection was dropped without an answer: {statuses:?}"
        );
    }
    let (rss_after, _) = gate.memory_kib();
    assert!(
        rss_after < rss_before + 20 * 1024,
        "RSS {rss_before} → {rss_after} KiB"
    );
    assert_eq!(
        get(&gate.url("/public/x")).await.status,
        200,
        "still serving"
    );
    eprintln!("statuses {statuses:?}, RSS {rss_before} → {rss_after} KiB");
}

#[tokio::test]
async fn h2_rapid_reset_floods_do_not_grow_memory_or_stop_other_clients() {
    let echo = Echo::start().await;
    let gate = GateProcess::spawn(&config(&echo.url(), ROUTES), "");
    let addr = gate.addr;
    let victim: hyper_util::client::legacy::Client<_, TestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let victim_get = || async {
        victim
            .request(
                http::Request::get(format!("http://{addr}/public/x"))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .map(|r| r.status().as_u16())
    };
    assert_eq!(victim_get().await.unwrap(), 200);
    let (rss_before, _) = gate.memory_kib();

    // Attackers: open streams and reset them at once, over several connections.
    let mut resets = 0usize;
    for _ in 0..10 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let Ok((mut h2c, conn)) = h2::client::handshake(tcp).await else {
            continue;
        };
        tokio::spawn(conn);
        for _ in 0..1000 {
            h2c = match h2c.ready().await {
                Ok(c) => c,
                Err(_) => break, // the server sent GOAWAY: the mitigation at work
            };
            let req = http::Request::get(format!("http://{addr}/public/x"))
                .body(())
                .unwrap();
            let Ok((_resp, mut stream)) = h2c.send_request(req, false) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            resets += 1;
        }
        // Other clients are still served between and after the floods.
        assert_eq!(victim_get().await.unwrap(), 200);
    }
    assert!(resets >= 100, "only {resets} resets were sent");
    let (rss_after, _) = gate.memory_kib();
    assert!(
        rss_after < rss_before + 20 * 1024,
        "RSS {rss_before} → {rss_after} KiB after {resets} resets"
    );
    eprintln!("{resets} resets, RSS {rss_before} → {rss_after} KiB");
}

#[tokio::test]
async fn a_header_drip_is_cut_off_at_the_header_timeout() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[limits]\nheader_read_timeout = \"400ms\"\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;
    let mut s = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let head = b"GET /public/x HTTP/1.1\r\nHost: h\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = std::time::Instant::now();
    let mut cut = false;
    // The attack: one byte every 50 ms; the whole head would take over 3 s.
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        cut || !text.contains("200 OK"),
        "the drip was served: {text}"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "not cut off");
}

/// Writes `bytes`, then reads until the server closes the connection (panics if it does not
/// within 10 s).
async fn until_closed(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the connection was not closed")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    // Each head is followed by a request an ambiguity could smuggle: it is never answered.
    let smuggled = "GET /public/smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    for head in [
        "Content-Length: 50\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "transfer-encoding: gzip, chunked\r\ncontent-length: 0",
        "Transfer-Encoding: chunked\r\nContent-Length: not-a-number",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
    ] {
        let req =
            format!("POST /public/x HTTP/1.1\r\nHost: h\r\n{head}\r\n\r\n0\r\n\r\n{smuggled}");
        let resp = until_closed(gate.addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{head}: {resp}");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{head}: {resp}");
        assert!(!resp.contains("smuggled"), "{head}: {resp}");
        assert!(!resp.contains("\"path\""), "reached the upstream: {resp}");
    }
    // On a kept-alive connection, the requests before the ambiguous one are served
    // normally (also when a body looks like a head), and the ambiguous one is refused.
    let body =
        "GET /public/inner HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let req = format!(
        "GET /public/a HTTP/1.1\r\nHost: h\r\n\r\n\
         POST /public/b HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}\
         POST /public/c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         POST /public/d HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        body.len()
    );
    let resp = until_closed(gate.addr, req.as_bytes()).await;
    let statuses: Vec<&str> = resp
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| resp.get(i + 9..i + 12))
        .collect();
    assert_eq!(statuses, ["200", "200", "200", "400"], "{resp}");
    for path in ["/public/a", "/public/b", "/public/c"] {
        assert!(resp.contains(&format!("\"{path}\"")), "{path}: {resp}");
    }
    assert!(!resp.contains("/public/d\""), "{resp}");
    assert!(
        !resp.contains("smuggled") && !resp.contains("inner\""),
        "{resp}"
    );
    // The refusal is an ordinary error body and is counted as a bad request.
    assert!(resp.contains("\"error\":\"invalid_request\""), "{resp}");
    // Five heads above reach the service (hyper itself refuses two different lengths
    // before that), plus the pipelined one.
    let refused = gate
        .metric("tollgate_requests_total{decision=\"deny\",reason=\"bad_request\"}")
        .await;
    assert_eq!(refused, 6.0);
    // The gate keeps serving.
    let resp = raw(
        gate.addr,
        b"GET /public/after HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}
