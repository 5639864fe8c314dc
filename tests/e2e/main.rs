//! End-to-end tests on real sockets (127.0.0.1, port 0), one binary, modules by concern.

mod idp;
mod support;

mod admin;
mod cli;
mod deploy;
mod dev;
mod errors;
mod examples;
mod explain;
mod forwarding;
mod hardening;
mod hygiene;
mod identity;
mod jwks_faults;
mod lifecycle;
mod ops;
mod pool;
mod reload;
mod streaming;
mod tls;
mod tokens;
mod upgrade;
mod upstream;
