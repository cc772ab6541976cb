//! Parsing a page body into [`serde_json::Value`]s, with each object's map
//! sized up front.
//!
//! `serde_json::from_str::<Value>` starts every object's map empty, so a
//! record of five fields grows its `IndexMap` twice (entries and hash index,
//! rehashing each time). The records of a page nearly always have the same
//! number of fields, so this visitor sizes each object like the last one at
//! the same depth. It builds exactly what serde_json's own visitor builds:
//! same numbers, same key order, a repeated key keeping its first position
//! and its last value; the deserializer still enforces the nesting limit
//! and rejects trailing characters.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Depths whose object sizes are remembered; deeper objects start empty.
const DEPTHS: usize = 8;

/// Parse one JSON text.
///
/// An integer literal past 64 bits (`123456789012345678901234567890`,
/// `-9223372036854775809`) would come out as a rounded float; it comes out
/// as a string of its exact digits instead, so the sink stores it exactly
/// (a text column) or rejects it with the reason (a numeric one). Finding
/// them costs nothing on ordinary pages: only a page with a whole float of
/// 2^63 or more is parsed a second time, slowly, to read the literals.
pub fn parse(text: &str) -> serde_json::Result<Value> {
    let hints: [Cell<usize>; DEPTHS] = Default::default();
    let huge = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Seed {
        hints: &hints,
        huge: &huge,
        depth: 0,
    }
    .deserialize(&mut de)?;
    de.end()?;
    if huge.get() {
        return exact(text);
    }
    Ok(v)
}

/// The slow parse: every value through its raw text, integer literals past
/// 64 bits as strings.
fn exact(text: &str) -> serde_json::Result<Value> {
    use serde_json::value::RawValue;
    let raw: &RawValue = serde_json::from_str(text)?;
    let t = raw.get().trim_start();
    match t.as_bytes().first() {
        Some(b'{') => {
            let m: indexmap::IndexMap<String, &RawValue> = serde_json::from_str(t)?;
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(k, exact(v.get())?);
            }
            Ok(Value::Object(out))
        }
        Some(b'[') => {
            let a: Vec<&RawValue> = serde_json::from_str(t)?;
            a.into_iter()
                .map(|v| exact(v.get()))
                .collect::<Result<_, _>>()
                .map(Value::Array)
        }
        _ => {
            let v: Value = serde_json::from_str(t)?;
            let integer = t.bytes().all(|b| b.is_ascii_digit() || b == b'-');
            Ok(match v {
                Value::Number(n) if integer && n.as_i64().is_none() && n.as_u64().is_none() => {
                    Value::String(t.trim().to_string())
                }
                other => other,
            })
        }
    }
}

#[derive(Clone, Copy)]
struct Seed<'h> {
    hints: &'h [Cell<usize>; DEPTHS],
    /// Set when a float could be an integer literal past 64 bits.
    huge: &'h Cell<bool>,
    depth: usize,
}

impl Seed<'_> {
    fn deeper(self) -> Self {
        Self {
            hints: self.hints,
            huge: self.huge,
            depth: self.depth + 1,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        if v.fract() == 0.0 && v.abs() >= 9.2e18 {
            self.huge.set(true);
        }
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
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

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(self.deeper())? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let hint = self.hints.get(self.depth);
        let mut out = Map::with_capacity(hint.map_or(0, Cell::get));
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(self.deeper())?;
            out.insert(k, v);
        }
        if let Some(h) = hint {
            h.set(out.len());
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_serde_json_builds() {
        let texts = [
            r#"[{"a":1,"b":"x","c":null},{"a":2,"b":"y"},{"z":[1,2.5,-3,1e300],"a":{"n":{"m":[]}}}]"#,
            r#"{"data":[{"id":18446744073709551615,"f":0.1,"g":-0.0,"e":"\u00e9\n\"q\"","t":true,"u":false}],"has_more":true}"#,
            r#"{"k":1,"k":2,"j":3}"#,
            r#"  [ ]  "#,
            r#""just a string""#,
            "1.7976931348623157e308",
            r#"[{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":1}}}}}}}}}}]"#,
            r#"[{"id":1,"s":"tab\there 🎉 \\ \"","n":-9223372036854775808,"f":1e-300},{"id":2,"s":"","n":0,"f":123456.789,"x":{"d":[null,true]}}]"#,
        ];
        for t in texts {
            let want: Value = serde_json::from_str(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            let got = parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(got, want, "{t}");
            // same key order, too
            assert_eq!(got.to_string(), want.to_string(), "{t}");
        }
    }

    #[test]
    fn integers_past_64_bits_keep_their_digits() {
        let got = parse(
            r#"{"data":[{"a":123456789012345678901234567890,"b":-9223372036854775809,"c":1e30,"d":18446744073709551615,"e":[1,-2.5]}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &got["data"][0];
        assert_eq!(r["a"], "123456789012345678901234567890");
        assert_eq!(r["b"], "-9223372036854775809");
        assert_eq!(r["c"], serde_json::json!(1e30));
        assert_eq!(r["d"], serde_json::json!(18446744073709551615u64));
        assert_eq!(r["e"], serde_json::json!([1, -2.5]));
        // key order is kept on the slow path too
        assert_eq!(
            r.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
            Some(
                vec!["a", "b", "c", "d", "e"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for t in [
            "",
            "[1,]",
            "{\"a\":1} x",
            "[1 2]",
            "{\"a\"}",
            "nul",
            &"[".repeat(200),
        ] {
            assert!(serde_json::from_str::<Value>(t).is_err(), "{t}");
            let err = parse(t).err();
            assert!(err.is_some(), "{t} must not parse");
        }
    }
}
