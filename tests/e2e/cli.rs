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
