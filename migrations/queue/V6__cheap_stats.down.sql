-- queue V6 down: V1's queue.stats(), which counts every job, history included.

DROP FUNCTION queue.stats(interval);

CREATE FUNCTION queue.stats() RETURNS TABLE (queue text, state text, jobs bigint, oldest_available_age interval)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT j.queue, j.state, count(*),
           CASE WHEN j.state = 'available' THEN now() - min(j.run_at) END
      FROM queue.jobs j
     GROUP BY j.queue, j.state
     ORDER BY j.queue, j.state
$$;
REVOKE EXECUTE ON FUNCTION queue.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.stats() TO pgstrata_app, pgstrata_worker;
