//! Micro-benchmarks of the pure request-path steps, named by case.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use tollgate::authz::path::canonicalize;
use tollgate::authz::route::{AuthMode, MethodSet, Pattern, Route, RouteTable};
use tollgate::headers;

fn canonicalize_paths(c: &mut Criterion) {
    c.bench_function("canonicalize_plain", |b| {
        b.iter(|| canonicalize(black_box("/api/v1/items/12345/comments"), false))
    });
    c.bench_function("canonicalize_messy", |b| {
        b.iter(|| {
            canonicalize(
                black_box("//api/./v1/%69tems/../items/%7e12345//comments/"),
                false,
            )
        })
    });
}

fn route_match_1000_rules(c: &mut Criterion) {
    let routes: Vec<Route> = (0..1000)
        .map(|i| Route {
            index: i,
            path: format!("/svc{i}/items/*/detail"),
            pattern: Pattern::compile(&format!("/svc{i}/items/*/detail"), false, false).unwrap(),
            methods: MethodSet::ALL,
            auth: AuthMode::Required,
            permissions: vec![],
            providers: vec![],
        })
        .collect();
    let table = RouteTable::new(routes);
    let last = canonicalize("/svc999/items/42/detail", false).unwrap();
    let miss = canonicalize("/nowhere/at/all", false).unwrap();
    c.bench_function("route_match_1000_rules_last", |b| {
        b.iter(|| {
            table
                .find(black_box(&Method::GET), black_box(&last))
                .map(|r| r.index)
        })
    });
    c.bench_function("route_match_1000_rules_miss", |b| {
        b.iter(|| {
            table
                .find(black_box(&Method::GET), black_box(&miss))
                .is_none()
        })
    });
}

fn header_hygiene(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("authorization", "Bearer abc.def.ghi"),
        ("connection", "keep-alive"),
        ("x-request-id", "abc-123"),
    ] {
        base.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    c.bench_function("strip_headers_clean_request", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| {
                headers::strip_hop_by_hop(h);
                headers::strip_identity(h, "x-auth-")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut spoofed = base.clone();
    spoofed.insert("x-auth-account", HeaderValue::from_static("admin"));
    spoofed.insert("x_auth_roles", HeaderValue::from_static("admin"));
    c.bench_function("strip_headers_spoofed_request", |b| {
        b.iter_batched_ref(
            || spoofed.clone(),
            |h| {
                headers::strip_hop_by_hop(h);
                headers::strip_identity(h, "x-auth-")
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    canonicalize_paths,
    route_match_1000_rules,
    header_hygiene
);
criterion_main!(benches);
