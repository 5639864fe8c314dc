//! Account table benchmarks: loading and indexing 100,000 accounts, and resolving an
//! identity among them (O(1): independent of the table size).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};

use tollgate::config;
use tollgate::identity::AccountTable;

const MAIN: &str = "upstream = \"http://127.0.0.1:9\"\n[roles]\nviewer = [\"items:read\"]\n[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\n";

fn accounts(n: usize) -> String {
    let mut s = String::with_capacity(n * 140);
    for i in 0..n {
        s.push_str(&format!(
            "[[accounts]]\nid = \"user{i}\"\nemail = \"user{i}@example.com\"\nroles = [\"viewer\"]\n  [[accounts.mappings]]\n  provider = \"corp\"\n  subject = \"sub-{i}\"\n"
        ));
    }
    s
}

fn load_100k_accounts(c: &mut Criterion) {
    let src = accounts(100_000);
    let mut g = c.benchmark_group("accounts");
    g.sample_size(10);
    g.bench_function("load_100k_accounts", |b| {
        b.iter(|| {
            let cfg = config::load_from_str(Path::new("bench/tollgate.toml"), MAIN, &src).unwrap();
            AccountTable::new(black_box(&cfg)).len()
        })
    });
    g.finish();
}

fn resolve(c: &mut Criterion) {
    for n in [1_000usize, 100_000] {
        let cfg =
            config::load_from_str(Path::new("bench/tollgate.toml"), MAIN, &accounts(n)).unwrap();
        let table = AccountTable::new(&cfg);
        let provider = cfg.providers[0].clone();
        let claims: Map<String, Value> = json!({"sub": "sub-777"}).as_object().unwrap().clone();
        c.bench_function(&format!("account_resolve_{n}_accounts"), |b| {
            b.iter(|| {
                table
                    .resolve(black_box(&provider), black_box("sub-777"), &claims)
                    .unwrap()
            })
        });
    }
}

criterion_group!(benches, load_100k_accounts, resolve);
criterion_main!(benches);
