//! sea-query identifiers of the `webhooks` schema's SQL functions, which the operations call.
//!
//! Declared with `pgstrata_core::sql_functions!`; `tests/schema.rs` checks that each one names a
//! function of the `webhooks` schema.

pgstrata_core::sql_functions!(
    /// A function of the `webhooks` schema, schema-qualified, for `Func::cust`.
    pub WebhooksFn, "webhooks" {
        Send = "send",
        RotateSecret = "rotate_secret",
        Replay = "replay",
        ReplayFailed = "replay_failed",
        Erase = "erase",
        Claim = "claim",
        Complete = "complete",
        CompleteMany = "complete_many",
        Prune = "prune",
    }
);
