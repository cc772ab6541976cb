//! Hostile data, seeded: what APIs send that nobody planned for. Field names
//! with quotes, spaces, SQL keywords and injections; huge strings; deep
//! nesting; integers beyond i64; keys that differ only in case; empty keys;
//! records that are not objects. Every object record carries a unique `_hid`.

use serde_json::{Map, Value, json};

/// Records per hostile page.
pub const PER_PAGE: u64 = 50;

const KEYS: &[&str] = &[
    "plain",
    "with space",
    "quote\"d",
    "single'quote",
    "select",
    "from",
    "\"; DROP TABLE x; --",
    "semi;colon",
    "ünïcödé",
    "emoji🦀",
    "back\\slash",
    "dot.ted",
    "UPPER",
    "tab\tkey",
    "_ingest_like",
    "rowid",
    "oid",
    "123",
];

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn nested(depth: u64) -> Value {
    let mut v = json!("bottom");
    for i in 0..depth {
        v = if i % 2 == 0 {
            json!({ "n": v })
        } else {
            json!([v])
        };
    }
    v
}

/// One hostile value for a key.
fn value(r: u64, i: u64) -> Value {
    match r % 12 {
        0 => json!(i64::MAX as u64 + 1 + (r % 1000)),
        1 => json!(-(r as i64 % 1_000_000)),
        2 => json!("x".repeat(((r >> 8) % 200_000) as usize)),
        3 => nested(5 + (r >> 8) % 90),
        4 => json!(null),
        5 => json!(r.is_multiple_of(2)),
        6 => json!(["a", 1, null, { "k": "v" }]),
        7 => json!("'); DROP TABLE posts; --"),
        8 => json!((r % 10_000) as f64 / 7.0),
        9 => json!("\u{0}nul inside\u{0}"),
        10 => json!({ "nested": { "deeper": i } }),
        _ => json!(format!("line\nbreak {i} \"quoted\" \\ 🦀")),
    }
}

/// The hostile record with this 0-based index.
pub fn record(seed: u64, i: u64) -> Value {
    let r = mix(seed ^ mix(i));
    match r % 20 {
        // not objects
        0 => json!(i),
        1 => json!(format!("string record {i}")),
        2 => json!([i, "array record"]),
        3 => Value::Null,
        _ => {
            let mut m = Map::new();
            m.insert("_hid".into(), json!(i));
            let n = 1 + (r >> 5) % 6;
            for k in 0..n {
                let rk = mix(r ^ k);
                let key = KEYS[(rk % KEYS.len() as u64) as usize];
                m.insert(key.to_string(), value(rk >> 7, i));
            }
            match (r >> 40) % 25 {
                0 => {
                    m.insert("Plain".into(), json!("case twin"));
                    m.insert("plain".into(), json!("case twin"));
                }
                1 => {
                    m.insert(String::new(), json!("empty key"));
                }
                _ => {}
            }
            Value::Object(m)
        }
    }
}

/// Page `page` (1-based) of hostile records, `total` in all.
pub fn page(seed: u64, page: u64, total: u64) -> Vec<Value> {
    let start = (page.max(1) - 1) * PER_PAGE;
    (start..(start + PER_PAGE).min(total))
        .map(|i| record(seed, i))
        .collect()
}
