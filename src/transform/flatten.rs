//! `flatten`: nested objects become `parent__child` fields (arrays stay
//! whole, stored as JSON by the sink).

use serde_json::{Map, Value};

use super::Transform;

/// The separator between names.
pub struct Flatten(pub String);

fn flatten_into(prefix: &str, sep: &str, m: Map<String, Value>, out: &mut Map<String, Value>) {
    for (k, v) in m {
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}{sep}{k}")
        };
        match v {
            Value::Object(inner) if !inner.is_empty() => flatten_into(&name, sep, inner, out),
            other => {
                out.insert(name, other);
            }
        }
    }
}

impl Transform for Flatten {
    fn apply(&self, record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        match record {
            Value::Object(m) => {
                let mut flat = Map::with_capacity(m.len());
                flatten_into("", &self.0, m, &mut flat);
                out.push(Value::Object(flat));
            }
            other => out.push(other),
        }
        Ok(())
    }
}
