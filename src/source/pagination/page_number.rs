//! `page_number`: `?page=1,2,3…`, optionally with the page size.

use serde_json::Value;

use super::{Kind, Request};
use crate::config::pagination::PageNumber;
use crate::source::http::Response;
use crate::source::paginate::Position;

impl Kind for PageNumber {
    fn initial(&self) -> Position {
        Position::Page(self.start)
    }

    fn addressable(&self) -> bool {
        true
    }

    fn page_size(&self) -> Option<u64> {
        self.size
    }

    fn step(&self, pos: &Position, k: u64) -> Position {
        match pos {
            Position::Page(p) => Position::Page(p.saturating_add(k as i64)),
            other => other.clone(),
        }
    }

    fn apply(&self, pos: &Position, req: &mut Request) -> bool {
        let Position::Page(p) = pos else {
            return false;
        };
        req.set(&self.param, p.to_string());
        if let (Some(sp), Some(size)) = (&self.size_param, self.size) {
            req.set(sp, size.to_string());
        }
        true
    }

    fn next(&self, pos: &Position, _: &Response, _: &[Value]) -> Result<Option<Position>, String> {
        Ok(Some(self.step(pos, 1)))
    }
}
