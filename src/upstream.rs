//! Step 9: the pooled upstream client. Rewrites the request URI to the upstream with the
//! canonical path, applies the connect and response timeouts, and classifies failures.
//! Bodies are passed through as streams in both directions.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Upstream;
use crate::error::UpstreamError;
use crate::tls::{self, TlsError};

/// A pooled client bound to one upstream.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
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
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(connector);
        Ok(Self {
            client,
            scheme: cfg.scheme.clone(),
            authority: cfg.authority.clone(),
            timeout: cfg.timeout,
        })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The upstream URI for a canonical path and the original query (forwarded unchanged).
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, UpstreamError> {
        let pq = match query {
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
            None => PathAndQuery::try_from(path),
        }
        .map_err(|_| UpstreamError::Protocol)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| UpstreamError::Protocol)
    }

    /// Sends the request and waits for the response head, at most `forward.timeout`.
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                // A connect timeout surfaces as a connect error whose source says so.
                if is_timeout(&e) {
                    Err(UpstreamError::Timeout)
                } else {
                    Err(UpstreamError::Connect)
                }
            }
            Ok(Err(_)) => Err(UpstreamError::Protocol),
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
