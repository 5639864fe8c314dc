//! The immutable snapshot a request works on: the validated config plus everything compiled
//! from it. Held in one `ArcSwap`; a request loads it once (design §8.4).

use std::sync::Arc;

use crate::auth::jwks::KeyRegistry;
use crate::auth::verify::{ProviderVerifier, Verifier};
use crate::authz::Policy;
use crate::config::Config;
use crate::headers::IdentityHeaders;
use crate::identity::AccountTable;
use crate::metrics::Metrics;
use crate::tls::TlsError;
use crate::upstream::UpstreamClient;

/// Everything derived from one configuration.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstream: UpstreamClient,
    pub verifier: Verifier,
    pub accounts: AccountTable,
    pub identity_headers: IdentityHeaders,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles a snapshot. Fails only on material that validation cannot check without
    /// reading it (the upstream CA file).
    pub fn compile(
        config: Config,
        keys: &KeyRegistry,
        metrics: &Metrics,
    ) -> Result<Self, TlsError> {
        let upstream = UpstreamClient::new(&config.upstream)?;
        let caches = keys.sync(&config.providers, metrics);
        let verifier = Verifier::new(
            config
                .providers
                .iter()
                .filter_map(|p| {
                    let mapping_claims = config
                        .identity_mappings
                        .iter()
                        .filter(|m| m.provider == p.name)
                        .flat_map(|m| m.claims.keys().map(String::as_str));
                    caches
                        .get(&p.name)
                        .map(|k| ProviderVerifier::keeping(p.clone(), k.clone(), mapping_claims))
                })
                .collect(),
        );
        let accounts = AccountTable::new(&config);
        // The prefix was validated as a header-name prefix; the fallback is never used.
        let identity_headers = IdentityHeaders::new(
            &config.headers.identity_prefix,
            config.headers.max_identity_bytes,
        )
        .or_else(|_| IdentityHeaders::new("x-auth-", config.headers.max_identity_bytes))
        .map_err(|_| TlsError::NoCerts {
            path: "identity header prefix".into(),
        })?;
        Ok(Self {
            config: Arc::new(config),
            upstream,
            verifier,
            accounts,
            identity_headers,
        })
    }

    /// The policy a decision reads.
    pub fn policy(&self) -> Policy<'_> {
        Policy {
            accounts: &self.accounts,
            roles: &self.config.roles,
            scopes: &self.config.scopes,
            scope_mode: self.config.scope_mode,
        }
    }

    /// Ready when every enabled provider has usable keys.
    pub fn ready(&self) -> bool {
        self.verifier
            .providers()
            .all(|p| !p.config.enabled || p.keys.current().is_some())
    }
}
