//! Sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError { #[error("busy")] Busy { pipeline: String } }
