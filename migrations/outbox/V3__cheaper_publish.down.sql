-- outbox V3 down: partition_of pinned again, the five CHECK constraints of outbox.messages, and
-- V1's publish (which leaves the fields' rules to them). The rows published under V3 met the
-- same rules in publish, so the constraints validate.

ALTER FUNCTION outbox.partition_of(uuid, text, text) SET search_path = pg_catalog, pg_temp;

ALTER TABLE outbox.messages
    ADD CONSTRAINT messages_aggregate_type_format CHECK (length(aggregate_type) BETWEEN 1 AND 255 AND aggregate_type !~ '[[:cntrl:]]'),
    ADD CONSTRAINT messages_aggregate_id_format CHECK (length(aggregate_id) BETWEEN 1 AND 255 AND aggregate_id !~ '[[:cntrl:]]'),
    ADD CONSTRAINT messages_event_type_format CHECK (length(event_type) BETWEEN 1 AND 255 AND event_type !~ '[[:cntrl:]]'),
    ADD CONSTRAINT messages_payload_size CHECK (pg_column_size(payload) <= 262144),
    ADD CONSTRAINT messages_partition_range CHECK (partition BETWEEN 0 AND 31);
COMMENT ON TABLE outbox.messages IS
    'citus: local. Outbox messages; relays read them across tenants by partition in (txid, id) order';

CREATE OR REPLACE FUNCTION outbox.publish(
    p_aggregate_type text,
    p_aggregate_id text,
    p_event_type text,
    p_payload jsonb
) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_txid xid8 := pg_catalog.pg_current_xact_id();
    v_head xid8;
    v_id bigint;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'outbox.publish needs a tenant in context (app.tenant_id)' USING ERRCODE = '42501';
    END IF;
    IF NOT tenancy.current_tenant_active() THEN
        RAISE EXCEPTION 'outbox.publish: the tenant is not active' USING ERRCODE = '42501';
    END IF;
    IF p_payload IS NULL THEN
        RAISE EXCEPTION 'outbox.publish: payload must not be NULL' USING ERRCODE = '22023', DETAIL = 'field=payload';
    END IF;
    -- The key's head, locked until this transaction ends. A newer transaction that committed
    -- a message of this key first would be delivered after this one in txid order: refuse.
    INSERT INTO outbox.heads AS h (tenant_id, aggregate_type, aggregate_id, last_txid)
    VALUES (v_tenant, p_aggregate_type, p_aggregate_id, v_txid)
    ON CONFLICT ON CONSTRAINT heads_pkey DO UPDATE
        SET last_txid = EXCLUDED.last_txid, published_at = EXCLUDED.published_at
        WHERE h.last_txid <= EXCLUDED.last_txid
    RETURNING h.last_txid INTO v_head;
    IF v_head IS NULL THEN
        RAISE EXCEPTION 'outbox.publish: a newer transaction already published for this aggregate; run the transaction again'
            USING ERRCODE = '40001',
                  DETAIL = format('aggregate_type=%s aggregate_id=%s', p_aggregate_type, p_aggregate_id);
    END IF;
    INSERT INTO outbox.messages (tenant_id, txid, partition, aggregate_type, aggregate_id, event_type, payload)
    VALUES (v_tenant, v_txid, outbox.partition_of(v_tenant, p_aggregate_type, p_aggregate_id),
            p_aggregate_type, p_aggregate_id, p_event_type, p_payload)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
