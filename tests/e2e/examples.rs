//! Every `config/examples/*` provider shape, fed with that shape of claims by the real test
//! IdP: the example's mappings produce the documented identity headers.

use serde_json::{Value, json};

use crate::idp::*;
use crate::support::*;

/// Loads an example, pointed at the test IdP (issuer, audience) and the echo upstream.
async fn example(name: &str, idp: &Idp, echo: &Echo) -> Gate {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(name);
    let main = std::fs::read_to_string(dir.join("tollgate.toml")).unwrap();
    let accounts = std::fs::read_to_string(dir.join("accounts.toml")).unwrap();
    let main: String = main
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                "listen = \"127.0.0.1:0\"".to_string()
            } else if l.starts_with("admin_listen = ") {
                "admin_listen = \"127.0.0.1:0\"".to_string()
            } else if l.starts_with("upstream = ") {
                format!("upstream = \"{}\"", echo.url())
            } else if l.starts_with("issuer = ") {
                format!("issuer = \"{}\"", idp.issuer)
            } else if l.starts_with("audiences = ") {
                format!("audiences = [\"{AUDIENCE}\"]")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Gate::start_with(&main, &accounts).await
}

async fn call(gate: &Gate, idp: &Idp, method: &str, path: &str, sub: &str, claims: Value) -> Got {
    let mut c = claims;
    c["sub"] = json!(sub);
    let token = idp.token("RS256", "", c).await;
    send(
        http::Request::builder()
            .method(method)
            .uri(gate.url(path))
            .header("authorization", format!("Bearer {token}"))
            .body(empty())
            .unwrap(),
    )
    .await
}

fn headers(got: &Got) -> Seen {
    got.seen()
}

fn h(seen: &Seen, name: &str) -> String {
    seen.header(&format!("x-auth-{name}")).unwrap_or_default()
}

fn denied(got: &Got, error: &str) {
    assert_eq!(got.status, 403, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"], error);
}

#[tokio::test]
async fn keycloak_realm_roles_and_preferred_username() {
    let (idp, echo) = (Idp::start(), Echo::start().await);
    let gate = example("keycloak", &idp, &echo).await;
    let roles = json!({"roles": ["orders-writer", "offline_access"]});
    let s = headers(&call(&gate, &idp, "GET", "/orders/1", "f3b1c2d4-0000-4000-8000-000000000001",
        json!({"preferred_username": "oncall", "email": "oncall@example.com", "realm_access": roles})).await);
    assert_eq!(h(&s, "account"), "ops-oncall");
    assert_eq!(h(&s, "roles"), "admin, writer");
    assert_eq!(h(&s, "name"), "On-call engineer");
    assert_eq!(h(&s, "groups"), "\"orders-writer\", \"offline_access\"");
    let s = headers(&call(&gate, &idp, "POST", "/orders/1", "u-2",
        json!({"preferred_username": "dev", "email": "dev@example.com", "realm_access": {"roles": ["orders-writer"]}})).await);
    assert_eq!(h(&s, "account"), "dev@example.com");
    assert_eq!(h(&s, "mapping"), "auto");
    assert_eq!(h(&s, "name"), "dev");
    assert_eq!(h(&s, "roles"), "reader, writer");
}

#[tokio::test]
async fn entra_id_oid_scp_and_app_roles() {
    let (idp, echo) = (Idp::start(), Echo::start().await);
    let gate = example("entra-id", &idp, &echo).await;
    let user = json!({"oid": "00000000-0000-0000-0000-0000000000aa", "scp": "Reports.Read",
                      "preferred_username": "jdoe@contoso.com", "name": "Jane Doe", "tid": "11111111-2222-3333-4444-555555555555"});
    let s = headers(
        &call(
            &gate,
            &idp,
            "GET",
            "/reports/1",
            "per-app-sub",
            user.clone(),
        )
        .await,
    );
    assert_eq!(h(&s, "account"), "jdoe");
    assert_eq!(h(&s, "subject"), "00000000-0000-0000-0000-0000000000aa");
    assert_eq!(h(&s, "permissions"), "reports:read");
    assert_eq!(h(&s, "permission-source"), "scope");
    denied(
        &call(&gate, &idp, "POST", "/reports/1", "per-app-sub", user).await,
        "insufficient_scope",
    );
    // A daemon with an app role, mapped by its client id.
    let s = headers(&call(&gate, &idp, "GET", "/reports/1", "daemon-sub",
        json!({"oid": "svc-object-id", "azp": "6f1c0000-aaaa-bbbb-cccc-0000000000ff", "roles": ["Reports.Readers"]})).await);
    assert_eq!(h(&s, "mapping"), "nightly-export");
    assert_eq!(h(&s, "account-kind"), "service");
    assert_eq!(h(&s, "account"), "svc-object-id");
    assert_eq!(h(&s, "roles"), "reader");
}

#[tokio::test]
async fn okta_uid_scp_array_and_groups() {
    let (idp, echo) = (Idp::start(), Echo::start().await);
    let gate = example("okta", &idp, &echo).await;
    let s = headers(&call(&gate, &idp, "POST", "/tickets/7", "pat@acme.com",
        json!({"uid": "00u1a2b3c4D5e6F7g8h9", "scp": ["tickets.read", "tickets.write"], "groups": ["Support", "Everyone"]})).await);
    assert_eq!(h(&s, "account"), "pat");
    assert_eq!(h(&s, "email"), "pat@acme.com");
    assert_eq!(h(&s, "permissions"), "tickets:read, tickets:write");
    assert_eq!(h(&s, "roles"), "support, viewer");
    // A login outside acme.com is refused even with a mapped uid.
    denied(
        &call(
            &gate,
            &idp,
            "GET",
            "/tickets/7",
            "pat@elsewhere.org",
            json!({"uid": "00u1a2b3c4D5e6F7g8h9"}),
        )
        .await,
        "domain_not_allowed",
    );
}

#[tokio::test]
async fn auth0_namespaced_claims_and_machine_to_machine() {
    let (idp, echo) = (Idp::start(), Echo::start().await);
    let gate = example("auth0", &idp, &echo).await;
    let s = headers(&call(&gate, &idp, "GET", "/orders/1", "auth0|64b0c0ffee0000000000abcd",
        json!({"https://acme.example/email": "alex@acme.example", "https://acme.example/roles": ["staff"], "permissions": ["read:orders"]})).await);
    assert_eq!(h(&s, "account"), "alex");
    assert_eq!(h(&s, "email"), "alex@acme.example");
    assert_eq!(h(&s, "roles"), "customer, staff");
    let s = headers(&call(&gate, &idp, "POST", "/orders/1", "Wx7r9XNZr0VaUq2yBpQfE3kLmN4oPsT1@clients",
        json!({"azp": "Wx7r9XNZr0VaUq2yBpQfE3kLmN4oPsT1", "gty": "client-credentials", "scope": "write:orders"})).await);
    assert_eq!(h(&s, "account"), "warehouse-sync");
    assert_eq!(h(&s, "permission-source"), "scope");
}

#[tokio::test]
async fn google_workspace_domain_users() {
    let (idp, echo) = (Idp::start(), Echo::start().await);
    let gate = example("google", &idp, &echo).await;
    let s = headers(
        &call(
            &gate,
            &idp,
            "POST",
            "/wiki/page",
            "109876543210987654321",
            json!({"email": "kim@example.com", "email_verified": true, "hd": "example.com"}),
        )
        .await,
    );
    assert_eq!(h(&s, "account"), "kim");
    assert_eq!(h(&s, "roles"), "editor");
    let newcomer = json!({"email": "lee@example.com", "email_verified": true, "hd": "example.com"});
    let s = headers(&call(&gate, &idp, "GET", "/wiki/page", "555", newcomer.clone()).await);
    assert_eq!(h(&s, "account"), "lee@example.com");
    assert_eq!(h(&s, "roles"), "employee");
    denied(
        &call(&gate, &idp, "POST", "/wiki/page", "555", newcomer).await,
        "insufficient_scope",
    );
    denied(
        &call(
            &gate,
            &idp,
            "GET",
            "/wiki/page",
            "777",
            json!({"email": "x@gmail.com", "email_verified": true}),
        )
        .await,
        "domain_not_allowed",
    );
}

#[tokio::test]
async fn github_actions_workload_identities() {
    let (idp, echo) = (Idp::start(), Echo::start().await);
    let gate = example("github-actions", &idp, &echo).await;
    let main = json!({"repository": "acme/api", "repository_owner": "acme",
                      "workflow_ref": "acme/api/.github/workflows/deploy.yaml@refs/heads/main"});
    let s = headers(
        &call(
            &gate,
            &idp,
            "POST",
            "/deploy/prod",
            "repo:acme/api:ref:refs/heads/main",
            main,
        )
        .await,
    );
    assert_eq!(h(&s, "account"), "ci-deployer");
    assert_eq!(h(&s, "mapping"), "api-deploy-main");
    let branch = json!({"repository": "acme/api", "repository_owner": "acme",
                        "workflow_ref": "acme/api/.github/workflows/deploy.yaml@refs/heads/feature"});
    denied(
        &call(
            &gate,
            &idp,
            "POST",
            "/deploy/prod",
            "repo:acme/api:ref:refs/heads/feature",
            branch.clone(),
        )
        .await,
        "insufficient_scope",
    );
    let s = headers(
        &call(
            &gate,
            &idp,
            "GET",
            "/artifacts/1",
            "repo:acme/api:ref:refs/heads/feature",
            branch,
        )
        .await,
    );
    assert_eq!(h(&s, "mapping"), "acme-readers");
    assert_eq!(h(&s, "account"), "repo:acme/api:ref:refs/heads/feature");
    denied(
        &call(
            &gate,
            &idp,
            "GET",
            "/artifacts/1",
            "repo:evil/api:ref:refs/heads/main",
            json!({"repository": "evil/api", "repository_owner": "evil"}),
        )
        .await,
        "unknown_account",
    );
    // unmatched = "deny".
    denied(
        &call(
            &gate,
            &idp,
            "GET",
            "/elsewhere",
            "repo:acme/api:ref:refs/heads/main",
            json!({}),
        )
        .await,
        "access_denied",
    );
}
