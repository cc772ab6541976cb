//! A sink table's columns as ingest sees them, shared by every sink: the
//! declared ones, the ones found in the table, and each new field's column
//! with a type inferred from all of its values in the batch that brings it.
//! Names match without regard to case (as SQLite's do), so one pipeline
//! makes the same table in every sink.

use std::collections::HashMap;

use indexmap::IndexMap;
use serde_json::Value;

use crate::config::ColumnType;

/// One column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name, as created.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Declared in the pipeline: values must convert, or the record is rejected.
    pub strict: bool,
}

/// The columns of a sink's target table.
#[derive(Debug, Clone)]
pub struct Columns {
    /// In table order.
    pub list: Vec<Column>,
    /// lower-cased name → position
    index: HashMap<String, usize>,
    /// exact name → position: the common case, without allocating
    exact: HashMap<String, usize>,
    /// Positions of the primary key's columns, where they exist.
    pub pk_cols: Vec<usize>,
    primary_key: Vec<String>,
    declared: IndexMap<String, ColumnType>,
    /// Whether the table exists.
    pub exists: bool,
    max: usize,
}

impl Columns {
    /// No columns yet; at most `max` ever.
    pub fn new(
        primary_key: &[String],
        declared: &IndexMap<String, ColumnType>,
        max: usize,
    ) -> Self {
        Self {
            list: Vec::new(),
            index: HashMap::new(),
            exact: HashMap::new(),
            pk_cols: Vec::new(),
            primary_key: primary_key.to_vec(),
            declared: declared.clone(),
            exists: false,
            max,
        }
    }

    /// Forget every column (before reading a table's).
    pub fn clear(&mut self) {
        self.list.clear();
        self.index.clear();
        self.exact.clear();
        self.pk_cols.clear();
        self.exists = false;
    }

    /// A column of an existing table: its declared type if the pipeline
    /// declares it, else `found`.
    pub fn found(&mut self, name: String, found: ColumnType) {
        let (ty, strict) = match self
            .declared
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
        {
            Some((_, t)) => (*t, true),
            None => (found, false),
        };
        self.exists = true;
        self.push(name, ty, strict);
    }

    fn push(&mut self, name: String, ty: ColumnType, strict: bool) {
        let at = self.list.len();
        self.index.insert(name.to_lowercase(), at);
        self.exact.insert(name.clone(), at);
        self.list.push(Column { name, ty, strict });
        self.pk_cols = self
            .primary_key
            .iter()
            .filter_map(|k| self.position(k))
            .collect();
    }

    /// The position of the column for a field name; allocates only for a
    /// name not seen in this case.
    pub fn position(&self, name: &str) -> Option<usize> {
        match self.exact.get(name) {
            Some(&i) => Some(i),
            None => self.index.get(&name.to_lowercase()).copied(),
        }
    }

    /// Whether a column of this name (in any case) exists.
    pub fn has(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Whether every primary key column exists.
    pub fn has_primary_key(&self) -> bool {
        self.primary_key.iter().all(|k| self.has(k))
    }

    /// ` ON CONFLICT (primary key) DO UPDATE SET every other column`, the
    /// upsert both sinks write for merge (SQLite and PostgreSQL spell it alike).
    pub fn upsert_suffix(&self) -> String {
        let quote = super::sqlite::quote;
        let pk: Vec<String> = self.primary_key.iter().map(|k| quote(k)).collect();
        let sets: Vec<String> = self
            .list
            .iter()
            .filter(|c| {
                !self
                    .primary_key
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&c.name))
            })
            .map(|c| format!("{0} = excluded.{0}", quote(&c.name)))
            .collect();
        if sets.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", pk.join(", "))
        } else {
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                pk.join(", "),
                sets.join(", ")
            )
        }
    }

    /// Whether a batch brings a column the table lacks (or the table itself).
    pub fn brings_new(&self, records: &[Value]) -> bool {
        (!self.exists && !self.declared.is_empty())
            || shapes(records).any(|m| m.keys().any(|k| self.is_new(k)))
    }

    /// Whether a field would make a new column.
    fn is_new(&self, k: &str) -> bool {
        usable_name(k) && self.list.len() < self.max && self.position(k).is_none()
    }

    /// The columns a batch brings: declared ones when the table is new, then
    /// each new field. A new column's type comes from all of its values in
    /// this batch, so a field that is 1 here and "007" or 2.5 there gets a
    /// type that holds both as sent.
    pub fn evolve(&mut self, records: &[Value]) -> Vec<Column> {
        let mut new_cols: Vec<Column> = Vec::new();
        if !self.exists {
            for (name, ty) in self.declared.clone() {
                if !self.has(&name) {
                    new_cols.push(Column {
                        name: name.clone(),
                        ty,
                        strict: true,
                    });
                    self.push(name, ty, true);
                }
            }
        }
        for m in shapes(records) {
            for (k, v) in m {
                if self.is_new(k) {
                    let ty = infer(v);
                    new_cols.push(Column {
                        name: k.clone(),
                        ty,
                        strict: false,
                    });
                    self.push(k.clone(), ty, false);
                }
            }
        }
        for c in new_cols.iter_mut().filter(|c| !c.strict) {
            c.ty = infer_all(records.iter().filter_map(|r| r.get(&c.name)));
            if let Some(i) = self.position(&c.name) {
                self.list[i].ty = c.ty;
            }
        }
        new_cols
    }
}

/// The objects of a batch whose keys differ from the object before them:
/// records of one API nearly always share their keys, and a record with the
/// previous one's keys needs no lookup at all.
fn shapes(records: &[Value]) -> impl Iterator<Item = &serde_json::Map<String, Value>> {
    let mut prev: Vec<&str> = Vec::new();
    records.iter().filter_map(move |r| {
        let Value::Object(m) = r else { return None };
        if m.len() == prev.len() && m.keys().zip(&prev).all(|(k, p)| k == p) {
            return None;
        }
        prev.clear();
        prev.extend(m.keys().map(String::as_str));
        Some(m)
    })
}

/// Whether a field name can be a column's.
pub fn usable_name(k: &str) -> bool {
    !k.is_empty() && !k.contains('\0')
}

/// The type of a column that holds all these values as sent: one kind
/// keeps its type; integers with reals are real; booleans with integers are
/// integer; JSON arrays or objects make it json; any other mix is text.
/// Nulls say nothing (all nulls: text).
pub fn infer_all<'a>(values: impl Iterator<Item = &'a Value>) -> ColumnType {
    use ColumnType::{Boolean, Integer, Json, Real, Text};
    let mut out: Option<ColumnType> = None;
    for v in values.filter(|v| !v.is_null()) {
        let t = infer(v);
        out = Some(match (out, t) {
            (None, t) => t,
            (Some(a), b) if a == b => a,
            (Some(Json), _) | (_, Json) => Json,
            (Some(Integer | Real), Integer | Real) => Real,
            (Some(Integer | Boolean), Integer | Boolean) => Integer,
            _ => Text,
        });
        if out == Some(Text) {
            break;
        }
    }
    out.unwrap_or(Text)
}

/// The type a column gets from one value.
pub fn infer(v: &Value) -> ColumnType {
    match v {
        Value::Bool(_) => ColumnType::Boolean,
        Value::Number(n) if n.is_i64() => ColumnType::Integer,
        Value::Number(n) if n.is_u64() => ColumnType::Text, // beyond i64: keep every digit
        Value::Number(_) => ColumnType::Real,
        Value::Array(_) | Value::Object(_) => ColumnType::Json,
        Value::String(_) | Value::Null => ColumnType::Text,
    }
}

/// The columns a table would get from these records: declared ones first,
/// then each new field with the type of all its values.
pub fn infer_columns(
    records: &[Value],
    declared: &IndexMap<String, ColumnType>,
) -> Vec<(String, ColumnType)> {
    let mut out: IndexMap<String, (String, Option<ColumnType>)> = IndexMap::new();
    for (k, t) in declared {
        out.insert(k.to_lowercase(), (k.clone(), Some(*t)));
    }
    for r in records {
        if let Value::Object(m) = r {
            for k in m.keys() {
                out.entry(k.to_lowercase()).or_insert((k.clone(), None));
            }
        }
    }
    out.into_values()
        .map(|(n, t)| {
            let t = t.unwrap_or_else(|| infer_all(records.iter().filter_map(|r| r.get(&n))));
            (n, t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mixed_column_gets_a_type_that_holds_every_value() {
        use serde_json::json;
        let t = |v: Value| infer_all(v.as_array().into_iter().flatten());
        assert_eq!(t(json!([1, 2])), ColumnType::Integer);
        assert_eq!(t(json!([null, 1, 2.5])), ColumnType::Real);
        assert_eq!(t(json!([1, "007"])), ColumnType::Text);
        assert_eq!(t(json!([true, 1])), ColumnType::Integer);
        assert_eq!(t(json!([1, {"a": 1}])), ColumnType::Json);
        assert_eq!(t(json!([null])), ColumnType::Text);
    }
}
