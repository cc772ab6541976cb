//! Progress on a terminal, and a log line every 10 s elsewhere (cron).
//!
//! With a known total (a total header or field) the bar shows the share
//! done, the count, a rate ("2,447/s") and an ETA; without one, a spinner
//! with the count and rate. Partitions show as done out of all. A resumed
//! run's count goes on from what earlier runs fetched, while its rate and
//! ETA count only this run's records. Log lines are written through the
//! bar (`suspend`), so no half-drawn frame is left behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::run::{self, Progress};

/// The bar being drawn, if any: log lines go through it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Progress of one run.
pub(super) enum Bar {
    /// Drawn on a terminal.
    Drawn(ProgressBar, Arc<AtomicU64>),
    /// A log line every 10 s.
    Logged(String),
    /// Nothing (`-q`).
    Off,
}

/// A count with thousands separators: 2,447.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Records per second of this run: what it fetched over its time.
fn rate(state: &ProgressState, base: u64) -> f64 {
    let secs = state.elapsed().as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    state.pos().saturating_sub(base) as f64 / secs
}

/// The bar's look: with a total, a bar, % and ETA; without, a spinner.
fn style(total: bool, base: &Arc<AtomicU64>) -> ProgressStyle {
    let template = if total {
        "{prefix}: [{bar:28}] {percent:>3}% {count}/{length} records, {rate}, ETA {left}{msg}"
    } else {
        "{spinner} {prefix}: {count} records, {rate}{msg} [{elapsed}]"
    };
    let (b1, b2) = (base.clone(), base.clone());
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
        .with_key("count", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", thousands(s.pos()));
        })
        .with_key(
            "length",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", thousands(s.len().unwrap_or(0)));
            },
        )
        .with_key(
            "rate",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(
                    w,
                    "{}/s",
                    thousands(rate(s, b1.load(Ordering::Relaxed)) as u64)
                );
            },
        )
        .with_key(
            "left",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let r = rate(s, b2.load(Ordering::Relaxed));
                let left = s.len().unwrap_or(0).saturating_sub(s.pos());
                match r {
                    r if r > 0.0 => {
                        let secs = (left as f64 / r).round() as u64;
                        let _ = write!(
                            w,
                            "{}",
                            humantime::format_duration(Duration::from_secs(secs))
                        );
                    }
                    _ => {
                        let _ = write!(w, "?");
                    }
                }
            },
        )
}

impl Bar {
    /// A bar drawn to `target`.
    pub(super) fn drawn(name: &str, target: ProgressDrawTarget) -> Self {
        let base = Arc::new(AtomicU64::new(0));
        let pb = ProgressBar::with_draw_target(None, target);
        pb.set_style(style(false, &base));
        pb.set_prefix(name.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(pb.clone());
        }
        Bar::Drawn(pb, base)
    }

    /// Called after each committed batch with the run's counters.
    pub(super) fn callback(&self) -> run::BatchHook {
        match self {
            Bar::Drawn(pb, base) => {
                let (pb, base) = (pb.clone(), base.clone());
                let started = Mutex::new(false);
                Arc::new(move |p: &Progress| update(&pb, &base, &started, p))
            }
            Bar::Logged(name) => {
                let name = name.clone();
                let last = Mutex::new(Instant::now());
                Arc::new(move |p: &Progress| {
                    if let Ok(mut t) = last.lock()
                        && t.elapsed() >= Duration::from_secs(10)
                    {
                        *t = Instant::now();
                        tracing::info!(pipeline = %name, pages = p.pages, records = p.records, rejects = p.rejects, "progress");
                    }
                })
            }
            Bar::Off => Arc::new(|_: &Progress| {}),
        }
    }

    /// Clear the bar.
    pub(super) fn finish(&self) {
        if let Bar::Drawn(pb, _) = self {
            pb.finish_and_clear();
            if let Ok(mut a) = ACTIVE.lock() {
                *a = None;
            }
        }
    }
}

/// Move the bar to the run's counters.
fn update(pb: &ProgressBar, base: &Arc<AtomicU64>, started: &Mutex<bool>, p: &Progress) {
    if let Ok(mut s) = started.lock()
        && !*s
    {
        // a resumed run starts from what earlier runs fetched
        *s = true;
        base.store(p.resumed_records, Ordering::Relaxed);
    }
    if let Some(t) = p.total
        && pb.length().is_none()
    {
        pb.set_length(t.max(p.walked));
        pb.set_style(style(
            true,
            &Arc::new(AtomicU64::new(base.load(Ordering::Relaxed))),
        ));
    }
    if let Some(t) = p.total {
        pb.set_length(t.max(p.walked));
    }
    pb.set_position(p.walked);
    let mut msg = String::new();
    if p.partitions > 0 {
        msg.push_str(&format!(
            ", partitions {}/{}",
            p.partitions_done, p.partitions
        ));
    }
    if p.rejects > 0 {
        msg.push_str(&format!(", {} rejected", thousands(p.rejects)));
    }
    pb.set_message(msg);
}

/// Where log lines go: through the bar being drawn, if any, so its frame
/// is cleared first and drawn again after.
pub(super) struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().ok().and_then(|a| a.clone());
        match bar {
            Some(pb) => pb.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;

    fn progress(walked: u64, total: Option<u64>, done: u64) -> Progress {
        Progress {
            walked,
            total,
            partitions_done: done,
            partitions: 60,
            resumed_records: 1000,
            ..Progress::default()
        }
    }

    #[test]
    fn a_known_total_draws_percent_count_rate_and_eta() {
        let term = InMemoryTerm::new(4, 160);
        let bar = Bar::drawn(
            "posts",
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        );
        let hook = bar.callback();
        hook(&progress(1000, None, 0));
        std::thread::sleep(Duration::from_millis(300));
        hook(&progress(5000, Some(10_000), 12));
        if let Bar::Drawn(pb, _) = &bar {
            pb.tick();
        }
        let shown = term.contents();
        assert!(shown.contains("posts: ["), "{shown}");
        assert!(shown.contains(" 50% 5,000/10,000 records"), "{shown}");
        assert!(shown.contains("partitions 12/60"), "{shown}");
        // the rate counts this run's 4,000 records only, without decimals
        let rate = shown.split(", ").find(|s| s.ends_with("/s")).unwrap_or("");
        assert!(!rate.contains('.') && rate.contains(','), "{shown}");
        assert!(shown.contains("ETA "), "{shown}");
        bar.finish();
        assert!(term.contents().trim().is_empty(), "{}", term.contents());
    }

    #[test]
    fn no_total_draws_a_spinner_with_the_count() {
        let term = InMemoryTerm::new(4, 160);
        let bar = Bar::drawn(
            "walk",
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        );
        let hook = bar.callback();
        hook(&Progress {
            walked: 2447,
            ..Progress::default()
        });
        if let Bar::Drawn(pb, _) = &bar {
            pb.tick();
        }
        let shown = term.contents();
        assert!(shown.contains("walk: 2,447 records, "), "{shown}");
        assert!(
            !shown.contains('%') && !shown.contains("partitions"),
            "{shown}"
        );
        bar.finish();
    }
}
