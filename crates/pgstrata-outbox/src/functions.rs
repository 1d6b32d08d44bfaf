//! sea-query identifiers of the `outbox` schema's SQL functions, which the operations call.
//!
//! Declared with `pgstrata_core::sql_functions!`; `tests/schema.rs` checks that each one names a
//! function of the `outbox` schema.

pgstrata_core::sql_functions!(
    /// A function of the `outbox` schema, schema-qualified, for `Func::cust`.
    pub OutboxFn, "outbox" {
        Publish = "publish",
        PartitionOf = "partition_of",
        RegisterSink = "register_sink",
        Claim = "claim",
        Ack = "ack",
        Cleanup = "cleanup",
        HeldBack = "held_back",
        SinkStats = "sink_stats",
        SendWebhooks = "send_webhooks",
    }
);
