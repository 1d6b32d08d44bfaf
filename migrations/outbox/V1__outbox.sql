-- outbox V1: a transactional outbox. The application publishes messages in its business
-- transaction; relays deliver every committed message to sinks, in order per aggregate key,
-- at least once, never skipping a transaction that commits late.
--
-- - outbox.messages holds one row per message, Debezium's columns (aggregate_type,
--   aggregate_id, event_type, payload) plus the writer's transaction id (txid, xid8) and the
--   hash partition of its aggregate key.
-- - Reading below the horizon: a relay reads only messages whose txid is below the xmin of its
--   statement's snapshot (pg_snapshot_xmin(pg_current_snapshot())): every transaction below it
--   has ended, so a message that commits later can never land behind the relay's position.
--   A cursor on a sequence (WHERE id > last) skips such late commits; this one cannot.
-- - Order per aggregate key: messages are delivered in (txid, id) order. xid order is not
--   commit order, so outbox.publish keeps one row per key (outbox.heads) holding the last
--   publisher's txid, locked until its transaction ends; a transaction whose txid is older
--   than a committed publisher of the same key is refused with 40001 (run it again: the retry
--   gets a newer txid). Within a key, txid order is then commit order.
-- - Sharing: 32 hash partitions of (tenant, aggregate_type, aggregate_id). Each sink has one
--   checkpoint row per partition; a relay holds a partition by locking its row (FOR UPDATE
--   SKIP LOCKED) for the transaction that delivers the batch and moves the checkpoint, so two
--   relays never hold one key at once, and a relay that dies releases its partitions at once
--   (its transaction aborts, its checkpoints stay where they were).
-- - Retention: outbox.cleanup deletes messages every sink has passed and older than a cutoff.

CREATE SCHEMA IF NOT EXISTS outbox;
COMMENT ON SCHEMA outbox IS 'pgstrata outbox: messages published in the business transaction, relayed in order per key';
GRANT USAGE ON SCHEMA outbox TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- ---------------------------------------------------------------------------------------------
-- Messages
-- ---------------------------------------------------------------------------------------------

CREATE TABLE outbox.messages (
    tenant_id       uuid        NOT NULL,
    -- Unique across tenants: the id a sink deduplicates redeliveries by.
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    -- The publishing transaction. Relays read below the snapshot's xmin in (txid, id) order.
    txid            xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    -- outbox.partition_of(tenant_id, aggregate_type, aggregate_id): which checkpoint row
    -- orders it.
    partition       smallint    NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    -- When the publish ran (not when its transaction began), for retention and latency.
    published_at    timestamptz NOT NULL DEFAULT pg_catalog.statement_timestamp(),
    CONSTRAINT messages_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT messages_aggregate_type_format CHECK (length(aggregate_type) BETWEEN 1 AND 255 AND aggregate_type !~ '[[:cntrl:]]'),
    CONSTRAINT messages_aggregate_id_format CHECK (length(aggregate_id) BETWEEN 1 AND 255 AND aggregate_id !~ '[[:cntrl:]]'),
    CONSTRAINT messages_event_type_format CHECK (length(event_type) BETWEEN 1 AND 255 AND event_type !~ '[[:cntrl:]]'),
    -- The stored (binary) size: a message is a notification, not a blob store.
    CONSTRAINT messages_payload_size CHECK (pg_column_size(payload) <= 262144),
    CONSTRAINT messages_partition_range CHECK (partition BETWEEN 0 AND 31)
);
COMMENT ON TABLE outbox.messages IS
    'citus: local. Outbox messages; relays read them across tenants by partition in (txid, id) order';
-- The relays' read: one partition, above its checkpoint, below the horizon, in order.
CREATE INDEX messages_relay_idx ON outbox.messages (partition, txid, id);
-- Retention scans by time.
CREATE INDEX messages_published_brin ON outbox.messages USING brin (published_at);

ALTER TABLE outbox.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox.messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox.messages
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
-- Relays read every tenant's messages; cleanup deletes delivered ones. Never insert or update.
CREATE POLICY worker_relay ON outbox.messages FOR SELECT TO pgstrata_worker USING (true);
CREATE POLICY worker_cleanup ON outbox.messages FOR DELETE TO pgstrata_worker USING (true);
-- The request path reads its tenant's messages; it writes only through outbox.publish.
GRANT SELECT ON outbox.messages TO pgstrata_app;
GRANT SELECT, DELETE ON outbox.messages TO pgstrata_worker;

-- The last publisher of each aggregate key. Written only by outbox.publish, whose upsert locks
-- the row until the publishing transaction ends: writers of one key queue behind each other.
CREATE TABLE outbox.heads (
    tenant_id       uuid NOT NULL,
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    last_txid       xid8 NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT pg_catalog.statement_timestamp(),
    CONSTRAINT heads_pkey PRIMARY KEY (tenant_id, aggregate_type, aggregate_id)
);
COMMENT ON TABLE outbox.heads IS
    'citus: distributed. The last publishing transaction of each aggregate key, which keeps txid order equal to commit order per key';
ALTER TABLE outbox.heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox.heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox.heads
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
-- Cleanup forgets keys idle past the retention.
CREATE POLICY worker_cleanup ON outbox.heads FOR ALL TO pgstrata_worker USING (true) WITH CHECK (false);
GRANT SELECT, DELETE ON outbox.heads TO pgstrata_worker;

-- The partition of an aggregate key: 32 partitions, the most relays one sink can use at once.
CREATE FUNCTION outbox.partition_of(p_tenant_id uuid, p_aggregate_type text, p_aggregate_id text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    SET search_path = pg_catalog, pg_temp
    RETURN (pg_catalog.hashtextextended(p_tenant_id::text || '/' || p_aggregate_type || '/' || p_aggregate_id, 0) & 31)::smallint;
COMMENT ON FUNCTION outbox.partition_of(uuid, text, text) IS
    'The hash partition (0..31) of an aggregate key: its messages are relayed in order by one relay at a time';
REVOKE EXECUTE ON FUNCTION outbox.partition_of(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.partition_of(uuid, text, text) TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- Publishes a message in the transaction's tenant and returns its id. Runs as the owner: the
-- request path has no write privilege on the tables, so it cannot forge a txid, a partition
-- or a head. Refused: no tenant in context or a suspended one (42501), bad fields (23514 by
-- constraint), and a transaction older than the key's last committed publisher (40001).
CREATE FUNCTION outbox.publish(
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
COMMENT ON FUNCTION outbox.publish(text, text, text, jsonb) IS
    'Publishes a message of the context''s tenant in the caller''s transaction; returns its id';
REVOKE EXECUTE ON FUNCTION outbox.publish(text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.publish(text, text, text, jsonb) TO pgstrata_app, pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- Sinks and checkpoints
-- ---------------------------------------------------------------------------------------------

CREATE TABLE outbox.sinks (
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sinks_pkey PRIMARY KEY (name),
    CONSTRAINT sinks_name_format CHECK (name ~ '^[a-z0-9][a-z0-9_.:-]{0,99}$')
);
COMMENT ON TABLE outbox.sinks IS 'citus: reference. The sinks the relays deliver to; each keeps its own checkpoints';

-- One row per sink and partition: how far the sink has been delivered, in (txid, id) order.
-- A relay holds a partition by locking this row for the transaction that delivers and moves it.
CREATE TABLE outbox.checkpoints (
    sink        text        NOT NULL,
    partition   smallint    NOT NULL,
    after_txid  xid8        NOT NULL DEFAULT '0',
    after_id    bigint      NOT NULL DEFAULT 0,
    delivered   bigint      NOT NULL DEFAULT 0,
    -- When a relay last held it: relays take the least recently served partitions first.
    served_at   timestamptz NOT NULL DEFAULT '-infinity',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT checkpoints_pkey PRIMARY KEY (sink, partition),
    CONSTRAINT checkpoints_sink_fkey FOREIGN KEY (sink) REFERENCES outbox.sinks (name) ON DELETE CASCADE,
    CONSTRAINT checkpoints_partition_range CHECK (partition BETWEEN 0 AND 31)
);
COMMENT ON TABLE outbox.checkpoints IS
    'citus: reference. Per sink and partition, the last delivered (txid, id); locked by the relay delivering it';

GRANT SELECT, INSERT ON outbox.sinks TO pgstrata_worker;
GRANT SELECT, INSERT, UPDATE ON outbox.checkpoints TO pgstrata_worker;
GRANT SELECT ON outbox.sinks, outbox.checkpoints TO pgstrata_operator;

-- Registers a sink (idempotent) with its 32 checkpoints at the start of the retained messages.
CREATE FUNCTION outbox.register_sink(p_name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO outbox.sinks (name) VALUES (p_name) ON CONFLICT ON CONSTRAINT sinks_pkey DO NOTHING;
    INSERT INTO outbox.checkpoints (sink, partition)
    SELECT p_name, p::smallint FROM pg_catalog.generate_series(0, 31) p
    ON CONFLICT ON CONSTRAINT checkpoints_pkey DO NOTHING;
END
$$;
REVOKE EXECUTE ON FUNCTION outbox.register_sink(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.register_sink(text) TO pgstrata_worker;

-- Holds up to p_partitions of the sink's partitions that no other relay holds (their rows stay
-- locked until the caller's transaction ends) and returns up to p_limit messages of each,
-- above its checkpoint and below the horizon, in (partition, txid, id) order. Must run at
-- READ COMMITTED, so that the read's snapshot is taken after the horizon it compares with.
CREATE FUNCTION outbox.claim(p_sink text, p_partitions integer, p_limit integer)
    RETURNS TABLE (partition smallint, tenant_id uuid, id bigint, txid bigint, aggregate_type text,
                   aggregate_id text, event_type text, payload jsonb, published_at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    v_parts smallint[];
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'outbox.claim must run at READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25000';
    END IF;
    IF p_partitions IS NULL OR p_partitions NOT BETWEEN 1 AND 32 THEN
        RAISE EXCEPTION 'outbox.claim: partitions must be 1 to 32, got %', p_partitions
            USING ERRCODE = '22023', DETAIL = 'field=partitions';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'outbox.claim: limit must be 1 to 10000, got %', p_limit
            USING ERRCODE = '22023', DETAIL = 'field=limit';
    END IF;
    WITH held AS (
        SELECT c.partition FROM outbox.checkpoints c
         WHERE c.sink = p_sink
         ORDER BY c.served_at, c.partition
         LIMIT p_partitions
           FOR UPDATE SKIP LOCKED),
    served AS (
        UPDATE outbox.checkpoints c SET served_at = clock_timestamp()
          FROM held WHERE c.sink = p_sink AND c.partition = held.partition
        RETURNING c.partition)
    SELECT array_agg(served.partition) INTO v_parts FROM served;
    -- The horizon and the read are one statement, so they share one snapshot: every
    -- transaction below its xmin has ended and its messages are visible to it.
    RETURN QUERY
        SELECT m.partition, m.tenant_id, m.id, m.txid::text::bigint, m.aggregate_type, m.aggregate_id,
               m.event_type, m.payload, m.published_at
          FROM outbox.checkpoints c
         CROSS JOIN LATERAL (
               SELECT m.* FROM outbox.messages m
                WHERE m.partition = c.partition
                  AND (m.txid, m.id) > (c.after_txid, c.after_id)
                  AND m.txid < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY m.txid, m.id
                LIMIT p_limit) m
         WHERE c.sink = p_sink AND c.partition = ANY (v_parts)
         ORDER BY m.partition, m.txid, m.id;
END
$$;
REVOKE EXECUTE ON FUNCTION outbox.claim(text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.claim(text, integer, integer) TO pgstrata_worker;

-- Moves the checkpoints of partitions the caller's transaction delivered (and holds, from
-- outbox.claim) to the last delivered (txid, id) of each. Guarded: a checkpoint only moves
-- forward. Returns how many checkpoints moved.
CREATE FUNCTION outbox.ack(p_sink text, p_partitions smallint[], p_txids bigint[], p_ids bigint[], p_counts integer[])
    RETURNS integer
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        WITH moved AS (
            UPDATE outbox.checkpoints c
               SET after_txid = a.txid::text::xid8, after_id = a.id, delivered = c.delivered + a.n,
                   updated_at = now()
              FROM unnest(p_partitions, p_txids, p_ids, p_counts) AS a(partition, txid, id, n)
             WHERE c.sink = p_sink AND c.partition = a.partition
               AND (c.after_txid, c.after_id) < (a.txid::text::xid8, a.id)
            RETURNING 1)
        SELECT count(*)::integer FROM moved;
    END;
REVOKE EXECUTE ON FUNCTION outbox.ack(text, smallint[], bigint[], bigint[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.ack(text, smallint[], bigint[], bigint[], integer[]) TO pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- Retention and health
-- ---------------------------------------------------------------------------------------------

-- Deletes up to p_limit messages published before now() - p_older_than that every registered
-- sink has passed, and forgets the heads of keys idle as long (only those below the horizon:
-- every later publisher of the key has a newer txid). Returns the messages deleted.
-- Old messages are found through the BRIN index on published_at. With a LIMIT the planner
-- guesses that a sequential scan meets old rows first, which stops being true once vacuum lets
-- new rows fill the space of deleted ones: the function turns sequential scans off.
CREATE FUNCTION outbox.cleanup(p_older_than interval, p_limit integer DEFAULT 10000) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    AS $$
DECLARE
    v_deleted integer;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' THEN
        RAISE EXCEPTION 'outbox.cleanup: older_than must be zero or more, got %', p_older_than
            USING ERRCODE = '22023', DETAIL = 'field=older_than';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'outbox.cleanup: limit must be 1 to 1000000, got %', p_limit
            USING ERRCODE = '22023', DETAIL = 'field=limit';
    END IF;
    WITH doomed AS (
        SELECT m.tenant_id, m.id
          FROM outbox.messages m
         WHERE m.published_at < now() - p_older_than
           AND NOT EXISTS (SELECT 1 FROM outbox.checkpoints c
                            WHERE c.partition = m.partition AND (c.after_txid, c.after_id) < (m.txid, m.id))
         LIMIT p_limit)
    DELETE FROM outbox.messages m USING doomed
     WHERE m.tenant_id = doomed.tenant_id AND m.id = doomed.id;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    DELETE FROM outbox.heads h
     WHERE h.published_at < now() - p_older_than
       AND h.last_txid < pg_snapshot_xmin(pg_current_snapshot());
    RETURN v_deleted;
END
$$;
REVOKE EXECUTE ON FUNCTION outbox.cleanup(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.cleanup(interval, integer) TO pgstrata_worker;

-- What holds the relays back: the oldest running transaction (the horizon, xid) while committed
-- messages wait above it. One row when messages wait: how many, since when (the oldest one's
-- publish), and the backend running that transaction when it is visible. No row otherwise.
CREATE FUNCTION outbox.held_back()
    RETURNS TABLE (xid bigint, pid integer, messages bigint, oldest timestamptz, held_seconds double precision)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        WITH horizon AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x),
        waiting AS (
            SELECT sum(w.n)::bigint AS n, min(w.oldest) AS oldest
              FROM horizon, generate_series(0, 31) p
             CROSS JOIN LATERAL (
                   SELECT count(*) AS n, min(m.published_at) AS oldest
                     FROM outbox.messages m
                    WHERE m.partition = p AND m.txid >= horizon.x) w)
        SELECT horizon.x::text::bigint,
               (SELECT a.pid FROM pg_stat_activity a
                 WHERE a.backend_xid::text = (horizon.x::text::numeric % 4294967296)::text LIMIT 1),
               waiting.n, waiting.oldest,
               extract(epoch FROM clock_timestamp() - waiting.oldest)::double precision
          FROM horizon, waiting
         WHERE waiting.n > 0;
    END;
REVOKE EXECUTE ON FUNCTION outbox.held_back() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.held_back() TO pgstrata_worker;

-- Per sink: messages delivered, and the oldest checkpoint move (a stalled relay shows here).
CREATE FUNCTION outbox.sink_stats()
    RETURNS TABLE (sink text, delivered bigint, last_delivery timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        SELECT c.sink, sum(c.delivered)::bigint, max(c.updated_at)
          FROM outbox.checkpoints c
         GROUP BY c.sink
         ORDER BY c.sink;
    END;
REVOKE EXECUTE ON FUNCTION outbox.sink_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.sink_stats() TO pgstrata_worker, pgstrata_operator;
