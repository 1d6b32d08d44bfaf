-- audit V7 down: audit's own partition functions, as V1 wrote them (search_path pinned by V2).

-- Creates the partition of the (UTC) month containing p_month, if missing; returns its name.
-- Statement triggers are not inherited, so each partition gets its own TRUNCATE guard.
CREATE OR REPLACE FUNCTION audit.create_partition(p_month date) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_name text := format('records_p%s', to_char(v_start, 'YYYYMM'));
BEGIN
    IF to_regclass(format('audit.%I', v_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE audit.%I PARTITION OF audit.records FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_start::timestamp AT TIME ZONE 'UTC',
                       (v_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON audit.%I
                            FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()', v_name);
        -- An actor and a resource belong to one tenant. Without these statistics the planner
        -- multiplies the selectivities, expects a handful of rows per month and sorts the
        -- whole history of an actor instead of reading the months newest first and stopping
        -- at the page size. Partitions are planned with their own statistics, hence per
        -- partition (autovacuum's ANALYZE keeps them current).
        EXECUTE format('CREATE STATISTICS audit.%I (dependencies, ndistinct)
                            ON tenant_id, actor_id FROM audit.%I', v_name || '_actor_stats', v_name);
        EXECUTE format('CREATE STATISTICS audit.%I (dependencies, ndistinct)
                            ON tenant_id, resource_type, resource_id FROM audit.%I', v_name || '_resource_stats', v_name);
    END IF;
    RETURN v_name;
END
$$;

-- The partitions of audit.records with their bounds.
CREATE OR REPLACE FUNCTION audit.partitions() RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT c.relname::text,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'audit.records'::regclass
     ORDER BY 2
$$;
