-- eventstore V1: an append-only log of domain events, one gapless version per stream and one
-- global position, with expected-version appends and subscriptions that never skip a late
-- commit.
--
-- - eventstore.streams holds one row per stream and tenant: its version (the number of events
--   it has, so also the version of its last event) and the ordering transaction id of its last
--   event. An append locks this row (SELECT ... FOR UPDATE) before it compares the expected
--   version, so concurrent appenders to one stream queue on the row, the first wins and every
--   later one sees the new version and is refused with PS409 (DETAIL current_version=N). The
--   lock is what makes versions gapless; a write-back of the version without it is the bug that
--   wedged streams in Marten (D-186).
-- - eventstore.events holds the events: the stream, its version in the stream, a global
--   position (an identity: it has gaps where a transaction aborted, and transactions commit
--   out of its order), the type, data and metadata (causation, correlation, actor and request
--   id; the last two from the transaction's context, never from the caller).
-- - Readers that follow the log across transactions (subscriptions, projections) do not read by
--   position: a position taken by a transaction that commits later than a bigger one would be
--   skipped. They read by (txid, position) and only below the xmin horizon of their snapshot,
--   where every transaction has ended (D-187). txid is the appending transaction's id, raised to
--   the stream's previous event's txid when that is bigger, so that a stream's events are in
--   version order in (txid, position) order too (D-188).
-- - The request path appends only through eventstore.append (SECURITY DEFINER) and reads its
--   tenant's events; eventstore.append_any (no expected version) is the operator's. The worker
--   reads every tenant's events and keeps the subscriptions' checkpoints.

CREATE SCHEMA IF NOT EXISTS eventstore;
COMMENT ON SCHEMA eventstore IS 'pgstrata eventstore: event-sourced streams with expected-version appends and gap-safe subscriptions';
GRANT USAGE ON SCHEMA eventstore TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- ---------------------------------------------------------------------------------------------
-- Streams and events
-- ---------------------------------------------------------------------------------------------

CREATE TABLE eventstore.streams (
    tenant_id   uuid        NOT NULL,
    -- `category-id` (Message DB's convention): the category is the part before the first '-'.
    stream      text        NOT NULL,
    -- The number of events in the stream, which is also the version of its last event.
    version     bigint      NOT NULL,
    -- The txid of the stream's last event; the next append orders after it (D-188).
    last_txid   xid8        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT streams_pkey PRIMARY KEY (tenant_id, stream),
    CONSTRAINT streams_version_positive CHECK (version > 0)
);
COMMENT ON TABLE eventstore.streams IS 'citus: distributed. One row per stream: its version, locked by every append';
ALTER TABLE eventstore.streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE eventstore.streams FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON eventstore.streams
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
-- Read only: a version is written by eventstore.append alone.
GRANT SELECT ON eventstore.streams TO pgstrata_app;
COMMENT ON COLUMN eventstore.streams.version IS 'The number of events in the stream, the version of its last event';
COMMENT ON COLUMN eventstore.streams.last_txid IS 'The txid of the stream''s last event; xid8, read as txid::text::bigint';

CREATE TABLE eventstore.events (
    tenant_id       uuid        NOT NULL,
    -- The caller's id (UUIDv7 by default), so a retried append of the same events is refused
    -- as a duplicate instead of stored twice.
    event_id        uuid        NOT NULL,
    stream          text        NOT NULL,
    category        text        NOT NULL GENERATED ALWAYS AS (split_part(stream, '-', 1)) STORED,
    -- 1, 2, 3, ... within the stream, without gaps.
    version         bigint      NOT NULL,
    -- Global, increasing in the order appends took it; gaps where a transaction aborted.
    position        bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    -- The ordering transaction id of the subscriptions' cursor (D-187, D-188).
    txid            xid8        NOT NULL,
    type            text        NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}',
    metadata        jsonb       NOT NULL DEFAULT '{}',
    -- The event (or command) that caused this one, and the conversation it belongs to.
    causation_id    uuid,
    correlation_id  uuid,
    -- From the transaction's context (app.actor_id, app.request_id), written by the append.
    actor_id        uuid,
    request_id      text,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (tenant_id, event_id),
    -- A stream's events in order, and the guarantee that a version is taken once.
    CONSTRAINT events_stream_version_key UNIQUE (tenant_id, stream, version),
    CONSTRAINT events_stream_format CHECK (length(stream) BETWEEN 1 AND 200 AND stream !~ '[[:cntrl:][:space:]]'),
    CONSTRAINT events_version_positive CHECK (version > 0),
    CONSTRAINT events_type_format CHECK (length(type) BETWEEN 1 AND 200 AND type !~ '[[:cntrl:]]'),
    -- The stored (binary) size; large documents belong in a table the event names.
    CONSTRAINT events_data_size CHECK (pg_column_size(data) <= 262144),
    CONSTRAINT events_data_object CHECK (jsonb_typeof(data) = 'object'),
    CONSTRAINT events_metadata_size CHECK (pg_column_size(metadata) <= 16384),
    CONSTRAINT events_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT events_request_id_length CHECK (length(request_id) <= 200)
);
COMMENT ON TABLE eventstore.events IS
    'citus: distributed. Domain events, append-only: gapless version per stream, global position, txid for gap-safe readers';
-- A tenant's whole log, and a category of it, in position order.
COMMENT ON COLUMN eventstore.events.txid IS
    'The appending transaction (pg_current_xact_id()), raised to the stream''s previous event''s; xid8, read as txid::text::bigint';
COMMENT ON COLUMN eventstore.events.version IS 'The event''s version in its stream: 1, 2, 3, ... without gaps';
COMMENT ON COLUMN eventstore.events.position IS 'Global, in the order appends took it; gaps where a transaction aborted';
COMMENT ON COLUMN eventstore.events.actor_id IS 'The acting user of the appending transaction (app.actor_id); NULL: none';
COMMENT ON COLUMN eventstore.events.request_id IS 'The request of the appending transaction (app.request_id); NULL: none';
CREATE INDEX events_tenant_position_idx ON eventstore.events (tenant_id, position);
CREATE INDEX events_tenant_category_idx ON eventstore.events (tenant_id, category, position);
-- Subscriptions across tenants: the cursor (txid, position), all categories or one.
CREATE INDEX events_txid_idx ON eventstore.events (txid, position);
CREATE INDEX events_category_txid_idx ON eventstore.events (category, txid, position);

ALTER TABLE eventstore.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE eventstore.events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON eventstore.events
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
-- Subscriptions and projections run as the worker and read every tenant's events.
CREATE POLICY worker_read ON eventstore.events FOR SELECT TO pgstrata_worker USING (true);
GRANT SELECT ON eventstore.events TO pgstrata_app, pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- Subscriptions
-- ---------------------------------------------------------------------------------------------

-- One checkpoint per subscription and generation: the (txid, position) of the last event it
-- processed. A projection rebuilds into a new generation beside the live one and swaps when
-- it has caught up (D-190). The worker locks its row for each batch, so one runner at a time
-- processes a subscription; nobody else may lock it (the app role has no UPDATE on it).
CREATE TABLE eventstore.subscriptions (
    name        text        NOT NULL,
    generation  integer     NOT NULL DEFAULT 1,
    -- NULL: every category.
    category    text,
    live        boolean     NOT NULL DEFAULT true,
    txid        xid8        NOT NULL DEFAULT '0',
    position    bigint      NOT NULL DEFAULT 0,
    events      bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_pkey PRIMARY KEY (name, generation),
    CONSTRAINT subscriptions_name_format CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    CONSTRAINT subscriptions_generation_positive CHECK (generation > 0),
    CONSTRAINT subscriptions_category_format CHECK (length(category) BETWEEN 1 AND 200)
);
COMMENT ON TABLE eventstore.subscriptions IS
    'citus: local. Checkpoints of subscriptions and projections across tenants, one live generation per name';
COMMENT ON COLUMN eventstore.subscriptions.txid IS 'The checkpoint: txid of the last event processed; xid8, read as txid::text::bigint';
COMMENT ON COLUMN eventstore.subscriptions.position IS 'The checkpoint: position of the last event processed';
CREATE UNIQUE INDEX subscriptions_live_key ON eventstore.subscriptions (name) WHERE live;
GRANT SELECT, INSERT, UPDATE, DELETE ON eventstore.subscriptions TO pgstrata_worker;
-- Read models written by a generation are read through its number (live_generation below).
GRANT SELECT ON eventstore.subscriptions TO pgstrata_app, pgstrata_operator;

-- The owner's own policy: the definer functions run as the owner; a non-superuser owner is
-- held by forced RLS otherwise. The owner is looked up, not assumed to be the migrating role.
DO $$
DECLARE
    v_owner text := (SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c
                      WHERE c.oid = 'eventstore.events'::regclass);
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['streams', 'events'] LOOP
        EXECUTE format('CREATE POLICY owner_access ON eventstore.%I TO %s USING (true) WITH CHECK (true)',
                       v_table, v_owner);
    END LOOP;
END
$$;

-- Events are facts: no UPDATE, no TRUNCATE (the streams' versions would disagree), for
-- everyone but a superuser who disables triggers. DELETE is not granted to any pgstrata role.
CREATE FUNCTION eventstore.refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'eventstore.%: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = '42501',
              HINT = 'Events are never changed: append a correcting event instead.';
END
$$;
REVOKE EXECUTE ON FUNCTION eventstore.refuse_change() FROM PUBLIC;
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON eventstore.events
    FOR EACH ROW EXECUTE FUNCTION eventstore.refuse_change();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON eventstore.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventstore.refuse_change();

-- ---------------------------------------------------------------------------------------------
-- Appending
-- ---------------------------------------------------------------------------------------------

-- The one path that writes events. p_events is a JSON array of objects:
--   {"type": "OrderPlaced", "data": {...}, "event_id": "...", "metadata": {...},
--    "causation_id": "...", "correlation_id": "..."}   (all but type optional)
-- p_expected: the stream's version the caller read (0: the stream must not exist yet), or NULL
-- for "any" (append_any only). Returns the events as stored, in order.
CREATE FUNCTION eventstore.append_checked(p_stream text, p_expected bigint, p_events jsonb)
    RETURNS TABLE (event_id uuid, version bigint, "position" bigint, txid xid8)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    v_tenant uuid := tenancy.checked_context_tenant_id();
    v_count integer;
    v_current bigint;
    v_moved xid8;
    v_txid xid8 := pg_catalog.pg_current_xact_id();
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'eventstore.append: no tenant in this transaction' USING ERRCODE = '42501';
    END IF;
    IF NOT tenancy.current_tenant_active() THEN
        RAISE EXCEPTION 'eventstore.append: the tenant is not active (suspended tenants read only)'
            USING ERRCODE = '42501';
    END IF;
    IF p_stream IS NULL OR length(p_stream) NOT BETWEEN 1 AND 200 OR p_stream ~ '[[:cntrl:][:space:]]' THEN
        RAISE EXCEPTION 'eventstore.append: a stream name is 1 to 200 characters without spaces or control characters'
            USING ERRCODE = '22023', DETAIL = 'field=stream';
    END IF;
    IF p_expected < 0 THEN
        RAISE EXCEPTION 'eventstore.append: the expected version is 0 (no stream) or more, got %', p_expected
            USING ERRCODE = '22023', DETAIL = 'field=expected_version';
    END IF;
    IF p_events IS NULL OR jsonb_typeof(p_events) <> 'array' THEN
        RAISE EXCEPTION 'eventstore.append: events must be a JSON array' USING ERRCODE = '22023', DETAIL = 'field=events';
    END IF;
    v_count := jsonb_array_length(p_events);
    -- One append holds the stream's lock while it inserts: bounded, so one caller cannot hold a
    -- stream (or fill the log) with one unbounded statement.
    IF v_count NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'eventstore.append: 1 to 1000 events per append, got %', v_count
            USING ERRCODE = '22023', DETAIL = 'field=events';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_events) e
                WHERE jsonb_typeof(e) <> 'object' OR jsonb_typeof(e -> 'type') IS DISTINCT FROM 'string') THEN
        RAISE EXCEPTION 'eventstore.append: every event is an object with a string "type"'
            USING ERRCODE = '22023', DETAIL = 'field=type';
    END IF;

    -- The stream's row, locked until commit: concurrent appenders queue here. An existing
    -- stream moves by one UPDATE, which locks the row and reads the version the previous
    -- appender committed (a refused append raises below, which undoes it). The new txid is
    -- never below the stream's last event's (D-188): a transaction whose id was taken before
    -- the last appender's still orders after it. A new stream's row is inserted; an insert
    -- that meets a concurrent one waits for it, then updates the row it committed.
    LOOP
        UPDATE eventstore.streams s
           SET version = s.version + v_count,
               last_txid = greatest(s.last_txid, v_txid),
               updated_at = now()
         WHERE s.tenant_id = v_tenant AND s.stream = p_stream
        RETURNING s.version - v_count, s.last_txid INTO v_current, v_moved;
        IF FOUND THEN
            v_txid := v_moved;
            EXIT;
        END IF;
        INSERT INTO eventstore.streams (tenant_id, stream, version, last_txid)
        VALUES (v_tenant, p_stream, v_count, v_txid)
            ON CONFLICT (tenant_id, stream) DO NOTHING;
        IF FOUND THEN
            v_current := 0;
            EXIT;
        END IF;
    END LOOP;
    IF p_expected IS NOT NULL AND p_expected <> v_current THEN
        RAISE EXCEPTION 'eventstore.append: stream % is at version %, not the expected %', p_stream, v_current, p_expected
            USING ERRCODE = 'PS409', DETAIL = format('current_version=%s', v_current),
                  HINT = 'Read the stream again, decide again, and append with the version you read.';
    END IF;

    RETURN QUERY
    INSERT INTO eventstore.events AS e
           (tenant_id, event_id, stream, version, txid, type, data, metadata,
            causation_id, correlation_id, actor_id, request_id)
    SELECT v_tenant,
           coalesce((x.value ->> 'event_id')::uuid, tenancy.uuid_v7()),
           p_stream,
           v_current + x.ordinality,
           v_txid,
           x.value ->> 'type',
           coalesce(x.value -> 'data', '{}'),
           coalesce(x.value -> 'metadata', '{}'),
           (x.value ->> 'causation_id')::uuid,
           (x.value ->> 'correlation_id')::uuid,
           tenancy.current_actor_id(),
           nullif(current_setting('app.request_id', true), '')
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(value, ordinality)
     ORDER BY x.ordinality
    RETURNING e.event_id, e.version, e.position, e.txid;
END
$$;
REVOKE EXECUTE ON FUNCTION eventstore.append_checked(text, bigint, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION eventstore.append_checked(text, bigint, jsonb) IS
    'The body of append and append_any: NULL expected version appends at any version';

-- Appends events to a stream at the version the caller read (0: a new stream). A stale
-- version is refused with PS409 and DETAIL current_version=N; nothing is written.
CREATE FUNCTION eventstore.append(p_stream text, p_expected_version bigint, p_events jsonb)
    RETURNS TABLE (event_id uuid, version bigint, "position" bigint, txid xid8)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_expected_version IS NULL THEN
        RAISE EXCEPTION 'eventstore.append: an expected version is required (0 for a new stream)'
            USING ERRCODE = '22023', DETAIL = 'field=expected_version',
                  HINT = 'Appending at any version is eventstore.append_any, for the operator.';
    END IF;
    RETURN QUERY SELECT * FROM eventstore.append_checked(p_stream, p_expected_version, p_events);
END
$$;
REVOKE EXECUTE ON FUNCTION eventstore.append(text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventstore.append(text, bigint, jsonb) TO pgstrata_app;

-- Appends whatever the stream's version (imports, repairs): the operator's, never the request
-- path's, which must say what it read (D-189).
CREATE FUNCTION eventstore.append_any(p_stream text, p_events jsonb)
    RETURNS TABLE (event_id uuid, version bigint, "position" bigint, txid xid8)
    LANGUAGE sql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT * FROM eventstore.append_checked(p_stream, NULL, p_events)
$$;
REVOKE EXECUTE ON FUNCTION eventstore.append_any(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventstore.append_any(text, jsonb) TO pgstrata_operator;

-- ---------------------------------------------------------------------------------------------
-- Reading past the horizon
-- ---------------------------------------------------------------------------------------------

-- The next events of a subscription: after its checkpoint in (txid, position) order, and only
-- below the xmin horizon of this statement's snapshot, where every transaction has committed or
-- aborted, so none can still add an event before the cursor (D-187). A long transaction anywhere
-- on the server holds the horizon back: the subscription waits, and loses nothing.
-- p_txid/p_position: the checkpoint; p_category NULL reads every category.
CREATE FUNCTION eventstore.read_after(p_txid xid8, p_position bigint, p_category text, p_limit integer)
    RETURNS SETOF eventstore.events
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_txid IS NULL OR p_position IS NULL OR p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'eventstore.read_after: a checkpoint and a limit of 1 to 10000 are required'
            USING ERRCODE = '22023', DETAIL = 'field=limit';
    END IF;
    -- Two statements rather than one with `category IS NULL OR ...`, so each has its index.
    IF p_category IS NULL THEN
        RETURN QUERY
        SELECT e.* FROM eventstore.events e
         WHERE (e.txid, e.position) > (p_txid, p_position)
           AND e.txid < pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
         ORDER BY e.txid, e.position
         LIMIT p_limit;
    ELSE
        -- Ordered by the category too (one value here, so the same order): the category's
        -- index then reads in order, whatever plan PL/pgSQL caches for the parameter.
        RETURN QUERY
        SELECT e.* FROM eventstore.events e
         WHERE e.category = p_category
           AND (e.txid, e.position) > (p_txid, p_position)
           AND e.txid < pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
         ORDER BY e.category, e.txid, e.position
         LIMIT p_limit;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION eventstore.read_after(xid8, bigint, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventstore.read_after(xid8, bigint, text, integer) TO pgstrata_worker;

-- The generation of a projection's read models that readers should use (NULL: none live).
CREATE FUNCTION eventstore.live_generation(p_name text) RETURNS integer
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT s.generation FROM eventstore.subscriptions s WHERE s.name = p_name AND s.live
$$;
GRANT EXECUTE ON FUNCTION eventstore.live_generation(text) TO pgstrata_app, pgstrata_worker, pgstrata_operator;

DO $$
BEGIN
    PERFORM tenancy.enforce_tenant_status('eventstore.streams');
    PERFORM tenancy.enforce_tenant_status('eventstore.events');
END
$$;
