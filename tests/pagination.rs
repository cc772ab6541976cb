//! One end-to-end test per pagination kind: the example pipeline users copy,
//! the real binary, the mock API on 127.0.0.1, and every row of the SQLite
//! table compared with the generated data.

use crate::common;

use common::*;

async fn run_kind(
    file: &str,
    posts: u64,
) -> (
    ingest_mock::MockApi,
    tempfile::TempDir,
    std::path::PathBuf,
    String,
) {
    let api = mock(posts).await;
    let run = run_example(&api, file).await;
    (api, run.dir, run.db, run.table)
}

/// A `page_number` pipeline over the mock's `/posts` into `out.db`, table
/// `posts`; `total` reads the total from the `X-Total-Count` header.
fn page_number(size: u64, concurrency: u32, total: bool) -> String {
    format!(
        r#"
[source]
kind = "http"
base_url = "${{API_BASE}}"
path = "/posts"
concurrency = {concurrency}
[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = {size}
{total}
[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
"#,
        total = if total {
            "total = \"header:X-Total-Count\""
        } else {
            ""
        }
    )
}

/// Run a pipeline text against the mock; it must succeed.
async fn run_ok(api: &ingest_mock::MockApi, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", text);
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    dir
}

/// The values the mock received for one query parameter, in arrival order.
fn seen(api: &ingest_mock::MockApi, param: &str) -> Vec<String> {
    api.requests()
        .iter()
        .filter_map(|r| r.param(param))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_with_total_fetches_concurrently() {
    let (api, _dir, db, table) = run_kind("page_number.toml", 237).await;
    assert_posts(&db, &table, &api).await;
    // 237 posts in pages of 25: 10 pages, no request past the last one
    let pages = seen(&api, "_page");
    assert_eq!(pages.len(), 10, "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_without_total_stops_at_first_empty_page() {
    let api = mock(103).await;
    let dir = run_ok(&api, &page_number(10, 4, false)).await;
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    // pages past the end are fetched speculatively (at most `concurrency`) and discarded
    let n = api.requests().len();
    assert!((12..=12 + 4).contains(&n), "{n} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_with_total_in_the_body() {
    let (api, _dir, db, table) = run_kind("offset.toml", 95).await;
    assert_posts(&db, &table, &api).await;
    // fetched concurrently: any arrival order, each offset once, none past the total
    let mut offsets: Vec<u64> = seen(&api, "offset")
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, [0, 20, 40, 60, 80]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_from_the_last_record_and_has_more() {
    let (api, _dir, db, table) = run_kind("cursor_stripe.toml", 47).await;
    assert_posts(&db, &table, &api).await;
    let after: Vec<Option<String>> = api
        .requests()
        .iter()
        .map(|r| r.param("starting_after"))
        .collect();
    assert_eq!(
        after,
        [
            None,
            Some("10".into()),
            Some("20".into()),
            Some("30".into()),
            Some("40".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_in_the_body_until_empty() {
    let (api, _dir, db, table) = run_kind("cursor_slack.toml", 61).await;
    assert_posts(&db, &table, &api).await;
    assert_eq!(api.requests().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_in_a_header() {
    let (api, _dir, db, table) = run_kind("cursor_header.toml", 50).await;
    assert_posts(&db, &table, &api).await;
    assert_eq!(api.requests().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_url_relative_and_absolute() {
    let (api, _dir, db, table) = run_kind("next_url.toml", 44).await;
    assert_posts(&db, &table, &api).await;
    assert_eq!(api.requests().len(), 5);
    // the same walk with absolute next URLs
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let example = root().join("pipelines/examples/next_url.toml");
    let set = format!("sink.path={}", dir.path().join("abs.db").display());
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            example.to_str().unwrap_or(""),
            "--set",
            &set,
            "--set",
            "source.params.absolute=1",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("abs.db"), &table, &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_header() {
    let (api, _dir, db, table) = run_kind("link_header.toml", 100).await;
    assert_posts(&db, &table, &api).await;
    let pages: Vec<Option<String>> = api.requests().iter().map(|r| r.param("page")).collect();
    assert_eq!(
        pages,
        [None, Some("2".into()), Some("3".into()), Some("4".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_is_one_request() {
    let (api, _dir, db, table) = run_kind("none.toml", 30).await;
    assert_posts(&db, &table, &api).await;
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_guard_names_the_url() {
    let api = mock(100).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "loop.toml",
        r#"
[source]
kind = "http"
base_url = "${API_BASE}"
path = "/loop/posts"
params = { limit = 10 }
records = "results"
[source.pagination]
kind = "next_url"
next = "next"
[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
write = "append"
"#,
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    // page 3 points back at page 2's URL
    assert!(
        out.stderr
            .contains("sent the walk back to URL it already fetched"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("/loop/posts?limit=10&token=tk_"),
        "{}",
        out.stderr
    );
    assert_eq!(api.requests().len(), 3);
    // what came before the loop is committed, once
    let db = dir.path().join("out.db");
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 30);
    // the walk is saved as ended: a rerun does not go around the loop again
    // and append the same pages (it did: 30 -> 50 -> 70 ...)
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM _ingest_state WHERE done = 1").await,
        1
    );
    let again = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 30);
    assert_eq!(api.requests().len(), 3, "the rerun fetched again");
}

/// Pages of ~650 KB are parsed on the blocking pool (from 256 KiB on); the
/// table must be the same, and the pages requested exactly the three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_pages_land_exactly() {
    let api = mock(7000).await;
    let dir = run_ok(&api, &page_number(3000, 2, true)).await;
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    let mut pages = seen(&api, "_page");
    pages.sort();
    assert_eq!(pages, ["1", "2", "3"]);
    // the pages really are past the threshold
    let big = serde_json::to_string(&api.dataset().all_posts().take(3000).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(big.len() > 256 * 1024, "{}", big.len());
}
