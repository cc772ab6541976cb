//! Sinks: where records go, behind one seam. [`Sink`] is what the run
//! driver talks to, whole batches at a time: take the pipeline's lock, read
//! the ledger (saved state, marks, a refresh in progress), begin a run, write
//! a batch with its resume state, rejects and counters in one transaction,
//! finish, and give the rows of a `query` partition. Each kind of sink is a
//! variant with a module of its own; SQLite's C-API fast path stays private
//! to [`sqlite`], PostgreSQL's COPY and shared runs to [`postgres`]. What
//! both need to shape rows (columns, inferred types) is in [`columns`]. A
//! new sink is its module, a [`SinkConfig`] variant and an arm in each
//! method below.

mod bulk;
pub mod columns;
pub mod jsonl;
pub mod postgres;
pub mod sqlite;
pub mod tokens;

pub use bulk::SqliteError;

use std::sync::Arc;

use serde_json::Value;

use indexmap::IndexMap;

use crate::config::SinkConfig;
use crate::ledger::Walk;
use crate::source::Resume;
use jsonl::JsonlSink;
use postgres::PgSink;
use sqlite::{Marks, SqliteSink, Written};

/// The key in the marks table of a pipeline's partition mark.
pub(crate) fn partition_mark_key(pipeline: &str) -> String {
    format!("{pipeline}#partitions")
}

/// A saved resume point as a sink stores it: `None` when that partition's
/// walk is complete; skipped (with a warning) when it does not parse, so
/// that partition starts over.
pub(crate) fn parse_state(
    partition: String,
    resume: Option<String>,
    done: bool,
) -> Option<(String, Option<Resume>)> {
    match (done, resume) {
        (false, Some(text)) => match serde_json::from_str::<Resume>(&text) {
            Ok(r) => Some((partition, Some(r))),
            Err(e) => {
                tracing::warn!(
                    partition,
                    "the saved resume point does not parse ({e}); that partition starts over"
                );
                None
            }
        },
        _ => Some((partition, None)),
    }
}

/// The database refused something.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A statement failed.
    #[error("{path}: {action}: {source}")]
    Db {
        /// The database file.
        path: String,
        /// What was being done.
        action: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// SQLite refused a row write (see `sink/bulk.rs`).
    #[error("{path}: {action}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What was being done.
        action: String,
        /// SQLite's code and message.
        source: SqliteError,
    },
    /// The migrations of ingest's own tables failed.
    #[error("{path}: cannot set up ingest's tables: {source}")]
    Migrate {
        /// The database file.
        path: String,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// Another run of the same pipeline holds the database.
    #[error(
        "another run of pipeline `{pipeline}` is in progress on {path} ({holder}); not starting a second one (exit 75: try again later)"
    )]
    Busy {
        /// The pipeline.
        pipeline: String,
        /// The database.
        path: String,
        /// Who holds it, as far as the lock file says.
        holder: String,
    },
    /// The data cannot be stored as the pipeline asks.
    #[error("{0}")]
    Schema(String),
    /// The reader of standard output went away (`ingest run p.toml | head`).
    #[error("standard output was closed by its reader")]
    Closed,
    /// A shared run's batch whose claim another process took over.
    #[error(
        "partition {partitions}: another process took this claim over after its lease ran out; the batch was not committed (that process continues from the last committed page)"
    )]
    Fenced {
        /// The batch's partitions.
        partitions: String,
    },
}

/// An open sink of a run.
pub enum Sink {
    /// A table in a SQLite file.
    Sqlite(Box<SqliteSink>),
    /// A table in a PostgreSQL database.
    Postgres(Box<PgSink>),
    /// A JSON Lines file, or standard output.
    Jsonl(Box<JsonlSink>),
}

/// The arm of every kind of open sink.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Sink::Sqlite($s) => $e,
            Sink::Postgres($s) => $e,
            Sink::Jsonl($s) => $e,
        }
    };
}

/// A pipeline's lock, held for as long as this value lives.
pub enum Lock {
    /// An OS advisory lock on a file beside the database.
    File(std::fs::File),
    /// A PostgreSQL session advisory lock, held by this connection.
    Session(Box<sqlx::postgres::PgConnection>),
    /// Held by the open sink's own connection.
    Sink,
}

/// Take a pipeline's lock: one run (or `state reset`) at a time; exit 75
/// ([`SinkError::Busy`]) while another holds it.
pub async fn lock(cfg: &SinkConfig, pipeline: &str) -> Result<Lock, SinkError> {
    match cfg {
        SinkConfig::Sqlite(c) => sqlite::lock_pipeline(&c.path, pipeline).map(Lock::File),
        // standard output keeps nothing to guard
        SinkConfig::Jsonl(c) => match c.ledger() {
            Some(db) => sqlite::lock_pipeline(&db, pipeline).map(Lock::File),
            None => Ok(Lock::Sink),
        },
        SinkConfig::Postgres(c) => {
            let mut conn = postgres::connect(c).await?;
            postgres::lock_run(&mut conn, &c.shown_url(), pipeline, true).await?;
            Ok(Lock::Session(Box::new(conn)))
        }
    }
}

/// Walks to run here, or claimed from a shared run as they come.
pub enum Walks {
    /// Every walk, in this process.
    Local(Vec<Walk>),
    /// Claimed one by one; the heartbeat keeps the claims while it lives.
    Shared(postgres::ClaimStream, postgres::Heartbeat),
}

impl Sink {
    /// Take the pipeline's lock, then open the sink (creating what is
    /// missing). `partitioned`: the walks can be shared among processes
    /// (a PostgreSQL sink then runs a shared run).
    pub async fn open(
        cfg: &SinkConfig,
        pipeline: &str,
        partitioned: bool,
    ) -> Result<(Self, Lock), SinkError> {
        match cfg {
            SinkConfig::Sqlite(c) => {
                let held = lock(cfg, pipeline).await?;
                let sink = Sink::Sqlite(Box::new(SqliteSink::open(c, pipeline).await?));
                Ok((sink, held))
            }
            SinkConfig::Postgres(c) => {
                let sink = PgSink::open(c, pipeline, partitioned).await?;
                Ok((Sink::Postgres(Box::new(sink)), Lock::Sink))
            }
            SinkConfig::Jsonl(c) => {
                let held = lock(cfg, pipeline).await?;
                let sink = Sink::Jsonl(Box::new(JsonlSink::open(c, pipeline).await?));
                Ok((sink, held))
            }
        }
    }

    /// The planned walks, as this process runs them: all of them, or (a
    /// shared run) those it claims.
    pub async fn share(&mut self, walks: Vec<Walk>) -> Result<Walks, SinkError> {
        match self {
            Sink::Sqlite(_) | Sink::Jsonl(_) => Ok(Walks::Local(walks)),
            Sink::Postgres(s) => s.share(walks).await,
        }
    }

    /// The run that started a `--full-refresh` that has not finished.
    pub async fn pending_refresh(&mut self) -> Result<Option<i64>, SinkError> {
        each!(self, s => s.pending_refresh().await)
    }

    /// Forget the resume state and note a `--full-refresh`, in one transaction.
    pub async fn start_refresh(&mut self) -> Result<(), SinkError> {
        each!(self, s => s.start_refresh().await)
    }

    /// The saved resume points: partition → where it resumes (`None`: done).
    pub async fn load_state(&mut self) -> Result<IndexMap<String, Option<Resume>>, SinkError> {
        each!(self, s => s.load_state().await)
    }

    /// The incremental mark and a pending one.
    pub async fn load_marks(&mut self, cursor_field: &str) -> Result<Marks, SinkError> {
        each!(self, s => s.load_marks(cursor_field).await)
    }

    /// The mark of a `query` partition's `mark` column, as the last
    /// completed run left it.
    pub async fn partition_mark(&mut self) -> Result<Option<String>, SinkError> {
        each!(self, s => s.partition_mark().await)
    }

    /// The partition mark this run moves to when it completes.
    pub fn set_partition_mark(&mut self, mark: Option<String>) {
        each!(self, s => s.set_partition_mark(mark))
    }

    /// The rows of a `query` partition, every value as text.
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<IndexMap<String, String>>, SinkError> {
        each!(self, s => s.query_rows(sql).await)
    }

    /// Record the run and prepare the target; returns the run's id.
    pub async fn begin_run(&mut self, full_refresh: bool, fresh: bool) -> Result<i64, SinkError> {
        each!(self, s => s.begin_run(full_refresh, fresh).await)
    }

    /// Commit one batch: rows, resume state, rejects and counters together.
    pub async fn write(&mut self, batch: Batch) -> Result<Written, SinkError> {
        each!(self, s => s.write(batch).await)
    }

    /// End the run: on success swap a staged table in and forget the state.
    pub async fn finish(
        &mut self,
        status: &str,
        error: Option<&str>,
        retries: u64,
    ) -> Result<(), SinkError> {
        each!(self, s => s.finish(status, error, retries).await)
    }
}

/// A record (or page) that was skipped, and why.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The partition it came from.
    pub partition: Arc<str>,
    /// The (redacted) URL.
    pub url: Option<String>,
    /// HTTP status, for a page that failed.
    pub status: Option<u16>,
    /// Why.
    pub reason: String,
    /// The record, or a body excerpt.
    pub record: Option<Value>,
}

/// What one transaction writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records after transforms.
    pub records: Vec<Value>,
    /// The resume point after the last page of each partition in the batch
    /// (`None` = that partition's walk is complete).
    pub states: Vec<(Arc<str>, Option<Resume>)>,
    /// Pages in the batch.
    pub pages: u64,
    /// Skipped records and pages.
    pub rejects: Vec<Reject>,
    /// The largest incremental cursor among the batch's records.
    pub max_cursor: Option<String>,
    /// Where the records came from, page by page, in record order: a record
    /// the sink rejects is recorded with its page's partition and URL.
    pub origins: Vec<Origin>,
    /// A file sink's commit, kept in its ledger's transaction.
    pub file: Option<FileCommit>,
}

/// What a file sink wrote before its ledger transaction: the file's length
/// after the batch, and the records in it (for the run's counters).
#[derive(Debug, Clone, Copy)]
pub struct FileCommit {
    /// The file's length once the batch is in it (fsynced).
    pub length: u64,
    /// Records the batch wrote.
    pub rows: u64,
    /// The length is the staging file's.
    pub staged: bool,
}

/// The page a run of a batch's records came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Index in [`Batch::records`] of the page's first record.
    pub first: usize,
    /// The page's partition.
    pub partition: Arc<str>,
    /// The page's (redacted) URL.
    pub url: String,
}

impl Reject {
    /// Record number `n` of a batch, which the sink cannot store, with its
    /// page's partition and URL.
    pub fn record(origins: &[Origin], n: usize, reason: String, record: &Value) -> Self {
        let from = Origin::of(origins, n);
        Self {
            partition: from.map_or_else(|| "".into(), |o| o.partition.clone()),
            url: from.map(|o| o.url.clone()),
            status: None,
            reason,
            record: Some(record.clone()),
        }
    }
}

impl Origin {
    /// The page record `n` of a batch came from, given the batch's origins.
    pub fn of(origins: &[Origin], n: usize) -> Option<&Origin> {
        let i = origins.partition_point(|o| o.first <= n);
        i.checked_sub(1).and_then(|i| origins.get(i))
    }
}

impl Batch {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.pages == 0
            && self.records.is_empty()
            && self.states.is_empty()
            && self.rejects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_finds_its_page() {
        let o = |first: usize, url: &str| Origin {
            first,
            partition: "p".into(),
            url: url.into(),
        };
        // page a: records 0..3, page b: none, page c: records 3..
        let origins = [o(0, "a"), o(3, "b"), o(3, "c")];
        let url = |n| Origin::of(&origins, n).map(|o| o.url.as_str());
        assert_eq!(url(0), Some("a"));
        assert_eq!(url(2), Some("a"));
        assert_eq!(url(3), Some("c"));
        assert_eq!(url(99), Some("c"));
        assert_eq!(Origin::of(&[], 0).map(|o| o.first), None);
    }
}
