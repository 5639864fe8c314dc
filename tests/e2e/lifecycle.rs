//! Process lifecycle and connection limits: graceful drain on SIGTERM, max connections,
//! header read timeout, header size limit, idle timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One keep-alive GET on `s`; the first read of the answer.
async fn request(s: &mut TcpStream) -> String {
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

const HOLD_ROUTES: &str = "[[routes]]\npath = \"/hold\"\nauth = \"public\"\n[[routes]]\npath = \"/public/**\"\nauth = \"public\"\n";

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let echo = Echo::start().await;
    let mut gate = GateProcess::spawn(&config(&echo.url(), HOLD_ROUTES), "");
    let url = gate.url("/hold");
    let in_flight = tokio::spawn(async move {
        let resp = client()
            .request(http::Request::get(&url).body(empty()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("in-flight request failed: {e:?}"));
        collect(resp).await
    });
    // The upstream has the request: it is in flight inside Tollgate.
    echo.held.notified().await;

    gate.signal("TERM");
    let (addr, lines) = (gate.addr, gate.lines.clone());
    let wait = tokio::task::spawn_blocking(move || {
        gate.wait_for_log("stopped accepting", |v| v["listener"] == "public");
        gate
    });
    gate = wait.await.unwrap();
    // New connections are refused while the old request is still being served.
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    assert!(!in_flight.is_finished());

    echo.release();
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.seen().path(), "/hold");
    let status = tokio::task::spawn_blocking(move || gate.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{:?}", lines.lock().unwrap());
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_without_affecting_established_ones() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[limits]\nmax_connections = 2\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;

    let mut a = TcpStream::connect(gate.addr).await.unwrap();
    let mut b = TcpStream::connect(gate.addr).await.unwrap();
    assert!(request(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(request(&mut b).await.starts_with("HTTP/1.1 200"));

    // The third is accepted by the kernel and closed by Tollgate at once.
    let mut c = TcpStream::connect(gate.addr).await.unwrap();
    let _ = c
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("refused connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "over-limit connection got a response");

    // The established ones keep working.
    assert!(request(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(request(&mut b).await.starts_with("HTTP/1.1 200"));
    let m = String::from_utf8_lossy(&get(&gate.admin_url("/metrics")).await.body).into_owned();
    assert!(m.contains("tollgate_connections_refused_total 1"), "{m}");
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_timeout() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[limits]\nheader_read_timeout = \"300ms\"\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;
    let mut s = TcpStream::connect(gate.addr).await.unwrap();
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    // The server must close the connection by itself; 10 s is only a guard.
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "connection still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
}

#[tokio::test]
async fn oversized_header_sections_answer_431() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    let big = "a".repeat(40 * 1024);
    let req = format!("GET /public/x HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n");
    let resp = raw(gate.addr, req.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    // Too many header lines as well.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /public/x HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    let resp = raw(gate.addr, req.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[limits]\nidle_timeout = \"300ms\"\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;
    let mut s = TcpStream::connect(gate.addr).await.unwrap();
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive connection, now idle: the server closes it.
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("idle connection still open after 10 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn the_header_timeout_covers_a_silent_new_connection_but_not_an_idle_keep_alive_one() {
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"60s\"\n{ROUTES}"),
    );
    let gate = Gate::start(&main).await;
    // Connected, nothing sent: that is a head not coming.
    let mut silent = TcpStream::connect(gate.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "silent connection still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Between requests a keep-alive connection is idle, not slow: the idle timeout governs.
    let mut kept = TcpStream::connect(gate.addr).await.unwrap();
    assert!(request(&mut kept).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(request(&mut kept).await.starts_with("HTTP/1.1 200"));
}
