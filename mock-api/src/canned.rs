//! Canned responses for the edge cases tests set up one by one: a redirect
//! to another listener, a next link to another origin, a body with big
//! integers or numeric-looking strings, a fractional `Retry-After`, a key
//! the server echoes back. A test registers, per path (and query), the
//! responses to serve in order; the last one repeats.

use std::collections::{HashMap, VecDeque};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::S;

/// One response, as sent.
#[derive(Debug, Clone)]
pub struct Canned {
    /// The status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body, sent as is with `content-type: application/json`.
    pub body: String,
}

impl Canned {
    /// A 200 with this JSON body.
    pub fn json(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A response with this status and an empty JSON object.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: "{}".into(),
        }
    }

    /// The same with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Path (with `?query` when one was registered with it) → responses left.
pub type Script = HashMap<String, VecDeque<Canned>>;

/// Serves what was canned for the request's path and query (or its path
/// alone); 404 for anything else.
pub(crate) async fn serve(State(s): State<S>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let full = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    if path == "/edge/echo" {
        // a server that quotes the query back in its error, as sent
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let auth = format!("{} {}", header("authorization"), header("x-api-key"));
        // re-encoded the way some servers do: `+` and `=` escaped, `/` not,
        // once with upper-case hex and once with lower-case
        let query = req.uri().query().unwrap_or("");
        let decoded: String = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let upper = decoded
            .split_once('=')
            .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace('=', "%3D")))
            .unwrap_or_default();
        let lower = upper.replace("%2B", "%2b").replace("%3D", "%3d");
        let body = format!("{{\"error\": \"invalid key in {upper} (or {lower}); auth {auth}\"}}");
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    let found = {
        let mut script = s.canned.lock().unwrap_or_else(|e| e.into_inner());
        let key = if script.contains_key(&full) {
            full
        } else {
            path
        };
        script.get_mut(&key).and_then(|q| {
            if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            }
        })
    };
    let Some(c) = found else {
        return (
            StatusCode::NOT_FOUND,
            "{\"error\": \"nothing canned here\"}",
        )
            .into_response();
    };
    let mut r = (
        StatusCode::from_u16(c.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        c.body,
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (k, v) in c.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}
