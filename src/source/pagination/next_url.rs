//! `next_url`: follows the URL (absolute or relative) the response gives.

use serde_json::Value;

use super::Kind;
use crate::config::pagination::NextUrl;
use crate::source::http::Response;
use crate::source::paginate::{Position, locate, text};

impl Kind for NextUrl {
    fn next(
        &self,
        _: &Position,
        resp: &Response,
        records: &[Value],
    ) -> Result<Option<Position>, String> {
        let Some(next) = locate(&self.next, resp, records).and_then(|v| text(&v)) else {
            return Ok(None);
        };
        resp.url
            .join(&next)
            .map(|u| Some(Position::Url(u.to_string())))
            .map_err(|e| format!("the next URL `{next}` at `{}` is not a URL: {e}", self.next))
    }
}
