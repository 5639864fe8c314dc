//! Identity resolution, permissions and identity headers, with tokens from the real IdP.

use serde_json::{Value, json};

use crate::idp::*;
use crate::support::*;

const POLICY: &str = r#"
[roles]
admin = ["*"]
engineer = ["items:read", "items:write"]
viewer = ["items:read"]
deployer = ["deploy:run"]

[scopes]
"read:items" = ["items:read"]
"write:items" = ["items:read", "items:write"]
"#;

const ROUTES: &str = r#"
[[routes]]
path = "/public/**"
auth = "public"

[[routes]]
methods = ["GET", "HEAD"]
path = "/items/**"
permissions = ["items:read"]

[[routes]]
methods = ["POST", "PUT", "DELETE"]
path = "/items/**"
permissions = ["items:write"]

[[routes]]
path = "/deploy/**"
permissions = ["deploy:run"]

[[routes]]
path = "/corp-only/**"
providers = ["corp"]

[[routes]]
path = "/whoami"
"#;

const ACCOUNTS: &str = r#"
[[accounts]]
id = "sjones"
kind = "user"
name = "Sally Jones"
email = "sjones@example.com"
roles = ["engineer"]
  [[accounts.mappings]]
  provider = "corp"
  subject = "sub-sjones"
  name = "corp login"

[[accounts]]
id = "root"
roles = ["admin", "viewer"]
  [[accounts.mappings]]
  provider = "corp"
  subject = "sub-root"

[[accounts]]
id = "gone"
roles = ["viewer"]
disabled = true
  [[accounts.mappings]]
  provider = "corp"
  subject = "sub-gone"

[[accounts]]
id = "ci-deployer"
kind = "service"
roles = ["deployer"]

[[identity_mappings]]
name = "deploy-from-main"
provider = "corp"
priority = 1
claims = { repository = "acme/api", workflow_ref = "acme/api/.github/workflows/deploy.yaml@*" }
account = "ci-deployer"
assertion_audience = "api://deployer"

[[identity_mappings]]
name = "any-acme-repo"
provider = "corp"
priority = 2
claims = { repository = "acme/*" }
roles = ["viewer"]

[[identity_mappings]]
name = "other-anyone"
provider = "other"
priority = 1
claims = { sub = "*" }
roles = ["engineer"]
"#;

struct World {
    corp: Idp,
    other: Idp,
    _echo: Echo,
    gate: Gate,
}

async fn world(global: &str) -> World {
    let corp = Idp::start();
    let other = Idp::start();
    let echo = Echo::start().await;
    let corp_extra = r#"auto_provision = true
allowed_domains = ["example.com"]
default_roles = ["viewer"]
group_matching = true
  [providers.group_roles]
  "engineering" = ["engineer"]
"#;
    let main = config(
        &echo.url(),
        &format!(
            "{global}\n{POLICY}{}{}{ROUTES}",
            corp.provider_toml("corp", corp_extra),
            other.provider_toml("other", "")
        ),
    );
    let gate = Gate::start_with(&main, ACCOUNTS).await;
    World {
        corp,
        other,
        _echo: echo,
        gate,
    }
}

impl World {
    async fn token(&self, sub: &str, scope: &str, claims: Value) -> String {
        let mut c = claims;
        c["sub"] = json!(sub);
        self.corp.token("ES256", scope, c).await
    }

    async fn req(&self, method: &str, path: &str, token: &str, extra: &[(&str, &str)]) -> Got {
        let mut b = http::Request::builder()
            .method(method)
            .uri(self.gate.url(path))
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        send(b.body(empty()).unwrap()).await
    }

    async fn get(&self, path: &str, token: &str) -> Got {
        self.req("GET", path, token, &[]).await
    }
}

fn forbidden(got: &Got, error: &str) {
    assert_eq!(got.status, 403, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"], error);
}

#[tokio::test]
async fn a_mapped_subject_reaches_the_upstream_with_its_identity() {
    let w = world("").await;
    let t = w.token("sub-sjones", "", json!({})).await;
    let seen = w.get("/items/1", &t).await.seen();
    assert_eq!(seen.header("x-auth-provider").as_deref(), Some("corp"));
    assert_eq!(seen.header("x-auth-subject").as_deref(), Some("sub-sjones"));
    assert_eq!(seen.header("x-auth-account").as_deref(), Some("sjones"));
    assert_eq!(seen.header("x-auth-account-kind").as_deref(), Some("user"));
    assert_eq!(
        seen.header("x-auth-email").as_deref(),
        Some("sjones@example.com")
    );
    assert_eq!(seen.header("x-auth-name").as_deref(), Some("Sally Jones"));
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("engineer"));
    assert_eq!(
        seen.header("x-auth-permissions").as_deref(),
        Some("items:read, items:write")
    );
    assert_eq!(
        seen.header("x-auth-permission-source").as_deref(),
        Some("roles")
    );
    assert_eq!(seen.header("x-auth-mapping").as_deref(), Some("corp login"));
    assert_eq!(seen.header("authorization"), None);
}

#[tokio::test]
async fn unknown_and_disabled_accounts_are_refused() {
    let w = world("").await;
    let t = w.token("nobody", "", json!({})).await;
    forbidden(&w.get("/whoami", &t).await, "unknown_account");
    let t = w.token("sub-gone", "", json!({})).await;
    forbidden(&w.get("/whoami", &t).await, "account_disabled");
}

#[tokio::test]
async fn identity_mappings_by_priority_glob_and_missing_claims() {
    let w = world("").await;
    // Both mappings match: priority 1 wins.
    let t = w
        .token(
            "repo:acme/api:ref:refs/heads/main",
            "",
            json!({"repository": "acme/api", "workflow_ref": "acme/api/.github/workflows/deploy.yaml@refs/heads/main"}),
        )
        .await;
    let seen = w.get("/deploy/now", &t).await.seen();
    assert_eq!(
        seen.header("x-auth-account").as_deref(),
        Some("ci-deployer")
    );
    assert_eq!(
        seen.header("x-auth-account-kind").as_deref(),
        Some("service")
    );
    assert_eq!(
        seen.header("x-auth-mapping").as_deref(),
        Some("deploy-from-main")
    );
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("deployer"));

    // No workflow_ref claim: the first mapping cannot match, the glob one does.
    let t = w
        .token("repo:acme/web", "", json!({"repository": "acme/web"}))
        .await;
    let seen = w.get("/items/1", &t).await.seen();
    assert_eq!(
        seen.header("x-auth-mapping").as_deref(),
        Some("any-acme-repo")
    );
    assert_eq!(
        seen.header("x-auth-account").as_deref(),
        Some("repo:acme/web")
    );
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("viewer"));
    forbidden(&w.get("/deploy/now", &t).await, "insufficient_scope");

    // Another organisation matches neither.
    let t = w
        .token("repo:evil/api", "", json!({"repository": "evil/api"}))
        .await;
    forbidden(&w.get("/items/1", &t).await, "unknown_account");
}

#[tokio::test]
async fn auto_provisioning_follows_allowed_domains_and_email_verified() {
    let w = world("").await;
    let t = w
        .token("g-1", "", json!({"email": "newbie@example.com"}))
        .await;
    let seen = w.get("/items/1", &t).await.seen();
    assert_eq!(
        seen.header("x-auth-account").as_deref(),
        Some("newbie@example.com")
    );
    assert_eq!(seen.header("x-auth-mapping").as_deref(), Some("auto"));
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("viewer"));

    let t = w
        .token("g-2", "", json!({"email": "x@sub.example.com"}))
        .await;
    forbidden(&w.get("/items/1", &t).await, "domain_not_allowed");
    let t = w
        .token("g-3", "", json!({"email": "x@elsewhere.org"}))
        .await;
    forbidden(&w.get("/items/1", &t).await, "domain_not_allowed");
    let t = w
        .token(
            "g-4",
            "",
            json!({"email": "x@example.com", "email_verified": false}),
        )
        .await;
    forbidden(&w.get("/items/1", &t).await, "unknown_account");
    // A verified email equal to a configured account's email does not become that account.
    let t = w
        .token("g-5", "", json!({"email": "SJones@example.com"}))
        .await;
    forbidden(&w.get("/items/1", &t).await, "unknown_account");
    // allowed_domains also restricts mapped users whose token carries an email.
    let t = w
        .token("sub-sjones", "", json!({"email": "sjones@elsewhere.org"}))
        .await;
    forbidden(&w.get("/items/1", &t).await, "domain_not_allowed");
}

#[tokio::test]
async fn is_admin_and_ldap_groups_change_roles() {
    let w = world("").await;
    let roles = |got: Got| got.seen().header("x-auth-roles").unwrap_or_default();
    let t = w.token("sub-sjones", "", json!({"is_admin": true})).await;
    assert_eq!(roles(w.get("/whoami", &t).await), "admin, engineer");
    let t = w.token("sub-root", "", json!({"is_admin": false})).await;
    assert_eq!(roles(w.get("/whoami", &t).await), "viewer");
    let t = w.token("sub-root", "", json!({})).await;
    assert_eq!(roles(w.get("/whoami", &t).await), "admin, viewer");

    let groups = json!([
        "CN=Engineering,OU=Security Groups,DC=example,DC=com",
        "CN=Cafeteria,OU=Other,DC=example,DC=com",
        "plain \"quoted\" group"
    ]);
    let t = w
        .token(
            "g-9",
            "",
            json!({"email": "dev@example.com", "groups": groups}),
        )
        .await;
    let seen = w.get("/whoami", &t).await.seen();
    assert_eq!(
        seen.header("x-auth-roles").as_deref(),
        Some("engineer, viewer")
    );
    assert_eq!(
        seen.header("x-auth-groups").as_deref(),
        Some(
            r#""CN=Engineering,OU=Security Groups,DC=example,DC=com", "CN=Cafeteria,OU=Other,DC=example,DC=com", "plain \"quoted\" group""#
        )
    );
    // A single-string groups claim works too.
    let t = w
        .token(
            "g-10",
            "",
            json!({"email": "dev2@example.com", "groups": "CN=engineering,OU=x"}),
        )
        .await;
    let seen = w.get("/whoami", &t).await.seen();
    assert_eq!(
        seen.header("x-auth-roles").as_deref(),
        Some("engineer, viewer")
    );
}

#[tokio::test]
async fn scope_first_permissions() {
    let w = world("").await;
    let t = w.token("sub-sjones", "read:items", json!({})).await;
    let seen = w.get("/items/1", &t).await.seen();
    assert_eq!(
        seen.header("x-auth-permission-source").as_deref(),
        Some("scope")
    );
    assert_eq!(
        seen.header("x-auth-permissions").as_deref(),
        Some("items:read")
    );
    let post = w.req("POST", "/items/1", &t, &[]).await;
    forbidden(&post, "insufficient_scope");
    assert_eq!(
        post.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\", error=\"insufficient_scope\", scope=\"write:items\"")
    );
    // Only undefined scope values: the roles decide (engineer may write).
    let t = w.token("sub-sjones", "openid", json!({})).await;
    let got = w.req("POST", "/items/1", &t, &[]).await;
    assert_eq!(
        got.seen().header("x-auth-permission-source").as_deref(),
        Some("roles")
    );
    // No scope at all: roles.
    let t = w.token("sub-sjones", "", json!({})).await;
    assert_eq!(w.req("POST", "/items/1", &t, &[]).await.status, 200);
}

#[tokio::test]
async fn intersect_mode_grants_only_what_scope_and_roles_both_allow() {
    let w = world("scope_mode = \"intersect\"").await;
    // root is admin + viewer: write:items ∩ * = items:read, items:write.
    let t = w
        .token("sub-root", "write:items", json!({"is_admin": false}))
        .await;
    // is_admin false drops admin: viewer only → write is not allowed.
    forbidden(
        &w.req("POST", "/items/1", &t, &[]).await,
        "insufficient_scope",
    );
    assert_eq!(w.get("/items/1", &t).await.status, 200);
    let t = w.token("sub-root", "write:items", json!({})).await;
    assert_eq!(w.req("POST", "/items/1", &t, &[]).await.status, 200);
}

#[tokio::test]
async fn a_provider_restricted_route_refuses_other_providers() {
    let w = world("").await;
    let mut c = json!({});
    c["sub"] = json!("someone");
    let foreign = w.other.token("RS256", "", c).await;
    assert_eq!(w.get("/whoami", &foreign).await.status, 200);
    forbidden(&w.get("/corp-only/x", &foreign).await, "access_denied");
    let t = w.token("sub-sjones", "", json!({})).await;
    assert_eq!(w.get("/corp-only/x", &t).await.status, 200);
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let w = world("").await;
    let spoof: &[(&str, &str)] = &[
        ("X-Auth-Account", "admin"),
        ("x_auth_account", "admin"),
        ("X-AUTH-ROLES", "admin"),
        ("X-Auth-Groups", "\"admins\""),
        ("x-auth-permission-source", "scope"),
    ];
    let t = w.token("sub-sjones", "", json!({})).await;
    // Allowed: only Tollgate's values arrive, once each.
    let seen = w.req("GET", "/items/1", &t, spoof).await.seen();
    assert_eq!(seen.header_all("x-auth-account"), ["sjones"]);
    assert_eq!(seen.header_all("x-auth-roles"), ["engineer"]);
    assert!(seen.header_all("x-auth-groups").is_empty());
    assert!(!seen.header_names().iter().any(|n| n.contains('_')));
    // Public: none at all.
    let seen = w.req("GET", "/public/x", &t, spoof).await.seen();
    assert!(
        !seen
            .header_names()
            .iter()
            .any(|n| n.starts_with("x-auth") || n.starts_with("x_auth"))
    );
    // Denied: 403, nothing forwarded (and the strip step ran).
    forbidden(
        &w.req(
            "POST",
            "/items/1",
            &w.token("sub-sjones", "read:items", json!({})).await,
            spoof,
        )
        .await,
        "insufficient_scope",
    );
    // `Connection: X-Auth-Account` cannot remove Tollgate's own header.
    let seen = w
        .req(
            "GET",
            "/items/1",
            &t,
            &[("connection", "X-Auth-Account, X-Auth-Roles")],
        )
        .await
        .seen();
    assert_eq!(seen.header("x-auth-account").as_deref(), Some("sjones"));
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("engineer"));
}

#[tokio::test]
async fn claim_values_cannot_inject_headers_and_groups_are_capped() {
    let w = world("").await;
    let t = w
        .token(
            "g-20",
            "",
            json!({"email": "eve@example.com", "name": "Eve\r\nX-Auth-Account: admin"}),
        )
        .await;
    let seen = w.get("/whoami", &t).await.seen();
    assert_eq!(seen.header("x-auth-name"), None);
    assert_eq!(seen.header_all("x-auth-account"), ["eve@example.com"]);

    let many: Vec<String> = (0..200)
        .map(|i| format!("CN=Group number {i:04},OU=Teams,DC=example,DC=com"))
        .collect();
    let t = w
        .token(
            "g-21",
            "",
            json!({"email": "big@example.com", "groups": many}),
        )
        .await;
    let seen = w.get("/whoami", &t).await.seen();
    let groups = seen.header("x-auth-groups").unwrap();
    assert!(groups.len() < 8192, "{}", groups.len());
    assert!(groups.starts_with("\"CN=Group number 0000,"));
    let m = String::from_utf8_lossy(&get(&w.gate.admin_url("/metrics")).await.body).into_owned();
    assert!(
        m.contains("tollgate_identity_groups_truncated_total 1"),
        "{m}"
    );
}

/// The upstream's side: verify `X-Auth-Assertion` with a JOSE library against the JWKS
/// Tollgate publishes on its admin listener.
async fn verify_assertion(
    w: &World,
    token: &str,
    alg: jsonwebtoken::Algorithm,
    aud: &str,
) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&get(&w.gate.admin_url("/.well-known/jwks.json")).await.body)
            .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[aud]);
    v.set_issuer(&["tollgate-test"]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn signed_assertions_verify_against_the_published_jwks() {
    for (key, alg) in [
        (
            rcgen::KeyPair::generate().unwrap(),
            jsonwebtoken::Algorithm::ES256,
        ),
        (
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            jsonwebtoken::Algorithm::EdDSA,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assertion.pem");
        std::fs::write(&path, key.serialize_pem()).unwrap();
        let w = world(&format!(
            "[assertion]\nkey_file = {:?}\nissuer = \"tollgate-test\"\naudience = \"api://backend\"\nlifetime = \"30s\"\n",
            path.display().to_string()
        ))
        .await;
        let t = w.token("sub-sjones", "read:items", json!({})).await;
        let seen = w
            .req("GET", "/items/1", &t, &[("x-auth-assertion", "forged")])
            .await
            .seen();
        let assertion = seen.header("x-auth-assertion").unwrap();
        assert_ne!(assertion, "forged");
        let claims = verify_assertion(&w, &assertion, alg, "api://backend").await;
        assert_eq!(claims["sub"], "sjones");
        assert_eq!(claims["provider"], "corp");
        assert_eq!(claims["provider_subject"], "sub-sjones");
        assert_eq!(claims["permissions"], json!(["items:read"]));
        assert_eq!(claims["permission_source"], "scope");
        assert_eq!(claims["roles"], json!(["engineer"]));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            30
        );

        // An identity mapping may set its own audience.
        let t = w
            .token(
                "repo:acme/api:ref:refs/heads/main",
                "",
                json!({"repository": "acme/api", "workflow_ref": "acme/api/.github/workflows/deploy.yaml@refs/heads/main"}),
            )
            .await;
        let seen = w.get("/deploy/now", &t).await.seen();
        let claims = verify_assertion(
            &w,
            &seen.header("x-auth-assertion").unwrap(),
            alg,
            "api://deployer",
        )
        .await;
        assert_eq!(claims["sub"], "ci-deployer");
        assert_eq!(claims["account_kind"], "service");

        // Public requests carry no assertion.
        let seen = w.req("GET", "/public/x", &t, &[]).await.seen();
        assert_eq!(seen.header("x-auth-assertion"), None);
    }
}

#[tokio::test]
async fn without_an_assertion_key_the_jwks_is_empty() {
    let w = world("").await;
    let got = get(&w.gate.admin_url("/.well-known/jwks.json")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), json!({"keys": []}));
}
