//! Records to rows of PostgreSQL's COPY text format, in the table's column
//! order. PostgreSQL types are strict, so every value is checked here, the
//! way the server would check it, and a record that could not be stored is
//! rejected with its reason instead of failing the whole batch's COPY:
//! text and JSON without NUL characters, integers that fit in 64 bits,
//! timestamps that parse. In merge mode, a key that repeats within a batch
//! keeps its last record only (`ON CONFLICT DO UPDATE` may touch a row once
//! per statement; the last record is what a row-by-row upsert would leave).

use std::collections::HashMap;

use serde_json::Value;

use crate::config::ColumnType;
use crate::sink::columns::{Column, Columns, usable_name};
use crate::sink::{Origin, Reject};
use crate::transform::cast;

/// The rows of one batch.
pub(super) struct Rows {
    /// COPY text: tab-separated cells, one line per row.
    pub buf: Vec<u8>,
    /// Rows in `buf`.
    pub count: u64,
}

/// Encode a batch's records; what cannot be stored goes to `rejects`.
/// `first`: the index in its batch of `records[0]` (a chunk of a batch).
pub(super) fn encode(
    cols: &Columns,
    merge: bool,
    records: &[Value],
    first: usize,
    origins: &[Origin],
    rejects: &mut Vec<Reject>,
) -> Rows {
    let ncols = cols.list.len();
    let mut buf: Vec<u8> = Vec::with_capacity(records.len() * 64 * ncols.max(1));
    let mut cells: Vec<Option<&Value>> = vec![None; ncols];
    // merge: each row's byte range, and the row that holds each key last
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    let (mut dropped, mut count) = (0u64, 0u64);
    for (n, r) in records.iter().enumerate() {
        let start = buf.len();
        let done = place(cols, merge, r, &mut cells).and_then(|()| row(cols, &cells, &mut buf));
        match done {
            Ok(key) => {
                count += 1;
                if merge {
                    ranges.push((start, buf.len()));
                    if let Some(prev) = last.insert(key, ranges.len() - 1) {
                        ranges[prev] = (0, 0);
                        dropped += 1;
                    }
                }
            }
            Err(reason) => {
                buf.truncate(start);
                rejects.push(Reject::record(origins, first + n, reason, r));
            }
        }
    }
    if dropped > 0 {
        let mut kept = Vec::with_capacity(buf.len());
        for &(a, b) in ranges.iter().filter(|(a, b)| a != b) {
            kept.extend_from_slice(&buf[a..b]);
        }
        buf = kept;
        count -= dropped;
    }
    Rows { buf, count }
}

/// Put a record's values in their columns' cells, or say why it cannot be.
fn place<'r>(
    cols: &Columns,
    merge: bool,
    r: &'r Value,
    cells: &mut [Option<&'r Value>],
) -> Result<(), String> {
    let m = match r {
        Value::Object(_) if cells.is_empty() => {
            return Err("a record with no fields has nothing to store".into());
        }
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "a record must be a JSON object, found {}",
                crate::source::type_name(other)
            ));
        }
    };
    cells.fill(None);
    for (k, v) in m {
        if !usable_name(k) {
            return Err(format!(
                "field name {k:?} cannot be a column name (empty or holds a NUL)"
            ));
        }
        let Some(i) = cols.position(k) else {
            return Err(format!(
                "field {k:?} would make the table wider than {} columns",
                crate::sink::sqlite::MAX_COLUMNS
            ));
        };
        if cells[i].is_some() {
            return Err(format!(
                "fields {:?} and {k:?} differ only in case, and ingest keeps column names apart without case",
                cols.list[i].name
            ));
        }
        cells[i] = Some(v);
    }
    if merge
        && cols
            .pk_cols
            .iter()
            .any(|&i| cells[i].is_none_or(Value::is_null))
    {
        return Err("a primary key field is missing or null".into());
    }
    Ok(())
}

/// Write one row; returns its primary key's cells (for merge).
fn row(cols: &Columns, cells: &[Option<&Value>], buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut key = Vec::new();
    for (i, (cell, col)) in cells.iter().zip(&cols.list).enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        let at = buf.len();
        match cell {
            None | Some(Value::Null) => buf.extend_from_slice(b"\\N"),
            Some(v) => value(v, col, buf)
                .map_err(|why| format!("column `{}` ({}): {why}", col.name, col.ty.name()))?,
        }
        if cols.pk_cols.contains(&i) {
            key.extend_from_slice(&buf[at..]);
            key.push(b'\t');
        }
    }
    buf.push(b'\n');
    Ok(key)
}

/// One value as its column's type wants it.
fn value(v: &Value, col: &Column, buf: &mut Vec<u8>) -> Result<(), String> {
    if col.ty == ColumnType::Json {
        return json(v, buf);
    }
    if col.strict {
        let c = cast::convert(v, col.ty)
            .ok_or_else(|| format!("{} does not convert", cast::short(v)))?;
        return declared(&c, col.ty, buf);
    }
    inferred(v, col.ty, buf)
}

/// A value converted to a declared column's type.
fn declared(c: &Value, ty: ColumnType, buf: &mut Vec<u8>) -> Result<(), String> {
    match (ty, c) {
        (ColumnType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) => number(buf, i),
            None => Err(format!("{n} is out of range for a 64-bit integer")),
        },
        (ColumnType::Boolean, Value::Bool(b)) => put(buf, &[if *b { b't' } else { b'f' }]),
        (ColumnType::Timestamp, Value::String(s)) => timestamp(s, buf),
        (_, Value::String(s)) => text(s, buf),
        (_, Value::Null) => put(buf, b"\\N"),
        (_, other) => text(&other.to_string(), buf),
    }
}

/// A value for a column whose type was inferred: stored as sent, or
/// rejected when the column's type cannot hold it exactly.
fn inferred(v: &Value, ty: ColumnType, buf: &mut Vec<u8>) -> Result<(), String> {
    use ColumnType::{Boolean, Integer, Real};
    match (ty, v) {
        (Integer | Real, Value::Bool(b)) if ty == Integer => {
            put(buf, &[if *b { b'1' } else { b'0' }])
        }
        (Integer, Value::Number(n)) if n.is_i64() => number(buf, n),
        (Integer, Value::Number(n)) if n.is_u64() => Err(format!(
            "{n} is beyond the 64-bit range of an integer column"
        )),
        (Integer, Value::Number(n)) => Err(format!(
            "{n} is not an integer; declare the column as real in [sink.columns] to keep such values"
        )),
        (Real, Value::Number(n)) => match n.as_i64() {
            Some(i) if i.unsigned_abs() > (1 << 53) => Err(format!(
                "{i} cannot be held exactly by a double precision column"
            )),
            _ if n.is_u64() => Err(format!(
                "{n} cannot be held exactly by a double precision column"
            )),
            _ => number(buf, n),
        },
        (ColumnType::Timestamp, Value::String(s)) => timestamp(s, buf),
        (ColumnType::Timestamp, other) => Err(format!("{} is not a timestamp", cast::short(other))),
        (Boolean, Value::Bool(b)) => put(buf, &[if *b { b't' } else { b'f' }]),
        (Integer | Real | Boolean, other) => Err(format!(
            "{} is not {}; declare the column as text in [sink.columns] to keep such values as sent",
            cast::short(other),
            match ty {
                Integer => "an integer",
                Real => "a number",
                _ => "a boolean",
            }
        )),
        (_, Value::String(s)) => text(s, buf),
        (_, Value::Array(_) | Value::Object(_)) => json(v, buf),
        (_, other) => text(&other.to_string(), buf),
    }
}

/// A number as text, without an allocation.
#[allow(clippy::unnecessary_wraps)]
fn number(buf: &mut Vec<u8>, n: impl std::fmt::Display) -> Result<(), String> {
    use std::io::Write;
    let _ = write!(buf, "{n}");
    Ok(())
}

/// Append raw cell bytes.
#[allow(clippy::unnecessary_wraps)]
fn put(buf: &mut Vec<u8>, bytes: &[u8]) -> Result<(), String> {
    buf.extend_from_slice(bytes);
    Ok(())
}

/// JSON text for a jsonb (or text) column; jsonb cannot hold `\u0000`.
fn json(v: &Value, buf: &mut Vec<u8>) -> Result<(), String> {
    let t = v.to_string();
    if t.contains("\\u0000") {
        return Err(
            "holds a NUL character (\\u0000), which PostgreSQL's jsonb cannot store".into(),
        );
    }
    text(&t, buf)
}

/// A timestamp PostgreSQL reads the same way: RFC 3339 (an offset or Z),
/// or a date and time without one (then UTC, the session's time zone).
fn timestamp(s: &str, buf: &mut Vec<u8>) -> Result<(), String> {
    let t = s.trim();
    let ok = t.parse::<jiff::Timestamp>().is_ok()
        || t.parse::<jiff::civil::DateTime>().is_ok()
        || t.parse::<jiff::civil::Date>().is_ok();
    if !ok {
        return Err(format!(
            "{s:?} is not a timestamp (RFC 3339, like 2024-05-01T12:00:00Z, expected)"
        ));
    }
    text(t, buf)
}

/// Text with COPY's escapes (backslash, tab, newline, carriage return);
/// PostgreSQL text cannot hold NUL.
fn text(s: &str, buf: &mut Vec<u8>) -> Result<(), String> {
    let b = s.as_bytes();
    if !b
        .iter()
        .any(|&c| matches!(c, b'\\' | b'\t' | b'\n' | b'\r' | 0))
    {
        buf.extend_from_slice(b);
        return Ok(());
    }
    for &c in b {
        match c {
            0 => return Err("holds a NUL character, which PostgreSQL text cannot store".into()),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            c => buf.push(c),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use serde_json::json;

    fn encode_one(records: &[Value], merge: bool) -> (String, Vec<String>) {
        let mut cols = Columns::new(&["id".to_string()], &IndexMap::new(), 100);
        cols.evolve(records);
        let mut rejects = Vec::new();
        let rows = encode(&cols, merge, records, 0, &[], &mut rejects);
        let text = String::from_utf8(rows.buf).unwrap_or_default();
        (text, rejects.into_iter().map(|r| r.reason).collect())
    }

    #[test]
    fn cells_are_escaped_and_nulls_marked() {
        let (text, why) = encode_one(
            &[
                json!({"id": 1, "s": "a\tb\\c\nd", "j": {"x": [1]}, "f": 1.5, "b": true}),
                json!({"id": 2}),
            ],
            false,
        );
        assert!(why.is_empty(), "{why:?}");
        assert_eq!(
            text,
            "1\ta\\tb\\\\c\\nd\t{\"x\":[1]}\t1.5\tt\n2\t\\N\t\\N\t\\N\t\\N\n"
        );
    }

    #[test]
    fn what_postgres_would_refuse_is_rejected_by_record() {
        let (text, why) = encode_one(
            &[
                json!({"id": 1, "s": "ok"}),
                json!({"id": 2, "s": "nul\u{0}"}),
                json!({"id": "x", "s": "y"}),
            ],
            false,
        );
        // `id` holds 1 and "x": a text column, so record 3 lands
        assert_eq!(text, "1\tok\nx\ty\n");
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("NUL"), "{why:?}");
    }

    #[test]
    fn a_repeated_key_keeps_the_last_record() {
        let (text, _) = encode_one(
            &[
                json!({"id": 1, "v": "a"}),
                json!({"id": 2, "v": "b"}),
                json!({"id": 1, "v": "c"}),
            ],
            true,
        );
        assert_eq!(text, "2\tb\n1\tc\n");
    }
}
