//! sea-query identifiers of the queue's SQL functions, which every operation calls.
//!
//! Codegen renders tables, not functions, so these are written here; `tests/schema.rs` checks
//! that each one names a function of the `queue` schema, so a renamed function fails a test
//! rather than a call.

use sea_query::Iden;

/// A function of the `queue` schema, schema-qualified, for `Func::cust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFn {
    Enqueue,
    EnqueueMany,
    EnqueuePeriodic,
    Claim,
    PromoteDue,
    Complete,
    CompleteMany,
    Fail,
    Snooze,
    CancelAttempt,
    Heartbeat,
    HeartbeatMany,
    Release,
    Rescue,
    Cancel,
    Retry,
    Prune,
    Stats,
}

impl QueueFn {
    /// Every function the crate calls.
    pub const ALL: &'static [QueueFn] = &[
        QueueFn::Enqueue,
        QueueFn::EnqueueMany,
        QueueFn::EnqueuePeriodic,
        QueueFn::Claim,
        QueueFn::PromoteDue,
        QueueFn::Complete,
        QueueFn::CompleteMany,
        QueueFn::Fail,
        QueueFn::Snooze,
        QueueFn::CancelAttempt,
        QueueFn::Heartbeat,
        QueueFn::HeartbeatMany,
        QueueFn::Release,
        QueueFn::Rescue,
        QueueFn::Cancel,
        QueueFn::Retry,
        QueueFn::Prune,
        QueueFn::Stats,
    ];
}

impl Iden for QueueFn {
    fn unquoted(&self) -> &str {
        match self {
            QueueFn::Enqueue => "queue.enqueue",
            QueueFn::EnqueueMany => "queue.enqueue_many",
            QueueFn::EnqueuePeriodic => "queue.enqueue_periodic",
            QueueFn::Claim => "queue.claim",
            QueueFn::PromoteDue => "queue.promote_due",
            QueueFn::Complete => "queue.complete",
            QueueFn::CompleteMany => "queue.complete_many",
            QueueFn::Fail => "queue.fail",
            QueueFn::Snooze => "queue.snooze",
            QueueFn::CancelAttempt => "queue.cancel_attempt",
            QueueFn::Heartbeat => "queue.heartbeat",
            QueueFn::HeartbeatMany => "queue.heartbeat_many",
            QueueFn::Release => "queue.release",
            QueueFn::Rescue => "queue.rescue",
            QueueFn::Cancel => "queue.cancel",
            QueueFn::Retry => "queue.retry",
            QueueFn::Prune => "queue.prune",
            QueueFn::Stats => "queue.stats",
        }
    }
}

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
