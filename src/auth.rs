//! Steps 4–5 of the pipeline: bearer tokens. `extract` finds the token (design §2.1),
//! `verify` checks it (§2.2) with keys from `jwks` (§2.3), fetched by `fetch`, and `cache`
//! remembers verified tokens (§2.4).

pub mod cache;
pub mod extract;
pub mod fetch;
pub mod json;
pub mod jwks;
pub mod verify;

pub use extract::{Token, TokenSource};
