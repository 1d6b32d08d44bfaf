//! The per-tenant hash chain: sealing committed records, verifying the chains.
//!
//! Writers never hash or lock: the capture trigger inserts records unsealed. `audit.seal` takes
//! the records of transactions that have ended before every running one began writing, in
//! (txid, id) order from where the last round stopped (so a record committed late is never
//! skipped; a long writing transaction only delays sealing), and holding the row lock of
//! `audit.seal_locks` (which only the owner may lock) appends them to their tenant's chain:
//! `seq` from 1 per tenant, `hash = sha256(prev_hash || seq || content)`. The links are appended
//! to `audit.seals`, one row per tenant and month per round; records are written once and never
//! updated (`audit.links` shows each record's link). `audit.seal`, `audit.maintain` and
//! `audit.verify` are SECURITY DEFINER entry points: seal and maintain for `pgstrata_worker`,
//! verify and [`unsealed`] for `pgstrata_worker` and `pgstrata_operator`. Each chain is anchored
//! at both ends (seq 1 or the retention checkpoint, and the chain head), so verify reports
//! records removed anywhere, including all of them.

use crate::error::{Error, Result};
use crate::functions::AuditFn;
use crate::ids::RecordId;
use pgstrata_core::sql::{self, Built, Rows};
use pgstrata_core::{CancellationToken, TenantId};
use sea_query::{Asterisk, Expr, Func, Query};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// Seals up to `limit` committed records; returns how many. Run it as `pgstrata_worker` (or the
/// owner). While another sealer holds the lock it fails at once with [`Error::SealerBusy`].
pub async fn seal(conn: &mut PgConnection, limit: i32) -> Result<i32> {
    let (sealed,): (i32,) = sql::query_as(seal_stmt(limit)).fetch_one(conn).await?;
    Ok(sealed)
}

/// The SQL of [`seal`]; a `limit` below 1 seals one record.
///
/// ```
/// let (sql, _) = pgstrata_audit::chain::seal_stmt(5000);
/// assert_eq!(sql, "SELECT audit.seal($1)");
/// ```
pub fn seal_stmt(limit: i32) -> Built {
    sql::build(Query::select().expr(Func::cust(AuditFn::Seal).arg(limit.max(1))))
}

/// The first broken link of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BrokenLink {
    pub tenant_id: TenantId,
    pub seq: i64,
    /// The record (none when the chain head's record itself is gone).
    pub id: Option<RecordId>,
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    pub problem: String,
}

/// Recomputes the chain of `tenant` (or every tenant) and returns the first broken link of each
/// broken chain; empty when every sealed record is intact.
pub async fn verify(conn: &mut PgConnection, tenant: Option<TenantId>) -> Result<Vec<BrokenLink>> {
    Ok(sql::query_as(verify_stmt(tenant)).fetch_all(conn).await?)
}

/// The SQL of [`verify`]; `None` verifies every tenant's chain.
///
/// ```
/// let (sql, _) = pgstrata_audit::chain::verify_stmt(None);
/// assert_eq!(sql, r#"SELECT * FROM audit.verify($1) AS "r""#);
/// ```
pub fn verify_stmt(tenant: Option<TenantId>) -> Built {
    let f = Func::cust(AuditFn::Verify).arg(Expr::val(tenant.map(|t| t.0)));
    sql::build(Query::select().column(Asterisk).from_function(f, Rows))
}

/// Records still waiting for the sealer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Unsealed {
    pub unsealed: i64,
    /// The oldest one's `occurred_at` (its transaction's start).
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

/// How many committed records are not sealed yet, and since when: when the oldest is older
/// than a few seal intervals, no sealer is running or something holds it back (a writing
/// transaction open anywhere in the cluster delays sealing until it ends).
pub async fn unsealed(conn: &mut PgConnection) -> Result<Unsealed> {
    Ok(sql::query_as(unsealed_stmt()).fetch_one(conn).await?)
}

/// The SQL of [`unsealed`].
///
/// ```
/// let (sql, _) = pgstrata_audit::chain::unsealed_stmt();
/// assert_eq!(sql, r#"SELECT * FROM audit.unsealed() AS "r""#);
/// ```
pub fn unsealed_stmt() -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from_function(Func::cust(AuditFn::Unsealed), Rows),
    )
}

/// How often and how much the [`Sealer`] seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealerConfig {
    /// Pause between rounds: the bound on how long a committed record stays unsealed (plus
    /// the time a round takes).
    pub interval: Duration,
    /// Records per transaction; a round repeats while batches come back full.
    pub batch: i32,
}

impl Default for SealerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            batch: 5000,
        }
    }
}

/// What a [`Sealer`] did until it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealerStats {
    /// Records sealed.
    pub sealed: u64,
    /// Rounds in which another sealer held the lock ([`Error::SealerBusy`]).
    pub blocked_rounds: u64,
    /// Rounds that failed otherwise (a lost connection, missing privileges).
    pub failed_rounds: u64,
}

/// Seals in the background: a round every `interval`, until its token is cancelled.
#[derive(Debug, Clone)]
pub struct Sealer {
    pool: PgPool,
    config: SealerConfig,
}

impl Sealer {
    /// `pool` connects as a role holding `pgstrata_worker`.
    pub fn new(pool: PgPool, config: SealerConfig) -> Self {
        Self { pool, config }
    }

    /// One round: seals batches until one comes back short. Returns the records sealed, or
    /// [`Error::SealerBusy`] when another sealer holds the lock (records sealed by this round's
    /// earlier batches stay sealed).
    pub async fn round(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let mut conn = self.pool.acquire().await?;
            let n = seal(&mut conn, self.config.batch).await?;
            total += u64::try_from(n).unwrap_or(0);
            if n < self.config.batch {
                return Ok(total);
            }
        }
    }

    /// Runs rounds until `token` is cancelled, then one last round (so records committed since
    /// the previous round do not wait for the next sealer), and returns what it did. A round in
    /// progress is never interrupted. A failed round is retried at the next tick, so the loop
    /// only ends on cancellation; blocked and failed rounds are counted in the returned stats.
    /// Use [`Sealer::run_reporting`] to see each error as it happens.
    ///
    /// ```no_run
    /// use pgstrata_audit::{Sealer, SealerConfig};
    /// use pgstrata_core::CancellationToken;
    /// # async fn run(worker_pool: sqlx::PgPool) {
    /// let token = CancellationToken::new();
    /// let sealer = tokio::spawn(Sealer::new(worker_pool, SealerConfig::default()).run(token.clone()));
    /// // ... on shutdown:
    /// token.cancel();
    /// let stats = sealer.await.unwrap();
    /// # let _ = stats; }
    /// ```
    pub async fn run(self, token: CancellationToken) -> SealerStats {
        self.run_reporting(token, |_| {}).await
    }

    /// [`Sealer::run`], calling `on_error` with every failed round's error (log it: a sealer
    /// that keeps getting [`Error::SealerBusy`] is not sealing).
    pub async fn run_reporting(self, token: CancellationToken, mut on_error: impl FnMut(&Error)) -> SealerStats {
        let mut stats = SealerStats::default();
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                biased;
                _ = token.cancelled() => true,
                _ = tick.tick() => false,
            };
            match self.round().await {
                Ok(n) => {
                    stats.sealed += n;
                    if n > 0 {
                        tracing::debug!(sealed = n, "audit seal round");
                    }
                }
                Err(e) => {
                    if matches!(e, Error::SealerBusy { .. }) {
                        stats.blocked_rounds += 1;
                    } else {
                        stats.failed_rounds += 1;
                    }
                    // Logged here as well as reported: a sealer run without a callback must
                    // not fail silently.
                    tracing::warn!(error = %e, "audit seal round failed; retrying at the next interval");
                    on_error(&e);
                }
            }
            if last {
                return stats;
            }
        }
    }
}
