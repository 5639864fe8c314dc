//! Path canonicalization + route matching: never panics; the canonical form is idempotent,
//! clean, and a path under a protected prefix never matches the public rule after it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::authz::path::canonicalize;
use tollgate::authz::route::{AuthMode, MethodSet, Pattern, Route, RouteTable};

fn route(index: usize, p: &str, auth: AuthMode, semis: bool) -> Route {
    Route {
        index,
        path: p.into(),
        pattern: Pattern::compile(p, false, semis).unwrap(),
        methods: MethodSet::ALL,
        auth,
        permissions: vec![],
        providers: vec![],
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for semis in [false, true] {
        let Ok(c) = canonicalize(s, semis) else {
            continue;
        };
        let again = canonicalize(c.as_str(), semis).expect("canonical output must stay valid");
        assert_eq!(again, c, "not idempotent");
        let out = c.as_str();
        for bad in ["//", "/./", "/../", "\\"] {
            assert!(!out.contains(bad), "{out:?} contains {bad}");
        }
        assert!(!out.to_ascii_uppercase().contains("%2F"));
        let table = RouteTable::new(vec![
            route(0, "/admin/**", AuthMode::Required, semis),
            route(1, "/**", AuthMode::Public, semis),
        ]);
        let m = table
            .find(&http::Method::GET, &c)
            .expect("/** matches everything");
        let first = c
            .segments()
            .next()
            .map(|seg| seg.split(';').next().unwrap_or(seg));
        if first == Some("admin") {
            assert_eq!(m.index, 0, "{out:?} escaped the admin rule");
        }
    }
});
