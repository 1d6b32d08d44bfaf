//! sea-query identifiers of the queue's SQL functions, which every operation calls.
//!
//! Codegen renders tables, not functions, so these are written here; `tests/schema.rs` checks
//! that each one names a function of the `queue` schema, so a renamed function fails a test
//! rather than a call.

use sea_query::Iden;

pgstrata_core::sql_functions!(
    /// A function of the `queue` schema, schema-qualified, for `Func::cust`.
    pub QueueFn, "queue" {
        Enqueue = "enqueue",
        EnqueueMany = "enqueue_many",
        EnqueuePeriodic = "enqueue_periodic",
        Claim = "claim",
        PromoteDue = "promote_due",
        Complete = "complete",
        CompleteMany = "complete_many",
        Fail = "fail",
        Snooze = "snooze",
        CancelAttempt = "cancel_attempt",
        Heartbeat = "heartbeat",
        HeartbeatMany = "heartbeat_many",
        Release = "release",
        Rescue = "rescue",
        Cancel = "cancel",
        Retry = "retry",
        Prune = "prune",
        Stats = "stats",
        Metrics = "metrics",
    }
);

/// The rows of `queue.stats()` (and the alias the call is given), for sea-query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsRow {
    Table,
    Queue,
    State,
    Jobs,
    OldestAvailableAge,
    /// Not a column of the function: the alias of its age in seconds.
    OldestAvailableSecs,
}

impl Iden for StatsRow {
    fn unquoted(&self) -> &str {
        match self {
            StatsRow::Table => "stats",
            StatsRow::Queue => "queue",
            StatsRow::State => "state",
            StatsRow::Jobs => "jobs",
            StatsRow::OldestAvailableAge => "oldest_available_age",
            StatsRow::OldestAvailableSecs => "oldest_available_secs",
        }
    }
}

/// The rows of `queue.metrics()` (and the alias the call is given), for sea-query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRow {
    Table,
    Queue,
    Available,
    Scheduled,
    Running,
    Retryable,
    OldestAvailableAge,
    Completed,
    Discarded,
    Cancelled,
    /// Not a column of the function: the alias of its age in seconds.
    OldestAvailableSecs,
}

impl Iden for MetricsRow {
    fn unquoted(&self) -> &str {
        match self {
            MetricsRow::Table => "metrics",
            MetricsRow::Queue => "queue",
            MetricsRow::Available => "available",
            MetricsRow::Scheduled => "scheduled",
            MetricsRow::Running => "running",
            MetricsRow::Retryable => "retryable",
            MetricsRow::OldestAvailableAge => "oldest_available_age",
            MetricsRow::Completed => "completed",
            MetricsRow::Discarded => "discarded",
            MetricsRow::Cancelled => "cancelled",
            MetricsRow::OldestAvailableSecs => "oldest_available_secs",
        }
    }
}

/// The built-in functions the builders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    DatePart,
}

impl Iden for Builtin {
    fn unquoted(&self) -> &str {
        match self {
            Builtin::DatePart => "pg_catalog.date_part",
        }
    }
}
