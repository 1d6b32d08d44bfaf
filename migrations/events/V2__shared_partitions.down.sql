-- events V2 down: events' own partition functions, as V1 wrote them.

CREATE OR REPLACE FUNCTION events.create_partition(p_month date) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_name text := format('events_p%s', to_char(v_start, 'YYYYMM'));
BEGIN
    IF to_regclass(format('events.%I', v_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE events.%I PARTITION OF events.events FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_start::timestamp AT TIME ZONE 'UTC',
                       (v_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events.%I
                            FOR EACH STATEMENT EXECUTE FUNCTION events.refuse_change()', v_name);
    END IF;
    RETURN v_name;
END
$$;

-- The partitions of events.events with their bounds.
CREATE OR REPLACE FUNCTION events.partitions() RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT c.relname::text,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'events.events'::regclass
     ORDER BY 2
$$;
