//! Operations on the parsed TOML tree before it becomes typed config: env
//! interpolation, `--set` overrides, and the `kind` rewrite. They work on
//! toml's span-carrying [`DeTable`], so every later error still points at the
//! right line and column of the user's file.
//!
//! The `kind` rewrite turns `{ kind = "cursor", param = "c" }` into serde's
//! externally tagged form `{ cursor = { param = "c" } }`. toml deserializes
//! that form natively and keeps the span of every key, which an internally
//! tagged enum (`#[serde(tag = "kind")]`) would lose by buffering.

use std::borrow::Cow;
use std::ops::Range;

use serde_spanned::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// A problem found while preparing the tree, at a span of the document.
#[derive(Debug)]
pub struct TreeError {
    pub span: Range<usize>,
    pub message: String,
}

fn err(span: Range<usize>, message: impl Into<String>) -> TreeError {
    TreeError {
        span,
        message: message.into(),
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

/// Replace `${NAME}`, `${NAME:-default}` and `${env:NAME}` in every string
/// value. Returns the values that came from `${env:NAME}` (secrets).
pub fn interpolate(
    table: &mut DeTable<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Vec<String>, Vec<TreeError>) {
    let (mut secrets, mut errors) = (Vec::new(), Vec::new());
    for (_, v) in table.iter_mut() {
        interpolate_value(v, lookup, &mut secrets, &mut errors);
    }
    (secrets, errors)
}

fn interpolate_value(
    v: &mut Value<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
    errors: &mut Vec<TreeError>,
) {
    let span = v.span();
    match v.get_mut() {
        DeValue::String(s) if s.contains('$') => match expand(s, lookup, secrets) {
            Ok(out) => *s = Cow::Owned(out),
            Err(m) => errors.push(err(span, m)),
        },
        DeValue::Array(a) => {
            for item in a.iter_mut() {
                interpolate_value(item, lookup, secrets, errors);
            }
        }
        DeValue::Table(t) => {
            for (_, item) in t.iter_mut() {
                interpolate_value(item, lookup, secrets, errors);
            }
        }
        _ => {}
    }
}

/// Expand one string. `$${` stands for a literal `${`.
pub fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(format!(
                "unterminated `${{` in {s:?}; write `${{NAME}}`, `${{NAME:-default}}` or `${{env:NAME}}` (`$${{` for a literal `${{`)"
            ));
        };
        let body = &body_start[..end];
        rest = &body_start[end + 1..];
        let (name, default, secret) = if let Some(n) = body.strip_prefix("env:") {
            (n, None, true)
        } else if let Some((n, d)) = body.split_once(":-") {
            (n, Some(d), false)
        } else {
            (body, None, false)
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "`${{{body}}}` is not a variable reference: a name is letters, digits and `_`"
            ));
        }
        match (
            lookup(name).filter(|v| default.is_none() || !v.is_empty()),
            default,
        ) {
            (Some(v), _) => {
                if secret {
                    secrets.push(v.clone());
                }
                out.push_str(&v);
            }
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (give it a default with `${{{name}:-default}}`)"
                ));
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Merge `over` into `base`: tables merge key by key, anything else replaces.
pub fn merge<'i>(base: &mut DeTable<'i>, over: DeTable<'i>) {
    for (k, v) in over {
        let span = v.span();
        match (base.get_mut(k.get_ref().as_ref()), v.into_inner()) {
            (Some(existing), DeValue::Table(t)) if existing.get_ref().is_table() => {
                if let DeValue::Table(bt) = existing.get_mut() {
                    merge(bt, t);
                }
            }
            (_, value) => {
                base.remove(k.get_ref().as_ref());
                base.insert(k, Spanned::new(span, value));
            }
        }
    }
}

/// Add `offset` to every span in a table (for overrides parsed on their own).
pub fn shift(table: DeTable<'_>, offset: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (k, v) in table {
        let ks = k.span();
        out.insert(
            Spanned::new(ks.start + offset..ks.end + offset, k.into_inner()),
            shift_value(v, offset),
        );
    }
    out
}

fn shift_value(v: Value<'_>, offset: usize) -> Value<'_> {
    let s = v.span();
    let inner = match v.into_inner() {
        DeValue::Table(t) => DeValue::Table(shift(t, offset)),
        DeValue::Array(a) => {
            let mut arr = toml::de::DeArray::new();
            for item in a {
                arr.push(shift_value(item, offset));
            }
            DeValue::Array(arr)
        }
        other => other,
    };
    Spanned::new(s.start + offset..s.end + offset, inner)
}

/// Rewrite the table at `path` (dot-separated; `[]` means every element of
/// an array of tables) from `kind = "x"` to the externally tagged form.
/// Keys in `common` stay beside a `kind` key that holds the tagged table.
pub fn rewrite_kinds(
    root: &mut DeTable<'_>,
    path: &[&str],
    common: &[&str],
) -> Result<(), TreeError> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    let Some(v) = root.get_mut(*first) else {
        return Ok(());
    };
    let each: Vec<&mut Value<'_>> = match (rest.first(), v.get_mut()) {
        (Some(&"[]"), DeValue::Array(a)) => a.iter_mut().collect(),
        (Some(&"[]"), _) => return Ok(()), // serde reports the wrong type
        (_, _) => vec![v],
    };
    let rest = if rest.first() == Some(&"[]") {
        &rest[1..]
    } else {
        rest
    };
    for item in each {
        let span = item.span();
        let DeValue::Table(t) = item.get_mut() else {
            continue; // serde reports the wrong type
        };
        if !rest.is_empty() {
            rewrite_kinds(t, rest, common)?;
            continue;
        }
        let tagged = tag(t, span.clone(), common)?;
        *item = Spanned::new(span, DeValue::Table(tagged));
    }
    Ok(())
}

/// The marker used for a table that has no `kind` key: serde then reports
/// "unknown variant" with the list of kinds, which `load` turns into
/// "missing key `kind`".
pub const NO_KIND: &str = "<missing kind>";

fn tag<'i>(
    t: &mut DeTable<'i>,
    span: Range<usize>,
    common: &[&str],
) -> Result<DeTable<'i>, TreeError> {
    let (kind_key, kind) = match t.remove_entry("kind") {
        Some((k, v)) => {
            let vspan = v.span();
            match v.into_inner() {
                DeValue::String(s) => (Spanned::new(vspan, s), k),
                other => {
                    return Err(err(
                        vspan,
                        format!("`kind` must be a string, found {}", other.type_str()),
                    ));
                }
            }
        }
        None => (
            Spanned::new(span.clone(), Cow::Borrowed(NO_KIND)),
            Spanned::new(span.clone(), Cow::Borrowed("kind")),
        ),
    };
    let mut body = DeTable::new();
    let mut outer = DeTable::new();
    for (k, v) in std::mem::take(t) {
        if common.contains(&k.get_ref().as_ref()) {
            outer.insert(k, v);
        } else {
            body.insert(k, v);
        }
    }
    let mut variant = DeTable::new();
    variant.insert(kind_key, Spanned::new(span.clone(), DeValue::Table(body)));
    if common.is_empty() {
        return Ok(variant);
    }
    outer.insert(kind, Spanned::new(span, DeValue::Table(variant)));
    Ok(outer)
}

/// A dotted key path's first step: the key, its array index if any
/// (`transform[1]`), and the rest of the path.
fn first_step(path: &str) -> (&str, Option<usize>, Option<&str>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    match head.split_once('[') {
        Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok(), rest),
        None => (head, None, rest),
    }
}

/// The table that `name` (or item `index` of the array `name`) holds.
fn table_at<'t, 'a>(
    table: &'t mut DeTable<'a>,
    name: &str,
    index: Option<usize>,
) -> Option<&'t mut DeTable<'a>> {
    match (table.get_mut(name)?.get_mut(), index) {
        (DeValue::Table(t), None) => Some(t),
        (DeValue::Array(a), Some(i)) => match a.get_mut(i)?.get_mut() {
            DeValue::Table(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// Remove the entry at a dotted key path (`source.pagination.sise`,
/// `transform[1].fields`), so that loading can go on past an error there.
pub fn remove_path(table: &mut DeTable<'_>, path: &str) -> bool {
    match first_step(path) {
        (name, index, Some(rest)) => {
            table_at(table, name, index).is_some_and(|t| remove_path(t, rest))
        }
        (name, None, None) => table.remove(name).is_some(),
        // a whole `[[transform]]` item: the items after it move up
        (name, Some(i), None) => match table.get_mut(name).map(|v| v.get_mut()) {
            Some(DeValue::Array(a)) if i < a.len() => {
                let kept: DeArray<'_> = std::mem::replace(a, DeArray::new())
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, v)| v)
                    .collect();
                *a = kept;
                true
            }
            _ => false,
        },
    }
}

/// Set the string at a dotted key path that holds one (a `kind` whose value
/// was misspelt), so that loading can go on past it.
pub fn set_string(table: &mut DeTable<'_>, path: &str, value: &str) -> bool {
    match first_step(path) {
        (name, index, Some(rest)) => {
            table_at(table, name, index).is_some_and(|t| set_string(t, rest, value))
        }
        (name, None, None) => match table.get_mut(name).map(|v| v.get_mut()) {
            Some(DeValue::String(s)) => {
                *s = Cow::Owned(value.to_string());
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// The dotted key path of the deepest key whose key or value holds `at`.
pub fn key_at(table: &DeTable<'_>, at: usize) -> Option<String> {
    let mut best: Option<(String, usize)> = None;
    walk_keys(table, "", at, &mut best);
    best.map(|(k, _)| k)
}

fn walk_keys(table: &DeTable<'_>, prefix: &str, at: usize, best: &mut Option<(String, usize)>) {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        let in_key = k.span().contains(&at);
        let vs = v.span();
        let in_value = vs.contains(&at) || (vs.start == at && vs.is_empty());
        if in_key || in_value {
            let width = if in_key { k.span().len() } else { vs.len() };
            if best.as_ref().is_none_or(|(_, w)| width <= *w) {
                *best = Some((path.clone(), width));
            }
        }
        match v.get_ref() {
            DeValue::Table(t) => walk_keys(t, &path, at, best),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let ip = format!("{path}[{i}]");
                    if item.span().contains(&at)
                        && best.as_ref().is_none_or(|(_, w)| item.span().len() <= *w)
                    {
                        *best = Some((ip.clone(), item.span().len()));
                    }
                    if let DeValue::Table(t) = item.get_ref() {
                        walk_keys(t, &ip, at, best);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("api.test".into()),
            "EMPTY" => Some(String::new()),
            "TOKEN" => Some("s3cret".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_all_forms() {
        let mut secrets = Vec::new();
        let out = expand(
            "https://${HOST}/${MISSING:-v1}/${EMPTY:-e}?t=${env:TOKEN}&c=$${x} $5",
            &env,
            &mut secrets,
        );
        assert_eq!(
            out.as_deref(),
            Ok("https://api.test/v1/e?t=s3cret&c=${x} $5")
        );
        assert_eq!(secrets, vec!["s3cret".to_string()]);
    }

    #[test]
    fn missing_and_malformed() {
        let mut s = Vec::new();
        let e = expand("${NOPE}", &env, &mut s).unwrap_err();
        assert!(e.contains("`NOPE` is not set"), "{e}");
        assert!(
            expand("${OPEN", &env, &mut s)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            expand("${a b}", &env, &mut s)
                .unwrap_err()
                .contains("not a variable")
        );
    }

    #[test]
    fn key_paths_from_spans() {
        let text =
            "[source]\nkind = \"http\"\n[source.pagination]\nkind = \"page_number\"\nsize = 10\n";
        let t = DeTable::parse(text).unwrap().into_inner();
        let at = text.find("10").unwrap();
        assert_eq!(key_at(&t, at).as_deref(), Some("source.pagination.size"));
    }
}
