//! The library's error type. Every variant carries what the user needs to act:
//! the file position for configuration errors, the (redacted) URL and status
//! for HTTP errors, the table and statement for sink errors. `main.rs` maps
//! them to exit codes; nothing in the library panics on user input.

pub use crate::config::ConfigError;
pub use crate::sink::SinkError;
pub use crate::source::HttpError;
pub use crate::transform::TransformError;

/// Anything that can stop a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file or the command line is wrong (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API did not give what the pipeline expects.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A transform failed on a record.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The database refused a write.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Stopped by a signal after committing what was in flight.
    #[error("stopped by {name} after committing the batch in flight; run again to resume")]
    Interrupted {
        /// SIGINT or SIGTERM.
        name: &'static str,
        /// The exit code the shell convention gives it (130, 143).
        code: i32,
    },
}

impl Error {
    /// The process exit code for this error (see the command line contract).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Interrupted { code, .. } => *code,
            Error::Sink(SinkError::Busy { .. }) => 75,
            _ => 1,
        }
    }
}

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
