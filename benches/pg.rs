//! The PostgreSQL runs of `make bench` (the cluster comes from
//! scripts/with-postgres.sh, with fsync on): the Postgres sink end to end
//! beside a COPY-only floor measured in the same run, and a shared backfill
//! run by 1 process and by 3. Printed, never asserted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::{
    Measure, PAGE, fastrand_name, pipeline, release_dir, row, run_floor, run_ingest, start_mock,
    start_mock_args,
};

/// Records per transaction in both the sink and the floor.
const BATCH: u64 = 5000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"))
}

/// A new empty database on the bench's cluster; its URL.
fn database(admin: &str, name: &str) -> String {
    runtime().block_on(async {
        let mut c = PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("connect {admin}: {e}"));
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

/// The bench's page_number pipeline with its sink in PostgreSQL.
fn pg_pipeline(base: &str, url: &str, concurrency: u32) -> String {
    let text = pipeline(base, "total", concurrency, Path::new("/dev/null"));
    let head = text.split("[sink]").next().unwrap_or("");
    format!(
        "{head}[sink]\nkind = \"postgres\"\nurl = \"{url}\"\ntable = \"posts\"\nwrite = \"append\"\nbatch_size = {BATCH}\n"
    )
}

/// Child: the same rows as COPY text into the same table, one transaction
/// per batch; only the COPY and the commit are timed.
pub fn floor_copy(n: u64, url: &str) {
    let data = ingest_mock::Dataset::new(42, n, 0);
    let first = data.post(1);
    let cols: Vec<(String, &str)> = first
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), ingest::sink::columns::infer(v).pg()))
        .collect();
    let names: Vec<String> = cols.iter().map(|(k, _)| format!("\"{k}\"")).collect();
    let defs: Vec<String> = cols.iter().map(|(k, t)| format!("\"{k}\" {t}")).collect();
    let seconds = runtime().block_on(async {
        let mut c = PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE posts ({})",
            defs.join(", ")
        )))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let copy = format!("COPY posts ({}) FROM STDIN", names.join(", "));
        let mut spent = Duration::ZERO;
        let mut id = 1;
        while id <= n {
            let mut buf = Vec::new();
            for i in id..(id + BATCH).min(n + 1) {
                encode(&data.post(i), &mut buf);
            }
            id += BATCH;
            let t = Instant::now();
            let mut tx = c.begin().await.unwrap_or_else(|e| panic!("{e}"));
            let mut w = tx
                .copy_in_raw(&copy)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            w.send(buf.as_slice())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            w.finish().await.unwrap_or_else(|e| panic!("{e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            spent += t.elapsed();
        }
        spent.as_secs_f64()
    });
    println!(
        "{}",
        json!({ "records": n, "seconds": seconds, "rss": ingest::run::peak_rss_bytes() })
    );
}

/// One record as a line of COPY text (values in key order).
fn encode(v: &Value, buf: &mut Vec<u8>) {
    for (i, (_, x)) in v.as_object().into_iter().flatten().enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        let text = match x {
            Value::Null => "\\N".to_string(),
            Value::String(s) => s
                .replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('\r', "\\r"),
            other => other.to_string(),
        };
        buf.extend_from_slice(text.as_bytes());
    }
    buf.push(b'\n');
}

/// `processes` runs of the same shared pipeline at once; wall time, records.
fn shared_run(dir: &Path, text: &str, processes: usize) -> Measure {
    let p = dir.join(format!("shared{}.toml", fastrand_name()));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(release_dir().join("ingest"))
                .args(["-q", "run", "--progress", "never", "--output", "json"])
                .arg(&p)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run ingest: {e}"))
        })
        .collect();
    let (mut records, mut rss) = (0, 0);
    for c in children {
        let out = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "a shared run failed");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        records += report["records"].as_u64().unwrap_or(0);
        rss = rss.max(report["peak_rss_bytes"].as_u64().unwrap_or(0));
    }
    Measure {
        records,
        seconds: start.elapsed().as_secs_f64(),
        rss,
    }
}

/// 60 daily windows, 4 pages each, 20 requests/s per process, into PostgreSQL.
fn backfill(base: &str, url: &str) -> String {
    format!(
        "name = \"backfill\"\n[source]\nkind = \"http\"\nbase_url = \"{base}\"\npath = \"/posts\"\nconcurrency = 4\nrate_limit = \"20/s\"\n\
         [source.partition]\nkind = \"dates\"\nstart = \"2024-01-01\"\nend = \"2024-03-01\"\nstep = \"1d\"\n\
         start_param = \"updated_since\"\nend_param = \"updated_before\"\n\
         [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 2\ntotal = \"header:X-Total-Count\"\n\
         [sink]\nkind = \"postgres\"\nurl = \"{url}\"\ntable = \"posts\"\nwrite = \"append\"\nlease = \"5s\"\n"
    )
}

/// Measure and print the PostgreSQL runs.
pub fn bench() {
    let Ok(admin) = std::env::var("INGEST_TEST_PG") else {
        println!(
            "\n(PostgreSQL runs not measured: INGEST_TEST_PG is unset; `make bench` starts a throwaway cluster)"
        );
        return;
    };
    let n: u64 = std::env::var("BENCH_PG_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("PostgreSQL: COPY floor and sink, {n} records…");
    let copy = run_floor(&[
        "--floor-copy",
        &n.to_string(),
        &database(&admin, "bench_copy"),
    ]);
    let mock = start_mock(n, 0);
    let _ = run_floor(&["--floor-fetch", &mock.url]);
    let sink = run_ingest(
        dir.path(),
        &pg_pipeline(&mock.url, &database(&admin, "bench_sink"), 8),
        None,
    );
    drop(mock);
    eprintln!("PostgreSQL: shared backfill, 1 process then 3…");
    let slow = start_mock_args(&["--posts", "520", "--spacing", "10800", "--delay-ms", "50"]);
    let one = shared_run(
        dir.path(),
        &backfill(&slow.url, &database(&admin, "bench_one")),
        1,
    );
    let three = shared_run(
        dir.path(),
        &backfill(&slow.url, &database(&admin, "bench_three")),
        3,
    );
    drop(slow);
    println!();
    println!("PostgreSQL sink ({n} records, batches of {BATCH}, pages of {PAGE}) and shared runs");
    println!();
    row(
        "COPY-only floor (same rows, same batches)",
        copy,
        "baseline",
    );
    row(
        "ingest page_number into PostgreSQL",
        sink,
        &format!(
            "{:.0}% of the COPY floor's rate (target >= 50%)",
            100.0 * (sink.records as f64 / sink.seconds) / (copy.records as f64 / copy.seconds)
        ),
    );
    row(
        "shared backfill, 60 windows, 1 process",
        one,
        "baseline: 20 requests/s, 50 ms each",
    );
    row(
        "shared backfill, 60 windows, 3 processes",
        three,
        &format!(
            "{:.2}x the time of 1 process (target <= 0.45x)",
            three.seconds / one.seconds
        ),
    );
    for (name, m, want) in [
        ("sink", sink, n),
        ("1 process", one, 479),
        ("3 processes", three, 479),
    ] {
        if m.records != want {
            println!(
                "WARNING: {name} wrote {} records, expected {want}",
                m.records
            );
        }
    }
}
