-- Back to V4: no metrics, no unique periods (jobs enqueued with one keep their key as a plain one), V4's
-- enqueue and enqueue_many, and no listing indexes.
DROP FUNCTION queue.metrics(interval);
DROP FUNCTION queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer, interval);
DROP FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[], interval[]);

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

ALTER FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[])
    SET jit = off;
REVOKE EXECUTE ON FUNCTION
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[]),
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[]),
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer)
    TO pgstrata_app, pgstrata_worker;

-- Jobs that held a key for a period keep it while unfinished; two unfinished ones of different
-- periods would collide in V4's index, so the later ones lose their key.
UPDATE queue.jobs j SET unique_key = NULL
 WHERE j.unique_period IS NOT NULL
   AND j.state IN ('available', 'scheduled', 'running', 'retryable')
   AND EXISTS (SELECT 1 FROM queue.jobs o
                WHERE o.fair_key = j.fair_key AND o.queue = j.queue AND o.unique_key = j.unique_key
                  AND o.state IN ('available', 'scheduled', 'running', 'retryable') AND o.id < j.id);
CREATE UNIQUE INDEX jobs_unique_key_per_tenant ON queue.jobs (fair_key, queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');
DROP INDEX queue.jobs_unique_key_period;
DROP INDEX queue.jobs_unique_key_plain;
ALTER TABLE queue.jobs DROP COLUMN unique_period;

DROP INDEX queue.jobs_stopped_idx;
DROP INDEX queue.jobs_tenant_list_idx;
