//! Secrets that must never be printed: values interpolated from
//! `${env:NAME}` and all auth material. Everything that leaves the process
//! (logs, errors, `_ingest_runs`, JSON output) passes through [`Secrets::redact`].

use std::sync::Arc;

/// The replacement text for a secret.
pub const MASK: &str = "***";

/// A set of secret strings, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Arc<Vec<String>>);

impl Secrets {
    /// A set of these secrets (empty strings and very short ones are ignored:
    /// masking every "a" would make messages unreadable and protect nothing).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<String> = values.into_iter().filter(|s| s.len() >= 3).collect();
        // longest first, so a secret that contains another is masked whole
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        // a secret also appears percent-encoded in URLs
        let encoded: Vec<String> = v
            .iter()
            .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>())
            .filter(|e| !v.contains(e))
            .collect();
        v.extend(encoded);
        Self(Arc::new(v))
    }

    /// Add more secrets.
    pub fn with(&self, more: impl IntoIterator<Item = String>) -> Self {
        Self::new(self.0.iter().cloned().chain(more))
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.0.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// Whether there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_plain_and_encoded() {
        let s = Secrets::new(["s3cr3t token".to_string(), "x".to_string()]);
        assert_eq!(s.redact("Bearer s3cr3t token"), "Bearer ***");
        assert_eq!(
            s.redact("https://h/?key=s3cr3t+token"),
            "https://h/?key=***"
        );
        assert_eq!(s.redact("x marks"), "x marks");
    }
}
