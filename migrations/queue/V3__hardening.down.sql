-- Back to V2: the queue open to pgstrata_app again, one global unique key, no bounds.
DROP POLICY jobs_app_read ON queue.jobs;
DROP POLICY jobs_app_enqueue ON queue.jobs;
DROP POLICY jobs_app_cancel_retry ON queue.jobs;
DROP POLICY jobs_worker ON queue.jobs;
DROP POLICY tenant_active_insert ON queue.jobs;
DROP POLICY tenant_active_update ON queue.jobs;
DROP POLICY tenant_active_delete ON queue.jobs;
ALTER TABLE queue.jobs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE queue.jobs DISABLE ROW LEVEL SECURITY;

REVOKE ALL ON queue.jobs, queue.periodic_runs FROM pgstrata_app, pgstrata_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON queue.jobs, queue.periodic_runs TO pgstrata_app;

-- Fails if two tenants now hold the same unfinished key in a queue: cancel one first.
CREATE UNIQUE INDEX jobs_unique_key ON queue.jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');
DROP INDEX queue.jobs_unique_key_per_tenant;

COMMENT ON TABLE queue.jobs IS 'Jobs of every queue; finished jobs are pruned after a retention period';
COMMENT ON TABLE queue.periodic_runs IS NULL;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue FROM pgstrata_worker;
REVOKE USAGE ON SCHEMA queue FROM pgstrata_worker;
DROP FUNCTION queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[]);

CREATE OR REPLACE FUNCTION queue.enqueue(
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
    AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO queue.jobs AS j (queue, kind, tenant_id, payload, state, priority, run_at, max_attempts, unique_key)
    VALUES (p_queue, p_kind, p_tenant_id, coalesce(p_payload, '{}'::jsonb),
            CASE WHEN p_run_at > now() THEN 'scheduled' ELSE 'available' END,
            coalesce(p_priority, 0), coalesce(p_run_at, now()), coalesce(p_max_attempts, 20), p_unique_key)
    ON CONFLICT (queue, unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable')
        DO NOTHING
    RETURNING j.id INTO v_id;
    IF v_id IS NULL THEN
        SELECT j.id INTO v_id FROM queue.jobs j
         WHERE j.queue = p_queue AND j.unique_key = p_unique_key
           AND j.state IN ('available', 'scheduled', 'running', 'retryable');
    END IF;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION queue.claim(
    p_queue text,
    p_limit integer,
    p_worker text,
    p_lease interval DEFAULT interval '5 minutes'
) RETURNS SETOF queue.jobs
    LANGUAGE plpgsql VOLATILE
    AS $$
BEGIN
    RETURN QUERY
        WITH RECURSIVE
        pivot AS (SELECT gen_random_uuid() AS at),
        after_pivot(k, n) AS (
            SELECT (SELECT j.fair_key FROM queue.jobs j
                     WHERE j.state = 'available' AND j.queue = p_queue AND j.fair_key >= (SELECT p.at FROM pivot p)
                     ORDER BY j.fair_key LIMIT 1), 1
            UNION ALL
            SELECT (SELECT j.fair_key FROM queue.jobs j
                     WHERE j.state = 'available' AND j.queue = p_queue AND j.fair_key > a.k
                     ORDER BY j.fair_key LIMIT 1), a.n + 1
              FROM after_pivot a WHERE a.k IS NOT NULL AND a.n < p_limit
        ),
        before_pivot(k, n) AS (
            SELECT (SELECT j.fair_key FROM queue.jobs j
                     WHERE j.state = 'available' AND j.queue = p_queue
                     ORDER BY j.fair_key LIMIT 1), 1
            UNION ALL
            SELECT (SELECT j.fair_key FROM queue.jobs j
                     WHERE j.state = 'available' AND j.queue = p_queue AND j.fair_key > b.k
                       AND j.fair_key < (SELECT p.at FROM pivot p)
                     ORDER BY j.fair_key LIMIT 1), b.n + 1
              FROM before_pivot b
             WHERE b.k IS NOT NULL AND b.k < (SELECT p.at FROM pivot p) AND b.n < p_limit
        ),
        tenants AS MATERIALIZED (
            SELECT DISTINCT k FROM (
                (SELECT k, n FROM after_pivot WHERE k IS NOT NULL)
                UNION ALL
                (SELECT k, n + p_limit FROM before_pivot WHERE k IS NOT NULL AND k < (SELECT p.at FROM pivot p))
                ORDER BY n LIMIT p_limit
            ) visited
        ),
        share AS (SELECT (p_limit + count(*) - 1) / greatest(count(*), 1) AS per_tenant FROM tenants),
        locked AS (
            SELECT t.k, c.id, c.priority, c.run_at
              FROM tenants t, share
              CROSS JOIN LATERAL (
                  SELECT j.id, j.priority, j.run_at
                    FROM queue.jobs j
                   WHERE j.state = 'available' AND j.queue = p_queue AND j.fair_key = t.k
                   ORDER BY j.priority, j.run_at, j.id
                   LIMIT share.per_tenant
                     FOR UPDATE SKIP LOCKED
              ) c
        ),
        picked AS (
            SELECT l.id FROM (
                SELECT l.*, row_number() OVER (PARTITION BY l.k ORDER BY l.priority, l.run_at, l.id) AS rank
                  FROM locked l
            ) l
             ORDER BY l.rank, l.priority, l.run_at, l.id
             LIMIT p_limit
        )
        -- By id array, not a join: planned without the argument values, a join to picked can
        -- become a merge join over the whole primary key, finished jobs included.
        UPDATE queue.jobs j
           SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker = p_worker,
               lease_expires_at = now() + p_lease
         WHERE j.id = ANY (ARRAY(SELECT picked.id FROM picked))
        RETURNING j.*;
END
$$;

CREATE OR REPLACE FUNCTION queue.heartbeat(p_id bigint, p_attempt integer, p_lease interval) RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    WITH beat AS (
        UPDATE queue.jobs j SET lease_expires_at = now() + p_lease
         WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM beat)
$$;

CREATE OR REPLACE FUNCTION queue.heartbeat_many(p_ids bigint[], p_attempts integer[], p_lease interval) RETURNS integer
    LANGUAGE sql VOLATILE
    AS $$
    WITH beat AS (
        UPDATE queue.jobs j SET lease_expires_at = now() + p_lease
          FROM unnest(p_ids, p_attempts) AS c(id, attempt)
         WHERE j.id = c.id AND j.state = 'running' AND j.attempt = c.attempt
        RETURNING 1
    )
    SELECT count(*)::integer FROM beat
$$;

CREATE OR REPLACE FUNCTION queue.prune(p_older_than interval DEFAULT interval '1 day', p_limit integer DEFAULT 10000)
RETURNS integer
    LANGUAGE sql VOLATILE
    AS $$
    WITH old AS (
        SELECT j.id FROM queue.jobs j
         WHERE j.finalized_at IS NOT NULL AND j.finalized_at < now() - p_older_than
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), deleted AS (
        DELETE FROM queue.jobs j USING old WHERE j.id = old.id RETURNING 1
    ), old_runs AS (
        DELETE FROM queue.periodic_runs r WHERE r.period_start < now() - p_older_than RETURNING 1
    )
    SELECT count(*)::integer FROM deleted
$$;

DROP FUNCTION queue.check_lease(text, interval);

ALTER FUNCTION queue.notify_inserted() RESET search_path;
ALTER FUNCTION queue.enqueue_periodic(text, timestamptz, text, jsonb, text, smallint, integer, uuid) RESET search_path;
ALTER FUNCTION queue.promote_due(integer) RESET search_path;
ALTER FUNCTION queue.complete(bigint, integer) RESET search_path;
ALTER FUNCTION queue.complete_many(bigint[], integer[]) RESET search_path;
ALTER FUNCTION queue.backoff(integer) RESET search_path;
ALTER FUNCTION queue.fail(bigint, integer, text, timestamptz) RESET search_path;
ALTER FUNCTION queue.release(bigint, integer) RESET search_path;
ALTER FUNCTION queue.rescue(integer) RESET search_path;
ALTER FUNCTION queue.cancel(bigint) RESET search_path;
ALTER FUNCTION queue.retry(bigint) RESET search_path;
ALTER FUNCTION queue.stats() RESET search_path;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA queue TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid),
    queue.enqueue_periodic(text, timestamptz, text, jsonb, text, smallint, integer, uuid),
    queue.promote_due(integer), queue.claim(text, integer, text, interval),
    queue.complete(bigint, integer), queue.fail(bigint, integer, text, timestamptz),
    queue.complete_many(bigint[], integer[]), queue.heartbeat_many(bigint[], integer[], interval),
    queue.heartbeat(bigint, integer, interval), queue.release(bigint, integer),
    queue.rescue(integer), queue.cancel(bigint), queue.retry(bigint),
    queue.prune(interval, integer), queue.stats(), queue.backoff(integer)
    TO pgstrata_app;
