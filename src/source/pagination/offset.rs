//! `offset`: `?offset=0,100,200…&limit=100`; a short page ends the walk by default.

use serde_json::Value;

use super::{Kind, Request};
use crate::config::pagination::Offset;
use crate::source::http::Response;
use crate::source::paginate::Position;

impl Kind for Offset {
    fn initial(&self) -> Position {
        Position::Offset(self.start)
    }

    fn addressable(&self) -> bool {
        true
    }

    fn page_size(&self) -> Option<u64> {
        Some(self.limit)
    }

    fn stops_on_short(&self) -> bool {
        true
    }

    fn step(&self, pos: &Position, k: u64) -> Position {
        match pos {
            Position::Offset(x) => Position::Offset(x.saturating_add(k.saturating_mul(self.limit))),
            other => other.clone(),
        }
    }

    fn apply(&self, pos: &Position, req: &mut Request) -> bool {
        let Position::Offset(o) = pos else {
            return false;
        };
        req.set(&self.offset_param, o.to_string());
        req.set(&self.limit_param, self.limit.to_string());
        true
    }

    fn next(&self, pos: &Position, _: &Response, _: &[Value]) -> Result<Option<Position>, String> {
        Ok(Some(self.step(pos, 1)))
    }
}
