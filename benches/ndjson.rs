//! A 1 GB NDJSON file into SQLite in `make bench` (`BENCH_NDJSON_MB`, default
//! 1024): the files source end to end, beside a read-and-parse floor (the
//! same file read line by line and parsed with ingest's JSON parser, no
//! sink) and the write-only floor of the main table measured earlier. It
//! prints records/s and peak RSS; the target is a flat peak RSS (<= 50 MB).

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::{Measure, mb, row, run_floor, run_ingest};

/// Write `mb` MiB of the mock's posts as NDJSON; returns the records written.
fn make_file(path: &Path, mb: u64) -> u64 {
    let data = ingest_mock::Dataset::new(42, 100_000, 0);
    let f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let (mut bytes, mut n) = (0u64, 0u64);
    let limit = mb * 1024 * 1024;
    while bytes < limit {
        n += 1;
        let mut post = data.post(1 + (n - 1) % 100_000);
        post["id"] = json!(n);
        let line = post.to_string();
        bytes += line.len() as u64 + 1;
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    w.flush().unwrap_or_else(|e| panic!("{e}"));
    n
}

/// Child: read the file line by line and parse each line, nothing stored.
pub fn floor_read(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut r = std::io::BufReader::with_capacity(256 * 1024, f);
    let start = Instant::now();
    let (mut line, mut n) = (String::new(), 0u64);
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if ingest::source::json::parse(line.trim()).is_ok() {
            n += 1;
        }
    }
    println!(
        "{}",
        json!({ "records": n, "seconds": start.elapsed().as_secs_f64(), "rss": ingest::run::peak_rss_bytes() })
    );
}

/// Measure and print.
pub fn bench() {
    let size: u64 = std::env::var("BENCH_NDJSON_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("in.ndjson");
    eprintln!("writing a {size} MiB NDJSON file…");
    let n = make_file(&file, size);
    let floor = run_floor(&["--floor-ndjson", &file.display().to_string()]);
    let text = format!(
        "[source]\nkind = \"files\"\npaths = [\"in.ndjson\"]\n\n[sink]\nkind = \"sqlite\"\npath = \"{}\"\ntable = \"posts\"\nbatch_size = 5000\n",
        dir.path().join("ndjson.db").display()
    );
    eprintln!("loading it into SQLite…");
    let run: Measure = run_ingest(dir.path(), &text, None);
    println!();
    println!("a {size} MiB NDJSON file ({n} records) into SQLite with the files source");
    println!();
    row("read-and-parse floor (no sink)", floor, "baseline");
    row(
        "ingest files -> sqlite, batch_size 5000",
        run,
        &format!(
            "{:.2}x the floor's time; peak RSS {} (target <= 50 MB)",
            run.seconds / floor.seconds.max(1e-9),
            mb(run.rss)
        ),
    );
    if run.records != n {
        println!("WARNING: {} of {n} records written", run.records);
    }
}
