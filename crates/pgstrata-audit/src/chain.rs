//! The per-tenant hash chain: sealing committed records, verifying the chains.
//!
//! Writers never hash or lock: the capture trigger inserts records unsealed. `audit.seal` takes
//! the committed, unsealed records (those of open transactions are invisible to it and wait
//! for the next round), and under one advisory lock appends them to their tenant's chain:
//! `hash = sha256(prev_hash || seq || content)`. A record is tamper-evident once sealed, so the
//! delay is bounded by the sealer's interval. Sealing and verifying read every tenant, so they
//! run as a role that row-level security does not filter (a superuser or BYPASSRLS).

use crate::error::Result;
use pgstrata_core::TenantId;
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use std::time::Duration;

/// Seals up to `limit` committed records; returns how many. Returns 0 while another sealer
/// holds the lock.
pub async fn seal(conn: &mut PgConnection, limit: i32) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT audit.seal($1)")
        .bind(limit.max(1))
        .fetch_one(conn)
        .await?)
}

/// The first broken link of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BrokenLink {
    pub tenant_id: TenantId,
    pub seq: i64,
    /// The record (none when the chain head's record itself is gone).
    pub id: Option<i64>,
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    pub problem: String,
}

/// Recomputes the chain of `tenant` (or every tenant) and returns the first broken link of each
/// broken chain; empty when every sealed record is intact.
pub async fn verify(conn: &mut PgConnection, tenant: Option<TenantId>) -> Result<Vec<BrokenLink>> {
    Ok(
        sqlx::query_as("SELECT tenant_id, seq, id, occurred_at, problem FROM audit.verify($1)")
            .bind(tenant.map(|t| t.0))
            .fetch_all(conn)
            .await?,
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

/// Seals in the background: a round every `interval`, until `shutdown` completes.
#[derive(Debug, Clone)]
pub struct Sealer {
    pool: PgPool,
    config: SealerConfig,
}

impl Sealer {
    /// `pool` must connect as a role that bypasses row-level security.
    pub fn new(pool: PgPool, config: SealerConfig) -> Self {
        Self { pool, config }
    }

    /// One round: seals batches until one comes back short. Returns the records sealed.
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

    /// Runs rounds until `shutdown` completes. A failed round (a lost connection) is retried
    /// at the next tick, so the loop only ends on shutdown; returns the records sealed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> u64 {
        let mut total = 0u64;
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return total,
                _ = tick.tick() => {
                    if let Ok(n) = self.round().await {
                        total += n;
                    }
                }
            }
        }
    }
}
