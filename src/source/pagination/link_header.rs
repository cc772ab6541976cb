//! `link_header`: follows RFC 8288 `Link: <…>; rel="next"` (GitHub).

use serde_json::Value;

use super::Kind;
use crate::config::pagination::LinkHeader;
use crate::source::http::Response;
use crate::source::paginate::Position;

impl Kind for LinkHeader {
    fn next(&self, _: &Position, resp: &Response, _: &[Value]) -> Result<Option<Position>, String> {
        Ok(link(resp, &self.rel)?.map(Position::Url))
    }
}

/// The URL of the RFC 8288 link with relation `rel`, resolved against the
/// response URL.
fn link(resp: &Response, rel: &str) -> Result<Option<String>, String> {
    let joined: Vec<&str> = resp
        .headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if joined.is_empty() {
        return Ok(None);
    }
    let header = joined.join(", ");
    let links = parse_link_header::parse_with_rel(&header)
        .map_err(|e| format!("the Link header does not parse ({e:?}): {header}"))?;
    match links.get(rel) {
        None => Ok(None),
        Some(l) => resp
            .url
            .join(&l.raw_uri)
            .map(|u| Some(u.to_string()))
            .map_err(|e| format!("the `{rel}` link `{}` is not a URL: {e}", l.raw_uri)),
    }
}
