//! Fault switches: what real APIs do to clients, deterministic per seed.
//!
//! Each fault is chosen per URL by a hash of (seed, URL), and strikes only the
//! first attempts at that URL, in this order: a 429 with `Retry-After`
//! (seconds or an HTTP date), a burst of 500/503, a truncated body, a
//! connection reset mid-body. A URL with every fault still succeeds on its
//! sixth attempt, the default `max_attempts`.
//!
//! Separately, `max_rps` answers 429 to requests beyond a global rate (with
//! `X-RateLimit-Remaining`/`X-RateLimit-Reset` on every response), and the
//! server counts requests that came back before the `Retry-After` it gave.

use std::time::Duration;

/// Which faults to inject, as fractions of URLs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// URLs whose first attempt gets a 429 with `Retry-After`.
    pub rate_429: f64,
    /// Seconds of `Retry-After` (half the 429s send it as an HTTP date).
    pub retry_after_secs: u64,
    /// URLs that get a burst of 5xx on their first attempts.
    pub burst_5xx: f64,
    /// Length of a burst.
    pub burst_len: u32,
    /// URLs whose next attempt gets a body cut in half (valid length, broken JSON).
    pub truncate: f64,
    /// URLs whose next attempt has the connection reset mid-body.
    pub reset: f64,
    /// URLs answered `slow_by` late.
    pub slow: f64,
    /// Extra delay of a slow response.
    pub slow_by: Duration,
    /// A global limit of requests per second; beyond it, 429 + `Retry-After: 1`.
    pub max_rps: Option<u32>,
    /// Pages after the first repeat the last record of the page before, as
    /// APIs whose data moves under the cursor do.
    pub repeat_boundary: bool,
    /// URLs containing any of these strings always get a 500.
    pub broken: Vec<String>,
    /// Which rate-limit headers `max_rps` sends.
    pub rate_style: RateStyle,
}

/// The rate-limit headers the mock sends with `max_rps`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RateStyle {
    /// `X-RateLimit-*` and `RateLimit-*`.
    #[default]
    Both,
    /// Only `X-RateLimit-*`.
    Prefixed,
    /// Only the IETF draft's `RateLimit-*`.
    Ietf,
}

impl Faults {
    /// The mix of the robustness tests: 10% 429s, 5% 5xx bursts, 2% truncated
    /// bodies, 2% resets.
    pub fn rough() -> Self {
        Self {
            rate_429: 0.10,
            retry_after_secs: 1,
            burst_5xx: 0.05,
            burst_len: 2,
            truncate: 0.02,
            reset: 0.02,
            ..Self::default()
        }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Serve it.
    Serve,
    /// 429 with this `Retry-After` (as a date when the flag is set).
    TooMany { secs: u64, as_date: bool },
    /// This 5xx status.
    ServerError(u16),
    /// Serve half the body with a matching length: the JSON is cut.
    Truncate,
    /// Serve half the body and drop the connection.
    Reset,
}

/// A number in [0, 1) from the seed, the URL and a salt.
fn unit(seed: u64, url: &str, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    /// The action for the `attempt`th (1-based) request of `url`.
    pub fn decide(&self, seed: u64, url: &str, attempt: u32) -> Action {
        let mut k = attempt;
        if unit(seed, url, 1) < self.rate_429 {
            if k == 1 {
                return Action::TooMany {
                    secs: self.retry_after_secs.max(1),
                    as_date: unit(seed, url, 2) < 0.5,
                };
            }
            k -= 1;
        }
        if unit(seed, url, 3) < self.burst_5xx {
            let len = self.burst_len.max(1);
            if k <= len {
                return Action::ServerError(if k % 2 == 1 { 503 } else { 500 });
            }
            k -= len;
        }
        if unit(seed, url, 4) < self.truncate {
            if k == 1 {
                return Action::Truncate;
            }
            k -= 1;
        }
        if unit(seed, url, 5) < self.reset && k == 1 {
            return Action::Reset;
        }
        Action::Serve
    }

    /// Whether this URL is answered late.
    pub fn is_slow(&self, seed: u64, url: &str) -> bool {
        unit(seed, url, 6) < self.slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_succeeds_by_the_sixth_attempt() {
        let f = Faults {
            rate_429: 1.0,
            burst_5xx: 1.0,
            burst_len: 2,
            truncate: 1.0,
            reset: 1.0,
            ..Faults::rough()
        };
        let seq: Vec<Action> = (1..=6).map(|n| f.decide(7, "/posts?_page=1", n)).collect();
        assert!(matches!(seq[0], Action::TooMany { .. }));
        assert_eq!(
            &seq[1..],
            &[
                Action::ServerError(503),
                Action::ServerError(500),
                Action::Truncate,
                Action::Reset,
                Action::Serve
            ]
        );
    }

    #[test]
    fn rates_are_roughly_the_fractions_and_deterministic() {
        let f = Faults::rough();
        let n = 10_000;
        let hits = (0..n)
            .filter(|i| {
                matches!(
                    f.decide(1, &format!("/p?page={i}"), 1),
                    Action::TooMany { .. }
                )
            })
            .count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert_eq!(f.decide(1, "/x", 1), f.decide(1, "/x", 1));
    }
}
