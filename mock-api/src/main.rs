//! `ingest-mock`: the mock API as a program, for `make demo`, `make bench`
//! and trying pipelines (and faults) by hand. Prints `listening on
//! http://127.0.0.1:PORT` once it accepts connections and serves until it is
//! killed or, with `--for`, until the time is up.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use ingest_mock::{Faults, MockApi, MockConfig, RateStyle};

/// A deterministic mock of paginated HTTP APIs on 127.0.0.1: posts and
/// comments in every pagination style, each on its own path (/posts,
/// /offset/posts, /stripe/posts, /github/posts, ...), with faults to try
/// retries and rate limits against.
#[derive(Debug, Parser)]
#[command(name = "ingest-mock", version)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Number of posts.
    #[arg(long, default_value_t = 100)]
    posts: u64,
    /// Comments per post.
    #[arg(long, default_value_t = 5)]
    comments: u64,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Milliseconds added before every response.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Seconds between consecutive posts' `updatedAt` (from 2024-01-01).
    #[arg(long, default_value_t = 60)]
    spacing: u64,
    /// Seconds an OAuth2 access token from /oauth/token lives (client
    /// `ingest-mock-client`, secret `mock-client-secret-7f3a9c`, first
    /// refresh token `mock-rt-0-5be1c2d9e4`).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    token_ttl: u64,
    /// Stop after this many seconds.
    #[arg(long = "for", value_name = "SECONDS", default_value_t = 3600)]
    lifetime: u64,
    /// Faults: the robustness tests' mix (10% 429s, 5% 5xx bursts, 2%
    /// truncated bodies, 2% resets); the switches below change it.
    #[arg(long, help_heading = "Faults")]
    rough: bool,
    /// Share of URLs whose first attempt gets a 429 with Retry-After.
    #[arg(long, value_name = "SHARE", help_heading = "Faults")]
    rate_429: Option<f64>,
    /// Seconds of Retry-After on those 429s (half sent as an HTTP date).
    #[arg(long, value_name = "SECONDS", help_heading = "Faults")]
    retry_after: Option<u64>,
    /// Share of URLs that get a burst of 500/503 on their first attempts.
    #[arg(long, value_name = "SHARE", help_heading = "Faults")]
    burst_5xx: Option<f64>,
    /// Length of a 5xx burst.
    #[arg(long, value_name = "N", help_heading = "Faults")]
    burst_len: Option<u32>,
    /// Share of URLs whose next attempt gets a body cut in half.
    #[arg(long, value_name = "SHARE", help_heading = "Faults")]
    truncate: Option<f64>,
    /// Share of URLs whose next attempt has the connection reset mid-body.
    #[arg(long, value_name = "SHARE", help_heading = "Faults")]
    reset: Option<f64>,
    /// Share of URLs answered late.
    #[arg(long, value_name = "SHARE", help_heading = "Faults")]
    slow: Option<f64>,
    /// How late a slow answer is, in milliseconds.
    #[arg(long, value_name = "MS", help_heading = "Faults")]
    slow_ms: Option<u64>,
    /// A limit of requests per second for the whole server; beyond it, 429
    /// with Retry-After: 1 and rate-limit headers.
    #[arg(long, value_name = "N", help_heading = "Faults")]
    max_rps: Option<u32>,
    /// Which rate-limit headers --max-rps sends.
    #[arg(long, value_enum, default_value_t = Style::Both, help_heading = "Faults")]
    rate_style: Style,
    /// Pages after the first repeat the last record of the page before.
    #[arg(long, help_heading = "Faults")]
    repeat_boundary: bool,
    /// URLs containing this text always get a 500 (repeatable).
    #[arg(long, value_name = "TEXT", help_heading = "Faults")]
    broken: Vec<String>,
}

/// Rate-limit header styles.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Style {
    /// X-RateLimit-* and RateLimit-*.
    Both,
    /// Only X-RateLimit-*.
    Prefixed,
    /// Only the IETF draft's RateLimit-*.
    Ietf,
}

impl Args {
    fn faults(&self) -> Faults {
        let mut f = if self.rough {
            Faults::rough()
        } else {
            Faults::default()
        };
        let set = |to: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *to = v.clamp(0.0, 1.0);
            }
        };
        set(&mut f.rate_429, self.rate_429);
        set(&mut f.burst_5xx, self.burst_5xx);
        set(&mut f.truncate, self.truncate);
        set(&mut f.reset, self.reset);
        set(&mut f.slow, self.slow);
        f.retry_after_secs = self.retry_after.unwrap_or(f.retry_after_secs.max(1));
        f.burst_len = self.burst_len.unwrap_or(f.burst_len.max(1));
        if let Some(ms) = self.slow_ms {
            f.slow_by = Duration::from_millis(ms);
        }
        f.max_rps = self.max_rps.or(f.max_rps);
        f.rate_style = match self.rate_style {
            Style::Both => RateStyle::Both,
            Style::Prefixed => RateStyle::Prefixed,
            Style::Ietf => RateStyle::Ietf,
        };
        f.repeat_boundary |= self.repeat_boundary;
        f.broken.extend(self.broken.iter().cloned());
        f
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let cfg = MockConfig {
        seed: args.seed,
        posts: args.posts,
        comments_per_post: args.comments,
        delay: Duration::from_millis(args.delay_ms),
        port: args.port,
        spacing: args.spacing,
        faults: args.faults(),
    };
    let api = match MockApi::start(cfg.clone()).await {
        Ok(api) => api,
        Err(e) => {
            eprintln!("ingest-mock: cannot listen on 127.0.0.1:{}: {e}", cfg.port);
            std::process::exit(1)
        }
    };
    api.set_token_ttl(Duration::from_secs(args.token_ttl.max(1)));
    println!("listening on {}", api.url());
    // bounded by default so a forgotten mock never outlives its demo by long
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.lifetime)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(api);
}
