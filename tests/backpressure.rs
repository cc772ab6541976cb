//! Backpressure: with a deliberately slow sink, the pages fetched but not
//! yet committed never exceed the channel capacity plus the concurrency cap
//! plus the two batches of the double buffer (one being written, one being
//! gathered), however many pages the API has.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use ingest::config::{LoadOptions, load_str};
use ingest::run::{CHANNEL_PAGES, RunOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sink_slows_the_source() {
    let api = mock(600).await; // 60 pages of 10
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("out.db");
    let concurrency = 4u64;
    let text = format!(
        r#"[source]
kind = "http"
base_url = "{}"
path = "/posts"
concurrency = {concurrency}
[source.pagination]
kind = "page_number"
param = "_page"
size_param = "_limit"
size = 10
total = "header:X-Total-Count"
[sink]
kind = "sqlite"
path = "{}"
table = "posts"
batch_size = 10
"#,
        api.url(),
        db.display()
    );
    let p = load_str(
        &text,
        std::path::Path::new("bp.toml"),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let committed = Arc::new(AtomicU64::new(0));
    let c = committed.clone();
    let opts = RunOptions {
        sink_delay: Duration::from_millis(15),
        on_batch: Some(Arc::new(move |pr: &ingest::run::Progress| {
            c.store(pr.pages, Ordering::SeqCst)
        })),
        ..Default::default()
    };
    let api = Arc::new(api);
    let sampler = {
        let api = api.clone();
        let committed = committed.clone();
        tokio::spawn(async move {
            let mut max_gap = 0u64;
            // bounded: the run takes about 60 x 15 ms
            for _ in 0..5_000 {
                let served = api.served();
                let gap = served.saturating_sub(committed.load(Ordering::SeqCst));
                max_gap = max_gap.max(gap);
                if committed.load(Ordering::SeqCst) >= 60 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            max_gap
        })
    };
    let report = run(&p, &opts).await.unwrap_or_else(|e| panic!("{e}"));
    let max_gap = sampler.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.records, 600);
    assert_posts(&db, "posts", &api).await;
    // batch_size = one page: the double buffer holds two pages
    let bound = CHANNEL_PAGES as u64 + concurrency + 2;
    assert!(
        max_gap <= bound,
        "{max_gap} pages fetched but not committed; bound {bound}"
    );
    // the measurement saw the buffer fill: without backpressure this test fails
    assert!(
        max_gap >= CHANNEL_PAGES as u64,
        "the sink was not slow enough to fill the channel ({max_gap})"
    );
}
