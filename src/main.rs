//! `ingest`: parses the command line, calls the library, prints results and
//! maps errors to exit codes (0 done, 1 failed, 2 bad pipeline or command
//! line, 75 another run holds the pipeline, 130/143 stopped by a signal).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ingest::cli::{Cli, Command, LogFormat, Output, ProgressMode, RunArgs, StateAction};
use ingest::config::{self, ConfigError, LoadOptions, Pipeline};
use ingest::run::{self, Progress, RunOptions, RunReport, Shutdown};
use ingest::{Error, state};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `println!` that ends quietly when standard output is closed
/// (`ingest validate *.toml | head -1`), as Unix tools do, instead of
/// panicking; the command goes on and returns its own exit code.
macro_rules! say {
    ($($arg:tt)*) => {
        said(writeln!(std::io::stdout().lock(), $($arg)*))
    };
}

/// Report a failed write to standard output, except a closed pipe.
fn said(r: std::io::Result<()>) {
    if let Err(e) = r
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("ingest: cannot write to standard output: {e}");
    }
}

// mimalloc: measured half again as fast as the system allocator for
// parsing pages of JSON (see `make bench`); .cargo/config.toml makes it commit
// memory on demand and `ingest::alloc::tune` return it soon after it is
// freed, which keeps the peak RSS flat.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ingest::alloc::tune();
    let cli = Cli::parse();
    init_logging(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingest: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(dispatch(cli));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.quiet, cli.verbose) {
        (q, _) if q >= 2 => "error",
        (1, _) => "warn",
        (_, 0) => "ingest=info,warn",
        (_, 1) => "ingest=debug,warn",
        _ => "ingest=trace,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.compact().init(),
    }
}

/// Print an error the way users read it and return its exit code.
fn report_error(e: &anyhow::Error) -> i32 {
    let code = e.downcast_ref::<Error>().map_or_else(
        || {
            if e.downcast_ref::<ConfigError>().is_some() {
                2
            } else {
                1
            }
        },
        Error::exit_code,
    );
    // the reader went away (`ingest preview p.toml | head`): not an error
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return 0;
    }
    eprintln!("ingest: error: {e:#}");
    code
}

async fn dispatch(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Run(args) => return cmd_run(args, cli.quiet > 0).await,
        Command::Validate { pipelines, set } => cmd_validate(&pipelines, &set),
        Command::Preview {
            pipeline,
            set,
            limit,
        } => cmd_preview(&pipeline, &set, limit).await,
        Command::State { action } => cmd_state(action).await,
        Command::Runs {
            pipeline,
            limit,
            output,
        } => cmd_runs(&pipeline, limit, output).await,
        Command::Show {
            pipeline,
            limit,
            output,
        } => cmd_show(&pipeline, limit, output).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

fn load(path: &Path, overrides: &[String]) -> Result<Pipeline, ConfigError> {
    config::load(
        path,
        &LoadOptions {
            overrides,
            ..Default::default()
        },
    )
}

fn cmd_validate(paths: &[PathBuf], set: &[String]) -> anyhow::Result<i32> {
    let mut bad = 0;
    for path in paths {
        match load(path, set) {
            Ok(p) => say!(
                "ok: {} (pipeline `{}`: {} pagination, {} transform(s), {} into {}:{})",
                path.display(),
                p.name,
                p.source.pagination.kind.name(),
                p.transforms.len(),
                format!("{:?}", p.sink.write).to_lowercase(),
                p.sink.path.display(),
                p.sink.table
            ),
            Err(e) => {
                bad += 1;
                eprintln!("ingest: error: {e}");
            }
        }
    }
    Ok(if bad > 0 { 2 } else { 0 })
}

async fn cmd_run(args: RunArgs, quiet: bool) -> i32 {
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
                eprintln!("ingest: error: {e}");
                bad = true;
            }
        }
    }
    if bad {
        return 2;
    }
    let shutdown = Shutdown::on_signals();
    for p in &pipelines {
        let bar = progress_for(args.progress, quiet, &p.name);
        let opts = RunOptions {
            full_refresh: args.full_refresh,
            window: ingest::source::partition::Window {
                since: args.since.clone(),
                until: args.until.clone(),
            },
            shutdown: shutdown.clone(),
            on_batch: Some(bar.callback()),
            ..Default::default()
        };
        let result = run::run(p, &opts).await;
        bar.finish();
        match result {
            Ok(report) => print_report(&report, args.output),
            Err(e) => {
                if args.output == Output::Json {
                    let line = serde_json::json!({
                        "pipeline": p.name,
                        "status": if matches!(e, Error::Interrupted { .. }) { "interrupted" } else { "failed" },
                        "error": p.secrets.redact(&e.to_string()),
                        "exit_code": e.exit_code(),
                    });
                    say!("{line}");
                }
                let msg = p.secrets.redact(&e.to_string());
                match &e {
                    Error::Interrupted { .. } => eprintln!("ingest: {}: {msg}", p.name),
                    Error::Config(_) => eprintln!("ingest: error: {msg}"),
                    Error::Sink(ingest::error::SinkError::Busy { .. }) => {
                        eprintln!("ingest: {}: {msg}", p.name)
                    }
                    Error::Http(ingest::error::HttpError::Status { status, .. })
                        if (400..500).contains(status) && *status != 408 && *status != 429 =>
                    {
                        eprintln!(
                            "ingest: {}: failed: {msg}\n  the API refused the request: a rerun will not fix this by itself; \
                             check the pipeline's auth, path and params (what was fetched before is committed)",
                            p.name
                        )
                    }
                    _ => eprintln!(
                        "ingest: {}: failed: {msg}\n  what was fetched before the failure is committed; `ingest run {}` resumes from there",
                        p.name,
                        p.file.display()
                    ),
                }
                return e.exit_code();
            }
        }
    }
    0
}

fn print_report(r: &RunReport, output: Output) {
    match output {
        Output::Json => match serde_json::to_string(r) {
            Ok(s) => say!("{s}"),
            Err(e) => eprintln!("ingest: cannot print the report: {e}"),
        },
        Output::Text => {
            let rate = if r.seconds > 0.0 {
                r.records as f64 / r.seconds
            } else {
                0.0
            };
            say!(
                "{}: {} in {:.2}s: {} records written to {} (table {}), {} fetched in {} pages, {} requests, {} retries, {} rejects{} ({:.0} records/s)",
                r.pipeline,
                r.status,
                r.seconds,
                r.records,
                r.database,
                r.table,
                r.fetched,
                r.pages,
                r.requests,
                r.retries,
                r.rejects,
                if r.resumed > 0 { ", resumed" } else { "" },
                rate
            );
        }
    }
}

/// Progress: a bar on a terminal, a log line every 10 s elsewhere.
enum Bar {
    Drawn(indicatif::ProgressBar),
    Logged(String),
    Off,
}

impl Bar {
    fn callback(&self) -> run::BatchHook {
        match self {
            Bar::Drawn(pb) => {
                let pb = pb.clone();
                Arc::new(move |p: &Progress| {
                    pb.set_position(p.records);
                    pb.set_message(format!("{} pages, {} rejects", p.pages, p.rejects));
                })
            }
            Bar::Logged(name) => {
                let name = name.clone();
                let last = Mutex::new(Instant::now());
                Arc::new(move |p: &Progress| {
                    if let Ok(mut t) = last.lock()
                        && t.elapsed() >= Duration::from_secs(10)
                    {
                        *t = Instant::now();
                        tracing::info!(pipeline = %name, pages = p.pages, records = p.records, rejects = p.rejects, "progress");
                    }
                })
            }
            Bar::Off => Arc::new(|_: &Progress| {}),
        }
    }

    fn finish(&self) {
        if let Bar::Drawn(pb) = self {
            pb.finish_and_clear();
        }
    }
}

fn progress_for(mode: ProgressMode, quiet: bool, name: &str) -> Bar {
    let draw = match mode {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => std::io::stderr().is_terminal() && !quiet,
    };
    if !draw {
        return if quiet {
            Bar::Off
        } else {
            Bar::Logged(name.to_string())
        };
    }
    let pb = indicatif::ProgressBar::new_spinner();
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {prefix}: {pos} records ({per_sec}) {msg} [{elapsed}]",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.set_prefix(name.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    Bar::Drawn(pb)
}

async fn cmd_preview(path: &Path, set: &[String], limit: usize) -> anyhow::Result<i32> {
    let p = load(path, set)?;
    let pv = run::preview(&p)
        .await
        .map_err(|e| anyhow::anyhow!(p.secrets.redact(&e.to_string())))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} ({} records on the first page, {} after transforms)",
        pv.url,
        pv.fetched,
        pv.records.len()
    )?;
    for r in pv.records.iter().take(limit) {
        writeln!(
            out,
            "{}",
            serde_json::to_string(r).context("printing a record")?
        )?;
    }
    writeln!(out, "columns:")?;
    for (name, ty) in &pv.columns {
        writeln!(out, "  {name} {ty}")?;
    }
    for r in &pv.rejects {
        writeln!(out, "rejected: {r}")?;
    }
    Ok(0)
}

async fn cmd_state(action: StateAction) -> anyhow::Result<i32> {
    match action {
        StateAction::Show { pipeline } => {
            let p = load(&pipeline, &[])?;
            let rows = state::show(&p).await.map_err(Error::from)?;
            if rows.is_empty() {
                say!(
                    "{}: no saved state; the next run starts from the beginning",
                    p.name
                );
            }
            for r in rows {
                let part = if r.partition.is_empty() {
                    "(all)".to_string()
                } else {
                    r.partition
                };
                match r.resume {
                    Some(resume) => say!(
                        "{part}: resumes at {resume} (saved {} by run {})",
                        r.updated_at,
                        r.run_id.unwrap_or(0)
                    ),
                    None => say!(
                        "{part}: complete (saved {} by run {})",
                        r.updated_at,
                        r.run_id.unwrap_or(0)
                    ),
                }
            }
        }
        StateAction::Reset { pipeline } => {
            let p = load(&pipeline, &[])?;
            let n = state::reset(&p).await.map_err(Error::from)?;
            say!(
                "{}: forgot {n} resume point(s); the next run starts from the beginning",
                p.name
            );
        }
    }
    Ok(0)
}

async fn cmd_runs(path: &Path, limit: u32, output: Output) -> anyhow::Result<i32> {
    let p = load(path, &[])?;
    let rows = state::runs(&p, limit).await.map_err(Error::from)?;
    if output == Output::Json {
        for r in &rows {
            say!("{}", serde_json::to_string(r)?);
        }
        return Ok(0);
    }
    say!(
        "{:>5}  {:<24}  {:<24}  {:<11}  {:>7}  {:>9}  {:>7}  {:>7}  error",
        "id",
        "started",
        "ended",
        "status",
        "pages",
        "records",
        "retries",
        "rejects"
    );
    for r in rows {
        say!(
            "{:>5}  {:<24}  {:<24}  {:<11}  {:>7}  {:>9}  {:>7}  {:>7}  {}",
            r.id,
            r.started_at,
            r.ended_at.unwrap_or_default(),
            r.status,
            r.pages,
            r.records,
            r.retries,
            r.rejects,
            r.error.unwrap_or_default()
        );
    }
    Ok(0)
}

async fn cmd_show(path: &Path, limit: u32, output: Output) -> anyhow::Result<i32> {
    let p = load(path, &[])?;
    let peek = state::peek(&p, limit).await.map_err(Error::from)?;
    if output == Output::Json {
        say!("{}", serde_json::to_string(&peek)?);
        return Ok(0);
    }
    say!(
        "{}: {} rows in {} (table {})",
        p.name,
        peek.count,
        p.sink.path.display(),
        peek.table
    );
    let cell = |v: Option<&serde_json::Value>| -> String {
        let s = match v {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let s = s.replace(['\n', '\t'], " ");
        if s.width() > 28 {
            // cut by display columns: emoji and CJK take two
            let mut cut = String::new();
            for ch in s.chars() {
                if cut.width() + ch.width().unwrap_or(0) > 27 {
                    break;
                }
                cut.push(ch);
            }
            format!("{cut}…")
        } else {
            s
        }
    };
    let widths: Vec<usize> = peek
        .columns
        .iter()
        .map(|c| {
            peek.rows
                .iter()
                .map(|r| cell(r.get(c)).width())
                .chain([c.width()])
                .max()
                .unwrap_or(4)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.width()))))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    say!("{}", line(peek.columns.clone()));
    say!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for r in &peek.rows {
        say!(
            "{}",
            line(peek.columns.iter().map(|c| cell(r.get(c))).collect())
        );
    }
    Ok(0)
}
