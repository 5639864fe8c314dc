//! The upstream side of an exchange (design §6.9), against a scripted upstream that writes
//! exact bytes: every way a response body can be delimited, informational responses,
//! malformed responses, an answer that comes before the request body was read, and which
//! requests go once more when a pooled connection drops them unanswered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// What the scripted upstream does with one request.
#[derive(Clone)]
struct Answer {
    /// Written as they are; empty for no answer at all.
    bytes: Vec<u8>,
    /// Close the connection afterwards.
    close: bool,
    /// Answer as soon as the head is in, before reading a `Content-Length` body (which is
    /// then read and thrown away until the connection closes).
    early: bool,
}

fn answer(bytes: &[u8]) -> Answer {
    Answer {
        bytes: bytes.to_vec(),
        close: false,
        early: false,
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// Answers the n-th request head it reads (over all its connections) with `script[n]`,
/// and with the last entry once the script runs out. Counts connections and keeps every
/// head it read.
struct Scripted {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), heads.clone());
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, script) = (seen.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 65536];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let a = {
                            let mut seen = seen.lock().unwrap();
                            seen.push(head.clone());
                            script[(seen.len() - 1).min(script.len() - 1)].clone()
                        };
                        if a.early {
                            let _ = s.write_all(&a.bytes).await;
                            while matches!(s.read(&mut chunk).await, Ok(n) if n > 0) {}
                            return;
                        }
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(str::to_owned)
                            })
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        while buf.len() < length {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..length);
                        if !a.bytes.is_empty() && s.write_all(&a.bytes).await.is_err() {
                            return;
                        }
                        if a.close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted {
            addr,
            accepted,
            heads,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests_seen(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

#[tokio::test]
async fn chunked_bodies_pass_through_and_a_length_beside_chunked_is_dropped_with_the_connection() {
    let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              6;ext=1\r\nhello \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n";
    let up = Scripted::start(vec![
        answer(chunked),
        answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n",
        ),
        answer(OK),
    ])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    let got = get(&gate.url("/public/a")).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"hello world");
    // Chunked keeps the connection; chunked with a length beside it is read as chunked,
    // the length is not passed on, and the connection is closed afterwards.
    let got = get(&gate.url("/public/b")).await;
    assert_eq!(&got.body[..], b"abc");
    assert_ne!(
        got.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"99"[..])
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(get(&gate.url("/public/c")).await.body, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_close_delimited_body_ends_with_the_connection_which_is_not_reused() {
    let up = Scripted::start(vec![
        Answer {
            close: true,
            ..answer(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        },
        answer(OK),
    ])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    let got = get(&gate.url("/public/a")).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"until the end");
    assert_eq!(get(&gate.url("/public/b")).await.body, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(gate.app.snapshot().upstream.idle_connections(), 1);
}

#[tokio::test]
async fn informational_responses_are_skipped() {
    let up = Scripted::start(vec![answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    for _ in 0..2 {
        let got = get(&gate.url("/public/a")).await;
        assert_eq!(got.status, 200);
        assert_eq!(&got.body[..], b"ok");
        assert!(got.headers.get("link").is_none());
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_upstream_responses_are_502_and_their_connections_are_dropped() {
    let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    huge.resize(70 * 1024, b'a');
    huge.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    let up = Scripted::start(vec![
        answer(b"SMTP ready\r\n\r\n"),
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"),
        answer(&huge),
        answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
        answer(OK),
    ])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    for i in 0..3 {
        let got = get(&gate.url(&format!("/public/{i}"))).await;
        assert_eq!(got.status, 502, "answer {i}");
    }
    // Bad chunked framing after a good head: the head went out, the body fails.
    let resp = open(&gate.url("/public/3")).await;
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(get(&gate.url("/public/4")).await.body, "ok");
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        5,
        "no broken connection reused"
    );
}

/// An upstream whose pooled connection takes the second request and closes without an
/// answer (a third would be answered), behind a gateway that has pooled that connection.
async fn pooled_then_dropped() -> (Scripted, Gate) {
    let up = Scripted::start(vec![
        answer(OK),
        Answer {
            close: true,
            ..answer(b"")
        },
        answer(OK),
    ])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    assert_eq!(get(&gate.url("/public/a")).await.body, "ok");
    (up, gate)
}

#[tokio::test]
async fn a_bodiless_request_that_a_pooled_connection_drops_unanswered_goes_once_more() {
    let (up, gate) = pooled_then_dropped().await;
    // The pooled connection takes the request and closes without a word: it goes again, on
    // a new connection, and the client never knows.
    let got = get(&gate.url("/public/b")).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"ok");
    assert_eq!(up.requests_seen(), 3);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    // The second attempt is the first one's bytes: same request id, same headers.
    let heads = up.heads.lock().unwrap();
    assert!(heads[1].contains("x-request-id: "), "{}", heads[1]);
    assert_eq!(heads[1], heads[2]);
}

#[tokio::test]
async fn hop_by_hop_response_headers_and_those_connection_names_do_not_reach_the_client() {
    let up = Scripted::start(vec![answer(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
          X-Private: secret\r\nProxy-Authenticate: Basic\r\nTrailer: x-t\r\nX-Kept: yes\r\n\
          content-length: 2\r\n\r\nok",
    )])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    for path in ["/public/a", "/public/b"] {
        let got = get(&gate.url(path)).await;
        assert_eq!(&got.body[..], b"ok");
        assert_eq!(got.header("x-kept"), Some("yes"));
        for name in ["x-private", "keep-alive", "proxy-authenticate", "trailer"] {
            assert!(got.headers.get(name).is_none(), "{name} reached the client");
        }
        assert_ne!(got.header("connection"), Some("keep-alive, X-Private"));
    }
    // `keep-alive` named in Connection is no reason to close: one connection for both.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_with_a_body_is_never_sent_twice() {
    let (up, gate) = pooled_then_dropped().await;
    let got = send(
        http::Request::post(gate.url("/public/b"))
            .body(full("payload"))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(up.requests_seen(), 2, "the POST reached the upstream once");
}

#[tokio::test]
async fn an_answer_given_before_the_request_body_was_read_reaches_the_client() {
    let up = Scripted::start(vec![Answer {
        early: true,
        ..answer(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo long")
    }])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    let got = send(
        http::Request::post(gate.url("/public/upload"))
            .body(full(vec![b'x'; 8 * 1024 * 1024]))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 413);
    assert_eq!(&got.body[..], b"too long");
    assert_eq!(gate.app.snapshot().upstream.idle_connections(), 0);
}

#[tokio::test]
async fn head_and_no_content_responses_have_no_body_and_keep_the_connection() {
    let up = Scripted::start(vec![
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"),
        answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        answer(OK),
    ])
    .await;
    let gate = Gate::start(&config(&up.url(), ROUTES)).await;
    let head = send(
        http::Request::head(gate.url("/public/a"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "1000");
    assert!(head.body.is_empty());
    assert_eq!(get(&gate.url("/public/b")).await.status, 204);
    assert_eq!(get(&gate.url("/public/c")).await.body, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bytes_the_upstream_sends_right_after_its_101_reach_the_client_first() {
    // The upstream accepts the upgrade and speaks first, in the same write as its 101 head;
    // then it echoes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x-test\r\n\r\nhello",
        )
        .await
        .unwrap();
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => s.write_all(&chunk[..n]).await.unwrap(),
            }
        }
    });
    let gate = Gate::start(&config(&format!("http://{addr}"), ROUTES)).await;
    let mut c = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    c.write_all(
        b"GET /public/up HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x-test\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let early = async {
        while !got.windows(9).any(|w| w == b"\r\n\r\nhello") {
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the early bytes");
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), early)
        .await
        .expect("the bytes after the 101 never came");
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    c.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    c.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
}
