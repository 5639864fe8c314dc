//! Step 3 of the pipeline: the route table (design §6.1–6.2). First match in file order;
//! patterns are segment-wise (`*` = one segment, `**` = zero or more trailing segments).

use http::Method;

use super::path::{CanonicalPath, canonicalize};

/// How a route treats authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Forwarded without looking at any token.
    Public,
    /// Forwarded without identity when no token is sent; a token must be valid.
    Optional,
    /// A valid token and a resolved identity are required.
    Required,
}

/// The methods a route applies to, as a bit set over the standard methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSet(u16);

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

// === impl MethodSet ===

impl MethodSet {
    pub const ALL: MethodSet = MethodSet(u16::MAX);

    pub fn empty() -> Self {
        MethodSet(0)
    }

    /// Adds a method by its upper-case name; `false` for a name that is not a standard method.
    pub fn insert(&mut self, name: &str) -> bool {
        match METHODS.iter().position(|m| *m == name) {
            Some(i) => {
                self.0 |= 1 << i;
                true
            }
            None => false,
        }
    }

    /// Whether `method` is in the set. Extension methods only match [`MethodSet::ALL`].
    pub fn contains(&self, method: &Method) -> bool {
        if self.0 == u16::MAX {
            return true;
        }
        METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Any,
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segs: Vec<Seg>,
    /// Ends in `**`: any number (zero included) of further segments.
    rest: bool,
    case_insensitive: bool,
    strip_params: bool,
}

// === impl Pattern ===

impl Pattern {
    /// Compiles a pattern. It must already be a canonical path (no dot segments, no `//`,
    /// escapes in upper case) so that what users write is what requests are compared with.
    pub fn compile(
        pattern: &str,
        case_insensitive: bool,
        allow_semicolons: bool,
    ) -> Result<Self, String> {
        let canon = canonicalize(pattern, false).map_err(|e| format!("invalid pattern: {e}"))?;
        let trimmed = pattern.trim_end_matches('/');
        let canon_trimmed = canon.as_str().trim_end_matches('/');
        if trimmed != canon_trimmed {
            return Err(format!(
                "pattern is not in canonical form (write \"{}\")",
                canon.as_str()
            ));
        }
        let mut segs = Vec::new();
        let mut rest = false;
        let parts: Vec<&str> = canon.segments().collect();
        for (i, s) in parts.iter().enumerate() {
            match *s {
                "**" if i + 1 == parts.len() => rest = true,
                "**" => return Err("`**` is only allowed as the last segment".into()),
                "*" => segs.push(Seg::Any),
                s if s.contains('*') => {
                    return Err(format!("`*` must be a whole segment, found {s:?}"));
                }
                s => segs.push(Seg::Literal(if case_insensitive {
                    s.to_ascii_lowercase()
                } else {
                    s.to_string()
                })),
            }
        }
        Ok(Self {
            segs,
            rest,
            case_insensitive,
            strip_params: allow_semicolons,
        })
    }

    /// Whether the (already split) canonical path segments match.
    pub fn matches(&self, path: &[&str]) -> bool {
        if path.len() < self.segs.len() || (!self.rest && path.len() != self.segs.len()) {
            return false;
        }
        self.segs.iter().zip(path).all(|(p, s)| match p {
            Seg::Any => true,
            Seg::Literal(lit) => {
                // With `allow_semicolons`, `/admin;x` is matched as `/admin`.
                let s = if self.strip_params {
                    s.split(';').next().unwrap_or(s)
                } else {
                    s
                };
                if self.case_insensitive {
                    lit.eq_ignore_ascii_case(s)
                } else {
                    lit == s
                }
            }
        })
    }
}

/// One `[[routes]]` rule, compiled.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file (0-based), for logs and `explain`.
    pub index: usize,
    /// The pattern as written.
    pub path: String,
    pub pattern: Pattern,
    pub methods: MethodSet,
    pub auth: AuthMode,
    /// All of these are required.
    pub permissions: Vec<String>,
    /// When not empty: only tokens from these providers.
    pub providers: Vec<String>,
}

/// The ordered route table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

// === impl RouteTable ===

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The first route, in file order, whose methods and pattern match.
    pub fn find(&self, method: &Method, path: &CanonicalPath) -> Option<&Route> {
        let segs: Vec<&str> = path.segments().collect();
        self.routes
            .iter()
            .find(|r| r.methods.contains(method) && r.pattern.matches(&segs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> Pattern {
        Pattern::compile(p, false, false).unwrap()
    }

    fn segs(p: &str) -> Vec<String> {
        canonicalize(p, true)
            .unwrap()
            .segments()
            .map(str::to_string)
            .collect()
    }

    fn m(p: &Pattern, path: &str) -> bool {
        let s = segs(path);
        let v: Vec<&str> = s.iter().map(String::as_str).collect();
        p.matches(&v)
    }

    #[test]
    fn literal_patterns_match_exactly_ignoring_a_trailing_slash() {
        let p = pat("/healthz");
        assert!(m(&p, "/healthz"));
        assert!(m(&p, "/healthz/"));
        assert!(!m(&p, "/healthz/x"));
        assert!(!m(&p, "/health"));
        assert!(!m(&p, "/HEALTHZ"));
    }

    #[test]
    fn double_star_matches_zero_or_more_trailing_segments() {
        let p = pat("/admin/**");
        assert!(m(&p, "/admin"));
        assert!(m(&p, "/admin/"));
        assert!(m(&p, "/admin/x/y"));
        assert!(!m(&p, "/administrator"));
        assert!(!m(&p, "/"));
        assert!(m(&pat("/**"), "/"));
        assert!(m(&pat("/**"), "/anything/at/all"));
    }

    #[test]
    fn single_star_matches_exactly_one_segment() {
        let p = pat("/items/*/comments");
        assert!(m(&p, "/items/42/comments"));
        assert!(!m(&p, "/items/comments"));
        assert!(!m(&p, "/items/1/2/comments"));
    }

    #[test]
    fn case_insensitive_and_semicolon_options() {
        let p = Pattern::compile("/Admin/**", true, false).unwrap();
        assert!(m(&p, "/ADMIN/x"));
        let p = Pattern::compile("/admin/**", false, true).unwrap();
        assert!(m(&p, "/admin;jsessionid=1/x"));
        let p = pat("/admin/**");
        assert!(!m(&p, "/admin;jsessionid=1/x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::compile("admin", false, false).is_err());
        assert!(Pattern::compile("/a/../b", false, false).is_err());
        assert!(Pattern::compile("/a//b", false, false).is_err());
        assert!(Pattern::compile("/**/x", false, false).is_err());
        assert!(Pattern::compile("/a*", false, false).is_err());
        assert!(Pattern::compile("/a%2Fb", false, false).is_err());
        assert!(Pattern::compile("/a%7e", false, false).is_err());
    }

    #[test]
    fn first_matching_route_wins_and_methods_filter() {
        let mk = |index, path: &str, methods: &[&str], auth| {
            let mut set = if methods.is_empty() {
                MethodSet::ALL
            } else {
                MethodSet::empty()
            };
            for m in methods {
                assert!(set.insert(m));
            }
            Route {
                index,
                path: path.into(),
                pattern: pat(path),
                methods: set,
                auth,
                permissions: vec![],
                providers: vec![],
            }
        };
        let table = RouteTable::new(vec![
            mk(0, "/items/**", &["GET", "HEAD"], AuthMode::Public),
            mk(1, "/items/**", &[], AuthMode::Required),
        ]);
        let p = canonicalize("/items/1", false).unwrap();
        assert_eq!(table.find(&Method::GET, &p).map(|r| r.index), Some(0));
        assert_eq!(table.find(&Method::POST, &p).map(|r| r.index), Some(1));
        let other = canonicalize("/other", false).unwrap();
        assert!(table.find(&Method::GET, &other).is_none());
        let mut set = MethodSet::empty();
        assert!(!set.insert("GETT"));
    }
}
