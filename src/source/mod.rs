//! Sources: [`Source`] is an HTTP API ([`HttpSource`], this module) or files
//! ([`files`]). The HTTP source walks a paginated API as an async stream of
//! [`Page`]s.
//!
//! Each page carries its records and the [`Resume`] point *after* it, which
//! the sink commits in the same transaction as the rows. Pages come out in
//! walk order. Addressable walks (`page_number`, `offset`) fetch up to
//! `concurrency` pages at once after the first (all of them when the total is
//! known, speculatively up to the first empty page when it is not) and still
//! yield them in order; the others fetch one page at a time, overlapping with
//! the writes downstream through the bounded channel.

pub mod adaptive;
pub mod document;
pub mod files;
pub mod formats;
pub mod http;
pub mod incremental;
pub mod json;
pub mod oauth;
pub mod paginate;
pub mod pagination;
pub mod partition;
pub mod retry;
mod streamed;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::config::values::FieldPath;
use crate::config::{HttpSourceConfig, SourceConfig};
use crate::redact::Secrets;
use http::{HttpClient, Response};
use paginate::Paginator;
pub use paginate::Position;

/// The API did not give what the pipeline expects.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No response (connect, timeout, reset, body cut short).
    #[error("{method} {url}: {message} (after {attempts} attempt{})", plural(*attempts))]
    Transport {
        /// GET or POST.
        method: String,
        /// Redacted URL.
        url: String,
        /// What happened.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A status other than 2xx.
    #[error("{method} {url}: HTTP {status}, expected a 2xx response (after {attempts} attempt{}){}", plural(*attempts), body_suffix(excerpt))]
    Status {
        /// GET or POST.
        method: String,
        /// Redacted URL.
        url: String,
        /// The status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The start of the body.
        excerpt: String,
    },
    /// A 2xx response whose body is not what the pipeline expects.
    #[error("{url}: {message}")]
    Body {
        /// Redacted URL.
        url: String,
        /// What was expected and what came.
        message: String,
    },
    /// The walk came back to a page it already fetched.
    #[error(
        "{url}: the API sent the walk back to {what} it already fetched ({value}); stopping instead of looping"
    )]
    Loop {
        /// Redacted URL of the response that pointed back.
        url: String,
        /// "URL" or "cursor".
        what: &'static str,
        /// The repeated URL or cursor (redacted).
        value: String,
    },
    /// The client could not be built or a request URL could not be made.
    #[error("{0}")]
    Client(String),
    /// No OAuth2 access token could be had.
    #[error(transparent)]
    Auth(#[from] oauth::AuthError),
    /// A file of a files source could not be read as its format says.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong, and where in the file.
        message: String,
    },
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn body_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

/// Counters of a source, read by progress reporting and the run summary.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// HTTP requests sent (attempts).
    pub requests: AtomicU64,
    /// Of those, retries.
    pub retries: AtomicU64,
    /// Pages fetched and parsed.
    pub pages: AtomicU64,
    /// Records in those pages.
    pub records: AtomicU64,
}

/// Where a partition's walk continues, saved with the rows of each batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The next request.
    pub position: Position,
    /// Pages fetched by the walk so far.
    pub pages: u64,
    /// Records fetched by the walk so far.
    pub records: u64,
    /// Page size (configured, or learned from the first page).
    #[serde(default)]
    pub page_size: Option<u64>,
    /// The total the API last reported.
    #[serde(default)]
    pub total: Option<u64>,
    /// What the position means: [`Source::depends`] of the walk that saved
    /// it. A run whose settings give another value cannot use the position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends: Option<String>,
    /// Records of the response at `position` already stored: a streamed
    /// (NDJSON, CSV) body is committed in parts, and a resumed walk asks
    /// for it again and skips these.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One walk of a source: the whole API, or one partition value or window.
#[derive(Debug, Clone, Default)]
pub struct Partition {
    /// Names the partition in `_ingest_state` ("" when there are none).
    pub key: Arc<str>,
    /// `{placeholder}` values.
    pub vars: IndexMap<String, String>,
    /// Query parameters this walk adds (partition values, the incremental mark).
    pub params: Vec<(String, String)>,
}

/// The records of one response and where the walk continues after it.
#[derive(Debug)]
pub struct Page {
    /// The partition the page belongs to.
    pub partition: Arc<str>,
    /// The records, in API order.
    pub records: Vec<Value>,
    /// Where to continue; `None` when the walk is complete.
    pub resume: Option<Resume>,
    /// The (redacted) URL it came from.
    pub url: String,
    /// Set when the page failed for good and `on_error = "skip"`.
    pub failure: Option<PageFailure>,
    /// The incremental cursor the page moves the mark to, when the source
    /// knows it without looking into records (a file's mtime).
    pub cursor: Option<String>,
}

/// A page that failed for good.
#[derive(Debug, Clone)]
pub struct PageFailure {
    /// The HTTP status, if the server answered.
    pub status: Option<u16>,
    /// The error (redacted).
    pub message: String,
}

/// Failed pages in a row after which a walk gives up, under `on_error = "skip"`.
pub const MAX_SKIPPED_IN_A_ROW: u32 = 3;

/// A source, ready to walk: an HTTP API, or files. The run driver and the
/// ledger talk to this; each kind walks a partition as a stream of pages.
#[derive(Clone)]
pub enum Source {
    /// A paginated HTTP API.
    Http(HttpSource),
    /// Files on this machine.
    Files(files::FileSource),
}

impl Source {
    /// Build the source a pipeline's `[source]` describes.
    pub fn new(cfg: &SourceConfig, secrets: Secrets) -> Result<Self, HttpError> {
        Ok(match cfg {
            SourceConfig::Http(h) => Source::Http(HttpSource::new(h, secrets)?),
            SourceConfig::Files(f) => Source::Files(files::FileSource::new(f)),
        })
    }

    /// OAuth2: where rotated refresh tokens are kept.
    pub fn keep_tokens(&self, store: Arc<dyn oauth::TokenStore>) {
        if let Source::Http(h) = self {
            h.keep_tokens(store);
        }
    }

    /// Restart a resumed walk whose saved position the API refuses.
    pub fn restart_expired(&mut self, yes: bool) {
        if let Source::Http(h) = self {
            h.restart_expired(yes);
        }
    }

    /// The source's counters.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        match self {
            Source::Http(h) => h.metrics(),
            Source::Files(f) => f.metrics(),
        }
    }

    /// The pagination kind's name, or `files`.
    pub fn pagination_kind(&self) -> &'static str {
        match self {
            Source::Http(h) => h.pagination_kind(),
            Source::Files(_) => "files",
        }
    }

    /// What a saved position of this partition depends on.
    pub fn depends(&self, part: &Partition) -> String {
        match self {
            Source::Http(h) => h.depends(part),
            Source::Files(f) => f.depends(part),
        }
    }

    /// Walk one partition from `resume` (or from the start).
    pub fn walk(&self, part: Partition, resume: Option<Resume>) -> PageStream {
        match self {
            Source::Http(h) => h.walk(part, resume),
            Source::Files(f) => f.walk(part, resume),
        }
    }

    /// The request a walk sends at `pos`, as text (files: the file and offset).
    pub fn shown_request(&self, part: &Partition, pos: &Position) -> Result<String, HttpError> {
        match self {
            Source::Http(h) => h.shown_request(part, pos),
            Source::Files(_) => Ok(format!("{} from {pos:?}", part.key)),
        }
    }

    /// The walks a source defines itself (files: one per matching file,
    /// modified after `after` when given); `None` for an HTTP source.
    pub fn own_partitions(&self, after: Option<&str>) -> Result<Option<Vec<Partition>>, HttpError> {
        match self {
            Source::Http(_) => Ok(None),
            Source::Files(f) => f.list(after).map(Some),
        }
    }

    /// A file changed since its position was saved is read again from
    /// its start, whatever the write mode: its position means nothing now.
    pub fn rereads_changed(&self) -> bool {
        matches!(self, Source::Files(_))
    }
}

/// An HTTP source, ready to walk.
#[derive(Clone)]
pub struct HttpSource {
    cfg: Arc<HttpSourceConfig>,
    client: Arc<HttpClient>,
    paginator: Arc<Paginator>,
    metrics: Arc<SourceMetrics>,
    restart_expired: bool,
    skip: bool,
    /// A first page without a configured location was reported once.
    missing_said: Arc<std::sync::atomic::AtomicBool>,
}

type PageStream = std::pin::Pin<Box<dyn Stream<Item = Result<Page, HttpError>> + Send>>;

impl HttpSource {
    /// Build the client.
    pub fn new(cfg: &HttpSourceConfig, secrets: Secrets) -> Result<Self, HttpError> {
        let metrics = Arc::new(SourceMetrics::default());
        Ok(Self {
            client: Arc::new(HttpClient::new(cfg, secrets, metrics.clone())?),
            paginator: Arc::new(Paginator::new(cfg.pagination.clone())),
            cfg: Arc::new(cfg.clone()),
            metrics,
            restart_expired: false,
            skip: cfg.on_error == crate::config::source::OnError::Skip,
            missing_said: Arc::default(),
        })
    }

    /// OAuth2: start from the refresh token kept in `store`, and keep the
    /// ones the server rotates there.
    pub fn keep_tokens(&self, store: Arc<dyn oauth::TokenStore>) {
        if let Some(o) = self.client.oauth() {
            o.keep_in(store);
        }
    }

    /// When a resumed walk's first request gets a 4xx (an expired cursor or
    /// URL), start that partition over instead of failing. Only safe where
    /// records are upserted.
    pub fn restart_expired(&mut self, yes: bool) {
        self.restart_expired = yes;
    }

    /// The source's counters.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// The pagination kind's name.
    pub fn pagination_kind(&self) -> &'static str {
        self.paginator.kind()
    }

    /// The first request's URL: base URL, path and params, placeholders filled.
    pub fn base_url(&self, part: &Partition) -> Result<Url, HttpError> {
        let base = self.cfg.base_url.trim_end_matches('/');
        let path = fill(&self.cfg.path, &part.vars);
        // an empty base_url: the path is the whole URL (a list of pages)
        let joined = if base.is_empty() {
            path.clone()
        } else if path.is_empty() || path.starts_with('/') || path.starts_with('?') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        };
        let mut url = Url::parse(&joined).map_err(|e| {
            HttpError::Client(format!(
                "`{}` is not a URL: {e}",
                self.client.redact(&joined)
            ))
        })?;
        for (k, v) in &self.cfg.params {
            paginate::set_param(&mut url, k, &fill(&v.0, &part.vars));
        }
        for (k, v) in &part.params {
            paginate::set_param(&mut url, k, v);
        }
        Ok(url)
    }

    /// What a saved position of this partition's walk depends on, as
    /// `name=hash` pairs: the pagination kind and its keys (page size, limit,
    /// parameter names), the records path, and the request (method, path,
    /// params, body, the partition's values and the incremental window).
    /// Stop conditions (`max_pages`, `total`...) are left out: they do not
    /// change what a position means.
    pub fn depends(&self, part: &Partition) -> String {
        let request = format!(
            "{:?} {} {:?} {:?} {:?}",
            self.cfg.method,
            fill(&self.cfg.path, &part.vars),
            self.cfg
                .params
                .iter()
                .map(|(k, v)| (k, fill(&v.0, &part.vars)))
                .collect::<Vec<_>>(),
            self.body(part),
            part.params,
        );
        format!(
            "pagination={:016x},records={:016x},request={:016x}",
            fnv1a(&format!("{:?}", self.cfg.pagination.kind)),
            fnv1a(&self.cfg.records.to_string()),
            fnv1a(&request)
        )
    }

    fn body(&self, part: &Partition) -> Option<Value> {
        self.cfg.body.as_ref().map(|b| fill_json(b, &part.vars))
    }

    /// Walk one partition from `resume` (or from the start) as a stream of
    /// pages in walk order. The last page has `resume: None`. Every kind's
    /// first page, and all of a non-addressable walk, go one at a time;
    /// addressable walks then fetch ahead ([`HttpSource::fetch_ahead`]).
    pub fn walk(&self, part: Partition, resume: Option<Resume>) -> PageStream {
        if self.streams() {
            return self.walk_streamed(part, resume);
        }
        let this = self.clone();
        Box::pin(async_stream::try_stream! {
            let base = this.base_url(&part)?;
            let body = this.body(&part);
            let pag = this.paginator.clone();
            let mut resuming = resume.is_some();
            let depends = Some(this.depends(&part));
            let mut st = resume.unwrap_or_else(|| this.fresh(&depends));
            st.depends = depends.clone();
            if pag.max_pages().is_some_and(|m| st.pages >= m) {
                yield this.done(&part);
                return;
            }
            let mut seen: HashSet<String> = HashSet::new();
            let mut pos = st.position.clone();
            // pages in a row that failed for good (on_error = "skip")
            let mut failures = 0u32;
            loop {
                let req = pag.request(&base, body.as_ref(), &pos).map_err(HttpError::Client)?;
                let url = req.url.clone();
                if let Some((what, value)) = this.loop_key(&base, body.as_ref(), &pos) && !seen.insert(value.clone()) {
                    Err(HttpError::Loop { url: this.client.show(&url), what, value: this.client.redact(&value) })?;
                }
                let resp = match this.client.fetch(&req).await {
                    Err(HttpError::Status { status, .. }) if pag.stops_on_status(status) => {
                        tracing::debug!(partition = %part.key, status, "the walk ends on a stop_on_status response");
                        yield this.done(&part);
                        return;
                    }
                    Err(HttpError::Status { status, .. }) if resuming && refused(status) => {
                        this.restart(&part, &url, status)?;
                        resuming = false;
                        st = this.fresh(&depends);
                        pos = st.position.clone();
                        seen.clear();
                        continue;
                    }
                    other => other,
                };
                resuming = false;
                let (mut page, next) = this.outcome(&part, &pos, resp, &mut st, &mut failures)?;
                // a next position this walk already fetched: the page is
                // committed as the walk's last, so the state left behind
                // never sends a rerun around the loop again (doubling rows)
                let looped = match next.as_ref().filter(|_| page.resume.is_some()).and_then(|n| this.loop_key(&base, body.as_ref(), n)) {
                    Some((what, value)) if seen.contains(&value) => Some(HttpError::Loop {
                        url: page.url.clone(),
                        what,
                        value: this.client.redact(&value),
                    }),
                    _ => None,
                };
                if looped.is_some() {
                    page.resume = None;
                }
                let stop = page.resume.is_none();
                yield page;
                if let Some(e) = looped {
                    Err(e)?;
                }
                let Some(next) = next.filter(|_| !stop) else { return; };
                pos = next;
                if pag.addressable() && this.cfg.concurrency > 1 {
                    break;
                }
            }
            let fetches = this.fetch_ahead(base, body, pos, this.remaining(&st));
            futures::pin_mut!(fetches);
            while let Some((p, resp)) = fetches.next().await {
                if let Err(HttpError::Status { status, .. }) = &resp && this.paginator.stops_on_status(*status) {
                    break;
                }
                let (page, _) = this.outcome(&part, &p, resp, &mut st, &mut failures)?;
                let stop = page.resume.is_none();
                yield page;
                if stop {
                    return;
                }
            }
            // the positions ran out (total or max_pages) without a stop page
            yield this.done(&part);
        })
    }

    /// The resume point of a walk from its start.
    fn fresh(&self, depends: &Option<String>) -> Resume {
        Resume {
            position: self.paginator.initial(),
            pages: 0,
            records: 0,
            page_size: self.paginator.page_size(),
            total: None,
            depends: depends.clone(),
            skip: 0,
        }
    }

    /// What the loop guard remembers of a position: its cursor or URL.
    fn loop_key(
        &self,
        base: &Url,
        body: Option<&Value>,
        pos: &Position,
    ) -> Option<(&'static str, String)> {
        match pos {
            Position::Cursor(c) => Some(("cursor", c.clone())),
            Position::Start | Position::Url(_) => self
                .paginator
                .request(base, body, pos)
                .ok()
                .map(|r| ("URL", r.url.to_string())),
            _ => None,
        }
    }

    /// The API refused a resumed walk's first request (an expired cursor or
    /// URL): start the partition over where that is safe, else fail.
    fn restart(&self, part: &Partition, url: &Url, status: u16) -> Result<(), HttpError> {
        if !self.restart_expired {
            return Err(HttpError::Client(format!(
                "{}: the saved resume point was refused (HTTP {status}); it has likely expired. \
                 Restarting the walk would store its records twice with this write mode: \
                 run with --full-refresh, or `ingest state reset` and accept duplicates",
                self.client.show(url)
            )));
        }
        tracing::warn!(partition = %part.key, status, "the saved resume point was refused (expired?); walking this partition again from the start");
        Ok(())
    }

    /// A response as a page and the next position; under `on_error =
    /// "skip"` a failed page is recorded and the walk goes on where it can.
    fn outcome(
        &self,
        part: &Partition,
        pos: &Position,
        resp: Result<Response, HttpError>,
        st: &mut Resume,
        failures: &mut u32,
    ) -> Result<(Page, Option<Position>), HttpError> {
        match resp.and_then(|r| self.process(part, pos, r, st)) {
            Ok(done) => {
                *failures = 0;
                Ok(done)
            }
            // no token means no page at all: skipping would skip them all
            Err(e) if self.skip && !matches!(e, HttpError::Auth(_)) => {
                *failures += 1;
                Ok(self.skipped(part, pos, e, st, *failures))
            }
            Err(e) => Err(e),
        }
    }

    /// Pages left to fetch ahead, when the total or `max_pages` says.
    fn remaining(&self, st: &Resume) -> Option<u64> {
        let by_total = match (st.total, st.page_size) {
            (Some(t), Some(s)) if s > 0 => Some(t.saturating_sub(st.records).div_ceil(s)),
            _ => None,
        };
        match (by_total, self.paginator.max_pages()) {
            (Some(r), Some(m)) => Some(r.min(m.saturating_sub(st.pages))),
            (r, None) => r,
            (None, Some(m)) => Some(m.saturating_sub(st.pages)),
        }
    }

    /// The concurrent phase of an addressable walk: `remaining` positions
    /// from `pos` on (all of them while unknown), `concurrency` in flight,
    /// yielded in walk order.
    fn fetch_ahead(
        &self,
        base: Url,
        body: Option<Value>,
        pos: Position,
        remaining: Option<u64>,
    ) -> impl Stream<Item = (Position, Result<Response, HttpError>)> + use<> {
        let pag = self.paginator.clone();
        let positions = (0..remaining.unwrap_or(u64::MAX)).map(move |k| pag.step(&pos, k));
        let fetcher = self.clone();
        futures::stream::iter(positions)
            .map(move |p| {
                let this = fetcher.clone();
                let req = this.paginator.request(&base, body.as_ref(), &p);
                // each fetch is a task of its own, so the pages in flight
                // are read and parsed on every worker, not one; the guard
                // aborts it when the walk stops early
                let task = AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(
                    async move {
                        match req.map_err(HttpError::Client) {
                            Ok(req) => this.client.fetch(&req).await,
                            Err(e) => Err(e),
                        }
                    },
                )));
                async move {
                    let resp = match task.await {
                        Ok(r) => r,
                        Err(e) => Err(HttpError::Client(format!("a fetch task failed: {e}"))),
                    };
                    (p, resp)
                }
            })
            .buffered(self.cfg.concurrency)
    }

    fn done(&self, part: &Partition) -> Page {
        Page {
            partition: part.key.clone(),
            records: Vec::new(),
            resume: None,
            url: String::new(),
            failure: None,
            cursor: None,
        }
    }

    /// A page that failed for good under `on_error = "skip"`: recorded, and
    /// the walk goes on where it can. Addressable walks continue at the next
    /// page; cursor and URL walks cannot get past it and end; any walk ends
    /// after [`MAX_SKIPPED_IN_A_ROW`] failures in a row (past the end of a
    /// speculative walk every page may fail).
    fn skipped(
        &self,
        part: &Partition,
        pos: &Position,
        e: HttpError,
        st: &mut Resume,
        in_a_row: u32,
    ) -> (Page, Option<Position>) {
        st.pages += 1;
        let next = if self.paginator.addressable()
            && in_a_row < MAX_SKIPPED_IN_A_ROW
            && self.paginator.max_pages().is_none_or(|m| st.pages < m)
        {
            Some(self.paginator.step(pos, 1))
        } else {
            tracing::warn!(partition = %part.key, "the walk cannot go past this failed page; the rest of this partition is skipped");
            None
        };
        let (url, status) = match &e {
            HttpError::Status { url, status, .. } => (url.clone(), Some(*status)),
            HttpError::Transport { url, .. }
            | HttpError::Body { url, .. }
            | HttpError::Loop { url, .. } => (url.clone(), None),
            HttpError::Client(_) => (String::new(), None),
            HttpError::Auth(a) => (a.url.clone(), None),
            HttpError::File { path, .. } => (path.clone(), None),
        };
        tracing::warn!(partition = %part.key, url = %url, "skipping a page that failed: {e}");
        let page = Page {
            partition: part.key.clone(),
            records: Vec::new(),
            resume: next.clone().map(|p| Resume {
                position: p,
                ..st.clone()
            }),
            url,
            failure: Some(PageFailure {
                status,
                message: e.to_string(),
            }),
            cursor: None,
        };
        (page, next)
    }

    /// Report, once per run, the configured locations (total, has_more,
    /// cursor, next) that the first page does not have: a misspelt
    /// `meta.totl` would otherwise turn into speculative fetching, and a
    /// misspelt cursor into a walk of one page, without a word. Likewise
    /// an html `each` that matches nothing on the first page.
    fn missing_locations(&self, resp: &Response, records: &[Value], url: &str) {
        let mut missing: Vec<String> = self
            .paginator
            .locations()
            .into_iter()
            .filter(|(_, loc)| paginate::locate(loc, resp, records).is_none())
            .map(|(key, loc)| format!("`{loc}` (pagination.{key})"))
            .collect();
        // a web page whose layout changed gives no record, not an error
        if let Some(each) = self.cfg.html.as_ref().and_then(|h| h.each.as_ref())
            && records.is_empty()
        {
            missing.push(format!("element that matches `{each}` (html.each)"));
        }
        if missing.is_empty()
            || self
                .missing_said
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        tracing::warn!(
            url = %url,
            "the first page has no {}: check the spelling (a walk without a location goes on without a total, or ends after this page; a selector that matches nothing gives no record)",
            missing.join(", ")
        );
    }

    /// The request a walk of `part` sends at `pos`, shown as text (URL,
    /// headers the walk sets, JSON body), secrets masked: what `preview`
    /// prints for the second page.
    pub fn shown_request(&self, part: &Partition, pos: &Position) -> Result<String, HttpError> {
        let base = self.base_url(part)?;
        let body = self.body(part);
        let req = self
            .paginator
            .request(&base, body.as_ref(), pos)
            .map_err(HttpError::Client)?;
        let method = match self.cfg.method {
            crate::config::source::Method::Get => "GET",
            crate::config::source::Method::Post => "POST",
        };
        let mut out = format!("{method} {}", self.client.show(&req.url));
        for (k, v) in &req.headers {
            out.push_str(&format!("\n  {k}: {}", self.client.redact(v)));
        }
        if let Some(b) = &req.body {
            out.push_str(&format!("\n  {}", self.client.redact(&b.to_string())));
        }
        Ok(out)
    }

    /// A GraphQL request (its body has a `query`) whose response carries a
    /// non-empty top-level `errors` array fails with the first error's
    /// message: a 200 that is not a page. It is not retried.
    fn graphql_errors(&self, body: &Value) -> Option<String> {
        let graphql = self
            .cfg
            .body
            .as_ref()
            .is_some_and(|b| b.get("query").is_some_and(Value::is_string));
        let errors = body
            .get("errors")?
            .as_array()
            .filter(|e| graphql && !e.is_empty())?;
        let first = errors.first()?;
        let message = first
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| first.to_string(), str::to_string);
        Some(format!(
            "the GraphQL response has {} error{}: {message}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        ))
    }

    /// Records out of a response, counters, the next position and the stop
    /// decision.
    fn process(
        &self,
        part: &Partition,
        pos: &Position,
        mut resp: Response,
        st: &mut Resume,
    ) -> Result<(Page, Option<Position>), HttpError> {
        let shown = self.client.show(&resp.url);
        if let Some(message) = self.graphql_errors(&resp.body) {
            return Err(HttpError::Body {
                url: shown,
                message: self.client.redact(&message),
            });
        }
        let records =
            take_records(&mut resp.body, &self.cfg.records).map_err(|message| HttpError::Body {
                url: shown.clone(),
                message,
            })?;
        let n = records.len() as u64;
        st.pages += 1;
        st.records += n;
        if st.pages == 1 {
            self.missing_locations(&resp, &records, &shown);
        }
        if st.page_size.is_none() && n > 0 {
            st.page_size = Some(n);
        }
        if let Some(t) = self.paginator.total(&resp, &records) {
            st.total = Some(t);
        }
        let next = self
            .paginator
            .next(pos, &resp, &records)
            .map_err(|m| HttpError::Body {
                url: shown.clone(),
                message: self.client.redact(&m),
            })?;
        let stop = self.paginator.stop(
            &resp,
            &records,
            st.pages,
            st.records,
            st.page_size,
            st.total,
        );
        self.metrics.pages.fetch_add(1, Ordering::Relaxed);
        self.metrics.records.fetch_add(n, Ordering::Relaxed);
        let resume = match (&next, stop) {
            (Some(p), None) => Some(Resume {
                position: p.clone(),
                ..st.clone()
            }),
            _ => {
                tracing::debug!(url = %shown, reason = stop.unwrap_or("no next page"), "walk complete");
                None
            }
        };
        Ok((
            Page {
                partition: part.key.clone(),
                records,
                resume,
                url: shown,
                failure: None,
                cursor: None,
            },
            next,
        ))
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across builds and Rust
/// versions (std's `DefaultHasher` may not), for [`Source::depends`].
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The names of the `name=hash` pairs of two [`Source::depends`] values
/// that differ.
pub fn changed(saved: &str, now: &str) -> Vec<String> {
    let pairs = |s: &str| -> Vec<(String, String)> {
        s.split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (a, b) = (pairs(saved), pairs(now));
    let mut out: Vec<String> = b
        .iter()
        .filter(|(k, v)| {
            a.iter()
                .find(|(ka, _)| ka == k)
                .is_none_or(|(_, va)| va != v)
        })
        .map(|(k, _)| k.clone())
        .collect();
    if out.is_empty() && saved != now {
        out.push("settings".into());
    }
    out
}

/// A 4xx that says a resume point is no longer accepted (not 408 or 429,
/// which are worth a retry).
fn refused(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// A spawned task that is aborted when its handle is dropped (a walk that
/// stops early must not leave fetches running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Take the record array out of a body (the rest of the body stays for the
/// pagination locations). Null counts as no records.
fn take_records(body: &mut Value, path: &FieldPath) -> Result<Vec<Value>, String> {
    let found = if path.is_root() {
        std::mem::take(body)
    } else {
        match path.take(body) {
            Some(v) => v,
            None => {
                let keys = match &*body {
                    Value::Object(m) => m.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
                    other => format!("the body is {}", type_name(other)),
                };
                return Err(format!(
                    "the records path `{path}` is not in the response (top-level keys: {keys})"
                ));
            }
        }
    };
    match found {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        other => Err(format!(
            "expected an array of records at `{path}`, found {}; set `records` to the path of the array",
            type_name(&other)
        )),
    }
}

/// The JSON type of a value, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Fill `{name}` placeholders from `vars`; unknown ones stay as written.
pub fn fill(template: &str, vars: &IndexMap<String, String>) -> String {
    if vars.is_empty() || !template.contains('{') {
        return template.to_string();
    }
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn fill_json(v: &Value, vars: &IndexMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(fill(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_json(x, vars)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), fill_json(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}
