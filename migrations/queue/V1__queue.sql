-- queue V1: a job queue in PostgreSQL that runs each job once while it succeeds, retries it with
-- backoff when it fails, and brings it back when its worker dies.
--
-- States: available (ready now), scheduled (waits for run_at), running (claimed, under a lease),
-- retryable (failed, waits for its backoff), completed, discarded (out of attempts), cancelled.
-- Every transition names the state and attempt it expects, so a stale worker changes nothing.

CREATE SCHEMA IF NOT EXISTS queue;
COMMENT ON SCHEMA queue IS 'pgstrata queue: jobs, claims under leases, retries, periodic jobs';
GRANT USAGE ON SCHEMA queue TO pgstrata_app;

-- The queue is shared infrastructure, not tenant data: workers claim across tenants, so the table
-- is global (no row-level security). tenant_id is optional and only tells the worker which
-- tenant context to open around the handler.
CREATE TABLE queue.jobs (
    id                bigint      GENERATED ALWAYS AS IDENTITY,
    queue             text        NOT NULL DEFAULT 'default',
    kind              text        NOT NULL,
    tenant_id         uuid,
    payload           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state             text        NOT NULL DEFAULT 'available',
    priority          smallint    NOT NULL DEFAULT 0,
    run_at            timestamptz NOT NULL DEFAULT now(),
    attempt           integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL DEFAULT 20,
    lease_expires_at  timestamptz,
    worker            text,
    errors            jsonb       NOT NULL DEFAULT '[]'::jsonb,
    unique_key        text,
    -- The fairness key: the tenant, or the nil uuid for jobs without one.
    fair_key          uuid        NOT NULL GENERATED ALWAYS AS
                          (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)) STORED,
    created_at        timestamptz NOT NULL DEFAULT now(),
    attempted_at      timestamptz,
    finalized_at      timestamptz,
    CONSTRAINT jobs_pkey PRIMARY KEY (id),
    CONSTRAINT jobs_state_valid CHECK (state IN ('available', 'scheduled', 'running', 'retryable',
                                                 'completed', 'discarded', 'cancelled')),
    CONSTRAINT jobs_finalized_iff_terminal CHECK ((state IN ('completed', 'discarded', 'cancelled')) = (finalized_at IS NOT NULL)),
    CONSTRAINT jobs_running_has_lease CHECK ((state = 'running') = (lease_expires_at IS NOT NULL)),
    CONSTRAINT jobs_attempts CHECK (attempt >= 0 AND max_attempts >= 1),
    CONSTRAINT jobs_queue_format CHECK (queue ~ '^[a-z0-9_.-]{1,63}$'),
    CONSTRAINT jobs_kind_format CHECK (length(kind) BETWEEN 1 AND 200),
    CONSTRAINT jobs_errors_array CHECK (jsonb_typeof(errors) = 'array')
)
-- A high-churn table: every job is inserted, updated two or three times and deleted. Leave room
-- for HOT updates on each page and vacuum after a fixed number of dead rows rather than a
-- fraction of a table whose size swings (the starvation peers report, e.g. River #59).
WITH (fillfactor = 70,
      autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000,
      autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE queue.jobs IS 'Jobs of every queue; finished jobs are pruned after a retention period';

-- The claim reads this index only: ready jobs, by tenant, in the order they should run.
CREATE INDEX jobs_fetch_idx ON queue.jobs (queue, fair_key, priority, run_at, id) WHERE state = 'available';
-- Scheduled and retryable jobs become available when due.
CREATE INDEX jobs_due_idx ON queue.jobs (run_at) WHERE state IN ('scheduled', 'retryable');
-- Expired leases (dead workers).
CREATE INDEX jobs_lease_idx ON queue.jobs (lease_expires_at) WHERE state = 'running';
-- Pruning finished jobs.
CREATE INDEX jobs_finalized_idx ON queue.jobs (finalized_at) WHERE finalized_at IS NOT NULL;
-- At most one unfinished job per unique key and queue.
CREATE UNIQUE INDEX jobs_unique_key ON queue.jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');

-- Periodic jobs: one row per (schedule, period) ever enqueued. Inserted in the same transaction
-- as the job, so however many schedulers run, each period is enqueued exactly once.
CREATE TABLE queue.periodic_runs (
    name          text        NOT NULL,
    period_start  timestamptz NOT NULL,
    job_id        bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT periodic_runs_pkey PRIMARY KEY (name, period_start)
);

-- Pruning old runs.
CREATE INDEX periodic_runs_period_idx ON queue.periodic_runs (period_start);

GRANT SELECT, INSERT, UPDATE, DELETE ON queue.jobs, queue.periodic_runs TO pgstrata_app;

-- Wakes LISTENing workers once per inserting statement (NOTIFY is deduplicated per transaction
-- and only delivered at commit, so this costs little); polling remains the fallback.
CREATE FUNCTION queue.notify_inserted() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('pgstrata_queue', q.queue) FROM (SELECT DISTINCT n.queue FROM new_jobs n WHERE n.state = 'available') q;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify AFTER INSERT ON queue.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION queue.notify_inserted();

-- ---------------------------------------------------------------------------------------------
-- Operations (the Rust crate calls these; psql users get the same contract)
-- ---------------------------------------------------------------------------------------------

-- Enqueues a job and returns its id. With a unique key, an unfinished job with the same key in
-- the same queue is returned instead of a new one.
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

-- Enqueues the job of one period of a periodic schedule, once: the first caller for
-- (name, period_start) inserts the run and the job; every other caller, now or later, gets NULL.
CREATE FUNCTION queue.enqueue_periodic(
    p_name text,
    p_period_start timestamptz,
    p_kind text,
    p_payload jsonb DEFAULT '{}'::jsonb,
    p_queue text DEFAULT 'default',
    p_priority smallint DEFAULT 0,
    p_max_attempts integer DEFAULT 20,
    p_tenant_id uuid DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO queue.periodic_runs (name, period_start) VALUES (p_name, p_period_start)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_id := queue.enqueue(p_kind, p_payload, p_queue, p_priority, NULL, p_max_attempts, NULL, p_tenant_id);
    UPDATE queue.periodic_runs r SET job_id = v_id WHERE r.name = p_name AND r.period_start = p_period_start;
    RETURN v_id;
END
$$;

-- Makes due scheduled and retryable jobs available. Bounded and lock-skipping, so that claimers
-- calling it at the same time do not queue behind each other.
CREATE FUNCTION queue.promote_due(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE sql VOLATILE
    AS $$
    WITH due AS (
        SELECT j.id FROM queue.jobs j
         WHERE j.state IN ('scheduled', 'retryable') AND j.run_at <= now()
         ORDER BY j.run_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE queue.jobs j SET state = 'available'
          FROM due WHERE j.id = due.id AND j.state IN ('scheduled', 'retryable')
        RETURNING 1
    )
    SELECT count(*)::integer FROM moved
$$;

-- Claims up to p_limit ready jobs of a queue for a worker, under a lease, fairly across tenants:
-- it visits up to p_limit tenants that have ready jobs (a skip scan of jobs_fetch_idx, starting
-- at a random tenant and wrapping around), takes an equal share from each in priority order,
-- and fills the batch round-robin, so a tenant with 100,000 queued jobs cannot starve one with
-- ten. Priority orders jobs within a tenant. Rows locked by another claimer are skipped, never
-- waited for.
CREATE FUNCTION queue.claim(
    p_queue text,
    p_limit integer,
    p_worker text,
    p_lease interval DEFAULT interval '5 minutes'
) RETURNS SETOF queue.jobs
    LANGUAGE sql VOLATILE
    AS $$
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
    RETURNING j.*
$$;

-- Marks a running job completed, if it is still running in the attempt the worker holds.
CREATE FUNCTION queue.complete(p_id bigint, p_attempt integer) RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    WITH done AS (
        UPDATE queue.jobs j
           SET state = 'completed', finalized_at = now(), lease_expires_at = NULL
         WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM done)
$$;

-- Completes many running jobs at once (a worker's batch); returns the ids it completed. A job
-- missing from the result was no longer running in that attempt (rescued or cancelled).
CREATE FUNCTION queue.complete_many(p_ids bigint[], p_attempts integer[]) RETURNS SETOF bigint
    LANGUAGE sql VOLATILE
    AS $$
    -- Found by primary key; the attempt is matched per row. A join to unnest() let the planner
    -- pick the lease index and rescan the array for every running job.
    UPDATE queue.jobs j
       SET state = 'completed', finalized_at = now(), lease_expires_at = NULL
     WHERE j.id = ANY (p_ids)
       AND j.attempt = p_attempts[array_position(p_ids, j.id)]
       AND j.state = 'running'
    RETURNING j.id
$$;

-- Extends the leases of a batch still running in the given attempts; returns how many.
CREATE FUNCTION queue.heartbeat_many(p_ids bigint[], p_attempts integer[], p_lease interval) RETURNS integer
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

-- Exponential backoff with jitter, in seconds: about 2^attempt, capped at an hour, +-25%.
CREATE FUNCTION queue.backoff(p_attempt integer) RETURNS double precision
    LANGUAGE sql VOLATILE
    AS $$ SELECT least(power(2, least(p_attempt, 12)), 3600) * (0.75 + random() * 0.5) $$;

-- Records a failed attempt: retryable after its backoff (or at p_retry_at), discarded once out
-- of attempts. Guarded like complete.
CREATE FUNCTION queue.fail(p_id bigint, p_attempt integer, p_error text, p_retry_at timestamptz DEFAULT NULL)
RETURNS text
    LANGUAGE sql VOLATILE
    AS $$
    WITH failed AS (
        UPDATE queue.jobs j
           SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'retryable' END,
               finalized_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
               run_at = coalesce(p_retry_at, now() + make_interval(secs => queue.backoff(j.attempt))),
               lease_expires_at = NULL,
               errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'error', p_error)
         WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt
        RETURNING j.state
    )
    SELECT state FROM failed
$$;

-- Extends the lease of a job that is still running in this attempt.
CREATE FUNCTION queue.heartbeat(p_id bigint, p_attempt integer, p_lease interval) RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    WITH beat AS (
        UPDATE queue.jobs j SET lease_expires_at = now() + p_lease
         WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM beat)
$$;

-- Gives back a claimed job that was never started (graceful shutdown): available again, and
-- the attempt it did not use is returned.
CREATE FUNCTION queue.release(p_id bigint, p_attempt integer) RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    WITH released AS (
        UPDATE queue.jobs j
           SET state = 'available', attempt = j.attempt - 1, lease_expires_at = NULL, worker = NULL
         WHERE j.id = p_id AND j.state = 'running' AND j.attempt = p_attempt
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM released)
$$;

-- Brings back jobs whose lease expired (their worker died): retryable now, or discarded when out
-- of attempts. The state and lease are re-checked on the locked row, so a job that completed in
-- the meantime is never touched (the River #1302 bug).
CREATE FUNCTION queue.rescue(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE sql VOLATILE
    AS $$
    WITH expired AS (
        SELECT j.id FROM queue.jobs j
         WHERE j.state = 'running' AND j.lease_expires_at < now()
         ORDER BY j.lease_expires_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), rescued AS (
        UPDATE queue.jobs j
           SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'retryable' END,
               finalized_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
               run_at = now(),
               lease_expires_at = NULL,
               errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(),
                                                       'error', 'lease expired (worker ' || coalesce(j.worker, '?') || ' gone)')
          FROM expired
         WHERE j.id = expired.id AND j.state = 'running' AND j.lease_expires_at < now()
        RETURNING 1
    )
    SELECT count(*)::integer FROM rescued
$$;

-- Cancels a job that has not finished. A running job's worker then fails to complete it.
CREATE FUNCTION queue.cancel(p_id bigint) RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    WITH cancelled AS (
        UPDATE queue.jobs j SET state = 'cancelled', finalized_at = now(), lease_expires_at = NULL
         WHERE j.id = p_id AND j.state IN ('available', 'scheduled', 'running', 'retryable')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM cancelled)
$$;

-- Puts a discarded or cancelled job back in line, with one more attempt allowed.
CREATE FUNCTION queue.retry(p_id bigint) RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    WITH retried AS (
        UPDATE queue.jobs j
           SET state = 'available', finalized_at = NULL, run_at = now(),
               max_attempts = greatest(j.max_attempts, j.attempt + 1)
         WHERE j.id = p_id AND j.state IN ('discarded', 'cancelled')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM retried)
$$;

-- Deletes finished jobs older than the retention, in bounded batches.
CREATE FUNCTION queue.prune(p_older_than interval DEFAULT interval '1 day', p_limit integer DEFAULT 10000)
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

-- Counts by queue and state, and the age of the oldest ready job per queue.
CREATE FUNCTION queue.stats() RETURNS TABLE (queue text, state text, jobs bigint, oldest_available_age interval)
    LANGUAGE sql STABLE
    AS $$
    SELECT j.queue, j.state, count(*),
           CASE WHEN j.state = 'available' THEN now() - min(j.run_at) END
      FROM queue.jobs j
     GROUP BY j.queue, j.state
     ORDER BY j.queue, j.state
$$;

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
