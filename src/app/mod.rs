//! The command line's commands, one module each, and what they share: the
//! pipeline loader, one error printer (`ingest: error: ...` everywhere), a
//! `println!` that survives a closed pipe, logging and a table renderer.
//! `main.rs` only parses and calls [`dispatch`].

use std::io::IsTerminal;
use std::path::Path;

use crate::Error;
use crate::cli::{Cli, Command, LogFormat};
use crate::config::{self, ConfigError, LoadOptions, Pipeline};

/// `println!` that ends quietly when standard output is closed
/// (`ingest validate *.toml | head -1`), as Unix tools do, instead of
/// panicking; the command goes on and returns its own exit code.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::app::said(::std::io::Write::write_fmt(
            &mut ::std::io::stdout().lock(),
            format_args!("{}\n", format_args!($($arg)*)),
        ))
    };
}

mod init;
mod metrics;
mod preview;
mod progress;
mod run;
mod show;
mod state;
mod table;
mod validate;

/// Report a failed write to standard output, except a closed pipe.
pub fn said(r: std::io::Result<()>) {
    if let Err(e) = r
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("ingest: error: cannot write to standard output: {e}");
    }
}

/// Run the command and return the process's exit code; `shutdown` stops a
/// run gracefully (the binary wires it to SIGINT/SIGTERM).
pub async fn dispatch(cli: Cli, shutdown: crate::run::Shutdown) -> i32 {
    let result = match cli.command {
        Command::Run(args) => return run::run(args, cli.quiet > 0, shutdown).await,
        Command::Validate {
            pipelines,
            set,
            no_env,
        } => validate::validate(&pipelines, &set, no_env),
        Command::Preview {
            pipeline,
            set,
            limit,
        } => preview::preview(&pipeline, &set, limit).await,
        Command::State { action } => state::state(action).await,
        Command::Runs {
            pipeline,
            limit,
            output,
        } => state::runs(&pipeline, limit, output).await,
        Command::Show {
            pipeline,
            limit,
            output,
        } => show::show(&pipeline, limit, output).await,
        Command::Rejects {
            pipeline,
            limit,
            output,
        } => state::rejects(&pipeline, limit, output).await,
        Command::Status { pipelines, output } => state::status(&pipelines, output).await,
        Command::Completions { shell } => Ok(completions(shell)),
        Command::Man => man(),
        Command::Init { url, output, force } => init::init(&url, output, force).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

/// A completion script from the command line's own definitions.
/// `ingest man`: the man page in roff, from the clap definitions.
fn man() -> anyhow::Result<i32> {
    use clap::CommandFactory;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    said(std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        &page,
    ));
    Ok(0)
}

fn completions(shell: crate::cli::Shell) -> i32 {
    use clap::CommandFactory;
    use clap_complete::Shell as S;
    let shell = match shell {
        crate::cli::Shell::Bash => S::Bash,
        crate::cli::Shell::Zsh => S::Zsh,
        crate::cli::Shell::Fish => S::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ingest", &mut script);
    said(std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        &script,
    ));
    0
}

/// Print an error the way users read it and return its exit code.
fn report_error(e: &anyhow::Error) -> i32 {
    // the reader went away (`ingest preview p.toml | head`): not an error
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return 0;
    }
    match (e.downcast_ref::<Error>(), e.downcast_ref::<ConfigError>()) {
        (Some(Error::Config(c)), _) | (None, Some(c)) => {
            config_error(c);
            2
        }
        (Some(other), _) => {
            error(None, &format!("{e:#}"));
            other.exit_code()
        }
        (None, None) => {
            error(None, &format!("{e:#}"));
            1
        }
    }
}

/// A pipeline file's errors, each on its own `ingest: error:` line.
pub fn config_error(e: &ConfigError) {
    for one in e.each() {
        error(None, &one.to_string());
    }
}

/// How standard error looks, set once from the command line.
#[derive(Debug, Clone, Copy, Default)]
struct Style {
    /// ANSI colour.
    color: bool,
    /// Every line one JSON object (`--log-format json`).
    json: bool,
}

static STYLE: std::sync::OnceLock<Style> = std::sync::OnceLock::new();

/// Whether log lines are JSON (`--log-format json`): no bar is drawn then.
pub(crate) fn json_logs() -> bool {
    STYLE.get().is_some_and(|s| s.json)
}

/// Colour or not: `--color`, then `NO_COLOR`, then whether stderr is a terminal.
fn use_color(mode: crate::cli::ColorMode) -> bool {
    use crate::cli::ColorMode;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    match mode {
        ColorMode::Always => true,
        ColorMode::Never => false,
        ColorMode::Auto => {
            !no_color
                && std::io::stderr().is_terminal()
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    }
}

/// The one error printer: `ingest: error: [PIPELINE: ]MESSAGE`, with any
/// hint on the lines below; red on a terminal; under `--log-format json`
/// one JSON line shaped like the log events, the pipeline in its fields.
pub fn error(pipeline: Option<&str>, message: &str) {
    let style = STYLE.get().copied().unwrap_or_default();
    if style.json {
        let line = serde_json::json!({
            "timestamp": jiff::Timestamp::now().to_string(),
            "level": "ERROR",
            "fields": { "message": message, "pipeline": pipeline },
            "target": "ingest",
        });
        eprintln!("{line}");
        return;
    }
    let head = if style.color {
        "\x1b[1;31mingest: error:\x1b[0m"
    } else {
        "ingest: error:"
    };
    match pipeline {
        Some(p) => eprintln!("{head} {p}: {message}"),
        None => eprintln!("{head} {message}"),
    }
}

/// Load and check a pipeline file with `--set` overrides.
fn load(path: &Path, overrides: &[String]) -> Result<Pipeline, ConfigError> {
    config::load(
        path,
        &LoadOptions {
            overrides,
            ..Default::default()
        },
    )
}

/// Logs go to stderr: text, or JSON for machines; `-v`/`-q` and `RUST_LOG`
/// set the level.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.quiet, cli.verbose) {
        (q, _) if q >= 2 => "error",
        (1, _) => "warn",
        (_, 0) => "ingest=info,warn",
        (_, 1) => "ingest=debug,warn",
        _ => "ingest=trace,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let style = Style {
        color: use_color(cli.color),
        json: cli.log_format == LogFormat::Json,
    };
    let _ = STYLE.set(style);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        .with_ansi(style.color && !style.json)
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.compact().init(),
    }
}
