//! Bulk exports, as data APIs serve them: `GET /export/posts.ndjson` and
//! `GET /export/posts.csv`, every post (with `?page=N&per_page=M`, one page
//! of them; a page past the end is empty). The CSV quotes every text field,
//! so titles with commas, quotes and newlines stay in their cells. With
//! `?bom=1` a body starts with a UTF-8 byte order mark, as Excel's "CSV
//! UTF-8" and Windows tools write one.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::{S, header, num, read};

/// The ids a request selects.
fn ids(s: &S, q: &HashMap<String, String>) -> Result<std::ops::RangeInclusive<u64>, Response> {
    let total = read(s).posts;
    if !q.contains_key("page") {
        return Ok(1..=total);
    }
    let page = num(q, "page", 1)?.max(1);
    let per = num(q, "per_page", 100)?.clamp(1, 100_000);
    let first = (page - 1) * per + 1;
    Ok(first..=(first + per - 1).min(total))
}

fn reply(content_type: &str, q: &HashMap<String, String>, body: String) -> Response {
    let mut h = HeaderMap::new();
    h.insert("content-type", header(content_type));
    let bom = if q.get("bom").is_some_and(|b| b == "1") {
        "\u{feff}"
    } else {
        ""
    };
    (h, format!("{bom}{body}")).into_response()
}

/// `GET /export/posts.ndjson`.
pub(crate) async fn ndjson(
    State(s): State<S>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let ids = match ids(&s, &q) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let d = read(&s);
    let mut out = String::new();
    for id in ids {
        out.push_str(&d.post(id).to_string());
        out.push('\n');
    }
    reply("application/x-ndjson", &q, out)
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(t) => format!("\"{}\"", t.replace('"', "\"\"")),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `GET /export/posts.csv`.
pub(crate) async fn csv(State(s): State<S>, Query(q): Query<HashMap<String, String>>) -> Response {
    let ids = match ids(&s, &q) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let d = read(&s);
    let mut out = String::from("id,userId,title,body,updatedAt\r\n");
    for id in ids {
        let p = d.post(id);
        let row: Vec<String> = ["id", "userId", "title", "body", "updatedAt"]
            .iter()
            .map(|k| cell(&p[*k]))
            .collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    reply("text/csv; charset=utf-8", &q, out)
}
