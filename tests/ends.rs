//! Walks that end the way servers end them: `stop_on_status` for Django REST
//! framework's 404 and PostgREST's 416 past the end, and the total read from
//! `Content-Range`. Against the mock on 127.0.0.1, every row checked.

use crate::common;

use common::*;

fn drf(stop: &str) -> String {
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/drf/posts\"\nrecords = \"results\"\nconcurrency = 4\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"page\"\nsize_param = \"page_size\"\nsize = 10\n{stop}\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_past_the_last_page_ends_a_drf_walk() {
    let api = mock(137).await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // without stop_on_status the page past the end is an error
    let p = write(dir.path(), "plain.toml", &drf(""));
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    // with it, the walk ends there, exactly
    std::fs::remove_file(dir.path().join("out.db")).unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "drf.toml", &drf("stop_on_status = [404]\n"));
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(rows(&dir.path().join("out.db"), "posts", "id").await, want);
    // every 404 was answered once: not retried
    let not_found = api
        .requests()
        .iter()
        .filter(|r| {
            r.param("page")
                .and_then(|p| p.parse::<u64>().ok())
                .is_some_and(|p| p > 14)
        })
        .count();
    assert!(not_found >= 1, "no page past the end was asked");
}

fn postgrest(total: &str) -> String {
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/postgrest/posts\"\nconcurrency = 4\n\
         [source.pagination]\nkind = \"offset\"\noffset_param = \"offset\"\nlimit_param = \"limit\"\nlimit = 10\nstop_on_short = false\nstop_on_status = [416]\n{total}\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_range_gives_the_total_and_a_416_ends_the_walk() {
    let api = mock(137).await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // the total from `Content-Range: 0-9/137`: 14 requests, none past the end
    let p = write(
        dir.path(),
        "total.toml",
        &postgrest("total = \"header:Content-Range\"\n"),
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(rows(&dir.path().join("out.db"), "posts", "id").await, want);
    assert_eq!(api.requests().len(), 14, "{:?}", api.requests());
    // no total: offsets fetched ahead until the server's 416
    api.clear_requests();
    std::fs::remove_file(dir.path().join("out.db")).unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "no_total.toml", &postgrest(""));
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(rows(&dir.path().join("out.db"), "posts", "id").await, want);
    assert!(
        api.requests().len() > 14,
        "the walk never went past the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_size_the_server_fixes_ends_the_walk_at_a_short_page() {
    let api = mock(137).await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // `size` without `size_param`: never sent, only known (DRF's default of 10)
    let text = drf("stop_on_short = true\n")
        .replace("size_param = \"page_size\"\n", "")
        .replace("concurrency = 4", "concurrency = 1");
    let p = write(dir.path(), "fixed.toml", &text);
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(rows(&dir.path().join("out.db"), "posts", "id").await, want);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 14, "stopped at the short 14th page: {reqs:?}");
    assert!(
        reqs.iter().all(|r| r.param("page_size").is_none()),
        "{reqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_the_first_page_lacks_is_reported() {
    let api = mock(37).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "typo.toml",
        &postgrest("total = \"header:Content-Rang\"\n"),
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stderr
            .matches("the first page has no `header:content-rang` (pagination.total)")
            .count(),
        1,
        "{}",
        out.stderr
    );
    // spelt right: no such line
    let p = write(
        dir.path(),
        "right.toml",
        &postgrest("total = \"header:Content-Range\"\n"),
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert!(
        !out.stderr.contains("the first page has no"),
        "{}",
        out.stderr
    );
}
