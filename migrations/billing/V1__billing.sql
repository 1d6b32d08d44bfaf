-- billing V1: a mirror of Stripe's customers, products, prices, subscriptions, subscription
-- items, invoices and active entitlements that no duplicate, late or out-of-order webhook can
-- corrupt.
--
-- Stripe delivers events at least once, in no particular order, with `created` in whole seconds.
-- So, all enforced here rather than in the Rust crate:
--   * the event ledger (billing.events) is keyed by the Stripe event id and claimed in the same
--     transaction that applies the event: a duplicate is a reported no-op;
--   * every mirrored row carries the key of the last state applied to it,
--       (terminal, last_event_created, state_rank, last_event_id),
--     and a state replaces it only when its key is greater (billing.refuse_stale() also refuses
--     any other writer that tries). Same-second ties are decided by state_rank (the lifecycle's
--     order, so a state further along wins) and then by the event id; terminal states (deleted
--     objects, canceled or expired subscriptions) outrank every live state, so a stale event can
--     never bring them back. The order is total, so the mirror ends the same whatever the order
--     of delivery;
--   * an object whose parent has not arrived yet creates the parent as a placeholder whose key is
--     below every real state (no "updated before created" stuck rows).
--
-- Tenancy: customers, subscriptions, items, invoices and entitlements are tenant tables under
-- forced RLS. A Stripe customer is linked to a tenant by its metadata (`tenant_id`) or by
-- billing.link_customer(); events of a customer not linked yet are kept in the ledger as
-- `deferred` and applied when the link appears. Products, prices and plan features are global.
-- Webhook processing runs before any tenant is known, through SECURITY DEFINER functions that
-- only the role pgstrata_billing_sync may execute; they set the resolved tenant in the
-- transaction-local context before writing, so the tenant policies hold on that path too.

CREATE SCHEMA IF NOT EXISTS billing;
COMMENT ON SCHEMA billing IS 'pgstrata billing: a Stripe mirror (ledger, guarded objects, entitlements) and access rules';
GRANT USAGE ON SCHEMA billing TO pgstrata_app;

-- The role of the webhook path. Cluster-wide like pgstrata_app, hence the exception handler.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgstrata_billing_sync') THEN
        CREATE ROLE pgstrata_billing_sync NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA billing TO pgstrata_billing_sync;

-- ---------------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------------

-- Stripe timestamps are Unix seconds; absent or null fields stay NULL.
CREATE FUNCTION billing.ts(p_value jsonb) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN jsonb_typeof(p_value) = 'number' THEN to_timestamp((p_value #>> '{}')::double precision) END
$$;

-- A reference to another object is its id, or the object itself when the event expanded it.
CREATE FUNCTION billing.ref(p_value jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE jsonb_typeof(p_value) WHEN 'string' THEN p_value #>> '{}' WHEN 'object' THEN p_value ->> 'id' END
$$;

-- The same-second tie order of a state: further along the lifecycle ranks higher, a deletion
-- highest. Documented in DECISIONS.md (D-027).
CREATE FUNCTION billing.state_rank(p_kind text, p_status text, p_deleted boolean) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT (CASE
        WHEN p_deleted THEN 9
        WHEN p_kind = 'subscription' THEN
            CASE p_status WHEN 'incomplete' THEN 1 WHEN 'trialing' THEN 2 WHEN 'active' THEN 3
                          WHEN 'past_due' THEN 4 WHEN 'unpaid' THEN 5 WHEN 'paused' THEN 5
                          WHEN 'canceled' THEN 6 WHEN 'incomplete_expired' THEN 6 ELSE 0 END
        WHEN p_kind = 'invoice' THEN
            CASE p_status WHEN 'draft' THEN 1 WHEN 'open' THEN 2 WHEN 'uncollectible' THEN 3
                          WHEN 'void' THEN 4 WHEN 'paid' THEN 5 ELSE 0 END
        ELSE 0 END)::smallint
$$;

-- Refuses an UPDATE that would replace a mirrored row's state with an older one, whoever runs
-- it. billing's own upserts never get here (their WHERE skips stale states); this guards the
-- mirror against any other writer.
CREATE FUNCTION billing.refuse_stale() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF (NEW.terminal, NEW.last_event_created, NEW.state_rank, NEW.last_event_id)
       < (OLD.terminal, OLD.last_event_created, OLD.state_rank, OLD.last_event_id) THEN
        RAISE EXCEPTION 'refusing to replace the state of %.% % from event % (%) with an older one from event % (%)',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, OLD.id, OLD.last_event_id, OLD.last_event_created,
                NEW.last_event_id, NEW.last_event_created
            USING ERRCODE = 'PS409',
                  HINT = 'Mirrored rows only move forward: apply Stripe events with billing.process_event().';
    END IF;
    NEW.synced_at := now();
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- The event ledger (global: events arrive before their tenant is known; only the sync role
-- reads it, through the functions below).
-- ---------------------------------------------------------------------------------------------

CREATE TABLE billing.events (
    id            text        NOT NULL,
    type          text        NOT NULL,
    created       timestamptz NOT NULL,
    api_version   text,
    livemode      boolean     NOT NULL DEFAULT false,
    -- processed: applied (or stale: an older state the mirror already moved past);
    -- ignored: a type the mirror does not handle; deferred: the customer has no tenant yet;
    -- failed: applying raised an error (see error), retried when Stripe delivers it again.
    status        text        NOT NULL,
    object_type   text,
    object_id     text,
    customer_id   text,
    tenant_id     uuid,
    -- Whether the event met a state of the same second (decided by the tie rule).
    tie           boolean     NOT NULL DEFAULT false,
    attempts      integer     NOT NULL DEFAULT 1,
    error         text,
    -- The event as received, so a deferred or failed event can be applied later.
    payload       jsonb       NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    CONSTRAINT events_pkey PRIMARY KEY (id),
    CONSTRAINT events_status_valid CHECK (status IN ('processed', 'ignored', 'deferred', 'failed')),
    CONSTRAINT events_error_iff_failed CHECK ((status = 'failed') = (error IS NOT NULL)),
    CONSTRAINT events_processed_at CHECK ((status IN ('processed', 'ignored')) = (processed_at IS NOT NULL))
);
COMMENT ON TABLE billing.events IS 'Ledger of Stripe events: one row per event id, claimed in the transaction that applies it';

-- Deferred events are replayed when their customer is linked to a tenant.
CREATE INDEX events_deferred_idx ON billing.events (customer_id, created, id) WHERE status = 'deferred';
-- Operators list failures to retry them.
CREATE INDEX events_failed_idx ON billing.events (received_at) WHERE status = 'failed';

-- Which tenant a Stripe customer belongs to. Global, because the webhook path must find the
-- tenant before it can enter it; tenant_id is NULL for a customer seen but not linked yet.
-- A link never moves to another tenant (billing.link() refuses).
CREATE TABLE billing.customer_links (
    customer_id  text        NOT NULL,
    tenant_id    uuid,
    source       text,
    linked_at    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_links_pkey PRIMARY KEY (customer_id),
    CONSTRAINT customer_links_source_valid CHECK (source IN ('metadata', 'explicit')),
    CONSTRAINT customer_links_linked CHECK ((tenant_id IS NULL) = (source IS NULL) AND (tenant_id IS NULL) = (linked_at IS NULL))
);
COMMENT ON TABLE billing.customer_links IS 'Stripe customer to tenant; NULL tenant until linked by metadata.tenant_id or billing.link_customer()';

-- ---------------------------------------------------------------------------------------------
-- Global catalog: products, prices, and which features a product grants.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE billing.products (
    id                  text        NOT NULL,
    name                text,
    active              boolean,
    description         text,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    deleted             boolean     NOT NULL DEFAULT false,
    object              jsonb,
    terminal            boolean     NOT NULL DEFAULT false,
    state_rank          smallint    NOT NULL DEFAULT 0,
    last_event_created  timestamptz NOT NULL DEFAULT '-infinity',
    last_event_id       text        NOT NULL DEFAULT '',
    synced_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE billing.products IS 'Stripe products; a row with last_event_id = '''' is a placeholder created by a price that arrived first';

CREATE TABLE billing.prices (
    id                  text        NOT NULL,
    product_id          text        NOT NULL,
    active              boolean,
    currency            text,
    unit_amount         bigint,
    type                text,
    recurring_interval  text,
    interval_count      integer,
    lookup_key          text,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    deleted             boolean     NOT NULL DEFAULT false,
    object              jsonb,
    terminal            boolean     NOT NULL DEFAULT false,
    state_rank          smallint    NOT NULL DEFAULT 0,
    last_event_created  timestamptz NOT NULL DEFAULT '-infinity',
    last_event_id       text        NOT NULL DEFAULT '',
    synced_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT prices_pkey PRIMARY KEY (id),
    CONSTRAINT prices_product_fkey FOREIGN KEY (product_id) REFERENCES billing.products (id)
);
CREATE INDEX prices_product_idx ON billing.prices (product_id);

-- Features a product grants while a subscription to it has access (the fallback when Stripe
-- sends no entitlement summaries). Maintained by the application's owner, like any catalog.
CREATE TABLE billing.plan_features (
    product_id  text NOT NULL,
    feature     text NOT NULL,
    CONSTRAINT plan_features_pkey PRIMARY KEY (product_id, feature),
    CONSTRAINT plan_features_feature_format CHECK (length(feature) BETWEEN 1 AND 200)
);
COMMENT ON TABLE billing.plan_features IS 'Feature lookup keys granted by a Stripe product to subscriptions that have access';

GRANT SELECT ON billing.products, billing.prices, billing.plan_features TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Tenant tables: forced, fail-closed RLS; tenant-led keys.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE billing.customers (
    tenant_id           uuid        NOT NULL,
    id                  text        NOT NULL,
    email               text,
    name                text,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    deleted             boolean     NOT NULL DEFAULT false,
    object              jsonb,
    terminal            boolean     NOT NULL DEFAULT false,
    state_rank          smallint    NOT NULL DEFAULT 0,
    last_event_created  timestamptz NOT NULL DEFAULT '-infinity',
    last_event_id       text        NOT NULL DEFAULT '',
    synced_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customers_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT customers_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenancy.tenants (id)
);
COMMENT ON TABLE billing.customers IS 'Stripe customers of a tenant; last_event_id = '''' marks a placeholder';

CREATE TABLE billing.subscriptions (
    tenant_id             uuid        NOT NULL,
    id                    text        NOT NULL,
    customer_id           text        NOT NULL,
    status                text        NOT NULL,
    cancel_at_period_end  boolean     NOT NULL DEFAULT false,
    cancel_at             timestamptz,
    canceled_at           timestamptz,
    ended_at              timestamptz,
    trial_start           timestamptz,
    trial_end             timestamptz,
    -- The subscription's own period before API 2025-03-31, else the latest of its items'.
    current_period_start  timestamptz,
    current_period_end    timestamptz,
    created               timestamptz,
    metadata              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    object                jsonb,
    terminal              boolean     NOT NULL DEFAULT false,
    state_rank            smallint    NOT NULL DEFAULT 0,
    last_event_created    timestamptz NOT NULL DEFAULT '-infinity',
    last_event_id         text        NOT NULL DEFAULT '',
    synced_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT subscriptions_customer_fkey FOREIGN KEY (tenant_id, customer_id) REFERENCES billing.customers (tenant_id, id),
    CONSTRAINT subscriptions_status_valid CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing', 'active',
                                                            'past_due', 'canceled', 'unpaid', 'paused'))
);
CREATE INDEX subscriptions_customer_idx ON billing.subscriptions (tenant_id, customer_id);

-- Replaced as a set by each subscription state that wins: the items are exactly those of the
-- subscription's latest state. API 2025-03-31 moved the billing period here.
CREATE TABLE billing.subscription_items (
    tenant_id             uuid        NOT NULL,
    id                    text        NOT NULL,
    subscription_id       text        NOT NULL,
    price_id              text        NOT NULL,
    quantity              bigint,
    current_period_start  timestamptz,
    current_period_end    timestamptz,
    metadata              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    object                jsonb,
    terminal              boolean     NOT NULL DEFAULT false,
    state_rank            smallint    NOT NULL DEFAULT 0,
    last_event_created    timestamptz NOT NULL DEFAULT '-infinity',
    last_event_id         text        NOT NULL DEFAULT '',
    synced_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscription_items_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT subscription_items_subscription_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES billing.subscriptions (tenant_id, id),
    CONSTRAINT subscription_items_price_fkey FOREIGN KEY (price_id) REFERENCES billing.prices (id)
);
CREATE INDEX subscription_items_subscription_idx ON billing.subscription_items (tenant_id, subscription_id);
CREATE INDEX subscription_items_price_idx ON billing.subscription_items (price_id);

CREATE TABLE billing.invoices (
    tenant_id           uuid        NOT NULL,
    id                  text        NOT NULL,
    customer_id         text        NOT NULL,
    -- invoice.parent.subscription_details.subscription since API 2025-03-31, before it
    -- invoice.subscription.
    subscription_id     text,
    status              text,
    currency            text,
    amount_due          bigint,
    amount_paid         bigint,
    amount_remaining    bigint,
    attempt_count       integer,
    period_start        timestamptz,
    period_end          timestamptz,
    created             timestamptz,
    deleted             boolean     NOT NULL DEFAULT false,
    object              jsonb,
    terminal            boolean     NOT NULL DEFAULT false,
    state_rank          smallint    NOT NULL DEFAULT 0,
    last_event_created  timestamptz NOT NULL DEFAULT '-infinity',
    last_event_id       text        NOT NULL DEFAULT '',
    synced_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoices_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT invoices_customer_fkey FOREIGN KEY (tenant_id, customer_id) REFERENCES billing.customers (tenant_id, id),
    CONSTRAINT invoices_subscription_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES billing.subscriptions (tenant_id, id),
    CONSTRAINT invoices_status_valid CHECK (status IN ('draft', 'open', 'paid', 'uncollectible', 'void'))
);
CREATE INDEX invoices_customer_idx ON billing.invoices (tenant_id, customer_id);
CREATE INDEX invoices_subscription_idx ON billing.invoices (tenant_id, subscription_id);

-- One row per customer that Stripe has sent an entitlement summary for (the guard of the set).
CREATE TABLE billing.entitlement_summaries (
    tenant_id           uuid        NOT NULL,
    customer_id         text        NOT NULL,
    id                  text        NOT NULL GENERATED ALWAYS AS (customer_id) STORED,
    terminal            boolean     NOT NULL DEFAULT false,
    state_rank          smallint    NOT NULL DEFAULT 0,
    last_event_created  timestamptz NOT NULL DEFAULT '-infinity',
    last_event_id       text        NOT NULL DEFAULT '',
    synced_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entitlement_summaries_pkey PRIMARY KEY (tenant_id, customer_id),
    CONSTRAINT entitlement_summaries_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES billing.customers (tenant_id, id)
);

-- Replaced as a set by each summary that wins.
CREATE TABLE billing.active_entitlements (
    tenant_id    uuid NOT NULL,
    id           text NOT NULL,
    customer_id  text NOT NULL,
    feature_id   text,
    lookup_key   text NOT NULL,
    CONSTRAINT active_entitlements_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT active_entitlements_lookup_key UNIQUE (tenant_id, customer_id, lookup_key),
    CONSTRAINT active_entitlements_summary_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES billing.entitlement_summaries (tenant_id, customer_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'subscriptions', 'subscription_items', 'invoices',
                             'entitlement_summaries', 'active_entitlements'] LOOP
        EXECUTE format('ALTER TABLE billing.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE billing.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON billing.%I
                            USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))', t);
        -- The application reads its mirror; only Stripe (through the sync functions) writes it.
        EXECUTE format('GRANT SELECT ON billing.%I TO pgstrata_app', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['products', 'prices', 'customers', 'subscriptions', 'subscription_items',
                             'invoices', 'entitlement_summaries'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON billing.%I
                            FOR EACH ROW EXECUTE FUNCTION billing.refuse_stale()', t || '_refuse_stale', t);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Applying one object state. Internal: called by process_event, link_customer and
-- apply_refetched, which are the only entry points (and hold the privileges).
-- ---------------------------------------------------------------------------------------------

-- The kind of object an event type is about, or NULL for a type the mirror does not handle.
CREATE FUNCTION billing.event_kind(p_type text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN p_type IN ('customer.created', 'customer.updated', 'customer.deleted') THEN 'customer'
        WHEN p_type IN ('product.created', 'product.updated', 'product.deleted') THEN 'product'
        WHEN p_type IN ('price.created', 'price.updated', 'price.deleted') THEN 'price'
        WHEN p_type LIKE 'customer.subscription.%' THEN 'subscription'
        WHEN p_type IN ('invoice.created', 'invoice.updated', 'invoice.deleted', 'invoice.finalized',
                        'invoice.paid', 'invoice.payment_failed', 'invoice.payment_succeeded',
                        'invoice.payment_action_required', 'invoice.voided', 'invoice.marked_uncollectible',
                        'invoice.overdue', 'invoice.overpaid', 'invoice.will_be_due', 'invoice.sent')
            THEN 'invoice'
        WHEN p_type = 'entitlements.active_entitlement_summary.updated' THEN 'entitlement_summary'
    END
$$;

-- The Stripe customer an object belongs to (the object itself for a customer).
CREATE FUNCTION billing.object_customer(p_kind text, p_object jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE p_kind
        WHEN 'customer' THEN p_object ->> 'id'
        WHEN 'subscription' THEN billing.ref(p_object -> 'customer')
        WHEN 'invoice' THEN billing.ref(p_object -> 'customer')
        WHEN 'entitlement_summary' THEN billing.ref(p_object -> 'customer')
    END
$$;

-- Links a customer to a tenant. Refuses to move an existing link to another tenant. Returns
-- true when the link is new (the caller then replays the customer's deferred events).
CREATE FUNCTION billing.link(p_customer text, p_tenant uuid, p_source text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
    AS $$
DECLARE
    v_current uuid;
BEGIN
    INSERT INTO billing.customer_links (customer_id) VALUES (p_customer) ON CONFLICT DO NOTHING;
    SELECT l.tenant_id INTO v_current FROM billing.customer_links l WHERE l.customer_id = p_customer FOR UPDATE;
    IF v_current = p_tenant THEN
        RETURN false;
    ELSIF v_current IS NOT NULL THEN
        RAISE EXCEPTION 'Stripe customer % is linked to tenant %, not %', p_customer, v_current, p_tenant
            USING ERRCODE = 'PS403',
                  HINT = 'A customer belongs to one tenant for good: create another Stripe customer for the other tenant.';
    END IF;
    UPDATE billing.customer_links l SET tenant_id = p_tenant, source = p_source, linked_at = now()
     WHERE l.customer_id = p_customer;
    RETURN true;
END
$$;

-- Applies one state of one object as of (p_created, p_event_id) and returns what happened:
-- 'applied', 'stale' (the mirror holds a greater state), or 'deferred' (no tenant yet), with
-- whether a state of the same second was met. The caller has set app.tenant_id for p_tenant.
CREATE FUNCTION billing.apply_object(
    p_kind text,
    p_object jsonb,
    p_deleted boolean,
    p_created timestamptz,
    p_event_id text,
    p_tenant uuid,
    OUT outcome text,
    OUT tie boolean
)
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
    AS $$
DECLARE
    o jsonb := p_object;
    v_id text := p_object ->> 'id';
    v_status text;
    v_terminal boolean;
    v_rank smallint;
    v_customer text;
    v_sub text;
    v_product text;
    v_price jsonb;
    v_item jsonb;
    v_ent jsonb;
    v_prev_created timestamptz;
    v_prev_event text;
    v_n integer;
    v_won boolean;
BEGIN
    tie := false;
    IF v_id IS NULL AND p_kind <> 'entitlement_summary' THEN
        RAISE EXCEPTION 'the % object has no id', p_kind USING ERRCODE = '22023';
    END IF;
    v_customer := billing.object_customer(p_kind, o);
    IF p_kind IN ('customer', 'subscription', 'invoice', 'entitlement_summary') THEN
        IF v_customer IS NULL THEN
            RAISE EXCEPTION 'the % object % names no customer', p_kind, v_id USING ERRCODE = '22023';
        END IF;
        IF p_tenant IS NULL THEN
            outcome := 'deferred';
            RETURN;
        END IF;
        -- The parent customer, as a placeholder if it has not arrived yet.
        INSERT INTO billing.customers (tenant_id, id) VALUES (p_tenant, v_customer) ON CONFLICT DO NOTHING;
    END IF;

    v_status := CASE p_kind WHEN 'subscription' THEN o ->> 'status' WHEN 'invoice' THEN o ->> 'status' END;
    v_rank := billing.state_rank(p_kind, v_status, p_deleted);
    v_terminal := p_deleted OR (p_kind = 'subscription' AND v_status IN ('canceled', 'incomplete_expired'));

    IF p_kind = 'customer' THEN
        SELECT c.last_event_created, c.last_event_id INTO v_prev_created, v_prev_event FROM billing.customers c
         WHERE c.tenant_id = p_tenant AND c.id = v_id;
        INSERT INTO billing.customers AS c (tenant_id, id, email, name, metadata, deleted, object,
                                            terminal, state_rank, last_event_created, last_event_id)
        VALUES (p_tenant, v_id, o ->> 'email', o ->> 'name', coalesce(o -> 'metadata', '{}'), p_deleted, o,
                v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (tenant_id, id) DO UPDATE
           SET email = EXCLUDED.email, name = EXCLUDED.name, metadata = EXCLUDED.metadata,
               deleted = EXCLUDED.deleted, object = EXCLUDED.object, terminal = EXCLUDED.terminal,
               state_rank = EXCLUDED.state_rank, last_event_created = EXCLUDED.last_event_created,
               last_event_id = EXCLUDED.last_event_id
         WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
             > (c.terminal, c.last_event_created, c.state_rank, c.last_event_id);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_won := v_n = 1;

    ELSIF p_kind = 'product' THEN
        SELECT p.last_event_created, p.last_event_id INTO v_prev_created, v_prev_event FROM billing.products p WHERE p.id = v_id;
        INSERT INTO billing.products AS p (id, name, active, description, metadata, deleted, object,
                                           terminal, state_rank, last_event_created, last_event_id)
        VALUES (v_id, o ->> 'name', (o ->> 'active')::boolean, o ->> 'description', coalesce(o -> 'metadata', '{}'),
                p_deleted, o, v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (id) DO UPDATE
           SET name = EXCLUDED.name, active = EXCLUDED.active, description = EXCLUDED.description,
               metadata = EXCLUDED.metadata, deleted = EXCLUDED.deleted, object = EXCLUDED.object,
               terminal = EXCLUDED.terminal, state_rank = EXCLUDED.state_rank,
               last_event_created = EXCLUDED.last_event_created, last_event_id = EXCLUDED.last_event_id
         WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
             > (p.terminal, p.last_event_created, p.state_rank, p.last_event_id);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_won := v_n = 1;

    ELSIF p_kind = 'price' THEN
        v_product := billing.ref(o -> 'product');
        IF v_product IS NULL THEN
            RAISE EXCEPTION 'price % names no product', v_id USING ERRCODE = '22023';
        END IF;
        INSERT INTO billing.products (id) VALUES (v_product) ON CONFLICT DO NOTHING;
        SELECT p.last_event_created, p.last_event_id INTO v_prev_created, v_prev_event FROM billing.prices p WHERE p.id = v_id;
        INSERT INTO billing.prices AS p (id, product_id, active, currency, unit_amount, type, recurring_interval,
                                         interval_count, lookup_key, metadata, deleted, object,
                                         terminal, state_rank, last_event_created, last_event_id)
        VALUES (v_id, v_product, (o ->> 'active')::boolean, o ->> 'currency', (o ->> 'unit_amount')::bigint,
                o ->> 'type', o -> 'recurring' ->> 'interval', (o -> 'recurring' ->> 'interval_count')::integer,
                o ->> 'lookup_key', coalesce(o -> 'metadata', '{}'), p_deleted, o,
                v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (id) DO UPDATE
           SET product_id = EXCLUDED.product_id, active = EXCLUDED.active, currency = EXCLUDED.currency,
               unit_amount = EXCLUDED.unit_amount, type = EXCLUDED.type,
               recurring_interval = EXCLUDED.recurring_interval, interval_count = EXCLUDED.interval_count,
               lookup_key = EXCLUDED.lookup_key, metadata = EXCLUDED.metadata, deleted = EXCLUDED.deleted,
               object = EXCLUDED.object, terminal = EXCLUDED.terminal, state_rank = EXCLUDED.state_rank,
               last_event_created = EXCLUDED.last_event_created, last_event_id = EXCLUDED.last_event_id
         WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
             > (p.terminal, p.last_event_created, p.state_rank, p.last_event_id);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_won := v_n = 1;

    ELSIF p_kind = 'subscription' THEN
        IF v_status IS NULL THEN
            RAISE EXCEPTION 'subscription % has no status', v_id USING ERRCODE = '22023';
        END IF;
        SELECT s.last_event_created, s.last_event_id INTO v_prev_created, v_prev_event FROM billing.subscriptions s
         WHERE s.tenant_id = p_tenant AND s.id = v_id;
        INSERT INTO billing.subscriptions AS s (tenant_id, id, customer_id, status, cancel_at_period_end, cancel_at,
                                                canceled_at, ended_at, trial_start, trial_end,
                                                current_period_start, current_period_end, created, metadata, object,
                                                terminal, state_rank, last_event_created, last_event_id)
        VALUES (p_tenant, v_id, v_customer, v_status, coalesce((o ->> 'cancel_at_period_end')::boolean, false),
                billing.ts(o -> 'cancel_at'), billing.ts(o -> 'canceled_at'), billing.ts(o -> 'ended_at'),
                billing.ts(o -> 'trial_start'), billing.ts(o -> 'trial_end'),
                coalesce(billing.ts(o -> 'current_period_start'),
                         (SELECT max(billing.ts(i -> 'current_period_start')) FROM jsonb_array_elements(o -> 'items' -> 'data') i)),
                coalesce(billing.ts(o -> 'current_period_end'),
                         (SELECT max(billing.ts(i -> 'current_period_end')) FROM jsonb_array_elements(o -> 'items' -> 'data') i)),
                billing.ts(o -> 'created'), coalesce(o -> 'metadata', '{}'), o,
                v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (tenant_id, id) DO UPDATE
           SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
               cancel_at_period_end = EXCLUDED.cancel_at_period_end, cancel_at = EXCLUDED.cancel_at,
               canceled_at = EXCLUDED.canceled_at, ended_at = EXCLUDED.ended_at,
               trial_start = EXCLUDED.trial_start, trial_end = EXCLUDED.trial_end,
               current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end,
               created = EXCLUDED.created, metadata = EXCLUDED.metadata, object = EXCLUDED.object,
               terminal = EXCLUDED.terminal, state_rank = EXCLUDED.state_rank,
               last_event_created = EXCLUDED.last_event_created, last_event_id = EXCLUDED.last_event_id
         WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
             > (s.terminal, s.last_event_created, s.state_rank, s.last_event_id);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_won := v_n = 1;
        IF v_won THEN
            -- This state won: its items are the subscription's items now.
            DELETE FROM billing.subscription_items i
             WHERE i.tenant_id = p_tenant AND i.subscription_id = v_id
               AND i.id NOT IN (SELECT e ->> 'id' FROM jsonb_array_elements(coalesce(o -> 'items' -> 'data', '[]')) e
                                 WHERE e ->> 'id' IS NOT NULL);
            FOR v_item IN SELECT e FROM jsonb_array_elements(coalesce(o -> 'items' -> 'data', '[]')) e LOOP
                v_price := v_item -> 'price';
                IF billing.ref(v_price) IS NULL OR v_item ->> 'id' IS NULL THEN
                    RAISE EXCEPTION 'an item of subscription % has no id or price', v_id USING ERRCODE = '22023';
                END IF;
                -- Price and product placeholders hold only what never changes (the id and the
                -- price's product), so the mirror is the same whichever event created them.
                IF billing.ref(v_price -> 'product') IS NOT NULL THEN
                    INSERT INTO billing.products (id) VALUES (billing.ref(v_price -> 'product')) ON CONFLICT DO NOTHING;
                    INSERT INTO billing.prices (id, product_id) VALUES (billing.ref(v_price), billing.ref(v_price -> 'product'))
                        ON CONFLICT DO NOTHING;
                END IF;
                IF NOT EXISTS (SELECT 1 FROM billing.prices p WHERE p.id = billing.ref(v_price)) THEN
                    RAISE EXCEPTION 'item % names price % without its product', v_item ->> 'id', billing.ref(v_price)
                        USING ERRCODE = '22023';
                END IF;
                INSERT INTO billing.subscription_items AS i (tenant_id, id, subscription_id, price_id, quantity,
                                                             current_period_start, current_period_end, metadata, object,
                                                             terminal, state_rank, last_event_created, last_event_id)
                VALUES (p_tenant, v_item ->> 'id', v_id, billing.ref(v_price), (v_item ->> 'quantity')::bigint,
                        billing.ts(v_item -> 'current_period_start'), billing.ts(v_item -> 'current_period_end'),
                        coalesce(v_item -> 'metadata', '{}'), v_item, v_terminal, v_rank, p_created, p_event_id)
                ON CONFLICT (tenant_id, id) DO UPDATE
                   SET subscription_id = EXCLUDED.subscription_id, price_id = EXCLUDED.price_id,
                       quantity = EXCLUDED.quantity, current_period_start = EXCLUDED.current_period_start,
                       current_period_end = EXCLUDED.current_period_end, metadata = EXCLUDED.metadata,
                       object = EXCLUDED.object, terminal = EXCLUDED.terminal, state_rank = EXCLUDED.state_rank,
                       last_event_created = EXCLUDED.last_event_created, last_event_id = EXCLUDED.last_event_id
                 WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
                     > (i.terminal, i.last_event_created, i.state_rank, i.last_event_id);
            END LOOP;
        END IF;

    ELSIF p_kind = 'invoice' THEN
        v_sub := coalesce(billing.ref(o -> 'parent' -> 'subscription_details' -> 'subscription'),
                          billing.ref(o -> 'subscription'));
        IF v_sub IS NOT NULL THEN
            -- The subscription as a placeholder (status incomplete: grants nothing) until it arrives.
            INSERT INTO billing.subscriptions (tenant_id, id, customer_id, status)
            VALUES (p_tenant, v_sub, v_customer, 'incomplete') ON CONFLICT DO NOTHING;
        END IF;
        SELECT i.last_event_created, i.last_event_id INTO v_prev_created, v_prev_event FROM billing.invoices i
         WHERE i.tenant_id = p_tenant AND i.id = v_id;
        INSERT INTO billing.invoices AS i (tenant_id, id, customer_id, subscription_id, status, currency,
                                           amount_due, amount_paid, amount_remaining, attempt_count,
                                           period_start, period_end, created, deleted, object,
                                           terminal, state_rank, last_event_created, last_event_id)
        VALUES (p_tenant, v_id, v_customer, v_sub, v_status, o ->> 'currency',
                (o ->> 'amount_due')::bigint, (o ->> 'amount_paid')::bigint, (o ->> 'amount_remaining')::bigint,
                (o ->> 'attempt_count')::integer, billing.ts(o -> 'period_start'), billing.ts(o -> 'period_end'),
                billing.ts(o -> 'created'), p_deleted, o, v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (tenant_id, id) DO UPDATE
           SET customer_id = EXCLUDED.customer_id, subscription_id = EXCLUDED.subscription_id,
               status = EXCLUDED.status, currency = EXCLUDED.currency, amount_due = EXCLUDED.amount_due,
               amount_paid = EXCLUDED.amount_paid, amount_remaining = EXCLUDED.amount_remaining,
               attempt_count = EXCLUDED.attempt_count, period_start = EXCLUDED.period_start,
               period_end = EXCLUDED.period_end, created = EXCLUDED.created, deleted = EXCLUDED.deleted,
               object = EXCLUDED.object, terminal = EXCLUDED.terminal, state_rank = EXCLUDED.state_rank,
               last_event_created = EXCLUDED.last_event_created, last_event_id = EXCLUDED.last_event_id
         WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
             > (i.terminal, i.last_event_created, i.state_rank, i.last_event_id);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_won := v_n = 1;

    ELSIF p_kind = 'entitlement_summary' THEN
        v_id := v_customer;
        SELECT s.last_event_created, s.last_event_id INTO v_prev_created, v_prev_event FROM billing.entitlement_summaries s
         WHERE s.tenant_id = p_tenant AND s.customer_id = v_customer;
        INSERT INTO billing.entitlement_summaries AS s (tenant_id, customer_id, terminal, state_rank,
                                                        last_event_created, last_event_id)
        VALUES (p_tenant, v_customer, v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (tenant_id, customer_id) DO UPDATE
           SET terminal = EXCLUDED.terminal, state_rank = EXCLUDED.state_rank,
               last_event_created = EXCLUDED.last_event_created, last_event_id = EXCLUDED.last_event_id
         WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
             > (s.terminal, s.last_event_created, s.state_rank, s.last_event_id);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_won := v_n = 1;
        IF v_won THEN
            -- This summary won: it is the customer's whole set of active entitlements now.
            DELETE FROM billing.active_entitlements e WHERE e.tenant_id = p_tenant AND e.customer_id = v_customer;
            FOR v_ent IN SELECT e FROM jsonb_array_elements(coalesce(o -> 'entitlements' -> 'data', '[]')) e LOOP
                IF v_ent ->> 'id' IS NULL OR v_ent ->> 'lookup_key' IS NULL THEN
                    RAISE EXCEPTION 'an entitlement of customer % has no id or lookup_key', v_customer
                        USING ERRCODE = '22023';
                END IF;
                INSERT INTO billing.active_entitlements (tenant_id, id, customer_id, feature_id, lookup_key)
                VALUES (p_tenant, v_ent ->> 'id', v_customer, billing.ref(v_ent -> 'feature'), v_ent ->> 'lookup_key');
            END LOOP;
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown object kind %', p_kind USING ERRCODE = '22023';
    END IF;

    -- The guarded upsert wrote nothing when the mirror already holds a greater state.
    outcome := CASE WHEN v_won THEN 'applied' ELSE 'stale' END;
    tie := coalesce(v_prev_created = p_created AND v_prev_event <> p_event_id, false);
END
$$;

-- Applies the ledger row p_id (locked or just inserted by the caller) and records the outcome:
-- resolves the customer's tenant (linking it from metadata.tenant_id on a customer object),
-- enters that tenant for the writes, applies the object, and replays the customer's deferred
-- events when this event linked it. A failure rolls back the event's writes and is recorded
-- on the ledger row; serialization failures and deadlocks propagate (retry the transaction).
CREATE FUNCTION billing.apply_ledger_event(p_id text, OUT outcome text, OUT tie boolean, OUT tenant_id uuid, OUT error text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
    AS $$
DECLARE
    v_event billing.events%ROWTYPE;
    v_kind text;
    v_object jsonb;
    v_customer text;
    v_meta uuid;
    v_linked boolean := false;
    v_prev_tenant text := current_setting('app.tenant_id', true);
    v_applied record;
    v_deferred text;
BEGIN
    tie := false;
    SELECT * INTO STRICT v_event FROM billing.events e WHERE e.id = p_id;
    v_kind := billing.event_kind(v_event.type);
    IF v_kind IS NULL THEN
        UPDATE billing.events e SET status = 'ignored', error = NULL, processed_at = now() WHERE e.id = p_id;
        outcome := 'ignored';
        RETURN;
    END IF;
    v_object := v_event.payload -> 'data' -> 'object';
    v_customer := billing.object_customer(v_kind, v_object);
    BEGIN
        IF v_customer IS NOT NULL THEN
            INSERT INTO billing.customer_links (customer_id) VALUES (v_customer) ON CONFLICT DO NOTHING;
            -- FOR SHARE waits for a concurrent link of this customer to commit, so an event is
            -- never deferred after the replay of the customer's deferred events has run.
            SELECT l.tenant_id INTO tenant_id FROM billing.customer_links l
             WHERE l.customer_id = v_customer FOR SHARE;
            IF v_kind = 'customer' AND nullif(v_object -> 'metadata' ->> 'tenant_id', '') IS NOT NULL THEN
                v_meta := (v_object -> 'metadata' ->> 'tenant_id')::uuid;
                IF tenant_id IS NULL THEN
                    v_linked := billing.link(v_customer, v_meta, 'metadata');
                    tenant_id := v_meta;
                ELSIF tenant_id <> v_meta THEN
                    RAISE EXCEPTION 'customer % has metadata.tenant_id % but is linked to tenant %',
                            v_customer, v_meta, tenant_id
                        USING ERRCODE = 'PS403';
                END IF;
            END IF;
            IF tenant_id IS NOT NULL THEN
                PERFORM set_config('app.tenant_id', tenant_id::text, true);
            END IF;
        END IF;
        SELECT * INTO v_applied FROM billing.apply_object(v_kind, v_object, v_event.type LIKE '%.deleted',
                                                          v_event.created, v_event.id, tenant_id);
        outcome := v_applied.outcome;
        tie := v_applied.tie;
        IF v_linked THEN
            FOR v_deferred IN SELECT e.id FROM billing.events e
                               WHERE e.customer_id = v_customer AND e.status = 'deferred' AND e.id <> p_id
                               ORDER BY e.created, e.id LOOP
                PERFORM billing.apply_ledger_event(v_deferred);
            END LOOP;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        IF SQLSTATE IN ('40001', '40P01', '57014') THEN
            RAISE;
        END IF;
        outcome := 'failed';
        error := SQLSTATE || ': ' || SQLERRM;
    END;
    PERFORM set_config('app.tenant_id', coalesce(v_prev_tenant, ''), true);
    UPDATE billing.events e
       SET status = CASE outcome WHEN 'failed' THEN 'failed' WHEN 'deferred' THEN 'deferred' ELSE 'processed' END,
           error = apply_ledger_event.error,
           tie = apply_ledger_event.tie,
           tenant_id = apply_ledger_event.tenant_id,
           processed_at = CASE WHEN outcome IN ('applied', 'stale') THEN now() END
     WHERE e.id = p_id;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Entry points
-- ---------------------------------------------------------------------------------------------

-- Records and applies one Stripe event (the parsed webhook body, whose signature the caller
-- has verified) in the caller's transaction. Outcomes: applied; stale (an older state than the
-- mirror's: recorded, changes nothing); duplicate (already processed or ignored: a no-op);
-- ignored (a type the mirror does not handle); deferred (the customer has no tenant yet);
-- failed (recorded with its error; delivering the event again retries it). A malformed event
-- raises 22023 and writes nothing.
CREATE FUNCTION billing.process_event(
    p_event jsonb,
    OUT outcome text,
    OUT tie boolean,
    OUT object_type text,
    OUT object_id text,
    OUT tenant_id uuid,
    OUT error text
)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
    AS $$
DECLARE
    v_id text := p_event ->> 'id';
    v_type text := p_event ->> 'type';
    v_object jsonb := p_event -> 'data' -> 'object';
    v_status text;
    v_applied record;
BEGIN
    IF jsonb_typeof(p_event) IS DISTINCT FROM 'object' OR jsonb_typeof(p_event -> 'id') IS DISTINCT FROM 'string'
       OR length(v_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'malformed Stripe event: "id" must be a string of 1 to 255 characters' USING ERRCODE = '22023';
    ELSIF jsonb_typeof(p_event -> 'type') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'malformed Stripe event %: "type" must be a string', v_id USING ERRCODE = '22023';
    ELSIF jsonb_typeof(p_event -> 'created') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'malformed Stripe event %: "created" must be a Unix timestamp', v_id USING ERRCODE = '22023';
    ELSIF jsonb_typeof(v_object) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'malformed Stripe event %: "data.object" must be an object', v_id USING ERRCODE = '22023';
    END IF;
    tie := false;
    object_type := billing.event_kind(v_type);
    object_id := CASE object_type WHEN 'entitlement_summary' THEN billing.ref(v_object -> 'customer')
                                  ELSE v_object ->> 'id' END;

    -- The claim: a concurrent delivery of the same event waits here until this transaction
    -- ends, then finds the row and reports a duplicate.
    INSERT INTO billing.events AS e (id, type, created, api_version, livemode, status, object_type, object_id,
                                     customer_id, payload)
    VALUES (v_id, v_type, billing.ts(p_event -> 'created'), p_event ->> 'api_version',
            coalesce((p_event ->> 'livemode')::boolean, false), 'deferred', object_type, object_id,
            billing.object_customer(object_type, v_object), p_event)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT e.status, e.tenant_id INTO v_status, tenant_id FROM billing.events e WHERE e.id = v_id FOR UPDATE;
        IF v_status IN ('processed', 'ignored') THEN
            outcome := 'duplicate';
            RETURN;
        END IF;
        -- deferred or failed before: try again.
        UPDATE billing.events e SET attempts = e.attempts + 1 WHERE e.id = v_id;
    END IF;
    SELECT * INTO v_applied FROM billing.apply_ledger_event(v_id);
    outcome := v_applied.outcome;
    tie := v_applied.tie;
    tenant_id := v_applied.tenant_id;
    error := v_applied.error;
END
$$;
COMMENT ON FUNCTION billing.process_event(jsonb) IS
    'Claims a Stripe event in the ledger and applies it to the mirror under the per-object guard';

-- Applies an object as fetched from Stripe's API (after a same-second tie, for instance). It is
-- the object's state now, so it is stamped with the current time and outranks every event
-- created before it. Only objects of customers already linked (or global ones) are applied.
CREATE FUNCTION billing.apply_refetched(p_kind text, p_object jsonb, OUT outcome text, OUT tenant_id uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
    AS $$
DECLARE
    v_customer text := billing.object_customer(p_kind, p_object);
    v_prev_tenant text := current_setting('app.tenant_id', true);
    v_applied record;
BEGIN
    IF p_kind NOT IN ('customer', 'product', 'price', 'subscription', 'invoice', 'entitlement_summary') THEN
        RAISE EXCEPTION 'unknown object kind %', p_kind USING ERRCODE = '22023';
    END IF;
    IF v_customer IS NOT NULL THEN
        SELECT l.tenant_id INTO tenant_id FROM billing.customer_links l WHERE l.customer_id = v_customer FOR SHARE;
        IF tenant_id IS NOT NULL THEN
            PERFORM set_config('app.tenant_id', tenant_id::text, true);
        END IF;
    END IF;
    SELECT * INTO v_applied FROM billing.apply_object(p_kind, p_object, coalesce((p_object ->> 'deleted')::boolean, false),
                                                      clock_timestamp(), 'refetch', tenant_id);
    outcome := v_applied.outcome;
    PERFORM set_config('app.tenant_id', coalesce(v_prev_tenant, ''), true);
END
$$;

-- Applies failed events again (oldest first), e.g. after a fix; returns how many now succeed.
CREATE FUNCTION billing.retry_failed(p_limit integer DEFAULT 100) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
    AS $$
DECLARE
    v_id text;
    v_ok integer := 0;
    v_applied record;
BEGIN
    FOR v_id IN SELECT e.id FROM billing.events e WHERE e.status = 'failed'
                 ORDER BY e.received_at LIMIT p_limit FOR UPDATE SKIP LOCKED LOOP
        UPDATE billing.events e SET attempts = e.attempts + 1 WHERE e.id = v_id;
        SELECT * INTO v_applied FROM billing.apply_ledger_event(v_id);
        IF v_applied.outcome <> 'failed' THEN
            v_ok := v_ok + 1;
        END IF;
    END LOOP;
    RETURN v_ok;
END
$$;

-- Links a Stripe customer to the tenant in context (the application calls it right after it
-- creates the customer in Stripe) and applies the customer's deferred events. Returns how many
-- were applied. A customer already linked to another tenant is refused (PS403).
CREATE FUNCTION billing.link_customer(p_customer text) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_id text;
    v_n integer := 0;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant in context: set app.tenant_id in this transaction first' USING ERRCODE = '42501';
    END IF;
    IF p_customer IS NULL OR length(p_customer) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'a Stripe customer id has 1 to 255 characters' USING ERRCODE = '22023';
    END IF;
    PERFORM billing.link(p_customer, v_tenant, 'explicit');
    INSERT INTO billing.customers (tenant_id, id) VALUES (v_tenant, p_customer) ON CONFLICT DO NOTHING;
    FOR v_id IN SELECT e.id FROM billing.events e WHERE e.customer_id = p_customer AND e.status = 'deferred'
                 ORDER BY e.created, e.id FOR UPDATE LOOP
        PERFORM billing.apply_ledger_event(v_id);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Access (run as the application role, under RLS: another tenant's id reads nothing)
-- ---------------------------------------------------------------------------------------------

-- The status-to-access rule: trialing and active grant access; past_due until p_past_due_grace
-- after the unpaid period began; canceled until the end of the period already paid for;
-- incomplete, incomplete_expired, unpaid and paused grant nothing.
CREATE FUNCTION billing.grants_access(
    p_status text,
    p_period_start timestamptz,
    p_period_end timestamptz,
    p_past_due_grace interval,
    p_at timestamptz
) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE p_status
        WHEN 'trialing' THEN true
        WHEN 'active' THEN true
        WHEN 'past_due' THEN p_at < coalesce(p_period_start, '-infinity'::timestamptz) + p_past_due_grace
        WHEN 'canceled' THEN p_at < coalesce(p_period_end, '-infinity'::timestamptz)
        ELSE false
    END
$$;

-- Whether a tenant may use a feature (a lookup key) now: one of its subscriptions grants access
-- and either Stripe lists the feature among the customer's active entitlements or the
-- subscription's product lists it in billing.plan_features.
CREATE FUNCTION billing.tenant_has_feature(
    p_tenant uuid,
    p_feature text,
    p_past_due_grace interval DEFAULT interval '3 days',
    p_at timestamptz DEFAULT now()
) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM billing.subscriptions s
         WHERE s.tenant_id = p_tenant
           AND billing.grants_access(s.status, s.current_period_start, s.current_period_end, p_past_due_grace, p_at)
           AND (EXISTS (SELECT 1 FROM billing.active_entitlements e
                         WHERE e.tenant_id = p_tenant AND e.customer_id = s.customer_id AND e.lookup_key = p_feature)
                OR EXISTS (SELECT 1 FROM billing.subscription_items i
                             JOIN billing.prices p ON p.id = i.price_id
                             JOIN billing.plan_features f ON f.product_id = p.product_id
                            WHERE i.tenant_id = p_tenant AND i.subscription_id = s.id AND f.feature = p_feature))
    )
$$;

-- The tenant's current plan: its subscription with access (else its latest one), one row per
-- item with the price and product.
CREATE FUNCTION billing.tenant_current_plan(
    p_tenant uuid,
    p_past_due_grace interval DEFAULT interval '3 days',
    p_at timestamptz DEFAULT now()
) RETURNS TABLE (
    subscription_id text,
    status text,
    has_access boolean,
    current_period_end timestamptz,
    cancel_at_period_end boolean,
    item_id text,
    price_id text,
    product_id text,
    product_name text,
    quantity bigint
)
    LANGUAGE sql STABLE
    AS $$
    WITH current AS (
        SELECT s.id, s.status, s.current_period_end, s.cancel_at_period_end,
               billing.grants_access(s.status, s.current_period_start, s.current_period_end, p_past_due_grace, p_at) AS has_access
          FROM billing.subscriptions s
         WHERE s.tenant_id = p_tenant AND s.last_event_id <> ''
         ORDER BY 5 DESC, s.created DESC NULLS LAST, s.id
         LIMIT 1
    )
    SELECT c.id, c.status, c.has_access, c.current_period_end, c.cancel_at_period_end,
           i.id, i.price_id, p.product_id, pr.name, i.quantity
      FROM current c
      LEFT JOIN billing.subscription_items i ON i.tenant_id = p_tenant AND i.subscription_id = c.id
      LEFT JOIN billing.prices p ON p.id = i.price_id
      LEFT JOIN billing.products pr ON pr.id = p.product_id
     ORDER BY i.id
$$;

-- Internal functions are not for direct use; the entry points hold the privileges.
REVOKE EXECUTE ON FUNCTION billing.link(text, uuid, text),
                           billing.apply_object(text, jsonb, boolean, timestamptz, text, uuid),
                           billing.apply_ledger_event(text),
                           billing.process_event(jsonb),
                           billing.apply_refetched(text, jsonb),
                           billing.retry_failed(integer),
                           billing.link_customer(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.process_event(jsonb), billing.apply_refetched(text, jsonb),
                          billing.retry_failed(integer)
    TO pgstrata_billing_sync;
GRANT EXECUTE ON FUNCTION billing.link_customer(text) TO pgstrata_app, pgstrata_billing_sync;
GRANT EXECUTE ON FUNCTION billing.tenant_has_feature(uuid, text, interval, timestamptz),
                          billing.tenant_current_plan(uuid, interval, timestamptz),
                          billing.grants_access(text, timestamptz, timestamptz, interval, timestamptz)
    TO pgstrata_app;
