//! `ingest`: parses the command line and hands it to [`ingest::app`], which
//! runs the command, prints its results and errors, and gives the exit code
//! (0 done, 1 failed, 2 bad pipeline or command line, 75 another run holds
//! the pipeline, 130/143 stopped by a signal).

use std::process::ExitCode;

use clap::Parser;
use ingest::cli::Cli;
use ingest::run::{Shutdown, Stop};

// mimalloc: measured half again as fast as the system allocator for
// parsing pages of JSON (see `make bench`); .cargo/config.toml makes it commit
// memory on demand and `ingest::alloc::tune` return it soon after it is
// freed, which keeps the peak RSS flat.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ingest::alloc::tune();
    let cli = Cli::parse();
    ingest::app::init_logging(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ingest::app::error(None, &format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        let shutdown = on_signals();
        ingest::app::dispatch(cli, shutdown).await
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Listen for SIGINT and SIGTERM: the first stops the run gracefully (the
/// batch in flight commits), a second exits at once; SQLite's transaction
/// keeps the file consistent. The exit is the binary's call, never the
/// library's.
fn on_signals() -> Shutdown {
    let (tx, shutdown) = Shutdown::manual();
    tokio::spawn(async move {
        let first = next_signal().await;
        tracing::warn!(
            "{} received: finishing the batch in flight; send it again to stop at once",
            first.0
        );
        let _ = tx.send(Some(first));
        let (name, code) = next_signal().await;
        let second =
            format!("second {name}: stopping now; the database is consistent, rerun to resume");
        ingest::app::error(None, &second);
        std::process::exit(code);
    });
    shutdown
}

#[cfg(unix)]
async fn next_signal() -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = int.recv() => ("SIGINT", 130),
        _ = term.recv() => ("SIGTERM", 143),
    }
}

#[cfg(not(unix))]
async fn next_signal() -> Stop {
    let _ = tokio::signal::ctrl_c().await;
    ("SIGINT", 130)
}
