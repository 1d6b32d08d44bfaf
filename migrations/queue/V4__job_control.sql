-- queue V4: job control. A job carries its own time limit and the actor and request that caused
-- it; a handler may snooze its job or cancel it; enqueue is enqueue_many of one job, and both take
-- unique keys.
--
-- Self-contained: it adds columns, replaces queue.enqueue and queue.enqueue_many, the request
-- path's insert policy, and adds queue.snooze and queue.cancel_attempt. Nothing else changes.

-- ---------------------------------------------------------------------------------------------
-- Columns (nullable, no default: a catalog-only change on a large table)
-- ---------------------------------------------------------------------------------------------
ALTER TABLE queue.jobs
    -- How long one attempt may run, overriding the kind's limit; NULL: the kind's.
    ADD COLUMN timeout_ms integer,
    -- The acting user and request of the transaction that enqueued the job: the handler runs
    -- with them set, so the audit records it writes name who caused them.
    ADD COLUMN actor_id uuid,
    ADD COLUMN request_id text;
ALTER TABLE queue.jobs ADD CONSTRAINT jobs_timeout_range CHECK (timeout_ms BETWEEN 1 AND 86400000) NOT VALID;
ALTER TABLE queue.jobs ADD CONSTRAINT jobs_request_id_length CHECK (length(request_id) <= 200) NOT VALID;
ALTER TABLE queue.jobs VALIDATE CONSTRAINT jobs_timeout_range;
ALTER TABLE queue.jobs VALIDATE CONSTRAINT jobs_request_id_length;

GRANT INSERT (timeout_ms, actor_id, request_id) ON queue.jobs TO pgstrata_app;

-- The request path enqueues for its own tenant only, a fresh job, as the actor and request of
-- its context: a job cannot name another user as the one who caused it.
DROP POLICY jobs_app_enqueue ON queue.jobs;
CREATE POLICY jobs_app_enqueue ON queue.jobs FOR INSERT TO pgstrata_app
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id())
                AND state IN ('available', 'scheduled')
                AND actor_id IS NOT DISTINCT FROM (SELECT tenancy.current_actor_id())
                AND request_id IS NOT DISTINCT FROM (SELECT nullif(current_setting('app.request_id', true), '')));

-- ---------------------------------------------------------------------------------------------
-- Enqueue: one function for one job and for many
-- ---------------------------------------------------------------------------------------------
DROP FUNCTION queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid);
DROP FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[]);

-- Enqueues many jobs and returns their ids in order. Each job belongs to the tenant of the
-- transaction's context unless p_tenant_ids names one; naming another tenant than the
-- context's is refused (42501). A job with a unique key that an unfinished job of the same
-- tenant and queue already holds (or an earlier job of the same call) is not inserted: that
-- job's id is returned in its place. Jobs take the context's actor and request id.
CREATE FUNCTION queue.enqueue_many(
    p_kinds text[],
    p_payloads jsonb[],
    p_queues text[],
    p_priorities smallint[],
    p_run_ats timestamptz[],
    p_max_attempts integer[],
    p_tenant_ids uuid[],
    p_unique_keys text[] DEFAULT NULL,
    p_timeouts_ms integer[] DEFAULT NULL
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
        v_id := NULL;
        INSERT INTO queue.jobs AS j (queue, kind, tenant_id, payload, state, priority, run_at, max_attempts,
                                     unique_key, timeout_ms, actor_id, request_id)
        VALUES (coalesce(p_queues[i], 'default'), p_kinds[i], v_tenant, coalesce(p_payloads[i], '{}'::jsonb),
                CASE WHEN p_run_ats[i] > now() THEN 'scheduled' ELSE 'available' END,
                coalesce(p_priorities[i], 0), coalesce(p_run_ats[i], now()), coalesce(p_max_attempts[i], 20),
                p_unique_keys[i], p_timeouts_ms[i], v_actor, v_request)
        ON CONFLICT (fair_key, queue, unique_key)
            WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
            DO NOTHING
        RETURNING j.id INTO v_id;
        IF v_id IS NULL THEN
            SELECT j.id INTO v_id FROM queue.jobs j
             WHERE j.fair_key = coalesce(v_tenant, '00000000-0000-0000-0000-000000000000'::uuid)
               AND j.queue = coalesce(p_queues[i], 'default') AND j.unique_key = p_unique_keys[i]
               AND j.state IN ('available', 'scheduled', 'running', 'retryable');
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
    p_timeout_ms integer DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT id FROM queue.enqueue_many(ARRAY[p_kind], ARRAY[p_payload], ARRAY[p_queue], ARRAY[p_priority],
                                      ARRAY[p_run_at], ARRAY[p_max_attempts], ARRAY[p_tenant_id],
                                      ARRAY[p_unique_key], ARRAY[p_timeout_ms]) AS e(id)
$$;

-- ---------------------------------------------------------------------------------------------
-- Handler outcomes besides completed and failed
-- ---------------------------------------------------------------------------------------------

-- Puts a running job back to wait until p_run_at without spending an attempt (the attempt it
-- held is given back, as release does). Guarded by state and attempt.
CREATE FUNCTION queue.snooze(p_id bigint, p_attempt integer, p_run_at timestamptz) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE queue.jobs j
       SET state = CASE WHEN p_run_at > now() THEN 'scheduled' ELSE 'available' END,
           run_at = greatest(coalesce(p_run_at, now()), now()),
           attempt = j.attempt - 1, lease_expires_at = NULL, worker = NULL
     WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt;
    RETURN FOUND;
END
$$;

-- Cancels a running job from its own attempt (the handler decided it must not run again),
-- recording why. Guarded by state and attempt.
CREATE FUNCTION queue.cancel_attempt(p_id bigint, p_attempt integer, p_reason text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE queue.jobs j
       SET state = 'cancelled', finalized_at = now(), lease_expires_at = NULL,
           errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(),
                                                   'error', 'cancelled: ' || coalesce(p_reason, ''))
     WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt;
    RETURN FOUND;
END
$$;

-- Nothing new is executable by PUBLIC; the request path enqueues, the rest is the worker's.
REVOKE EXECUTE ON FUNCTION
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[]),
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer),
    queue.snooze(bigint, integer, timestamptz),
    queue.cancel_attempt(bigint, integer, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[]),
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer)
    TO pgstrata_app;
GRANT EXECUTE ON FUNCTION
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[]),
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer),
    queue.snooze(bigint, integer, timestamptz),
    queue.cancel_attempt(bigint, integer, text)
    TO pgstrata_worker;

-- ---------------------------------------------------------------------------------------------
-- No JIT on the hot path
-- ---------------------------------------------------------------------------------------------
-- The claim's recursive skip scan is estimated far above jit_above_cost, so with the server's
-- default jit = on every custom plan of it (the first five calls of each session, and every
-- call where the plan is not cached) spent about 40 ms compiling for a 5 ms statement. None of
-- these statements runs long enough to gain from JIT.
ALTER FUNCTION queue.claim(text, integer, text, interval) SET jit = off;
ALTER FUNCTION queue.complete_many(bigint[], integer[]) SET jit = off;
ALTER FUNCTION queue.heartbeat_many(bigint[], integer[], interval) SET jit = off;
ALTER FUNCTION queue.promote_due(integer) SET jit = off;
ALTER FUNCTION queue.rescue(integer) SET jit = off;
ALTER FUNCTION queue.prune(interval, integer) SET jit = off;
ALTER FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[])
    SET jit = off;
