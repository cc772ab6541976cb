//! The promises at the edges (issue "Keep every promise at the edges"):
//! credentials never leave `base_url`'s origin, secrets are masked in every
//! encoding, resume state never loses or doubles rows when settings change or
//! a walk loops, values are stored as sent, and bad paths or numbers are
//! refused before anything is touched. Each test runs the real binary
//! against the mock API on 127.0.0.1 and opens the real database.

mod common;

use common::*;
use ingest_mock::{Canned, MockApi};
use serde_json::{Value, json};

/// A pipeline over the canned endpoint `path` of `base` (a next-URL walk
/// unless `pagination` says otherwise), with `extra` lines in `[source]`.
fn edge_pipeline(path: &str, extra: &str, pagination: &str, sink: &str) -> String {
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"{path}\"\nrecords = \"data\"\nconcurrency = 1\n{extra}\n\
         [source.retry]\nmax_attempts = 1\n\
         [source.pagination]\n{pagination}\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"t\"\n{sink}\n"
    )
}

const NEXT: &str = "kind = \"next_url\"\nnext = \"next\"";

fn page(ids: &[i64], next: Option<&str>) -> Canned {
    let data: Vec<Value> = ids.iter().map(|i| json!({"id": i})).collect();
    Canned::json(json!({"data": data, "next": next}).to_string())
}

fn header<'a>(req: &'a ingest_mock::Logged, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

async fn ids(db: &std::path::Path) -> Vec<i64> {
    rows(db, "t", "rowid")
        .await
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect()
}

const KEY: &str = "SuperSecretKey42";
const HDR: &str = "HeaderSecret-7";

/// Auth in a header, and a secret in `headers`: what each listener received.
async fn credentials_across(home: &MockApi, away: &MockApi, path: &str, pagination: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let extra = "headers = { \"X-Secret\" = \"${env:HDR}\" }\n[source.auth]\nkind = \"api_key\"\nname = \"X-Api-Key\"\nvalue = \"${env:KEY}\"\nin = \"header\"";
    let p = write(
        dir.path(),
        "p.toml",
        &edge_pipeline(path, extra, pagination, "write = \"append\""),
    );
    let out = ingest_env(
        dir.path(),
        &home.url(),
        &["run", p.to_str().unwrap_or(""), "-q"],
        &[("KEY", KEY), ("HDR", HDR)],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ids(&dir.path().join("out.db")).await, vec![1, 2]);
    // the API's own origin gets the credentials (so the test can fail) ...
    let first = home.requests();
    assert_eq!(header(&first[0], "x-api-key"), Some(KEY));
    assert_eq!(header(&first[0], "x-secret"), Some(HDR));
    // ... the other one gets none of them, and no Referer
    let there = away.requests();
    assert!(!there.is_empty(), "the walk never reached the other origin");
    for r in &there {
        for h in ["x-api-key", "x-secret", "authorization", "referer"] {
            assert_eq!(header(r, h), None, "{h} sent to another origin: {r:?}");
        }
    }
}

#[tokio::test]
async fn credentials_are_not_sent_across_a_redirect_to_another_port() {
    let (home, away) = (mock(0).await, mock(0).await);
    home.can(
        "/edge/start",
        vec![Canned::status(302).header("location", &format!("{}/edge/away", away.url()))],
    );
    away.can("/edge/away", vec![page(&[1, 2], None)]);
    credentials_across(&home, &away, "/edge/start", NEXT).await;
}

#[tokio::test]
async fn a_same_origin_redirect_keeps_the_credentials() {
    let home = mock(0).await;
    home.can(
        "/edge/start",
        vec![Canned::status(307).header("location", "/edge/moved")],
    );
    home.can("/edge/moved", vec![page(&[1, 2], None)]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let extra = "[source.auth]\nkind = \"bearer\"\ntoken = \"${env:KEY}\"";
    let p = write(
        dir.path(),
        "p.toml",
        &edge_pipeline("/edge/start", extra, NEXT, ""),
    );
    let out = ingest_env(
        dir.path(),
        &home.url(),
        &["run", p.to_str().unwrap_or(""), "-q"],
        &[("KEY", KEY)],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let moved: Vec<_> = home
        .requests()
        .into_iter()
        .filter(|r| r.path == "/edge/moved")
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        header(&moved[0], "authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn next_links_to_another_origin_get_no_credentials() {
    let (home, away) = (mock(0).await, mock(0).await);
    home.can(
        "/edge/p1",
        vec![page(&[1], Some(&format!("{}/edge/p2", away.url())))],
    );
    away.can("/edge/p2", vec![page(&[2], None)]);
    credentials_across(&home, &away, "/edge/p1", NEXT).await;
}

#[tokio::test]
async fn link_headers_to_another_origin_get_no_credentials() {
    let (home, away) = (mock(0).await, mock(0).await);
    home.can(
        "/edge/l1",
        vec![page(&[1], None).header("link", &format!("<{}/edge/l2>; rel=\"next\"", away.url()))],
    );
    away.can("/edge/l2", vec![page(&[2], None)]);
    credentials_across(&home, &away, "/edge/l1", "kind = \"link_header\"").await;
}

#[tokio::test]
async fn a_query_key_stays_home_across_redirects_and_links() {
    let (home, away) = (mock(0).await, mock(0).await);
    home.can(
        "/edge/q1",
        vec![page(
            &[1],
            Some(&format!("{}/edge/q2?api_key={KEY}", away.url())),
        )],
    );
    away.can(
        "/edge/q2",
        vec![Canned::status(302).header("location", &format!("{}/edge/q3", away.url()))],
    );
    away.can("/edge/q3", vec![page(&[2], None)]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let extra = "[source.auth]\nkind = \"api_key\"\nname = \"api_key\"\nvalue = \"${env:KEY}\"\nin = \"query\"";
    let p = write(
        dir.path(),
        "p.toml",
        &edge_pipeline("/edge/q1", extra, NEXT, ""),
    );
    let out = ingest_env(
        dir.path(),
        &home.url(),
        &["run", p.to_str().unwrap_or(""), "-q"],
        &[("KEY", KEY)],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ids(&dir.path().join("out.db")).await, vec![1, 2]);
    assert_eq!(home.requests()[0].param("api_key").as_deref(), Some(KEY));
    let there = away.requests();
    assert_eq!(there.len(), 2, "{there:?}");
    for r in &there {
        assert_eq!(
            r.param("api_key"),
            None,
            "the key went to another origin: {r:?}"
        );
        assert_eq!(header(r, "referer"), None);
    }
}

/// Run a pipeline against `/edge/echo`, which quotes the query and the
/// Authorization header back in a 401; return everything the run printed
/// or stored.
async fn echoed(auth: &str, env: &[(&str, &str)]) -> String {
    let api = mock(0).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "p.toml",
        &edge_pipeline("/edge/echo", &format!("[source.auth]\n{auth}"), NEXT, ""),
    );
    let out = ingest_env(
        dir.path(),
        &api.url(),
        &["run", p.to_str().unwrap_or(""), "--output", "json"],
        env,
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    let db = dir.path().join("out.db");
    let stored = rows(&db, "_ingest_runs", "id").await;
    let all = format!("{}\n{}\n{stored:?}", out.stdout, out.stderr);
    assert!(
        all.contains("invalid key in"),
        "the echo is not in the output: {all}"
    );
    assert!(all.contains("***"), "nothing was masked: {all}");
    all
}

#[tokio::test]
async fn an_echoed_key_is_masked_in_every_encoding() {
    let key = "Zq7KpW3mXv9+abc/def==";
    let all = echoed(
        "kind = \"api_key\"\nname = \"api_key\"\nvalue = \"${env:KEY}\"\nin = \"query\"",
        &[("KEY", key)],
    )
    .await;
    for form in [key, "Zq7KpW3mXv9%2B", "Zq7KpW3mXv9%2b", "Zq7KpW3mXv9"] {
        assert!(!all.contains(form), "`{form}` leaked: {all}");
    }
}

#[tokio::test]
async fn basic_auth_and_short_keys_are_masked() {
    let all = echoed(
        "kind = \"basic\"\nusername = \"${env:USER_NAME}\"\npassword = \"${env:PASS}\"",
        &[("USER_NAME", "ann"), ("PASS", "pa ss/w+rd")],
    )
    .await;
    // base64 of "ann:pa ss/w+rd"
    assert!(
        !all.contains("YW5uOnBhIHNzL3crcmQ="),
        "the basic credential leaked: {all}"
    );
    let all = echoed(
        "kind = \"api_key\"\nname = \"k\"\nvalue = \"${env:KEY}\"\nin = \"query\"",
        &[("KEY", "q7")],
    )
    .await;
    assert!(!all.contains("k=q7"), "a two-character key leaked: {all}");
}
