//! Operations: `tollgate healthcheck`, and audit events that never carry a secret.

use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::idp::*;
use crate::support::*;

fn healthcheck(args: &[&str]) -> bool {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("healthcheck")
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn healthcheck_exits_zero_only_when_healthz_answers() {
    let echo = Echo::start().await;
    let gate = GateProcess::spawn(&config(&echo.url(), ROUTES), "");
    let admin = gate.admin.to_string();
    let ok = tokio::task::spawn_blocking(move || healthcheck(&["--admin", &admin]))
        .await
        .unwrap();
    assert!(ok);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let ko = tokio::task::spawn_blocking(move || healthcheck(&["--admin", &closed]))
        .await
        .unwrap();
    assert!(!ko);
    // The public listener is not the admin one: /healthz there is not Tollgate's.
    let public = gate.addr.to_string();
    let wrong = tokio::task::spawn_blocking(move || healthcheck(&["--admin", &public]))
        .await
        .unwrap();
    assert!(!wrong);
}

#[tokio::test]
async fn audit_events_are_complete_and_never_carry_a_token_or_secret() {
    let idp = Idp::start();
    let echo = Echo::start().await;
    let main = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"{}\"\naudit = \"all\"\n[roles]\nviewer = [\"items:read\"]\n{}\n[[routes]]\npath = \"/public/**\"\nauth = \"public\"\n[[routes]]\npath = \"/api/**\"\npermissions = [\"items:read\"]\n",
        echo.url(),
        idp.provider_toml("corp", "")
    );
    let accounts = "[[accounts]]\nid = \"sjones\"\nroles = [\"viewer\"]\n  [[accounts.mappings]]\n  provider = \"corp\"\n  subject = \"sub-sjones\"\n  name = \"corp login\"\n";
    let gate = GateProcess::spawn(&main, accounts);
    let good = idp.token("ES256", "", json!({"sub": "sub-sjones"})).await;
    let unknown = idp.token("RS256", "", json!({"sub": "sub-stranger"})).await;
    let expired = idp
        .sign(
            "RS256",
            json!({}),
            json!({"sub": "sub-sjones", "exp": now() - 3600, "iat": now() - 7200}),
        )
        .await;
    let secret = "tollgate-test-secret";
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("tollgate-test:{secret}"))
    );
    for (path, auth) in [
        ("/api/items", format!("Bearer {good}")),
        ("/api/items", format!("Bearer {unknown}")),
        ("/api/items", format!("Bearer {expired}")),
        (
            "/api/items?access_token=x",
            format!("Bearer {good}.tampered"),
        ),
        ("/public/x", basic.clone()),
        ("/public/x", format!("Bearer {good}")),
    ] {
        let _ = get_with(
            &gate.url(path),
            &[
                ("authorization", &auth),
                ("cookie", &format!("session={good}")),
            ],
        )
        .await;
    }
    // Wait for the last audit event, then read everything the process printed.
    let lines = gate.lines.clone();
    let gate = tokio::task::spawn_blocking(move || {
        for _ in 0..6 {
            gate.wait_for_log("request", |v| v["target"] == "audit");
        }
        gate
    })
    .await
    .unwrap();
    let all = lines.lock().unwrap().join("\n");
    for (what, needle) in [
        ("token", good.as_str()),
        ("token", unknown.as_str()),
        ("token", expired.as_str()),
        ("client secret", secret),
    ] {
        assert!(!all.contains(needle), "{what} in the output");
        // Not even one segment of a token.
        for seg in needle.split('.').filter(|s| s.len() > 20) {
            assert!(!all.contains(seg), "{what} segment in the output");
        }
    }
    let events: Vec<Value> = all
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    assert_eq!(events.len(), 6);
    let ok = &events[0];
    for field in [
        "timestamp",
        "request_id",
        "client",
        "method",
        "path",
        "provider",
        "subject",
        "account",
        "mapping",
        "permission_source",
        "decision",
        "reason",
        "status",
        "latency_us",
    ] {
        assert!(ok.get(field).is_some(), "audit field {field} missing: {ok}");
    }
    assert_eq!(ok["account"], "sjones");
    assert_eq!(ok["mapping"], "corp login");
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["status"], 200);
    assert_eq!(events[1]["reason"], "unknown_account");
    assert_eq!(events[2]["reason"], "expired");
    assert_eq!(events[3]["decision"], "deny");
    assert_eq!(events[4]["reason"], "public");
    drop(gate);
}

#[tokio::test]
async fn audit_denied_mode_logs_only_refusals() {
    let echo = Echo::start().await;
    let main = config(&echo.url(), ROUTES).replace("audit = \"off\"", "audit = \"denied\"");
    let gate = GateProcess::spawn(&main, "");
    assert_eq!(get(&gate.url("/public/x")).await.status, 200);
    assert_eq!(get(&gate.url("/private/x")).await.status, 401);
    let lines = gate.lines.clone();
    let gate = tokio::task::spawn_blocking(move || {
        let ev = gate.wait_for_log("request", |v| v["target"] == "audit");
        assert_eq!(ev["reason"], "missing_token");
        gate
    })
    .await
    .unwrap();
    let n = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"target\":\"audit\""))
        .count();
    assert_eq!(n, 1);
    drop(gate);
}

#[tokio::test]
async fn the_log_filter_can_silence_audit_events() {
    let echo = Echo::start().await;
    let main = config(&echo.url(), ROUTES).replace("audit = \"off\"", "audit = \"all\"");
    let gate = GateProcess::spawn_with_log(&main, "", "info,audit=off");
    assert_eq!(get(&gate.url("/public/x")).await.status, 200);
    assert_eq!(get(&gate.url("/private/x")).await.status, 401);
    // One writer queue carries every line in order: once a line logged after both requests
    // is out, any audit line for them would be too.
    gate.signal("HUP");
    let lines = gate.lines.clone();
    let gate = tokio::task::spawn_blocking(move || {
        gate.wait_for_log("configuration reloaded", |_| true);
        gate
    })
    .await
    .unwrap();
    let all = lines.lock().unwrap().clone();
    assert!(
        all.iter().any(|l| l.contains("configuration reloaded")),
        "{all:?}"
    );
    assert!(
        !all.iter().any(|l| l.contains("\"target\":\"audit\"")),
        "{all:?}"
    );
    drop(gate);
}
