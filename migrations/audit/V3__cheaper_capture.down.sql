-- audit V3 down: the CHECK constraints, and V2's writers and enable. Triggers attached by V3's
-- enable keep their fifth argument, which V2's capture ignores.

CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_LEVEL = 'ROW'
       AND OLD.hash IS NULL AND NEW.hash IS NOT NULL
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

CREATE OR REPLACE FUNCTION audit.capture() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_keys text[] := TG_ARGV[1]::text[];
    v_ignored text[] := TG_ARGV[2]::text[];
    v_redacted text[] := TG_ARGV[3]::text[];
    v_row jsonb;
    v_old jsonb;
    v_new jsonb;
    v_tenant uuid;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_row := to_jsonb(NEW);
        -- Only what changed, minus ignored columns; redacted values are replaced.
        SELECT jsonb_object_agg(n.key, CASE WHEN n.key = ANY (v_redacted) THEN '"[redacted]"'::jsonb ELSE o.value END),
               jsonb_object_agg(n.key, CASE WHEN n.key = ANY (v_redacted) THEN '"[redacted]"'::jsonb ELSE n.value END)
          INTO v_old, v_new
          FROM jsonb_each(v_row) n
          JOIN jsonb_each(to_jsonb(OLD)) o ON o.key = n.key
         WHERE n.value IS DISTINCT FROM o.value AND n.key <> ALL (v_ignored);
        IF v_new IS NULL THEN
            RETURN NULL; -- nothing worth recording changed
        END IF;
    ELSE
        v_row := CASE WHEN TG_OP = 'INSERT' THEN to_jsonb(NEW) ELSE to_jsonb(OLD) END;
        v_new := v_row - v_ignored;
        IF cardinality(v_redacted) > 0 THEN
            v_new := v_new || coalesce((SELECT jsonb_object_agg(k, '"[redacted]"'::jsonb)
                                          FROM unnest(v_redacted) k WHERE v_new ? k), '{}'::jsonb);
        END IF;
        IF TG_OP = 'DELETE' THEN
            v_old := v_new;
            v_new := NULL;
        END IF;
    END IF;
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
    v_tenant := CASE TG_ARGV[0]
                    WHEN 'column' THEN (v_row ->> 'tenant_id')::uuid
                    WHEN 'self' THEN (v_row ->> 'id')::uuid
                    ELSE (SELECT tenancy.current_tenant_id())
                END;
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'audited write to %.% needs a tenant: set app.tenant_id in this transaction',
                TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = '42501';
    END IF;
    INSERT INTO audit.records (tenant_id, action, resource_type, resource_id, old_values, new_values, origin)
    VALUES (v_tenant, lower(TG_OP), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
            CASE WHEN cardinality(v_keys) = 1 THEN v_row ->> v_keys[1]
                 ELSE array_to_string(ARRAY(SELECT v_row ->> k FROM unnest(v_keys) k), ',') END,
            v_old, v_new, 'capture');
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION audit.capture() FROM PUBLIC;

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
      FROM unnest(coalesce(p_ignored, '{}') || coalesce(p_redacted, '{}')) u
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
    VALUES (v_name, v_source, v_pk, coalesce(p_ignored, '{}'), coalesce(p_redacted, '{}'))
    ON CONFLICT (table_name) DO UPDATE
        SET tenant_source = excluded.tenant_source, key_columns = excluded.key_columns,
            ignored = excluded.ignored, redacted = excluded.redacted, enabled_at = now();
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = p_table AND g.tgname = 'audit_capture') THEN
        EXECUTE format('DROP TRIGGER audit_capture ON %s', v_name);
    END IF;
    EXECUTE format('CREATE TRIGGER audit_capture AFTER INSERT OR UPDATE OR DELETE ON %s
                        FOR EACH ROW EXECUTE FUNCTION audit.capture(%L, %L, %L, %L)',
                   v_name, v_source, v_pk, coalesce(p_ignored, '{}'), coalesce(p_redacted, '{}'));
END
$$;

ALTER TABLE audit.records
    ADD CONSTRAINT records_action_format CHECK (length(action) <= 100 AND action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    ADD CONSTRAINT records_resource_type_length CHECK (length(resource_type) BETWEEN 1 AND 200),
    ADD CONSTRAINT records_resource_id_length CHECK (length(resource_id) <= 500),
    ADD CONSTRAINT records_request_id_length CHECK (length(request_id) <= 200),
    ADD CONSTRAINT records_sealed_together CHECK ((seq IS NULL) = (hash IS NULL) AND (seq IS NULL) = (prev_hash IS NULL));
