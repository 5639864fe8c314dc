//! The verified-token cache (design §2.4): moka, keyed by SHA-256 of the token, bounded in
//! entries, each entry living until the token's `exp` or `max_ttl`, whichever is first. A
//! hit skips all signature work; the verifier still re-checks on every hit that the
//! provider is unchanged, the key is still published and `exp` has not passed.
//!
//! A token is admitted on its second verification, not its first: a fixed table of 64-bit
//! fingerprints (the doorkeeper) remembers tokens seen once. A token used once — minted per
//! request, or a flood of distinct tokens — then costs no cache insert and no memory (an
//! insert and the growing working set cost ≈ 6.7 µs per such request, more than the
//! signature's half); a token used many times pays one extra signature check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Tokens verified once and not cached yet: a direct-mapped table of fingerprints (first
/// 8 bytes of the token hash; the slot comes from the next 8). A collision only forgets a
/// sighting, so the token is admitted one verification later.
struct Doorkeeper {
    slots: Box<[AtomicU64]>,
    mask: usize,
}

impl Doorkeeper {
    /// At least `entries` slots (a power of two between 1,024 and 1,048,576: 8 MiB at most).
    fn new(entries: u64) -> Self {
        let n = usize::try_from(entries)
            .unwrap_or(usize::MAX)
            .clamp(1 << 10, 1 << 20)
            .next_power_of_two();
        Self {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
        }
    }

    /// Records a sighting; true when the same token was the last one seen in its slot.
    fn seen_before(&self, key: &TokenHash) -> bool {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            for (o, k) in b.iter_mut().zip(key.iter().skip(i * 8)) {
                *o = *k;
            }
            u64::from_le_bytes(b)
        };
        // Never 0, the empty slot.
        let fingerprint = word(0) | 1;
        let slot = (word(1) as usize) & self.mask;
        self.slots
            .get(slot)
            .is_some_and(|s| s.swap(fingerprint, Ordering::Relaxed) == fingerprint)
    }
}

/// Hashes a [`TokenHash`] by taking 8 of its bytes: the key already is a SHA-256 digest,
/// uniformly spread, so hashing it again (moka's default is SipHash) buys nothing. Keys
/// cannot be chosen to collide either: only tokens that verified are ever inserted, and
/// aiming a digest at a bucket means finding SHA-256 preimages.
#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    /// The digest's first 8 bytes are the hash.
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        for (o, i) in b.iter_mut().zip(bytes) {
            *o = *i;
        }
        self.0 = u64::from_le_bytes(b);
    }

    /// `[u8; 32]` hashes its length first: the same for every key, so it is ignored.
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

type Entries = Cache<TokenHash, Arc<VerifiedToken>, std::hash::BuildHasherDefault<DigestHasher>>;

/// Bounded cache of verified tokens; shared across config reloads.
#[derive(Clone)]
pub struct TokenCache {
    inner: Option<(Entries, Arc<Doorkeeper>)>,
}

impl TokenCache {
    /// `max_entries = 0` disables caching.
    pub fn new(max_entries: u64) -> Self {
        let inner = (max_entries > 0).then(|| {
            let cache = Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntry)
                .build_with_hasher(std::hash::BuildHasherDefault::<DigestHasher>::default());
            (cache, Arc::new(Doorkeeper::new(max_entries)))
        });
        Self { inner }
    }

    pub fn get(&self, key: &TokenHash) -> Option<Arc<VerifiedToken>> {
        self.inner.as_ref()?.0.get(key)
    }

    /// Caches a verification result if the token was verified before (see the module
    /// documentation); returns whether it was cached.
    pub fn insert(&self, key: TokenHash, value: Arc<VerifiedToken>) -> bool {
        match &self.inner {
            Some((c, door)) if !value.cache_ttl.is_zero() && door.seen_before(&key) => {
                c.insert(key, value);
                true
            }
            _ => false,
        }
    }

    pub fn remove(&self, key: &TokenHash) {
        if let Some((c, _)) = &self.inner {
            c.invalidate(key);
        }
    }

    /// Entries currently held (approximate; for tests and metrics).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |(c, _)| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken::for_tests(Duration::from_secs(60)))
    }

    #[test]
    fn a_token_is_admitted_on_its_second_verification() {
        let cache = TokenCache::new(100);
        let (a, b) = (hash("token-a"), hash("token-b"));
        assert!(!cache.insert(a, result()), "first sighting: not cached");
        assert!(cache.get(&a).is_none());
        assert!(
            !cache.insert(b, result()),
            "another token does not admit the first"
        );
        assert!(cache.insert(a, result()), "second sighting: cached");
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&b).is_none());
        // Removed (e.g. its key was retired) and verified again: admitted at once.
        cache.remove(&a);
        assert!(cache.insert(a, result()));
        // Nothing with a zero TTL, and nothing when caching is off.
        let z = hash("token-z");
        let zero = Arc::new(VerifiedToken::for_tests(Duration::ZERO));
        assert!(!cache.insert(z, zero.clone()) && !cache.insert(z, zero));
        let off = TokenCache::new(0);
        assert!(!off.insert(a, result()) && !off.insert(a, result()));
    }

    #[test]
    fn digest_keys_hash_to_their_leading_bytes() {
        use std::hash::BuildHasher;
        let b = std::hash::BuildHasherDefault::<DigestHasher>::default();
        let (x, y) = (hash("token-x"), hash("token-y"));
        let lead = |k: &TokenHash| u64::from_le_bytes(k[..8].try_into().unwrap());
        assert_eq!(b.hash_one(x), lead(&x));
        assert_ne!(b.hash_one(x), b.hash_one(y));
    }

    #[test]
    fn single_use_tokens_take_no_cache_memory() {
        let cache = TokenCache::new(100_000);
        for i in 0..50_000u32 {
            cache.insert(hash(&format!("once-{i}")), result());
        }
        assert_eq!(cache.len(), 0);
        // The doorkeeper is a fixed table: 2^17 slots for 100,000 entries, at most 2^20.
        assert_eq!(Doorkeeper::new(100_000).slots.len(), 1 << 17);
        assert_eq!(Doorkeeper::new(1).slots.len(), 1 << 10);
        assert_eq!(Doorkeeper::new(u64::MAX).slots.len(), 1 << 20);
    }
}
