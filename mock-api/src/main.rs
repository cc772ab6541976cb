//! `ingest-mock`: the mock API as a program, for `make demo` and `make bench`.
//! Prints `listening on http://127.0.0.1:PORT` once it accepts connections and
//! serves until it is killed or, with `--for`, until the time is up.

use std::time::Duration;

use ingest_mock::{MockApi, MockConfig};

fn usage() -> ! {
    eprintln!(
        "usage: ingest-mock [--port N] [--posts N] [--comments N] [--seed N] [--delay-ms N] [--spacing SECONDS] [--for SECONDS]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut cfg = MockConfig::default();
    let mut lifetime: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next().and_then(|v| v.parse::<u64>().ok()) else {
            usage()
        };
        match flag.as_str() {
            "--port" => cfg.port = u16::try_from(value).unwrap_or_else(|_| usage()),
            "--posts" => cfg.posts = value,
            "--comments" => cfg.comments_per_post = value,
            "--seed" => cfg.seed = value,
            "--delay-ms" => cfg.delay = Duration::from_millis(value),
            "--spacing" => cfg.spacing = value,
            "--for" => lifetime = Some(value),
            _ => usage(),
        }
    }
    let api = match MockApi::start(cfg.clone()).await {
        Ok(api) => api,
        Err(e) => {
            eprintln!("ingest-mock: cannot listen on 127.0.0.1:{}: {e}", cfg.port);
            std::process::exit(1)
        }
    };
    println!("listening on {}", api.url());
    // bounded by default so a forgotten mock never outlives its demo by long
    let limit = Duration::from_secs(lifetime.unwrap_or(3600));
    tokio::select! {
        _ = tokio::time::sleep(limit) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(api);
}
