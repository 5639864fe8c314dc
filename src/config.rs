//! Typed runtime configuration and [`load`]: read both TOML files, deserialize them into the
//! raw structs of `config/file.rs`, then validate and convert (`config/validate.rs`),
//! collecting every error with its file, line:column and key path.

mod file;
mod location;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use ipnet::IpNet;

use crate::authz::route::RouteTable;

/// Whether a URL's host is `localhost` or a loopback address: plain `http://` is accepted
/// there without `insecure_allow_http` (configured and discovered URLs alike).
pub fn is_loopback(uri: &http::Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Default path of the main config file.
pub const DEFAULT_CONFIG_PATH: &str = "config/tollgate.toml";

/// The whole validated configuration: both files.
#[derive(Debug, Clone)]
pub struct Config {
    pub main_file: PathBuf,
    pub accounts_file: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub upstream: Upstream,
    pub unmatched: Unmatched,
    pub audit: AuditMode,
    pub scope_mode: ScopeMode,
    pub tls: Option<Tls>,
    pub assertion: Option<AssertionConfig>,
    pub limits: Limits,
    pub headers: Headers,
    pub paths: PathOptions,
    pub tokens: Tokens,
    pub providers: Vec<Provider>,
    /// role → permissions
    pub roles: BTreeMap<String, Vec<String>>,
    /// scope value → permissions
    pub scopes: BTreeMap<String, Vec<String>>,
    pub routes: RouteTable,
    pub accounts: Vec<Arc<Account>>,
    pub identity_mappings: Vec<IdentityMapping>,
}

/// What happens to a request no route matches (design §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// A valid, resolved identity is enough.
    Authenticated,
    /// Refused (403).
    Deny,
}

/// Which requests produce an audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditMode {
    All,
    Denied,
    Off,
}

/// How scope and roles combine (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeMode {
    /// A valid scope replaces the roles' permissions.
    Scope,
    /// Only what both the scope and the roles allow.
    Intersect,
}

/// The upstream every request is forwarded to.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    pub connect_timeout: Duration,
    /// From sending the request to receiving the response head.
    pub timeout: Duration,
    /// Extra CA bundle (PEM) trusted for an `https://` upstream besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    pub preserve_host: bool,
    pub forward_token: bool,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub handshake_timeout: Duration,
}

/// The signed identity assertion (design §5.3).
#[derive(Debug, Clone)]
pub struct AssertionConfig {
    pub key: Arc<crate::assertion::SigningKey>,
    pub issuer: String,
    pub audience: String,
    pub lifetime: Duration,
}

/// Connection and request limits of the public listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

#[derive(Debug, Clone)]
pub struct Headers {
    /// Lower-case, e.g. `x-auth-`.
    pub identity_prefix: String,
    pub trusted_proxies: Vec<IpNet>,
    pub max_identity_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct PathOptions {
    pub allow_semicolons: bool,
    pub case_insensitive: bool,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub max_token_bytes: usize,
    pub cookie: Option<String>,
    pub query_param: Option<String>,
    pub cache_max_entries: u64,
    pub cache_max_ttl: Duration,
}

/// Supported signature algorithms (design §2.2); `none` and HS* are not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }
}

/// Claim names (dotted paths) read from a provider's tokens.
#[derive(Debug, Clone)]
pub struct ClaimNames {
    pub email: String,
    pub name: String,
    pub groups: String,
    pub is_admin: String,
}

/// An OpenID provider whose tokens are accepted.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub enabled: bool,
    pub discovery_url: Option<String>,
    pub jwks_uri: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub max_token_lifetime: Option<Duration>,
    pub typ: Option<String>,
    pub subject_claim: String,
    pub insecure_allow_http: bool,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub min_refetch_interval: Duration,
    pub kid_wait: Duration,
    pub max_stale: Duration,
    pub auto_provision: bool,
    pub allowed_domains: Vec<String>,
    pub default_roles: Vec<String>,
    pub admin_role: String,
    pub group_matching: bool,
    pub scope_mode: Option<ScopeMode>,
    pub claims: ClaimNames,
    pub group_roles: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Service,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Service => "service",
        }
    }
}

/// A local account (design §3.2).
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub kind: AccountKind,
    pub name: Option<String>,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub mappings: Vec<AccountMapping>,
}

/// A link from (provider, subject) to an account.
#[derive(Debug, Clone)]
pub struct AccountMapping {
    pub provider: String,
    pub subject: String,
    pub name: Option<String>,
}

/// A claims-based mapping for workload identities (design §3.3 step 2).
#[derive(Debug, Clone)]
pub struct IdentityMapping {
    pub name: String,
    pub provider: String,
    pub priority: u32,
    /// claim name (dotted path) → exact value or `*` glob
    pub claims: BTreeMap<String, String>,
    pub account: Option<String>,
    pub roles: Vec<String>,
    /// Overrides the assertion's `aud` for identities resolved by this mapping.
    pub assertion_audience: Option<String>,
}

/// One problem found while loading the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Key path such as `routes[2].methods`; empty for file-level problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Loads and validates the main file at `path` and the account table it points to.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: p.to_path_buf(),
                line: 1,
                column: 1,
                key: String::new(),
                message: format!("cannot read file: {e}"),
            }])
        })
    };
    let main_src = read(path)?;
    validate::load_from_sources(path, &main_src, |accounts_path| read(accounts_path))
}

/// Like [`load`], from strings (for tests and `explain`): `accounts_src` is used for the
/// account table whatever path the main file names.
pub fn load_from_str(
    main_path: &Path,
    main_src: &str,
    accounts_src: &str,
) -> Result<Config, ConfigErrors> {
    validate::load_from_sources(main_path, main_src, |_| Ok(accounts_src.to_string()))
}
