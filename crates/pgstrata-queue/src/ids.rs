//! The queue's keys and states, as codegen types `queue.jobs` and `queue.periodic_runs` with
//! them (see [`crate::MODULE`]'s `column_types`).

use serde::{Deserialize, Serialize};

/// The id of a job: `queue.jobs.id`, a `bigint` identity (a queue appends millions of rows, and
/// claims walk the id order), so a newtype over `i64` rather than a [`pgstrata_core::uuid_id!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i64> for JobId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl From<JobId> for sea_query::Value {
    fn from(id: JobId) -> Self {
        id.0.into()
    }
}

pgstrata_core::text_enum!(
    /// Where a job is in its life (`queue.jobs.state`).
    ///
    /// `Available` and `Scheduled` wait to be claimed (`Scheduled` until its `run_at`), `Running`
    /// is held by a worker's claim, `Retryable` waits for its next attempt; `Completed`,
    /// `Discarded` (out of attempts) and `Cancelled` are final until an operator retries a
    /// discarded or cancelled one.
    JobState, "job state" {
        Available = "available",
        Scheduled = "scheduled",
        Running = "running",
        Retryable = "retryable",
        Completed = "completed",
        Discarded = "discarded",
        Cancelled = "cancelled",
    }
);

impl JobState {
    /// Whether the job is done (completed, discarded or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Completed | JobState::Discarded | JobState::Cancelled)
    }
}
