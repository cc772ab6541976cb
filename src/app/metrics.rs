//! `ingest run --metrics FILE`: the runs of one invocation in Prometheus
//! text format, for node_exporter's textfile collector. Written with
//! prometheus-client at the end of every run (so a failed pipeline is in it
//! too), to a temporary file in the same directory that is then renamed
//! over FILE: the collector never reads half a file.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::RunRow;

type Labels = Vec<(String, String)>;
type Int = Family<Labels, Gauge>;
type Float = Family<Labels, Gauge<f64, AtomicU64>>;

/// What one run of a pipeline did, for its metrics.
pub(super) struct Sample {
    /// The pipeline.
    pub pipeline: String,
    /// The process's exit code for this run (0 done).
    pub exit_code: i32,
    /// Rows written, pages committed, retries and rejects.
    pub records: u64,
    /// Pages committed.
    pub pages: u64,
    /// HTTP requests, when known (a failed run's are not).
    pub requests: Option<u64>,
    /// Retries.
    pub retries: u64,
    /// Records and pages rejected.
    pub rejects: u64,
    /// Wall time.
    pub seconds: f64,
    /// When the pipeline last completed a run (this one or an earlier one).
    pub last_success: Option<f64>,
}

impl Sample {
    /// A run's figures from its row in the history, with the last success.
    pub fn from_history(pipeline: &str, exit_code: i32, seconds: f64, runs: &[RunRow]) -> Self {
        let this = runs.first();
        let n = |f: fn(&RunRow) -> i64| this.map_or(0, |r| u64::try_from(f(r)).unwrap_or(0));
        Self {
            pipeline: pipeline.to_string(),
            exit_code,
            records: n(|r| r.records),
            pages: n(|r| r.pages),
            requests: None,
            retries: n(|r| r.retries),
            rejects: n(|r| r.rejects),
            seconds,
            last_success: last_success(runs),
        }
    }
}

/// The end of the newest completed run, in Unix seconds.
pub(super) fn last_success(runs: &[RunRow]) -> Option<f64> {
    runs.iter()
        .filter(|r| r.status == "done")
        .find_map(|r| r.ended_at.as_deref()?.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond() as f64 / 1000.0)
}

/// The text of the samples.
pub(super) fn render(samples: &[Sample]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("ingest");
    let int = |r: &mut Registry, name: &str, help: &str| {
        let f = Int::default();
        r.register(name, help, f.clone());
        f
    };
    let records = int(
        &mut registry,
        "run_records",
        "Rows written by the pipeline's last run",
    );
    let pages = int(
        &mut registry,
        "run_pages",
        "Pages committed by the last run",
    );
    let requests = int(
        &mut registry,
        "run_requests",
        "HTTP requests of the last run, retries included",
    );
    let retries = int(&mut registry, "run_retries", "Retries of the last run");
    let rejects = int(
        &mut registry,
        "run_rejects",
        "Records and pages the last run rejected",
    );
    let exit = int(
        &mut registry,
        "run_exit_code",
        "Exit code of the last run: 0 done, 1 failed, 2 bad pipeline, 75 busy, 130/143 stopped",
    );
    let success = int(
        &mut registry,
        "run_success",
        "1 when the last run completed, else 0",
    );
    let duration = Float::default();
    registry.register(
        "run_duration_seconds",
        "Wall time of the last run",
        duration.clone(),
    );
    let last = Float::default();
    registry.register(
        "last_success_timestamp_seconds",
        "When the pipeline last completed a run (Unix time)",
        last.clone(),
    );
    for s in samples {
        let l = vec![("pipeline".to_string(), s.pipeline.clone())];
        let set = |f: &Int, v: u64| {
            f.get_or_create(&l)
                .set(i64::try_from(v).unwrap_or(i64::MAX))
        };
        set(&records, s.records);
        set(&pages, s.pages);
        if let Some(r) = s.requests {
            set(&requests, r);
        }
        set(&retries, s.retries);
        set(&rejects, s.rejects);
        exit.get_or_create(&l).set(i64::from(s.exit_code));
        success.get_or_create(&l).set(i64::from(s.exit_code == 0));
        duration.get_or_create(&l).set(s.seconds);
        if let Some(t) = s.last_success {
            last.get_or_create(&l).set(t);
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, &registry)?;
    Ok(out)
}

/// Write `text` to `path` atomically: a temporary file beside it, renamed over it.
pub(super) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
