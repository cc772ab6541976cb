//! The pagination kinds, one file each behind the [`Kind`] trait: where a
//! walk starts, how a position goes into a request, the position after a
//! response, and (for addressable kinds) the position `k` pages ahead. The
//! stop rules that compose with every kind live in `paginate.rs`.
//!
//! A new kind is its config struct and variant in `config/pagination.rs`,
//! its file here, and one line in [`kind`].

mod cursor;
mod link_header;
mod next_url;
mod none;
mod offset;
mod page_number;

use serde_json::Value;
use url::Url;

use super::http::Response;
use super::paginate::Position;
use crate::config::pagination::PaginationKind;

/// A request being built: its URL, for a POST its JSON body, and headers
/// the walk sets.
#[derive(Debug, Clone)]
pub struct Request {
    /// The URL, query included.
    pub url: Url,
    /// The body, for POST.
    pub body: Option<Value>,
    /// Headers that carry walk values (`header:Name` locations).
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Send a number (a page, an offset, a size) where `location` says.
    pub fn set(&mut self, location: &str, value: String) {
        let v = value
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(value));
        self.put(location, v);
    }

    /// Send text (a cursor) where `location` says, always as a string.
    pub fn set_text(&mut self, location: &str, value: String) {
        self.put(location, Value::String(value));
    }

    /// `header:Name` sets a header; `body:a.b` sets a field of the JSON
    /// body (objects made as needed: GraphQL's `body:variables.after`); a
    /// plain name goes into a POST's JSON object body at the top when there
    /// is one, else into the query.
    fn put(&mut self, location: &str, v: Value) {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some(name) = location.strip_prefix("header:") {
            self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            self.headers.push((name.to_string(), text(&v)));
            return;
        }
        if let Some(path) = location.strip_prefix("body:") {
            let mut at = self
                .body
                .get_or_insert_with(|| Value::Object(Default::default()));
            let mut parts = path.split('.').peekable();
            while let Some(part) = parts.next() {
                if !at.is_object() {
                    *at = Value::Object(Default::default());
                }
                let Value::Object(m) = at else { return };
                if parts.peek().is_none() {
                    m.insert(part.to_string(), v);
                    return;
                }
                at = m
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Default::default()));
            }
            return;
        }
        match &mut self.body {
            Some(Value::Object(m)) => {
                m.insert(location.to_string(), v);
            }
            _ => super::paginate::set_param(&mut self.url, location, &text(&v)),
        }
    }
}

/// What one pagination kind does.
pub trait Kind {
    /// The first position of a walk.
    fn initial(&self) -> Position {
        Position::Start
    }

    /// Whether every position is known in advance (pages may be fetched
    /// ahead, several at once).
    fn addressable(&self) -> bool {
        false
    }

    /// The configured page size, if the kind has one.
    fn page_size(&self) -> Option<u64> {
        None
    }

    /// Whether a short page ends the walk when `stop_on_short` is not set.
    fn stops_on_short(&self) -> bool {
        false
    }

    /// The position `k` pages after `pos` (addressable kinds).
    fn step(&self, pos: &Position, _k: u64) -> Position {
        pos.clone()
    }

    /// Put a position of this kind into a request; `false` when the
    /// position is not one of this kind's.
    fn apply(&self, _pos: &Position, _req: &mut Request) -> bool {
        false
    }

    /// The position after a response, or `None` when the walk is over.
    fn next(
        &self,
        pos: &Position,
        resp: &Response,
        records: &[Value],
    ) -> Result<Option<Position>, String>;
}

/// The behaviour of a configured kind: the registration of every kind.
pub fn kind(cfg: &PaginationKind) -> &dyn Kind {
    match cfg {
        PaginationKind::PageNumber(k) => k,
        PaginationKind::Offset(k) => k,
        PaginationKind::Cursor(k) => k,
        PaginationKind::NextUrl(k) => k,
        PaginationKind::LinkHeader(k) => k,
        PaginationKind::None(k) => k,
    }
}
