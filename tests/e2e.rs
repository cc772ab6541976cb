//! The end-to-end tests, in one test binary: each file beside this one is a
//! module of it. One binary links ingest and its dependencies once instead of
//! once per file, which keeps `make test` within a CI machine's disk (7 GB of
//! debug binaries before, for 23 files) and saves a link per file.
//! `cargo test --test e2e oauth::` runs one file's tests.

mod common;

mod backpressure;
mod commands;
mod config_errors;
mod docs;
mod edges;
mod ends;
mod faults;
mod files;
mod graphql;
mod hostile;
mod html;
mod incremental;
mod init;
mod jsonl;
mod oauth;
mod pagination;
mod partitions;
mod pipelines_valid;
mod postgres;
mod resume;
mod sink_suite;
mod streamed;
mod write_modes;
