//! The SQLite sink: the only writer of a pipeline's database.
//!
//! It owns one connection (WAL, `synchronous = NORMAL`), runs the embedded
//! migrations of ingest's own tables, creates and evolves the target table
//! (declared columns first, then fields as they appear; a column is never
//! dropped), and writes each [`Batch`] in one transaction: multi-row
//! INSERT/UPSERT statements within SQLite's bound-parameter limit, the resume
//! state of every partition in the batch, the rejects and the run counters.
//! A crash loses at most the batch in flight, and the state in the database
//! always matches the rows in it. That transaction runs through SQLite's C
//! API on the connection sqlx owns (`sink/bulk.rs`); WAL checkpoints run
//! beside it on a connection of their own (`Checkpointer`).
//!
//! `write = "replace"` (and any `--full-refresh`) loads a staging table and
//! swaps it in by rename in the run's last transaction, so a reader never sees
//! a half-loaded table.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::bulk::{Session, Sql};
use super::columns::{Column, Columns, usable_name};
use super::{Batch, Origin, Reject, SinkError};
use crate::config::{ColumnType, SqliteSinkConfig, WriteMode};
use crate::source::Resume;
use crate::transform::cast;

/// Columns a table may grow to (SQLite's limit is 2000); a record that would
/// add more is rejected instead.
pub const MAX_COLUMNS: usize = 1000;
/// How long a connection waits for another writer's lock before it fails
/// with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// SQL for "now" as RFC 3339 with milliseconds.
pub const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";

/// `"name"` with inner quotes doubled: safe for any identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps a driver error to [`SinkError::Db`] naming the file and the action.
/// A free function so it can be used while a transaction borrows the connection.
pub fn db_err<A: Into<String>>(
    path: &str,
    action: A,
) -> impl FnOnce(sqlx::Error) -> SinkError + use<A> {
    let (path, action): (String, String) = (path.to_string(), action.into());
    move |source| SinkError::Db {
        path,
        action,
        source,
    }
}

/// Create the directory a file goes into, if it is missing.
fn ensure_parent(path: &Path) -> Result<(), SinkError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| {
            SinkError::Schema(format!(
                "{}: cannot create the directory: {e}",
                dir.display()
            ))
        }),
        None => Ok(()),
    }
}

/// Open (creating the file and its directory if needed) and migrate.
pub async fn connect(path: &Path) -> Result<SqliteConnection, SinkError> {
    let shown = path.display().to_string();
    ensure_parent(path)?;
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT);
    let mut conn = SqliteConnection::connect_with(&opts)
        .await
        .map_err(db_err(&shown, "cannot open the database"))?;
    sqlx::migrate!("./migrations")
        .run(&mut conn)
        .await
        .map_err(|source| SinkError::Migrate {
            path: shown,
            source,
        })?;
    Ok(conn)
}

/// Hold the lock of one pipeline on one database for the life of the
/// returned file: an OS advisory lock (flock), released by the kernel when
/// the process ends however it ends, so a SIGKILLed run never leaves a stale
/// lock behind. The file sits beside the database and names the holder.
pub fn lock_pipeline(db: &Path, pipeline: &str) -> Result<std::fs::File, SinkError> {
    use std::io::{Read, Seek, Write};
    let safe: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{safe}.lock"));
    let path = db.with_file_name(name);
    ensure_parent(&path)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            SinkError::Schema(format!(
                "{}: cannot open the lock file: {e}",
                path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "pid {}", std::process::id());
            let _ = file.flush();
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(SinkError::Busy {
                pipeline: pipeline.to_string(),
                path: db.display().to_string(),
                holder: if holder.trim().is_empty() {
                    "another process".into()
                } else {
                    holder.trim().to_string()
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(SinkError::Schema(format!(
            "{}: cannot lock: {e}",
            path.display()
        ))),
    }
}

/// Open an existing database read-only (for `state`, `runs`, `show`).
pub async fn open_existing(path: &Path) -> Result<SqliteConnection, SinkError> {
    if !path.exists() {
        return Err(SinkError::Schema(format!(
            "{}: no database yet; `ingest run` creates it",
            path.display()
        )));
    }
    connect(path).await
}

/// A pipeline's writer.
pub struct SqliteSink {
    conn: SqliteConnection,
    path: String,
    pipeline: String,
    table: String,
    target: String,
    mode: WriteMode,
    staged: bool,
    primary_key: Vec<String>,
    cols: Columns,
    run_id: i64,
    marks: Option<Marks>,
    /// A `query` partition's mark, moved when the run completes.
    partition_mark: Option<String>,
    checkpointer: Checkpointer,
}

/// WAL frames after which the writer checkpoints in its own commit, should
/// the [`Checkpointer`] fall behind (SQLite's default is 1,000: ~4 MB).
const WRITER_CHECKPOINT_FRAMES: u32 = 10_000;
/// The shortest pause between two background checkpoints. Measured on 1M
/// rows: at 50 ms the writer still crossed its own threshold every ~0.3 s
/// and stalled 25–40 ms on each checkpoint's fsyncs (~170 ms a run); at 5 ms
/// the background nearly keeps up, the WAL restarts when it does, and the
/// writer's stalls add up to ~30 ms (end to end −6%).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);

/// Copies committed pages from the WAL into the database file on a
/// connection of its own, while the writer goes on. SQLite's automatic
/// checkpoint runs inside whichever commit crosses the threshold, and so
/// stalls the writer: a third of the write time of a bulk load (`make
/// bench`). PASSIVE checkpoints never block the writer and never wait for
/// it; the writer still checkpoints itself at [`WRITER_CHECKPOINT_FRAMES`],
/// which then finds little left to copy.
struct Checkpointer {
    wake: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Self {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        // the database exists and is in WAL mode already (`connect`)
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT);
        let task = tokio::spawn({
            let wake = wake.clone();
            async move {
                let mut conn = match SqliteConnection::connect_with(&opts).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "no background checkpoints: the writer checkpoints");
                        return;
                    }
                };
                loop {
                    wake.notified().await;
                    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                        .execute(&mut conn)
                        .await
                    {
                        tracing::debug!(error = %e, "background checkpoint failed: the writer checkpoints");
                        return;
                    }
                    tokio::time::sleep(CHECKPOINT_EVERY).await;
                }
            }
        });
        Self { wake, task }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The incremental mark of a pipeline, as the sink keeps it.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// Dotted path of the cursor in each record.
    pub cursor_field: String,
    /// The mark of the last completed run.
    pub value: Option<String>,
    /// The largest cursor committed by the run in progress.
    pub pending: Option<String>,
}

/// What one committed batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// Rows written.
    pub rows: u64,
    /// Records and pages rejected.
    pub rejects: u64,
}

/// A ledger statement of a batch, with its values and what it does.
struct Statement<'a> {
    action: &'static str,
    sql: String,
    values: Vec<Sql<'a>>,
}

/// The rows of a batch and the statements that put them in the table.
struct Table<'a> {
    ddl: &'a [String],
    prefix: &'a str,
    suffix: &'a str,
    ncols: usize,
    rows: &'a [Sql<'a>],
}

/// A partition's resume state (`{NOW}` stands for [`NOW`]).
const STATE_SQL: &str = "INSERT INTO _ingest_state (pipeline, partition, resume, done, run_id, updated_at) VALUES (?, ?, ?, ?, ?, {NOW}) \
     ON CONFLICT (pipeline, partition) DO UPDATE SET resume = excluded.resume, done = excluded.done, \
     run_id = excluded.run_id, updated_at = excluded.updated_at";
/// A reject.
const REJECT_SQL: &str = "INSERT INTO _ingest_rejects (run_id, pipeline, partition, url, status, reason, record, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, {NOW})";
/// The pending incremental mark.
const MARK_SQL: &str = "INSERT INTO _ingest_marks (pipeline, cursor_field, pending, updated_at) VALUES (?, ?, ?, {NOW}) \
     ON CONFLICT (pipeline) DO UPDATE SET cursor_field = excluded.cursor_field, pending = excluded.pending, updated_at = excluded.updated_at";
/// A file sink's committed length.
const FILE_SQL: &str = "INSERT INTO _ingest_files (pipeline, length, staged, run_id, updated_at) VALUES (?, ?, ?, ?, {NOW}) \
     ON CONFLICT (pipeline) DO UPDATE SET length = excluded.length, staged = excluded.staged, \
     run_id = excluded.run_id, updated_at = excluded.updated_at";
/// The run's counters.
const RUN_SQL: &str = "UPDATE _ingest_runs SET pages = pages + ?, records = records + ?, rejects = rejects + ? WHERE id = ?";

impl SqliteSink {
    /// Connect and migrate.
    pub async fn open(cfg: &SqliteSinkConfig, pipeline: &str) -> Result<Self, SinkError> {
        let mut conn = connect(&cfg.path).await?;
        sqlx::query(AssertSqlSafe(format!(
            "PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_FRAMES}"
        )))
        .execute(&mut conn)
        .await
        .map_err(db_err(
            &cfg.path.display().to_string(),
            "cannot set up checkpoints",
        ))?;
        Ok(Self {
            checkpointer: Checkpointer::start(&cfg.path),
            conn,
            path: cfg.path.display().to_string(),
            pipeline: pipeline.to_string(),
            table: cfg.table.clone(),
            target: cfg.table.clone(),
            mode: cfg.write,
            staged: false,
            primary_key: cfg.primary_key.clone(),
            cols: Columns::new(&cfg.primary_key, &cfg.columns, MAX_COLUMNS),
            run_id: 0,
            marks: None,
            partition_mark: None,
        })
    }

    /// Read the incremental mark (and a pending one left by an unfinished run).
    pub async fn load_marks(&mut self, cursor_field: &str) -> Result<Marks, SinkError> {
        let row = sqlx::query("SELECT value, pending FROM _ingest_marks WHERE pipeline = ?")
            .bind(&self.pipeline)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(db_err(&self.path, "cannot read the incremental mark"))?;
        let (value, pending) = match row {
            Some(r) => (
                r.try_get(0).unwrap_or_default(),
                r.try_get(1).unwrap_or_default(),
            ),
            None => (None, None),
        };
        let marks = Marks {
            cursor_field: cursor_field.to_string(),
            value,
            pending,
        };
        self.marks = Some(marks.clone());
        Ok(marks)
    }

    /// The `query` partition's mark the last completed run left.
    pub async fn partition_mark(&mut self) -> Result<Option<String>, SinkError> {
        let row = sqlx::query("SELECT value FROM _ingest_marks WHERE pipeline = ?")
            .bind(super::partition_mark_key(&self.pipeline))
            .fetch_optional(&mut self.conn)
            .await
            .map_err(db_err(&self.path, "cannot read the partition mark"))?;
        Ok(row.and_then(|r| r.try_get(0).ok()).flatten())
    }

    /// The partition mark this run moves to when it completes.
    pub fn set_partition_mark(&mut self, mark: Option<String>) {
        self.partition_mark = mark;
    }

    /// Run a partition query on this database; every value as text.
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<IndexMap<String, String>>, SinkError> {
        use sqlx::{Column, ValueRef};
        let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut self.conn)
            .await
            .map_err(db_err(
                &self.path,
                format!("the partition query failed ({sql})"),
            ))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut vars = IndexMap::new();
            for (i, c) in r.columns().iter().enumerate() {
                let null = r.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true);
                let text = if null {
                    String::new()
                } else if let Ok(v) = r.try_get::<i64, _>(i) {
                    v.to_string()
                } else if let Ok(v) = r.try_get::<f64, _>(i) {
                    v.to_string()
                } else {
                    r.try_get::<String, _>(i).unwrap_or_default()
                };
                vars.insert(c.name().to_string(), text);
            }
            out.push(vars);
        }
        Ok(out)
    }

    /// The run's id in `_ingest_runs`.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The staging table's name for a table.
    pub fn staging_name(table: &str) -> String {
        format!("_ingest_staging__{table}")
    }

    /// Record the run and prepare the target. `fresh` means no partition
    /// resumes (a staged load then starts from an empty staging table).
    pub async fn begin_run(&mut self, full_refresh: bool, fresh: bool) -> Result<i64, SinkError> {
        self.staged = full_refresh || self.mode == WriteMode::Replace;
        self.target = if self.staged {
            Self::staging_name(&self.table)
        } else {
            self.table.clone()
        };
        if self.staged && fresh {
            let sql = format!("DROP TABLE IF EXISTS {}", quote(&self.target));
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut self.conn)
                .await
                .map_err(db_err(&self.path, "cannot drop the old staging table"))?;
        }
        self.introspect().await?;
        // the caller holds the pipeline's lock: a run still marked running died
        let sql = format!(
            "UPDATE _ingest_runs SET status = 'killed', ended_at = {NOW}, \
             error = 'the process ended without finishing the run' WHERE pipeline = ? AND status = 'running'"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&self.pipeline)
            .execute(&mut self.conn)
            .await
            .map_err(db_err(&self.path, "cannot close runs that died"))?;
        if fresh && let Some(m) = self.marks.as_mut() {
            m.pending = None;
            sqlx::query("UPDATE _ingest_marks SET pending = NULL WHERE pipeline = ?")
                .bind(&self.pipeline)
                .execute(&mut self.conn)
                .await
                .map_err(db_err(&self.path, "cannot reset the pending mark"))?;
        }
        let sql = format!(
            "INSERT INTO _ingest_runs (pipeline, started_at, status, pid) VALUES (?, {NOW}, 'running', ?) RETURNING id"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.pipeline)
            .bind(i64::from(std::process::id()))
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_err(&self.path, "cannot record the run"))?;
        self.run_id = row
            .try_get::<i64, _>(0)
            .map_err(db_err(&self.path, "cannot read the run id"))?;
        Ok(self.run_id)
    }

    /// Read the target's columns, if it exists.
    async fn introspect(&mut self) -> Result<(), SinkError> {
        let sql = format!(
            "SELECT name, type FROM pragma_table_info({})",
            sql_string(&self.target)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&mut self.conn)
            .await
            .map_err(db_err(&self.path, "cannot read the table's columns"))?;
        self.cols.clear();
        for r in rows {
            let name: String = r
                .try_get(0)
                .map_err(db_err(&self.path, "cannot read the table's columns"))?;
            let decl: String = r.try_get(1).unwrap_or_default();
            self.cols.found(name, from_decl(&decl));
        }
        Ok(())
    }

    /// The saved resume points of this pipeline: partition → resume
    /// (`None` = that partition's walk finished in an interrupted run).
    pub async fn load_state(&mut self) -> Result<IndexMap<String, Option<Resume>>, SinkError> {
        let rows = sqlx::query("SELECT partition, resume, done FROM _ingest_state WHERE pipeline = ? ORDER BY partition")
            .bind(&self.pipeline)
            .fetch_all(&mut self.conn)
            .await
            .map_err(db_err(&self.path, "cannot read the resume state"))?;
        let mut out = IndexMap::new();
        for r in rows {
            let partition: String = r
                .try_get(0)
                .map_err(db_err(&self.path, "cannot read the resume state"))?;
            let resume: Option<String> = r
                .try_get(1)
                .map_err(db_err(&self.path, "cannot read the resume state"))?;
            let done: i64 = r.try_get(2).unwrap_or(0);
            if let Some((k, v)) = super::parse_state(partition, resume, done != 0) {
                out.insert(k, v);
            }
        }
        Ok(out)
    }

    /// The run that started a `--full-refresh` that has not finished yet.
    pub async fn pending_refresh(&mut self) -> Result<Option<i64>, SinkError> {
        let row = sqlx::query("SELECT run_id FROM _ingest_refresh WHERE pipeline = ?")
            .bind(&self.pipeline)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(db_err(&self.path, "cannot read the refresh in progress"))?;
        Ok(row.map(|r| r.try_get::<i64, _>(0).unwrap_or_default()))
    }

    /// Start a `--full-refresh`: forget the resume state and note the
    /// refresh, in one transaction, so an interrupted refresh is finished
    /// by the next run instead of continuing into the live table.
    pub async fn start_refresh(&mut self) -> Result<(), SinkError> {
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(db_err(&self.path, "cannot start the refresh"))?;
        sqlx::query("DELETE FROM _ingest_state WHERE pipeline = ?")
            .bind(&self.pipeline)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.path, "cannot clear the resume state"))?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO _ingest_refresh (pipeline, started_at) VALUES (?, {NOW}) \
             ON CONFLICT (pipeline) DO UPDATE SET started_at = excluded.started_at"
        )))
        .bind(&self.pipeline)
        .execute(&mut *tx)
        .await
        .map_err(db_err(&self.path, "cannot note the refresh"))?;
        tx.commit()
            .await
            .map_err(db_err(&self.path, "cannot start the refresh"))
    }

    /// Commit one batch: rows, state, rejects and run counters together.
    pub async fn write(&mut self, batch: Batch) -> Result<Written, SinkError> {
        let Batch {
            records,
            states,
            pages,
            mut rejects,
            max_cursor,
            origins,
            file,
        } = batch;
        let new_cols = self.cols.evolve(&records);
        let rows = self.rows(&records, &origins, &mut rejects);
        let ddl = self.ddl(&new_cols);
        let prefix = self.insert_prefix();
        let suffix = self.upsert_suffix();
        if !self.cols.list.is_empty() {
            self.cols.exists = true;
        }
        let ncols = self.cols.list.len().max(1);
        let written = Written {
            rows: (rows.len() / ncols) as u64,
            rejects: rejects.len() as u64,
        };
        let (mut ledger, new_pending) = self.ledger(
            &states,
            &rejects,
            max_cursor,
            pages,
            Written {
                rows: written.rows + file.map_or(0, |f| f.rows),
                ..written
            },
        );
        if let Some(f) = file {
            ledger.push(self.file_statement(f));
        }
        let table = Table {
            ddl: &ddl,
            prefix: &prefix,
            suffix: &suffix,
            ncols,
            rows: &rows,
        };
        self.transact(&table, &ledger, written).await?;
        self.checkpointer.wake.notify_one();
        if let (Some(m), Some(p)) = (self.marks.as_mut(), new_pending) {
            m.pending = Some(p);
        }
        Ok(Written {
            rows: written.rows + file.map_or(0, |f| f.rows),
            ..written
        })
    }

    /// A file sink's committed length, as a ledger statement.
    fn file_statement(&self, f: super::FileCommit) -> Statement<'static> {
        Statement {
            action: "cannot save the file's committed length",
            sql: FILE_SQL.replace("{NOW}", NOW),
            values: vec![
                Sql::Text(self.pipeline.clone().into()),
                Sql::Int(f.length as i64),
                Sql::Int(i64::from(f.staged)),
                Sql::Int(self.run_id),
            ],
        }
    }

    /// A file sink's committed length and whether it is the staging file's
    /// (none before the file's first run, and after a run completes).
    pub async fn file_length(&mut self) -> Result<Option<(u64, bool)>, SinkError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT length, staged FROM _ingest_files WHERE pipeline = ?")
                .bind(&self.pipeline)
                .fetch_optional(&mut self.conn)
                .await
                .map_err(db_err(
                    &self.path,
                    "cannot read the file's committed length",
                ))?;
        Ok(row.map(|(l, s)| (l.max(0) as u64, s != 0)))
    }

    /// Save a file sink's committed length outside a batch: the length a
    /// run starts from, before it writes anything.
    pub async fn set_file_length(&mut self, length: u64, staged: bool) -> Result<(), SinkError> {
        sqlx::query(AssertSqlSafe(FILE_SQL.replace("{NOW}", NOW)))
            .bind(&self.pipeline)
            .bind(length as i64)
            .bind(i64::from(staged))
            .bind(self.run_id)
            .execute(&mut self.conn)
            .await
            .map_err(db_err(
                &self.path,
                "cannot save the file's committed length",
            ))?;
        Ok(())
    }

    /// The batch's ledger statements with their values: each partition's
    /// resume state, the rejects, the pending mark (when it moves), the run
    /// counters. Also returns the new pending mark.
    fn ledger<'a>(
        &self,
        states: &'a [(std::sync::Arc<str>, Option<crate::source::Resume>)],
        rejects: &'a [Reject],
        max_cursor: Option<String>,
        pages: u64,
        written: Written,
    ) -> (Vec<Statement<'a>>, Option<String>) {
        let text = |s: &str| Sql::Text(s.to_owned().into());
        let opt_text = |s: Option<String>| s.map_or(Sql::Null, |s| Sql::Text(s.into()));
        let mut out: Vec<Statement<'a>> = Vec::new();
        for (partition, resume) in states {
            let done = resume.is_none();
            let resume = resume
                .as_ref()
                .map(|r| serde_json::to_string(r).unwrap_or_default());
            out.push(Statement {
                action: "cannot save the resume state",
                sql: STATE_SQL.replace("{NOW}", NOW),
                values: vec![
                    text(&self.pipeline),
                    text(partition),
                    opt_text(resume),
                    Sql::Int(i64::from(done)),
                    Sql::Int(self.run_id),
                ],
            });
        }
        for r in rejects {
            out.push(Statement {
                action: "cannot record a reject",
                sql: REJECT_SQL.replace("{NOW}", NOW),
                values: vec![
                    Sql::Int(self.run_id),
                    text(&self.pipeline),
                    text(&r.partition),
                    opt_text(r.url.clone()),
                    r.status.map_or(Sql::Null, |s| Sql::Int(i64::from(s))),
                    text(&r.reason),
                    opt_text(r.record.as_ref().map(|v| v.to_string())),
                ],
            });
        }
        let mut new_pending = None;
        if let (Some(m), Some(c)) = (&self.marks, max_cursor) {
            let pending = crate::source::incremental::max(m.pending.clone(), Some(c));
            if pending != m.pending {
                out.push(Statement {
                    action: "cannot save the pending mark",
                    sql: MARK_SQL.replace("{NOW}", NOW),
                    values: vec![
                        text(&self.pipeline),
                        text(&m.cursor_field),
                        opt_text(pending.clone()),
                    ],
                });
                new_pending = pending;
            }
        }
        out.push(Statement {
            action: "cannot update the run",
            sql: RUN_SQL.to_string(),
            values: vec![
                Sql::Int(pages as i64),
                Sql::Int(written.rows as i64),
                Sql::Int(written.rejects as i64),
                Sql::Int(self.run_id),
            ],
        });
        (out, new_pending)
    }

    /// One transaction, on the connection locked from sqlx (see bulk.rs):
    /// the DDL, the rows, the ledger.
    async fn transact(
        &mut self,
        table: &Table<'_>,
        ledger: &[Statement<'_>],
        written: Written,
    ) -> Result<(), SinkError> {
        let (path, name) = (&self.path, &self.table);
        let failed = |action: String, source| SinkError::Sqlite {
            path: path.clone(),
            action,
            source,
        };
        let mut handle = self
            .conn
            .lock_handle()
            .await
            .map_err(db_err(path, "cannot lock the connection"))?;
        // About a millisecond per 1,000 rows, run on this task's worker
        // thread. `block_in_place` was measured slower (end to end ~2.1 s
        // against ~1.8 s for 1M rows) and heavier (peak RSS +8 MB): each
        // call hands the worker to another thread, and every thread keeps
        // an allocator heap of its own.
        Session::new(&mut handle).transaction(
            |s| {
                for sql in table.ddl {
                    s.exec(sql, &[])
                        .map_err(|e| failed(format!("cannot evolve the table ({sql})"), e))?;
                }
                if written.rows > 0 {
                    s.insert(table.prefix, table.suffix, table.ncols, table.rows)
                        .map_err(|e| {
                            failed(
                                format!("cannot write {} rows into `{name}`", written.rows),
                                e,
                            )
                        })?;
                }
                for st in ledger {
                    s.exec(&st.sql, &st.values)
                        .map_err(|e| failed(st.action.to_string(), e))?;
                }
                Ok(())
            },
            |action, e| failed(action.to_string(), e),
        )
    }

    /// CREATE TABLE, or ALTER TABLE ADD COLUMN for each new column, and the
    /// unique index that merge needs.
    fn ddl(&self, new_cols: &[Column]) -> Vec<String> {
        let mut out = Vec::new();
        if new_cols.is_empty() && self.cols.exists {
            return out;
        }
        if !self.cols.exists {
            if self.cols.list.is_empty() {
                return out;
            }
            let cols: Vec<String> = self
                .cols
                .list
                .iter()
                .map(|c| format!("{} {}", quote(&c.name), c.ty.sql()))
                .collect();
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                quote(&self.target),
                cols.join(", ")
            ));
        } else {
            for c in new_cols {
                out.push(format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    quote(&self.target),
                    quote(&c.name),
                    c.ty.sql()
                ));
            }
        }
        if self.mode == WriteMode::Merge && self.cols.has_primary_key() {
            out.push(self.pk_index(&self.target));
        }
        out
    }

    fn pk_index(&self, table: &str) -> String {
        let cols: Vec<String> = self.primary_key.iter().map(|k| quote(k)).collect();
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
            quote(&format!("_ingest_pk_{table}")),
            quote(table),
            cols.join(", ")
        )
    }

    fn insert_prefix(&self) -> String {
        let cols: Vec<String> = self.cols.list.iter().map(|c| quote(&c.name)).collect();
        format!("INSERT INTO {} ({}) ", quote(&self.target), cols.join(", "))
    }

    fn upsert_suffix(&self) -> String {
        if self.mode != WriteMode::Merge {
            return String::new();
        }
        self.cols.upsert_suffix()
    }

    /// Records to rows in column order; what cannot be stored is rejected.
    fn rows<'r>(
        &self,
        records: &'r [Value],
        origins: &[Origin],
        rejects: &mut Vec<Reject>,
    ) -> Vec<Sql<'r>> {
        let ncols = self.cols.list.len();
        let mut flat: Vec<Sql<'r>> = Vec::with_capacity(records.len() * ncols);
        // stamp[i] == record number: column i already set by this record
        let mut stamp = vec![usize::MAX; ncols];
        let mut prev: Vec<(&'r str, Option<usize>)> = Vec::new();
        for (n, r) in records.iter().enumerate() {
            let start = flat.len();
            let stored = match r {
                Value::Object(_) if ncols == 0 => {
                    Err("a record with no fields has nothing to store".to_string())
                }
                Value::Object(m) => {
                    flat.extend((0..ncols).map(|_| Sql::Null));
                    self.row(n, m, &mut flat[start..], &mut stamp, &mut prev)
                }
                other => Err(format!(
                    "a record must be a JSON object, found {}",
                    crate::source::type_name(other)
                )),
            };
            if let Err(reason) = stored {
                flat.truncate(start);
                rejects.push(Reject::record(origins, n, reason, r));
            }
        }
        flat
    }

    /// One record (number `n` of the batch) into its row's `cells`, or why
    /// it cannot be stored. `prev` maps the previous record's keys to
    /// columns, reused while keys repeat.
    fn row<'r>(
        &self,
        n: usize,
        m: &'r serde_json::Map<String, Value>,
        cells: &mut [Sql<'r>],
        stamp: &mut [usize],
        prev: &mut Vec<(&'r str, Option<usize>)>,
    ) -> Result<(), String> {
        if m.len() != prev.len() || !m.keys().zip(prev.iter()).all(|(k, (p, _))| k == p) {
            prev.clear();
            prev.extend(m.keys().map(|k| (k.as_str(), self.cols.position(k))));
        }
        for (j, (k, v)) in m.iter().enumerate() {
            if !usable_name(k) {
                return Err(format!(
                    "field name {k:?} cannot be a column name (empty or holds a NUL)"
                ));
            }
            let Some(i) = prev[j].1 else {
                return Err(format!(
                    "field {k:?} would make the table wider than {MAX_COLUMNS} columns"
                ));
            };
            if stamp[i] == n {
                return Err(format!(
                    "fields {:?} and {k:?} differ only in case, and SQLite column names do not",
                    self.cols.list[i].name
                ));
            }
            stamp[i] = n;
            let col = &self.cols.list[i];
            cells[i] = to_sql(v, col)
                .map_err(|reason| format!("column `{}` ({}): {reason}", col.name, col.ty.name()))?;
        }
        if self.mode == WriteMode::Merge {
            let missing = self.cols.pk_cols.len() < self.primary_key.len()
                || self
                    .cols
                    .pk_cols
                    .iter()
                    .any(|&i| matches!(cells[i], Sql::Null));
            if missing {
                return Err(format!(
                    "a primary key field ({}) is missing or null",
                    self.primary_key.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The statements that swap the staging table in by rename (with the
    /// merge index), or empty the live table when the API had no records.
    fn swap(&self, live: bool) -> Vec<String> {
        if !self.cols.exists {
            return if live {
                vec![format!("DELETE FROM {}", quote(&self.table))]
            } else {
                Vec::new()
            };
        }
        let mut stmts = vec![
            format!("DROP TABLE IF EXISTS {}", quote(&self.table)),
            format!(
                "ALTER TABLE {} RENAME TO {}",
                quote(&self.target),
                quote(&self.table)
            ),
            format!(
                "DROP INDEX IF EXISTS {}",
                quote(&format!("_ingest_pk_{}", self.target))
            ),
        ];
        if self.mode == WriteMode::Merge {
            stmts.push(self.pk_index(&self.table));
        }
        stmts
    }

    /// End the run. On success: swap a staged table in, forget the resume
    /// state, mark the run done, all in one transaction. Otherwise: record
    /// the status and error, keep the state.
    pub async fn finish(
        &mut self,
        status: &str,
        error: Option<&str>,
        retries: u64,
    ) -> Result<(), SinkError> {
        // which of the two depends on the live table, looked up in the transaction
        let (swap_live, swap_none) = (self.swap(true), self.swap(false));
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(db_err(&self.path, "cannot begin the final transaction"))?;
        let mut stmts: Vec<String> = Vec::new();
        if status == "done" {
            if self.staged {
                // the API had no records: the table is emptied, its schema kept
                let live =
                    sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
                        .bind(&self.table)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err(&self.path, "cannot look up the table"))?
                        .is_some();
                stmts.extend(if live { swap_live } else { swap_none });
            }
            stmts.push("DELETE FROM _ingest_state WHERE pipeline = ?1".into());
            stmts.push("DELETE FROM _ingest_refresh WHERE pipeline = ?1".into());
            stmts.push("DELETE FROM _ingest_files WHERE pipeline = ?1".into());
            if let Some(v) = &self.partition_mark {
                stmts.push(format!(
                    "INSERT INTO _ingest_marks (pipeline, cursor_field, value, pending, updated_at) VALUES ({}, 'partition', {}, NULL, {NOW}) \
                     ON CONFLICT (pipeline) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    sql_string(&super::partition_mark_key(&self.pipeline)),
                    sql_string(v)
                ));
            }
            if let Some(m) = &self.marks {
                let value = crate::source::incremental::max(m.value.clone(), m.pending.clone());
                if let Some(v) = value {
                    stmts.push(format!(
                        "INSERT INTO _ingest_marks (pipeline, cursor_field, value, pending, updated_at) VALUES (?1, {}, {}, NULL, {NOW}) \
                         ON CONFLICT (pipeline) DO UPDATE SET cursor_field = excluded.cursor_field, value = excluded.value, pending = NULL, updated_at = excluded.updated_at",
                        sql_string(&m.cursor_field),
                        sql_string(&v)
                    ));
                }
            }
        }
        for sql in stmts {
            let q = sqlx::query(AssertSqlSafe(sql.clone()));
            let q = if sql.contains("?1") {
                q.bind(&self.pipeline)
            } else {
                q
            };
            q.execute(&mut *tx)
                .await
                .map_err(db_err(&self.path, format!("cannot finish the run ({sql})")))?;
        }
        let sql = format!(
            "UPDATE _ingest_runs SET status = ?, error = ?, retries = ?, ended_at = {NOW} WHERE id = ?"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(status)
            .bind(error)
            .bind(retries as i64)
            .bind(self.run_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(&self.path, "cannot record the run's end"))?;
        tx.commit()
            .await
            .map_err(db_err(&self.path, "cannot commit the run's end"))?;
        if status == "done" && self.staged {
            self.target = self.table.clone();
            self.staged = false;
        }
        Ok(())
    }
}

/// A string literal for SQL text (only for names we already validated).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Whether SQLite's INTEGER or REAL affinity would turn this text into a
/// number: a decimal literal (sign, digits, point, exponent) between
/// optional white space. Hex literals stay text. Checked against SQLite
/// itself in the tests below.
pub fn numeric_text(s: &str) -> bool {
    let t = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut n = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn from_decl(decl: &str) -> ColumnType {
    let d = decl.to_ascii_uppercase();
    if d.contains("INT") {
        ColumnType::Integer
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        ColumnType::Real
    } else {
        ColumnType::Text
    }
}

/// One value for one column. Declared columns convert or fail; inferred ones
/// store what came, by its JSON type (SQLite's flexible typing).
fn to_sql<'a>(v: &'a Value, col: &Column) -> Result<Sql<'a>, String> {
    if v.is_null() {
        return Ok(Sql::Null);
    }
    if col.ty == ColumnType::Json {
        return Ok(Sql::Text(v.to_string().into()));
    }
    if col.strict {
        let converted = cast::convert(v, col.ty)
            .ok_or_else(|| format!("{} does not convert", cast::short(v)))?;
        return Ok(match converted {
            Value::Bool(b) => Sql::Int(i64::from(b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Sql::Int(i),
                None => match n.as_f64() {
                    Some(f) if col.ty == ColumnType::Real => Sql::Real(f),
                    _ => return Err(format!("{n} is out of range for a 64-bit integer")),
                },
            },
            Value::String(s) => Sql::Text(s.into()),
            Value::Null => Sql::Null,
            other => Sql::Text(other.to_string().into()),
        });
    }
    // inferred columns take what comes, but never let SQLite's type affinity
    // change a value: numbers into TEXT columns go as exact text (SQLite
    // would print a REAL with 15 digits), and a number an INTEGER or REAL
    // column cannot hold exactly is rejected rather than rounded
    let text_column = matches!(col.ty, ColumnType::Text | ColumnType::Timestamp);
    Ok(match v {
        Value::Bool(b) if text_column => Sql::Text(if *b { "true" } else { "false" }.into()),
        Value::Bool(b) => Sql::Int(i64::from(*b)),
        Value::Number(n) if text_column => Sql::Text(n.to_string().into()),
        // SQLite stores a REAL that is a whole number as an INTEGER there
        Value::Number(n)
            if col.ty != ColumnType::Real
                && !n.is_i64()
                && !n.is_u64()
                && n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.2e18) =>
        {
            return Err(format!(
                "{n} would be stored as the integer {} by SQLite's type affinity; declare the column as real in [sink.columns] to keep such values",
                n.as_f64().unwrap_or_default() as i64
            ));
        }
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if col.ty == ColumnType::Real && i.unsigned_abs() > (1 << 53) => {
                return Err(format!("{i} cannot be held exactly by a REAL column"));
            }
            (Some(i), _) if col.ty == ColumnType::Real => Sql::Real(i as f64),
            (Some(i), _) => Sql::Int(i),
            (None, _) if n.is_u64() => {
                return Err(format!(
                    "{n} is beyond the 64-bit range of a numeric column"
                ));
            }
            (None, Some(f)) => Sql::Real(f),
            (None, None) => Sql::Text(n.to_string().into()),
        },
        Value::String(s) if !text_column && numeric_text(s) => {
            return Err(format!(
                "the string {} would be stored as a number by SQLite's type affinity; declare the column as text in [sink.columns] to keep such values as sent",
                cast::short(v)
            ));
        }
        Value::String(s) => Sql::Text(s.as_str().into()),
        Value::Array(_) | Value::Object(_) => Sql::Text(v.to_string().into()),
        Value::Null => Sql::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `numeric_text` says exactly what SQLite's affinity does.
    #[tokio::test]
    async fn numeric_text_agrees_with_sqlite() {
        let mut conn = SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("CREATE TABLE t (i INTEGER, r REAL)")
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let samples = [
            "007",
            "42",
            " 42 ",
            "\t7\n",
            "1e3",
            "1E+3",
            "1.5",
            "-3",
            "+4",
            ".5",
            "5.",
            "0x1A",
            "abc",
            "12abc",
            "",
            " ",
            "1e",
            "--1",
            "1_000",
            "Inf",
            "NaN",
            "-",
            ".",
            "1.0",
            "9223372036854775808",
            "123456789012345678901234567890",
            "1 2",
            "e5",
            "+.5e-2",
        ];
        for text in samples {
            let (i, r): (String, String) =
                sqlx::query_as("INSERT INTO t VALUES (?1, ?1) RETURNING typeof(i), typeof(r)")
                    .bind(text)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            let converted = i != "text";
            assert_eq!(converted, r != "text", "{text:?}");
            assert_eq!(numeric_text(text), converted, "{text:?}: SQLite gives {i}");
        }
    }
}
