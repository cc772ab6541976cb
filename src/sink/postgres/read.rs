//! What the `state`, `runs`, `rejects` and `show` commands read from a
//! PostgreSQL sink, in the shapes `crate::state` gives them; and the rule
//! that tells a dead run from a live one: its writer's server process
//! (`backend_pid`) is gone from `pg_stat_activity`, on whatever machine
//! the run was.

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;

use super::{connect, db_err, qualified, ts};
use crate::config::PostgresSinkConfig;
use crate::sink::SinkError;
use crate::state::{Claimed, RejectRow, RunRow, StateRow, TablePeek};

/// Mark the pipeline's runs whose process is gone as killed.
pub async fn close_dead_runs(
    conn: &mut PgConnection,
    shown: &str,
    pipeline: &str,
) -> Result<(), SinkError> {
    sqlx::query(
        "UPDATE ingest.runs r SET status = 'killed', ended_at = now(), \
         error = 'the process ended without finishing the run' \
         WHERE r.pipeline = $1 AND r.status = 'running' \
         AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid)",
    )
    .bind(pipeline)
    .execute(&mut *conn)
    .await
    .map_err(db_err(shown, "cannot close runs that died"))?;
    Ok(())
}

/// The saved resume points of a pipeline.
pub async fn state(cfg: &PostgresSinkConfig, pipeline: &str) -> Result<Vec<StateRow>, SinkError> {
    let shown = cfg.shown_url();
    let mut conn = connect(cfg).await?;
    let sql = format!(
        "SELECT partition, resume, {}, run_id FROM ingest.state WHERE pipeline = $1 ORDER BY partition",
        ts("updated_at")
    );
    let rows: Vec<(String, Option<String>, String, Option<i64>)> =
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(pipeline)
            .fetch_all(&mut conn)
            .await
            .map_err(db_err(&shown, "cannot read the resume state"))?;
    Ok(rows
        .into_iter()
        .map(|(partition, resume, updated_at, run_id)| StateRow {
            partition,
            resume,
            updated_at,
            run_id,
        })
        .collect())
}

/// Forget a pipeline's resume points, holding its run lock (exit 75 while
/// any process runs it).
pub async fn reset(cfg: &PostgresSinkConfig, pipeline: &str) -> Result<u64, SinkError> {
    let shown = cfg.shown_url();
    let mut conn = connect(cfg).await?;
    super::lock_run(&mut conn, &shown, pipeline, true).await?;
    let mut gone = 0;
    for sql in [
        "DELETE FROM ingest.state WHERE pipeline = $1",
        "DELETE FROM ingest.partitions WHERE pipeline = $1",
        "DELETE FROM ingest.shared_runs WHERE pipeline = $1",
    ] {
        let n = sqlx::query(sql)
            .bind(pipeline)
            .execute(&mut conn)
            .await
            .map_err(db_err(&shown, "cannot reset the resume state"))?
            .rows_affected();
        if gone == 0 {
            gone = n;
        }
    }
    Ok(gone)
}

/// The last `limit` runs of a pipeline, newest first; a run whose process
/// is gone shows as killed.
pub async fn runs(
    cfg: &PostgresSinkConfig,
    pipeline: &str,
    limit: u32,
) -> Result<Vec<RunRow>, SinkError> {
    let shown = cfg.shown_url();
    let mut conn = connect(cfg).await?;
    let sql = format!(
        "SELECT r.id, {} AS started_at, {} AS ended_at, CASE WHEN r.status = 'running' AND NOT EXISTS \
           (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid) THEN 'killed' ELSE r.status END AS status, \
         r.pages, r.records, r.retries, r.rejects, r.error \
         FROM ingest.runs r WHERE r.pipeline = $1 ORDER BY r.id DESC LIMIT $2",
        ts("r.started_at"),
        ts("r.ended_at")
    );
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(pipeline)
        .bind(i64::from(limit))
        .fetch_all(&mut conn)
        .await
        .map_err(db_err(&shown, "cannot read the run history"))
}

/// The table's row count, columns and first rows.
pub async fn peek(cfg: &PostgresSinkConfig, limit: u32) -> Result<TablePeek, SinkError> {
    let shown = cfg.shown_url();
    let mut conn = connect(cfg).await?;
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(&cfg.schema)
    .bind(&cfg.table)
    .fetch_all(&mut conn)
    .await
    .map_err(db_err(&shown, "cannot read the table's columns"))?;
    if cols.is_empty() {
        return Err(SinkError::Schema(format!(
            "{shown}: table `{}.{}` does not exist yet; `ingest run` creates it",
            cfg.schema, cfg.table
        )));
    }
    let table = qualified(&cfg.schema, &cfg.table);
    let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await
        .map_err(db_err(&shown, "cannot count the rows"))?;
    let texts: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT row_to_json(t)::text FROM {table} t LIMIT $1"
    )))
    .bind(i64::from(limit))
    .fetch_all(&mut conn)
    .await
    .map_err(db_err(&shown, "cannot read rows"))?;
    Ok(TablePeek {
        table: cfg.table.clone(),
        count,
        columns: cols,
        rows: texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect(),
    })
}

/// The last `limit` rejects of a pipeline, newest first.
pub async fn rejects(
    cfg: &PostgresSinkConfig,
    pipeline: &str,
    limit: u32,
) -> Result<Vec<RejectRow>, SinkError> {
    let shown = cfg.shown_url();
    let mut conn = connect(cfg).await?;
    let sql = format!(
        "SELECT {} AS created_at, run_id, partition, url, status::bigint AS status, reason, record \
         FROM ingest.rejects WHERE pipeline = $1 ORDER BY id DESC LIMIT $2",
        ts("created_at")
    );
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(pipeline)
        .bind(i64::from(limit))
        .fetch_all(&mut conn)
        .await
        .map_err(db_err(&shown, "cannot read the rejects"))
}

/// A shared run in progress: its partitions done, and the others by owner.
pub async fn partitions(
    cfg: &PostgresSinkConfig,
    pipeline: &str,
) -> Result<(Option<i64>, Vec<Claimed>), SinkError> {
    let shown = cfg.shown_url();
    let mut conn = connect(cfg).await?;
    let rows: Vec<(String, bool, i64, bool)> = sqlx::query_as(
        "SELECT coalesce(owner, ''), done, count(*), coalesce(bool_or(lease_until < now()), false) \
         FROM ingest.partitions WHERE pipeline = $1 GROUP BY 1, 2 ORDER BY 2 DESC, 1",
    )
    .bind(pipeline)
    .fetch_all(&mut conn)
    .await
    .map_err(db_err(&shown, "cannot read the shared run's partitions"))?;
    if rows.is_empty() {
        return Ok((None, Vec::new()));
    }
    let done = rows.iter().filter(|r| r.1).map(|r| r.2).sum();
    let claims = rows
        .into_iter()
        .filter(|r| !r.1)
        .map(|(owner, _, partitions, expired)| Claimed {
            owner,
            partitions,
            expired,
        })
        .collect();
    Ok((Some(done), claims))
}
