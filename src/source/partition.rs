//! Partitions: one walk per listed value, integer, date window or row of a
//! query on the sink database. Each walk has its own key in `_ingest_state`,
//! its `{placeholder}` values and the query parameters it adds.

use std::time::Duration;

use indexmap::IndexMap;
use jiff::Timestamp;

use super::Partition;
use crate::config::source::PartitionConfig;

pub use crate::config::windows::{MAX_WINDOWS, Window, count, format_instant, instant};

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
        PartitionConfig::Lines(l) => lines(&l.file)?
            .into_iter()
            .map(|line| one(line.clone(), "value", line, &l.param))
            .collect(),
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

/// The walks of a `lines` partition: each non-empty line that is not a
/// `#` comment, once.
fn lines(file: &std::path::Path) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("file: {}: {e}", file.display()))?;
    let mut seen = std::collections::HashSet::new();
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| seen.insert(line.to_string()))
        .map(str::to_string)
        .collect())
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
