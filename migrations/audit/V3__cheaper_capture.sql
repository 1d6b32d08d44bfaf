-- audit V3: an audited write costs less. The capture trigger runs one INSERT per changed row,
-- and PostgreSQL prepares a table's CHECK constraints again for every INSERT statement: the
-- five on audit.records cost about as much as the insert itself. The update diff ran a query
-- joining two jsonb_each sets for every row. Both are gone from the write path:
--
-- - The CHECK constraints are dropped. Only two SECURITY DEFINER functions write records (V2),
--   and they now enforce the same limits, with a 22023 error naming the field: the capture
--   trigger (action from the operation, resource_type from the table's name, resource_id at
--   most 500 characters, request_id at most 200) and audit.record (as V2, plus request_id).
--   The sealing update is the only update refuse_change allows, and it now requires all three
--   chain columns, which records_sealed_together checked.
-- - audit.enable passes the table's columns to the trigger, which compares them one by one in
--   PL/pgSQL (no query). A column added after audit.enable is still compared, by the old query,
--   until audit.enable runs again; triggers attached before V3 take that path for every column.
--   This migration re-attaches the triggers of the tables its role owns.

-- ---------------------------------------------------------------------------------------------
-- Limits move from CHECK constraints into the writers
-- ---------------------------------------------------------------------------------------------

ALTER TABLE audit.records
    DROP CONSTRAINT records_action_format,
    DROP CONSTRAINT records_resource_type_length,
    DROP CONSTRAINT records_resource_id_length,
    DROP CONSTRAINT records_request_id_length,
    DROP CONSTRAINT records_sealed_together;

CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_LEVEL = 'ROW'
       AND OLD.hash IS NULL AND NEW.hash IS NOT NULL AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL
       AND (OLD.tenant_id, OLD.id, OLD.occurred_at, OLD.txid, OLD.actor_id, OLD.request_id, OLD.action,
            OLD.resource_type, OLD.resource_id, OLD.old_values, OLD.new_values, OLD.details, OLD.origin)
           IS NOT DISTINCT FROM
           (NEW.tenant_id, NEW.id, NEW.occurred_at, NEW.txid, NEW.actor_id, NEW.request_id, NEW.action,
            NEW.resource_type, NEW.resource_id, NEW.old_values, NEW.new_values, NEW.details, NEW.origin)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit.records is append-only: % is not allowed', TG_OP
        USING ERRCODE = '42501',
              HINT = 'Records are never changed or removed; old months are dropped by audit.maintain.';
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Capture
-- ---------------------------------------------------------------------------------------------

-- As V2, but every step is a plain PL/pgSQL expression (no query) on the usual path.
--   TG_ARGV[0] tenant source, [1] key columns, [2] ignored, [3] redacted, [4] the columns
--   compared on update (the table's columns minus the ignored ones, when audit.enable ran).
CREATE OR REPLACE FUNCTION audit.capture() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_keys text[] := TG_ARGV[1]::text[];
    v_ignored text[] := TG_ARGV[2]::text[];
    v_redacted text[] := TG_ARGV[3]::text[];
    v_columns text[] := CASE WHEN TG_NARGS > 4 THEN TG_ARGV[4]::text[] ELSE '{}'::text[] END;
    v_row jsonb;
    v_before jsonb;
    v_unchanged text[] := '{}';
    v_old jsonb;
    v_new jsonb;
    v_tenant uuid;
    v_resource_id text;
    v_key text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_new := to_jsonb(NEW) - v_ignored;
        v_old := to_jsonb(OLD) - v_ignored;
        IF v_new = v_old THEN
            RETURN NULL; -- nothing worth recording changed
        END IF;
        -- Only what changed: drop the columns whose value is the same.
        FOREACH v_key IN ARRAY v_columns LOOP
            IF v_new -> v_key = v_old -> v_key THEN
                v_unchanged := v_unchanged || v_key;
            END IF;
        END LOOP;
        IF v_new - v_columns <> '{}'::jsonb THEN
            -- Columns audit.enable did not list (added since): compared by a query.
            v_unchanged := v_unchanged || ARRAY(SELECT n.key FROM jsonb_each(v_new - v_columns) n
                                                 WHERE n.value = v_old -> n.key);
        END IF;
        v_new := v_new - v_unchanged;
        v_old := v_old - v_unchanged;
        v_row := to_jsonb(NEW);
    ELSIF TG_OP = 'INSERT' THEN
        v_row := to_jsonb(NEW);
        v_new := v_row - v_ignored;
    ELSE
        v_row := to_jsonb(OLD);
        v_old := v_row - v_ignored;
    END IF;
    FOREACH v_key IN ARRAY v_redacted LOOP
        IF v_new ? v_key THEN
            v_new := jsonb_set(v_new, ARRAY[v_key], '"[redacted]"');
        END IF;
        IF v_old ? v_key THEN
            v_old := jsonb_set(v_old, ARRAY[v_key], '"[redacted]"');
        END IF;
    END LOOP;
    -- The values were just built, so this is their uncompressed size.
    IF pg_column_size(v_new) > 1048576 OR pg_column_size(v_old) > 1048576 THEN
        RAISE EXCEPTION 'audited write to %.%: % is % bytes, the audit log keeps at most 1048576',
                TG_TABLE_SCHEMA, TG_TABLE_NAME,
                CASE WHEN pg_column_size(v_new) > 1048576 THEN 'new_values' ELSE 'old_values' END,
                greatest(pg_column_size(v_new), pg_column_size(v_old))
            USING ERRCODE = '22023',
                  DETAIL = format('field=%s', CASE WHEN pg_column_size(v_new) > 1048576 THEN 'new_values' ELSE 'old_values' END),
                  HINT = 'Ignore the large columns with audit.enable(table, ignored => ...).';
    END IF;
    IF cardinality(v_keys) = 1 THEN
        v_resource_id := v_row ->> v_keys[1];
    ELSE
        v_resource_id := array_to_string(ARRAY(SELECT v_row ->> k FROM unnest(v_keys) k), ',');
    END IF;
    IF length(v_resource_id) > 500 THEN
        RAISE EXCEPTION 'audited write to %.%: the row''s key is % characters, an audit record names at most 500',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, length(v_resource_id)
            USING ERRCODE = '22023', DETAIL = 'field=resource_id';
    END IF;
    IF length(current_setting('app.request_id', true)) > 200 THEN
        RAISE EXCEPTION 'audited write to %.%: app.request_id is % characters, at most 200',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, length(current_setting('app.request_id', true))
            USING ERRCODE = '22023', DETAIL = 'field=request_id';
    END IF;
    IF TG_ARGV[0] = 'column' THEN
        v_tenant := (v_row ->> 'tenant_id')::uuid;
    ELSIF TG_ARGV[0] = 'self' THEN
        v_tenant := (v_row ->> 'id')::uuid;
    ELSE
        v_tenant := tenancy.current_tenant_id();
    END IF;
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'audited write to %.% needs a tenant: set app.tenant_id in this transaction',
                TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = '42501';
    END IF;
    INSERT INTO audit.records (tenant_id, action, resource_type, resource_id, old_values, new_values, origin)
    VALUES (v_tenant, lower(TG_OP), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, v_resource_id, v_old, v_new, 'capture');
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION audit.capture() FROM PUBLIC;

-- As V2, plus the request_id limit the dropped CHECK held.
CREATE OR REPLACE FUNCTION audit.record(
    p_action text,
    p_resource_type text,
    p_resource_id text DEFAULT NULL,
    p_details jsonb DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_id bigint;
    v_size bigint;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'audit.record needs a tenant: set app.tenant_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    IF p_action IS NULL OR length(p_action) > 100 OR p_action !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' THEN
        RAISE EXCEPTION 'audit.record: action must be a lowercase dotted name such as user.login (at most 100 characters)'
            USING ERRCODE = '22023', DETAIL = 'field=action';
    END IF;
    IF p_resource_type IS NULL OR length(p_resource_type) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'audit.record: resource_type must have 1 to 200 characters'
            USING ERRCODE = '22023', DETAIL = 'field=resource_type';
    END IF;
    IF length(p_resource_id) > 500 THEN
        RAISE EXCEPTION 'audit.record: resource_id must have at most 500 characters, got %', length(p_resource_id)
            USING ERRCODE = '22023', DETAIL = 'field=resource_id';
    END IF;
    IF length(current_setting('app.request_id', true)) > 200 THEN
        RAISE EXCEPTION 'audit.record: app.request_id is % characters, at most 200',
                length(current_setting('app.request_id', true))
            USING ERRCODE = '22023', DETAIL = 'field=request_id';
    END IF;
    v_size := octet_length(p_details::text);
    IF v_size > 65536 THEN
        RAISE EXCEPTION 'audit.record: details is % bytes of JSON, at most 65536', v_size
            USING ERRCODE = '22023', DETAIL = 'field=details';
    END IF;
    INSERT INTO audit.records AS l (tenant_id, action, resource_type, resource_id, details, origin)
    VALUES (v_tenant, p_action, p_resource_type, p_resource_id, p_details, 'event')
    RETURNING l.id INTO v_id;
    RETURN v_id;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Enabling: the trigger learns the columns it compares
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION audit.enable(
    p_table regclass,
    p_ignored text[] DEFAULT '{}',
    p_redacted text[] DEFAULT '{}'
) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_name text;
    v_schema text;
    v_columns text[];
    v_pk text[];
    v_unknown text[];
    v_source text;
    v_ignored text[] := coalesce(p_ignored, '{}');
    v_redacted text[] := coalesce(p_redacted, '{}');
BEGIN
    SELECT n.nspname, format('%I.%I', n.nspname, c.relname)
      INTO v_schema, v_name
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = p_table AND c.relkind IN ('r', 'p');
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'audit.enable: % is not a table', p_table USING ERRCODE = '22023';
    END IF;
    IF v_schema = 'audit' THEN
        RAISE EXCEPTION 'audit.enable: the audit schema''s own tables cannot be audited' USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO v_columns
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT array_agg(u) INTO v_unknown
      FROM unnest(v_ignored || v_redacted) u
     WHERE u <> ALL (v_columns);
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'audit.enable: % has no column(s) %', v_name, array_to_string(v_unknown, ', ')
            USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(a.attname::text ORDER BY k.ord) INTO v_pk
      FROM pg_catalog.pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = p_table AND i.indisprimary;
    IF v_pk IS NULL THEN
        RAISE EXCEPTION 'audit.enable: % has no primary key, so its records could not name the row', v_name
            USING ERRCODE = '22023';
    END IF;
    v_source := CASE WHEN 'tenant_id' = ANY (v_columns) THEN 'column'
                     WHEN p_table = 'tenancy.tenants'::regclass THEN 'self'
                     ELSE 'context' END;
    -- The tenant is already in the record; the rest of the key names the row.
    IF cardinality(v_pk) > 1 THEN
        v_pk := array_remove(v_pk, 'tenant_id');
    END IF;
    INSERT INTO audit.tables AS t (table_name, tenant_source, key_columns, ignored, redacted)
    VALUES (v_name, v_source, v_pk, v_ignored, v_redacted)
    ON CONFLICT (table_name) DO UPDATE
        SET tenant_source = excluded.tenant_source, key_columns = excluded.key_columns,
            ignored = excluded.ignored, redacted = excluded.redacted, enabled_at = now();
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = p_table AND g.tgname = 'audit_capture') THEN
        EXECUTE format('DROP TRIGGER audit_capture ON %s', v_name);
    END IF;
    EXECUTE format('CREATE TRIGGER audit_capture AFTER INSERT OR UPDATE OR DELETE ON %s
                        FOR EACH ROW EXECUTE FUNCTION audit.capture(%L, %L, %L, %L, %L)',
                   v_name, v_source, v_pk, v_ignored, v_redacted,
                   ARRAY(SELECT c FROM unnest(v_columns) c WHERE c <> ALL (v_ignored)));
END
$$;

-- Re-attach the triggers of the audited tables this role owns, so they get the column list;
-- the others keep working (by the query) until their owner runs audit.enable again.
DO $$
DECLARE
    v_table record;
    v_others integer := 0;
BEGIN
    FOR v_table IN
        SELECT t.table_name, t.ignored, t.redacted, pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owned
          FROM audit.tables t
          JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(t.table_name)
         ORDER BY t.table_name
    LOOP
        IF v_table.owned THEN
            PERFORM audit.enable(v_table.table_name::regclass, v_table.ignored, v_table.redacted);
        ELSE
            v_others := v_others + 1;
        END IF;
    END LOOP;
    IF v_others > 0 THEN
        RAISE NOTICE 'audit V3: % audited table(s) belong to other roles; run audit.enable on them again (as their owner) for the faster update path', v_others;
    END IF;
END
$$;
