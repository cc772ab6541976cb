//! `ingest show`: the sink table's row count and first rows.

use std::path::Path;

use super::{load, table};
use crate::cli::Output;
use crate::{Error, state};

pub(super) async fn show(path: &Path, limit: u32, output: Output) -> anyhow::Result<i32> {
    let p = load(path, &[])?;
    let peek = state::peek(&p, limit).await.map_err(Error::from)?;
    if output == Output::Json {
        say!("{}", serde_json::to_string(&peek)?);
        return Ok(0);
    }
    if matches!(p.sink, crate::config::SinkConfig::Jsonl(_)) {
        say!("{}: {} lines in {}", p.name, peek.count, p.sink.location());
    } else {
        say!(
            "{}: {} rows in {} (table {})",
            p.name,
            peek.count,
            p.sink.location(),
            peek.table
        );
    }
    let header = peek.columns.clone();
    let rows: Vec<Vec<String>> = peek
        .rows
        .iter()
        .map(|r| {
            peek.columns
                .iter()
                .map(|c| table::cell(&table::value(r.get(c)), 28))
                .collect()
        })
        .collect();
    for line in table::render(&header, &rows) {
        say!("{line}");
    }
    Ok(0)
}
