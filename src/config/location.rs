//! Where in a TOML file a key path lives: turns `routes[2].methods` into `14:1`, and a byte
//! offset reported by the TOML parser back into a key path. Used only at load time.

use std::fmt;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `providers[0].claims.email`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

// === impl KeyPath ===

impl KeyPath {
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a table key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(key.to_string()));
        Self(v)
    }

    /// This path extended by an array index.
    pub(crate) fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if n > 0 {
                        f.write_str(".")?;
                    }
                    if !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed document kept beside its source text, to locate keys in it.
pub(crate) struct Located<'a> {
    src: &'a str,
    /// Parsed on first use: only error reporting needs spans, so a valid file is parsed
    /// once (by serde), not twice.
    doc: std::cell::OnceCell<Option<Spanned<DeTable<'a>>>>,
}

// === impl Located ===

impl<'a> Located<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Self {
            src,
            doc: std::cell::OnceCell::new(),
        }
    }

    fn doc(&self) -> Option<&Spanned<DeTable<'a>>> {
        self.doc
            .get_or_init(|| DeTable::parse(self.src).ok())
            .as_ref()
    }

    pub(crate) fn source(&self) -> &'a str {
        self.src
    }

    /// Line and column (1-based) of the deepest part of `path` present in the document:
    /// the key itself when the path ends in a key, the element when it ends in an index.
    /// Falls back to the nearest existing parent, then to 1:1.
    pub(crate) fn line_col(&self, path: &KeyPath) -> (usize, usize) {
        let offset = self.offset_of(path).unwrap_or(0);
        line_col(self.src, offset)
    }

    fn offset_of(&self, path: &KeyPath) -> Option<usize> {
        let doc = self.doc()?;
        let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        let mut best = None;
        for seg in &path.0 {
            match seg {
                Seg::Key(k) => {
                    let t = match (table, value) {
                        (Some(t), _) => t,
                        (None, Some(v)) => match v.get_ref() {
                            DeValue::Table(t) => t,
                            _ => break,
                        },
                        (None, None) => break,
                    };
                    let Some((key, v)) = t.get_key_value(k.as_str()) else {
                        break;
                    };
                    best = Some(key.span().start);
                    value = Some(v);
                    table = None;
                }
                Seg::Index(i) => {
                    let Some(DeValue::Array(items)) = value.map(|v| v.get_ref()) else {
                        break;
                    };
                    let Some(item) = items.get(*i) else { break };
                    best = Some(item.span().start);
                    value = Some(item);
                    table = None;
                }
            }
        }
        best
    }

    /// The key path of the deepest entry whose key or value contains `offset`. Containers
    /// are searched whole: the span of an array-of-tables element covers only its header.
    pub(crate) fn path_at(&self, offset: usize) -> KeyPath {
        let Some(doc) = self.doc() else {
            return KeyPath::root();
        };
        let mut best: Option<(usize, KeyPath)> = None;
        walk_table(doc.get_ref(), &KeyPath::root(), offset, &mut best);
        best.map(|(_, p)| p).unwrap_or_default()
    }
}

fn consider(path: &KeyPath, hit: bool, best: &mut Option<(usize, KeyPath)>) {
    if hit && best.as_ref().is_none_or(|(d, _)| path.0.len() > *d) {
        *best = Some((path.0.len(), path.clone()));
    }
}

fn walk_table(t: &DeTable<'_>, at: &KeyPath, offset: usize, best: &mut Option<(usize, KeyPath)>) {
    for (k, v) in t.iter() {
        let p = at.key(k.get_ref());
        consider(&p, k.span().contains(&offset), best);
        walk_value(v, &p, offset, best);
    }
}

fn walk_value(
    v: &Spanned<DeValue<'_>>,
    at: &KeyPath,
    offset: usize,
    best: &mut Option<(usize, KeyPath)>,
) {
    consider(at, v.span().contains(&offset), best);
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, at, offset, best),
        DeValue::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                walk_value(it, &at.index(i), offset, best);
            }
        }
        _ => {}
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "listen = \"x\"\n\n[[routes]]\npath = \"/a\"\n\n[[routes]]\npath = \"/b\"\nmethods = [\"GET\", \"GETT\"]\n";

    #[test]
    fn key_paths_resolve_to_line_and_column() {
        let loc = Located::new(DOC);
        assert_eq!(loc.line_col(&KeyPath::root().key("listen")), (1, 1));
        let methods = KeyPath::root().key("routes").index(1).key("methods");
        assert_eq!(loc.line_col(&methods), (8, 1));
        assert_eq!(loc.line_col(&methods.index(1)), (8, 19));
        assert_eq!(methods.index(1).to_string(), "routes[1].methods[1]");
        // A missing key falls back to its nearest parent.
        let missing = KeyPath::root().key("routes").index(0).key("auth");
        assert_eq!(loc.line_col(&missing).0, 3);
    }

    #[test]
    fn offsets_resolve_to_key_paths() {
        let loc = Located::new(DOC);
        let off = DOC.find("GETT").unwrap();
        assert_eq!(loc.path_at(off).to_string(), "routes[1].methods[1]");
    }

    #[test]
    fn odd_keys_are_quoted() {
        let p = KeyPath::root().key("scopes").key("read:items");
        assert_eq!(p.to_string(), "scopes.\"read:items\"");
    }
}
