//! The promises at the edges (issue "Keep every promise at the edges"):
//! credentials never leave `base_url`'s origin, secrets are masked in every
//! encoding, resume state never loses or doubles rows when settings change or
//! a walk loops, values are stored as sent, and bad paths or numbers are
//! refused before anything is touched. Each test runs the real binary
//! against the mock API on 127.0.0.1 and opens the real database.

use crate::common;

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

/// Write `text` as `p.toml` in a new directory and run `ingest run` on it
/// (with `args` after the file) against `api`, with `env` set.
async fn run_text(
    api: &str,
    text: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Out) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", text);
    let mut all = vec!["run", p.to_str().unwrap_or("")];
    all.extend_from_slice(args);
    let out = ingest_env(dir.path(), api, &all, env).await;
    (dir, out)
}

const KEY: &str = "SuperSecretKey42";
const HDR: &str = "HeaderSecret-7";

/// Auth in a header, and a secret in `headers`: what each listener received.
async fn credentials_across(home: &MockApi, away: &MockApi, path: &str, pagination: &str) {
    let extra = "headers = { \"X-Secret\" = \"${env:HDR}\" }\n[source.auth]\nkind = \"api_key\"\nname = \"X-Api-Key\"\nvalue = \"${env:KEY}\"\nin = \"header\"";
    let (dir, out) = run_text(
        &home.url(),
        &edge_pipeline(path, extra, pagination, "write = \"append\""),
        &["-q"],
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
    let extra = "[source.auth]\nkind = \"bearer\"\ntoken = \"${env:KEY}\"";
    let (_dir, out) = run_text(
        &home.url(),
        &edge_pipeline("/edge/start", extra, NEXT, ""),
        &["-q"],
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
    let extra = "[source.auth]\nkind = \"api_key\"\nname = \"api_key\"\nvalue = \"${env:KEY}\"\nin = \"query\"";
    let (dir, out) = run_text(
        &home.url(),
        &edge_pipeline("/edge/q1", extra, NEXT, ""),
        &["-q"],
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
    let (dir, out) = run_text(
        &api.url(),
        &edge_pipeline("/edge/echo", &format!("[source.auth]\n{auth}"), NEXT, ""),
        &["--output", "json"],
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
    let key = "k%y v+/=";
    let all = echoed(
        "kind = \"api_key\"\nname = \"k\"\nvalue = \"${env:KEY}\"\nin = \"query\"",
        &[("KEY", key)],
    )
    .await;
    for form in [key, "k%y v%2B", "k%25y", "k%y+v"] {
        assert!(!all.contains(form), "`{form}` leaked: {all}");
    }
    let all = echoed(
        "kind = \"api_key\"\nname = \"X-Api-Key\"\nvalue = \"${env:KEY}\"\nin = \"header\"",
        &[("KEY", "hdr secret/=+")],
    )
    .await;
    assert!(!all.contains("hdr secret"), "a header key leaked: {all}");
}

/// A page-number walk of `/posts`, 10 a page, one page at a time.
fn posts_pipeline(write_mode: &str) -> String {
    let pk = if write_mode == "merge" {
        "primary_key = [\"id\"]"
    } else {
        ""
    };
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/posts\"\nconcurrency = 1\n\
         [source.retry]\nmax_attempts = 1\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\nwrite = \"{write_mode}\"\nbatch_size = 20\n{pk}\n"
    )
}

/// Run `args` on the pipeline in `dir` while page 8 of `/posts` fails for
/// good: the run fails with pages 1-7 (70 records) committed.
async fn fail_at_page_8(api: &MockApi, dir: &std::path::Path, args: &[&str]) {
    api.set_faults(ingest_mock::Faults {
        broken: vec!["_page=8&".into()],
        ..Default::default()
    });
    let p = dir.join("p.toml");
    let mut all = vec!["run", p.to_str().unwrap_or(""), "-q"];
    all.extend_from_slice(args);
    let out = ingest(dir, &api.url(), &all).await;
    assert_eq!(out.code, 1, "{out:?}");
    api.set_faults(ingest_mock::Faults::default());
    let db = dir.join("out.db");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM _ingest_state").await,
        1,
        "the failed run saved no resume point"
    );
}

#[tokio::test]
async fn resuming_with_another_page_size_is_refused_in_append_mode() {
    let api = mock(200).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &posts_pipeline("append"));
    fail_at_page_8(&api, dir.path(), &[]).await;
    let db = dir.path().join("out.db");
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 70);
    api.clear_requests();
    for size in ["20", "5"] {
        let set = format!("source.pagination.size={size}");
        let out = ingest(
            dir.path(),
            &api.url(),
            &["run", p.to_str().unwrap_or(""), "--set", &set],
        )
        .await;
        assert_eq!(out.code, 2, "size {size}: {out:?}");
        assert!(out.stderr.contains("--full-refresh"), "{}", out.stderr);
        assert!(out.stderr.contains("ingest state reset"), "{}", out.stderr);
        assert!(out.stderr.contains("pagination"), "{}", out.stderr);
    }
    assert!(api.requests().is_empty(), "a refused run sent requests");
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 70);
    // the same settings resume exactly
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&db, "posts", &api).await;
}

#[tokio::test]
async fn resuming_with_another_page_size_starts_over_in_merge_mode() {
    let api = mock(200).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &posts_pipeline("merge"));
    fail_at_page_8(&api, dir.path(), &[]).await;
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "run",
            p.to_str().unwrap_or(""),
            "--set",
            "source.pagination.size=20",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("other settings"), "{}", out.stderr);
    // with the old page 8 of size 20, records 71-140 were never fetched
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
}

#[tokio::test]
async fn an_interrupted_full_refresh_is_finished_by_the_next_plain_run() {
    let api = mock(200).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &posts_pipeline("merge"));
    let db = dir.path().join("out.db");
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 200);
    // upstream deletes 50 posts; the refresh that would drop them fails midway
    api.update(|d| d.posts = 150);
    fail_at_page_8(&api, dir.path(), &["--full-refresh"]).await;
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM _ingest_staging__posts").await,
        70
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM posts").await, 200);
    // a plain run, as the tool advises: it finishes the refresh
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("--full-refresh"), "{}", out.stderr);
    assert_posts(&db, "posts", &api).await;
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '_ingest_staging%'"
        )
        .await,
        0,
        "the staging table was left behind"
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM _ingest_refresh").await, 0);
    // and the pages were not fetched twice: the rerun resumed at page 8
    assert_eq!(
        api.requests()
            .iter()
            .filter(|r| r.param("_page").as_deref() == Some("1"))
            .count(),
        2
    );
}

/// Run a next-URL walk over canned pages (one batch each) into `t`.
async fn land(pages: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let api = mock(0).await;
    for (i, body) in pages.iter().enumerate() {
        let next = if i + 1 < pages.len() {
            format!("\"/edge/v{}\"", i + 1)
        } else {
            "null".into()
        };
        api.can(
            &format!("/edge/v{i}"),
            vec![Canned::json(format!(
                "{{\"data\": {body}, \"next\": {next}}}"
            ))],
        );
    }
    let (dir, out) = run_text(
        &api.url(),
        &edge_pipeline("/edge/v0", "", NEXT, "batch_size = 1"),
        &["-q"],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let db = dir.path().join("out.db");
    (dir, db)
}

#[tokio::test]
async fn integers_past_64_bits_are_stored_exactly() {
    let (_dir, db) = land(&[r#"[
        {"id": 1, "big": 123456789012345678901234567890, "neg": -9223372036854775809, "max": 9223372036854775807},
        {"id": 2, "big": 5, "neg": -1, "max": -9223372036854775808}
    ]"#])
    .await;
    let got = typed_rows(&db, "t", "id").await;
    assert_eq!(got[0]["big"], json!("123456789012345678901234567890"));
    assert_eq!(got[0]["neg"], json!("-9223372036854775809"));
    assert_eq!(got[0]["max"], json!(9223372036854775807i64));
    assert_eq!(got[1]["big"], json!("5"));
    assert_eq!(got[1]["max"], json!(i64::MIN));
}

#[tokio::test]
async fn a_first_batch_of_mixed_values_gets_a_column_that_keeps_them_as_sent() {
    let (_dir, db) = land(&[r#"[
        {"id": 1, "zip": 12345, "code": "007", "amount": 1},
        {"id": 2, "zip": "01234", "code": " 42 ", "amount": 2.5}
    ]"#])
    .await;
    let cols = columns(&db, "t").await;
    let ty = |c: &str| cols.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
    assert_eq!(ty("zip").as_deref(), Some("TEXT"));
    assert_eq!(ty("code").as_deref(), Some("TEXT"));
    assert_eq!(ty("amount").as_deref(), Some("REAL"));
    let got = typed_rows(&db, "t", "id").await;
    assert_eq!(got[0]["zip"], json!("12345"));
    assert_eq!(got[1]["zip"], json!("01234"));
    assert_eq!(got[0]["code"], json!("007"));
    assert_eq!(got[1]["code"], json!(" 42 "));
    assert_eq!(got[1]["amount"], json!(2.5));
}

#[tokio::test]
async fn values_sqlite_would_reformat_are_rejected_with_the_reason() {
    let (_dir, db) = land(&[
        r#"[{"id": 1, "n": 1, "f": 1.5}]"#,
        r#"[{"id": 2, "n": "007"}, {"id": 3, "n": 2.0}, {"id": 4, "n": "1e3"},
            {"id": 5, "n": "abc"}, {"id": 6, "n": 123456789012345678901234567890},
            {"id": 7, "f": " 42 "}, {"id": 8, "n": 2.5}, {"id": 9, "f": 3}]"#,
    ])
    .await;
    let cols = columns(&db, "t").await;
    assert!(cols.contains(&("n".into(), "INTEGER".into())), "{cols:?}");
    let got = typed_rows(&db, "t", "id").await;
    let kept: Vec<i64> = got.iter().filter_map(|r| r["id"].as_i64()).collect();
    assert_eq!(kept, vec![1, 5, 8, 9]);
    assert_eq!(got[1]["n"], json!("abc"));
    assert_eq!(got[2]["n"], json!(2.5));
    let rejects = rows(&db, "_ingest_rejects", "id").await;
    let rejected: Vec<i64> = rejects
        .iter()
        .filter_map(|r| {
            let rec: Value = serde_json::from_str(r["record"].as_str()?).ok()?;
            rec["id"].as_i64()
        })
        .collect();
    assert_eq!(rejected, vec![2, 3, 4, 6, 7]);
    for r in &rejects {
        let reason = r["reason"].as_str().unwrap_or("");
        assert!(reason.contains("affinity"), "{reason}");
        assert!(reason.contains("[sink.columns]"), "{reason}");
    }
}

/// Validate `text` as `p.toml` in a fresh directory: exit 2 naming `key`,
/// and `run` exits 2 too, sending nothing and creating nothing.
async fn refused(text: &str, key: &str, args: &[&str]) {
    let api = mock(20).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", text);
    let before: Vec<_> = entries(dir.path());
    let out = ingest(
        dir.path(),
        &api.url(),
        &["validate", p.to_str().unwrap_or("")],
    )
    .await;
    if args.is_empty() {
        assert_eq!(out.code, 2, "validate: {out:?}");
        assert!(
            out.stderr.contains(key),
            "validate names `{key}`: {}",
            out.stderr
        );
    }
    let mut all = vec!["run", p.to_str().unwrap_or("")];
    all.extend_from_slice(args);
    let out = ingest(dir.path(), &api.url(), &all).await;
    assert_eq!(out.code, 2, "run: {out:?}");
    assert!(
        out.stderr.contains(key),
        "run names `{key}`: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(api.requests().is_empty(), "a refused run sent requests");
    assert_eq!(
        entries(dir.path()),
        before,
        "a refused run left files behind"
    );
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `posts_pipeline("append")` with `line` replacing or added to the file.
fn with(line_from: &str, line_to: &str) -> String {
    let text = posts_pipeline("append");
    assert!(text.contains(line_from), "{line_from}");
    text.replacen(line_from, line_to, 1)
}

#[tokio::test]
async fn sink_paths_that_cannot_hold_a_database_are_refused_up_front() {
    refused(&with("path = \"out.db\"", "path = \"\""), "sink.path", &[]).await;
    refused(
        &with("path = \"out.db\"", "path = \".\""),
        "is a directory",
        &[],
    )
    .await;
    refused(
        &with("path = \"out.db\"", "path = \"p.toml/x.db\""),
        "is a file",
        &[],
    )
    .await;
    refused(
        &with("path = \"out.db\"", "path = \"p.toml\""),
        "not a SQLite database",
        &[],
    )
    .await;
}

#[tokio::test]
async fn numbers_out_of_range_are_refused_up_front() {
    for (from, to, key) in [
        (
            "concurrency = 1",
            "concurrency = 9223372036854775807",
            "source.concurrency",
        ),
        ("concurrency = 1", "concurrency = 100000", "out of range"),
        (
            "batch_size = 20",
            "batch_size = 10000000",
            "sink.batch_size",
        ),
        ("size = 10", "size = 0", "source.pagination.size"),
        (
            "max_attempts = 1",
            "max_attempts = 100000",
            "source.retry.max_attempts",
        ),
    ] {
        refused(&with(from, to), key, &[]).await;
    }
}

#[tokio::test]
async fn validation_catches_what_the_run_would_get_wrong() {
    let part = |table: &str| with("[sink]", &format!("{table}\n[sink]"));
    let cases = [
        (
            part(
                "[source.partition]\nkind = \"range\"\nparam = \"userId\"\nstart = 10\nend = 1\nstep = 1",
            ),
            "source.partition.end",
        ),
        (
            part(
                "[source.partition]\nkind = \"range\"\nparam = \"userId\"\nstart = 1\nend = 200000\nstep = 1",
            ),
            "more than 100000",
        ),
        (
            part(
                "[source.partition]\nkind = \"range\"\nparam = \"userId\"\nstart = -9223372036854775808\nend = 9223372036854775807\nstep = 1",
            ),
            "more than 100000",
        ),
        (
            part(
                "[source.partition]\nkind = \"dates\"\nstart = \"2024-02-01\"\nend = \"2024-01-01\"\nstep = \"1d\"\nstart_param = \"since\"",
            ),
            "source.partition.end",
        ),
        (
            with("path = \"/posts\"", "path = \"/posts/{id}\""),
            "`{id}` is filled by nothing",
        ),
        (with("[source]", "name = \"\"\n[source]"), "name"),
        (
            with(
                "[sink]",
                "[sink.columns]\nid = \"integer\"\nID = \"text\"\n[sink]",
            ),
            "differ only in case",
        ),
        (
            part(
                "[source.incremental]\ncursor_field = \"updatedAt\"\nparam = \"updated_since\"\ninitial = \"last tuesday\"\nlookback = \"1h\"",
            ),
            "source.incremental.initial",
        ),
        (
            part(
                "[source.incremental]\ncursor_field = \"updatedAt\"\nparam = \"updated_since\"\ninitial = \"0\"\nlookback = \"100000years\"",
            ),
            "source.incremental.lookback",
        ),
    ];
    for (text, key) in cases {
        refused(&text, key, &[]).await;
    }
}

#[tokio::test]
async fn bad_since_and_until_are_refused_before_any_request() {
    let inc = with(
        "[sink]",
        "[source.incremental]\ncursor_field = \"updatedAt\"\nparam = \"updated_since\"\ninitial = \"1970-01-01T00:00:00Z\"\nend_param = \"updated_before\"\n[sink]",
    );
    refused(&inc, "--since", &["--since", "garbage"]).await;
    refused(
        &inc,
        "--since must be before --until",
        &["--since", "2024-02-01", "--until", "2024-01-01"],
    )
    .await;
    let dates = with(
        "[sink]",
        "[source.partition]\nkind = \"dates\"\nstart = \"2024-01-01\"\nend = \"2024-01-03\"\nstep = \"1d\"\nstart_param = \"since\"\n[sink]",
    );
    refused(
        &dates,
        "--until",
        &["--since", "2024-02-01", "--until", "2024-01-01"],
    )
    .await;
}

#[tokio::test]
async fn a_closed_stdout_ends_quietly() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &posts_pipeline("append"));
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", p.to_str().unwrap_or(""), "-q"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let path = p.to_str().unwrap_or("");
    for args in [
        vec!["validate", path, path, path],
        vec!["show", path, "--limit", "200"],
        vec!["runs", path],
        vec!["preview", path],
    ] {
        // a pipe whose reader is gone before ingest writes a byte
        let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
        drop(reader);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
            .args(&args)
            .current_dir(dir.path())
            .env("API_BASE", api.url())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
            .await
            .unwrap_or_else(|_| panic!("{args:?} hung"))
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

/// Wait until `cond` holds, polling; fail the test after `secs` seconds.
async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_ledger_tells_the_truth_about_locks_and_dead_runs() {
    let api = mock(200).await;
    api.set_delay(std::time::Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(dir.path(), "p.toml", &posts_pipeline("append"));
    let path = p.to_str().unwrap_or("");
    let mut child = spawn_ingest(dir.path(), &api.url(), &["run", path, "-q"]);
    // the run holds the lock once it has asked for its first page
    until(30, "the run's first request", || !api.requests().is_empty()).await;
    let reset = ingest(dir.path(), &api.url(), &["state", "reset", path]).await;
    assert_eq!(
        reset.code, 75,
        "state reset while a run holds the lock: {reset:?}"
    );
    let second = ingest(dir.path(), &api.url(), &["run", path]).await;
    assert_eq!(second.code, 75, "{second:?}");
    assert!(
        !second.stderr.contains("resumes from there"),
        "{}",
        second.stderr
    );
    // SIGKILL: `runs` sees the lock is free and says so
    child.kill().await.unwrap_or_else(|e| panic!("{e}"));
    let runs = ingest(dir.path(), &api.url(), &["runs", path, "--output", "json"]).await;
    assert_eq!(runs.code, 0, "{runs:?}");
    let last: Value = runs
        .stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert_eq!(last["status"], "killed", "{}", runs.stdout);
    let reset = ingest(dir.path(), &api.url(), &["state", "reset", path]).await;
    assert_eq!(reset.code, 0, "{reset:?}");
}

#[tokio::test]
async fn a_refused_request_says_a_rerun_will_not_fix_it() {
    let api = mock(0).await;
    let (_dir, out) = run_text(
        &api.url(),
        &edge_pipeline("/edge/echo", "", NEXT, ""),
        &[],
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    assert!(
        out.stderr.contains("a rerun will not fix this"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("resumes from there"), "{}", out.stderr);
}

/// The wait between a 429 carrying `header: value` and the retry.
async fn waited_after(header: &str, value: &str) -> std::time::Duration {
    let api = mock(0).await;
    api.can(
        "/edge/slow",
        vec![Canned::status(429).header(header, value), page(&[1], None)],
    );
    let text = edge_pipeline("/edge/slow", "", NEXT, "").replace(
        "max_attempts = 1",
        "max_attempts = 3\ninitial_delay = \"1ms\"\njitter = false",
    );
    let (_dir, out) = run_text(&api.url(), &text, &["-q"], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = api.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    reqs[1].at - reqs[0].at
}

#[tokio::test]
async fn fractional_retry_after_and_retry_after_ms_are_honoured() {
    // without the hint the retry comes after 1 ms
    let w = waited_after("retry-after", "0.5").await;
    assert!(
        w >= std::time::Duration::from_millis(480),
        "Retry-After: 0.5 waited {w:?}"
    );
    let w = waited_after("retry-after-ms", "300").await;
    assert!(
        w >= std::time::Duration::from_millis(280),
        "retry-after-ms: 300 waited {w:?}"
    );
}

/// Fields that appear in later batches add columns with the types the sink
/// infers, and earlier rows keep NULL there (one batch per page: no timing).
#[tokio::test]
async fn later_batches_add_columns_with_inferred_types() {
    let (_dir, db) = land(&[
        r#"[{"id": 1, "a": 10}]"#,
        r#"[{"id": 2, "a": 20, "b": "two"}]"#,
        r#"[{"id": 3, "c": 1.5, "d": {"x": [1]}, "e": true}, {"id": 4, "c": 2, "B": null}]"#,
    ])
    .await;
    assert_eq!(
        columns(&db, "t").await,
        [
            ("id", "INTEGER"),
            ("a", "INTEGER"),
            ("b", "TEXT"),
            ("c", "REAL"),
            ("d", "TEXT"),
            ("e", "INTEGER"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let got = typed_rows(&db, "t", "id").await;
    assert_eq!(got[0]["b"], Value::Null);
    assert_eq!(got[1]["b"], json!("two"));
    assert_eq!(got[2]["c"], json!(1.5));
    assert_eq!(got[3]["c"], json!(2.0));
    assert_eq!(got[2]["d"], json!("{\"x\":[1]}"));
    assert_eq!(got[2]["e"], json!(1));
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM _ingest_runs WHERE status = 'done'"
        )
        .await,
        1
    );
}

/// The peak of requests in flight, as the mock saw it, for a pipeline over
/// `/posts` (200 posts, 20 ms a response).
async fn peak(pagination: &str, source: &str) -> u64 {
    let api = mock(200).await;
    api.set_delay(std::time::Duration::from_millis(20));
    let text = format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/posts\"\n{source}\n\
         [source.pagination]\n{pagination}\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\nwrite = \"append\"\n"
    );
    let (dir, out) = run_text(&api.url(), &text, &["-q"], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    api.peak_in_flight()
}

const PAGES: &str = "kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"";

#[tokio::test]
async fn concurrency_is_what_the_mock_sees() {
    // concurrent pages of one walk: up to `concurrency`, and more than one
    let p = peak(PAGES, "concurrency = 4").await;
    assert!((2..=4).contains(&p), "concurrent pages: {p} in flight");
    let p = peak(PAGES, "concurrency = 1").await;
    assert_eq!(p, 1, "concurrency = 1: {p} in flight");
    // 20 partitions (one per user), sequential walks: `concurrency` at a time
    let users =
        "[source.partition]\nkind = \"range\"\nparam = \"userId\"\nstart = 1\nend = 20\nstep = 1";
    let sequential = "kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 5";
    let p = peak(sequential, &format!("concurrency = 3\n{users}")).await;
    assert!((2..=3).contains(&p), "partitions: {p} in flight");
    // partitions whose pages are fetched concurrently share the source's cap
    let p = peak(PAGES, &format!("concurrency = 2\n{users}")).await;
    assert_eq!(p, 2, "shared cap: {p} in flight");
}
