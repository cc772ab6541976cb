//! Shared runs: one backfill, many processes, no coordinator but the
//! database. Every process that runs a partitioned pipeline against the
//! same PostgreSQL database joins the run in progress (`ingest.shared_runs`)
//! and claims partitions (`ingest.partitions`) one at a time with
//! `FOR UPDATE SKIP LOCKED`, the job-queue pattern of River and
//! solid_queue. A claim is a lease: an owner, a random token and an expiry
//! that a heartbeat renews. Every batch commit renews the leases of its
//! partitions *by token* in the batch's own transaction, and is refused
//! when a token no longer matches (fencing): a process that stalled past its
//! lease cannot write over the process that took its partition. A dead
//! process's partitions are claimed again when their leases run out, and
//! continue from their last committed resume point. The process that finds
//! every partition done completes the run (swap, marks) under the join lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use sqlx::postgres::PgConnection;

use super::{class, connect, db_err};
use crate::config::PostgresSinkConfig;
use crate::ledger::Walk;
use crate::sink::SinkError;
use crate::source::{Partition, Resume};

/// Claimed partitions of a process and their tokens.
type Leases = Arc<Mutex<HashMap<String, i64>>>;

/// The walks this process claims, as they are claimed.
pub type ClaimStream = std::pin::Pin<Box<dyn Stream<Item = Result<Walk, SinkError>> + Send>>;

/// Renews this process's leases while it lives.
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A process's part in a shared run.
pub(super) struct Share {
    /// The shared run's id.
    pub id: i64,
    pipeline: String,
    owner: String,
    lease: Duration,
    leases: Leases,
    joined: bool,
}

impl Share {
    /// Take the join lock (held until [`Share::register`]): planning and
    /// joining are one step per process.
    pub async fn open(
        conn: &mut PgConnection,
        shown: &str,
        pipeline: &str,
        lease: Duration,
    ) -> Result<Self, SinkError> {
        sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind(class::JOIN)
            .bind(pipeline)
            .execute(&mut *conn)
            .await
            .map_err(db_err(shown, "cannot take the shared run's join lock"))?;
        Ok(Self {
            id: 0,
            pipeline: pipeline.to_string(),
            owner: format!(
                "{}:{}:{:08x}",
                super::host(),
                std::process::id(),
                fastrand::u32(..)
            ),
            lease,
            leases: Arc::default(),
            joined: false,
        })
    }

    /// Whether a shared run of the pipeline is in progress.
    pub async fn active(&self, conn: &mut PgConnection, shown: &str) -> Result<bool, SinkError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ingest.shared_runs WHERE pipeline = $1)")
            .bind(&self.pipeline)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err(shown, "cannot look up the shared run"))
    }

    /// Join the run in progress, or create one. Returns whether it loads a
    /// staging table, and whether this process created it.
    pub async fn begin(
        &mut self,
        conn: &mut PgConnection,
        shown: &str,
        staged: bool,
    ) -> Result<(bool, bool), SinkError> {
        let row: Option<(i64, bool)> =
            sqlx::query_as("SELECT id, staged FROM ingest.shared_runs WHERE pipeline = $1")
                .bind(&self.pipeline)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err(shown, "cannot look up the shared run"))?;
        if let Some((id, was)) = row {
            self.id = id;
            self.joined = true;
            tracing::info!(shared_run = id, "joining the shared run in progress");
            if was != staged {
                tracing::warn!(
                    staged = was,
                    "the shared run in progress loads {}; joining it as it is",
                    if was {
                        "a staging table"
                    } else {
                        "the live table"
                    }
                );
            }
            return Ok((was, false));
        }
        sqlx::query("DELETE FROM ingest.partitions WHERE pipeline = $1")
            .bind(&self.pipeline)
            .execute(&mut *conn)
            .await
            .map_err(db_err(shown, "cannot clear old partitions"))?;
        self.id = sqlx::query_scalar(
            "INSERT INTO ingest.shared_runs (pipeline, staged) VALUES ($1, $2) RETURNING id",
        )
        .bind(&self.pipeline)
        .bind(staged)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err(shown, "cannot start the shared run"))?;
        tracing::info!(
            shared_run = self.id,
            "started a shared run: other processes running this pipeline on this database join it"
        );
        Ok((staged, true))
    }

    /// Add this process's partitions to the run (those already there stay
    /// as they are) and let the next process join. A run in progress with
    /// partitions this process does not know was started with other
    /// settings: joining it is refused.
    pub async fn register(
        &mut self,
        conn: &mut PgConnection,
        shown: &str,
        walks: &[Walk],
    ) -> Result<(), SinkError> {
        let keys: Vec<String> = walks.iter().map(|(p, _)| p.key.to_string()).collect();
        sqlx::query(
            "INSERT INTO ingest.partitions (pipeline, partition, seq) \
             SELECT $1, u.k, u.n FROM unnest($2::text[]) WITH ORDINALITY AS u(k, n) \
             ON CONFLICT (pipeline, partition) DO NOTHING",
        )
        .bind(&self.pipeline)
        .bind(&keys)
        .execute(&mut *conn)
        .await
        .map_err(db_err(shown, "cannot register the partitions"))?;
        let stranger: Option<String> = sqlx::query_scalar(
            "SELECT partition FROM ingest.partitions WHERE pipeline = $1 AND NOT done \
             AND NOT (partition = ANY($2)) ORDER BY seq LIMIT 1",
        )
        .bind(&self.pipeline)
        .bind(&keys)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err(shown, "cannot read the partitions"))?;
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(class::JOIN)
            .bind(&self.pipeline)
            .execute(&mut *conn)
            .await
            .map_err(db_err(shown, "cannot release the join lock"))?;
        match stranger {
            Some(k) => Err(SinkError::Schema(format!(
                "the shared run in progress has partition `{k}`, which this run does not: it was started with other settings (--since/--until, the partition definition). Run with the same settings to join it, or wait for it to finish"
            ))),
            None => Ok(()),
        }
    }

    /// Forget the leases of partitions whose walk is committed complete.
    pub fn forget(&self, finished: &[String]) {
        if let Ok(mut l) = self.leases.lock() {
            for k in finished {
                l.remove(k);
            }
        }
    }

    /// In a batch's transaction: renew the lease of each of its partitions
    /// by token, and mark those it completes. A token that no longer
    /// matches means another process took the partition over: the batch is
    /// refused.
    pub async fn fence(
        &self,
        tx: &mut PgConnection,
        shown: &str,
        states: &[(Arc<str>, Option<Resume>)],
    ) -> Result<(), SinkError> {
        if states.is_empty() {
            return Ok(());
        }
        let tokens: HashMap<String, i64> =
            self.leases.lock().map(|l| l.clone()).unwrap_or_default();
        let keys: Vec<String> = states.iter().map(|(k, _)| k.to_string()).collect();
        let toks: Vec<i64> = keys
            .iter()
            .map(|k| tokens.get(k).copied().unwrap_or(0))
            .collect();
        let done: Vec<bool> = states.iter().map(|(_, r)| r.is_none()).collect();
        let renewed = sqlx::query(
            "UPDATE ingest.partitions p SET lease_until = now() + $5 * interval '1 second', done = u.d \
             FROM unnest($2::text[], $3::int8[], $4::bool[]) AS u(k, t, d) \
             WHERE p.pipeline = $1 AND p.partition = u.k AND p.token = u.t",
        )
        .bind(&self.pipeline)
        .bind(&keys)
        .bind(&toks)
        .bind(&done)
        .bind(self.lease.as_secs_f64())
        .execute(&mut *tx)
        .await
        .map_err(db_err(shown, "cannot renew the leases"))?
        .rows_affected();
        if renewed == keys.len() as u64 {
            return Ok(());
        }
        Err(SinkError::Fenced {
            partitions: keys.join(", "),
        })
    }

    /// In the final transaction of a process whose walks all ended: if no
    /// partition is left, complete the shared run (the caller then swaps
    /// and moves the marks). Whoever gets here last does it, once.
    pub async fn complete(&self, tx: &mut PgConnection, shown: &str) -> Result<bool, SinkError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(class::JOIN)
            .bind(&self.pipeline)
            .execute(&mut *tx)
            .await
            .map_err(db_err(shown, "cannot take the join lock"))?;
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ingest.partitions WHERE pipeline = $1 AND NOT done",
        )
        .bind(&self.pipeline)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err(shown, "cannot count the partitions left"))?;
        if left > 0 {
            tracing::info!(
                left,
                "this process is done; other processes are walking the partitions left, and the last to finish completes the run"
            );
            return Ok(false);
        }
        let gone = sqlx::query("DELETE FROM ingest.shared_runs WHERE pipeline = $1 AND id = $2")
            .bind(&self.pipeline)
            .bind(self.id)
            .execute(&mut *tx)
            .await
            .map_err(db_err(shown, "cannot complete the shared run"))?
            .rows_affected();
        if gone == 0 {
            return Ok(false); // another process completed it
        }
        sqlx::query("DELETE FROM ingest.partitions WHERE pipeline = $1")
            .bind(&self.pipeline)
            .execute(&mut *tx)
            .await
            .map_err(db_err(shown, "cannot complete the shared run"))?;
        tracing::info!(
            shared_run = self.id,
            "every partition is done: the shared run is complete"
        );
        Ok(true)
    }

    /// Give back the partitions this process claimed and did not finish,
    /// so others take them at once instead of when the lease runs out.
    pub async fn release(&self, tx: &mut PgConnection, shown: &str) -> Result<(), SinkError> {
        sqlx::query(
            "UPDATE ingest.partitions SET owner = NULL, token = NULL, lease_until = NULL \
             WHERE pipeline = $1 AND owner = $2 AND NOT done",
        )
        .bind(&self.pipeline)
        .bind(&self.owner)
        .execute(&mut *tx)
        .await
        .map_err(db_err(shown, "cannot give back the claims"))?;
        Ok(())
    }
}

/// What one claim attempt found.
enum Claim {
    /// A partition, its token, where it resumes, and the owner whose lease
    /// ran out (if any).
    Got(String, i64, Option<String>, Option<String>),
    /// Others hold live leases on the partitions left.
    Wait,
    /// Nothing is left for this process.
    Finished,
}

/// The claiming side of a process: a connection of its own, shared with
/// the heartbeat.
pub(super) struct Claims {
    conn: Arc<tokio::sync::Mutex<PgConnection>>,
    shown: String,
    pipeline: String,
    owner: String,
    lease: Duration,
    leases: Leases,
}

impl Claims {
    /// Open the claiming connection.
    pub async fn start(cfg: &PostgresSinkConfig, sh: &Share) -> Result<Self, SinkError> {
        Ok(Self {
            conn: Arc::new(tokio::sync::Mutex::new(connect(cfg).await?)),
            shown: cfg.shown_url(),
            pipeline: sh.pipeline.clone(),
            owner: sh.owner.clone(),
            lease: sh.lease,
            leases: sh.leases.clone(),
        })
    }

    /// The walks of `walks` as this process claims them, and the heartbeat.
    pub fn stream(self, walks: Vec<Walk>) -> (ClaimStream, Heartbeat) {
        let beat = Heartbeat(tokio::spawn(heartbeat(
            self.conn.clone(),
            self.pipeline.clone(),
            self.owner.clone(),
            self.lease,
        )));
        let stream = async_stream::try_stream! {
            let mut known: HashMap<String, Partition> =
                walks.into_iter().map(|(p, _)| (p.key.to_string(), p)).collect();
            let keys: Vec<String> = known.keys().cloned().collect();
            // poll for expired leases, and for the end of the partitions
            // others hold, a few times a second: a process that waits
            // learns at once that the run is complete
            let poll = (self.lease / 4).clamp(Duration::from_millis(50), Duration::from_millis(200));
            loop {
                match self.claim(&keys).await? {
                    Claim::Got(key, token, resume, before) => {
                        if let Some(prev) = before {
                            tracing::warn!(partition = %key, previous = %prev, "the lease of the process walking this partition ran out (expired lease): continuing it from its last committed page");
                        }
                        if let Ok(mut l) = self.leases.lock() {
                            l.insert(key.clone(), token);
                        }
                        if let Some(part) = known.remove(&key) {
                            yield (part, parse(&key, resume));
                        }
                    }
                    Claim::Wait => tokio::time::sleep(poll).await,
                    Claim::Finished => break,
                }
            }
        };
        (Box::pin(stream), beat)
    }

    /// Claim the next partition: unclaimed, or under a lease that ran out.
    async fn claim(&self, keys: &[String]) -> Result<Claim, SinkError> {
        let mut conn = self.conn.lock().await;
        let token = fastrand::i64(1..);
        let got: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "WITH pick AS ( \
               SELECT partition, owner AS before FROM ingest.partitions \
               WHERE pipeline = $1 AND NOT done AND partition = ANY($2) \
                 AND (owner IS NULL OR (lease_until < now() AND owner <> $3)) \
               ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
             UPDATE ingest.partitions p SET owner = $3, token = $4, \
               lease_until = now() + $5 * interval '1 second', claims = p.claims + 1 \
             FROM pick WHERE p.pipeline = $1 AND p.partition = pick.partition \
             RETURNING p.partition, pick.before, \
               (SELECT s.resume FROM ingest.state s WHERE s.pipeline = $1 AND s.partition = p.partition AND NOT s.done)",
        )
        .bind(&self.pipeline)
        .bind(keys)
        .bind(&self.owner)
        .bind(token)
        .bind(self.lease.as_secs_f64())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err(&self.shown, "cannot claim a partition"))?;
        if let Some((key, before, resume)) = got {
            return Ok(Claim::Got(key, token, resume, before));
        }
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ingest.partitions WHERE pipeline = $1 AND NOT done \
             AND partition = ANY($2) AND owner IS DISTINCT FROM $3",
        )
        .bind(&self.pipeline)
        .bind(keys)
        .bind(&self.owner)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err(&self.shown, "cannot count the partitions left"))?;
        Ok(if others > 0 {
            Claim::Wait
        } else {
            Claim::Finished
        })
    }
}

/// A saved resume point; one that does not parse starts its partition over.
fn parse(key: &str, resume: Option<String>) -> Option<Resume> {
    let text = resume?;
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(
                partition = key,
                "the saved resume point does not parse ({e}); that partition starts over"
            );
            None
        }
    }
}

/// Renew this process's leases three times per lease.
async fn heartbeat(
    conn: Arc<tokio::sync::Mutex<PgConnection>>,
    pipeline: String,
    owner: String,
    lease: Duration,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let mut c = conn.lock().await;
        let renewed = sqlx::query(
            "UPDATE ingest.partitions SET lease_until = now() + $3 * interval '1 second' \
             WHERE pipeline = $1 AND owner = $2 AND NOT done",
        )
        .bind(&pipeline)
        .bind(&owner)
        .bind(lease.as_secs_f64())
        .execute(&mut *c)
        .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "cannot renew the leases; another process may take these partitions over");
        }
    }
}
