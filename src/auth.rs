//! Step 4–5 of the pipeline: bearer tokens. `extract` finds the token (design §2.1);
//! verification arrives with the JWKS key caches.

pub mod extract;

pub use extract::{Token, TokenSource};
