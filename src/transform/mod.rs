//! Transforms reshape records between the source and the sink: one file per
//! kind behind the [`Transform`] trait, built once from the config (so a bad
//! regex or jq program fails at load time) and applied per record, in order.

pub mod cast;
mod fields;
mod filter;
mod flatten;
mod jq;

use serde_json::Value;

use crate::config::TransformConfig;

/// A transform failed on a record.
#[derive(Debug, Clone, thiserror::Error)]
#[error("transform {index} ({kind}): {message}")]
pub struct TransformError {
    /// Position in the pipeline's `[[transform]]` list (0-based).
    pub index: usize,
    /// Its kind.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

/// One built transform: a record in, zero or more records out.
pub trait Transform: Send + Sync {
    /// Push what `record` becomes onto `out`.
    fn apply(&self, record: Value, out: &mut Vec<Value>) -> Result<(), String>;
}

/// The built transforms of a pipeline.
pub struct Chain {
    steps: Vec<(&'static str, Box<dyn Transform>)>,
}

/// A build failure: index in the list, key, message.
pub type BuildError = (usize, &'static str, String);

/// The loader's check of a transform's config: building it, as a run will.
impl crate::config::Problems for TransformConfig {
    fn problems(&self) -> Vec<(&'static str, String)> {
        match Chain::build(std::slice::from_ref(self)) {
            Ok(_) => Vec::new(),
            Err((_, key, message)) => vec![(key, message)],
        }
    }
}

impl Chain {
    /// Build every transform; the first failure names its index and key.
    pub fn build(configs: &[TransformConfig]) -> Result<Self, BuildError> {
        let mut steps: Vec<(&'static str, Box<dyn Transform>)> = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let step: (&'static str, Box<dyn Transform>) = match c {
                TransformConfig::Rename(f) => {
                    ("rename", Box::new(fields::Rename(f.fields.clone())))
                }
                TransformConfig::Select(f) => {
                    ("select", Box::new(fields::Select(f.fields.clone())))
                }
                TransformConfig::Drop(f) => ("drop", Box::new(fields::Drop(f.fields.clone()))),
                TransformConfig::Set(f) => ("set", Box::new(fields::Set::new(f.fields.clone()))),
                TransformConfig::Filter(f) => (
                    "filter",
                    Box::new(filter::Filter::build(f).map_err(|(k, m)| (i, k, m))?),
                ),
                TransformConfig::Flatten(f) => {
                    ("flatten", Box::new(flatten::Flatten(f.separator.clone())))
                }
                TransformConfig::Cast(f) => ("cast", Box::new(cast::Cast(f.fields.clone()))),
                TransformConfig::Jq(j) => (
                    "jq",
                    Box::new(jq::Jq::build(&j.expr).map_err(|m| (i, "expr", m))?),
                ),
            };
            steps.push(step);
        }
        Ok(Self { steps })
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Run one record through the chain, appending what it becomes to `out`.
    /// On failure nothing is appended.
    pub fn apply_one(&self, record: Value, out: &mut Vec<Value>) -> Result<(), TransformError> {
        if self.steps.is_empty() {
            out.push(record);
            return Ok(());
        }
        let mut cur = vec![record];
        let mut next = Vec::new();
        for (index, (kind, step)) in self.steps.iter().enumerate() {
            next.clear();
            for r in cur.drain(..) {
                step.apply(r, &mut next).map_err(|message| TransformError {
                    index,
                    kind,
                    message,
                })?;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        out.append(&mut cur);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(toml: &str) -> Chain {
        // build through the real loader's kind rewrite
        let text = format!(
            "[source]\nkind = \"http\"\nbase_url = \"http://127.0.0.1:1\"\n[sink]\nkind = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\n{toml}"
        );
        let p = crate::config::load_str(&text, std::path::Path::new("t.toml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        Chain::build(&p.transforms).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn run(c: &Chain, input: Value) -> Vec<Value> {
        let mut out = Vec::new();
        c.apply_one(input, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn chain_in_order() {
        let c = chain(
            r#"
[[transform]]
kind = "rename"
fields = { userId = "user_id" }
[[transform]]
kind = "jq"
expr = 'select(.user_id != 0) | .title |= ascii_downcase'
[[transform]]
kind = "drop"
fields = ["body"]
"#,
        );
        assert_eq!(
            run(
                &c,
                json!({"userId": 3, "id": 1, "title": "HeLLo", "body": "b"})
            ),
            vec![json!({"id": 1, "user_id": 3, "title": "hello"})]
        );
        assert!(run(&c, json!({"userId": 0, "id": 2, "title": "x"})).is_empty());
    }

    #[test]
    fn jq_many_out() {
        let c = chain("[[transform]]\nkind = \"jq\"\nexpr = '.tags[] | {tag: .}'\n");
        assert_eq!(
            run(&c, json!({"tags": ["a", "b"]})),
            vec![json!({"tag": "a"}), json!({"tag": "b"})]
        );
    }

    #[test]
    fn select_set_flatten_cast_filter() {
        let c = chain(
            r#"
[[transform]]
kind = "flatten"
[[transform]]
kind = "set"
fields = { source = "api", label = "{id}-{user__name}", copy = "{id}" }
[[transform]]
kind = "cast"
fields = { id = "text", n = "integer", ok = "boolean" }
[[transform]]
kind = "filter"
field = "n"
op = "ge"
value = 10
[[transform]]
kind = "select"
fields = ["id", "user__name", "label", "copy", "source", "n", "ok"]
"#,
        );
        let out = run(
            &c,
            json!({"id": 7, "user": {"name": "ann"}, "n": "12", "ok": "true", "x": 1}),
        );
        assert_eq!(
            out,
            vec![
                json!({"id": "7", "user__name": "ann", "label": "7-ann", "copy": 7, "source": "api", "n": 12, "ok": true})
            ]
        );
        assert!(
            run(
                &c,
                json!({"id": 8, "user": {"name": "b"}, "n": 3, "ok": false})
            )
            .is_empty()
        );
    }
}
