-- billing V2: hardening (no path around the database's guarantees for a role that is not the
-- owner). See DECISIONS.md D-044 to D-047 and SECURITY.md (billing).
--
-- 1. Linking a Stripe customer needs something a tenant does not have. In V1 any tenant could
--    call billing.link_customer(customer) for an unlinked customer id and receive the
--    subscription (and features) waiting for it in the ledger. Now a customer is linked only
--      * by a signed source: the customer's metadata.tenant_id, or a completed checkout
--        session's metadata.tenant_id or client_reference_id, arriving through a verified
--        webhook (billing.process_event, run by pgstrata_billing_sync), or
--      * by the sync role itself: billing.link_customer(customer, tenant), called by server
--        code right after it created the customer through Stripe's API.
--    The application role's billing.link_customer(customer) refuses (42501) and says what to
--    do instead. A customer linked to another tenant is refused without naming that tenant.
-- 2. Every function of the schema pins search_path = pg_catalog, pg_temp (pg_temp explicitly
--    last). With an empty search_path PostgreSQL still resolved type names in the caller's
--    temporary schema first, so a caller's pg_temp.uuid domain whose CHECK called its own
--    function ran that function as the owner inside the SECURITY DEFINER entry points.
-- 3. Replaying a customer's deferred events skips events another transaction holds (a
--    redelivery of that event, which applies it itself once the link commits): the replay no
--    longer waits for a ledger row while holding the link row that the redelivery waits for.
-- Billing takes no advisory lock: its processes are guarded by row locks on its own tables,
-- which only the owner and the sync role's definer functions may lock.

-- ---------------------------------------------------------------------------------------------
-- Where a link comes from
-- ---------------------------------------------------------------------------------------------

-- 'explicit' now marks the links made before V2 by billing.link_customer(customer), which any
-- tenant could call: kept, reported below, and never made again.
ALTER TABLE billing.customer_links DROP CONSTRAINT customer_links_source_valid;
ALTER TABLE billing.customer_links ADD CONSTRAINT customer_links_source_valid
    CHECK (source IN ('metadata', 'checkout', 'sync', 'explicit'));
COMMENT ON COLUMN billing.customer_links.source IS
    'metadata: the customer''s metadata.tenant_id; checkout: a completed checkout session''s metadata.tenant_id or client_reference_id; sync: billing.link_customer(customer, tenant) by the sync role; explicit: linked before billing V2 by the tenant in context (unverified)';

-- ---------------------------------------------------------------------------------------------
-- Every function pins search_path (bodies that do not change)
-- ---------------------------------------------------------------------------------------------

ALTER FUNCTION billing.ts(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.ref(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.state_rank(text, text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.refuse_stale() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.apply_object(text, jsonb, boolean, timestamptz, text, uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.process_event(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.apply_refetched(text, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.retry_failed(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.grants_access(text, timestamptz, timestamptz, interval, timestamptz)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.tenant_has_feature(uuid, text, interval, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.tenant_current_plan(uuid, interval, timestamptz) SET search_path = pg_catalog, pg_temp;

-- ---------------------------------------------------------------------------------------------
-- Checkout sessions: a completed session links its customer to the tenant it names
-- ---------------------------------------------------------------------------------------------

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
        -- Not mirrored: a completed session only links its customer (see apply_ledger_event).
        WHEN p_type IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded') THEN 'checkout_session'
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
        WHEN 'checkout_session' THEN billing.ref(p_object -> 'customer')
    END
$$;

-- The tenant a signed object names, or NULL: a customer's metadata.tenant_id; a checkout
-- session's metadata.tenant_id, else its client_reference_id when that is a UUID (a
-- client_reference_id that is not one is the application's own reference, not a tenant). A
-- metadata.tenant_id that is not a UUID is an error (22023): the server that set it meant a
-- tenant and got it wrong.
CREATE FUNCTION billing.named_tenant(p_kind text, p_object jsonb) RETURNS uuid
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_meta text := nullif(p_object -> 'metadata' ->> 'tenant_id', '');
    v_ref text := p_object ->> 'client_reference_id';
BEGIN
    IF p_kind NOT IN ('customer', 'checkout_session') THEN
        RETURN NULL;
    END IF;
    IF v_meta IS NOT NULL THEN
        IF v_meta !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            RAISE EXCEPTION 'the % object % has metadata.tenant_id %, which is not a tenant id (a UUID)',
                    p_kind, p_object ->> 'id', v_meta
                USING ERRCODE = '22023';
        END IF;
        RETURN v_meta::uuid;
    END IF;
    IF p_kind = 'checkout_session'
       AND v_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN v_ref::uuid;
    END IF;
    RETURN NULL;
END
$$;

-- Links a customer to a tenant. Refuses to move an existing link to another tenant, without
-- naming that tenant (the caller learns only that the customer is taken). Returns true when
-- the link is new (the caller then replays the customer's deferred events).
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
        RAISE EXCEPTION 'Stripe customer % is linked to another tenant; it cannot be linked to tenant %',
                p_customer, p_tenant
            USING ERRCODE = 'PS403',
                  HINT = 'A customer belongs to one tenant for good: create another Stripe customer for this tenant.';
    END IF;
    UPDATE billing.customer_links l SET tenant_id = p_tenant, source = p_source, linked_at = now()
     WHERE l.customer_id = p_customer;
    RETURN true;
END
$$;

-- Applies the ledger row p_id (locked or just inserted by the caller) and records the outcome:
-- resolves the customer's tenant (linking it from the tenant a customer or a completed checkout
-- session names), enters that tenant for the writes, applies the object, and replays the
-- customer's deferred events when this event linked it. A failure rolls back the event's
-- writes and is recorded on the ledger row; serialization failures and deadlocks propagate
-- (retry the transaction).
CREATE OR REPLACE FUNCTION billing.apply_ledger_event(p_id text, OUT outcome text, OUT tie boolean, OUT tenant_id uuid, OUT error text)
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
        outcome := 'failed';
        error := SQLSTATE || ': ' || SQLERRM;
    END;
    PERFORM pg_catalog.set_config('app.tenant_id', coalesce(v_prev_tenant, ''), true);
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
-- Linking by the sync role
-- ---------------------------------------------------------------------------------------------

-- Links a Stripe customer to the tenant the caller names and applies the customer's deferred
-- events; returns how many. For the server code that has just created the customer through
-- Stripe's API (it knows which tenant asked): its connection's role is a member of
-- pgstrata_billing_sync, which the application's request path does not hold. Refuses an
-- unknown or deleted tenant (PS404) and a customer linked to another tenant (PS403, without
-- naming it); linking again to the same tenant applies nothing new and is not an error.
CREATE OR REPLACE FUNCTION billing.link_customer(p_customer text, p_tenant uuid) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_prev_tenant text := current_setting('app.tenant_id', true);
    v_id text;
    v_n integer := 0;
BEGIN
    IF p_customer IS NULL OR length(p_customer) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'a Stripe customer id has 1 to 255 characters' USING ERRCODE = '22023';
    END IF;
    IF p_tenant IS NULL THEN
        RAISE EXCEPTION 'name the tenant to link Stripe customer % to', p_customer USING ERRCODE = '22023';
    END IF;
    PERFORM pg_catalog.set_config('app.tenant_id', p_tenant::text, true);
    IF NOT EXISTS (SELECT 1 FROM tenancy.tenants t WHERE t.id = p_tenant AND t.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'no tenant % to link Stripe customer % to', p_tenant, p_customer
            USING ERRCODE = 'PS404', HINT = 'Name a tenant that exists and is not deleted.';
    END IF;
    PERFORM billing.link(p_customer, p_tenant, 'sync');
    INSERT INTO billing.customers (tenant_id, id) VALUES (p_tenant, p_customer) ON CONFLICT DO NOTHING;
    -- SKIP LOCKED: see apply_ledger_event (a redelivery holding one applies it after this link).
    FOR v_id IN SELECT e.id FROM billing.events e WHERE e.customer_id = p_customer AND e.status = 'deferred'
                 ORDER BY e.created, e.id FOR UPDATE SKIP LOCKED LOOP
        PERFORM billing.apply_ledger_event(v_id);
        v_n := v_n + 1;
    END LOOP;
    PERFORM pg_catalog.set_config('app.tenant_id', coalesce(v_prev_tenant, ''), true);
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION billing.link_customer(text, uuid) IS
    'Links a Stripe customer to a tenant (sync role: server code that just created the customer) and applies its deferred events';

-- V1's entry point, which linked to the tenant in context: any tenant could claim any unlinked
-- customer. It stays so that callers get a clear error, runs as the caller and links nothing.
CREATE OR REPLACE FUNCTION billing.link_customer(p_customer text) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'billing.link_customer(customer) no longer links Stripe customer %: the tenant in context is no proof that the customer is its own',
            p_customer
        USING ERRCODE = '42501',
              HINT = 'Set metadata.tenant_id when creating the customer (or metadata.tenant_id or client_reference_id on the checkout session), '
                     'or call billing.link_customer(customer, tenant) as a member of pgstrata_billing_sync from the server code that created it.';
END
$$;
COMMENT ON FUNCTION billing.link_customer(text) IS
    'Refuses (42501): linking needs a signed source or the sync role; see billing.link_customer(text, uuid)';

REVOKE EXECUTE ON FUNCTION billing.link_customer(text, uuid), billing.named_tenant(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.link_customer(text, uuid) TO pgstrata_billing_sync;

-- ---------------------------------------------------------------------------------------------
-- Rows written before these rules: reported, kept.
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    v_explicit bigint;
    v_disputed bigint;
BEGIN
    SELECT count(*) INTO v_explicit FROM billing.customer_links l WHERE l.source = 'explicit';
    -- Explicit links contradicted by the tenant the customer's own metadata names (its events
    -- then failed with PS403): the likeliest claims of another tenant's customer.
    SELECT count(DISTINCT l.customer_id) INTO v_disputed
      FROM billing.customer_links l
      JOIN billing.events e ON e.customer_id = l.customer_id AND e.object_type = 'customer'
     WHERE l.source = 'explicit'
       AND nullif(e.payload -> 'data' -> 'object' -> 'metadata' ->> 'tenant_id', '') IS DISTINCT FROM l.tenant_id::text
       AND nullif(e.payload -> 'data' -> 'object' -> 'metadata' ->> 'tenant_id', '') IS NOT NULL;
    IF v_explicit > 0 THEN
        RAISE WARNING 'billing V2: % Stripe customer link(s) were made by billing.link_customer(customer), which any tenant could call; '
                      'they are kept with source = ''explicit''; % of them contradict the customer''s metadata.tenant_id. '
                      'Check them against Stripe: SELECT customer_id, tenant_id, linked_at FROM billing.customer_links WHERE source = ''explicit''',
                      v_explicit, v_disputed;
    END IF;
END
$$;
