//! A batch's transaction through SQLite's C API, on the connection sqlx owns.
//!
//! The rows of a batch are the sink's one hot loop. Through sqlx each value
//! was copied twice (into an `Arc<String>`, then into SQLite with
//! `SQLITE_TRANSIENT`), each parameter's name was looked up, and each
//! statement (BEGIN, the INSERTs, the state, COMMIT) went to sqlx's worker
//! thread and back over a channel: more than half the write time (`make
//! bench`, write-only floor). Here the writer borrows the connection from
//! sqlx once per batch ([`LockedSqliteHandle`]: sqlx's worker makes no call
//! on it meanwhile) and runs the whole transaction: multi-row statements of a
//! few dozen rows, prepared once per batch, with the values bound where they
//! lie (`SQLITE_STATIC`). Opening, migrations, reads and the end of a run
//! still go through sqlx.
//!
//! All of the crate's `unsafe` is in this module, but for one allocator setting
//! (`src/alloc.rs`). The invariants it rests on:
//! - the handle is locked for as long as a [`Session`] exists (it borrows the
//!   guard mutably), so no other thread calls into the connection;
//! - every statement is finalized when its session ends ([`Stmt`]'s `Drop`);
//! - a value bound with `SQLITE_STATIC` is only read by the `sqlite3_step`
//!   that follows its binding in `Session::run`, while the caller's slice is
//!   borrowed; every parameter is bound again before the next step;
//! - a transaction a session begins is committed or rolled back before it
//!   returns, so sqlx never finds one open.

// The unsafe code of this module is documented at each block (SAFETY).
#![allow(unsafe_code)]

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

/// Rows per statement for `n` rows, at most `max`: a divisor of `n` near
/// `max` when there is one, so the batch needs one prepared statement and
/// not two (a full one and the remainder). Preparing was ~3% of a run's CPU.
fn statement_rows(n: usize, max: usize) -> usize {
    if n <= max {
        return n.max(1);
    }
    (max.div_ceil(2)..=max)
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(max)
}

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
        // the connection is still locked (the Session that owns this borrows it)
        unsafe {
            ffi::sqlite3_finalize(self.ptr.as_ptr());
        }
    }
}

/// A connection locked from sqlx, for one batch: statements prepared on
/// first use and finalized when the session ends.
pub(super) struct Session<'h> {
    db: NonNull<ffi::sqlite3>,
    /// statements by their SQL
    stmts: Vec<(String, Stmt)>,
    /// multi-row INSERTs by their number of rows (at most two a batch: the
    /// full size and the remainder)
    inserts: Vec<Stmt>,
    /// the lock is held for as long as the session lives
    _lock: std::marker::PhantomData<&'h mut ()>,
}

impl<'h> Session<'h> {
    /// Borrow the locked connection.
    pub(super) fn new(handle: &'h mut LockedSqliteHandle<'_>) -> Self {
        Self {
            db: handle.as_raw_handle(),
            stmts: Vec::new(),
            inserts: Vec::new(),
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

    fn prepare(&self, sql: &str, rows: usize) -> Result<Stmt, SqliteError> {
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
                0,
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
        Ok(Stmt { ptr, rows })
    }

    /// Bind `values` to every parameter of `stmt`, step it to the end and
    /// reset it.
    fn run(&self, stmt: NonNull<ffi::sqlite3_stmt>, values: &[Sql<'_>]) -> Result<(), SqliteError> {
        let stmt = stmt.as_ptr();
        // SAFETY: a live statement of this connection
        let want = unsafe { ffi::sqlite3_bind_parameter_count(stmt) };
        if usize::try_from(want).ok() != Some(values.len()) {
            return Err(SqliteError {
                code: ffi::SQLITE_RANGE,
                message: format!("{} values for {want} parameters", values.len()),
            });
        }
        for (i, v) in values.iter().enumerate() {
            let n = c_int::try_from(i + 1).unwrap_or(c_int::MAX);
            // SAFETY: `stmt` is a live statement with values.len()
            // parameters; text is bound SQLITE_STATIC and only read by the
            // step below, while `values` is borrowed
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
        // SAFETY: a live statement of this connection; reset releases what
        // the step held
        unsafe { ffi::sqlite3_reset(stmt) };
        err.map_or(Ok(()), Err)
    }

    /// Run one statement that returns no rows.
    pub(super) fn exec(&mut self, sql: &str, values: &[Sql<'_>]) -> Result<(), SqliteError> {
        let stmt = match self.stmts.iter().find(|(s, _)| s == sql) {
            Some((_, st)) => st.ptr,
            None => {
                let st = self.prepare(sql, 0)?;
                let ptr = st.ptr;
                self.stmts.push((sql.to_string(), st));
                ptr
            }
        };
        self.run(stmt, values)
    }

    /// `prefix VALUES (…), (…) suffix` for `values` (whole rows of `ncols`),
    /// in statements of up to [`ROWS_PER_STATEMENT`] rows.
    pub(super) fn insert(
        &mut self,
        prefix: &str,
        suffix: &str,
        ncols: usize,
        values: &[Sql<'_>],
    ) -> Result<(), SqliteError> {
        let ncols = ncols.max(1);
        let max = ROWS_PER_STATEMENT.min(32_766 / ncols).max(1);
        let per = statement_rows(values.len() / ncols, max) * ncols;
        for chunk in values.chunks(per) {
            let rows = chunk.len() / ncols;
            let stmt = match self.inserts.iter().find(|s| s.rows == rows) {
                Some(st) => st.ptr,
                None => {
                    let one = format!("({})", vec!["?"; ncols].join(", "));
                    let mut sql = String::with_capacity(
                        prefix.len() + rows * (one.len() + 2) + suffix.len() + 8,
                    );
                    sql.push_str(prefix);
                    sql.push_str("VALUES ");
                    for i in 0..rows {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&one);
                    }
                    sql.push_str(suffix);
                    let st = self.prepare(&sql, rows)?;
                    let ptr = st.ptr;
                    self.inserts.push(st);
                    ptr
                }
            };
            self.run(stmt, chunk)?;
        }
        Ok(())
    }

    /// Run `f` in a write transaction (`BEGIN IMMEDIATE`: the write lock is
    /// taken up front, waiting out the connection's busy timeout), committed
    /// when `f` succeeds and rolled back otherwise. `f`'s error, or the
    /// commit's (`cannot commit`), is returned.
    pub(super) fn transaction<E>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), E>,
        failed: impl Fn(&'static str, SqliteError) -> E,
    ) -> Result<(), E> {
        self.exec("BEGIN IMMEDIATE", &[])
            .map_err(|e| failed("cannot begin a transaction", e))?;
        let done = f(self).and_then(|()| {
            self.exec("COMMIT", &[])
                .map_err(|e| failed("cannot commit", e))
        });
        if done.is_err() {
            // SAFETY: the connection is open and locked. A failed COMMIT can
            // leave the transaction open; after a rollback nothing is
            // (its own failure means there was no transaction left)
            let in_tx = unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) } == 0;
            if in_tx {
                let _ = self.exec("ROLLBACK", &[]);
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, Row, SqliteConnection};

    async fn conn(dir: &std::path::Path) -> SqliteConnection {
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let mut c = SqliteConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("CREATE TABLE t (a, b, c)")
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c
    }

    async fn all(c: &mut SqliteConnection) -> Vec<(String, String, String)> {
        sqlx::query("SELECT quote(a), quote(b), quote(c) FROM t ORDER BY rowid")
            .fetch_all(c)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    #[test]
    fn statement_sizes_divide_the_batch_when_they_can() {
        assert_eq!(statement_rows(1000, 32), 25);
        assert_eq!(statement_rows(100, 32), 25);
        assert_eq!(statement_rows(20, 32), 20);
        assert_eq!(statement_rows(0, 32), 1);
        // 70 = 2 x 35 = 5 x 14: no divisor in 16..=32, so 32 + 32 + 6
        assert_eq!(statement_rows(70, 32), 32);
        assert_eq!(statement_rows(997, 32), 32); // a prime
        assert_eq!(statement_rows(5000, 1), 1);
    }

    #[tokio::test]
    async fn every_value_kind_and_the_remainder_statement_round_trip() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut c = conn(dir.path()).await;
        // 70 rows: two statements of 32 rows and one of 6
        let n = 70;
        let mut values = Vec::new();
        for i in 0..n {
            values.push(Sql::Int(i));
            values.push(match i % 4 {
                0 => Sql::Null,
                1 => Sql::Real(i as f64 + 0.5),
                2 => Sql::Text("".into()),
                _ => Sql::Text(format!("ü{i}\u{0}x").into()),
            });
            values.push(Sql::Text(format!("row {i}").into()));
        }
        {
            let mut h = c.lock_handle().await.unwrap_or_else(|e| panic!("{e}"));
            Session::new(&mut h)
                .transaction(
                    |s| s.insert("INSERT INTO t (a, b, c) ", "", 3, &values),
                    |_, e| e,
                )
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let got = all(&mut c).await;
        assert_eq!(got.len(), n as usize);
        for (i, (a, b, cc)) in got.iter().enumerate() {
            assert_eq!(a, &i.to_string());
            let want = match i % 4 {
                0 => "NULL".to_string(),
                1 => format!("{}.5", i),
                2 => "''".to_string(),
                // quote() stops at the NUL, but length() below sees it all
                _ => format!("'ü{i}'"),
            };
            assert_eq!(b, &want, "row {i}");
            assert_eq!(cc, &format!("'row {i}'"));
        }
        let len: i64 = sqlx::query("SELECT length(CAST(b AS BLOB)) FROM t WHERE a = 3")
            .fetch_one(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        assert_eq!(len, "ü3\u{0}x".len() as i64);
    }

    #[tokio::test]
    async fn a_failing_statement_rolls_the_whole_transaction_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut c = conn(dir.path()).await;
        sqlx::query("CREATE UNIQUE INDEX u ON t (a)")
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<Sql<'_>> = [1, 2, 3, 2]
            .iter()
            .flat_map(|&i| [Sql::Int(i), Sql::Null, Sql::Null])
            .collect();
        let err = {
            let mut h = c.lock_handle().await.unwrap_or_else(|e| panic!("{e}"));
            let mut s = Session::new(&mut h);
            let ok = s.transaction(
                |s| s.insert("INSERT INTO t (a, b, c) ", "", 3, &rows[..6]),
                |_, e| e,
            );
            assert!(ok.is_ok(), "{ok:?}");
            s.transaction(
                |s| s.insert("INSERT INTO t (a, b, c) ", "", 3, &rows[6..]),
                |_, e| e,
            )
        };
        let err = err.err().unwrap_or_else(|| panic!("a duplicate must fail"));
        assert_eq!(err.code, ffi::SQLITE_CONSTRAINT_UNIQUE, "{err}");
        assert!(err.message.contains("UNIQUE constraint failed"), "{err}");
        // the first transaction stays; of the second, nothing; and the
        // connection is usable by sqlx again (no transaction left open)
        let got = all(&mut c).await;
        assert_eq!(
            got.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            ["1", "2"]
        );
        let mut tx = c.begin().await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("INSERT INTO t (a) VALUES (9)")
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn a_wrong_number_of_values_is_an_error_not_a_null() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut c = conn(dir.path()).await;
        let mut h = c.lock_handle().await.unwrap_or_else(|e| panic!("{e}"));
        let mut s = Session::new(&mut h);
        let err = s
            .exec("INSERT INTO t (a, b) VALUES (?, ?)", &[Sql::Int(1)])
            .err()
            .unwrap_or_else(|| panic!("one value for two parameters must fail"));
        assert_eq!(err.code, ffi::SQLITE_RANGE, "{err}");
        let err = s
            .exec("INSERT INTO nope VALUES (1)", &[])
            .err()
            .unwrap_or_else(|| panic!("a missing table must fail"));
        assert!(err.message.contains("no such table: nope"), "{err}");
    }
}
