//! Steps 1, 3 and 8 of the pipeline: path canonicalization, route matching and the
//! authorization decision. Only this module can construct a [`Permit`], and forwarding takes
//! one, so a request cannot reach the upstream without a decision.

pub mod path;
pub mod route;

use crate::auth::Token;
use crate::config::Unmatched;
use crate::error::{AuthError, DenyReason, ProxyError, Reason};
use route::{AuthMode, Route};

/// Proof that the request may be forwarded, and why.
#[derive(Debug)]
pub struct Permit {
    reason: Reason,
}

// === impl Permit ===

impl Permit {
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

/// What authentication a request needs, given its route (or the lack of one).
pub fn auth_mode(route: Option<&Route>, unmatched: Unmatched) -> Result<AuthMode, ProxyError> {
    match (route, unmatched) {
        (Some(r), _) => Ok(r.auth),
        (None, Unmatched::Authenticated) => Ok(AuthMode::Required),
        (None, Unmatched::Deny) => Err(DenyReason::NoRoute.into()),
    }
}

/// The decision for a request. Token verification is not wired in yet: a token on a
/// non-public route cannot be verified and is refused (401).
pub fn decide(mode: AuthMode, token: Option<&Token<'_>>) -> Result<Permit, ProxyError> {
    match (mode, token) {
        (AuthMode::Public, _) => Ok(Permit {
            reason: Reason::Public,
        }),
        (AuthMode::Optional, None) => Ok(Permit {
            reason: Reason::Anonymous,
        }),
        (AuthMode::Required, None) => Err(AuthError::MissingToken.into()),
        (AuthMode::Optional | AuthMode::Required, Some(_)) => {
            Err(AuthError::VerificationUnavailable.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_policy() {
        assert_eq!(
            auth_mode(None, Unmatched::Authenticated).unwrap(),
            AuthMode::Required
        );
        assert!(matches!(
            auth_mode(None, Unmatched::Deny),
            Err(ProxyError::Denied(DenyReason::NoRoute))
        ));
    }

    #[test]
    fn decisions_without_verification() {
        assert_eq!(
            decide(AuthMode::Public, None).unwrap().reason(),
            Reason::Public
        );
        assert_eq!(
            decide(AuthMode::Optional, None).unwrap().reason(),
            Reason::Anonymous
        );
        assert!(matches!(
            decide(AuthMode::Required, None),
            Err(ProxyError::Auth(AuthError::MissingToken))
        ));
    }
}
