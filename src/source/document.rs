//! A JSON document read as a stream (the files source's `format = "json"`):
//! the records of the array at the `records` path are handed over one at a
//! time, so an export of one 2 GB array is read in flat memory. Everything
//! around the array is skipped without being kept.
//!
//! A document is one value, so it is [`check`]ed whole first, in a pass
//! that keeps nothing: a document that does not parse (one cut short while
//! it was being written, say) gives no record at all, as when documents
//! were read whole. Each record is taken as its raw text and parsed by
//! [`super::json::parse`], so its numbers come out exactly as on every
//! other path (integers past 64 bits as their digits).

use std::fmt;
use std::io::{BufReader, Read};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::formats::Flow;
use crate::config::values::FieldPath;

/// The read buffer: serde_json reads a `Read` byte by byte.
const BUFFER: usize = 256 * 1024;

/// Top-level keys named in a "not in the file" message.
const KEYS_SHOWN: usize = 20;

/// Whether the reader holds one well-formed JSON value (and nothing after
/// it), without keeping any of it.
pub fn check(reader: impl Read) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(BUFFER, reader));
    de::Deserialize::deserialize(&mut de)
        .and_then(|IgnoredAny| de.end())
        .map_err(|e| e.to_string())
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every record was handed over.
    Done,
    /// `each` said stop.
    Stopped,
}

/// Hand every record of the array at `path` to `each`, after skipping the
/// first `skip` of them. A `null` there is no records. A document whose
/// root is an object and `path` the root is not an array of records: the
/// caller reads such a file as one record.
pub fn read(
    reader: impl Read,
    path: &FieldPath,
    skip: u64,
    each: impl FnMut(Value) -> Flow,
) -> Result<End, String> {
    let mut walk = Walk {
        path,
        skip,
        each,
        found: false,
        stopped: false,
        keys: None,
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(BUFFER, reader));
    let read = At {
        walk: &mut walk,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match read {
        _ if walk.stopped => Ok(End::Stopped),
        Err(e) => Err(e.to_string()),
        Ok(()) if walk.found => Ok(End::Done),
        Ok(()) => Err(walk.not_found()),
    }
}

/// Whether the document's first value is an object (after whitespace).
pub fn is_object(reader: impl Read) -> Result<bool, String> {
    let mut head = [0u8; 4096];
    let mut filled = 0;
    let mut reader = reader;
    loop {
        let n = reader
            .read(&mut head[filled..])
            .map_err(|e| e.to_string())?;
        filled += n;
        if let Some(b) = head[..filled].iter().find(|b| !b.is_ascii_whitespace()) {
            return Ok(*b == b'{');
        }
        if n == 0 || filled == head.len() {
            return Ok(false);
        }
    }
}

/// The state of one read.
struct Walk<'p, F> {
    path: &'p FieldPath,
    skip: u64,
    each: F,
    /// The records' place was reached.
    found: bool,
    /// `each` said stop (the read ends with an error to unwind serde).
    stopped: bool,
    /// The keys of the top-level object, for the "not in the file" message
    /// (`None`: the document is not an object).
    keys: Option<Vec<String>>,
}

impl<F> Walk<'_, F> {
    fn not_found(&self) -> String {
        let keys = match &self.keys {
            None => "the document is not an object".to_string(),
            Some(k) if k.is_empty() => "the document is an empty object".to_string(),
            Some(k) if k.len() > KEYS_SHOWN => {
                format!("top-level keys: {}, …", k[..KEYS_SHOWN].join(", "))
            }
            Some(k) => format!("top-level keys: {}", k.join(", ")),
        };
        format!(
            "the records path `{}` is not in the file ({keys})",
            self.path
        )
    }
}

/// The walk at one depth of the path: below the records' place, values are
/// skipped; at it, the array's elements are the records.
struct At<'w, 'p, F> {
    walk: &'w mut Walk<'p, F>,
    depth: usize,
}

impl<F> At<'_, '_, F> {
    /// The path segment this depth looks for (`None`: the records are here).
    fn segment(&self) -> Option<&str> {
        self.walk
            .path
            .segments()
            .get(self.depth)
            .map(String::as_str)
    }

    /// A value of another kind than the path needs: at the records' place
    /// an error, above it the path is simply not there.
    fn other<E: de::Error>(self, kind: &str) -> Result<(), E> {
        match self.segment() {
            Some(_) => Ok(()),
            None => Err(E::custom(format!(
                "expected an array of records at `{}`, found {kind}; set `records` to the path of the array",
                self.walk.path
            ))),
        }
    }
}

impl<'de, F: FnMut(Value) -> Flow> DeserializeSeed<'de> for At<'_, '_, F> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Value) -> Flow> Visitor<'de> for At<'_, '_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(segment) = self.segment() else {
            return records(self.walk, seq);
        };
        // an index into an array, like `FieldPath::get`
        if let Ok(index) = segment.parse::<usize>() {
            for _ in 0..index {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
            }
            let depth = self.depth + 1;
            seq.next_element_seed(At {
                walk: self.walk,
                depth,
            })?;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(segment) = self.segment().map(str::to_string) else {
            return self.other("an object");
        };
        let depth = self.depth + 1;
        if self.depth == 0 {
            self.walk.keys = Some(Vec::new());
        }
        while let Some(key) = map.next_key::<String>()? {
            if key == segment {
                map.next_value_seed(At {
                    walk: &mut *self.walk,
                    depth,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            if let (0, Some(keys)) = (self.depth, &mut self.walk.keys)
                && keys.len() <= KEYS_SHOWN
            {
                keys.push(key);
            }
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.segment().is_none() {
            self.walk.found = true;
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.other("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.other("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.other("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.other("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.other("a string")
    }
}

/// The records: the array's elements, after the first `skip`.
fn records<'de, A: SeqAccess<'de>, F: FnMut(Value) -> Flow>(
    walk: &mut Walk<'_, F>,
    mut seq: A,
) -> Result<(), A::Error> {
    walk.found = true;
    for _ in 0..walk.skip {
        if seq.next_element::<IgnoredAny>()?.is_none() {
            return Ok(());
        }
    }
    while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
        let record = super::json::parse(raw.get()).map_err(de::Error::custom)?;
        if (walk.each)(record) == Flow::Stop {
            walk.stopped = true;
            return Err(de::Error::custom("stopped"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(text: &str, path: &str, skip: u64) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let path = FieldPath::parse(path)?;
        read(text.as_bytes(), &path, skip, |v| {
            out.push(v);
            Flow::Go
        })?;
        Ok(out)
    }

    #[test]
    fn the_records_anywhere_on_the_path_are_read_one_by_one() {
        let doc = r#"{"meta": {"n": [1, {"x": 2}]}, "data": {"items": [{"id": 1}, {"id": 2}, {"id": 3}]}, "after": "x"}"#;
        assert_eq!(
            all(doc, "data.items", 0),
            Ok(vec![json!({"id": 1}), json!({"id": 2}), json!({"id": 3})])
        );
        assert_eq!(all(doc, "data.items", 2), Ok(vec![json!({"id": 3})]));
        assert_eq!(all(doc, "data.items", 9), Ok(vec![]));
        assert_eq!(
            all("[[0], [{\"a\": 1}]]", "1", 0),
            Ok(vec![json!({"a": 1})])
        );
        assert_eq!(
            all("  [1, \"two\", null]", "", 0),
            Ok(vec![json!(1), json!("two"), json!(null)])
        );
        assert_eq!(all(r#"{"data": null}"#, "data", 0), Ok(vec![]));
    }

    #[test]
    fn records_parse_as_on_every_other_path() {
        let big = "123456789012345678901234567890";
        assert_eq!(
            all(&format!("[{{\"n\": {big}}}]"), "", 0),
            Ok(vec![json!({"n": big})])
        );
    }

    #[test]
    fn a_missing_path_or_a_wrong_kind_is_named() {
        let e = all(r#"{"a": 1, "b": []}"#, "data", 0).unwrap_err();
        assert!(
            e.contains("`data` is not in the file (top-level keys: a, b)"),
            "{e}"
        );
        let e = all(r#"{"data": {"x": 1}}"#, "data", 0).unwrap_err();
        assert!(
            e.contains("expected an array of records at `data`, found an object"),
            "{e}"
        );
        let e = all(r#"{"data": "x"}"#, "data", 0).unwrap_err();
        assert!(e.contains("found a string"), "{e}");
        let e = all("[1, 2]", "data", 0).unwrap_err();
        assert!(e.contains("not an object"), "{e}");
        let e = all("{}", "data", 0).unwrap_err();
        assert!(e.contains("(the document is an empty object)"), "{e}");
    }

    #[test]
    fn stop_ends_the_read_at_once() {
        let mut seen = 0;
        let path = FieldPath::parse("").unwrap_or_default();
        let end = read("[1, 2, 3, 4]".as_bytes(), &path, 0, |_| {
            seen += 1;
            if seen == 2 { Flow::Stop } else { Flow::Go }
        });
        assert_eq!((end, seen), (Ok(End::Stopped), 2));
    }

    #[test]
    fn check_reads_the_whole_document() {
        assert_eq!(check("{\"a\": [1, 2]}\n".as_bytes()), Ok(()));
        assert!(check("[1, 2".as_bytes()).is_err());
        assert!(check("[1] [2]".as_bytes()).is_err());
        assert!(check("".as_bytes()).is_err());
        assert_eq!(is_object("\n  {\"a\": 1}".as_bytes()), Ok(true));
        assert_eq!(is_object(" [".as_bytes()), Ok(false));
    }
}
