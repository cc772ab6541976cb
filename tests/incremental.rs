//! Incremental syncs: the second run asks only from the mark minus the
//! lookback, picks up updated and new records, and the table equals the data.

mod common;

use common::*;

const PIPELINE: &str = r#"[source]
kind = "http"
base_url = "${API_BASE}"
path = "/posts"
[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 20
total = "header:X-Total-Count"
[source.incremental]
cursor_field = "updatedAt"
param = "updated_since"
initial = "2020-01-01T00:00:00Z"
lookback = "10m"
[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
write = "merge"
primary_key = ["id"]
"#;

fn runs(out: &Out) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_asks_from_the_mark() {
    let api = mock(50).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "inc.toml", PIPELINE);
    let db = dir.path().join("out.db");
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&db, "posts", &api).await;
    assert!(
        api.requests()
            .iter()
            .all(|r| r.param("updated_since").as_deref() == Some("2020-01-01T00:00:00Z"))
    );

    // k = 3 updated, m = 4 new
    api.update(|d| {
        for id in [5, 17, 33] {
            d.revise(id);
        }
        d.grow(4);
    });
    api.clear_requests();
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // the mark was post 50's updatedAt (00:50); minus the 10 minute lookback
    let asked: Vec<Option<String>> = api
        .requests()
        .iter()
        .map(|r| r.param("updated_since"))
        .collect();
    assert!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|a| a.as_deref() == Some("2024-01-01T00:40:00Z")),
        "{asked:?}"
    );
    assert_posts(&db, "posts", &api).await;
    // posts 40..=54 (lookback + new) and the 3 revised ones
    let history = runs(
        &ingest(
            dir.path(),
            &api.url(),
            &["runs", p.to_str().unwrap_or(""), "--output", "json"],
        )
        .await,
    );
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["records"], 18, "{history:?}");
    assert_eq!(history[1]["records"], 50, "{history:?}");
    let mark = scalar(&db, "SELECT count(*) FROM _ingest_marks WHERE value = '2025-01-01T00:33:00Z' AND pending IS NULL").await;
    assert_eq!(mark, 1, "the mark is the largest cursor: revised post 33");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_does_not_move_the_mark() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "inc.toml", PIPELINE);
    let db = dir.path().join("out.db");
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    api.update(|d| d.grow(30));
    // the same pipeline, now failing on its first page (records path missing)
    write(
        dir.path(),
        "inc.toml",
        &PIPELINE.replace("path = \"/posts\"", "path = \"/posts\"\nrecords = \"nope\""),
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the records path `nope` is not in the response"),
        "{}",
        out.stderr
    );
    write(dir.path(), "inc.toml", PIPELINE);
    let marks = rows(&db, "_ingest_marks", "pipeline").await;
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0]["value"], "2024-01-01T00:30:00Z", "{marks:?}");
    // the next good run still asks from the old mark and gets everything new
    api.clear_requests();
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        api.requests()[0].param("updated_since").as_deref(),
        Some("2024-01-01T00:20:00Z")
    );
    assert_posts(&db, "posts", &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_overrides_the_mark_and_full_refresh_starts_over() {
    let api = mock(40).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "inc.toml", PIPELINE);
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            p.to_str().unwrap_or(""),
            "--since",
            "2024-01-01T00:35:00Z",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        scalar(&dir.path().join("out.db"), "SELECT count(*) FROM posts").await,
        6
    );
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", p.to_str().unwrap_or(""), "--until", "2024-02-01"],
    )
    .await;
    assert_eq!(out.code, 2, "--until without end_param: {out:?}");
    assert!(out.stderr.contains("end_param"), "{}", out.stderr);
    api.clear_requests();
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", p.to_str().unwrap_or(""), "--full-refresh"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        api.requests()[0].param("updated_since").as_deref(),
        Some("2020-01-01T00:00:00Z")
    );
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
}
