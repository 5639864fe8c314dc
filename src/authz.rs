//! Steps 1, 3 and 8 of the pipeline: path canonicalization, route matching and the
//! authorization decision. Only this module can construct a [`Permit`], and forwarding takes
//! one, so a request cannot reach the upstream without a decision.

pub mod path;
pub mod route;

use crate::auth::verify::VerifiedToken;
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

/// The decision for a request, given its route and its verified token (if any).
///
/// Identity resolution and permissions are not built yet: a verified token is enough for a
/// route without `permissions`; a route that requires permissions refuses (403) until they
/// can be derived.
pub fn decide(
    route: Option<&Route>,
    mode: AuthMode,
    token: Option<&VerifiedToken>,
) -> Result<Permit, ProxyError> {
    match (mode, token) {
        (AuthMode::Public, _) => Ok(Permit {
            reason: Reason::Public,
        }),
        (AuthMode::Optional, None) => Ok(Permit {
            reason: Reason::Anonymous,
        }),
        (AuthMode::Required, None) => Err(AuthError::MissingToken.into()),
        (AuthMode::Optional | AuthMode::Required, Some(t)) => {
            if let Some(r) = route {
                if !r.providers.is_empty() && !r.providers.contains(&t.provider) {
                    return Err(DenyReason::ProviderNotAllowed.into());
                }
                if !r.permissions.is_empty() {
                    return Err(DenyReason::InsufficientPermissions.into());
                }
            }
            Ok(Permit {
                reason: Reason::Authenticated,
            })
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
            decide(None, AuthMode::Public, None).unwrap().reason(),
            Reason::Public
        );
        assert_eq!(
            decide(None, AuthMode::Optional, None).unwrap().reason(),
            Reason::Anonymous
        );
        assert!(matches!(
            decide(None, AuthMode::Required, None),
            Err(ProxyError::Auth(AuthError::MissingToken))
        ));
    }
}
