//! `make bench`: records/s and peak RSS of `ingest` against the mock API on
//! 127.0.0.1, beside baselines measured in the same run:
//!
//! - ingest end to end: page_number with a known total (1M and 10k records),
//!   page_number without a total, a cursor walk (1M records each);
//! - the fetch-only floor: the same HTTP client, pagination and JSON parsing,
//!   no sink;
//! - the write-only floor: the same rows through the same sink, no HTTP;
//! - 20 ms added to every response (100k records, concurrency 16) beside the
//!   ideal pages × 20 ms / 16;
//! - `concurrency = "auto"` on the 20 ms run beside fixed 16 and 32, and
//!   under the mock's rate limit (200 requests/s), with the Retry-After
//!   violations the mock counted;
//! - PostgreSQL (`make bench` starts a throwaway cluster, fsync on): the
//!   Postgres sink end to end beside a COPY-only floor (the same rows as
//!   COPY text, in transactions of the same size, straight to the server);
//! - a 1 GB NDJSON file into SQLite with the files source, beside a
//!   read-and-parse floor, with its peak RSS (`BENCH_NDJSON_MB`);
//! - a shared backfill of 60 daily windows, 50 ms per response and 20
//!   requests/s per process, by 1 process and by 3.
//!
//! Every measured run is its own process (the real release `ingest`, or this
//! program re-run as a child for the floors), so each peak RSS is that
//! run's alone; the mock API runs in processes of its own. It prints; it
//! asserts nothing about time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PAGE: u64 = 100;

// the floors run with the allocator the `ingest` binary uses
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn release_dir() -> PathBuf {
    // target/release/deps/throughput-HASH -> target/release
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

struct Mock {
    child: Child,
    url: String,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mock(posts: u64, delay_ms: u64) -> Mock {
    start_mock_args(&[
        "--posts",
        &posts.to_string(),
        "--delay-ms",
        &delay_ms.to_string(),
    ])
}

/// The mock API with these switches, on a free port, for at most 30 minutes.
fn start_mock_args(args: &[&str]) -> Mock {
    let bin = release_dir().join("ingest-mock");
    let mut child = Command::new(&bin)
        .args(["--port", "0", "--for", "1800"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (run `cargo build --release --bins` first): {e}",
                bin.display()
            )
        });
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or("")
        .to_string();
    assert!(!url.is_empty(), "the mock API did not start: {line:?}");
    Mock { child, url }
}

fn pipeline(base: &str, kind: &str, concurrency: u32, db: &Path) -> String {
    let (path, records, pagination) = match kind {
        "total" => (
            "/posts",
            "",
            format!("kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = {PAGE}\ntotal = \"header:X-Total-Count\""),
        ),
        "no-total" => (
            "/posts",
            "",
            format!("kind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = {PAGE}"),
        ),
        _ => (
            "/stripe/posts?limit=100",
            "data",
            "kind = \"cursor\"\ncursor = \"last_record:id\"\nparam = \"starting_after\"\nhas_more = \"has_more\"".to_string(),
        ),
    };
    format!(
        "[source]\nkind = \"http\"\nbase_url = \"{base}\"\npath = \"{path}\"\nrecords = \"{records}\"\nconcurrency = {concurrency}\n\
         [source.pagination]\n{pagination}\n\
         [sink]\nkind = \"sqlite\"\npath = \"{}\"\ntable = \"posts\"\nwrite = \"append\"\nbatch_size = {}\n",
        db.display(),
        batch_size()
    )
}

/// Records per transaction (`BENCH_BATCH_SIZE`, default 1000 like the sink's).
fn batch_size() -> u64 {
    std::env::var("BENCH_BATCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// One measured run: records, seconds, peak RSS in bytes.
#[derive(Clone, Copy)]
struct Measure {
    records: u64,
    seconds: f64,
    rss: u64,
}

fn run_ingest(dir: &Path, text: &str, max_pages: Option<u64>) -> Measure {
    let p = dir.join(format!("p{}.toml", fastrand_name()));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(release_dir().join("ingest"));
    cmd.args(["-q", "run", "--progress", "never", "--output", "json"])
        .arg(&p);
    if let Some(n) = max_pages {
        cmd.args(["--max-pages", &n.to_string()]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run ingest: {e}"));
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report: {e}"));
    Measure {
        records: report["records"].as_u64().unwrap_or(0),
        seconds: report["seconds"].as_f64().unwrap_or(0.0),
        rss: report["peak_rss_bytes"].as_u64().unwrap_or(0),
    }
}

fn fastrand_name() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn run_floor(args: &[&str]) -> Measure {
    let out = Command::new(std::env::current_exe().unwrap_or_default())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("floor: {e}"));
    assert!(
        out.status.success(),
        "floor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("floor output: {e}"));
    Measure {
        records: v["records"].as_u64().unwrap_or(0),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        rss: v["rss"].as_u64().unwrap_or(0),
    }
}

/// Child: walk the source with ingest's client and parsing, store nothing.
fn floor_fetch(url: &str) {
    use futures::StreamExt;
    let text = pipeline(url, "total", 8, Path::new("/dev/null"));
    let p = ingest::config::load_str(&text, Path::new("floor.toml"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let (records, seconds) = rt.block_on(async {
        let source = ingest::source::Source::new(&p.source, p.secrets.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        let mut pages = source.walk(Default::default(), None);
        let mut n = 0u64;
        while let Some(page) = pages.next().await {
            n += page.unwrap_or_else(|e| panic!("{e}")).records.len() as u64;
        }
        (n, start.elapsed().as_secs_f64())
    });
    println!(
        "{}",
        json!({ "records": records, "seconds": seconds, "rss": ingest::run::peak_rss_bytes() })
    );
}

/// Child: the same rows through the same sink, no HTTP. Only the writes are
/// timed; making the rows is not.
fn floor_write(n: u64, dir: &str) {
    use ingest::sink::Batch;
    use ingest::sink::Sink;
    let db = Path::new(dir).join("floor.db");
    let text = pipeline("http://127.0.0.1:9", "total", 8, &db);
    let p = ingest::config::load_str(&text, Path::new("floor.toml"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let data = ingest_mock::Dataset::new(42, n, 0);
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let seconds = rt.block_on(async {
        let (mut sink, _lock) = Sink::open(&p.sink, &p.name, false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sink.begin_run(false, true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut spent = Duration::ZERO;
        let per = p.sink.batch_size() as u64;
        let mut id = 1;
        while id <= n {
            let records: Vec<Value> = (id..(id + per).min(n + 1)).map(|i| data.post(i)).collect();
            id += per;
            let resume = ingest::source::Resume {
                position: ingest::source::Position::Page(((id - 1) / PAGE + 1) as i64),
                pages: (id - 1) / PAGE,
                records: id - 1,
                page_size: Some(PAGE),
                total: Some(n),
                depends: None,
                skip: 0,
            };
            let batch = Batch {
                records,
                states: vec![("".into(), Some(resume))],
                pages: per / PAGE,
                ..Default::default()
            };
            let t = Instant::now();
            sink.write(batch).await.unwrap_or_else(|e| panic!("{e}"));
            spent += t.elapsed();
        }
        spent.as_secs_f64()
    });
    println!(
        "{}",
        json!({ "records": n, "seconds": seconds, "rss": ingest::run::peak_rss_bytes() })
    );
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1_048_576.0)
}

fn row(name: &str, m: Measure, note: &str) {
    let rate = if m.seconds > 0.0 {
        m.records as f64 / m.seconds
    } else {
        0.0
    };
    println!(
        "| {name:<46} | {:>9} | {:>7.2} | {:>10.0} | {:>9} | {note}",
        m.records,
        m.seconds,
        rate,
        mb(m.rss)
    );
}

fn main() {
    ingest::alloc::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--floor-fetch") => return floor_fetch(&args[1]),
        Some("--floor-write") => return floor_write(args[1].parse().unwrap_or(0), &args[2]),
        Some("--floor-copy") => return pg::floor_copy(args[1].parse().unwrap_or(0), &args[2]),
        Some("--floor-ndjson") => return ndjson::floor_read(&args[1]),
        _ => {}
    }
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // BENCH_ONLY=ndjson,pg runs some parts (main, auto, ndjson, pg); all by default
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only.split(',').any(|p| p.trim() == name);
    if part("main") {
        let r = measure(n);
        report(n, &r);
    }
    if part("auto") {
        auto::bench();
    }
    if part("ndjson") {
        ndjson::bench();
    }
    if part("pg") {
        pg::bench();
    }
}

mod auto;
mod ndjson;
mod pg;

/// Every run of the bench, measured.
struct Results {
    fetch: Measure,
    write: Measure,
    total: Measure,
    small: Measure,
    no_total: Measure,
    cursor: Measure,
    latency: Measure,
    slow_n: u64,
}

/// Start the mock APIs and measure the floors and every ingest run.
fn measure(n: u64) -> Results {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = |name: &str| dir.path().join(format!("{name}.db"));

    eprintln!("starting the mock API with {n} posts…");
    let mock = start_mock(n, 0);
    // warm the mock's cache of post JSON so no measured run pays for it
    let _ = run_floor(&["--floor-fetch", &mock.url]);

    eprintln!("measuring…");
    let fetch = run_floor(&["--floor-fetch", &mock.url]);
    let write = run_floor(&[
        "--floor-write",
        &n.to_string(),
        &dir.path().display().to_string(),
    ]);
    let total = run_ingest(
        dir.path(),
        &pipeline(&mock.url, "total", 8, &db("total")),
        None,
    );
    let small = run_ingest(
        dir.path(),
        &pipeline(&mock.url, "total", 8, &db("small")),
        Some(10_000 / PAGE),
    );
    let no_total = run_ingest(
        dir.path(),
        &pipeline(&mock.url, "no-total", 8, &db("nototal")),
        None,
    );
    let cursor = run_ingest(
        dir.path(),
        &pipeline(&mock.url, "cursor", 8, &db("cursor")),
        None,
    );
    drop(mock);

    let slow_n = 100_000.min(n);
    let slow = start_mock(slow_n, 20);
    let latency = run_ingest(
        dir.path(),
        &pipeline(&slow.url, "total", 16, &db("latency")),
        None,
    );
    drop(slow);
    Results {
        fetch,
        write,
        total,
        small,
        no_total,
        cursor,
        latency,
        slow_n,
    }
}

/// Print the table, each run beside its baseline.
fn report(n: u64, r: &Results) {
    let Results {
        fetch,
        write,
        total,
        small,
        no_total,
        cursor,
        latency,
        slow_n,
    } = *r;
    let ideal = (slow_n / PAGE) as f64 * 0.020 / 16.0;
    let floor = fetch.seconds.max(write.seconds);
    println!();
    println!(
        "ingest throughput, {} records of ~300 B in pages of {PAGE}, {} cores",
        n,
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(0)
    );
    println!();
    println!(
        "| {:<46} | {:>9} | {:>7} | {:>10} | {:>9} | against",
        "run", "records", "seconds", "records/s", "peak RSS"
    );
    println!(
        "|{}|{}|{}|{}|{}|---",
        "-".repeat(48),
        "-".repeat(11),
        "-".repeat(9),
        "-".repeat(12),
        "-".repeat(11)
    );
    row(
        "fetch-only floor (client + parsing, no sink)",
        fetch,
        "baseline",
    );
    row("write-only floor (same rows, same sink)", write, "baseline");
    row(
        "ingest page_number, known total",
        total,
        &format!(
            "{:.2}x the larger floor (target <= 1.5x)",
            total.seconds / floor
        ),
    );
    row(
        "ingest page_number, known total, 10k records",
        small,
        &format!(
            "the {n}-record peak RSS is {:.2}x this (target <= 1.2x)",
            total.rss as f64 / small.rss.max(1) as f64
        ),
    );
    row(
        "ingest page_number, no total (speculative)",
        no_total,
        &format!("{:.2}x the larger floor", no_total.seconds / floor),
    );
    row(
        "ingest cursor (sequential walk)",
        cursor,
        &format!("{:.2}x the larger floor", cursor.seconds / floor),
    );
    row(
        "ingest, +20 ms per response, concurrency 16",
        latency,
        &format!(
            "ideal {ideal:.2}s = {} pages x 20 ms / 16: {:.2}x (target <= 1.3x)",
            slow_n / PAGE,
            latency.seconds / ideal
        ),
    );
    check_counts(n, r);
}

/// Warn when a run did not write every record it should have.
fn check_counts(n: u64, r: &Results) {
    let Results {
        total,
        no_total,
        cursor,
        latency,
        slow_n,
        ..
    } = *r;
    for (name, m) in [
        ("page_number, known total", total),
        ("no total", no_total),
        ("cursor", cursor),
        ("latency", latency),
    ] {
        let want = if name == "latency" { slow_n } else { n };
        if m.records != want {
            println!(
                "WARNING: {name} wrote {} records, expected {want}",
                m.records
            );
        }
    }
}
