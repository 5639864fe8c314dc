//! Step 9: the upstream client. A pool of HTTP/1.1 connections to the one upstream, the
//! request rewritten to origin form with the canonical path, the connect and response
//! timeouts, and failures classified. Bodies are passed through as streams both ways.
//!
//! The exchange runs in the task of the request it serves: the request head is written in
//! one write, the response head read and parsed ([`codec`]) and the response body decoded
//! as the client connection pulls it ([`UpstreamBody`]). No task, channel or wake-up
//! between the two connections. The request body is sent while the response is read (an
//! upstream may answer before it has read everything, or stream both ways).
//!
//! The pool is a LIFO stack of idle connections behind one uncontended lock. A connection
//! is leased for one exchange and goes back when the response body has been read to its
//! end; one whose body was abandoned, whose exchange failed, that was upgraded, or whose
//! response was delimited by closing, is closed instead. An idle connection is checked
//! for a close by the upstream (without a system call when none was signalled) before it
//! is used; a request without a body that a pooled connection dropped before any answer
//! (an upstream keep-alive timeout racing the checkout) goes once more, on a new one.

pub mod codec;

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::config::Upstream;
use crate::error::UpstreamError;
use crate::tls::{self, TlsError};
use codec::{BodyFraming, Buf, Chunked, Malformed, RequestFraming};

/// Write-buffer room an idle connection may keep.
const OUT_KEEP: usize = 64 * 1024;

/// A pooled client bound to one upstream. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Arc<Pool>,
}

struct Pool {
    connector: HttpsConnector<HttpConnector>,
    scheme: Scheme,
    authority: Authority,
    /// The upstream authority as a `Host` value, made once.
    host: Option<HeaderValue>,
    timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Most recently returned last.
    conns: Vec<(Conn, Instant)>,
    reaper: bool,
}

/// The byte stream to the upstream: plain TCP directly, TLS through hyper-rustls.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>),
}

/// One upstream connection and its buffers (kept from one exchange to the next).
struct Conn {
    io: Stream,
    buf: Buf,
    /// Request bytes to write: the head, then body framing and data.
    out: Vec<u8>,
}

/// A protocol upgrade the upstream accepted: the connection is the tunnel's now, with any
/// bytes the upstream sent after its `101` head.
pub struct Upgraded {
    io: Stream,
    early: Bytes,
}

impl Upgraded {
    /// Copies bytes both ways between `client` and the upstream until either side closes,
    /// starting with what the upstream sent right after its `101`.
    pub async fn tunnel(
        mut self,
        client: &mut (impl AsyncRead + AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if !self.early.is_empty() {
            client.write_all(&self.early).await?;
        }
        tokio::io::copy_bidirectional(client, &mut self.io).await?;
        Ok(())
    }
}

// === impl UpstreamClient ===

impl UpstreamClient {
    pub fn new(cfg: &Upstream) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(cfg.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            pool: Arc::new(Pool {
                connector,
                scheme: cfg.scheme.clone(),
                host: HeaderValue::from_str(cfg.authority.as_str()).ok(),
                authority: cfg.authority.clone(),
                timeout: cfg.timeout,
                idle_timeout: cfg.pool_idle_timeout,
                max_idle: cfg.pool_max_idle_per_host,
                idle: Mutex::new(Idle::default()),
            }),
        })
    }

    /// The upstream's authority as a `Host` value (`preserve_host = false`).
    pub fn host(&self) -> Option<&HeaderValue> {
        self.pool.host.as_ref()
    }

    /// The upstream request target for a canonical path and the original query (forwarded
    /// unchanged): origin form, as an HTTP/1.1 request line carries it.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, UpstreamError> {
        let pq = match query {
            Some(q) => {
                let mut s = String::with_capacity(path.len() + 1 + q.len());
                s.push_str(path);
                s.push('?');
                s.push_str(q);
                PathAndQuery::try_from(s)
            }
            None => PathAndQuery::try_from(path),
        }
        .map_err(|_| UpstreamError::Protocol)?;
        Ok(Uri::from(pq))
    }

    /// Idle pooled connections (for tests).
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().conns.len()
    }

    /// Sends the request and waits for the response head, at most `forward.timeout`. The
    /// request goes out as it is: origin-form target (see [`Self::uri_for`]) and a `Host`
    /// header already set by the pipeline; the framing header is the client's body's. The
    /// response comes without hop-by-hop headers, except `Upgrade` on a `101`.
    pub async fn send(
        &self,
        req: Request<Incoming>,
        added: &[u8],
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match tokio::time::timeout(self.pool.timeout, self.pool.exchange(req, added)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(r) => r,
        }
    }
}

// === impl Pool ===

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // The lock guards a plain list; a panic elsewhere cannot leave it inconsistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.lock().conns.pop()?;
            if since.elapsed() <= self.idle_timeout && conn.is_open() {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let target = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| UpstreamError::Connect)?;
        let io = self.connector.clone().call(target).await.map_err(|e| {
            if is_timeout(e.as_ref()) {
                UpstreamError::Timeout
            } else {
                UpstreamError::Connect
            }
        })?;
        let io = match io {
            MaybeHttpsStream::Http(tcp) => Stream::Plain(tcp.into_inner()),
            tls => Stream::Tls(Box::new(TokioIo::new(tls))),
        };
        Ok(Conn {
            io,
            buf: Buf::default(),
            out: Vec::with_capacity(1024),
        })
    }

    /// One exchange up to the response head, on a pooled connection or a new one.
    async fn exchange(
        self: &Arc<Self>,
        req: Request<Incoming>,
        added: &[u8],
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (parts, body) = req.into_parts();
        let framing = request_framing(&parts.method, &parts.headers, &body);
        // Only a request with nothing to stream can be sent twice.
        let replayable = matches!(framing, RequestFraming::None | RequestFraming::Length(0));
        let upgrade = parts.headers.contains_key(header::UPGRADE);
        let (mut conn, pooled) = match self.checkout() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        // The head is encoded once, before anything waits: a retry sends these bytes again
        // (see `Exchange::poll_upload`), so the request's parts are not needed past here.
        conn.out.clear();
        codec::encode_head(
            &mut conn.out,
            &parts.method,
            &parts.uri,
            (&parts.headers, added),
            framing,
        );
        let method = parts.method.clone();
        drop(parts);
        // Let the other ready requests of this scheduler tick run first, so that upstream
        // writes go out together, as they did through hyper's connection tasks: on one
        // host, each write that finds the upstream asleep costs a cross-CPU wake-up.
        tokio::task::yield_now().await;
        let mut x = Exchange::new(conn, Some(body), framing);
        let resp = match std::future::poll_fn(|cx| x.poll_head(cx)).await {
            Ok(h) => h,
            Err(Failed::Unanswered) if pooled && replayable => {
                // A replayable request's head stays in `out` (see `Exchange::poll_upload`).
                let mut fresh = self.connect().await?;
                std::mem::swap(&mut fresh.out, &mut x.conn.out);
                x = Exchange::new(fresh, x.body.take(), framing);
                std::future::poll_fn(|cx| x.poll_head(cx))
                    .await
                    .map_err(|_| UpstreamError::Protocol)?
            }
            Err(_) => return Err(UpstreamError::Protocol),
        };

        let status = resp.status;
        let body_framing = if status == StatusCode::SWITCHING_PROTOCOLS {
            if !upgrade {
                return Err(UpstreamError::Protocol);
            }
            BodyFraming::Empty
        } else {
            codec::response_framing(&method, status, &resp.framing)
                .map_err(|_| UpstreamError::Protocol)?
        };
        let reusable = status != StatusCode::SWITCHING_PROTOCOLS
            && codec::keep_alive(resp.version, &resp.framing, body_framing);
        let mut headers = resp.headers;
        if matches!(body_framing, BodyFraming::Chunked | BodyFraming::Close) {
            // The length, if any, is not what delimits this body.
            headers.remove(header::CONTENT_LENGTH);
        }
        let decoder = match body_framing {
            BodyFraming::Empty => Decoder::Done,
            BodyFraming::Length(n) => Decoder::Length(n),
            BodyFraming::Chunked => Decoder::Chunked(Chunked::default()),
            BodyFraming::Close => Decoder::Close,
        };
        let mut out = Response::new(UpstreamBody {
            exchange: Some(x),
            decoder,
            reusable,
            upgrade: status == StatusCode::SWITCHING_PROTOCOLS,
            pool: Arc::downgrade(self),
            failed: None,
        });
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }

    fn put_back(self: Arc<Self>, mut conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        if conn.out.capacity() > OUT_KEEP {
            // A large request body frame went through: do not keep its room idle.
            conn.out = Vec::with_capacity(1024);
        }
        let start_reaper = {
            let mut idle = self.lock();
            if idle.conns.len() >= self.max_idle {
                return;
            }
            idle.conns.push((conn, Instant::now()));
            !std::mem::replace(&mut idle.reaper, true)
        };
        if start_reaper && let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&self)));
        }
    }
}

/// The framing of the request body: its exact length when known (a `Content-Length` body,
/// or none at all), chunked otherwise. A body-less request keeps an explicit zero length
/// when it came with one, or when its method normally carries a body.
fn request_framing(method: &Method, headers: &http::HeaderMap, body: &Incoming) -> RequestFraming {
    match body.size_hint().exact() {
        Some(0) if body.is_end_stream() => {
            if headers.contains_key(header::CONTENT_LENGTH)
                || matches!(*method, Method::POST | Method::PUT | Method::PATCH)
            {
                RequestFraming::Length(0)
            } else {
                RequestFraming::None
            }
        }
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
    }
}

/// Closes connections idle longer than `pool_idle_timeout`, or closed by the upstream, for
/// as long as the pool lives.
async fn reap(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(p) = pool.upgrade() else { return };
        let stale: Vec<_> = {
            let mut idle = p.lock();
            let (keep, stale) = std::mem::take(&mut idle.conns)
                .into_iter()
                .partition(|(_, since)| since.elapsed() <= p.idle_timeout);
            idle.conns = keep;
            idle.conns.retain_mut(|(c, _)| c.is_open());
            stale
        };
        drop(stale);
    }
}

// === impl Conn ===

impl Conn {
    /// Whether the upstream has not closed (or written to) the idle connection. Polls once
    /// with a no-op waker: when no readiness was signalled since the last read, this is no
    /// system call at all.
    fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let Some(spare) = self.buf.spare(codec::BUF_SIZE) else {
            return false;
        };
        let mut rb = ReadBuf::new(spare);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<std::io::Result<usize>> {
        let Some(spare) = self.buf.spare(max) else {
            return Poll::Ready(Err(std::io::ErrorKind::OutOfMemory.into()));
        };
        let mut rb = ReadBuf::new(spare);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.buf.filled_by(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why an exchange failed before a response head.
#[derive(Debug)]
enum Failed {
    /// The connection closed or failed before a byte of the response came.
    Unanswered,
    /// Anything else: a malformed or cut-off response, a failed request body.
    Broken,
}

/// One exchange on one connection: the request going out, the response coming in.
struct Exchange {
    conn: Conn,
    /// Bytes of `conn.out` written.
    written: usize,
    /// The client's request body, until it has all been queued.
    body: Option<Incoming>,
    framing: RequestFraming,
    /// The request went out whole.
    sent: bool,
    /// The request could not be sent whole (write error, client body error).
    upload_failed: bool,
    answered: bool,
}

impl Exchange {
    /// `conn.out` holds the request head.
    fn new(conn: Conn, body: Option<Incoming>, framing: RequestFraming) -> Self {
        let body = body.filter(|b| !b.is_end_stream());
        Self {
            conn,
            written: 0,
            body,
            framing,
            sent: false,
            upload_failed: false,
            answered: false,
        }
    }

    /// Sends what it can without waiting: queued bytes, then the next body frames.
    fn poll_upload(&mut self, cx: &mut Context<'_>) {
        while !self.sent && !self.upload_failed {
            if let Some(pending) = self.conn.out.get(self.written..)
                && !pending.is_empty()
            {
                match Pin::new(&mut self.conn.io).poll_write(cx, pending) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.fail_upload(),
                    Poll::Ready(Ok(n)) => self.written += n,
                    Poll::Pending => return,
                }
                continue;
            }
            let Some(body) = self.body.as_mut() else {
                // `out` is left as it is: without a body, it is the whole request, sent
                // again as it is when a pooled connection turns out dead.
                match Pin::new(&mut self.conn.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.sent = true,
                    Poll::Ready(Err(_)) => self.fail_upload(),
                    Poll::Pending => {}
                }
                return;
            };
            self.conn.out.clear();
            self.written = 0;
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers of a chunked request are dropped.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        if self.framing == RequestFraming::Chunked {
                            codec::chunk_size_line(&mut self.conn.out, data.len());
                            self.conn.out.extend_from_slice(&data);
                            self.conn.out.extend_from_slice(b"\r\n");
                        } else {
                            self.conn.out.extend_from_slice(&data);
                        }
                    }
                }
                Poll::Ready(Some(Err(_))) => self.fail_upload(),
                Poll::Ready(None) => {
                    self.body = None;
                    if self.framing == RequestFraming::Chunked {
                        self.conn.out.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                Poll::Pending => return,
            }
        }
    }

    fn fail_upload(&mut self) {
        // `out` is kept: a replayable request is sent again from it.
        self.upload_failed = true;
        self.body = None;
    }

    /// The response head, informational responses other than `101` skipped.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<codec::Head, Failed>> {
        loop {
            self.poll_upload(cx);
            if !self.conn.buf.is_empty() {
                match codec::parse_response(self.conn.buf.filled()) {
                    Ok(Some(head)) => {
                        self.conn.buf.consume(head.len);
                        if head.status.is_informational()
                            && head.status != StatusCode::SWITCHING_PROTOCOLS
                        {
                            continue;
                        }
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                    Err(Malformed) => return Poll::Ready(Err(Failed::Broken)),
                }
            }
            match self.conn.poll_fill(cx, codec::MAX_HEAD) {
                Poll::Ready(Ok(n)) if n > 0 => self.answered = true,
                Poll::Ready(_) => {
                    return Poll::Ready(Err(if self.answered {
                        Failed::Broken
                    } else {
                        Failed::Unanswered
                    }));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How far the response body is read.
enum Decoder {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// The upstream's response body, streamed through as the client pulls it (which also
/// sends what is left of the request body). Read to its end, the connection goes back to
/// the pool; dropped before that, it is closed.
pub struct UpstreamBody {
    exchange: Option<Exchange>,
    decoder: Decoder,
    reusable: bool,
    upgrade: bool,
    pool: Weak<Pool>,
    failed: Option<BodyError>,
}

/// The response body was cut off or malformed.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body: {0}")]
pub struct BodyError(&'static str);

impl UpstreamBody {
    /// The upgraded connection, once, for a `101` response.
    pub fn take_upgrade(&mut self) -> Option<Upgraded> {
        if !self.upgrade {
            return None;
        }
        self.upgrade = false;
        let mut x = self.exchange.take()?;
        Some(Upgraded {
            early: x.conn.buf.take(),
            io: x.conn.io,
        })
    }

    /// The body has been read to its end: the connection goes back if it can carry another
    /// exchange.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        let Some(x) = self.exchange.take() else {
            return;
        };
        if self.reusable
            && x.sent
            && !x.upload_failed
            && x.conn.buf.is_empty()
            && let Some(p) = self.pool.upgrade()
        {
            p.put_back(x.conn);
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let Some(x) = self.exchange.as_mut() else {
            return Poll::Ready(None);
        };
        // Full duplex: the request body keeps going while the response is read.
        x.poll_upload(cx);
        loop {
            let buf = x.conn.buf.filled();
            let data = match &mut self.decoder {
                Decoder::Done => return Poll::Ready(None),
                Decoder::Length(left) => {
                    let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                    *left -= n as u64;
                    n
                }
                Decoder::Close => buf.len(),
                Decoder::Chunked(d) => {
                    let (skip, n) = d
                        .advance(buf)
                        .map_err(|_| BodyError("malformed chunked framing"))?;
                    x.conn.buf.consume(skip);
                    if d.is_done() {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    n
                }
            };
            if data > 0 {
                let chunk =
                    Bytes::copy_from_slice(x.conn.buf.filled().get(..data).unwrap_or_default());
                x.conn.buf.consume(data);
                if self.ends_here() {
                    self.finish();
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            if matches!(self.decoder, Decoder::Length(0)) {
                self.finish();
                return Poll::Ready(None);
            }
            match x.conn.poll_fill(cx, codec::BUF_SIZE) {
                Poll::Ready(Ok(0)) if matches!(self.decoder, Decoder::Close) => {
                    self.reusable = false;
                    self.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(BodyError("cut off")))),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Some(Err(BodyError("read failed")))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Whether the body ends with what has been yielded, as far as the buffer shows. Lets
    /// the connection go back before the client connection asks again (it may not).
    fn ends_here(&mut self) -> bool {
        match &mut self.decoder {
            Decoder::Length(left) => *left == 0,
            Decoder::Chunked(d) => {
                let Some(x) = self.exchange.as_mut() else {
                    return true;
                };
                let mut probe = *d;
                match probe.advance(x.conn.buf.filled()) {
                    Ok((skip, 0)) if probe.is_done() => {
                        x.conn.buf.consume(skip);
                        *d = probe;
                        true
                    }
                    _ => false,
                }
            }
            Decoder::Close => false,
            Decoder::Done => true,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.poll_data(cx) {
            Poll::Ready(Some(Ok(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Poll::Ready(Some(Err(e))) => {
                self.exchange = None;
                self.decoder = Decoder::Done;
                // Reported on the next poll, so that the client connection first flushes
                // what came before the failure (a cut-off body stays a cut-off body, not
                // a response that never started).
                self.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && matches!(self.decoder, Decoder::Done | Decoder::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body is never polled: the exchange is complete all the same.
        if self.is_end_stream() && !self.upgrade {
            self.finish();
        }
    }
}

// === impl Stream ===

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = err.source();
    }
    false
}
