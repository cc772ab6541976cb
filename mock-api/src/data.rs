//! Deterministic generated data: posts and comments, the same for the same
//! seed on every machine and every version, so tests can compare a SQLite
//! table against the exact records the API served.
//!
//! The generator is a hand-written splitmix64 on purpose: a crate's "standard"
//! RNG may change its stream between versions, and these records are the
//! expected values of the test suite.

use serde_json::{Value, json};

/// splitmix64: one well-known, stable mixing step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Words that make strings awkward on purpose: quotes, backslashes,
/// non-ASCII letters, emoji, SQL and JSON metacharacters.
const WORDS: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "quote\"d",
    "back\\slash",
    "it's",
    "naïve",
    "Zürich",
    "日本語",
    "🦀",
    "emoji🎉",
    "tab\there",
    "new\nline",
    "percent%",
    "semi;colon",
    "{brace}",
    "DROP TABLE",
    "--",
    "ünïcödé",
    "caf\u{e9}",
];

/// The data set a mock API serves.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Seed of every generated string.
    pub seed: u64,
    /// Number of posts, ids 1..=posts.
    pub posts: u64,
    /// Comments per post.
    pub comments_per_post: u64,
    /// Seconds between the `updatedAt` of consecutive posts (60 by default).
    pub spacing: u64,
    /// Revision per post id (0 = as generated); a revision changes the title
    /// and moves `updatedAt` later. Used to simulate updates between syncs.
    revisions: std::collections::BTreeMap<u64, u32>,
}

/// 2024-01-01T00:00:00Z as Unix seconds.
const EPOCH_2024: u64 = 1_704_067_200;

impl Dataset {
    /// A data set of `posts` posts with `comments_per_post` comments each.
    pub fn new(seed: u64, posts: u64, comments_per_post: u64) -> Self {
        Self {
            seed,
            posts,
            comments_per_post,
            spacing: 60,
            revisions: Default::default(),
        }
    }

    /// Seconds between consecutive posts' `updatedAt` (at least 1).
    pub fn with_spacing(mut self, secs: u64) -> Self {
        self.spacing = secs.max(1);
        self
    }

    fn words(&self, salt: u64, n: u64) -> String {
        let mut out = String::new();
        for k in 0..n {
            let r = mix(self.seed ^ mix(salt.wrapping_mul(31).wrapping_add(k)));
            if k > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[(r % WORDS.len() as u64) as usize]);
        }
        out
    }

    /// Seconds since the epoch of a post's `updatedAt`.
    pub fn updated_secs(&self, id: u64) -> u64 {
        let rev = self.revisions.get(&id).copied().unwrap_or(0) as u64;
        // one post per `spacing` seconds from 2024, revisions land a year later
        EPOCH_2024 + id * self.spacing + rev * 366 * 86_400
    }

    /// The post with this id (1-based), as the API serves it.
    pub fn post(&self, id: u64) -> Value {
        let rev = self.revisions.get(&id).copied().unwrap_or(0);
        let mut title = self.words(id * 2, 3 + id % 5);
        if rev > 0 {
            title = format!("{title} (rev {rev})");
        }
        json!({
            "userId": (id - 1) / 10 + 1,
            "id": id,
            "title": title,
            "body": self.words(id * 2 + 1, 8 + id % 13),
            "updatedAt": rfc3339(self.updated_secs(id)),
        })
    }

    /// The `j`th comment (0-based) of a post.
    pub fn comment(&self, post_id: u64, j: u64) -> Value {
        let id = (post_id - 1) * self.comments_per_post + j + 1;
        json!({
            "postId": post_id,
            "id": id,
            "name": self.words(1_000_000 + id * 2, 2 + id % 4),
            "email": format!("user{}@example.test", id % 97),
            "body": self.words(1_000_001 + id * 2, 5 + id % 7),
        })
    }

    /// All posts in id order.
    pub fn all_posts(&self) -> impl Iterator<Item = Value> + '_ {
        (1..=self.posts).map(|id| self.post(id))
    }

    /// All comments of one post.
    pub fn comments_of(&self, post_id: u64) -> Vec<Value> {
        if post_id == 0 || post_id > self.posts {
            return Vec::new();
        }
        (0..self.comments_per_post)
            .map(|j| self.comment(post_id, j))
            .collect()
    }

    /// Revise a post (a new title, a later `updatedAt`).
    pub fn revise(&mut self, id: u64) {
        *self.revisions.entry(id).or_insert(0) += 1;
    }

    /// Add `n` new posts at the end.
    pub fn grow(&mut self, n: u64) {
        self.posts += n;
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp (civil-from-days, Howard Hinnant).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_awkward() {
        let a = Dataset::new(7, 100, 3);
        let b = Dataset::new(7, 100, 3);
        assert_eq!(a.post(42), b.post(42));
        assert_ne!(a.post(42), Dataset::new(8, 100, 3).post(42));
        let all: String = a.all_posts().map(|p| p.to_string()).collect();
        assert!(all.contains("\\\"") && all.contains("🦀") && all.contains("Zürich"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(EPOCH_2024), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let mut d = Dataset::new(1, 10, 0);
        let before = d.post(3)["updatedAt"].clone();
        d.revise(3);
        assert!(d.post(3)["updatedAt"].as_str() > before.as_str());
    }
}
