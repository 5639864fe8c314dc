//! Config parsing + validation: any bytes as the main file or the account table give a
//! config or a list of located errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const MAIN: &str = "upstream = \"http://127.0.0.1:9\"\n[roles]\nviewer = [\"a:b\"]\n[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\n";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let p = Path::new("fuzz/tollgate.toml");
    for (main, accounts) in [(s, ""), (MAIN, s)] {
        match tollgate::config::load_from_str(p, main, accounts) {
            Ok(_) => {}
            Err(errs) => {
                assert!(!errs.0.is_empty());
                for e in &errs.0 {
                    assert!(e.line >= 1 && e.column >= 1);
                    let _ = e.to_string();
                }
            }
        }
    }
});
