//! pgstrata-queue: a job queue in PostgreSQL (schema `queue`).
//!
//! [`client::enqueue`] in the business transaction (the tenant's [`pgstrata_core::TenantTx`]:
//! the job belongs to its tenant); a [`worker::Worker`] claims jobs in
//! batches with `FOR UPDATE SKIP LOCKED`, runs each handler in a transaction that also marks the
//! job completed (so the handler's database effects and the completion commit together), keeps
//! the lease alive with heartbeats, retries failures with exponential backoff and jitter, and
//! rescues jobs whose worker died. Every transition is a SQL function that names the state and
//! attempt it expects, so a stale worker changes nothing.
//!
//! # Roles
//!
//! The request path (a login role holding `pgstrata_app`, in a `begin_tenant` transaction)
//! enqueues, reads, cancels and retries only the jobs of the tenant in its context: the tenant
//! comes from the context, and naming another is refused. Forced row-level security enforces
//! it, so jobs of other tenants and jobs without a tenant are invisible to it. Claiming,
//! completing, failing, heartbeating, rescuing, promoting, pruning and cron belong to
//! `pgstrata_worker`: the [`Worker`]'s pool must log in as a role that holds it (and that the
//! request path does not hold). SECURITY.md lists what each role may do.
//!
//! # The module contract
//!
//! - Tenant jobs are enqueued in a `&mut TenantTx` ([`client::enqueue`],
//!   [`client::enqueue_many`]), system jobs on a `&mut PgConnection`
//!   ([`client::enqueue_system`]); the other operations take a connection, and the database's
//!   policies decide which jobs the caller's role sees.
//! - Keys and states are typed ([`JobId`], [`JobState`]), in the generated [`Job`] row too.
//! - [`client::get`] returns `Option<Job>`; [`client::cancel`] and [`client::retry`] return
//!   [`Error::NotFound`] or [`Error::Gone`] when they change nothing. The worker's transitions
//!   guarded by an attempt ([`client::complete`], [`client::fail`], [`client::heartbeat`],
//!   [`client::snooze`], [`client::release`], [`client::cancel_attempt`]) return whether the job
//!   was still that attempt's.
//! - Each operation's statement is rendered by a pure `<operation>_stmt` builder.
//! - [`Worker::run`] stops on a [`pgstrata_core::CancellationToken`].

pub mod client;
pub mod error;
pub mod functions;
pub mod generated;
pub mod ids;
pub mod inspect;
pub mod periodic;
pub mod worker;

pub use client::NewJob;
pub use error::{Error, Result};
pub use generated::Job;
pub use ids::{JobId, JobState};
pub use inspect::{JobFilter, QueueMetrics};
pub use periodic::Periodic;
pub use worker::{Handler, JobKind, JobMeta, Worker, WorkerConfig};

use pgstrata_core::migrate::{Maintenance, Module};

/// The queue module: schema `queue`, depends on `tenancy` (its application role and the tenant
/// context handlers run in).
pub static MODULE: Module = Module {
    name: "queue",
    depends_on: &["tenancy"],
    after_migrate: None,
    column_types: &[
        ("jobs.id", "crate::ids::JobId"),
        ("jobs.state", "crate::ids::JobState"),
        ("jobs.actor_id", "pgstrata_core::UserId"),
        ("periodic_runs.job_id", "crate::ids::JobId"),
    ],
    migrations: &[
        pgstrata_core::migration!("queue", 1, "queue"),
        pgstrata_core::migration!("queue", 2, "cheaper_per_job"),
        pgstrata_core::migration!("queue", 3, "hardening"),
        pgstrata_core::migration!("queue", 4, "job_control"),
        pgstrata_core::migration!("queue", 5, "operations"),
        pgstrata_core::migration!("queue", 6, "cheap_stats"),
    ],
    seed: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/seed.sql")),
    maintenance: &[
        Maintenance {
            name: "queue.promote_due",
            schedule: "* * * * *",
            sql: "SELECT queue.promote_due()",
            role: "pgstrata_worker",
        },
        Maintenance {
            name: "queue.rescue",
            schedule: "* * * * *",
            sql: "SELECT queue.rescue()",
            role: "pgstrata_worker",
        },
        Maintenance {
            name: "queue.prune",
            schedule: "17 * * * *",
            sql: "SELECT queue.prune()",
            role: "pgstrata_worker",
        },
    ],
};
