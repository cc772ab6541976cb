//! GraphQL as real servers page it: a Relay connection walked by sending
//! `pageInfo.endCursor` back in the POST body's variables
//! (`param = "body:variables.after"`), and an `errors` array that fails the
//! page with its message. Against the mock's `/graphql` on 127.0.0.1.

use crate::common;

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

/// `param = "header:Name"`: a page token sent back in a header, not the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_goes_back_in_a_header() {
    let api = mock(0).await;
    api.can(
        "/tok/items",
        vec![
            ingest_mock::Canned::json(r#"{"items": [{"id": 1}, {"id": 2}], "next_token": "t-2"}"#),
            ingest_mock::Canned::json(r#"{"items": [{"id": 3}], "next_token": null}"#),
        ],
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "tok.toml",
        "[source]\nkind = \"http\"\nbase_url = \"${API_BASE}\"\npath = \"/tok/items\"\nrecords = \"items\"\n\
         [source.pagination]\nkind = \"cursor\"\ncursor = \"next_token\"\nparam = \"header:X-Page-Token\"\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"items\"\n",
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&dir.path().join("out.db"), "items", "id").await;
    assert_eq!(
        got,
        vec![
            serde_json::json!({"id": 1}),
            serde_json::json!({"id": 2}),
            serde_json::json!({"id": 3})
        ]
    );
    let reqs = api.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let token = |i: usize| {
        reqs[i]
            .headers
            .iter()
            .find(|(k, _)| k == "x-page-token")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(token(0), None);
    assert_eq!(token(1).as_deref(), Some("t-2"));
    assert!(reqs.iter().all(|r| r.query.is_empty()), "{reqs:?}");
}
