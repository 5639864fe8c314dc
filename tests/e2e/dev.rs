//! `tollgate dev`: starts with no files, and every printed curl command gets the status the
//! output says it will.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn dev_mode_commands_do_what_they_say() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["dev", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut expectations: Vec<(u16, String)> = Vec::new();
    let mut expect: Option<u16> = None;
    loop {
        let line = lines.next().expect("dev mode ended early").unwrap();
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        if let Some(rest) = line.strip_prefix("# expect ") {
            expect = rest.get(..3).and_then(|s| s.parse().ok());
        } else if line.starts_with("curl ") {
            let status = expect
                .take()
                .expect("a curl command without an expectation");
            expectations.push((status, line));
        }
    }
    assert!(expectations.len() >= 3, "{expectations:?}");
    for want in [200, 403, 401] {
        assert!(
            expectations.iter().any(|(s, _)| *s == want),
            "no {want} example"
        );
    }
    for (want, cmd) in &expectations {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} -s -o /dev/null -w '%{{http_code}}'"))
            .output()
            .expect("curl is needed for this test");
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(got, want.to_string(), "{cmd}");
    }
    // Ctrl-C stops everything, with exit status 0.
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
