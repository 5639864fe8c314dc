//! Long-lived handles shared by every connection: the current snapshot and the metrics.

use std::sync::Arc;

use arc_swap::ArcSwap;

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
}

// === impl App ===

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, AppError> {
        install_crypto_provider();
        let snapshot = Snapshot::compile(config)?;
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics: Metrics::new()?,
        }))
    }

    /// The current snapshot; a request calls this once and keeps the result.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether the service can take traffic: config loaded and every enabled provider has
    /// keys. Key fetching is not built yet, so any enabled provider means "not ready".
    pub fn ready(&self) -> bool {
        !self.snapshot().config.providers.iter().any(|p| p.enabled)
    }
}

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
