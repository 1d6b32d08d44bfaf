//! The loops that run beside the HTTP server in the same binary: the queue worker (jobs and
//! their cron schedules) and the audit sealer (chains committed audit records). Both stop when
//! the [`CancellationToken`] is cancelled; the worker first lets running jobs finish within its
//! `shutdown_timeout`.

use crate::error::ApiError;
use pgstrata::audit::{Sealer, SealerConfig};
use pgstrata::queue::WorkerConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How the background loops run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub worker: WorkerConfig,
    pub sealer: SealerConfig,
}

impl Settings {
    /// The queue's and the sealer's defaults, with this application's schedules.
    pub fn new() -> Result<Self, ApiError> {
        Ok(Self {
            worker: crate::jobs::worker_config()?,
            sealer: SealerConfig::default(),
        })
    }
}

/// Runs the worker and the sealer on `pool` (a role granted `pgstrata_worker`) until `stop` is
/// cancelled. Returns an error only when the worker cannot run at all (its role does not hold
/// `pgstrata_worker`); `stop` is then cancelled too, so the sealer ends with it.
pub async fn run(pool: PgPool, settings: Settings, stop: CancellationToken) -> Result<(), ApiError> {
    let worker = crate::jobs::worker(pool.clone(), settings.worker)?;
    let work = async {
        let done = worker.run(stop.clone()).await;
        if let Err(e) = &done {
            tracing::error!(error = %e, "queue worker cannot run");
            stop.cancel();
        }
        done
    };
    // A failed round is logged by the sealer itself and retried at the next interval.
    let seal = Sealer::new(pool, settings.sealer).run(stop.clone());
    let (worked, sealed) = tokio::join!(work, seal);
    tracing::info!(
        sealed = sealed.sealed,
        failed_rounds = sealed.failed_rounds,
        "background loops stopped"
    );
    Ok(worked?)
}
