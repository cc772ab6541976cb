//! OAuth2 access tokens for a source (`[source.auth] kind = "oauth2"`). The
//! grants themselves (the form, the client's authentication, the response)
//! are the `oauth2` crate's; this module decides when to ask: before the
//! first request, shortly before the token expires (`expires_in`), and once
//! after a 401. One renewal at a time: concurrent requests wait for it and
//! share its token.
//!
//! A refresh token the server rotates is single-use from then on, so the new
//! one is written to the sink's ledger (a [`TokenStore`]) the moment it
//! arrives, before the access token is used; the next run starts from it
//! rather than from the configured one, unless the configured one changed
//! since (a new authorization). The processes of a shared PostgreSQL run take
//! turns to renew under a lock in the ledger, each starting from the token
//! the last one kept. Every token is learned by the source's [`Secrets`], so
//! none is ever printed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};
use sha2::Digest;

use super::http::chain;
use super::retry::{self, Transient};
use crate::config::source::{ClientAuth, OAuth2Auth, OAuth2Grant, RetryConfig};
use crate::redact::Secrets;

/// Renew this long before a token expires, at most (less for short-lived
/// tokens: a tenth of their life).
const EARLY: Duration = Duration::from_secs(60);

/// Largest token response read.
const MAX_TOKEN_BODY: usize = 1024 * 1024;

/// A refresh token kept in the ledger: the token, and a digest of the
/// configured token it descends from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// SHA-256 (hex) of the configured `refresh_token` this one replaced.
    pub seed: String,
    /// The latest refresh token.
    pub token: String,
}

/// Where a pipeline keeps its rotated refresh token: the sink's ledger.
pub trait TokenStore: Send + Sync {
    /// The kept token, if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<Kept>, String>>;
    /// Keep this token (replacing the one kept).
    fn save(&self, kept: Kept) -> BoxFuture<'_, Result<(), String>>;
    /// Keep every other process of the pipeline from renewing until
    /// [`unlock`](Self::unlock): the processes of a shared PostgreSQL run
    /// take turns, each starting from the token the last one kept, so none
    /// uses a single-use token another has spent. Where one process holds
    /// the pipeline (SQLite), nothing to do.
    fn lock(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Let the next process renew.
    fn unlock(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
#[error("OAuth2 token request to {url}: {message}")]
pub struct AuthError {
    /// The token URL, secrets masked.
    pub url: String,
    /// What went wrong, secrets masked.
    pub message: String,
}

/// A source's OAuth2 tokens.
pub struct OAuth {
    cfg: OAuth2Auth,
    http: reqwest::Client,
    retry: RetryConfig,
    secrets: Secrets,
    store: Mutex<Option<Arc<dyn TokenStore>>>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The access token and when to renew it (never, without `expires_in`).
    access: Option<(String, Option<Instant>)>,
    /// The refresh token to use next (grant = refresh_token).
    refresh: Option<String>,
    /// Counts tokens fetched; a 401 renews only the token it was sent with.
    generation: u64,
}

/// An access token, and which fetch gave it.
#[derive(Debug, Clone)]
pub struct Bearer {
    /// The token.
    pub token: String,
    /// The fetch that gave it.
    pub generation: u64,
}

impl OAuth {
    /// Tokens for this auth section; requests to the token URL go through
    /// `http` (the source's client settings) and retry per `retry`.
    pub fn new(
        cfg: OAuth2Auth,
        retry: RetryConfig,
        secrets: Secrets,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // a token endpoint that redirects is refused, not followed
            // (the oauth2 crate's advice: no SSRF through the token URL)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()?;
        let refresh = cfg.refresh_token.clone();
        Ok(Self {
            cfg,
            http,
            retry,
            secrets,
            store: Mutex::new(None),
            state: tokio::sync::Mutex::new(State {
                refresh,
                ..State::default()
            }),
        })
    }

    /// Keep rotated refresh tokens here (and start from the one kept).
    pub fn keep_in(&self, store: Arc<dyn TokenStore>) {
        if let Ok(mut s) = self.store.lock() {
            *s = Some(store);
        }
    }

    fn store(&self) -> Option<Arc<dyn TokenStore>> {
        self.store.lock().ok().and_then(|s| s.clone())
    }

    fn shown_url(&self) -> String {
        self.secrets.redact(&self.cfg.token_url)
    }

    fn fail(&self, message: impl AsRef<str>) -> AuthError {
        AuthError {
            url: self.shown_url(),
            message: self.secrets.redact(message.as_ref()),
        }
    }

    /// The access token to send now: the current one, or a new one when
    /// there is none or it is about to expire.
    pub async fn bearer(&self) -> Result<Bearer, AuthError> {
        let mut st = self.state.lock().await;
        if let Some((token, renew_at)) = &st.access
            && renew_at.is_none_or(|t| Instant::now() < t)
        {
            return Ok(Bearer {
                token: token.clone(),
                generation: st.generation,
            });
        }
        self.renew(&mut st).await
    }

    /// The API refused the token of `generation` (401): the next
    /// [`bearer`](Self::bearer) fetches a new one, unless another request
    /// already did.
    pub async fn refused(&self, generation: u64) {
        let mut st = self.state.lock().await;
        if st.generation == generation {
            st.access = None;
        }
    }

    /// A new access token. A refresh token is read from the ledger first,
    /// every time, under the ledger's lock: another process of a shared run
    /// may have rotated it since.
    async fn renew(&self, st: &mut State) -> Result<Bearer, AuthError> {
        let store = self
            .store()
            .filter(|_| self.cfg.grant == OAuth2Grant::RefreshToken);
        let Some(store) = store else {
            return self.grant(st).await;
        };
        store.lock().await.map_err(|e| {
            self.fail(format!(
                "cannot lock the kept refresh token in the ledger: {e}"
            ))
        })?;
        let result = match self.load_kept(st, store.as_ref()).await {
            Ok(()) => self.grant(st).await,
            Err(e) => Err(e),
        };
        if let Err(e) = store.unlock().await {
            tracing::warn!("cannot unlock the kept refresh token in the ledger: {e}");
        }
        result
    }

    /// One grant: the token request (retried), and a rotated refresh token
    /// kept before the access token is used.
    async fn grant(&self, st: &mut State) -> Result<Bearer, AuthError> {
        let refresh = st.refresh.clone();
        let (result, _) = retry::with_retries(
            &self.retry,
            |e: &TokenFailure, delay, n| {
                tracing::warn!(
                    url = %self.shown_url(),
                    attempt = n,
                    "the token request failed: {}; retrying in {} ms",
                    self.secrets.redact(&e.message),
                    delay.as_millis()
                );
            },
            |_| self.request(refresh.as_deref()),
        )
        .await;
        let resp = result.map_err(|e| {
            let mut m = e.message;
            if self.cfg.grant == OAuth2Grant::RefreshToken && m.contains("invalid_grant") {
                m.push_str(
                    "; the refresh token is spent or revoked (many servers make them single-use): authorize again and set a new refresh_token",
                );
            }
            self.fail(m)
        })?;
        let access = resp.access_token().secret().clone();
        if access.is_empty() {
            return Err(self.fail("the response holds an empty access_token"));
        }
        self.secrets.learn([access.clone()]);
        if let Some(rotated) = resp.refresh_token().map(|r| r.secret().clone())
            && self.cfg.grant == OAuth2Grant::RefreshToken
            && st.refresh.as_ref() != Some(&rotated)
        {
            self.secrets.learn([rotated.clone()]);
            self.keep(&rotated).await?;
            st.refresh = Some(rotated);
        }
        let renew_at = resp.expires_in().map(|life| {
            let early = EARLY.min(life / 10);
            Instant::now() + life.saturating_sub(early)
        });
        st.generation += 1;
        st.access = Some((access.clone(), renew_at));
        tracing::debug!(
            generation = st.generation,
            expires_in = resp.expires_in().map(|d| d.as_secs()),
            "got an OAuth2 access token"
        );
        Ok(Bearer {
            token: access,
            generation: st.generation,
        })
    }

    /// Digest of the configured refresh token.
    fn seed(&self) -> String {
        let configured = self.cfg.refresh_token.as_deref().unwrap_or("");
        let digest = sha2::Sha256::digest(configured.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Start from the refresh token kept in the ledger, when it descends
    /// from the configured one.
    async fn load_kept(&self, st: &mut State, store: &dyn TokenStore) -> Result<(), AuthError> {
        let kept = store.load().await.map_err(|e| {
            self.fail(format!(
                "cannot read the kept refresh token from the ledger: {e}"
            ))
        })?;
        match kept {
            // (the one this process kept last is already the one to use)
            Some(k) if k.seed == self.seed() && st.refresh.as_ref() == Some(&k.token) => {}
            Some(k) if k.seed == self.seed() => {
                self.secrets.learn([k.token.clone()]);
                tracing::debug!("starting from the refresh token the last rotation kept");
                st.refresh = Some(k.token);
            }
            Some(_) => tracing::info!(
                "the configured refresh_token changed since the last rotation: starting from it"
            ),
            None => {}
        }
        Ok(())
    }

    /// Write a rotated refresh token to the ledger before anything else: the
    /// old one is spent.
    async fn keep(&self, token: &str) -> Result<(), AuthError> {
        let Some(store) = self.store() else {
            tracing::warn!(
                "the token endpoint rotated the refresh token, and this sink keeps no ledger to hold the new one (standard output): the next run needs a new refresh_token"
            );
            return Ok(());
        };
        let kept = Kept {
            seed: self.seed(),
            token: token.to_string(),
        };
        store.save(kept).await.map_err(|e| {
            self.fail(format!(
                "the server rotated the refresh token, and the new one could not be kept in the ledger ({e}); the next run may need a new refresh_token"
            ))
        })
    }

    /// One token request, through the oauth2 crate.
    async fn request(&self, refresh: Option<&str>) -> Result<BasicTokenResponse, TokenFailure> {
        let url = TokenUrl::new(self.cfg.token_url.clone()).map_err(|e| TokenFailure {
            message: format!("the token URL does not parse: {e}"),
            transient: false,
            retry_after: None,
        })?;
        let mut client = BasicClient::new(ClientId::new(self.cfg.client_id.clone()))
            .set_token_uri(url)
            .set_auth_type(match self.cfg.client_auth {
                ClientAuth::Body => AuthType::RequestBody,
                ClientAuth::Basic => AuthType::BasicAuth,
            });
        if !self.cfg.client_secret.is_empty() {
            client = client.set_client_secret(ClientSecret::new(self.cfg.client_secret.clone()));
        }
        let scopes = self.cfg.scopes.iter().map(|s| Scope::new(s.clone()));
        let http = Exchange(self.http.clone());
        let result = match (self.cfg.grant, refresh) {
            (OAuth2Grant::ClientCredentials, _) => {
                let mut req = client.exchange_client_credentials().add_scopes(scopes);
                for (k, v) in &self.cfg.params {
                    req = req.add_extra_param(k.clone(), v.clone());
                }
                req.request_async(&http).await
            }
            (OAuth2Grant::RefreshToken, Some(r)) => {
                let token = RefreshToken::new(r.to_string());
                let mut req = client.exchange_refresh_token(&token).add_scopes(scopes);
                for (k, v) in &self.cfg.params {
                    req = req.add_extra_param(k.clone(), v.clone());
                }
                req.request_async(&http).await
            }
            (OAuth2Grant::RefreshToken, None) => {
                return Err(TokenFailure {
                    message: "no refresh_token to start from".into(),
                    transient: false,
                    retry_after: None,
                });
            }
        };
        result.map_err(failure)
    }
}

/// A failed token request.
#[derive(Debug)]
struct TokenFailure {
    message: String,
    transient: bool,
    retry_after: Option<Duration>,
}

impl Transient for TokenFailure {
    fn is_transient(&self) -> bool {
        self.transient
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// What the HTTP exchange with the token endpoint gave instead of a response.
#[derive(Debug, thiserror::Error)]
enum TokenHttp {
    /// No response.
    #[error("{0}")]
    Transport(String, bool),
    /// 429 or 5xx: worth another try.
    #[error("HTTP {status}: {excerpt}")]
    Busy {
        status: u16,
        excerpt: String,
        retry_after: Option<Duration>,
    },
}

fn failure(e: RequestTokenError<TokenHttp, oauth2::basic::BasicErrorResponse>) -> TokenFailure {
    let plain = |message: String| TokenFailure {
        message,
        transient: false,
        retry_after: None,
    };
    match e {
        RequestTokenError::ServerResponse(r) => {
            let mut m = format!("the token endpoint refused: {}", r.error());
            if let Some(d) = r.error_description() {
                m.push_str(&format!(" ({d})"));
            }
            plain(m)
        }
        RequestTokenError::Request(TokenHttp::Transport(m, transient)) => TokenFailure {
            message: m,
            transient,
            retry_after: None,
        },
        RequestTokenError::Request(TokenHttp::Busy {
            status,
            excerpt,
            retry_after,
        }) => TokenFailure {
            message: format!("HTTP {status}: {excerpt}"),
            transient: true,
            retry_after,
        },
        RequestTokenError::Parse(e, body) => plain(format!(
            "expected a JSON token response with access_token, got one that does not parse ({e}): {}",
            super::http::excerpt(&body)
        )),
        RequestTokenError::Other(m) => plain(format!("unexpected response: {m}")),
    }
}

/// The oauth2 crate's HTTP exchange, over reqwest 0.13 (the crate's own
/// adapter is for an older reqwest).
struct Exchange(reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for Exchange {
    type Error = TokenHttp;
    type Future = BoxFuture<'c, Result<oauth2::HttpResponse, TokenHttp>>;
    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        send(&self.0, request)
    }
}

fn send(
    client: &reqwest::Client,
    req: oauth2::HttpRequest,
) -> BoxFuture<'static, Result<oauth2::HttpResponse, TokenHttp>> {
    let client = client.clone();
    Box::pin(async move {
        let req = reqwest::Request::try_from(req)
            .map_err(|e| TokenHttp::Transport(chain(&e.without_url()), false))?;
        let mut resp = client.execute(req).await.map_err(|e| {
            let transient = e.is_timeout() || e.is_connect() || e.is_request();
            TokenHttp::Transport(chain(&e.without_url()), transient)
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| TokenHttp::Transport(chain(&e.without_url()), true))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_BODY {
                return Err(TokenHttp::Transport(
                    "the token response is larger than 1 MiB".into(),
                    false,
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(TokenHttp::Busy {
                status: status.as_u16(),
                excerpt: super::http::excerpt(&body),
                retry_after: retry::retry_after(&headers, std::time::SystemTime::now()),
            });
        }
        let mut out = http::Response::builder().status(status);
        for (k, v) in &headers {
            out = out.header(k, v);
        }
        out.body(body)
            .map_err(|e| TokenHttp::Transport(e.to_string(), false))
    })
}
