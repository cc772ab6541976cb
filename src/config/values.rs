//! Small value types of the pipeline file that parse from strings: dotted
//! field paths, response locations, rate limits, scalar parameters. Each
//! rejects a bad string at load time with a message that says what is allowed.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_json::Value;

/// A dotted path into a JSON value: `data.items`, `meta.total`; numeric
/// segments index arrays. The empty path is the value itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct FieldPath(Vec<String>);

impl TryFrom<String> for FieldPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        FieldPath::parse(&s)
    }
}

impl FieldPath {
    /// Parse `a.b.c` ("" is the root).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self(Vec::new()));
        }
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!(
                "`{s}` is not a dotted path: write names separated by single dots, like `data.items`"
            ));
        }
        Ok(Self(parts))
    }

    /// The names along the path (none for the root).
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at this path.
    pub fn get<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for seg in &self.0 {
            v = match v {
                Value::Object(m) => m.get(seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Remove and return the value at this path (the root cannot be taken).
    pub fn take(&self, v: &mut Value) -> Option<Value> {
        let (last, parents) = self.0.split_last()?;
        let mut cur = v;
        for seg in parents {
            cur = match cur {
                Value::Object(m) => m.get_mut(seg)?,
                Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match cur {
            Value::Object(m) => m.shift_remove(last),
            Value::Array(a) => a.get_mut(last.parse::<usize>().ok()?).map(Value::take),
            _ => None,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(the body)")
        } else {
            f.write_str(&self.0.join("."))
        }
    }
}

/// Where a value is in a response.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Location {
    /// A dotted path in the JSON body.
    Body(FieldPath),
    /// A response header (`header:X-Total-Count`).
    Header(String),
    /// A field of the last record of the page (`last_record:id`).
    LastRecord(FieldPath),
    /// The first match of a CSS selector in a web page, its text or an
    /// attribute (`html:a[rel=next]@href`; `format = "html"`).
    Html(String),
}

impl TryFrom<String> for Location {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Some(h) = s.strip_prefix("header:") {
            let h = h.trim();
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(format!(
                    "`{s}`: write a header name after `header:`, like `header:X-Total-Count`"
                ));
            }
            return Ok(Location::Header(h.to_ascii_lowercase()));
        }
        // (the selector is checked by the loader, through `Problems`)
        if let Some(spec) = s.strip_prefix("html:") {
            return Ok(Location::Html(spec.trim().to_string()));
        }
        if let Some(p) = s.strip_prefix("last_record:") {
            let path = FieldPath::parse(p)?;
            if path.is_root() {
                return Err(format!(
                    "`{s}`: write a field after `last_record:`, like `last_record:id`"
                ));
            }
            return Ok(Location::LastRecord(path));
        }
        let path = FieldPath::parse(&s)?;
        if path.is_root() {
            return Err(
                "a location is a dotted body path (`meta.total`), `header:Name`, `last_record:field` or `html:selector@attr`".into(),
            );
        }
        Ok(Location::Body(path))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Body(p) => write!(f, "{p}"),
            Location::Header(h) => write!(f, "header:{h}"),
            Location::LastRecord(p) => write!(f, "last_record:{p}"),
            Location::Html(spec) => write!(f, "html:{spec}"),
        }
    }
}

/// `N/s` or `N/min` (also `/sec`, `/second`, `/m`, `/minute`, `/h`, `/hour`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct RateLimit {
    /// Requests allowed per `per`.
    pub count: u32,
    /// The window.
    pub per: Duration,
}

impl TryFrom<String> for RateLimit {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a rate: write requests per second or minute, like \"20/s\" or \"600/min\""
            )
        };
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!(
                "`{s}`: a rate limit must allow at least one request"
            ));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Self { count, per })
    }
}

/// A string, number or boolean, as given in the file; sent as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `concurrency = "auto"` reads as until the loader resolves it.
pub const AUTO_CONCURRENCY: usize = usize::MAX;

/// `concurrency`: a number of requests, or `"auto"`.
pub fn concurrency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number of requests, or \"auto\"")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
            match v {
                "auto" => Ok(AUTO_CONCURRENCY),
                other => Err(E::invalid_type(serde::de::Unexpected::Str(other), &self)),
            }
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let v = json!({"data": {"items": [1, {"id": 7}]}});
        assert_eq!(
            FieldPath::parse("data.items.1.id").unwrap().get(&v),
            Some(&json!(7))
        );
        assert_eq!(FieldPath::parse("").unwrap().get(&v), Some(&v));
        assert!(FieldPath::parse("a..b").is_err());
        let mut w = v.clone();
        assert_eq!(
            FieldPath::parse("data.items").unwrap().take(&mut w),
            Some(json!([1, {"id": 7}]))
        );
        assert_eq!(w, json!({"data": {}}));
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::try_from("header:X-Total-Count".to_string()),
            Ok(Location::Header("x-total-count".into()))
        );
        assert!(matches!(
            Location::try_from("last_record:id".to_string()),
            Ok(Location::LastRecord(_))
        ));
        assert!(Location::try_from("header:".to_string()).is_err());
        assert!(Location::try_from(String::new()).is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(
            RateLimit::try_from("600/min".to_string()),
            Ok(RateLimit {
                count: 600,
                per: Duration::from_secs(60)
            })
        );
        assert!(RateLimit::try_from("fast".to_string()).is_err());
        assert!(RateLimit::try_from("0/s".to_string()).is_err());
    }
}
