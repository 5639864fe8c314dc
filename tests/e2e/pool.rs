//! The upstream connection pool (design §6.9 "pooled connections"): connections are reused,
//! an upstream closing idle connections costs no request, a connection whose response was
//! abandoned is never reused, and the pool keeps at most `pool_max_idle_per_host`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

/// A minimal HTTP/1.1 upstream: answers every request `200 ok` and counts connections.
/// With `close_after = Some(n)` it closes each connection, without a word, after n
/// responses (as an upstream keep-alive limit does). Every close, its own or Tollgate's,
/// is reported on `closed`. With a barrier, each connection's first answer waits until
/// that many connections wait.
struct Counting {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: mpsc::UnboundedReceiver<()>,
}

impl Counting {
    async fn start(close_after: Option<usize>) -> Counting {
        Self::start_with(close_after, None).await
    }

    async fn start_with(
        close_after: Option<usize>,
        barrier: Option<Arc<tokio::sync::Barrier>>,
    ) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, closed) = mpsc::unbounded_channel();
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut served = 0;
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Requests here have no body: a head ends at the blank line.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if served == 0
                                && let Some(b) = &barrier
                            {
                                b.wait().await;
                            }
                            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .is_err()
                            {
                                return;
                            }
                            served += 1;
                            if close_after == Some(served) {
                                drop(s);
                                let _ = tx.send(());
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                let _ = tx.send(());
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Counting {
            addr,
            accepted,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = Counting::start(None).await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    for i in 0..20 {
        let got = get(&gate.url(&format!("/public/{i}"))).await;
        assert_eq!(got.status, 200);
        assert_eq!(&got.body[..], b"ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(gate.app.snapshot().upstream.idle_connections(), 1);
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_costs_no_request() {
    let mut up = Counting::start(Some(1)).await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    for i in 0..10 {
        let got = get(&gate.url(&format!("/public/{i}"))).await;
        assert_eq!(got.status, 200, "request {i}: {:?}", got.body);
        // The upstream has closed the pooled connection before the next request comes.
        up.closed.recv().await.unwrap();
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_connection_whose_response_was_abandoned_is_not_reused() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), ROUTES)).await;
    // Start a 64 MiB download, read one chunk, walk away.
    let resp = open(&gate.url("/public/stream/down?bytes=67108864")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    // Whatever connection the next request gets, it carries that request's answer and
    // nothing left over from the abandoned one.
    for i in 0..5 {
        let seen = get(&gate.url(&format!("/public/after/{i}"))).await.seen();
        assert_eq!(seen.path(), format!("/public/after/{i}"));
    }
}

#[tokio::test]
async fn the_pool_keeps_at_most_pool_max_idle_per_host() {
    // Eight requests held at once need eight connections; two stay pooled afterwards.
    let up = Counting::start_with(None, Some(Arc::new(tokio::sync::Barrier::new(8)))).await;
    let gate = Gate::start(&config(
        &up.url(),
        &format!("[forward]\npool_max_idle_per_host = 2\n{ROUTES}"),
    ))
    .await;
    let gets: Vec<_> = (0..8)
        .map(|i| {
            let url = gate.url(&format!("/public/{i}"));
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for g in gets {
        assert_eq!(g.await.unwrap(), 200);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 8);
    assert_eq!(gate.app.snapshot().upstream.idle_connections(), 2);
    // The pooled ones serve what comes next.
    let before = up.accepted.load(Ordering::SeqCst);
    for i in 0..4 {
        assert_eq!(
            get(&gate.url(&format!("/public/next/{i}"))).await.status,
            200
        );
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn connections_idle_past_pool_idle_timeout_are_closed() {
    let mut up = Counting::start(None).await;
    let gate = Gate::start(&config(
        &up.url(),
        &format!("[forward]\npool_idle_timeout = \"200ms\"\n{ROUTES}"),
    ))
    .await;
    assert_eq!(get(&gate.url("/public/a")).await.status, 200);
    assert_eq!(gate.app.snapshot().upstream.idle_connections(), 1);
    // Nothing else happens: the pool closes its idle connection by itself.
    tokio::time::timeout(std::time::Duration::from_secs(10), up.closed.recv())
        .await
        .expect("idle upstream connection still open after 10 s")
        .unwrap();
    assert_eq!(gate.app.snapshot().upstream.idle_connections(), 0);
    assert_eq!(get(&gate.url("/public/b")).await.status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}
