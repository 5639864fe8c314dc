//! Step 9: the upstream client. A pool of HTTP/1.1 connections to the one upstream, the
//! request rewritten to origin form with the canonical path, the connect and response
//! timeouts, and failures classified. Bodies are passed through as streams both ways.
//!
//! The pool is a LIFO stack of idle connections behind one uncontended lock. A connection
//! is leased for one exchange and goes back when the response body has been read to its
//! end ([`UpstreamBody`]); one whose body was abandoned, whose exchange failed or that was
//! upgraded is closed instead. Nothing is spawned per request: the only task per
//! connection is the one that drives it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::config::Upstream;
use crate::error::UpstreamError;
use crate::tls::{self, TlsError};

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
    conns: Vec<(SendRequest<Incoming>, Instant)>,
    reaper: bool,
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
    /// header already set by the pipeline.
    pub async fn send(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match tokio::time::timeout(self.pool.timeout, self.pool.exchange(req)).await {
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

    /// The most recently used idle connection that is open and ready now.
    async fn checkout(self: &Arc<Self>) -> Option<SendRequest<Incoming>> {
        loop {
            let (mut tx, since) = self.lock().conns.pop()?;
            if since.elapsed() > self.idle_timeout || tx.is_closed() {
                continue;
            }
            // A connection goes back at the end of its response body, when its task has
            // almost always made it ready already. One still busy (the upstream answered
            // before the request body was all sent) waits on the side, not in this request.
            match std::future::poll_fn(|cx| Poll::Ready(tx.poll_ready(cx))).await {
                Poll::Ready(Ok(())) => return Some(tx),
                Poll::Ready(Err(_)) => {}
                Poll::Pending => {
                    let pool = Arc::downgrade(self);
                    tokio::spawn(async move {
                        if tx.ready().await.is_ok()
                            && let Some(p) = pool.upgrade()
                        {
                            p.put_back(tx);
                        }
                    });
                }
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
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
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|_| UpstreamError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }

    /// One exchange on a pooled connection, or a new one. A request that a pooled
    /// connection closed before taking it (an upstream keep-alive timeout racing the
    /// checkout) goes once more, on a new connection.
    async fn exchange(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (mut tx, pooled) = match self.checkout().await {
            Some(tx) => (tx, true),
            None => (self.connect().await?, false),
        };
        let resp = match tx.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                Some(req) if pooled => {
                    tx = self.connect().await?;
                    tx.send_request(req)
                        .await
                        .map_err(|_| UpstreamError::Protocol)?
                }
                _ => return Err(UpstreamError::Protocol),
            },
        };
        let lease = Lease {
            tx,
            pool: Arc::downgrade(self),
            // An upgraded connection is the tunnel's now.
            reusable: resp.status() != http::StatusCode::SWITCHING_PROTOCOLS,
        };
        Ok(resp.map(|inner| UpstreamBody {
            inner,
            lease: Some(lease),
        }))
    }

    fn put_back(self: Arc<Self>, tx: SendRequest<Incoming>) {
        if self.max_idle == 0 || tx.is_closed() {
            return;
        }
        let start_reaper = {
            let mut idle = self.lock();
            if idle.conns.len() >= self.max_idle {
                return;
            }
            idle.conns.push((tx, Instant::now()));
            !std::mem::replace(&mut idle.reaper, true)
        };
        if start_reaper && let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&self)));
        }
    }
}

/// Closes connections idle longer than `pool_idle_timeout`, for as long as the pool lives.
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
            let keep = idle
                .conns
                .iter()
                .position(|(tx, since)| since.elapsed() <= p.idle_timeout && !tx.is_closed());
            // Oldest first: everything before the first fresh one has aged out or closed.
            let n = keep.unwrap_or(idle.conns.len());
            idle.conns.drain(..n).collect()
        };
        drop(stale);
    }
}

/// A connection on loan for one exchange.
struct Lease {
    tx: SendRequest<Incoming>,
    pool: Weak<Pool>,
    reusable: bool,
}

impl Lease {
    fn give_back(self) {
        if self.reusable
            && let Some(p) = self.pool.upgrade()
        {
            p.put_back(self.tx);
        }
    }
}

/// The upstream's response body, streamed through. When it has been read to its end the
/// connection goes back to the pool; dropped before that, the connection is closed.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(l) = this.lease.take() {
                    l.give_back();
                }
            }
            Poll::Ready(Some(Err(_))) => this.lease = None,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                if let Some(l) = this.lease.take() {
                    l.give_back();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body is never polled: the exchange is complete all the same.
        if self.inner.is_end_stream()
            && let Some(l) = self.lease.take()
        {
            l.give_back();
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
