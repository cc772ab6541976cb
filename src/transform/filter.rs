//! `filter`: keep the records whose field passes a test. Numbers compare as
//! numbers, strings as strings; a missing field passes only `ne`.

use std::cmp::Ordering;

use serde_json::Value;

use super::Transform;
use crate::config::transform::{FilterConfig, FilterOp};
use crate::config::values::FieldPath;

/// A built filter.
pub struct Filter {
    field: FieldPath,
    op: FilterOp,
    value: Value,
    regex: Option<regex::Regex>,
}

impl Filter {
    /// Check the operand against the operator; compile a regex.
    pub fn build(c: &FilterConfig) -> Result<Self, (&'static str, String)> {
        let value = c.value.clone().unwrap_or(Value::Null);
        let regex = match c.op {
            FilterOp::Exists => None,
            FilterOp::Matches => {
                let Value::String(p) = &value else {
                    return Err((
                        "value",
                        "`matches` takes a regular expression string as `value`".into(),
                    ));
                };
                Some(
                    regex::Regex::new(p)
                        .map_err(|e| ("value", format!("not a regular expression: {e}")))?,
                )
            }
            _ => {
                if c.value.is_none() {
                    return Err((
                        "value",
                        "this operator needs a `value` to compare with".into(),
                    ));
                }
                None
            }
        };
        Ok(Self {
            field: c.field.clone(),
            op: c.op,
            value,
            regex,
        })
    }

    fn passes(&self, record: &Value) -> bool {
        let found = self.field.get(record);
        match self.op {
            FilterOp::Exists => found.is_some_and(|v| !v.is_null()),
            FilterOp::Matches => match (found, &self.regex) {
                (Some(Value::String(s)), Some(re)) => re.is_match(s),
                _ => false,
            },
            FilterOp::Eq => found.is_some_and(|v| compare(v, &self.value) == Some(Ordering::Equal)),
            FilterOp::Ne => found.is_none_or(|v| compare(v, &self.value) != Some(Ordering::Equal)),
            FilterOp::Lt => found.and_then(|v| compare(v, &self.value)) == Some(Ordering::Less),
            FilterOp::Le => matches!(
                found.and_then(|v| compare(v, &self.value)),
                Some(Ordering::Less | Ordering::Equal)
            ),
            FilterOp::Gt => found.and_then(|v| compare(v, &self.value)) == Some(Ordering::Greater),
            FilterOp::Ge => matches!(
                found.and_then(|v| compare(v, &self.value)),
                Some(Ordering::Greater | Ordering::Equal)
            ),
        }
    }
}

/// Numbers numerically (a numeric string compares as a number against a
/// number), strings lexically, anything else only for equality.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Number(_), _) | (_, Value::Number(_)) => num(a)?.partial_cmp(&num(b)?),
        _ => (a == b).then_some(Ordering::Equal),
    }
}

impl Transform for Filter {
    fn apply(&self, record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        if self.passes(&record) {
            out.push(record);
        }
        Ok(())
    }
}
