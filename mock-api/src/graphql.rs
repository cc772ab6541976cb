//! `POST /graphql`: a Relay-style GraphQL endpoint over the posts, as
//! GitHub's and Shopify's APIs page: `posts(first: Int, after: String)`
//! returns `edges[].node` and `pageInfo { hasNextPage endCursor }`, the
//! cursor read from `variables.after`. It does not parse GraphQL: a query
//! naming a field `bogus` gets the `errors` array a real server sends, with
//! status 200.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::S;

/// The cursor of post `id`: opaque, as Relay servers make them.
fn cursor(id: u64) -> String {
    format!("cG9zdDo{id}")
}

/// The post id a cursor stands for.
fn after(cursor: &str) -> Option<u64> {
    cursor.strip_prefix("cG9zdDo")?.parse().ok()
}

pub(crate) async fn graphql(State(s): State<S>, Json(req): Json<Value>) -> Response {
    let query = req.get("query").and_then(Value::as_str).unwrap_or("");
    if query.contains("bogus") {
        let e = json!({"errors": [{"message": "Cannot query field \"bogus\" on type \"Post\".", "locations": [{"line": 1, "column": 30}]}]});
        return Json(e).into_response();
    }
    let vars = req.get("variables").cloned().unwrap_or(Value::Null);
    let first = vars
        .get("first")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 100);
    let start = match vars.get("after") {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => match after(c) {
            Some(id) => id,
            None => {
                let e = json!({"errors": [{"message": format!("invalid cursor {c:?}")}]});
                return Json(e).into_response();
            }
        },
        Some(other) => {
            let e = json!({"errors": [{"message": format!("Variable \"$after\" got invalid value {other}; String cannot represent a non string value")}]});
            return Json(e).into_response();
        }
    };
    let d = crate::read(&s);
    let last = (start + first).min(d.posts);
    let edges: Vec<Value> = (start + 1..=last)
        .map(|id| json!({"cursor": cursor(id), "node": d.post(id)}))
        .collect();
    let page_info = json!({
        "hasNextPage": last < d.posts,
        "endCursor": if last > start { Value::String(cursor(last)) } else { Value::Null },
    });
    Json(json!({"data": {"posts": {"edges": edges, "pageInfo": page_info}}})).into_response()
}
