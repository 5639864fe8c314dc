//! Step 7 of the pipeline: permissions (design §4). A token scope is *valid* when at least
//! one of its values is defined in `[scopes]`; then those scopes' permissions are used
//! (source `scope`), otherwise the roles' (source `roles`). In `intersect` mode a valid
//! scope grants only what the roles also allow.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::ScopeMode;

/// Where the permissions came from (`X-Auth-Permission-Source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Scope,
    Roles,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Scope => "scope",
            Source::Roles => "roles",
        }
    }
}

/// The permissions of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Effective grants, sorted, without duplicates (may contain wildcards).
    pub granted: Vec<String>,
    pub source: Source,
}

/// Whether `grant` covers `wanted`: equal, `*`, or `area:*` for `area:anything`.
pub fn covers(grant: &str, wanted: &str) -> bool {
    if grant == "*" || grant == wanted {
        return true;
    }
    match grant.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') => wanted.starts_with(prefix),
        _ => false,
    }
}

fn any_covers(grants: &[String], wanted: &str) -> bool {
    grants.iter().any(|g| covers(g, wanted))
}

/// The token's scope values: `scope` (space-delimited string) or `scp` (array or string).
pub fn token_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match crate::auth::verify::lookup(claims, name) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|v| !v.is_empty())),
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

fn union<'a>(lists: impl Iterator<Item = &'a Vec<String>>) -> Vec<String> {
    let mut v: Vec<String> = lists.flatten().cloned().collect();
    v.sort();
    v.dedup();
    v
}

impl Permissions {
    /// Derives the permissions for a principal's roles and the token's claims.
    pub fn derive(
        roles: &[String],
        claims: &Map<String, Value>,
        role_defs: &BTreeMap<String, Vec<String>>,
        scope_defs: &BTreeMap<String, Vec<String>>,
        mode: ScopeMode,
    ) -> Permissions {
        let from_roles = union(roles.iter().filter_map(|r| role_defs.get(r)));
        let defined: Vec<&Vec<String>> = token_scopes(claims)
            .into_iter()
            .filter_map(|s| scope_defs.get(s))
            .collect();
        if defined.is_empty() {
            return Permissions {
                granted: from_roles,
                source: Source::Roles,
            };
        }
        let from_scope = union(defined.into_iter());
        let granted = match mode {
            ScopeMode::Scope => from_scope,
            ScopeMode::Intersect => {
                // The meet of two wildcard sets: each grant of one side that the other covers.
                let mut v: Vec<String> = from_scope
                    .iter()
                    .filter(|p| any_covers(&from_roles, p))
                    .chain(from_roles.iter().filter(|p| any_covers(&from_scope, p)))
                    .cloned()
                    .collect();
                v.sort();
                v.dedup();
                v
            }
        };
        Permissions {
            granted,
            source: Source::Scope,
        }
    }

    /// Whether `wanted` is granted.
    pub fn allows(&self, wanted: &str) -> bool {
        any_covers(&self.granted, wanted)
    }

    /// The required permissions that are not granted.
    pub fn missing<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .filter(|r| !self.allows(r))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
        let roles = BTreeMap::from([
            ("admin".to_string(), vec!["*".to_string()]),
            (
                "engineer".to_string(),
                vec!["items:read".into(), "items:write".into()],
            ),
            ("viewer".to_string(), vec!["items:read".to_string()]),
            ("ops".to_string(), vec!["deploy:*".to_string()]),
        ]);
        let scopes = BTreeMap::from([
            ("read:items".to_string(), vec!["items:read".to_string()]),
            (
                "write:items".to_string(),
                vec!["items:read".into(), "items:write".into()],
            ),
            ("all:deploy".to_string(), vec!["deploy:*".to_string()]),
        ]);
        (roles, scopes)
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn wildcards() {
        assert!(covers("*", "anything:at_all"));
        assert!(covers("items:*", "items:read"));
        assert!(covers("items:*", "items:*"));
        assert!(!covers("items:*", "itemsx:read"));
        assert!(!covers("items:read", "items:write"));
        assert!(!covers("items*", "items:read"));
    }

    #[test]
    fn a_valid_scope_replaces_the_roles() {
        let (r, s) = defs();
        let roles = vec!["admin".to_string()];
        let p = Permissions::derive(
            &roles,
            &claims(json!({"scope": "read:items other"})),
            &r,
            &s,
            ScopeMode::Scope,
        );
        assert_eq!(p.source, Source::Scope);
        assert_eq!(p.granted, ["items:read"]);
        assert!(!p.allows("items:write"));
        let p = Permissions::derive(
            &roles,
            &claims(json!({"scp": ["write:items"]})),
            &r,
            &s,
            ScopeMode::Scope,
        );
        assert!(p.allows("items:write"));
    }

    #[test]
    fn undefined_or_absent_scope_falls_back_to_roles() {
        let (r, s) = defs();
        let roles = vec!["viewer".to_string(), "ops".to_string()];
        for c in [
            json!({"scope": "openid profile"}),
            json!({}),
            json!({"scope": ""}),
        ] {
            let p = Permissions::derive(&roles, &claims(c), &r, &s, ScopeMode::Scope);
            assert_eq!(p.source, Source::Roles);
            assert_eq!(p.granted, ["deploy:*", "items:read"]);
            assert!(p.allows("deploy:run"));
        }
    }

    #[test]
    fn intersect_grants_only_what_both_allow() {
        let (r, s) = defs();
        let viewer = vec!["viewer".to_string()];
        let c = claims(json!({"scope": "write:items"}));
        let p = Permissions::derive(&viewer, &c, &r, &s, ScopeMode::Intersect);
        assert_eq!(p.source, Source::Scope);
        assert!(p.allows("items:read"));
        assert!(!p.allows("items:write"));
        let admin = vec!["admin".to_string()];
        let p = Permissions::derive(&admin, &c, &r, &s, ScopeMode::Intersect);
        assert_eq!(p.granted, ["items:read", "items:write"]);
        let ops = vec!["ops".to_string()];
        let p = Permissions::derive(
            &ops,
            &claims(json!({"scope": "all:deploy"})),
            &r,
            &s,
            ScopeMode::Intersect,
        );
        assert_eq!(p.granted, ["deploy:*"]);
    }

    #[test]
    fn missing_lists_what_is_not_granted() {
        let p = Permissions {
            granted: vec!["items:read".into()],
            source: Source::Roles,
        };
        let req = vec!["items:read".to_string(), "items:write".to_string()];
        assert_eq!(p.missing(&req), ["items:write"]);
    }
}
