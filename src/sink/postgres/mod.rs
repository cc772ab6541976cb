//! The PostgreSQL sink: the same promise as SQLite's, on the database a
//! team already runs. Each batch is one transaction: the rows go in by COPY
//! (straight into the table when appending; into a temporary table and then
//! one `INSERT … SELECT … ON CONFLICT` when merging), with the resume state,
//! rejects, the pending mark and the run's counters beside them. ingest's
//! own tables live in the schema `ingest` (`migrations/postgres/`).
//!
//! A pipeline with partitions runs *shared* (`shared.rs`): every process
//! that runs it against the same database joins one run and claims
//! partitions under a lease. Without partitions, a session advisory lock
//! keeps to one run at a time (exit 75), as SQLite's lock file does.
//!
//! `write = "replace"` and `--full-refresh` load `_ingest_staging__<table>`
//! and swap it in by rename in the run's last transaction.

mod copy;
pub mod read;
mod shared;

pub use shared::{ClaimStream, Heartbeat};

use std::str::FromStr;

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

use super::columns::Columns;
pub use super::sqlite::db_err;
use super::sqlite::{MAX_COLUMNS, Marks, Written, quote};
use super::{Batch, Reject, SinkError};
use crate::config::{ColumnType, PostgresSinkConfig, WriteMode};
use crate::source::Resume;

/// Records encoded per COPY message when appending: the server parses one
/// chunk while the next is encoded.
const COPY_CHUNK: usize = 500;

/// ingest's tables, created when missing (each file is idempotent, and
/// all of them run when the last one's table is missing).
const SETUP: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_ingest.sql"),
    include_str!("../../../migrations/postgres/0002_tokens.sql"),
];

/// Advisory lock classes: the first key of each lock ingest takes; the
/// second is `hashtext(pipeline)` (or of the table, for DDL).
pub mod class {
    /// A run: exclusive, or shared among the processes of a shared run;
    /// `state reset` takes it exclusively.
    pub const RUN: i32 = 7301;
    /// Planning and joining a shared run, and completing it.
    pub const JOIN: i32 = 7302;
    /// Creating or widening a data table.
    pub const DDL: i32 = 7303;
    /// Creating ingest's own tables.
    pub const SETUP: i32 = 7304;
    /// Renewing an OAuth2 token with the kept refresh token: the processes
    /// of a shared run take turns, each starting from the last one's.
    pub const TOKENS: i32 = 7305;
}

/// SQL for a timestamptz column as RFC 3339 UTC text with milliseconds.
pub fn ts(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

/// The connection options of a sink: its URL, UTC, and a name in `pg_stat_activity`.
pub fn options(cfg: &PostgresSinkConfig) -> Result<PgConnectOptions, SinkError> {
    let opts = PgConnectOptions::from_str(&cfg.url).map_err(|e| {
        SinkError::Schema(format!("{}: the URL does not parse: {e}", cfg.shown_url()))
    })?;
    Ok(opts
        .application_name("ingest")
        .options([("timezone", "UTC")]))
}

/// Connect, and create ingest's tables if they are missing.
pub async fn connect(cfg: &PostgresSinkConfig) -> Result<PgConnection, SinkError> {
    let shown = cfg.shown_url();
    let mut conn = PgConnection::connect_with(&options(cfg)?)
        .await
        .map_err(db_err(&shown, "cannot connect"))?;
    let ready: bool = sqlx::query_scalar("SELECT to_regclass('ingest.tokens') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .map_err(db_err(&shown, "cannot look up ingest's tables"))?;
    if !ready {
        let mut tx = conn
            .begin()
            .await
            .map_err(db_err(&shown, "cannot create ingest's tables"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(class::SETUP)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&shown, "cannot create ingest's tables"))?;
        for sql in SETUP {
            sqlx::raw_sql(AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(db_err(&shown, "cannot create ingest's tables"))?;
        }
        tx.commit()
            .await
            .map_err(db_err(&shown, "cannot create ingest's tables"))?;
    }
    Ok(conn)
}

/// Take the pipeline's run lock on this connection: exclusive, or shared
/// (the processes of one shared run). Exit 75 while another holds it.
pub async fn lock_run(
    conn: &mut PgConnection,
    shown: &str,
    pipeline: &str,
    exclusive: bool,
) -> Result<(), SinkError> {
    let sql = if exclusive {
        "SELECT pg_try_advisory_lock($1, hashtext($2))"
    } else {
        "SELECT pg_try_advisory_lock_shared($1, hashtext($2))"
    };
    let got: bool = sqlx::query_scalar(sql)
        .bind(class::RUN)
        .bind(pipeline)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err(shown, "cannot take the pipeline's lock"))?;
    if got {
        return Ok(());
    }
    let holder: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT pid, host FROM ingest.runs WHERE pipeline = $1 AND status = 'running' ORDER BY id DESC LIMIT 1",
    )
    .bind(pipeline)
    .fetch_optional(&mut *conn)
    .await
    .ok()
    .flatten();
    Err(SinkError::Busy {
        pipeline: pipeline.to_string(),
        path: shown.to_string(),
        holder: match holder {
            Some((Some(pid), Some(host))) => format!("pid {pid} on {host}"),
            _ if exclusive => "another process holds its lock".into(),
            _ => "`ingest state reset` holds its lock".into(),
        },
    })
}

/// The column type ingest reads a PostgreSQL type as.
fn from_pg(data_type: &str) -> ColumnType {
    match data_type {
        "bigint" | "integer" | "smallint" => ColumnType::Integer,
        "double precision" | "real" | "numeric" => ColumnType::Real,
        "boolean" => ColumnType::Boolean,
        "jsonb" | "json" => ColumnType::Json,
        t if t.starts_with("timestamp") => ColumnType::Timestamp,
        _ => ColumnType::Text,
    }
}

/// This machine's name, for the run history.
fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A pipeline's writer on PostgreSQL.
pub struct PgSink {
    conn: PgConnection,
    t: Target,
}

/// Everything but the connection, so a transaction can borrow that while
/// these change.
struct Target {
    cfg: PostgresSinkConfig,
    shown: String,
    pipeline: String,
    /// The table the rows go to: the data table, or its staging table.
    target: String,
    staged: bool,
    cols: Columns,
    run_id: i64,
    marks: Option<Marks>,
    /// A `query` partition's mark, moved when the run completes.
    partition_mark: Option<String>,
    /// Columns of the merge batch's temporary table (0: none yet).
    temp_cols: usize,
    /// Until the first batch of a run: look at the table again in that
    /// batch's transaction (and make sure merge has its unique index).
    unchecked: bool,
    shared: Option<shared::Share>,
}

impl PgSink {
    /// Connect, take the pipeline's lock (shared when partitions are
    /// claimed among processes) and, for a shared run, hold the join lock
    /// until [`PgSink::share`] has registered the partitions.
    pub async fn open(
        cfg: &PostgresSinkConfig,
        pipeline: &str,
        partitioned: bool,
    ) -> Result<Self, SinkError> {
        let shown = cfg.shown_url();
        let mut conn = connect(cfg).await?;
        lock_run(&mut conn, &shown, pipeline, !partitioned).await?;
        let shared = if partitioned {
            Some(shared::Share::open(&mut conn, &shown, pipeline, cfg.lease).await?)
        } else {
            None
        };
        Ok(Self {
            conn,
            t: Target {
                cfg: cfg.clone(),
                shown,
                pipeline: pipeline.to_string(),
                target: cfg.table.clone(),
                staged: false,
                cols: Columns::new(&cfg.primary_key, &cfg.columns, MAX_COLUMNS),
                run_id: 0,
                marks: None,
                partition_mark: None,
                temp_cols: 0,
                unchecked: true,
                shared,
            },
        })
    }

    /// The incremental mark and a pending one.
    pub async fn load_marks(&mut self, cursor_field: &str) -> Result<Marks, SinkError> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT value, pending FROM ingest.marks WHERE pipeline = $1")
                .bind(&self.t.pipeline)
                .fetch_optional(&mut self.conn)
                .await
                .map_err(db_err(&self.t.shown, "cannot read the incremental mark"))?;
        let (value, pending) = row.unwrap_or_default();
        let marks = Marks {
            cursor_field: cursor_field.to_string(),
            value,
            pending,
        };
        self.t.marks = Some(marks.clone());
        Ok(marks)
    }

    /// The `query` partition's mark the last completed run left.
    pub async fn partition_mark(&mut self) -> Result<Option<String>, SinkError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT value FROM ingest.marks WHERE pipeline = $1")
                .bind(super::partition_mark_key(&self.t.pipeline))
                .fetch_optional(&mut self.conn)
                .await
                .map_err(db_err(&self.t.shown, "cannot read the partition mark"))?;
        Ok(row.and_then(|r| r.0))
    }

    /// The partition mark this run moves to when it completes.
    pub fn set_partition_mark(&mut self, mark: Option<String>) {
        self.t.partition_mark = mark;
    }

    /// Run a partition query on this database; every value as text.
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<IndexMap<String, String>>, SinkError> {
        let inner = sql.trim().trim_end_matches(';');
        let wrapped = format!("SELECT row_to_json(q)::text FROM ({inner}) AS q");
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(wrapped))
            .fetch_all(&mut self.conn)
            .await
            .map_err(db_err(
                &self.t.shown,
                format!("the partition query failed ({sql})"),
            ))?;
        let mut out = Vec::with_capacity(rows.len());
        for text in rows {
            let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let vars = m
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Null => String::new(),
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
            out.push(vars);
        }
        Ok(out)
    }

    /// The saved resume points: partition → where it resumes (`None`: done).
    pub async fn load_state(&mut self) -> Result<IndexMap<String, Option<Resume>>, SinkError> {
        let rows: Vec<(String, Option<String>, bool)> = sqlx::query_as(
            "SELECT partition, resume, done FROM ingest.state WHERE pipeline = $1 ORDER BY partition",
        )
        .bind(&self.t.pipeline)
        .fetch_all(&mut self.conn)
        .await
        .map_err(db_err(&self.t.shown, "cannot read the resume state"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(p, r, done)| super::parse_state(p, r, done))
            .collect())
    }

    /// The run that started a `--full-refresh` that has not finished.
    pub async fn pending_refresh(&mut self) -> Result<Option<i64>, SinkError> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT run_id FROM ingest.refresh WHERE pipeline = $1")
                .bind(&self.t.pipeline)
                .fetch_optional(&mut self.conn)
                .await
                .map_err(db_err(&self.t.shown, "cannot read the refresh in progress"))?;
        Ok(row.map(|r| r.0.unwrap_or_default()))
    }

    /// Start a `--full-refresh`: forget the resume state and note the
    /// refresh, in one transaction. A process joining a shared run in
    /// progress leaves it be: it joins that run as it is.
    pub async fn start_refresh(&mut self) -> Result<(), SinkError> {
        if let Some(sh) = &self.t.shared
            && sh.active(&mut self.conn, &self.t.shown).await?
        {
            tracing::warn!(
                "a shared run of this pipeline is in progress: joining it as it is instead of starting a --full-refresh"
            );
            return Ok(());
        }
        let shown = self.t.shown.clone();
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(db_err(&shown, "cannot start the refresh"))?;
        sqlx::query("DELETE FROM ingest.state WHERE pipeline = $1")
            .bind(&self.t.pipeline)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&shown, "cannot clear the resume state"))?;
        sqlx::query(
            "INSERT INTO ingest.refresh (pipeline, started_at) VALUES ($1, now()) \
             ON CONFLICT (pipeline) DO UPDATE SET started_at = excluded.started_at",
        )
        .bind(&self.t.pipeline)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&shown, "cannot note the refresh"))?;
        tx.commit()
            .await
            .map_err(db_err(&shown, "cannot start the refresh"))
    }

    /// The staging table's name for a table.
    fn staging_name(table: &str) -> String {
        format!("_ingest_staging__{table}")
    }

    /// Record the run and prepare the target; a shared run is created or
    /// joined here. `fresh`: nothing resumes (a staged load starts empty).
    pub async fn begin_run(&mut self, full_refresh: bool, fresh: bool) -> Result<i64, SinkError> {
        let t = &mut self.t;
        let wanted = full_refresh || t.cfg.write == WriteMode::Replace;
        let (staged, create) = match &mut t.shared {
            Some(sh) => sh.begin(&mut self.conn, &t.shown, wanted).await?,
            None => (wanted, true),
        };
        t.staged = staged;
        t.target = if staged {
            Self::staging_name(&t.cfg.table)
        } else {
            t.cfg.table.clone()
        };
        let shown = t.shown.clone();
        if staged && fresh && create {
            let sql = format!(
                "DROP TABLE IF EXISTS {}",
                qualified(&t.cfg.schema, &t.target)
            );
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut self.conn)
                .await
                .map_err(db_err(&shown, "cannot drop the old staging table"))?;
        }
        t.introspect(&mut self.conn).await?;
        read::close_dead_runs(&mut self.conn, &shown, &t.pipeline).await?;
        if fresh
            && create
            && let Some(m) = t.marks.as_mut()
        {
            m.pending = None;
            sqlx::query("UPDATE ingest.marks SET pending = NULL WHERE pipeline = $1")
                .bind(&t.pipeline)
                .execute(&mut self.conn)
                .await
                .map_err(db_err(&shown, "cannot reset the pending mark"))?;
        }
        t.run_id = sqlx::query_scalar(
            "INSERT INTO ingest.runs (pipeline, status, pid, host, backend_pid, shared_run) \
             VALUES ($1, 'running', $2, $3, pg_backend_pid(), $4) RETURNING id",
        )
        .bind(&t.pipeline)
        .bind(i64::from(std::process::id()))
        .bind(host())
        .bind(t.shared.as_ref().map(|s| s.id))
        .fetch_one(&mut self.conn)
        .await
        .map_err(db_err(&shown, "cannot record the run"))?;
        Ok(t.run_id)
    }

    /// For a shared run: register the walks as partitions and give the
    /// stream of claimed ones, with the heartbeat that keeps the claims.
    /// Not shared: walk them all here.
    pub async fn share(
        &mut self,
        walks: Vec<crate::ledger::Walk>,
    ) -> Result<super::Walks, SinkError> {
        let Some(sh) = &mut self.t.shared else {
            return Ok(super::Walks::Local(walks));
        };
        sh.register(&mut self.conn, &self.t.shown, &walks).await?;
        let claims = shared::Claims::start(&self.t.cfg, sh).await?;
        let (stream, beat) = claims.stream(walks);
        Ok(super::Walks::Shared(stream, beat))
    }

    /// Commit one batch: rows, resume state, rejects and counters together.
    pub async fn write(&mut self, batch: Batch) -> Result<Written, SinkError> {
        let shown = self.t.shown.clone();
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(db_err(&shown, "cannot begin a batch"))?;
        let done = self.t.write_in(&mut tx, batch).await;
        let done = match done {
            Ok(w) => tx
                .commit()
                .await
                .map_err(db_err(&shown, "cannot commit a batch"))
                .map(|()| w),
            Err(e) => Err(e),
        };
        match done {
            Ok((w, pending, finished)) => {
                if let (Some(m), Some(p)) = (self.t.marks.as_mut(), pending) {
                    m.pending = Some(p);
                }
                if let Some(sh) = &self.t.shared {
                    sh.forget(&finished);
                }
                self.t.unchecked = false;
                Ok(w)
            }
            Err(e) => {
                // the transaction rolled back: what was learnt in it is void
                self.t.temp_cols = 0;
                self.t.unchecked = true;
                Err(e)
            }
        }
    }

    /// End the run. On success: swap a staged table in, forget the resume
    /// state, move the mark, in one transaction; in a shared run, only the
    /// process that finds every partition done does that. Otherwise: record
    /// the status and error, keep the state, give the claims back.
    pub async fn finish(
        &mut self,
        status: &str,
        error: Option<&str>,
        retries: u64,
    ) -> Result<(), SinkError> {
        let shown = self.t.shown.clone();
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(db_err(&shown, "cannot begin the final transaction"))?;
        let complete = match (&self.t.shared, status) {
            (_, s) if s != "done" => false,
            (None, _) => true,
            (Some(sh), _) => sh.complete(&mut tx, &shown).await?,
        };
        if complete {
            self.t.complete(&mut tx).await?;
        }
        if let Some(sh) = &self.t.shared {
            sh.release(&mut tx, &shown).await?;
        }
        sqlx::query(
            "UPDATE ingest.runs SET status = $1, error = $2, retries = $3, ended_at = now() WHERE id = $4",
        )
        .bind(status)
        .bind(error)
        .bind(retries as i64)
        .bind(self.t.run_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&shown, "cannot record the run's end"))?;
        tx.commit()
            .await
            .map_err(db_err(&shown, "cannot commit the run's end"))
    }
}

impl Target {
    /// Read the target's columns, if it exists.
    async fn introspect(&mut self, conn: &mut PgConnection) -> Result<(), SinkError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        )
        .bind(&self.cfg.schema)
        .bind(&self.target)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err(&self.shown, "cannot read the table's columns"))?;
        self.cols.clear();
        for (name, ty) in rows {
            self.cols.found(name, from_pg(&ty));
        }
        Ok(())
    }

    /// A batch inside its transaction. Returns what was written, the new
    /// pending mark, and the partitions whose walk it completes.
    async fn write_in(
        &mut self,
        tx: &mut PgConnection,
        batch: Batch,
    ) -> Result<(Written, Option<String>, Vec<String>), SinkError> {
        let Batch {
            records,
            states,
            pages,
            mut rejects,
            max_cursor,
            origins,
            file: _,
        } = batch;
        if self.unchecked || self.cols.brings_new(&records) {
            self.evolve(tx, &records).await?;
        }
        let rows = self.load(tx, &records, &origins, &mut rejects).await?;
        let written = Written {
            rows,
            rejects: rejects.len() as u64,
        };
        self.save_states(tx, &states).await?;
        self.save_rejects(tx, &rejects).await?;
        let pending = self.save_mark(tx, max_cursor).await?;
        sqlx::query(
            "UPDATE ingest.runs SET pages = pages + $1, records = records + $2, rejects = rejects + $3 WHERE id = $4",
        )
        .bind(pages as i64)
        .bind(written.rows as i64)
        .bind(written.rejects as i64)
        .bind(self.run_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.shown, "cannot update the run"))?;
        let finished: Vec<String> = states
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(k, _)| k.to_string())
            .collect();
        if let Some(sh) = &self.shared {
            sh.fence(tx, &self.shown, &states).await?;
        }
        Ok((written, pending, finished))
    }

    /// Under the table's DDL lock: read its columns again (another process
    /// may have added some), then create or widen it for this batch.
    async fn evolve(&mut self, tx: &mut PgConnection, records: &[Value]) -> Result<(), SinkError> {
        let table = qualified(&self.cfg.schema, &self.target);
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(class::DDL)
            .bind(&table)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.shown, "cannot lock the table"))?;
        self.introspect(tx).await?;
        let new_cols = self.cols.evolve(records);
        let mut ddl = Vec::new();
        if !new_cols.is_empty() {
            let defs: Vec<String> = new_cols
                .iter()
                .map(|c| format!("{} {}", quote(&c.name), c.ty.pg()))
                .collect();
            if self.cols.exists {
                ddl.extend(
                    defs.iter()
                        .map(|d| format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {d}")),
                );
            } else {
                ddl.push(format!(
                    "CREATE TABLE IF NOT EXISTS {table} ({})",
                    defs.join(", ")
                ));
            }
        }
        let merge = self.cfg.write == WriteMode::Merge;
        if merge && !self.cols.list.is_empty() && self.cols.has_primary_key() {
            ddl.push(self.pk_index(&self.target));
        }
        for sql in ddl {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .map_err(db_err(
                    &self.shown,
                    format!("cannot evolve the table ({sql})"),
                ))?;
        }
        if !self.cols.list.is_empty() {
            self.cols.exists = true;
        }
        Ok(())
    }

    /// The unique index merge's ON CONFLICT needs, on `table`.
    fn pk_index(&self, table: &str) -> String {
        let cols: Vec<String> = self.cfg.primary_key.iter().map(|k| quote(k)).collect();
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
            quote(&Self::index_name(table, &self.cfg.table)),
            qualified(&self.cfg.schema, table),
            cols.join(", ")
        )
    }

    /// `_ingest_pk_<table>`, or `_ingest_pk_s_<table>` on the staging table.
    fn index_name(target: &str, table: &str) -> String {
        if target == table {
            format!("_ingest_pk_{table}")
        } else {
            format!("_ingest_pk_s_{table}")
        }
    }

    /// The batch's rows; returns how many went in. Appending streams them
    /// to COPY a chunk at a time, so the server reads one chunk while the
    /// next is encoded; merging encodes the whole batch (a key repeated in
    /// it keeps its last record), copies it into a temporary table and
    /// upserts from there.
    async fn load(
        &mut self,
        tx: &mut PgConnection,
        records: &[Value],
        origins: &[super::Origin],
        rejects: &mut Vec<Reject>,
    ) -> Result<u64, SinkError> {
        let merge = self.cfg.write == WriteMode::Merge;
        if merge || self.cols.list.is_empty() || records.is_empty() {
            let rows = copy::encode(&self.cols, merge, records, 0, origins, rejects);
            if rows.count > 0 {
                self.merge(tx, &rows.buf).await?;
            }
            return Ok(rows.count);
        }
        let table = qualified(&self.cfg.schema, &self.target);
        let failed = |e| SinkError::Db {
            path: self.shown.clone(),
            action: format!("cannot copy rows into `{}`", self.cfg.table),
            source: e,
        };
        let mut copy = tx
            .copy_in_raw(&format!("COPY {table} ({}) FROM STDIN", self.names()))
            .await
            .map_err(failed)?;
        let mut count = 0;
        for (i, chunk) in records.chunks(COPY_CHUNK).enumerate() {
            let rows = copy::encode(&self.cols, false, chunk, i * COPY_CHUNK, origins, rejects);
            count += rows.count;
            if !rows.buf.is_empty() {
                copy.send(rows.buf.as_slice()).await.map_err(failed)?;
            }
        }
        copy.finish().await.map_err(failed)?;
        Ok(count)
    }

    /// The quoted column names, in table order.
    fn names(&self) -> String {
        let names: Vec<String> = self.cols.list.iter().map(|c| quote(&c.name)).collect();
        names.join(", ")
    }

    /// Merge: COPY into a temporary table, then one upsert from it.
    async fn merge(&mut self, tx: &mut PgConnection, buf: &[u8]) -> Result<(), SinkError> {
        let table = qualified(&self.cfg.schema, &self.target);
        let names = self.names();
        if self.temp_cols != self.cols.list.len() {
            let sql = format!(
                "DROP TABLE IF EXISTS pg_temp._ingest_batch; \
                 CREATE TEMP TABLE _ingest_batch (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            );
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(db_err(
                    &self.shown,
                    "cannot create the batch's temporary table",
                ))?;
            self.temp_cols = self.cols.list.len();
        }
        let failed = |e| SinkError::Db {
            path: self.shown.clone(),
            action: format!("cannot copy rows into `{}`", self.cfg.table),
            source: e,
        };
        let mut copy = tx
            .copy_in_raw(&format!("COPY pg_temp._ingest_batch ({names}) FROM STDIN"))
            .await
            .map_err(failed)?;
        copy.send(buf).await.map_err(failed)?;
        copy.finish().await.map_err(failed)?;
        let sql = format!(
            "INSERT INTO {table} ({names}) SELECT {names} FROM pg_temp._ingest_batch{}",
            self.cols.upsert_suffix()
        );
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(db_err(
                &self.shown,
                format!("cannot merge rows into `{}`", self.cfg.table),
            ))?;
        Ok(())
    }

    /// Each partition's resume point, in one statement.
    async fn save_states(
        &self,
        tx: &mut PgConnection,
        states: &[(std::sync::Arc<str>, Option<Resume>)],
    ) -> Result<(), SinkError> {
        if states.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = states.iter().map(|(k, _)| k.to_string()).collect();
        let resumes: Vec<Option<String>> = states
            .iter()
            .map(|(_, r)| {
                r.as_ref()
                    .map(|r| serde_json::to_string(r).unwrap_or_default())
            })
            .collect();
        let done: Vec<bool> = states.iter().map(|(_, r)| r.is_none()).collect();
        sqlx::query(
            "INSERT INTO ingest.state (pipeline, partition, resume, done, run_id, updated_at) \
             SELECT $1, u.k, u.r, u.d, $5, now() FROM unnest($2::text[], $3::text[], $4::bool[]) AS u(k, r, d) \
             ON CONFLICT (pipeline, partition) DO UPDATE SET resume = excluded.resume, done = excluded.done, \
             run_id = excluded.run_id, updated_at = excluded.updated_at",
        )
        .bind(&self.pipeline)
        .bind(keys)
        .bind(resumes)
        .bind(done)
        .bind(self.run_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.shown, "cannot save the resume state"))?;
        Ok(())
    }

    /// The batch's rejects, in one statement.
    async fn save_rejects(
        &self,
        tx: &mut PgConnection,
        rejects: &[Reject],
    ) -> Result<(), SinkError> {
        if rejects.is_empty() {
            return Ok(());
        }
        let nul = |s: &str| s.replace('\0', "\\u0000");
        let parts: Vec<String> = rejects.iter().map(|r| r.partition.to_string()).collect();
        let urls: Vec<Option<String>> = rejects.iter().map(|r| r.url.as_deref().map(nul)).collect();
        let statuses: Vec<Option<i32>> = rejects.iter().map(|r| r.status.map(i32::from)).collect();
        let reasons: Vec<String> = rejects.iter().map(|r| nul(&r.reason)).collect();
        let records: Vec<Option<String>> = rejects
            .iter()
            .map(|r| r.record.as_ref().map(|v| v.to_string()))
            .collect();
        sqlx::query(
            "INSERT INTO ingest.rejects (run_id, pipeline, partition, url, status, reason, record) \
             SELECT $1, $2, u.p, u.u, u.s, u.r, u.rec \
             FROM unnest($3::text[], $4::text[], $5::int4[], $6::text[], $7::text[]) AS u(p, u, s, r, rec)",
        )
        .bind(self.run_id)
        .bind(&self.pipeline)
        .bind(parts)
        .bind(urls)
        .bind(statuses)
        .bind(reasons)
        .bind(records)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.shown, "cannot record the rejects"))?;
        Ok(())
    }

    /// Move the pending mark up to the batch's largest cursor. The row is
    /// locked and read in the transaction: the processes of a shared run
    /// each move the same mark.
    async fn save_mark(
        &self,
        tx: &mut PgConnection,
        max_cursor: Option<String>,
    ) -> Result<Option<String>, SinkError> {
        let (Some(m), Some(c)) = (&self.marks, max_cursor) else {
            return Ok(None);
        };
        let now: Option<(Option<String>,)> =
            sqlx::query_as("SELECT pending FROM ingest.marks WHERE pipeline = $1 FOR UPDATE")
                .bind(&self.pipeline)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err(&self.shown, "cannot read the pending mark"))?;
        let before = now.and_then(|r| r.0);
        let pending = crate::source::incremental::max(before.clone(), Some(c));
        if pending == before {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO ingest.marks (pipeline, cursor_field, pending, updated_at) VALUES ($1, $2, $3, now()) \
             ON CONFLICT (pipeline) DO UPDATE SET cursor_field = excluded.cursor_field, pending = excluded.pending, updated_at = excluded.updated_at",
        )
        .bind(&self.pipeline)
        .bind(&m.cursor_field)
        .bind(&pending)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.shown, "cannot save the pending mark"))?;
        Ok(pending)
    }

    /// The run is complete: swap a staged table in, forget the state and
    /// the refresh, move the mark.
    async fn complete(&mut self, tx: &mut PgConnection) -> Result<(), SinkError> {
        if self.staged {
            self.swap(tx).await?;
        }
        for sql in [
            "DELETE FROM ingest.state WHERE pipeline = $1",
            "DELETE FROM ingest.refresh WHERE pipeline = $1",
        ] {
            sqlx::query(sql)
                .bind(&self.pipeline)
                .execute(&mut *tx)
                .await
                .map_err(db_err(
                    &self.shown,
                    format!("cannot finish the run ({sql})"),
                ))?;
        }
        if let Some(v) = &self.partition_mark {
            sqlx::query(
                "INSERT INTO ingest.marks (pipeline, cursor_field, value, updated_at) VALUES ($1, 'partition', $2, now()) \
                 ON CONFLICT (pipeline) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(super::partition_mark_key(&self.pipeline))
            .bind(v)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.shown, "cannot move the partition mark"))?;
        }
        if self.marks.is_some() {
            let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT value, pending FROM ingest.marks WHERE pipeline = $1 FOR UPDATE",
            )
            .bind(&self.pipeline)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err(&self.shown, "cannot read the mark"))?;
            let (value, pending) = row.unwrap_or_default();
            if let Some(v) = crate::source::incremental::max(value, pending) {
                sqlx::query("UPDATE ingest.marks SET value = $2, pending = NULL, updated_at = now() WHERE pipeline = $1")
                    .bind(&self.pipeline)
                    .bind(v)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err(&self.shown, "cannot move the mark"))?;
            }
        }
        Ok(())
    }

    /// Swap the staging table in by rename (readers see the old table or
    /// the new one, never a half-loaded one); with no staging table (the
    /// API had no records) the live table is emptied, its schema kept.
    async fn swap(&mut self, tx: &mut PgConnection) -> Result<(), SinkError> {
        let (schema, table) = (&self.cfg.schema, &self.cfg.table);
        let exists = |name: &str| {
            format!(
                "SELECT to_regclass('{}') IS NOT NULL",
                qualified(schema, name).replace('\'', "''")
            )
        };
        let staging_exists: bool = sqlx::query_scalar(AssertSqlSafe(exists(&self.target)))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err(&self.shown, "cannot look up the staging table"))?;
        let live_exists: bool = sqlx::query_scalar(AssertSqlSafe(exists(table)))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err(&self.shown, "cannot look up the table"))?;
        let stmts: Vec<String> = if staging_exists {
            vec![
                format!("DROP TABLE IF EXISTS {}", qualified(schema, table)),
                format!(
                    "ALTER TABLE {} RENAME TO {}",
                    qualified(schema, &self.target),
                    quote(table)
                ),
                format!(
                    "ALTER INDEX IF EXISTS {} RENAME TO {}",
                    qualified(schema, &Self::index_name(&self.target, table)),
                    quote(&Self::index_name(table, table))
                ),
            ]
        } else if live_exists {
            vec![format!("DELETE FROM {}", qualified(schema, table))]
        } else {
            Vec::new()
        };
        for sql in stmts {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .map_err(db_err(
                    &self.shown,
                    format!("cannot swap the table in ({sql})"),
                ))?;
        }
        self.target = table.clone();
        self.staged = false;
        Ok(())
    }
}
