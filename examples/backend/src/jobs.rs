//! Jobs: enqueued in the request's transaction (so a job exists exactly when the request's
//! writes committed), run by the [`Worker`] this binary starts beside the HTTP server.
//!
//! A handler's database writes commit with its job's completion: [`Mailer`] records each
//! e-mail in `app.sent_emails` in the job's transaction, so a job run again after a crash finds
//! its row and does not send twice. A real mailer would call its provider before the insert,
//! with the job id as the provider's idempotency key.

use crate::error::ApiError;
use pgstrata::core::TenantTx;
use pgstrata::queue::worker::{Control, HandlerError};
use pgstrata::queue::{Handler, JobId, JobKind, JobMeta, NewJob, Periodic, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;

/// Sends one e-mail. Payloads are stored in `queue.jobs`: keep secrets (invitation tokens)
/// out of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendEmail {
    /// `invitation` or `welcome`.
    pub template: String,
    pub to: String,
}

impl JobKind for SendEmail {
    const KIND: &'static str = "app.send_email";
    const MAX_ATTEMPTS: i32 = 10;
    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
}

/// Enqueues an e-mail in the request's transaction: it is sent only if that transaction
/// commits, and carries the request's tenant, actor and request id.
pub async fn enqueue_email(tx: &mut TenantTx<'_>, email: &SendEmail) -> Result<JobId, ApiError> {
    Ok(pgstrata::queue::client::enqueue(tx, &NewJob::of(email)?).await?)
}

/// The [`SendEmail`] handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mailer;

impl Handler<SendEmail> for Mailer {
    async fn handle(&self, tx: &mut PgConnection, email: SendEmail, meta: &JobMeta) -> Result<(), HandlerError> {
        if meta.tenant_id.is_none() {
            return Err(Control::Cancel("an e-mail job belongs to a tenant".into()).into());
        }
        // Runs in the job's tenant context: the policy of app.sent_emails keeps the row in
        // that tenant. ON CONFLICT: this job already sent its mail in an earlier attempt.
        sqlx::query(
            "INSERT INTO app.sent_emails (tenant_id, job_id, template, to_email, request_id)
                 VALUES (tenancy.current_tenant_id(), $1, $2, $3, $4)
                 ON CONFLICT (tenant_id, job_id) DO NOTHING",
        )
        .bind(meta.id.0)
        .bind(&email.template)
        .bind(&email.to)
        .bind(&meta.request_id)
        .execute(&mut *tx)
        .await?;
        tracing::info!(job = meta.id.0, template = %email.template, "e-mail sent");
        Ok(())
    }
}

/// Creates the audit log's coming monthly partitions and drops expired ones
/// (`audit.maintain`), once a day: a system job the worker enqueues from its cron schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintainAudit {}

impl JobKind for MaintainAudit {
    const KIND: &'static str = "app.maintain_audit";
    const MAX_ATTEMPTS: i32 = 5;
}

/// The [`MaintainAudit`] handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditMaintainer;

impl Handler<MaintainAudit> for AuditMaintainer {
    async fn handle(&self, tx: &mut PgConnection, _: MaintainAudit, meta: &JobMeta) -> Result<(), HandlerError> {
        // A tenant's request path may enqueue any kind: only the worker's own schedule runs it.
        if meta.tenant_id.is_some() {
            return Err(Control::Cancel("audit maintenance is a system job".into()).into());
        }
        let steps = pgstrata::audit::partitions::maintain(tx, None, None).await?;
        tracing::info!(steps = steps.len(), "audit partitions maintained");
        Ok(())
    }
}

/// The queue every job of this application goes to.
pub const QUEUE: &str = "default";

/// The worker's settings: the queue's defaults, and the daily audit maintenance (03:17 UTC).
pub fn worker_config() -> Result<WorkerConfig, ApiError> {
    let mut config = WorkerConfig::new(QUEUE);
    let maintain = Periodic::new("app.maintain_audit", "0 17 3 * * *", NewJob::of(&MaintainAudit {})?)?;
    config.periodic.push(maintain);
    Ok(config)
}

/// The worker with this application's handlers. Its pool must log in as a role granted
/// `pgstrata_worker`.
pub fn worker(pool: sqlx::PgPool, config: WorkerConfig) -> Result<Worker, ApiError> {
    Ok(Worker::new(pool, config)?
        .register::<SendEmail, _>(Mailer)
        .register::<MaintainAudit, _>(AuditMaintainer))
}
