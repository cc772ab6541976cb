//! `ingest`: move records from paginated HTTP APIs into SQLite or PostgreSQL.
//!
//! A pipeline is a TOML file ([`config`]) with one source, zero or more
//! transforms and one sink. [`run`] wires them into backpressured streams:
//!
//! ```text
//! Source (async stream of pages) ─bounded channel─▶ Transforms ─▶ Batcher ─▶ Sink
//! ```
//!
//! The sink commits each batch of rows together with the resume state of the
//! walk that produced them, so a run killed at any moment resumes without
//! losing or doubling a row.

pub mod alloc;
pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod init;
pub mod ledger;
pub mod redact;
pub mod run;
pub mod sink;
pub mod source;
pub mod state;
pub mod transform;

pub use error::{Error, Result};
