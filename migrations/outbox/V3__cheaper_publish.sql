-- outbox V3: a cheaper publish, same guarantees and same errors (D-233).
--
-- - outbox.partition_of loses its SET search_path. A SET clause keeps PostgreSQL from inlining
--   a SQL function and saves and restores the setting on every call: 17 of publish's 68 µs
--   (D-224). Its body is a SQL-standard body (RETURN), whose names were resolved when it was
--   created, and it names only pg_catalog: inlined into publish it is that function's own
--   expression, and called directly it runs as its caller (D-046's exception for one-expression
--   IMMUTABLE helpers). The hash is unchanged, so every stored partition stays right.
-- - outbox.messages loses its five CHECK constraints. PostgreSQL reads and compiles a table's
--   CHECKs for every statement that writes it (D-064, D-203): a third of publish's instructions.
--   outbox.publish is the table's only writer (no role but the owner has INSERT or UPDATE), so
--   it checks the same rules itself, the common case in one expression, and refuses with the
--   same SQLSTATE (23514) naming the constraint that used to refuse it, so clients that map
--   constraint names keep working. The partition comes from partition_of (& 31), always 0..31.

ALTER FUNCTION outbox.partition_of(uuid, text, text) RESET search_path;

ALTER TABLE outbox.messages
    DROP CONSTRAINT messages_aggregate_type_format,
    DROP CONSTRAINT messages_aggregate_id_format,
    DROP CONSTRAINT messages_event_type_format,
    DROP CONSTRAINT messages_payload_size,
    DROP CONSTRAINT messages_partition_range;
COMMENT ON TABLE outbox.messages IS
    'citus: local. Outbox messages; relays read them across tenants by partition in (txid, id) order. Written by outbox.publish only, which checks the fields';

-- Publishes a message in the transaction's tenant and returns its id. Runs as the owner: the
-- request path has no write privilege on the tables, so it cannot forge a txid, a partition
-- or a head. Refused: no tenant in context or a suspended one (42501), a NULL payload (22023),
-- bad fields (23514, CONSTRAINT the rule's name, DETAIL field=<name>), and a transaction older
-- than the key's last committed publisher (40001).
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
    v_field text;
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
    -- The fields' rules, in one expression: each name 1 to 255 characters without control
    -- characters, the payload at most 256 KiB stored. Only when it fails is the field found.
    -- A NULL name leaves the expression NULL and is refused by the NOT NULL columns below.
    IF NOT (length(p_aggregate_type) BETWEEN 1 AND 255
            AND length(p_aggregate_id) BETWEEN 1 AND 255
            AND length(p_event_type) BETWEEN 1 AND 255
            AND p_aggregate_type || p_aggregate_id || p_event_type !~ '[[:cntrl:]]'
            AND pg_column_size(p_payload) <= 262144) THEN
        v_field := CASE
            WHEN NOT (length(p_aggregate_type) BETWEEN 1 AND 255 AND p_aggregate_type !~ '[[:cntrl:]]') THEN 'aggregate_type'
            WHEN NOT (length(p_aggregate_id) BETWEEN 1 AND 255 AND p_aggregate_id !~ '[[:cntrl:]]') THEN 'aggregate_id'
            WHEN NOT (length(p_event_type) BETWEEN 1 AND 255 AND p_event_type !~ '[[:cntrl:]]') THEN 'event_type'
            ELSE 'payload' END;
        IF v_field = 'payload' THEN
            RAISE EXCEPTION 'outbox.publish: the payload is % bytes (pg_column_size), more than 262144', pg_column_size(p_payload)
                USING ERRCODE = '23514', CONSTRAINT = 'messages_payload_size', SCHEMA = 'outbox', TABLE = 'messages',
                      DETAIL = 'field=payload';
        END IF;
        RAISE EXCEPTION 'outbox.publish: % must be 1 to 255 characters without control characters', v_field
            USING ERRCODE = '23514', CONSTRAINT = format('messages_%s_format', v_field), SCHEMA = 'outbox',
                  TABLE = 'messages', DETAIL = 'field=' || v_field;
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
    -- partition_of is inlined here (it has no SET clause): the hash is part of this statement.
    INSERT INTO outbox.messages (tenant_id, txid, partition, aggregate_type, aggregate_id, event_type, payload)
    VALUES (v_tenant, v_txid, outbox.partition_of(v_tenant, p_aggregate_type, p_aggregate_id),
            p_aggregate_type, p_aggregate_id, p_event_type, p_payload)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
