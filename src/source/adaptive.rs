//! `concurrency = "auto"`: the number of requests in flight adapts between
//! 1 and `max_concurrency`, AIMD as TCP does it. It starts at 1 and doubles
//! every round of fast, successful responses (slow start) until the first
//! sign of trouble; then it grows by one per round. A 429, a 503 or a
//! timeout halves it (once per round: the requests already in flight when
//! it shrank do not shrink it again), and so does a round whose responses
//! take three times the fastest seen (the server queueing them).
//!
//! The limit is the number of permits of a semaphore: growing adds one;
//! shrinking forgets free permits at once and the rest as requests end.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// What one request's end says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A response that was not a sign of overload.
    Fine(Duration),
    /// 429, 503 or a timeout.
    Overloaded,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Permits still to take back from requests as they end.
    debt: usize,
    /// Slow start until the first decrease.
    slow_start: bool,
    /// Successes in the current round.
    round: usize,
    /// The fastest response seen.
    fastest: Option<Duration>,
    /// Decreases are ignored until this instant (one per round).
    calm_until: Instant,
}

/// The adaptive limit of one source.
#[derive(Debug)]
pub struct Adaptive {
    sem: Semaphore,
    max: usize,
    state: Mutex<State>,
}

impl Adaptive {
    /// A limit between 1 and `max`, starting at 1.
    pub fn new(max: usize) -> Self {
        Self {
            sem: Semaphore::new(1),
            max: max.max(1),
            state: Mutex::new(State {
                limit: 1,
                debt: 0,
                slow_start: true,
                round: 0,
                fastest: None,
                calm_until: Instant::now(),
            }),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().map_or(1, |s| s.limit)
    }

    /// Wait for a slot.
    pub async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.sem.acquire().await.ok()
    }

    /// A request ended: give its slot back (or keep it, when the limit
    /// shrank) and adapt the limit.
    pub fn release(&self, permit: SemaphorePermit<'_>, signal: Signal) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
        match signal {
            Signal::Overloaded => self.shrink(&mut s),
            Signal::Fine(took) => {
                let fastest = *s.fastest.get_or_insert(took);
                s.fastest = Some(fastest.min(took));
                if took > fastest * 3 + Duration::from_millis(5) {
                    self.shrink(&mut s);
                } else {
                    self.grow(&mut s);
                }
            }
        }
    }

    fn grow(&self, s: &mut State) {
        s.round += 1;
        if s.round < s.limit {
            return;
        }
        s.round = 0;
        let add = if s.slow_start { s.limit } else { 1 };
        let add = add.min(self.max - s.limit);
        if add > 0 {
            s.limit += add;
            self.sem.add_permits(add);
            tracing::debug!(limit = s.limit, "concurrency up");
        }
    }

    fn shrink(&self, s: &mut State) {
        if Instant::now() < s.calm_until || s.limit == 1 {
            return;
        }
        s.slow_start = false;
        s.round = 0;
        let cut = s.limit - (s.limit / 2).max(1);
        s.limit -= cut;
        let forgotten = self.sem.forget_permits(cut);
        s.debt += cut - forgotten;
        // the requests in flight now were sent at the old limit: the next
        // decrease waits for a round at the new one
        let round = s
            .fastest
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_millis(20));
        s.calm_until = Instant::now() + round * 2;
        tracing::debug!(limit = s.limit, "concurrency down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_fast_then_halves_on_overload_and_stays_within_bounds() {
        let a = Adaptive::new(32);
        let fine = Signal::Fine(Duration::from_millis(20));
        for _ in 0..200 {
            let p = a.acquire().await;
            if let Some(p) = p {
                a.release(p, fine);
            }
        }
        assert_eq!(a.limit(), 32, "slow start reaches the cap");
        let p = a.acquire().await;
        if let Some(p) = p {
            a.release(p, Signal::Overloaded);
        }
        assert_eq!(a.limit(), 16);
        // a second overload in the same round does not halve again
        let p = a.acquire().await;
        if let Some(p) = p {
            a.release(p, Signal::Overloaded);
        }
        assert_eq!(a.limit(), 16);
        // the free permits match the limit
        assert_eq!(a.sem.available_permits(), 16);
        // then it grows by one a round, not by doubling
        for _ in 0..16 {
            if let Some(p) = a.acquire().await {
                a.release(p, fine);
            }
        }
        assert_eq!(a.limit(), 17);
    }

    #[tokio::test]
    async fn slow_responses_shrink_it() {
        let a = Adaptive::new(8);
        for _ in 0..50 {
            if let Some(p) = a.acquire().await {
                a.release(p, Signal::Fine(Duration::from_millis(10)));
            }
        }
        assert_eq!(a.limit(), 8);
        if let Some(p) = a.acquire().await {
            a.release(p, Signal::Fine(Duration::from_millis(200)));
        }
        assert_eq!(a.limit(), 4);
    }
}
