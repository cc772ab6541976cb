//! How a walk goes from one page to the next: the [`Position`] of a request,
//! how a position becomes a URL, what the next position is after a response,
//! and the stop conditions that compose with every kind.
//!
//! `page_number` and `offset` are *addressable*: every position is known in
//! advance, so the walk may fetch several at once. The others learn the next
//! position from each response and walk one page at a time.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::http::Response;
use super::pagination::{Kind, Request};
use crate::config::pagination::PaginationConfig;
use crate::config::values::Location;

/// Where a request of a walk points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// The first request of a cursor, next-URL or Link walk.
    Start,
    /// A page number.
    Page(i64),
    /// A record offset.
    Offset(u64),
    /// A cursor from the previous response.
    Cursor(String),
    /// A URL from the previous response.
    Url(String),
}

/// The pagination rules of a source.
#[derive(Debug, Clone)]
pub struct Paginator {
    cfg: PaginationConfig,
}

/// Why a walk ended.
pub type StopReason = &'static str;

impl Paginator {
    /// From the config.
    pub fn new(cfg: PaginationConfig) -> Self {
        Self { cfg }
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        self.cfg.kind.name()
    }

    /// The kind's behaviour (`source/pagination/`).
    fn rules(&self) -> &dyn Kind {
        super::pagination::kind(&self.cfg.kind)
    }

    /// The first position of a walk.
    pub fn initial(&self) -> Position {
        self.rules().initial()
    }

    /// Whether every position is known in advance.
    pub fn addressable(&self) -> bool {
        self.rules().addressable()
    }

    /// The configured page size, if the kind has one.
    pub fn page_size(&self) -> Option<u64> {
        self.rules().page_size()
    }

    /// `max_pages`.
    pub fn max_pages(&self) -> Option<u64> {
        self.cfg.max_pages
    }

    /// The position `k` pages after `pos` (addressable kinds).
    pub fn step(&self, pos: &Position, k: u64) -> Position {
        self.rules().step(pos, k)
    }

    /// The URL (and body) of the request at `pos`. Pagination parameters go
    /// into the query, or into a POST's JSON object body when there is one.
    /// A URL position (next URL, Link) replaces the URL whatever the kind.
    pub fn request(
        &self,
        base: &Url,
        body: Option<&Value>,
        pos: &Position,
    ) -> Result<Request, String> {
        let mut req = Request {
            url: base.clone(),
            body: body.cloned(),
            headers: Vec::new(),
        };
        match pos {
            Position::Start => {}
            Position::Url(u) => {
                req.url =
                    Url::parse(u).map_err(|e| format!("the next URL `{u}` is not a URL: {e}"))?;
            }
            other if self.rules().apply(other, &mut req) => {}
            other => {
                return Err(format!(
                    "the saved position {other:?} does not fit pagination kind `{}`",
                    self.kind()
                ));
            }
        }
        Ok(req)
    }

    /// The position after a response, or `None` when the kind says the walk
    /// is over (no cursor, no next URL, no link; `none` after one request).
    pub fn next(
        &self,
        pos: &Position,
        resp: &Response,
        records: &[Value],
    ) -> Result<Option<Position>, String> {
        self.rules().next(pos, resp, records)
    }

    /// Why the walk stops after this page, if it does: the composable stop
    /// conditions. `pages` and `records` count the walk so far, this page included.
    pub fn stop(
        &self,
        resp: &Response,
        records: &[Value],
        pages: u64,
        seen: u64,
        page_size: Option<u64>,
        total: Option<u64>,
    ) -> Option<StopReason> {
        let n = records.len() as u64;
        if n == 0 && self.cfg.stop_on_empty.unwrap_or(true) {
            return Some("empty page");
        }
        let short_default = self.rules().stops_on_short();
        if self.cfg.stop_on_short.unwrap_or(short_default) && page_size.is_some_and(|s| n < s) {
            return Some("short page");
        }
        if let Some(loc) = &self.cfg.has_more
            && locate(loc, resp, records).and_then(|v| truth(&v)) == Some(false)
        {
            return Some("has_more is false");
        }
        if total.is_some_and(|t| seen >= t) {
            return Some("total reached");
        }
        if self.cfg.max_pages.is_some_and(|m| pages >= m) {
            return Some("max_pages reached");
        }
        None
    }

    /// The total number of records, when the response gives it.
    pub fn total(&self, resp: &Response, records: &[Value]) -> Option<u64> {
        let loc = self.cfg.total.as_ref()?;
        match locate(loc, resp, records)? {
            Value::Number(n) => n.as_u64(),
            // `Content-Range: 0-99/2500` or `*/2500` (PostgREST, RFC 9110)
            Value::String(s) if s.contains('/') => s.rsplit('/').next()?.trim().parse().ok(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The locations a response is read at, with their keys: a first page
    /// that has none of one is reported.
    pub fn locations(&self) -> Vec<(&'static str, &Location)> {
        self.cfg.locations()
    }

    /// Whether a response with this status ends the walk normally
    /// (`stop_on_status`: DRF's 404 and PostgREST's 416 past the end).
    pub fn stops_on_status(&self, status: u16) -> bool {
        self.cfg.stop_on_status.contains(&status)
    }
}

/// Replace (or add) one query parameter.
pub fn set_param(url: &mut Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
}

/// The value at a location of a response.
pub fn locate(loc: &Location, resp: &Response, records: &[Value]) -> Option<Value> {
    match loc {
        Location::Body(p) => p.get(&resp.body).cloned(),
        Location::Header(h) => resp
            .headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|s| Value::String(s.to_string())),
        Location::LastRecord(p) => records.last().and_then(|r| p.get(r)).cloned(),
        Location::Html(spec) => resp.picked.get(spec).cloned(),
    }
}

/// A cursor or URL as text; null, empty and false mean "none".
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" | "" => Some(false),
            _ => None,
        },
        Value::Null => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pagination::{Cursor, LinkHeader, Offset, PageNumber, PaginationKind};
    use reqwest::header::{HeaderMap, HeaderValue};
    use serde_json::json;

    fn pag(kind: PaginationKind) -> Paginator {
        Paginator::new(PaginationConfig {
            kind,
            ..Default::default()
        })
    }

    fn resp(body: Value, headers: &[(&'static str, &str)]) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        Response {
            url: Url::parse("http://h.test/api/items?page=1").unwrap_or_else(|e| panic!("{e}")),
            headers: h,
            body,
            picked: serde_json::Map::new(),
        }
    }

    #[test]
    fn page_numbers_replace_params() {
        let p = pag(PaginationKind::PageNumber(PageNumber {
            param: "_page".into(),
            start: 1,
            size_param: Some("_limit".into()),
            size: Some(50),
        }));
        let base =
            Url::parse("http://h.test/posts?_limit=10&userId=3").unwrap_or_else(|e| panic!("{e}"));
        let r = p
            .request(&base, None, &p.step(&p.initial(), 2))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.url.as_str(),
            "http://h.test/posts?userId=3&_page=3&_limit=50"
        );
    }

    #[test]
    fn offset_steps_by_limit_and_goes_into_post_bodies() {
        let p = pag(PaginationKind::Offset(Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            limit: 25,
            start: 0,
        }));
        assert_eq!(p.step(&p.initial(), 3), Position::Offset(75));
        let base = Url::parse("http://h.test/search").unwrap_or_else(|e| panic!("{e}"));
        let r = p
            .request(&base, Some(&json!({"q": "x"})), &Position::Offset(25))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.url.as_str(), "http://h.test/search");
        assert_eq!(r.body, Some(json!({"q": "x", "offset": 25, "limit": 25})));
    }

    #[test]
    fn body_and_header_locations() {
        let base = Url::parse("http://h.test/graphql").unwrap_or_else(|e| panic!("{e}"));
        let gql = pag(PaginationKind::Cursor(Cursor {
            cursor: Location::try_from("data.posts.pageInfo.endCursor".to_string())
                .unwrap_or_else(|e| panic!("{e}")),
            param: "body:variables.after".into(),
        }));
        let body = json!({"query": "query($after: String) { posts(after: $after) { id } }"});
        let r = gql
            .request(&base, Some(&body), &Position::Cursor("42".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        // the cursor goes into the variables, as a string even when it looks like a number
        assert_eq!(
            r.body.as_ref().and_then(|b| b.pointer("/variables/after")),
            Some(&json!("42"))
        );
        assert_eq!(
            r.body.as_ref().and_then(|b| b.get("query")),
            body.get("query")
        );
        assert_eq!(r.url.as_str(), "http://h.test/graphql");
        let hdr = pag(PaginationKind::Cursor(Cursor {
            cursor: Location::try_from("header:X-Next".to_string())
                .unwrap_or_else(|e| panic!("{e}")),
            param: "header:X-Page-Token".into(),
        }));
        let r = hdr
            .request(&base, None, &Position::Cursor("t2".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.headers,
            vec![("X-Page-Token".to_string(), "t2".to_string())]
        );
        assert_eq!(r.url.as_str(), "http://h.test/graphql");
    }

    #[test]
    fn cursor_locations() {
        let from_body = pag(PaginationKind::Cursor(Cursor {
            cursor: Location::try_from("meta.next".to_string()).unwrap_or_else(|e| panic!("{e}")),
            param: "c".into(),
        }));
        let r = resp(json!({"meta": {"next": "abc"}}), &[]);
        assert_eq!(
            from_body.next(&Position::Start, &r, &[]),
            Ok(Some(Position::Cursor("abc".into())))
        );
        let r = resp(json!({"meta": {"next": ""}}), &[]);
        assert_eq!(from_body.next(&Position::Start, &r, &[]), Ok(None));
        let last = pag(PaginationKind::Cursor(Cursor {
            cursor: Location::try_from("last_record:id".to_string())
                .unwrap_or_else(|e| panic!("{e}")),
            param: "starting_after".into(),
        }));
        let recs = [json!({"id": 1}), json!({"id": 2})];
        assert_eq!(
            last.next(&Position::Start, &resp(json!({}), &[]), &recs),
            Ok(Some(Position::Cursor("2".into())))
        );
        let hdr = pag(PaginationKind::Cursor(Cursor {
            cursor: Location::try_from("header:X-Next".to_string())
                .unwrap_or_else(|e| panic!("{e}")),
            param: "c".into(),
        }));
        assert_eq!(
            hdr.next(&Position::Start, &resp(json!([]), &[("x-next", "zz")]), &[]),
            Ok(Some(Position::Cursor("zz".into())))
        );
    }

    #[test]
    fn link_header_relative_and_absent() {
        let p = pag(PaginationKind::LinkHeader(LinkHeader {
            rel: "next".into(),
        }));
        let r = resp(
            json!([]),
            &[(
                "link",
                "<https://h.test/api/items?page=2>; rel=\"next\", </api/items?page=9>; rel=\"last\"",
            )],
        );
        assert_eq!(
            p.next(&Position::Start, &r, &[]),
            Ok(Some(Position::Url(
                "https://h.test/api/items?page=2".into()
            )))
        );
        let r = resp(json!([]), &[("link", "</api/items?page=1>; rel=\"prev\"")]);
        assert_eq!(p.next(&Position::Start, &r, &[]), Ok(None));
    }

    #[test]
    fn stop_conditions_compose() {
        let mut cfg = PaginationConfig {
            kind: PaginationKind::Cursor(Cursor {
                cursor: Location::try_from("next".to_string()).unwrap_or_else(|e| panic!("{e}")),
                param: "c".into(),
            }),
            ..Default::default()
        };
        cfg.has_more =
            Some(Location::try_from("has_more".to_string()).unwrap_or_else(|e| panic!("{e}")));
        cfg.max_pages = Some(3);
        cfg.stop_on_short = Some(true);
        let p = Paginator::new(cfg);
        let one = [json!({})];
        assert_eq!(
            p.stop(
                &resp(json!({"has_more": true}), &[]),
                &one,
                1,
                1,
                Some(1),
                None
            ),
            None
        );
        assert_eq!(
            p.stop(
                &resp(json!({"has_more": false}), &[]),
                &one,
                1,
                1,
                Some(1),
                None
            ),
            Some("has_more is false")
        );
        assert_eq!(
            p.stop(&resp(json!({}), &[]), &[], 1, 0, None, None),
            Some("empty page")
        );
        assert_eq!(
            p.stop(
                &resp(json!({"has_more": true}), &[]),
                &one,
                1,
                1,
                Some(2),
                None
            ),
            Some("short page")
        );
        assert_eq!(
            p.stop(
                &resp(json!({"has_more": true}), &[]),
                &one,
                2,
                5,
                Some(1),
                Some(5)
            ),
            Some("total reached")
        );
        assert_eq!(
            p.stop(
                &resp(json!({"has_more": true}), &[]),
                &one,
                3,
                3,
                Some(1),
                None
            ),
            Some("max_pages reached")
        );
    }
}
