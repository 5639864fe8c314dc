//! Token extraction + header parsing + verification with fixed test keys: any Authorization
//! value is refused or accepted without a panic, and nothing is accepted without a valid
//! signature from the fixed key set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tollgate::auth::cache::TokenCache;
use tollgate::auth::jwks::{FetchResponse, Fetcher, KeyRegistry};
use tollgate::auth::verify::{ProviderVerifier, Verifier};

/// A fixed RSA and EC key set (public keys only: nothing can be signed with them here).
const JWKS: &str = r#"{"keys":[
{"kty":"RSA","kid":"rsa1","use":"sig","alg":"RS256","e":"AQAB","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"},
{"kty":"EC","kid":"ec1","use":"sig","alg":"ES256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

struct Static;
impl Fetcher for Static {
    fn get<'a>(
        &'a self,
        url: &'a str,
        _: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>> {
        let body = if url.ends_with("openid-configuration") {
            r#"{"issuer":"https://idp.example.com","jwks_uri":"https://idp.example.com/jwks"}"#
                .to_string()
        } else {
            JWKS.to_string()
        };
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
    cfg: tollgate::config::Config,
    cache: TokenCache,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        tollgate::app::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let main = "upstream = \"http://a\"\n[tokens]\ncookie = \"tok\"\nquery_param = \"access_token\"\n[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\", \"PS256\"]\nmin_refetch_interval = \"1h\"\n";
        let cfg = tollgate::config::load_from_str(Path::new("f/t.toml"), main, "").unwrap();
        let metrics = tollgate::metrics::Metrics::new().unwrap();
        let verifier = rt.block_on(async {
            let reg = KeyRegistry::new(Arc::new(Static));
            let caches = reg.sync(&cfg.providers, &metrics);
            Verifier::new(vec![ProviderVerifier::new(cfg.providers[0].clone(), caches["corp"].clone())])
        });
        Fixture { rt, verifier, cfg, cache: TokenCache::new(1000) }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(data) {
        headers.insert(http::header::AUTHORIZATION, v.clone());
        headers.insert(http::header::COOKIE, v);
    }
    let query = std::str::from_utf8(data).ok();
    let token = match tollgate::auth::extract::extract(&headers, query, &f.cfg.tokens) {
        Ok(Some(t)) => t.expose().to_string(),
        Ok(None) | Err(_) => match std::str::from_utf8(data) {
            Ok(s) => s.to_string(),
            Err(_) => return,
        },
    };
    let r = f.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            f.verifier.verify(&token, &f.cache, Duration::from_secs(60)),
        )
        .await
    });
    // No private key for the fixed set exists anywhere: nothing may verify.
    assert!(
        !matches!(r, Ok(Ok(_))),
        "a token verified without a valid signature"
    );
});
