//! Exactly-once resume: the real binary is killed with SIGKILL after a
//! seeded number of committed records, rerun to completion, and the table
//! must equal the data: no row missing, none doubled, in every write mode,
//! on the sequential and the concurrent path, with partitions and with
//! incremental marks.

use crate::common;

use std::time::Duration;

use common::*;
use ingest_mock::{MockApi, MockConfig};

/// Deterministic kill moments (splitmix64 of the seed), in milliseconds.
fn moments(seed: u64, n: usize, lo: u64, hi: u64) -> Vec<u64> {
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            lo + (x ^ (x >> 31)) % (hi - lo)
        })
        .collect()
}

fn pipeline(kind: &str, write_mode: &str) -> String {
    let (path, records, pagination, extra) = match kind {
        "page_number" => (
            "/posts",
            "",
            "kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"",
            "concurrency = 1",
        ),
        // the path the examples take: pages 2.. fetched four at a time
        "concurrent" => (
            "/posts",
            "",
            "kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"",
            "concurrency = 4",
        ),
        // 40 partitions (one per user), three walked at a time
        "partitions" => (
            "/posts",
            "",
            "kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 5",
            "concurrency = 3\n[source.partition]\nkind = \"range\"\nparam = \"userId\"\nstart = 1\nend = 40\nstep = 1",
        ),
        // incremental marks on the concurrent path
        "incremental" => (
            "/posts",
            "",
            "kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"",
            "concurrency = 4\n[source.incremental]\ncursor_field = \"updatedAt\"\nparam = \"updated_since\"\ninitial = \"2000-01-01T00:00:00Z\"",
        ),
        "cursor" => (
            "/stripe/posts?limit=10",
            "data",
            "kind = \"cursor\"\ncursor = \"last_record:id\"\nparam = \"starting_after\"\nhas_more = \"has_more\"",
            "concurrency = 1",
        ),
        _ => (
            "/next/posts?limit=10",
            "results",
            "kind = \"next_url\"\nnext = \"next\"",
            "concurrency = 1",
        ),
    };
    let pk = if write_mode == "merge" {
        "primary_key = [\"id\"]"
    } else {
        ""
    };
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"{path}\"\nrecords = \"{records}\"\n{extra}\n\
         [source.pagination]\n{pagination}\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\nwrite = \"{write_mode}\"\nbatch_size = 20\n{pk}\n"
    )
}

/// Run the pipeline `p` and SIGKILL it once it has committed `at` records
/// (a condition, polled, with a deadline); then check that the commit left a
/// resume point.
async fn kill_after(dir: &std::path::Path, api: &str, p: &std::path::Path, at: i64, label: &str) {
    let db = dir.join("out.db");
    kill_when_committed(dir, api, p.to_str().unwrap_or(""), &db, at, label).await;
    // something was committed, and with it the point to resume from
    let saved = scalar(
        &db,
        "SELECT count(*) FROM _ingest_state WHERE resume IS NOT NULL",
    )
    .await;
    assert!(saved >= 1, "{label}: left no resume point");
}

/// Three runs, each SIGKILLed once it has committed a seeded number of
/// records (a condition, not a sleep), then a run to the end: the table must
/// equal the data, every kill must have come after a commit that left
/// resume state, and the last run must have resumed from it.
async fn killed_and_resumed(kind: &str, write_mode: &str, seed: u64) {
    // 400 posts in pages of 10 (5 for partitions), 40 ms a response: a run
    // takes far longer than the 20-100 records each kill waits for
    let api = MockApi::start(MockConfig {
        posts: 400,
        delay: Duration::from_millis(40),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &pipeline(kind, write_mode));
    let db = dir.path().join("out.db");
    let kills = moments(seed, 3, 20, 100);
    let mut pending_marks = 0;
    for (i, at) in kills.iter().enumerate() {
        let label = format!("{kind}/{write_mode} run {i}");
        kill_after(dir.path(), &api.url(), &p, *at as i64, &label).await;
        if kind == "incremental" {
            pending_marks += scalar(
                &db,
                "SELECT count(*) FROM _ingest_marks WHERE pending IS NOT NULL AND value IS NULL",
            )
            .await;
        }
    }
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(
        out.code, 0,
        "{kind}/{write_mode} (kills after {kills:?} records): {out:?}"
    );
    assert!(
        out.stderr.contains("resuming the interrupted run"),
        "{kind}/{write_mode}: the last run did not resume: {}",
        out.stderr
    );
    // every row once, every column as served
    let got = rows(&db, "posts", "id, rowid").await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{kind}/{write_mode}: kills after {kills:?} records"
    );
    assert_eq!(
        got, want,
        "{kind}/{write_mode}: kills after {kills:?} records"
    );
    if write_mode == "replace" {
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '_ingest_staging%'"
            )
            .await,
            0
        );
    }
    if kind == "incremental" {
        assert_marks(&db, &api, pending_marks).await;
    }
    assert_history(dir.path(), &api.url(), &p).await;
}

/// The killed runs saved a pending mark each; the completed one promoted it.
async fn assert_marks(db: &std::path::Path, api: &MockApi, pending_marks: i64) {
    assert_eq!(pending_marks, 3, "the killed runs left no pending mark");
    let last = api
        .dataset()
        .all_posts()
        .last()
        .map(|p| p["updatedAt"].clone());
    let mark: Vec<serde_json::Value> = rows(db, "_ingest_marks", "pipeline").await;
    assert_eq!(mark.len(), 1);
    assert_eq!(Some(mark[0]["value"].clone()), last, "{mark:?}");
    assert_eq!(mark[0]["pending"], serde_json::Value::Null);
}

/// The interrupted runs are recorded as killed, the last one as done.
async fn assert_history(dir: &std::path::Path, api: &str, p: &std::path::Path) {
    let statuses = ingest(
        dir,
        api,
        &["runs", p.to_str().unwrap_or(""), "--output", "json"],
    )
    .await;
    let runs: Vec<serde_json::Value> = statuses
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(
        runs.first().map(|r| r["status"].clone()),
        Some("done".into()),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .skip(1)
            .all(|r| r["status"] == "killed" && r["records"].as_i64() > Some(0)),
        "{runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_append() {
    killed_and_resumed("page_number", "append", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_merge() {
    killed_and_resumed("page_number", "merge", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pages_append() {
    killed_and_resumed("concurrent", "append", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pages_merge() {
    killed_and_resumed("concurrent", "merge", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pages_replace() {
    killed_and_resumed("concurrent", "replace", 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_append() {
    killed_and_resumed("partitions", "append", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_replace() {
    killed_and_resumed("partitions", "replace", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_marks_merge() {
    killed_and_resumed("incremental", "merge", 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_append() {
    killed_and_resumed("cursor", "append", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_merge() {
    killed_and_resumed("cursor", "merge", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_url_append() {
    killed_and_resumed("next_url", "append", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_url_merge() {
    killed_and_resumed("next_url", "merge", 6).await;
}

/// State commands, and a resume point the API no longer accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_show_reset_and_expired_cursor() {
    let api = mock(60).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("out.db");
    let merge = write(dir.path(), "m.toml", &pipeline("cursor", "merge"));
    let show = ingest(
        dir.path(),
        &api.url(),
        &["state", "show", merge.to_str().unwrap_or("")],
    )
    .await;
    assert_ne!(show.code, 0, "no database yet: {show:?}");
    assert!(show.stderr.contains("no database yet"), "{}", show.stderr);
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", merge.to_str().unwrap_or(""), "--max-pages", "2"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    // a resume point as an interrupted run leaves it, with a cursor the API refuses
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        db.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(
        "INSERT INTO _ingest_state (pipeline, partition, resume, done, updated_at) VALUES \
         ('m', '', '{\"position\":{\"cursor\":\"expired\"},\"pages\":2,\"records\":20}', 0, 'x')",
    )
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let show = ingest(
        dir.path(),
        &api.url(),
        &["state", "show", merge.to_str().unwrap_or("")],
    )
    .await;
    assert!(
        show.stdout.contains(
            "the walk: resumes at cursor expired; 2 pages and 20 records fetched so far (saved x by run 0)"
        ),
        "{show:?}"
    );
    // merge: walked again from the start, with a warning; the table is exact
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", merge.to_str().unwrap_or("")],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("walking this partition again from the start"),
        "{}",
        out.stderr
    );
    assert_posts(&db, "posts", &api).await;
    expired_cursor_in_append_mode(&api, dir.path()).await;
}

/// In append mode, refusing an expired resume point is the only way not to
/// double rows; `state reset` then forgets it.
async fn expired_cursor_in_append_mode(api: &MockApi, dir: &std::path::Path) {
    let append = write(
        dir,
        "a.toml",
        &pipeline("cursor", "append").replace("out.db", "a.db"),
    );
    let out = ingest(
        dir,
        &api.url(),
        &["run", append.to_str().unwrap_or(""), "--max-pages", "1"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.join("a.db").display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(
        "INSERT INTO _ingest_state (pipeline, partition, resume, done, updated_at) VALUES \
         ('a', '', '{\"position\":{\"cursor\":\"expired\"},\"pages\":1,\"records\":10}', 0, 'x')",
    )
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(dir, &api.url(), &["run", append.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the saved resume point was refused (HTTP 400)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        scalar(&dir.join("a.db"), "SELECT count(*) FROM posts").await,
        10
    );
    // reset forgets it
    let reset = ingest(
        dir,
        &api.url(),
        &["state", "reset", append.to_str().unwrap_or("")],
    )
    .await;
    assert!(reset.stdout.contains("forgot 1 resume point"), "{reset:?}");
    let show = ingest(
        dir,
        &api.url(),
        &["state", "show", append.to_str().unwrap_or("")],
    )
    .await;
    assert!(show.stdout.contains("no saved state"), "{show:?}");
}
