//! `[[transform]]`: one struct per kind. A new kind is one variant here and
//! one file under `src/transform/`.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use super::sink::ColumnType;
use super::values::FieldPath;

/// One `[[transform]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformConfig {
    /// Rename fields: `fields = { old = "new" }`.
    Rename(Fields<IndexMap<String, String>>),
    /// Keep only these fields.
    Select(Fields<Vec<String>>),
    /// Remove these fields.
    Drop(Fields<Vec<String>>),
    /// Set fields to a constant or a `{field}` template.
    Set(Fields<IndexMap<String, Value>>),
    /// Keep records that pass a test.
    Filter(FilterConfig),
    /// Nested objects become `parent__child` fields.
    Flatten(FlattenConfig),
    /// Convert fields to a type.
    Cast(Fields<IndexMap<String, ColumnType>>),
    /// A jq program per record; 0..n records out.
    Jq(JqConfig),
}

/// A transform whose only key is `fields`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields<T> {
    /// The fields.
    pub fields: T,
}

/// `kind = "filter"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Dotted path of the field tested.
    pub field: FieldPath,
    /// The test.
    pub op: FilterOp,
    /// The operand (a regex for `matches`; none for `exists`).
    #[serde(default)]
    pub value: Option<Value>,
}

/// Filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// The field is present and not null.
    Exists,
    /// The field is a string that matches the regex `value`.
    Matches,
}

fn sep() -> String {
    "__".into()
}

/// `kind = "flatten"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlattenConfig {
    /// Between parent and child names.
    #[serde(default = "sep")]
    pub separator: String,
}

/// `kind = "jq"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JqConfig {
    /// The jq program.
    pub expr: String,
}

/// What a component finds wrong with its own config beyond its types (a jq
/// program that does not compile, a regex that does not parse): `(key,
/// message)` pairs. Implemented beside the component's code, so the loader
/// checks it without importing the component.
pub trait Problems {
    /// Every problem, by the key it is about.
    fn problems(&self) -> Vec<(&'static str, String)>;
}
