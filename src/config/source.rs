//! `[source]`: where records come from: `kind = "http"` (a paginated API)
//! or `kind = "files"` (JSON, NDJSON and CSV files by glob). A new kind is a
//! new variant of [`SourceConfig`].

use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use super::pagination::PaginationConfig;
use super::values::{FieldPath, RateLimit, Scalar};

/// The `[source]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceConfig {
    /// A paginated HTTP API.
    Http(Box<HttpSourceConfig>),
    /// Files on this machine.
    Files(Box<FilesSourceConfig>),
}

impl SourceConfig {
    /// The HTTP source's settings.
    pub fn http(&self) -> Option<&HttpSourceConfig> {
        match self {
            SourceConfig::Http(h) => Some(h),
            SourceConfig::Files(_) => None,
        }
    }

    /// `[source.partition]` (files are partitions of their own).
    pub fn partition(&self) -> Option<&PartitionConfig> {
        self.http().and_then(|h| h.partition.as_ref())
    }

    /// `[source.incremental]` of an HTTP source.
    pub fn incremental(&self) -> Option<&IncrementalConfig> {
        self.http().and_then(|h| h.incremental.as_ref())
    }

    /// Walks at once: requests in flight, or files read at once.
    pub fn concurrency(&self) -> usize {
        match self {
            SourceConfig::Http(h) => h.concurrency,
            SourceConfig::Files(f) => f.concurrency,
        }
    }

    /// How the walk goes, for messages: the pagination kind, or `files`.
    pub fn walk_kind(&self) -> &'static str {
        match self {
            SourceConfig::Http(h) => h.pagination.kind.name(),
            SourceConfig::Files(_) => "files",
        }
    }

    /// Secret material of the source.
    pub fn secrets(&self) -> Vec<String> {
        self.http().map(|h| h.auth.secrets()).unwrap_or_default()
    }
}

fn four() -> usize {
    4
}

/// `kind = "files"`: every file the globs match, each a walk of its own
/// (and the unit of resume), read `concurrency` at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSourceConfig {
    /// Globs, relative to the pipeline file (`in/*.json`, `in/**/*.ndjson`).
    pub paths: Vec<String>,
    /// How a file is read: by its extension (`auto`), or one format for all.
    #[serde(default)]
    pub format: FileFormat,
    /// JSON files: where the record array is ("" = the document itself).
    #[serde(default)]
    pub records: FieldPath,
    /// Files read at once.
    #[serde(default = "four")]
    pub concurrency: usize,
    /// Read only the files modified after the last completed run's newest.
    #[serde(default)]
    pub incremental: bool,
    /// CSV: the field separator (one character).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// A file that does not parse: fail the run, or record it and go on.
    #[serde(default)]
    pub on_error: OnError,
    /// The directory the globs are relative to (set by the loader).
    #[serde(skip)]
    pub base: std::path::PathBuf,
}

/// How a file's records are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// By extension: `.json`, `.ndjson`/`.jsonl`, `.csv`.
    #[default]
    Auto,
    /// One JSON document (an array, or `records` inside it).
    Json,
    /// One JSON value per line.
    Ndjson,
    /// A header row, then one record per row.
    Csv,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    8
}

/// `kind = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Scheme, host and optional base path.
    pub base_url: String,
    /// Appended to `base_url`; may hold `{placeholders}` filled by partitions.
    #[serde(default)]
    pub path: String,
    /// GET or POST.
    #[serde(default)]
    pub method: Method,
    /// Query parameters sent on every request.
    #[serde(default)]
    pub params: IndexMap<String, Scalar>,
    /// Headers sent on every request.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// JSON body (POST).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Where the record array is in the body ("" = the body itself).
    #[serde(default)]
    pub records: FieldPath,
    /// How a response body is read: JSON (the default), NDJSON, CSV or HTML.
    #[serde(default)]
    pub format: ResponseFormat,
    /// `format = "html"`: the elements and fields taken from each page.
    #[serde(default)]
    pub html: Option<HtmlConfig>,
    /// Per request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests in flight for this source, at most: a number, or "auto"
    /// (then `max_concurrency` is the most).
    #[serde(
        default = "default_concurrency",
        deserialize_with = "super::values::concurrency"
    )]
    pub concurrency: usize,
    /// With `concurrency = "auto"`, the most requests in flight (default 32).
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// `concurrency = "auto"`: the limit adapts (set by the loader).
    #[serde(skip)]
    pub auto_concurrency: bool,
    /// Requests per second or minute across all concurrent requests.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// How requests authenticate.
    #[serde(default)]
    pub auth: AuthConfig,
    /// How the walk goes from one page to the next.
    #[serde(default)]
    pub pagination: PaginationConfig,
    /// Retries of failed requests.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Incremental syncs: only what changed since the last mark.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// One walk per value or window.
    #[serde(default)]
    pub partition: Option<PartitionConfig>,
    /// What a page that fails for good does to the run.
    #[serde(default)]
    pub on_error: OnError,
}

/// The HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Method {
    /// GET (the default).
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    /// POST, with `body` as JSON.
    #[serde(rename = "POST", alias = "post")]
    Post,
}

/// `[source.auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthConfig {
    /// No authentication.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(BearerAuth),
    /// HTTP basic auth.
    Basic(BasicAuth),
    /// A key in a header or a query parameter.
    ApiKey(ApiKeyAuth),
    /// An OAuth2 access token, fetched from a token endpoint and renewed.
    #[serde(rename = "oauth2")]
    OAuth2(OAuth2Auth),
}

/// `kind = "oauth2"`: client credentials or a refresh token, exchanged at
/// `token_url` for access tokens that are sent as `Authorization: Bearer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Auth {
    /// The token endpoint.
    pub token_url: String,
    /// Which grant gets the tokens.
    pub grant: OAuth2Grant,
    /// The client's id.
    pub client_id: String,
    /// The client's secret (a public client has none).
    #[serde(default)]
    pub client_secret: String,
    /// `grant = "refresh_token"`: the refresh token to start from; a token
    /// the server rotated since, kept in the sink's ledger, wins over it.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Scopes asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra form fields of the token request (`audience`, `resource`).
    #[serde(default)]
    pub params: IndexMap<String, String>,
    /// How the client authenticates to the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// An OAuth2 grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuth2Grant {
    /// The client's own credentials (RFC 6749 §4.4).
    ClientCredentials,
    /// A refresh token (RFC 6749 §6).
    RefreshToken,
}

/// Where the client's id and secret go in a token request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Form fields `client_id` and `client_secret` (the default).
    #[default]
    Body,
    /// HTTP Basic to the token URL.
    Basic,
}

/// `kind = "bearer"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token.
    pub token: String,
}

/// `kind = "basic"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password (may be empty).
    #[serde(default)]
    pub password: String,
}

/// `kind = "api_key"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Header or query parameter name.
    pub name: String,
    /// The key.
    pub value: String,
    /// Where it goes.
    #[serde(default, rename = "in")]
    pub location: ApiKeyIn,
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyIn {
    /// A request header.
    #[default]
    Header,
    /// A query parameter.
    Query,
}

impl AuthConfig {
    /// The secret material, to be masked wherever text leaves the process.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            AuthConfig::None => vec![],
            AuthConfig::Bearer(b) => vec![b.token.clone()],
            AuthConfig::Basic(b) => {
                use base64::Engine;
                let credential = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", b.username, b.password));
                vec![b.password.clone(), credential]
            }
            AuthConfig::ApiKey(k) => vec![k.value.clone()],
            AuthConfig::OAuth2(o) => {
                use base64::Engine;
                // HTTP Basic to a token endpoint form-encodes both halves first
                // (RFC 6749 §2.3.1); both spellings are masked
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let b64 = |id: &str, secret: &str| {
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
                };
                let mut v = vec![
                    o.client_secret.clone(),
                    b64(&o.client_id, &o.client_secret),
                    b64(&enc(&o.client_id), &enc(&o.client_secret)),
                ];
                v.extend(o.refresh_token.clone());
                v
            }
        }
    }
}

fn d_attempts() -> u32 {
    6
}
fn d_initial() -> Duration {
    Duration::from_millis(250)
}
fn d_max() -> Duration {
    Duration::from_secs(30)
}
fn d_mult() -> f32 {
    2.0
}
fn d_true() -> bool {
    true
}
fn d_statuses() -> Vec<u16> {
    vec![408, 429, 500, 502, 503, 504]
}

/// `[source.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry.
    #[serde(default = "d_initial", with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Longest delay, also the cap on `Retry-After`.
    #[serde(default = "d_max", with = "humantime_serde")]
    pub max_delay: Duration,
    /// Growth of the delay per attempt.
    #[serde(default = "d_mult")]
    pub multiplier: f32,
    /// Full jitter.
    #[serde(default = "d_true")]
    pub jitter: bool,
    /// Statuses that are retried (plus connect errors and timeouts).
    #[serde(default = "d_statuses")]
    pub on_status: Vec<u16>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: d_attempts(),
            initial_delay: d_initial(),
            max_delay: d_max(),
            multiplier: d_mult(),
            jitter: true,
            on_status: d_statuses(),
        }
    }
}

/// `[source.incremental]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// Dotted path of the cursor in each record.
    pub cursor_field: FieldPath,
    /// Query parameter that carries the last mark.
    pub param: String,
    /// The mark of the first run.
    pub initial: Scalar,
    /// Re-read this much before the mark.
    #[serde(default, with = "humantime_serde")]
    pub lookback: Option<Duration>,
    /// Query parameter for the end of the window (`--until`), when the API has one.
    #[serde(default)]
    pub end_param: Option<String>,
}

/// `[source.partition]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionConfig {
    /// One walk per listed value.
    List(ListPartition),
    /// One walk per integer.
    Range(RangePartition),
    /// One walk per date window.
    Dates(DatesPartition),
    /// One walk per row of a query on the sink database.
    Query(QueryPartition),
    /// One walk per line of a file.
    Lines(LinesPartition),
}

/// `kind = "list"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListPartition {
    /// Query parameter (or use `{value}`).
    #[serde(default)]
    pub param: Option<String>,
    /// The values.
    pub values: Vec<Scalar>,
}

/// `kind = "range"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangePartition {
    /// Query parameter (or use `{value}`).
    #[serde(default)]
    pub param: Option<String>,
    /// First value.
    pub start: i64,
    /// Last value (inclusive).
    pub end: i64,
    /// Step.
    #[serde(default = "one")]
    pub step: i64,
}

fn one() -> i64 {
    1
}

/// `kind = "dates"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatesPartition {
    /// Date, RFC 3339 or `now`.
    pub start: String,
    /// Date, RFC 3339 or `now`.
    #[serde(default = "now")]
    pub end: String,
    /// Window length.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// Query parameter of the window start.
    #[serde(default)]
    pub start_param: Option<String>,
    /// Query parameter of the window end.
    #[serde(default)]
    pub end_param: Option<String>,
    /// strftime format of the bounds (RFC 3339 by default).
    #[serde(default)]
    pub format: Option<String>,
}

fn now() -> String {
    "now".into()
}

/// `kind = "query"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryPartition {
    /// A SELECT on the sink database.
    pub sql: String,
    /// A column of the query's rows that says when each row changed (the
    /// parent's `updated_at`): `{mark}` in `sql` is its largest value over
    /// this pipeline's last completed run (a SQL literal, or `NULL` before
    /// the first), so a child walks only the parents that changed since.
    #[serde(default)]
    pub mark: Option<String>,
}

/// How a response body is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// A JSON document (`records` says where the array is).
    #[default]
    Json,
    /// One JSON value per line.
    Ndjson,
    /// A header row, then one record per row.
    Csv,
    /// A web page: fields taken by CSS selectors (`[source.html]`).
    Html,
}

/// `[source.html]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtmlConfig {
    /// One record per element matching this CSS selector (else one per page).
    #[serde(default)]
    pub each: Option<String>,
    /// Field name → CSS selector whose text is taken; `selector@attr` takes
    /// an attribute, a trailing `[]` every match as an array.
    #[serde(default)]
    pub fields: IndexMap<String, String>,
}

/// `kind = "lines"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesPartition {
    /// A text file (relative to the pipeline file): one walk per non-empty
    /// line, the line in `{value}`.
    pub file: std::path::PathBuf,
    /// Query parameter (or use `{value}`).
    #[serde(default)]
    pub param: Option<String>,
}

/// What a page that fails for good does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The run fails (state kept; a rerun resumes).
    #[default]
    Fail,
    /// The page is recorded in `_ingest_rejects` and the walk goes on.
    Skip,
}
