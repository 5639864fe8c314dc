//! The production [`Fetcher`]: HTTPS (webpki roots) or loopback HTTP GETs with a 2 s connect
//! timeout, a 5 s total timeout and a 1 MiB response cap. Redirects are not followed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::jwks::{FetchResponse, Fetcher};

/// Largest discovery or JWKS response accepted.
pub const MAX_BODY: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

/// GETs discovery documents and key sets.
pub struct HttpFetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpFetcher {
    pub fn new() -> Result<Self, crate::tls::TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(None)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(Self { client })
    }

    async fn fetch(&self, url: &str, etag: Option<&str>) -> Result<FetchResponse, String> {
        let mut req = Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("tollgate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let req = req
            .body(Empty::new())
            .map_err(|_| "invalid URL".to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {}", describe(&e)))?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let max_age = resp
            .headers()
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|d| {
                let (k, v) = d.trim().split_once('=')?;
                (k.eq_ignore_ascii_case("max-age"))
                    .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                    .flatten()
            })
            .map(Duration::from_secs);
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| format!("response body failed or exceeded {MAX_BODY} bytes"))?
            .to_bytes();
        Ok(FetchResponse {
            status,
            body,
            etag,
            max_age,
        })
    }
}

fn describe(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    }
}

impl Fetcher for HttpFetcher {
    fn get<'a>(
        &'a self,
        url: &'a str,
        etag: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>> {
        Box::pin(async move {
            tokio::time::timeout(TOTAL_TIMEOUT, self.fetch(url, etag))
                .await
                .map_err(|_| format!("timed out after {TOTAL_TIMEOUT:?}"))?
        })
    }
}
