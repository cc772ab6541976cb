//! OAuth2 against the mock's token endpoint (`/oauth/token`) and the posts
//! behind it (`/oauth/posts`): client credentials renewed before they
//! expire, a revoked token renewed once on a 401, a refresh token rotated on
//! every use and kept in the ledger the moment it arrives (across a SIGKILL
//! and in PostgreSQL, where the three processes of a shared run take turns
//! with it), and no token or client secret in any output.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ingest_mock::MockApi;
use ingest_mock::oauth::{CLIENT_ID, CLIENT_SECRET, FIRST_REFRESH, OAuthStats};

/// A pipeline over `/oauth/posts`, `size` posts a page, with this auth
/// section's body (after `kind = "oauth2"` and `token_url`).
fn pipeline(dir: &Path, size: u64, concurrency: u32, auth: &str, sink: &str) -> String {
    let text = format!(
        r#"[source]
kind = "http"
base_url = "${{API_BASE}}"
path = "/oauth/posts"
concurrency = {concurrency}

[source.auth]
kind = "oauth2"
token_url = "${{API_BASE}}/oauth/token"
{auth}

[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = {size}
total = "header:X-Total-Count"

{sink}
"#
    );
    write(dir, "p.toml", &text).display().to_string()
}

const SQLITE: &str = r#"[sink]
kind = "sqlite"
path = "out.db"
table = "posts"
write = "merge"
primary_key = ["id"]"#;

fn client_credentials(client_auth: &str) -> String {
    format!(
        r#"grant = "client_credentials"
client_id = "{CLIENT_ID}"
client_secret = "${{CLIENT_SECRET}}"
scopes = ["read:posts", "offline"]
params = {{ audience = "posts-api" }}
client_auth = "{client_auth}""#
    )
}

const REFRESH: &str = r#"grant = "refresh_token"
client_id = "ingest-mock-client"
client_secret = "${CLIENT_SECRET}"
refresh_token = "${REFRESH_TOKEN}""#;

fn env(refresh: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CLIENT_SECRET", CLIENT_SECRET.to_string()),
        ("REFRESH_TOKEN", refresh.to_string()),
    ]
}

async fn run(dir: &Path, api: &MockApi, p: &str, env: &[(&'static str, String)]) -> Out {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ingest_env(dir, &api.url(), &["run", p, "--progress", "never"], &env).await
}

/// No token the server issued, and not the client's secret, in `text`.
fn assert_no_secret(text: &str, stats: &OAuthStats) {
    assert!(
        !text.contains(CLIENT_SECRET),
        "the client secret leaked: {text}"
    );
    for t in &stats.tokens {
        assert!(!text.contains(t.as_str()), "token {t} leaked: {text}");
    }
    assert!(
        !text.contains(FIRST_REFRESH),
        "the refresh token leaked: {text}"
    );
}

/// Everything ingest wrote about its runs in a SQLite ledger, as text.
async fn ledger_text(db: &Path) -> String {
    let rows = rows(db, "_ingest_runs", "id").await;
    serde_json::to_string(&rows).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_are_renewed_before_they_expire() {
    // 100 pages of at least 40 ms each, one at a time: 4 s or more, with
    // tokens that live 3 s, so the run needs a second token
    let api = slow_mock(300, 40).await;
    api.set_token_ttl(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), 3, 1, &client_credentials("body"), SQLITE);
    let out = run(dir.path(), &api, &p, &env("")).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    let stats = api.oauth_stats();
    assert!(stats.issued >= 2, "no renewal: {stats:?}");
    // renewed ahead of the expiry, so the API never refused one
    assert_eq!(stats.unauthorized, 0, "{stats:?}");
    // the grant's form, as RFC 6749 §4.4 and the pipeline have it
    let form = |k: &str| {
        stats
            .last_form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(form("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(form("scope").as_deref(), Some("read:posts offline"));
    assert_eq!(form("audience").as_deref(), Some("posts-api"));
    assert_eq!(form("client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(stats.last_client_auth, "body");
    assert_no_secret(&format!("{}{}", out.stdout, out.stderr), &stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_client_auth_keeps_the_secret_out_of_the_form() {
    let api = mock(40).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), 10, 2, &client_credentials("basic"), SQLITE);
    let out = run(dir.path(), &api, &p, &env("")).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    let stats = api.oauth_stats();
    assert_eq!(stats.last_client_auth, "basic", "{stats:?}");
    assert!(
        !stats.last_form.iter().any(|(k, _)| k == "client_secret"),
        "{stats:?}"
    );
    assert_eq!(stats.issued, 1, "one token serves the whole run: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_renewed_once_on_a_401() {
    let api = slow_mock(200, 30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), 5, 4, &client_credentials("body"), SQLITE);
    let mut env_vars = env("");
    env_vars.push(("RUST_LOG", "info".into()));
    let child = {
        let env: Vec<(&str, &str)> = env_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"));
        cmd.args(["run", &p, "--progress", "never"])
            .current_dir(dir.path())
            .env("API_BASE", api.url())
            .envs(env)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn().unwrap_or_else(|e| panic!("{e}"))
    };
    // revoke once a few pages came back: the run is in the middle
    for _ in 0..400 {
        if api.served() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.revoke_tokens();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the run did not finish"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_posts(&dir.path().join("out.db"), "posts", &api).await;
    let stats = api.oauth_stats();
    assert!(
        stats.unauthorized >= 1,
        "the revocation came too late: {stats:?}"
    );
    // four requests in flight may meet the revoked token; one renewal serves them all
    assert_eq!(stats.issued, 2, "{stats:?}");
    assert!(stderr.contains("renewing it once"), "{stderr}");
    assert_no_secret(&stderr, &stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_after_renewal_fails_the_run_with_the_echo_masked() {
    let api = mock(30).await;
    // every token is expired on arrival: the API refuses each, and echoes it
    api.set_token_ttl(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), 10, 1, &client_credentials("body"), SQLITE);
    let out = run(dir.path(), &api, &p, &env("")).await;
    assert_eq!(out.code, 1, "{out:?}");
    let stats = api.oauth_stats();
    // the first token, then one renewal: never a loop of renewals
    assert_eq!(stats.issued, 2, "{stats:?}");
    assert_eq!(stats.unauthorized, 2, "{stats:?}");
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    assert!(
        out.stderr.contains("the access token `***` is expired"),
        "{}",
        out.stderr
    );
    assert_no_secret(&out.stderr, &stats);
    assert_no_secret(&ledger_text(&dir.path().join("out.db")).await, &stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_fails_before_any_page() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), 10, 1, &client_credentials("basic"), SQLITE);
    let wrong = vec![("CLIENT_SECRET", "not-the-secret-4411".to_string())];
    let out = run(dir.path(), &api, &p, &wrong).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "OAuth2 token request to {}/oauth/token: the token endpoint refused: invalid_client",
            api.url()
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("not-the-secret-4411"),
        "{}",
        out.stderr
    );
    // a refusal is not retried, and no page was asked
    assert_eq!(api.oauth_stats().refused_grants, 1);
    assert!(!api.requests().iter().any(|r| r.path == "/oauth/posts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_kept_at_once_and_survives_a_kill() {
    // tokens live 1 s and pages take 40 ms or more: the run refreshes, and
    // so rotates, about every 20 pages
    let api = slow_mock(300, 40).await;
    api.set_token_ttl(Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("out.db");
    let p = pipeline(dir.path(), 3, 1, REFRESH, SQLITE);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["run", &p, "--progress", "never"])
        .current_dir(dir.path())
        .env("API_BASE", api.url())
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("REFRESH_TOKEN", FIRST_REFRESH)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // wait for the second rotation to be in the ledger, then SIGKILL
    let mut kept = String::new();
    for _ in 0..1000 {
        let stats = api.oauth_stats();
        if stats.issued >= 2
            && db.exists()
            && let Some(current) = stats.current_refresh
        {
            let got = rows(&db, "_ingest_tokens", "pipeline").await;
            if got.first().and_then(|r| r["token"].as_str()) == Some(current.as_str()) {
                kept = current;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!kept.is_empty(), "no rotated token was kept");
    child.start_kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = child.wait().await;
    // the configured token is spent; the next run starts from the kept one
    let out = run(dir.path(), &api, &p, &env(FIRST_REFRESH)).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_posts(&db, "posts", &api).await;
    let stats = api.oauth_stats();
    assert_eq!(stats.refused_grants, 0, "a spent token was sent: {stats:?}");
    assert_no_secret(&format!("{}{}", out.stdout, out.stderr), &stats);
    assert_no_secret(&ledger_text(&db).await, &stats);

    // a new configured refresh token (a new authorization) wins over the kept one
    let out = run(dir.path(), &api, &p, &env("a-new-authorization-7781")).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("invalid_grant"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("a-new-authorization-7781"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_rotated_refresh_token_too() {
    let api = mock(60).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let sink = format!(
        r#"[sink]
kind = "postgres"
url = "{url}"
table = "posts"
write = "merge"
primary_key = ["id"]"#
    );
    let p = pipeline(dir.path(), 20, 2, REFRESH, &sink);
    for round in 0..2 {
        let out = run(dir.path(), &api, &p, &env(FIRST_REFRESH)).await;
        assert_eq!(out.code, 0, "run {round}: {out:?}");
    }
    let stats = api.oauth_stats();
    assert_eq!(stats.issued, 2, "{stats:?}");
    assert_eq!(stats.refused_grants, 0, "{stats:?}");
    let kept = pg_rows(&url, "SELECT token FROM ingest.tokens WHERE pipeline = 'p'").await;
    assert_eq!(
        kept.first().and_then(|r| r["token"].as_str()),
        stats.current_refresh.as_deref()
    );
    assert_eq!(
        pg_scalar(&url, "SELECT count(*) FROM posts").await,
        60,
        "rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_mistakes_are_reported_in_one_pass() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let auth = r#"grant = "refresh_token"
client_id = ""
client_auth = "basic""#;
    let p = pipeline(dir.path(), 10, 1, auth, SQLITE);
    let body = std::fs::read_to_string(&p)
        .unwrap_or_default()
        .replace("\"${API_BASE}/oauth/token\"", "\"ftp://nowhere\"");
    std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(dir.path(), "http://127.0.0.1:9", &["validate", "p.toml"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    for want in [
        "p.toml:9:13: source.auth.token_url: is not an http(s) URL",
        "source.auth.client_id: must not be empty",
        "source.auth.grant: `grant = \"refresh_token\"` needs `refresh_token`",
        "source.auth.client_auth: `basic` sends the client's secret",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing {want:?} in:\n{}",
            out.stderr
        );
    }
    assert!(!dir.path().join("out.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_output_cannot_keep_a_rotated_token_and_says_so() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sink = "[sink]\nkind = \"jsonl\"\npath = \"-\"";
    let p = pipeline(dir.path(), 10, 1, REFRESH, sink);
    let out = run(dir.path(), &api, &p, &env(FIRST_REFRESH)).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 30);
    assert!(
        out.stderr
            .contains("this sink keeps no ledger to hold the new one"),
        "{}",
        out.stderr
    );
    assert_no_secret(&out.stderr, &api.oauth_stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_of_a_shared_run_take_turns_with_a_single_use_token() {
    // 60 daily windows, 4 pages of 25 ms each, shared by three processes,
    // with access tokens that live a second: each process renews several
    // times, always with the refresh token another may just have rotated
    let api = MockApi::start(ingest_mock::MockConfig {
        posts: 520,
        spacing: 3 * 3600,
        delay: Duration::from_millis(25),
        ..ingest_mock::MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    api.set_token_ttl(Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let url = pg_database(d).await;
    let text = format!(
        r#"name = "shared"
[source]
kind = "http"
base_url = "${{API_BASE}}"
path = "/oauth/posts"
concurrency = 1

[source.auth]
kind = "oauth2"
token_url = "${{API_BASE}}/oauth/token"
{REFRESH}

[source.partition]
kind = "dates"
start = "2024-01-01"
end = "2024-03-01"
step = "1d"
start_param = "updated_since"
end_param = "updated_before"

[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 2

[sink]
kind = "postgres"
url = "{url}"
table = "posts"
write = "append"
lease = "30s"
"#
    );
    write(d, "shared.toml", &text);
    let env = env(FIRST_REFRESH);
    let (a, b, c) = tokio::join!(
        run(d, &api, "shared.toml", &env),
        run(d, &api, "shared.toml", &env),
        run(d, &api, "shared.toml", &env),
    );
    let stats = api.oauth_stats();
    for out in [&a, &b, &c] {
        assert_eq!(out.code, 0, "{out:?}\n{stats:?}");
        assert_no_secret(&format!("{}{}", out.stdout, out.stderr), &stats);
    }
    assert_eq!(stats.refused_grants, 0, "a spent token was used: {stats:?}");
    assert!(stats.issued >= 4, "the processes renewed: {stats:?}");
    let kept = pg_rows(
        &url,
        "SELECT token FROM ingest.tokens WHERE pipeline = 'shared'",
    )
    .await;
    assert_eq!(
        kept.first().and_then(|r| r["token"].as_str()),
        stats.current_refresh.as_deref(),
        "the ledger holds the live token"
    );
    // post n is n * 3 h after 2024-01-01: [1, 479] fall before 2024-03-01
    let data = api.dataset();
    let want: Vec<serde_json::Value> = (1..=479).map(|id| data.post(id)).collect();
    assert_eq!(pg_rows(&url, "SELECT * FROM posts ORDER BY id").await, want);
}
