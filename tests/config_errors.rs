//! A wrong pipeline file: file:line:col, the key, what is allowed, exit 2,
//! and not one request sent.

use crate::common;

use common::*;

const GOOD: &str = r#"[source]
kind = "http"
base_url = "${API_BASE}"
path = "/posts"

[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 10

[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
write = "merge"
primary_key = ["id"]
"#;

async fn refused(text: &str, expect: &[&str]) {
    let api = mock(20).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "bad.toml", text);
    for cmd in ["run", "validate"] {
        let out = ingest(dir.path(), &api.url(), &[cmd, p.to_str().unwrap_or("")]).await;
        assert_eq!(out.code, 2, "{cmd}: {out:?}");
        for e in expect {
            assert!(
                out.stderr.contains(e),
                "{cmd}: expected {e:?} in:\n{}",
                out.stderr
            );
        }
    }
    assert!(
        api.requests().is_empty(),
        "the mock API saw {:?}",
        api.requests()
    );
    assert!(
        !dir.path().join("out.db").exists(),
        "a database was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_file_runs() {
    // the base of every case below is itself valid: each case fails for its one reason
    let api = mock(20).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "good.toml", GOOD);
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key() {
    refused(
        &GOOD.replace("size = 10", "sise = 10"),
        &["bad.toml:10:1: source.pagination.sise: unknown key `sise`; did you mean `size`? allowed here: param, start, size_param, size"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type() {
    refused(
        &GOOD.replace("size = 10", "size = \"ten\""),
        &["bad.toml:10:8: source.pagination.size: invalid type: string \"ten\""],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_key() {
    refused(
        &GOOD.replace("table = \"posts\"\n", ""),
        &["bad.toml:12:1: sink.table: missing key `table`"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_env_var() {
    refused(
        &GOOD.replace("${API_BASE}", "${INGEST_TEST_UNSET_VARIABLE}"),
        &["bad.toml:3:12: source.base_url: environment variable `INGEST_TEST_UNSET_VARIABLE` is not set"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pagination_kind() {
    refused(
        &GOOD.replace("\"page_number\"", "\"pages\""),
        &["bad.toml:7:8: source.pagination.kind: unknown value `pages`; did you mean `page_number`? expected one of: page_number, offset, cursor, next_url, link_header, none"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_table_name() {
    refused(
        &GOOD.replace(
            "table = \"posts\"",
            "table = \"posts\\\"; DROP TABLE x; --\"",
        ),
        &["bad.toml:15:9: sink.table: `posts\"; DROP TABLE x; --` is not a table name"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_file_wrong_means_nothing_runs() {
    let api = mock(20).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = write(dir.path(), "good.toml", GOOD);
    let bad = write(
        dir.path(),
        "bad.toml",
        &GOOD.replace("kind = \"sqlite\"", "kind = \"duckdb\""),
    );
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            good.to_str().unwrap_or(""),
            bad.to_str().unwrap_or(""),
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "bad.toml:13:8: sink.kind: unknown value `duckdb`; expected one of: sqlite, postgres"
        ),
        "{}",
        out.stderr
    );
    assert!(api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_line_is_exit_2() {
    let api = mock(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "good.toml", GOOD);
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            p.to_str().unwrap_or(""),
            "--set",
            "source.concurrency=lots",
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("--set source.concurrency=lots: source.concurrency: invalid type"),
        "{}",
        out.stderr
    );
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", "--no-such-flag", p.to_str().unwrap_or("")],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(api.requests().is_empty());
}

/// Five mistakes in one file: five errors in one run, in file order, each on
/// its own `ingest: error:` line; nothing sent, nothing created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mistakes_five_errors() {
    let text = GOOD
        .replace(
            "path = \"/posts\"",
            "path = \"/posts\"\nconcurency = 4\ntimeout = 5",
        )
        .replace("kind = \"page_number\"", "kind = \"page_numbr\"")
        .replace("table = \"posts\"", "table = \"1posts\"\nbatch_size = 0");
    let text = format!("{text}\n[[transform]]\nkind = \"rename\"\nfeilds = {{ a = \"b\" }}\n");
    let expect = [
        "source.concurency: unknown key `concurency`; did you mean `concurrency`?",
        "source.timeout: invalid type: integer `5`, expected a duration",
        "source.pagination.kind: unknown value `page_numbr`; did you mean `page_number`?",
        "sink.table: `1posts` is not a table name",
        "sink.batch_size:",
        "transform[0].feilds: unknown key `feilds`; did you mean `fields`?",
    ];
    refused(&text, &expect).await;
    let api = mock(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "bad.toml", &text);
    let out = ingest(
        dir.path(),
        &api.url(),
        &["validate", p.to_str().unwrap_or("")],
    )
    .await;
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ingest: error:"))
        .collect();
    assert_eq!(lines.len(), expect.len(), "{}", out.stderr);
    for (line, e) in lines.iter().zip(expect) {
        assert!(line.contains(e), "{line} should say {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sink_mistakes_in_one_pass() {
    let sink = "[sink]\nkind = \"postgres\"\nurl = \"mysql://db/x\"\nschema = \"ingest\"\n\
                table = \"a_table_name_far_too_long_for_a_staging_table_x\"\nlease = \"100ms\"\n";
    let text = format!("{}{sink}", GOOD.split("[sink]").next().unwrap_or(""));
    refused(
        &text,
        &[
            "bad.toml:14:7: sink.url: is not a PostgreSQL URL",
            "bad.toml:15:10: sink.schema: `ingest` cannot be the data's schema",
            "bad.toml:16:9: sink.table: is longer than 46 characters",
            "bad.toml:17:9: sink.lease: must be between 1s and 1h",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_param_without_size_suggests_size_alone() {
    refused(
        &GOOD.replace("size = 10\n", ""),
        &["bad.toml:9:14: source.pagination.size_param: sends the page size, but `size` is not set: add `size = 100` (or the size you want); for a page size the server fixes, write `size` alone, without `size_param`"],
    )
    .await;
}
