-- Back to V3: no time limit, actor or request id on a job; enqueue and enqueue_many as V3 had
-- them; no snooze or cancel_attempt.
ALTER FUNCTION queue.claim(text, integer, text, interval) RESET jit;
ALTER FUNCTION queue.complete_many(bigint[], integer[]) RESET jit;
ALTER FUNCTION queue.heartbeat_many(bigint[], integer[], interval) RESET jit;
ALTER FUNCTION queue.promote_due(integer) RESET jit;
ALTER FUNCTION queue.rescue(integer) RESET jit;
ALTER FUNCTION queue.prune(interval, integer) RESET jit;

DROP FUNCTION queue.snooze(bigint, integer, timestamptz);
DROP FUNCTION queue.cancel_attempt(bigint, integer, text);
DROP FUNCTION queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid, integer);
DROP FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[], text[], integer[]);

CREATE FUNCTION queue.enqueue(
    p_kind text,
    p_payload jsonb DEFAULT '{}'::jsonb,
    p_queue text DEFAULT 'default',
    p_priority smallint DEFAULT 0,
    p_run_at timestamptz DEFAULT NULL,
    p_max_attempts integer DEFAULT 20,
    p_unique_key text DEFAULT NULL,
    p_tenant_id uuid DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_context uuid := tenancy.current_tenant_id();
    v_tenant uuid := coalesce(p_tenant_id, v_context);
    v_id bigint;
BEGIN
    IF p_tenant_id IS NOT NULL AND v_context IS NOT NULL AND p_tenant_id <> v_context THEN
        RAISE EXCEPTION 'queue.enqueue: tenant % is not the tenant of this transaction', p_tenant_id
            USING ERRCODE = '42501',
                  HINT = 'a job runs in the tenant that enqueues it: leave the tenant out';
    END IF;
    INSERT INTO queue.jobs AS j (queue, kind, tenant_id, payload, state, priority, run_at, max_attempts, unique_key)
    VALUES (p_queue, p_kind, v_tenant, coalesce(p_payload, '{}'::jsonb),
            CASE WHEN p_run_at > now() THEN 'scheduled' ELSE 'available' END,
            coalesce(p_priority, 0), coalesce(p_run_at, now()), coalesce(p_max_attempts, 20), p_unique_key)
    ON CONFLICT (fair_key, queue, unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
        DO NOTHING
    RETURNING j.id INTO v_id;
    IF v_id IS NULL THEN
        SELECT j.id INTO v_id FROM queue.jobs j
         WHERE j.fair_key = coalesce(v_tenant, '00000000-0000-0000-0000-000000000000'::uuid)
           AND j.queue = p_queue AND j.unique_key = p_unique_key
           AND j.state IN ('available', 'scheduled', 'running', 'retryable');
    END IF;
    RETURN v_id;
END
$$;

CREATE FUNCTION queue.enqueue_many(
    p_kinds text[],
    p_payloads jsonb[],
    p_queues text[],
    p_priorities smallint[],
    p_run_ats timestamptz[],
    p_max_attempts integer[],
    p_tenant_ids uuid[]
) RETURNS SETOF bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_context uuid := tenancy.current_tenant_id();
    v_other uuid;
BEGIN
    IF v_context IS NOT NULL THEN
        SELECT t INTO v_other FROM unnest(p_tenant_ids) t WHERE t <> v_context LIMIT 1;
        IF v_other IS NOT NULL THEN
            RAISE EXCEPTION 'queue.enqueue_many: tenant % is not the tenant of this transaction', v_other
                USING ERRCODE = '42501',
                      HINT = 'a job runs in the tenant that enqueues it: leave the tenant out';
        END IF;
    END IF;
    RETURN QUERY
    INSERT INTO queue.jobs AS j (kind, payload, queue, priority, run_at, state, max_attempts, tenant_id)
    SELECT u.k, coalesce(u.p, '{}'::jsonb), coalesce(u.q, 'default'), coalesce(u.pr, 0), coalesce(u.r, now()),
           CASE WHEN u.r > now() THEN 'scheduled' ELSE 'available' END, coalesce(u.m, 20),
           coalesce(u.t, v_context)
      FROM unnest(p_kinds, p_payloads, p_queues, p_priorities, p_run_ats, p_max_attempts, p_tenant_ids)
           WITH ORDINALITY AS u(k, p, q, pr, r, m, t, n)
     ORDER BY u.n
    RETURNING j.id;
END
$$;

REVOKE EXECUTE ON FUNCTION
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid),
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid),
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[])
    TO pgstrata_app, pgstrata_worker;

DROP POLICY jobs_app_enqueue ON queue.jobs;
CREATE POLICY jobs_app_enqueue ON queue.jobs FOR INSERT TO pgstrata_app
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()) AND state IN ('available', 'scheduled'));
REVOKE INSERT (timeout_ms, actor_id, request_id) ON queue.jobs FROM pgstrata_app;

ALTER TABLE queue.jobs DROP COLUMN timeout_ms, DROP COLUMN actor_id, DROP COLUMN request_id;
