-- queue V3: the queue is no longer one table open to every tenant (SECURITY.md, queue).
--
-- Before: pgstrata_app could read, change and delete every tenant's jobs, enqueue a job that
-- runs in another tenant's context, claim with any lease, prune with any age, learn another
-- tenant's job id through the global unique key, and silence cron by pre-inserting
-- queue.periodic_runs. Now:
-- * pgstrata_app (the request path) sees, enqueues, cancels and retries only the jobs of the
--   tenant in its context, through forced row-level security. Jobs without a tenant (system
--   work) are invisible to it. It cannot change a job's tenant, claim, complete, fail,
--   heartbeat, rescue, promote, prune or run cron, and cannot touch queue.periodic_runs.
-- * pgstrata_worker (not held by the request path) does the work across tenants through a
--   policy of its own; a handler still runs in its job's tenant context, set per job.
-- * Unique keys are per tenant; leases and retention have bounds (typed errors, 22023).
-- * Every function pins search_path = pg_catalog, pg_temp, and none is executable by PUBLIC.
-- No function of the queue is SECURITY DEFINER and none takes an advisory lock.

-- ---------------------------------------------------------------------------------------------
-- Rows that break the new rules, reported before forced RLS hides them from a non-superuser
-- owner. Nothing is dropped.
-- ---------------------------------------------------------------------------------------------
DO $$
DECLARE
    v_count bigint;
BEGIN
    SELECT count(*) INTO v_count FROM queue.jobs j WHERE j.tenant_id IS NULL AND j.finalized_at IS NULL;
    IF v_count > 0 THEN
        RAISE NOTICE 'queue V3: % unfinished job(s) have no tenant: they stay, run as system work, and are no longer visible to pgstrata_app', v_count;
    END IF;
    -- Leases now last at most a day from the claim or heartbeat; longer ones are cut to a day
    -- from now (the worker's heartbeat extends a live one again).
    UPDATE queue.jobs j SET lease_expires_at = pg_catalog.now() + interval '1 day'
     WHERE j.lease_expires_at > pg_catalog.now() + interval '1 day';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        RAISE WARNING 'queue V3: % running job(s) held a lease longer than one day; it now ends in one day', v_count;
    END IF;
    -- enqueue_periodic writes a run and its job in one transaction, so a run without a job was
    -- inserted by hand, possibly to silence a schedule.
    SELECT count(*) INTO v_count FROM queue.periodic_runs r WHERE r.job_id IS NULL;
    IF v_count > 0 THEN
        RAISE WARNING 'queue V3: % periodic run(s) have no job (inserted outside queue.enqueue_periodic): their periods were never enqueued; inspect with SELECT * FROM queue.periodic_runs WHERE job_id IS NULL', v_count;
    END IF;
END
$$;

COMMENT ON TABLE queue.jobs IS
    'citus: local. Jobs of every queue and tenant, keyed by id and claimed across tenants by pgstrata_worker; pgstrata_app sees and enqueues only its tenant''s jobs (forced RLS); finished jobs are pruned after a retention period';
COMMENT ON TABLE queue.periodic_runs IS
    'citus: local. One row per period of a periodic schedule ever enqueued; written by pgstrata_worker only';

-- ---------------------------------------------------------------------------------------------
-- Unique keys per tenant (fair_key is the tenant, or the nil uuid for system jobs). The old
-- index was stricter, so no existing row conflicts with the new one.
-- ---------------------------------------------------------------------------------------------
CREATE UNIQUE INDEX jobs_unique_key_per_tenant ON queue.jobs (fair_key, queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');
DROP INDEX queue.jobs_unique_key;

-- ---------------------------------------------------------------------------------------------
-- Privileges and policies
-- ---------------------------------------------------------------------------------------------
REVOKE ALL ON queue.jobs, queue.periodic_runs FROM pgstrata_app;
-- Enqueue: the content columns only; attempts, leases, errors and times are defaults.
GRANT SELECT, INSERT (queue, kind, tenant_id, payload, state, priority, run_at, max_attempts, unique_key)
    ON queue.jobs TO pgstrata_app;
-- Cancel and retry (queue.cancel, queue.retry): never the tenant, the attempt or the worker.
GRANT UPDATE (state, run_at, max_attempts, finalized_at, lease_expires_at) ON queue.jobs TO pgstrata_app;

GRANT USAGE ON SCHEMA queue TO pgstrata_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON queue.jobs, queue.periodic_runs TO pgstrata_worker;

ALTER TABLE queue.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE queue.jobs FORCE ROW LEVEL SECURITY;

-- The request path reads its own tenant's jobs; with no tenant in context it sees nothing, and
-- jobs without a tenant never.
CREATE POLICY jobs_app_read ON queue.jobs FOR SELECT TO pgstrata_app
    USING (tenant_id = (SELECT tenancy.current_tenant_id()));
-- It enqueues for its own tenant only, a fresh job (available or scheduled).
CREATE POLICY jobs_app_enqueue ON queue.jobs FOR INSERT TO pgstrata_app
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()) AND state IN ('available', 'scheduled'));
-- It cancels or retries its own tenant's jobs that no worker holds: the old row is not running,
-- the new one is cancelled or available. A running job (a claim) is never touched by the
-- request path, so claims stay exactly-once.
CREATE POLICY jobs_app_cancel_retry ON queue.jobs FOR UPDATE TO pgstrata_app
    USING (tenant_id = (SELECT tenancy.current_tenant_id())
           AND state IN ('available', 'scheduled', 'retryable', 'discarded', 'cancelled'))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()) AND state IN ('available', 'cancelled'));
-- Workers claim across tenants.
CREATE POLICY jobs_worker ON queue.jobs FOR ALL TO pgstrata_worker
    USING (true) WITH CHECK (true);
-- A suspended tenant's request path enqueues, cancels and retries nothing (tenancy V3).
DO $$
BEGIN
    PERFORM tenancy.enforce_tenant_status('queue.jobs');
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------------------------

-- Enqueues a job and returns its id, in the tenant of the transaction's context unless
-- p_tenant_id names one; naming another tenant than the context's is refused (42501). The
-- request path can only enqueue for its context's tenant (the policy); a worker may enqueue for
-- any tenant, or with no tenant (system work). With a unique key, an unfinished job with the
-- same key in the same queue and tenant is returned instead of a new one.
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

-- Enqueues many jobs (no unique keys) in one statement and returns their ids in order. The
-- tenant rule of queue.enqueue applies to each.
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

-- The bounds of a lease: more than zero, at most a day (a longer job heartbeats).
CREATE FUNCTION queue.check_lease(p_function text, p_lease interval) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' OR p_lease > interval '1 day' THEN
        RAISE EXCEPTION '%: lease % is out of range', p_function, coalesce(p_lease::text, 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'a lease is more than 0 and at most 1 day; a longer job extends it with heartbeats';
    END IF;
END
$$;

-- V2's claim, with its bounds checked first: 1 to 1000 jobs, a lease within check_lease's.
CREATE OR REPLACE FUNCTION queue.claim(
    p_queue text,
    p_limit integer,
    p_worker text,
    p_lease interval DEFAULT interval '5 minutes'
) RETURNS SETOF queue.jobs
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
        RAISE EXCEPTION 'queue.claim: limit % is out of range', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'claim 1 to 1000 jobs at a time';
    END IF;
    PERFORM queue.check_lease('queue.claim', p_lease);
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

-- Extends the lease of a job that is still running in this attempt (lease bounds as claim's).
CREATE OR REPLACE FUNCTION queue.heartbeat(p_id bigint, p_attempt integer, p_lease interval) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM queue.check_lease('queue.heartbeat', p_lease);
    UPDATE queue.jobs j SET lease_expires_at = now() + p_lease
     WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt;
    RETURN FOUND;
END
$$;

-- Extends the leases of a batch still running in the given attempts; returns how many.
CREATE OR REPLACE FUNCTION queue.heartbeat_many(p_ids bigint[], p_attempts integer[], p_lease interval)
RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM queue.check_lease('queue.heartbeat_many', p_lease);
    UPDATE queue.jobs j SET lease_expires_at = now() + p_lease
      FROM unnest(p_ids, p_attempts) AS c(id, attempt)
     WHERE j.id = c.id AND j.state = 'running' AND j.attempt = c.attempt;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Deletes finished jobs older than the retention (at least a minute), in bounded batches of 1
-- to 100,000, and the periodic runs older than the retention except each schedule's latest:
-- the latest run is what stops its period from being enqueued a second time.
CREATE OR REPLACE FUNCTION queue.prune(p_older_than interval DEFAULT interval '1 day', p_limit integer DEFAULT 10000)
RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '1 minute' THEN
        RAISE EXCEPTION 'queue.prune: retention % is out of range', coalesce(p_older_than::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'keep finished jobs at least 1 minute';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
        RAISE EXCEPTION 'queue.prune: limit % is out of range', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'prune 1 to 100000 jobs per call';
    END IF;
    WITH old AS (
        SELECT j.id FROM queue.jobs j
         WHERE j.finalized_at IS NOT NULL AND j.finalized_at < now() - p_older_than
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    )
    DELETE FROM queue.jobs j USING old WHERE j.id = old.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    DELETE FROM queue.periodic_runs r
     WHERE r.period_start < now() - p_older_than
       AND EXISTS (SELECT 1 FROM queue.periodic_runs n WHERE n.name = r.name AND n.period_start > r.period_start);
    RETURN v_count;
END
$$;

-- Every other function keeps its body and pins its search_path.
ALTER FUNCTION queue.notify_inserted() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.enqueue_periodic(text, timestamptz, text, jsonb, text, smallint, integer, uuid)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.promote_due(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.complete(bigint, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.complete_many(bigint[], integer[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.backoff(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.fail(bigint, integer, text, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.release(bigint, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.rescue(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.cancel(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.retry(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION queue.stats() SET search_path = pg_catalog, pg_temp;

-- Nothing is executable by PUBLIC. The request path enqueues, cancels and retries (its own
-- tenant's jobs, by the policies) and counts its own jobs; the rest is the worker's.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue FROM PUBLIC, pgstrata_app;
GRANT EXECUTE ON FUNCTION
    queue.enqueue(text, jsonb, text, smallint, timestamptz, integer, text, uuid),
    queue.enqueue_many(text[], jsonb[], text[], smallint[], timestamptz[], integer[], uuid[]),
    queue.cancel(bigint), queue.retry(bigint), queue.stats()
    TO pgstrata_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA queue TO pgstrata_worker;
