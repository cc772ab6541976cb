//! The JSON Lines sink (`kind = "jsonl"`): one record per line, in a file
//! or on standard output (`path = "-"`, for `ingest run p.toml | jq`).
//!
//! A file keeps the same promise as a table. Its ledger (resume points,
//! marks, runs, rejects) is a SQLite file beside it, `<file>.ingest.db`,
//! with the same tables as the SQLite sink's (and the same commands read
//! it). Each batch is appended and fsynced, then its ledger transaction
//! commits the file's new length with the resume state. A run that was
//! killed between the two left bytes past the committed length: the next
//! run cuts the file back to it before it writes, and fetches those pages
//! again. `replace` (and `--full-refresh`) write `<file>.ingest-staging`
//! and rename it over the file when the run completes.
//!
//! Standard output keeps no ledger: every run is a whole walk.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use super::sqlite::{Marks, SqliteSink, Written};
use super::{Batch, FileCommit, SinkError};
use crate::config::{JsonlSinkConfig, SqliteSinkConfig, WriteMode};
use crate::source::Resume;

/// A run's JSON Lines output.
pub struct JsonlSink {
    cfg: JsonlSinkConfig,
    /// The ledger beside the file (none for standard output).
    ledger: Option<SqliteSink>,
    /// The file being written (the staging file while staged).
    file: Option<std::fs::File>,
    /// Writing the staging file, renamed over the file at the end.
    staged: bool,
    /// The length of the file written, as of the last commit.
    committed: u64,
    /// An earlier run renamed the staging file in and died before its
    /// ledger said so: nothing is left to rename.
    swapped: bool,
}

fn io(path: &Path, action: &str) -> impl FnOnce(std::io::Error) -> SinkError + use<> {
    let what = format!("{}: {action}", path.display());
    move |e| SinkError::Schema(format!("{what}: {e}"))
}

impl JsonlSink {
    /// Open the ledger (none for standard output). The file is opened by
    /// [`begin_run`](Self::begin_run), once the run knows where it starts.
    pub async fn open(cfg: &JsonlSinkConfig, pipeline: &str) -> Result<Self, SinkError> {
        let ledger = match cfg.ledger() {
            Some(db) => {
                let ledger_cfg = SqliteSinkConfig {
                    path: db,
                    // never created: the ledger gets no records
                    table: "_ingest_jsonl".into(),
                    write: WriteMode::Append,
                    primary_key: Vec::new(),
                    batch_size: cfg.batch_size,
                    columns: IndexMap::new(),
                };
                Some(SqliteSink::open(&ledger_cfg, pipeline).await?)
            }
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            ledger,
            file: None,
            staged: false,
            committed: 0,
            swapped: false,
        })
    }

    fn target(&self) -> PathBuf {
        if self.staged {
            self.cfg.staging()
        } else {
            self.cfg.path.clone()
        }
    }

    /// The run that started a `--full-refresh` that has not finished.
    pub async fn pending_refresh(&mut self) -> Result<Option<i64>, SinkError> {
        match &mut self.ledger {
            Some(l) => l.pending_refresh().await,
            None => Ok(None),
        }
    }

    /// Forget the resume state and note a `--full-refresh`.
    pub async fn start_refresh(&mut self) -> Result<(), SinkError> {
        match &mut self.ledger {
            Some(l) => l.start_refresh().await,
            None => Ok(()),
        }
    }

    /// The saved resume points.
    pub async fn load_state(&mut self) -> Result<IndexMap<String, Option<Resume>>, SinkError> {
        match &mut self.ledger {
            Some(l) => l.load_state().await,
            None => Ok(IndexMap::new()),
        }
    }

    /// The incremental mark.
    pub async fn load_marks(&mut self, cursor_field: &str) -> Result<Marks, SinkError> {
        match &mut self.ledger {
            Some(l) => l.load_marks(cursor_field).await,
            None => Ok(Marks {
                cursor_field: cursor_field.to_string(),
                ..Marks::default()
            }),
        }
    }

    /// A `query` partition's mark.
    pub async fn partition_mark(&mut self) -> Result<Option<String>, SinkError> {
        match &mut self.ledger {
            Some(l) => l.partition_mark().await,
            None => Ok(None),
        }
    }

    /// The partition mark this run moves to when it completes.
    pub fn set_partition_mark(&mut self, mark: Option<String>) {
        if let Some(l) = &mut self.ledger {
            l.set_partition_mark(mark);
        }
    }

    /// A `query` partition needs a database.
    pub async fn query_rows(
        &mut self,
        _sql: &str,
    ) -> Result<Vec<IndexMap<String, String>>, SinkError> {
        Err(SinkError::Schema(
            "a `query` partition runs SQL on the sink's database; a JSON Lines sink has none (use `values`, `range`, `dates` or `lines`)".into(),
        ))
    }

    /// Record the run, open the file and cut it back to its committed
    /// length (what a killed run wrote past its last commit).
    pub async fn begin_run(&mut self, full_refresh: bool, fresh: bool) -> Result<i64, SinkError> {
        self.staged = full_refresh || self.cfg.write == WriteMode::Replace;
        let Some(ledger) = &mut self.ledger else {
            return Ok(0);
        };
        let run_id = ledger.begin_run(false, fresh).await?;
        // read even for a new load: a run killed before its first commit
        // left its starting length, and maybe bytes past it
        let saved = ledger.file_length().await?;
        let target = self.target();
        let (file, committed, swapped) = open_at(&target, self.staged, fresh, saved)?;
        self.swapped = swapped;
        self.committed = committed;
        self.file = Some(file);
        if let Some(l) = &mut self.ledger {
            l.set_file_length(committed, self.staged).await?;
        }
        Ok(run_id)
    }

    /// Append the batch's records, fsync, then commit the new length with
    /// the batch's ledger in one transaction.
    pub async fn write(&mut self, batch: Batch) -> Result<Written, SinkError> {
        let mut buf = Vec::with_capacity(batch.records.len() * 256);
        for r in &batch.records {
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| SinkError::Schema(format!("a record does not serialize: {e}")))?;
            buf.push(b'\n');
        }
        let rows = batch.records.len() as u64;
        let target = self.target();
        let Some(ledger) = &mut self.ledger else {
            for r in &batch.rejects {
                tracing::warn!(partition = %r.partition, url = ?r.url, "rejected (standard output keeps no ledger of rejects): {}", r.reason);
            }
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::BrokenPipe => SinkError::Closed,
                    _ => SinkError::Schema(format!("standard output: {e}")),
                })?;
            return Ok(Written {
                rows,
                rejects: batch.rejects.len() as u64,
            });
        };
        if self.swapped && rows > 0 {
            return Err(SinkError::Schema(
                "the staging file was renamed in by a run that then died; run again to start the replace over".into(),
            ));
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| SinkError::Schema("the file is not open".into()))?;
        let added = buf.len() as u64;
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, SinkError> {
            file.write_all(&buf)
                .and_then(|()| file.sync_data())
                .map_err(io(&target, "cannot write the batch"))?;
            Ok(file)
        })
        .await
        .map_err(|e| SinkError::Schema(format!("the writing task failed: {e}")))??;
        let length = self.committed + added;
        self.file = Some(file);
        let written = ledger
            .write(Batch {
                records: Vec::new(),
                file: Some(FileCommit {
                    length,
                    rows,
                    staged: self.staged,
                }),
                ..batch
            })
            .await?;
        self.committed = length;
        Ok(written)
    }

    /// End the run: a completed staged run renames the staging file over
    /// the file first (fsynced, with its directory), then the ledger
    /// forgets the state.
    pub async fn finish(
        &mut self,
        status: &str,
        error: Option<&str>,
        retries: u64,
    ) -> Result<(), SinkError> {
        let Some(ledger) = &mut self.ledger else {
            return Ok(());
        };
        if status == "done" && self.staged && !self.swapped {
            let (from, to) = (self.cfg.staging(), self.cfg.path.clone());
            self.file = None;
            tokio::task::spawn_blocking(move || swap(&from, &to))
                .await
                .map_err(|e| SinkError::Schema(format!("the rename task failed: {e}")))??;
        }
        ledger.finish(status, error, retries).await
    }
}

/// Open the file a run writes, at the length it continues from.
/// Returns the file (positioned at its end), that length, and whether the
/// staging file was already renamed in by an earlier run.
fn open_at(
    target: &Path,
    staged: bool,
    fresh: bool,
    saved: Option<(u64, bool)>,
) -> Result<(std::fs::File, u64, bool), SinkError> {
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir, "cannot create the directory"))?;
    }
    let exists = target.exists();
    // a new staged load, or one with no staging saved, starts it empty
    let fresh_staging = staged && (fresh || saved.is_none_or(|(_, s)| !s));
    if staged && !fresh && !exists && saved.is_some_and(|(len, s)| s && len > 0) {
        // the rename happened, the ledger's last word did not
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map_err(io(target, "cannot open"))?;
        return Ok((f, 0, true));
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(fresh_staging)
        .open(target)
        .map_err(io(target, "cannot open"))?;
    let len = f
        .metadata()
        .map_err(io(target, "cannot read the length"))?
        .len();
    let keep = match saved {
        Some((committed, s)) if s == staged && !fresh_staging => {
            if len < committed {
                return Err(SinkError::Schema(format!(
                    "{}: the file is {len} bytes, shorter than the {committed} its ledger committed: it was cut or replaced by hand; run with --full-refresh to write it anew",
                    target.display()
                )));
            }
            if len > committed {
                tracing::warn!(
                    file = %target.display(),
                    bytes = len - committed,
                    "cutting what a killed run wrote past its last commit"
                );
                f.set_len(committed)
                    .map_err(io(target, "cannot cut back"))?;
                f.sync_data().map_err(io(target, "cannot cut back"))?;
            }
            committed
        }
        _ => len,
    };
    f.seek(SeekFrom::Start(keep))
        .map_err(io(target, "cannot seek"))?;
    Ok((f, keep, false))
}

/// Rename the staging file over the file, durably.
fn swap(from: &Path, to: &Path) -> Result<(), SinkError> {
    if let Ok(f) = std::fs::File::open(from) {
        f.sync_all().map_err(io(from, "cannot sync"))?;
    }
    std::fs::rename(from, to).map_err(io(to, "cannot rename the staging file over"))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The first lines of a JSON Lines file, for `ingest show`.
pub fn peek(cfg: &JsonlSinkConfig, limit: u32) -> Result<crate::state::TablePeek, SinkError> {
    use std::io::BufRead;
    if cfg.is_stdout() {
        return Err(SinkError::Schema(
            "the sink writes to standard output: there is nothing to show".into(),
        ));
    }
    let f = std::fs::File::open(&cfg.path).map_err(io(&cfg.path, "cannot open"))?;
    let mut count = 0i64;
    let mut rows = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(io(&cfg.path, "cannot read"))?;
        count += 1;
        if rows.len() < limit as usize {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if let Value::Object(m) = &v {
                for k in m.keys() {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
            rows.push(v);
        }
    }
    Ok(crate::state::TablePeek {
        table: cfg.path.display().to_string(),
        count,
        columns,
        rows,
    })
}
