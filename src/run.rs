//! Runs a pipeline: wires the source, the transforms and the sink into
//! backpressured streams, handles shutdown signals, and reports.
//!
//! ```text
//! producer task: Source::walk ──▶ bounded channel (CHANNEL_PAGES) ──▶ consumer:
//!   transforms per page ──▶ batch of whole pages ──▶ writer task:
//!   Sink::write (one transaction per batch)
//! ```
//! The producer reserves a channel slot *before* it asks the source for the
//! next page, and the consumer holds the writer's single slot while it
//! gathers a batch, so pages fetched but not yet written never exceed the
//! channel capacity plus the source's in-flight requests plus two batches
//! (one being written, one being gathered): fetching overlaps writing, and
//! memory stays bounded. A batch holds whole pages only: a page is never
//! split across two transactions, so its resume point is exact.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::source::PartitionConfig;
use crate::config::values::FieldPath;
use crate::config::{Pipeline, SourceConfig};
use crate::error::{ConfigError, Error};
use crate::ledger;
use crate::sink::tokens::LedgerTokens;
use crate::sink::{Batch, Reject, Sink, Walks};
use crate::source::partition::{self, Window};
use crate::source::{Page, Source, SourceMetrics};
use crate::transform::Chain;
use futures::StreamExt;

/// Pages buffered between the source and the sink.
pub const CHANNEL_PAGES: usize = 8;
/// A partial batch is committed when no page arrives for this long, so a
/// slow API still gets its progress saved often.
pub const LINGER: Duration = Duration::from_millis(200);

/// A request to stop: the signal's name and the exit code it maps to.
pub type Stop = (&'static str, i32);

/// Tells the run to stop fetching (first SIGINT/SIGTERM).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<Option<Stop>>);

impl Shutdown {
    /// A shutdown that never comes, and the sender that can trigger it.
    pub fn manual() -> (watch::Sender<Option<Stop>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self(rx))
    }

    /// The stop, if one was requested.
    pub fn requested(&self) -> Option<Stop> {
        *self.0.borrow()
    }

    /// Wait until a stop is requested.
    pub async fn wait(&mut self) -> Stop {
        loop {
            if let Some(s) = *self.0.borrow_and_update() {
                return s;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Called after each committed batch with the run's counters.
pub type BatchHook = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options of one run.
#[derive(Clone)]
pub struct RunOptions {
    /// Ignore saved state and marks; load the table anew (staged, swapped in at the end).
    pub full_refresh: bool,
    /// `--since` / `--until`.
    pub window: Window,
    /// Stop requests.
    pub shutdown: Shutdown,
    /// Called after each committed batch (progress display).
    pub on_batch: Option<BatchHook>,
    /// Wait this long before each batch write. Throttles the sink: for tests
    /// of backpressure, and to be gentle with a database others read.
    #[doc(hidden)]
    pub sink_delay: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            full_refresh: false,
            window: Window::default(),
            shutdown: Shutdown::manual().1,
            on_batch: None,
            sink_delay: Duration::ZERO,
        }
    }
}

/// Counters during a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Pages committed.
    pub pages: u64,
    /// Rows written.
    pub records: u64,
    /// Records and pages rejected.
    pub rejects: u64,
    /// Pages fetched (committed or not).
    pub fetched_pages: u64,
    /// Records the walks have fetched so far, what resumed walks fetched in
    /// earlier runs included: the count goes on where it stopped.
    pub walked: u64,
    /// The records every walk will fetch, once each walk's API has said
    /// (a total header or field).
    pub total: Option<u64>,
    /// Partitions complete, those an interrupted run finished included.
    pub partitions_done: u64,
    /// Partitions of the run (0: none).
    pub partitions: u64,
    /// `walked` when this run started.
    pub resumed_records: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The pipeline.
    pub pipeline: String,
    /// done | failed | interrupted
    pub status: String,
    /// Its id in `_ingest_runs`.
    pub run_id: i64,
    /// Pages committed.
    pub pages: u64,
    /// Rows written.
    pub records: u64,
    /// Records fetched (before transforms).
    pub fetched: u64,
    /// Rejected records and pages.
    pub rejects: u64,
    /// HTTP requests, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// Partitions resumed from saved state.
    pub resumed: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The database file.
    pub database: String,
    /// The table.
    pub table: String,
    /// Why it failed (redacted).
    pub error: Option<String>,
    /// The process's peak resident memory so far, in bytes (Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// The process's peak resident set size (`VmHWM`), where the OS tells it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Run one pipeline to the end (or to its first failure): check the flags,
/// take the lock, plan the walks, walk, batch, commit, finish.
pub async fn run(p: &Pipeline, opts: &RunOptions) -> Result<RunReport, Error> {
    let started = Instant::now();
    check_flags(p, &opts.window)?;
    let chain = Chain::build(&p.transforms)
        .map_err(|(i, k, m)| usage(p, format!("transform[{i}].{k}: {m}")))?;
    let mut source = Source::new(&p.source, p.secrets.clone())?;
    let metrics = source.metrics();

    // one run per pipeline and database at a time (cron overlapping itself)
    // files are partitions of their own
    let partitioned = p.source.partition().is_some() || matches!(p.source, SourceConfig::Files(_));
    let (mut sink, _lock) = Sink::open(&p.sink, &p.name, partitioned).await?;
    if let Some(store) = LedgerTokens::of(&p.sink, &p.name) {
        source.keep_tokens(Arc::new(store));
    }
    let plan = ledger::plan(p, opts, &mut source, &mut sink).await?;
    let run_id = sink.begin_run(plan.refresh, plan.fresh).await?;
    tracing::info!(pipeline = %p.name, run_id, pagination = source.pagination_kind(), walks = plan.walks.len(), resumed = plan.resumed, "run started");
    // a shared run's heartbeat keeps its claims until the run is finished
    let (walks, _heartbeat) = match sink.share(plan.walks).await? {
        Walks::Local(w) => (futures::stream::iter(w.into_iter().map(Ok)).boxed(), None),
        Walks::Shared(claims, beat) => (claims, Some(beat)),
    };

    let (rx, producer) = walk(
        &source,
        walks,
        p.source.concurrency(),
        opts.shutdown.clone(),
    );
    let start = Progress {
        partitions: if partitioned { plan.walks_total } else { 0 },
        partitions_done: plan.complete,
        resumed_records: plan.resumed_records,
        walked: plan.resumed_records,
        ..Progress::default()
    };
    let (wtx, writer) = spawn_writer(sink, metrics.clone(), opts.clone(), start);
    let cursor_field = p.source.incremental().map(|i| &i.cursor_field);
    let mut failure = batch(&chain, cursor_field, p.sink.batch_size(), rx, wtx).await;
    producer.abort();
    let _ = producer.await;
    let (mut sink, progress, written) = writer.await.map_err(|e| {
        Error::Sink(crate::sink::SinkError::Schema(format!(
            "the writer task failed: {e}"
        )))
    })?;
    if let Err(e) = written {
        // a write failure outranks the source's: it is why rows are missing
        failure = Some(e);
    }
    let stop = opts.shutdown.requested();
    let (status, error) = match (&failure, stop) {
        (Some(e), _) => ("failed", Some(p.secrets.redact(&e.to_string()))),
        (None, Some(_)) => ("interrupted", None),
        (None, None) => ("done", None),
    };
    let retries = metrics.retries.load(Ordering::Relaxed);
    sink.finish(status, error.as_deref(), retries).await?;
    let report = RunReport {
        pipeline: p.name.clone(),
        status: status.to_string(),
        run_id,
        pages: progress.pages,
        records: progress.records,
        fetched: metrics.records.load(Ordering::Relaxed),
        rejects: progress.rejects,
        requests: metrics.requests.load(Ordering::Relaxed),
        retries,
        resumed: plan.resumed,
        seconds: started.elapsed().as_secs_f64(),
        database: p.sink.location(),
        table: p.sink.table().to_string(),
        error,
        peak_rss_bytes: peak_rss_bytes(),
    };
    match (failure, stop) {
        (Some(e), _) => Err(e),
        (None, Some((name, code))) => Err(Error::Interrupted { name, code }),
        (None, None) => Ok(report),
    }
}

/// `--since`/`--until` fit the pipeline: a `dates` partition or an
/// incremental source, `end_param` for `--until`, and a window that parses.
fn check_flags(p: &Pipeline, window: &Window) -> Result<(), Error> {
    let dates = matches!(p.source.partition(), Some(PartitionConfig::Dates(_)));
    let incremental = p.source.incremental();
    if (window.since.is_some() || window.until.is_some()) && !dates && incremental.is_none() {
        return Err(usage(
            p,
            "--since/--until need a `dates` partition or [source.incremental]".into(),
        ));
    }
    if window.until.is_some() && !dates && incremental.is_some_and(|i| i.end_param.is_none()) {
        return Err(usage(
            p,
            "--until needs `source.incremental.end_param`, the query parameter of the window's end"
                .into(),
        ));
    }
    check_window(p, window)
}

/// The pages the producer sends, or the error that ended the walk.
type Pages = mpsc::Receiver<Result<Page, Error>>;

/// The walks of a run, as they become this process's to walk.
type WalkStream = futures::stream::BoxStream<'static, Result<ledger::Walk, crate::sink::SinkError>>;

/// The producer: walk the partitions, `width` of them at a time (the
/// source's semaphore caps the requests of all of them together); the pages
/// of one partition stay in order. It reserves a channel slot before it asks
/// for the next page: that is the backpressure.
fn walk(
    source: &Source,
    walks: WalkStream,
    width: usize,
    mut shutdown: Shutdown,
) -> (Pages, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Result<Page, Error>>(CHANNEL_PAGES);
    let source = source.clone();
    let producer = tokio::spawn(tracing::Instrument::in_current_span(async move {
        // the walks are pulled as room frees up: a shared run claims a
        // partition only when this process can start walking it
        let mut pages = walks
            .map(move |w| match w {
                Ok((part, resume)) => source
                    .walk(part, resume)
                    .map(|r| r.map_err(Error::from))
                    .boxed(),
                Err(e) => {
                    futures::stream::once(futures::future::ready(Err(Error::from(e)))).boxed()
                }
            })
            .flatten_unordered(width.max(1));
        loop {
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                item = pages.next() => match item {
                    None => return,
                    Some(Ok(page)) => permit.send(Ok(page)),
                    Some(Err(e)) => {
                        permit.send(Err(e));
                        return;
                    }
                },
            }
        }
    }));
    (rx, producer)
}

/// Each walking partition's total as its API last said it.
struct Totals {
    said: std::collections::HashMap<Arc<str>, u64>,
    /// Walks this run makes.
    need: u64,
}

impl Totals {
    /// Note a batch's totals and completed partitions; the run's total is
    /// known once every partition still to walk has said its own.
    fn note(&mut self, b: &Batch, progress: &mut Progress) {
        for (k, r) in &b.states {
            match r {
                Some(r) => {
                    if let Some(t) = r.total {
                        self.said.insert(k.clone(), t);
                    }
                }
                None => progress.partitions_done += 1,
            }
        }
        progress.total = (self.said.len() as u64 >= self.need).then(|| self.said.values().sum());
    }
}

/// What the writer task gives back: the sink, the counters, and how the
/// writes went.
type Written = (Sink, Progress, Result<(), Error>);

/// The writer: owns the sink and commits one batch while the consumer
/// gathers the next, so fetching and writing overlap.
fn spawn_writer(
    mut sink: Sink,
    metrics: Arc<SourceMetrics>,
    opts: RunOptions,
    start: Progress,
) -> (mpsc::Sender<Batch>, tokio::task::JoinHandle<Written>) {
    let (wtx, mut wrx) = mpsc::channel::<Batch>(1);
    let writer = tokio::spawn(tracing::Instrument::in_current_span(async move {
        let mut progress = start;
        // the display starts where a resumed run's count stands
        if let Some(f) = &opts.on_batch {
            f(&progress);
        }
        let mut totals = Totals {
            said: std::collections::HashMap::new(),
            need: progress
                .partitions
                .saturating_sub(progress.partitions_done)
                .max(1),
        };
        // where the writer's time goes: the first sign of which stage a run
        // is waiting on (`-v`)
        let (mut busy, mut idle, mut batches) = (Duration::ZERO, Duration::ZERO, 0u64);
        let mut mark = Instant::now();
        let mut longest = Duration::ZERO;
        while let Some(b) = wrx.recv().await {
            idle += mark.elapsed();
            mark = Instant::now();
            batches += 1;
            totals.note(&b, &mut progress);
            if let Err(e) = commit(&mut sink, b, &mut progress, &metrics, &opts).await {
                return (sink, progress, Err(e));
            }
            busy += mark.elapsed();
            longest = longest.max(mark.elapsed());
            mark = Instant::now();
        }
        tracing::debug!(
            batches,
            busy = format!("{:.3}s", busy.as_secs_f64()),
            waiting = format!("{:.3}s", idle.as_secs_f64()),
            longest = format!("{:.1}ms", longest.as_secs_f64() * 1000.0),
            "writer done"
        );
        (sink, progress, Ok(()))
    }));
    (wtx, writer)
}

/// The consumer: transforms and batches. It holds the writer's one slot
/// while it gathers, so at most two batches exist: one written, one
/// gathered. A batch goes when it is full, when the source ends or fails,
/// or when no page came for [`LINGER`]. Returns the source's failure.
async fn batch(
    chain: &Chain,
    cursor_field: Option<&FieldPath>,
    batch_size: usize,
    mut rx: Pages,
    wtx: mpsc::Sender<Batch>,
) -> Option<Error> {
    let mut failure: Option<Error> = None;
    let mut finished = false;
    while !finished {
        let Ok(slot) = wtx.reserve().await else {
            break; // the writer stopped: its error is collected by the caller
        };
        let mut batch = Batch::default();
        loop {
            let msg = if batch.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(LINGER, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            match msg {
                None => {
                    finished = true;
                    break;
                }
                Some(Err(e)) => {
                    // what was fetched before the failure is good: it goes too
                    failure = Some(e);
                    finished = true;
                    break;
                }
                Some(Ok(page)) => {
                    add_page(chain, cursor_field, &mut batch, page);
                    if batch.records.len() >= batch_size {
                        break;
                    }
                }
            }
        }
        if !batch.is_empty() {
            slot.send(batch);
        }
    }
    failure
}

/// `--since`/`--until` must parse and make a window, checked before the
/// run touches anything.
fn check_window(p: &Pipeline, window: &Window) -> Result<(), Error> {
    if let Some(cfg) = p.source.partition() {
        partition::count(cfg, window).map_err(|(k, m)| {
            // a bound from the command line is named as its flag
            let at = if k.starts_with("--") {
                k.to_string()
            } else {
                format!("source.partition.{k}")
            };
            usage(p, format!("{at}: {m}"))
        })?;
    }
    if !matches!(p.source.partition(), Some(PartitionConfig::Dates(_))) {
        // the incremental window: times or numbers, like the cursor
        let parse = |flag: &str, v: &Option<String>| -> Result<Option<f64>, Error> {
            let Some(v) = v else { return Ok(None) };
            if let Ok(n) = v.trim().parse::<f64>() {
                return Ok(Some(n));
            }
            partition::instant(v)
                .map(|t| Some(t.as_millisecond() as f64 / 1000.0))
                .map_err(|m| usage(p, format!("{flag}: {m}, or a number")))
        };
        if let (Some(a), Some(b)) = (
            parse("--since", &window.since)?,
            parse("--until", &window.until)?,
        ) && a >= b
        {
            return Err(usage(p, "--since must be before --until".into()));
        }
    }
    Ok(())
}

/// A command-line or pipeline mistake found at run time (exit 2).
pub(crate) fn usage(p: &Pipeline, message: String) -> Error {
    ConfigError::Usage(format!("{}: {message}", p.file.display())).into()
}

/// Transform a page's records into the batch and note its partition's state.
/// A record a transform fails on is rejected with the reason; the rest go on.
fn add_page(chain: &Chain, cursor_field: Option<&FieldPath>, batch: &mut Batch, page: Page) {
    let Page {
        partition,
        records,
        resume,
        url,
        failure,
        cursor,
    } = page;
    // a source that knows the page's cursor itself (a file's mtime)
    if cursor.is_some() {
        batch.max_cursor = crate::source::incremental::max(batch.max_cursor.take(), cursor);
    }
    if let Some(f) = failure {
        batch.rejects.push(Reject {
            partition: partition.clone(),
            url: Some(url.clone()),
            status: f.status,
            reason: f.message,
            record: None,
        });
    }
    // the incremental cursor is read before transforms, as the API sent it
    if let Some(field) = cursor_field {
        let page_max = records
            .iter()
            .filter_map(|r| {
                field
                    .get(r)
                    .and_then(crate::source::incremental::cursor_text)
            })
            .reduce(|a, b| crate::source::incremental::max(Some(a), Some(b)).unwrap_or_default());
        batch.max_cursor = crate::source::incremental::max(batch.max_cursor.take(), page_max);
    }
    batch.origins.push(crate::sink::Origin {
        first: batch.records.len(),
        partition: partition.clone(),
        url: url.clone(),
    });
    if chain.is_empty() {
        batch.records.extend(records);
    } else {
        for record in records {
            // the original is kept only to record it if a transform fails
            let original = record.clone();
            if let Err(e) = chain.apply_one(record, &mut batch.records) {
                batch.rejects.push(Reject {
                    partition: partition.clone(),
                    url: Some(url.clone()),
                    status: None,
                    reason: e.to_string(),
                    record: Some(original),
                });
            }
        }
    }
    batch.pages += 1;
    match batch.states.iter_mut().find(|(k, _)| *k == partition) {
        Some(slot) => slot.1 = resume,
        None => batch.states.push((partition, resume)),
    }
}

async fn commit(
    sink: &mut Sink,
    batch: Batch,
    progress: &mut Progress,
    metrics: &Arc<SourceMetrics>,
    opts: &RunOptions,
) -> Result<(), Error> {
    if !opts.sink_delay.is_zero() {
        tokio::time::sleep(opts.sink_delay).await;
    }
    let pages = batch.pages;
    let w = sink.write(batch).await?;
    progress.pages += pages;
    progress.records += w.rows;
    progress.rejects += w.rejects;
    progress.fetched_pages = metrics.pages.load(Ordering::Relaxed);
    progress.walked = progress.resumed_records + metrics.records.load(Ordering::Relaxed);
    if let Some(f) = &opts.on_batch {
        f(progress);
    }
    Ok(())
}

/// What `ingest preview` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The (redacted) URL of the first page.
    pub url: String,
    /// The request of the second page (method, URL, headers, body), as
    /// the first page says it would be sent; none when it is the last.
    pub next_request: Option<String>,
    /// Records on the first page, before transforms.
    pub fetched: usize,
    /// Records after transforms.
    pub records: Vec<serde_json::Value>,
    /// Columns the sink would create, with their types.
    pub columns: Vec<(String, String)>,
    /// Transform failures.
    pub rejects: Vec<String>,
}

/// Fetch the first page and show what the sink would get; writes nothing.
pub async fn preview(p: &Pipeline) -> Result<Preview, Error> {
    use futures::StreamExt;
    let chain = Chain::build(&p.transforms).map_err(|(i, k, m)| {
        ConfigError::Usage(format!("{}: transform[{i}].{k}: {m}", p.file.display()))
    })?;
    let mut cfg = p.source.clone();
    // one page is fetched: the walk is sequential and polled once, so the
    // second request is only shown, never sent
    if let SourceConfig::Http(h) = &mut cfg {
        h.pagination.max_pages = Some(2);
        h.concurrency = 1;
    }
    let source = Source::new(&cfg, p.secrets.clone())?;
    // a refresh token the server rotates is spent: the new one is kept even
    // here, or the next run could not authenticate
    if let Some(store) = LedgerTokens::of(&p.sink, &p.name) {
        source.keep_tokens(Arc::new(store));
    }
    // a files source previews its first file; a partitioned one its first
    // partition (a query's rows need the sink, so it gets none)
    let first = match (source.own_partitions(None)?, p.source.partition()) {
        (Some(files), _) => files,
        (None, Some(cfg)) => {
            partition::expand(cfg, &Window::default(), Vec::new()).unwrap_or_default()
        }
        (None, None) => Vec::new(),
    };
    let part = first.into_iter().next().unwrap_or_default();
    let mut pages = source.walk(part.clone(), None);
    let page = match pages.next().await {
        Some(r) => r?,
        None => return Err(ConfigError::Usage("the source gave no page".into()).into()),
    };
    drop(pages);
    let next_request = match &page.resume {
        Some(r) => Some(source.shown_request(&part, &r.position)?),
        None => None,
    };
    let fetched = page.records.len();
    let mut batch = Batch::default();
    let url = page.url.clone();
    add_page(&chain, None, &mut batch, page);
    let columns = crate::sink::columns::infer_columns(&batch.records, p.sink.columns())
        .into_iter()
        .map(|(n, t)| (n, t.name().to_string()))
        .collect();
    Ok(Preview {
        url,
        next_request,
        fetched,
        records: batch.records,
        columns,
        rejects: batch.rejects.into_iter().map(|r| r.reason).collect(),
    })
}
