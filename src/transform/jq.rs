//! `jq`: any jq program per record, through jaq; 0..n records out. The
//! compiled filter is built once; values are converted per record and never
//! held across an `.await` (jaq's values are not `Send`).

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde::Deserialize;
use serde_json::Value;

use super::Transform;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq program.
pub struct Jq {
    filter: Filter,
}

impl Jq {
    /// Parse and compile; the error lists jaq's reports.
    pub fn build(code: &str) -> Result<Self, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let program = File { code, path: () };
        let modules = loader.load(&arena, program).map_err(|errs| {
            format!(
                "jq program does not parse: {}",
                describe(errs.len(), "parse")
            )
        })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let names: Vec<String> = errs
                    .iter()
                    .flat_map(|(_, es)| es.iter().map(|(name, _)| format!("`{}`", name)))
                    .collect();
                format!(
                    "jq program does not compile: unknown name(s) {}",
                    names.join(", ")
                )
            })?;
        Ok(Self { filter })
    }
}

fn describe(n: usize, what: &str) -> String {
    format!("{n} {what} error(s); check quotes, pipes and parentheses")
}

/// jaq's value to JSON.
fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => match n {
            jaq_json::Num::Int(i) => Value::from(*i as i64),
            jaq_json::Num::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            other => serde_json::from_str(&other.to_string()).unwrap_or(Value::Null),
        },
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

impl Transform for Jq {
    fn apply(&self, record: Value, out: &mut Vec<Value>) -> Result<(), String> {
        let input =
            Val::deserialize(record).map_err(|e| format!("record is not JSON jq can read: {e}"))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        for r in self.filter.id.run((ctx, input)).map(unwrap_valr) {
            match r {
                Ok(v) => out.push(to_json(&v)),
                Err(e) => return Err(format!("jq: {e}")),
            }
        }
        Ok(())
    }
}
