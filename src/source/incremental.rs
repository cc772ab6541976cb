//! Incremental syncs: what the request asks for (the mark minus the
//! lookback) and how cursor values compare. A cursor is an RFC 3339
//! timestamp, a number, or (failing both) compared as text.

use std::cmp::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

/// A cursor value of a record as text (strings as they are, numbers printed).
pub fn cursor_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Compare two cursor values: as instants if both are RFC 3339, as numbers
/// if both are numbers, else as text.
pub fn compare(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.parse::<Timestamp>(), b.parse::<Timestamp>()) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    a.cmp(b)
}

/// The larger of two optional cursors.
pub fn max(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if compare(&x, &y) == Ordering::Less {
            y
        } else {
            x
        }),
        (x, y) => x.or(y),
    }
}

/// The value sent for a mark: the mark minus `lookback` (a timestamp moves
/// back in time, a number by the lookback's seconds; text cannot move).
pub fn with_lookback(mark: &str, lookback: Option<Duration>) -> String {
    let Some(back) = lookback.filter(|d| !d.is_zero()) else {
        return mark.to_string();
    };
    if let Ok(ts) = mark.parse::<Timestamp>()
        && let Ok(d) = jiff::SignedDuration::try_from(back)
        && let Ok(earlier) = ts.checked_sub(d)
    {
        return earlier.to_string();
    }
    if let Ok(n) = mark.trim().parse::<i64>() {
        let back = i64::try_from(back.as_secs()).unwrap_or(i64::MAX);
        return n.saturating_sub(back).to_string();
    }
    if let Ok(f) = mark.trim().parse::<f64>() {
        return (f - back.as_secs_f64()).to_string();
    }
    mark.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_by_kind() {
        assert_eq!(
            compare("2024-01-02T00:00:00Z", "2024-01-01T23:00:00+00:00"),
            Ordering::Greater
        );
        assert_eq!(compare("10", "9"), Ordering::Greater);
        assert_eq!(compare("b", "a"), Ordering::Greater);
        assert_eq!(max(Some("9".into()), Some("10".into())), Some("10".into()));
        assert_eq!(max(None, Some("1".into())), Some("1".into()));
    }

    #[test]
    fn lookback_moves_back() {
        assert_eq!(
            with_lookback("2024-01-01T01:00:00Z", Some(Duration::from_secs(3600))),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(with_lookback("1000", Some(Duration::from_secs(60))), "940");
        assert_eq!(with_lookback("abc", Some(Duration::from_secs(60))), "abc");
        assert_eq!(with_lookback("5", None), "5");
    }
}
