//! Header stripping and identity-header building: whatever header names and claim values a
//! client or a token brings, no identity header survives stripping, and the headers Tollgate
//! sets are exactly its own, single-valued and free of control characters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use tollgate::authz::{self, Observed, route::AuthMode};
use tollgate::headers::{self, IdentityHeaders};

struct Fixture {
    cfg: tollgate::config::Config,
    table: tollgate::identity::AccountTable,
    names: IdentityHeaders,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let main = "upstream = \"http://a\"\n[roles]\nviewer = [\"items:read\"]\n[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\nauto_provision = true\nallowed_domains = [\"example.com\"]\ndefault_roles = [\"viewer\"]\ngroup_matching = true\n  [providers.group_roles]\n  \"Eng\" = [\"viewer\"]\n";
        let cfg = tollgate::config::load_from_str(Path::new("f/t.toml"), main, "").unwrap();
        let table = tollgate::identity::AccountTable::new(&cfg);
        let names = IdentityHeaders::new("x-auth-", 1024).unwrap();
        Fixture { cfg, table, names }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // Split the input: header lines, then a claims object for the identity.
    let (head, tail) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut map = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) {
            map.append(n, v);
        }
    }
    headers::strip_hop_by_hop(&mut map);
    headers::strip_identity(&mut map, "x-auth-");
    for name in map.keys() {
        assert!(
            !headers::is_identity_header(name.as_str(), "x-auth-"),
            "{name} survived"
        );
    }
    let claims = match serde_json::from_slice::<serde_json::Value>(tail) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return,
    };
    let provider = &f.cfg.providers[0];
    let Some(token) = tollgate::auth::verify::VerifiedToken::unverified(provider, claims) else {
        return;
    };
    let policy = authz::Policy {
        accounts: &f.table,
        roles: &f.cfg.roles,
        scopes: &f.cfg.scopes,
        scope_mode: f.cfg.scope_mode,
    };
    let Ok(permit) = authz::decide(
        None,
        AuthMode::Required,
        Some((&token, provider)),
        &policy,
        &mut Observed::default(),
    ) else {
        return;
    };
    headers::inject_identity(&mut map, &permit, &f.names);
    let mut total = 0;
    for (name, value) in map.iter() {
        if headers::is_identity_header(name.as_str(), "x-auth-") {
            assert_eq!(map.get_all(name).iter().count(), 1, "{name} set twice");
            assert!(
                !value.as_bytes().iter().any(|&b| b < 0x20 || b == 0x7f),
                "control character in {name}"
            );
            if name.as_str() == "x-auth-groups" {
                total += value.len();
            }
        }
    }
    assert!(total <= 1024);
});
