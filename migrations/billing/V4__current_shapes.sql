-- billing V4: today's Stripe shapes, typed columns for a billing page, and no retry of what
-- can never apply.
--
-- - customer_account: Stripe's newer account model bills an account ("acct_...") with
--   customer null. It is mapped to a tenant the same way a customer is (the link table and
--   billing.link_customer take either id), and mirrored rows name it as their customer.
-- - An invoice's subscription comes from parent.subscription_details only when parent.type is
--   subscription_details (a quote's invoice names none); without a parent, from the older
--   invoice.subscription.
-- - A list Stripe cut short (has_more on a subscription's items or an entitlement summary) no
--   longer replaces the whole set: the listed rows are applied, none is removed, the row is
--   marked (items_incomplete, incomplete) and process_event says so (incomplete), so the
--   caller can fetch the full object (refetch_on_tie handles both).
-- - A state Stripe does not produce (a period ending before it starts, a live subscription that
--   has ended, an active one canceled with no cancellation pending) or an object naming no
--   customer is 'rejected': recorded with its reason and answered as done, instead of failing on
--   every redelivery for days.
-- - Typed columns: invoices number, total, due_date and status_transitions' times;
--   subscriptions latest_invoice_id and pause_collection; prices billing_scheme, tiers_mode and
--   tiers. Filled from each row's stored object here.

-- ---------------------------------------------------------------------------------------------
-- Ledger
-- ---------------------------------------------------------------------------------------------

ALTER TABLE billing.events
    ADD COLUMN incomplete boolean NOT NULL DEFAULT false,
    DROP CONSTRAINT events_status_valid,
    DROP CONSTRAINT events_error_iff_failed,
    DROP CONSTRAINT events_processed_at,
    ADD CONSTRAINT events_status_valid CHECK (status IN ('processed', 'ignored', 'deferred', 'failed', 'rejected')),
    ADD CONSTRAINT events_error_iff_failed CHECK ((status IN ('failed', 'rejected')) = (error IS NOT NULL)),
    ADD CONSTRAINT events_processed_at CHECK ((status IN ('processed', 'ignored', 'rejected')) = (processed_at IS NOT NULL));
COMMENT ON COLUMN billing.events.status IS
    'processed (applied or stale), ignored (type not mirrored), deferred (no tenant yet), failed (retried when delivered again), rejected (a state the mirror does not take; see error)';
COMMENT ON COLUMN billing.events.incomplete IS
    'The object carried a list Stripe cut short (has_more): fetch it to complete the mirror';
-- Operators list what was rejected, like failures.
CREATE INDEX events_rejected_idx ON billing.events (received_at) WHERE status = 'rejected';

-- ---------------------------------------------------------------------------------------------
-- Typed columns
-- ---------------------------------------------------------------------------------------------

ALTER TABLE billing.invoices
    ADD COLUMN number text,
    ADD COLUMN total bigint,
    ADD COLUMN due_date timestamptz,
    ADD COLUMN finalized_at timestamptz,
    ADD COLUMN paid_at timestamptz,
    ADD COLUMN voided_at timestamptz,
    ADD COLUMN marked_uncollectible_at timestamptz;
ALTER TABLE billing.subscriptions
    ADD COLUMN latest_invoice_id text,
    ADD COLUMN pause_behavior text,
    ADD COLUMN pause_resumes_at timestamptz,
    ADD COLUMN items_incomplete boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN billing.subscriptions.items_incomplete IS
    'The state that won listed only part of the items (has_more): none was removed';
ALTER TABLE billing.prices
    ADD COLUMN billing_scheme text,
    ADD COLUMN tiers_mode text,
    ADD COLUMN tiers jsonb;
ALTER TABLE billing.entitlement_summaries
    ADD COLUMN incomplete boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN billing.entitlement_summaries.incomplete IS
    'The summary that won listed only part of the entitlements (has_more): none was removed';

-- From the stored objects (the same state, so the guard lets these through).
UPDATE billing.invoices i
   SET number = i.object ->> 'number', total = (i.object ->> 'total')::bigint,
       due_date = billing.ts(i.object -> 'due_date'),
       finalized_at = billing.ts(i.object -> 'status_transitions' -> 'finalized_at'),
       paid_at = billing.ts(i.object -> 'status_transitions' -> 'paid_at'),
       voided_at = billing.ts(i.object -> 'status_transitions' -> 'voided_at'),
       marked_uncollectible_at = billing.ts(i.object -> 'status_transitions' -> 'marked_uncollectible_at')
 WHERE i.object IS NOT NULL;
UPDATE billing.subscriptions s
   SET latest_invoice_id = billing.ref(s.object -> 'latest_invoice'),
       pause_behavior = s.object -> 'pause_collection' ->> 'behavior',
       pause_resumes_at = billing.ts(s.object -> 'pause_collection' -> 'resumes_at')
 WHERE s.object IS NOT NULL;
UPDATE billing.prices p
   SET billing_scheme = p.object ->> 'billing_scheme', tiers_mode = p.object ->> 'tiers_mode',
       tiers = nullif(p.object -> 'tiers', 'null')
 WHERE p.object IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Applying: new outputs, so the functions are created again (and their grants with them)
-- ---------------------------------------------------------------------------------------------

-- Inlined like V3 left it (no SET clause): one IMMUTABLE expression.
CREATE OR REPLACE FUNCTION billing.object_customer(p_kind text, p_object jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE p_kind
        WHEN 'customer' THEN p_object ->> 'id'
        WHEN 'subscription' THEN coalesce(billing.ref(p_object -> 'customer'), billing.ref(p_object -> 'customer_account'))
        WHEN 'invoice' THEN coalesce(billing.ref(p_object -> 'customer'), billing.ref(p_object -> 'customer_account'))
        WHEN 'entitlement_summary' THEN coalesce(billing.ref(p_object -> 'customer'), billing.ref(p_object -> 'customer_account'))
        WHEN 'checkout_session' THEN coalesce(billing.ref(p_object -> 'customer'), billing.ref(p_object -> 'customer_account'))
    END
$$;

DROP FUNCTION billing.process_event(jsonb);
DROP FUNCTION billing.apply_ledger_event(text);
DROP FUNCTION billing.apply_object(text, jsonb, boolean, timestamptz, text, uuid);

-- As V1, plus: customer_account, parent.type, has_more (OUT incomplete), typed columns, and
-- PS422 for states the mirror does not take.
CREATE FUNCTION billing.apply_object(
    p_kind text,
    p_object jsonb,
    p_deleted boolean,
    p_created timestamptz,
    p_event_id text,
    p_tenant uuid,
    OUT outcome text,
    OUT tie boolean,
    OUT incomplete boolean
)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
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
    incomplete := false;
    IF v_id IS NULL AND p_kind <> 'entitlement_summary' THEN
        RAISE EXCEPTION 'the % object has no id', p_kind USING ERRCODE = '22023';
    END IF;
    v_customer := billing.object_customer(p_kind, o);
    IF p_kind IN ('customer', 'subscription', 'invoice', 'entitlement_summary') THEN
        IF v_customer IS NULL THEN
            RAISE EXCEPTION 'the % object % names no customer and no customer account', p_kind, v_id
                USING ERRCODE = 'PS422';
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
                                         billing_scheme, tiers_mode, tiers,
                                         terminal, state_rank, last_event_created, last_event_id)
        VALUES (v_id, v_product, (o ->> 'active')::boolean, o ->> 'currency', (o ->> 'unit_amount')::bigint,
                o ->> 'type', o -> 'recurring' ->> 'interval', (o -> 'recurring' ->> 'interval_count')::integer,
                o ->> 'lookup_key', coalesce(o -> 'metadata', '{}'), p_deleted, o,
                o ->> 'billing_scheme', o ->> 'tiers_mode', nullif(o -> 'tiers', 'null'),
                v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (id) DO UPDATE
           SET product_id = EXCLUDED.product_id, billing_scheme = EXCLUDED.billing_scheme,
               tiers_mode = EXCLUDED.tiers_mode, tiers = EXCLUDED.tiers, active = EXCLUDED.active, currency = EXCLUDED.currency,
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
        -- States Stripe does not produce are not mirrored: recorded with the reason, not retried.
        IF billing.ts(o -> 'current_period_end') < billing.ts(o -> 'current_period_start') THEN
            RAISE EXCEPTION 'subscription %: its period ends before it starts', v_id USING ERRCODE = 'PS422';
        ELSIF v_status IN ('active', 'trialing', 'past_due') AND billing.ts(o -> 'ended_at') IS NOT NULL THEN
            RAISE EXCEPTION 'subscription % is % but has ended_at', v_id, v_status USING ERRCODE = 'PS422';
        ELSIF v_status IN ('active', 'trialing') AND billing.ts(o -> 'canceled_at') IS NOT NULL
              AND NOT coalesce((o ->> 'cancel_at_period_end')::boolean, false) AND billing.ts(o -> 'cancel_at') IS NULL THEN
            RAISE EXCEPTION 'subscription % is % and canceled, with no cancellation pending', v_id, v_status
                USING ERRCODE = 'PS422';
        ELSIF billing.ts(o -> 'trial_end') < billing.ts(o -> 'trial_start') THEN
            RAISE EXCEPTION 'subscription %: its trial ends before it starts', v_id USING ERRCODE = 'PS422';
        ELSIF EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(o -> 'items' -> 'data', '[]')) i
                       WHERE billing.ts(i -> 'current_period_end') < billing.ts(i -> 'current_period_start')) THEN
            RAISE EXCEPTION 'subscription %: an item''s period ends before it starts', v_id USING ERRCODE = 'PS422';
        END IF;
        -- A list Stripe cut short (items.has_more) is not the whole set: the listed items are
        -- applied, none is removed, and the row says so until a complete state arrives.
        incomplete := coalesce((o -> 'items' ->> 'has_more')::boolean, false);
        SELECT s.last_event_created, s.last_event_id INTO v_prev_created, v_prev_event FROM billing.subscriptions s
         WHERE s.tenant_id = p_tenant AND s.id = v_id;
        INSERT INTO billing.subscriptions AS s (tenant_id, id, customer_id, status, cancel_at_period_end, cancel_at,
                                                canceled_at, ended_at, trial_start, trial_end,
                                                current_period_start, current_period_end, created, metadata, object,
                                                latest_invoice_id, pause_behavior, pause_resumes_at, items_incomplete,
                                                terminal, state_rank, last_event_created, last_event_id)
        VALUES (p_tenant, v_id, v_customer, v_status, coalesce((o ->> 'cancel_at_period_end')::boolean, false),
                billing.ts(o -> 'cancel_at'), billing.ts(o -> 'canceled_at'), billing.ts(o -> 'ended_at'),
                billing.ts(o -> 'trial_start'), billing.ts(o -> 'trial_end'),
                coalesce(billing.ts(o -> 'current_period_start'),
                         (SELECT max(billing.ts(i -> 'current_period_start')) FROM jsonb_array_elements(o -> 'items' -> 'data') i)),
                coalesce(billing.ts(o -> 'current_period_end'),
                         (SELECT max(billing.ts(i -> 'current_period_end')) FROM jsonb_array_elements(o -> 'items' -> 'data') i)),
                billing.ts(o -> 'created'), coalesce(o -> 'metadata', '{}'), o,
                billing.ref(o -> 'latest_invoice'), o -> 'pause_collection' ->> 'behavior',
                billing.ts(o -> 'pause_collection' -> 'resumes_at'), incomplete,
                v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (tenant_id, id) DO UPDATE
           SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
               latest_invoice_id = EXCLUDED.latest_invoice_id, pause_behavior = EXCLUDED.pause_behavior,
               pause_resumes_at = EXCLUDED.pause_resumes_at, items_incomplete = EXCLUDED.items_incomplete,
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
             WHERE NOT incomplete AND i.tenant_id = p_tenant AND i.subscription_id = v_id
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
        -- API 2025-03-31 and later: parent.type says what the invoice is for; only a
        -- subscription_details parent names a subscription. Before it: invoice.subscription.
        v_sub := CASE WHEN jsonb_typeof(o -> 'parent') = 'object'
                      THEN CASE WHEN o -> 'parent' ->> 'type' = 'subscription_details'
                                THEN billing.ref(o -> 'parent' -> 'subscription_details' -> 'subscription') END
                      ELSE billing.ref(o -> 'subscription') END;
        IF billing.ts(o -> 'period_end') < billing.ts(o -> 'period_start') THEN
            RAISE EXCEPTION 'invoice %: its period ends before it starts', v_id USING ERRCODE = 'PS422';
        END IF;
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
                                           number, total, due_date, finalized_at, paid_at, voided_at,
                                           marked_uncollectible_at,
                                           terminal, state_rank, last_event_created, last_event_id)
        VALUES (p_tenant, v_id, v_customer, v_sub, v_status, o ->> 'currency',
                (o ->> 'amount_due')::bigint, (o ->> 'amount_paid')::bigint, (o ->> 'amount_remaining')::bigint,
                (o ->> 'attempt_count')::integer, billing.ts(o -> 'period_start'), billing.ts(o -> 'period_end'),
                billing.ts(o -> 'created'), p_deleted, o,
                o ->> 'number', (o ->> 'total')::bigint, billing.ts(o -> 'due_date'),
                billing.ts(o -> 'status_transitions' -> 'finalized_at'), billing.ts(o -> 'status_transitions' -> 'paid_at'),
                billing.ts(o -> 'status_transitions' -> 'voided_at'),
                billing.ts(o -> 'status_transitions' -> 'marked_uncollectible_at'),
                v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (tenant_id, id) DO UPDATE
           SET customer_id = EXCLUDED.customer_id, subscription_id = EXCLUDED.subscription_id,
               number = EXCLUDED.number, total = EXCLUDED.total, due_date = EXCLUDED.due_date,
               finalized_at = EXCLUDED.finalized_at, paid_at = EXCLUDED.paid_at, voided_at = EXCLUDED.voided_at,
               marked_uncollectible_at = EXCLUDED.marked_uncollectible_at,
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
        incomplete := coalesce((o -> 'entitlements' ->> 'has_more')::boolean, false);
        SELECT s.last_event_created, s.last_event_id INTO v_prev_created, v_prev_event FROM billing.entitlement_summaries s
         WHERE s.tenant_id = p_tenant AND s.customer_id = v_customer;
        INSERT INTO billing.entitlement_summaries AS s (tenant_id, customer_id, incomplete, terminal, state_rank,
                                                        last_event_created, last_event_id)
        VALUES (p_tenant, v_customer, incomplete, v_terminal, v_rank, p_created, p_event_id)
        ON CONFLICT (tenant_id, customer_id) DO UPDATE
           SET incomplete = EXCLUDED.incomplete, terminal = EXCLUDED.terminal, state_rank = EXCLUDED.state_rank,
               last_event_created = EXCLUDED.last_event_created, last_event_id = EXCLUDED.last_event_id
         WHERE (EXCLUDED.terminal, EXCLUDED.last_event_created, EXCLUDED.state_rank, EXCLUDED.last_event_id)
             > (s.terminal, s.last_event_created, s.state_rank, s.last_event_id);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_won := v_n = 1;
        IF v_won THEN
            -- This summary won: it is the customer's whole set of active entitlements now,
            -- unless Stripe cut the list short (has_more): then the listed ones are added and
            -- none is removed until a complete summary arrives.
            DELETE FROM billing.active_entitlements e
             WHERE NOT incomplete AND e.tenant_id = p_tenant AND e.customer_id = v_customer;
            FOR v_ent IN SELECT e FROM jsonb_array_elements(coalesce(o -> 'entitlements' -> 'data', '[]')) e LOOP
                IF v_ent ->> 'id' IS NULL OR v_ent ->> 'lookup_key' IS NULL THEN
                    RAISE EXCEPTION 'an entitlement of customer % has no id or lookup_key', v_customer
                        USING ERRCODE = '22023';
                END IF;
                INSERT INTO billing.active_entitlements (tenant_id, id, customer_id, feature_id, lookup_key)
                VALUES (p_tenant, v_ent ->> 'id', v_customer, billing.ref(v_ent -> 'feature'), v_ent ->> 'lookup_key')
                ON CONFLICT (tenant_id, id) DO NOTHING;
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

-- As V2, plus: incomplete passed up and recorded; PS422 recorded as 'rejected', not retried.
CREATE FUNCTION billing.apply_ledger_event(p_id text, OUT outcome text, OUT tie boolean, OUT tenant_id uuid, OUT error text,
                                           OUT incomplete boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_event billing.events%ROWTYPE;
    v_kind text;
    v_object jsonb;
    v_customer text;
    v_named uuid;
    v_linked boolean := false;
    v_prev_tenant text := current_setting('app.tenant_id', true);
    v_applied record;
    v_deferred text;
BEGIN
    tie := false;
    incomplete := false;
    SELECT * INTO STRICT v_event FROM billing.events e WHERE e.id = p_id;
    v_kind := billing.event_kind(v_event.type);
    v_object := v_event.payload -> 'data' -> 'object';
    v_customer := billing.object_customer(v_kind, v_object);
    -- A checkout session without a customer (a guest payment) or naming no tenant links nothing.
    IF v_kind IS NULL
       OR (v_kind = 'checkout_session'
           AND (v_customer IS NULL
                OR (nullif(v_object -> 'metadata' ->> 'tenant_id', '') IS NULL
                    AND coalesce(v_object ->> 'client_reference_id', '')
                        !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'))) THEN
        UPDATE billing.events e SET status = 'ignored', error = NULL, processed_at = now() WHERE e.id = p_id;
        outcome := 'ignored';
        RETURN;
    END IF;
    BEGIN
        IF v_customer IS NOT NULL THEN
            INSERT INTO billing.customer_links (customer_id) VALUES (v_customer) ON CONFLICT DO NOTHING;
            -- FOR SHARE waits for a concurrent link of this customer to commit, so an event is
            -- never deferred after the replay of the customer's deferred events has run.
            SELECT l.tenant_id INTO tenant_id FROM billing.customer_links l
             WHERE l.customer_id = v_customer FOR SHARE;
            v_named := billing.named_tenant(v_kind, v_object);
            IF v_named IS NOT NULL THEN
                IF tenant_id IS NULL THEN
                    v_linked := billing.link(v_customer, v_named,
                                             CASE v_kind WHEN 'customer' THEN 'metadata' ELSE 'checkout' END);
                    tenant_id := v_named;
                ELSIF tenant_id <> v_named THEN
                    RAISE EXCEPTION 'Stripe customer % is linked to another tenant than the one its % names (%)',
                            v_customer, replace(v_kind, '_', ' '), v_named
                        USING ERRCODE = 'PS403',
                              HINT = 'A customer belongs to one tenant for good: create another Stripe customer for this tenant.';
                END IF;
            END IF;
            IF tenant_id IS NOT NULL THEN
                PERFORM pg_catalog.set_config('app.tenant_id', tenant_id::text, true);
            END IF;
        END IF;
        IF v_kind = 'checkout_session' THEN
            -- The session is not mirrored; its effect is the link. The customer's row, as a
            -- placeholder until its own events arrive (also proves the tenant exists).
            INSERT INTO billing.customers (tenant_id, id) VALUES (tenant_id, v_customer) ON CONFLICT DO NOTHING;
            outcome := 'applied';
        ELSE
            SELECT * INTO v_applied FROM billing.apply_object(v_kind, v_object, v_event.type LIKE '%.deleted',
                                                              v_event.created, v_event.id, tenant_id);
            outcome := v_applied.outcome;
            tie := v_applied.tie;
            incomplete := v_applied.incomplete;
        END IF;
        IF v_linked THEN
            -- SKIP LOCKED: a deferred event locked by another transaction is a redelivery of
            -- it, which waits for this link and then applies the event itself. Waiting for it
            -- here, while holding the link it waits for, would deadlock.
            FOR v_deferred IN SELECT e.id FROM billing.events e
                               WHERE e.customer_id = v_customer AND e.status = 'deferred' AND e.id <> p_id
                               ORDER BY e.created, e.id
                               FOR UPDATE SKIP LOCKED LOOP
                PERFORM billing.apply_ledger_event(v_deferred);
            END LOOP;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        IF SQLSTATE IN ('40001', '40P01', '57014') THEN
            RAISE;
        END IF;
        -- PS422: a state the mirror does not take (see apply_object); delivering it again
        -- would fail the same way, so it is recorded with the reason and not retried.
        outcome := CASE WHEN SQLSTATE = 'PS422' THEN 'rejected' ELSE 'failed' END;
        error := SQLSTATE || ': ' || SQLERRM;
        -- A customer linked to another tenant (PS403): the result does not name that tenant.
        IF SQLSTATE = 'PS403' THEN
            tenant_id := NULL;
        END IF;
    END;
    PERFORM pg_catalog.set_config('app.tenant_id', coalesce(v_prev_tenant, ''), true);
    UPDATE billing.events e
       SET status = CASE outcome WHEN 'failed' THEN 'failed' WHEN 'deferred' THEN 'deferred'
                                 WHEN 'rejected' THEN 'rejected' ELSE 'processed' END,
           error = apply_ledger_event.error,
           tie = apply_ledger_event.tie,
           incomplete = apply_ledger_event.incomplete,
           tenant_id = apply_ledger_event.tenant_id,
           processed_at = CASE WHEN outcome IN ('applied', 'stale', 'rejected') THEN now() END
     WHERE e.id = p_id;
END
$$;

-- As V1, plus: incomplete; a rejected event delivered again is a duplicate.
CREATE FUNCTION billing.process_event(
    p_event jsonb,
    OUT outcome text,
    OUT tie boolean,
    OUT object_type text,
    OUT object_id text,
    OUT tenant_id uuid,
    OUT error text,
    OUT incomplete boolean
)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
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
    incomplete := false;
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
        IF v_status IN ('processed', 'ignored', 'rejected') THEN
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
    incomplete := v_applied.incomplete;
END
$$;

COMMENT ON FUNCTION billing.process_event(jsonb) IS
    'Claims a Stripe event in the ledger and applies it to the mirror under the per-object guard';

REVOKE EXECUTE ON FUNCTION billing.apply_object(text, jsonb, boolean, timestamptz, text, uuid),
                           billing.apply_ledger_event(text),
                           billing.process_event(jsonb)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.process_event(jsonb) TO pgstrata_billing_sync;

-- ---------------------------------------------------------------------------------------------
-- Operators: reading and pruning the ledger
-- ---------------------------------------------------------------------------------------------

-- The ledger's events, newest first, optionally of one status; without their payloads (which
-- carry customers' details). For the sync role and operators.
CREATE FUNCTION billing.ledger(p_status text DEFAULT NULL, p_limit integer DEFAULT 50)
    RETURNS TABLE (id text, type text, status text, object_type text, object_id text, customer_id text,
                   tenant_id uuid, attempts integer, error text, received_at timestamptz, processed_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_status IS NOT NULL AND p_status NOT IN ('processed', 'ignored', 'deferred', 'failed', 'rejected') THEN
        RAISE EXCEPTION 'billing.ledger: status must be processed, ignored, deferred, failed or rejected, got %', p_status
            USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'billing.ledger: limit must be between 1 and 10000, got %', p_limit USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT e.id, e.type, e.status, e.object_type, e.object_id, e.customer_id, e.tenant_id, e.attempts, e.error,
           e.received_at, e.processed_at
      FROM billing.events e
     WHERE p_status IS NULL OR e.status = p_status
     ORDER BY e.received_at DESC, e.id
     LIMIT p_limit;
END
$$;

-- Deletes events done with (processed, ignored, rejected) received more than p_older_than ago;
-- returns how many. It reads the whole ledger (an index on received_at would cost every
-- webhook two more index entries, for a job that runs monthly). Deferred and failed events are kept whatever their age: they still have
-- work to do. At least 7 days are kept: Stripe redelivers for up to 3 days, and an event
-- pruned before its last redelivery would be claimed again (harmless to the mirror, whose
-- guard keeps the greater state, but counted twice).
CREATE FUNCTION billing.prune_events(p_older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '7 days' THEN
        RAISE EXCEPTION 'billing.prune_events: keep at least 7 days of events, got %', p_older_than
            USING ERRCODE = '22023';
    END IF;
    DELETE FROM billing.events e
     WHERE e.status IN ('processed', 'ignored', 'rejected') AND e.received_at < now() - p_older_than;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

GRANT USAGE ON SCHEMA billing TO pgstrata_operator;
REVOKE EXECUTE ON FUNCTION billing.ledger(text, integer), billing.prune_events(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.ledger(text, integer) TO pgstrata_billing_sync, pgstrata_operator;
GRANT EXECUTE ON FUNCTION billing.prune_events(interval) TO pgstrata_billing_sync;

-- ---------------------------------------------------------------------------------------------
-- Backfill from Stripe's API: where each list stopped
-- ---------------------------------------------------------------------------------------------

-- The backfill (Rust: billing::backfill) lists each resource page by page and applies every
-- object through process_event as a synthetic event stamped with the time the page was
-- fetched, so it never outranks a webhook event created after it. Its position per resource is
-- kept here, so an interrupted run goes on where it stopped.
CREATE TABLE billing.backfill_cursors (
    resource        text        NOT NULL,
    starting_after  text,
    pages           integer     NOT NULL DEFAULT 0,
    objects         bigint      NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    CONSTRAINT backfill_cursors_pkey PRIMARY KEY (resource),
    CONSTRAINT backfill_cursors_resource_valid
        CHECK (resource IN ('products', 'prices', 'customers', 'subscriptions', 'invoices'))
);
COMMENT ON TABLE billing.backfill_cursors IS
    'citus: local. Where the backfill from Stripe''s API stopped, per resource; written through billing.backfill_advance';

-- Where the backfill of p_resource stands (no row: not started); p_restart forgets it first.
CREATE FUNCTION billing.backfill_position(p_resource text, p_restart boolean DEFAULT false)
    RETURNS TABLE (starting_after text, pages integer, objects bigint, completed boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_resource IS NULL OR p_resource NOT IN ('products', 'prices', 'customers', 'subscriptions', 'invoices') THEN
        RAISE EXCEPTION 'billing backfill: resource must be products, prices, customers, subscriptions or invoices, got %',
                p_resource
            USING ERRCODE = '22023';
    END IF;
    IF p_restart THEN
        DELETE FROM billing.backfill_cursors c WHERE c.resource = p_resource;
    END IF;
    RETURN QUERY
    SELECT c.starting_after, c.pages, c.objects, c.completed_at IS NOT NULL
      FROM billing.backfill_cursors c WHERE c.resource = p_resource;
END
$$;

-- Records a page of p_resource applied: the last object's id, how many objects, and whether
-- it was the last page.
CREATE FUNCTION billing.backfill_advance(p_resource text, p_last_id text, p_objects integer, p_done boolean)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_objects IS NULL OR p_objects < 0 OR p_done IS NULL THEN
        RAISE EXCEPTION 'billing backfill: a page needs a count and whether it was the last' USING ERRCODE = '22023';
    END IF;
    INSERT INTO billing.backfill_cursors AS c (resource, starting_after, pages, objects, completed_at)
    VALUES (p_resource, p_last_id, 1, p_objects, CASE WHEN p_done THEN now() END)
    ON CONFLICT (resource) DO UPDATE
       SET starting_after = coalesce(excluded.starting_after, c.starting_after), pages = c.pages + 1,
           objects = c.objects + excluded.objects, updated_at = now(), completed_at = excluded.completed_at;
END
$$;

REVOKE EXECUTE ON FUNCTION billing.backfill_position(text, boolean), billing.backfill_advance(text, text, integer, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.backfill_position(text, boolean), billing.backfill_advance(text, text, integer, boolean)
    TO pgstrata_billing_sync;
