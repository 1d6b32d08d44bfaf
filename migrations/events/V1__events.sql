-- events V1: a product-analytics events table that ingests at COPY speed and stays cheap at a
-- billion rows.
--
-- - events.events holds one row per tracked event: the client's event id (the dedup key), its
--   name, actor (user or anonymous id), properties, the client's clock (occurred_at) and the
--   server's (received_at), plus optional session and source.
-- - Monthly range partitions on occurred_at, no DEFAULT partition (as audit: a default blocks
--   cheap attaches and collects stray rows). events.maintain creates the months an accepted
--   event can fall in (from the oldest accepted late event to months ahead) and drops expired
--   ones; doctor warns when fewer than two future months exist.
-- - Dedup: the primary key (tenant_id, occurred_at, event_id) holds the partition column, as
--   every unique index of a partitioned table must. A batch is recorded in events.batches
--   first: a retried batch is found there and skipped; a fresh one is COPYed into a temporary
--   table of the session (COPY FROM is refused on a table whose RLS applies to the caller) and
--   moved in with one plain INSERT ... SELECT; the primary key turns a partial overlap into an
--   error the client answers with INSERT ... SELECT ... ON CONFLICT DO NOTHING. See D-125.
-- - Rollups (daily counts per name, daily unique actors) are kept by one statement-level
--   trigger over the inserted rows only, so a retried or overlapping batch adds nothing twice
--   and a late event lands on its own day.
-- - Retention: whole months are dropped; a tenant's shorter retention is deleted in the
--   background (events.purge); an actor is erased through the actor index (events.erase_actor).

CREATE SCHEMA IF NOT EXISTS events;
COMMENT ON SCHEMA events IS 'pgstrata events: product-analytics events with monthly partitions, dedup and daily rollups';
GRANT USAGE ON SCHEMA events TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- ---------------------------------------------------------------------------------------------
-- Settings
-- ---------------------------------------------------------------------------------------------

-- One row. The operator (or the owner) changes it.
CREATE TABLE events.settings (
    singleton         boolean  NOT NULL DEFAULT true,
    -- Months created ahead of the current one.
    premake_months    integer  NOT NULL DEFAULT 3,
    -- Months kept; a partition is dropped once all of its month is older. NULL keeps everything.
    retention_months  integer           DEFAULT 13,
    -- How long after it occurred an event is still accepted (mobile clients buffer offline),
    -- and how far ahead of the server's clock a client's clock may run.
    accept_late_days      integer NOT NULL DEFAULT 31,
    accept_early_minutes  integer NOT NULL DEFAULT 60,
    -- When true, every tenant's event names must be in the catalog (events.global_names or the
    -- tenant's events.names).
    enforce_catalog   boolean  NOT NULL DEFAULT false,
    CONSTRAINT settings_pkey PRIMARY KEY (singleton),
    CONSTRAINT settings_singleton CHECK (singleton),
    CONSTRAINT settings_premake_range CHECK (premake_months BETWEEN 1 AND 120),
    CONSTRAINT settings_retention_range CHECK (retention_months BETWEEN 1 AND 1200),
    CONSTRAINT settings_accept_late_range CHECK (accept_late_days BETWEEN 0 AND 366),
    CONSTRAINT settings_accept_early_range CHECK (accept_early_minutes BETWEEN 0 AND 10080),
    -- A month that still accepts late events is never dropped.
    CONSTRAINT settings_retention_covers_late CHECK (retention_months IS NULL OR retention_months * 28 > accept_late_days)
);
COMMENT ON TABLE events.settings IS 'citus: reference. Partition, retention and acceptance settings of the events module (one row)';
INSERT INTO events.settings DEFAULT VALUES;
GRANT SELECT ON events.settings TO pgstrata_app, pgstrata_worker, pgstrata_operator;
GRANT UPDATE ON events.settings TO pgstrata_operator;

-- A tenant's own rules: a shorter retention (its plan's, set by the operator) and whether its
-- names must be in the catalog (the tenant's choice).
CREATE TABLE events.tenant_settings (
    tenant_id        uuid    NOT NULL,
    retention_days   integer,
    enforce_catalog  boolean NOT NULL DEFAULT false,
    CONSTRAINT tenant_settings_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT tenant_settings_retention_range CHECK (retention_days BETWEEN 1 AND 36600)
);
COMMENT ON TABLE events.tenant_settings IS 'citus: distributed. Per-tenant retention (operator) and catalog enforcement of events';
COMMENT ON COLUMN events.tenant_settings.retention_days IS
    'operator field: the tenant''s plan decides how long its events are kept; events.purge deletes older ones';
ALTER TABLE events.tenant_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.tenant_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events.tenant_settings
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT, INSERT (tenant_id, enforce_catalog), UPDATE (enforce_catalog) ON events.tenant_settings TO pgstrata_app;
-- The operator sets each tenant's retention (its plan's), across tenants, and nothing else.
CREATE POLICY operator_retention ON events.tenant_settings TO pgstrata_operator USING (true) WITH CHECK (true);
GRANT SELECT, INSERT (tenant_id, retention_days), UPDATE (retention_days) ON events.tenant_settings TO pgstrata_operator;

-- The catalog: names every tenant may use (operator), and a tenant's own.
CREATE TABLE events.global_names (
    name        text NOT NULL,
    description text,
    CONSTRAINT global_names_pkey PRIMARY KEY (name),
    CONSTRAINT global_names_name_format CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]')
);
COMMENT ON TABLE events.global_names IS 'citus: reference. Event names every tenant may track when the catalog is enforced';
GRANT SELECT ON events.global_names TO pgstrata_app, pgstrata_worker, pgstrata_operator;
GRANT INSERT, UPDATE, DELETE ON events.global_names TO pgstrata_operator;

CREATE TABLE events.names (
    tenant_id   uuid NOT NULL,
    name        text NOT NULL,
    description text,
    CONSTRAINT names_pkey PRIMARY KEY (tenant_id, name),
    CONSTRAINT names_name_format CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]')
);
COMMENT ON TABLE events.names IS 'citus: distributed. A tenant''s own event names, beside events.global_names';
ALTER TABLE events.names ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.names FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events.names
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT, INSERT, UPDATE (description), DELETE ON events.names TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- The events
-- ---------------------------------------------------------------------------------------------

CREATE TABLE events.events (
    tenant_id    uuid        NOT NULL,
    -- Generated by the client (UUIDv7 recommended) so that a retry carries the same id.
    event_id     uuid        NOT NULL,
    -- The client's clock: when the event happened. Partition key, so a late event lands in its
    -- own month and day.
    occurred_at  timestamptz NOT NULL,
    -- The server's clock: when the transaction that stored it began. Never written by clients.
    received_at  timestamptz NOT NULL DEFAULT now(),
    name         text        NOT NULL,
    -- The user id or the anonymous id, whichever the client knows.
    actor        text        NOT NULL,
    properties   jsonb       NOT NULL DEFAULT '{}',
    session_id   text,
    source       text,
    CONSTRAINT events_pkey PRIMARY KEY (tenant_id, occurred_at, event_id),
    CONSTRAINT events_name_format CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    CONSTRAINT events_actor_length CHECK (length(actor) BETWEEN 1 AND 200),
    -- The stored (binary) size; the Rust API caps the serialized JSON at 32 KiB before this.
    CONSTRAINT events_properties_size CHECK (pg_column_size(properties) <= 65536),
    CONSTRAINT events_properties_object CHECK (jsonb_typeof(properties) = 'object'),
    CONSTRAINT events_session_id_length CHECK (length(session_id) BETWEEN 1 AND 200),
    CONSTRAINT events_source_length CHECK (length(source) BETWEEN 1 AND 100)
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE events.events IS
    'citus: distributed. Product-analytics events, deduplicated by (tenant_id, occurred_at, event_id), partitioned by month';

-- Funnels and counts of one name: the steps' rows in time order, actor included so the funnel
-- reads no heap.
CREATE INDEX events_name_idx ON events.events (tenant_id, name, occurred_at) INCLUDE (actor);
-- A user's recent events (keyset on (occurred_at, event_id)), funnel steps after the first,
-- and erasure of one actor.
CREATE INDEX events_actor_idx ON events.events (tenant_id, actor, occurred_at, event_id);
-- Scans across tenants by time (retention, rollup rebuilds, operator queries): a few pages per
-- month, where a btree on the time would be as large as the table's other indexes.
CREATE INDEX events_occurred_brin ON events.events USING brin (occurred_at);

ALTER TABLE events.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events.events
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
-- The collector (events::collect): one connection ingests many tenants' batches.
CREATE POLICY worker_insert ON events.events FOR INSERT TO pgstrata_worker WITH CHECK (true);

-- Read, and append the client's columns only (received_at is the server's). No UPDATE, no
-- DELETE: erasure and retention go through their functions.
GRANT SELECT ON events.events TO pgstrata_app;
GRANT INSERT (tenant_id, event_id, occurred_at, name, actor, properties, session_id, source)
    ON events.events TO pgstrata_app, pgstrata_worker;

-- Ingested batches: a retried batch id is found here and skipped. Kept for accept_late_days (a
-- retry after that is refused anyway, or deduplicated by the primary key).
CREATE TABLE events.batches (
    tenant_id    uuid        NOT NULL,
    batch_id     uuid        NOT NULL,
    events       integer     NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT batches_pkey PRIMARY KEY (tenant_id, batch_id),
    CONSTRAINT batches_events_positive CHECK (events > 0)
);
COMMENT ON TABLE events.batches IS 'citus: distributed. Event batches ingested, per tenant: a retried batch is skipped';
CREATE INDEX batches_received_brin ON events.batches USING brin (received_at);
ALTER TABLE events.batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.batches FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events.batches
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
CREATE POLICY worker_insert ON events.batches FOR INSERT TO pgstrata_worker WITH CHECK (true);
GRANT SELECT ON events.batches TO pgstrata_app;
GRANT INSERT (tenant_id, batch_id, events) ON events.batches TO pgstrata_app, pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- Rollups, kept by events.after_insert
-- ---------------------------------------------------------------------------------------------

-- Events per tenant, UTC day and name.
CREATE TABLE events.daily_counts (
    tenant_id  uuid   NOT NULL,
    day        date   NOT NULL,
    name       text   NOT NULL,
    events     bigint NOT NULL,
    CONSTRAINT daily_counts_pkey PRIMARY KEY (tenant_id, day, name)
);
COMMENT ON TABLE events.daily_counts IS 'citus: distributed. Events per tenant, UTC day and name, kept as events are inserted';

-- The actors seen per tenant and UTC day (exact, no sketch): a new row is a new unique actor.
-- It holds actor ids, so it follows the raw events' retention and erasure.
CREATE TABLE events.daily_actors (
    tenant_id  uuid NOT NULL,
    day        date NOT NULL,
    actor      text NOT NULL,
    CONSTRAINT daily_actors_pkey PRIMARY KEY (tenant_id, day, actor)
);
COMMENT ON TABLE events.daily_actors IS 'citus: distributed. Actors seen per tenant and UTC day, the source of daily_uniques';

-- Unique actors per tenant and UTC day: the number of daily_actors rows, kept beside them so a
-- range of days reads one row per day.
CREATE TABLE events.daily_uniques (
    tenant_id  uuid   NOT NULL,
    day        date   NOT NULL,
    actors     bigint NOT NULL,
    CONSTRAINT daily_uniques_pkey PRIMARY KEY (tenant_id, day)
);
COMMENT ON TABLE events.daily_uniques IS 'citus: distributed. Unique actors per tenant and UTC day, kept as events are inserted';

DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['daily_counts', 'daily_actors', 'daily_uniques'] LOOP
        EXECUTE format('ALTER TABLE events.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('ALTER TABLE events.%I FORCE ROW LEVEL SECURITY', v_table);
        EXECUTE format('CREATE POLICY tenant_isolation ON events.%I
                            USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))', v_table);
        EXECUTE format('GRANT SELECT ON events.%I TO pgstrata_app', v_table);
    END LOOP;
END
$$;

-- The owner's own policy: the trigger and the maintenance functions run as the owner and work
-- across tenants (the collector's batches, retention). The owner is looked up, not assumed to
-- be the role running this migration; a non-superuser owner is held by forced RLS otherwise.
DO $$
DECLARE
    v_owner text := (SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c
                      WHERE c.oid = 'events.events'::regclass);
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['events', 'batches', 'daily_counts', 'daily_actors', 'daily_uniques',
                                   'tenant_settings', 'names'] LOOP
        EXECUTE format('CREATE POLICY owner_access ON events.%I TO %s USING (true) WITH CHECK (true)',
                       v_table, v_owner);
    END LOOP;
END
$$;

-- Checks what a CHECK constraint cannot (the time window is relative to the server's clock,
-- the catalog is another table) and keeps the rollups, once per statement over the rows it
-- inserted: a COPY of 10,000 events runs it once, and rows ON CONFLICT DO NOTHING skipped are
-- not in new_rows, so a retry counts nothing twice. The first bad row fails the statement, so
-- a batch is written whole or not at all. SECURITY DEFINER: the rollups are not writable by
-- the application role.
CREATE FUNCTION events.after_insert() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_settings events.settings%ROWTYPE;
    v_event_id uuid;
    v_value text;
BEGIN
    SELECT * INTO v_settings FROM events.settings s;
    SELECT n.event_id, n.occurred_at::text INTO v_event_id, v_value
      FROM new_rows n
     WHERE n.occurred_at < n.received_at - make_interval(days => v_settings.accept_late_days)
        OR n.occurred_at > n.received_at + make_interval(mins => v_settings.accept_early_minutes)
     LIMIT 1;
    IF v_event_id IS NOT NULL THEN
        RAISE EXCEPTION 'events: event % occurred at %, outside the accepted window (% day(s) before to % minute(s) after its arrival)',
                v_event_id, v_value, v_settings.accept_late_days, v_settings.accept_early_minutes
            USING ERRCODE = '22023', DETAIL = format('field=occurred_at event_id=%s', v_event_id),
                  HINT = 'Send events while they are recent, fix the client''s clock, or widen events.settings.';
    END IF;
    IF v_settings.enforce_catalog OR EXISTS (SELECT 1 FROM events.tenant_settings t WHERE t.enforce_catalog) THEN
        SELECT n.event_id, n.name INTO v_event_id, v_value
          FROM new_rows n
         WHERE (v_settings.enforce_catalog
                OR EXISTS (SELECT 1 FROM events.tenant_settings t WHERE t.tenant_id = n.tenant_id AND t.enforce_catalog))
           AND NOT EXISTS (SELECT 1 FROM events.global_names g WHERE g.name = n.name)
           AND NOT EXISTS (SELECT 1 FROM events.names c WHERE c.tenant_id = n.tenant_id AND c.name = n.name)
         LIMIT 1;
        IF v_event_id IS NOT NULL THEN
            RAISE EXCEPTION 'events: event % is named %, which is not in the catalog', v_event_id, v_value
                USING ERRCODE = '22023', DETAIL = format('field=name event_id=%s', v_event_id),
                      HINT = 'Add the name to events.names (or events.global_names), or stop enforcing the catalog.';
        END IF;
    END IF;
    -- In key order, so that concurrent batches lock the same rollup rows in the same order.
    INSERT INTO events.daily_counts AS d (tenant_id, day, name, events)
    SELECT n.tenant_id, (n.occurred_at AT TIME ZONE 'UTC')::date, n.name, count(*)
      FROM new_rows n
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, day, name) DO UPDATE SET events = d.events + excluded.events;
    WITH firsts AS (
        INSERT INTO events.daily_actors (tenant_id, day, actor)
        SELECT DISTINCT n.tenant_id, (n.occurred_at AT TIME ZONE 'UTC')::date, n.actor
          FROM new_rows n
         ORDER BY 1, 2, 3
            ON CONFLICT DO NOTHING
        RETURNING tenant_id, day
    )
    INSERT INTO events.daily_uniques AS u (tenant_id, day, actors)
    SELECT f.tenant_id, f.day, count(*) FROM firsts f GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (tenant_id, day) DO UPDATE SET actors = u.actors + excluded.actors;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION events.after_insert() FROM PUBLIC;

CREATE TRIGGER events_after_insert AFTER INSERT ON events.events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events.after_insert();

-- Refuses UPDATE (an event is a fact) and TRUNCATE (rollups would disagree) for everyone but
-- a superuser who disables triggers; DELETE goes through erase_actor and purge, which keep the
-- rollups in step.
CREATE FUNCTION events.refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'events.events: % is not allowed', TG_OP
        USING ERRCODE = '42501',
              HINT = 'Events are never changed; erase an actor with events.erase_actor, old months go with events.maintain.';
END
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events.events
    FOR EACH ROW EXECUTE FUNCTION events.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events.events
    FOR EACH STATEMENT EXECUTE FUNCTION events.refuse_change();

-- ---------------------------------------------------------------------------------------------
-- Batches
-- ---------------------------------------------------------------------------------------------

-- Records a batch for each tenant it holds (p_tenants and p_counts side by side) and says
-- whether it is new, with the server's clock and window so the client can check its events
-- before it sends them. A batch id already recorded for every tenant is a retry ('duplicate');
-- for some but not all, the id was reused for other events, which is refused. Waits for a
-- concurrent transaction recording the same batch, so of N concurrent retries one ingests.
-- SECURITY INVOKER: the caller's policies decide which tenants it may record.
CREATE FUNCTION events.begin_batch(p_batch uuid, p_tenants uuid[], p_counts integer[])
    RETURNS TABLE (fresh boolean, server_now timestamptz, accept_late_s double precision,
                   accept_early_s double precision)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_inserted bigint;
BEGIN
    IF p_batch IS NULL OR cardinality(p_tenants) IS DISTINCT FROM cardinality(p_counts)
       OR cardinality(p_tenants) IS NULL OR cardinality(p_tenants) = 0 THEN
        RAISE EXCEPTION 'events.begin_batch: a batch id and one count per tenant are required'
            USING ERRCODE = '22023', DETAIL = 'field=batch_id';
    END IF;
    INSERT INTO events.batches (tenant_id, batch_id, events)
    SELECT t.tenant_id, p_batch, t.events
      FROM unnest(p_tenants, p_counts) AS t(tenant_id, events)
     ORDER BY 1
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted > 0 AND v_inserted < cardinality(p_tenants) THEN
        RAISE EXCEPTION 'events: batch % was already ingested for other tenants', p_batch
            USING ERRCODE = '22023', DETAIL = format('field=batch_id batch_id=%s', p_batch),
                  HINT = 'A batch id names one set of events; give a new batch a new id.';
    END IF;
    RETURN QUERY
    SELECT v_inserted > 0, now(), s.accept_late_days * 86400.0::double precision,
           s.accept_early_minutes * 60.0::double precision
      FROM events.settings s;
END
$$;
REVOKE EXECUTE ON FUNCTION events.begin_batch(uuid, uuid[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.begin_batch(uuid, uuid[], integer[]) TO pgstrata_app, pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- Questions
-- ---------------------------------------------------------------------------------------------

-- A funnel of the steps, in the transaction's tenant: how many actors did step 1 within
-- [p_from, p_to), and of those how many did each next step in order, each at or after the
-- previous one and within p_window of their first step. Step 1 reads the name index of the range's
-- months; each next step probes the actor index once per remaining actor, newest months
-- pruned at run time. SECURITY INVOKER: the caller's policies apply.
CREATE FUNCTION events.funnel(p_steps text[], p_from timestamptz, p_to timestamptz, p_window interval)
    RETURNS TABLE (step integer, actors bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH RECURSIVE f (step, actor, first_at, last_at) AS (
        SELECT 1, e.actor, min(e.occurred_at), min(e.occurred_at)
          FROM events.events e
         WHERE e.tenant_id = (SELECT tenancy.current_tenant_id())
           AND e.name = p_steps[1]
           AND e.occurred_at >= p_from AND e.occurred_at < p_to
         GROUP BY e.actor
        UNION ALL
        SELECT f.step + 1, f.actor, f.first_at, n.occurred_at
          FROM f
         CROSS JOIN LATERAL (
                SELECT e.occurred_at
                  FROM events.events e
                 WHERE e.tenant_id = (SELECT tenancy.current_tenant_id())
                   AND e.actor = f.actor
                   AND e.occurred_at >= f.last_at
                   AND e.occurred_at <= f.first_at + p_window
                   AND e.name = p_steps[f.step + 1]
                   -- Events sent together share an instant; the same step twice needs a later one.
                   AND (e.occurred_at > f.last_at OR p_steps[f.step + 1] <> p_steps[f.step])
                 ORDER BY e.occurred_at
                 LIMIT 1) n
         WHERE f.step < cardinality(p_steps)
    )
    SELECT s.step, count(f.actor)
      FROM generate_series(1, cardinality(p_steps)) AS s(step)
      LEFT JOIN f ON f.step = s.step
     GROUP BY s.step
     ORDER BY s.step
$$;
GRANT EXECUTE ON FUNCTION events.funnel(text[], timestamptz, timestamptz, interval) TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Erasure and retention
-- ---------------------------------------------------------------------------------------------

-- Erases every event of one actor in the transaction's tenant (a data-subject request) and
-- takes them out of the rollups, so counts agree with the remaining events. Reads the actor
-- index of every month and deletes those rows only: no partition is rewritten. SECURITY
-- DEFINER because the application role may not delete events otherwise; the tenant is the
-- context's, so it erases nothing in another tenant. Returns how many events it erased.
CREATE FUNCTION events.erase_actor(p_actor text) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_erased bigint;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'events.erase_actor: no tenant in this transaction' USING ERRCODE = '42501';
    END IF;
    WITH gone AS (
        DELETE FROM events.events e WHERE e.tenant_id = v_tenant AND e.actor = p_actor
        RETURNING (e.occurred_at AT TIME ZONE 'UTC')::date AS day, e.name
    ), per_day AS (
        SELECT g.day, g.name, count(*) AS n FROM gone g GROUP BY 1, 2
    ), counted AS (
        UPDATE events.daily_counts d SET events = d.events - p.n
          FROM per_day p
         WHERE d.tenant_id = v_tenant AND d.day = p.day AND d.name = p.name
        RETURNING d.day
    )
    -- counted is run to completion though the query does not read it.
    SELECT coalesce(sum(p.n), 0)::bigint INTO v_erased FROM per_day p;
    DELETE FROM events.daily_counts d WHERE d.tenant_id = v_tenant AND d.events <= 0;
    WITH firsts AS (
        DELETE FROM events.daily_actors a WHERE a.tenant_id = v_tenant AND a.actor = p_actor
        RETURNING a.day
    )
    UPDATE events.daily_uniques u SET actors = u.actors - 1
      FROM firsts f
     WHERE u.tenant_id = v_tenant AND u.day = f.day;
    DELETE FROM events.daily_uniques u WHERE u.tenant_id = v_tenant AND u.actors <= 0;
    RETURN v_erased;
END
$$;
REVOKE EXECUTE ON FUNCTION events.erase_actor(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.erase_actor(text) TO pgstrata_app;

-- Per-tenant retention shorter than the global one (events.tenant_settings.retention_days):
-- deletes up to p_limit expired events per call, oldest tenant cut-off first, through the
-- primary key (tenant_id, occurred_at) of the months concerned, and the actors of those days.
-- Rollup counts are kept (they name no one). Each call is one transaction; run it until it
-- returns 0. Deleted rows leave dead tuples for vacuum, unlike a dropped month (D-127).
CREATE FUNCTION events.purge(p_limit integer DEFAULT 10000, p_now timestamptz DEFAULT now())
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant record;
    v_left bigint;
    v_n bigint;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'events.purge: the limit must be at least 1, got %', p_limit
            USING ERRCODE = '22023', DETAIL = 'field=limit';
    END IF;
    v_left := p_limit::bigint;
    FOR v_tenant IN SELECT t.tenant_id, p_now - make_interval(days => t.retention_days) AS cutoff
                      FROM events.tenant_settings t
                     WHERE t.retention_days IS NOT NULL
                     ORDER BY t.tenant_id
    LOOP
        EXIT WHEN v_left <= 0;
        DELETE FROM events.events e
         WHERE e.tenant_id = v_tenant.tenant_id
           AND (e.occurred_at, e.event_id) IN (
                SELECT x.occurred_at, x.event_id FROM events.events x
                 WHERE x.tenant_id = v_tenant.tenant_id AND x.occurred_at < v_tenant.cutoff
                 ORDER BY x.occurred_at
                 LIMIT v_left)
           AND e.occurred_at < v_tenant.cutoff;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_left := v_left - v_n;
        DELETE FROM events.daily_actors a
         WHERE a.tenant_id = v_tenant.tenant_id AND a.day < (v_tenant.cutoff AT TIME ZONE 'UTC')::date;
    END LOOP;
    RETURN p_limit - v_left;
END
$$;
REVOKE EXECUTE ON FUNCTION events.purge(integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.purge(integer, timestamptz) TO pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- Partitions (built as audit's; see D-124 for why they are not shared yet)
-- ---------------------------------------------------------------------------------------------

-- Creates the partition of the (UTC) month containing p_month, if missing; returns its name.
-- Statement triggers are not inherited, so each partition gets its own TRUNCATE guard.
CREATE FUNCTION events.create_partition(p_month date) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_name text := format('events_p%s', to_char(v_start, 'YYYYMM'));
BEGIN
    IF to_regclass(format('events.%I', v_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE events.%I PARTITION OF events.events FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_start::timestamp AT TIME ZONE 'UTC',
                       (v_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events.%I
                            FOR EACH STATEMENT EXECUTE FUNCTION events.refuse_change()', v_name);
    END IF;
    RETURN v_name;
END
$$;
REVOKE EXECUTE ON FUNCTION events.create_partition(date) FROM PUBLIC;

-- The partitions of events.events with their bounds.
CREATE FUNCTION events.partitions() RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT c.relname::text,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'events.events'::regclass
     ORDER BY 2
$$;
GRANT EXECUTE ON FUNCTION events.partitions() TO pgstrata_worker, pgstrata_operator;

-- Creates every month an accepted event can fall in: from the month of the oldest late event
-- accepted (now - accept_late) to p_ahead months after the current one. Drops every partition
-- whose whole month is older than p_retention_months, never one that still accepts late
-- events, with the actors of its days (they name people; the counts are kept). Prunes batch
-- records older than accept_late_days. Defaults come from events.settings; p_now is for tests.
CREATE FUNCTION events.maintain(
    p_ahead integer DEFAULT NULL,
    p_retention_months integer DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (action text, partition text)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
    AS $$
DECLARE
    v_ahead integer;
    v_retention integer;
    v_late interval;
    v_first date;
    v_month date;
    v_last date;
    v_name text;
    v_part record;
BEGIN
    SELECT coalesce(p_ahead, s.premake_months), coalesce(p_retention_months, s.retention_months),
           make_interval(days => s.accept_late_days)
      INTO v_ahead, v_retention, v_late
      FROM events.settings s;
    IF v_ahead IS NULL OR v_ahead < 1 THEN
        RAISE EXCEPTION 'events.maintain: months ahead must be at least 1, got %', v_ahead
            USING ERRCODE = '22023', DETAIL = 'field=ahead';
    END IF;
    IF v_retention IS NOT NULL AND (v_retention < 1 OR make_interval(months => v_retention) <= v_late) THEN
        RAISE EXCEPTION 'events.maintain: retention must be longer than accept_late_days (%), got % month(s)', v_late, v_retention
            USING ERRCODE = '22023', DETAIL = 'field=retention_months';
    END IF;
    v_first := date_trunc('month', (p_now - v_late) AT TIME ZONE 'UTC')::date;
    v_last := (date_trunc('month', p_now AT TIME ZONE 'UTC') + make_interval(months => v_ahead))::date;
    v_month := v_first;
    WHILE v_month <= v_last LOOP
        v_name := format('events_p%s', to_char(v_month, 'YYYYMM'));
        IF to_regclass(format('events.%I', v_name)) IS NULL THEN
            PERFORM events.create_partition(v_month);
            action := 'created';
            partition := v_name;
            RETURN NEXT;
        END IF;
        v_month := (v_month + interval '1 month')::date;
    END LOOP;
    IF v_retention IS NOT NULL THEN
        FOR v_part IN SELECT p.name, p.lower_bound, p.upper_bound FROM events.partitions() p
                       WHERE p.upper_bound <= p_now - make_interval(months => v_retention)
                       ORDER BY p.lower_bound
        LOOP
            EXECUTE format('DROP TABLE events.%I', v_part.name);
            DELETE FROM events.daily_actors a WHERE a.day < (v_part.upper_bound AT TIME ZONE 'UTC')::date;
            action := 'dropped';
            partition := v_part.name;
            RETURN NEXT;
        END LOOP;
    END IF;
    DELETE FROM events.batches b WHERE b.received_at < p_now - v_late;
END
$$;
REVOKE EXECUTE ON FUNCTION events.maintain(integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION events.maintain(integer, integer, timestamptz) TO pgstrata_worker;

-- The months an event may fall in exist from the start.
SELECT events.maintain();
