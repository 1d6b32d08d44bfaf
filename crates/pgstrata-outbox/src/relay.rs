//! The relay: delivers every committed message to a [`Sink`], in order per aggregate, at least
//! once, with a checkpoint per sink and partition.
//!
//! A round is one transaction: [`claim`] holds up to `partitions_per_round` of the sink's 32
//! partitions that no other relay holds (their checkpoint rows stay locked until the round
//! ends) and reads the messages above each checkpoint and below the horizon (the xmin of the
//! read's snapshot: every transaction below it has ended, so nothing can commit behind the
//! checkpoint later). The sink gets each partition's messages in order, inside a savepoint of
//! the round's transaction; [`ack`] moves the checkpoints of the partitions it took; the
//! commit ends the round. A sink that writes to the database in that transaction (a
//! projection) is therefore applied exactly once; one that calls out (HTTP) may see a message
//! again after a crash, never out of order.

use crate::error::{Error, Result, SinkError};
use crate::functions::OutboxFn;
pub use crate::generated::Message;
use pgstrata_core::sql::{self, Built, Rows};
use pgstrata_core::{CancellationToken, TenantContext};
use sea_query::{Asterisk, Expr, ExprTrait as _, Func, Query};
use sqlx::{Acquire, PgConnection, PgPool};
use std::future::Future;
use std::time::Duration;

/// The partitions of the aggregate keys: the most relays that one sink can use at once.
pub const PARTITIONS: i32 = 32;

/// A message as a relay delivers it: the generated row of `outbox.messages`.
impl Message {
    /// The context of the message's tenant, for a sink that writes the tenant's rows
    /// (`begin_tenant(&mut *conn, &message.context())`, a savepoint of the round).
    pub fn context(&self) -> TenantContext {
        TenantContext::tenant(self.tenant_id)
    }
}

/// Where a sink's messages go. Implement it for an in-process handler (a projection, a cache
/// invalidation) or use one of the crate's: [`crate::sink::QueueSink`] (one job per message).
///
/// `deliver` receives the messages of one partition in order: per aggregate key, the order
/// their transactions committed. `conn` is the relay's transaction (in a savepoint), as
/// `pgstrata_worker`: what the sink writes through it commits with the checkpoint, or not at
/// all. An error rolls the partition back; the same messages come again in a later round, so
/// a message a sink can never take blocks its partition until the sink skips it (returns
/// `Ok`) or sets it aside itself (a dead-letter table).
pub trait Sink: Send + Sync {
    /// The sink's name: the key of its checkpoints (`a-z0-9_.:-`, at most 100 characters).
    fn name(&self) -> &str;

    /// Delivers one partition's messages, in order.
    fn deliver(&self, conn: &mut PgConnection, batch: &[Message])
    -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Checks a sink name as `outbox.sinks` does.
fn validate_sink(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
        && !b"_.:-".contains(&name.as_bytes()[0]);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidField {
            field: "sink",
            reason: format!("{name:?}: 1 to 100 of a-z, 0-9, _, ., :, -, starting with a letter or digit"),
        })
    }
}

/// The statement of [`register_sink`].
///
/// ```
/// assert_eq!(pgstrata_outbox::relay::register_sink_stmt("search").0, "SELECT outbox.register_sink($1)");
/// ```
pub fn register_sink_stmt(name: &str) -> Built {
    sql::build(Query::select().expr(Func::cust(OutboxFn::RegisterSink).arg(Expr::val(name.to_owned()))))
}

/// Registers a sink with its 32 checkpoints at the start of the retained messages (a sink
/// registered later gets every message still kept). Idempotent. Worker role.
pub async fn register_sink(conn: &mut PgConnection, name: &str) -> Result<()> {
    validate_sink(name)?;
    sql::query(register_sink_stmt(name)).execute(conn).await?;
    Ok(())
}

/// The statement of [`claim`].
///
/// ```
/// let (sql, _) = pgstrata_outbox::relay::claim_stmt("search", 8, 500);
/// assert_eq!(sql, r#"SELECT * FROM outbox.claim($1, $2, $3) AS "r""#);
/// ```
pub fn claim_stmt(sink: &str, partitions: i32, limit: i32) -> Built {
    sql::build(Query::select().column(Asterisk).from_function(
        Func::cust(OutboxFn::Claim).args([Expr::val(sink.to_owned()), Expr::val(partitions), Expr::val(limit)]),
        Rows,
    ))
}

/// Holds up to `partitions` (1 to 32) of the sink's partitions that no other transaction holds,
/// until the caller's transaction ends, and returns up to `limit` (1 to 10,000) messages of
/// each, above its checkpoint and below the horizon, ordered by partition then commit-safe
/// order. Run it in a READ COMMITTED transaction as `pgstrata_worker`; [`Relay`] does.
pub async fn claim(conn: &mut PgConnection, sink: &str, partitions: i32, limit: i32) -> Result<Vec<Message>> {
    Ok(sql::query_as(claim_stmt(sink, partitions, limit))
        .fetch_all(conn)
        .await?)
}

/// The last message of each partition in `batch` and how many it has there:
/// `(partitions, txids, ids, counts)`, the arrays [`ack_stmt`] binds.
fn positions(batch: &[Message]) -> (Vec<i16>, Vec<i64>, Vec<i64>, Vec<i32>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in batch {
        if out.0.last() == Some(&m.partition) {
            let last = out.0.len() - 1;
            out.1[last] = m.txid;
            out.2[last] = m.id.0;
            out.3[last] += 1;
        } else {
            out.0.push(m.partition);
            out.1.push(m.txid);
            out.2.push(m.id.0);
            out.3.push(1);
        }
    }
    out
}

/// The statement of [`ack`]: the last delivered message of each partition of `batch` (which
/// is in [`claim`]'s order).
///
/// ```
/// let (sql, _) = pgstrata_outbox::relay::ack_stmt("search", &[]);
/// assert_eq!(sql, "SELECT outbox.ack($1, CAST($2 AS smallint[]), $3, $4, $5)");
/// ```
pub fn ack_stmt(sink: &str, batch: &[Message]) -> Built {
    let (partitions, txids, ids, counts) = positions(batch);
    sql::build(Query::select().expr(Func::cust(OutboxFn::Ack).args([
        Expr::val(sink.to_owned()),
        Expr::val(partitions).cast_as("smallint[]"),
        Expr::val(txids),
        Expr::val(ids),
        Expr::val(counts),
    ])))
}

/// Moves the sink's checkpoints past `batch` (delivered messages, in [`claim`]'s order), in the
/// transaction that claimed them. A checkpoint only moves forward. Returns how many moved.
pub async fn ack(conn: &mut PgConnection, sink: &str, batch: &[Message]) -> Result<i32> {
    if batch.is_empty() {
        return Ok(0);
    }
    let (moved,) = sql::query_as(ack_stmt(sink, batch)).fetch_one(conn).await?;
    Ok(moved)
}

/// The savepoint each partition of a round is delivered in. Only the relay's own statements
/// name it; a sink's own savepoints (`begin_tenant` on the round's connection) nest inside it.
const FIRST_SAVEPOINT: &str = "SAVEPOINT outbox_relay_partition";
/// Between partitions: the previous partition's work kept, a new savepoint, one round trip.
const NEXT_SAVEPOINT: &str = "RELEASE SAVEPOINT outbox_relay_partition; SAVEPOINT outbox_relay_partition";
/// After a failed partition: its work undone, the savepoint still set.
const ROLLBACK_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT outbox_relay_partition";

/// How a [`Relay`] works.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Partitions one round holds (1 to 32). Several relays of one sink share the 32: with
    /// the default 8, four relays can each hold a quarter.
    pub partitions_per_round: i32,
    /// Messages per partition and round (1 to 10,000).
    pub batch_size: i32,
    /// The pause after a round that found nothing to deliver.
    pub idle_wait: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            partitions_per_round: 8,
            batch_size: 500,
            idle_wait: Duration::from_millis(20),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Messages delivered and checkpointed.
    pub delivered: usize,
    /// Partitions whose sink call failed: rolled back, tried again in a later round.
    pub failed: usize,
}

/// Delivers a sink's messages in rounds until cancelled. Run one or several (processes or
/// tasks) per sink: each round holds partitions no other relay holds.
#[derive(Debug)]
pub struct Relay<S> {
    pool: PgPool,
    sink: S,
    config: RelayConfig,
}

impl<S: Sink> Relay<S> {
    /// A relay of `sink` on `pool`, whose role must hold `pgstrata_worker`.
    pub fn new(pool: PgPool, sink: S) -> Self {
        Self {
            pool,
            sink,
            config: RelayConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Checks the role and the configuration and registers the sink. [`Relay::run`] calls it.
    pub async fn prepare(&self) -> Result<()> {
        let c = &self.config;
        if !(1..=PARTITIONS).contains(&c.partitions_per_round) {
            return Err(Error::InvalidField {
                field: "partitions",
                reason: format!("partitions_per_round must be 1 to {PARTITIONS}"),
            });
        }
        if !(1..=10_000).contains(&c.batch_size) {
            return Err(Error::InvalidField {
                field: "limit",
                reason: "batch_size must be 1 to 10000".into(),
            });
        }
        let mut conn = self.pool.acquire().await?;
        let (role, worker): (String, bool) =
            sqlx::query_as("SELECT current_user::text, pg_catalog.pg_has_role('pgstrata_worker', 'USAGE')")
                .fetch_one(&mut *conn)
                .await?;
        if !worker {
            return Err(Error::NotWorker { role });
        }
        register_sink(&mut conn, self.sink.name()).await
    }

    /// One round in one transaction: claim, deliver each partition in a savepoint, move the
    /// checkpoints of the partitions delivered, commit.
    ///
    /// The savepoint is one name, released and set again in one round trip between partitions
    /// (D-234): a partition costs the sink's statements and one more, and a failed one is
    /// rolled back to its start alone.
    pub async fn round(&self) -> Result<Round> {
        let name = self.sink.name();
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let batch = claim(&mut tx, name, self.config.partitions_per_round, self.config.batch_size).await?;
        let mut round = Round::default();
        let mut delivered: Vec<Message> = Vec::with_capacity(batch.len());
        let mut savepoint_set = false;
        for part in batch.chunk_by(|a, b| a.partition == b.partition) {
            let set = if savepoint_set { NEXT_SAVEPOINT } else { FIRST_SAVEPOINT };
            sqlx::raw_sql(set).execute(&mut *tx).await?;
            savepoint_set = true;
            match self.sink.deliver(&mut tx, part).await {
                Ok(()) => {
                    delivered.extend_from_slice(part);
                    round.delivered += part.len();
                }
                Err(error) => {
                    // The savepoint stays set after a rollback to it: the next partition
                    // releases and sets it again as after a success.
                    sqlx::raw_sql(ROLLBACK_SAVEPOINT).execute(&mut *tx).await?;
                    round.failed += 1;
                    tracing::warn!(
                        sink = name,
                        partition = part[0].partition,
                        message_id = %part[0].id,
                        error = %error,
                        "outbox sink failed; the partition is retried in a later round"
                    );
                }
            }
        }
        ack(&mut tx, name, &delivered).await?;
        tx.commit().await?;
        Ok(round)
    }

    /// Rounds until `token` is cancelled (the current round finishes first). A round that
    /// fails (the database, a lost connection) is logged and retried with backoff; an idle
    /// round waits [`RelayConfig::idle_wait`].
    pub async fn run(&self, token: CancellationToken) -> Result<()> {
        self.prepare().await?;
        let mut failures: u32 = 0;
        while !token.is_cancelled() {
            let wait = match self.round().await {
                Ok(round) => {
                    failures = 0;
                    if round.delivered > 0 {
                        continue;
                    }
                    self.config.idle_wait
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(sink = self.sink.name(), error = %error, "outbox relay round failed");
                    backoff(failures)
                }
            };
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }

    /// Rounds until every partition came up empty in a row (rounds take the least recently
    /// served partitions first): what was committed below the horizon is delivered, but for
    /// partitions another relay held or a sink refused. For tests, tools, and draining before
    /// a shutdown. Returns how many messages it delivered.
    pub async fn run_until_idle(&self) -> Result<usize> {
        self.prepare().await?;
        let per_round = self.config.partitions_per_round;
        let rounds_per_sweep = (PARTITIONS + per_round - 1) / per_round;
        let (mut total, mut empty) = (0, 0);
        while empty < rounds_per_sweep {
            let round = self.round().await?;
            total += round.delivered;
            empty = if round.delivered == 0 { empty + 1 } else { 0 };
        }
        Ok(total)
    }
}

/// 100 ms doubling to 10 s, with jitter, after `failures` failed rounds in a row.
fn backoff(failures: u32) -> Duration {
    use std::hash::BuildHasher;
    let base = Duration::from_millis(100).saturating_mul(1u32 << Ord::min(failures, 7));
    let jitter = std::collections::hash_map::RandomState::new().hash_one(failures) % 1000;
    base.min(Duration::from_secs(10)).mul_f64(0.5 + jitter as f64 / 2000.0)
}
