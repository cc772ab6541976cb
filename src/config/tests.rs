//! Load errors: every one names file:line:col, the key, and what is allowed.

use std::path::Path;

use super::*;

fn http(p: &Pipeline) -> &HttpSourceConfig {
    p.source
        .http()
        .unwrap_or_else(|| panic!("not an HTTP source"))
}

const BASE: &str = r#"name = "posts"

[source]
kind = "http"
base_url = "${API_BASE:-http://127.0.0.1:9}"
path = "/posts"
params = { _limit = "10" }

[source.auth]
kind = "bearer"
token = "${env:API_TOKEN}"

[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 10
total = "header:X-Total-Count"

[[transform]]
kind = "rename"
fields = { userId = "user_id" }

[sink]
kind = "sqlite"
path = "data/posts.db"
table = "posts"
write = "merge"
primary_key = ["id"]
"#;

fn env(name: &str) -> Option<String> {
    (name == "API_TOKEN").then(|| "tok-123456".to_string())
}

fn load_with(text: &str, overrides: &[String]) -> Result<Pipeline, ConfigError> {
    load_str(
        text,
        Path::new("p.toml"),
        &LoadOptions {
            overrides,
            env: &env,
            no_env: false,
        },
    )
}

fn err(text: &str) -> String {
    match load_with(text, &[]) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loads_the_example() {
    let p = load_with(BASE, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.name, "posts");
    assert_eq!(http(&p).base_url, "http://127.0.0.1:9");
    assert!(matches!(http(&p).auth, source::AuthConfig::Bearer(ref b) if b.token == "tok-123456"));
    assert!(
        matches!(http(&p).pagination.kind, PaginationKind::PageNumber(ref k) if k.size == Some(10))
    );
    assert!(http(&p).pagination.total.is_some());
    assert_eq!(p.sink.primary_key(), vec!["id".to_string()]);
    assert_eq!(p.secrets.redact("Bearer tok-123456"), "Bearer ***");
}

#[test]
fn unknown_key_in_kinded_table() {
    let e = err(&BASE.replace("size = 10", "sise = 10"));
    assert!(e.contains("p.toml:17:1: source.pagination.sise: unknown key `sise`; did you mean `size`? allowed here: param, start, size_param, size"), "{e}");
    // and, with `size` gone, the size_param that sends nothing
    assert!(
        e.starts_with(
            "p.toml:16:14: source.pagination.size_param: sends the page size, but `size` is not set"
        ),
        "{e}"
    );
    assert!(e.contains("max_pages"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = err(&BASE.replace("size = 10", "size = \"ten\""));
    assert!(
        e.starts_with(
            "p.toml:17:8: source.pagination.size: invalid type: string \"ten\", expected"
        ),
        "{e}"
    );
}

#[test]
fn unknown_kind_lists_kinds() {
    let e = err(&BASE.replace("kind = \"page_number\"", "kind = \"pages\""));
    assert!(e.starts_with("p.toml:14:8: source.pagination.kind: unknown value `pages`; did you mean `page_number`? expected one of: page_number, offset, cursor, next_url, link_header, none"), "{e}");
}

#[test]
fn missing_kind_and_missing_key() {
    let e = err(&BASE.replace("kind = \"bearer\"\n", ""));
    assert!(
        e.contains(
            "source.auth.kind: missing key `kind`; expected one of: none, bearer, basic, api_key, oauth2"
        ),
        "{e}"
    );
    let e = err(&BASE.replace("table = \"posts\"\n", ""));
    assert!(e.contains("sink.table: missing key `table`"), "{e}");
    assert!(e.starts_with("p.toml:"), "{e}");
}

#[test]
fn unknown_top_level_key() {
    let e = err(&format!("colour = 1\n{BASE}"));
    assert!(e.starts_with("p.toml:1:1: colour: unknown key `colour`; allowed here: name, description, source, transform, sink"), "{e}");
}

#[test]
fn missing_env_var() {
    let e = err(&BASE.replace("${env:API_TOKEN}", "${env:NOT_SET_ANYWHERE}"));
    assert!(
        e.starts_with(
            "p.toml:11:9: source.auth.token: environment variable `NOT_SET_ANYWHERE` is not set"
        ),
        "{e}"
    );
}

#[test]
fn bad_table_name() {
    let e = err(&BASE.replace("table = \"posts\"", "table = \"posts; DROP TABLE x\""));
    assert!(
        e.starts_with("p.toml:27:9: sink.table: `posts; DROP TABLE x` is not a table name"),
        "{e}"
    );
}

#[test]
fn merge_needs_a_key() {
    let e = err(&BASE.replace("primary_key = [\"id\"]\n", ""));
    assert!(
        e.contains("sink.write: `write = \"merge\"` needs `primary_key`"),
        "{e}"
    );
}

#[test]
fn bad_jq_and_transform_key() {
    let e = err(&format!(
        "{BASE}\n[[transform]]\nkind = \"jq\"\nexpr = \".a | nope_fn\"\n"
    ));
    assert!(
        e.contains("transform[1].expr: jq program does not compile"),
        "{e}"
    );
    let e = err(&BASE.replace("fields = { userId", "feilds = { userId"));
    assert!(
        e.contains(
            "transform[0].feilds: unknown key `feilds`; did you mean `fields`? allowed here: fields"
        ),
        "{e}"
    );
}

#[test]
fn toml_syntax_error() {
    let e = err(&BASE.replace("path = \"/posts\"", "path = \"/posts"));
    assert!(e.starts_with("p.toml:6:"), "{e}");
}

#[test]
fn overrides_apply_and_report() {
    let p = load_with(
        BASE,
        &[
            "source.params.userId=3".into(),
            "sink.table=posts2".into(),
            "source.pagination.max_pages=2".into(),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        http(&p).params.get("userId").map(|s| s.0.as_str()),
        Some("3")
    );
    assert_eq!(
        http(&p).params.get("_limit").map(|s| s.0.as_str()),
        Some("10")
    );
    assert_eq!(p.sink.table(), "posts2");
    assert_eq!(http(&p).pagination.max_pages, Some(2));
    let e = load_with(BASE, &["source.concurrency=many".into()])
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set source.concurrency=many: source.concurrency: invalid type"),
        "{e}"
    );
    let e = load_with(BASE, &["nonsense".into()])
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("write KEY=VALUE"), "{e}");
}

#[test]
fn secrets_are_masked_in_errors() {
    let e = err(&BASE.replace(
        "path = \"/posts\"",
        "path = \"/posts\"\nconcurrency = \"${env:API_TOKEN}\"",
    ));
    assert!(!e.contains("tok-123456"), "{e}");
}

#[test]
fn every_mistake_in_one_pass() {
    let text = BASE
        .replace("size = 10", "sise = 10")
        .replace("kind = \"page_number\"", "kind = \"page_numbr\"")
        .replace("table = \"posts\"", "table = \"1posts\"\nbatch_size = 0");
    let e = err(&format!(
        "{text}\n[[transform]]\nkind = \"rename\"\nfeilds = {{ a = \"b\" }}\n"
    ));
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("p.toml:")).collect();
    assert_eq!(lines.len(), 4, "{e}");
    assert!(
        lines[0].contains(
            "source.pagination.kind: unknown value `page_numbr`; did you mean `page_number`?"
        ),
        "{e}"
    );
    assert!(
        lines[1].contains("sink.table: `1posts` is not a table name"),
        "{e}"
    );
    assert!(lines[2].contains("sink.batch_size"), "{e}");
    assert!(lines[3].contains("did you mean `fields`?"), "{e}");
}

/// The loader knows no component: nothing under `src/config/` imports the
/// runtime modules (they import it), so nothing imports in a circle.
#[test]
fn config_imports_no_runtime_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut read = 0;
    for f in files.flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        read += 1;
        for module in [
            "source",
            "transform",
            "sink",
            "run",
            "ledger",
            "app",
            "state",
        ] {
            let bad = format!("crate::{module}");
            assert!(!text.contains(&bad), "{} imports {bad}", f.path().display());
        }
    }
    assert!(read >= 5, "read only {read} files of {}", dir.display());
}
