//! The verified-token cache (design §2.4): moka, keyed by SHA-256 of the token, bounded in
//! entries, each entry living until the token's `exp` or `max_ttl`, whichever is first. A
//! hit skips all signature work; the verifier still re-checks on every hit that the
//! provider is unchanged, the key is still published and `exp` has not passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::verify::VerifiedToken;

/// SHA-256 of a token: the cache key (the token itself is never stored).
pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

struct PerEntry;

impl moka::Expiry<TokenHash, Arc<VerifiedToken>> for PerEntry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.cache_ttl)
    }
}

/// Bounded cache of verified tokens; shared across config reloads.
#[derive(Clone)]
pub struct TokenCache {
    inner: Option<Cache<TokenHash, Arc<VerifiedToken>>>,
}

impl TokenCache {
    /// `max_entries = 0` disables caching.
    pub fn new(max_entries: u64) -> Self {
        let inner = (max_entries > 0).then(|| {
            Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntry)
                .build()
        });
        Self { inner }
    }

    pub fn get(&self, key: &TokenHash) -> Option<Arc<VerifiedToken>> {
        self.inner.as_ref()?.get(key)
    }

    pub fn insert(&self, key: TokenHash, value: Arc<VerifiedToken>) {
        if let Some(c) = &self.inner
            && !value.cache_ttl.is_zero()
        {
            c.insert(key, value);
        }
    }

    pub fn remove(&self, key: &TokenHash) {
        if let Some(c) = &self.inner {
            c.invalidate(key);
        }
    }

    /// Entries currently held (approximate; for tests and metrics).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
