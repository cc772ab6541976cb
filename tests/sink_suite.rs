//! The sink test suite: the promises every sink keeps, run against each
//! kind of sink in [`SINKS`], so the next sink gets the suite by adding a
//! variant to [`Under`]: exactly once after kills, merge, the replace swap,
//! schema evolution and rejects. Each test runs the real binary against the
//! mock API on 127.0.0.1 and reads the sink's own storage back.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ingest_mock::{Canned, MockApi, MockConfig};
use serde_json::{Value, json};

/// A kind of sink under test.
#[derive(Debug, Clone, Copy)]
enum Under {
    Sqlite,
    Postgres,
}

/// Every sink the suite runs against.
const SINKS: &[Under] = &[Under::Sqlite, Under::Postgres];

impl Under {
    /// Make the sink's storage for a test in `dir` (a new database for
    /// PostgreSQL); returns the `[sink]` section's maker.
    async fn prepare(self, dir: &Path) {
        if let Under::Postgres = self {
            pg_database(dir).await;
        }
    }

    /// The `[sink]` section writing table `t` in `dir`.
    fn section(self, dir: &Path, write: &str, extra: &str) -> String {
        let pk = if write == "merge" {
            "primary_key = [\"id\"]\n"
        } else {
            ""
        };
        match self {
            Under::Sqlite => format!(
                "[sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"t\"\nwrite = \"{write}\"\nbatch_size = 20\n{pk}{extra}"
            ),
            Under::Postgres => format!(
                "[sink]\nkind = \"postgres\"\nurl = \"{}\"\ntable = \"t\"\nwrite = \"{write}\"\nbatch_size = 20\n{pk}{extra}",
                pg_url(dir)
            ),
        }
    }

    /// The rows of table `t`, by id, as JSON objects.
    async fn rows(self, dir: &Path) -> Vec<Value> {
        match self {
            Under::Sqlite => rows(&dir.join("out.db"), "t", "id, rowid").await,
            Under::Postgres => pg_rows(&pg_url(dir), "SELECT * FROM t ORDER BY id, ctid").await,
        }
    }

    /// Table `t`'s columns and their generic types (integer, real, text).
    async fn columns(self, dir: &Path) -> Vec<(String, String)> {
        match self {
            Under::Sqlite => columns(&dir.join("out.db"), "t")
                .await
                .into_iter()
                .map(|(n, t)| (n, t.to_lowercase()))
                .collect(),
            Under::Postgres => pg_rows(
                &pg_url(dir),
                "SELECT column_name::text AS n, CASE data_type WHEN 'bigint' THEN 'integer' \
                 WHEN 'double precision' THEN 'real' ELSE data_type::text END AS t \
                 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 't' \
                 ORDER BY ordinal_position",
            )
            .await
            .iter()
            .map(|r| (r["n"].as_str().unwrap_or("").to_string(), r["t"].as_str().unwrap_or("").to_string()))
            .collect(),
        }
    }

    /// Tables whose name starts with `prefix`.
    async fn tables(self, dir: &Path, prefix: &str) -> i64 {
        match self {
            Under::Sqlite => {
                scalar(
                    &dir.join("out.db"),
                    &format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE '{prefix}%'"),
                )
                .await
            }
            Under::Postgres => {
                pg_scalar(
                    &pg_url(dir),
                    &format!("SELECT count(*) FROM pg_tables WHERE tablename LIKE '{prefix}%'"),
                )
                .await
            }
        }
    }

    /// The reasons of the rejects, in order.
    async fn rejects(self, dir: &Path) -> Vec<String> {
        match self {
            Under::Sqlite => rows(&dir.join("out.db"), "_ingest_rejects", "id")
                .await
                .iter()
                .filter_map(|r| r["reason"].as_str().map(String::from))
                .collect(),
            Under::Postgres => pg_rows(
                &pg_url(dir),
                "SELECT reason FROM ingest.rejects ORDER BY id",
            )
            .await
            .iter()
            .filter_map(|r| r["reason"].as_str().map(String::from))
            .collect(),
        }
    }

    /// Records committed so far by the run of process `pid`.
    async fn committed(self, dir: &Path, pid: u32) -> i64 {
        match self {
            Under::Sqlite => committed(&dir.join("out.db"), pid).await,
            Under::Postgres => {
                pg_scalar(
                    &pg_url(dir),
                    &format!("SELECT coalesce(max(records), 0) FROM ingest.runs WHERE pid = {pid}"),
                )
                .await
            }
        }
    }
}

/// A concurrent page-number walk of `/posts` into `t`.
fn posts(sink: Under, dir: &Path, write: &str) -> String {
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/posts\"\nconcurrency = 4\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"\n\
         {}",
        sink.section(dir, write, "")
    )
}

async fn run_ok(dir: &Path, api: &str) -> Out {
    let out = ingest(dir, api, &["run", "p.toml", "-q"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_after_kills() {
    for &sink in SINKS {
        for write_mode in ["append", "merge", "replace"] {
            let api = MockApi::start(MockConfig {
                posts: 300,
                delay: Duration::from_millis(40),
                ..MockConfig::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            sink.prepare(dir.path()).await;
            sink.prepare(dir.path()).await;
            write(dir.path(), "p.toml", &posts(sink, dir.path(), write_mode));
            for at in [30, 50] {
                let mut child = spawn_ingest(dir.path(), &api.url(), &["run", "p.toml", "-q"]);
                let pid = child.id().unwrap_or(0);
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while sink.committed(dir.path(), pid).await < at {
                    let done = child.try_wait().ok().flatten().is_some();
                    assert!(!done, "{sink:?}/{write_mode}: finished before {at} records");
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{sink:?}/{write_mode}: no commit in 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                child.start_kill().unwrap_or_else(|e| panic!("{e}"));
                let _ = child.wait().await;
            }
            let out = run_ok(dir.path(), &api.url()).await;
            assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
            let want: Vec<Value> = api.dataset().all_posts().collect();
            assert_eq!(sink.rows(dir.path()).await, want, "{sink:?}/{write_mode}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_updates_in_place() {
    for &sink in SINKS {
        let api = mock(60).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        sink.prepare(dir.path()).await;
        write(dir.path(), "p.toml", &posts(sink, dir.path(), "merge"));
        run_ok(dir.path(), &api.url()).await;
        api.update(|d| {
            d.revise(7);
            d.revise(42);
            d.grow(5);
        });
        run_ok(dir.path(), &api.url()).await;
        let want: Vec<Value> = api.dataset().all_posts().collect();
        assert_eq!(sink.rows(dir.path()).await, want, "{sink:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_the_table_whole() {
    for &sink in SINKS {
        let api = mock(60).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        sink.prepare(dir.path()).await;
        write(dir.path(), "p.toml", &posts(sink, dir.path(), "replace"));
        run_ok(dir.path(), &api.url()).await;
        api.update(|d| d.posts = 25);
        run_ok(dir.path(), &api.url()).await;
        let want: Vec<Value> = api.dataset().all_posts().collect();
        assert_eq!(sink.rows(dir.path()).await, want, "{sink:?}");
        assert_eq!(
            sink.tables(dir.path(), "_ingest_staging").await,
            0,
            "{sink:?}"
        );
    }
}

/// Canned pages, one batch each, walked by next URL into `t`.
async fn canned(api: &MockApi, pages: &[&str]) {
    for (i, body) in pages.iter().enumerate() {
        let next = if i + 1 < pages.len() {
            format!("\"/suite/p{}\"", i + 1)
        } else {
            "null".into()
        };
        api.can(
            &format!("/suite/p{i}"),
            vec![Canned::json(format!(
                "{{\"data\": {body}, \"next\": {next}}}"
            ))],
        );
    }
}

fn canned_pipeline(sink: Under, dir: &Path, extra: &str) -> String {
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/suite/p0\"\nrecords = \"data\"\n\
         [source.pagination]\nkind = \"next_url\"\nnext = \"next\"\n{}",
        sink.section(dir, "append", extra)
            .replace("batch_size = 20", "batch_size = 1")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolves_with_later_batches() {
    for &sink in SINKS {
        let api = mock(0).await;
        canned(
            &api,
            &[
                r#"[{"id": 1, "a": 1}]"#,
                r#"[{"id": 2, "a": 2, "b": "x", "c": 1.5}]"#,
            ],
        )
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        sink.prepare(dir.path()).await;
        write(dir.path(), "p.toml", &canned_pipeline(sink, dir.path(), ""));
        run_ok(dir.path(), &api.url()).await;
        let cols = sink.columns(dir.path()).await;
        let want = [
            ("id", "integer"),
            ("a", "integer"),
            ("b", "text"),
            ("c", "real"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(cols, want, "{sink:?}");
        let got = sink.rows(dir.path()).await;
        assert_eq!(
            got[0],
            json!({"id": 1, "a": 1, "b": null, "c": null}),
            "{sink:?}"
        );
        assert_eq!(
            got[1],
            json!({"id": 2, "a": 2, "b": "x", "c": 1.5}),
            "{sink:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_say_why_and_the_rest_lands() {
    for &sink in SINKS {
        let api = mock(0).await;
        canned(
            &api,
            &[r#"[{"id": 1, "n": 5}, {"id": 2, "n": "five"}, 7, {"id": 3, "n": "6"}]"#],
        )
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        sink.prepare(dir.path()).await;
        let columns = "[sink.columns]\nid = \"integer\"\nn = \"integer\"\n";
        write(
            dir.path(),
            "p.toml",
            &canned_pipeline(sink, dir.path(), columns),
        );
        run_ok(dir.path(), &api.url()).await;
        let got = sink.rows(dir.path()).await;
        assert_eq!(
            got,
            vec![json!({"id": 1, "n": 5}), json!({"id": 3, "n": 6})],
            "{sink:?}"
        );
        let why = sink.rejects(dir.path()).await;
        assert_eq!(why.len(), 2, "{sink:?}: {why:?}");
        assert!(why[0].contains("does not convert"), "{why:?}");
        assert!(why[1].contains("must be a JSON object"), "{why:?}");
    }
}
