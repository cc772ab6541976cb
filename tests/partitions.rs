//! Partitions: a 30-day backfill in 1-day windows run concurrently, list and
//! range values, and the posts -> comments parent/child pair; several
//! pipelines in one run; the refusal of overlapping runs.

use crate::common;

use std::time::Duration;

use common::*;
use ingest_mock::{MockApi, MockConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_30_days_in_daily_windows() {
    // a post every 3 hours: 8 a day
    let api = MockApi::start(MockConfig {
        posts: 300,
        spacing: 3 * 3600,
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "backfill.toml",
        r#"[source]
kind = "http"
base_url = "${API_BASE}"
path = "/posts"
concurrency = 6
[source.partition]
kind = "dates"
start = "2024-01-01"
end = "now"
step = "1d"
start_param = "updated_since"
end_param = "updated_before"
[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 5
total = "header:X-Total-Count"
[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
write = "append"
"#,
    );
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            p.to_str().unwrap_or(""),
            "--since",
            "2024-01-05",
            "--until",
            "2024-02-04",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    // [2024-01-05, 2024-02-04): posts 32..=271 (id * 3 h after 2024-01-01)
    let got = rows(&dir.path().join("out.db"), "posts", "id, rowid").await;
    let data = api.dataset();
    let want: Vec<serde_json::Value> = (32..=271).map(|id| data.post(id)).collect();
    assert_eq!(got, want);
    // 30 windows of 8 posts: 2 pages each, every window asked with its bounds
    let reqs = api.requests();
    assert_eq!(reqs.len(), 60);
    let mut windows: Vec<(String, String)> = reqs
        .iter()
        .filter_map(|r| Some((r.param("updated_since")?, r.param("updated_before")?)))
        .collect();
    windows.sort();
    windows.dedup();
    assert_eq!(windows.len(), 30);
    assert_eq!(
        windows[0],
        (
            "2024-01-05T00:00:00Z".to_string(),
            "2024-01-06T00:00:00Z".to_string()
        )
    );
    assert_eq!(windows[29].1, "2024-02-04T00:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_range_values() {
    let api = mock(60).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = r#"[source]
kind = "http"
base_url = "${API_BASE}"
path = "/posts"
PART
[sink]
kind = "sqlite"
path = "out.db"
table = "TABLE"
write = "merge"
primary_key = ["id"]
"#;
    let list = write(
        dir.path(),
        "l.toml",
        &base
            .replace(
                "PART",
                "[source.partition]\nkind = \"list\"\nparam = \"userId\"\nvalues = [1, 3]",
            )
            .replace("TABLE", "by_list"),
    );
    let range = write(
        dir.path(),
        "r.toml",
        &base
            .replace(
                "PART",
                "[source.partition]\nkind = \"range\"\nparam = \"userId\"\nstart = 2\nend = 4",
            )
            .replace("TABLE", "by_range"),
    );
    // several pipelines in one run, in order
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            list.to_str().unwrap_or(""),
            range.to_str().unwrap_or(""),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let data = api.dataset();
    let db = dir.path().join("out.db");
    let want: Vec<serde_json::Value> = (1..=10).chain(21..=30).map(|id| data.post(id)).collect();
    assert_eq!(rows(&db, "by_list", "id").await, want);
    let want: Vec<serde_json::Value> = (11..=40).map(|id| data.post(id)).collect();
    assert_eq!(rows(&db, "by_range", "id").await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_then_comments() {
    let api = mock(37).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("blog.db");
    let set = format!("sink.path={}", db.display());
    let posts = root().join("pipelines/posts.toml");
    let comments = root().join("pipelines/comments.toml");
    // the child before its parent fails clearly
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", comments.to_str().unwrap_or(""), "--set", &set],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the partition query failed")
            && out.stderr.contains("no such table: posts"),
        "{}",
        out.stderr
    );
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            posts.to_str().unwrap_or(""),
            comments.to_str().unwrap_or(""),
            "--set",
            &set,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let data = api.dataset();
    let want: Vec<serde_json::Value> = (1..=37)
        .flat_map(|p| data.comments_of(p))
        .map(|mut c| {
            let post = c
                .as_object_mut()
                .and_then(|m| m.shift_remove("postId"))
                .unwrap_or_default();
            let mut m = serde_json::Map::new();
            m.insert("post_id".into(), post);
            if let serde_json::Value::Object(rest) = c {
                m.extend(rest);
            }
            serde_json::Value::Object(m)
        })
        .collect();
    let got = rows(&db, "comments", "id").await;
    assert_eq!(got.len(), 37 * 5);
    // compare field by field: the table's column order is the API's, renamed
    for (g, w) in got.iter().zip(&want) {
        for (k, v) in w.as_object().into_iter().flatten() {
            assert_eq!(&g[k], v, "comment {}: {k}", w["id"]);
        }
    }
    let paths: std::collections::BTreeSet<String> = api
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.ends_with("/comments"))
        .collect();
    assert_eq!(paths.len(), 37);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_run_is_refused_and_touches_nothing() {
    let api = MockApi::start(MockConfig {
        posts: 100,
        delay: Duration::from_millis(40),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "slow.toml",
        "[source]\nkind = \"http\"\nbase_url = \"${API_BASE}\"\npath = \"/posts\"\nconcurrency = 1\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 5\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\nwrite = \"append\"\n",
    );
    let first = spawn_ingest(
        dir.path(),
        &api.url(),
        &["run", p.to_str().unwrap_or(""), "-q"],
    );
    // wait until the first run has really started (its lock file exists)
    let lock = dir.path().join("out.db.slow.lock");
    for _ in 0..200 {
        if api.requests().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        api.requests().len() >= 2,
        "the first run sent no request in 2 s"
    );
    assert!(lock.exists());
    let second = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(second.code, 75, "{second:?}");
    assert!(
        second
            .stderr
            .contains("another run of pipeline `slow` is in progress"),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("pid "), "{}", second.stderr);
    let done = first
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success());
    // the refused run sent no request of its own (20 pages + the empty 21st
    // are the first run's) and left no run record
    assert_eq!(api.requests().len(), 21);
    let db = dir.path().join("out.db");
    assert_eq!(scalar(&db, "SELECT count(*) FROM _ingest_runs").await, 1);
    assert_posts(&db, "posts", &api).await;
}

/// A nightly child run walks only the parents that changed since its own last
/// completed run (`mark` on the `query` partition), not all of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_walks_only_the_parents_that_changed() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("blog.db");
    let set = format!("sink.path={}", db.display());
    let posts = root().join("pipelines/posts.toml");
    let comments = root().join("pipelines/comments.toml");
    let run = |f: &std::path::Path| {
        let (dir, api, set, f) = (
            dir.path().to_path_buf(),
            api.url(),
            set.clone(),
            f.to_path_buf(),
        );
        async move {
            let out = ingest(
                &dir,
                &api,
                &["run", f.to_str().unwrap_or(""), "--set", &set, "-q"],
            )
            .await;
            assert_eq!(out.code, 0, "{out:?}");
        }
    };
    let walked = |api: &ingest_mock::MockApi| -> std::collections::BTreeSet<u64> {
        api.requests()
            .iter()
            .filter_map(|r| {
                r.path
                    .strip_prefix("/posts/")?
                    .strip_suffix("/comments")?
                    .parse()
                    .ok()
            })
            .collect()
    };
    run(&posts).await;
    run(&comments).await;
    assert_eq!(walked(&api).len(), 30);
    // nothing changed: the next night walks no parent at all
    api.clear_requests();
    run(&comments).await;
    assert!(walked(&api).is_empty(), "{:?}", walked(&api));
    // post 7 is revised and posts 31 and 32 appear
    api.update(|d| {
        d.revise(7);
        d.grow(2);
    });
    run(&posts).await;
    api.clear_requests();
    run(&comments).await;
    assert_eq!(walked(&api), [7, 31, 32].into_iter().collect());
    let data = api.dataset();
    let ids: Vec<i64> = rows(&db, "comments", "id")
        .await
        .iter()
        .filter_map(|c| c["id"].as_i64())
        .collect();
    let want: Vec<i64> = (1..=32)
        .flat_map(|p| data.comments_of(p))
        .filter_map(|c| c["id"].as_i64())
        .collect();
    assert_eq!(ids, want);
}
