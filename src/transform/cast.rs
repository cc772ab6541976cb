//! `cast`: convert fields to a column type; a value that does not convert
//! fails the record with the field, the value and the type.

use indexmap::IndexMap;
use serde_json::{Number, Value};

use super::Transform;
use crate::config::ColumnType;

/// `fields = { name = "integer" }`.
pub struct Cast(pub IndexMap<String, ColumnType>);

/// Convert one value; `None` when it does not convert. Null stays null.
pub fn convert(v: &Value, to: ColumnType) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Null);
    }
    Some(match to {
        ColumnType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            Value::Number(n) => {
                let f = n.as_f64()?;
                if f.fract() != 0.0 || !f.is_finite() || f.abs() > 9.0e15 {
                    return None;
                }
                Value::from(f as i64)
            }
            Value::String(s) => Value::from(s.trim().parse::<i64>().ok()?),
            Value::Bool(b) => Value::from(i64::from(*b)),
            _ => return None,
        },
        ColumnType::Real => match v {
            Value::Number(n) => Value::Number(Number::from_f64(n.as_f64()?)?),
            Value::String(s) => Value::Number(Number::from_f64(s.trim().parse::<f64>().ok()?)?),
            _ => return None,
        },
        ColumnType::Text | ColumnType::Timestamp => match v {
            Value::String(_) => v.clone(),
            Value::Number(_) | Value::Bool(_) => Value::String(v.to_string()),
            _ => return None,
        },
        ColumnType::Boolean => match v {
            Value::Bool(_) => v.clone(),
            Value::Number(n) if n.as_i64() == Some(0) => Value::Bool(false),
            Value::Number(n) if n.as_i64() == Some(1) => Value::Bool(true),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Value::Bool(true),
                "false" | "0" | "no" => Value::Bool(false),
                _ => return None,
            },
            _ => return None,
        },
        ColumnType::Json => match v {
            Value::String(s) => serde_json::from_str(s).ok()?,
            other => other.clone(),
        },
    })
}

impl Transform for Cast {
    fn apply(&self, mut record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        if let Value::Object(m) = &mut record {
            for (field, ty) in &self.0 {
                if let Some(v) = m.get_mut(field) {
                    *v = convert(v, *ty).ok_or_else(|| {
                        format!("field `{field}`: {} is not a {}", short(v), ty.name())
                    })?;
                }
            }
        }
        out.push(record);
        Ok(())
    }
}

/// A value for a message: at most 80 characters.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}
