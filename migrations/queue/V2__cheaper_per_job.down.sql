-- Back to V1's claim, complete_many, lease index and queue-name check.
CREATE OR REPLACE FUNCTION queue.claim(
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

CREATE OR REPLACE FUNCTION queue.complete_many(p_ids bigint[], p_attempts integer[]) RETURNS SETOF bigint
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

ALTER TABLE queue.jobs DROP CONSTRAINT jobs_queue_format;
ALTER TABLE queue.jobs ADD CONSTRAINT jobs_queue_format CHECK (queue ~ '^[a-z0-9_.-]{1,63}$');

DROP INDEX queue.jobs_lease_idx;
CREATE INDEX jobs_lease_idx ON queue.jobs (lease_expires_at) WHERE state = 'running';
