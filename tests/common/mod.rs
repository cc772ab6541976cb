//! Helpers of the end-to-end tests: the mock API on 127.0.0.1, the real
//! `ingest` binary, and the real SQLite file it wrote.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ingest_mock::{MockApi, MockConfig};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

/// A started mock API.
pub async fn mock(posts: u64) -> MockApi {
    MockApi::start(MockConfig {
        posts,
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("mock API: {e}"))
}

/// A started mock API that waits `delay_ms` before every response.
pub async fn slow_mock(posts: u64, delay_ms: u64) -> MockApi {
    MockApi::start(MockConfig {
        posts,
        delay: Duration::from_millis(delay_ms),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("mock API: {e}"))
}

/// The repository root (where `pipelines/` is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a run of the binary printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `ingest ARGS` in `dir` with `API_BASE` set, bounded to 60 s.
pub async fn ingest(dir: &Path, api: &str, args: &[&str]) -> Out {
    ingest_env(dir, api, args, &[]).await
}

/// Same, with more environment variables.
pub async fn ingest_env(dir: &Path, api: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"));
    cmd.args(args)
        .current_dir(dir)
        .env("API_BASE", api)
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("ingest {args:?} did not finish in 60 s"))
        .unwrap_or_else(|e| panic!("cannot start ingest: {e}"));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Start `ingest ARGS` in `dir` in the background (stderr captured), for
/// tests that signal or kill it; it is killed if the test drops it.
pub fn spawn_ingest(dir: &Path, api: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(args)
        .current_dir(dir)
        .env("API_BASE", api)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start ingest: {e}"))
}

/// Write a pipeline file into `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// Every row of a table, as JSON objects, in `order` order.
pub async fn rows(db: &Path, table: &str, order: &str) -> Vec<Value> {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let cols: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?)")
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("columns of {table}: {e}"))
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    assert!(
        !cols.is_empty(),
        "table {table} does not exist in {}",
        db.display()
    );
    let pairs: Vec<String> = cols.iter().map(|c| format!("'{c}', \"{c}\"")).collect();
    let sql = format!(
        "SELECT json_object({}) FROM \"{table}\" ORDER BY {order}",
        pairs.join(", ")
    );
    sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("rows of {table}: {e}"))
        .iter()
        .map(|r| serde_json::from_str(&r.get::<String, _>(0)).unwrap_or(Value::Null))
        .collect()
}

/// Run SQL statements on a database (creating the file if needed).
pub async fn exec(db: &Path, sql: &str) {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// One number from a query.
pub async fn scalar(db: &Path, sql: &str) -> i64 {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<i64, _>(0)
}

/// Assert the table holds exactly the posts of the mock, every column.
pub async fn assert_posts(db: &Path, table: &str, api: &MockApi) {
    let got = rows(db, table, "id").await;
    let data = api.dataset();
    let want: Vec<Value> = data.all_posts().collect();
    assert_eq!(got.len(), want.len(), "row count of {table}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "row of {table} differs");
    }
}

/// A table's columns and declared types, in order.
pub async fn columns(db: &Path, table: &str) -> Vec<(String, String)> {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    sqlx::query("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("columns of {table}: {e}"))
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect()
}

/// Every row of a table, each value decoded by its SQLite storage class
/// (exact for text holding NULs, which SQLite's JSON functions are not).
pub async fn typed_rows(
    db: &Path,
    table: &str,
    order: &str,
) -> Vec<serde_json::Map<String, Value>> {
    use sqlx::{Column, TypeInfo, ValueRef};
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let sql = format!("SELECT * FROM \"{table}\" ORDER BY {order}");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("rows of {table}: {e}"));
    rows.iter()
        .map(|r| {
            r.columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    // a NULL reports its column's declared type: check it first
                    let kind = r
                        .try_get_raw(i)
                        .map(|v| {
                            if v.is_null() {
                                "NULL".to_string()
                            } else {
                                v.type_info().name().to_string()
                            }
                        })
                        .unwrap_or_default();
                    let v = match kind.as_str() {
                        "INTEGER" => Value::from(r.get::<i64, _>(i)),
                        "REAL" => serde_json::Number::from_f64(r.get::<f64, _>(i))
                            .map_or(Value::Null, Value::Number),
                        "TEXT" => Value::String(r.get::<String, _>(i)),
                        _ => Value::Null,
                    };
                    (c.name().to_string(), v)
                })
                .collect()
        })
        .collect()
}

/// A run of one of `pipelines/examples/` against a mock API, writing into a
/// database in a temp dir.
pub struct ExampleRun {
    /// Keeps the database's directory alive.
    pub dir: tempfile::TempDir,
    /// The database file.
    pub db: PathBuf,
    /// The example's `sink.table`.
    pub table: String,
    /// What the binary printed (the report as JSON on stdout).
    pub out: Out,
}

/// Run `pipelines/examples/FILE` against `api` with `--output json`; it must succeed.
pub async fn run_example(api: &MockApi, file: &str) -> ExampleRun {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("out.db");
    let example = root().join("pipelines/examples").join(file);
    let set = format!("sink.path={}", db.display());
    let args = [
        "run",
        example.to_str().unwrap_or(""),
        "--set",
        &set,
        "--progress",
        "never",
        "--output",
        "json",
    ];
    let out = ingest(dir.path(), &api.url(), &args).await;
    assert_eq!(out.code, 0, "{file}: {out:?}");
    let table = std::fs::read_to_string(&example)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("table = \"")
                .map(|t| t.trim_end_matches('"').to_string())
        })
        .unwrap_or_default();
    ExampleRun {
        dir,
        db,
        table,
        out,
    }
}

/// Start `ingest run P -q` and SIGKILL it once its run has committed `at`
/// records in the ledger `ledger` (a condition polled with a deadline, not
/// a sleep).
pub async fn kill_when_committed(
    dir: &Path,
    api: &str,
    p: &str,
    ledger: &Path,
    at: i64,
    label: &str,
) {
    let mut child = spawn_ingest(dir, api, &["run", p, "-q"]);
    let pid = child.id().unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while committed(ledger, pid).await < at {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "{label}: finished before {at} records were committed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{label}: committed fewer than {at} records in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = child.wait().await;
    assert!(committed(ledger, pid).await >= at);
}

/// Records committed so far by the run of process `pid` (0 before its first
/// commit, or before the database exists).
pub async fn committed(db: &std::path::Path, pid: u32) -> i64 {
    use sqlx::Connection;
    if !db.exists() {
        return 0;
    }
    let Ok(mut conn) =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await
    else {
        return 0;
    };
    sqlx::query_scalar::<_, i64>(
        "SELECT records FROM _ingest_runs WHERE pid = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(i64::from(pid))
    .fetch_one(&mut conn)
    .await
    .unwrap_or(0)
}

/// The throwaway PostgreSQL server `make test` starts (scripts/with-postgres.sh).
/// Without it the test fails and says how to get one: a Postgres test is
/// never skipped.
pub fn pg_admin() -> String {
    std::env::var("INGEST_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "this test needs a PostgreSQL server: run it with `make test`, which starts a throwaway one \
             (scripts/with-postgres.sh cargo test ...), after `sudo apt-get install -y postgresql`; \
             or set INGEST_TEST_PG=postgres://user@127.0.0.1:PORT/postgres"
        )
    })
}

/// A new, empty database for the test working in `dir`; its URL.
pub async fn pg_database(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let admin = pg_admin();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    let name = format!("t_{:016x}", h.finish());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connect {admin}: {e}"));
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("INGEST_TEST_PG has no database: {admin}"),
    }
}

/// The URL of the database `pg_database(dir)` made.
pub fn pg_url(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    let admin = pg_admin();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_string();
    format!("{base}/t_{:016x}", h.finish())
}

/// Every row a query gives, as JSON objects (`row_to_json`, column order kept).
pub async fn pg_rows(url: &str, sql: &str) -> Vec<Value> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let wrapped = format!("SELECT row_to_json(q)::text FROM ({sql}) q");
    sqlx::query_scalar::<_, String>(AssertSqlSafe(wrapped))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
        .collect()
}

/// One number from a query (0 when the query fails: a table not there yet).
pub async fn pg_scalar(url: &str, sql: &str) -> i64 {
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
        return 0;
    };
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0)
}
