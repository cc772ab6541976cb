//! The HTTP side of a source: one pooled `reqwest` client per source, auth,
//! the concurrency cap (a semaphore shared by every walk of the source), and
//! [`HttpClient::fetch`], which turns one URL into a parsed JSON response or
//! an [`HttpError`] that names the redacted URL, the status and what was
//! expected. Each attempt covers the request, the status, reading the whole
//! body and parsing it, so a truncated body or a reset mid-body is retried.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::pagination::Request;
use tokio::sync::Semaphore;
use url::Url;

use super::adaptive;
use super::retry::{self, Transient};
use super::{HttpError, SourceMetrics};
use crate::config::HttpSourceConfig;
use crate::config::source::{ApiKeyIn, AuthConfig, Method, RetryConfig};
use crate::config::values::Location;
use crate::redact::Secrets;

/// Bodies larger than this are refused rather than buffered.
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// A response that parsed as JSON.
#[derive(Debug)]
pub struct Response {
    /// The final URL (after redirects).
    pub url: Url,
    /// Response headers.
    pub headers: HeaderMap,
    /// The parsed body.
    pub body: Value,
    /// A web page's values at the pagination's `html:` locations, by spec.
    pub picked: serde_json::Map<String, Value>,
}

/// A source's client.
pub struct HttpClient {
    inner: reqwest::Client,
    /// Headers that carry credentials (auth, and configured headers whose
    /// value holds a secret): sent only to `base_url`'s origin.
    credentials: HeaderMap,
    /// `base_url`'s scheme, host and port.
    origin: url::Origin,
    /// Set once a request went to another origin (warned about once).
    warned_origin: std::sync::atomic::AtomicBool,
    method: reqwest::Method,
    retry: RetryConfig,
    secrets: Secrets,
    permits: Arc<Semaphore>,
    /// `concurrency = "auto"`: the limit that adapts (else `permits`).
    adaptive: Option<adaptive::Adaptive>,
    api_key_query: Option<(String, String)>,
    metrics: Arc<SourceMetrics>,
    limiter: Option<governor::DefaultDirectRateLimiter>,
    /// Set when the API said no requests remain until a reset.
    pause_until: std::sync::Mutex<Option<Instant>>,
    /// `kind = "oauth2"`: the access tokens.
    oauth: Option<Arc<super::oauth::OAuth>>,
    /// How bodies are read.
    format: BodyFormat,
}

/// How a source's whole response bodies become records (NDJSON and CSV
/// bodies are streamed instead: `streamed.rs`).
enum BodyFormat {
    /// A JSON document.
    Json,
    /// A web page, through CSS selectors.
    Html(super::formats::Extract),
}

impl BodyFormat {
    fn of(cfg: &HttpSourceConfig) -> Result<Self, HttpError> {
        use crate::config::source::ResponseFormat;
        Ok(match cfg.format {
            ResponseFormat::Json | ResponseFormat::Ndjson | ResponseFormat::Csv => BodyFormat::Json,
            ResponseFormat::Html => {
                let picks = cfg
                    .pagination
                    .locations()
                    .into_iter()
                    .filter_map(|(_, l)| match l {
                        Location::Html(spec) => Some(spec.as_str()),
                        _ => None,
                    });
                BodyFormat::Html(
                    super::formats::Extract::new(&cfg.html.clone().unwrap_or_default())
                        .map_err(|(k, m)| HttpError::Client(format!("source.html.{k}: {m}")))?
                        .with_picks(picks)
                        .map_err(|m| HttpError::Client(format!("source.pagination: {m}")))?,
                )
            }
        })
    }

    /// The `Accept` header a source of this format sends, unless configured.
    fn accept(cfg: &HttpSourceConfig) -> &'static str {
        use crate::config::source::ResponseFormat;
        match cfg.format {
            ResponseFormat::Json => "application/json",
            ResponseFormat::Ndjson => "application/x-ndjson, application/jsonl;q=0.9, */*;q=0.5",
            ResponseFormat::Csv => "text/csv, */*;q=0.5",
            ResponseFormat::Html => "text/html, application/xhtml+xml;q=0.9, */*;q=0.5",
        }
    }
}

/// Longest pause a `RateLimit-Reset` header can ask for.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// One failed attempt.
#[derive(Debug)]
enum Attempt {
    Transport {
        message: String,
        transient: bool,
    },
    Status {
        status: u16,
        excerpt: String,
        retry_after: Option<Duration>,
        transient: bool,
    },
    Body {
        message: String,
    },
    /// No OAuth2 access token (its own request was retried already).
    Auth(super::oauth::AuthError),
}

impl Transient for Attempt {
    fn is_transient(&self) -> bool {
        match self {
            Attempt::Transport { transient, .. } | Attempt::Status { transient, .. } => *transient,
            // truncated or garbled bodies are worth another try
            Attempt::Body { .. } => true,
            Attempt::Auth(_) => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Attempt::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl HttpClient {
    /// Build the client for a source.
    pub fn new(
        cfg: &HttpSourceConfig,
        secrets: Secrets,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, HttpError> {
        let (headers, credentials, api_key_query) = headers(cfg, &secrets)?;
        let oauth = match &cfg.auth {
            AuthConfig::OAuth2(o) => Some(Arc::new(
                super::oauth::OAuth::new(
                    o.clone(),
                    cfg.retry.clone(),
                    secrets.clone(),
                    cfg.timeout,
                )
                .map_err(|e| HttpError::Client(format!("the token client: {}", e.without_url())))?,
            )),
            _ => None,
        };
        // an empty base_url (full URLs from a partition) trusts no origin:
        // no request gets the source's credentials
        let origin = if cfg.base_url.is_empty() {
            url::Origin::new_opaque()
        } else {
            Url::parse(&cfg.base_url)
                .map_err(|e| HttpError::Client(format!("base_url is not a URL: {e}")))?
                .origin()
        };
        // redirects are followed by `attempt`, which decides per hop whether
        // the credentials go along; no Referer ever (it may carry a query key)
        let inner = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| HttpError::Client(e.without_url().to_string()))?;
        Ok(Self {
            inner,
            credentials,
            origin,
            warned_origin: std::sync::atomic::AtomicBool::new(false),
            method: match cfg.method {
                Method::Get => reqwest::Method::GET,
                Method::Post => reqwest::Method::POST,
            },
            retry: cfg.retry.clone(),
            secrets,
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            adaptive: cfg
                .auto_concurrency
                .then(|| adaptive::Adaptive::new(cfg.concurrency)),
            api_key_query,
            metrics,
            limiter: cfg.rate_limit.and_then(|r| {
                // an even pace with a burst of one: never more than `count`
                // (plus that one) in any window of `per`
                let period = r.per / r.count.max(1);
                governor::Quota::with_period(period)
                    .map(|q| governor::RateLimiter::direct(q.allow_burst(NonZeroU32::MIN)))
            }),
            pause_until: std::sync::Mutex::new(None),
            oauth,
            format: BodyFormat::of(cfg)?,
        })
    }

    /// The OAuth2 tokens, when the source uses them.
    pub fn oauth(&self) -> Option<&Arc<super::oauth::OAuth>> {
        self.oauth.as_ref()
    }

    /// Wait for the rate limit and for any pause the API asked for.
    async fn pace(&self) {
        let until = self.pause_until.lock().ok().and_then(|p| *p);
        if let Some(t) = until
            && t > Instant::now()
        {
            tokio::time::sleep_until(t.into()).await;
        }
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
    }

    /// Read `RateLimit-Remaining`/`X-RateLimit-Remaining` and the matching
    /// reset: when nothing remains, hold every request of the source until the
    /// reset instead of running into 429s.
    fn observe_limits(&self, headers: &HeaderMap) {
        let get = |names: &[&str]| {
            names.iter().find_map(|n| {
                headers
                    .get(*n)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
        };
        let Some(remaining) = get(&["ratelimit-remaining", "x-ratelimit-remaining"]) else {
            return;
        };
        if remaining > 0 {
            return;
        }
        let reset = get(&["ratelimit-reset", "x-ratelimit-reset"]).unwrap_or(1);
        // GitHub sends an epoch second, the IETF draft a delta
        let wait = if reset > 1_000_000_000 {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Duration::from_secs(reset.saturating_sub(now))
        } else {
            Duration::from_secs(reset)
        }
        .min(MAX_PAUSE);
        if wait.is_zero() {
            return;
        }
        tracing::debug!(
            seconds = wait.as_secs(),
            "the API reports no requests remaining: pausing until its reset"
        );
        if let Ok(mut p) = self.pause_until.lock() {
            let t = Instant::now() + wait;
            if p.is_none_or(|cur| cur < t) {
                *p = Some(t);
            }
        }
    }

    /// The URL as it may be shown: secrets masked.
    pub fn show(&self, url: &Url) -> String {
        self.secrets.redact(url.as_str())
    }

    /// Mask secrets in any text.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// The method, for messages.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// GET/POST `url` (with `body` for POST), retrying per `[source.retry]`.
    pub async fn fetch(&self, req: &Request) -> Result<Response, HttpError> {
        let (body, extra) = (req.body.as_ref(), req.headers.as_slice());
        self.retrying(
            req,
            |url| async move { self.attempt(&url, body, extra).await },
        )
        .await
    }

    /// Send a request and check its status, retrying like [`fetch`](Self::fetch),
    /// and hand back the response with its body unread (a streamed NDJSON
    /// or CSV body), and its final URL.
    pub async fn open(&self, req: &Request) -> Result<(reqwest::Response, Url), HttpError> {
        let (body, extra) = (req.body.as_ref(), req.headers.as_slice());
        self.retrying(req, |url| async move {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| Attempt::Transport {
                    message: "the source is shutting down".into(),
                    transient: false,
                })?;
            self.respond(&url, body, extra).await
        })
        .await
    }

    /// The request's URL with the query key where it belongs.
    fn request_url(&self, req: &Request) -> Url {
        let mut url = req.url.clone();
        if let Some((k, v)) = &self.api_key_query {
            if self.trusted(&url) {
                if !url.query_pairs().any(|(name, _)| name == k.as_str()) {
                    url.query_pairs_mut().append_pair(k, v);
                }
            } else {
                // a link to another origin that carries our key: not sent
                remove_param(&mut url, k);
            }
        }
        url
    }

    /// Run `attempt` per `[source.retry]`, counting requests and retries,
    /// and name the URL (masked), the status and the attempts if it fails.
    async fn retrying<T, F, Fut>(&self, req: &Request, attempt: F) -> Result<T, HttpError>
    where
        F: Fn(Url) -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let url = self.request_url(req);
        let shown = self.show(&url);
        let (result, attempts) = retry::with_retries(
            &self.retry,
            |e: &Attempt, delay, n| {
                self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                let wait = match delay.as_millis() {
                    0 => "at once".to_string(),
                    ms if ms < 1000 => format!("in {ms} ms"),
                    _ => format!("in {:.1} s", delay.as_secs_f64()),
                };
                tracing::warn!(url = %shown, attempt = n, "{}; retrying {wait}", self.describe(e));
            },
            |_| attempt(url.clone()),
        )
        .await;
        self.metrics
            .requests
            .fetch_add(u64::from(attempts), Ordering::Relaxed);
        result.map_err(|e| self.failed(e, &shown, attempts))
    }

    /// A request that failed for good, as the error the walk reports.
    fn failed(&self, e: Attempt, shown: &str, attempts: u32) -> HttpError {
        match e {
            Attempt::Transport { message, .. } => HttpError::Transport {
                method: self.method.to_string(),
                url: shown.to_string(),
                message: self.redact(&message),
                attempts,
            },
            Attempt::Status {
                status, excerpt, ..
            } => HttpError::Status {
                method: self.method.to_string(),
                url: shown.to_string(),
                status,
                attempts,
                excerpt: self.redact(&excerpt),
            },
            Attempt::Body { message } => HttpError::Body {
                url: shown.to_string(),
                message: format!(
                    "{} (after {attempts} attempt{})",
                    self.redact(&message),
                    if attempts == 1 { "" } else { "s" }
                ),
            },
            Attempt::Auth(e) => HttpError::Auth(e),
        }
    }

    fn describe(&self, e: &Attempt) -> String {
        match e {
            Attempt::Transport { message, .. } => self.redact(message),
            Attempt::Status { status, .. } => format!("HTTP {status}"),
            Attempt::Body { message } => self.redact(message),
            Attempt::Auth(e) => e.to_string(),
        }
    }

    /// One attempt, within the source's limit of requests in flight: a
    /// fixed one, or (`concurrency = "auto"`) one that each attempt's end
    /// moves.
    async fn attempt(
        &self,
        url: &Url,
        body: Option<&Value>,
        extra: &[(String, String)],
    ) -> Result<Response, Attempt> {
        let closed = || Attempt::Transport {
            message: "the source is shutting down".into(),
            transient: false,
        };
        let Some(auto) = &self.adaptive else {
            let _permit = self.permits.acquire().await.map_err(|_| closed())?;
            return self.attempt_within(url, body, extra).await;
        };
        let permit = auto.acquire().await.ok_or_else(closed)?;
        let started = Instant::now();
        let result = self.attempt_within(url, body, extra).await;
        let signal = match &result {
            Err(Attempt::Status {
                status: 429 | 503, ..
            }) => adaptive::Signal::Overloaded,
            Err(Attempt::Transport {
                transient: true, ..
            }) => adaptive::Signal::Overloaded,
            _ => adaptive::Signal::Fine(started.elapsed()),
        };
        auto.release(permit, signal);
        result
    }

    async fn attempt_within(
        &self,
        url: &Url,
        body: Option<&Value>,
        extra: &[(String, String)],
    ) -> Result<Response, Attempt> {
        let (resp, final_url) = self.respond(url, body, extra).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = read_body(resp, MAX_BODY).await?;
        let ctype = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type");
        if !matches!(self.format, BodyFormat::Json) {
            let (body, picked) = self.decode_other(&bytes, ctype, &final_url, status.as_u16())?;
            return Ok(Response {
                url: final_url,
                headers,
                body,
                picked,
            });
        }
        // a big body takes milliseconds to parse: do it on the blocking pool,
        // so the async workers keep serving timers, other requests and the
        // writer meanwhile (a 22 KB page takes ~0.1 ms: not worth a thread hop)
        let body = if bytes.len() >= BLOCKING_PARSE {
            let ctype = ctype.to_string();
            tokio::task::spawn_blocking(move || decode(&bytes, &ctype))
                .await
                .unwrap_or_else(|e| {
                    Err(Attempt::Body {
                        message: format!("the parsing task failed: {e}"),
                    })
                })?
        } else {
            decode(&bytes, ctype)?
        };
        Ok(Response {
            url: final_url,
            headers,
            body,
            picked: serde_json::Map::new(),
        })
    }

    /// Send the request (the rate limit, the token, redirects, one renewal
    /// on a 401) and check the status; the body is left to read.
    async fn respond(
        &self,
        url: &Url,
        body: Option<&Value>,
        extra: &[(String, String)],
    ) -> Result<(reqwest::Response, Url), Attempt> {
        self.pace().await;
        let bearer = self.bearer().await?;
        let (mut resp, mut final_url) = self.send(url, body, extra, bearer.as_ref()).await?;
        // a refused access token is renewed once, at once (it may have been
        // revoked, or the clocks disagree about its expiry)
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
            && let (Some(o), Some(b)) = (&self.oauth, &bearer)
        {
            tracing::info!("the API refused the access token (HTTP 401): renewing it once");
            o.refused(b.generation).await;
            let renewed = self.bearer().await?;
            (resp, final_url) = self.send(url, body, extra, renewed.as_ref()).await?;
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        self.observe_limits(&headers);
        if !status.is_success() {
            let retry_after = retry::retry_after(&headers, SystemTime::now());
            let bytes = read_body(resp, 4096).await.unwrap_or_default();
            return Err(Attempt::Status {
                status: status.as_u16(),
                excerpt: excerpt(&bytes),
                retry_after,
                transient: self.retry.on_status.contains(&status.as_u16()),
            });
        }
        Ok((resp, final_url))
    }
}

impl HttpClient {
    /// A body in a format other than JSON (a web page), as an array of
    /// records, with the values at the pagination's `html:` locations.
    fn decode_other(
        &self,
        bytes: &[u8],
        ctype: &str,
        url: &Url,
        status: u16,
    ) -> Result<(Value, serde_json::Map<String, Value>), Attempt> {
        match &self.format {
            BodyFormat::Json => Ok((decode(bytes, ctype)?, serde_json::Map::new())),
            BodyFormat::Html(x) => {
                let text = super::formats::decode_html(bytes, ctype);
                let now = format!("{:.3}", jiff::Timestamp::now());
                let (records, picked) = x.page(&text, &self.show(url), status, &now);
                Ok((Value::Array(records), picked))
            }
        }
    }
}

/// Redirects followed per request, at most (browsers and curl use 20 and 50;
/// an API needs one or two).
const MAX_REDIRECTS: usize = 10;

impl HttpClient {
    /// The OAuth2 access token to send, when the source has one.
    async fn bearer(&self) -> Result<Option<super::oauth::Bearer>, Attempt> {
        match &self.oauth {
            Some(o) => o.bearer().await.map(Some).map_err(Attempt::Auth),
            None => Ok(None),
        }
    }

    /// Whether the source has credentials to keep from other origins.
    fn has_credentials(&self) -> bool {
        !self.credentials.is_empty() || self.oauth.is_some() || self.api_key_query.is_some()
    }

    /// Whether `url` is on `base_url`'s origin (scheme, host and port), the
    /// only one that gets the source's credentials.
    fn trusted(&self, url: &Url) -> bool {
        url.origin() == self.origin
    }

    /// Send one request and follow redirects by hand: a hop to another
    /// origin goes without the credentials (auth, secret headers, the query
    /// key), and no hop sends a Referer. Returns the response and its URL.
    async fn send(
        &self,
        url: &Url,
        body: Option<&Value>,
        extra: &[(String, String)],
        bearer: Option<&super::oauth::Bearer>,
    ) -> Result<(reqwest::Response, Url), Attempt> {
        let mut url = url.clone();
        let mut method = self.method.clone();
        let mut body = body;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.inner.request(method.clone(), url.clone());
            if self.trusted(&url) {
                req = req.headers(self.credentials.clone());
                if let Some(b) = bearer {
                    let mut value =
                        HeaderValue::from_str(&format!("Bearer {}", b.token)).map_err(|_| {
                            Attempt::Transport {
                                message: "the access token is not valid header text".into(),
                                transient: false,
                            }
                        })?;
                    value.set_sensitive(true);
                    req = req.header(reqwest::header::AUTHORIZATION, value);
                }
            } else if self.has_credentials() && !self.warned_origin.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    url = %self.show(&url),
                    "a request goes to another origin than base_url: it is sent without the source's credentials"
                );
            }
            for (k, v) in extra {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (true, Some(location)) = (status.is_redirection(), location) else {
                return Ok((resp, url));
            };
            let mut next = url.join(&location).map_err(|e| Attempt::Transport {
                message: format!(
                    "HTTP {status} redirects to `{}`, which is not a URL: {e}",
                    self.redact(&location)
                ),
                transient: false,
            })?;
            if let Some((k, _)) = &self.api_key_query
                && !self.trusted(&next)
            {
                remove_param(&mut next, k);
            }
            // 301/302/303 turn a POST into a GET without a body, as browsers do
            if matches!(status.as_u16(), 301..=303) && method == reqwest::Method::POST {
                method = reqwest::Method::GET;
                body = None;
            }
            url = next;
        }
        Err(Attempt::Transport {
            message: format!("more than {MAX_REDIRECTS} redirects"),
            transient: false,
        })
    }
}

/// Remove a query parameter from a URL.
fn remove_param(url: &mut Url, name: &str) {
    if !url.query_pairs().any(|(k, _)| k == name) {
        return;
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
}

/// A source's headers: the ones every request carries, the credentials that
/// only `base_url`'s origin gets (auth, and configured headers whose value
/// came from `${env:...}`), and an `api_key` that goes in the query.
type Headers = (HeaderMap, HeaderMap, Option<(String, String)>);

fn headers(cfg: &HttpSourceConfig, secrets: &Secrets) -> Result<Headers, HttpError> {
    let mut headers = HeaderMap::new();
    let mut credentials = HeaderMap::new();
    for (k, v) in &cfg.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| HttpError::Client(format!("header `{k}`: {e}")))?;
        let mut value = HeaderValue::from_str(v)
            .map_err(|e| HttpError::Client(format!("header `{k}`: {e}")))?;
        // a header whose value came from `${env:...}` is a credential
        if secrets.found_in(v) {
            value.set_sensitive(true);
            credentials.insert(name, value);
        } else {
            headers.insert(name, value);
        }
    }
    if !headers.contains_key(reqwest::header::USER_AGENT) {
        headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_static(concat!("ingest/", env!("CARGO_PKG_VERSION"))),
        );
    }
    headers
        .entry(reqwest::header::ACCEPT)
        .or_insert(HeaderValue::from_static(BodyFormat::accept(cfg)));
    let mut api_key_query = None;
    let auth_header = match &cfg.auth {
        AuthConfig::None => None,
        AuthConfig::Bearer(b) => Some((
            reqwest::header::AUTHORIZATION.as_str().to_string(),
            format!("Bearer {}", b.token),
        )),
        AuthConfig::Basic(b) => {
            use base64::Engine;
            let c = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", b.username, b.password));
            Some((
                reqwest::header::AUTHORIZATION.as_str().to_string(),
                format!("Basic {c}"),
            ))
        }
        // the access token is fetched and set per request (source/oauth.rs)
        AuthConfig::OAuth2(_) => None,
        AuthConfig::ApiKey(k) => match k.location {
            ApiKeyIn::Header => Some((k.name.clone(), k.value.clone())),
            ApiKeyIn::Query => {
                api_key_query = Some((k.name.clone(), k.value.clone()));
                None
            }
        },
    };
    if let Some((name, value)) = auth_header {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpError::Client("the auth header name is not valid".into()))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            HttpError::Client("the auth credential is not valid header text".into())
        })?;
        value.set_sensitive(true);
        credentials.insert(name, value);
    }
    Ok((headers, credentials, api_key_query))
}

fn transport(e: reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the body was cut short"
    } else {
        "the request failed"
    };
    let transient = !e.is_builder() && !e.is_redirect();
    // without_url: the URL may hold a key; callers add the redacted one
    let message = format!("{kind}: {}", chain(&e.without_url()));
    Attempt::Transport { message, transient }
}

/// An error and its sources, `: `-separated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(&format!(": {s}"));
        src = s.source();
    }
    message
}

/// Bodies from this size on are parsed on tokio's blocking pool.
const BLOCKING_PARSE: usize = 256 * 1024;

/// A body as JSON: one (SIMD) UTF-8 check of the whole body, then a parse
/// that need not check every string again (measured: half again as fast as
/// `from_slice`).
fn decode(bytes: &[u8], ctype: &str) -> Result<Value, Attempt> {
    // RFC 8259 §8.1: a parser may ignore a byte order mark (.NET servers send one)
    let bytes = bytes.strip_prefix(super::formats::BOM).unwrap_or(bytes);
    let text = match simdutf8::basic::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            // the SIMD check says only that it failed; std says where
            let at = std::str::from_utf8(bytes)
                .err()
                .map_or(0, |e| e.valid_up_to());
            return Err(Attempt::Body {
                message: format!(
                    "the body is not UTF-8 (bad byte at {at}): {}",
                    excerpt(bytes)
                ),
            });
        }
    };
    super::json::parse(text).map_err(|e| Attempt::Body {
        message: format!(
            "expected a JSON body, got {ctype} that does not parse ({e}): {}",
            excerpt(bytes)
        ),
    })
}

/// Read a body, refusing more than `limit` bytes.
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, Attempt> {
    let mut buf = Vec::with_capacity(
        resp.content_length()
            .map_or(16 * 1024, |n| (n as usize).min(limit)),
    );
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if buf.len() + chunk.len() > limit {
            if limit < MAX_BODY {
                buf.extend_from_slice(&chunk[..limit - buf.len()]);
                return Ok(buf);
            }
            return Err(Attempt::Body {
                message: format!(
                    "the body is larger than {} MiB; refusing to buffer it",
                    MAX_BODY / (1024 * 1024)
                ),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The start of a body, on one line, for messages.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if bytes.len() > 300 {
        format!("{one_line}…")
    } else {
        one_line
    }
}
