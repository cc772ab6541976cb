//! Reading and resetting what ingest keeps about a pipeline in its database:
//! resume points (`_ingest_state`), run history (`_ingest_runs`), and a look
//! at the table itself. Writing the state is the sink's job, inside its
//! transactions; this module only serves the `state`, `runs`, `rejects` and
//! `show` commands (SQLite here; PostgreSQL in `sink/postgres/read.rs`).

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use crate::config::{Pipeline, SinkConfig};
use crate::sink::SinkError;
use crate::sink::postgres::read as pg;
use crate::sink::sqlite::{db_err, open_existing, quote};

fn db(p: &Pipeline, action: &str) -> impl FnOnce(sqlx::Error) -> SinkError + use<> {
    db_err(&p.sink.location(), action.to_string())
}

/// The SQLite file that holds the pipeline's ledger (the database, or a
/// JSON Lines file's ledger beside it).
fn sqlite_path(p: &Pipeline) -> std::path::PathBuf {
    p.sink.ledger_db().unwrap_or_default()
}

/// One saved resume point.
#[derive(Debug, Clone, Serialize)]
pub struct StateRow {
    /// The partition ("" when the pipeline has none).
    pub partition: String,
    /// Where the walk continues (JSON), or none when that walk is complete.
    pub resume: Option<String>,
    /// When it was saved.
    pub updated_at: String,
    /// The run that saved it.
    pub run_id: Option<i64>,
}

/// The saved resume points of a pipeline.
pub async fn show(p: &Pipeline) -> Result<Vec<StateRow>, SinkError> {
    if let SinkConfig::Postgres(c) = &p.sink {
        return pg::state(c, &p.name).await;
    }
    let mut conn = open_existing(&sqlite_path(p)).await?;
    let rows = sqlx::query("SELECT partition, resume, updated_at, run_id FROM _ingest_state WHERE pipeline = ? ORDER BY partition")
        .bind(&p.name)
        .fetch_all(&mut conn)
        .await
        .map_err(db(p, "cannot read the resume state"))?;
    Ok(rows
        .iter()
        .map(|r| StateRow {
            partition: r.try_get(0).unwrap_or_default(),
            resume: r.try_get(1).unwrap_or_default(),
            updated_at: r.try_get(2).unwrap_or_default(),
            run_id: r.try_get(3).unwrap_or_default(),
        })
        .collect())
}

/// Forget a pipeline's resume points; the next run starts from the beginning.
/// Returns how many were removed. Takes the pipeline's lock like a run
/// (exit 75 while one runs: it would write its state back).
pub async fn reset(p: &Pipeline) -> Result<u64, SinkError> {
    if let SinkConfig::Postgres(c) = &p.sink {
        return pg::reset(c, &p.name).await;
    }
    let mut conn = open_existing(&sqlite_path(p)).await?;
    let _lock = crate::sink::lock(&p.sink, &p.name).await?;
    let done = sqlx::query("DELETE FROM _ingest_state WHERE pipeline = ?")
        .bind(&p.name)
        .execute(&mut conn)
        .await
        .map_err(db(p, "cannot reset the resume state"))?;
    Ok(done.rows_affected())
}

/// One row of the run history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Start (UTC).
    pub started_at: String,
    /// End (UTC), if it ended.
    pub ended_at: Option<String>,
    /// running | done | failed | interrupted
    pub status: String,
    /// Pages committed.
    pub pages: i64,
    /// Rows written.
    pub records: i64,
    /// Retries.
    pub retries: i64,
    /// Rejects.
    pub rejects: i64,
    /// Why it failed.
    pub error: Option<String>,
}

/// The last `limit` runs of a pipeline, newest first.
pub async fn runs(p: &Pipeline, limit: u32) -> Result<Vec<RunRow>, SinkError> {
    if let SinkConfig::Postgres(c) = &p.sink {
        return pg::runs(c, &p.name, limit).await;
    }
    let mut conn = open_existing(&sqlite_path(p)).await?;
    let mut rows: Vec<RunRow> = sqlx::query_as(
        "SELECT id, started_at, ended_at, status, pages, records, retries, rejects, error \
         FROM _ingest_runs WHERE pipeline = ? ORDER BY id DESC LIMIT ?",
    )
    .bind(&p.name)
    .bind(i64::from(limit))
    .fetch_all(&mut conn)
    .await
    .map_err(db(p, "cannot read the run history"))?;
    // a run still marked running whose process is gone (the lock is free)
    // was killed; the next run records that, this shows it now
    let dead = rows.iter().any(|r| r.status == "running")
        && crate::sink::lock(&p.sink, &p.name).await.is_ok();
    for r in rows.iter_mut().filter(|r| dead && r.status == "running") {
        r.status = "killed".into();
    }
    Ok(rows)
}

/// The sink table's row count, column names and first rows (as JSON objects).
#[derive(Debug, Clone, Serialize)]
pub struct TablePeek {
    /// The table.
    pub table: String,
    /// Rows in it.
    pub count: i64,
    /// Column names in order.
    pub columns: Vec<String>,
    /// The first rows.
    pub rows: Vec<serde_json::Value>,
}

/// Look at the sink table.
pub async fn peek(p: &Pipeline, limit: u32) -> Result<TablePeek, SinkError> {
    if let SinkConfig::Postgres(c) = &p.sink {
        return pg::peek(c, limit).await;
    }
    if let SinkConfig::Jsonl(c) = &p.sink {
        return crate::sink::jsonl::peek(c, limit);
    }
    let mut conn = open_existing(&sqlite_path(p)).await?;
    let table = &p.sink.table().to_string();
    let cols: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?)")
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .map_err(db(p, "cannot read the table's columns"))?
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    if cols.is_empty() {
        return Err(SinkError::Schema(format!(
            "{}: table `{table}` does not exist yet; `ingest run` creates it",
            sqlite_path(p).display()
        )));
    }
    let count: i64 = sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        quote(table)
    )))
    .fetch_one(&mut conn)
    .await
    .map_err(db(p, "cannot count the rows"))?
    .try_get(0)
    .unwrap_or_default();
    // json_object keeps each value's type without a per-type decode here
    let pairs: Vec<String> = cols
        .iter()
        .map(|c| format!("'{}', {}", c.replace('\'', "''"), quote(c)))
        .collect();
    let sql = format!(
        "SELECT json_object({}) FROM {} ORDER BY rowid LIMIT ?",
        pairs.join(", "),
        quote(table)
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(i64::from(limit))
        .fetch_all(&mut conn)
        .await
        .map_err(db(p, "cannot read rows"))?
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    Ok(TablePeek {
        table: table.clone(),
        count,
        columns: cols,
        rows,
    })
}

/// One reject.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RejectRow {
    /// When (UTC).
    pub created_at: String,
    /// The run that rejected it.
    pub run_id: Option<i64>,
    /// The partition ("" when the pipeline has none).
    pub partition: String,
    /// The page's (redacted) URL.
    pub url: Option<String>,
    /// The HTTP status, for a page that failed.
    pub status: Option<i64>,
    /// Why.
    pub reason: String,
    /// The record as JSON text, or none for a page.
    pub record: Option<String>,
}

/// The last `limit` rejects of a pipeline, newest first.
pub async fn rejects(p: &Pipeline, limit: u32) -> Result<Vec<RejectRow>, SinkError> {
    if let SinkConfig::Postgres(c) = &p.sink {
        return pg::rejects(c, &p.name, limit).await;
    }
    let mut conn = open_existing(&sqlite_path(p)).await?;
    sqlx::query_as(
        "SELECT created_at, run_id, partition, url, status, reason, record \
         FROM _ingest_rejects WHERE pipeline = ? ORDER BY id DESC LIMIT ?",
    )
    .bind(&p.name)
    .bind(i64::from(limit))
    .fetch_all(&mut conn)
    .await
    .map_err(db(p, "cannot read the rejects"))
}

/// A shared run's partitions held by one owner (or none: waiting).
#[derive(Debug, Clone, Serialize)]
pub struct Claimed {
    /// `host:pid:tag` of the process, or "" for partitions nobody holds.
    pub owner: String,
    /// Partitions it holds (not done).
    pub partitions: i64,
    /// Whether its leases ran out (the process is likely dead).
    pub expired: bool,
}

/// A pipeline at a glance: its last run, and a shared run in progress.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The pipeline.
    pub pipeline: String,
    /// Its last run (none: never run here).
    pub last: Option<RunRow>,
    /// Partitions of a shared run in progress that are done.
    pub shared_done: Option<i64>,
    /// Partitions not done, by owner.
    pub shared_claims: Vec<Claimed>,
    /// Why the sink could not be read (the database is down, say).
    pub unreadable: Option<String>,
}

/// The last run of a pipeline (none when its database does not exist yet),
/// and the partitions of a shared run in progress.
pub async fn status(p: &Pipeline) -> Result<Status, SinkError> {
    let exists = match &p.sink {
        SinkConfig::Postgres(_) => true,
        _ => sqlite_path(p).exists(),
    };
    let last = if exists {
        runs(p, 1).await?.into_iter().next()
    } else {
        None
    };
    let (shared_done, shared_claims) = match &p.sink {
        SinkConfig::Postgres(c) => pg::partitions(c, &p.name).await?,
        _ => (None, Vec::new()),
    };
    Ok(Status {
        pipeline: p.name.clone(),
        last,
        shared_done,
        shared_claims,
        unreadable: None,
    })
}
