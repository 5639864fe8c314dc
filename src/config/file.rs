//! Raw serde structs mirroring the two TOML files one to one.
//!
//! Everything a user can get wrong in a *value* (durations, addresses, enums, URLs) is read
//! as a string here and checked in `validate.rs`, so that every such mistake is reported
//! together with its file, line:column and key path instead of stopping at the first one.
//! Unknown keys are rejected here (`deny_unknown_fields`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The main file (`config/tollgate.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMain {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub upstream: Option<String>,
    pub accounts_file: Option<String>,
    pub unmatched: Option<String>,
    pub audit: Option<String>,
    pub scope_mode: Option<String>,
    pub tls: Option<RawTls>,
    pub assertion: Option<RawAssertion>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub forward: RawForward,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub scopes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub handshake_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAssertion {
    pub key_file: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub header_read_timeout: Option<String>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_connections: Option<i64>,
    pub idle_timeout: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub h2_max_concurrent_streams: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForward {
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub ca_file: Option<String>,
    pub preserve_host: Option<bool>,
    pub forward_token: Option<bool>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_host: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaders {
    pub identity_prefix: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_identity_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPaths {
    pub allow_semicolons: Option<bool>,
    pub case_insensitive_paths: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokens {
    pub max_token_bytes: Option<i64>,
    pub cookie: Option<String>,
    pub query_param: Option<String>,
    pub cache_max_entries: Option<i64>,
    pub cache_max_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub enabled: Option<bool>,
    pub discovery_url: Option<String>,
    pub jwks_uri: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<String>,
    pub max_token_lifetime: Option<String>,
    pub typ: Option<String>,
    pub subject_claim: Option<String>,
    pub insecure_allow_http: Option<bool>,
    pub min_refresh: Option<String>,
    pub max_refresh: Option<String>,
    pub min_refetch_interval: Option<String>,
    pub kid_wait: Option<String>,
    pub max_stale: Option<String>,
    pub auto_provision: Option<bool>,
    pub allowed_domains: Option<Vec<String>>,
    pub default_roles: Option<Vec<String>>,
    pub admin_role: Option<String>,
    pub group_matching: Option<bool>,
    pub scope_mode: Option<String>,
    #[serde(default)]
    pub claims: RawClaims,
    #[serde(default)]
    pub group_roles: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaims {
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Option<String>,
    pub is_admin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub auth: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub providers: Option<Vec<String>>,
}

/// The account table (`config/accounts.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccounts {
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub identity_mappings: Vec<RawIdentityMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub roles: Option<Vec<String>>,
    pub disabled: Option<bool>,
    #[serde(default)]
    pub mappings: Vec<RawAccountMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccountMapping {
    pub provider: Option<String>,
    pub subject: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentityMapping {
    pub name: Option<String>,
    pub provider: Option<String>,
    pub priority: Option<i64>,
    pub claims: Option<BTreeMap<String, String>>,
    pub account: Option<String>,
    pub roles: Option<Vec<String>>,
    pub assertion_audience: Option<String>,
}
