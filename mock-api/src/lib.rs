//! A mock of real paginated HTTP APIs, for `ingest`'s tests, demo and
//! benchmarks. It serves the deterministic [`data::Dataset`] in every
//! pagination style real APIs use, each on its own path:
//!
//! | path | style |
//! | --- | --- |
//! | `/posts?_page&_limit` (`_start`, `_end`) | JSONPlaceholder: bare array, `X-Total-Count`, `Link` |
//! | `/posts/{id}/comments`, `/comments?postId=` | JSONPlaceholder children: bare array |
//! | `/offset/posts?offset&limit` | envelope `{data, meta: {total, offset, limit}}` |
//! | `/stripe/posts?limit&starting_after` | Stripe: `{object, data, has_more}` |
//! | `/next/posts?limit&token` | next URL in the body (opaque token), `?absolute=1` for absolute URLs |
//! | `/github/posts?page&per_page` | GitHub: bare array, RFC 8288 `Link` with absolute URLs |
//! | `/slack/posts?limit&cursor` | Slack: `{ok, members, response_metadata: {next_cursor}}` |
//! | `/hcursor/posts?limit&cursor` | bare array, next cursor in the `X-Next-Cursor` header |
//! | `/loop/posts?limit&token` | like `/next/posts`, but page 3 points back at page 2 |
//! | `/hostile/records?page&total` | seeded hostile records ([`hostile`]), 50 a page |
//! | `/hostile/html` | an HTML error page with status 200 |
//! | `/hostile/envelope` | `{"items": [...]}`: a pipeline expecting `data` misses it |
//! | `/hostile/bom` | `{"data": [...]}` after a UTF-8 byte order mark |
//! | `/export/posts.ndjson`, `/export/posts.csv` | bulk exports, whole or `?page&per_page` |
//! | `/html/page/{n}`, `/html/malformed`, `/html/latin1`, `/html/sjis`, `/html/missing` | web pages ([`html`]) |
//! | `/oauth/token`, `/oauth/posts` | an OAuth2 token endpoint, and `/posts` behind it ([`oauth`]) |
//!
//! Every list endpoint filters on `updated_since` (RFC 3339, inclusive),
//! `updated_before` (exclusive) and on
//! any query parameter named like a top-level field (`userId=3`), as real APIs
//! do. The server logs every request it receives so tests can assert what was
//! (and was not) asked; [`MockApi::set_delay`] slows every response.

// Handlers return an HTTP response as their error; its size does not matter here.
#![allow(clippy::result_large_err)]

pub mod canned;
pub mod data;
mod ends;
mod export;
pub mod faults;
mod graphql;
pub mod hostile;
mod html;
pub mod oauth;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use canned::Canned;
pub use data::Dataset;
pub use faults::{Faults, RateStyle};

/// How a mock API is started.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Seed of the generated data.
    pub seed: u64,
    /// Number of posts.
    pub posts: u64,
    /// Comments per post.
    pub comments_per_post: u64,
    /// Delay added before every response.
    pub delay: Duration,
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Seconds between consecutive posts' `updatedAt`.
    pub spacing: u64,
    /// Faults to inject.
    pub faults: Faults,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            posts: 100,
            comments_per_post: 5,
            delay: Duration::ZERO,
            port: 0,
            spacing: 60,
            faults: Faults::default(),
        }
    }
}

/// One request the mock API received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The path, without the query.
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    /// The request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// When it arrived, since the server started.
    pub at: Duration,
}

impl Logged {
    /// The value of one query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        url_params(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Requests kept in the log at most; the counter goes on past it.
const LOG_CAP: usize = 200_000;

pub(crate) struct Shared {
    data: RwLock<Dataset>,
    base: String,
    delay_ms: AtomicU64,
    served: AtomicU64,
    log: Mutex<Vec<Logged>>,
    seed: u64,
    faults: RwLock<Faults>,
    start: Instant,
    /// Attempts per URL, for the faults.
    attempts: Mutex<HashMap<String, u32>>,
    /// Per URL, when the `Retry-After` we sent runs out.
    not_before: Mutex<HashMap<String, Instant>>,
    /// Requests that came back before their `Retry-After`.
    early: AtomicU64,
    /// Arrival of every request, since `start`.
    arrivals: Mutex<Vec<Duration>>,
    /// Arrivals in the last second, for `max_rps`.
    window: Mutex<VecDeque<Instant>>,
    /// 429s sent because of `max_rps`.
    rate_limited: AtomicU64,
    /// Each post's JSON, made once (benchmarks serve a million of them);
    /// replaced whole when the data set changes.
    cache: RwLock<Arc<Vec<OnceLock<Box<str>>>>>,
    /// Canned responses (`canned.rs`).
    canned: Mutex<canned::Script>,
    /// Requests being handled now, and the most at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// The authorization server (`oauth.rs`).
    oauth: Mutex<oauth::OAuthState>,
}

fn empty_cache(posts: u64) -> Arc<Vec<OnceLock<Box<str>>>> {
    Arc::new((0..posts).map(|_| OnceLock::new()).collect())
}

/// A running mock API on 127.0.0.1. Dropping it stops the server.
pub struct MockApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockApi {
    /// Bind 127.0.0.1 and serve in a background task of the current runtime.
    pub async fn start(cfg: MockConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            data: RwLock::new(
                Dataset::new(cfg.seed, cfg.posts, cfg.comments_per_post).with_spacing(cfg.spacing),
            ),
            base: format!("http://{addr}"),
            delay_ms: AtomicU64::new(cfg.delay.as_millis() as u64),
            served: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            seed: cfg.seed,
            faults: RwLock::new(cfg.faults.clone()),
            start: Instant::now(),
            attempts: Mutex::new(HashMap::new()),
            not_before: Mutex::new(HashMap::new()),
            early: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
            window: Mutex::new(VecDeque::new()),
            rate_limited: AtomicU64::new(0),
            cache: RwLock::new(empty_cache(cfg.posts)),
            canned: Mutex::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            oauth: Mutex::new(oauth::OAuthState::default()),
        });
        let app = router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of the data set as it is now.
    pub fn dataset(&self) -> Dataset {
        self.shared
            .data
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Change the data set (revise or add posts) while serving.
    pub fn update(&self, f: impl FnOnce(&mut Dataset)) {
        let mut guard = self.shared.data.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
        *self.shared.cache.write().unwrap_or_else(|e| e.into_inner()) = empty_cache(guard.posts);
    }

    /// Requests received so far (the first [`LOG_CAP`]).
    pub fn requests(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Forget the request log.
    pub fn clear_requests(&self) {
        if let Ok(mut l) = self.shared.log.lock() {
            l.clear();
        }
    }

    /// Number of responses fully produced so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Change the faults from now on.
    pub fn set_faults(&self, f: Faults) {
        *self
            .shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// Requests that arrived before the `Retry-After` the server had asked for.
    pub fn early_retries(&self) -> u64 {
        self.shared.early.load(Ordering::SeqCst)
    }

    /// 429s sent because requests came faster than `max_rps`.
    pub fn rate_limited(&self) -> u64 {
        self.shared.rate_limited.load(Ordering::SeqCst)
    }

    /// The most requests that arrived within any window of this length.
    pub fn max_in_window(&self, window: Duration) -> usize {
        let times = self
            .shared
            .arrivals
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    /// Serve these responses, in order, at `path` (`/edge/x`, or with a
    /// query: `/edge/x?page=2`); the last one repeats.
    pub fn can(&self, path: &str, responses: Vec<Canned>) {
        self.shared
            .canned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string(), responses.into());
    }

    /// The most requests that were being handled at once so far.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Forget the peak of requests in flight.
    pub fn reset_peak_in_flight(&self) {
        self.shared.peak_in_flight.store(0, Ordering::SeqCst);
    }

    /// Delay every response by this much from now on.
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) type S = Arc<Shared>;
type Params = Query<HashMap<String, String>>;

fn router(shared: S) -> Router {
    Router::new()
        .route("/posts", get(jsonplaceholder))
        .route("/posts/{id}/comments", get(post_comments))
        .route("/comments", get(comments_by_query))
        .route("/offset/posts", get(offset_envelope))
        .route("/stripe/posts", get(stripe))
        .route("/next/posts", get(next_url))
        .route("/loop/posts", get(looping))
        .route("/github/posts", get(github))
        .route("/slack/posts", get(slack))
        .route("/hcursor/posts", get(header_cursor))
        .route("/graphql", axum::routing::post(graphql::graphql))
        .route("/oauth/token", axum::routing::post(oauth::token))
        .route("/oauth/posts", get(oauth::posts))
        .route("/export/posts.ndjson", get(export::ndjson))
        .route("/export/posts.csv", get(export::csv))
        .route("/html/page/{n}", get(html::numbered))
        .route("/html/malformed", get(html::malformed))
        .route("/html/latin1", get(html::latin1))
        .route("/html/sjis", get(html::sjis))
        .route("/html/missing", get(html::missing))
        .route("/drf/posts", get(ends::drf))
        .route("/_mock/stats", get(stats))
        .route("/postgrest/posts", get(ends::postgrest))
        .route("/hostile/records", get(hostile_records))
        .route("/hostile/html", get(hostile_html))
        .route("/hostile/envelope", get(hostile_envelope))
        .route("/hostile/bom", get(hostile_bom))
        .fallback(canned::serve)
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// Counts the requests in flight around [`handle`]; a request whose client
/// went away stops counting when the server drops it.
async fn observe(State(s): State<S>, req: Request, next: Next) -> Response {
    struct InFlight(S);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(s.clone());
    handle(s, req, next).await
}

/// Logs each request, applies the faults and the delay, counts served
/// responses.
async fn handle(s: S, req: Request, next: Next) -> Response {
    let now = Instant::now();
    let key = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.uri().path()),
        None => req.uri().path().to_string(),
    };
    let logged = Logged {
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        at: now - s.start,
    };
    if let Ok(mut l) = s.log.lock()
        && l.len() < LOG_CAP
    {
        l.push(logged);
    }
    if let Ok(mut a) = s.arrivals.lock()
        && a.len() < LOG_CAP
    {
        a.push(now - s.start);
    }
    // a client that comes back before the Retry-After we gave (20 ms of slack
    // for clocks and scheduling)
    if let Ok(nb) = s.not_before.lock()
        && nb
            .get(&key)
            .is_some_and(|t| now + Duration::from_millis(20) < *t)
    {
        s.early.fetch_add(1, Ordering::SeqCst);
    }
    let faults = s.faults.read().map(|f| f.clone()).unwrap_or_default();
    let mut remaining = None;
    if let Some(max) = faults.max_rps {
        let mut w = s.window.lock().unwrap_or_else(|e| e.into_inner());
        while w
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            w.pop_front();
        }
        if w.len() >= max as usize {
            let reset = 1;
            drop(w);
            s.rate_limited.fetch_add(1, Ordering::SeqCst);
            note_retry_after(&s, &key, now + Duration::from_secs(reset));
            let mut r = too_many(reset, false);
            rate_headers(&mut r, 0, reset, faults.rate_style);
            return r;
        }
        w.push_back(now);
        remaining = Some(max as usize - w.len());
    }
    let attempt = {
        let mut a = s.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let n = a.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    if faults.broken.iter().any(|b| key.contains(b.as_str())) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json400::msg("this page is broken for good"),
        )
            .into_response();
    }
    let action = faults.decide(s.seed, &key, attempt);
    match action {
        faults::Action::TooMany { secs, as_date } => {
            let until = if as_date {
                // an HTTP date has whole seconds: the wait ends at that second
                let at = SystemTime::now() + Duration::from_secs(secs);
                let floored = UNIX_EPOCH
                    + Duration::from_secs(
                        at.duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0),
                    );
                now + floored
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
            } else {
                now + Duration::from_secs(secs)
            };
            note_retry_after(&s, &key, until);
            return too_many(secs, as_date);
        }
        faults::Action::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Json400::msg("the server is having a bad day")).into_response();
        }
        _ => {}
    }
    let mut delay = Duration::from_millis(s.delay_ms.load(Ordering::SeqCst));
    if faults.is_slow(s.seed, &key) {
        delay += faults.slow_by;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = next.run(req).await;
    if matches!(action, faults::Action::Truncate | faults::Action::Reset) {
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let half = bytes.slice(..bytes.len() / 2);
        resp = if action == faults::Action::Truncate {
            Response::from_parts(parts, axum::body::Body::from(half))
        } else {
            let mut parts = parts;
            parts.headers.insert(
                axum::http::header::CONTENT_LENGTH,
                header(&bytes.len().to_string()),
            );
            let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset by the mock",
                )),
            ];
            Response::from_parts(
                parts,
                axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
            )
        };
    }
    if let Some(r) = remaining {
        rate_headers(&mut resp, r, 1, faults.rate_style);
    }
    s.served.fetch_add(1, Ordering::SeqCst);
    resp
}

fn note_retry_after(s: &S, key: &str, until: Instant) {
    if let Ok(mut nb) = s.not_before.lock() {
        nb.insert(key.to_string(), until);
    }
}

fn too_many(secs: u64, as_date: bool) -> Response {
    let value = if as_date {
        httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(secs))
    } else {
        secs.to_string()
    };
    let mut r = (StatusCode::TOO_MANY_REQUESTS, Json400::msg("slow down")).into_response();
    r.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, header(&value));
    r
}

/// Both the `X-RateLimit-*` headers (GitHub and most APIs) and the IETF
/// draft's unprefixed `RateLimit-*`, unless the faults ask for one style.
fn rate_headers(r: &mut Response, remaining: usize, reset_secs: u64, style: faults::RateStyle) {
    let (remaining, reset) = (remaining.to_string(), reset_secs.to_string());
    let h = r.headers_mut();
    if style != faults::RateStyle::Ietf {
        h.insert("x-ratelimit-remaining", header(&remaining));
        h.insert("x-ratelimit-reset", header(&reset));
    }
    if style != faults::RateStyle::Prefixed {
        h.insert("ratelimit-remaining", header(&remaining));
        h.insert("ratelimit-reset", header(&reset));
    }
}

pub(crate) fn num(q: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, Response> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                Json400::msg(&format!("{key} must be a whole number")),
            )
                .into_response()
        }),
    }
}

struct Json400;
impl Json400 {
    fn msg(m: &str) -> axum::Json<Value> {
        axum::Json(json!({ "error": m }))
    }
}

/// The ids of the posts a query selects, in order.
enum Selection {
    /// All ids in this inclusive range (no filter: no scan).
    Range(u64, u64),
    Ids(Vec<u64>),
}

impl Selection {
    fn len(&self) -> u64 {
        match self {
            Selection::Range(lo, hi) => (hi + 1).saturating_sub(*lo),
            Selection::Ids(v) => v.len() as u64,
        }
    }
    fn slice(&self, offset: u64, limit: u64) -> Vec<u64> {
        match self {
            Selection::Range(lo, hi) => {
                let start = lo.saturating_add(offset);
                let end = start.saturating_add(limit).min(hi + 1);
                (start..end).collect()
            }
            Selection::Ids(v) => v
                .iter()
                .skip(offset as usize)
                .take(limit as usize)
                .copied()
                .collect(),
        }
    }
    /// Position just after the post with this id.
    fn after(&self, id: u64) -> u64 {
        match self {
            Selection::Range(lo, hi) => id.clamp(lo - 1, *hi) + 1 - lo,
            Selection::Ids(v) => v.partition_point(|x| *x <= id) as u64,
        }
    }
}

/// Parameters that steer paging and are never field filters.
const CONTROL: &[&str] = &[
    "_page",
    "since_id",
    "_limit",
    "_start",
    "_end",
    "offset",
    "limit",
    "starting_after",
    "token",
    "page",
    "per_page",
    "cursor",
    "absolute",
    "updated_since",
    "updated_before",
    "api_key",
];

fn select(d: &Dataset, q: &HashMap<String, String>) -> Selection {
    let since = q.get("updated_since");
    let before = q.get("updated_before");
    // a numeric cursor: ids from this one on
    let since_id: Option<u64> = q.get("since_id").and_then(|v| v.parse().ok());
    let filters: Vec<(&String, &String)> = q
        .iter()
        .filter(|(k, _)| !CONTROL.contains(&k.as_str()))
        .collect();
    if since.is_none() && before.is_none() && since_id.is_none() && filters.is_empty() {
        return Selection::Range(1, d.posts);
    }
    let ids = (1..=d.posts)
        .filter(|&id| {
            let post = d.post(id);
            let updated = post["updatedAt"].as_str().unwrap_or("");
            since.is_none_or(|s| updated >= s.as_str())
                && since_id.is_none_or(|n| id >= n)
                && before.is_none_or(|b| updated < b.as_str())
                && filters.iter().all(|(k, v)| match &post[k.as_str()] {
                    Value::String(s) => s == *v,
                    Value::Null => false,
                    other => serde_json::from_str::<Value>(v).is_ok_and(|parsed| parsed == *other),
                })
        })
        .collect();
    Selection::Ids(ids)
}

/// A page of ids; with `repeat_boundary`, a page after the first starts
/// with the last record of the page before.
fn slice(s: &S, sel: &Selection, offset: u64, limit: u64) -> Vec<u64> {
    let repeat = s.faults.read().map(|f| f.repeat_boundary).unwrap_or(false);
    if repeat && offset > 0 {
        sel.slice(offset - 1, limit + 1)
    } else {
        sel.slice(offset, limit)
    }
}

/// A JSON text made of pieces that are valid JSON already (cached posts,
/// serialized fields), sent as it is. `RawValue::from_string` would parse
/// every page again to check it: a third of the mock's CPU under `make bench`.
struct RawJson(String);

impl IntoResponse for RawJson {
    fn into_response(self) -> Response {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// The posts as one JSON array, from the cache.
fn posts_raw(s: &S, d: &Dataset, ids: &[u64]) -> RawJson {
    let cache = s
        .cache
        .read()
        .map(|c| c.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let mut out = String::with_capacity(ids.len() * 320 + 2);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match cache.get((*id as usize).wrapping_sub(1)) {
            Some(cell) => {
                out.push_str(cell.get_or_init(|| d.post(*id).to_string().into_boxed_str()))
            }
            None => out.push_str(&d.post(*id).to_string()),
        }
    }
    out.push(']');
    RawJson(out)
}

/// A JSON object of `fields` (an object) plus `key`: the posts, as they are.
fn envelope(fields: Value, key: &str, posts: RawJson) -> Response {
    let mut out = match fields {
        Value::Object(m) if !m.is_empty() => {
            let mut t = Value::Object(m).to_string();
            t.pop(); // the closing brace
            t.push(',');
            t
        }
        _ => "{".to_string(),
    };
    out.push_str(&Value::String(key.to_string()).to_string());
    out.push(':');
    out.push_str(&posts.0);
    out.push('}');
    RawJson(out).into_response()
}

pub(crate) fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `GET /_mock/stats`: the counters a bench in another process reads.
async fn stats(State(s): State<S>) -> Response {
    axum::Json(json!({
        "early_retries": s.early.load(Ordering::SeqCst),
        "rate_limited": s.rate_limited.load(Ordering::SeqCst),
        "peak_in_flight": s.peak_in_flight.load(Ordering::SeqCst),
    }))
    .into_response()
}

pub(crate) fn read(s: &S) -> std::sync::RwLockReadGuard<'_, Dataset> {
    s.data.read().unwrap_or_else(|e| e.into_inner())
}

/// Keeps every query parameter but the ones replaced.
fn with_params(path: &str, q: &HashMap<String, String>, set: &[(&str, String)]) -> String {
    let mut pairs: Vec<(String, String)> = q
        .iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.extend(set.iter().map(|(k, v)| (k.to_string(), v.clone())));
    pairs.sort();
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{path}?{qs}")
}

fn url_params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// JSONPlaceholder: `_page`/`_limit` or `_start`/`_end`/`_limit`; without
/// any, the whole list. `X-Total-Count` always; `Link` when paged.
pub(crate) async fn jsonplaceholder(State(s): State<S>, Query(q): Params) -> Response {
    let d = read(&s);
    let sel = select(&d, &q);
    let total = sel.len();
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", header(&total.to_string()));
    let ids = if q.contains_key("_page") {
        let (page, limit) = match (num(&q, "_page", 1), num(&q, "_limit", 10)) {
            (Ok(p), Ok(l)) => (p.max(1), l),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        let last = total.div_ceil(limit.max(1)).max(1);
        let link = |p: u64, rel: &str| {
            format!(
                "<{}{}>; rel=\"{rel}\"",
                s.base,
                with_params("/posts", &q, &[("_page", p.to_string())])
            )
        };
        let mut links = vec![link(1, "first")];
        if page > 1 {
            links.push(link(page - 1, "prev"));
        }
        if page < last {
            links.push(link(page + 1, "next"));
        }
        links.push(link(last, "last"));
        headers.insert("link", header(&links.join(", ")));
        slice(&s, &sel, (page - 1) * limit, limit)
    } else {
        let start = match num(&q, "_start", 0) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let end = match (num(&q, "_end", u64::MAX), num(&q, "_limit", u64::MAX)) {
            (Ok(e), Ok(l)) => e.min(start.saturating_add(l)),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        sel.slice(start, end.saturating_sub(start))
    };
    (headers, posts_raw(&s, &d, &ids)).into_response()
}

async fn post_comments(State(s): State<S>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return (StatusCode::NOT_FOUND, Json400::msg("no such post")).into_response();
    };
    let d = read(&s);
    if id == 0 || id > d.posts {
        return (StatusCode::NOT_FOUND, Json400::msg("no such post")).into_response();
    }
    axum::Json(Value::Array(d.comments_of(id))).into_response()
}

async fn comments_by_query(State(s): State<S>, Query(q): Params) -> Response {
    let d = read(&s);
    let post = match num(&q, "postId", 0) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let all: Vec<Value> = if post > 0 {
        d.comments_of(post)
    } else {
        (1..=d.posts).flat_map(|p| d.comments_of(p)).collect()
    };
    axum::Json(Value::Array(all)).into_response()
}

async fn offset_envelope(State(s): State<S>, Query(q): Params) -> Response {
    let d = read(&s);
    let (offset, limit) = match (num(&q, "offset", 0), num(&q, "limit", 20)) {
        (Ok(o), Ok(l)) => (o, l.min(1000)),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let sel = select(&d, &q);
    let ids = slice(&s, &sel, offset, limit);
    envelope(
        json!({ "meta": { "total": sel.len(), "offset": offset, "limit": limit } }),
        "data",
        posts_raw(&s, &d, &ids),
    )
}

async fn stripe(State(s): State<S>, Query(q): Params) -> Response {
    let d = read(&s);
    let limit = match num(&q, "limit", 10) {
        Ok(l) => l.clamp(1, 100),
        Err(e) => return e,
    };
    let sel = select(&d, &q);
    let start = match q.get("starting_after") {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(id) => sel.after(id),
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json400::msg("starting_after must be an object id"),
                )
                    .into_response();
            }
        },
    };
    let ids = sel.slice(start, limit);
    let has_more = start + (ids.len() as u64) < sel.len();
    envelope(
        json!({ "object": "list", "url": "/v1/posts", "has_more": has_more }),
        "data",
        posts_raw(&s, &d, &ids),
    )
}

/// An opaque token for an offset, as real APIs hand out.
fn token(offset: u64) -> String {
    format!("tk_{:x}", offset ^ 0x5bd1_e995)
}

fn untoken(t: &str) -> Option<u64> {
    t.strip_prefix("tk_")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .map(|v| v ^ 0x5bd1_e995)
}

fn offset_from_token(q: &HashMap<String, String>) -> Result<u64, Response> {
    match q.get("token") {
        None => Ok(0),
        Some(t) => untoken(t).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                Json400::msg("invalid or expired token"),
            )
                .into_response()
        }),
    }
}

async fn next_url(State(s): State<S>, Query(q): Params) -> Response {
    next_like(&s, &q, "/next/posts", false)
}

async fn looping(State(s): State<S>, Query(q): Params) -> Response {
    next_like(&s, &q, "/loop/posts", true)
}

fn next_like(s: &S, q: &HashMap<String, String>, path: &str, loops: bool) -> Response {
    let d = read(s);
    let (offset, limit) = match (offset_from_token(q), num(q, "limit", 10)) {
        (Ok(o), Ok(l)) => (o, l.clamp(1, 1000)),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let sel = select(&d, q);
    let ids = sel.slice(offset, limit);
    let mut next_offset = offset + limit;
    if loops && offset == 2 * limit {
        // page 3 sends the client back to page 2
        next_offset = limit;
    }
    let next = if next_offset < sel.len() {
        let rel = with_params(path, q, &[("token", token(next_offset))]);
        let url = if q.contains_key("absolute") {
            format!("{}{rel}", s.base)
        } else {
            rel
        };
        Value::String(url)
    } else {
        Value::Null
    };
    envelope(
        json!({ "count": sel.len(), "next": next }),
        "results",
        posts_raw(s, &d, &ids),
    )
}

async fn github(State(s): State<S>, Query(q): Params) -> Response {
    let d = read(&s);
    let (page, per_page) = match (num(&q, "page", 1), num(&q, "per_page", 30)) {
        (Ok(p), Ok(l)) => (p.max(1), l.clamp(1, 100)),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let sel = select(&d, &q);
    let last = sel.len().div_ceil(per_page).max(1);
    let link = |p: u64, rel: &str| {
        format!(
            "<{}{}>; rel=\"{rel}\"",
            s.base,
            with_params("/github/posts", &q, &[("page", p.to_string())])
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    let mut headers = HeaderMap::new();
    if !links.is_empty() {
        headers.insert("link", header(&links.join(", ")));
    }
    let ids = sel.slice((page - 1) * per_page, per_page);
    (headers, posts_raw(&s, &d, &ids)).into_response()
}

async fn slack(State(s): State<S>, Query(q): Params) -> Response {
    let d = read(&s);
    let limit = match num(&q, "limit", 100) {
        Ok(l) => l.clamp(1, 1000),
        Err(e) => return e,
    };
    let offset = match q.get("cursor").map(String::as_str) {
        None | Some("") => 0,
        Some(c) => match untoken(c) {
            Some(o) => o,
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"ok": false, "error": "invalid_cursor"})),
                )
                    .into_response();
            }
        },
    };
    let sel = select(&d, &q);
    let ids = sel.slice(offset, limit);
    let next = if offset + limit < sel.len() {
        token(offset + limit)
    } else {
        String::new()
    };
    envelope(
        json!({ "ok": true, "response_metadata": { "next_cursor": next } }),
        "members",
        posts_raw(&s, &d, &ids),
    )
}

async fn header_cursor(State(s): State<S>, Query(q): Params) -> Response {
    let d = read(&s);
    let limit = match num(&q, "limit", 10) {
        Ok(l) => l.clamp(1, 1000),
        Err(e) => return e,
    };
    let offset = match q.get("cursor") {
        None => 0,
        Some(c) => match untoken(c) {
            Some(o) => o,
            None => {
                return (StatusCode::BAD_REQUEST, Json400::msg("invalid cursor")).into_response();
            }
        },
    };
    let sel = select(&d, &q);
    let ids = sel.slice(offset, limit);
    let mut headers = HeaderMap::new();
    if offset + limit < sel.len() {
        headers.insert("x-next-cursor", header(&token(offset + limit)));
    }
    (headers, posts_raw(&s, &d, &ids)).into_response()
}

async fn hostile_records(State(s): State<S>, Query(q): Params) -> Response {
    let (page, total) = match (num(&q, "page", 1), num(&q, "total", 1000)) {
        (Ok(p), Ok(t)) => (p, t),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    axum::Json(json!({ "data": hostile::page(s.seed, page, total) })).into_response()
}

async fn hostile_html() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><body><h1>502 Bad Gateway</h1><p>upstream went away</p></body></html>",
    )
        .into_response()
}

async fn hostile_envelope() -> Response {
    axum::Json(json!({ "items": [{ "id": 1 }], "count": 1 })).into_response()
}

/// JSON after a UTF-8 byte order mark, as some .NET servers send it.
async fn hostile_bom() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        format!(
            "\u{feff}{}",
            json!({ "data": [{ "id": 1, "name": "ünï" }, { "id": 2, "name": "two" }] })
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip() {
        let mut q = HashMap::new();
        q.insert("a b".to_string(), "x&y=z".to_string());
        let url = with_params("/p", &q, &[("token", token(7))]);
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let back: HashMap<String, String> = url_params(query).into_iter().collect();
        assert_eq!(back.get("a b").map(String::as_str), Some("x&y=z"));
        assert_eq!(back.get("token").and_then(|t| untoken(t)), Some(7));
    }

    #[test]
    fn selection_after() {
        let r = Selection::Range(1, 10);
        assert_eq!(r.after(3), 3);
        assert_eq!(r.after(10), 10);
        assert_eq!(r.slice(8, 5), vec![9, 10]);
        let ids = Selection::Ids(vec![2, 4, 6]);
        assert_eq!(ids.after(4), 2);
        assert_eq!(ids.after(5), 2);
    }
}
