-- audit V7: audit.records' months are made and listed by tenancy's shared functions (tenancy
-- V8); what is audit's own stays here (the extended statistics of each new month, and
-- audit.maintain's rules for sealing and checkpoints, unchanged).
--
-- Same names, arguments, results and grants: the CLI, the cron recipes and the maintenance
-- tasks call them as before. Functions only: no lock on any table.

-- Creates the partition of the (UTC) month containing p_month, if missing; returns its name.
CREATE OR REPLACE FUNCTION audit.create_partition(p_month date) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_name text := format('records_p%s', to_char(v_start, 'YYYYMM'));
BEGIN
    IF to_regclass(format('audit.%I', v_name)) IS NULL THEN
        PERFORM tenancy.create_month_partition('audit.records', v_start, 'audit.refuse_change()');
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
    SELECT p.name, p.lower_bound, p.upper_bound FROM tenancy.month_partitions('audit.records') p
$$;
