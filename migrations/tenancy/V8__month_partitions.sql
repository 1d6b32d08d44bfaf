-- tenancy V8: monthly range partitions, in one place for every module that keeps a table by
-- month (audit.records, events.events).
--
-- - Until now audit and events each had their own copy (D-124): the same CREATE TABLE ...
--   PARTITION OF for a UTC month, the same TRUNCATE guard on each partition (statement triggers
--   are not inherited), the same catalog query for the bounds. tenancy hosts them because every
--   other module depends on it (as it hosts uuid_v7() and make_tenant_table()).
-- - What stays per module: which months exist ahead and when one is dropped (audit keeps
--   unsealed months and moves its chain checkpoints, events keeps the late-event window and the
--   actors of dropped days), and anything a module adds to a new partition (audit's extended
--   statistics). audit V7 and events V2 call these.
-- - New functions only: no lock on any table.

-- Creates the partition of p_parent (range-partitioned on a timestamptz) for the UTC month that
-- contains p_month, named <parent>_pYYYYMM in the parent's schema, with a BEFORE TRUNCATE
-- statement trigger <parent>_no_truncate running p_truncate_guard; nothing when it exists.
-- Returns the partition's name (without schema). Run by the module's own maintenance, as its
-- owner; not for other roles.
CREATE FUNCTION tenancy.create_month_partition(p_parent regclass, p_month date, p_truncate_guard regprocedure)
RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_schema name;
    v_table name;
    v_start date := date_trunc('month', p_month)::date;
    v_name text;
BEGIN
    SELECT n.nspname, c.relname INTO v_schema, v_table
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = p_parent AND c.relkind = 'p';
    IF v_table IS NULL OR p_month IS NULL OR p_truncate_guard IS NULL THEN
        RAISE EXCEPTION 'tenancy.create_month_partition: % is not a partitioned table, or an argument is NULL',
                coalesce(p_parent::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    v_name := format('%s_p%s', v_table, to_char(v_start, 'YYYYMM'));
    IF to_regclass(format('%I.%I', v_schema, v_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                       v_schema, v_name, v_schema, v_table, v_start::timestamp AT TIME ZONE 'UTC',
                       (v_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I.%I FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                       v_table || '_no_truncate', v_schema, v_name, p_truncate_guard::regproc);
    END IF;
    RETURN v_name;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.create_month_partition(regclass, date, regprocedure) FROM PUBLIC;

-- The partitions of p_parent with their bounds, oldest first. Reads only the catalog, which every
-- role may read, so it stays executable by every role (the modules' own listings call it).
CREATE FUNCTION tenancy.month_partitions(p_parent regclass)
RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT c.relname::text,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_parent
     ORDER BY 2
$$;
