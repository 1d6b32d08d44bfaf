-- audit V5 down: V3's capture trigger and audit.record, which read the tenant of the context
-- through tenancy.current_tenant_id().

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
