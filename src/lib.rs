//! Tollgate: a reverse-proxy authentication sidecar.
//!
//! Pipeline (design §1): canonicalize the path → strip client identity headers → match the
//! route → extract and verify the token → resolve the identity → derive permissions →
//! authorize → forward with identity headers → record metrics and one audit event.
//!
//! Dependency direction: `server → proxy → {auth, authz, headers, upstream}`; `error` and
//! `metrics` are leaves. The domain modules take plain values and never import hyper.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod admin;
pub mod app;
pub mod assertion;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod chunked;
pub mod config;
pub mod dev;
pub mod error;
pub mod explain;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;
