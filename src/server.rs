//! Listeners: the accept loop, the connection limit, the TLS handshake (inside the
//! per-connection task, with a timeout), hyper-util's auto builder (HTTP/1.1 and h2), an
//! idle timeout, and graceful drain on shutdown (design §8.6).

pub mod framing;
mod io;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::Limits;
use crate::proxy::{self, ConnInfo};
use framing::{Framing, Sniffed, Watcher};
use io::{Activity, Tracked};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A running server: its bound addresses and the means to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl Running ===

impl Running {
    /// Stops accepting and starts draining (idempotent).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until both listeners have drained (or hit the shutdown deadline).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Per-listener settings.
#[derive(Clone)]
struct ListenOpts {
    limits: Limits,
    tls: Option<(TlsAcceptor, Duration)>,
    name: &'static str,
}

/// Binds both listeners and starts serving.
pub async fn start(app: Arc<App>) -> Result<Running, StartError> {
    let cfg = app.snapshot().config.clone();
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let public = bind(cfg.listen).await?;
    let admin = bind(cfg.admin_listen).await?;
    let tls = match &cfg.tls {
        Some(t) => Some((
            TlsAcceptor::from(crate::tls::server_config(&t.cert, &t.key)?),
            t.handshake_timeout,
        )),
        None => None,
    };
    let public_addr = public.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.admin_listen,
        source,
    })?;
    tracing::info!(listener = "public", addr = %public_addr, tls = tls.is_some(), "listening");
    tracing::info!(listener = "admin", addr = %admin_addr, "listening");

    let (tx, rx) = watch::channel(false);
    let public_opts = ListenOpts {
        limits: cfg.limits.clone(),
        tls,
        name: "public",
    };
    let admin_opts = ListenOpts {
        limits: Limits {
            max_connections: 256,
            ..cfg.limits.clone()
        },
        tls: None,
        name: "admin",
    };
    let a1 = app.clone();
    let public_task = tokio::spawn(accept_loop(
        public,
        public_opts,
        app.clone(),
        rx.clone(),
        move |conn, framing: Arc<Framing>| {
            let app = a1.clone();
            service_fn(move |mut req: Request<Incoming>| {
                if req.version() <= http::Version::HTTP_11 && framing.next_request_conflicts() {
                    req.extensions_mut().insert(proxy::AmbiguousFraming);
                }
                let app = app.clone();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(proxy::handle(app, conn, req).await) }
            })
        },
    ));
    let a2 = app.clone();
    let admin_task = tokio::spawn(accept_loop(
        admin,
        admin_opts,
        app,
        rx,
        move |_conn, _framing| {
            let app = a2.clone();
            service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(crate::admin::handle(&app, &req)) }
            })
        },
    ));
    Ok(Running {
        public_addr,
        admin_addr,
        shutdown: tx,
        tasks: vec![public_task, admin_task],
    })
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // Enforced by the connection's own watcher instead (one timer per connection, not
        // one per request): see `serve_connection`.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256));
    b
}

async fn accept_loop<F, S, B>(
    listener: TcpListener,
    opts: ListenOpts,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
    make_service: F,
) where
    F: Fn(ConnInfo, Arc<Framing>) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(builder(&opts.limits));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(opts.limits.max_connections));
    let make_service = Arc::new(make_service);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(listener = opts.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            app.metrics.connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo::new(peer, opts.tls.is_some());
        let framing = Framing::new();
        let clock = framing.clone();
        let watcher = Watcher::new(
            framing.clone(),
            opts.limits.max_header_bytes,
            opts.limits.max_headers,
        );
        let service = make_service(conn, framing);
        let graceful_watcher = graceful.watcher();
        let builder = builder.clone();
        let app = app.clone();
        let tls = opts.tls.clone();
        let timeouts = (opts.limits.idle_timeout, opts.limits.header_read_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            app.metrics.connection_opened();
            let serve = serve_connection(
                stream,
                tls,
                builder,
                graceful_watcher,
                (service, watcher, clock),
                timeouts,
            );
            serve.await;
            app.metrics.connection_closed();
        });
    }
    // Stop accepting: new connections are refused from here on.
    drop(listener);
    tracing::info!(listener = opts.name, "stopped accepting");
    let deadline = opts.limits.shutdown_timeout;
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = opts.name,
            ?deadline,
            "drain deadline reached; closing remaining connections"
        );
    } else {
        tracing::info!(listener = opts.name, "drained");
    }
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    tls: Option<(TlsAcceptor, Duration)>,
    builder: Arc<Builder<TokioExecutor>>,
    graceful: hyper_util::server::graceful::Watcher,
    (service, framing, clock): (S, Watcher, Arc<Framing>),
    (idle, header): (Duration, Duration),
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Activity::new();
    let io = Tracked::new(stream, activity.clone());
    match tls {
        None => {
            let io = Sniffed::new(io, framing);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let conn = graceful.watch(conn.into_owned());
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "connection error") },
                e = activity.watch(idle, header, || clock.open_head()) => {
                    tracing::debug!(timeout = ?e, "connection timed out");
                }
            }
        }
        Some((acceptor, timeout)) => {
            let tls = match tokio::time::timeout(timeout, acceptor.accept(io)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let tls = Sniffed::new(tls, framing);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            let conn = graceful.watch(conn.into_owned());
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "connection error") },
                e = activity.watch(idle, header, || clock.open_head()) => {
                    tracing::debug!(timeout = ?e, "connection timed out");
                }
            }
        }
    }
}
