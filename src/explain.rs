//! `tollgate explain`: runs one request through the real pipeline functions (canonical path,
//! route, verification, identity, permissions, decision) without a network listener, and
//! reports every step and the verdict, with the same status and reason the proxy would give.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::auth::cache::TokenCache;
use crate::auth::jwks::{FetchResponse, Fetcher, KeyRegistry, KeySource};
use crate::auth::verify::VerifiedToken;
use crate::authz::path::canonicalize;
use crate::authz::permissions::Permissions;
use crate::authz::route::AuthMode;
use crate::authz::{self, Policy};
use crate::config::Config;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::state::Snapshot;

/// What to explain.
#[derive(Debug, Clone)]
pub enum Credential {
    /// No token.
    None,
    /// A token, verified against `jwks` (a JWKS document) or, without it, the live keys.
    Token { token: String, jwks: Option<Bytes> },
    /// Raw claims, not verified.
    Claims(Map<String, Value>),
}

/// One step of the pipeline.
#[derive(Debug, Serialize)]
pub struct Step {
    pub step: &'static str,
    /// `ok`, `fail` or `info`.
    pub outcome: &'static str,
    pub detail: String,
}

/// The final answer.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub decision: &'static str,
    pub status: u16,
    pub reason: &'static str,
    pub error: Option<&'static str>,
    pub description: Option<&'static str>,
}

/// Every step and the verdict.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub method: String,
    pub path: String,
    /// False when the claims were given raw (`--claims`).
    pub verified: bool,
    pub steps: Vec<Step>,
    pub verdict: Verdict,
}

/// Serves a JWKS file for every provider (and a matching discovery document), offline.
struct FileFetcher {
    jwks: Option<Bytes>,
    discovery: HashMap<String, String>,
}

impl Fetcher for FileFetcher {
    fn get<'a>(
        &'a self,
        url: &'a str,
        _etag: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>> {
        let ok = |body: Bytes| FetchResponse {
            status: 200,
            body,
            etag: None,
            max_age: None,
        };
        let r = match (&self.jwks, self.discovery.get(url)) {
            (None, _) => Err("offline: no keys for --claims".to_string()),
            (Some(_), Some(issuer)) => Ok(ok(Bytes::from(
                json!({"issuer": issuer, "jwks_uri": "https://explain.invalid/jwks"}).to_string(),
            ))),
            (Some(jwks), None) => Ok(ok(jwks.clone())),
        };
        Box::pin(async move { r })
    }
}

struct Report {
    steps: Vec<Step>,
}

impl Report {
    fn push(&mut self, step: &'static str, outcome: &'static str, detail: impl Into<String>) {
        self.steps.push(Step {
            step,
            outcome,
            detail: detail.into(),
        });
    }
}

fn verdict_of(e: &ProxyError) -> Verdict {
    let r = e.rejection();
    Verdict {
        decision: r.reason.decision(),
        status: r.status.as_u16(),
        reason: r.reason.as_str(),
        error: Some(r.error),
        description: Some(r.description),
    }
}

fn describe_claims(claims: &Map<String, Value>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = |k: &str| {
        claims
            .get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let exp = match claims.get("exp").and_then(Value::as_i64) {
        Some(e) if e >= now => format!("expires in {} s", e - now),
        Some(e) => format!("expired {} s ago", now - e),
        None => "no numeric exp".into(),
    };
    format!(
        "iss {}, aud {}, sub {}, scope {}, {exp}",
        s("iss"),
        s("aud"),
        s("sub"),
        s("scope")
    )
}

/// Explains one request under `config`.
pub async fn explain(config: Config, method: Method, path: &str, cred: Credential) -> Explanation {
    let mut rep = Report { steps: Vec::new() };
    let verified = !matches!(cred, Credential::Claims(_));
    let result = run(&mut rep, config, &method, path, cred).await;
    let verdict = match result {
        Ok(reason) => Verdict {
            decision: "allow",
            status: 200,
            reason,
            error: None,
            description: None,
        },
        Err(e) => verdict_of(&e),
    };
    Explanation {
        method: method.to_string(),
        path: path.to_string(),
        verified,
        steps: rep.steps,
        verdict,
    }
}

async fn run(
    rep: &mut Report,
    config: Config,
    method: &Method,
    path: &str,
    cred: Credential,
) -> Result<&'static str, ProxyError> {
    crate::app::install_crypto_provider();
    let jwks = match &cred {
        Credential::Token { jwks, .. } => jwks.clone(),
        _ => None,
    };
    let live = matches!(&cred, Credential::Token { jwks: None, .. });
    let fetcher: Arc<dyn Fetcher> = match crate::auth::fetch::HttpFetcher::new() {
        Ok(f) if live => Arc::new(f),
        _ => Arc::new(FileFetcher {
            jwks,
            discovery: config
                .providers
                .iter()
                .map(|p| (KeySource::of(p).discovery(), p.issuer.clone()))
                .collect(),
        }),
    };
    let metrics =
        Metrics::new().map_err(|_| ProxyError::Auth(crate::error::AuthError::KeysUnavailable))?;
    let registry = KeyRegistry::new(fetcher);
    let snap = Snapshot::compile(config, &registry, &metrics)
        .map_err(|_| ProxyError::Auth(crate::error::AuthError::KeysUnavailable))?;
    let cfg = &snap.config;

    // 1. Path.
    let canonical = match canonicalize(
        path.split('?').next().unwrap_or(path),
        cfg.paths.allow_semicolons,
    ) {
        Ok(c) => {
            rep.push("path", "ok", format!("canonical path {}", c.as_str()));
            c
        }
        Err(e) => {
            rep.push("path", "fail", e.to_string());
            return Err(e.into());
        }
    };

    // 2. Route.
    let route = cfg.routes.find(method, &canonical);
    match route {
        Some(r) => rep.push(
            "route",
            "ok",
            format!(
                "routes[{}] {:?}: auth {:?}, permissions [{}]{}",
                r.index,
                r.path,
                r.auth,
                r.permissions.join(", "),
                if r.providers.is_empty() {
                    String::new()
                } else {
                    format!(", providers [{}]", r.providers.join(", "))
                }
            ),
        ),
        None => rep.push(
            "route",
            "info",
            format!("no route matches; unmatched = {:?}", cfg.unmatched),
        ),
    }
    let mode = authz::auth_mode(route, cfg.unmatched).inspect_err(|e| {
        rep.push("route", "fail", e.to_string());
    })?;
    let policy: Policy<'_> = snap.policy();
    if mode == AuthMode::Public {
        rep.push("token", "info", "public route: no token is looked at");
        return authz::decide(route, mode, None, &policy, &mut authz::Observed::default())
            .map(|p| p.reason().as_str());
    }

    // 3. Token.
    let token: Option<VerifiedToken> = match cred {
        Credential::None => {
            rep.push("token", "info", "no token");
            None
        }
        Credential::Claims(claims) => {
            rep.push(
                "token",
                "info",
                format!("UNVERIFIED claims: {}", describe_claims(&claims)),
            );
            let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
            let Some(p) = snap.verifier.provider_by_issuer(iss) else {
                rep.push(
                    "provider",
                    "fail",
                    format!("no enabled provider has issuer {iss:?}"),
                );
                return Err(crate::error::AuthError::UnknownIssuer.into());
            };
            rep.push(
                "provider",
                "ok",
                format!("{} ({})", p.config.name, p.config.issuer),
            );
            match VerifiedToken::unverified(&p.config, claims) {
                Some(v) => Some(v),
                None => {
                    rep.push(
                        "claims",
                        "fail",
                        format!("no string claim {:?}", p.config.subject_claim),
                    );
                    return Err(crate::error::AuthError::MissingClaim.into());
                }
            }
        }
        Credential::Token { token, .. } => {
            let parts: Vec<&str> = token.split('.').collect();
            let decode = |i: usize| {
                parts
                    .get(i)
                    .and_then(|s| {
                        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
                            .ok()
                    })
                    .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
            };
            if let (Some(h), Some(c)) = (decode(0), decode(1)) {
                let g = |k: &str| {
                    h.get(k)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into())
                };
                rep.push(
                    "token",
                    "info",
                    format!(
                        "header alg {}, kid {}, typ {}",
                        g("alg"),
                        g("kid"),
                        g("typ")
                    ),
                );
                rep.push("token", "info", describe_claims(&c));
                if let Some(iss) = c.get("iss").and_then(Value::as_str) {
                    match snap.verifier.provider_by_issuer(iss) {
                        Some(p) => {
                            rep.push(
                                "provider",
                                "ok",
                                format!("{} ({})", p.config.name, p.config.issuer),
                            );
                            for (ok, line) in claim_checks(&h, &c, &p.config) {
                                rep.push("claims", if ok { "ok" } else { "fail" }, line);
                            }
                        }
                        None => rep.push(
                            "provider",
                            "fail",
                            format!("no enabled provider has issuer {iss:?}"),
                        ),
                    }
                }
            } else {
                rep.push("token", "fail", "not three base64url JSON segments");
            }
            let cache = TokenCache::new(0);
            match snap
                .verifier
                .verify(&token, &cache, Duration::from_secs(60))
                .await
            {
                Ok((v, _)) => {
                    rep.push(
                        "verification",
                        "ok",
                        format!(
                            "signature, algorithm, key and claims valid (keys from {})",
                            if live { "the provider, live" } else { "--jwks" }
                        ),
                    );
                    Arc::try_unwrap(v).ok()
                }
                Err(e) => {
                    rep.push("verification", "fail", e.to_string());
                    return Err(e.into());
                }
            }
        }
    };

    // 4–6. Identity, permissions, decision.
    let with_provider = token
        .as_ref()
        .and_then(|t| snap.verifier.provider(&t.provider).map(|p| (t, &p.config)));
    if let Some((t, p)) = with_provider {
        for line in snap.accounts.diagnose(p, &t.subject, &t.claims) {
            rep.push("identity", "info", line);
        }
        match snap.accounts.resolve(p, &t.subject, &t.claims) {
            Ok(pr) => {
                rep.push(
                    "identity",
                    "ok",
                    format!(
                        "account {:?} ({}), mapping {:?}, roles [{}]",
                        pr.account,
                        pr.kind.as_str(),
                        pr.mapping,
                        pr.roles.join(", ")
                    ),
                );
                let perms = Permissions::derive(
                    &pr.roles,
                    &t.claims,
                    &cfg.roles,
                    &cfg.scopes,
                    p.scope_mode.unwrap_or(cfg.scope_mode),
                );
                rep.push(
                    "permissions",
                    "info",
                    format!(
                        "[{}] from {}",
                        perms.granted.join(", "),
                        perms.source.as_str()
                    ),
                );
            }
            Err(e) => rep.push("identity", "fail", e.to_string()),
        }
    }
    match authz::decide(
        route,
        mode,
        with_provider,
        &policy,
        &mut authz::Observed::default(),
    ) {
        Ok(permit) => {
            rep.push("decision", "ok", "allowed");
            Ok(permit.reason().as_str())
        }
        Err(e) => {
            rep.push("decision", "fail", e.to_string());
            Err(e)
        }
    }
}

/// Human-readable rendering.
pub fn render_text(e: &Explanation) -> String {
    let mut s = format!(
        "explain {} {}{}\n",
        e.method,
        e.path,
        if e.verified {
            ""
        } else {
            "  (claims NOT verified)"
        }
    );
    for st in &e.steps {
        s.push_str(&format!(
            "  {:<13} {:<5} {}\n",
            st.step, st.outcome, st.detail
        ));
    }
    let v = &e.verdict;
    match v.error {
        None => s.push_str(&format!(
            "verdict: ALLOW ({}), reason {}\n",
            v.status, v.reason
        )),
        Some(err) => s.push_str(&format!(
            "verdict: DENY {} {} (reason {}): {}\n",
            v.status,
            err,
            v.reason,
            v.description.unwrap_or("")
        )),
    }
    s
}

/// The individual header and claim checks, for display (the verdict comes from the verifier).
fn claim_checks(
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    p: &crate::config::Provider,
) -> Vec<(bool, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let leeway = p.leeway.as_secs();
    let mut out = Vec::new();
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("-");
    let alg_ok =
        crate::config::Algorithm::from_name(alg).is_some_and(|a| p.algorithms.contains(&a));
    let on = if alg_ok { "is on" } else { "is not on" };
    out.push((alg_ok, format!("alg {alg} {on} the provider's allow-list")));
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let aud_ok = auds
        .iter()
        .any(|a| p.audiences.iter().any(|want| want == a));
    out.push((
        aud_ok,
        format!("aud {auds:?}, expected one of {:?}", p.audiences),
    ));
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) => out.push((
            exp.saturating_add(leeway) >= now,
            format!("exp {exp} (now {now}, leeway {leeway} s)"),
        )),
        None => out.push((false, "exp missing or not a number".into())),
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        out.push((nbf <= now.saturating_add(leeway), format!("nbf {nbf}")));
    }
    if let Some(want) = &p.typ {
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("-");
        let ok = typ.eq_ignore_ascii_case(want)
            || typ.eq_ignore_ascii_case(&format!("application/{want}"));
        out.push((ok, format!("typ {typ}, required {want}")));
    }
    if header.contains_key("crit") {
        out.push((false, "crit header present".into()));
    }
    out
}
