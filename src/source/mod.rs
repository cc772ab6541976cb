//! Sources.
#[derive(Debug, thiserror::Error)]
pub enum HttpError { #[error("x")] X }
