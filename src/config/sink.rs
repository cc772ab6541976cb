//! `[sink]`: where records go: `kind = "sqlite"` (the embedded default),
//! `kind = "postgres"` (a shared warehouse, and shared runs) or
//! `kind = "jsonl"` (a JSON Lines file, or standard output).

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

/// The `[sink]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkConfig {
    /// A table in a SQLite file.
    Sqlite(SqliteSinkConfig),
    /// A table in a PostgreSQL database.
    Postgres(PostgresSinkConfig),
    /// A JSON Lines file, or standard output.
    Jsonl(JsonlSinkConfig),
}

/// The arm of every kind, for the keys they share.
macro_rules! each_kind {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            SinkConfig::Sqlite($c) => $e,
            SinkConfig::Postgres($c) => $e,
            SinkConfig::Jsonl($c) => $e,
        }
    };
}

impl SinkConfig {
    /// The kind's name, as in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Sqlite(_) => "sqlite",
            SinkConfig::Postgres(_) => "postgres",
            SinkConfig::Jsonl(_) => "jsonl",
        }
    }

    /// The data table.
    pub fn table(&self) -> &str {
        each_kind!(self, c => &c.table)
    }

    /// How rows are written.
    pub fn write(&self) -> WriteMode {
        each_kind!(self, c => c.write)
    }

    /// The fields that identify a record (merge).
    pub fn primary_key(&self) -> &[String] {
        each_kind!(self, c => &c.primary_key)
    }

    /// Records per transaction, at most.
    pub fn batch_size(&self) -> usize {
        each_kind!(self, c => c.batch_size)
    }

    /// Declared column types.
    pub fn columns(&self) -> &IndexMap<String, ColumnType> {
        each_kind!(self, c => &c.columns)
    }

    /// Secret material: a database URL's password (as written and decoded),
    /// masked wherever text leaves the process, however it got into the file.
    pub fn secrets(&self) -> Vec<String> {
        let SinkConfig::Postgres(c) = self else {
            return Vec::new();
        };
        let Some(pass) = url::Url::parse(&c.url)
            .ok()
            .and_then(|u| u.password().map(String::from))
        else {
            return Vec::new();
        };
        let decoded = url::form_urlencoded::parse(format!("p={pass}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        vec![pass, decoded]
    }

    /// Where the data goes, for messages and reports (the database file).
    pub fn location(&self) -> String {
        match self {
            SinkConfig::Sqlite(c) => c.path.display().to_string(),
            SinkConfig::Postgres(c) => c.shown_url(),
            SinkConfig::Jsonl(c) if c.is_stdout() => "standard output".into(),
            SinkConfig::Jsonl(c) => c.path.display().to_string(),
        }
    }

    /// Where the records land, for messages: `place:table`, or a file.
    pub fn target(&self) -> String {
        match self {
            SinkConfig::Jsonl(_) => self.location(),
            _ => format!("{}:{}", self.location(), self.table()),
        }
    }

    /// The SQLite file that holds the pipeline's ledger, for the sinks
    /// that keep it in one: the database itself, or a JSON Lines file's
    /// ledger beside it.
    pub fn ledger_db(&self) -> Option<PathBuf> {
        match self {
            SinkConfig::Sqlite(c) => Some(c.path.clone()),
            SinkConfig::Jsonl(c) => c.ledger(),
            SinkConfig::Postgres(_) => None,
        }
    }
}

/// `kind = "jsonl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkConfig {
    /// The file (relative to the pipeline file), or `-` for standard output.
    pub path: PathBuf,
    /// `append` (the default) or `replace` (a new file renamed over the old).
    #[serde(default)]
    pub write: WriteMode,
    /// Records per commit (a write, an fsync and a ledger transaction).
    #[serde(default = "pg_batch")]
    pub batch_size: usize,
    /// The file's name, where other sinks name a table (set by the loader).
    #[serde(skip)]
    pub table: String,
    /// No key: lines are appended.
    #[serde(skip)]
    pub primary_key: Vec<String>,
    /// No columns: each record is written whole.
    #[serde(skip)]
    pub columns: IndexMap<String, ColumnType>,
}

impl JsonlSinkConfig {
    /// `path = "-"`: standard output, with no ledger and no resume.
    pub fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }

    /// The ledger beside the file: `posts.jsonl` → `posts.jsonl.ingest.db`.
    pub fn ledger(&self) -> Option<PathBuf> {
        if self.is_stdout() {
            return None;
        }
        let mut name = self.path.file_name()?.to_os_string();
        name.push(".ingest.db");
        Some(self.path.with_file_name(name))
    }

    /// Where `replace` (and `--full-refresh`) write before the rename:
    /// `posts.jsonl` → `posts.jsonl.ingest-staging`.
    pub fn staging(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".ingest-staging");
        self.path.with_file_name(name)
    }
}

fn batch() -> usize {
    1000
}

/// `kind = "sqlite"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSinkConfig {
    /// The database file (relative to the working directory); created if missing.
    pub path: PathBuf,
    /// The table.
    pub table: String,
    /// How rows are written.
    #[serde(default)]
    pub write: WriteMode,
    /// Required for merge.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Records per transaction, at most (a page is never split across two).
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// Declared column types (others are inferred).
    #[serde(default)]
    pub columns: IndexMap<String, ColumnType>,
}

fn pg_batch() -> usize {
    5000
}

fn public() -> String {
    "public".into()
}

fn lease() -> Duration {
    Duration::from_secs(30)
}

/// `kind = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// `postgres://user:pass@host:port/db` (usually `${env:DATABASE_URL}`).
    pub url: String,
    /// The data table's schema.
    #[serde(default = "public")]
    pub schema: String,
    /// The table.
    pub table: String,
    /// How rows are written.
    #[serde(default)]
    pub write: WriteMode,
    /// Required for merge.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Records per transaction, at most (a page is never split across two).
    #[serde(default = "pg_batch")]
    pub batch_size: usize,
    /// Declared column types (others are inferred).
    #[serde(default)]
    pub columns: IndexMap<String, ColumnType>,
    /// How long a claimed partition of a shared run stays claimed without
    /// a heartbeat.
    #[serde(default = "lease", with = "humantime_serde")]
    pub lease: Duration,
}

impl PostgresSinkConfig {
    /// The URL without its password or query, for messages:
    /// `postgres://user@host:port/db`.
    pub fn shown_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) => {
                let _ = u.set_password(None);
                u.set_query(None);
                u.to_string()
            }
            Err(_) => "postgres://(unparsable url)".into(),
        }
    }
}

/// How rows are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// INSERT every record.
    #[default]
    Append,
    /// Upsert on `primary_key`.
    Merge,
    /// Load a staging table, swap it in at the end.
    Replace,
}

impl WriteMode {
    /// The name as written in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            WriteMode::Append => "append",
            WriteMode::Merge => "merge",
            WriteMode::Replace => "replace",
        }
    }
}

/// Column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 64-bit integer.
    Integer,
    /// 64-bit float.
    Real,
    /// UTF-8 text.
    Text,
    /// Stored as 0/1.
    Boolean,
    /// Stored as JSON text.
    Json,
    /// Stored as text, as given (RFC 3339 expected).
    Timestamp,
}

impl ColumnType {
    /// The SQLite declared type. JSON and timestamps are TEXT: a declared type
    /// of `JSON` would get NUMERIC affinity and turn `"123"` into 123.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Integer | ColumnType::Boolean => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Text | ColumnType::Json | ColumnType::Timestamp => "TEXT",
        }
    }

    /// The PostgreSQL type.
    pub fn pg(self) -> &'static str {
        match self {
            ColumnType::Integer => "bigint",
            ColumnType::Real => "double precision",
            ColumnType::Text => "text",
            ColumnType::Boolean => "boolean",
            ColumnType::Json => "jsonb",
            ColumnType::Timestamp => "timestamptz",
        }
    }

    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Real => "real",
            ColumnType::Text => "text",
            ColumnType::Boolean => "boolean",
            ColumnType::Json => "json",
            ColumnType::Timestamp => "timestamp",
        }
    }
}
