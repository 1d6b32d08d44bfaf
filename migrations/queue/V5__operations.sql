-- queue V5: operations. Listing jobs by state, tenant, kind and queue, newest first, one keyset
-- page at a time, read from an index however long the history is; unique keys held for a
-- period; a metrics snapshot whose cost does not follow the history.
--
-- Self-contained: it adds indexes and a column, replaces the unique key index, and replaces
-- queue.enqueue and queue.enqueue_many (a unique period per job at the end of their arguments),
-- and adds queue.metrics.

-- ---------------------------------------------------------------------------------------------
-- Listing (inspect::list, inspect::list_all, `pgstrata queue list`)
-- ---------------------------------------------------------------------------------------------
-- A listing walks an index backwards from the previous page's last id, one branch per state,
-- merged in id order.
--
-- A tenant's jobs (the request path's listing, or an operator's for one tenant), by state,
-- entered by fair_key (the tenant, or the nil uuid for system jobs). The predicate is on the
-- state, so that a listing naming its states can use it. Running jobs are left out: a claim
-- writes no entry (running jobs are few, listed from jobs_lease_idx); enqueueing writes one,
-- and so does every later transition.
CREATE INDEX jobs_tenant_list_idx ON queue.jobs (fair_key, state, id) WHERE state <> 'running';
-- Across tenants: what failed or was cancelled. (Across tenants, all states are the primary
-- key in order.)
CREATE INDEX jobs_stopped_idx ON queue.jobs (state, id) WHERE state IN ('discarded', 'cancelled');

-- ---------------------------------------------------------------------------------------------
-- Unique per period (NewJob::unique_period)
-- ---------------------------------------------------------------------------------------------
-- A unique key alone is held while its job is unfinished. A key with a period is held by the
-- job enqueued in the current period (date_bin of the period from the epoch), whatever its
-- state, until that job is pruned: "at most once per hour", even if the first one completed.
-- unique_period is the period's start (NULL: a plain key). Nullable, no default: a catalog-only
-- change.
ALTER TABLE queue.jobs ADD COLUMN unique_period timestamptz;
GRANT INSERT (unique_period) ON queue.jobs TO pgstrata_app;

-- Plain keys: as before, for jobs without a period.
CREATE UNIQUE INDEX jobs_unique_key_plain ON queue.jobs (fair_key, queue, unique_key)
    WHERE unique_key IS NOT NULL AND unique_period IS NULL
      AND state IN ('available', 'scheduled', 'running', 'retryable');
DROP INDEX queue.jobs_unique_key_per_tenant;
-- Keys with a period: every state, so a finished job still holds its period.
CREATE UNIQUE INDEX jobs_unique_key_period ON queue.jobs (fair_key, queue, unique_key, unique_period)
    WHERE unique_period IS NOT NULL;

DROP FUNCTION queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer);
DROP FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[]);

-- V4's enqueue_many, with a period per unique key (p_unique_periods; NULL: a plain key). A
-- period is 1 second to 366 days (22023 otherwise) and needs a key.
CREATE FUNCTION queue.enqueue_many(
    p_kinds text[],
    p_payloads jsonb[],
    p_queues text[],
    p_priorities smallint[],
    p_run_ats timestamptz[],
    p_max_attempts integer[],
    p_tenant_ids uuid[],
    p_unique_keys text[] DEFAULT NULL,
    p_timeouts_ms integer[] DEFAULT NULL,
    p_unique_periods interval[] DEFAULT NULL
) RETURNS SETOF bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_context uuid := tenancy.current_tenant_id();
    v_actor uuid := tenancy.current_actor_id();
    v_request text := nullif(current_setting('app.request_id', true), '');
    v_other uuid;
    v_tenant uuid;
    v_queue text;
    v_period timestamptz;
    v_id bigint;
BEGIN
    IF v_context IS NOT NULL THEN
        SELECT t INTO v_other FROM unnest(p_tenant_ids) t WHERE t <> v_context LIMIT 1;
        IF v_other IS NOT NULL THEN
            RAISE EXCEPTION 'queue.enqueue: tenant % is not the tenant of this transaction', v_other
                USING ERRCODE = '42501',
                      HINT = 'a job runs in the tenant that enqueues it: leave the tenant out';
        END IF;
    END IF;
    -- Without unique keys: one set-based insert.
    IF NOT EXISTS (SELECT 1 FROM unnest(p_unique_keys) k WHERE k IS NOT NULL) THEN
        IF EXISTS (SELECT 1 FROM unnest(p_unique_periods) p WHERE p IS NOT NULL) THEN
            RAISE EXCEPTION 'queue.enqueue: a unique period needs a unique key'
                USING ERRCODE = '22023', DETAIL = 'field=unique_period';
        END IF;
        RETURN QUERY
        INSERT INTO queue.jobs AS j (kind, payload, queue, priority, run_at, state, max_attempts, tenant_id,
                                     timeout_ms, actor_id, request_id)
        SELECT u.k, coalesce(u.p, '{}'::jsonb), coalesce(u.q, 'default'), coalesce(u.pr, 0), coalesce(u.r, now()),
               CASE WHEN u.r > now() THEN 'scheduled' ELSE 'available' END, coalesce(u.m, 20),
               coalesce(u.t, v_context), p_timeouts_ms[u.n::integer], v_actor, v_request
          FROM unnest(p_kinds, p_payloads, p_queues, p_priorities, p_run_ats, p_max_attempts, p_tenant_ids)
               WITH ORDINALITY AS u(k, p, q, pr, r, m, t, n)
         ORDER BY u.n
        RETURNING j.id;
        RETURN;
    END IF;
    -- With unique keys: one job at a time, so a key repeated within the call finds the first.
    FOR i IN 1 .. coalesce(array_length(p_kinds, 1), 0) LOOP
        v_tenant := coalesce(p_tenant_ids[i], v_context);
        v_queue := coalesce(p_queues[i], 'default');
        v_period := NULL;
        IF p_unique_periods[i] IS NOT NULL THEN
            IF p_unique_keys[i] IS NULL THEN
                RAISE EXCEPTION 'queue.enqueue: a unique period needs a unique key'
                    USING ERRCODE = '22023', DETAIL = 'field=unique_period';
            END IF;
            IF p_unique_periods[i] < interval '1 second' OR p_unique_periods[i] > interval '366 days'
               OR extract(month FROM p_unique_periods[i]) <> 0 OR extract(year FROM p_unique_periods[i]) <> 0 THEN
                RAISE EXCEPTION 'queue.enqueue: unique period % is out of range', p_unique_periods[i]
                    USING ERRCODE = '22023', DETAIL = 'field=unique_period',
                          HINT = 'a unique period is 1 second to 366 days, in days, hours, minutes or seconds';
            END IF;
            v_period := date_bin(p_unique_periods[i], now(), timestamptz '1970-01-01 00:00:00+00');
        END IF;
        v_id := NULL;
        -- Any conflict is a unique key's: the arbiter is whichever of the two key indexes applies.
        INSERT INTO queue.jobs AS j (queue, kind, tenant_id, payload, state, priority, run_at, max_attempts,
                                     unique_key, unique_period, timeout_ms, actor_id, request_id)
        VALUES (v_queue, p_kinds[i], v_tenant, coalesce(p_payloads[i], '{}'::jsonb),
                CASE WHEN p_run_ats[i] > now() THEN 'scheduled' ELSE 'available' END,
                coalesce(p_priorities[i], 0), coalesce(p_run_ats[i], now()), coalesce(p_max_attempts[i], 20),
                p_unique_keys[i], v_period, p_timeouts_ms[i], v_actor, v_request)
        ON CONFLICT DO NOTHING
        RETURNING j.id INTO v_id;
        IF v_id IS NULL AND v_period IS NULL THEN
            SELECT j.id INTO v_id FROM queue.jobs j
             WHERE j.fair_key = coalesce(v_tenant, '00000000-0000-0000-0000-000000000000'::uuid)
               AND j.queue = v_queue AND j.unique_key = p_unique_keys[i] AND j.unique_period IS NULL
               AND j.state IN ('available', 'scheduled', 'running', 'retryable');
        ELSIF v_id IS NULL THEN
            SELECT j.id INTO v_id FROM queue.jobs j
             WHERE j.fair_key = coalesce(v_tenant, '00000000-0000-0000-0000-000000000000'::uuid)
               AND j.queue = v_queue AND j.unique_key = p_unique_keys[i] AND j.unique_period = v_period;
        END IF;
        RETURN NEXT v_id;
    END LOOP;
END
$$;

-- Enqueues one job: queue.enqueue_many of one, so both follow the same rules.
CREATE FUNCTION queue.enqueue(
    p_kind text,
    p_payload jsonb DEFAULT '{}'::jsonb,
    p_queue text DEFAULT 'default',
    p_priority smallint DEFAULT 0,
    p_run_at timestamptz DEFAULT NULL,
    p_max_attempts integer DEFAULT 20,
    p_unique_key text DEFAULT NULL,
    p_tenant_id uuid DEFAULT NULL,
    p_timeout_ms integer DEFAULT NULL,
    p_unique_period interval DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT id FROM queue.enqueue_many(ARRAY[p_kind], ARRAY[p_payload], ARRAY[p_queue], ARRAY[p_priority],
                                      ARRAY[p_run_at], ARRAY[p_max_attempts], ARRAY[p_tenant_id],
                                      ARRAY[p_unique_key], ARRAY[p_timeout_ms], ARRAY[p_unique_period]) AS e(id)
$$;

ALTER FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[], interval[])
    SET jit = off;
REVOKE EXECUTE ON FUNCTION
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[], interval[]),
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer, interval)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[], interval[]),
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer, interval)
    TO pgstrata_app, pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- Metrics (inspect::metrics): what an exporter reads
-- ---------------------------------------------------------------------------------------------
-- Per queue: the jobs waiting in each unfinished state, how long the oldest ready one has
-- waited, and the jobs finished within the last p_window (throughput). Each part reads the
-- partial index of its states (jobs_fetch_idx, jobs_due_idx, jobs_lease_idx, and
-- jobs_finalized_idx over the window), so the cost follows the backlog and the recent
-- throughput, never the history; queue.stats() counts the history too. With a large backlog
-- the planner prefers a (parallel) scan of the whole table for the ready jobs, which reads the
-- history as well: every part here has its index, so the function plans without scans.
CREATE FUNCTION queue.metrics(p_window interval DEFAULT interval '1 minute')
RETURNS TABLE (queue text, available bigint, scheduled bigint, running bigint, retryable bigint,
               oldest_available_age interval, completed bigint, discarded bigint, cancelled bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET enable_seqscan = off
    AS $$
#variable_conflict use_column
BEGIN
    IF p_window IS NULL OR p_window <= interval '0' OR p_window > interval '1 hour' THEN
        RAISE EXCEPTION 'queue.metrics: window % is out of range', coalesce(p_window::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'count finished jobs over more than 0 and at most 1 hour';
    END IF;
    RETURN QUERY
    WITH ready AS (
        SELECT j.queue AS q, count(*) AS n, now() - min(j.run_at) AS age
          FROM queue.jobs j WHERE j.state = 'available' GROUP BY j.queue
    ), waiting AS (
        SELECT j.queue AS q, count(*) FILTER (WHERE j.state = 'scheduled') AS scheduled,
               count(*) FILTER (WHERE j.state = 'retryable') AS retryable
          FROM queue.jobs j WHERE j.state IN ('scheduled', 'retryable') GROUP BY j.queue
    ), held AS (
        -- Running jobs are the ones with a lease (jobs_running_has_lease): jobs_lease_idx.
        SELECT j.queue AS q, count(*) AS n
          FROM queue.jobs j WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' GROUP BY j.queue
    ), finished AS (
        SELECT j.queue AS q, count(*) FILTER (WHERE j.state = 'completed') AS completed,
               count(*) FILTER (WHERE j.state = 'discarded') AS discarded,
               count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled
          FROM queue.jobs j WHERE j.finalized_at IS NOT NULL AND j.finalized_at > now() - p_window
         GROUP BY j.queue
    ), queues AS (
        SELECT r.q FROM ready r UNION SELECT w.q FROM waiting w
        UNION SELECT h.q FROM held h UNION SELECT f.q FROM finished f
    )
    SELECT qs.q, coalesce(r.n, 0), coalesce(w.scheduled, 0), coalesce(h.n, 0), coalesce(w.retryable, 0),
           r.age, coalesce(f.completed, 0), coalesce(f.discarded, 0), coalesce(f.cancelled, 0)
      FROM queues qs
      LEFT JOIN ready r ON r.q = qs.q
      LEFT JOIN waiting w ON w.q = qs.q
      LEFT JOIN held h ON h.q = qs.q
      LEFT JOIN finished f ON f.q = qs.q
     ORDER BY qs.q;
END
$$;
REVOKE EXECUTE ON FUNCTION queue.metrics(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.metrics(interval) TO pgstrata_worker;
