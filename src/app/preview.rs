//! `ingest preview`: fetch the first page and print the records after the
//! transforms and the columns the sink would infer; writes nothing.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::load;

pub(super) async fn preview(path: &Path, set: &[String], limit: usize) -> anyhow::Result<i32> {
    let p = load(path, set)?;
    let pv = crate::run::preview(&p)
        .await
        .map_err(|e| anyhow::anyhow!(p.secrets.redact(&e.to_string())))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} ({} records on the first page, {} after transforms)",
        pv.url,
        pv.fetched,
        pv.records.len()
    )?;
    for r in pv.records.iter().take(limit) {
        writeln!(
            out,
            "{}",
            serde_json::to_string(r).context("printing a record")?
        )?;
    }
    writeln!(out, "columns:")?;
    for (name, ty) in &pv.columns {
        writeln!(out, "  {name} {ty}")?;
    }
    for r in &pv.rejects {
        writeln!(out, "rejected: {r}")?;
    }
    match &pv.next_request {
        Some(req) => writeln!(
            out,
            "the second page would be asked with (not sent):\n  {req}"
        )?,
        None => writeln!(out, "the first page is the last: no second request")?,
    }
    Ok(0)
}
