//! Exactly-once resume: the real binary is killed with SIGKILL at seeded
//! random moments, rerun to completion, and the table must equal the data:
//! no row missing, none doubled, in append mode as well as merge mode.

mod common;

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
    let (path, records, pagination) = match kind {
        "page_number" => (
            "/posts",
            "",
            "kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"",
        ),
        "cursor" => (
            "/stripe/posts?limit=10",
            "data",
            "kind = \"cursor\"\ncursor = \"last_record:id\"\nparam = \"starting_after\"\nhas_more = \"has_more\"",
        ),
        _ => (
            "/next/posts?limit=10",
            "results",
            "kind = \"next_url\"\nnext = \"next\"",
        ),
    };
    let pk = if write_mode == "merge" {
        "primary_key = [\"id\"]"
    } else {
        ""
    };
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"{path}\"\nrecords = \"{records}\"\nconcurrency = 1\n\
         [source.pagination]\n{pagination}\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\nwrite = \"{write_mode}\"\nbatch_size = 20\n{pk}\n"
    )
}

async fn killed_and_resumed(kind: &str, write_mode: &str, seed: u64) {
    // 400 posts, 40 pages, 30 ms each, one at a time: a run takes about 1.2 s,
    // more than the three kills (at most 300 ms each) can let it do
    let api = MockApi::start(MockConfig {
        posts: 400,
        delay: Duration::from_millis(30),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &pipeline(kind, write_mode));
    let db = dir.path().join("out.db");
    let kills = moments(seed, 3, 60, 300);
    for (i, ms) in kills.iter().enumerate() {
        let mut child = spawn_ingest(
            dir.path(),
            &api.url(),
            &["run", p.to_str().unwrap_or(""), "-q"],
        );
        tokio::time::sleep(Duration::from_millis(*ms)).await;
        let finished = child.try_wait().ok().flatten().is_some();
        assert!(
            !finished,
            "{kind}/{write_mode}: run {i} finished before the kill at {ms} ms; slow the mock down"
        );
        child.start_kill().unwrap_or_else(|e| panic!("{e}"));
        let _ = child.wait().await;
    }
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(
        out.code, 0,
        "{kind}/{write_mode} (kills at {kills:?} ms): {out:?}"
    );
    // every row once, every column as served
    let got = rows(&db, "posts", "id, rowid").await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{kind}/{write_mode}: kills at {kills:?} ms"
    );
    assert_eq!(got, want, "{kind}/{write_mode}: kills at {kills:?} ms");
    // the interrupted runs are recorded as killed, the last one as done
    let statuses = ingest(
        dir.path(),
        &api.url(),
        &["runs", p.to_str().unwrap_or(""), "--output", "json"],
    )
    .await;
    let runs: Vec<serde_json::Value> = statuses
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        runs.first().map(|r| r["status"].clone()),
        Some("done".into()),
        "{runs:?}"
    );
    assert!(
        runs.iter().skip(1).all(|r| r["status"] == "killed"),
        "{runs:?}"
    );
    assert!(
        out.stderr.contains("resuming the interrupted run")
            || runs.iter().skip(1).all(|r| r["records"] == 0),
        "{}",
        out.stderr
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
        show.stdout
            .contains("(all): resumes at {\"position\":{\"cursor\":\"expired\"}"),
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
    // append: refusing is the only way not to double rows
    let append = write(
        dir.path(),
        "a.toml",
        &pipeline("cursor", "append").replace("out.db", "a.db"),
    );
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", append.to_str().unwrap_or(""), "--max-pages", "1"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.path().join("a.db").display()
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
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", append.to_str().unwrap_or("")],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the saved resume point was refused (HTTP 400)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        scalar(&dir.path().join("a.db"), "SELECT count(*) FROM posts").await,
        10
    );
    // reset forgets it
    let reset = ingest(
        dir.path(),
        &api.url(),
        &["state", "reset", append.to_str().unwrap_or("")],
    )
    .await;
    assert!(reset.stdout.contains("forgot 1 resume point"), "{reset:?}");
    let show = ingest(
        dir.path(),
        &api.url(),
        &["state", "show", append.to_str().unwrap_or("")],
    )
    .await;
    assert!(show.stdout.contains("no saved state"), "{show:?}");
}
