-- queue V6: queue.stats() costs what the backlog costs, never the whole history.
--
-- - Until V5 it counted every job by queue and state, finished ones included: its cost followed
--   the table, which between prunes is mostly history (a dashboard polling it read millions of
--   rows each time).
-- - Now each unfinished state is counted from its partial index (as queue.metrics does), and
--   finished jobs (completed, discarded, cancelled) only over a window, one day by default,
--   from jobs_finalized_idx. A caller that wants the whole history passes a window that long
--   and pays for it.
-- - Same columns; `SELECT * FROM queue.stats()` keeps working. The request path still sees its
--   own tenant's jobs only (row-level security), a worker every job.
-- - Functions only: no lock on any table, no rewrite.

DROP FUNCTION queue.stats();

CREATE FUNCTION queue.stats(p_finished_within interval DEFAULT interval '1 day')
RETURNS TABLE (queue text, state text, jobs bigint, oldest_available_age interval)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    -- As queue.metrics (V5): with a large backlog the planner preferred a scan of the whole
    -- table, history included, to the partial indexes.
    SET jit = off
    SET enable_seqscan = off
    AS $$
#variable_conflict use_column
BEGIN
    IF p_finished_within IS NULL OR p_finished_within < interval '0' THEN
        RAISE EXCEPTION 'queue.stats: window % is out of range', coalesce(p_finished_within::text, 'NULL')
            USING ERRCODE = '22023', DETAIL = 'field=finished_within',
                  HINT = 'count finished jobs over a window of zero or more, such as interval ''1 day''';
    END IF;
    RETURN QUERY
    SELECT s.queue, s.state, s.jobs, s.age
      FROM (SELECT j.queue, j.state, count(*) AS jobs, now() - min(j.run_at) AS age
              FROM queue.jobs j WHERE j.state = 'available' GROUP BY j.queue, j.state
            UNION ALL
            SELECT j.queue, j.state, count(*), NULL::interval
              FROM queue.jobs j WHERE j.state IN ('scheduled', 'retryable') GROUP BY j.queue, j.state
            UNION ALL
            -- Running jobs are the ones with a lease (jobs_running_has_lease): jobs_lease_idx.
            SELECT j.queue, j.state, count(*), NULL::interval
              FROM queue.jobs j WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running'
             GROUP BY j.queue, j.state
            UNION ALL
            SELECT j.queue, j.state, count(*), NULL::interval
              FROM queue.jobs j
             WHERE j.finalized_at IS NOT NULL AND j.finalized_at > now() - p_finished_within
               AND j.state IN ('completed', 'discarded', 'cancelled')
             GROUP BY j.queue, j.state) s
     ORDER BY s.queue, s.state;
END
$$;
COMMENT ON FUNCTION queue.stats(interval) IS
    'Jobs by queue and state: every unfinished job, and the jobs finished within the window (one day by default); the oldest ready job''s wait';

REVOKE EXECUTE ON FUNCTION queue.stats(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.stats(interval) TO pgstrata_app, pgstrata_worker;
