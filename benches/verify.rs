//! Token verification and the whole in-memory request pipeline, named by case:
//! `verify_{rs256,es256,eddsa}_cold` (no cache: parse, key lookup, signature, claims),
//! `verify_cached` (a verification-cache hit), and `pipeline_*` (extract → verify → identity
//! → permissions → route → header rewrite, without the network) for an allowed request and
//! the common denials.

use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use serde_json::{Value, json};

use tollgate::app::App;
use tollgate::auth::jwks::{FetchResponse, Fetcher};
use tollgate::proxy::{self, ConnInfo, Trace};

const ISSUER: &str = "https://idp.example.com";
const MAIN: &str = r#"upstream = "http://127.0.0.1:9"
audit = "off"
[scopes]
"read:items" = ["items:read"]
[[providers]]
name = "corp"
issuer = "https://idp.example.com"
jwks_uri = "https://idp.example.com/jwks"
audiences = ["api"]
algorithms = ["RS256", "ES256", "EdDSA"]
[[routes]]
path = "/api/**"
permissions = ["items:read"]
[[routes]]
path = "/admin/**"
permissions = ["admin:*"]
"#;
const ACCOUNTS: &str = r#"[[accounts]]
id = "bench-user"
roles = []
  [[accounts.mappings]]
  provider = "corp"
  subject = "bench-user"
"#;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

enum Signer {
    Rs(RsaKeyPair),
    Es(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    fn alg(&self) -> &'static str {
        match self {
            Signer::Rs(_) => "RS256",
            Signer::Es(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.alg()});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Rs(k) => {
                let mut s = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut s)
                    .unwrap();
                s
            }
            Signer::Es(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }

    fn jwk(&self) -> Value {
        match self {
            Signer::Rs(k) => {
                // PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }, 2048-bit n.
                let der = k.public_key().as_ref().to_vec();
                let n_at = der
                    .windows(3)
                    .position(|w| w == [0x02, 0x82, 0x01])
                    .unwrap();
                let n_len = usize::from(der[n_at + 2]) << 8 | usize::from(der[n_at + 3]);
                let n = &der[n_at + 4..n_at + 4 + n_len];
                let e = &der[n_at + 4 + n_len + 2..];
                let n: Vec<u8> = n.iter().skip_while(|&&b| b == 0).copied().collect();
                json!({"kty": "RSA", "kid": "RS256", "alg": "RS256", "n": b64(&n), "e": b64(e)})
            }
            Signer::Es(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "kid": "ES256", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Signer::Ed(k) => {
                json!({"kty": "OKP", "kid": "EdDSA", "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
        }
    }
}

struct Static(String);

impl Fetcher for Static {
    fn get<'a>(
        &'a self,
        _url: &'a str,
        _etag: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>> {
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
    app: Arc<App>,
    signers: Vec<Signer>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, exp: u64) -> Value {
    json!({"iss": ISSUER, "aud": "api", "sub": sub, "scope": "read:items", "iat": now(), "exp": exp, "jti": "3f1c2a"})
}

fn fixture() -> Fixture {
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref()).unwrap();
    let ed = Ed25519KeyPair::generate().unwrap();
    let signers = vec![Signer::Rs(rsa), Signer::Es(ec), Signer::Ed(ed)];
    let jwks = json!({"keys": signers.iter().map(Signer::jwk).collect::<Vec<_>>()}).to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        let cfg = tollgate::config::load_from_str(Path::new("bench/tollgate.toml"), MAIN, ACCOUNTS)
            .unwrap();
        let app = App::with_fetcher(cfg, Arc::new(Static(jwks))).unwrap();
        while !app.ready() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        app
    });
    Fixture { rt, app, signers }
}

fn verify_cold(c: &mut Criterion) {
    let f = fixture();
    let snap = f.app.snapshot();
    for s in &f.signers {
        let token = s.sign(&claims("bench-user", now() + 3600));
        let name = format!("verify_{}_cold", s.alg().to_ascii_lowercase());
        c.bench_function(&name, |b| {
            b.iter(|| {
                f.rt.block_on(snap.verifier.verify_uncached(
                    black_box(&token),
                    SystemTime::now(),
                    Duration::from_secs(300),
                ))
                .unwrap()
            })
        });
    }
    let token = f.signers[0].sign(&claims("bench-user", now() + 3600));
    // Admitted to the cache on its second verification.
    for _ in 0..2 {
        f.rt.block_on(
            snap.verifier
                .verify(&token, &f.app.token_cache, Duration::from_secs(300)),
        )
        .unwrap();
    }
    // Filling the cache: what a fresh token pays on top of the signature (the key is a new
    // token hash each time; the cache is bounded at the default 100,000 entries).
    let verified =
        f.rt.block_on(snap.verifier.verify_uncached(
            &token,
            SystemTime::now(),
            Duration::from_secs(300),
        ))
        .map(Arc::new)
        .unwrap();
    let fill = tollgate::auth::cache::TokenCache::new(100_000);
    let mut n = 0u64;
    c.bench_function("verify_cache_insert", |b| {
        b.iter(|| {
            n += 1;
            let key = tollgate::auth::cache::hash(&format!("{n:016x}"));
            // The first sighting is only remembered; the second inserts.
            fill.insert(key, verified.clone());
            fill.insert(key, verified.clone())
        })
    });
    let mut m = 0u64;
    c.bench_function("verify_cache_first_sighting", |b| {
        b.iter(|| {
            m += 1;
            let key = tollgate::auth::cache::hash(&format!("first-{m:016x}"));
            fill.insert(key, verified.clone())
        })
    });
    c.bench_function("verify_cached", |b| {
        b.iter(|| {
            let (v, hit) =
                f.rt.block_on(snap.verifier.verify(
                    black_box(&token),
                    &f.app.token_cache,
                    Duration::from_secs(300),
                ))
                .unwrap();
            assert!(hit);
            v
        })
    });
}

/// One request through steps 1–9 (no network); `Ok` when allowed.
fn run(f: &Fixture, path: &str, token: Option<&str>) -> bool {
    let mut req = http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json")
        .header("x-auth-user", "spoofed");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (mut parts, ()) = req.body(()).unwrap().into_parts();
    let conn = ConnInfo::new("127.0.0.1:40000".parse().unwrap(), false);
    let snap = f.app.snapshot();
    let id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
    let mut trace = Trace::default();
    let mut added = tollgate::headers::Added::default();
    f.rt.block_on(proxy::prepare(
        &f.app,
        &snap,
        &conn,
        (&mut parts, &mut added),
        None,
        &id,
        &mut trace,
    ))
    .is_ok()
}

fn pipeline(c: &mut Criterion) {
    let f = fixture();
    let rs = &f.signers[0];
    let good = rs.sign(&claims("bench-user", now() + 3600));
    let stranger = rs.sign(&claims("nobody", now() + 3600));
    let expired = rs.sign(&claims("bench-user", now() - 3600));
    let mut forged = rs.sign(&claims("bench-user", now() + 3600));
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    // Verified twice: cached from then on.
    assert!(run(&f, "/api/items/1", Some(&good)));
    assert!(run(&f, "/api/items/1", Some(&good)));
    let cases: [(&str, &str, Option<&str>, bool); 6] = [
        (
            "pipeline_allowed_cached_token",
            "/api/items/1",
            Some(&good),
            true,
        ),
        ("pipeline_denied_missing_token", "/api/items/1", None, false),
        (
            "pipeline_denied_insufficient_scope",
            "/admin/x",
            Some(&good),
            false,
        ),
        (
            "pipeline_denied_unknown_account",
            "/api/items/1",
            Some(&stranger),
            false,
        ),
        (
            "pipeline_denied_expired",
            "/api/items/1",
            Some(&expired),
            false,
        ),
        (
            "pipeline_denied_bad_signature",
            "/api/items/1",
            Some(&forged),
            false,
        ),
    ];
    for (name, path, token, allowed) in cases {
        c.bench_function(name, |b| {
            b.iter(|| assert_eq!(run(&f, black_box(path), token), allowed))
        });
    }
}

criterion_group!(benches, verify_cold, pipeline);
criterion_main!(benches);
