//! Step 5: token verification (design §2.2). Order: structure and strict base64url → header
//! (strict JSON; `alg` on the allow-list, never `none` or HS*; no `crit`) → claims (strict
//! JSON, no duplicate names, registered claims of the right JSON type) → provider by exact
//! `iss` among enabled providers (no network for any other issuer) → `typ`, subject, `sub`
//! present, `exp`/`nbf` with leeway, `aud` (all before any key work) → key by `kid` from that
//! provider's cached JWKS, fitting the algorithm → signature, with the key parsed once when
//! the JWKS was loaded (aws-lc-rs) → `iat` and lifetime. `jku`, `x5u`, `jwk` and `x5c` are
//! never read.
//!
//! jsonwebtoken's `decode` rebuilds the key on every call (14% of an RS256 check here), so
//! the request path does not use it; the tests hold this verifier to it instead: for the
//! same tokens and settings both must accept and refuse alike.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::cache::{self, TokenCache};
use super::json::parse_object;
use super::jwks::{Lookup, ProviderKeys};
use crate::config::{Algorithm, Provider};
use crate::error::AuthError;

/// A token that passed every check.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Provider name.
    pub provider: String,
    /// Value of the provider's subject claim.
    pub subject: String,
    pub claims: Map<String, Value>,
    pub exp: u64,
    /// How long the cache may keep this result.
    pub cache_ttl: Duration,
    key_id: [u8; 16],
    provider_fingerprint: [u8; 16],
}

impl VerifiedToken {
    /// A result for cache tests.
    #[cfg(test)]
    pub(crate) fn for_tests(cache_ttl: Duration) -> Self {
        Self {
            provider: "p".into(),
            subject: "s".into(),
            claims: Map::new(),
            exp: u64::MAX,
            cache_ttl,
            key_id: [0; 16],
            provider_fingerprint: [0; 16],
        }
    }

    /// Claims taken as given, without any verification (`tollgate explain --claims`).
    pub fn unverified(provider: &Provider, claims: Map<String, Value>) -> Option<Self> {
        let subject = claim(&claims, &provider.subject_claim)?
            .as_str()?
            .to_string();
        Some(Self {
            provider: provider.name.clone(),
            subject,
            exp: numeric_date(&claims, "exp").ok().flatten().unwrap_or(0),
            claims,
            cache_ttl: Duration::ZERO,
            key_id: [0; 16],
            provider_fingerprint: [0; 16],
        })
    }
}

/// One enabled provider, compiled for verification.
pub struct ProviderVerifier {
    pub config: Provider,
    pub keys: Arc<ProviderKeys>,
    /// Top-level claim names a verified token keeps (`None`: all). The rest are dropped
    /// before the result is cached: a cache entry holds what identity resolution and
    /// permissions read, not the whole token.
    kept: Option<HashSet<String>>,
    fingerprint: [u8; 16],
}

/// Fingerprint of everything that decides whether a token of this provider is valid: a
/// cached verification made under another fingerprint is not reused.
fn fingerprint(p: &Provider, kept: Option<&BTreeSet<String>>) -> [u8; 16] {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update(s.as_bytes());
        h.update([0u8]);
    };
    part(&p.name);
    part(&p.issuer);
    part(p.discovery_url.as_deref().unwrap_or(""));
    part(p.jwks_uri.as_deref().unwrap_or(""));
    for a in &p.audiences {
        part(a);
    }
    part("|");
    for a in &p.algorithms {
        part(&format!("{a:?}"));
    }
    part(&p.leeway.as_secs().to_string());
    part(&format!("{:?}", p.max_token_lifetime));
    part(p.typ.as_deref().unwrap_or(""));
    part(&p.subject_claim);
    part(&p.enabled.to_string());
    match kept {
        None => part("*"),
        Some(set) => {
            part("kept");
            for k in set {
                part(k);
            }
        }
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(d.iter()) {
        *o = *b;
    }
    out
}

impl ProviderVerifier {
    /// A verifier that keeps every claim of a verified token.
    pub fn new(config: Provider, keys: Arc<ProviderKeys>) -> Self {
        Self {
            fingerprint: fingerprint(&config, None),
            config,
            keys,
            kept: None,
        }
    }

    /// A verifier that keeps only the claims this configuration reads: the provider's
    /// subject, email, name, groups and admin claims, `email_verified`, `scope` and `scp`,
    /// and the claims of the identity mappings given. Both the whole dotted path and its
    /// first segment are kept (see [`claim`]). The kept set is part of the fingerprint, so
    /// a reload that reads other claims does not use entries cached without them.
    pub fn keeping<'a>(
        config: Provider,
        keys: Arc<ProviderKeys>,
        mapping_claims: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let c = &config.claims;
        let paths = [
            config.subject_claim.as_str(),
            &c.email,
            &c.name,
            &c.groups,
            &c.is_admin,
            "email_verified",
            "scope",
            "scp",
        ];
        let mut kept = BTreeSet::new();
        let mut keep = |path: &str| {
            kept.insert(path.to_string());
            if let Some((first, _)) = path.split_once('.') {
                kept.insert(first.to_string());
            }
        };
        paths.into_iter().for_each(&mut keep);
        mapping_claims.into_iter().for_each(&mut keep);
        Self {
            fingerprint: fingerprint(&config, Some(&kept)),
            config,
            keys,
            kept: Some(kept.into_iter().collect()),
        }
    }
}

/// Verifies tokens for the providers of one config snapshot.
#[derive(Default)]
pub struct Verifier {
    by_issuer: HashMap<String, Arc<ProviderVerifier>>,
    by_name: HashMap<String, Arc<ProviderVerifier>>,
}

fn b64(seg: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(seg)
        .map_err(|_| AuthError::Malformed)
}

fn unix_now(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A NumericDate (RFC 7519 §2): a JSON number, not a string. Fractions are truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.is_finite())
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(AuthError::InvalidClaim),
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

/// `claims[name]`. The claims a cached token keeps are a handful, so a scan that compares
/// names is cheaper than hashing the name (SipHash) for the map's index; larger maps (a
/// whole token being verified) use the index.
pub fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if claims.len() <= 16 {
        claims.iter().find_map(|(k, v)| (k == name).then_some(v))
    } else {
        claims.get(name)
    }
}

/// Reads a claim by dotted path (`realm_access.roles`). A top-level claim whose name is the
/// whole path wins, so namespaced claims such as `https://example.com/roles` (Auth0) work.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = lookup(claims, path) {
        return Some(v);
    }
    // Only a dotted path has a nested reading; for a plain name that would be the same
    // lookup (and hash) again.
    if !path.contains('.') {
        return None;
    }
    let mut parts = path.split('.');
    let mut cur = lookup(claims, parts.next()?)?;
    for p in parts {
        cur = lookup(cur.as_object()?, p)?;
    }
    Some(cur)
}

impl Verifier {
    pub fn new(providers: Vec<ProviderVerifier>) -> Self {
        let mut v = Verifier::default();
        for p in providers {
            let p = Arc::new(p);
            if p.config.enabled {
                v.by_issuer.insert(p.config.issuer.clone(), p.clone());
            }
            v.by_name.insert(p.config.name.clone(), p);
        }
        v
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<ProviderVerifier>> {
        self.by_name.values()
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderVerifier>> {
        self.by_name.get(name)
    }

    /// The enabled provider for an `iss` value.
    pub fn provider_by_issuer(&self, iss: &str) -> Option<&Arc<ProviderVerifier>> {
        self.by_issuer.get(iss)
    }

    /// Whether a cached result may still be used under this snapshot.
    fn still_valid(&self, t: &VerifiedToken, now: SystemTime) -> bool {
        let Some(p) = self.by_name.get(&t.provider) else {
            return false;
        };
        p.config.enabled
            && p.fingerprint == t.provider_fingerprint
            && t.exp.saturating_add(p.config.leeway.as_secs()) >= unix_now(now)
            && p.keys
                .current()
                .is_some_and(|set| set.contains_id(&t.key_id))
    }

    /// Verifies `token`, using and filling `cache`. Returns whether it was a cache hit.
    pub async fn verify(
        &self,
        token: &str,
        cache: &TokenCache,
        max_ttl: Duration,
    ) -> Result<(Arc<VerifiedToken>, bool), AuthError> {
        let now = SystemTime::now();
        let key = cache::hash(token);
        if let Some(hit) = cache.get(&key) {
            if self.still_valid(&hit, now) {
                return Ok((hit, true));
            }
            cache.remove(&key);
        }
        let verified = Arc::new(self.verify_uncached(token, now, max_ttl).await?);
        cache.insert(key, verified.clone());
        Ok((verified, false))
    }

    /// Verifies without the cache (benchmarks measure the cold path with it).
    pub async fn verify_uncached(
        &self,
        token: &str,
        now: SystemTime,
        max_ttl: Duration,
    ) -> Result<VerifiedToken, AuthError> {
        // Structure: exactly three non-empty base64url segments.
        let mut segs = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (segs.next(), segs.next(), segs.next(), segs.next())
        else {
            return Err(AuthError::Malformed);
        };
        if h.is_empty() || p.is_empty() || s.is_empty() {
            return Err(AuthError::Malformed);
        }
        let header = parse_object(&b64(h)?).ok_or(AuthError::Malformed)?;
        let signature = b64(s)?;
        let claims = parse_object(&b64(p)?).ok_or(AuthError::Malformed)?;

        // Header: the token never chooses the key type; the config's allow-list does.
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthError::Malformed)?;
        let alg = Algorithm::from_name(alg_name).ok_or(AuthError::UnsupportedAlgorithm)?;
        if header.contains_key("crit") {
            return Err(AuthError::CriticalHeader);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.as_str()),
            Some(_) => return Err(AuthError::Malformed),
        };
        let typ = match header.get("typ") {
            None => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(_) => return Err(AuthError::Malformed),
        };

        // Registered claims must have their JSON types before anything else looks at them.
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(AuthError::InvalidClaim),
            None => return Err(AuthError::MissingClaim),
        };
        let exp = numeric_date(&claims, "exp")?.ok_or(AuthError::MissingClaim)?;
        let nbf = numeric_date(&claims, "nbf")?;
        let iat = numeric_date(&claims, "iat")?;
        match claims.get("aud") {
            Some(Value::String(_)) => {}
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
            Some(_) => return Err(AuthError::InvalidClaim),
            None => return Err(AuthError::MissingClaim),
        }
        if claims.get("sub").is_some_and(|s| !s.is_string()) {
            return Err(AuthError::InvalidClaim);
        }

        // Provider by exact issuer: nothing is fetched for an issuer we do not know.
        let provider = self.by_issuer.get(iss).ok_or(AuthError::UnknownIssuer)?;
        let cfg = &provider.config;
        if !cfg.algorithms.contains(&alg) {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        if let Some(want) = &cfg.typ {
            // RFC 9068 §4: "at+jwt" and "application/at+jwt" are the same type.
            let norm = |t: &str| {
                let t = t.to_ascii_lowercase();
                t.strip_prefix("application/")
                    .map(str::to_string)
                    .unwrap_or(t)
            };
            if typ.map(norm) != Some(norm(want)) {
                return Err(AuthError::WrongType);
            }
        }
        let subject = match claim(&claims, &cfg.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(AuthError::InvalidClaim),
            None => return Err(AuthError::MissingClaim),
        };

        // Registered claims (RFC 7519 §4.1) before any key work: `sub` present, `exp` and
        // `nbf` with leeway, an audience of the provider's (`iss` chose the provider). A
        // token that would be refused anyway never costs a signature check or a key refetch
        // (an expired token with a made-up `kid` cannot make Tollgate fetch keys).
        if !claims.contains_key("sub") {
            return Err(AuthError::MissingClaim);
        }
        let now_s = unix_now(now);
        let leeway = cfg.leeway.as_secs();
        if exp.saturating_add(leeway) < now_s {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now_s.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        let ours = |a: &str| cfg.audiences.iter().any(|w| w == a);
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => ours(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(ours),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::WrongAudience);
        }
        let key = match provider.keys.lookup(kid, alg).await {
            Lookup::Found(k) => k,
            Lookup::UnknownKey => return Err(AuthError::UnknownKey),
            Lookup::Unavailable => return Err(AuthError::KeysUnavailable),
        };
        // Signature over the ASCII of `header.payload`, with the key parsed when the JWKS was
        // loaded.
        let signed = token
            .get(..h.len() + 1 + p.len())
            .ok_or(AuthError::Malformed)?;
        if !key.verify(alg, signed.as_bytes(), &signature) {
            return Err(AuthError::BadSignature);
        }

        if iat.is_some_and(|iat| iat > now_s.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        if let Some(max) = cfg.max_token_lifetime {
            let iat = iat.ok_or(AuthError::MissingClaim)?;
            if exp.saturating_sub(iat) > max.as_secs() {
                return Err(AuthError::LifetimeTooLong);
            }
        }
        let remaining = Duration::from_secs(exp.saturating_sub(now_s));
        // Rebuilt rather than filtered in place: the cached map holds only what it keeps,
        // not the capacity of every claim the token had.
        let claims = match &provider.kept {
            Some(kept) => {
                let kept: Vec<(String, Value)> = claims
                    .into_iter()
                    .filter(|(name, _)| kept.contains(name))
                    .collect();
                // From an exact-size iterator: the map is allocated at its final size.
                kept.into_iter().collect()
            }
            None => claims,
        };
        Ok(VerifiedToken {
            provider: cfg.name.clone(),
            subject,
            claims,
            exp,
            cache_ttl: remaining.min(max_ttl),
            key_id: key.id,
            provider_fingerprint: provider.fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_agrees_with_the_map_index_small_or_large() {
        for size in [0usize, 1, 5, 16, 17, 40] {
            let mut m = Map::new();
            for i in 0..size {
                m.insert(format!("c{i}"), Value::from(i));
            }
            for i in 0..size + 3 {
                let k = format!("c{i}");
                assert_eq!(lookup(&m, &k), m.get(&k), "{size} {k}");
            }
            assert_eq!(lookup(&m, ""), None);
        }
    }

    #[test]
    fn claim_paths() {
        let c = serde_json::json!({
            "realm_access": {"roles": ["a"]},
            "https://example.com/roles": ["b"],
            "plain": 1
        });
        let c = c.as_object().unwrap();
        assert_eq!(
            claim(c, "realm_access.roles"),
            Some(&serde_json::json!(["a"]))
        );
        assert_eq!(
            claim(c, "https://example.com/roles"),
            Some(&serde_json::json!(["b"]))
        );
        assert_eq!(claim(c, "plain"), Some(&serde_json::json!(1)));
        assert_eq!(claim(c, "plain.x"), None);
        assert_eq!(claim(c, "missing.roles"), None);
        assert_eq!(claim(c, "missing"), None);
        assert_eq!(
            claim(c, "realm_access"),
            Some(&serde_json::json!({"roles": ["a"]}))
        );
    }

    /// Differential test: jsonwebtoken (with `exp`, `iss`, `aud`, `sub` required, nbf checked,
    /// the same leeway) is the reference. For tokens with every combination of good and bad
    /// registered claims, tampered payloads and signatures, and swapped algorithms, this
    /// verifier accepts exactly when jsonwebtoken does.
    mod reference {
        use super::*;
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
        };
        use proptest::prelude::*;
        use std::future::Future;
        use std::path::Path;
        use std::pin::Pin;
        use std::sync::OnceLock;

        use crate::auth::jwks::{FetchResponse, Fetcher, KeyRegistry};

        const ISS: &str = "https://idp.example.com";
        /// Tokens the reference accepted (the generator must produce valid ones too).
        static ACCEPTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

        #[test]
        fn the_generator_produces_accepted_tokens() {
            agrees_with_jsonwebtoken();
            assert!(ACCEPTED.load(std::sync::atomic::Ordering::Relaxed) >= 100);
        }

        struct Static(String);
        impl Fetcher for Static {
            fn get<'a>(
                &'a self,
                _: &'a str,
                _: Option<&'a str>,
            ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>>
            {
                let body = self.0.clone();
                Box::pin(async move {
                    Ok(FetchResponse {
                        status: 200,
                        body: body.into(),
                        etag: None,
                        max_age: None,
                    })
                })
            }
        }

        struct Fixture {
            rt: tokio::runtime::Runtime,
            verifier: Verifier,
            es: EcdsaKeyPair,
            ed: Ed25519KeyPair,
            jwks: jsonwebtoken::jwk::JwkSet,
        }

        fn b64e(b: &[u8]) -> String {
            URL_SAFE_NO_PAD.encode(b)
        }

        fn fixture() -> &'static Fixture {
            static F: OnceLock<Fixture> = OnceLock::new();
            F.get_or_init(|| {
                let rng = SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap();
                let es =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                        .unwrap();
                let ed = Ed25519KeyPair::generate().unwrap();
                let p = es.public_key().as_ref();
                let jwks = serde_json::json!({"keys": [
                    {"kty": "EC", "crv": "P-256", "kid": "es", "alg": "ES256",
                     "x": b64e(&p[1..33]), "y": b64e(&p[33..65])},
                    {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA",
                     "x": b64e(ed.public_key().as_ref())},
                ]})
                .to_string();
                let main = "upstream = \"http://a\"\n[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\njwks_uri = \"https://idp.example.com/jwks\"\naudiences = [\"api\", \"api2\"]\nalgorithms = [\"ES256\", \"EdDSA\"]\nleeway = \"30s\"\n";
                let cfg =
                    crate::config::load_from_str(Path::new("t/tollgate.toml"), main, "").unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let verifier = rt.block_on(async {
                    let metrics = crate::metrics::Metrics::new().unwrap();
                    let reg = KeyRegistry::new(Arc::new(Static(jwks.clone())));
                    let caches = reg.sync(&cfg.providers, &metrics);
                    let keys = caches["corp"].clone();
                    while keys.current().is_none() {
                        tokio::task::yield_now().await;
                    }
                    Verifier::new(vec![ProviderVerifier::new(cfg.providers[0].clone(), keys)])
                });
                Fixture {
                    rt,
                    verifier,
                    es,
                    ed,
                    jwks: serde_json::from_str(&jwks).unwrap(),
                }
            })
        }

        fn sign(f: &Fixture, key: &str, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                b64e(header.to_string().as_bytes()),
                b64e(claims.to_string().as_bytes())
            );
            let sig = if key == "es" {
                f.es.sign(&SystemRandom::new(), input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec()
            } else {
                f.ed.sign(input.as_bytes()).as_ref().to_vec()
            };
            format!("{input}.{}", b64e(&sig))
        }

        fn reference_accepts(f: &Fixture, token: &str) -> bool {
            let Ok(header) = jsonwebtoken::decode_header(token) else {
                return false;
            };
            // By kid; without one, the single key published for the header's alg.
            let jwk = match header.kid.as_deref() {
                Some(k) => f.jwks.find(k),
                None => {
                    let fits: Vec<_> = f
                        .jwks
                        .keys
                        .iter()
                        .filter(|j| {
                            j.common.key_algorithm.map(|a| a.to_string())
                                == Some(format!("{:?}", header.alg))
                        })
                        .collect();
                    (fits.len() == 1).then(|| fits[0])
                }
            };
            let Some(jwk) = jwk else {
                return false;
            };
            let Ok(key) = jsonwebtoken::DecodingKey::from_jwk(jwk) else {
                return false;
            };
            let alg = match jwk.common.key_algorithm {
                Some(jsonwebtoken::jwk::KeyAlgorithm::ES256) => jsonwebtoken::Algorithm::ES256,
                _ => jsonwebtoken::Algorithm::EdDSA,
            };
            let mut v = jsonwebtoken::Validation::new(alg);
            v.leeway = 30;
            v.validate_nbf = true;
            v.set_audience(&["api", "api2"]);
            v.set_issuer(&[ISS]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            jsonwebtoken::decode::<Value>(token, &key, &v).is_ok()
        }

        fn now() -> i64 {
            unix_now(SystemTime::now()) as i64
        }

        /// Seconds from now: mostly far on either side, often just inside or outside the
        /// 30 s leeway, sometimes absent.
        fn offset(usual: i64) -> impl Strategy<Value = Option<i64>> {
            prop_oneof![
                4 => Just(Some(usual)),
                1 => Just(None),
                // Inside and beyond the 30 s leeway, 5 s clear of its edge: the reference
                // reads its own clock a moment after ours, and a second ticking over between
                // the two must not decide a case (it did, with ±29/±31).
                3 => prop::sample::select(vec![-86_400i64, -35, -25, 0, 25, 35]).prop_map(Some),
            ]
        }

        /// Mostly the good value (so that most tokens fail on one thing at most), else one of
        /// the bad ones or absent.
        fn mostly<T: Clone + std::fmt::Debug + 'static>(
            good: T,
            bad: Vec<T>,
        ) -> impl Strategy<Value = Option<T>> {
            prop_oneof![
                6 => Just(Some(good)),
                1 => Just(None),
                2 => prop::sample::select(bad).prop_map(Some),
            ]
        }

        /// Counts fetches; serves the fixture's key set.
        struct Counting(String, std::sync::atomic::AtomicUsize);
        impl Fetcher for Counting {
            fn get<'a>(
                &'a self,
                _: &'a str,
                _: Option<&'a str>,
            ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>>
            {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = self.0.clone();
                Box::pin(async move {
                    Ok(FetchResponse {
                        status: 200,
                        body: body.into(),
                        etag: None,
                        max_age: None,
                    })
                })
            }
        }

        #[test]
        fn refused_claims_cost_no_key_work() {
            let f = fixture();
            let jwks = serde_json::to_string(&f.jwks).unwrap();
            let fetcher = Arc::new(Counting(jwks, Default::default()));
            let pv = f.verifier.provider("corp").unwrap();
            let verifier = f.rt.block_on(async {
                let metrics = crate::metrics::Metrics::new().unwrap();
                let reg = KeyRegistry::new(fetcher.clone());
                let keys = reg.sync(std::slice::from_ref(&pv.config), &metrics)["corp"].clone();
                while keys.current().is_none() {
                    tokio::task::yield_now().await;
                }
                Verifier::new(vec![ProviderVerifier::new(pv.config.clone(), keys)])
            });
            let fetches = || fetcher.1.load(std::sync::atomic::Ordering::SeqCst);
            let before = fetches();
            // Unknown kids with claims that fail anyway: no refetch, whatever the signature.
            for (i, (claims, want)) in [
                (serde_json::json!({"iss": ISS, "aud": "api", "sub": "a", "exp": now() - 3600}), AuthError::Expired),
                (serde_json::json!({"iss": ISS, "aud": "nope", "sub": "a", "exp": now() + 60}), AuthError::WrongAudience),
                (serde_json::json!({"iss": ISS, "aud": "api", "sub": "a", "exp": now() + 60, "nbf": now() + 3600}), AuthError::NotYetValid),
            ]
            .into_iter()
            .enumerate()
            {
                let header = serde_json::json!({"alg": "ES256", "kid": format!("unknown-{i}")});
                let token = sign(f, "es", &header, &claims);
                let r = f.rt.block_on(verifier.verify_uncached(
                    &token,
                    SystemTime::now(),
                    Duration::from_secs(60),
                ));
                assert_eq!(r.err(), Some(want));
            }
            assert_eq!(fetches(), before);
            // The same unknown kid on an acceptable token does start a refetch.
            let claims =
                serde_json::json!({"iss": ISS, "aud": "api", "sub": "a", "exp": now() + 60});
            let token = sign(
                f,
                "es",
                &serde_json::json!({"alg": "ES256", "kid": "unknown-9"}),
                &claims,
            );
            let r = f.rt.block_on(verifier.verify_uncached(
                &token,
                SystemTime::now(),
                Duration::from_secs(60),
            ));
            assert_eq!(r.err(), Some(AuthError::UnknownKey));
            assert!(fetches() > before);
        }

        #[test]
        fn only_the_claims_the_config_reads_are_kept() {
            let f = fixture();
            let pv = f.verifier.provider("corp").unwrap();
            let trimmed = |mapping: &[&str]| {
                let v = ProviderVerifier::keeping(
                    pv.config.clone(),
                    pv.keys.clone(),
                    mapping.iter().copied(),
                );
                (v.fingerprint, Verifier::new(vec![v]))
            };
            let (fp_plain, plain) = trimmed(&[]);
            let (fp_mapped, mapped) = trimmed(&["repository", "realm_access.roles"]);
            assert_ne!(
                fp_plain, fp_mapped,
                "a reload reading other claims must not reuse entries"
            );
            assert_ne!(fp_plain, pv.fingerprint);
            let claims = serde_json::json!({
                "iss": ISS, "aud": "api", "sub": "alice", "exp": now() + 60, "iat": now(),
                "jti": "x", "scope": "read", "email": "a@example.com", "email_verified": true,
                "repository": "acme/api", "realm_access": {"roles": ["r"]}, "other": 1,
            });
            let token = sign(
                f,
                "es",
                &serde_json::json!({"alg": "ES256", "kid": "es"}),
                &claims,
            );
            let names = |v: &Verifier| -> Vec<String> {
                let t = f
                    .rt
                    .block_on(v.verify_uncached(&token, SystemTime::now(), Duration::from_secs(60)))
                    .unwrap();
                // Claims keep the token's order; compare as a set.
                let mut n: Vec<String> = t.claims.keys().cloned().collect();
                n.sort();
                n
            };
            assert_eq!(names(&plain), ["email", "email_verified", "scope", "sub"]);
            assert_eq!(
                names(&mapped),
                [
                    "email",
                    "email_verified",
                    "realm_access",
                    "repository",
                    "scope",
                    "sub"
                ]
            );
            assert_eq!(names(&f.verifier).len(), 12, "`new` keeps every claim");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]
            #[test]
            fn agrees_with_jsonwebtoken(
                key in prop::sample::select(vec!["es", "ed"]),
                header_alg in mostly("match", vec!["ES256", "EdDSA", "RS256"]),
                kid in mostly("match", vec!["es", "ed", "none"]),
                iss in mostly(Value::from(ISS), vec![Value::from("https://evil.example.com")]),
                aud in mostly(serde_json::json!(["other", "api2"]), vec![
                    Value::from("api"),
                    Value::from("other"),
                    serde_json::json!(["other"]),
                    serde_json::json!([]),
                ]),
                sub in mostly(Value::from("alice"), vec![Value::from("bob")]),
                exp in offset(3600),
                nbf in offset(-60),
                tamper in mostly("none", vec!["payload", "signature", "swap"]),
            ) {
                let f = fixture();
                let header_alg = header_alg.unwrap_or("match");
                let kid = kid.unwrap_or("none");
                let tamper = tamper.unwrap_or("none");
                let alg = match (header_alg, key) {
                    ("match", "es") => "ES256",
                    ("match", _) => "EdDSA",
                    (a, _) => a,
                };
                let mut header = serde_json::json!({"alg": alg, "typ": "JWT"});
                match kid {
                    "match" => header["kid"] = key.into(),
                    "none" => {}
                    k => header["kid"] = k.into(),
                }
                let mut claims = serde_json::json!({"iat": now() - 5});
                let put = |c: &mut Value, name: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        c[name] = v;
                    }
                };
                put(&mut claims, "iss", iss);
                put(&mut claims, "aud", aud);
                put(&mut claims, "sub", sub);
                put(&mut claims, "exp", exp.map(|d| Value::from(now() + d)));
                put(&mut claims, "nbf", nbf.map(|d| Value::from(now() + d)));
                let mut token = sign(f, key, &header, &claims);
                let parts: Vec<String> = token.split('.').map(str::to_string).collect();
                match tamper {
                    "payload" => {
                        claims["sub"] = "mallory".into();
                        let p = b64e(claims.to_string().as_bytes());
                        token = format!("{}.{p}.{}", parts[0], parts[2]);
                    }
                    "signature" => {
                        let mut s = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
                        s[7] ^= 1;
                        token = format!("{}.{}.{}", parts[0], parts[1], b64e(&s));
                    }
                    "swap" => {
                        // The other key's signature over the same input.
                        let other = sign(f, if key == "es" { "ed" } else { "es" }, &header, &claims);
                        let s = other.rsplit('.').next().unwrap();
                        token = format!("{}.{}.{s}", parts[0], parts[1]);
                    }
                    _ => {}
                }
                let ours = f
                    .rt
                    .block_on(f.verifier.verify_uncached(&token, SystemTime::now(), Duration::from_secs(60)));
                let theirs = reference_accepts(f, &token);
                ACCEPTED.fetch_add(usize::from(theirs), std::sync::atomic::Ordering::Relaxed);
                prop_assert_eq!(ours.is_ok(), theirs, "ours: {:?}", ours.err());
            }
        }
    }
}
