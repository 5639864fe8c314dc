//! `tollgate check`, and every file in config/ parses.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_config_file_in_the_repository_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut tomls = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                tomls.push(p);
            }
        }
    }
    assert!(tomls.len() >= 2);
    // Main files are those with an `upstream`; every other file must be an account table
    // that some main file points to.
    let mut reached = Vec::new();
    for p in &tomls {
        let text = std::fs::read_to_string(p).unwrap();
        let v: toml::Table = toml::from_str(&text).unwrap();
        if v.contains_key("upstream") {
            let cfg = tollgate::config::load(p).unwrap_or_else(|e| panic!("{}:\n{e}", p.display()));
            reached.push(std::fs::canonicalize(p).unwrap());
            reached.push(std::fs::canonicalize(&cfg.accounts_file).unwrap());
            let (ok, out, err) = check(p);
            assert!(ok, "{err}");
            assert!(out.contains("configuration OK"));
        }
    }
    for p in &tomls {
        let c = std::fs::canonicalize(p).unwrap();
        assert!(
            reached.contains(&c),
            "{} is not loaded by any main config",
            p.display()
        );
    }
}

#[test]
fn check_prints_a_summary() {
    let (ok, out, _) = check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tollgate.toml"));
    assert!(ok);
    for k in [
        "listen:",
        "admin:",
        "upstream:",
        "providers:",
        "accounts:",
        "routes:",
    ] {
        assert!(out.contains(k), "{k} missing from\n{out}");
    }
}

#[test]
fn check_reports_every_error_with_location_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("tollgate.toml");
    std::fs::write(
        &main,
        "upstream = \"http://127.0.0.1:1\"\nlisten = \"nowhere\"\n\n[[routes]]\npath = \"/a\"\nmethods = [\"GETT\"]\nauth = \"sometimes\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("accounts.toml"),
        "[[accounts]]\nid = \"a b\"\n",
    )
    .unwrap();
    let (ok, _, err) = check(&main);
    assert!(!ok);
    let m = main.display().to_string();
    let a = dir.path().join("accounts.toml").display().to_string();
    for want in [
        format!("{m}:2:1: listen: invalid socket address \"nowhere\""),
        format!("{m}:6:1: routes[0].methods: unknown method \"GETT\""),
        format!("{m}:7:1: routes[0].auth: unknown value \"sometimes\""),
        format!("{a}:2:1: accounts[0].id: invalid account id \"a b\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("4 error(s)"), "{err}");
}

#[test]
fn check_reports_a_missing_account_table() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("tollgate.toml");
    std::fs::write(
        &main,
        "upstream = \"http://127.0.0.1:1\"\naccounts_file = \"missing.toml\"\n",
    )
    .unwrap();
    let (ok, _, err) = check(&main);
    assert!(!ok);
    assert!(err.contains("missing.toml:1:1: cannot read file"), "{err}");
}

/// The annotated example sets every optional key to its documented default, so it must
/// compile to exactly what a file without those keys compiles to.
#[test]
fn the_annotated_example_documents_the_real_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let full = tollgate::config::load(&root.join("tollgate.toml")).unwrap();
    let minimal = tollgate::config::load_from_str(
        &root.join("tollgate.toml"),
        "upstream = \"http://127.0.0.1:9000\"\n",
        "",
    )
    .unwrap();
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    assert_eq!(full.listen, minimal.listen);
    assert_eq!(full.admin_listen, minimal.admin_listen);
    assert_eq!(full.unmatched, minimal.unmatched);
    assert_eq!(full.audit, minimal.audit);
    assert_eq!(full.scope_mode, minimal.scope_mode);
    assert_eq!(dbg(&full.limits), dbg(&minimal.limits));
    assert_eq!(dbg(&full.headers), dbg(&minimal.headers));
    assert_eq!(dbg(&full.paths), dbg(&minimal.paths));
    assert_eq!(dbg(&full.tokens), dbg(&minimal.tokens));
    let (f, m) = (&full.upstream, &minimal.upstream);
    assert_eq!(
        (
            f.connect_timeout,
            f.timeout,
            f.preserve_host,
            f.forward_token,
            f.pool_idle_timeout,
            f.pool_max_idle_per_host
        ),
        (
            m.connect_timeout,
            m.timeout,
            m.preserve_host,
            m.forward_token,
            m.pool_idle_timeout,
            m.pool_max_idle_per_host
        )
    );
    // Provider keys: the example's provider sets each optional key to its default, except
    // the ones it documents as examples (auto_provision, allowed_domains, ...).
    let p = &full.providers[0];
    let d = tollgate::config::load_from_str(
        &root.join("tollgate.toml"),
        "upstream = \"http://a\"\n[[providers]]\nname = \"x\"\nissuer = \"https://x.example\"\naudiences = [\"a\"]\n",
        "",
    )
    .unwrap()
    .providers
    .remove(0);
    assert_eq!(
        (
            p.enabled,
            &p.algorithms,
            p.leeway,
            &p.subject_claim,
            p.insecure_allow_http,
            p.min_refresh,
            p.max_refresh
        ),
        (
            d.enabled,
            &d.algorithms,
            d.leeway,
            &d.subject_claim,
            d.insecure_allow_http,
            d.min_refresh,
            d.max_refresh
        )
    );
    assert_eq!(
        (
            p.min_refetch_interval,
            p.kid_wait,
            p.max_stale,
            &p.admin_role,
            p.group_matching,
            dbg(&p.claims)
        ),
        (
            d.min_refetch_interval,
            d.kid_wait,
            d.max_stale,
            &d.admin_role,
            d.group_matching,
            dbg(&d.claims)
        )
    );
}
