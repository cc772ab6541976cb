//! Secrets that must never be printed: values interpolated from
//! `${env:NAME}` and all auth material. Everything that leaves the process
//! (logs, errors, `_ingest_runs`, JSON output) passes through [`Secrets::redact`].
//!
//! A secret is masked in every form it can take on its way back to us: as
//! written, percent-encoded (upper- or lower-case hex, any subset of its
//! characters: servers differ in what they escape), form-encoded (`+` for a
//! space) and JSON-escaped. One regex per set matches all of them at once.
//! Secrets shorter than [`SHORT`] characters are masked only where they stand
//! alone (not inside a longer word), so a two-letter key is hidden in
//! `?key=ab&` but `about` stays readable.
//!
//! Secrets learned while running (OAuth2 access and refresh tokens) are
//! [`Secrets::learn`]ed: every clone of the set masks them from then on.

use std::sync::{Arc, RwLock};

use regex::{Regex, RegexBuilder};

/// The replacement text for a secret.
pub const MASK: &str = "***";

/// Secrets shorter than this (in characters) are masked only as whole tokens.
pub const SHORT: usize = 3;

/// A set of secret strings, cheap to clone. Clones share what is
/// [`learn`](Secrets::learn)ed later; [`with`](Secrets::with) makes a new set.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Arc<RwLock<Arc<Inner>>>);

#[derive(Debug, Default)]
struct Inner {
    values: Vec<String>,
    /// Every form of every secret of [`SHORT`] characters or more.
    long: Option<Regex>,
    /// Short secrets, between token boundaries (groups 1 and 3 are kept).
    short: Option<Regex>,
}

impl Secrets {
    /// A set of these secrets (empty strings are ignored).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(Inner::new(values)))))
    }

    /// The set as it is now.
    fn now(&self) -> Arc<Inner> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Add secrets to this set and to every clone of it.
    pub fn learn(&self, more: impl IntoIterator<Item = String>) {
        let more: Vec<String> = more.into_iter().filter(|s| !s.is_empty()).collect();
        let now = self.now();
        if more.iter().all(|m| now.values.contains(m)) {
            return;
        }
        let next = Arc::new(Inner::new(now.values.iter().cloned().chain(more)));
        match self.0.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// Add more secrets: a new set.
    pub fn with(&self, more: impl IntoIterator<Item = String>) -> Self {
        Self::new(self.now().values.iter().cloned().chain(more))
    }

    /// `text` with every secret, in every form, replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        self.now().redact(text)
    }

    /// Whether `text` holds a secret in any form.
    pub fn found_in(&self, text: &str) -> bool {
        let now = self.now();
        now.long.as_ref().is_some_and(|re| re.is_match(text))
            || now.short.as_ref().is_some_and(|re| re.is_match(text))
    }

    /// Whether there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.now().values.is_empty()
    }
}

impl Inner {
    fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<String> = values.into_iter().filter(|s| !s.is_empty()).collect();
        // longest first, so a secret that contains another is masked whole
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        let (long, short): (Vec<&String>, Vec<&String>) =
            v.iter().partition(|s| s.chars().count() >= SHORT);
        let alternation =
            |set: &[&String]| set.iter().map(|s| forms(s)).collect::<Vec<_>>().join("|");
        let build = |pattern: String| {
            RegexBuilder::new(&pattern)
                .size_limit(64 << 20)
                .build()
                .ok()
        };
        let long = (!long.is_empty())
            .then(|| build(format!("(?:{})", alternation(&long))))
            .flatten();
        let short = (!short.is_empty())
            .then(|| {
                build(format!(
                    "(^|[^A-Za-z0-9%])({})($|[^A-Za-z0-9])",
                    alternation(&short)
                ))
            })
            .flatten();
        Self {
            values: v,
            long,
            short,
        }
    }

    fn redact(&self, text: &str) -> String {
        let mut out = match &self.long {
            Some(re) => re.replace_all(text, MASK).into_owned(),
            None => text.to_string(),
        };
        if let Some(re) = &self.short {
            out = re
                .replace_all(&out, format!("${{1}}{MASK}${{3}}"))
                .into_owned();
        }
        out
    }
}

/// A regex matching `secret` as written or with any of its characters
/// percent-encoded (either hex case), a space as `+`, or JSON-escaped.
fn forms(secret: &str) -> String {
    let mut out = String::new();
    for c in secret.chars() {
        let mut utf8 = [0u8; 4];
        let encoded: String = c
            .encode_utf8(&mut utf8)
            .bytes()
            .map(|b| format!("%(?i:{b:02x})"))
            .collect();
        let mut alts = vec![regex::escape(c.encode_utf8(&mut [0u8; 4])), encoded];
        match c {
            ' ' => alts.push(r"\+".into()),
            '"' => alts.push(r#"\\""#.into()),
            '\\' => alts.push(r"\\\\".into()),
            '/' => alts.push(r"\\/".into()),
            _ => {}
        }
        if c.is_control() {
            alts.push(regex::escape(&format!("\\u{:04x}", c as u32)));
        }
        out.push_str(&format!("(?:{})", alts.join("|")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_plain_and_encoded() {
        let s = Secrets::new(["s3cr3t token".to_string()]);
        assert_eq!(s.redact("Bearer s3cr3t token"), "Bearer ***");
        assert_eq!(
            s.redact("https://h/?key=s3cr3t+token"),
            "https://h/?key=***"
        );
        assert_eq!(s.redact("k=s3cr3t%20token&"), "k=***&");
    }

    #[test]
    fn masks_every_encoding_a_server_may_echo() {
        let s = Secrets::new(["Zq7KpW3mXv9+abc/def==".to_string()]);
        for echoed in [
            "Zq7KpW3mXv9+abc/def==",
            "Zq7KpW3mXv9%2Babc/def%3D%3D",
            "Zq7KpW3mXv9%2babc%2fdef%3d%3d",
            "Zq7KpW3mXv9%2Babc%2Fdef%3D%3D",
            "Zq7KpW3mXv9+abc\\/def==",
        ] {
            assert_eq!(s.redact(&format!("bad key {echoed}!")), "bad key ***!");
        }
    }

    #[test]
    fn short_secrets_are_masked_as_tokens() {
        let s = Secrets::new(["ab".to_string(), "x".to_string()]);
        assert_eq!(s.redact("https://h/?key=ab&x=1"), "https://h/?key=***&x=1");
        assert_eq!(s.redact("about x-ray"), "about ***-ray");
        assert_eq!(s.redact("ab"), "***");
        assert_eq!(s.redact("taxi tab"), "taxi tab");
    }

    #[test]
    fn learned_secrets_reach_every_clone() {
        let s = Secrets::new(["first-secret".to_string()]);
        let clone = s.clone();
        let other = s.with(["other-secret".to_string()]);
        s.learn(["token-learned-later".to_string()]);
        assert_eq!(clone.redact("a token-learned-later b"), "a *** b");
        assert_eq!(clone.redact("first-secret"), "***");
        // `with` made a set of its own before the token was learned
        assert_eq!(other.redact("token-learned-later"), "token-learned-later");
    }
}
