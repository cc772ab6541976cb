//! Incremental syncs: the second run asks only from the mark minus the
//! lookback, picks up updated and new records, and the table equals the data.

use crate::common;

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

/// The run history of pipeline `p`, newest first (`ingest runs --output json`).
async fn runs(dir: &std::path::Path, api: &str, p: &std::path::Path) -> Vec<serde_json::Value> {
    ingest(
        dir,
        api,
        &["runs", p.to_str().unwrap_or(""), "--output", "json"],
    )
    .await
    .stdout
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
    let history = runs(dir.path(), &api.url(), &p).await;
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

/// A failure after some batches: the committed batches saved a pending mark,
/// the mark itself stays; the rerun resumes and then promotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_some_batches_keeps_a_pending_mark() {
    let api = mock(100).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = PIPELINE
        .replace("total = \"header:X-Total-Count\"", "")
        .replace(
            "[source.pagination]",
            "concurrency = 1\n[source.retry]\nmax_attempts = 1\n[source.pagination]",
        )
        .replace(
            "primary_key = [\"id\"]",
            "primary_key = [\"id\"]\nbatch_size = 20",
        );
    let p = write(dir.path(), "inc.toml", &text);
    let db = dir.path().join("out.db");
    api.set_faults(ingest_mock::Faults {
        broken: vec!["_page=4&".into()],
        ..Default::default()
    });
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 60);
    let marks = rows(&db, "_ingest_marks", "pipeline").await;
    assert_eq!(marks.len(), 1, "{marks:?}");
    // post 60 is the largest committed cursor; no run has completed
    assert_eq!(marks[0]["pending"], "2024-01-01T01:00:00Z", "{marks:?}");
    assert_eq!(marks[0]["value"], serde_json::Value::Null, "{marks:?}");
    api.set_faults(ingest_mock::Faults::default());
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("resuming the interrupted run"),
        "{}",
        out.stderr
    );
    assert_posts(&db, "posts", &api).await;
    let marks = rows(&db, "_ingest_marks", "pipeline").await;
    assert_eq!(marks[0]["value"], "2024-01-01T01:40:00Z", "{marks:?}");
    assert_eq!(marks[0]["pending"], serde_json::Value::Null, "{marks:?}");
}

/// The mark never moves backwards: a later run whose records are all older
/// (upstream shrank, or `--since` asked for an old window) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mark_never_moves_backwards() {
    let api = mock(50).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "inc.toml", PIPELINE);
    let db = dir.path().join("out.db");
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    api.update(|d| d.posts = 20);
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            p.to_str().unwrap_or(""),
            "--since",
            "2024-01-01T00:05:00Z",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let history = runs(dir.path(), &api.url(), &p).await;
    // posts 5..=20 came, all older than the mark
    assert_eq!(history[0]["records"], 16, "{history:?}");
    let marks = rows(&db, "_ingest_marks", "pipeline").await;
    assert_eq!(marks[0]["value"], "2024-01-01T00:50:00Z", "{marks:?}");
}

/// `--until` with `end_param`: every request carries the window's end, and
/// only records before it land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_sends_the_end_param() {
    let api = mock(60).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = PIPELINE.replace("lookback = \"10m\"", "end_param = \"updated_before\"");
    let p = write(dir.path(), "inc.toml", &text);
    let db = dir.path().join("out.db");
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            p.to_str().unwrap_or(""),
            "--since",
            "2024-01-01T00:10:00Z",
            "--until",
            "2024-01-01T00:30:00Z",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = api.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(
            r.param("updated_before").as_deref(),
            Some("2024-01-01T00:30:00Z"),
            "{r:?}"
        );
        assert_eq!(
            r.param("updated_since").as_deref(),
            Some("2024-01-01T00:10:00Z"),
            "{r:?}"
        );
    }
    // posts 10..=29: since is inclusive, before exclusive
    let ids: Vec<i64> = rows(&db, "posts", "id")
        .await
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, (10..=29).collect::<Vec<_>>());
}

/// A numeric cursor: the mark is the largest id as the API sent it, and the
/// next run asks from it minus the lookback's seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_cursors_end_to_end() {
    let api = mock(45).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = PIPELINE
        .replace("cursor_field = \"updatedAt\"", "cursor_field = \"id\"")
        .replace("param = \"updated_since\"", "param = \"since_id\"")
        .replace("initial = \"2020-01-01T00:00:00Z\"", "initial = \"0\"")
        .replace("lookback = \"10m\"", "lookback = \"5s\"");
    let p = write(dir.path(), "inc.toml", &text);
    let db = dir.path().join("out.db");
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        api.requests()[0].param("since_id").as_deref(),
        Some("0"),
        "{out:?}"
    );
    // 45 beats 9: numbers compare as numbers, not as text
    let marks = rows(&db, "_ingest_marks", "pipeline").await;
    assert_eq!(marks[0]["value"], "45", "{marks:?}");
    api.clear_requests();
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(api.requests()[0].param("since_id").as_deref(), Some("40"));
}
