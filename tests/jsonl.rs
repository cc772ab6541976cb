//! The JSON Lines sink against the real binary: one line per record after
//! SIGKILLs and a rerun (append, concurrent fetches, replace), a killed
//! run's uncommitted tail cut off, `replace` renaming a complete file over
//! the old one, `-` feeding standard output, and `merge` refused.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn pipeline(dir: &Path, write_mode: &str, path: &str, concurrency: u32) -> String {
    let text = format!(
        r#"[source]
kind = "http"
base_url = "${{API_BASE}}"
path = "/posts"
concurrency = {concurrency}

[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 10
total = "header:X-Total-Count"

[sink]
kind = "jsonl"
path = "{path}"
write = "{write_mode}"
batch_size = 20
"#
    );
    write(dir, "p.toml", &text).display().to_string()
}

/// Every line of a file, parsed; a line that does not parse fails the test.
fn lines(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial last line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

async fn killed_and_resumed(concurrency: u32, write_mode: &str) {
    let api = slow_mock(300, 40).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), write_mode, "out/posts.jsonl", concurrency);
    let file = dir.path().join("out/posts.jsonl");
    let ledger = dir.path().join("out/posts.jsonl.ingest.db");
    for at in [20, 60, 130] {
        kill_when_committed(dir.path(), &api.url(), &p, &ledger, at, "jsonl").await;
        // a kill between the write and its commit leaves a tail past the
        // committed length; make sure there is one, cut mid-line
        let target = if write_mode == "replace" {
            dir.path().join("out/posts.jsonl.ingest-staging")
        } else {
            file.clone()
        };
        let mut tail = std::fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        std::io::Write::write_all(&mut tail, b"{\"id\": 999, \"title\": \"half a li")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    if write_mode == "replace" {
        assert!(
            !file.exists(),
            "a replace run that never finished renamed its file in"
        );
    }
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("cutting what a killed run wrote past its last commit"),
        "{}",
        out.stderr
    );
    let want: Vec<Value> = api.dataset().all_posts().collect();
    assert_eq!(lines(&file), want, "one line per record, in order");
    assert!(!dir.path().join("out/posts.jsonl.ingest-staging").exists());
    // the run history adds up: every run's committed records, once
    let total = scalar(&ledger, "SELECT sum(records) FROM _ingest_runs").await;
    assert_eq!(total, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_after_kills_has_one_line_per_record() {
    killed_and_resumed(1, "append").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_after_kills_have_one_line_per_record() {
    killed_and_resumed(4, "append").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_after_kills_has_one_line_per_record() {
    killed_and_resumed(4, "replace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_a_whole_file_and_append_adds_to_it() {
    let api = mock(45).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("posts.jsonl");
    std::fs::write(&file, "{\"old\": true}\n").unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), "replace", "posts.jsonl", 2);
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let want: Vec<Value> = api.dataset().all_posts().collect();
    assert_eq!(lines(&file), want);
    assert!(
        out.stdout
            .contains(&format!("45 records written to {}", file.display())),
        "{}",
        out.stdout
    );
    // append adds the same records after them
    let p = pipeline(dir.path(), "append", "posts.jsonl", 2);
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let twice: Vec<Value> = want.iter().chain(&want).cloned().collect();
    assert_eq!(lines(&file), twice);
    // `show` reads the file
    let out = ingest(dir.path(), &api.url(), &["show", &p]).await;
    assert!(out.stdout.starts_with("p: 90 lines in"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dash_writes_records_to_standard_output_and_the_report_to_stderr() {
    let api = mock(33).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), "append", "-", 3);
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let want: Vec<Value> = api.dataset().all_posts().collect();
    assert_eq!(got, want);
    assert!(
        out.stderr.contains("33 records written to standard output"),
        "{}",
        out.stderr
    );
    // nothing written beside the pipeline
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(left, vec![std::ffi::OsString::from("p.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_standard_output_ends_the_run_quietly() {
    use tokio::io::AsyncBufReadExt;
    let api = mock(5_000).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), "append", "-", 1);
    // `ingest run p.toml | head -2`
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["run", &p])
        .current_dir(dir.path())
        .env("API_BASE", api.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    for _ in 0..2 {
        let line = lines
            .next_line()
            .await
            .unwrap_or_default()
            .unwrap_or_default();
        assert!(line.starts_with('{'), "{line:?}");
    }
    drop(lines);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the run did not end after its reader went away"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_into_a_file_is_refused_before_any_request() {
    let api = mock(10).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), "merge", "posts.jsonl", 1);
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "p.toml:17:9: sink.write: a JSON Lines file is written `append` or `replace`"
        ),
        "{}",
        out.stderr
    );
    assert!(api.requests().is_empty());
    assert!(!dir.path().join("posts.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_run_wrote_before_its_first_commit_are_cut() {
    let api = mock(25).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = pipeline(dir.path(), "append", "posts.jsonl", 1);
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let file = dir.path().join("posts.jsonl");
    let ledger = dir.path().join("posts.jsonl.ingest.db");
    let length = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    // what a run killed before its first commit leaves: the length it
    // started from in the ledger, no resume state, and half a line after it
    exec(
        &ledger,
        &format!(
            "INSERT INTO _ingest_files (pipeline, length, staged, run_id, updated_at) VALUES ('p', {length}, 0, 9, 'x')"
        ),
    )
    .await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut f, b"{\"id\": 1, \"half").unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    let out = ingest(dir.path(), &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let want: Vec<Value> = api.dataset().all_posts().collect();
    let twice: Vec<Value> = want.iter().chain(&want).cloned().collect();
    assert_eq!(lines(&file), twice);
}
