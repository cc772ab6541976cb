//! Real APIs misbehave: 429s with Retry-After, 5xx bursts, truncated bodies,
//! resets, rate limits, pages that fail for good, signals. The table must
//! still equal the data, and nothing may come back before its Retry-After.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use ingest_mock::faults::Action;
use ingest_mock::{Faults, MockApi, MockConfig};

async fn api_with(posts: u64, faults: Faults, seed: u64) -> MockApi {
    MockApi::start(MockConfig {
        posts,
        faults,
        seed,
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn report(out: &Out) -> serde_json::Value {
    out.stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_default()
}

async fn example_under_faults(file: &str, posts: u64, seed: u64) {
    let api = api_with(posts, Faults::rough(), seed).await;
    let run = run_example(&api, file).await;
    let r = report(&run.out);
    assert!(
        r["retries"].as_u64().unwrap_or(0) > 0,
        "{file}: no fault was hit, the test proves nothing: {r}"
    );
    assert_posts(&run.db, &run.table, &api).await;
    assert_eq!(
        api.early_retries(),
        0,
        "{file}: requests came back before their Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_under_faults() {
    example_under_faults("page_number.toml", 400, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_under_faults() {
    example_under_faults("offset.toml", 400, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_last_record_under_faults() {
    example_under_faults("cursor_stripe.toml", 300, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_body_under_faults() {
    example_under_faults("cursor_slack.toml", 300, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_header_under_faults() {
    example_under_faults("cursor_header.toml", 300, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_url_under_faults() {
    example_under_faults("next_url.toml", 300, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_header_under_faults() {
    example_under_faults("link_header.toml", 400, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_under_faults() {
    // one request: pick a seed whose only URL is faulty
    let f = Faults::rough();
    let seed = (1..10_000)
        .find(|s| f.decide(*s, "/posts", 1) != Action::Serve)
        .unwrap_or(1);
    example_under_faults("none.toml", 50, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_repeated_across_pages_merge_once() {
    let api = api_with(
        95,
        Faults {
            repeat_boundary: true,
            ..Faults::default()
        },
        42,
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let example = root().join("pipelines/examples/offset.toml");
    let db = dir.path().join("out.db");
    let set = format!("sink.path={}", db.display());
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", example.to_str().unwrap_or(""), "--set", &set],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&db, "posts_offset", &api).await;
}

const PAGED: &str = r#"[source]
kind = "http"
base_url = "${API_BASE}"
path = "/posts"
concurrency = CONC
RATE
[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 10
total = "header:X-Total-Count"
[source.retry]
initial_delay = "10ms"
max_delay = "5s"
[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
write = "append"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_across_concurrent_requests() {
    let api = api_with(600, Faults::default(), 42).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "p.toml",
        &PAGED
            .replace("CONC", "16")
            .replace("RATE", "rate_limit = \"20/s\""),
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    let most = api.max_in_window(Duration::from_secs(1));
    assert!(most <= 21, "{most} requests within one second under 20/s");
    assert!(most >= 15, "{most}: the limiter is far below its rate");
}

/// 30 requests against 10 a second, one at a time and with no retry: a
/// client that ignores the rate-limit headers sends the 11th request into a
/// 429 and fails; one that reads `Remaining: 0` waits for the reset and never
/// meets a 429. Both header styles: `X-RateLimit-*` and the IETF draft's.
async fn ratelimit_headers(style: ingest_mock::faults::RateStyle) {
    let api = api_with(
        300,
        Faults {
            max_rps: Some(10),
            rate_style: style,
            ..Faults::default()
        },
        42,
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "p.toml",
        &PAGED
            .replace("CONC", "1")
            .replace("RATE", "")
            .replace("initial_delay = \"10ms\"", "max_attempts = 1"),
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{style:?}: {out:?}");
    assert_eq!(api.rate_limited(), 0, "{style:?}: a request met the limit");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    // the limit was really reached: 30 requests at most 10 in any second
    assert!(api.max_in_window(Duration::from_secs(1)) <= 10);
    assert_eq!(api.requests().len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_ratelimit_headers_pause_before_the_429s() {
    ratelimit_headers(ingest_mock::faults::RateStyle::Prefixed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ietf_ratelimit_headers_pause_before_the_429s() {
    ratelimit_headers(ingest_mock::faults::RateStyle::Ietf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_fails_for_good_skip_or_fail() {
    let broken = Faults {
        broken: vec!["_page=3&".into()],
        ..Faults::default()
    };
    let api = api_with(50, broken, 42).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // fail (the default): what came before is committed, the state is kept
    let p = write(
        dir.path(),
        "fail.toml",
        &PAGED
            .replace("CONC", "1")
            .replace("RATE", "")
            .replace("out.db", "fail.db"),
    );
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("HTTP 500, expected a 2xx response (after 6 attempts): {\"error\":\"this page is broken for good\"}"), "{}", out.stderr);
    assert!(
        out.stderr.contains("/posts?_page=3&_limit=10"),
        "{}",
        out.stderr
    );
    assert_eq!(
        scalar(&dir.path().join("fail.db"), "SELECT count(*) FROM posts").await,
        20
    );
    assert_eq!(
        scalar(
            &dir.path().join("fail.db"),
            "SELECT count(*) FROM _ingest_state WHERE resume LIKE '%\"page\":3%'"
        )
        .await,
        1
    );
    // skip: recorded in _ingest_rejects, the walk goes on
    let p = write(
        dir.path(),
        "skip.toml",
        &PAGED
            .replace("CONC", "1")
            .replace("RATE", "on_error = \"skip\"")
            .replace("out.db", "skip.db"),
    );
    let out = ingest(
        dir.path(),
        &api.url(),
        &["run", p.to_str().unwrap_or(""), "--output", "json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(report(&out)["rejects"], 1, "{}", out.stdout);
    let db = dir.path().join("skip.db");
    let got = rows(&db, "posts", "id").await;
    let data = api.dataset();
    let want: Vec<serde_json::Value> = (1..=20).chain(31..=50).map(|id| data.post(id)).collect();
    assert_eq!(got, want);
    let rejects = rows(&db, "_ingest_rejects", "id").await;
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["status"], 500);
    assert!(
        rejects[0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("_page=3")),
        "{rejects:?}"
    );
    assert!(
        rejects[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("broken for good")),
        "{rejects:?}"
    );
}

async fn signal_test(signal: &str, code: i32) {
    let api = MockApi::start(MockConfig {
        posts: 300,
        delay: Duration::from_millis(25),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "p.toml",
        &PAGED
            .replace("CONC", "1")
            .replace("RATE", "")
            .replace("total = \"header:X-Total-Count\"\n", ""),
    );
    let child = spawn_ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]);
    for _ in 0..300 {
        if api.requests().len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        api.requests().len() >= 8,
        "the run sent fewer than 8 requests in 3 s"
    );
    let pid = child.id().unwrap_or(0).to_string();
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("no exit after {signal}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = sent.elapsed();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the contract: out within two seconds of the signal
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    let db = dir.path().join("out.db");
    let runs = rows(&db, "_ingest_runs", "id").await;
    assert_eq!(runs[0]["status"], "interrupted", "{runs:?}");
    let stored = scalar(&db, "SELECT count(*) FROM posts").await;
    assert!(stored > 0 && stored < 300, "{stored}");
    let rerun = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(rerun.code, 0, "{rerun:?}");
    // append mode: an exact table means nothing was doubled
    let got = rows(&db, "posts", "id, rowid").await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_and_exits_143() {
    signal_test("-TERM", 143).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_commits_and_exits_130() {
    signal_test("-INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_nowhere() {
    let token = "tok-S3CRET-4f9a1c";
    let key = "key-S3CRET-77e0b2";
    let faults = Faults {
        broken: vec!["_page=4&".into()],
        ..Faults::rough()
    };
    let api = api_with(60, faults, 42).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bearer = write(
        dir.path(),
        "bearer.toml",
        &PAGED
            .replace("CONC", "2")
            .replace(
                "RATE",
                "[source.auth]\nkind = \"bearer\"\ntoken = \"${env:API_TOKEN}\"",
            )
            .replace("out.db", "secret.db"),
    );
    let query = write(
        dir.path(),
        "query.toml",
        &PAGED
            .replace("CONC", "2")
            .replace("RATE", "[source.auth]\nkind = \"api_key\"\nname = \"api_key\"\nvalue = \"${env:API_KEY}\"\nin = \"query\"")
            .replace("out.db", "secret.db")
            .replace("table = \"posts\"", "table = \"posts_q\""),
    );
    let env = [("API_TOKEN", token), ("API_KEY", key)];
    let mut all = String::new();
    for p in [&bearer, &query] {
        for args in [
            vec!["-vv", "run", "--output", "json"],
            vec!["-vv", "--log-format", "json", "run"],
        ] {
            let mut a = args.clone();
            a.push(p.to_str().unwrap_or(""));
            let out = ingest_env(dir.path(), &api.url(), &a, &env).await;
            assert_eq!(out.code, 1, "page 4 is broken: {out:?}");
            all.push_str(&out.stdout);
            all.push_str(&out.stderr);
        }
    }
    // the test means something: retries were logged with URLs, the run failed
    // with one, and the secrets really were sent
    assert!(all.contains("; retrying "), "{all}");
    assert!(all.contains("api_key=***"), "{all}");
    let reqs = api.requests();
    assert!(reqs.iter().any(|r| {
        r.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == &format!("Bearer {token}"))
    }));
    assert!(
        reqs.iter()
            .any(|r| r.param("api_key").as_deref() == Some(key))
    );
    assert!(
        !all.contains(token) && !all.contains(key),
        "a secret was printed"
    );
    for entry in std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(token) && !text.contains(key),
            "a secret is in {}",
            entry.path().display()
        );
    }
}

/// `concurrency = "auto"` on a fast API grows to its cap, and never past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_concurrency_grows_to_the_cap() {
    let api = MockApi::start(MockConfig {
        posts: 600,
        delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = PAGED
        .replace("CONC", "\"auto\"\nmax_concurrency = 8")
        .replace("RATE", "");
    let p = write(dir.path(), "p.toml", &text);
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    let peak = api.peak_in_flight();
    assert!((6..=8).contains(&peak), "peak in flight {peak}, cap 8");
}

/// Under the server's rate limit, "auto" backs off on the 429s and honours
/// every Retry-After: the table is exact and no retry came back early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_concurrency_backs_off_under_a_rate_limit() {
    let api = api_with(
        400,
        Faults {
            max_rps: Some(25),
            ..Faults::default()
        },
        42,
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = PAGED
        .replace("CONC", "\"auto\"")
        .replace("RATE", "")
        .replace("initial_delay = \"10ms\"", "max_attempts = 20");
    let p = write(dir.path(), "p.toml", &text);
    let out = ingest(dir.path(), &api.url(), &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    assert_eq!(
        api.early_retries(),
        0,
        "a retry came back before its Retry-After"
    );
}
