//! `cursor`: sends the cursor the last response gave (a body path, a
//! header, or the last record's field).

use serde_json::Value;

use super::{Kind, Request};
use crate::config::pagination::Cursor;
use crate::source::http::Response;
use crate::source::paginate::{Position, locate, text};

impl Kind for Cursor {
    fn apply(&self, pos: &Position, req: &mut Request) -> bool {
        let Position::Cursor(c) = pos else {
            return false;
        };
        req.set_text(&self.param, c.clone());
        true
    }

    fn next(
        &self,
        _: &Position,
        resp: &Response,
        records: &[Value],
    ) -> Result<Option<Position>, String> {
        Ok(locate(&self.cursor, resp, records)
            .and_then(|v| text(&v))
            .map(Position::Cursor))
    }
}
