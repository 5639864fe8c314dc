//! Token verification against the real OpenID provider (tests/idp): valid tokens pass, every
//! listed attack answers 401, key rotation, refetch limits, IdP outages.

use std::time::Duration;

use serde_json::{Value, json};

use crate::idp::*;
use crate::support::*;

const ROUTES_API: &str = "[[routes]]\npath = \"/api/**\"\n";

struct Setup {
    idp: Idp,
    echo: Echo,
    gate: Gate,
}

/// Roles for token tests, and an identity mapping that admits every subject of `corp`:
/// these tests are about verification, not about identity resolution.
const ROLES: &str = "[roles]\nviewer = [\"items:read\"]\n";
const ANY_SUBJECT: &str = "[[identity_mappings]]\nname = \"any\"\nprovider = \"corp\"\npriority = 1\nclaims = { sub = \"*\" }\nroles = [\"viewer\"]\n";

async fn setup(provider_extra: &str) -> Setup {
    let idp = Idp::start();
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!(
            "{ROLES}{}{ROUTES_API}",
            idp.provider_toml("corp", &format!("typ = \"at+jwt\"\n{provider_extra}"))
        ),
    );
    let gate = Gate::start_with(&main, ANY_SUBJECT).await;
    Setup { idp, echo, gate }
}

async fn call(gate: &Gate, token: &str) -> Got {
    get_with(
        &gate.url("/api/items"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

fn assert_invalid(got: &Got, what: &str) {
    assert_eq!(
        got.status,
        401,
        "{what}: {}",
        String::from_utf8_lossy(&got.body)
    );
    let challenge = got.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with("Bearer realm=\"tollgate\", error=\"invalid_token\""),
        "{what}: {challenge}"
    );
}

async fn metric(gate: &Gate, line_prefix: &str) -> f64 {
    let text = String::from_utf8_lossy(&get(&gate.admin_url("/metrics")).await.body).into_owned();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_ready(gate: &Gate) {
    let url = gate.admin_url("/readyz");
    let start = std::time::Instant::now();
    loop {
        if get(&url).await.status == 200 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn valid_tokens_from_the_real_idp_are_forwarded() {
    let s = setup("").await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let token = s.idp.token(alg, "read:items", json!({})).await;
        assert_eq!(segment(&token, 0)["alg"], alg);
        assert_eq!(segment(&token, 0)["typ"], "at+jwt");
        let got = call(&s.gate, &token).await;
        let seen = got.seen();
        assert_eq!(seen.path(), "/api/items", "{alg}");
        assert_eq!(
            seen.header("authorization"),
            None,
            "the token is not forwarded"
        );
    }
    // A token is cached on its second verification: the third use is a cache hit.
    let token = s.idp.token("ES256", "read:items", json!({})).await;
    let hits = metric(&s.gate, "tollgate_token_cache_hits_total ").await;
    assert_eq!(call(&s.gate, &token).await.status, 200);
    assert_eq!(call(&s.gate, &token).await.status, 200);
    assert_eq!(
        metric(&s.gate, "tollgate_token_cache_hits_total ").await,
        hits,
        "admitted on the second verification, not the first"
    );
    assert_eq!(call(&s.gate, &token).await.status, 200);
    assert_eq!(
        metric(&s.gate, "tollgate_token_cache_hits_total ").await,
        hits + 1.0
    );
    let _ = &s.echo;
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    let s = setup("").await;
    let idp = &s.idp;
    let good = idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(call(&s.gate, &good).await.status, 200);
    let (h, p, sig) = {
        let mut it = good.split('.');
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    let claims = segment(&good, 1);
    let kid = segment(&good, 0)["kid"].as_str().unwrap().to_string();

    // alg none, in several casings, with and without a signature segment.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let hdr = json!({"alg": alg, "typ": "at+jwt"});
        let unsigned = format!("{}.{}.", b64(hdr.to_string().as_bytes()), p);
        assert_invalid(&call(&s.gate, &unsigned).await, alg);
        let with_sig = assemble(&hdr, &claims, b"x");
        assert_invalid(&call(&s.gate, &with_sig).await, alg);
    }

    // HS256 with the RSA public key's bytes as the HMAC secret (algorithm confusion).
    let jwks = idp.jwks().await;
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap();
    let n = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        rsa["n"].as_str().unwrap(),
    )
    .unwrap();
    for secret in [n.clone(), rsa.to_string().into_bytes()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        header.typ = Some("at+jwt".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_invalid(&call(&s.gate, &forged).await, "HS256 confusion");
    }

    // An attacker's own key, embedded as `jwk` or advertised by `jku`/`x5u`.
    let attacker = rcgen::KeyPair::generate().unwrap();
    let raw = attacker.public_key_raw();
    let (x, y) = (b64(&raw[1..33]), b64(&raw[33..65]));
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe_url = format!("http://{}/jwks", probe.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        while probe.accept().await.is_ok() {
            acc.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let ec_kid = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "EC")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let key = jsonwebtoken::EncodingKey::from_ec_der(&attacker.serialize_der());
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
    let variants: Vec<(&str, Value)> = vec![
        (
            "embedded jwk",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": ec_kid, "jwk": jwk}),
        ),
        (
            "jku",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "attacker", "jku": probe_url}),
        ),
        (
            "x5u",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "attacker", "x5u": probe_url}),
        ),
    ];
    for (what, hdr) in variants {
        let signing_input = format!("{}.{}", b64(hdr.to_string().as_bytes()), p);
        let sig = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &key,
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap();
        assert_invalid(
            &call(&s.gate, &format!("{signing_input}.{sig}")).await,
            what,
        );
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "jku/x5u URL was contacted"
    );

    // kid values that look like paths or SQL, on tokens signed by the real key.
    for weird in ["../../../../etc/passwd", "' OR '1'='1", "kid\u{0}"] {
        let t = idp.sign("RS256", json!({"kid": weird}), json!({})).await;
        assert_invalid(&call(&s.gate, &t).await, weird);
    }

    // ES256 "psychic signature": r = s = 0.
    let es = idp.token("ES256", "read:items", json!({})).await;
    let es_parts: Vec<&str> = es.split('.').collect();
    let zero = format!("{}.{}.{}", es_parts[0], es_parts[1], b64(&[0u8; 64]));
    assert_invalid(&call(&s.gate, &zero).await, "zero ES256 signature");

    // Tampered payload with the original signature; stripped signature; wrong segment counts;
    // characters outside base64url.
    let mut evil = claims.clone();
    evil["sub"] = json!("admin");
    let tampered = format!("{h}.{}.{sig}", b64(evil.to_string().as_bytes()));
    assert_invalid(&call(&s.gate, &tampered).await, "tampered payload");
    assert_invalid(
        &call(&s.gate, &format!("{h}.{p}.")).await,
        "stripped signature",
    );
    assert_invalid(&call(&s.gate, &format!("{h}.{p}")).await, "two segments");
    assert_invalid(
        &call(&s.gate, &format!("{h}.{p}.{sig}.{sig}")).await,
        "four segments",
    );
    assert_invalid(
        &call(&s.gate, &format!("{h}.{p}.{sig}+/")).await,
        "base64 alphabet",
    );
    assert_invalid(&call(&s.gate, &format!("{h}=.{p}.{sig}")).await, "padding");

    // The original still works: nothing above poisoned the cache.
    assert_eq!(call(&s.gate, &good).await.status, 200);
}

#[tokio::test]
async fn claims_are_checked() {
    let s = setup("").await;
    let idp = &s.idp;
    let now = now();
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "wrong iss (trailing slash)",
            json!({}),
            json!({"iss": format!("{}/", idp.issuer)}),
        ),
        (
            "unknown iss",
            json!({}),
            json!({"iss": "https://evil.example.com"}),
        ),
        (
            "aud string without ours",
            json!({}),
            json!({"aud": "api://other"}),
        ),
        (
            "aud array without ours",
            json!({}),
            json!({"aud": ["api://other", "api://third"]}),
        ),
        (
            "expired",
            json!({}),
            json!({"exp": now - 3600, "iat": now - 7200}),
        ),
        ("nbf in the future", json!({}), json!({"nbf": now + 3600})),
        ("iat in the future", json!({}), json!({"iat": now + 3600})),
        (
            "exp as a string",
            json!({}),
            json!({"exp": (now + 600).to_string()}),
        ),
        ("no exp", json!({}), json!({"exp": null})),
        ("no aud", json!({}), json!({"aud": null})),
        ("no sub", json!({}), json!({"sub": null})),
        ("sub not a string", json!({}), json!({"sub": 42})),
        ("crit header", json!({"crit": ["exp"]}), json!({})),
        ("wrong typ", json!({"typ": "JWT"}), json!({})),
    ];
    for (what, header, overrides) in cases {
        let t = idp.sign("RS256", header, overrides).await;
        assert_invalid(&call(&s.gate, &t).await, what);
    }
    // Duplicate `sub`, signed with the IdP's real key.
    let dup = format!(
        r#"{{"iss":"{}","aud":"{AUDIENCE}","sub":"reader","sub":"admin","iat":{now},"exp":{}}}"#,
        idp.issuer,
        now + 600
    );
    let t = idp.sign_raw("RS256", json!({}), &dup).await;
    assert_invalid(&call(&s.gate, &t).await, "duplicate sub");
    // A real token for another audience (resource indicator).
    let other = idp
        .token_for("api://other", "RS256", "read:items", json!({}))
        .await;
    assert_invalid(&call(&s.gate, &other).await, "token for another API");
    // A token over the size cap.
    let huge = idp
        .sign("RS256", json!({}), json!({"pad": "x".repeat(17 * 1024)}))
        .await;
    assert_invalid(&call(&s.gate, &huge).await, "oversized token");
    // Control: the same path with valid claims passes.
    let ok = idp.sign("RS256", json!({}), json!({})).await;
    assert_eq!(call(&s.gate, &ok).await.status, 200);
}

#[tokio::test]
async fn descriptions_never_echo_the_token() {
    let s = setup("").await;
    let t = s
        .idp
        .sign(
            "RS256",
            json!({}),
            json!({"exp": now() - 3600, "iat": now() - 7200}),
        )
        .await;
    let got = call(&s.gate, &t).await;
    assert_invalid(&got, "expired");
    let body = String::from_utf8_lossy(&got.body);
    let www = got.header("www-authenticate").unwrap();
    for part in t.split('.') {
        assert!(!body.contains(part) && !www.contains(part));
    }
    assert_eq!(got.json()["error_description"], "token expired");
}

#[tokio::test]
async fn key_rotation_is_picked_up_by_one_refetch() {
    let s = setup("").await;
    wait_ready(&s.gate).await;
    let old = s.idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(call(&s.gate, &old).await.status, 200);
    s.idp.reset_stats().await;

    let new_kid = s.idp.rotate("RS256").await;
    let rotated = s.idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(segment(&rotated, 0)["kid"], new_kid.as_str());
    assert_eq!(call(&s.gate, &rotated).await.status, 200);
    assert_eq!(s.idp.jwks_requests().await, 1, "exactly one refetch");

    // The old key is still published: its tokens keep working.
    assert_eq!(call(&s.gate, &old).await.status, 200);
    let _ = &s.echo;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_the_idp_at_most_two_fetches() {
    let s = setup("").await;
    wait_ready(&s.gate).await;
    let good = s.idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(call(&s.gate, &good).await.status, 200);
    s.idp.reset_stats().await;
    let claims = s.idp.valid_claims();
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            assemble(
                &json!({"alg": "RS256", "typ": "at+jwt", "kid": format!("random-{i}")}),
                &claims,
                b"sig",
            )
        })
        .collect();
    let gate_url = s.gate.url("/api/items");
    let mut set = tokio::task::JoinSet::new();
    for chunk in tokens.chunks(50) {
        let chunk = chunk.to_vec();
        let url = gate_url.clone();
        set.spawn(async move {
            let mut statuses = Vec::new();
            for t in chunk {
                statuses.push(
                    get_with(&url, &[("authorization", &format!("Bearer {t}"))])
                        .await
                        .status,
                );
            }
            statuses
        });
    }
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap().iter().all(|s| *s == 401));
    }
    let fetches = s.idp.jwks_requests().await;
    assert!(fetches <= 2, "{fetches} JWKS fetches for 1000 unknown kids");
    let _ = &s.echo;
}

#[tokio::test]
async fn idp_down_at_start_then_up_without_restart() {
    // Reserve a port for the IdP, but do not start it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let echo = Echo::start().await;
    let provider = format!(
        "[[providers]]\nname = \"corp\"\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\nmin_refetch_interval = \"0s\"\n"
    );
    let gate = Gate::start_with(
        &config(&echo.url(), &format!("{ROLES}{provider}{ROUTES_API}")),
        ANY_SUBJECT,
    )
    .await;

    // Started without the IdP: not ready, and token requests get 503 with Retry-After.
    let r = get(&gate.admin_url("/readyz")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["providers"][0]["ready"], false);
    let now = now();
    let fake = assemble(
        &json!({"alg": "RS256", "kid": "k"}),
        &json!({"iss": issuer, "aud": AUDIENCE, "sub": "s", "exp": now + 600}),
        b"sig",
    );
    let got = call(&gate, &fake).await;
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    assert!(got.header("retry-after").is_some());
    assert_eq!(got.json()["error"], "temporarily_unavailable");

    // The IdP comes up on that port: the next request fetches the keys, no restart needed.
    let idp = Idp::start_on(port);
    assert_eq!(idp.issuer, issuer);
    let token = idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(call(&gate, &token).await.status, 200);
    assert_eq!(get(&gate.admin_url("/readyz")).await.status, 200);
}

#[tokio::test]
async fn idp_down_after_keys_were_fetched_keeps_serving_stale_keys() {
    let s = setup("min_refetch_interval = \"0s\"").await;
    let first = s.idp.token("ES256", "read:items", json!({})).await;
    let second = s.idp.token("ES256", "read:items", json!({"n": 2})).await;
    assert_eq!(call(&s.gate, &first).await.status, 200);
    let Setup { idp, echo, gate } = s;
    idp.stop();
    // An unknown kid now forces a fetch, which fails: the provider is stale...
    let fake = assemble(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "gone"}),
        &segment(&second, 1),
        b"sig",
    );
    assert_eq!(call(&gate, &fake).await.status, 401);
    let r = get(&gate.admin_url("/readyz")).await;
    let p = &r.json()["providers"][0];
    assert_eq!(p["stale"], true, "{p}");
    assert!(p["last_error"].as_str().is_some());
    assert_eq!(r.status, 200, "stale keys still count as ready");
    // ...and a valid token not seen before still verifies against the cached keys.
    assert_eq!(call(&gate, &second).await.status, 200);
    assert_eq!(
        metric(&gate, "tollgate_jwks_stale{provider=\"corp\"}").await,
        1.0
    );
    let _ = echo;
}

#[tokio::test]
async fn cookie_and_query_sources_work_and_are_not_forwarded() {
    let idp = Idp::start();
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!(
            "[tokens]\ncookie = \"tg_token\"\nquery_param = \"access_token\"\n{ROLES}{}{ROUTES_API}",
            idp.provider_toml("corp", "")
        ),
    );
    let gate = Gate::start_with(&main, ANY_SUBJECT).await;
    let token = idp.token("ES256", "read:items", json!({})).await;

    let got = get(&gate.url(&format!("/api/q?a=1&access_token={token}&b=2"))).await;
    let seen = got.seen();
    assert_eq!(
        seen.query(),
        Some("a=1&b=2"),
        "the query token is removed upstream"
    );

    let cookie = format!("theme=dark; tg_token={token}");
    let got = get_with(&gate.url("/api/c"), &[("cookie", &cookie)]).await;
    let seen = got.seen();
    assert_eq!(seen.header("cookie").as_deref(), Some("theme=dark"));

    // Two sources at once: 400.
    let both = get_with(
        &gate.url(&format!("/api/x?access_token={token}")),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(both.status, 400);
    assert_eq!(both.json()["error"], "invalid_request");
}

#[tokio::test]
async fn max_token_lifetime_is_enforced() {
    let s = setup("max_token_lifetime = \"5m\"").await;
    let long = s.idp.token("RS256", "read:items", json!({})).await; // 600 s
    assert_invalid(&call(&s.gate, &long).await, "lifetime 600 s > 300 s");
    let short = s
        .idp
        .sign(
            "RS256",
            json!({}),
            json!({"iat": now(), "exp": now() + 120}),
        )
        .await;
    assert_eq!(call(&s.gate, &short).await.status, 200);
    let no_iat = s.idp.sign("RS256", json!({}), json!({"iat": null})).await;
    assert_invalid(
        &call(&s.gate, &no_iat).await,
        "no iat with a lifetime limit",
    );
}

#[tokio::test]
async fn a_retired_key_stops_verifying_even_cached_tokens() {
    let s = setup("min_refetch_interval = \"0s\"").await;
    wait_ready(&s.gate).await;
    let old = s.idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(call(&s.gate, &old).await.status, 200);
    assert_eq!(call(&s.gate, &old).await.status, 200, "cached from here on");
    let hits = metric(&s.gate, "tollgate_token_cache_hits_total ").await;
    assert_eq!(call(&s.gate, &old).await.status, 200);
    assert_eq!(
        metric(&s.gate, "tollgate_token_cache_hits_total ").await,
        hits + 1.0,
        "a cache hit"
    );

    s.idp.rotate("RS256").await;
    s.idp.retire().await;
    // A token with the new kid makes Tollgate refetch; the old key is gone from that set.
    let new = s.idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(call(&s.gate, &new).await.status, 200);
    let got = call(&s.gate, &old).await;
    assert_invalid(&got, "token of a retired key");
    assert_eq!(
        got.json()["error_description"],
        "token signing key not found"
    );
}

#[tokio::test]
async fn key_metrics_and_readiness_describe_each_provider() {
    let s = setup("").await;
    wait_ready(&s.gate).await;
    let r = get(&s.gate.admin_url("/readyz")).await.json();
    let p = &r["providers"][0];
    assert_eq!(p["keys"], 3);
    assert_eq!(p["stale"], false);
    assert!(p["last_refresh"].as_str().is_some());
    assert!(
        metric(
            &s.gate,
            "tollgate_jwks_fetch_total{provider=\"corp\",result=\"success\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(&s.gate, "tollgate_jwks_keys{provider=\"corp\"}").await,
        3.0
    );
    assert!(
        metric(
            &s.gate,
            "tollgate_jwks_last_success_timestamp_seconds{provider=\"corp\"}"
        )
        .await
            > 1.7e9
    );
    assert_eq!(
        metric(&s.gate, "tollgate_jwks_stale{provider=\"corp\"}").await,
        0.0
    );
    let t = s.idp.token("RS256", "read:items", json!({})).await;
    assert_eq!(call(&s.gate, &t).await.status, 200);
    assert_eq!(
        metric(&s.gate, "tollgate_token_cache_misses_total ").await,
        1.0
    );
    assert_eq!(
        metric(
            &s.gate,
            "tollgate_requests_total{decision=\"allow\",reason=\"authenticated\"}"
        )
        .await,
        1.0
    );
    let expired = s
        .idp
        .sign(
            "RS256",
            json!({}),
            json!({"exp": now() - 3600, "iat": now() - 7200}),
        )
        .await;
    assert_eq!(call(&s.gate, &expired).await.status, 401);
    assert_eq!(
        metric(
            &s.gate,
            "tollgate_requests_total{decision=\"deny\",reason=\"expired\"}"
        )
        .await,
        1.0
    );
    assert!(metric(&s.gate, "tollgate_auth_duration_seconds_count").await >= 2.0);
}
