//! `tollgate explain`: names the right step and reason, in text and JSON.

use std::process::Command;

use serde_json::{Value, json};

use crate::idp::*;

struct Setup {
    idp: Idp,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let main = format!(
        "upstream = \"http://127.0.0.1:9\"\n[roles]\nviewer = [\"items:read\"]\n{}\n[[routes]]\nmethods = [\"GET\"]\npath = \"/items/**\"\npermissions = [\"items:read\"]\n",
        idp.provider_toml("corp", "")
    );
    std::fs::write(dir.path().join("tollgate.toml"), main).unwrap();
    std::fs::write(
        dir.path().join("accounts.toml"),
        "[[accounts]]\nid = \"sjones\"\nroles = [\"viewer\"]\n  [[accounts.mappings]]\n  provider = \"corp\"\n  subject = \"sub-sjones\"\n  name = \"corp login\"\n\n[[identity_mappings]]\nname = \"ci\"\nprovider = \"corp\"\npriority = 1\nclaims = { repository = \"acme/*\" }\nroles = [\"viewer\"]\n",
    )
    .unwrap();
    Setup { idp, dir }
}

fn explain(s: &Setup, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("explain")
        .arg("-c")
        .arg(s.dir.path().join("tollgate.toml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn jwks_file(s: &Setup) -> String {
    let path = s.dir.path().join("jwks.json");
    std::fs::write(&path, s.idp.jwks().await.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn explains_an_allowed_request() {
    let s = setup();
    let jwks = jwks_file(&s).await;
    let t = s.idp.token("ES256", "", json!({"sub": "sub-sjones"})).await;
    let (ok, out) = tokio::task::spawn_blocking({
        let s2 = (t.clone(), jwks.clone());
        let s = std::sync::Arc::new(s);
        move || {
            explain(
                &s,
                &["--token", &s2.0, "--jwks", &s2.1, "--path", "/items//1/."],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    for want in [
        "canonical path /items/1/",
        "routes[0] \"/items/**\"",
        "verification  ok",
        "account mapping \"corp login\"",
        "account \"sjones\" (user)",
        "[items:read] from roles",
        "verdict: ALLOW (200)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains(&t), "the token is not echoed");
}

#[tokio::test]
async fn explains_a_wrong_audience_and_an_unmapped_subject() {
    let s = std::sync::Arc::new(setup());
    let jwks = jwks_file(&s).await;
    let wrong_aud = s
        .idp
        .token_for("api://other", "RS256", "", json!({"sub": "sub-sjones"}))
        .await;
    let unmapped = s.idp.token("RS256", "", json!({"sub": "stranger"})).await;
    let s2 = s.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        explain(
            &s2,
            &["--token", &wrong_aud, "--jwks", &jwks, "--path", "/items/1"],
        )
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        out.contains("verification  fail  audience not accepted"),
        "{out}"
    );
    assert!(out.contains("verdict: DENY 401 invalid_token"), "{out}");
    assert!(
        out.contains(
            "claims        fail  aud [\"api://other\"], expected one of [\"api://tollgate-test\"]"
        ),
        "{out}"
    );

    // Live keys (no --jwks), JSON output.
    let s3 = s.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        explain(&s3, &["--token", &unmapped, "--path", "/items/1", "--json"])
    })
    .await
    .unwrap();
    assert!(!ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["verdict"]["status"], 403);
    assert_eq!(v["verdict"]["error"], "unknown_account");
    let identity: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "identity")
        .map(|s| s["detail"].as_str().unwrap())
        .collect();
    assert!(
        identity.iter().any(|d| d.contains("account mapping: none")),
        "{identity:?}"
    );
    assert!(
        identity.iter().any(|d| d.contains(
            "identity mapping \"ci\" (priority 1): no match, claim repository is missing"
        )),
        "{identity:?}"
    );
    assert!(
        identity
            .iter()
            .any(|d| d.contains("auto-provisioning: off")),
        "{identity:?}"
    );
}

#[tokio::test]
async fn raw_claims_are_marked_unverified() {
    let s = std::sync::Arc::new(setup());
    let claims = json!({"iss": s.idp.issuer, "aud": AUDIENCE, "sub": "x", "repository": "acme/api", "exp": now() + 60}).to_string();
    let s2 = s.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        explain(&s2, &["--claims", &claims, "--path", "/items/1"])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("(claims NOT verified)"), "{out}");
    assert!(
        out.contains("identity mapping \"ci\" (priority 1): matches"),
        "{out}"
    );
    let s3 = s.clone();
    let (ok, out) =
        tokio::task::spawn_blocking(move || explain(&s3, &["--path", "/items/%2e%2e/%2e%2e/etc"]))
            .await
            .unwrap();
    assert!(!ok);
    assert!(out.contains("path          fail"), "{out}");
    assert!(out.contains("verdict: DENY 400 invalid_request"), "{out}");
}
