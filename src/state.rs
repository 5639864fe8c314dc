//! The immutable snapshot a request works on: the validated config plus everything compiled
//! from it. Held in one `ArcSwap`; a request loads it once (design §8.4).

use std::sync::Arc;

use crate::config::Config;
use crate::tls::TlsError;
use crate::upstream::UpstreamClient;

/// Everything derived from one configuration.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstream: UpstreamClient,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles a snapshot. Fails only on material that validation cannot check without
    /// reading it (the upstream CA file).
    pub fn compile(config: Config) -> Result<Self, TlsError> {
        let upstream = UpstreamClient::new(&config.upstream)?;
        Ok(Self {
            config: Arc::new(config),
            upstream,
        })
    }
}
