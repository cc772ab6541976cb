//! Checks of a loaded pipeline that serde cannot make: every number in a
//! range that works, placeholders that something fills, names that SQLite
//! keeps apart, and a sink path that can hold a database. All of them run
//! in `validate` and before a run touches anything (exit 2).

use std::path::Path;

use toml::de::DeTable;

use super::sink::{JsonlSinkConfig, WriteMode};
use super::source::{
    ClientAuth, FileFormat, FilesSourceConfig, OAuth2Auth, OAuth2Grant, PartitionConfig,
};
use super::{Ctx, HttpSourceConfig, PaginationKind, Pipeline, PostgresSinkConfig, SinkConfig};
use std::time::Duration;

/// Requests in flight per source, at most. More only piles speculative
/// requests on an API (100,000 sent ~2,900 requests to a 2-record API).
pub const MAX_CONCURRENCY: usize = 256;
/// Records per page (`size`, `limit`) and per transaction, at most.
pub const MAX_PAGE: u64 = 100_000;
/// Records per transaction, at most.
pub const MAX_BATCH: usize = 100_000;
/// Attempts per request, at most.
pub const MAX_ATTEMPTS: u32 = 100;
/// Timeouts and delays, at most: a day.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(86_400);
/// Lookback, at most: 100 years.
pub const MAX_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

fn within(v: u64, lo: u64, hi: u64) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{v} is out of range: allowed {lo} to {hi}"))
    }
}

fn at_most(v: std::time::Duration, hi: std::time::Duration) -> Result<(), String> {
    if v <= hi {
        Ok(())
    } else {
        Err(format!(
            "{} is too long: at most {}",
            humantime::format_duration(v),
            humantime::format_duration(hi)
        ))
    }
}

/// Numbers in ranges that work, and the name.
pub(super) fn limits(p: &Pipeline, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let key = |k: &str, r: Result<(), String>| {
        if let Err(m) = r {
            ctx.push(ctx.key(tree, k, m));
        }
    };
    if p.name.trim().is_empty() || p.name.chars().any(char::is_control) {
        ctx.push(ctx.key(
            tree,
            "name",
            "the pipeline's name is empty or holds a control character; remove `name` to use the file name",
        ));
    }
    key(
        "sink.batch_size",
        within(p.sink.batch_size() as u64, 1, MAX_BATCH as u64),
    );
    key(
        "source.concurrency",
        within(p.source.concurrency() as u64, 1, MAX_CONCURRENCY as u64),
    );
    if let Some(s) = p.source.http() {
        http_limits(s, ctx, tree);
    }
}

/// The numbers of an HTTP source.
fn http_limits(s: &HttpSourceConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let key = |k: &str, r: Result<(), String>| {
        if let Err(m) = r {
            ctx.push(ctx.key(tree, k, m));
        }
    };
    for &status in &s.pagination.stop_on_status {
        let ok = (400..600).contains(&status);
        key(
            "source.pagination.stop_on_status",
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{status} is not an error status: list 4xx or 5xx statuses, like [404, 416]"
                ))
            },
        );
    }
    key("source.timeout", at_most(s.timeout, MAX_WAIT));
    key(
        "source.retry.max_attempts",
        within(u64::from(s.retry.max_attempts), 1, u64::from(MAX_ATTEMPTS)),
    );
    key(
        "source.retry.max_delay",
        at_most(s.retry.max_delay, MAX_WAIT),
    );
    if s.retry.initial_delay > s.retry.max_delay {
        ctx.push(ctx.key(
            tree,
            "source.retry.initial_delay",
            "is longer than `max_delay`",
        ));
    }
    if !(1.0..=100.0).contains(&s.retry.multiplier) {
        ctx.push(ctx.key(tree, "source.retry.multiplier", "must be from 1.0 to 100"));
    }
    match &s.pagination.kind {
        PaginationKind::PageNumber(k) => {
            if let Some(size) = k.size {
                key("source.pagination.size", within(size, 1, MAX_PAGE));
            }
        }
        PaginationKind::Offset(k) => key("source.pagination.limit", within(k.limit, 1, MAX_PAGE)),
        _ => {}
    }
    if let Some(inc) = &s.incremental
        && let Some(back) = inc.lookback
    {
        key("source.incremental.lookback", at_most(back, MAX_LOOKBACK));
        let v = inc.initial.0.trim();
        if v.parse::<jiff::Timestamp>().is_err() && v.parse::<f64>().is_err() {
            ctx.push(ctx.key(
                tree,
                "source.incremental.initial",
                format!(
                    "`{v}` cannot be moved back by `lookback`: write an RFC 3339 time (2024-01-01T00:00:00Z) or a number"
                ),
            ));
        }
    }
}

/// `{name}` in `path` and `params` must be filled by the partition.
pub(super) fn placeholders(p: &Pipeline, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let Some(source) = p.source.http() else {
        return;
    };
    let filled: &[&str] = match &source.partition {
        None => &[],
        Some(PartitionConfig::List(_) | PartitionConfig::Range(_) | PartitionConfig::Lines(_)) => {
            &["value"]
        }
        Some(PartitionConfig::Dates(_)) => &["start", "end"],
        // a query's columns are known only when it runs
        Some(PartitionConfig::Query(_)) => return,
    };
    let mut places = vec![("source.path".to_string(), source.path.clone())];
    for (k, v) in &source.params {
        places.push((format!("source.params.{k}"), v.0.clone()));
    }
    for (at, text) in places {
        for name in names(&text) {
            if !filled.contains(&name) {
                let fills = if filled.is_empty() {
                    "this pipeline has no [source.partition] to fill it".to_string()
                } else {
                    format!("its partition fills {}", list(filled))
                };
                ctx.push(ctx.key(
                    tree,
                    &at,
                    format!("`{{{name}}}` is filled by nothing: {fills}; write `{{{{` and `}}}}` for literal braces"),
                ));
            }
        }
    }
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{{{n}}}`"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The `{name}` placeholders of a text (`{{` and `}}` are literal braces).
fn names(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('{') {
            rest = stripped;
            continue;
        }
        match after.find('}') {
            Some(j)
                if j > 0
                    && after[..j]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

/// Declared columns that SQLite would take for one (`id` and `ID`).
pub(super) fn columns(p: &Pipeline, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let mut seen: Vec<&str> = Vec::new();
    for name in p.sink.columns().keys() {
        if let Some(other) = seen.iter().find(|o| o.eq_ignore_ascii_case(name)) {
            ctx.push(ctx.key(
                tree,
                "sink.columns",
                format!(
                    "`{other}` and `{name}` differ only in case, and SQLite column names do not"
                ),
            ));
        }
        seen.push(name);
    }
}

/// The sink path can hold a database: not empty, not a directory, not under
/// a file, an existing file is SQLite, and the directory is writable (the
/// lock, WAL and journal files go beside it). Nothing is created here.
pub(super) fn sink_path(p: &Pipeline, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let SinkConfig::Sqlite(c) = &p.sink else {
        return;
    };
    if let Err(m) = sqlite_path(&c.path) {
        ctx.push(ctx.key(tree, "sink.path", m));
    }
}

/// See [`sink_path`].
pub fn sqlite_path(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err("is empty: write the database file, like \"data/posts.db\"".into());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(format!(
                "`{shown}` is a directory: name a database file in it"
            ));
        }
        Ok(m) if m.len() > 0 => {
            use std::io::Read;
            let mut head = [0u8; 16];
            let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
            if read.is_err() || &head != b"SQLite format 3\0" {
                return Err(format!(
                    "`{shown}` exists and is not a SQLite database; name another file"
                ));
            }
        }
        _ => {}
    }
    // the nearest directory that exists: it must be one, and writable
    let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    loop {
        let here = dir.unwrap_or(Path::new("."));
        match std::fs::metadata(here) {
            Ok(m) if m.is_dir() => {
                return rustix::fs::access(here, rustix::fs::Access::WRITE_OK).map_err(|e| {
                    format!(
                        "cannot write in `{}` ({e}): the database and its lock file go there",
                        here.display()
                    )
                });
            }
            Ok(_) => {
                return Err(format!(
                    "`{}` is a file, so `{shown}` cannot be created under it",
                    here.display()
                ));
            }
            Err(_) => dir = here.parent().filter(|d| !d.as_os_str().is_empty()),
        }
        if dir.is_none() && here == Path::new(".") {
            return Err(format!("no directory of `{shown}` exists"));
        }
    }
}

/// PostgreSQL's longest identifier, in bytes (longer ones are cut short).
pub const PG_NAME_MAX: usize = 63;

/// A `postgres` sink: the URL's scheme, a schema and table PostgreSQL keeps
/// as written (the staging table's name included), a lease a heartbeat can
/// keep.
pub(super) fn postgres(c: &PostgresSinkConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let scheme_ok = url::Url::parse(&c.url)
        .is_ok_and(|u| matches!(u.scheme(), "postgres" | "postgresql") && u.has_host());
    if !scheme_ok {
        ctx.push(ctx.key(
            tree,
            "sink.url",
            "is not a PostgreSQL URL: write postgres://user:password@host:port/database, usually \"${env:DATABASE_URL}\"",
        ));
    }
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= PG_NAME_MAX
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !ident(&c.schema) || c.schema == "ingest" || c.schema.starts_with("pg_") {
        ctx.push(ctx.key(
            tree,
            "sink.schema",
            format!(
                "`{}` cannot be the data's schema: use letters, digits and `_`, at most {PG_NAME_MAX} bytes; `ingest` and `pg_*` are taken",
                c.schema
            ),
        ));
    }
    // the staging table is `_ingest_staging__<table>`, which must fit too
    let room = PG_NAME_MAX - "_ingest_staging__".len();
    if c.table.len() > room {
        ctx.push(ctx.key(
            tree,
            "sink.table",
            format!(
                "is longer than {room} characters, which a PostgreSQL staging table's name leaves"
            ),
        ));
    }
    for name in c.columns.keys().filter(|n| n.len() > PG_NAME_MAX) {
        ctx.push(ctx.key(
            tree,
            "sink.columns",
            format!("`{name}` is longer than PostgreSQL's {PG_NAME_MAX} bytes for a name"),
        ));
    }
    if c.lease < Duration::from_secs(1) || c.lease > Duration::from_secs(3600) {
        ctx.push(ctx.key(
            tree,
            "sink.lease",
            "must be between 1s and 1h: a heartbeat renews it three times per lease",
        ));
    }
}

/// A files source: globs that compile, a delimiter of one character, and
/// `records` only where a JSON document has it.
pub(super) fn files(f: &FilesSourceConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    if f.paths.is_empty() {
        ctx.push(ctx.key(
            tree,
            "source.paths",
            "lists no file: write globs like [\"in/*.json\", \"in/**/*.csv\"]",
        ));
    }
    for g in &f.paths {
        if let Err(e) = globset::Glob::new(g) {
            ctx.push(ctx.key(tree, "source.paths", format!("`{g}` is not a glob: {e}")));
        }
    }
    if let Some(d) = &f.delimiter
        && (d.len() != 1 || !d.is_ascii())
    {
        ctx.push(ctx.key(
            tree,
            "source.delimiter",
            "is one ASCII character, like \",\" or \";\" or \"\\t\"",
        ));
    }
    if !f.records.is_root() && matches!(f.format, FileFormat::Ndjson | FileFormat::Csv) {
        ctx.push(ctx.key(
            tree,
            "source.records",
            "applies to JSON documents; NDJSON and CSV files hold one record a line or row",
        ));
    }
}

/// A files source must not read the JSON Lines file its sink writes: every
/// run would read the lines the last one wrote, and store them again.
pub(super) fn own_output(
    f: &FilesSourceConfig,
    sink: &SinkConfig,
    ctx: &Ctx<'_>,
    tree: &DeTable<'_>,
) {
    let SinkConfig::Jsonl(c) = sink else {
        return;
    };
    if c.is_stdout() {
        return;
    }
    for g in &f.paths {
        let Ok(glob) = globset::GlobBuilder::new(g).literal_separator(true).build() else {
            continue;
        };
        let candidate = match Path::new(g).is_absolute() {
            true => c.path.as_path(),
            false => match c.path.strip_prefix(&f.base) {
                Ok(rel) => rel,
                Err(_) => continue,
            },
        };
        if glob.compile_matcher().is_match(candidate) {
            ctx.push(ctx.key(
                tree,
                "sink.path",
                format!(
                    "is matched by source.paths `{g}`: each run would read the lines the last one wrote and store them again; write the file elsewhere, or narrow the glob"
                ),
            ));
            return;
        }
    }
}

/// A JSON Lines sink: a file (or `-`) and a write mode a file can keep.
pub(super) fn jsonl(c: &JsonlSinkConfig, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    if c.write == WriteMode::Merge {
        ctx.push(ctx.key(
            tree,
            "sink.write",
            "a JSON Lines file is written `append` or `replace`; `merge` needs a table (kind = \"sqlite\" or \"postgres\")",
        ));
    }
    if c.is_stdout() {
        return;
    }
    if c.path.as_os_str().is_empty() || c.path.file_name().is_none() {
        ctx.push(ctx.key(
            tree,
            "sink.path",
            "is not a file: write the file, like \"out/posts.jsonl\", or \"-\" for standard output",
        ));
        return;
    }
    if c.path.is_dir() {
        ctx.push(ctx.key(
            tree,
            "sink.path",
            "is a directory: write a file in it, like \"out/posts.jsonl\"",
        ));
    }
}

/// An OAuth2 auth section: a token URL, and what its grant needs.
pub(super) fn oauth2(o: &OAuth2Auth, ctx: &Ctx<'_>, tree: &DeTable<'_>) {
    let key = |k: &str, m: &str| ctx.push(ctx.key(tree, &format!("source.auth.{k}"), m));
    if !url::Url::parse(&o.token_url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
    {
        key(
            "token_url",
            "is not an http(s) URL: write the token endpoint, like \"https://auth.example.com/oauth/token\"",
        );
    }
    if o.client_id.trim().is_empty() {
        key("client_id", "must not be empty");
    }
    match o.grant {
        OAuth2Grant::ClientCredentials if o.client_secret.is_empty() => key(
            "client_secret",
            "`grant = \"client_credentials\"` needs the client's secret",
        ),
        OAuth2Grant::RefreshToken if o.refresh_token.as_deref().is_none_or(str::is_empty) => key(
            "grant",
            "`grant = \"refresh_token\"` needs `refresh_token`, the token to start from",
        ),
        OAuth2Grant::ClientCredentials if o.refresh_token.is_some() => key(
            "refresh_token",
            "is used only with `grant = \"refresh_token\"`",
        ),
        _ => {}
    }
    if o.client_auth == ClientAuth::Basic && o.client_secret.is_empty() {
        key(
            "client_auth",
            "`basic` sends the client's secret: set `client_secret`, or use `body`",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_names() {
        assert_eq!(names("/posts/{id}/c/{ x }/{{lit}}/{a_b}"), ["id", "a_b"]);
        assert_eq!(names("{}{"), Vec::<&str>::new());
    }
}
