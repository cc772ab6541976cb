//! Bulk INSERT through SQLite's C API, on the connection sqlx owns.
//!
//! The rows of a batch are the sink's one hot loop. Through sqlx each value
//! was copied twice (into an `Arc<String>`, then into SQLite with
//! `SQLITE_TRANSIENT`), each parameter's name was looked up, and each
//! statement went to sqlx's worker thread and back over a channel; that was
//! more than half the write time (`make bench`, write-only floor). Here the
//! writer borrows the connection from sqlx ([`LockedSqliteHandle`]: sqlx's
//! worker makes no call on it meanwhile), prepares a statement of a few
//! dozen rows once per batch, binds the values where they lie
//! (`SQLITE_STATIC`) and steps it. Everything else (DDL, state, rejects,
//! commit) still goes through sqlx, in the same transaction.
//!
//! All of the crate's `unsafe` is in this module. The invariants it rests on:
//! - the handle is locked for as long as an [`Insert`] exists (it borrows the
//!   guard mutably), so no other thread calls into the connection;
//! - every statement is finalized when the [`Insert`] is dropped;
//! - a value bound with `SQLITE_STATIC` is only read by the `sqlite3_step`
//!   that follows its binding in [`Insert::run`], while the caller's slice
//!   is borrowed; every parameter is bound again before the next step.

use std::ffi::{CStr, c_char, c_int};
use std::fmt;
use std::ptr::NonNull;

use libsqlite3_sys as ffi;
use sqlx::sqlite::LockedSqliteHandle;

/// A value ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Sql<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(std::borrow::Cow<'a, str>),
}

/// Rows per multi-row statement. Measured on 1M rows of 5 columns (one
/// transaction per 1,000 rows): 20–50 rows ~960k rows/s, 100 ~890k,
/// 500 ~770k; a bigger statement costs more to prepare than it saves.
pub(super) const ROWS_PER_STATEMENT: usize = 32;

/// SQLite's error for one call: its extended code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteError {
    /// The extended result code (`SQLITE_CONSTRAINT_UNIQUE`, `SQLITE_FULL`, …).
    pub code: i32,
    /// `sqlite3_errmsg` at the time of the error.
    pub message: String,
}

impl fmt::Display for SqliteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLite code {})", self.message, self.code)
    }
}

impl std::error::Error for SqliteError {}

/// One prepared statement and the rows it takes; finalized on drop.
struct Stmt {
    ptr: NonNull<ffi::sqlite3_stmt>,
    rows: usize,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from sqlite3_prepare_v3 and is finalized once;
        // the connection is still locked (the Insert that owns this borrows it)
        unsafe {
            ffi::sqlite3_finalize(self.ptr.as_ptr());
        }
    }
}

/// `INSERT INTO t (…) VALUES (…), (…) [ON CONFLICT …]` for slices of rows,
/// on a connection locked from sqlx.
pub(super) struct Insert<'h> {
    db: NonNull<ffi::sqlite3>,
    /// `INSERT INTO "t" ("a", "b") ` (up to VALUES)
    prefix: &'h str,
    /// the upsert clause, or empty
    suffix: &'h str,
    ncols: usize,
    /// at most two: the full-size statement and the batch's remainder
    stmts: Vec<Stmt>,
    /// keeps the lock held for as long as this Insert lives
    _lock: std::marker::PhantomData<&'h mut ()>,
}

impl<'h> Insert<'h> {
    /// Borrow the locked connection for inserts of `ncols` values per row.
    pub(super) fn new(
        handle: &'h mut LockedSqliteHandle<'_>,
        prefix: &'h str,
        suffix: &'h str,
        ncols: usize,
    ) -> Self {
        Self {
            db: handle.as_raw_handle(),
            prefix,
            suffix,
            ncols: ncols.max(1),
            stmts: Vec::new(),
            _lock: std::marker::PhantomData,
        }
    }

    fn error(&self) -> SqliteError {
        // SAFETY: the connection is open and locked; errmsg returns a
        // NUL-terminated string owned by SQLite, copied before any other call
        unsafe {
            let db = self.db.as_ptr();
            let msg = ffi::sqlite3_errmsg(db);
            let message = if msg.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            };
            SqliteError {
                code: ffi::sqlite3_extended_errcode(db),
                message,
            }
        }
    }

    /// The statement for `rows` rows, prepared on first use.
    fn statement(&mut self, rows: usize) -> Result<NonNull<ffi::sqlite3_stmt>, SqliteError> {
        if let Some(s) = self.stmts.iter().find(|s| s.rows == rows) {
            return Ok(s.ptr);
        }
        let one = format!("({})", vec!["?"; self.ncols].join(", "));
        let mut sql = String::with_capacity(self.prefix.len() + rows * (one.len() + 2) + 16);
        sql.push_str(self.prefix);
        sql.push_str("VALUES ");
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&one);
        }
        sql.push_str(self.suffix);
        let len = c_int::try_from(sql.len()).map_err(|_| SqliteError {
            code: ffi::SQLITE_TOOBIG,
            message: "statement too long".into(),
        })?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes (no NUL needed when the
        // length is given); `raw` receives the statement or stays null
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                sql.as_ptr().cast::<c_char>(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT as u32,
                &mut raw,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error());
        }
        let ptr = NonNull::new(raw).ok_or_else(|| SqliteError {
            code: ffi::SQLITE_MISUSE,
            message: "SQLite prepared an empty statement".into(),
        })?;
        self.stmts.push(Stmt { ptr, rows });
        Ok(ptr)
    }

    /// Insert `values` (whole rows, `ncols` each), in statements of up to
    /// [`ROWS_PER_STATEMENT`] rows.
    pub(super) fn run(&mut self, values: &[Sql<'_>]) -> Result<(), SqliteError> {
        let per = (ROWS_PER_STATEMENT * self.ncols).min(32_766 / self.ncols * self.ncols);
        for chunk in values.chunks(per.max(self.ncols)) {
            let stmt = self.statement(chunk.len() / self.ncols)?.as_ptr();
            for (i, v) in chunk.iter().enumerate() {
                let n = c_int::try_from(i + 1).unwrap_or(c_int::MAX);
                // SAFETY: `stmt` is a live statement of this connection with
                // chunk.len() parameters; text is bound SQLITE_STATIC and
                // only read by the step below, while `values` is borrowed
                let rc = unsafe {
                    match v {
                        Sql::Null => ffi::sqlite3_bind_null(stmt, n),
                        Sql::Int(x) => ffi::sqlite3_bind_int64(stmt, n, *x),
                        Sql::Real(x) => ffi::sqlite3_bind_double(stmt, n, *x),
                        Sql::Text(s) => ffi::sqlite3_bind_text64(
                            stmt,
                            n,
                            s.as_ptr().cast::<c_char>(),
                            s.len() as u64,
                            ffi::SQLITE_STATIC(),
                            ffi::SQLITE_UTF8 as u8,
                        ),
                    }
                };
                if rc != ffi::SQLITE_OK {
                    let e = self.error();
                    // SAFETY: a live statement of this connection
                    unsafe { ffi::sqlite3_reset(stmt) };
                    return Err(e);
                }
            }
            // SAFETY: every parameter of `stmt` was bound just above
            let rc = unsafe { ffi::sqlite3_step(stmt) };
            let err = (rc != ffi::SQLITE_DONE).then(|| self.error());
            // SAFETY: a live statement of this connection; reset also
            // releases what the step held
            unsafe { ffi::sqlite3_reset(stmt) };
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(())
    }
}
