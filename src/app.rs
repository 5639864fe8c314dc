//! Long-lived handles shared by every connection: the current snapshot and the metrics.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::cache::TokenCache;
use crate::auth::fetch::HttpFetcher;
use crate::auth::jwks::{Fetcher, KeyRegistry};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::Snapshot;

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Shared state of a running Tollgate.
pub struct App {
    snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    pub keys: KeyRegistry,
    pub token_cache: TokenCache,
}

// === impl App ===

impl App {
    /// Builds the application; must run inside a tokio runtime (key caches start their
    /// background refresh here, without waiting for any identity provider).
    pub fn new(config: Config) -> Result<Arc<Self>, AppError> {
        install_crypto_provider();
        Self::with_fetcher(config, Arc::new(HttpFetcher::new()?))
    }

    /// Like [`App::new`] with another key fetcher (tests).
    pub fn with_fetcher(config: Config, fetcher: Arc<dyn Fetcher>) -> Result<Arc<Self>, AppError> {
        install_crypto_provider();
        let metrics = Metrics::new()?;
        let keys = KeyRegistry::new(fetcher);
        let token_cache = TokenCache::new(config.tokens.cache_max_entries);
        let snapshot = Snapshot::compile(config, &keys, &metrics)?;
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            keys,
            token_cache,
        }))
    }

    /// Swaps in a new snapshot. Requests in flight keep the one they loaded.
    pub fn install(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The current snapshot; a request calls this once and keeps the result.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether the service can take traffic: config loaded and every enabled provider has
    /// usable keys.
    pub fn ready(&self) -> bool {
        self.snapshot.load().ready()
    }
}

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
