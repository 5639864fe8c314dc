//! Step 6 of the pipeline: from a verified token to a local identity (design §3).
//!
//! Order: account mapping (provider, subject) → identity mappings of the provider by
//! priority (every listed claim must match; exact or `*` glob; a missing claim never
//! matches) → auto-provisioning (verified email in `allowed_domains`) → 403. The table is
//! compiled once per config snapshot; nothing here is cached across snapshots, so removing
//! or disabling an account revokes access on the next request after a reload.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::verify::{claim, lookup};
use crate::config::{Account, AccountKind, Config, IdentityMapping, Provider};

/// Why no identity could be resolved (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no account for this identity")]
    UnknownAccount,
    #[error("account disabled")]
    AccountDisabled,
    #[error("email domain not allowed")]
    DomainNotAllowed,
}

/// The resolved caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub provider: String,
    pub subject: String,
    pub account: String,
    pub kind: AccountKind,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    /// As the token listed them.
    pub groups: Vec<String>,
    /// Name of the account mapping or identity mapping used, or `auto`.
    pub mapping: String,
    /// `aud` of the signed assertion, when the identity mapping overrides it.
    pub assertion_audience: Option<String>,
}

/// The account table of one snapshot, indexed for O(1) lookups.
#[derive(Debug, Default)]
pub struct AccountTable {
    accounts: HashMap<String, Arc<Account>>,
    /// (provider, subject) → (account id, mapping display name)
    /// provider → subject → (account id, mapping display name): looked up by `&str`, no
    /// key is built per request.
    by_subject: HashMap<String, HashMap<String, (String, String)>>,
    /// Lower-case emails of all accounts (auto-provisioning must not impersonate them).
    emails: HashMap<String, String>,
    /// Per provider, by priority (1 first).
    mappings: HashMap<String, Vec<IdentityMapping>>,
}

impl AccountTable {
    /// The account mapping of `subject` at `provider`: (account id, mapping name).
    fn subject_mapping(&self, provider: &str, subject: &str) -> Option<&(String, String)> {
        self.by_subject.get(provider)?.get(subject)
    }

    pub fn new(cfg: &Config) -> Self {
        let mut t = AccountTable::default();
        t.accounts.reserve(cfg.accounts.len());
        for a in &cfg.accounts {
            let acc = a.clone();
            for m in &a.mappings {
                let name = m.name.clone().unwrap_or_else(|| "account".to_string());
                t.by_subject
                    .entry(m.provider.clone())
                    .or_default()
                    .insert(m.subject.clone(), (a.id.clone(), name));
            }
            if let Some(e) = &a.email {
                t.emails.insert(e.to_lowercase(), a.id.clone());
            }
            t.accounts.insert(a.id.clone(), acc);
        }
        for m in &cfg.identity_mappings {
            t.mappings
                .entry(m.provider.clone())
                .or_default()
                .push(m.clone());
        }
        for list in t.mappings.values_mut() {
            list.sort_by_key(|m| m.priority);
        }
        t
    }

    pub fn account(&self, id: &str) -> Option<&Arc<Account>> {
        self.accounts.get(id)
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Resolves the identity behind a verified token of `provider`.
    pub fn resolve(
        &self,
        provider: &Provider,
        subject: &str,
        claims: &Map<String, Value>,
    ) -> Result<Principal, IdentityError> {
        // Identity values end up in headers: refuse control characters outright.
        if subject.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(IdentityError::UnknownAccount);
        }
        let token_email = claim(claims, &provider.claims.email)
            .and_then(Value::as_str)
            .map(str::to_string);
        // allowed_domains restricts every identity whose token carries an email.
        if let Some(e) = &token_email
            && !provider.allowed_domains.is_empty()
            && !domain_allowed(e, &provider.allowed_domains)
        {
            return Err(IdentityError::DomainNotAllowed);
        }
        let token_name = claim(claims, &provider.claims.name)
            .and_then(Value::as_str)
            .map(str::to_string);

        let mut assertion_audience = None;
        let (account, extra_roles, mapping): (Option<&Arc<Account>>, &[String], String) =
            if let Some((id, name)) = self.subject_mapping(&provider.name, subject) {
                let acc = self.accounts.get(id).ok_or(IdentityError::UnknownAccount)?;
                (Some(acc), &[], name.clone())
            } else if let Some(m) = self
                .mappings
                .get(&provider.name)
                .and_then(|list| list.iter().find(|m| mapping_matches(m, claims)))
            {
                let acc = match &m.account {
                    Some(id) => Some(self.accounts.get(id).ok_or(IdentityError::UnknownAccount)?),
                    None => None,
                };
                assertion_audience = m.assertion_audience.clone();
                (acc, m.roles.as_slice(), m.name.clone())
            } else {
                return self.auto_provision(provider, subject, claims, token_email, token_name);
            };

        let (account_id, kind, email, name, mut roles) = match account {
            Some(a) => {
                if a.disabled {
                    return Err(IdentityError::AccountDisabled);
                }
                (
                    a.id.clone(),
                    a.kind,
                    a.email.clone().or(token_email),
                    a.name.clone().or(token_name),
                    a.roles.clone(),
                )
            }
            // A mapping that grants roles only: a workload acting as itself.
            None => (
                subject.to_string(),
                AccountKind::Service,
                token_email,
                token_name,
                Vec::new(),
            ),
        };
        roles.extend(extra_roles.iter().cloned());
        let groups = groups(claims, &provider.claims.groups);
        Ok(Principal {
            provider: provider.name.clone(),
            subject: subject.to_string(),
            account: account_id,
            kind,
            email,
            name,
            roles: finish_roles(provider, claims, &groups, roles),
            groups,
            mapping,
            assertion_audience,
        })
    }

    fn auto_provision(
        &self,
        provider: &Provider,
        subject: &str,
        claims: &Map<String, Value>,
        email: Option<String>,
        name: Option<String>,
    ) -> Result<Principal, IdentityError> {
        let Some(email) = email.filter(|_| provider.auto_provision) else {
            return Err(IdentityError::UnknownAccount);
        };
        // `email_verified: false` (or "false") stops it; absent is accepted.
        let unverified = matches!(lookup(claims, "email_verified"), Some(Value::Bool(false)))
            || lookup(claims, "email_verified").and_then(Value::as_str) == Some("false");
        if unverified || email.bytes().any(|b| b <= 0x20 || b == 0x7f) {
            return Err(IdentityError::UnknownAccount);
        }
        if !domain_allowed(&email, &provider.allowed_domains) {
            return Err(IdentityError::DomainNotAllowed);
        }
        // An ephemeral account must never take the id or email of a configured one: that
        // account is reachable only through its own mappings.
        let id = email.to_lowercase();
        if self.accounts.contains_key(&id) || self.emails.contains_key(&id) {
            return Err(IdentityError::UnknownAccount);
        }
        let groups = groups(claims, &provider.claims.groups);
        Ok(Principal {
            provider: provider.name.clone(),
            subject: subject.to_string(),
            account: id,
            kind: AccountKind::User,
            email: Some(email),
            name,
            roles: finish_roles(provider, claims, &groups, provider.default_roles.clone()),
            groups,
            mapping: "auto".to_string(),
            assertion_audience: None,
        })
    }
}

/// Applies `is_admin` and group roles, then sorts and dedups.
fn finish_roles(
    provider: &Provider,
    claims: &Map<String, Value>,
    groups: &[String],
    mut roles: Vec<String>,
) -> Vec<String> {
    if provider.group_matching {
        for g in groups {
            let key = ldap_cn(g).unwrap_or(g);
            for (name, granted) in &provider.group_roles {
                if name.eq_ignore_ascii_case(key) {
                    roles.extend(granted.iter().cloned());
                }
            }
        }
    }
    match claim(claims, &provider.claims.is_admin) {
        Some(Value::Bool(true)) => roles.push(provider.admin_role.clone()),
        Some(Value::Bool(false)) => roles.retain(|r| *r != provider.admin_role),
        _ => {}
    }
    roles.sort();
    roles.dedup();
    roles
}

/// The groups claim: a list of strings or a single string.
fn groups(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    match claim(claims, path) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The CN of an LDAP DN (`CN=Engineering,OU=...` → `Engineering`), if it is one.
pub fn ldap_cn(dn: &str) -> Option<&str> {
    let first = dn.split(',').next()?.trim();
    let (k, v) = first.split_once('=')?;
    (k.trim().eq_ignore_ascii_case("cn") && dn.contains(',')).then(|| v.trim())
}

/// Exact, case-insensitive match of the part after the last `@`; `*.example.com` matches
/// subdomains only.
pub fn domain_allowed(email: &str, allowed: &[String]) -> bool {
    let Some((_, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_ascii_lowercase();
    allowed.iter().any(|a| match a.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => *a == domain,
    })
}

fn mapping_matches(m: &IdentityMapping, claims: &Map<String, Value>) -> bool {
    mapping_mismatch(m, claims).is_none()
}

/// `None` when every listed claim matches, else why the first one does not.
fn mapping_mismatch(m: &IdentityMapping, claims: &Map<String, Value>) -> Option<String> {
    for (path, pattern) in &m.claims {
        let ok = match claim(claims, path) {
            None | Some(Value::Null) => return Some(format!("claim {path} is missing")),
            Some(Value::String(s)) => glob(pattern, s),
            Some(Value::Bool(b)) => glob(pattern, if *b { "true" } else { "false" }),
            Some(Value::Number(n)) => glob(pattern, &n.to_string()),
            Some(Value::Array(items)) => items
                .iter()
                .any(|v| v.as_str().is_some_and(|s| glob(pattern, s))),
            Some(Value::Object(_)) => false,
        };
        if !ok {
            return Some(format!("claim {path} does not match {pattern:?}"));
        }
    }
    None
}

impl AccountTable {
    /// Why each resolution step did or did not apply (for `tollgate explain`), in order.
    pub fn diagnose(
        &self,
        provider: &Provider,
        subject: &str,
        claims: &Map<String, Value>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        match self.subject_mapping(&provider.name, subject) {
            Some((id, name)) => {
                out.push(format!(
                    "account mapping {name:?}: subject {subject:?} → account {id:?}"
                ));
                return out;
            }
            None => out.push(format!(
                "account mapping: none for provider {:?}, subject {subject:?}",
                provider.name
            )),
        }
        let list = self
            .mappings
            .get(&provider.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if list.is_empty() {
            out.push("identity mappings: none for this provider".into());
        }
        for m in list {
            match mapping_mismatch(m, claims) {
                None => {
                    out.push(format!(
                        "identity mapping {:?} (priority {}): matches",
                        m.name, m.priority
                    ));
                    return out;
                }
                Some(why) => out.push(format!(
                    "identity mapping {:?} (priority {}): no match, {why}",
                    m.name, m.priority
                )),
            }
        }
        let email = claim(claims, &provider.claims.email).and_then(Value::as_str);
        let line = if !provider.auto_provision {
            "auto-provisioning: off for this provider".to_string()
        } else {
            match email {
                None => "auto-provisioning: no email claim".to_string(),
                Some(_) if matches!(lookup(claims, "email_verified"), Some(Value::Bool(false))) => {
                    "auto-provisioning: email_verified is false".to_string()
                }
                Some(e) if !domain_allowed(e, &provider.allowed_domains) => {
                    format!("auto-provisioning: domain of {e:?} not in allowed_domains")
                }
                Some(e) => format!(
                    "auto-provisioning: applies (account {:?})",
                    e.to_lowercase()
                ),
            }
        };
        out.push(line);
        out
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob(pattern: &str, value: &str) -> bool {
    let p = pattern.as_bytes();
    let v = value.as_bytes();
    let (mut pi, mut vi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while vi < v.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some(pi);
                mark = vi;
                pi += 1;
            }
            Some(&c) if Some(&c) == v.get(vi) => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    vi = mark;
                }
                None => return false,
            },
        }
    }
    while p.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob(
            "acme/api/.github/workflows/deploy.yaml@*",
            "acme/api/.github/workflows/deploy.yaml@refs/heads/main"
        ));
        assert!(glob(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/api:ref:refs/heads/main"
        ));
        assert!(!glob(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/api:ref:refs/heads/dev"
        ));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("", "x"));
    }

    #[test]
    fn domains() {
        let allowed = vec!["example.com".to_string(), "*.corp.example.org".to_string()];
        assert!(domain_allowed("a@example.com", &allowed));
        assert!(domain_allowed("a@EXAMPLE.com", &allowed));
        assert!(!domain_allowed("a@sub.example.com", &allowed));
        assert!(!domain_allowed("a@example.com.evil.io", &allowed));
        assert!(!domain_allowed("a@notexample.com", &allowed));
        assert!(domain_allowed("a@x.corp.example.org", &allowed));
        assert!(!domain_allowed("a@corp.example.org", &allowed));
        assert!(!domain_allowed("a@xcorp.example.org", &allowed));
        assert!(domain_allowed("\"odd@quoted\"@example.com", &allowed));
        assert!(!domain_allowed("no-at-sign", &allowed));
    }

    #[test]
    fn ldap_common_names() {
        assert_eq!(
            ldap_cn("CN=Engineering,OU=Security Groups,DC=example,DC=com"),
            Some("Engineering")
        );
        assert_eq!(ldap_cn("cn = Ops , OU=x"), Some("Ops"));
        assert_eq!(ldap_cn("Engineering"), None);
        assert_eq!(ldap_cn("OU=x,CN=y"), None);
    }
}
