//! `ingest run`: check every file, then run them in order with a progress
//! display, and print each run's summary.

use std::io::IsTerminal;
use std::time::Instant;

use super::progress::{Bar, thousands};
use super::{config_error, error, load, metrics};
use crate::cli::{Output, ProgressMode, RunArgs};
use crate::config::Pipeline;
use crate::error::{Error, HttpError, SinkError};
use crate::run::{self, RunOptions, RunReport, Shutdown};

pub(super) async fn run(args: RunArgs, quiet: bool, shutdown: Shutdown) -> i32 {
    let mut overrides = args.set.clone();
    if let Some(n) = args.max_pages {
        overrides.push(format!("source.pagination.max_pages={n}"));
    }
    // check every file before running any: a typo in the last one should not
    // surface after the first has run for an hour
    let mut pipelines = Vec::new();
    let mut bad = false;
    for path in &args.pipelines {
        match load(path, &overrides) {
            Ok(p) => pipelines.push(p),
            Err(e) => {
                config_error(&e);
                bad = true;
            }
        }
    }
    if bad {
        return 2;
    }
    let mut samples = Vec::new();
    for p in &pipelines {
        let started = Instant::now();
        let bar = progress_for(args.progress, quiet, &p.name);
        let opts = RunOptions {
            full_refresh: args.full_refresh,
            window: crate::source::partition::Window {
                since: args.since.clone(),
                until: args.until.clone(),
            },
            shutdown: shutdown.clone(),
            on_batch: Some(bar.callback()),
            ..Default::default()
        };
        let span = tracing::info_span!("run", pipeline = %p.name);
        let result = tracing::Instrument::instrument(run::run(p, &opts), span).await;
        bar.finish();
        if let Some(file) = &args.metrics {
            samples.push(sample(p, &result, started.elapsed().as_secs_f64()).await);
            write_metrics(file, &samples);
        }
        match result {
            // `ingest run p.toml | head`: the reader has what it wanted, as
            // with any Unix filter; standard output keeps no resume state
            Err(crate::Error::Sink(crate::sink::SinkError::Closed)) => return 0,
            Ok(report) => {
                // records on standard output: the report goes to stderr
                let records_on_stdout =
                    matches!(&p.sink, crate::config::SinkConfig::Jsonl(c) if c.is_stdout());
                print_report(&report, args.output, records_on_stdout);
            }
            Err(e) => {
                failed(p, &e, args.output);
                return e.exit_code();
            }
        }
    }
    0
}

/// The metrics of one run: from its report, or (a run that failed) from
/// its row in the history.
async fn sample(p: &Pipeline, result: &Result<RunReport, Error>, seconds: f64) -> metrics::Sample {
    let history = crate::state::runs(p, 50).await.unwrap_or_default();
    match result {
        Ok(r) => metrics::Sample {
            pipeline: p.name.clone(),
            exit_code: 0,
            records: r.records,
            pages: r.pages,
            requests: Some(r.requests),
            retries: r.retries,
            rejects: r.rejects,
            seconds: r.seconds,
            last_success: metrics::last_success(&history),
        },
        Err(e) => {
            // a bad file or a busy pipeline never made a run of its own
            let mine = !matches!(e, Error::Config(_) | Error::Sink(SinkError::Busy { .. }));
            let mut s = metrics::Sample::from_history(
                &p.name,
                e.exit_code(),
                seconds,
                if mine { &history } else { &[] },
            );
            s.last_success = metrics::last_success(&history);
            s
        }
    }
}

/// Write the metrics file; a failure to is said, and changes no exit code.
fn write_metrics(file: &std::path::Path, samples: &[metrics::Sample]) {
    let written = metrics::render(samples)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|text| metrics::write_atomically(file, &text));
    if let Err(e) = written {
        error(
            None,
            &format!("cannot write the metrics to {}: {e}", file.display()),
        );
    }
}

/// A run that ended early: a JSON line under `--output json`, and the
/// error with what a rerun will do.
fn failed(p: &Pipeline, e: &Error, output: Output) {
    let msg = p.secrets.redact(&e.to_string());
    if output == Output::Json {
        let line = serde_json::json!({
            "pipeline": p.name,
            "status": if matches!(e, Error::Interrupted { .. }) { "interrupted" } else { "failed" },
            "error": msg,
            "exit_code": e.exit_code(),
        });
        say!("{line}");
    }
    let hint = match e {
        Error::Interrupted { .. } | Error::Config(_) | Error::Sink(SinkError::Busy { .. }) => {
            String::new()
        }
        Error::Http(HttpError::Status { status, .. })
            if (400..500).contains(status) && *status != 408 && *status != 429 =>
        {
            "\n  the API refused the request: a rerun will not fix this by itself; \
             check the pipeline's auth, path and params (what was fetched before is committed)"
                .into()
        }
        _ => format!(
            "\n  what was fetched before the failure is committed; `ingest run {}` resumes from there",
            p.file.display()
        ),
    };
    match e {
        // a config error names its file already
        Error::Config(_) => error(None, &msg),
        _ => error(Some(&p.name), &format!("{msg}{hint}")),
    }
}

fn print_report(r: &RunReport, output: Output, to_stderr: bool) {
    let line = match output {
        Output::Json => match serde_json::to_string(r) {
            Ok(s) => s,
            Err(e) => return error(None, &format!("cannot print the report: {e}")),
        },
        Output::Text => report_text(r),
    };
    if to_stderr {
        eprintln!("{line}");
    } else {
        say!("{line}");
    }
}

fn report_text(r: &RunReport) -> String {
    let rate = if r.seconds > 0.0 {
        r.records as f64 / r.seconds
    } else {
        0.0
    };
    let n = |count: u64, one: &str| match count {
        1 => format!("1 {one}"),
        c => format!("{c} {one}s"),
    };
    // a file sink is named by its path alone
    let file_sink = std::path::Path::new(&r.database)
        .file_name()
        .is_some_and(|n| n.to_string_lossy() == r.table);
    let place = if file_sink || r.table == "stdout" {
        r.database.clone()
    } else {
        format!("{} (table {})", r.database, r.table)
    };
    format!(
        "{}: {} in {:.2}s: {} written to {place}, {} fetched in {}, {}, {}, {}{} ({} records/s)",
        r.pipeline,
        r.status,
        r.seconds,
        n(r.records, "record"),
        r.fetched,
        n(r.pages, "page"),
        n(r.requests, "request"),
        n(r.retries, "retry").replace("retrys", "retries"),
        n(r.rejects, "reject"),
        if r.resumed > 0 { ", resumed" } else { "" },
        thousands(rate as u64)
    )
}

fn progress_for(mode: ProgressMode, quiet: bool, name: &str) -> Bar {
    let draw = match mode {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => std::io::stderr().is_terminal() && !quiet && !super::json_logs(),
    };
    if !draw {
        return if quiet {
            Bar::Off
        } else {
            Bar::Logged(name.to_string())
        };
    }
    Bar::drawn(name, indicatif::ProgressDrawTarget::stderr())
}
