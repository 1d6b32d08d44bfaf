-- events V2: events.events' months are made and listed by tenancy's shared functions (tenancy
-- V8), as audit's are (audit V7); events.maintain keeps its own rules (the late-event window,
-- the actors of dropped days), unchanged.
--
-- Same names, arguments, results and grants. Functions only: no lock on any table.

-- Creates the partition of the (UTC) month containing p_month, if missing; returns its name.
CREATE OR REPLACE FUNCTION events.create_partition(p_month date) RETURNS text
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT tenancy.create_month_partition('events.events', p_month, 'events.refuse_change()')
$$;

-- The partitions of events.events with their bounds.
CREATE OR REPLACE FUNCTION events.partitions() RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT p.name, p.lower_bound, p.upper_bound FROM tenancy.month_partitions('events.events') p
$$;
