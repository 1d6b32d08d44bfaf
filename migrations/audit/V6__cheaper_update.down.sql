-- audit V6 down: V5's capture trigger.

-- TG_ARGV[0] tenant source ('column', 'self' or 'context'), [1] key columns, [2] ignored,
-- [3] redacted, [4] the columns compared on update (absent on triggers attached before V3).
CREATE OR REPLACE FUNCTION audit.capture() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_row jsonb;
    v_old jsonb;
    v_new jsonb;
    v_columns text[];
    v_unchanged text[];
    v_key text;
    v_tenant uuid;
    v_resource_id text;
    v_field text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_row := to_jsonb(NEW);
        v_new := v_row - TG_ARGV[2]::text[];
    ELSIF TG_OP = 'UPDATE' THEN
        v_row := to_jsonb(NEW);
        v_new := v_row - TG_ARGV[2]::text[];
        v_old := to_jsonb(OLD) - TG_ARGV[2]::text[];
        IF v_new = v_old THEN
            RETURN NULL; -- nothing worth recording changed
        END IF;
        -- Only what changed: drop the columns whose value is the same.
        v_columns := CASE WHEN TG_NARGS > 4 THEN TG_ARGV[4]::text[] ELSE '{}'::text[] END;
        v_unchanged := '{}';
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
    ELSE
        v_row := to_jsonb(OLD);
        v_old := v_row - TG_ARGV[2]::text[];
    END IF;
    IF TG_ARGV[3] <> '{}' THEN
        FOREACH v_key IN ARRAY TG_ARGV[3]::text[] LOOP
            IF v_new ? v_key THEN
                v_new := jsonb_set(v_new, ARRAY[v_key], '"[redacted]"');
            END IF;
            IF v_old ? v_key THEN
                v_old := jsonb_set(v_old, ARRAY[v_key], '"[redacted]"');
            END IF;
        END LOOP;
    END IF;
    -- A single key is read directly; the query form is planned and run as a statement.
    IF strpos(TG_ARGV[1], ',') = 0 THEN
        v_resource_id := v_row ->> (TG_ARGV[1]::text[])[1];
    ELSE
        v_resource_id := array_to_string(ARRAY(SELECT v_row ->> k FROM unnest(TG_ARGV[1]::text[]) k), ',');
    END IF;
    v_tenant := CASE TG_ARGV[0] WHEN 'column' THEN (v_row ->> 'tenant_id')::uuid
                                WHEN 'self' THEN (v_row ->> 'id')::uuid
                                ELSE tenancy.checked_context_tenant_id() END;
    -- Every limit in one test; the branches below find which one a refused write broke.
    IF v_tenant IS NULL OR length(v_resource_id) > 500 OR length(current_setting('app.request_id', true)) > 200
       OR pg_column_size(v_new) > 1048576 OR pg_column_size(v_old) > 1048576 THEN
        -- The values were just built, so this is their uncompressed size.
        IF pg_column_size(v_new) > 1048576 OR pg_column_size(v_old) > 1048576 THEN
            v_field := CASE WHEN pg_column_size(v_new) > 1048576 THEN 'new_values' ELSE 'old_values' END;
            RAISE EXCEPTION 'audited write to %.%: % is % bytes, the audit log keeps at most 1048576',
                    TG_TABLE_SCHEMA, TG_TABLE_NAME, v_field, greatest(pg_column_size(v_new), pg_column_size(v_old))
                USING ERRCODE = '22023',
                      DETAIL = format('field=%s', v_field),
                      HINT = 'Ignore the large columns with audit.enable(table, ignored => ...).';
        ELSIF length(v_resource_id) > 500 THEN
            RAISE EXCEPTION 'audited write to %.%: the row''s key is % characters, an audit record names at most 500',
                    TG_TABLE_SCHEMA, TG_TABLE_NAME, length(v_resource_id)
                USING ERRCODE = '22023', DETAIL = 'field=resource_id';
        ELSIF length(current_setting('app.request_id', true)) > 200 THEN
            RAISE EXCEPTION 'audited write to %.%: app.request_id is % characters, at most 200',
                    TG_TABLE_SCHEMA, TG_TABLE_NAME, length(current_setting('app.request_id', true))
                USING ERRCODE = '22023', DETAIL = 'field=request_id';
        ELSE
            RAISE EXCEPTION 'audited write to %.% needs a tenant: set app.tenant_id in this transaction',
                    TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = '42501';
        END IF;
    END IF;
    INSERT INTO audit.records (tenant_id, action, resource_type, resource_id, old_values, new_values, origin)
    VALUES (v_tenant, lower(TG_OP), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, v_resource_id, v_old, v_new, 'capture');
    RETURN NULL;
END
$$;
