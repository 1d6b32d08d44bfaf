//! Sinks the crate ships. An in-process handler is any [`crate::Sink`] implementation: it
//! writes through the relay's transaction, so its effects commit with the checkpoint.
//!
//! - `QueueSink` (feature `queue`): one job of the queue module per message, exactly once.
//! - `WebhooksSink` (feature `webhooks`): one webhook of the webhooks module per message,
//!   for the message's tenant, exactly once.
//! - `HttpSink` (feature `http`): each message POSTed to a URL, at least once, with its id
//!   as the `Idempotency-Key`.

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub use http::{HttpSink, HttpSinkConfig, IDEMPOTENCY_KEY};
#[cfg(feature = "queue")]
pub use queue::QueueSink;
#[cfg(feature = "webhooks")]
pub use webhooks::{WebhookMapper, WebhooksSink, send_webhooks_stmt};

#[cfg(feature = "queue")]
mod queue {
    use crate::error::SinkError;
    use crate::relay::{Message, Sink};
    use pgstrata_core::begin_tenant;
    use pgstrata_queue::NewJob;
    use sqlx::PgConnection;

    /// Turns each message into one job of the queue module, enqueued in the relay's
    /// transaction for the message's tenant: exactly one job per message (the job and the
    /// checkpoint commit together). The job's payload is the [`Message`] as JSON.
    #[derive(Debug, Clone)]
    pub struct QueueSink {
        name: String,
        kind: String,
        queue: String,
    }

    impl QueueSink {
        /// A sink named `name` enqueuing jobs of `kind` on the `default` queue.
        pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
            Self {
                name: name.into(),
                kind: kind.into(),
                queue: "default".into(),
            }
        }

        /// The queue the jobs go to.
        pub fn queue(mut self, queue: impl Into<String>) -> Self {
            self.queue = queue.into();
            self
        }
    }

    impl Sink for QueueSink {
        fn name(&self) -> &str {
            &self.name
        }

        async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
            // One tenant transaction (a savepoint) per run of one tenant's messages.
            for run in batch.chunk_by(|a, b| a.tenant_id == b.tenant_id) {
                let mut jobs = Vec::with_capacity(run.len());
                for m in run {
                    jobs.push(NewJob::new(self.kind.clone(), serde_json::to_value(m)?).queue(self.queue.clone()));
                }
                let mut tx = begin_tenant(&mut *conn, &run[0].context()).await?;
                pgstrata_queue::client::enqueue_many(&mut tx, &jobs).await?;
                tx.commit().await?;
            }
            Ok(())
        }
    }
}

#[cfg(feature = "webhooks")]
mod webhooks {
    use crate::error::SinkError;
    use crate::functions::OutboxFn;
    use crate::relay::{Message, Sink};
    use pgstrata_core::begin_tenant;
    use pgstrata_core::sql::{self, Built};
    use pgstrata_webhooks::NewMessage;
    use sea_query::{Expr, ExprTrait as _, Func, Query};
    use sqlx::PgConnection;

    /// Turns an outbox message into the webhook to send, or `None` to send nothing for it.
    pub type WebhookMapper = dyn Fn(&Message) -> Option<NewMessage> + Send + Sync;

    /// Sends each message as a webhook of the webhooks module (`webhooks.send`) for the
    /// message's tenant, in the relay's transaction: the webhook is queued for the tenant's
    /// matching endpoints exactly when the checkpoint moves past the message (D-220).
    ///
    /// By default the webhook's event type is the message's `event_type` and its payload the
    /// message's `payload` (as compact JSON); [`WebhooksSink::map`] replaces that. Each webhook
    /// carries the idempotency key `outbox:<message id>`, so a message handed over twice (a
    /// checkpoint moved back by hand, two sinks forwarding the same messages) is one webhook.
    /// A message the webhooks module refuses (an event type that is not dotted segments of
    /// letters, digits, `_` and `-`; a payload over its limit) fails its partition, which is
    /// tried again later: map such messages to valid ones or to `None`.
    pub struct WebhooksSink {
        name: String,
        mapper: Box<WebhookMapper>,
    }

    impl std::fmt::Debug for WebhooksSink {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("WebhooksSink")
                .field("name", &self.name)
                .finish_non_exhaustive()
        }
    }

    impl WebhooksSink {
        /// A sink named `name` sending each message as the webhook of the same event type and
        /// payload.
        pub fn new(name: impl Into<String>) -> Self {
            Self {
                name: name.into(),
                mapper: Box::new(|m: &Message| Some(Self::default_webhook(m))),
            }
        }

        /// The webhook a message becomes by default: its event type and payload.
        pub fn default_webhook(message: &Message) -> NewMessage {
            NewMessage::raw(message.event_type.clone(), message.payload.to_string().into_bytes())
        }

        /// Replaces how a message becomes a webhook (`None`: send nothing for it).
        pub fn map(mut self, mapper: impl Fn(&Message) -> Option<NewMessage> + Send + Sync + 'static) -> Self {
            self.mapper = Box::new(mapper);
            self
        }

        /// The webhooks of one tenant's run of messages, checked as `webhooks.send` checks
        /// them; the idempotency key is always the message's.
        fn webhooks(&self, run: &[Message]) -> Result<Vec<NewMessage>, SinkError> {
            let mut out = Vec::with_capacity(run.len());
            for m in run {
                let Some(w) = (self.mapper)(m) else { continue };
                let w = w.idempotency_key(format!("outbox:{}", m.id));
                w.validate()
                    .map_err(|e| format!("outbox message {} cannot be a webhook: {e}", m.id))?;
                out.push(w);
            }
            Ok(out)
        }
    }

    /// The statement of the webhooks sink: `outbox.send_webhooks` of the webhooks' event types,
    /// payloads and idempotency keys, for the tenant in context.
    ///
    /// ```
    /// use pgstrata_webhooks::NewMessage;
    /// let (sql, _) = pgstrata_outbox::sink::send_webhooks_stmt(&[NewMessage::raw("order.placed", b"{}".to_vec())]);
    /// assert_eq!(sql, "SELECT outbox.send_webhooks($1, CAST($2 AS bytea[]), $3)");
    /// ```
    pub fn send_webhooks_stmt(webhooks: &[NewMessage]) -> Built {
        let types: Vec<String> = webhooks.iter().map(|w| w.event_type.clone()).collect();
        let payloads: Vec<Vec<u8>> = webhooks.iter().map(|w| w.payload.clone()).collect();
        let keys: Vec<String> = webhooks
            .iter()
            .map(|w| w.idempotency_key.clone().unwrap_or_default())
            .collect();
        sql::build(Query::select().expr(Func::cust(OutboxFn::SendWebhooks).args([
            Expr::val(types),
            Expr::val(payloads).cast_as("bytea[]"),
            Expr::val(keys),
        ])))
    }

    impl Sink for WebhooksSink {
        fn name(&self) -> &str {
            &self.name
        }

        async fn deliver(&self, conn: &mut PgConnection, batch: &[Message]) -> Result<(), SinkError> {
            // One tenant transaction (a savepoint) per run of one tenant's messages.
            for run in batch.chunk_by(|a, b| a.tenant_id == b.tenant_id) {
                let webhooks = self.webhooks(run)?;
                if webhooks.is_empty() {
                    continue;
                }
                let mut tx = begin_tenant(&mut *conn, &run[0].context()).await?;
                sql::query(send_webhooks_stmt(&webhooks)).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Ok(())
        }
    }
}
