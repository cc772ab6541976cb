//! Time bounds and the size of a partition plan, checked by the loader and
//! used by the run: `now`, dates and RFC 3339 instants, strftime formats,
//! `--since`/`--until`, and how many walks a `list`, `range` or `dates`
//! partition makes (counted without making them).

use jiff::Timestamp;

use super::source::PartitionConfig;

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
        PartitionConfig::Query(_) | PartitionConfig::Lines(_) => Ok(0),
    }
}
