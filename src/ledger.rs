//! The run ledger: what a run reads before it starts and decides from it.
//! Resume points and what they depend on ([`Resume::depends`]), a
//! `--full-refresh` in progress, the incremental mark, and which partitions
//! resume, restart or refuse the run. The sink stores all of it in the same
//! transactions as the rows (`sink/`); this module is where the decisions
//! are made, so the run driver only asks for a [`Plan`].

use indexmap::IndexMap;

use crate::config::source::PartitionConfig;
use crate::config::{Pipeline, SourceConfig, WriteMode};
use crate::error::Error;
use crate::run::{RunOptions, usage};
use crate::sink::Sink;
use crate::source::partition;
use crate::source::{Partition, Resume, Source};

/// One walk of a run: a partition and where it resumes.
pub type Walk = (Partition, Option<Resume>);

/// What a run will do: its walks (each partition from its saved resume
/// point or from the start), whether it is a staged refresh, and whether
/// it starts anew.
pub struct Plan {
    /// Each partition and where it resumes.
    pub walks: Vec<Walk>,
    /// Partitions resumed from saved state.
    pub resumed: u64,
    /// Records the resumed walks fetched before.
    pub resumed_records: u64,
    /// Partitions an interrupted run completed (not walked again).
    pub complete: u64,
    /// Partitions in all: the walks and the complete ones.
    pub walks_total: u64,
    /// A staged refresh (`--full-refresh`, or finishing one).
    pub refresh: bool,
    /// Nothing saved: a new load.
    pub fresh: bool,
}

/// Read the ledger and plan the walks: finish an interrupted refresh, start
/// a new one, resume saved positions whose settings still hold.
pub async fn plan(
    p: &Pipeline,
    opts: &RunOptions,
    source: &mut Source,
    sink: &mut Sink,
) -> Result<Plan, Error> {
    // a --full-refresh that was interrupted is finished by the next run,
    // into the same staging table, whatever that run's flags
    let continued = !opts.full_refresh && sink.pending_refresh().await?.is_some();
    if continued {
        tracing::warn!(
            "finishing the interrupted --full-refresh: loading into the staging table, swapped in at the end"
        );
    }
    let refresh = opts.full_refresh || continued;
    // a partition can be walked again from the start only where records
    // are upserted into the live table; elsewhere that would double them
    let restartable = p.sink.write() == WriteMode::Merge && !refresh;
    source.restart_expired(restartable);
    let saved = if opts.full_refresh {
        sink.start_refresh().await?;
        IndexMap::new()
    } else {
        sink.load_state().await?
    };
    // with no saved state at all this is a new load (a staged one starts empty)
    let fresh = saved.is_empty();
    let extra = incremental_params(p, opts, sink, refresh).await?;
    let own = match own_mark(p, sink, refresh).await? {
        Some(after) => source.own_partitions(after.as_deref())?,
        None => None,
    };
    let partitions = match (own, p.source.partition()) {
        (Some(files), _) => files,
        (None, None) => vec![Partition::default()],
        (None, Some(cfg)) => {
            let rows = match cfg {
                PartitionConfig::Query(q) => query_rows(q, sink, refresh).await?,
                _ => Vec::new(),
            };
            partition::expand(cfg, &opts.window, rows)
                .map_err(|m| usage(p, format!("source.partition: {m}")))?
        }
    };
    let total = partitions.len() as u64;
    let rereads = restartable || source.rereads_changed();
    let (walks, resumed) = match_saved(p, source, partitions, &extra, saved, rereads, refresh)?;
    let resumed_records = walks
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .map(|r| r.records)
        .sum();
    Ok(Plan {
        complete: total - walks.len() as u64,
        walks_total: total,
        walks,
        resumed,
        resumed_records,
        refresh,
        fresh,
    })
}

/// For a source that lists its own walks (files): `Some` with the mark
/// they must be newer than (`incremental = true`, none on a refresh or the
/// first run); `None` for the others.
async fn own_mark(
    p: &Pipeline,
    sink: &mut Sink,
    refresh: bool,
) -> Result<Option<Option<String>>, Error> {
    let SourceConfig::Files(f) = &p.source else {
        return Ok(None);
    };
    if !f.incremental {
        return Ok(Some(None));
    }
    let marks = sink.load_marks(FILES_MARK).await?;
    let after = if refresh { None } else { marks.value };
    tracing::info!(mark = ?after, "reading the files modified after the mark");
    Ok(Some(after))
}

/// The incremental mark of a files source: the newest change time read
/// (the later of mtime and ctime).
pub const FILES_MARK: &str = "changed";

/// The rows of a `query` partition. With a `mark` column, `{mark}` is the
/// largest value of it over the last completed run, and the sink is told
/// the new one, which it keeps when this run completes.
async fn query_rows(
    q: &crate::config::source::QueryPartition,
    sink: &mut Sink,
    refresh: bool,
) -> Result<Vec<IndexMap<String, String>>, Error> {
    let Some(col) = &q.mark else {
        return Ok(sink.query_rows(&q.sql).await?);
    };
    // a refresh walks every parent again
    let before = if refresh {
        None
    } else {
        sink.partition_mark().await?
    };
    let literal = before.as_ref().map_or_else(
        || "NULL".to_string(),
        |m| format!("'{}'", m.replace('\'', "''")),
    );
    let mut rows = sink.query_rows(&q.sql.replace("{mark}", &literal)).await?;
    let seen = rows
        .iter()
        .filter_map(|r| r.get(col).filter(|v| !v.is_empty()).cloned())
        .reduce(|a, b| crate::source::incremental::max(Some(a), Some(b)).unwrap_or_default());
    // the mark column says when a parent changed, not which one it is: it
    // stays out of the partition's key, so a resumed run finds its walks
    for r in &mut rows {
        r.shift_remove(col);
    }
    tracing::info!(mark = ?before, parents = rows.len(), "walking the parents changed since the last completed run");
    sink.set_partition_mark(crate::source::incremental::max(before, seen));
    Ok(rows)
}

/// The incremental parameters of every request: `--since`, or the mark
/// minus the lookback (the initial value on a refresh), and `--until`.
async fn incremental_params(
    p: &Pipeline,
    opts: &RunOptions,
    sink: &mut Sink,
    refresh: bool,
) -> Result<Vec<(String, String)>, Error> {
    let mut extra = Vec::new();
    let Some(inc) = p.source.incremental() else {
        return Ok(extra);
    };
    let marks = sink.load_marks(&inc.cursor_field.to_string()).await?;
    let from = match (&opts.window.since, refresh) {
        (Some(since), _) => since.clone(),
        (None, false) if marks.value.is_some() => {
            let mark = marks.value.clone().unwrap_or_default();
            crate::source::incremental::with_lookback(&mark, inc.lookback)
        }
        _ => inc.initial.0.clone(),
    };
    tracing::info!(param = %inc.param, value = %from, "incremental sync from the mark");
    extra.push((inc.param.clone(), from));
    if let (Some(until), Some(end)) = (&opts.window.until, &inc.end_param) {
        extra.push((end.clone(), until.clone()));
    }
    Ok(extra)
}

/// Pair each partition with its saved resume point. A point saved under
/// other settings restarts its partition where that is safe (merge into the
/// live table) and refuses the run elsewhere (exit 2), as do saved
/// partitions a list/range/dates definition no longer has.
fn match_saved(
    p: &Pipeline,
    source: &Source,
    partitions: Vec<Partition>,
    extra: &[(String, String)],
    mut saved: IndexMap<String, Option<Resume>>,
    restartable: bool,
    refresh: bool,
) -> Result<(Vec<Walk>, u64), Error> {
    let mut walks: Vec<Walk> = Vec::new();
    let mut resumed = 0;
    let mut mismatched: Vec<String> = Vec::new();
    for mut part in partitions {
        part.params.extend(extra.iter().cloned());
        let now = source.depends(&part);
        match saved.shift_remove(part.key.as_ref()) {
            Some(None) => {
                tracing::info!(partition = %part.key, "already complete in the interrupted run; skipping")
            }
            Some(Some(r)) if r.depends.as_ref().is_some_and(|d| *d != now) => {
                let what = crate::source::changed(r.depends.as_deref().unwrap_or_default(), &now)
                    .join(", ");
                if restartable {
                    tracing::warn!(partition = %part.key, changed = %what,
                        "the saved resume point was made with other settings; walking this partition again from the start (merge mode upserts, so nothing is doubled)");
                    walks.push((part, None));
                } else {
                    mismatched.push(format!("{} ({what})", shown_key(&part.key)));
                }
            }
            Some(Some(r)) => {
                tracing::info!(
                    partition = %part.key,
                    "resuming the interrupted run at {:?} ({} pages, {} records already stored)",
                    r.position, r.pages, r.records
                );
                resumed += 1;
                walks.push((part, Some(r)));
            }
            None => walks.push((part, None)),
        }
    }
    // partitions the interrupted run had and this one does not (another
    // range, step or window): their rows are in the table already
    let defined = matches!(
        p.source.partition(),
        Some(PartitionConfig::List(_) | PartitionConfig::Range(_) | PartitionConfig::Dates(_))
    );
    if defined && !restartable {
        mismatched.extend(
            saved
                .keys()
                .map(|k| format!("{} (no longer in the partition definition)", shown_key(k))),
        );
    }
    if mismatched.is_empty() {
        return Ok((walks, resumed));
    }
    mismatched.truncate(5);
    Err(usage(
        p,
        format!(
            "the interrupted run saved resume points under other settings: {}. \
             Resuming them would lose or double rows in `{}` mode{}. Run with --full-refresh \
             to reload the table, or `ingest state reset` to forget the saved points \
             (the next run then starts over and may store rows again)",
            mismatched.join("; "),
            p.sink.write().name(),
            if refresh {
                " with a staged refresh"
            } else {
                ""
            }
        ),
    ))
}

fn shown_key(key: &str) -> String {
    if key.is_empty() {
        "the walk".into()
    } else {
        format!("partition `{key}`")
    }
}
