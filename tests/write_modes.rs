//! Write modes end to end: merge twice gives the same table, append twice
//! doubles it, replace swaps a fresh table in; the run history and state.

use crate::common;

use common::*;

fn pipeline(write_mode: &str) -> String {
    format!(
        r#"[source]
kind = "http"
base_url = "${{API_BASE}}"
path = "/posts"
concurrency = 3
[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 20
total = "header:X-Total-Count"
[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
write = "{write_mode}"
{pk}
"#,
        pk = if write_mode == "merge" {
            "primary_key = [\"id\"]"
        } else {
            ""
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_twice_is_the_same_table() {
    let api = mock(75).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &pipeline("merge"));
    let db = dir.path().join("out.db");
    for _ in 0..2 {
        let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_posts(&db, "posts", &api).await;
    }
    // a changed record is updated in place, not added
    api.update(|d| d.revise(7));
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&db, "posts", &api).await;
    let runs = ingest(
        dir.path(),
        &api.url(),
        &["runs", p.to_str().unwrap_or(""), "--output", "json"],
    )
    .await;
    let lines: Vec<serde_json::Value> = runs
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 3, "{}", runs.stdout);
    assert!(
        lines
            .iter()
            .all(|r| r["status"] == "done" && r["records"] == 75 && r["pages"] == 4),
        "{lines:?}"
    );
    // a completed run leaves no resume state
    assert_eq!(scalar(&db, "SELECT count(*) FROM _ingest_state").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_twice_doubles() {
    let api = mock(41).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &pipeline("append"));
    let db = dir.path().join("out.db");
    for _ in 0..2 {
        let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
        assert_eq!(out.code, 0, "{out:?}");
    }
    let got = rows(&db, "posts", "id, rowid").await;
    let want: Vec<serde_json::Value> = api
        .dataset()
        .all_posts()
        .flat_map(|p| [p.clone(), p])
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_in_the_new_table() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &pipeline("replace"));
    let db = dir.path().join("out.db");
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    api.update(|d| d.grow(5));
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&db, "posts", &api).await;
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '_ingest_staging%'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_reloads_an_append_table() {
    let api = mock(25).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &pipeline("append"));
    let db = dir.path().join("out.db");
    for args in [vec!["run"], vec!["run"], vec!["run", "--full-refresh"]] {
        let mut a = args.clone();
        a.push(p.to_str().unwrap_or(""));
        let out = ingest(dir.path(), &api.url(), &a).await;
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_posts(&db, "posts", &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_and_declared_columns_end_to_end() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("posts.db");
    let set = format!("sink.path={}", db.display());
    let posts = root().join("pipelines/posts.toml");
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", posts.to_str().unwrap_or(""), "--set", &set],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&db, "posts", "id").await;
    let want: Vec<serde_json::Value> = api
        .dataset()
        .all_posts()
        .map(|p| {
            serde_json::json!({
                "id": p["id"], "user_id": p["userId"], "title": p["title"],
                "body": p["body"], "updated_at": p["updatedAt"],
            })
        })
        .collect();
    assert_eq!(got, want);
    // declared columns come first, in the file's order, with their types
    assert_eq!(
        columns(&db, "posts").await,
        [
            ("id", "INTEGER"),
            ("user_id", "INTEGER"),
            ("title", "TEXT"),
            ("body", "TEXT"),
            ("updated_at", "TEXT")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

/// A batch SQLite refuses (here a CHECK constraint the user put on the
/// table) fails the run with the table, the row count and SQLite's reason;
/// the batches before it stay, the refused one leaves no row behind, and
/// once the table accepts the data a rerun resumes and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_whole_and_the_rerun_completes() {
    let api = mock(75).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // one page of 20 per batch
    let text =
        pipeline("append").replace("write = \"append\"", "write = \"append\"\nbatch_size = 20");
    let p = write(dir.path(), "p.toml", &text);
    let db = dir.path().join("out.db");
    exec(
        &db,
        r#"CREATE TABLE posts ("userId" INTEGER, "id" INTEGER, "title" TEXT, "body" TEXT, "updatedAt" TEXT, CHECK ("id" <= 30))"#,
    )
    .await;
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot write 20 rows into `posts`")
            && out.stderr.contains("CHECK constraint failed"),
        "{}",
        out.stderr
    );
    // page 1 committed; page 2 (ids 21..40, some over 30) not one row of it
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 20);
    assert_eq!(scalar(&db, "SELECT max(id) FROM posts").await, 20);
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM _ingest_runs WHERE status = 'failed' AND error LIKE '%CHECK constraint failed%'").await,
        1
    );
    // the table accepts everything again: the rerun resumes after page 1
    exec(
        &db,
        "CREATE TABLE p2 AS SELECT * FROM posts; DROP TABLE posts; ALTER TABLE p2 RENAME TO posts;",
    )
    .await;
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("resum"), "{}", out.stderr);
    assert_posts(&db, "posts", &api).await;
}
