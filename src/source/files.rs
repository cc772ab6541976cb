//! The files source (`kind = "files"`): every file the globs match is a
//! walk of its own, keyed by its path relative to the pipeline file, and
//! `concurrency` files are read at once (the seed's aiofiles + gather).
//!
//! A file is read on a blocking thread and handed over in pages of
//! [`PAGE_RECORDS`] records through a channel of two, so memory stays flat
//! for any size: NDJSON line by line, CSV row by row (the `csv` crate; the
//! header row names the fields; a `.gz` file through a decoder, its offsets
//! counting decompressed bytes), a JSON document record by record from the
//! array at `records` (`document.rs`), after a first pass that checks it
//! whole.
//! Each page's resume point is where the next one starts: a byte offset
//! (NDJSON, CSV) or a record index (JSON), so a killed run continues inside
//! the file it was reading. A file whose size or mtime changed since its
//! position was saved is read again from the start (`depends`).
//! `incremental = true` reads only files changed after the newest one the
//! last completed run read (changed: the later of mtime and ctime).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::document;
use super::formats::{self, Flow, Layout};
use super::{HttpError, Page, PageFailure, PageStream, Partition, Position, Resume, SourceMetrics};
use crate::config::source::{FileFormat, FilesSourceConfig, OnError};

/// Records per page handed to the run.
pub const PAGE_RECORDS: usize = 1000;

/// A files source, ready to walk.
#[derive(Clone)]
pub struct FileSource {
    cfg: Arc<FilesSourceConfig>,
    metrics: Arc<SourceMetrics>,
}

/// What one file's walk needs to know, moved to its reading thread.
struct Reading {
    part: Arc<str>,
    path: PathBuf,
    format: FileFormat,
    cfg: Arc<FilesSourceConfig>,
    metrics: Arc<SourceMetrics>,
    depends: String,
    /// When the file last changed (`incremental = true`): the page's mark.
    changed: Option<String>,
}

type Tx = tokio::sync::mpsc::Sender<Result<Page, HttpError>>;

fn file_err(path: &Path, message: impl Into<String>) -> HttpError {
    HttpError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// A file's mtime as RFC 3339 (nanoseconds): with its size, what a saved
/// position inside it depends on.
fn mtime_of(meta: &std::fs::Metadata) -> Option<String> {
    let t = meta.modified().ok()?;
    jiff::Timestamp::try_from(t).ok().map(|t| t.to_string())
}

/// When a file last changed, the incremental mark's unit: the later of its
/// mtime and, on Unix, its ctime. A file unpacked or copied with its old
/// mtime kept (`tar x`, `cp -p`, `rsync -a`) has a ctime of when it arrived,
/// which nothing can set back, so it is newer than the mark although its
/// mtime is not.
fn changed_of(meta: &std::fs::Metadata) -> Option<jiff::Timestamp> {
    let modified = jiff::Timestamp::try_from(meta.modified().ok()?).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let nanos = i32::try_from(meta.ctime_nsec()).unwrap_or(0);
        if let Ok(changed) = jiff::Timestamp::new(meta.ctime(), nanos) {
            return Some(modified.max(changed));
        }
    }
    Some(modified)
}

impl FileSource {
    /// The source a `[source] kind = "files"` describes.
    pub fn new(cfg: &FilesSourceConfig) -> Self {
        Self {
            cfg: Arc::new(cfg.clone()),
            metrics: Arc::new(SourceMetrics::default()),
        }
    }

    /// The source's counters.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// Every file the globs match, in path order, one partition each; with
    /// `after`, only those changed after it.
    pub fn list(&self, after: Option<&str>) -> Result<Vec<Partition>, HttpError> {
        let after: Option<jiff::Timestamp> = after.and_then(|a| a.parse().ok());
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for pattern in &self.cfg.paths {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| file_err(Path::new(pattern), format!("not a glob: {e}")))?
                .compile_matcher();
            let root = self.cfg.base.join(literal_prefix(pattern));
            for entry in walkdir::WalkDir::new(&root)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_map(|e| {
                    // a directory that cannot be read is named, not skipped in silence
                    e.map_err(
                        |e| tracing::warn!(path = %root.display(), "cannot list the files: {e}"),
                    )
                    .ok()
                })
                .filter(|e| e.file_type().is_file())
            {
                let rel = entry
                    .path()
                    .strip_prefix(&self.cfg.base)
                    .unwrap_or(entry.path());
                let candidate = if Path::new(pattern).is_absolute() {
                    entry.path()
                } else {
                    rel
                };
                if !glob.is_match(candidate) {
                    continue;
                }
                let changed = entry.metadata().ok().as_ref().and_then(changed_of);
                let newer = match (after, changed) {
                    (Some(a), Some(c)) => c > a,
                    _ => true,
                };
                if newer {
                    found.push((rel.display().to_string(), entry.path().to_path_buf()));
                }
            }
        }
        found.sort();
        found.dedup();
        if found.is_empty() && after.is_none() {
            tracing::warn!(paths = ?self.cfg.paths, base = %self.cfg.base.display(), "no file matches the source's paths");
        }
        Ok(found
            .into_iter()
            .map(|(key, path)| Partition {
                key: key.into(),
                vars: [("file".to_string(), path.display().to_string())]
                    .into_iter()
                    .collect(),
                params: Vec::new(),
            })
            .collect())
    }

    fn path(part: &Partition) -> PathBuf {
        PathBuf::from(part.vars.get("file").cloned().unwrap_or_default())
    }

    /// A saved position holds while the file keeps its size and mtime and
    /// is read as the same format.
    pub fn depends(&self, part: &Partition) -> String {
        let path = Self::path(part);
        let (size, mtime) = std::fs::metadata(&path)
            .map(|m| (m.len(), mtime_of(&m).unwrap_or_default()))
            .unwrap_or_default();
        format!(
            "file={:016x},format={:016x}",
            super::fnv1a(&format!("{size} {mtime}")),
            super::fnv1a(&format!(
                "{:?} {} {:?}",
                format_of(self.cfg.format, &path),
                self.cfg.records,
                self.cfg.delimiter
            ))
        )
    }

    /// Read one file from `resume` (or its start) as a stream of pages.
    pub fn walk(&self, part: Partition, resume: Option<Resume>) -> PageStream {
        let path = Self::path(&part);
        let changed = std::fs::metadata(&path).ok().as_ref().and_then(changed_of);
        let reading = Reading {
            part: part.key.clone(),
            format: format_of(self.cfg.format, &path),
            depends: self.depends(&part),
            path,
            cfg: self.cfg.clone(),
            metrics: self.metrics.clone(),
            changed: changed
                .filter(|_| self.cfg.incremental)
                .map(|c| c.to_string()),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let errors = tx.clone();
            if let Err(e) = reading.read(resume, &tx) {
                let _ = errors.blocking_send(Err(e));
            }
        });
        Box::pin(async_stream::stream! {
            while let Some(page) = rx.recv().await {
                yield page;
            }
        })
    }
}

/// The directories of a glob before its first wildcard: where to walk.
fn literal_prefix(pattern: &str) -> PathBuf {
    let mut out = PathBuf::new();
    let parts: Vec<&str> = pattern.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last || part.contains(['*', '?', '[', '{']) {
            break;
        }
        if part.is_empty() && i == 0 {
            out.push("/");
        } else {
            out.push(part);
        }
    }
    out
}

/// The format of a file: as configured, or by its extension.
fn format_of(configured: FileFormat, path: &Path) -> FileFormat {
    if configured != FileFormat::Auto {
        return configured;
    }
    // `x.ndjson.gz` is NDJSON
    let path = if gzipped(path) {
        Path::new(path.file_stem().unwrap_or_default())
    } else {
        path
    };
    match path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .as_deref()
    {
        Some("ndjson" | "jsonl") => FileFormat::Ndjson,
        Some("csv" | "tsv") => FileFormat::Csv,
        _ => FileFormat::Json,
    }
}

/// Whether a file is gzip-compressed (`.gz`): it is read through a
/// decoder, and its offsets count decompressed bytes.
fn gzipped(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// A file's content as a reader: the bytes, or a `.gz` file decompressed.
type Content = Box<dyn Read + Send>;

impl Reading {
    fn err(&self, message: impl Into<String>) -> HttpError {
        file_err(&self.path, message)
    }

    /// The file's content from its start (decompressed, for `.gz`).
    fn open(&self) -> Result<Content, HttpError> {
        let file =
            std::fs::File::open(&self.path).map_err(|e| self.err(format!("cannot open: {e}")))?;
        Ok(match gzipped(&self.path) {
            // several gzip members one after the other are one stream (`cat a.gz b.gz`)
            true => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                file,
            ))),
            false => Box::new(file),
        })
    }

    /// The content from byte `at` on: a seek, or for a compressed file the
    /// first `at` bytes decompressed and dropped.
    fn open_at(&self, at: u64) -> Result<Content, HttpError> {
        if !gzipped(&self.path) {
            let mut file = std::fs::File::open(&self.path)
                .map_err(|e| self.err(format!("cannot open: {e}")))?;
            file.seek(SeekFrom::Start(at))
                .map_err(|e| self.err(format!("cannot seek to byte {at}: {e}")))?;
            return Ok(Box::new(file));
        }
        let mut content = self.open()?;
        let skipped = std::io::copy(&mut (&mut content).take(at), &mut std::io::sink())
            .map_err(|e| self.err(format!("cannot decompress: {e}")))?;
        if skipped < at {
            return Err(self.err(format!(
                "the decompressed content ends at byte {skipped}, before {at}"
            )));
        }
        Ok(content)
    }

    /// Where the content starts: past the UTF-8 byte order mark that
    /// Windows tools write, else at 0.
    fn content_start(&self) -> Result<u64, HttpError> {
        let mut head = Vec::with_capacity(3);
        self.open()?
            .take(3)
            .read_to_end(&mut head)
            .map_err(|e| self.err(format!("cannot read: {e}")))?;
        Ok(if head == formats::BOM {
            head.len() as u64
        } else {
            0
        })
    }

    fn read(&self, resume: Option<Resume>, tx: &Tx) -> Result<(), HttpError> {
        let st = resume.unwrap_or(Resume {
            position: Position::Offset(0),
            pages: 0,
            records: 0,
            page_size: None,
            total: None,
            depends: None,
            skip: 0,
        });
        let at = match st.position {
            Position::Offset(n) => n,
            _ => 0,
        };
        match self.format {
            FileFormat::Json => self.json(at, st, tx),
            FileFormat::Csv | FileFormat::Ndjson | FileFormat::Auto => self.lines(at, st, tx),
        }
    }

    /// Hand a page over; `next` is where the following one starts (`None`:
    /// the file is done). False once the run stopped listening.
    fn send(
        &self,
        tx: &Tx,
        records: Vec<Value>,
        next: Option<u64>,
        st: &mut Resume,
        failure: Option<PageFailure>,
    ) -> bool {
        let n = records.len() as u64;
        st.pages += 1;
        st.records += n;
        self.metrics.pages.fetch_add(1, Ordering::Relaxed);
        self.metrics.records.fetch_add(n, Ordering::Relaxed);
        let page = Page {
            partition: self.part.clone(),
            records,
            resume: next.map(|at| Resume {
                position: Position::Offset(at),
                depends: Some(self.depends.clone()),
                ..st.clone()
            }),
            url: self.path.display().to_string(),
            failure,
            cursor: self.changed.clone(),
        };
        tx.blocking_send(Ok(page)).is_ok()
    }

    /// A record that does not parse: the run fails, or (`on_error = "skip"`)
    /// it is recorded as a reject and the file goes on.
    fn bad(&self, at: u64, message: String) -> Result<PageFailure, HttpError> {
        let message = format!("the record at byte {at} does not parse: {message}");
        match self.cfg.on_error {
            OnError::Fail => Err(self.err(message)),
            OnError::Skip => Ok(PageFailure {
                status: None,
                message,
            }),
        }
    }

    /// A record at `start` that does not parse: fail, or hand over the page
    /// so far with the reject (the file continues at `next`). False once
    /// the run stopped listening.
    fn reject(
        &self,
        tx: &Tx,
        page: &mut Vec<Value>,
        (start, next): (u64, u64),
        st: &mut Resume,
        message: String,
    ) -> Result<bool, HttpError> {
        let failure = self.bad(start, message)?;
        Ok(self.send(tx, std::mem::take(page), Some(next), st, Some(failure)))
    }

    /// The layout of an NDJSON or CSV file whose content starts at byte
    /// `start`, read from byte `at` on: past the start, a CSV's header row
    /// is read first.
    fn layout(&self, start: u64, at: u64) -> Result<Layout, HttpError> {
        if self.format != FileFormat::Csv {
            return Ok(Layout::Ndjson);
        }
        let plain = match gzipped(&self.path) {
            true => Path::new(self.path.file_stem().unwrap_or_default()),
            false => self.path.as_path(),
        };
        let tsv = plain.extension().is_some_and(|e| e == "tsv");
        let delimiter = match self.cfg.delimiter.as_deref().and_then(|d| d.bytes().next()) {
            Some(d) => d,
            None if tsv => b'\t',
            None => b',',
        };
        let names = match at == start {
            true => None,
            false => {
                Some(formats::csv_names(self.open_at(start)?, delimiter).map_err(|m| self.err(m))?)
            }
        };
        Ok(Layout::Csv { delimiter, names })
    }

    /// An NDJSON or CSV file from byte `at`, in pages whose resume points
    /// are the byte where the next record starts.
    fn lines(&self, at: u64, mut st: Resume, tx: &Tx) -> Result<(), HttpError> {
        let start = self.content_start()?;
        let at = at.max(start);
        let layout = self.layout(start, at)?;
        let file = self.open_at(at)?;
        let mut page = Vec::with_capacity(PAGE_RECORDS);
        let (mut stopped, mut failed) = (false, None);
        formats::read_records(file, layout, |record, start, end| {
            let (start, end) = (at + start, at + end);
            let go = match record {
                Ok(v) => {
                    page.push(v);
                    page.len() < PAGE_RECORDS
                        || self.send(tx, std::mem::take(&mut page), Some(end), &mut st, None)
                }
                Err(m) => match self.reject(tx, &mut page, (start, end), &mut st, m) {
                    Ok(go) => go,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                },
            };
            stopped = !go;
            if go { Flow::Go } else { Flow::Stop }
        })
        .map_err(|m| self.err(m))?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !stopped {
            self.send(tx, page, None, &mut st, None);
        }
        Ok(())
    }

    /// A JSON document: checked whole, then its records streamed from
    /// record `from` on (`document.rs`); an object at the root with no
    /// `records` path is one record.
    fn json(&self, from: u64, mut st: Resume, tx: &Tx) -> Result<(), HttpError> {
        let start = self.content_start()?;
        if let Err(m) = document::check(self.open_at(start)?) {
            let failure = self.bad(0, m)?;
            self.send(tx, Vec::new(), None, &mut st, Some(failure));
            return Ok(());
        }
        let root = self.cfg.records.is_root();
        if root && document::is_object(self.open_at(start)?).map_err(|m| self.err(m))? {
            return self.one(&mut st, tx);
        }
        let (mut page, mut next) = (Vec::with_capacity(PAGE_RECORDS), from);
        let end = document::read(self.open_at(start)?, &self.cfg.records, from, |record| {
            // a full page goes once the next record shows it is not the last
            if page.len() == PAGE_RECORDS
                && !self.send(tx, std::mem::take(&mut page), Some(next), &mut st, None)
            {
                return Flow::Stop;
            }
            page.push(record);
            next += 1;
            Flow::Go
        })
        .map_err(|m| self.err(m))?;
        if end == document::End::Done {
            self.send(tx, page, None, &mut st, None);
        }
        Ok(())
    }

    /// A document that is one object: one record.
    fn one(&self, st: &mut Resume, tx: &Tx) -> Result<(), HttpError> {
        let mut text = String::new();
        self.open()?
            .read_to_string(&mut text)
            .map_err(|e| self.err(format!("cannot read as UTF-8 text: {e}")))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let record = super::json::parse(text).map_err(|e| self.err(e.to_string()))?;
        self.send(tx, vec![record], None, st, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_starts_below_the_globs_literal_directories() {
        assert_eq!(literal_prefix("in/*.json"), PathBuf::from("in"));
        assert_eq!(literal_prefix("in/**/*.ndjson"), PathBuf::from("in"));
        assert_eq!(literal_prefix("a/b/c.csv"), PathBuf::from("a/b"));
        assert_eq!(literal_prefix("*.csv"), PathBuf::new());
        assert_eq!(literal_prefix("/data/x/*.csv"), PathBuf::from("/data/x"));
    }

    #[test]
    fn formats_follow_the_extension() {
        let f = |p: &str| format_of(FileFormat::Auto, Path::new(p));
        assert_eq!(f("a.ndjson"), FileFormat::Ndjson);
        assert_eq!(f("a.JSONL"), FileFormat::Ndjson);
        assert_eq!(f("a.csv"), FileFormat::Csv);
        assert_eq!(f("a.json"), FileFormat::Json);
        assert_eq!(f("dir/a.ndjson.gz"), FileFormat::Ndjson);
        assert_eq!(f("a.tsv.GZ"), FileFormat::Csv);
        assert_eq!(f("a.json.gz"), FileFormat::Json);
        assert_eq!(
            format_of(FileFormat::Csv, Path::new("a.txt")),
            FileFormat::Csv
        );
    }
}
