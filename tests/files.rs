//! The files source against the real binary and the real SQLite file: JSON,
//! NDJSON and CSV (quoted commas and newlines) by glob; SIGKILLs midway and
//! an exact resume inside the file being read; a file changed since its
//! position was saved read again; incremental runs by change time (a file
//! unpacked with an old mtime included); a line that
//! does not parse, failing the run or recorded as a reject; a JSON document
//! streamed from its records path, killed inside its array and resumed
//! exactly, and one cut short storing nothing; files into PostgreSQL, one
//! process SIGKILLed and two more sharing the rest; gzipped NDJSON (two
//! members) and CSV killed and resumed inside the decompressed content.

use crate::common;

use std::io::Write;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn pipeline(dir: &Path, extra: &str, sink_extra: &str) -> String {
    let text = format!(
        r#"[source]
kind = "files"
paths = ["in/*.json", "in/**/*.ndjson", "in/*.csv"]
concurrency = 2
{extra}

[sink]
kind = "sqlite"
path = "out.db"
table = "recs"
batch_size = 100
{sink_extra}
"#
    );
    write(dir, "p.toml", &text).display().to_string()
}

fn put(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// `n` NDJSON records with ids from `first`.
fn ndjson(first: u64, n: u64) -> String {
    let mut s = String::new();
    for id in first..first + n {
        s.push_str(
            &json!({"id": id, "name": format!("rec \"{id}\" ünï"), "tags": ["a", id % 7]})
                .to_string(),
        );
        s.push('\n');
    }
    s
}

async fn ids(db: &Path) -> Vec<i64> {
    rows(db, "recs", "id")
        .await
        .iter()
        .map(|r| r["id"].as_i64().unwrap_or(-1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_ndjson_and_csv_land_as_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // CSV has no types: the id column is declared, so every file's ids agree
    put(
        d,
        "in/a.json",
        r#"[{"id": 1, "name": "one", "nested": {"k": [1, 2]}}, {"id": 2, "name": null}]"#,
    );
    put(
        d,
        "in/deep/er/b.ndjson",
        "{\"id\": 3, \"name\": \"three\"}\n\n{\"id\": 4, \"name\": \"naïve 日本語\"}\r\n",
    );
    put(
        d,
        "in/c.csv",
        "id,name,note\n5,\"Smith, Jane\",\"she said \"\"hi\"\"\"\n6,multi,\"line one\nline two\"\n7,,\n",
    );
    put(d, "in/ignored.txt", "not matched");
    let p = pipeline(d, "", "[sink.columns]\nid = \"integer\"");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p, "--output", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&d.join("out.db"), "recs", "id").await;
    let want = vec![
        json!({"id": 1, "name": "one", "nested": "{\"k\":[1,2]}", "note": null}),
        json!({"id": 2, "name": null, "nested": null, "note": null}),
        json!({"id": 3, "name": "three", "nested": null, "note": null}),
        json!({"id": 4, "name": "naïve 日本語", "nested": null, "note": null}),
        json!({"id": 5, "name": "Smith, Jane", "nested": null, "note": "she said \"hi\""}),
        json!({"id": 6, "name": "multi", "nested": null, "note": "line one\nline two"}),
        json!({"id": 7, "name": "", "nested": null, "note": ""}),
    ];
    assert_eq!(got, want);
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
    assert_eq!(report["records"], 7, "{}", out.stdout);
    assert_eq!(report["pages"], 3, "one page per file: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_start_with_a_byte_order_mark_read_as_without() {
    // Windows tools (PowerShell's Out-File, Excel's "CSV UTF-8") write one
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    put(d, "in/a.json", "\u{feff}[{\"id\": 1, \"name\": \"one\"}]");
    put(d, "in/b.ndjson", "\u{feff}{\"id\": 2, \"name\": \"two\"}\n");
    put(d, "in/c.csv", "\u{feff}id,name\n3,three\n4,four\n");
    put(d, "in/one.json", "\u{feff}{\"id\": 5, \"name\": \"five\"}");
    let p = pipeline(d, "", "[sink.columns]\nid = \"integer\"");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&d.join("out.db"), "recs", "id").await;
    let want: Vec<Value> = [
        (1, "one"),
        (2, "two"),
        (3, "three"),
        (4, "four"),
        (5, "five"),
    ]
    .iter()
    .map(|(id, name)| json!({"id": id, "name": name}))
    .collect();
    assert_eq!(got, want, "no column named after a byte order mark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_cannot_be_listed_is_named_not_skipped_in_silence() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    put(d, "in/a/one.ndjson", &ndjson(1, 3));
    put(d, "in/b/two.ndjson", &ndjson(4, 3));
    // a link back up the tree: followed, it would never end
    std::os::unix::fs::symlink("..", d.join("in/a/up")).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(pipeline(d, "", ""))
        .unwrap_or_default()
        .replace(
            r#"paths = ["in/*.json", "in/**/*.ndjson", "in/*.csv"]"#,
            r#"paths = ["in/**/*.ndjson"]"#,
        );
    let p = write(d, "p.toml", &text).display().to_string();
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("cannot list the files") && out.stderr.contains("loop"),
        "{}",
        out.stderr
    );
    assert_eq!(
        ids(&d.join("out.db")).await,
        (1..=6).collect::<Vec<i64>>(),
        "each file once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_columns_are_never_overwritten_nor_dropped_in_silence() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // a repeated and an empty column name; a row with a value past the header
    put(
        d,
        "in/c.csv",
        "id,name,name,\n1,a,b,c\n2,d,e,f,stray\n3,g,h,i,\n",
    );
    let p = pipeline(d, "on_error = \"skip\"", "[sink.columns]\nid = \"integer\"");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let db = d.join("out.db");
    assert_eq!(
        rows(&db, "recs", "id").await,
        vec![
            json!({"id": 1, "name": "a", "name_2": "b", "column_4": "c"}),
            json!({"id": 3, "name": "g", "name_2": "h", "column_4": "i"}),
        ]
    );
    let rejects = rows(&db, "_ingest_rejects", "id").await;
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0]["reason"].as_str().is_some_and(
            |r| r.contains("the row has a value in field 5 and the header names 4 fields")
        ),
        "{rejects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_source_that_would_read_its_own_output_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    put(d, "in/a.ndjson", &ndjson(1, 3));
    let text = "[source]\nkind = \"files\"\npaths = [\"in/*.ndjson\", \"in/*.jsonl\"]\n\
                [sink]\nkind = \"jsonl\"\npath = \"in/all.jsonl\"\n";
    let p = write(d, "p.toml", text).display().to_string();
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("sink.path: is matched by source.paths `in/*.jsonl`"),
        "{}",
        out.stderr
    );
    assert!(!d.join("in/all.jsonl").exists(), "nothing is created");
    // written beside the folder instead, it runs
    let p = write(d, "p.toml", &text.replace("in/all.jsonl", "all.jsonl"))
        .display()
        .to_string();
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines = std::fs::read_to_string(d.join("all.jsonl")).unwrap_or_default();
    assert_eq!(lines.lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_midway_resume_inside_the_files_exactly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // 60,000 records in 100-record transactions: hundreds of commits to kill between
    put(d, "in/big.ndjson", &ndjson(1, 40_000));
    let mut csv = String::from("id,name\n");
    for id in 40_001..=60_000u64 {
        csv.push_str(&format!("{id},\"row, {id}\"\n"));
    }
    put(d, "in/rows.csv", &csv);
    let p = pipeline(d, "", "[sink.columns]\nid = \"integer\"");
    let db = d.join("out.db");
    // each threshold counts the records of that run alone
    for (i, at) in [3_000, 14_000, 12_000].into_iter().enumerate() {
        kill_when_committed(d, "http://127.0.0.1:9", &p, &db, at, &format!("kill {i}")).await;
    }
    let saved = scalar(
        &db,
        "SELECT count(*) FROM _ingest_state WHERE resume IS NOT NULL",
    )
    .await;
    assert!(saved >= 1, "no resume point inside a file");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("resuming the interrupted run"),
        "{}",
        out.stderr
    );
    let got = ids(&db).await;
    let want: Vec<i64> = (1..=60_000).collect();
    assert_eq!(got.len(), want.len(), "rows");
    let first_bad = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(
        first_bad.is_none(),
        "every record once: first difference at row {first_bad:?}"
    );
    assert_eq!(
        scalar(&db, "SELECT sum(records) FROM _ingest_runs").await,
        60_000
    );
}

/// A JSON document with `n` records from `first` at `data.items`, between
/// other values that are skipped.
fn document(first: u64, n: u64) -> String {
    let items: Vec<String> = (first..first + n)
        .map(|id| json!({"id": id, "name": format!("rec {id} ünï"), "n": {"x": [id]}}).to_string())
        .collect();
    format!(
        "{{\"meta\": {{\"items\": [1, 2], \"note\": \"not these\"}},\n \"data\": {{\"count\": {n}, \"items\": [\n{}\n]}},\n \"after\": [{{\"id\": -1}}]}}\n",
        items.join(",\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_document_is_streamed_and_resumes_inside_its_array_exactly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    put(d, "in/export.json", &document(1, 30_000));
    let p = pipeline(d, "records = \"data.items\"", "");
    let db = d.join("out.db");
    for (i, at) in [2_000, 9_000].into_iter().enumerate() {
        kill_when_committed(d, "http://127.0.0.1:9", &p, &db, at, &format!("kill {i}")).await;
    }
    let position = scalar(
        &db,
        "SELECT count(*) FROM _ingest_state WHERE resume LIKE '%offset%'",
    )
    .await;
    assert_eq!(position, 1, "a record index inside the document was saved");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p, "--output", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = ids(&db).await;
    let want: Vec<i64> = (1..=30_000).collect();
    assert_eq!(got.len(), want.len(), "rows");
    assert!(got == want, "every record once, in order");
    assert_eq!(
        scalar(&db, "SELECT sum(records) FROM _ingest_runs").await,
        30_000
    );
    let sample = rows(&db, "recs", "id").await;
    assert_eq!(
        sample[29_999],
        json!({"id": 30_000, "name": "rec 30000 ünï", "n": "{\"x\":[30000]}"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_document_that_does_not_parse_stores_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // cut short while it was being written: 3,000 good records, then the end is missing
    let whole = document(1, 3_000);
    put(d, "in/cut.json", &whole[..whole.len() * 2 / 3]);
    let p = pipeline(d, "records = \"data.items\"", "");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("in/cut.json: the record at byte 0 does not parse: EOF while parsing"),
        "{}",
        out.stderr
    );
    let db = d.join("out.db");
    let skip = pipeline(d, "records = \"data.items\"\non_error = \"skip\"", "");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &skip]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM _ingest_rejects").await, 1);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'recs'"
        )
        .await,
        0,
        "no record of a broken document is stored"
    );
    // a path that is not in the document names what is there
    put(d, "in/cut.json", &whole);
    let wrong = pipeline(d, "records = \"data.rows\"", "");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &wrong]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "the records path `data.rows` is not in the file (top-level keys: meta, data, after)"
        ),
        "{}",
        out.stderr
    );
}

/// `text` gzip-compressed.
fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    e.finish().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_files_are_read_and_resume_inside_exactly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap_or_else(|e| panic!("{e}"));
    // two gzip members one after the other, as `cat a.gz b.gz` makes
    let mut members = gz(&ndjson(1, 15_000));
    members.extend(gz(&ndjson(15_001, 15_000)));
    std::fs::write(d.join("in/big.ndjson.gz"), members).unwrap_or_else(|e| panic!("{e}"));
    let mut csv = String::from("\u{feff}id,name\n");
    for id in 30_001..=40_000u64 {
        csv.push_str(&format!("{id},\"row, {id}\"\n"));
    }
    std::fs::write(d.join("in/rows.csv.gz"), gz(&csv)).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(pipeline(d, "", "[sink.columns]\nid = \"integer\""))
        .unwrap_or_default()
        .replace(
            r#"paths = ["in/*.json", "in/**/*.ndjson", "in/*.csv"]"#,
            r#"paths = ["in/*.gz"]"#,
        );
    let p = write(d, "p.toml", &text).display().to_string();
    let db = d.join("out.db");
    for (i, at) in [3_000, 12_000].into_iter().enumerate() {
        kill_when_committed(d, "http://127.0.0.1:9", &p, &db, at, &format!("kill {i}")).await;
    }
    let saved = scalar(
        &db,
        "SELECT count(*) FROM _ingest_state WHERE resume LIKE '%offset%'",
    )
    .await;
    assert!(saved >= 1, "no resume point inside a compressed file");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = ids(&db).await;
    assert_eq!(got.len(), 40_000, "rows");
    assert!(
        got == (1..=40_000).collect::<Vec<i64>>(),
        "every record once"
    );
    assert_eq!(
        scalar(&db, "SELECT sum(records) FROM _ingest_runs").await,
        40_000
    );
    let last = rows(&db, "recs", "id").await.pop().unwrap_or_default();
    assert_eq!(last["name"], "row, 40000", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_since_its_position_was_saved_is_read_again() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    put(d, "in/big.ndjson", &ndjson(1, 30_000));
    let p = pipeline(d, "", "write = \"merge\"\nprimary_key = [\"id\"]");
    let db = d.join("out.db");
    kill_when_committed(d, "http://127.0.0.1:9", &p, &db, 2_000, "kill").await;
    // the file is rewritten: other records, other size
    put(d, "in/big.ndjson", &ndjson(100_001, 500));
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("walking this partition again from the start"),
        "{}",
        out.stderr
    );
    let got = ids(&db).await;
    // what the killed run committed stays (merge keeps rows); the new file is whole
    assert!(
        got.iter().filter(|id| **id > 100_000).count() == 500,
        "{}",
        got.len()
    );
    assert!(got.contains(&100_500) && got.contains(&100_001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_read_only_files_modified_after_the_mark() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    put(d, "in/day1.ndjson", &ndjson(1, 10));
    put(d, "in/day2.ndjson", &ndjson(11, 10));
    let p = pipeline(d, "incremental = true", "");
    let db = d.join("out.db");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ids(&db).await.len(), 20);
    // nothing new: nothing read
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(" 0 records written"), "{}", out.stdout);
    // a new file, and an old one touched: both are newer than the mark
    std::thread::sleep(std::time::Duration::from_millis(20));
    put(d, "in/day3.ndjson", &ndjson(21, 5));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("in/day1.ndjson"))
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(ndjson(1_001, 1).as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(" 16 records written"),
        "day1 again (11) and day3 (5): {}",
        out.stdout
    );
    assert_eq!(ids(&db).await.len(), 36);
    // a file unpacked with its old mtime kept (tar x, cp -p, rsync -a)
    // arrived after the mark: its ctime says so
    std::thread::sleep(std::time::Duration::from_millis(20));
    put(d, "in/archived.ndjson", &ndjson(2_001, 3));
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(978_307_200); // 2001
    std::fs::File::options()
        .write(true)
        .open(d.join("in/archived.ndjson"))
        .and_then(|f| f.set_modified(old))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(" 3 records written"),
        "the unpacked file, and only it: {}",
        out.stdout
    );
    assert_eq!(ids(&db).await.len(), 39);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_does_not_parse_fails_the_run_or_is_a_reject() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    put(
        d,
        "in/x.ndjson",
        "{\"id\": 1}\n{\"id\": 2,, }\n{\"id\": 3}\n",
    );
    let p = pipeline(d, "", "");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("in/x.ndjson: the record at byte 10 does not parse"),
        "{}",
        out.stderr
    );
    let p = pipeline(d, "on_error = \"skip\"", "");
    let out = ingest(d, "http://127.0.0.1:9", &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let db = d.join("out.db");
    assert_eq!(ids(&db).await, vec![1, 3]);
    let rejects = rows(&db, "_ingest_rejects", "id").await;
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("the record at byte 10 does not parse")),
        "{rejects:?}"
    );
    assert!(
        rejects[0]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("in/x.ndjson"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_source_mistakes_are_reported_in_one_pass() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let text = r#"[source]
kind = "files"
paths = ["in/[.json"]
format = "csv"
records = "data"
delimiter = ";;"

[sink]
kind = "sqlite"
path = "out.db"
table = "recs"
"#;
    let p = write(d, "p.toml", text);
    let out = ingest(d, "http://127.0.0.1:9", &["run", p.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 2, "{out:?}");
    for want in [
        "p.toml:3:9: source.paths: `in/[.json` is not a glob",
        "source.records: applies to JSON documents",
        "source.delimiter: is one ASCII character",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing {want:?} in:\n{}",
            out.stderr
        );
    }
    assert!(!d.join("out.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_into_postgres_shared_by_processes_after_a_kill_land_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let url = pg_database(d).await;
    // six files of 5,000 records: each file is a partition of the shared run
    for f in 0..6u64 {
        put(
            d,
            &format!("in/part{f}.ndjson"),
            &ndjson(1 + f * 5_000, 5_000),
        );
    }
    let text = format!(
        r#"[source]
kind = "files"
paths = ["in/*.ndjson"]
concurrency = 1

[sink]
kind = "postgres"
url = "{url}"
table = "recs"
write = "append"
batch_size = 100
lease = "2s"
"#
    );
    let p = write(d, "p.toml", &text).display().to_string();
    let api = "http://127.0.0.1:9";
    let mut victim = spawn_ingest(d, api, &["run", &p]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pg_scalar(&url, "SELECT count(*) FROM recs").await < 2_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first process stored nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    victim.start_kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = victim.wait().await;
    let stored = pg_scalar(&url, "SELECT count(*) FROM recs").await;
    assert!(stored < 30_000, "killed midway, not at the end ({stored})");
    // two processes share what is left, the killed one's file after its lease
    let args = ["run", p.as_str()];
    let (a, b) = tokio::join!(ingest(d, api, &args), ingest(d, api, &args));
    assert_eq!(a.code, 0, "{a:?}");
    assert_eq!(b.code, 0, "{b:?}");
    if stored % 5_000 != 0 {
        // killed inside a file: a survivor took it over where it stopped
        assert!(
            format!("{}{}", a.stderr, b.stderr).contains("expired lease"),
            "{a:?} {b:?}"
        );
    }
    let rows = pg_rows(&url, "SELECT id FROM recs ORDER BY id").await;
    let got: Vec<i64> = rows
        .iter()
        .map(|r| r["id"].as_i64().unwrap_or(-1))
        .collect();
    let want: Vec<i64> = (1..=30_000).collect();
    assert_eq!(got.len(), want.len(), "rows");
    assert!(got == want, "every record once");
    assert_eq!(
        pg_scalar(&url, "SELECT sum(records)::bigint FROM ingest.runs").await,
        30_000,
        "the runs' committed records add up to the rows"
    );
}
