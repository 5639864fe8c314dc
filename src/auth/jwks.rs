//! Step 5 (keys): one key cache per provider (design §2.3).
//!
//! Keys come only from the configured issuer's discovery document or `jwks_uri`, never from
//! a token. The current key set sits in an `ArcSwap` (lock-free reads), refreshed in the
//! background at the server's `max-age` clamped to `[min_refresh, max_refresh]` with jitter
//! and `If-None-Match`, retried with exponential backoff on failure. An unknown `kid` starts
//! one refetch, shared by every request that waits for it (at most `kid_wait`), and at most
//! one per `min_refetch_interval`; kids still unknown afterwards are remembered for that
//! interval. On fetch failure the last good set is served for up to `max_stale`.
//!
//! The network is behind [`Fetcher`], so tests can drive every failure and use paused time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Algorithm, Provider};
use crate::metrics::JwksMetrics;

/// Most keys accepted in one JWKS.
pub const MAX_KEYS: usize = 100;
/// Unknown kids remembered per provider (the memory is cleared when full).
const MAX_UNKNOWN_KIDS: usize = 1024;
/// First retry delay after a failed fetch; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

// === keys ===

/// One verification key from a JWKS.
pub struct Key {
    pub kid: Option<String>,
    /// The key parsed once for each algorithm it may verify (its type and curve, narrowed
    /// to the JWK's `alg` when it names one): a signature check does no key parsing, and
    /// this list is also what decides which algorithms the key fits.
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
    /// Fingerprint of the key material, to tell whether a cached verification's key is
    /// still published.
    pub id: [u8; 16],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field(
                "algorithms",
                &self.verifiers.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .finish()
    }
}

// === impl Key ===

impl Key {
    /// Whether this key may verify a token signed with `alg` (key type, curve, pinned alg).
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Whether `signature` is this key's signature of `message` under `alg` (false when the
    /// key does not fit `alg`).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, k)| k.verify_sig(message, signature).is_ok())
    }
}

const RSA_ALGS: [(Algorithm, &RsaParameters); 6] = [
    (Algorithm::RS256, &sig::RSA_PKCS1_2048_8192_SHA256),
    (Algorithm::RS384, &sig::RSA_PKCS1_2048_8192_SHA384),
    (Algorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
    (Algorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
    (Algorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
    (Algorithm::PS512, &sig::RSA_PSS_2048_8192_SHA512),
];

/// The parsed RSA public key for each RSA algorithm; `None` when the material is not a
/// valid key.
fn parse_rsa(n: &[u8], e: &[u8]) -> Option<Vec<(Algorithm, ParsedPublicKey)>> {
    let components = RsaPublicKeyComponents { n, e };
    RSA_ALGS
        .iter()
        .map(|(a, params)| Some((*a, components.to_parsed_public_key(params).ok()?)))
        .collect()
}

/// A parsed, filtered JWKS.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<Key>>,
    ids: HashSet<[u8; 16]>,
}

/// Why a JWKS document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the key set is not a JSON object with a \"keys\" array")]
    NotAKeySet,
    #[error("the key set has more than {MAX_KEYS} keys")]
    TooManyKeys,
}

fn b64_len(s: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(s).ok().map(|v| {
        let lead = v.iter().take_while(|&&b| b == 0).count();
        v.len() - lead
    })
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

/// One JWK → a [`Key`], or `None` when it is not a usable signature key: wrong `use` or
/// `key_ops`, symmetric (`oct`), unknown type or curve, an `alg` we do not verify, an RSA
/// modulus under 2048 bits, or malformed members.
fn parse_key(jwk: &Value) -> Option<Key> {
    if str_field(jwk, "use").is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops") {
        let ok = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !ok {
            return None;
        }
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(a) => Some(Algorithm::from_name(a.as_str()?)?),
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(k) => Some(k.as_str()?.to_string()),
    };
    let mut h = Sha256::new();
    let mut verifiers = match str_field(jwk, "kty")? {
        "RSA" => {
            let (n, e) = (str_field(jwk, "n")?, str_field(jwk, "e")?);
            if b64_len(n)? < 256 || b64_len(e)? == 0 {
                return None;
            }
            h.update(b"RSA\0");
            h.update(n);
            h.update(b"\0");
            h.update(e);
            let (n, e) = (
                URL_SAFE_NO_PAD.decode(n).ok()?,
                URL_SAFE_NO_PAD.decode(e).ok()?,
            );
            parse_rsa(&n, &e)?
        }
        "EC" => {
            let (x, y) = (str_field(jwk, "x")?, str_field(jwk, "y")?);
            let (a, v, len): (_, &'static dyn sig::VerificationAlgorithm, _) =
                match str_field(jwk, "crv")? {
                    "P-256" => (Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED, 32),
                    "P-384" => (Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED, 48),
                    _ => return None,
                };
            let (xb, yb) = (
                URL_SAFE_NO_PAD.decode(x).ok()?,
                URL_SAFE_NO_PAD.decode(y).ok()?,
            );
            if xb.len() != len || yb.len() != len {
                return None;
            }
            h.update(b"EC\0");
            h.update(x);
            h.update(b"\0");
            h.update(y);
            // SEC 1 uncompressed point: 0x04 || x || y.
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&xb);
            point.extend_from_slice(&yb);
            vec![(a, ParsedPublicKey::new(v, &point).ok()?)]
        }
        "OKP" => {
            if str_field(jwk, "crv")? != "Ed25519" {
                return None;
            }
            let x = str_field(jwk, "x")?;
            let xb = URL_SAFE_NO_PAD.decode(x).ok()?;
            if xb.len() != 32 {
                return None;
            }
            h.update(b"OKP\0");
            h.update(x);
            let k = ParsedPublicKey::new(&sig::ED25519, &xb).ok()?;
            vec![(Algorithm::EdDSA, k)]
        }
        _ => return None,
    };
    let digest = h.finalize();
    let mut id = [0u8; 16];
    for (o, b) in id.iter_mut().zip(digest.iter()) {
        *o = *b;
    }
    // A pinned alg narrows the key to that algorithm; one its type cannot serve leaves
    // nothing, and the key is unusable.
    if let Some(pinned) = alg {
        verifiers.retain(|(a, _)| *a == pinned);
    }
    if verifiers.is_empty() {
        return None;
    }
    Some(Key { kid, verifiers, id })
}

// === impl KeySet ===

impl KeySet {
    /// Parses a JWKS document, keeping only usable signature keys.
    pub fn parse(body: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::NotAKeySet)?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAKeySet)?;
        if list.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let keys: Vec<Arc<Key>> = list.iter().filter_map(parse_key).map(Arc::new).collect();
        let ids = keys.iter().map(|k| k.id).collect();
        Ok(KeySet { keys, ids })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token: by `kid` (first published key with that kid that fits `alg`);
    /// without a kid, only when exactly one published key fits.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Arc<Key>> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg)),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                let first = fitting.next()?;
                fitting.next().is_none().then_some(first)
            }
        }
    }

    /// Whether a key with this fingerprint is published.
    pub fn contains_id(&self, id: &[u8; 16]) -> bool {
        self.ids.contains(id)
    }
}

// === fetching ===

/// An HTTP response as the key cache needs it.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: u16,
    pub body: Bytes,
    pub etag: Option<String>,
    /// `Cache-Control: max-age`, when given.
    pub max_age: Option<Duration>,
}

/// The network seam: a GET with an optional `If-None-Match`. Errors are short descriptions
/// fit for logs and `/readyz` (they never contain a token).
pub trait Fetcher: Send + Sync + 'static {
    fn get<'a>(
        &'a self,
        url: &'a str,
        etag: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>>;
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeySource {
    pub issuer: String,
    pub discovery_url: Option<String>,
    pub jwks_uri: Option<String>,
    pub insecure_allow_http: bool,
}

impl KeySource {
    pub fn of(p: &Provider) -> Self {
        Self {
            issuer: p.issuer.clone(),
            discovery_url: p.discovery_url.clone(),
            jwks_uri: p.jwks_uri.clone(),
            insecure_allow_http: p.insecure_allow_http,
        }
    }

    /// The discovery document URL.
    pub fn discovery(&self) -> String {
        self.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            )
        })
    }

    /// A discovered `jwks_uri` must meet the same bar as configured URLs.
    fn acceptable_url(&self, url: &str) -> bool {
        let Ok(uri) = url.parse::<http::Uri>() else {
            return false;
        };
        match uri.scheme_str() {
            Some("https") => uri.host().is_some(),
            Some("http") => self.insecure_allow_http || crate::config::is_loopback(&uri),
            _ => false,
        }
    }
}

/// Refresh timing of one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub min_refetch_interval: Duration,
    pub kid_wait: Duration,
    pub max_stale: Duration,
}

impl Timing {
    pub fn of(p: &Provider) -> Self {
        Self {
            min_refresh: p.min_refresh,
            max_refresh: p.max_refresh,
            min_refetch_interval: p.min_refetch_interval,
            kid_wait: p.kid_wait,
            max_stale: p.max_stale,
        }
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<Key>),
    /// The keys are there, this kid is not (401).
    UnknownKey,
    /// No usable keys: never fetched, or stale beyond `max_stale` (503).
    Unavailable,
}

#[derive(Default)]
struct KeyState {
    keys: Option<Arc<KeySet>>,
    /// Last successful fetch (200 or 304).
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct FetchCtx {
    jwks_uri: Option<String>,
    etag: Option<String>,
}

/// Outcome of a fetch, published to everyone waiting for it.
type Outcome = Option<Result<Option<Duration>, String>>;

#[derive(Default)]
struct Refetch {
    /// Start of the last fetch triggered by an unknown kid (the rate limit).
    last_started: Option<Instant>,
    /// The fetch in flight, if any (background or kid-triggered): joined, never duplicated.
    inflight: Option<watch::Receiver<Outcome>>,
    unknown: HashMap<String, Instant>,
}

/// Operator-facing state, for `/readyz`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyStatus {
    pub keys: usize,
    pub ready: bool,
    pub stale: bool,
    /// RFC 3339 time of the last successful fetch.
    pub last_refresh: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct StatusInner {
    last_error: Option<String>,
    last_success: Option<SystemTime>,
    failing: bool,
}

/// The key cache of one provider.
pub struct ProviderKeys {
    name: String,
    source: KeySource,
    timing: Timing,
    fetcher: Arc<dyn Fetcher>,
    state: ArcSwap<KeyState>,
    fetch: tokio::sync::Mutex<FetchCtx>,
    refetch: Mutex<Refetch>,
    status: Mutex<StatusInner>,
    metrics: JwksMetrics,
}

// === impl ProviderKeys ===

impl ProviderKeys {
    /// Creates the cache and starts its background refresh (the first fetch starts at once;
    /// nothing waits for it).
    pub fn start(
        name: &str,
        source: KeySource,
        timing: Timing,
        fetcher: Arc<dyn Fetcher>,
        metrics: JwksMetrics,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            name: name.to_string(),
            source,
            timing,
            fetcher,
            state: ArcSwap::from_pointee(KeyState::default()),
            fetch: tokio::sync::Mutex::new(FetchCtx::default()),
            refetch: Mutex::new(Refetch::default()),
            status: Mutex::new(StatusInner::default()),
            metrics,
        });
        // The first fetch is in flight before anyone can look up a key, so early requests
        // join it instead of spending the unknown-kid refetch budget.
        let first = this.join_or_start(Instant::now(), false);
        tokio::spawn(refresh_loop(Arc::downgrade(&this), first));
        this
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The current key set, unless there is none or it is older than `max_stale`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        let st = self.state.load();
        let fresh_enough = st
            .fetched_at
            .is_some_and(|t| t.elapsed() <= self.timing.max_stale);
        if fresh_enough { st.keys.clone() } else { None }
    }

    /// Finds the key for a token, refetching once (shared, rate-limited) for an unknown kid.
    pub async fn lookup(self: &Arc<Self>, kid: Option<&str>, alg: Algorithm) -> Lookup {
        if let Some(set) = self.current()
            && let Some(k) = set.find(kid, alg)
        {
            return Lookup::Found(k.clone());
        }
        let now = Instant::now();
        let remembered = kid.is_some_and(|k| {
            self.lock_refetch()
                .unknown
                .get(k)
                .is_some_and(|t| now.duration_since(*t) < self.timing.min_refetch_interval)
        });
        if !remembered && let Some(mut done) = self.join_or_start(now, true) {
            let _ =
                tokio::time::timeout(self.timing.kid_wait, done.wait_for(Option::is_some)).await;
        }
        match self.current() {
            None => Lookup::Unavailable,
            Some(set) => match set.find(kid, alg) {
                Some(k) => Lookup::Found(k.clone()),
                None => {
                    if let Some(k) = kid {
                        let mut r = self.lock_refetch();
                        if r.unknown.len() >= MAX_UNKNOWN_KIDS {
                            r.unknown.clear();
                        }
                        r.unknown.insert(k.to_string(), now);
                    }
                    Lookup::UnknownKey
                }
            },
        }
    }

    fn lock_refetch(&self) -> std::sync::MutexGuard<'_, Refetch> {
        self.refetch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the fetch in flight, or starts one. A fetch for an unknown kid
    /// (`kid_triggered`) is refused when another such fetch started within
    /// `min_refetch_interval`. The fetch runs in its own task: a caller that gives up does
    /// not cancel it.
    fn join_or_start(
        self: &Arc<Self>,
        now: Instant,
        kid_triggered: bool,
    ) -> Option<watch::Receiver<Outcome>> {
        let mut r = self.lock_refetch();
        if let Some(rx) = &r.inflight
            && rx.borrow().is_none()
        {
            return Some(rx.clone());
        }
        if kid_triggered {
            if r.last_started
                .is_some_and(|t| now.duration_since(t) < self.timing.min_refetch_interval)
            {
                return None;
            }
            r.last_started = Some(now);
        }
        let (tx, rx) = watch::channel(None);
        r.inflight = Some(rx.clone());
        drop(r);
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.fetch_now().await;
            let _ = tx.send(Some(outcome));
        });
        Some(rx)
    }

    /// Fetches now (discovery first when the JWKS URL is not known yet) and installs the
    /// result. Returns the server's `max-age` on success. Fetches are serialized.
    async fn fetch_now(&self) -> Result<Option<Duration>, String> {
        let mut ctx = self.fetch.lock().await;
        let result = self.fetch_locked(&mut ctx).await;
        let mut status = self.lock_status();
        match &result {
            Ok(_) => {
                status.last_error = None;
                status.failing = false;
                status.last_success = Some(SystemTime::now());
                self.metrics.last_success.set(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0),
                );
            }
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "key set fetch failed");
                self.metrics.error.inc();
                status.last_error = Some(e.clone());
                status.failing = true;
                // The discovery document may have moved the JWKS: discover again next time.
                if self.source.jwks_uri.is_none() {
                    ctx.jwks_uri = None;
                }
            }
        }
        let usable = self.current();
        self.metrics
            .keys
            .set(usable.as_ref().map_or(0, |s| s.len() as i64));
        self.metrics
            .stale
            .set(i64::from(status.failing && usable.is_some()));
        result
    }

    async fn fetch_locked(&self, ctx: &mut FetchCtx) -> Result<Option<Duration>, String> {
        let jwks_uri = match (&self.source.jwks_uri, &ctx.jwks_uri) {
            (Some(u), _) | (None, Some(u)) => u.clone(),
            (None, None) => {
                let url = self.source.discovery();
                let resp = self.fetcher.get(&url, None).await?;
                if resp.status != 200 {
                    return Err(format!("discovery answered HTTP {}", resp.status));
                }
                let doc: Value = serde_json::from_slice(&resp.body)
                    .map_err(|_| "discovery document is not JSON".to_string())?;
                let issuer = doc.get("issuer").and_then(Value::as_str);
                // OpenID Connect Discovery §4.3: the issuer must be exactly ours.
                if issuer != Some(self.source.issuer.as_str()) {
                    return Err("discovery document names a different issuer".into());
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| "discovery document has no jwks_uri".to_string())?;
                if !self.source.acceptable_url(uri) {
                    return Err("discovered jwks_uri is not https (or loopback)".into());
                }
                ctx.jwks_uri = Some(uri.to_string());
                uri.to_string()
            }
        };
        let resp = self.fetcher.get(&jwks_uri, ctx.etag.as_deref()).await?;
        let now = Instant::now();
        match resp.status {
            304 if self.state.load().keys.is_some() => {
                self.metrics.not_modified.inc();
                let keys = self.state.load().keys.clone();
                self.state.store(Arc::new(KeyState {
                    keys,
                    fetched_at: Some(now),
                }));
                Ok(resp.max_age)
            }
            200 => {
                let set = KeySet::parse(&resp.body).map_err(|e| e.to_string())?;
                if set.is_empty() {
                    return Err("the key set has no usable signature key".into());
                }
                self.metrics.success.inc();
                tracing::info!(provider = %self.name, keys = set.len(), "key set loaded");
                ctx.etag = resp.etag;
                self.state.store(Arc::new(KeyState {
                    keys: Some(Arc::new(set)),
                    fetched_at: Some(now),
                }));
                Ok(resp.max_age)
            }
            s => Err(format!("key set answered HTTP {s}")),
        }
    }

    /// State for `/readyz`.
    pub fn status(&self) -> KeyStatus {
        let usable = self.current();
        let st = self.lock_status();
        KeyStatus {
            keys: usable.as_ref().map_or(0, |s| s.len()),
            ready: usable.is_some(),
            stale: st.failing && usable.is_some(),
            last_refresh: st
                .last_success
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            last_error: st.last_error.clone(),
        }
    }

    /// How long to wait after a successful fetch: the server's `max-age` clamped to the
    /// configured bounds (`min_refresh` when it gave none).
    fn refresh_interval(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.timing.min_refresh)
            .clamp(self.timing.min_refresh, self.timing.max_refresh)
    }
}

/// A factor in [0.9, 1.0): spreads refreshes of many sidecars over time.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let f = 0.9 + (r % 1000) as f64 / 10_000.0;
    d.mul_f64(f)
}

/// The background refresh of one provider; ends when the cache is dropped.
async fn refresh_loop(weak: Weak<ProviderKeys>, first: Option<watch::Receiver<Outcome>>) {
    let mut backoff = INITIAL_BACKOFF;
    let mut first = first;
    loop {
        let Some(this) = weak.upgrade() else { return };
        let fetch = first
            .take()
            .or_else(|| this.join_or_start(Instant::now(), false));
        let outcome = match fetch {
            Some(mut rx) => match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone().unwrap_or(Err("fetch abandoned".into())),
                Err(_) => Err("fetch abandoned".into()),
            },
            None => Err("fetch not started".into()),
        };
        let wait = match outcome {
            Ok(max_age) => {
                backoff = INITIAL_BACKOFF;
                this.refresh_interval(max_age)
            }
            Err(_) => {
                let w = backoff;
                backoff = (backoff * 2)
                    .min(MAX_BACKOFF.min(this.timing.min_refresh.max(INITIAL_BACKOFF)));
                w
            }
        };
        drop(this);
        tokio::time::sleep(jitter(wait)).await;
    }
}

/// The key caches of all providers, kept across config snapshots: a provider whose name,
/// key source and timing are unchanged keeps its cache (no refetch on reload).
pub struct KeyRegistry {
    fetcher: Arc<dyn Fetcher>,
    caches: Mutex<HashMap<String, Arc<ProviderKeys>>>,
}

impl KeyRegistry {
    pub fn new(fetcher: Arc<dyn Fetcher>) -> Self {
        Self {
            fetcher,
            caches: Mutex::new(HashMap::new()),
        }
    }

    /// The caches for `providers` (enabled ones only), reusing unchanged ones; caches of
    /// providers no longer configured are dropped (their refresh tasks end).
    pub fn sync(
        &self,
        providers: &[Provider],
        metrics: &crate::metrics::Metrics,
    ) -> HashMap<String, Arc<ProviderKeys>> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        for p in providers.iter().filter(|p| p.enabled) {
            let (source, timing) = (KeySource::of(p), Timing::of(p));
            let keys = match caches.get(&p.name) {
                Some(k) if k.source == source && k.timing == timing => k.clone(),
                _ => ProviderKeys::start(
                    &p.name,
                    source,
                    timing,
                    self.fetcher.clone(),
                    metrics.jwks(&p.name),
                ),
            };
            out.insert(p.name.clone(), keys);
        }
        *caches = out.clone();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Script = dyn Fn(&str, Option<&str>) -> Result<FetchResponse, String> + Send + Sync;

    /// A fetcher driven by a closure; records every call.
    struct Fake {
        script: Mutex<Box<Script>>,
        calls: Mutex<Vec<(String, Option<String>)>>,
        count: AtomicUsize,
    }

    impl Fake {
        fn new(
            f: impl Fn(&str, Option<&str>) -> Result<FetchResponse, String> + Send + Sync + 'static,
        ) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(Box::new(f)),
                calls: Mutex::new(Vec::new()),
                count: AtomicUsize::new(0),
            })
        }
        fn set(
            &self,
            f: impl Fn(&str, Option<&str>) -> Result<FetchResponse, String> + Send + Sync + 'static,
        ) {
            *self.script.lock().unwrap() = Box::new(f);
        }
        fn count(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }
    }

    impl Fetcher for Fake {
        fn get<'a>(
            &'a self,
            url: &'a str,
            etag: Option<&'a str>,
        ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>> {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.calls
                .lock()
                .unwrap()
                .push((url.to_string(), etag.map(str::to_string)));
            let r = (self.script.lock().unwrap())(url, etag);
            Box::pin(async move { r })
        }
    }

    fn rsa_jwk(kid: &str, fill: u8) -> Value {
        // A 2048-bit odd modulus: parses as an RSA public key (nothing verifies with it).
        let mut n = vec![fill | 0x80; 256];
        n[255] |= 1;
        let n = URL_SAFE_NO_PAD.encode(n);
        serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"})
    }

    fn jwks(keys: &[Value]) -> Bytes {
        Bytes::from(serde_json::json!({ "keys": keys }).to_string())
    }

    fn ok(body: Bytes, max_age: Option<u64>, etag: Option<&str>) -> Result<FetchResponse, String> {
        Ok(FetchResponse {
            status: 200,
            body,
            etag: etag.map(str::to_string),
            max_age: max_age.map(Duration::from_secs),
        })
    }

    fn timing() -> Timing {
        Timing {
            min_refresh: Duration::from_secs(300),
            max_refresh: Duration::from_secs(86_400),
            min_refetch_interval: Duration::from_secs(10),
            kid_wait: Duration::from_secs(2),
            max_stale: Duration::from_secs(3600),
        }
    }

    fn source() -> KeySource {
        KeySource {
            issuer: "https://idp.example.com".into(),
            discovery_url: None,
            jwks_uri: Some("https://idp.example.com/jwks".into()),
            insecure_allow_http: false,
        }
    }

    fn metrics() -> JwksMetrics {
        crate::metrics::Metrics::new().unwrap().jwks("t")
    }

    /// Lets the spawned refresh task run until it sleeps.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn jwk_filtering() {
        let good = rsa_jwk("a", 1);
        let mut enc = rsa_jwk("b", 2);
        enc["use"] = "enc".into();
        let oct = serde_json::json!({"kty": "oct", "kid": "c", "k": "c2VjcmV0"});
        let mut small = rsa_jwk("d", 3);
        small["n"] = URL_SAFE_NO_PAD.encode(vec![0xffu8; 128]).into();
        let mut hs = rsa_jwk("e", 4);
        hs["alg"] = "HS256".into();
        let mut mismatch = rsa_jwk("f", 5);
        mismatch["alg"] = "ES256".into();
        // The P-256 base point: a valid public key.
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "g",
            "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
            "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"});
        // A point off the curve: refused when the set is loaded, not when a token comes.
        let ec_off_curve = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "j",
            "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])});
        let ec_bad_curve = serde_json::json!({"kty": "EC", "crv": "P-521", "kid": "h",
            "x": URL_SAFE_NO_PAD.encode([1u8; 66]), "y": URL_SAFE_NO_PAD.encode([2u8; 66])});
        let mut ops = rsa_jwk("i", 6);
        ops["key_ops"] = serde_json::json!(["encrypt"]);
        let set = KeySet::parse(&jwks(&[
            good,
            enc,
            oct,
            small,
            hs,
            mismatch,
            ec,
            ec_bad_curve,
            ops,
            ec_off_curve,
        ]))
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.find(Some("a"), Algorithm::RS256).is_some());
        // The JWK pins RS256: the same key cannot verify PS256 or ES256.
        assert!(set.find(Some("a"), Algorithm::PS256).is_none());
        assert!(set.find(Some("g"), Algorithm::ES256).is_some());
        assert!(set.find(Some("g"), Algorithm::ES384).is_none());
        // Without a kid: only when exactly one key fits.
        assert!(set.find(None, Algorithm::ES256).is_some());
        let two = KeySet::parse(&jwks(&[rsa_jwk("a", 1), rsa_jwk("b", 2)])).unwrap();
        assert!(two.find(None, Algorithm::RS256).is_none());
    }

    #[test]
    fn oversized_or_malformed_sets_are_refused() {
        let many: Vec<Value> = (0..101).map(|i| rsa_jwk(&i.to_string(), 1)).collect();
        assert_eq!(
            KeySet::parse(&jwks(&many)).unwrap_err(),
            JwksError::TooManyKeys
        );
        assert_eq!(
            KeySet::parse(b"garbage").unwrap_err(),
            JwksError::NotAKeySet
        );
        assert_eq!(
            KeySet::parse(b"{\"keys\":5}").unwrap_err(),
            JwksError::NotAKeySet
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_follows_max_age_clamped_to_bounds() {
        let fake = Fake::new(|_, _| ok(jwks(&[rsa_jwk("a", 1)]), Some(1), None));
        let keys = ProviderKeys::start("t", source(), timing(), fake.clone(), metrics());
        settle().await;
        assert_eq!(fake.count(), 1);
        assert!(keys.current().is_some());
        // max-age 1 s is clamped up to min_refresh (300 s, with up to 10 % jitter below).
        tokio::time::sleep(Duration::from_secs(260)).await;
        assert_eq!(fake.count(), 1);
        tokio::time::sleep(Duration::from_secs(41)).await;
        assert_eq!(fake.count(), 2);
        // A long max-age is clamped down to max_refresh (24 h).
        fake.set(|_, _| ok(jwks(&[rsa_jwk("a", 1)]), Some(30 * 86_400), None));
        tokio::time::sleep(Duration::from_secs(301)).await;
        let n = fake.count();
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        assert_eq!(fake.count(), n + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_stale_keys_are_served_until_max_stale() {
        let fake = Fake::new(|_, _| ok(jwks(&[rsa_jwk("a", 1)]), None, Some("\"v1\"")));
        let keys = ProviderKeys::start("t", source(), timing(), fake.clone(), metrics());
        settle().await;
        assert!(keys.status().ready);
        fake.set(|_, _| Err("down".into()));
        // Step (in paused time) to the first failed refresh, due within 300 s.
        while fake.count() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let st = keys.status();
        assert!(st.ready && st.stale, "{st:?}");
        assert_eq!(st.last_error.as_deref(), Some("down"));
        // Backoff 1, 2, 4, 8, 16 s (each 90-100 % with jitter): 5 more attempts by 31 s,
        // the sixth not before 56 s.
        tokio::time::sleep(Duration::from_millis(31_500)).await;
        assert_eq!(fake.count(), 7);
        // The old keys keep working until max_stale (1 h after the last success)...
        let found = keys.lookup(Some("a"), Algorithm::RS256).await;
        assert!(matches!(found, Lookup::Found(_)));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // ...and not after it.
        assert!(keys.current().is_none());
        assert!(!keys.status().ready);
        // Backoff never exceeds min_refresh (300 s): about 12 attempts per hour at the cap.
        let n = fake.count();
        assert!((17..=30).contains(&n), "{n} fetches");
        // Recovery: the next attempt installs keys again, with no restart.
        fake.set(|_, _| ok(jwks(&[rsa_jwk("a", 1)]), None, None));
        tokio::time::sleep(Duration::from_secs(301)).await;
        assert!(keys.status().ready);
        assert!(!keys.status().stale);
    }

    #[tokio::test(start_paused = true)]
    async fn etag_is_sent_and_304_keeps_the_keys_fresh() {
        let fake = Fake::new(|_, etag| match etag {
            None => ok(jwks(&[rsa_jwk("a", 1)]), None, Some("\"v1\"")),
            Some(_) => Ok(FetchResponse {
                status: 304,
                body: Bytes::new(),
                etag: None,
                max_age: None,
            }),
        });
        let keys = ProviderKeys::start("t", source(), timing(), fake.clone(), metrics());
        settle().await;
        tokio::time::sleep(Duration::from_secs(3000)).await;
        let calls = fake.calls.lock().unwrap().clone();
        assert!(calls.len() >= 9, "{calls:?}");
        assert!(
            calls
                .iter()
                .skip(1)
                .all(|(_, e)| e.as_deref() == Some("\"v1\""))
        );
        // 304s count as successful refreshes: the keys are not stale.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(keys.current().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_refetch_once_per_interval_shared_by_all_waiters() {
        let fake = Fake::new(|_, _| ok(jwks(&[rsa_jwk("a", 1)]), None, None));
        let keys = ProviderKeys::start("t", source(), timing(), fake.clone(), metrics());
        settle().await;
        assert_eq!(fake.count(), 1);
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let k = keys.clone();
            tasks.push(tokio::spawn(async move {
                k.lookup(Some(&format!("random-{i}")), Algorithm::RS256)
                    .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Lookup::UnknownKey));
        }
        assert_eq!(fake.count(), 2, "one refetch for 1000 unknown kids");
        // The same kid again, inside the interval: remembered, no fetch.
        assert!(matches!(
            keys.lookup(Some("random-1"), Algorithm::RS256).await,
            Lookup::UnknownKey
        ));
        assert_eq!(fake.count(), 2);
        // A rotated key appears: after the interval, its first use refetches and finds it.
        fake.set(|_, _| ok(jwks(&[rsa_jwk("a", 1), rsa_jwk("b", 2)]), None, None));
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(matches!(
            keys.lookup(Some("b"), Algorithm::RS256).await,
            Lookup::Found(_)
        ));
        assert_eq!(fake.count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_during_the_first_fetch_join_it_without_using_the_refetch_budget() {
        let fake = Fake::new(|_, _| ok(jwks(&[rsa_jwk("a", 1)]), None, None));
        let keys = ProviderKeys::start("t", source(), timing(), fake.clone(), metrics());
        // No settling: the background fetch is still starting.
        assert!(matches!(
            keys.lookup(Some("a"), Algorithm::RS256).await,
            Lookup::Found(_)
        ));
        assert_eq!(fake.count(), 1);
        // A key rotated right away is still found: the budget was not spent above.
        fake.set(|_, _| ok(jwks(&[rsa_jwk("a", 1), rsa_jwk("b", 2)]), None, None));
        assert!(matches!(
            keys.lookup(Some("b"), Algorithm::RS256).await,
            Lookup::Found(_)
        ));
        assert_eq!(fake.count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_fetch_makes_callers_wait_at_most_kid_wait() {
        let fake = Fake::new(|_, _| Err("down".into()));
        let keys = ProviderKeys::start("t", source(), timing(), fake.clone(), metrics());
        settle().await;
        let started = Instant::now();
        assert!(matches!(
            keys.lookup(Some("a"), Algorithm::RS256).await,
            Lookup::Unavailable
        ));
        assert!(started.elapsed() <= Duration::from_secs(2));
    }

    #[test]
    fn discovered_key_urls_must_be_https_or_loopback() {
        let strict = source();
        assert!(strict.acceptable_url("https://idp.example.com/keys"));
        assert!(strict.acceptable_url("http://127.0.0.1:8080/keys"));
        assert!(strict.acceptable_url("http://[::1]:8080/keys"));
        assert!(strict.acceptable_url("http://localhost/keys"));
        assert!(!strict.acceptable_url("http://idp.example.com/keys"));
        assert!(!strict.acceptable_url("ftp://idp.example.com/keys"));
        assert!(!strict.acceptable_url("file:///etc/passwd"));
        assert!(!strict.acceptable_url("not a url"));
        let lax = KeySource {
            insecure_allow_http: true,
            ..source()
        };
        assert!(lax.acceptable_url("http://idp.internal/keys"));
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_must_name_our_issuer() {
        let src = KeySource {
            jwks_uri: None,
            ..source()
        };
        let fake = Fake::new(|url, _| {
            if url.ends_with("/.well-known/openid-configuration") {
                ok(
                    Bytes::from(
                        r#"{"issuer":"https://evil.example.com","jwks_uri":"https://idp.example.com/jwks"}"#,
                    ),
                    None,
                    None,
                )
            } else {
                ok(jwks(&[rsa_jwk("a", 1)]), None, None)
            }
        });
        let keys = ProviderKeys::start("t", src.clone(), timing(), fake.clone(), metrics());
        settle().await;
        assert!(keys.current().is_none());
        assert!(
            keys.status()
                .last_error
                .unwrap()
                .contains("different issuer")
        );
        let calls = fake.calls.lock().unwrap().clone();
        assert!(
            calls
                .iter()
                .all(|(u, _)| u.ends_with("openid-configuration")),
            "{calls:?}"
        );

        // The right issuer: discovery, then the advertised jwks_uri.
        let fake = Fake::new(|url, _| {
            if url == "https://idp.example.com/.well-known/openid-configuration" {
                ok(
                    Bytes::from(
                        r#"{"issuer":"https://idp.example.com","jwks_uri":"https://idp.example.com/keys"}"#,
                    ),
                    None,
                    None,
                )
            } else if url == "https://idp.example.com/keys" {
                ok(jwks(&[rsa_jwk("a", 1)]), None, None)
            } else {
                Err(format!("unexpected {url}"))
            }
        });
        let keys = ProviderKeys::start("t", src, timing(), fake.clone(), metrics());
        settle().await;
        assert!(keys.current().is_some(), "{:?}", keys.status());
    }
}
