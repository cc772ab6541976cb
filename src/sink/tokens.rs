//! The ledger side of OAuth2 (`source/oauth.rs`): the refresh token a server
//! rotated, kept in the sink's own tables (`_ingest_tokens` in SQLite,
//! `ingest.tokens` in PostgreSQL) on a connection of its own, so it is
//! committed the moment it arrives, whatever batch is in flight. In
//! PostgreSQL, renewals take turns under an advisory lock, so the processes
//! of a shared run never spend the same single-use token twice.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{SinkError, postgres, sqlite};
use crate::config::SinkConfig;
use crate::source::oauth::{Kept, TokenStore};

/// A pipeline's kept refresh token, in its sink's ledger.
pub struct LedgerTokens {
    cfg: SinkConfig,
    pipeline: String,
    /// PostgreSQL: the connection that holds the renewal lock, while held.
    held: Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
}

impl LedgerTokens {
    /// The store of `pipeline`'s tokens in the sink `cfg` names; none for a
    /// sink without a ledger (standard output), where a rotated token is
    /// reported as lost instead.
    pub fn of(cfg: &SinkConfig, pipeline: &str) -> Option<Self> {
        let has_ledger = matches!(cfg, SinkConfig::Postgres(_)) || cfg.ledger_db().is_some();
        has_ledger.then(|| Self::new(cfg, pipeline))
    }

    fn new(cfg: &SinkConfig, pipeline: &str) -> Self {
        Self {
            cfg: cfg.clone(),
            pipeline: pipeline.to_string(),
            held: Arc::default(),
        }
    }

    /// A handle on the same store, for a task of its own.
    fn handle(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            pipeline: self.pipeline.clone(),
            held: Arc::clone(&self.held),
        }
    }

    /// PostgreSQL: wait for the pipeline's renewal lock, on a connection
    /// kept until [`Self::unlock_kept`]. A process that dies loses the
    /// connection and with it the lock.
    async fn lock_kept(&self) -> Result<(), SinkError> {
        let SinkConfig::Postgres(c) = &self.cfg else {
            return Ok(());
        };
        let mut conn = postgres::connect(c).await?;
        let locked: Result<_, sqlx::Error> = async {
            // a process stopped while it holds the lock must not stall the others
            sqlx::query("SET lock_timeout = '60s'")
                .execute(&mut conn)
                .await?;
            sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
                .bind(postgres::class::TOKENS)
                .bind(&self.pipeline)
                .execute(&mut conn)
                .await
        }
        .await;
        locked.map_err(postgres::db_err(
            &c.shown_url(),
            "cannot lock the kept token",
        ))?;
        *self.held.lock().await = Some(conn);
        Ok(())
    }

    async fn unlock_kept(&self) -> Result<(), SinkError> {
        let (SinkConfig::Postgres(c), Some(mut conn)) = (&self.cfg, self.held.lock().await.take())
        else {
            return Ok(());
        };
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(postgres::class::TOKENS)
            .bind(&self.pipeline)
            .execute(&mut conn)
            .await
            .map_err(postgres::db_err(
                &c.shown_url(),
                "cannot unlock the kept token",
            ))?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(())
    }

    async fn load_kept(&self) -> Result<Option<Kept>, SinkError> {
        let row: Option<(String, String)> = match (&self.cfg, self.cfg.ledger_db()) {
            (SinkConfig::Postgres(c), _) => {
                let mut conn = postgres::connect(c).await?;
                sqlx::query_as("SELECT seed, token FROM ingest.tokens WHERE pipeline = $1")
                    .bind(&self.pipeline)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(postgres::db_err(
                        &c.shown_url(),
                        "cannot read the kept token",
                    ))?
            }
            (_, Some(db)) if db.exists() => {
                let mut conn = sqlite::connect(&db).await?;
                sqlx::query_as("SELECT seed, token FROM _ingest_tokens WHERE pipeline = ?")
                    .bind(&self.pipeline)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(sqlite::db_err(
                        &db.display().to_string(),
                        "cannot read the kept token",
                    ))?
            }
            // no ledger (standard output), or none yet
            _ => None,
        };
        Ok(row.map(|(seed, token)| Kept { seed, token }))
    }

    async fn save_kept(&self, kept: Kept) -> Result<(), SinkError> {
        match (&self.cfg, self.cfg.ledger_db()) {
            (SinkConfig::Postgres(c), _) => {
                let mut conn = postgres::connect(c).await?;
                sqlx::query(
                    "INSERT INTO ingest.tokens (pipeline, seed, token) VALUES ($1, $2, $3) \
                     ON CONFLICT (pipeline) DO UPDATE SET seed = excluded.seed, \
                     token = excluded.token, updated_at = now()",
                )
                .bind(&self.pipeline)
                .bind(&kept.seed)
                .bind(&kept.token)
                .execute(&mut conn)
                .await
                .map_err(postgres::db_err(&c.shown_url(), "cannot keep the token"))?;
            }
            (_, Some(db)) => {
                let mut conn = sqlite::connect(&db).await?;
                sqlx::query(
                    "INSERT INTO _ingest_tokens (pipeline, seed, token, updated_at) \
                     VALUES (?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
                     ON CONFLICT (pipeline) DO UPDATE SET seed = excluded.seed, \
                     token = excluded.token, updated_at = excluded.updated_at",
                )
                .bind(&self.pipeline)
                .bind(&kept.seed)
                .bind(&kept.token)
                .execute(&mut conn)
                .await
                .map_err(sqlite::db_err(
                    &db.display().to_string(),
                    "cannot keep the token",
                ))?;
            }
            (_, None) => {
                return Err(SinkError::Schema("this sink keeps no ledger".into()));
            }
        }
        Ok(())
    }
}

impl LedgerTokens {
    /// Run one ledger call on the blocking pool, on a handle of its own.
    fn detached<'a, T: Send + 'static, F>(
        &'a self,
        call: impl FnOnce(Self) -> F + Send + 'static,
    ) -> BoxFuture<'a, Result<T, String>>
    where
        F: std::future::Future<Output = Result<T, SinkError>>,
    {
        let this = self.handle();
        let rt = tokio::runtime::Handle::current();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || rt.block_on(call(this)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    }
}

impl TokenStore for LedgerTokens {
    fn load(&self) -> BoxFuture<'_, Result<Option<Kept>, String>> {
        self.detached(|this| async move { this.load_kept().await })
    }
    fn save(&self, kept: Kept) -> BoxFuture<'_, Result<(), String>> {
        self.detached(|this| async move { this.save_kept(kept).await })
    }
    fn lock(&self) -> BoxFuture<'_, Result<(), String>> {
        self.detached(|this| async move { this.lock_kept().await })
    }
    fn unlock(&self) -> BoxFuture<'_, Result<(), String>> {
        self.detached(|this| async move { this.unlock_kept().await })
    }
}
