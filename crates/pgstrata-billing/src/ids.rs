//! The billing module's states, as the CHECK constraints of its tables list them, and the
//! outcome `billing.process_event` reports. Keys stay `String`: every one of them (`cus_...`,
//! `sub_...`, `evt_...`) is assigned by Stripe.
//!
//! Each column is typed with its enum in the generated rows ([`MODULE`](crate::MODULE)'s
//! `column_types`).

pgstrata_core::text_enum!(
    /// Where a Stripe event stands in the ledger (`billing.events.status`).
    EventStatus, "ledger event status" {
        /// Applied to the mirror, or stale (the mirror already held a greater state).
        Processed = "processed",
        /// A type the mirror does not handle.
        Ignored = "ignored",
        /// Its customer is not linked to a tenant yet: applied when it is.
        Deferred = "deferred",
        /// Applying raised an error (see the event's `error`): retried when Stripe delivers it
        /// again or by `retry_failed`.
        Failed = "failed",
        /// A state the mirror does not take (see the event's `error`): never retried.
        Rejected = "rejected",
    }
);

pgstrata_core::text_enum!(
    /// What happened to one delivered event: the ledger status it leaves, told apart where the
    /// caller acts differently (applied or stale, a duplicate delivery).
    /// [`Outcome::ledger_status`] maps it to the [`EventStatus`] it records.
    Outcome, "event outcome" {
        /// The event's object state is now mirrored.
        Applied = "applied",
        /// The mirror already holds a greater state of the object (a late event); recorded, no
        /// change.
        Stale = "stale",
        /// The event id was processed before: nothing done.
        Duplicate = "duplicate",
        /// A type the mirror does not handle; recorded in the ledger.
        Ignored = "ignored",
        /// The event's customer is not linked to a tenant yet; kept in the ledger and applied
        /// when the customer is linked (by its or a checkout session's metadata, or by
        /// [`link_customer`](crate::link_customer)).
        Deferred = "deferred",
        /// Applying raised an error, recorded on the ledger row; delivering the event again (or
        /// `billing.retry_failed()`) retries it. Answer Stripe with a 5xx so that it redelivers.
        Failed = "failed",
        /// A state the mirror does not take (a period ending before it starts, a live
        /// subscription that has ended, an object naming no customer): recorded with the reason
        /// in `error`, never applied. Delivering it again changes nothing, so answer Stripe with
        /// a 2xx.
        Rejected = "rejected",
    }
);

impl Outcome {
    /// Whether Stripe should be told to deliver the event again (HTTP 5xx).
    pub fn should_retry(self) -> bool {
        self == Outcome::Failed
    }

    /// The ledger status the event has after this outcome; `None` for a duplicate, which
    /// leaves the status the first delivery recorded.
    ///
    /// ```
    /// use pgstrata_billing::{EventStatus, Outcome};
    /// assert_eq!(Outcome::Stale.ledger_status(), Some(EventStatus::Processed));
    /// assert_eq!(Outcome::Rejected.ledger_status(), Some(EventStatus::Rejected));
    /// assert_eq!(Outcome::Duplicate.ledger_status(), None);
    /// ```
    pub fn ledger_status(self) -> Option<EventStatus> {
        Some(match self {
            Outcome::Applied | Outcome::Stale => EventStatus::Processed,
            Outcome::Duplicate => return None,
            Outcome::Ignored => EventStatus::Ignored,
            Outcome::Deferred => EventStatus::Deferred,
            Outcome::Failed => EventStatus::Failed,
            Outcome::Rejected => EventStatus::Rejected,
        })
    }
}

pgstrata_core::text_enum!(
    /// How a Stripe customer was linked to its tenant (`billing.customer_links.source`).
    LinkSource, "customer link source" {
        /// The customer's own `metadata.tenant_id`, in a verified webhook.
        Metadata = "metadata",
        /// A completed checkout session's `metadata.tenant_id` or `client_reference_id`, in a
        /// verified webhook.
        Checkout = "checkout",
        /// The sync role's [`link_customer`](crate::link_customer).
        Sync = "sync",
        /// Linked before billing V2 by the tenant in context, unverified: never made again,
        /// reported by the V2 migration: check them against Stripe.
        Explicit = "explicit",
    }
);

pgstrata_core::text_enum!(
    /// A Stripe subscription's status (`billing.subscriptions.status`).
    SubscriptionStatus, "subscription status" {
        Incomplete = "incomplete",
        IncompleteExpired = "incomplete_expired",
        Trialing = "trialing",
        Active = "active",
        PastDue = "past_due",
        Canceled = "canceled",
        Unpaid = "unpaid",
        Paused = "paused",
    }
);

pgstrata_core::text_enum!(
    /// A Stripe invoice's status (`billing.invoices.status`).
    InvoiceStatus, "invoice status" {
        Draft = "draft",
        Open = "open",
        Paid = "paid",
        Uncollectible = "uncollectible",
        Void = "void",
    }
);

pgstrata_core::text_enum!(
    /// A Stripe list the backfill reads (`billing.backfill_cursors.resource`), in the order it
    /// reads them by default: parents first (a subscription's customer and prices before it).
    BackfillResource, "backfill resource" {
        Products = "products",
        Prices = "prices",
        Customers = "customers",
        Subscriptions = "subscriptions",
        Invoices = "invoices",
    }
);

impl BackfillResource {
    /// The object kind its objects are applied as, and the event type of the synthetic event
    /// that carries each one.
    pub fn kind(self) -> (&'static str, &'static str) {
        match self {
            BackfillResource::Products => ("product", "product.updated"),
            BackfillResource::Prices => ("price", "price.updated"),
            BackfillResource::Customers => ("customer", "customer.updated"),
            BackfillResource::Subscriptions => ("subscription", "customer.subscription.updated"),
            BackfillResource::Invoices => ("invoice", "invoice.updated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outcomes and ledger statuses share their words wherever they mean the same, and every
    /// status is the record of some outcome.
    #[test]
    fn outcomes_and_ledger_statuses_agree() {
        for outcome in Outcome::ALL {
            if let Some(status) = outcome.ledger_status()
                && !matches!(outcome, Outcome::Applied | Outcome::Stale)
            {
                assert_eq!(outcome.as_str(), status.as_str());
            }
        }
        for status in EventStatus::ALL {
            assert!(
                Outcome::ALL.iter().any(|o| o.ledger_status() == Some(*status)),
                "{status} is no outcome's status"
            );
        }
    }

    /// The words are the CHECK constraints' (V1, V4), in the migrations' own text. The
    /// ledger's status lost its CHECK in V6: its words are those `billing.ledger_status` maps
    /// the outcomes to, every one of them and no other.
    #[test]
    fn the_words_are_the_check_constraints() {
        let v1 = include_str!("../../../migrations/billing/V1__billing.sql");
        let v2 = include_str!("../../../migrations/billing/V2__hardening.sql");
        let v4 = include_str!("../../../migrations/billing/V4__current_shapes.sql");
        let v6 = include_str!("../../../migrations/billing/V6__webhook_throughput.sql");
        let list = |words: &[&str]| words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(", ");
        assert!(v4.contains(&format!("CHECK (status IN ({}))", list(EventStatus::WORDS))));
        let ledger_status = v6
            .split("CREATE FUNCTION billing.ledger_status")
            .nth(1)
            .and_then(|f| f.split("$$").nth(1))
            .unwrap();
        let mut mapped: Vec<&str> = ledger_status
            .split("THEN '")
            .skip(1)
            .filter_map(|t| t.split('\'').next())
            .collect();
        mapped.sort_unstable();
        mapped.dedup();
        let mut words = EventStatus::WORDS.to_vec();
        words.sort_unstable();
        assert_eq!(mapped, words);
        for outcome in Outcome::ALL {
            if let Some(status) = outcome.ledger_status() {
                assert!(
                    ledger_status.contains(&format!("WHEN '{outcome}' THEN '{status}'")),
                    "{outcome} -> {status}"
                );
            }
        }
        assert!(v2.contains(&format!("CHECK (source IN ({}))", list(LinkSource::WORDS))));
        assert!(v1.contains(&format!("CHECK (status IN ({}))", list(InvoiceStatus::WORDS))));
        assert!(v4.contains(&format!("CHECK (resource IN ({}))", list(BackfillResource::WORDS))));
        let subscription = list(SubscriptionStatus::WORDS);
        let v1_flat = v1.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            v1_flat.contains(&format!("CHECK (status IN ({subscription}))")),
            "{subscription}"
        );
    }
}
