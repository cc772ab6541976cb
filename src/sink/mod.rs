//! Sinks: where records go, behind one seam. [`Sink`] is what the run
//! driver talks to, whole batches at a time: take the pipeline's lock, read
//! the ledger (saved state, marks, a refresh in progress), begin a run, write
//! a batch with its resume state, rejects and counters in one transaction,
//! finish, and give the rows of a `query` partition. Each kind of sink is a
//! variant with a module of its own; SQLite's C-API fast path stays private
//! to [`sqlite`]. A new sink is its module, a [`SinkConfig`] variant and an
//! arm in each method below.

mod bulk;
pub mod sqlite;

pub use bulk::SqliteError;

use std::sync::Arc;

use serde_json::Value;

use indexmap::IndexMap;

use crate::config::SinkConfig;
use crate::source::Resume;
use sqlite::{Marks, SqliteSink, Written};

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
}

/// An open sink of a run.
pub enum Sink {
    /// A table in a SQLite file.
    Sqlite(Box<SqliteSink>),
}

/// A pipeline's lock, held for as long as this value lives.
pub enum Lock {
    /// An OS advisory lock on a file beside the database.
    File(std::fs::File),
}

/// Take a pipeline's lock: one run (or `state reset`) at a time; exit 75
/// ([`SinkError::Busy`]) while another holds it.
pub fn lock(cfg: &SinkConfig, pipeline: &str) -> Result<Lock, SinkError> {
    match cfg {
        SinkConfig::Sqlite(c) => sqlite::lock_pipeline(&c.path, pipeline).map(Lock::File),
    }
}

impl Sink {
    /// Take the pipeline's lock, then open the sink (creating what is missing).
    pub async fn open(cfg: &SinkConfig, pipeline: &str) -> Result<(Self, Lock), SinkError> {
        let held = lock(cfg, pipeline)?;
        let sink = match cfg {
            SinkConfig::Sqlite(c) => Sink::Sqlite(Box::new(SqliteSink::open(c, pipeline).await?)),
        };
        Ok((sink, held))
    }

    /// The run that started a `--full-refresh` that has not finished.
    pub async fn pending_refresh(&mut self) -> Result<Option<i64>, SinkError> {
        match self {
            Sink::Sqlite(s) => s.pending_refresh().await,
        }
    }

    /// Forget the resume state and note a `--full-refresh`, in one transaction.
    pub async fn start_refresh(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Sqlite(s) => s.start_refresh().await,
        }
    }

    /// The saved resume points: partition → where it resumes (`None`: done).
    pub async fn load_state(&mut self) -> Result<IndexMap<String, Option<Resume>>, SinkError> {
        match self {
            Sink::Sqlite(s) => s.load_state().await,
        }
    }

    /// The incremental mark and a pending one.
    pub async fn load_marks(&mut self, cursor_field: &str) -> Result<Marks, SinkError> {
        match self {
            Sink::Sqlite(s) => s.load_marks(cursor_field).await,
        }
    }

    /// The rows of a `query` partition, every value as text.
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<IndexMap<String, String>>, SinkError> {
        match self {
            Sink::Sqlite(s) => s.query_rows(sql).await,
        }
    }

    /// Record the run and prepare the target; returns the run's id.
    pub async fn begin_run(&mut self, full_refresh: bool, fresh: bool) -> Result<i64, SinkError> {
        match self {
            Sink::Sqlite(s) => s.begin_run(full_refresh, fresh).await,
        }
    }

    /// Commit one batch: rows, resume state, rejects and counters together.
    pub async fn write(&mut self, batch: Batch) -> Result<Written, SinkError> {
        match self {
            Sink::Sqlite(s) => s.write(batch).await,
        }
    }

    /// End the run: on success swap a staged table in and forget the state.
    pub async fn finish(
        &mut self,
        status: &str,
        error: Option<&str>,
        retries: u64,
    ) -> Result<(), SinkError> {
        match self {
            Sink::Sqlite(s) => s.finish(status, error, retries).await,
        }
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
