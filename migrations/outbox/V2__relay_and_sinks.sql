-- outbox V2: the webhooks sink's entry point.
--
-- - outbox.send_webhooks hands a batch of one tenant's messages to the webhooks module
--   (webhooks.send, one message each) in the relay's transaction, so a message becomes a
--   webhook exactly when the relay's checkpoint moves past it (D-220). The relay runs as
--   pgstrata_worker, to which the webhooks module grants neither webhooks.send nor the inserts
--   it makes (the request path sends); this function runs them as the owner, for the tenant
--   in the transaction's context, and only pgstrata_worker may call it. The webhooks module is
--   optional: the body resolves webhooks.send when it runs, and says so when it is missing.

-- Sends one webhook per element of the arrays (event type, payload bytes, idempotency key), in
-- order, for the tenant in context; returns how many it handed over. Refused: no tenant in
-- context (42501), arrays of different lengths (22023 field=batch), no webhooks module (42883).
-- What webhooks.send refuses (an event type, a payload over the limit, a key reused for other
-- content) is raised as it raised it: the relay rolls the batch back and tries again later.
CREATE FUNCTION outbox.send_webhooks(p_event_types text[], p_payloads bytea[], p_keys text[])
    RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_n integer := coalesce(cardinality(p_event_types), 0);
    v_type text;
    v_payload bytea;
    v_key text;
    v_send regprocedure := pg_catalog.to_regprocedure('webhooks.send(pg_catalog.text, pg_catalog.bytea, pg_catalog.text)');
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'outbox.send_webhooks needs a tenant in context (app.tenant_id)' USING ERRCODE = '42501';
    END IF;
    IF v_n <> coalesce(cardinality(p_payloads), 0) OR v_n <> coalesce(cardinality(p_keys), 0) THEN
        RAISE EXCEPTION 'outbox.send_webhooks: % event types, % payloads, % keys: one of each per message',
            v_n, coalesce(cardinality(p_payloads), 0), coalesce(cardinality(p_keys), 0)
            USING ERRCODE = '22023', DETAIL = 'field=batch';
    END IF;
    IF v_n > 10000 THEN
        RAISE EXCEPTION 'outbox.send_webhooks: at most 10000 messages per call, got %', v_n
            USING ERRCODE = '22023', DETAIL = 'field=batch';
    END IF;
    IF v_send IS NULL THEN
        RAISE EXCEPTION 'outbox.send_webhooks: the webhooks module is not installed'
            USING ERRCODE = '42883', HINT = 'Migrate the webhooks module, or use another sink.';
    END IF;
    FOR v_type, v_payload, v_key IN
        SELECT x.event_type, x.payload, x.key
          FROM unnest(p_event_types, p_payloads, p_keys) WITH ORDINALITY AS x(event_type, payload, key, n)
         ORDER BY x.n
    LOOP
        -- Called through the procedure resolved above: the body names no object of a module
        -- that may be absent, so it is created (and checked) without it.
        EXECUTE format('SELECT %s($1, $2, $3)', v_send::oid::regproc) USING v_type, v_payload, v_key;
    END LOOP;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION outbox.send_webhooks(text[], bytea[], text[]) IS
    'The webhooks sink: webhooks.send of each message, as the owner, for the tenant in context (pgstrata_worker only)';
REVOKE EXECUTE ON FUNCTION outbox.send_webhooks(text[], bytea[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.send_webhooks(text[], bytea[], text[]) TO pgstrata_worker;
