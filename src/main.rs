//! `ingest`: parses the command line and hands it to [`ingest::app`], which
//! runs the command, prints its results and errors, and gives the exit code
//! (0 done, 1 failed, 2 bad pipeline or command line, 75 another run holds
//! the pipeline, 130/143 stopped by a signal).

use std::process::ExitCode;

use clap::Parser;
use ingest::cli::Cli;

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
    let code = rt.block_on(ingest::app::dispatch(cli));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
