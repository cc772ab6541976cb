//! `ingest state show|reset`, `runs`, `rejects` and `status`: what the ledger says.

use std::path::Path;

use super::progress::thousands;
use super::{load, table};
use crate::cli::{Output, StateAction};
use crate::{Error, state};

pub(super) async fn state(action: StateAction) -> anyhow::Result<i32> {
    match action {
        StateAction::Show { pipeline } => {
            let p = load(&pipeline, &[])?;
            let mut rows = state::show(&p).await.map_err(Error::from)?;
            if rows.is_empty() {
                say!(
                    "{}: no saved state; the next run starts from the beginning",
                    p.name
                );
            }
            rows.sort_by(|a, b| natural(&a.partition, &b.partition));
            for r in rows {
                let part = if r.partition.is_empty() {
                    "the walk".to_string()
                } else {
                    format!("partition {}", r.partition)
                };
                let what = match r.resume {
                    Some(resume) => in_words(&resume, &p.secrets),
                    None => "complete; the rerun skips it".into(),
                };
                say!(
                    "{part}: {what} (saved {} by run {})",
                    r.updated_at,
                    r.run_id.unwrap_or(0)
                );
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

/// `ingest status`: one line per pipeline, then a shared run's partitions.
pub(super) async fn status(paths: &[std::path::PathBuf], output: Output) -> anyhow::Result<i32> {
    let paths = if paths.is_empty() {
        default_pipelines()?
    } else {
        paths.to_vec()
    };
    let mut all = Vec::new();
    for path in &paths {
        let p = load(path, &[])?;
        // one sink that cannot be read does not hide the others
        let s = state::status(&p).await.unwrap_or_else(|e| state::Status {
            pipeline: p.name.clone(),
            last: None,
            shared_done: None,
            shared_claims: Vec::new(),
            unreadable: Some(p.secrets.redact(&e.to_string())),
        });
        all.push(s);
    }
    let bad = all.iter().any(|s| {
        s.unreadable.is_some()
            || s.last
                .as_ref()
                .is_some_and(|r| matches!(r.status.as_str(), "failed" | "killed" | "interrupted"))
    });
    if output == Output::Json {
        json_lines(&all)?;
        return Ok(i32::from(bad));
    }
    let header: Vec<String> = [
        "pipeline", "last run", "started", "took", "rows", "rejects", "error",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = all.iter().map(status_row).collect();
    for line in table::render(&header, &rows) {
        say!("{line}");
    }
    for s in all.iter().filter(|s| s.shared_done.is_some()) {
        let held: Vec<String> = s
            .shared_claims
            .iter()
            .map(|c| match (c.owner.as_str(), c.expired) {
                ("", _) => format!("{} waiting", c.partitions),
                (o, true) => format!("{} held by {o} (lease ran out)", c.partitions),
                (o, false) => format!("{} walked by {o}", c.partitions),
            })
            .collect();
        say!(
            "{}: shared run in progress: {} partitions done; {}",
            s.pipeline,
            s.shared_done.unwrap_or(0),
            if held.is_empty() {
                "none left".into()
            } else {
                held.join("; ")
            }
        );
    }
    Ok(i32::from(bad))
}

fn status_row(s: &state::Status) -> Vec<String> {
    if let Some(why) = &s.unreadable {
        let mut row = vec![String::new(); 7];
        row[0] = s.pipeline.clone();
        row[1] = "unknown".into();
        row[6] = table::cell(why, 80);
        return row;
    }
    let Some(r) = &s.last else {
        return vec![
            s.pipeline.clone(),
            "never run".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ];
    };
    let took = match (
        r.started_at.parse::<jiff::Timestamp>(),
        r.ended_at.as_deref().map(str::parse::<jiff::Timestamp>),
    ) {
        (Ok(a), Some(Ok(b))) => {
            let ms = (b.as_millisecond() - a.as_millisecond()).max(0);
            format!("{:.1}s", ms as f64 / 1000.0)
        }
        _ => String::new(),
    };
    vec![
        s.pipeline.clone(),
        r.status.clone(),
        r.started_at.clone(),
        took,
        r.records.to_string(),
        r.rejects.to_string(),
        table::cell(r.error.as_deref().unwrap_or_default(), 80),
    ]
}

/// `pipelines/*.toml` under the working directory, sorted.
fn default_pipelines() -> anyhow::Result<Vec<std::path::PathBuf>> {
    let dir = Path::new("pipelines");
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "name the pipeline files, or run from a folder with pipelines/ ({}: {e})",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    Ok(out)
}

/// A saved resume point in words: where the walk goes on, and how far it got.
fn in_words(text: &str, secrets: &crate::redact::Secrets) -> String {
    use crate::source::Position;
    let Ok(r) = serde_json::from_str::<crate::source::Resume>(text) else {
        return format!("resumes at {}", secrets.redact(text));
    };
    let at = match &r.position {
        Position::Start => "the first page".to_string(),
        Position::Page(n) => format!("page {n}"),
        Position::Offset(o) => format!("offset {}", thousands(*o)),
        Position::Cursor(c) => format!("cursor {}", super::table::cell(&secrets.redact(c), 40)),
        Position::Url(u) => super::table::cell(&secrets.redact(u), 100),
    };
    let pages = match r.pages {
        1 => "1 page".to_string(),
        n => format!("{} pages", thousands(n)),
    };
    let of = r
        .total
        .map(|t| format!(" of the {} the API reported", thousands(t)))
        .unwrap_or_default();
    format!(
        "resumes at {at}; {pages} and {} records{of} fetched so far",
        thousands(r.records)
    )
}

/// Natural order: `p2` before `p10`, digits compared as numbers.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x, y) {
            ((true, m), (true, n)) => {
                let (m, n) = (m.trim_start_matches('0'), n.trim_start_matches('0'));
                m.len().cmp(&n.len()).then_with(|| m.cmp(n))
            }
            ((_, m), (_, n)) => m.cmp(n),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len()).then_with(|| a.cmp(b))
}

/// Rows as JSON lines (`--output json`), for machines.
fn json_lines<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<i32> {
    for r in rows {
        say!("{}", serde_json::to_string(r)?);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::natural;

    #[test]
    fn partitions_sort_naturally() {
        let mut v = vec!["user=10", "user=2", "user=1", "", "user=02b", "a9", "a10"];
        v.sort_by(|a, b| natural(a, b));
        assert_eq!(
            v,
            ["", "a9", "a10", "user=1", "user=2", "user=02b", "user=10"]
        );
    }
}
