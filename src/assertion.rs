//! The signed identity assertion (design §5.3): a short-lived JWT, signed with Tollgate's
//! own ES256 or Ed25519 key, that carries the identity of an authorized request, so the
//! upstream can check that the identity came from Tollgate. The public key is served at
//! `/.well-known/jwks.json` on the admin listener.

use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::authz::Permit;
use crate::config::AssertionConfig;

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// Tollgate's assertion signing key, parsed once at load.
pub struct SigningKey {
    pair: Pair,
    rng: SystemRandom,
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The public JWK (with `kid`, `alg`, `use`).
    pub public_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

impl SigningKey {
    /// A PKCS#8 PEM private key: P-256 (→ ES256) or Ed25519 (→ EdDSA).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => Self::from_pkcs8_der(k.secret_pkcs8_der()),
            Ok(_) => Err("the key must be PKCS#8 (\"BEGIN PRIVATE KEY\")".into()),
            Err(_) => Err("not a PEM private key".into()),
        }
    }

    /// A fresh P-256 key (for `tollgate dev`).
    pub fn generate_es256() -> Result<Self, String> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "cannot generate a key".to_string())?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        let (pair, x, y) =
            if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
                let public = k.public_key().as_ref();
                match (public.get(1..33), public.get(33..65)) {
                    (Some(x), Some(y)) => {
                        let (x, y) = (b64(x), b64(y));
                        (Pair::Es256(k), x, Some(y))
                    }
                    _ => return Err("unexpected P-256 public key encoding".into()),
                }
            } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                let x = b64(k.public_key().as_ref());
                (Pair::EdDsa(k), x, None)
            } else {
                return Err("unsupported key: use a P-256 (ES256) or Ed25519 (EdDSA) key".into());
            };
        // RFC 7638: the thumbprint of the required members, in lexicographic order.
        let (kid, public_jwk) = match &y {
            Some(y) => {
                let kid_src = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let kid = b64(&Sha256::digest(kid_src.as_bytes()));
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y,
                                 "kid": kid, "alg": "ES256", "use": "sig"});
                (kid, jwk)
            }
            None => {
                let kid_src = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let kid = b64(&Sha256::digest(kid_src.as_bytes()));
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x,
                                 "kid": kid, "alg": "EdDSA", "use": "sig"});
                (kid, jwk)
            }
        };
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
            kid,
            public_jwk,
        })
    }

    fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::EdDsa(_) => "EdDSA",
        }
    }

    /// A compact JWS over `claims`.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = match &self.pair {
            Pair::Es256(k) => k.sign(&self.rng, input.as_bytes()).ok()?.as_ref().to_vec(),
            Pair::EdDsa(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        Some(format!("{input}.{}", b64(&sig)))
    }
}

/// The assertion for an authorized request, or `None` for requests without identity.
pub fn for_permit(permit: &Permit, cfg: &AssertionConfig, now: SystemTime) -> Option<HeaderValue> {
    let grant = permit.grant()?;
    let p = &grant.principal;
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let claims = json!({
        "iss": cfg.issuer,
        "aud": p.assertion_audience.as_deref().unwrap_or(&cfg.audience),
        "sub": p.account,
        "iat": iat,
        "nbf": iat,
        "exp": iat + cfg.lifetime.as_secs(),
        "provider": p.provider,
        "provider_subject": p.subject,
        "account_kind": p.kind.as_str(),
        "email": p.email,
        "name": p.name,
        "roles": p.roles,
        "groups": p.groups,
        "permissions": grant.permissions.granted,
        "permission_source": grant.permissions.source.as_str(),
        "mapping": p.mapping,
    });
    HeaderValue::from_str(&cfg.key.sign(&claims)?).ok()
}
