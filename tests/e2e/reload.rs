//! Hot reload: atomic swaps under load, failed reloads keep the last good config, instant
//! revocation for cached tokens, ConfigMap-style symlink swaps, SIGHUP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::idp::*;
use crate::support::*;

fn policy(public: bool) -> String {
    if public {
        "[[routes]]\npath = \"/x\"\nauth = \"public\"\n".to_string()
    } else {
        "[[routes]]\npath = \"/x\"\n".to_string()
    }
}

#[tokio::test]
async fn reload_under_load_swaps_atomically_and_never_fails_a_request() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), &policy(true))).await;
    let url = gate.url("/x");
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, stop, served) = (url.clone(), stop.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .request(http::Request::get(&url).body(empty()).unwrap())
                    .await
                    .expect("request failed during a reload");
                let got = collect(resp).await;
                assert!(
                    matches!(got.status.as_u16(), 200 | 401),
                    "status {}",
                    got.status
                );
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut public = true;
    for i in 0..20 {
        if i % 2 == 0 {
            public = !public;
            assert!(
                gate.rewrite_and_reload("tollgate.toml", &config(&echo.url(), &policy(public)))
                    .await
            );
            // The very next request sees the new policy.
            let status = get(&url).await.status.as_u16();
            assert_eq!(status, if public { 200 } else { 401 }, "swap {i}");
        } else {
            let broken = format!(
                "{}methods = [\"GETT\"]\n",
                config(&echo.url(), &policy(!public))
            );
            assert!(!gate.rewrite_and_reload("tollgate.toml", &broken).await);
            let status = get(&url).await.status.as_u16();
            assert_eq!(
                status,
                if public { 200 } else { 401 },
                "failed swap {i} kept the policy"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 20);
    assert_eq!(
        gate.metric("tollgate_config_reload_total{result=\"success\"}")
            .await,
        10.0
    );
    assert_eq!(
        gate.metric("tollgate_config_reload_total{result=\"failure\"}")
            .await,
        10.0
    );
}

#[tokio::test]
async fn a_broken_config_keeps_serving_and_is_counted() {
    let echo = Echo::start().await;
    let gate = Gate::start(&config(&echo.url(), &policy(true))).await;
    let before = gate
        .metric("tollgate_config_last_reload_success_timestamp_seconds")
        .await;
    assert!(before > 1.7e9);
    assert!(
        !gate
            .rewrite_and_reload("tollgate.toml", "upstream = \"ftp://nope\"\n[[routes]]\n")
            .await
    );
    assert!(
        !gate
            .rewrite_and_reload("accounts.toml", "[[accounts]]\nid = \"a b\"\n")
            .await
    );
    assert_eq!(get(&gate.url("/x")).await.status, 200);
    assert_eq!(
        gate.metric("tollgate_config_reload_total{result=\"failure\"}")
            .await,
        2.0
    );
    assert_eq!(
        gate.metric("tollgate_config_last_reload_success_timestamp_seconds")
            .await,
        before
    );
    assert_eq!(get(&gate.admin_url("/readyz")).await.status, 200);
}

const ROLES: &str = "[roles]\nviewer = [\"items:read\"]\n[[routes]]\npath = \"/api/**\"\npermissions = [\"items:read\"]\n";

fn account(extra: &str) -> String {
    format!(
        "[[accounts]]\nid = \"sjones\"\nroles = [\"viewer\"]\n{extra}\n  [[accounts.mappings]]\n  provider = \"corp\"\n  subject = \"sub-sjones\"\n"
    )
}

#[tokio::test]
async fn revocation_takes_effect_on_the_first_request_after_reload_even_when_cached() {
    let idp = Idp::start();
    let echo = Echo::start().await;
    let main = config(
        &echo.url(),
        &format!("{ROLES}{}", idp.provider_toml("corp", "")),
    );
    let gate = Gate::start_with(&main, &account("")).await;
    let token = idp.token("ES256", "", json!({"sub": "sub-sjones"})).await;
    let (url, auth) = (gate.url("/api/items"), format!("Bearer {token}"));
    let headers = [("authorization", auth.as_str())];
    let call = || get_with(&url, &headers);
    assert_eq!(
        call().await.seen().header("x-auth-account").as_deref(),
        Some("sjones")
    );
    // Cached on the second verification, a hit on the third.
    assert_eq!(call().await.status, 200);
    assert_eq!(call().await.status, 200);
    assert!(
        gate.metric("tollgate_token_cache_hits_total ").await >= 1.0,
        "verification is cached"
    );
    let fetches = idp.jwks_requests().await;

    // Disabled: 403 at once.
    assert!(
        gate.rewrite_and_reload("accounts.toml", &account("disabled = true"))
            .await
    );
    let got = call().await;
    assert_eq!(got.status, 403);
    assert_eq!(got.json()["error"], "account_disabled");
    // Mapping deleted: 403 unknown_account.
    assert!(
        gate.rewrite_and_reload(
            "accounts.toml",
            "[[accounts]]\nid = \"sjones\"\nroles = [\"viewer\"]\n"
        )
        .await
    );
    assert_eq!(call().await.json()["error"], "unknown_account");
    // Account deleted.
    assert!(gate.rewrite_and_reload("accounts.toml", "").await);
    assert_eq!(call().await.json()["error"], "unknown_account");
    // Restored: allowed again.
    assert!(gate.rewrite_and_reload("accounts.toml", &account("")).await);
    assert_eq!(call().await.status, 200);
    // The provider did not change: its key cache survived every reload (no refetch).
    assert_eq!(idp.jwks_requests().await, fetches);
}

#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_is_picked_up() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The layout kubelet creates: files are symlinks through `..data` to a timestamped dir.
    let v1 = root.join("..2026_11_22_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("tollgate.toml"), config(&echo.url(), &policy(true))).unwrap();
    std::fs::write(v1.join("accounts.toml"), "").unwrap();
    std::os::unix::fs::symlink("..2026_11_22_v1", root.join("..data")).unwrap();
    for f in ["tollgate.toml", "accounts.toml"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), root.join(f)).unwrap();
    }
    let main = root.join("tollgate.toml");
    let gate = Gate::start_at(dir, &main, true).await;
    assert_eq!(get(&gate.url("/x")).await.status, 200);

    // Update: new timestamped dir, `..data_tmp` symlink, atomic rename over `..data`.
    let root = gate.dir.path();
    let v2 = root.join("..2026_11_22_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("tollgate.toml"),
        config(&echo.url(), &policy(false)),
    )
    .unwrap();
    std::fs::write(v2.join("accounts.toml"), "").unwrap();
    std::os::unix::fs::symlink("..2026_11_22_v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_11_22_v1")).unwrap();

    // The watcher reloads on its own; wait for it (bounded), then the new policy holds.
    let start = std::time::Instant::now();
    while gate
        .metric("tollgate_config_reload_total{result=\"success\"}")
        .await
        < 1.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "swap not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&gate.url("/x")).await.status, 401);
}

#[tokio::test]
async fn sighup_reloads_the_running_process() {
    let echo = Echo::start().await;
    let gate = GateProcess::spawn(&config(&echo.url(), &policy(true)), "");
    assert_eq!(get(&gate.url("/x")).await.status, 200);
    std::fs::write(
        gate.dir.path().join("tollgate.toml"),
        config(&echo.url(), &policy(false)),
    )
    .unwrap();
    gate.signal("HUP");
    let gate = tokio::task::spawn_blocking(move || {
        gate.wait_for_log("configuration reloaded", |_| true);
        gate
    })
    .await
    .unwrap();
    assert_eq!(get(&gate.url("/x")).await.status, 401);
}
