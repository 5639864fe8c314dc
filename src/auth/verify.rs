//! Step 5: token verification (design §2.2). Order: structure and strict base64url → header
//! (strict JSON; `alg` on the allow-list, never `none` or HS*; no `crit`) → claims (strict
//! JSON, no duplicate names, registered claims of the right JSON type) → provider by exact
//! `iss` among enabled providers (no network for any other issuer) → key by `kid` from that
//! provider's cached JWKS, fitting the algorithm → signature and `exp`/`nbf`/`aud`/`iss`/`sub`
//! with jsonwebtoken → `iat`, `typ` and lifetime. `jku`, `x5u`, `jwk` and `x5c` are never read.

use std::collections::HashMap;
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
    fingerprint: [u8; 16],
    validations: HashMap<Algorithm, jsonwebtoken::Validation>,
}

fn jwt_alg(a: Algorithm) -> jsonwebtoken::Algorithm {
    use jsonwebtoken::Algorithm as J;
    match a {
        Algorithm::RS256 => J::RS256,
        Algorithm::RS384 => J::RS384,
        Algorithm::RS512 => J::RS512,
        Algorithm::PS256 => J::PS256,
        Algorithm::PS384 => J::PS384,
        Algorithm::PS512 => J::PS512,
        Algorithm::ES256 => J::ES256,
        Algorithm::ES384 => J::ES384,
        Algorithm::EdDSA => J::EdDSA,
    }
}

/// Fingerprint of everything that decides whether a token of this provider is valid: a
/// cached verification made under another fingerprint is not reused.
fn fingerprint(p: &Provider) -> [u8; 16] {
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
    let d = h.finalize();
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(d.iter()) {
        *o = *b;
    }
    out
}

impl ProviderVerifier {
    pub fn new(config: Provider, keys: Arc<ProviderKeys>) -> Self {
        let mut validations = HashMap::new();
        for &alg in &config.algorithms {
            let mut v = jsonwebtoken::Validation::new(jwt_alg(alg));
            v.leeway = config.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            v.validate_aud = true;
            v.set_audience(&config.audiences);
            v.set_issuer(&[config.issuer.as_str()]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validations.insert(alg, v);
        }
        Self {
            fingerprint: fingerprint(&config),
            config,
            keys,
            validations,
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

/// Reads a claim by dotted path (`realm_access.roles`). A top-level claim whose name is the
/// whole path wins, so namespaced claims such as `https://example.com/roles` (Auth0) work.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
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

    async fn verify_uncached(
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
        b64(s)?;
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
        numeric_date(&claims, "nbf")?;
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

        let key = match provider.keys.lookup(kid, alg).await {
            Lookup::Found(k) => k,
            Lookup::UnknownKey => return Err(AuthError::UnknownKey),
            Lookup::Unavailable => return Err(AuthError::KeysUnavailable),
        };
        let validation = provider
            .validations
            .get(&alg)
            .ok_or(AuthError::UnsupportedAlgorithm)?;
        jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &key.decoding, validation).map_err(
            |e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
                        AuthError::BadSignature
                    }
                    K::ExpiredSignature => AuthError::Expired,
                    K::ImmatureSignature => AuthError::NotYetValid,
                    K::InvalidAudience => AuthError::WrongAudience,
                    K::InvalidIssuer => AuthError::UnknownIssuer,
                    K::MissingRequiredClaim(_) => AuthError::MissingClaim,
                    K::InvalidClaimFormat(_) => AuthError::InvalidClaim,
                    K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                        AuthError::UnsupportedAlgorithm
                    }
                    _ => AuthError::Malformed,
                }
            },
        )?;

        let now_s = unix_now(now);
        let leeway = cfg.leeway.as_secs();
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
    }
}
