//! GraphQL as real servers page it: a Relay connection walked by sending
//! `pageInfo.endCursor` back in the POST body's variables
//! (`param = "body:variables.after"`), and an `errors` array that fails the
//! page with its message. Against the mock's `/graphql` on 127.0.0.1.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_connection_lands_exactly() {
    let api = mock(137).await;
    let run = run_example(&api, "graphql_relay.toml").await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    assert_eq!(rows(&run.db, &run.table, "id").await, want);
    // 137 posts, 25 a page: 6 POSTs to one URL, the cursor in the body
    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/graphql")
        .collect();
    assert_eq!(posts.len(), 6, "{posts:?}");
    assert!(
        posts.iter().all(|r| r.query.is_empty()),
        "the cursor leaked into the query: {posts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_errors_fail_the_page_with_their_message() {
    let api = mock(10).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(root().join("pipelines/examples/graphql_relay.toml"))
        .unwrap_or_default()
        .replace("edges { node { id userId", "edges { node { bogus id userId")
        .replace("../../data/examples.db", "out.db");
    let p = write(dir.path(), "bad.toml", &text);
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "the GraphQL response has 1 error: Cannot query field \"bogus\" on type \"Post\"."
        ),
        "{}",
        out.stderr
    );
    // not retried: one request
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_cursor_travel_into_the_second_request() {
    let api = mock(60).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let example = root().join("pipelines/examples/graphql_relay.toml");
    let out = ingest(
        dir.path(),
        &api.url(),
        &["preview", example.to_str().unwrap_or("")],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let shown = out
        .stdout
        .split("the second page would be asked with (not sent):")
        .nth(1)
        .unwrap_or("");
    assert!(
        shown.contains(&format!("POST {}/graphql", api.url())),
        "{}",
        out.stdout
    );
    assert!(
        shown.contains("\"variables\":{\"after\":\"cG9zdDo25\",\"first\":25}")
            || shown.contains("\"variables\":{\"first\":25,\"after\":\"cG9zdDo25\"}"),
        "{}",
        out.stdout
    );
    // shown, not sent
    assert_eq!(api.requests().len(), 1);
}
