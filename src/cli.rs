//! The command line (clap). The contract is in the README and the pipeline
//! spec: `run`, `validate`, `preview`, `state show|reset`, `runs`, plus `show`
//! to look at the table a pipeline writes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Move records from paginated HTTP APIs into SQLite or PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "ingest", version, about, propagate_version = true)]
pub struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log line format (on standard error).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Colour on standard error: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto, global = true)]
    pub color: ColorMode,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour what goes to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    /// On a terminal, unless `NO_COLOR` is set (<https://no-color.org>).
    Auto,
    /// Always, `NO_COLOR` or not.
    Always,
    /// Never.
    Never,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for machines.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run pipelines, in the order given, stopping at the first failure.
    Run(RunArgs),
    /// Check pipeline files without touching the network.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        /// `--set KEY=VALUE` overrides, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Read no environment variable: lint files without their secrets
        /// (values written with `${…}` are not judged).
        #[arg(long)]
        no_env: bool,
    },
    /// Fetch the first page, print the records after transforms and the
    /// columns they would make; writes nothing.
    Preview {
        /// Pipeline file.
        pipeline: PathBuf,
        /// `--set KEY=VALUE` overrides.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Records to print, at most.
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// Show or reset the saved resume points of a pipeline.
    State {
        /// show | reset
        #[command(subcommand)]
        action: StateAction,
    },
    /// The run history of a pipeline, newest first.
    Runs {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Runs to list, at most.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Row count and first rows of the table a pipeline writes.
    Show {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Rows to print.
        #[arg(long, default_value_t = 5)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// What was rejected and why, newest first: records the sink could not
    /// store and pages that failed for good under `on_error = "skip"`.
    Rejects {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Rejects to list, at most.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Every pipeline's last run: status, when, how long, rows, rejects and
    /// error; for a shared run in progress, its partitions by state and
    /// owner. Exits 1 when a last run failed or was killed.
    Status {
        /// Pipeline files (default: pipelines/*.toml).
        pipelines: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Make one request to URL and write a commented pipeline file with the
    /// records path and the pagination it detected.
    Init {
        /// The API's first page, with its page or offset parameters if it
        /// uses them (`https://api.example.com/items?page=1&per_page=50`).
        url: String,
        /// The file to write (default: NAME.toml, from the URL's path).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the man page (roff) on stdout (`ingest man > ingest.1`).
    Man,
    /// Print a completion script for a shell on stdout
    /// (`ingest completions bash > /etc/bash_completion.d/ingest`).
    Completions {
        /// bash | zsh | fish
        shell: Shell,
    },
}

/// Shells `ingest completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// `state` actions.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Print the saved resume points.
    Show {
        /// Pipeline file.
        pipeline: PathBuf,
    },
    /// Forget them: the next run starts from the beginning.
    Reset {
        /// Pipeline file.
        pipeline: PathBuf,
    },
}

/// `ingest run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline files.
    #[arg(required = true)]
    pub pipelines: Vec<PathBuf>,
    /// Ignore saved state and marks; load the table anew and swap it in at the end.
    #[arg(long)]
    pub full_refresh: bool,
    /// Start of a backfill window (dates partitions, incremental syncs).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// End of a backfill window.
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Override any key of the pipeline for this run (`source.params.userId=3`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Pages per walk, at most (sets `source.pagination.max_pages`).
    #[arg(long, value_name = "N")]
    pub max_pages: Option<u64>,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Summary format on standard output.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Write each run's figures to FILE in Prometheus text format (for
    /// node_exporter's textfile collector), replaced atomically after every run.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
}

/// When to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// On a terminal; log lines elsewhere.
    Auto,
    /// Always draw it.
    Always,
    /// Never; log lines only.
    Never,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// JSON, one object per line.
    Json,
}
