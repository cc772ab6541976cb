//! NDJSON and CSV response bodies read as streams (`format = "ndjson"` /
//! `"csv"`), against the mock's bulk exports: a whole export in one
//! response, a paginated CSV export with quoted commas, quotes and newlines,
//! bodies that start with a byte order mark, a body reset midway and asked
//! for again, and a run SIGKILLed in the
//! middle of one 40,000-record response that resumes by skipping what it
//! had stored.

use crate::common;

use std::path::Path;

use common::*;
use ingest_mock::{Faults, MockApi, MockConfig};
use serde_json::Value;

fn pipeline(dir: &Path, path: &str, format: &str, pagination: &str, sink_extra: &str) -> String {
    let text = format!(
        r#"[source]
kind = "http"
base_url = "${{API_BASE}}"
path = "{path}"
format = "{format}"

[source.pagination]
{pagination}

[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
batch_size = 1000
{sink_extra}
"#
    );
    write(dir, "p.toml", &text).display().to_string()
}

/// The posts as a CSV export gives them: every value text.
fn as_text(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let t = match v {
                        Value::String(s) => Value::String(s.clone()),
                        other => Value::String(other.to_string()),
                    };
                    (k.clone(), t)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// CSV export pages of 700 posts, until an empty page.
const CSV_PAGES: &str =
    "kind = \"page_number\"\nparam = \"page\"\nsize_param = \"per_page\"\nsize = 700";

/// Run a pipeline over `path` in `format` into `dir`/out.db; it must succeed.
async fn run_export(dir: &Path, api: &MockApi, path: &str, format: &str, pagination: &str) -> Out {
    let p = pipeline(dir, path, format, pagination, "");
    let out = ingest(dir, &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    out
}

/// Every post of the mock in `dir`/out.db, as a CSV export gives them (text).
async fn assert_csv_posts(dir: &Path, api: &MockApi) {
    let got = rows(&dir.join("out.db"), "posts", "CAST(id AS INTEGER)").await;
    let want: Vec<Value> = api.dataset().all_posts().map(|p| as_text(&p)).collect();
    assert_eq!(got.len(), want.len());
    let first_bad = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(
        first_bad.is_none(),
        "row {first_bad:?}: {:?}",
        first_bad.map(|i| (&got[i], &want[i]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_ndjson_export_lands_exactly() {
    let api = mock(5_000).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    run_export(
        dir.path(),
        &api,
        "/export/posts.ndjson",
        "ndjson",
        "kind = \"none\"",
    )
    .await;
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    // one request, read in parts of 1,000 records
    assert_eq!(api.requests().len(), 1);
    assert!(
        api.requests()[0]
            .headers
            .iter()
            .any(|(k, v)| k == "accept" && v.starts_with("application/x-ndjson")),
        "{:?}",
        api.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paginated_csv_export_keeps_quoted_commas_and_newlines() {
    let api = mock(2_345).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    run_export(dir.path(), &api, "/export/posts.csv", "csv", CSV_PAGES).await;
    assert_csv_posts(dir.path(), &api).await;
    // four pages of rows, then an empty page ends the walk
    let pages: Vec<String> = api
        .requests()
        .iter()
        .filter_map(|r| r.param("page"))
        .collect();
    assert_eq!(pages, ["1", "2", "3", "4", "5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_that_start_with_a_byte_order_mark_read_as_without() {
    let api = mock(1_500).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // every page of the CSV export starts with a BOM, as Excel writes one
    run_export(
        dir.path(),
        &api,
        "/export/posts.csv?bom=1",
        "csv",
        CSV_PAGES,
    )
    .await;
    assert_csv_posts(dir.path(), &api).await;
    let ndjson = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let nd = ndjson.path();
    run_export(
        nd,
        &api,
        "/export/posts.ndjson?bom=1",
        "ndjson",
        "kind = \"none\"",
    )
    .await;
    assert_posts(&ndjson.path().join("out.db"), "posts", &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_reset_midway_is_asked_for_again() {
    let api = MockApi::start(MockConfig {
        posts: 3_000,
        faults: Faults {
            reset: 1.0,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(
        dir.path(),
        "/export/posts.ndjson",
        "ndjson",
        "kind = \"none\"",
        "",
    );
    let out = ingest(dir.path(), &api.url(), &["run", &p, "--output", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    assert_eq!(
        api.requests().len(),
        2,
        "the reset body, then the whole one"
    );
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
    assert_eq!(report["retries"], 1, "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_inside_one_response_resumes_by_skipping_what_it_stored() {
    let api = mock(40_000).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // small transactions, so the kill falls between many commits
    let p = pipeline(
        dir.path(),
        "/export/posts.ndjson",
        "ndjson",
        "kind = \"none\"",
        "",
    );
    let text = std::fs::read_to_string(&p).unwrap_or_default();
    write(
        dir.path(),
        "p.toml",
        &text.replace("batch_size = 1000", "batch_size = 200"),
    );
    let db = dir.path().join("out.db");
    kill_when_committed(dir.path(), &api.url(), &p, &db, 5_000, "kill").await;
    let saved = rows(&db, "_ingest_state", "partition").await;
    assert!(
        saved
            .iter()
            .any(|s| s["resume"].as_str().is_some_and(|r| r.contains("\"skip\""))),
        "no resume point inside the response: {saved:?}"
    );
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("resuming the interrupted run"),
        "{}",
        out.stderr
    );
    let got = rows(&db, "posts", "id").await;
    assert_eq!(got.len(), 40_000, "each record once");
    let want: Vec<Value> = api.dataset().all_posts().collect();
    let first_bad = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(first_bad.is_none(), "first difference at row {first_bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_location_with_a_streamed_format_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pagination = "kind = \"cursor\"\ncursor = \"meta.next\"\nparam = \"after\"";
    let p = pipeline(dir.path(), "/export/posts.ndjson", "ndjson", pagination, "");
    let out = ingest(dir.path(), "http://127.0.0.1:9", &["validate", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "source.pagination.cursor: reads the JSON body, and an NDJSON or CSV body is not one"
        ),
        "{}",
        out.stderr
    );
}
