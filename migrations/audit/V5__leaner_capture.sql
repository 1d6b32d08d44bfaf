-- audit V5: the capture trigger does less on every audited write.
--
-- - Measured on PostgreSQL 15 (instructions of a one-row insert transaction, callgrind): the
--   plain table 341,700; with V3's trigger 658,000, of which the trigger 316,000. PL/pgSQL
--   prepares each expression of a function again in every transaction, so on one-row
--   transactions the cost follows the number of expressions run, not what they compute.
-- - The usual path now runs about half as many: the trigger's arguments are read where they are
--   used (the columns compared only on update, the redacted ones only when there are any), and
--   the four limits are tested in one expression; only a write that breaks one finds out which.
-- - The context's tenant is read through tenancy.checked_context_tenant_id(), which pins its own
--   search_path: tenancy.current_tenant_id() called from here (pg_catalog, pg_temp) and from the
--   policies (the application's path) was planned again at every switch (tenancy V7, D-144).
-- - What is recorded and every error (code, message, DETAIL) are unchanged. Functions only: no
--   lock on any table, no rewrite; triggers keep their arguments.

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

-- As V3, with the context's tenant read through the pinned function.
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
    v_tenant uuid := tenancy.checked_context_tenant_id();
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
