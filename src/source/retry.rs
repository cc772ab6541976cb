//! Retries with exponential backoff, full jitter and `Retry-After`, in one
//! place (backon; the `backoff` crate is unmaintained, RUSTSEC-2025-0012).
//!
//! backon counts attempts and grows the delay; the `adjust` hook then applies
//! *full* jitter (a uniform delay in `[0, computed]`, which backon's own
//! jitter does not do) or, when the server sent a usable `Retry-After`, that
//! delay capped at `max_delay`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};

use crate::config::source::RetryConfig;

/// What the retry loop needs to know of an error.
pub trait Transient {
    /// Worth another attempt.
    fn is_transient(&self) -> bool;
    /// The server's `Retry-After`, when it gave a usable one.
    fn retry_after(&self) -> Option<Duration>;
}

/// Run `attempt` until it succeeds, fails for good, or attempts run out.
/// `attempt` gets the 1-based attempt number. Returns the result and the
/// number of attempts made.
pub async fn with_retries<T, E, F, Fut>(
    cfg: &RetryConfig,
    on_retry: impl Fn(&E, Duration, u32) + Send,
    mut attempt: F,
) -> (Result<T, E>, u32)
where
    E: Transient,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let count = Arc::new(AtomicU32::new(0));
    let builder = ExponentialBuilder::default()
        .with_min_delay(cfg.initial_delay)
        .with_max_delay(cfg.max_delay)
        .with_factor(cfg.multiplier)
        .with_max_times(cfg.max_attempts.saturating_sub(1) as usize);
    let jitter = cfg.jitter;
    let max = cfg.max_delay;
    let c = count.clone();
    let result = (|| {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        attempt(n)
    })
    .retry(builder)
    .sleep(tokio::time::sleep)
    .when(|e: &E| e.is_transient())
    .adjust(move |e: &E, computed: Option<Duration>| {
        let computed = computed?; // attempts exhausted: a hint grants no more
        Some(match e.retry_after() {
            Some(hint) => hint.min(max),
            None if jitter => computed.mul_f64(fastrand::f64()),
            None => computed,
        })
    })
    .notify(|e: &E, d: Duration| on_retry(e, d, count.load(Ordering::SeqCst)))
    .await;
    let attempts = count.load(Ordering::SeqCst);
    (result, attempts)
}

/// The server's wait hint from a response's headers: `retry-after-ms`
/// (milliseconds, the OpenAI/Azure style) first, then `Retry-After`.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| seconds(v, 1e-3)) {
        return Some(ms);
    }
    get("retry-after").and_then(|v| parse_retry_after(v, now))
}

/// Parse a `Retry-After` value: delta-seconds (fractions too: `0.5`, which
/// some APIs send) or an HTTP date. Zero and dates in the past are no hint.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return seconds(v, 1.0);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    when.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// A non-negative decimal number of `unit` seconds, as a delay; none for
/// zero, negatives and what does not parse. Capped at a day (the caller caps
/// again at `max_delay`).
fn seconds(v: &str, unit: f64) -> Option<Duration> {
    let n: f64 = v.trim().parse().ok()?;
    let secs = n * unit;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(bool, Option<Duration>);
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    fn cfg(attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts: attempts,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..RetryConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_until_success() {
        let (r, n) = with_retries(
            &cfg(6),
            |_, _, _| {},
            |n| async move { if n < 3 { Err(E(true, None)) } else { Ok(n) } },
        )
        .await;
        assert_eq!((r.ok(), n), (Some(3), 3));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_permanent_and_when_exhausted() {
        let (r, n) = with_retries(
            &cfg(6),
            |_, _, _| {},
            |_| async { Err::<(), _>(E(false, None)) },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(n, 1);
        let (r, n) = with_retries(
            &cfg(4),
            |_, _, _| {},
            |_| async { Err::<(), _>(E(true, None)) },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(n, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_capped_at_max_delay() {
        let delays = std::sync::Mutex::new(Vec::new());
        let (_, n) = with_retries(
            &cfg(3),
            |_, d, _| delays.lock().map(|mut v| v.push(d)).unwrap_or(()),
            |n| async move {
                Err::<(), _>(E(
                    true,
                    Some(if n == 1 {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_secs(60)
                    }),
                ))
            },
        )
        .await;
        assert_eq!(n, 3);
        let got = delays.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(got, vec![Duration::from_secs(1), Duration::from_secs(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_jitter_stays_within_computed_delay() {
        let delays = std::sync::Mutex::new(Vec::new());
        let _ = with_retries(
            &cfg(6),
            |_, d, _| delays.lock().map(|mut v| v.push(d)).unwrap_or(()),
            |_| async { Err::<(), _>(E(true, None)) },
        )
        .await;
        let got = delays.lock().map(|v| v.clone()).unwrap_or_default();
        let caps = [100u64, 200, 400, 800, 1600];
        assert_eq!(got.len(), 5);
        for (d, cap) in got.iter().zip(caps) {
            assert!(*d <= Duration::from_millis(cap), "{d:?} > {cap}ms");
        }
    }

    #[test]
    fn parses_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0", now), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(5)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&past, now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("7"),
        );
        h.insert(
            "retry-after-ms",
            reqwest::header::HeaderValue::from_static("250"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
    }
}
