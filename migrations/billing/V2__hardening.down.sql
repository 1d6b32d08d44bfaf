-- Reverts billing V2: V1's entry points and link sources come back. The pinned search_path
-- stays on every function (V1's bodies run unchanged under it): going back to
-- an empty search_path would reopen the hole V2 closed. Links made by the sync role or by a
-- checkout session become 'explicit' and 'metadata', V1's names for them.

DROP FUNCTION billing.link_customer(text, uuid);
DROP FUNCTION billing.named_tenant(text, jsonb);

CREATE OR REPLACE FUNCTION billing.event_kind(p_type text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
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

CREATE OR REPLACE FUNCTION billing.object_customer(p_kind text, p_object jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE p_kind
        WHEN 'customer' THEN p_object ->> 'id'
        WHEN 'subscription' THEN billing.ref(p_object -> 'customer')
        WHEN 'invoice' THEN billing.ref(p_object -> 'customer')
        WHEN 'entitlement_summary' THEN billing.ref(p_object -> 'customer')
    END
$$;

CREATE OR REPLACE FUNCTION billing.link(p_customer text, p_tenant uuid, p_source text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
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

CREATE OR REPLACE FUNCTION billing.apply_ledger_event(p_id text, OUT outcome text, OUT tie boolean, OUT tenant_id uuid, OUT error text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
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

CREATE OR REPLACE FUNCTION billing.link_customer(p_customer text) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
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
COMMENT ON FUNCTION billing.link_customer(text) IS NULL;
GRANT EXECUTE ON FUNCTION billing.link_customer(text) TO pgstrata_app, pgstrata_billing_sync;

UPDATE billing.customer_links SET source = 'explicit' WHERE source = 'sync';
UPDATE billing.customer_links SET source = 'metadata' WHERE source = 'checkout';
ALTER TABLE billing.customer_links DROP CONSTRAINT customer_links_source_valid;
ALTER TABLE billing.customer_links ADD CONSTRAINT customer_links_source_valid CHECK (source IN ('metadata', 'explicit'));
COMMENT ON COLUMN billing.customer_links.source IS NULL;
