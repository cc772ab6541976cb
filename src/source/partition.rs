//! Partitions: one walk per listed value, integer, date window or row of a
//! query on the sink database. Each walk has its own key in `_ingest_state`,
//! its `{placeholder}` values and the query parameters it adds.

use std::time::Duration;

use indexmap::IndexMap;
use jiff::Timestamp;

use super::Partition;
use crate::config::source::PartitionConfig;

/// Windows per `dates` partition, at most: a typo in `step` should fail, not
/// plan ten million requests.
pub const MAX_WINDOWS: usize = 100_000;

/// `--since` / `--until` of one run.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Overrides the `dates` start.
    pub since: Option<String>,
    /// Overrides the `dates` end.
    pub until: Option<String>,
}

/// Parse a bound: `now`, a date (`2024-01-01`, midnight UTC) or RFC 3339.
pub fn instant(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(Timestamp::now());
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    match s.parse::<jiff::civil::Date>() {
        Ok(d) => d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| format!("`{s}`: {e}")),
        Err(_) => Err(format!(
            "`{s}` is not a time: write `now`, a date like 2024-01-01, or RFC 3339 like 2024-01-01T00:00:00Z"
        )),
    }
}

/// Format a bound for a request: strftime `format`, or RFC 3339.
pub fn format_instant(ts: Timestamp, format: Option<&str>) -> Result<String, String> {
    match format {
        None => Ok(ts.to_string()),
        Some(f) => jiff::fmt::strtime::format(f, ts).map_err(|e| format!("format `{f}`: {e}")),
    }
}

/// How many walks a `list`, `range` or `dates` partition makes with this
/// window, checked without making them: bounds that parse, an end after the
/// start, at most [`MAX_WINDOWS`], no overflow. The error names the key.
/// A `query` partition's count is known only at run time.
pub fn count(cfg: &PartitionConfig, window: &Window) -> Result<usize, (&'static str, String)> {
    let too_many = |n: i128, what: &str| {
        Err::<usize, _>((
            "step",
            format!(
                "{n} {what} is more than {MAX_WINDOWS}; use a larger `step` or a shorter range"
            ),
        ))
    };
    match cfg {
        PartitionConfig::List(l) => Ok(l.values.len()),
        PartitionConfig::Range(r) => {
            if r.step <= 0 {
                return Err(("step", "must be positive".into()));
            }
            if r.end < r.start {
                return Err((
                    "end",
                    format!(
                        "{} is before `start` ({}): no partition to walk",
                        r.end, r.start
                    ),
                ));
            }
            // i128: `end - start` of two i64 cannot overflow it
            let n = (i128::from(r.end) - i128::from(r.start)) / i128::from(r.step) + 1;
            match usize::try_from(n) {
                Ok(n) if n <= MAX_WINDOWS => Ok(n),
                _ => too_many(n, "partitions"),
            }
        }
        PartitionConfig::Dates(d) => {
            let (start_key, end_key) = match (&window.since, &window.until) {
                (Some(_), _) | (_, Some(_)) => ("--since", "--until"),
                _ => ("start", "end"),
            };
            let start =
                instant(window.since.as_deref().unwrap_or(&d.start)).map_err(|m| (start_key, m))?;
            let end =
                instant(window.until.as_deref().unwrap_or(&d.end)).map_err(|m| (end_key, m))?;
            if d.step.is_zero() {
                return Err(("step", "must be longer than zero".into()));
            }
            if end <= start {
                return Err((
                    end_key,
                    format!("{end} is not after the start ({start}): no window to walk"),
                ));
            }
            let span = end.duration_since(start).as_secs_f64();
            let n = (span / d.step.as_secs_f64()).ceil() as i128;
            match usize::try_from(n) {
                Ok(n) if n <= MAX_WINDOWS => Ok(n),
                _ => too_many(n, "windows"),
            }
        }
        PartitionConfig::Query(_) => Ok(0),
    }
}

fn add(ts: Timestamp, d: Duration) -> Result<Timestamp, String> {
    let d = jiff::SignedDuration::try_from(d).map_err(|e| e.to_string())?;
    ts.checked_add(d).map_err(|e| e.to_string())
}

/// The partitions of a config. `rows` are the query's rows (for `query`).
pub fn expand(
    cfg: &PartitionConfig,
    window: &Window,
    rows: Vec<IndexMap<String, String>>,
) -> Result<Vec<Partition>, String> {
    let one = |key: String, name: &str, value: String, param: &Option<String>| {
        let mut vars = IndexMap::new();
        vars.insert(name.to_string(), value.clone());
        Partition {
            key: key.into(),
            vars,
            params: param.iter().map(|p| (p.clone(), value.clone())).collect(),
        }
    };
    Ok(match cfg {
        PartitionConfig::List(l) => l
            .values
            .iter()
            .map(|v| one(v.0.clone(), "value", v.0.clone(), &l.param))
            .collect(),
        PartitionConfig::Range(r) => {
            let n = count(cfg, window).map_err(|(k, m)| format!("{k}: {m}"))?;
            (0..n as i128)
                .map(|i| {
                    let v = (i128::from(r.start) + i * i128::from(r.step)).to_string();
                    one(v.clone(), "value", v, &r.param)
                })
                .collect()
        }
        PartitionConfig::Dates(d) => {
            let start = instant(window.since.as_deref().unwrap_or(&d.start))?;
            let end = instant(window.until.as_deref().unwrap_or(&d.end))?;
            if d.step.is_zero() {
                return Err("`step` must be longer than zero".into());
            }
            let mut out = Vec::new();
            let mut t = start;
            while t < end {
                let e = add(t, d.step)?.min(end);
                if out.len() >= MAX_WINDOWS {
                    return Err(format!(
                        "more than {MAX_WINDOWS} windows; use a larger `step` or a shorter range"
                    ));
                }
                let (s_text, e_text) = (
                    format_instant(t, d.format.as_deref())?,
                    format_instant(e, d.format.as_deref())?,
                );
                let mut vars = IndexMap::new();
                vars.insert("start".to_string(), s_text.clone());
                vars.insert("end".to_string(), e_text.clone());
                let mut params = Vec::new();
                if let Some(p) = &d.start_param {
                    params.push((p.clone(), s_text));
                }
                if let Some(p) = &d.end_param {
                    params.push((p.clone(), e_text));
                }
                out.push(Partition {
                    key: format!("{t}/{e}").into(),
                    vars,
                    params,
                });
                t = e;
            }
            out
        }
        PartitionConfig::Query(_) => rows
            .into_iter()
            .map(|vars| {
                let key = form_urlencoded_key(&vars);
                Partition {
                    key: key.into(),
                    vars,
                    params: Vec::new(),
                }
            })
            .collect(),
    })
}

fn form_urlencoded_key(vars: &IndexMap<String, String>) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(vars.iter())
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::{DatesPartition, ListPartition, RangePartition};
    use crate::config::values::Scalar;

    #[test]
    fn dates_windows_clip_at_the_end() {
        let cfg = PartitionConfig::Dates(DatesPartition {
            start: "2024-01-01".into(),
            end: "2024-01-03T12:00:00Z".into(),
            step: Duration::from_secs(86_400),
            start_param: Some("since".into()),
            end_param: None,
            format: Some("%Y-%m-%d".into()),
        });
        let parts = expand(&cfg, &Window::default(), vec![]).unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<&str> = parts.iter().map(|p| p.key.as_ref()).collect();
        assert_eq!(
            keys,
            [
                "2024-01-01T00:00:00Z/2024-01-02T00:00:00Z",
                "2024-01-02T00:00:00Z/2024-01-03T00:00:00Z",
                "2024-01-03T00:00:00Z/2024-01-03T12:00:00Z"
            ]
        );
        assert_eq!(
            parts[2].vars.get("end").map(String::as_str),
            Some("2024-01-03")
        );
        assert_eq!(
            parts[1].params,
            vec![("since".to_string(), "2024-01-02".to_string())]
        );
        let w = Window {
            since: Some("2024-01-02".into()),
            until: Some("2024-01-03".into()),
        };
        assert_eq!(expand(&cfg, &w, vec![]).map(|p| p.len()), Ok(1));
    }

    #[test]
    fn list_range_and_errors() {
        let l = PartitionConfig::List(ListPartition {
            param: Some("userId".into()),
            values: vec![Scalar("1".into()), Scalar("2".into())],
        });
        let parts = expand(&l, &Window::default(), vec![]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            parts[1].params,
            vec![("userId".to_string(), "2".to_string())]
        );
        let r = PartitionConfig::Range(RangePartition {
            param: None,
            start: 3,
            end: 9,
            step: 3,
        });
        let parts = expand(&r, &Window::default(), vec![]).unwrap_or_else(|e| panic!("{e}"));
        let v: Vec<&str> = parts.iter().map(|p| p.key.as_ref()).collect();
        assert_eq!(v, ["3", "6", "9"]);
        assert!(instant("yesterday").is_err());
        assert!(format_instant(Timestamp::UNIX_EPOCH, Some("%Y-%")).is_err());
    }
}
