//! `concurrency = "auto"` in `make bench`: the 20 ms-latency run with the
//! limit left to AIMD, beside fixed settings measured in the same run, and a
//! run under the mock's rate limit with the Retry-After violations the mock
//! counted (read from its `/_mock/stats`). Printed, never asserted.

use std::path::Path;

use super::{PAGE, pipeline, row, run_ingest, start_mock_args};

/// The page_number pipeline with `concurrency` as given (a number or "auto").
fn with(base: &str, concurrency: &str, db: &Path) -> String {
    pipeline(base, "total", 16, db)
        .replace("concurrency = 16", &format!("concurrency = {concurrency}"))
}

/// What the mock counted (read after its rate window has passed, so the
/// question is not itself refused with a 429).
fn stats(base: &str) -> serde_json::Value {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let url = format!("{base}/_mock/stats");
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        match reqwest::get(&url).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    })
}

/// Measure and print the runs.
pub fn bench() {
    let n: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = |name: &str| dir.path().join(format!("{name}.db"));
    eprintln!("concurrency auto: 20 ms per response, then a 200 requests/s limit…");
    let slow = start_mock_args(&["--posts", &n.to_string(), "--delay-ms", "20"]);
    let f16 = run_ingest(dir.path(), &with(&slow.url, "16", &db("f16")), None);
    let f32 = run_ingest(dir.path(), &with(&slow.url, "32", &db("f32")), None);
    let auto = run_ingest(dir.path(), &with(&slow.url, "\"auto\"", &db("auto")), None);
    drop(slow);
    let limited = start_mock_args(&["--posts", "40000", "--max-rps", "200"]);
    let capped = run_ingest(
        dir.path(),
        &with(&limited.url, "\"auto\"", &db("capped")),
        None,
    );
    let counted = stats(&limited.url);
    drop(limited);
    let best = f16.seconds.min(f32.seconds);
    println!();
    println!("concurrency = \"auto\" ({n} records, pages of {PAGE}, 20 ms per response)");
    println!();
    row("fixed concurrency 16", f16, "baseline");
    row("fixed concurrency 32", f32, "baseline");
    row(
        "concurrency \"auto\" (AIMD, at most 32)",
        auto,
        &format!(
            "{:.2}x the best fixed setting (target <= 1.3x)",
            auto.seconds / best
        ),
    );
    row(
        "auto under a 200 requests/s limit (40k)",
        capped,
        &format!(
            "{} Retry-After violations, {} 429s (target: 0 violations)",
            counted["early_retries"], counted["rate_limited"]
        ),
    );
}
