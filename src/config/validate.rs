//! Raw → typed. Every check appends to one error list, so a broken file is reported whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use super::file::{RawAccounts, RawMain, RawProvider, RawRoute};
use super::location::{KeyPath, Located};
use super::*;
use crate::authz::route::{AuthMode, MethodSet, Pattern, Route, RouteTable};

/// Collects errors for one file.
struct Ctx<'a> {
    file: &'a Path,
    loc: Located<'a>,
    errors: Vec<ConfigError>,
}

// === impl Ctx ===

impl<'a> Ctx<'a> {
    fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            loc: Located::new(src),
            errors: Vec::new(),
        }
    }

    fn err(&mut self, path: &KeyPath, message: impl Into<String>) {
        let (line, column) = self.loc.line_col(path);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: path.to_string(),
            message: message.into(),
        });
    }

    /// `line N` of a key, to name the other offender in duplicate errors.
    fn at(&self, path: &KeyPath) -> String {
        let (line, column) = self.loc.line_col(path);
        format!("{path} at {line}:{column}")
    }

    fn toml_error(&mut self, e: &toml::de::Error) {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let (line, column) = super::location::line_col(self.loc_src(), offset);
        let key = self.loc.path_at(offset).to_string();
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message: e.message().trim().to_string(),
        });
    }

    fn loc_src(&self) -> &'a str {
        self.loc.source()
    }

    fn duration(&mut self, path: &KeyPath, v: Option<&str>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => {
                match humantime::parse_duration(s) {
                    Ok(d) => d,
                    Err(e) => {
                        self.err(path, format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"500ms\", \"5m\""));
                        default
                    }
                }
            }
        }
    }

    fn opt_duration(&mut self, path: &KeyPath, v: Option<&str>) -> Option<Duration> {
        v.map(|s| self.duration(path, Some(s), Duration::ZERO))
    }

    fn int(&mut self, path: &KeyPath, v: Option<i64>, default: u64, min: u64, max: u64) -> u64 {
        match v {
            None => default,
            Some(n) if n >= 0 && (n as u64) >= min && (n as u64) <= max => n as u64,
            Some(n) => {
                self.err(path, format!("{n} is out of range {min}..={max}"));
                default
            }
        }
    }

    fn addr(&mut self, path: &KeyPath, v: Option<&str>, default: &str) -> SocketAddr {
        let s = v.unwrap_or(default);
        s.parse().unwrap_or_else(|_| {
            self.err(
                path,
                format!("invalid socket address {s:?}; write e.g. \"0.0.0.0:8080\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn choice<T: Copy>(
        &mut self,
        path: &KeyPath,
        v: Option<&str>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = v else { return default };
        match options.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.err(
                    path,
                    format!("unknown value {s:?}; expected one of {}", names.join(", ")),
                );
                default
            }
        }
    }

    /// A name used as a key elsewhere (provider, role, mapping): non-empty, no spaces, no commas.
    fn name(&mut self, path: &KeyPath, v: Option<&str>, what: &str) -> String {
        match v {
            None => {
                self.err(path, format!("missing {what}"));
                String::new()
            }
            Some(s) if valid_name(s) => s.to_string(),
            Some(s) => {
                self.err(
                    path,
                    format!("invalid {what} {s:?}: use 1-128 characters of A-Z a-z 0-9 _ . : / -"),
                );
                s.to_string()
            }
        }
    }

    fn file_path(&mut self, path: &KeyPath, base: &Path, v: &str) -> PathBuf {
        let p = base.join(v);
        if !p.is_file() {
            self.err(path, format!("file {} does not exist", p.display()));
        }
        p
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'))
}

/// `items:read`, `items:*`, `*`.
fn valid_permission(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let body = s.strip_suffix(":*").unwrap_or(s);
    valid_name(body) && !body.contains('*')
}

/// Characters allowed in an account id (design §3.2).
fn valid_account_id(s: &str) -> bool {
    let n = s.chars().count();
    (1..=200).contains(&n)
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'~'
                        | b'!'
                        | b'$'
                        | b'%'
                        | b'^'
                        | b'&'
                        | b'*'
                        | b'_'
                        | b'='
                        | b'+'
                        | b'.'
                        | b'@'
                        | b','
                        | b'-'
                )
        })
}

/// Whether a URL's host is a loopback address or `localhost`.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(super) fn load_from_sources(
    main_path: &Path,
    main_src: &str,
    read_accounts: impl FnOnce(&Path) -> Result<String, ConfigErrors>,
) -> Result<Config, ConfigErrors> {
    let mut main = Ctx::new(main_path, main_src);
    let raw: RawMain = match toml::from_str(main_src) {
        Ok(r) => r,
        Err(e) => {
            main.toml_error(&e);
            return Err(ConfigErrors(main.errors));
        }
    };
    let base = dir_of(main_path);
    let accounts_file = base.join(raw.accounts_file.as_deref().unwrap_or("accounts.toml"));
    let partial = main_config(&mut main, raw, &base, main_path, &accounts_file);

    let accounts_src = match read_accounts(&accounts_file) {
        Ok(s) => s,
        Err(mut e) => {
            main.errors.sort_by_key(|e| (e.line, e.column));
            let mut all = main.errors;
            all.append(&mut e.0);
            return Err(ConfigErrors(all));
        }
    };
    let mut acc = Ctx::new(&accounts_file, &accounts_src);
    let raw_acc: Option<RawAccounts> = match toml::from_str(&accounts_src) {
        Ok(r) => Some(r),
        Err(e) => {
            acc.toml_error(&e);
            None
        }
    };
    let mut config = partial;
    if let Some(raw_acc) = raw_acc {
        accounts(&mut acc, raw_acc, &mut config);
    }
    // File order: main file first, then the account table, each by position.
    main.errors.sort_by_key(|e| (e.line, e.column));
    acc.errors.sort_by_key(|e| (e.line, e.column));
    let mut all = main.errors;
    all.append(&mut acc.errors);
    if all.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(all))
    }
}

fn main_config(
    cx: &mut Ctx<'_>,
    raw: RawMain,
    base: &Path,
    main_path: &Path,
    accounts_file: &Path,
) -> Config {
    let root = KeyPath::root();
    let listen = cx.addr(&root.key("listen"), raw.listen.as_deref(), "0.0.0.0:8080");
    let admin_listen = cx.addr(
        &root.key("admin_listen"),
        raw.admin_listen.as_deref(),
        "127.0.0.1:9901",
    );
    if listen == admin_listen && listen.port() != 0 {
        cx.err(&root.key("admin_listen"), "must differ from `listen`");
    }
    let unmatched = cx.choice(
        &root.key("unmatched"),
        raw.unmatched.as_deref(),
        &[
            ("authenticated", Unmatched::Authenticated),
            ("deny", Unmatched::Deny),
        ],
        Unmatched::Authenticated,
    );
    let audit = cx.choice(
        &root.key("audit"),
        raw.audit.as_deref(),
        &[
            ("all", AuditMode::All),
            ("denied", AuditMode::Denied),
            ("off", AuditMode::Off),
        ],
        AuditMode::All,
    );
    let scope_modes = [
        ("scope_first", ScopeMode::Scope),
        ("intersect", ScopeMode::Intersect),
    ];
    let scope_mode = cx.choice(
        &root.key("scope_mode"),
        raw.scope_mode.as_deref(),
        &scope_modes,
        ScopeMode::Scope,
    );

    // --- [tls]
    let tls = raw.tls.map(|t| {
        let p = root.key("tls");
        let cert = match t.cert.as_deref() {
            Some(c) => cx.file_path(&p.key("cert"), base, c),
            None => {
                cx.err(&p, "missing `cert` (PEM certificate chain)");
                PathBuf::new()
            }
        };
        let key = match t.key.as_deref() {
            Some(k) => cx.file_path(&p.key("key"), base, k),
            None => {
                cx.err(&p, "missing `key` (PEM private key)");
                PathBuf::new()
            }
        };
        let handshake_timeout = cx.duration(
            &p.key("handshake_timeout"),
            t.handshake_timeout.as_deref(),
            Duration::from_secs(10),
        );
        Tls {
            cert,
            key,
            handshake_timeout,
        }
    });

    // --- [assertion]
    let assertion = raw.assertion.map(|a| {
        let p = root.key("assertion");
        let key = match a.key_file.as_deref() {
            None => {
                cx.err(
                    &p,
                    "missing `key_file` (PEM PKCS#8 ES256 or Ed25519 private key)",
                );
                None
            }
            Some(f) => {
                let path = cx.file_path(&p.key("key_file"), base, f);
                match std::fs::read(&path) {
                    Ok(pem) => match crate::assertion::SigningKey::from_pem(&pem) {
                        Ok(k) => Some(Arc::new(k)),
                        Err(e) => {
                            cx.err(&p.key("key_file"), e);
                            None
                        }
                    },
                    Err(_) => None,
                }
            }
        };
        let issuer = a.issuer.unwrap_or_else(|| "tollgate".to_string());
        let audience = match a.audience {
            Some(aud) if !aud.is_empty() => aud,
            _ => {
                cx.err(
                    &p,
                    "missing `audience` (the upstream's name, checked by its verifier)",
                );
                String::new()
            }
        };
        let lifetime = cx.duration(
            &p.key("lifetime"),
            a.lifetime.as_deref(),
            Duration::from_secs(60),
        );
        if lifetime.is_zero() || lifetime > Duration::from_secs(3600) {
            cx.err(&p.key("lifetime"), "must be between 1s and 1h");
        }
        key.map(|key| AssertionConfig {
            key,
            issuer,
            audience,
            lifetime,
        })
    });
    let assertion = assertion.flatten();

    // --- [limits]
    let l = &raw.limits;
    let p = root.key("limits");
    let limits = Limits {
        header_read_timeout: cx.duration(
            &p.key("header_read_timeout"),
            l.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        max_header_bytes: cx.int(
            &p.key("max_header_bytes"),
            l.max_header_bytes,
            32 * 1024,
            8192,
            1 << 20,
        ) as usize,
        max_headers: cx.int(&p.key("max_headers"), l.max_headers, 100, 1, 10_000) as usize,
        max_connections: cx.int(
            &p.key("max_connections"),
            l.max_connections,
            10_000,
            1,
            1_000_000,
        ) as usize,
        idle_timeout: cx.duration(
            &p.key("idle_timeout"),
            l.idle_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        shutdown_timeout: cx.duration(
            &p.key("shutdown_timeout"),
            l.shutdown_timeout.as_deref(),
            Duration::from_secs(30),
        ),
        h2_max_concurrent_streams: cx.int(
            &p.key("h2_max_concurrent_streams"),
            l.h2_max_concurrent_streams,
            100,
            1,
            10_000,
        ) as u32,
    };
    for (k, d) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("idle_timeout", limits.idle_timeout),
    ] {
        if d.is_zero() {
            cx.err(&p.key(k), "must be greater than zero");
        }
    }

    // --- upstream + [forward]
    let f = &raw.forward;
    let fp = root.key("forward");
    let (scheme, authority) = match raw.upstream.as_deref() {
        None => {
            cx.err(
                &root.key("upstream"),
                "missing: the URL requests are forwarded to, e.g. \"http://127.0.0.1:9000\"",
            );
            (http::uri::Scheme::HTTP, Authority::from_static("127.0.0.1"))
        }
        Some(s) => upstream_uri(cx, &root.key("upstream"), s),
    };
    let ca_file = f
        .ca_file
        .as_deref()
        .map(|c| cx.file_path(&fp.key("ca_file"), base, c));
    let upstream = Upstream {
        scheme,
        authority,
        connect_timeout: cx.duration(
            &fp.key("connect_timeout"),
            f.connect_timeout.as_deref(),
            Duration::from_secs(2),
        ),
        timeout: cx.duration(
            &fp.key("timeout"),
            f.timeout.as_deref(),
            Duration::from_secs(30),
        ),
        ca_file,
        preserve_host: f.preserve_host.unwrap_or(true),
        forward_token: f.forward_token.unwrap_or(false),
        pool_idle_timeout: cx.duration(
            &fp.key("pool_idle_timeout"),
            f.pool_idle_timeout.as_deref(),
            Duration::from_secs(90),
        ),
        pool_max_idle_per_host: cx.int(
            &fp.key("pool_max_idle_per_host"),
            f.pool_max_idle_per_host,
            64,
            0,
            100_000,
        ) as usize,
    };

    // --- [headers]
    let h = &raw.headers;
    let hp = root.key("headers");
    let prefix = h.identity_prefix.as_deref().unwrap_or("X-Auth-");
    let identity_prefix = prefix.to_ascii_lowercase().replace('_', "-");
    if prefix.len() < 2 || http::HeaderName::from_bytes(identity_prefix.as_bytes()).is_err() {
        cx.err(
            &hp.key("identity_prefix"),
            format!("{prefix:?} is not a usable header name prefix"),
        );
    }
    let mut trusted_proxies = Vec::new();
    for (i, s) in h.trusted_proxies.iter().flatten().enumerate() {
        let parsed = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => trusted_proxies.push(n.trunc()),
            Err(_) => cx.err(
                &hp.key("trusted_proxies").index(i),
                format!("invalid CIDR or address {s:?}"),
            ),
        }
    }
    let headers = Headers {
        identity_prefix,
        trusted_proxies,
        max_identity_bytes: cx.int(
            &hp.key("max_identity_bytes"),
            h.max_identity_bytes,
            8192,
            256,
            1 << 20,
        ) as usize,
    };

    let paths = PathOptions {
        allow_semicolons: raw.paths.allow_semicolons.unwrap_or(false),
        case_insensitive: raw.paths.case_insensitive_paths.unwrap_or(false),
    };

    // --- [tokens]
    let t = &raw.tokens;
    let tp = root.key("tokens");
    let tokens = Tokens {
        max_token_bytes: cx.int(
            &tp.key("max_token_bytes"),
            t.max_token_bytes,
            16 * 1024,
            64,
            1 << 20,
        ) as usize,
        cookie: t.cookie.clone(),
        query_param: t.query_param.clone(),
        cache_max_entries: cx.int(
            &tp.key("cache_max_entries"),
            t.cache_max_entries,
            100_000,
            0,
            100_000_000,
        ),
        cache_max_ttl: cx.duration(
            &tp.key("cache_max_ttl"),
            t.cache_max_ttl.as_deref(),
            Duration::from_secs(300),
        ),
    };
    for (k, v) in [("cookie", &t.cookie), ("query_param", &t.query_param)] {
        if let Some(v) = v
            && (v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b";=,&".contains(&b)))
        {
            cx.err(&tp.key(k), format!("invalid name {v:?}"));
        }
    }

    // --- [roles], [scopes]
    let mut roles = BTreeMap::new();
    for (role, perms) in &raw.roles {
        let rp = root.key("roles").key(role);
        if !valid_name(role) {
            cx.err(&rp, format!("invalid role name {role:?}"));
        }
        permissions_list(cx, &rp, perms);
        roles.insert(role.clone(), perms.clone());
    }
    let mut scopes = BTreeMap::new();
    for (scope, perms) in &raw.scopes {
        let sp = root.key("scopes").key(scope);
        if scope.is_empty()
            || scope
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b'"' || b == b'\\')
        {
            cx.err(&sp, format!("invalid scope value {scope:?}"));
        }
        permissions_list(cx, &sp, perms);
        scopes.insert(scope.clone(), perms.clone());
    }

    // --- [[providers]]
    let mut providers: Vec<Provider> = Vec::new();
    let mut names: HashMap<String, KeyPath> = HashMap::new();
    let mut issuers: HashMap<String, KeyPath> = HashMap::new();
    for (i, rp) in raw.providers.into_iter().enumerate() {
        let pp = root.key("providers").index(i);
        let prov = provider(cx, &pp, rp, &roles, scope_modes);
        if let Some(first) = names.get(&prov.name) {
            let other = cx.at(first);
            cx.err(
                &pp.key("name"),
                format!("duplicate provider name {:?} (also {other})", prov.name),
            );
        } else {
            names.insert(prov.name.clone(), pp.key("name"));
        }
        if prov.enabled {
            if let Some(first) = issuers.get(&prov.issuer) {
                let other = cx.at(first);
                cx.err(
                    &pp.key("issuer"),
                    format!(
                        "two enabled providers share issuer {:?} (also {other})",
                        prov.issuer
                    ),
                );
            } else {
                issuers.insert(prov.issuer.clone(), pp.key("issuer"));
            }
        }
        providers.push(prov);
    }

    // --- [[routes]]
    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let rp = root.key("routes").index(i);
        if let Some(route) = route(cx, &rp, i, r, &paths, &providers) {
            routes.push(route);
        }
    }

    Config {
        main_file: main_path.to_path_buf(),
        accounts_file: accounts_file.to_path_buf(),
        listen,
        admin_listen,
        upstream,
        unmatched,
        audit,
        scope_mode,
        tls,
        assertion,
        limits,
        headers,
        paths,
        tokens,
        providers,
        roles,
        scopes,
        routes: RouteTable::new(routes),
        accounts: Vec::new(),
        identity_mappings: Vec::new(),
    }
}

fn upstream_uri(cx: &mut Ctx<'_>, path: &KeyPath, s: &str) -> (http::uri::Scheme, Authority) {
    let fallback = (http::uri::Scheme::HTTP, Authority::from_static("127.0.0.1"));
    let Ok(uri) = s.parse::<Uri>() else {
        cx.err(path, format!("invalid URL {s:?}"));
        return fallback;
    };
    let scheme = match uri.scheme_str() {
        Some("http") => http::uri::Scheme::HTTP,
        Some("https") => http::uri::Scheme::HTTPS,
        _ => {
            cx.err(
                path,
                format!("{s:?}: the scheme must be http:// or https://"),
            );
            return fallback;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        cx.err(path, format!("{s:?} has no host"));
        return fallback;
    };
    if authority.as_str().contains('@') {
        cx.err(path, "credentials in the upstream URL are not supported");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        cx.err(
            path,
            "the upstream URL must not have a path or query (requests keep their own)",
        );
    }
    (scheme, authority)
}

fn permissions_list(cx: &mut Ctx<'_>, path: &KeyPath, perms: &[String]) {
    for (j, perm) in perms.iter().enumerate() {
        if !valid_permission(perm) {
            cx.err(
                &path.index(j),
                format!(
                    "invalid permission {perm:?}: write e.g. \"items:read\", \"items:*\" or \"*\""
                ),
            );
        }
    }
}

fn roles_exist(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    list: &[String],
    roles: &BTreeMap<String, Vec<String>>,
) {
    for (j, r) in list.iter().enumerate() {
        if !roles.contains_key(r) {
            cx.err(
                &path.index(j),
                format!("unknown role {r:?} (not defined in [roles])"),
            );
        }
    }
}

fn url_option(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    v: Option<&str>,
    insecure_allow_http: bool,
) -> Option<String> {
    let s = v?;
    match s.parse::<Uri>() {
        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {}
        Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {
            if !insecure_allow_http && !super::is_loopback(&u) {
                cx.err(
                    path,
                    format!("{s:?}: plain http is allowed only for loopback hosts or with insecure_allow_http = true"),
                );
            }
        }
        _ => cx.err(
            path,
            format!("invalid URL {s:?}: expected https://host/..."),
        ),
    }
    Some(s.to_string())
}

fn provider(
    cx: &mut Ctx<'_>,
    pp: &KeyPath,
    rp: RawProvider,
    roles: &BTreeMap<String, Vec<String>>,
    scope_modes: [(&str, ScopeMode); 2],
) -> Provider {
    let name = cx.name(&pp.key("name"), rp.name.as_deref(), "provider name");
    let insecure_allow_http = rp.insecure_allow_http.unwrap_or(false);
    let issuer = match url_option(
        cx,
        &pp.key("issuer"),
        rp.issuer.as_deref(),
        insecure_allow_http,
    ) {
        Some(s) => s,
        None => {
            cx.err(
                pp,
                "missing `issuer` (the exact `iss` value of this provider's tokens)",
            );
            String::new()
        }
    };
    let discovery_url = url_option(
        cx,
        &pp.key("discovery_url"),
        rp.discovery_url.as_deref(),
        insecure_allow_http,
    );
    let jwks_uri = url_option(
        cx,
        &pp.key("jwks_uri"),
        rp.jwks_uri.as_deref(),
        insecure_allow_http,
    );
    if discovery_url.is_some() && jwks_uri.is_some() {
        cx.err(
            &pp.key("jwks_uri"),
            "set either `discovery_url` or `jwks_uri`, not both",
        );
    }
    let audiences = rp.audiences.unwrap_or_default();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        cx.err(
            &pp.key("audiences"),
            "at least one non-empty audience is required (tokens for other audiences are refused)",
        );
    }
    let mut algorithms = Vec::new();
    match rp.algorithms {
        None => algorithms = vec![Algorithm::RS256, Algorithm::ES256],
        Some(list) => {
            if list.is_empty() {
                cx.err(&pp.key("algorithms"), "must list at least one algorithm");
            }
            for (j, a) in list.iter().enumerate() {
                match Algorithm::from_name(a) {
                    Some(alg) => algorithms.push(alg),
                    None if a.eq_ignore_ascii_case("none") || a.to_ascii_uppercase().starts_with("HS") => cx.err(
                        &pp.key("algorithms").index(j),
                        format!("{a:?} is never accepted: only asymmetric signatures are"),
                    ),
                    None => cx.err(
                        &pp.key("algorithms").index(j),
                        format!("unsupported algorithm {a:?}; supported: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA"),
                    ),
                }
            }
        }
    }
    let min_refresh = cx.duration(
        &pp.key("min_refresh"),
        rp.min_refresh.as_deref(),
        Duration::from_secs(300),
    );
    let max_refresh = cx.duration(
        &pp.key("max_refresh"),
        rp.max_refresh.as_deref(),
        Duration::from_secs(86_400),
    );
    if min_refresh > max_refresh {
        cx.err(
            &pp.key("min_refresh"),
            "must not be greater than max_refresh",
        );
    }
    let mut allowed_domains = Vec::new();
    for (j, d) in rp.allowed_domains.iter().flatten().enumerate() {
        let bare = d.strip_prefix("*.").unwrap_or(d);
        if bare.is_empty()
            || bare.contains('*')
            || !bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            cx.err(
                &pp.key("allowed_domains").index(j),
                format!("invalid domain {d:?}"),
            );
        }
        allowed_domains.push(d.to_ascii_lowercase());
    }
    if rp.auto_provision == Some(true) && allowed_domains.is_empty() {
        cx.err(
            &pp.key("auto_provision"),
            "auto_provision needs allowed_domains (otherwise any verified email would get an account)",
        );
    }
    let default_roles = rp.default_roles.unwrap_or_default();
    roles_exist(cx, &pp.key("default_roles"), &default_roles, roles);
    if let Some(r) = &rp.admin_role
        && !roles.contains_key(r)
    {
        cx.err(
            &pp.key("admin_role"),
            format!("unknown role {r:?} (not defined in [roles])"),
        );
    }
    for (group, list) in &rp.group_roles {
        roles_exist(cx, &pp.key("group_roles").key(group), list, roles);
    }
    let scope_mode = rp.scope_mode.as_deref().map(|s| {
        cx.choice(
            &pp.key("scope_mode"),
            Some(s),
            &scope_modes,
            ScopeMode::Scope,
        )
    });
    let claim = |v: Option<String>, d: &str| v.unwrap_or_else(|| d.to_string());
    let claims = ClaimNames {
        email: claim(rp.claims.email, "email"),
        name: claim(rp.claims.name, "name"),
        groups: claim(rp.claims.groups, "groups"),
        is_admin: claim(rp.claims.is_admin, "is_admin"),
    };
    for (k, v) in [
        ("email", &claims.email),
        ("name", &claims.name),
        ("groups", &claims.groups),
        ("is_admin", &claims.is_admin),
    ] {
        if v.is_empty() || v.split('.').any(str::is_empty) {
            cx.err(
                &pp.key("claims").key(k),
                format!("invalid claim path {v:?}"),
            );
        }
    }
    let subject_claim = rp.subject_claim.unwrap_or_else(|| "sub".into());
    if subject_claim.is_empty() {
        cx.err(&pp.key("subject_claim"), "must not be empty");
    }
    Provider {
        name,
        issuer,
        enabled: rp.enabled.unwrap_or(true),
        discovery_url,
        jwks_uri,
        audiences,
        algorithms,
        leeway: cx.duration(
            &pp.key("leeway"),
            rp.leeway.as_deref(),
            Duration::from_secs(30),
        ),
        max_token_lifetime: cx.opt_duration(
            &pp.key("max_token_lifetime"),
            rp.max_token_lifetime.as_deref(),
        ),
        typ: rp.typ,
        subject_claim,
        insecure_allow_http,
        min_refresh,
        max_refresh,
        min_refetch_interval: cx.duration(
            &pp.key("min_refetch_interval"),
            rp.min_refetch_interval.as_deref(),
            Duration::from_secs(10),
        ),
        kid_wait: cx.duration(
            &pp.key("kid_wait"),
            rp.kid_wait.as_deref(),
            Duration::from_secs(2),
        ),
        max_stale: cx.duration(
            &pp.key("max_stale"),
            rp.max_stale.as_deref(),
            Duration::from_secs(86_400),
        ),
        auto_provision: rp.auto_provision.unwrap_or(false),
        allowed_domains,
        default_roles,
        admin_role: rp.admin_role.unwrap_or_else(|| "admin".into()),
        group_matching: rp.group_matching.unwrap_or(false),
        scope_mode,
        claims,
        group_roles: rp.group_roles,
    }
}

fn route(
    cx: &mut Ctx<'_>,
    rp: &KeyPath,
    index: usize,
    r: RawRoute,
    paths: &PathOptions,
    providers: &[Provider],
) -> Option<Route> {
    let auth = cx.choice(
        &rp.key("auth"),
        r.auth.as_deref(),
        &[
            ("public", AuthMode::Public),
            ("optional", AuthMode::Optional),
            ("required", AuthMode::Required),
        ],
        AuthMode::Required,
    );
    let mut methods = MethodSet::ALL;
    if let Some(list) = &r.methods {
        methods = MethodSet::empty();
        if list.is_empty() {
            cx.err(
                &rp.key("methods"),
                "an empty list matches nothing; omit the key to match every method",
            );
        }
        for m in list {
            if !methods.insert(m) {
                let upper = m.to_ascii_uppercase();
                let hint = if MethodSet::empty().insert(&upper) {
                    format!(" (write {upper:?})")
                } else {
                    String::new()
                };
                cx.err(&rp.key("methods"), format!("unknown method {m:?}{hint}"));
            }
        }
    }
    let permissions = r.permissions.unwrap_or_default();
    permissions_list(cx, &rp.key("permissions"), &permissions);
    let route_providers = r.providers.unwrap_or_default();
    for (j, p) in route_providers.iter().enumerate() {
        if !providers.iter().any(|x| &x.name == p) {
            cx.err(
                &rp.key("providers").index(j),
                format!("unknown provider {p:?}"),
            );
        }
    }
    if auth == AuthMode::Public && (!permissions.is_empty() || !route_providers.is_empty()) {
        cx.err(
            &rp.key("auth"),
            "a public route cannot require permissions or providers (no token is checked)",
        );
    }
    let Some(path) = r.path else {
        cx.err(rp, "missing `path`");
        return None;
    };
    let pattern = match Pattern::compile(&path, paths.case_insensitive, paths.allow_semicolons) {
        Ok(p) => p,
        Err(e) => {
            cx.err(&rp.key("path"), format!("{path:?}: {e}"));
            return None;
        }
    };
    Some(Route {
        index,
        path,
        pattern,
        methods,
        auth,
        permissions,
        providers: route_providers,
    })
}

fn accounts(cx: &mut Ctx<'_>, raw: RawAccounts, config: &mut Config) {
    let root = KeyPath::root();
    let provider_names: HashSet<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    // First occurrences are remembered by index; key paths are built only for errors.
    let acc_path = |i: usize| root.key("accounts").index(i);
    let map_path = |i: usize, j: usize| acc_path(i).key("mappings").index(j);
    let mut ids: HashMap<String, usize> = HashMap::with_capacity(raw.accounts.len());
    let mut emails: HashMap<String, usize> = HashMap::with_capacity(raw.accounts.len());
    let mut subjects: HashMap<(String, String), (usize, usize)> =
        HashMap::with_capacity(raw.accounts.len());
    let mut out = Vec::with_capacity(raw.accounts.len());
    for (i, a) in raw.accounts.into_iter().enumerate() {
        let id = match a.id {
            None => {
                cx.err(&acc_path(i), "missing `id`");
                String::new()
            }
            Some(id) => {
                if !valid_account_id(&id) {
                    cx.err(
                        &acc_path(i).key("id"),
                        format!("invalid account id {id:?}: 1-200 characters of a-z A-Z 0-9 / ~ ! $ % ^ & * _ = + . @ , -"),
                    );
                }
                if let Some(&first) = ids.get(&id) {
                    let other = cx.at(&acc_path(first).key("id"));
                    cx.err(
                        &acc_path(i).key("id"),
                        format!("duplicate account id {id:?} (also {other})"),
                    );
                } else {
                    ids.insert(id.clone(), i);
                }
                id
            }
        };
        let kind = match a.kind.as_deref() {
            None | Some("user") => AccountKind::User,
            Some("service") => AccountKind::Service,
            Some(other) => {
                cx.err(
                    &acc_path(i).key("kind"),
                    format!("unknown value {other:?}; expected one of \"user\", \"service\""),
                );
                AccountKind::User
            }
        };
        if let Some(email) = &a.email {
            let lower = email.to_lowercase();
            if !email.contains('@') || email.chars().any(|c| c.is_control() || c.is_whitespace()) {
                cx.err(
                    &acc_path(i).key("email"),
                    format!("invalid email {email:?}"),
                );
            }
            if let Some(&first) = emails.get(&lower) {
                let other = cx.at(&acc_path(first).key("email"));
                cx.err(
                    &acc_path(i).key("email"),
                    format!("duplicate email {email:?} (also {other}; emails are compared case-insensitively)"),
                );
            } else {
                emails.insert(lower, i);
            }
        }
        let roles = a.roles.unwrap_or_default();
        if roles.iter().any(|r| !config.roles.contains_key(r)) {
            roles_exist(cx, &acc_path(i).key("roles"), &roles, &config.roles);
        }
        let mut mappings = Vec::with_capacity(a.mappings.len());
        let mut seen_providers: Vec<(String, usize)> = Vec::new();
        for (j, m) in a.mappings.into_iter().enumerate() {
            let provider = m.provider.unwrap_or_default();
            if provider.is_empty() {
                cx.err(&map_path(i, j), "missing `provider`");
            } else if !provider_names.contains(provider.as_str()) {
                cx.err(
                    &map_path(i, j).key("provider"),
                    format!("unknown provider {provider:?}"),
                );
            }
            if let Some((_, first)) = seen_providers.iter().find(|(p, _)| *p == provider) {
                let other = cx.at(&map_path(i, *first).key("provider"));
                cx.err(
                    &map_path(i, j).key("provider"),
                    format!(
                        "account {id:?} already has a mapping for provider {provider:?} ({other})"
                    ),
                );
            } else {
                seen_providers.push((provider.clone(), j));
            }
            let subject = m.subject.unwrap_or_default();
            if subject.is_empty() {
                cx.err(&map_path(i, j), "missing `subject`");
            }
            let pair = (provider.clone(), subject.clone());
            if let Some(&(fi, fj)) = subjects.get(&pair) {
                let other = cx.at(&map_path(fi, fj).key("subject"));
                cx.err(
                    &map_path(i, j).key("subject"),
                    format!(
                        "subject {subject:?} of provider {provider:?} is already mapped ({other})"
                    ),
                );
            } else {
                subjects.insert(pair, (i, j));
            }
            mappings.push(AccountMapping {
                provider,
                subject,
                name: m.name,
            });
        }
        out.push(Arc::new(Account {
            id,
            kind,
            name: a.name,
            email: a.email,
            roles,
            disabled: a.disabled.unwrap_or(false),
            mappings,
        }));
    }

    let mut names: HashMap<String, KeyPath> = HashMap::new();
    let mut priorities: HashMap<(String, u32), KeyPath> = HashMap::new();
    let mut mappings = Vec::with_capacity(raw.identity_mappings.len());
    for (i, m) in raw.identity_mappings.into_iter().enumerate() {
        let mp = root.key("identity_mappings").index(i);
        let name = cx.name(&mp.key("name"), m.name.as_deref(), "mapping name");
        if let Some(first) = names.get(&name) {
            let other = cx.at(first);
            cx.err(
                &mp.key("name"),
                format!("duplicate mapping name {name:?} (also {other})"),
            );
        } else {
            names.insert(name.clone(), mp.key("name"));
        }
        let provider = m.provider.unwrap_or_default();
        if !provider_names.contains(provider.as_str()) {
            cx.err(
                &mp.key("provider"),
                format!("unknown provider {provider:?}"),
            );
        }
        let priority = match m.priority {
            Some(p) if (1..=i64::from(u32::MAX)).contains(&p) => p as u32,
            Some(p) => {
                cx.err(
                    &mp.key("priority"),
                    format!("{p} is not a priority (1 = highest)"),
                );
                0
            }
            None => {
                cx.err(&mp, "missing `priority` (1 = highest)");
                0
            }
        };
        if priority > 0 {
            let key = (provider.clone(), priority);
            if let Some(first) = priorities.get(&key) {
                let other = cx.at(first);
                cx.err(
                    &mp.key("priority"),
                    format!(
                        "priority {priority} is already used for provider {provider:?} ({other})"
                    ),
                );
            } else {
                priorities.insert(key, mp.key("priority"));
            }
        }
        let claims = m.claims.unwrap_or_default();
        if claims.is_empty() {
            cx.err(&mp.key("claims"), "at least one claim must be listed");
        }
        let roles = m.roles.unwrap_or_default();
        roles_exist(cx, &mp.key("roles"), &roles, &config.roles);
        if let Some(acc) = &m.account
            && !ids.contains_key(acc)
        {
            cx.err(&mp.key("account"), format!("unknown account {acc:?}"));
        }
        if m.account.is_none() && roles.is_empty() {
            cx.err(&mp, "grants nothing: set `account`, `roles`, or both");
        }
        mappings.push(IdentityMapping {
            name,
            provider,
            priority,
            claims,
            account: m.account,
            roles,
            assertion_audience: m.assertion_audience,
        });
    }
    config.accounts = out;
    config.identity_mappings = mappings;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(main: &str, accounts: &str) -> Result<Config, Vec<String>> {
        crate::config::load_from_str(Path::new("t/tollgate.toml"), main, accounts)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load("upstream = \"http://127.0.0.1:9000\"\n", "").unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9901");
        assert_eq!(c.accounts_file, Path::new("t/accounts.toml"));
        assert_eq!(c.unmatched, Unmatched::Authenticated);
        assert_eq!(c.headers.identity_prefix, "x-auth-");
        assert_eq!(c.limits.max_header_bytes, 32768);
        assert!(c.upstream.preserve_host);
        assert!(!c.upstream.forward_token);
    }

    #[test]
    fn all_errors_are_reported_with_location_and_key_path() {
        let main = r#"upstream = "ftp://x"
unmatched = "maybe"

[limits]
idle_timeout = "soon"

[[routes]]
path = "/a"

[[routes]]
path = "/b"

[[routes]]
path = "/c/../d"
methods = ["GET", "GETT"]
"#;
        let errs = load(main, "").unwrap_err();
        assert!(errs.contains(&"t/tollgate.toml:1:1: upstream: \"ftp://x\": the scheme must be http:// or https://".to_string()), "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("t/tollgate.toml:2:1: unmatched: unknown value \"maybe\"")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(
                |e| e.starts_with("t/tollgate.toml:5:1: limits.idle_timeout: invalid duration")
            ),
            "{errs:#?}"
        );
        assert!(
            errs.contains(
                &"t/tollgate.toml:15:1: routes[2].methods: unknown method \"GETT\"".to_string()
            ),
            "{errs:#?}"
        );
        assert!(errs.iter().any(|e| e.starts_with("t/tollgate.toml:14:1: routes[2].path: \"/c/../d\": pattern is not in canonical form")), "{errs:#?}");
        assert_eq!(errs.len(), 5, "{errs:#?}");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_location() {
        let errs = load(
            "upstream = \"http://a\"\n[limits]\nmax_conections = 5\n",
            "",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "t/tollgate.toml:3:1: limits.max_conections: unknown field `max_conections`"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn account_invariants_name_both_offenders() {
        let main = r#"upstream = "http://a"
[roles]
viewer = ["items:read"]
[[providers]]
name = "corp"
issuer = "https://idp.example.com"
audiences = ["api"]
"#;
        let accounts = r#"[[accounts]]
id = "a"
email = "A@example.com"
roles = ["viewer"]
  [[accounts.mappings]]
  provider = "corp"
  subject = "s1"

[[accounts]]
id = "a"
email = "a@EXAMPLE.com"
roles = ["nope"]
  [[accounts.mappings]]
  provider = "corp"
  subject = "s1"
  [[accounts.mappings]]
  provider = "corp"
  subject = "s2"

[[identity_mappings]]
name = "m"
provider = "corp"
priority = 1
claims = { sub = "x" }
roles = ["viewer"]

[[identity_mappings]]
name = "n"
provider = "corp"
priority = 1
claims = { sub = "y" }
account = "ghost"
"#;
        let errs = load(main, accounts).unwrap_err();
        let want = [
            "t/accounts.toml:10:1: accounts[1].id: duplicate account id \"a\" (also accounts[0].id at 2:1)",
            "t/accounts.toml:11:1: accounts[1].email: duplicate email",
            "t/accounts.toml:12:10: accounts[1].roles[0]: unknown role \"nope\"",
            "t/accounts.toml:15:3: accounts[1].mappings[0].subject: subject \"s1\" of provider \"corp\" is already mapped (accounts[0].mappings[0].subject at 7:3)",
            "t/accounts.toml:17:3: accounts[1].mappings[1].provider: account \"a\" already has a mapping for provider \"corp\"",
            "t/accounts.toml:30:1: identity_mappings[1].priority: priority 1 is already used",
            "t/accounts.toml:32:1: identity_mappings[1].account: unknown account \"ghost\"",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w}\n{errs:#?}"
            );
        }
    }

    #[test]
    fn every_reference_and_id_rule_is_checked_with_its_line() {
        let main = r#"upstream = "http://a"
[roles]
viewer = ["items:read"]
[[providers]]
name = "corp"
issuer = "https://idp.example.com"
audiences = ["api"]
auto_provision = true
default_roles = ["ghost-role"]
admin_role = "superuser"
  [providers.group_roles]
  "Eng" = ["nope"]
[[routes]]
path = "/x"
providers = ["corp", "elsewhere"]
"#;
        let long = "a".repeat(201);
        let accounts = format!(
            r#"[[accounts]]
id = "has space"

[[accounts]]
id = "{long}"

[[accounts]]
id = "ok"
  [[accounts.mappings]]
  provider = "unknown-idp"
  subject = "s"

[[identity_mappings]]
name = "m"
provider = "nowhere"
priority = 0
claims = {{}}
roles = ["missing"]
"#
        );
        let errs = load(main, &accounts).unwrap_err();
        let want = [
            "t/tollgate.toml:8:1: providers[0].auto_provision: auto_provision needs allowed_domains",
            "t/tollgate.toml:9:18: providers[0].default_roles[0]: unknown role \"ghost-role\"",
            "t/tollgate.toml:10:1: providers[0].admin_role: unknown role \"superuser\"",
            "t/tollgate.toml:12:12: providers[0].group_roles.Eng[0]: unknown role \"nope\"",
            "t/tollgate.toml:15:22: routes[0].providers[1]: unknown provider \"elsewhere\"",
            "t/accounts.toml:2:1: accounts[0].id: invalid account id \"has space\"",
            "t/accounts.toml:5:1: accounts[1].id: invalid account id",
            "t/accounts.toml:10:3: accounts[2].mappings[0].provider: unknown provider \"unknown-idp\"",
            "t/accounts.toml:15:1: identity_mappings[0].provider: unknown provider \"nowhere\"",
            "t/accounts.toml:16:1: identity_mappings[0].priority: 0 is not a priority",
            "t/accounts.toml:17:1: identity_mappings[0].claims: at least one claim",
            "t/accounts.toml:18:10: identity_mappings[0].roles[0]: unknown role \"missing\"",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w}\n{errs:#?}"
            );
        }
        // 200 characters are fine, and the allowed punctuation is accepted.
        let ok = format!(
            "[[accounts]]\nid = \"{}\"\n[[accounts]]\nid = \"a/~!$%^&*_=+.@,-z\"\n",
            "b".repeat(200)
        );
        assert!(load("upstream = \"http://a\"\n", &ok).is_ok());
    }

    /// Scale check (the timing lives in `benches/identity.rs`: 100,000 accounts).
    #[test]
    fn twenty_thousand_accounts_load_and_index() {
        let mut accounts = String::with_capacity(20_000 * 120);
        for i in 0..20_000 {
            accounts.push_str(&format!(
                "[[accounts]]\nid = \"user{i}\"\nemail = \"user{i}@example.com\"\n  [[accounts.mappings]]\n  provider = \"corp\"\n  subject = \"sub-{i}\"\n"
            ));
        }
        let main = "upstream = \"http://a\"\n[[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\n";
        let cfg = load(main, &accounts).unwrap();
        assert_eq!(cfg.accounts.len(), 20_000);
        let table = crate::identity::AccountTable::new(&cfg);
        assert!(table.account("user19999").is_some());
    }

    #[test]
    fn assertion_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let main = format!(
            "upstream = \"http://a\"\n[assertion]\nkey_file = {:?}\nlifetime = \"2h\"\n",
            garbage.display().to_string()
        );
        let errs = crate::config::load_from_str(&dir.path().join("tollgate.toml"), &main, "")
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>();
        for w in [
            ":2:2: assertion: missing `audience`",
            ":3:1: assertion.key_file: not a PEM private key",
            ":4:1: assertion.lifetime: must be between 1s and 1h",
        ] {
            assert!(errs.iter().any(|e| e.contains(w)), "missing {w}\n{errs:#?}");
        }
        let missing =
            "upstream = \"http://a\"\n[assertion]\nkey_file = \"nope.pem\"\naudience = \"x\"\n";
        let errs = load(missing, "").unwrap_err();
        assert!(
            errs[0].contains("assertion.key_file: file t/nope.pem does not exist"),
            "{errs:?}"
        );
    }

    #[test]
    fn provider_rules() {
        let main = r#"upstream = "http://a"
[[providers]]
name = "p"
issuer = "http://idp.example.com"
algorithms = ["HS256", "RS256", "XX1"]

[[providers]]
name = "p"
issuer = "http://127.0.0.1:5556"
audiences = ["api"]
"#;
        let errs = load(main, "").unwrap_err();
        for w in [
            "t/tollgate.toml:4:1: providers[0].issuer: \"http://idp.example.com\": plain http is allowed only",
            "providers[0].audiences: at least one",
            "providers[0].algorithms[0]: \"HS256\" is never accepted",
            "providers[0].algorithms[2]: unsupported algorithm \"XX1\"",
            "providers[1].name: duplicate provider name \"p\"",
        ] {
            assert!(errs.iter().any(|e| e.contains(w)), "missing {w}\n{errs:#?}");
        }
    }
}
