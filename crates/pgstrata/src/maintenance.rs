//! pgstrata's own periodic work as jobs of the queue: sealing the audit chain, retention,
//! partitions, pruning, each module's [`Maintenance`] list.
//!
//! A [`Worker`] [`configure`]d with them enqueues every task once per period
//! however many processes run (`queue.periodic_runs`), on the `pgstrata` queue, and runs it in
//! the job's transaction as the worker's role. `pgstrata worker` is such a worker. The same tasks
//! are in each module's `schemas/<module>/cron.sql` for pg_cron; [`overdue`] reads both and
//! tells `doctor` which task has not completed for three periods.
//!
//! ```no_run
//! # async fn start(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use pgstrata::maintenance::{self, MaintenanceJob};
//! use pgstrata::queue::{Worker, WorkerConfig};
//! let backend = pgstrata::Backend::all()?;
//! let tasks = maintenance::tasks(backend.modules(), &["pgstrata_worker"]);
//! let config = maintenance::configure(WorkerConfig::new("default"), &tasks)?;
//! let worker = Worker::new(pool, config)?.register::<MaintenanceJob, _>(maintenance::runner(&tasks));
//! worker.run(pgstrata::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

use crate::queue::worker::HandlerError;
use crate::queue::{Handler, JobKind, JobMeta, NewJob, Periodic, WorkerConfig};
use chrono::{DateTime, Duration, Utc};
use pgstrata_core::{Maintenance, Module};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// The queue the tasks run on: a slow task never waits behind the application's jobs.
pub const QUEUE: &str = "pgstrata";

/// How many missed periods make a task overdue.
pub const OVERDUE_PERIODS: usize = 3;

/// The job of one task's period: the task's name (e.g. `audit.seal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceJob {
    pub task: String,
}

impl JobKind for MaintenanceJob {
    const KIND: &'static str = "pgstrata.maintenance";
    // The next period enqueues the task again; retrying a failure for long only piles up.
    const MAX_ATTEMPTS: i32 = 3;
}

/// The tasks of `modules` that a role holding `roles` may run.
pub fn tasks(modules: &[&'static Module], roles: &[&str]) -> Vec<Maintenance> {
    modules
        .iter()
        .flat_map(|m| m.maintenance.iter().copied())
        .filter(|t| roles.contains(&t.role))
        .collect()
}

/// The schedule name of a task in `queue.periodic_runs`.
pub fn schedule_name(task: &Maintenance) -> String {
    format!("pgstrata:{}", task.name)
}

/// One [`Periodic`] per task, on [`QUEUE`].
pub fn schedules(tasks: &[Maintenance]) -> Result<Vec<Periodic>, crate::queue::Error> {
    tasks
        .iter()
        .map(|t| {
            let job = NewJob::of(&MaintenanceJob {
                task: t.name.to_owned(),
            })?
            .queue(QUEUE);
            Periodic::new(schedule_name(t), t.schedule, job)
        })
        .collect()
}

/// `config` with the tasks' schedules, and one executor on [`QUEUE`] when it does not serve it
/// yet. Register [`runner`] on the worker made from it.
pub fn configure(mut config: WorkerConfig, tasks: &[Maintenance]) -> Result<WorkerConfig, crate::queue::Error> {
    config.periodic.extend(schedules(tasks)?);
    if config.queues().iter().all(|(queue, _)| *queue != QUEUE) {
        config = config.with_queue(QUEUE, 1);
    }
    Ok(config)
}

/// The handler of [`MaintenanceJob`] for `tasks`.
pub fn runner(tasks: &[Maintenance]) -> Runner {
    Runner { tasks: tasks.to_vec() }
}

/// Runs a task's statement in the job's transaction.
#[derive(Debug, Clone)]
pub struct Runner {
    tasks: Vec<Maintenance>,
}

impl Handler<MaintenanceJob> for Runner {
    async fn handle(&self, tx: &mut PgConnection, job: MaintenanceJob, _meta: &JobMeta) -> Result<(), HandlerError> {
        let Some(task) = self.tasks.iter().find(|t| t.name == job.task) else {
            // A task another build scheduled: this one does not know its statement.
            return Err(format!("unknown maintenance task {:?}", job.task).into());
        };
        sqlx::raw_sql(task.sql).execute(tx).await?;
        Ok(())
    }
}

/// The tasks that have not completed for [`OVERDUE_PERIODS`] periods, one line each, through
/// either runner: a `pgstrata worker` (a completed job, or a pruned one, of a period since) or
/// pg_cron (a succeeded run of `pgstrata:<db>:<task>` since). A task never run says so.
/// Tasks of modules not installed in this database are left out, and all are without the queue.
pub async fn overdue(conn: &mut PgConnection, tasks: &[Maintenance]) -> Result<Vec<String>, sqlx::Error> {
    let now = Utc::now();
    let mut lines = Vec::new();
    let installed: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE to_regclass('queue.periodic_runs') IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    for task in tasks {
        if !installed
            .iter()
            .any(|schema| Some(schema.as_str()) == task.name.split('.').next())
        {
            continue;
        }
        let Some(since) = periods_back(task, now, OVERDUE_PERIODS) else {
            continue;
        };
        let (queue_last, cron_last) = last_runs(conn, task).await?;
        let last = queue_last.max(cron_last);
        if last.is_some_and(|t| t >= since) {
            continue;
        }
        lines.push(match last {
            None => format!(
                "maintenance task {} ({}) has never completed: run `pgstrata worker` as {}, or schedule schemas/{}/cron.sql",
                task.name,
                task.schedule,
                task.role,
                task.name.split('.').next().unwrap_or_default()
            ),
            Some(t) => format!(
                "maintenance task {} ({}) is overdue: last completed for the period of {t}, {} periods ago or more",
                task.name, task.schedule, OVERDUE_PERIODS
            ),
        });
    }
    Ok(lines)
}

/// The start of the period `n` fire times before `now` (the current period counts as one).
fn periods_back(task: &Maintenance, now: DateTime<Utc>, n: usize) -> Option<DateTime<Utc>> {
    let schedule = Periodic::new(
        "",
        task.schedule,
        NewJob::new(MaintenanceJob::KIND, serde_json::json!({})),
    )
    .ok()?;
    let mut at = now;
    for _ in 0..n {
        at = schedule.period_start(at)? - Duration::seconds(1);
    }
    Some(at + Duration::seconds(1))
}

/// The latest period the queue completed, and the latest pg_cron success (when pg_cron is
/// installed and this role may read its jobs).
async fn last_runs(
    conn: &mut PgConnection,
    task: &Maintenance,
) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), sqlx::Error> {
    let queue_last: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(r.period_start) FROM queue.periodic_runs r
           LEFT JOIN queue.jobs j ON j.id = r.job_id
          WHERE r.name = $1 AND r.job_id IS NOT NULL AND (j.id IS NULL OR j.state = 'completed')",
    )
    .bind(schedule_name(task))
    .fetch_one(&mut *conn)
    .await?;
    let has_cron: bool = sqlx::query_scalar(
        "SELECT CASE WHEN to_regclass('cron.job_run_details') IS NULL THEN false
                     ELSE has_table_privilege('cron.job_run_details', 'SELECT')
                          AND has_table_privilege('cron.job', 'SELECT') END",
    )
    .fetch_one(&mut *conn)
    .await?;
    let cron_last = if has_cron {
        sqlx::query_scalar(
            "SELECT max(d.start_time) FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
              WHERE j.jobname = 'pgstrata:' || current_database() || ':' || $1 AND d.status = 'succeeded'",
        )
        .bind(task.name)
        .fetch_one(&mut *conn)
        .await?
    } else {
        None
    };
    Ok((queue_last, cron_last))
}
