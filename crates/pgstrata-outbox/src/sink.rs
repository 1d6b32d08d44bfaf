//! Sinks the crate ships. An in-process handler is any [`crate::Sink`] implementation: it
//! writes through the relay's transaction, so its effects commit with the checkpoint.

#[cfg(feature = "queue")]
pub use queue::QueueSink;

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
