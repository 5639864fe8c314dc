//! Strict JSON for JOSE headers and JWT claims: duplicate member names are an error at every
//! level (RFC 7515 §4 and RFC 7519 §4 allow a parser to reject them; accepting them lets two
//! parsers disagree on what a token says).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON value parsed without accepting duplicate member names.
struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses a JSON object, refusing duplicate member names anywhere and nesting deeper than
/// serde_json's default recursion limit.
pub fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(m))) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_every_level() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_some());
        assert!(parse_object(br#"{"sub":"a","sub":"b"}"#).is_none());
        assert!(parse_object(br#"{"x":{"y":1,"y":2}}"#).is_none());
        assert!(parse_object(br#"{"x":[{"y":1,"y":2}]}"#).is_none());
    }

    #[test]
    fn only_objects_are_accepted() {
        assert!(parse_object(b"[1]").is_none());
        assert!(parse_object(b"\"s\"").is_none());
        assert!(parse_object(b"{").is_none());
        assert!(parse_object(br#"{"a":1} x"#).is_none());
        let deep = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
        assert!(parse_object(deep.as_bytes()).is_none());
    }
}
