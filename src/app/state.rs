//! `ingest state show|reset` and `ingest runs`: what the ledger says.

use std::path::Path;

use super::{load, table};
use crate::cli::{Output, StateAction};
use crate::{Error, state};

pub(super) async fn state(action: StateAction) -> anyhow::Result<i32> {
    match action {
        StateAction::Show { pipeline } => {
            let p = load(&pipeline, &[])?;
            let rows = state::show(&p).await.map_err(Error::from)?;
            if rows.is_empty() {
                say!(
                    "{}: no saved state; the next run starts from the beginning",
                    p.name
                );
            }
            for r in rows {
                let part = if r.partition.is_empty() {
                    "(all)".to_string()
                } else {
                    r.partition
                };
                match r.resume {
                    Some(resume) => say!(
                        "{part}: resumes at {resume} (saved {} by run {})",
                        r.updated_at,
                        r.run_id.unwrap_or(0)
                    ),
                    None => say!(
                        "{part}: complete (saved {} by run {})",
                        r.updated_at,
                        r.run_id.unwrap_or(0)
                    ),
                }
            }
        }
        StateAction::Reset { pipeline } => {
            let p = load(&pipeline, &[])?;
            let n = state::reset(&p).await.map_err(Error::from)?;
            say!(
                "{}: forgot {n} resume point(s); the next run starts from the beginning",
                p.name
            );
        }
    }
    Ok(0)
}

pub(super) async fn runs(path: &Path, limit: u32, output: Output) -> anyhow::Result<i32> {
    let p = load(path, &[])?;
    let rows = state::runs(&p, limit).await.map_err(Error::from)?;
    if output == Output::Json {
        return json_lines(&rows);
    }
    let header: Vec<String> = [
        "id", "started", "ended", "status", "pages", "records", "retries", "rejects", "error",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.started_at,
                r.ended_at.unwrap_or_default(),
                r.status,
                r.pages.to_string(),
                r.records.to_string(),
                r.retries.to_string(),
                r.rejects.to_string(),
                table::cell(&r.error.unwrap_or_default(), 120),
            ]
        })
        .collect();
    for line in table::render(&header, &rows) {
        say!("{line}");
    }
    Ok(0)
}

/// `ingest rejects`: what was rejected and why, newest first.
pub(super) async fn rejects(path: &Path, limit: u32, output: Output) -> anyhow::Result<i32> {
    let p = load(path, &[])?;
    let rows = state::rejects(&p, limit).await.map_err(Error::from)?;
    if output == Output::Json {
        return json_lines(&rows);
    }
    if rows.is_empty() {
        say!("{}: no rejects", p.name);
        return Ok(0);
    }
    let header: Vec<String> = [
        "when",
        "run",
        "partition",
        "status",
        "reason",
        "record or url",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            vec![
                r.created_at,
                r.run_id.map(|i| i.to_string()).unwrap_or_default(),
                table::cell(&r.partition, 24),
                r.status.map(|s| s.to_string()).unwrap_or_default(),
                table::cell(&r.reason, 80),
                table::cell(&r.record.or(r.url).unwrap_or_default(), 60),
            ]
        })
        .collect();
    for line in table::render(&header, &rows) {
        say!("{line}");
    }
    Ok(0)
}

/// Rows as JSON lines (`--output json`), for machines.
fn json_lines<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<i32> {
    for r in rows {
        say!("{}", serde_json::to_string(r)?);
    }
    Ok(0)
}
