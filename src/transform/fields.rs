//! `rename`, `select`, `drop` and `set`: transforms on top-level fields.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::Transform;

/// `rename`: `fields = { old = "new" }`; a missing field is left alone.
pub struct Rename(pub IndexMap<String, String>);

impl Transform for Rename {
    fn apply(&self, mut record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        if let Value::Object(m) = &mut record {
            for (old, new) in &self.0 {
                if let Some(v) = m.shift_remove(old) {
                    m.insert(new.clone(), v);
                }
            }
        }
        out.push(record);
        Ok(())
    }
}

/// `select`: keep only these fields, in this order.
pub struct Select(pub Vec<String>);

impl Transform for Select {
    fn apply(&self, record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        match record {
            Value::Object(mut m) => {
                let mut kept = Map::with_capacity(self.0.len());
                for f in &self.0 {
                    if let Some(v) = m.shift_remove(f) {
                        kept.insert(f.clone(), v);
                    }
                }
                out.push(Value::Object(kept));
            }
            other => out.push(other),
        }
        Ok(())
    }
}

/// `drop`: remove these fields.
pub struct Drop(pub Vec<String>);

impl Transform for Drop {
    fn apply(&self, mut record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        if let Value::Object(m) = &mut record {
            for f in &self.0 {
                m.shift_remove(f);
            }
        }
        out.push(record);
        Ok(())
    }
}

/// `set`: constants, or templates: `"{id}"` alone copies the field with its
/// type; `"{a}-{b}"` builds a string from fields.
pub struct Set {
    fields: Vec<(String, Value)>,
}

impl Set {
    /// From the config table.
    pub fn new(fields: IndexMap<String, Value>) -> Self {
        Self {
            fields: fields.into_iter().collect(),
        }
    }
}

fn render(template: &str, record: &Map<String, Value>) -> Value {
    // exactly one placeholder: keep the field's type
    if let Some(name) = template.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
        && !name.contains(['{', '}'])
    {
        return record.get(name).cloned().unwrap_or(Value::Null);
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..open + close];
        match record.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Value::String(out)
}

impl Transform for Set {
    fn apply(&self, mut record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        if let Value::Object(m) = &mut record {
            for (k, v) in &self.fields {
                let value = match v {
                    Value::String(t) if t.contains('{') => render(t, m),
                    other => other.clone(),
                };
                m.insert(k.clone(), value);
            }
        }
        out.push(record);
        Ok(())
    }
}
