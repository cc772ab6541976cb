//! The pipeline file: TOML into typed config, with every error pointing at
//! file, line, column and key, before any request is sent.
//!
//! Loading goes: read → parse (toml's span-carrying tree) → `--set` overrides
//! → env interpolation → `kind` rewrite (`tree.rs`) → serde into the types of
//! this module (`deny_unknown_fields` everywhere) → checks serde cannot do
//! (URLs, identifiers, what `merge` needs, jq programs).

mod checks;
pub mod pagination;
pub mod sink;
pub mod source;
pub mod transform;
mod tree;
pub mod values;
pub mod windows;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use crate::redact::Secrets;
pub use checks::{MAX_CONCURRENCY, sqlite_path};
pub use pagination::{PaginationConfig, PaginationKind};
pub use sink::{
    ColumnType, JsonlSinkConfig, PostgresSinkConfig, SinkConfig, SqliteSinkConfig, WriteMode,
};
pub use source::{HttpSourceConfig, SourceConfig};
pub use transform::{Problems, TransformConfig};

/// A loaded, checked pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `name`, or the file stem.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The source.
    pub source: SourceConfig,
    /// Transforms, in order.
    pub transforms: Vec<TransformConfig>,
    /// The sink.
    pub sink: SinkConfig,
    /// The file it came from.
    pub file: PathBuf,
    /// Values that must never be printed.
    pub secrets: Secrets,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    source: SourceConfig,
    #[serde(default, rename = "transform")]
    transforms: Vec<TransformConfig>,
    sink: SinkConfig,
}

/// A pipeline file or command line that cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the pipeline file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something at a place in the file.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
    /// A `--set` argument.
    #[error("--set {arg}: {message}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong.
        message: String,
    },
    /// Another command-line value.
    #[error("{0}")]
    Usage(String),
    /// Several of the above, in file order (at most [`MAX_ERRORS`]).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

/// Errors reported from one file, at most.
pub const MAX_ERRORS: usize = 20;

impl ConfigError {
    /// Each error on its own: one for most, several for [`ConfigError::Many`].
    pub fn each(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(v) => v.iter().flat_map(ConfigError::each).collect(),
            one => vec![one],
        }
    }
}

/// An error at a place in a pipeline file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// The dotted key the error is about, when known.
    pub key: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
    /// The line of the file, for display.
    pub source_line: String,
    /// How many characters to underline.
    pub width: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        writeln!(f, "{}", self.message)?;
        let n = self.line.to_string();
        let pad = " ".repeat(n.len());
        writeln!(f, "{pad} |")?;
        writeln!(f, "{n} | {}", self.source_line)?;
        write!(
            f,
            "{pad} | {}{}",
            " ".repeat(self.column.saturating_sub(1)),
            "^".repeat(self.width.max(1))
        )
    }
}

/// What a load takes besides the file.
pub struct LoadOptions<'a> {
    /// `--set KEY=VALUE` arguments, applied in order.
    pub overrides: &'a [String],
    /// Environment lookup (tests pass their own).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// `validate --no-env`: no variable is read; every `${…}` stands for a
    /// value that cannot be judged, so no error is reported about a value
    /// written with one.
    pub no_env: bool,
}

/// What every `${…}` gives under `validate --no-env`.
pub const NO_ENV: &str = "ingest-no-env";

fn no_env(_: &str) -> Option<String> {
    Some(NO_ENV.to_string())
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        Self {
            overrides: &[],
            env: &process_env,
            no_env: false,
        }
    }
}

/// The sections whose `kind` selects a variant, deepest first, with the
/// keys that stay beside the kind.
const KINDED: &[(&[&str], &[&str])] = &[
    (&["source", "pagination"], pagination::COMMON_KEYS),
    (&["source", "auth"], &[]),
    (&["source", "partition"], &[]),
    (&["source"], &[]),
    (&["transform", "[]"], &[]),
    (&["sink"], &[]),
];

/// Load and check a pipeline file.
pub fn load(path: &Path, opts: &LoadOptions<'_>) -> Result<Pipeline, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, opts)
}

/// Load a pipeline from text (`path` names it in errors).
pub fn load_str(text: &str, path: &Path, opts: &LoadOptions<'_>) -> Result<Pipeline, ConfigError> {
    // overrides are parsed as TOML lines of their own; they live past the end
    // of the file in span space, so an error in one names the `--set` argument
    let lines: Vec<String> = opts
        .overrides
        .iter()
        .map(|arg| override_line(arg))
        .collect::<Result<_, _>>()?;
    let mut ctx = Ctx {
        file: path,
        text,
        overrides: Vec::new(),
        secrets: Secrets::default(),
        errors: Default::default(),
        suppressed: Default::default(),
        no_env: opts.no_env,
    };
    let mut root = DeTable::parse(text)
        .map_err(|e| ctx.at(e.span().unwrap_or(0..0), None, e.message().to_string()))?
        .into_inner();
    let mut offset = text.len() + 1;
    for (line, arg) in lines.iter().zip(opts.overrides) {
        let parsed = DeTable::parse(line).map_err(|e| ConfigError::Override {
            arg: arg.clone(),
            message: e.message().to_string(),
        })?;
        tree::merge(&mut root, tree::shift(parsed.into_inner(), offset));
        ctx.overrides
            .push((offset..offset + line.len(), arg.clone()));
        offset += line.len() + 1;
    }

    let lookup: &dyn Fn(&str) -> Option<String> = if opts.no_env { &no_env } else { opts.env };
    let (found, missing) = tree::interpolate(&mut root, lookup);
    ctx.secrets = Secrets::new(found);
    for e in missing {
        // a value left uninterpolated would fail its own checks too
        if let Some(k) = tree::key_at(&root, e.span.start) {
            ctx.suppressed.borrow_mut().push(k);
        }
        ctx.errors.borrow_mut().push(ctx.tree_err(&root, e));
    }
    let original = root.clone();
    let mut raw = deserialize(&ctx, root, &original)?;
    resolve_paths(&mut raw.sink, path);
    let mut source = raw.source;
    if let SourceConfig::Http(h) = &mut source
        && let Some(source::PartitionConfig::Lines(l)) = &mut h.partition
    {
        l.file = resolve(&l.file, path);
    }
    match &mut source {
        SourceConfig::Http(h) if h.concurrency == values::AUTO_CONCURRENCY => {
            h.auto_concurrency = true;
            h.concurrency = h.max_concurrency.unwrap_or(32);
        }
        SourceConfig::Files(f) => f.base = resolve(Path::new("."), path),
        SourceConfig::Http(_) => {}
    }
    let name = raw.name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    let secrets = ctx.secrets.with(source.secrets()).with(raw.sink.secrets());
    let pipeline = Pipeline {
        name,
        description: raw.description,
        source,
        transforms: raw.transforms,
        sink: raw.sink,
        file: path.to_path_buf(),
        secrets: secrets.clone(),
    };
    let ctx = Ctx { secrets, ..ctx };
    check(&pipeline, &ctx, &original);
    ctx.finish()?;
    Ok(pipeline)
}

/// Relative paths in a pipeline file resolve against the file's directory
/// (made absolute), not the working directory, so cron and a shell agree.
fn resolve_paths(sink: &mut SinkConfig, file: &Path) {
    let path = match sink {
        SinkConfig::Sqlite(c) => &mut c.path,
        SinkConfig::Jsonl(c) => {
            c.table = c
                .path
                .file_name()
                .map_or_else(|| "stdout".into(), |n| n.to_string_lossy().into_owned());
            if c.is_stdout() {
                c.table = "stdout".into();
                return;
            }
            &mut c.path
        }
        SinkConfig::Postgres(_) => return,
    };
    *path = resolve(path, file);
}

/// `path` against the directory of the pipeline `file`, made absolute.
pub fn resolve(path: &Path, file: &Path) -> PathBuf {
    if path.as_os_str().is_empty() || path.is_absolute() {
        return path.to_path_buf();
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // `..` taken away by hand: the file may not exist yet, so no canonicalize
    let mut out = PathBuf::new();
    for part in base.join(path).components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Deserialize the tree, going on past errors: a key whose value serde
/// refuses (unknown, wrong type) is noted and removed, and serde tries again,
/// so one pass reports every such key (up to [`MAX_ERRORS`]). Later checks
/// say nothing more about a removed key.
fn deserialize(
    ctx: &Ctx<'_>,
    mut work: DeTable<'_>,
    original: &DeTable<'_>,
) -> Result<RawPipeline, ConfigError> {
    for _ in 0..MAX_ERRORS {
        let mut root = work.clone();
        for (path, common) in KINDED {
            if let Err(e) = tree::rewrite_kinds(&mut root, path, common) {
                ctx.push(ctx.tree_err(original, e));
                return Err(ctx.fail());
            }
        }
        let de = toml::de::Deserializer::from(Spanned::new(0..ctx.text.len(), root));
        let e = match RawPipeline::deserialize(de) {
            Ok(raw) => return Ok(raw),
            Err(e) => e,
        };
        let missing = e.message().starts_with("missing field");
        let kind = guess_kind(e.message());
        let span = e.span();
        // the key as the file names it, and as the tree being fixed does
        let at = span.clone().and_then(|s| tree::key_at(original, s.start));
        let here = span.and_then(|s| tree::key_at(&work, s.start));
        ctx.push(ctx.serde_err(original, e));
        let (Some(at), Some(here)) = (at, here) else {
            break;
        };
        match kind {
            // a misspelt kind: go on as the closest kind, and say nothing
            // more about that table, whose keys were meant for another kind
            Some(kind) if here.ends_with(".kind") && tree::set_string(&mut work, &here, &kind) => {
                ctx.suppressed
                    .borrow_mut()
                    .push(at.trim_end_matches(".kind").to_string());
            }
            // a missing key cannot be removed, only the array item (a
            // `[[transform]]`) that lacks it
            _ if (!missing || here.ends_with(']')) && tree::remove_path(&mut work, &here) => {
                ctx.suppressed.borrow_mut().push(at)
            }
            _ => break,
        }
    }
    Err(ctx.fail())
}

/// `KEY=VALUE` as the TOML line `KEY = VALUE`; a VALUE that is not a TOML
/// value is taken as a string (`--set sink.table=posts2`).
fn override_line(arg: &str) -> Result<String, ConfigError> {
    let bad = |message: String| ConfigError::Override {
        arg: arg.to_string(),
        message,
    };
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| bad("write KEY=VALUE, like `source.params.userId=3`".into()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(bad(
            "the key is empty; write KEY=VALUE, like `sink.table=posts`".into(),
        ));
    }
    let literal = format!("{key} = {value}");
    if DeTable::parse(&literal).is_ok() {
        return Ok(literal);
    }
    let quoted = format!("{key} = {}", toml_string(value));
    if DeTable::parse(&quoted).is_ok() {
        return Ok(quoted);
    }
    Err(bad(format!(
        "`{key}` is not a key path: write dotted keys, quoting ones with dots or spaces (`source.headers.\"X-Api\"`)"
    )))
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Everything an error needs to point at the right place.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    overrides: Vec<(Range<usize>, String)>,
    secrets: Secrets,
    /// Every error found so far: a file is checked in one pass.
    errors: std::cell::RefCell<Vec<ConfigError>>,
    /// Keys already reported (and removed or left raw): later checks stay
    /// silent about them and what is under them.
    suppressed: std::cell::RefCell<Vec<String>>,
    /// `--no-env`: errors about values written with `${…}` are left out.
    no_env: bool,
}

impl Ctx<'_> {
    /// Note an error and go on checking; an error about a key that was
    /// already reported is left out, and so is a missing key that was removed.
    fn push(&self, e: ConfigError) {
        let key = match &e {
            ConfigError::Invalid(d) => d.key.clone(),
            _ => None,
        };
        if self.no_env && self.about_env_value(&e) {
            return;
        }
        // a key removed for an error leaves its table short of nothing
        // else: a missing key beside it is most likely the same mistake
        let parent = |k: &str| k.rsplit_once('.').map(|(p, _)| p.to_string());
        let missing = matches!(&e, ConfigError::Invalid(d) if d.message.starts_with("missing key"));
        let beside = missing
            && key.as_ref().is_some_and(|k| {
                self.suppressed
                    .borrow()
                    .iter()
                    .any(|s| parent(s).is_some() && parent(s) == parent(k))
            });
        let quiet = beside
            || key.as_ref().is_some_and(|k| {
                self.suppressed.borrow().iter().any(|s| {
                    *k == *s
                        || k.starts_with(&format!("{s}."))
                        || k.starts_with(&format!("{s}["))
                        || s.starts_with(&format!("{k}."))
                })
            });
        // one error per key: the first check that fails says it
        let repeated = key.as_ref().is_some_and(|k| {
            self.errors
                .borrow()
                .iter()
                .any(|x| matches!(x, ConfigError::Invalid(d) if d.key.as_ref() == Some(k)))
        });
        if !quiet && !repeated {
            self.errors.borrow_mut().push(e);
        }
    }

    /// The errors noted so far as one error (for a load that cannot go on).
    fn fail(&self) -> ConfigError {
        self.finish()
            .err()
            .unwrap_or_else(|| ConfigError::Usage("the pipeline cannot be loaded".into()))
    }

    /// The errors noted so far, as one error (none: `Ok`).
    fn finish(&self) -> Result<(), ConfigError> {
        let mut errors = self.errors.take();
        // in file order; errors about the command line come last
        errors.sort_by_key(|e| match e {
            ConfigError::Invalid(d) => (d.line, d.column),
            _ => (usize::MAX, 0),
        });
        errors.truncate(MAX_ERRORS);
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }

    fn at(&self, span: Range<usize>, key: Option<String>, message: String) -> ConfigError {
        let message = self.secrets.redact(&message);
        if span.start > self.text.len() {
            let arg = self
                .overrides
                .iter()
                .find(|(r, _)| r.contains(&span.start) || r.end == span.start)
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            return ConfigError::Override {
                arg,
                message: match key {
                    Some(k) => format!("{k}: {message}"),
                    None => message,
                },
            };
        }
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..start].chars().count() + 1;
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let source_line = self.text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let end = span.end.clamp(start, line_end);
        let width = self.text[start..end].chars().count();
        ConfigError::Invalid(Box::new(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message,
            source_line,
            width,
        }))
    }

    /// Whether an error is about a value written with `${…}` (its line holds one).
    fn about_env_value(&self, e: &ConfigError) -> bool {
        let ConfigError::Invalid(d) = e else {
            return false;
        };
        self.text
            .lines()
            .nth(d.line.saturating_sub(1))
            .is_some_and(|l| l.contains("${"))
    }

    fn tree_err(&self, tree: &DeTable<'_>, e: tree::TreeError) -> ConfigError {
        let key = tree::key_at(tree, e.span.start);
        self.at(e.span, key, e.message)
    }

    fn serde_err(&self, tree: &DeTable<'_>, e: toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let mut key = tree::key_at(tree, span.start);
        let message = polish(e.message(), &mut key);
        self.at(span, key, message)
    }

    /// An error about the value of a dotted key (for checks after serde).
    fn key(&self, tree: &DeTable<'_>, key: &str, message: impl Into<String>) -> ConfigError {
        let span = span_of(tree, key).unwrap_or(0..0);
        self.at(span, Some(key.to_string()), message.into())
    }
}

/// The span of the value at a dotted key (`transform[2].expr`), if the file has it.
fn span_of(tree: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    let mut table = tree;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let mut v = table.get(name)?;
        if let Some(i) = index {
            v = match v.get_ref() {
                DeValue::Array(a) => a.get(i)?,
                _ => return None,
            };
        }
        if parts.peek().is_none() {
            return Some(v.span());
        }
        table = v.get_ref().as_table()?;
    }
    None
}

/// Turn serde's wording into the user's: keys, kinds, and what is allowed.
fn polish(message: &str, key: &mut Option<String>) -> String {
    let list = |s: &str| s.replace('`', "").replace(" or ", ", ");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, allowed) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = allowed
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ");
        let mut allowed = list(allowed);
        if key
            .as_deref()
            .is_some_and(|k| k.starts_with("source.pagination"))
        {
            allowed = format!("{allowed}, {}", pagination::COMMON_KEYS.join(", "));
        }
        if allowed.contains("there are no fields") || allowed.is_empty() {
            return format!("unknown key `{field}`; this table takes no keys besides `kind`");
        }
        return match did_you_mean(field, &allowed) {
            Some(k) => {
                format!("unknown key `{field}`; did you mean `{k}`? allowed here: {allowed}")
            }
            None => format!("unknown key `{field}`; allowed here: {allowed}"),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (variant, allowed) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = list(
            allowed
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected "),
        );
        if variant == tree::NO_KIND {
            if let Some(k) = key.as_mut() {
                k.push_str(".kind");
            }
            return format!("missing key `kind`; expected one of: {allowed}");
        }
        return match did_you_mean(variant, &allowed) {
            Some(k) => {
                format!("unknown value `{variant}`; did you mean `{k}`? expected one of: {allowed}")
            }
            None => format!("unknown value `{variant}`; expected one of: {allowed}"),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        *key = Some(match key.take() {
            Some(k) if !k.is_empty() => format!("{k}.{field}"),
            _ => field.to_string(),
        });
        return format!("missing key `{field}`, which is required here");
    }
    message
        .trim_end()
        .replace("expected usize", "expected a whole number")
        .replace("expected u64", "expected a whole number")
        .replace("expected u32", "expected a whole number")
        .replace("expected u16", "expected a whole number")
        .replace("expected i64", "expected an integer")
        .replace("expected f32", "expected a number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
}

/// For serde's "unknown variant `x`, expected one of ..." the variant to go
/// on with: the closest one, or the first.
fn guess_kind(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown variant `")?;
    let (typed, allowed) = rest.split_once('`')?;
    let allowed = allowed
        .trim_start_matches(", expected one of ")
        .trim_start_matches(", expected ")
        .replace('`', "")
        .replace(" or ", ", ");
    did_you_mean(typed, &allowed)
        .or_else(|| allowed.split(", ").next())
        .map(str::to_string)
        .filter(|k| !k.is_empty() && *k != typed)
}

/// The allowed name (from a `, `-separated list) closest to a misspelt one,
/// when it is close enough to be what was meant.
fn did_you_mean<'a>(typed: &str, allowed: &'a str) -> Option<&'a str> {
    allowed
        .split(", ")
        .map(str::trim)
        .map(|k| (strsim::jaro_winkler(&typed.to_ascii_lowercase(), k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// SQLite identifiers we create: letters, digits, `_`; not our own or SQLite's.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "`{name}` is not a table name: use letters, digits and `_`, starting with a letter, at most 64 characters"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("_ingest") || lower.starts_with("sqlite_") {
        return Err(format!(
            "`{name}` is reserved (`_ingest*` and `sqlite_*` tables belong to ingest and SQLite)"
        ));
    }
    Ok(())
}

/// Every check serde cannot make; each failure is pushed to `ctx`.
fn check(p: &Pipeline, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    match &p.source {
        SourceConfig::Http(h) => check_source(h, ctx, tree),
        SourceConfig::Files(f) => {
            checks::files(f, ctx, tree);
            checks::own_output(f, &p.sink, ctx, tree);
        }
    }
    check_sink(p, ctx, tree);
    for (i, t) in p.transforms.iter().enumerate() {
        for (key, message) in t.problems() {
            ctx.push(ctx.key(tree, &format!("transform[{i}].{key}"), message));
        }
    }
    checks::limits(p, ctx, tree);
    checks::placeholders(p, ctx, tree);
    checks::columns(p, ctx, tree);
    checks::sink_path(p, ctx, tree);
}

/// The source's URL, headers, retry, pagination and partition.
fn check_source(s: &HttpSourceConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    check_format(s, ctx, tree);
    // the whole URL from a partition: `base_url = ""`, `path = "{value}"`
    let from_partition = s.base_url.is_empty() && s.path.starts_with('{');
    match url::Url::parse(&s.base_url) {
        _ if from_partition => {}
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
        Ok(u) => {
            ctx.push(ctx.key(
                tree,
                "source.base_url",
                format!(
                    "scheme `{}` is not supported; use http or https",
                    u.scheme()
                ),
            ));
        }
        Err(e) => {
            ctx.push(ctx.key(
                tree,
                "source.base_url",
                format!(
                    "`{}` is not a URL ({e}); write it like \"https://api.example.com\"",
                    s.base_url
                ),
            ));
        }
    }
    if s.concurrency == 0 {
        ctx.push(ctx.key(tree, "source.concurrency", "must be at least 1"));
    }
    if s.timeout.is_zero() {
        ctx.push(ctx.key(tree, "source.timeout", "must be longer than zero"));
    }
    if s.body.is_some() && s.method == source::Method::Get {
        ctx.push(ctx.key(tree, "source.body", "a body needs `method = \"POST\"`"));
    }
    for (name, value) in &s.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            ctx.push(ctx.key(
                tree,
                "source.headers",
                format!("`{name}` is not a header name"),
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            ctx.push(ctx.key(
                tree,
                &format!("source.headers.{name}"),
                "a header value is visible ASCII text",
            ));
        }
    }
    if s.retry.max_attempts == 0 {
        ctx.push(ctx.key(
            tree,
            "source.retry.max_attempts",
            "must be at least 1 (the first try counts)",
        ));
    }
    if s.retry.multiplier.is_nan() || s.retry.multiplier < 1.0 {
        ctx.push(ctx.key(tree, "source.retry.multiplier", "must be 1.0 or more"));
    }
    check_pagination(&s.pagination, ctx, tree);
    if let source::AuthConfig::OAuth2(o) = &s.auth {
        checks::oauth2(o, ctx, tree);
    }
    if let Some(part) = &s.partition
        && let Err((key, m)) = check_partition(part, s)
    {
        ctx.push(ctx.key(tree, &format!("source.partition.{key}"), m));
    }
}

/// `format` and `[source.html]` agree, and the selectors compile.
fn check_format(s: &HttpSourceConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    use source::ResponseFormat;
    match (&s.format, &s.html) {
        (ResponseFormat::Html, html) => {
            for (k, m) in html.clone().unwrap_or_default().problems() {
                ctx.push(ctx.key(tree, &format!("source.html.{k}"), m));
            }
        }
        (_, Some(_)) => ctx.push(ctx.key(
            tree,
            "source.html",
            "applies to `format = \"html\"`; set it, or remove [source.html]",
        )),
        _ => {}
    }
    check_locations(s, ctx, tree);
}

/// Where the pagination reads a response must be there in the source's
/// format: a streamed body is not a JSON document, a web page is read by
/// `html:` selectors, and `html:` reads only web pages.
fn check_locations(s: &HttpSourceConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    use source::ResponseFormat;
    use values::Location;
    for (name, loc) in s.pagination.locations() {
        let key = format!("source.pagination.{name}");
        for (_, m) in loc.problems() {
            ctx.push(ctx.key(tree, &key, m));
        }
        let last_record = if name == "total" || name == "has_more" {
            ""
        } else {
            " or `last_record:field`"
        };
        let problem = match (&s.format, loc) {
            (ResponseFormat::Ndjson | ResponseFormat::Csv, Location::Body(_)) => format!(
                "reads the JSON body, and an NDJSON or CSV body is not one: use `header:Name`{last_record} (or remove it)"
            ),
            (ResponseFormat::Html, Location::Body(_)) => format!(
                "reads the JSON body, and a web page is not one: use `html:selector` (its text) or `html:selector@attr`, like `html:a[rel=next]@href`{}",
                if last_record.is_empty() { "" } else { ", or `last_record:field`" }
            ),
            (ResponseFormat::Html, _) | (_, Location::Body(_) | Location::Header(_) | Location::LastRecord(_)) => continue,
            (_, Location::Html(_)) => {
                "reads a web page, and this source's format is not html: set `format = \"html\"`, or use a body path or `header:Name`".to_string()
            }
        };
        ctx.push(ctx.key(tree, &key, &problem));
    }
}

/// Page sizes and page counts that make a walk.
fn check_pagination(pg: &PaginationConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    if pg.max_pages == Some(0) {
        ctx.push(ctx.key(tree, "source.pagination.max_pages", "must be at least 1"));
    }
    match &pg.kind {
        PaginationKind::PageNumber(k) if k.size == Some(0) => {
            ctx.push(ctx.key(tree, "source.pagination.size", "must be at least 1"));
        }
        // (a `size` that is there but wrong has its own error)
        PaginationKind::PageNumber(k)
            if k.size_param.is_some()
                && k.size.is_none()
                && span_of(tree, "source.pagination.size").is_none() =>
        {
            ctx.push(ctx.key(
                tree,
                "source.pagination.size_param",
                "sends the page size, but `size` is not set: add `size = 100` (or the size you want); \
                 for a page size the server fixes, write `size` alone, without `size_param`",
            ));
        }
        PaginationKind::Offset(k) if k.limit == 0 => {
            ctx.push(ctx.key(tree, "source.pagination.limit", "must be at least 1"));
        }
        _ => {}
    }
}

/// The sink's table, batch size, primary key and declared columns.
fn check_sink(p: &Pipeline, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let k = &p.sink;
    if let SinkConfig::Jsonl(c) = k {
        checks::jsonl(c, ctx, tree);
    } else if let Err(m) = check_table_name(k.table()) {
        ctx.push(ctx.key(tree, "sink.table", m));
    }
    if k.batch_size() == 0 {
        ctx.push(ctx.key(tree, "sink.batch_size", "must be at least 1"));
    }
    if let SinkConfig::Postgres(c) = k {
        checks::postgres(c, ctx, tree);
    }
    if k.write() == WriteMode::Merge && k.primary_key().is_empty() {
        let at = if span_of(tree, "sink.write").is_some() {
            "sink.write"
        } else {
            "sink"
        };
        ctx.push(ctx.key(
            tree,
            at,
            "`write = \"merge\"` needs `primary_key`, the fields that identify a record",
        ));
    }
    for (i, c) in k.primary_key().iter().enumerate() {
        if c.is_empty() {
            ctx.push(ctx.key(
                tree,
                "sink.primary_key",
                format!("column {} of the primary key is empty", i + 1),
            ));
        }
    }
    for name in k.columns().keys() {
        if name.is_empty() || name.to_ascii_lowercase().starts_with("_ingest") {
            ctx.push(ctx.key(
                tree,
                "sink.columns",
                format!("`{name}` cannot be a column name"),
            ));
        }
    }
}

/// A partition must be able to reach the request, and its bounds must parse.
fn check_partition(
    part: &source::PartitionConfig,
    s: &HttpSourceConfig,
) -> Result<(), (&'static str, String)> {
    use source::PartitionConfig as P;
    let text = format!(
        "{} {} {}",
        s.path,
        s.params
            .values()
            .map(|v| v.0.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        s.body.as_ref().map(|b| b.to_string()).unwrap_or_default()
    );
    let uses = |name: &str| text.contains(&format!("{{{name}}}"));
    match part {
        P::List(l) if l.values.is_empty() => {
            return Err(("values", "list at least one value".into()));
        }
        P::List(l) if l.param.is_none() && !uses("value") => {
            return Err(("param", "set `param`, or use `{value}` in the path, params or body: otherwise every walk is the same".into()));
        }
        P::List(_) | P::Range(_) | P::Dates(_)
            if let Err(e) = windows::count(part, &Default::default()) =>
        {
            return Err(e);
        }
        P::Range(r) if r.param.is_none() && !uses("value") => {
            return Err((
                "param",
                "set `param`, or use `{value}` in the path, params or body".into(),
            ));
        }
        // the bounds and the step were checked by `count` above
        P::Dates(d) => {
            if let Some(f) = &d.format {
                windows::format_instant(jiff::Timestamp::UNIX_EPOCH, Some(f))
                    .map_err(|m| ("format", m))?;
            }
            if d.start_param.is_none() && d.end_param.is_none() && !uses("start") && !uses("end") {
                return Err(("start_param", "set `start_param`/`end_param`, or use `{start}`/`{end}` in the path, params or body".into()));
            }
        }
        P::Query(q) if q.mark.is_some() && !q.sql.contains("{mark}") => {
            return Err((
                "sql",
                "`mark` is set but the query does not use `{mark}`: write `WHERE {mark} IS NULL OR updated_at > {mark}`".into(),
            ));
        }
        P::Query(q) => {
            let lower = q.sql.trim_start().to_ascii_lowercase();
            if !(lower.starts_with("select") || lower.starts_with("with")) {
                return Err((
                    "sql",
                    "a partition query is a SELECT on the sink database".into(),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
