//! Walks that end the way servers end them: Django REST framework's page
//! number paginator answers the page past the end with `404 {"detail":
//! "Invalid page."}`; PostgREST answers an offset past the end with `416`,
//! and gives the total in `Content-Range: 0-9/137` (`*/137` past the end).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{S, header, num, read};

/// `GET /drf/posts?page=N&page_size=M`.
pub(crate) async fn drf(State(s): State<S>, Query(q): Query<HashMap<String, String>>) -> Response {
    let d = read(&s);
    let (page, size) = match (num(&q, "page", 1), num(&q, "page_size", 10)) {
        (Ok(p), Ok(z)) => (p.max(1), z.clamp(1, 100)),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let total = d.posts;
    let first = (page - 1) * size;
    if first >= total && page > 1 {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "Invalid page."})),
        )
            .into_response();
    }
    let last = (first + size).min(total);
    let results: Vec<Value> = (first + 1..=last).map(|id| d.post(id)).collect();
    let link = |p: u64| format!("{}/drf/posts?page={p}&page_size={size}", s.base);
    Json(json!({
        "count": total,
        "next": if last < total { Value::String(link(page + 1)) } else { Value::Null },
        "previous": if page > 1 { Value::String(link(page - 1)) } else { Value::Null },
        "results": results,
    }))
    .into_response()
}

/// `GET /postgrest/posts?offset=N&limit=M`.
pub(crate) async fn postgrest(
    State(s): State<S>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let d = read(&s);
    let (offset, limit) = match (num(&q, "offset", 0), num(&q, "limit", 10)) {
        (Ok(o), Ok(l)) => (o, l.clamp(1, 1000)),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let total = d.posts;
    let mut headers = HeaderMap::new();
    if offset >= total && offset > 0 {
        headers.insert("content-range", header(&format!("*/{total}")));
        let body = json!({"code": "PGRST103", "message": "Requested range not satisfiable"});
        return (StatusCode::RANGE_NOT_SATISFIABLE, headers, Json(body)).into_response();
    }
    let last = (offset + limit).min(total);
    let rows: Vec<Value> = (offset + 1..=last).map(|id| d.post(id)).collect();
    let range = if rows.is_empty() {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", last - 1)
    };
    headers.insert("content-range", header(&range));
    (headers, Json(rows)).into_response()
}
