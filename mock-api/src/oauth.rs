//! An OAuth2 authorization server and a resource behind it, as SaaS APIs
//! run them (Salesforce, HubSpot, Zoho):
//!
//! - `POST /oauth/token`: the client credentials and refresh-token grants
//!   (RFC 6749 §4.4, §6), the client authenticated in the form or by HTTP
//!   Basic. Refresh tokens are single-use by default: each refresh answers
//!   with a new one and spends the old one (`invalid_grant` after).
//! - `GET /oauth/posts`: `/posts` (JSONPlaceholder style), for a valid,
//!   unexpired `Authorization: Bearer` token only; otherwise 401 with the
//!   refused token echoed in the body, as careless servers do.
//!
//! Access tokens live [`MockApi::set_token_ttl`] (default an hour);
//! [`MockApi::revoke_tokens`] makes every issued one invalid at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::{MockApi, S};

/// The client id the token endpoint accepts.
pub const CLIENT_ID: &str = "ingest-mock-client";
/// The client secret the token endpoint accepts.
pub const CLIENT_SECRET: &str = "mock-client-secret-7f3a9c";
/// The refresh token valid when the server starts.
pub const FIRST_REFRESH: &str = "mock-rt-0-5be1c2d9e4";

/// The authorization server's state.
pub(crate) struct OAuthState {
    ttl: Duration,
    rotate: bool,
    access: HashMap<String, Instant>,
    refresh: HashSet<String>,
    issued: u64,
    stats: OAuthStats,
}

impl Default for OAuthState {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            rotate: true,
            access: HashMap::new(),
            refresh: HashSet::from([FIRST_REFRESH.to_string()]),
            issued: 0,
            stats: OAuthStats::default(),
        }
    }
}

/// What the authorization server saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthStats {
    /// Access tokens issued.
    pub issued: u64,
    /// Token requests refused (bad client, spent refresh token).
    pub refused_grants: u64,
    /// Resource requests answered 401.
    pub unauthorized: u64,
    /// Every token issued (access and refresh), to check none is printed.
    pub tokens: Vec<String>,
    /// The form fields of the last token request (secrets included).
    pub last_form: Vec<(String, String)>,
    /// How the last token request authenticated the client: "basic" or "body".
    pub last_client_auth: String,
    /// The refresh token valid now (after the last rotation).
    pub current_refresh: Option<String>,
}

impl MockApi {
    /// Access tokens issued from now on live this long.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.oauth(|o| o.ttl = ttl);
    }

    /// Whether a refresh spends the refresh token and issues a new one.
    pub fn set_rotation(&self, rotate: bool) {
        self.oauth(|o| o.rotate = rotate);
    }

    /// Make every access token issued so far invalid.
    pub fn revoke_tokens(&self) {
        self.oauth(|o| o.access.clear());
    }

    /// What the authorization server saw.
    pub fn oauth_stats(&self) -> OAuthStats {
        self.oauth(|o| o.stats.clone())
    }

    fn oauth<T>(&self, f: impl FnOnce(&mut OAuthState) -> T) -> T {
        f(&mut self.shared.oauth.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

/// The client's id and secret: HTTP Basic (each half form-encoded, RFC 6749
/// §2.3.1), or the form's fields.
fn client(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String, &'static str) {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some((id, secret)) = basic.as_deref().and_then(|s| s.split_once(':')) {
        let dec = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return (dec(id), dec(secret), "basic");
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    (get("client_id"), get("client_secret"), "body")
}

/// `POST /oauth/token`.
pub(crate) async fn token(State(s): State<S>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let form: HashMap<String, String> = pairs.iter().cloned().collect();
    let (id, secret, how) = client(&headers, &form);
    let mut o = s.oauth.lock().unwrap_or_else(|e| e.into_inner());
    o.stats.last_form = pairs;
    o.stats.last_client_auth = how.to_string();
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    let client_ok = id == CLIENT_ID
        && (secret == CLIENT_SECRET || (grant == "refresh_token" && secret.is_empty()));
    if !client_ok {
        o.stats.refused_grants += 1;
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let mut new_refresh = None;
    match grant {
        "client_credentials" => {}
        "refresh_token" => {
            let given = form.get("refresh_token").cloned().unwrap_or_default();
            if !o.refresh.contains(&given) {
                o.stats.refused_grants += 1;
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the refresh token is invalid or was already used",
                );
            }
            if o.rotate {
                o.refresh.remove(&given);
                let n = o.issued + 1;
                let fresh = format!(
                    "mock-rt-{n}-{:010x}",
                    n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24
                );
                o.refresh.insert(fresh.clone());
                o.stats.tokens.push(fresh.clone());
                o.stats.current_refresh = Some(fresh.clone());
                new_refresh = Some(fresh);
            }
        }
        other => {
            o.stats.refused_grants += 1;
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type `{other}` is not supported"),
            );
        }
    }
    o.issued += 1;
    let n = o.issued;
    let access = format!(
        "mock-at-{n}-{:012x}",
        n.wrapping_mul(0xd1b5_4a32_d192_ed03) >> 16
    );
    let ttl = o.ttl;
    o.access.insert(access.clone(), Instant::now() + ttl);
    o.stats.issued += 1;
    o.stats.tokens.push(access.clone());
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs().max(1),
    });
    if let Some(r) = new_refresh {
        body["refresh_token"] = Value::String(r);
    }
    if let Some(scope) = form.get("scope") {
        body["scope"] = Value::String(scope.clone());
    }
    Json(body).into_response()
}

/// `GET /oauth/posts`: `/posts` behind a bearer token.
pub(crate) async fn posts(
    State(s): State<S>,
    headers: HeaderMap,
    q: Query<HashMap<String, String>>,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    {
        let mut o = s.oauth.lock().unwrap_or_else(|e| e.into_inner());
        let valid = o.access.get(&token).is_some_and(|t| Instant::now() < *t);
        if !valid {
            o.stats.unauthorized += 1;
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                &format!("the access token `{token}` is expired, revoked or unknown"),
            );
            r.headers_mut().insert(
                "www-authenticate",
                crate::header("Bearer error=\"invalid_token\""),
            );
            return r;
        }
    }
    crate::jsonplaceholder(State(s), q).await
}
