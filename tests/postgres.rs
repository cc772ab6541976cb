//! PostgreSQL end to end, beyond the sink suite: every pagination kind in
//! append and merge, a parent → child pair through a `query` partition,
//! incremental marks, the commands that read the ledger, the run lock, and
//! shared runs: three processes over 60 daily windows with one SIGKILLed
//! midway, and a stalled process whose claim was taken over (fencing).
//! Each runs the real binary against the mock API and a throwaway cluster
//! (`make test`), and reads every row back from the database.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ingest_mock::{MockApi, MockConfig};
use serde_json::Value;

/// A pipeline file with its `[sink]` pointed at the test's database
/// (`kind` and `path` swapped for `kind = "postgres"` and `url`).
fn to_pg(text: &str, url: &str) -> String {
    let mut in_sink = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_sink = line.starts_with("[sink");
        }
        let line = match line.trim() {
            l if in_sink && l.starts_with("kind = \"sqlite\"") => "kind = \"postgres\"".to_string(),
            l if in_sink && l.starts_with("path =") => format!("url = \"{url}\""),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

async fn run_ok(dir: &Path, api: &str, args: &[&str]) -> Out {
    let out = ingest(dir, api, args).await;
    assert_eq!(out.code, 0, "{args:?}: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pagination_kind_lands_exactly_in_append_and_merge() {
    let api = mock(137).await;
    // oauth2.toml runs twice, as two pipelines: a refresh token spent by the
    // first would refuse the second (rotation has tests of its own)
    api.set_rotation(false);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let want: Vec<Value> = api.dataset().all_posts().collect();
    let mut kinds = 0;
    let examples = root().join("pipelines/examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for write_mode in ["append", "merge"] {
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
            let table = format!("{name}_{write_mode}");
            let mut p = to_pg(&text, &url);
            // one table per kind and mode; the mode under test
            p = p
                .lines()
                .filter(|l| !l.starts_with("write =") && !l.starts_with("primary_key ="))
                .map(|l| match l.starts_with("table =") {
                    true => format!(
                        "table = \"{table}\"\nwrite = \"{write_mode}\"\nprimary_key = [\"id\"]"
                    ),
                    false => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
                .replace(
                    &format!("name = \"{name}\""),
                    &format!("name = \"{table}\""),
                );
            let f = write(dir.path(), &format!("{table}.toml"), &p);
            run_ok(
                dir.path(),
                &api.url(),
                &["run", f.to_str().unwrap_or(""), "-q"],
            )
            .await;
            let got = pg_rows(&url, &format!("SELECT * FROM {table} ORDER BY id, ctid")).await;
            assert_eq!(got, want, "{table}");
        }
        kinds += 1;
    }
    assert!(kinds >= 8, "only {kinds} examples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_then_comments_through_a_query_partition() {
    let api = mock(23).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let mut files = Vec::new();
    for name in ["posts", "comments"] {
        let text = std::fs::read_to_string(root().join("pipelines").join(format!("{name}.toml")))
            .unwrap_or_default();
        files.push(write(
            dir.path(),
            &format!("{name}.toml"),
            &to_pg(&text, &url),
        ));
    }
    let [posts, comments] = [&files[0], &files[1]].map(|f| f.to_str().unwrap_or("").to_string());
    // the child before its parent fails, and says why
    let out = ingest(dir.path(), &api.url(), &["run", &comments]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the partition query failed"),
        "{}",
        out.stderr
    );
    run_ok(dir.path(), &api.url(), &["run", &posts, &comments, "-q"]).await;
    // the partition mark is kept: a second night walks no parent again
    api.clear_requests();
    run_ok(dir.path(), &api.url(), &["run", &comments, "-q"]).await;
    let again = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/comments"))
        .count();
    assert_eq!(again, 0, "{:?}", api.requests());
    let got = pg_rows(&url, "SELECT id, post_id, email FROM comments ORDER BY id").await;
    let data = api.dataset();
    let want: Vec<(Value, Value, Value)> = (1..=23)
        .flat_map(|p| data.comments_of(p))
        .map(|c| (c["id"].clone(), c["postId"].clone(), c["email"].clone()))
        .collect();
    let got: Vec<(Value, Value, Value)> = got
        .iter()
        .map(|r| (r["id"].clone(), r["post_id"].clone(), r["email"].clone()))
        .collect();
    assert_eq!(got, want);
    // the declared columns have PostgreSQL's types
    let types = pg_rows(
        &url,
        "SELECT column_name::text AS c, data_type::text AS t FROM information_schema.columns \
         WHERE table_name = 'posts' AND column_name IN ('id', 'updated_at') ORDER BY c",
    )
    .await;
    assert_eq!(
        types,
        vec![
            serde_json::json!({"c": "id", "t": "bigint"}),
            serde_json::json!({"c": "updated_at", "t": "timestamp with time zone"})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_marks_move_only_when_the_run_completes() {
    let api = mock(40).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let p = format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/posts\"\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"\n\
         [source.incremental]\ncursor_field = \"updatedAt\"\nparam = \"updated_since\"\ninitial = \"2020-01-01T00:00:00Z\"\nlookback = \"10m\"\n\
         [sink]\nkind = \"postgres\"\nurl = \"{url}\"\ntable = \"posts\"\nwrite = \"merge\"\nprimary_key = [\"id\"]\n"
    );
    let f = write(dir.path(), "inc.toml", &p);
    let f = f.to_str().unwrap_or("");
    run_ok(dir.path(), &api.url(), &["run", f, "-q"]).await;
    let mark =
        |url: String| async move { pg_rows(&url, "SELECT value, pending FROM ingest.marks").await };
    assert_eq!(
        mark(url.clone()).await,
        vec![serde_json::json!({"value": "2024-01-01T00:40:00Z", "pending": null})]
    );
    api.update(|d| {
        d.revise(3);
        d.grow(2);
    });
    api.clear_requests();
    run_ok(dir.path(), &api.url(), &["run", f, "-q"]).await;
    let asked: Vec<Option<String>> = api
        .requests()
        .iter()
        .map(|r| r.param("updated_since"))
        .collect();
    assert!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|a| a.as_deref() == Some("2024-01-01T00:30:00Z")),
        "{asked:?}"
    );
    let want: Vec<Value> = api.dataset().all_posts().collect();
    assert_eq!(pg_rows(&url, "SELECT * FROM posts ORDER BY id").await, want);
}

/// A slow mock of `posts` posts, a new database, and a page_number walk of
/// 5-record pages into its table `table` in `write` mode, batch by batch.
async fn slow_pages(
    posts: u64,
    delay_ms: u64,
    table: &str,
    write_mode: &str,
) -> (MockApi, tempfile::TempDir, String, String) {
    let api = MockApi::start(MockConfig {
        posts,
        delay: Duration::from_millis(delay_ms),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let p = format!(
        "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/posts\"\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 5\n\
         [sink]\nkind = \"postgres\"\nurl = \"{url}\"\ntable = \"{table}\"\nwrite = \"{write_mode}\"\nbatch_size = 5\n"
    );
    let f = write(dir.path(), "p.toml", &p)
        .to_str()
        .unwrap_or("")
        .to_string();
    (api, dir, url, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_read_the_ledger_and_a_second_run_exits_75() {
    let (api, dir, url, f) = slow_pages(200, 60, "posts", "append").await;
    let f = f.as_str();
    let mut first = spawn_ingest(dir.path(), &api.url(), &["run", f, "-q"]);
    let pid = first.id().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = format!("SELECT coalesce(max(records), 0) FROM ingest.runs WHERE pid = {pid}");
    while pg_scalar(&url, &committed).await < 10 {
        assert!(Instant::now() < deadline, "no commit in 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = ingest(dir.path(), &api.url(), &["run", f]).await;
    assert_eq!(second.code, 75, "{second:?}");
    assert!(
        second.stderr.contains(&format!("pid {pid}")),
        "{}",
        second.stderr
    );
    let reset = ingest(dir.path(), &api.url(), &["state", "reset", f]).await;
    assert_eq!(reset.code, 75, "{reset:?}");
    first.start_kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = first.wait().await;
    // the dead run shows as killed; its resume point is there in words
    let runs = run_ok(dir.path(), &api.url(), &["runs", f]).await;
    assert!(runs.stdout.contains("killed"), "{}", runs.stdout);
    let state = run_ok(dir.path(), &api.url(), &["state", "show", f]).await;
    assert!(state.stdout.contains("page"), "{}", state.stdout);
    run_ok(dir.path(), &api.url(), &["run", f, "-q"]).await;
    let show = run_ok(dir.path(), &api.url(), &["show", f]).await;
    assert!(show.stdout.contains("200 rows"), "{}", show.stdout);
    let want: Vec<Value> = api.dataset().all_posts().collect();
    assert_eq!(pg_rows(&url, "SELECT * FROM posts ORDER BY id").await, want);
    // the runs, newest first: done after killed
    let runs = run_ok(dir.path(), &api.url(), &["runs", f, "--output", "json"]).await;
    let status: Vec<String> = runs
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["status"].as_str().map(String::from))
        .collect();
    assert_eq!(status, ["done", "killed"]);
}

/// 60 daily windows of 8 posts, 4 pages each, one window at a time per
/// process, into PostgreSQL with a short lease.
fn backfill(url: &str, lease: &str) -> String {
    format!(
        "name = \"shared\"\n[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/posts\"\nconcurrency = 1\n\
         [source.partition]\nkind = \"dates\"\nstart = \"2024-01-01\"\nend = \"2024-03-01\"\nstep = \"1d\"\n\
         start_param = \"updated_since\"\nend_param = \"updated_before\"\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 2\n\
         [sink]\nkind = \"postgres\"\nurl = \"{url}\"\ntable = \"posts\"\nwrite = \"append\"\nbatch_size = 2\nlease = \"{lease}\"\n"
    )
}

async fn backfill_api() -> MockApi {
    MockApi::start(MockConfig {
        posts: 520,
        spacing: 3 * 3600,
        delay: Duration::from_millis(25),
        ..MockConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Wait until process `pid` holds a claim on a partition it has committed
/// part of, and not all of.
async fn mid_partition(url: &str, pid: u32) {
    let sql = format!(
        "SELECT count(*) FROM ingest.partitions p JOIN ingest.state s USING (pipeline, partition) \
         WHERE p.owner LIKE '%:{pid}:%' AND NOT p.done AND NOT s.done"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg_scalar(url, &sql).await == 0 {
        assert!(Instant::now() < deadline, "process {pid} never got midway");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The posts of the 60 windows, and a check that the ledger is clean and
/// every committed record is in the table exactly once.
async fn assert_backfilled(url: &str, api: &MockApi) {
    let data = api.dataset();
    // post n is n * 3 h after 2024-01-01: [1, 479] fall before 2024-03-01
    let want: Vec<Value> = (1..=479).map(|id| data.post(id)).collect();
    assert_eq!(pg_rows(url, "SELECT * FROM posts ORDER BY id").await, want);
    let counted = pg_scalar(url, "SELECT sum(records)::bigint FROM ingest.runs").await;
    assert_eq!(
        counted, 479,
        "the runs' committed records add up to the rows"
    );
    for table in ["ingest.partitions", "ingest.shared_runs", "ingest.state"] {
        let left = pg_scalar(url, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(left, 0, "{table} after the shared run completed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_backfill_and_survive_a_kill() {
    let api = backfill_api().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let f = write(dir.path(), "shared.toml", &backfill(&url, "2s"));
    let f = f.to_str().unwrap_or("");
    let mut victim = spawn_ingest(dir.path(), &api.url(), &["run", f]);
    let others: Vec<_> = (0..2)
        .map(|_| spawn_ingest(dir.path(), &api.url(), &["run", f]))
        .collect();
    let pid = victim.id().unwrap_or(0);
    mid_partition(&url, pid).await;
    let holding =
        format!("SELECT count(*) FROM ingest.partitions WHERE owner LIKE '%:{pid}:%' AND NOT done");
    let before = pg_scalar(&url, &holding).await;
    victim.start_kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = victim.wait().await;
    // what it held when it died (its lease has two seconds to run): these,
    // and only these, may have pages asked again
    let held = before.max(pg_scalar(&url, &holding).await);
    assert!(held >= 1, "the killed process held no partition");
    let mut took_over = 0;
    for child in others {
        let out = child
            .wait_with_output()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        took_over += stderr.matches("expired lease").count();
    }
    assert!(
        took_over >= 1,
        "no survivor took the killed process's partition over"
    );
    assert_backfilled(&url, &api).await;
    // each window was walked to completion once: only the windows the
    // killed process held have pages asked twice
    let mut asked: std::collections::HashMap<(String, String), u32> = Default::default();
    for r in api.requests() {
        let key = (
            r.param("updated_since").unwrap_or_default(),
            r.param("_page").unwrap_or_default(),
        );
        *asked.entry(key).or_default() += 1;
    }
    let windows: std::collections::BTreeSet<&String> = asked.keys().map(|(w, _)| w).collect();
    assert_eq!(windows.len(), 60);
    let repeated: std::collections::BTreeSet<&String> = asked
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((w, _), _)| w)
        .collect();
    assert!(
        repeated.len() as i64 <= held,
        "windows walked twice: {repeated:?}, the killed process held {held}"
    );
    // the killed run is told apart from the live ones
    let runs = run_ok(dir.path(), &api.url(), &["runs", f]).await;
    assert_eq!(runs.stdout.matches("killed").count(), 1, "{}", runs.stdout);
    assert_eq!(runs.stdout.matches(" done ").count(), 2, "{}", runs.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_process_whose_claim_was_taken_cannot_commit() {
    let api = backfill_api().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let f = write(dir.path(), "shared.toml", &backfill(&url, "1s"));
    let f = f.to_str().unwrap_or("");
    let stalled = spawn_ingest(dir.path(), &api.url(), &["run", f]);
    let pid = stalled.id().unwrap_or(0);
    mid_partition(&url, pid).await;
    let signal = |sig: &str| {
        let done = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill {sig}: {e}"));
        assert!(done.success(), "kill {sig}");
    };
    signal("-STOP");
    // the operator's view: a shared run, and who walks what
    let status = ingest(dir.path(), &api.url(), &["status", f]).await;
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("shared run in progress")
            && status.stdout.contains(&format!(":{pid}:")),
        "{}",
        status.stdout
    );
    // another process takes the stalled one's partition once its lease runs
    // out, and walks everything
    let other = ingest(dir.path(), &api.url(), &["run", f]).await;
    assert_eq!(other.code, 0, "{other:?}");
    assert!(other.stderr.contains("expired lease"), "{}", other.stderr);
    signal("-CONT");
    let out = stalled
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("took this claim over"), "{stderr}");
    assert_backfilled(&url, &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_never_shows() {
    let api = mock(12).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = pg_database(dir.path()).await;
    let with_pass =
        |url: &str| url.replacen("postgres://ingest@", "postgres://ingest:Pa55-w0rd%21x@", 1);
    let pipeline = |url: &str| {
        format!(
            "[source]\nkind = \"http\"\nbase_url = \"${{API_BASE}}\"\npath = \"/posts\"\n\
             [source.pagination]\nkind = \"none\"\n\
             [sink]\nkind = \"postgres\"\nurl = \"{url}\"\ntable = \"posts\"\n"
        )
    };
    // a database that is not there: the error names the server, not the password
    let missing = with_pass(&url).replace("/t_", "/missing_");
    let f = write(dir.path(), "missing.toml", &pipeline(&missing));
    let out = ingest(dir.path(), &api.url(), &["run", f.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    // a good run, its JSON report, the history
    let f = write(dir.path(), "p.toml", &pipeline(&with_pass(&url)));
    let f = f.to_str().unwrap_or("");
    let run = run_ok(
        dir.path(),
        &api.url(),
        &["run", f, "--output", "json", "-v"],
    )
    .await;
    let runs = run_ok(dir.path(), &api.url(), &["runs", f, "--output", "json"]).await;
    let show = run_ok(dir.path(), &api.url(), &["show", f]).await;
    for text in [
        &out.stderr,
        &out.stdout,
        &run.stdout,
        &run.stderr,
        &runs.stdout,
        &show.stdout,
    ] {
        assert!(!text.contains("Pa55-w0rd"), "{text}");
        assert!(!text.contains("Pa55-w0rd!x"), "{text}");
    }
    assert!(
        run.stdout
            .contains("\"database\":\"postgres://ingest@127.0.0.1"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_the_old_table_or_the_new_one_never_half() {
    let (api, dir, url, f) = slow_pages(60, 30, "t", "replace").await;
    run_ok(dir.path(), &api.url(), &["run", &f, "-q"]).await;
    api.update(|d| d.posts = 25);
    let mut run = spawn_ingest(dir.path(), &api.url(), &["run", &f, "-q"]);
    // read the live table all through the run: 60 rows until the swap, 25 after
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the run did not end in 30 s");
        seen.insert(pg_scalar(&url, "SELECT count(*) FROM t").await);
    }
    seen.insert(pg_scalar(&url, "SELECT count(*) FROM t").await);
    assert_eq!(run.wait().await.ok().and_then(|s| s.code()), Some(0));
    assert!(
        seen.iter().all(|n| *n == 60 || *n == 25),
        "a reader saw {seen:?}"
    );
    assert!(seen.contains(&60) && seen.contains(&25), "{seen:?}");
    let want: Vec<Value> = api.dataset().all_posts().collect();
    assert_eq!(pg_rows(&url, "SELECT * FROM t ORDER BY id").await, want);
}
