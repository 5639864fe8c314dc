//! Steps 1, 3 and 8 of the pipeline: path canonicalization, route matching and the
//! authorization decision. Only this module can construct a [`Permit`], and forwarding takes
//! one, so a request cannot reach the upstream without a decision.

pub mod path;
pub mod permissions;
pub mod route;

use std::collections::BTreeMap;

use crate::auth::verify::VerifiedToken;
use crate::config::{Provider, ScopeMode, Unmatched};
use crate::error::{AuthError, DenyReason, ProxyError, Reason};
use crate::identity::{AccountTable, Principal};
use permissions::{Permissions, covers};
use route::{AuthMode, Route};

/// An authenticated, authorized caller: what identity headers are built from.
#[derive(Debug)]
pub struct Grant {
    pub principal: Principal,
    pub permissions: Permissions,
}

/// Proof that the request may be forwarded, and why. Only [`decide`] makes one, and header
/// injection and forwarding take one, so forwarding without a decision cannot be written.
#[derive(Debug)]
pub struct Permit {
    reason: Reason,
    grant: Option<Grant>,
}

// === impl Permit ===

impl Permit {
    /// An authenticated permit for `grant`, for tests of what consumes one.
    #[cfg(test)]
    pub(crate) fn granted(grant: Grant) -> Self {
        Self {
            reason: Reason::Authenticated,
            grant: Some(grant),
        }
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The identity, for authenticated requests (none for public and anonymous ones).
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
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

/// The policy pieces of a snapshot that a decision reads.
pub struct Policy<'a> {
    pub accounts: &'a AccountTable,
    pub roles: &'a BTreeMap<String, Vec<String>>,
    pub scopes: &'a BTreeMap<String, Vec<String>>,
    pub scope_mode: ScopeMode,
}

/// What a decision learned about the caller, for the audit event of a denial (a permit
/// carries the account and mapping of a permitted request).
#[derive(Debug, Default)]
pub struct Observed {
    pub account: Option<String>,
    pub mapping: Option<String>,
    pub source: Option<&'static str>,
}

/// The decision for a request: its route, the authentication mode that route needs, and
/// the verified token (with its provider), if one was sent. `seen` is filled as the
/// identity and permissions become known.
pub fn decide(
    route: Option<&Route>,
    mode: AuthMode,
    token: Option<(&VerifiedToken, &Provider)>,
    policy: &Policy<'_>,
    seen: &mut Observed,
) -> Result<Permit, ProxyError> {
    let (token, provider) = match (mode, token) {
        (AuthMode::Public, _) => {
            return Ok(Permit {
                reason: Reason::Public,
                grant: None,
            });
        }
        (AuthMode::Optional, None) => {
            return Ok(Permit {
                reason: Reason::Anonymous,
                grant: None,
            });
        }
        (AuthMode::Required, None) => return Err(AuthError::MissingToken.into()),
        (AuthMode::Optional | AuthMode::Required, Some(t)) => t,
    };
    if let Some(r) = route
        && !r.providers.is_empty()
        && !r.providers.contains(&provider.name)
    {
        return Err(DenyReason::ProviderNotAllowed.into());
    }
    let principal = policy
        .accounts
        .resolve(provider, &token.subject, &token.claims)?;
    let permissions = Permissions::derive(
        &principal.roles,
        &token.claims,
        policy.roles,
        policy.scopes,
        provider.scope_mode.unwrap_or(policy.scope_mode),
    );
    seen.source = Some(permissions.source.as_str());
    if let Some(r) = route {
        let missing = permissions.missing(&r.permissions);
        if !missing.is_empty() {
            // A permitted request's account and mapping are read from its permit.
            seen.account = Some(principal.account.clone());
            seen.mapping = Some(principal.mapping.clone());
            return Err(ProxyError::InsufficientScope(needed_scope(
                &missing,
                policy.scopes,
            )));
        }
    }
    Ok(Permit {
        reason: Reason::Authenticated,
        grant: Some(Grant {
            principal,
            permissions,
        }),
    })
}

/// The `scope` of an `insufficient_scope` challenge (RFC 6750 §3): the scope values that
/// would grant the missing permissions, or the permissions themselves when no scope does.
fn needed_scope(missing: &[&str], scopes: &BTreeMap<String, Vec<String>>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for m in missing {
        let granting: Vec<&str> = scopes
            .iter()
            .filter(|(_, perms)| perms.iter().any(|p| covers(p, m)))
            .map(|(name, _)| name.as_str())
            .collect();
        if granting.is_empty() {
            out.push(m);
        } else {
            out.extend(granting);
        }
    }
    out.sort_unstable();
    out.dedup();
    out.join(" ")
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// For any request path: when its canonical form falls under the protected rule, a
        /// caller without that rule's permission is never permitted.
        #[test]
        fn protected_rules_cannot_be_bypassed_by_path_tricks(
            raw in "/((admin|ADMIN|public|x|\\.|\\.\\.|%2e|%2E|%2e%2e|%61dmin|;p|;|//|/)/?){0,8}",
            semis in proptest::bool::ANY,
        ) {
            let main = "upstream = \"http://a\"\n[roles]\nviewer = [\"items:read\"]\n[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\n[[routes]]\npath = \"/admin/**\"\npermissions = [\"admin:*\"]\n[[routes]]\npath = \"/**\"\nauth = \"public\"\n";
            let main = if semis { format!("{main}[paths]\nallow_semicolons = true\n") } else { main.to_string() };
            let accounts = "[[identity_mappings]]\nname = \"all\"\nprovider = \"corp\"\npriority = 1\nclaims = { sub = \"*\" }\nroles = [\"viewer\"]\n";
            let cfg = crate::config::load_from_str(std::path::Path::new("t/t.toml"), &main, accounts).unwrap();
            let table = AccountTable::new(&cfg);
            let policy = Policy { accounts: &table, roles: &cfg.roles, scopes: &cfg.scopes, scope_mode: cfg.scope_mode };
            let claims = serde_json::json!({"sub": "u"}).as_object().unwrap().clone();
            let token = VerifiedToken::unverified(&cfg.providers[0], claims).unwrap();
            let Ok(path) = path::canonicalize(&raw, semis) else { return Ok(()) };
            let route = cfg.routes.find(&http::Method::GET, &path);
            let mode = auth_mode(route, cfg.unmatched).unwrap();
            let decision = decide(route, mode, Some((&token, &cfg.providers[0])), &policy, &mut Observed::default());
            let under_admin = path
                .segments()
                .next()
                .map(|s| s.split(';').next().unwrap_or(s))
                == Some("admin");
            if under_admin {
                proptest::prop_assert!(decision.is_err(), "{} (from {}) was permitted", path, raw);
            }
        }
    }

    #[test]
    fn needed_scope_names_the_granting_scopes() {
        let scopes = BTreeMap::from([
            ("read:items".to_string(), vec!["items:read".to_string()]),
            (
                "write:items".to_string(),
                vec!["items:read".into(), "items:write".into()],
            ),
        ]);
        assert_eq!(needed_scope(&["items:write"], &scopes), "write:items");
        assert_eq!(
            needed_scope(&["items:read"], &scopes),
            "read:items write:items"
        );
        assert_eq!(needed_scope(&["admin:all"], &scopes), "admin:all");
    }

    #[test]
    fn decisions_without_a_token() {
        let accounts = AccountTable::default();
        let empty = BTreeMap::new();
        let policy = Policy {
            accounts: &accounts,
            roles: &empty,
            scopes: &empty,
            scope_mode: ScopeMode::Scope,
        };
        let d = |mode| decide(None, mode, None, &policy, &mut Observed::default());
        assert_eq!(d(AuthMode::Public).unwrap().reason(), Reason::Public);
        assert_eq!(d(AuthMode::Optional).unwrap().reason(), Reason::Anonymous);
        assert!(matches!(
            d(AuthMode::Required),
            Err(ProxyError::Auth(AuthError::MissingToken))
        ));
    }
}
