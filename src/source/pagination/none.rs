//! `none`: one request.

use serde_json::Value;

use super::Kind;
use crate::config::pagination::NoPagination;
use crate::source::http::Response;
use crate::source::paginate::Position;

impl Kind for NoPagination {
    fn next(&self, _: &Position, _: &Response, _: &[Value]) -> Result<Option<Position>, String> {
        Ok(None)
    }
}
