-- Reverts audit V2: the V1 functions, grants and columns come back. Checkpoints, the sealer's
-- table and the origin column are dropped (records keep their V2 hashes, which include the
-- origin: a V1 verify reports records sealed under V2 as changed).
DROP FUNCTION audit.unsealed();
DROP TABLE audit.seal_locks;
DROP TABLE audit.checkpoints;
DROP POLICY owner_access ON audit.records;
DROP POLICY owner_access ON audit.chain_heads;

CREATE OR REPLACE FUNCTION audit.require_rls_bypass(p_what text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = ''
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE r.rolname = current_user AND (r.rolsuper OR r.rolbypassrls)) THEN
        RAISE EXCEPTION '% reads every tenant''s audit records: run it as a superuser or a BYPASSRLS role, not %',
                p_what, current_user
            USING ERRCODE = '42501';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_LEVEL = 'ROW'
       AND OLD.hash IS NULL AND NEW.hash IS NOT NULL
       AND (OLD.tenant_id, OLD.id, OLD.occurred_at, OLD.txid, OLD.actor_id, OLD.request_id, OLD.action,
            OLD.resource_type, OLD.resource_id, OLD.old_values, OLD.new_values, OLD.details)
           IS NOT DISTINCT FROM
           (NEW.tenant_id, NEW.id, NEW.occurred_at, NEW.txid, NEW.actor_id, NEW.request_id, NEW.action,
            NEW.resource_type, NEW.resource_id, NEW.old_values, NEW.new_values, NEW.details)
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
    SET search_path = ''
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
    INSERT INTO audit.records (tenant_id, action, resource_type, resource_id, old_values, new_values)
    VALUES (v_tenant, lower(TG_OP), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
            CASE WHEN cardinality(v_keys) = 1 THEN v_row ->> v_keys[1]
                 ELSE array_to_string(ARRAY(SELECT v_row ->> k FROM unnest(v_keys) k), ',') END,
            v_old, v_new);
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
    SET search_path = ''
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_id bigint;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'audit.record needs a tenant: set app.tenant_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    INSERT INTO audit.records AS l (tenant_id, action, resource_type, resource_id, details)
    VALUES (v_tenant, p_action, p_resource_type, p_resource_id, p_details)
    RETURNING l.id INTO v_id;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION audit.seal(p_limit integer DEFAULT 10000) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
DECLARE
    v_rec record;
    v_tenant uuid;
    v_seq bigint;
    v_hash bytea;
    v_tenants uuid[] := '{}';
    v_times timestamptz[] := '{}';
    v_ids bigint[] := '{}';
    v_seqs bigint[] := '{}';
    v_prevs bytea[] := '{}';
    v_hashes bytea[] := '{}';
BEGIN
    PERFORM audit.require_rls_bypass('audit.seal');
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot older than the previous sealer's commit would chain its records again.
        RAISE EXCEPTION 'audit.seal must run at READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25000';
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(hashtextextended('pgstrata.audit.seal', 0)) THEN
        RETURN 0;
    END IF;
    -- The links are computed in order, one after the other (each hash needs the previous one);
    -- the records are then updated in one statement.
    FOR v_rec IN
        SELECT b.*
          FROM (SELECT l.tenant_id, l.occurred_at, l.id,
                       audit.content(l.tenant_id, l.id, l.occurred_at, l.txid, l.actor_id, l.request_id, l.action,
                                     l.resource_type, l.resource_id, l.old_values, l.new_values, l.details) AS content
                  FROM audit.records l
                 WHERE l.hash IS NULL
                 ORDER BY l.id
                 LIMIT p_limit) b
         ORDER BY b.tenant_id, b.id
    LOOP
        IF v_tenant IS DISTINCT FROM v_rec.tenant_id THEN
            v_tenant := v_rec.tenant_id;
            SELECT h.seq, h.hash INTO v_seq, v_hash FROM audit.chain_heads h WHERE h.tenant_id = v_tenant;
            IF NOT FOUND THEN
                v_seq := 0;
                v_hash := decode(repeat('00', 32), 'hex');
            END IF;
        END IF;
        v_seq := v_seq + 1;
        v_tenants := v_tenants || v_rec.tenant_id;
        v_times := v_times || v_rec.occurred_at;
        v_ids := v_ids || v_rec.id;
        v_seqs := v_seqs || v_seq;
        v_prevs := v_prevs || v_hash;
        v_hash := audit.link_hash(v_hash, v_seq, v_rec.content);
        v_hashes := v_hashes || v_hash;
    END LOOP;
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;
    UPDATE audit.records l SET seq = u.seq, prev_hash = u.prev_hash, hash = u.hash
      FROM unnest(v_tenants, v_times, v_ids, v_seqs, v_prevs, v_hashes)
               AS u(tenant_id, occurred_at, id, seq, prev_hash, hash)
     WHERE l.tenant_id = u.tenant_id AND l.occurred_at = u.occurred_at AND l.id = u.id;
    -- The last link of each tenant in this batch is its new head.
    INSERT INTO audit.chain_heads AS h (tenant_id, seq, hash)
    SELECT DISTINCT ON (u.tenant_id) u.tenant_id, u.seq, u.hash
      FROM unnest(v_tenants, v_seqs, v_hashes) AS u(tenant_id, seq, hash)
     ORDER BY u.tenant_id, u.seq DESC
    ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, sealed_at = now();
    RETURN cardinality(v_ids);
END
$$;

CREATE OR REPLACE FUNCTION audit.verify(p_tenant uuid DEFAULT NULL)
    RETURNS TABLE (tenant_id uuid, seq bigint, id bigint, occurred_at timestamptz, problem text)
    LANGUAGE plpgsql STABLE
    SET search_path = ''
    AS $$
BEGIN
    PERFORM audit.require_rls_bypass('audit.verify');
    RETURN QUERY
    WITH chain AS (
        SELECT l.tenant_id, l.seq, l.id, l.occurred_at, l.prev_hash, l.hash,
               audit.link_hash(l.prev_hash, l.seq,
                               audit.content(l.tenant_id, l.id, l.occurred_at, l.txid, l.actor_id, l.request_id,
                                             l.action, l.resource_type, l.resource_id, l.old_values,
                                             l.new_values, l.details)) AS recomputed,
               lag(l.seq) OVER w AS before_seq,
               lag(l.hash) OVER w AS before_hash,
               row_number() OVER w AS position
          FROM audit.records l
         WHERE l.hash IS NOT NULL AND (p_tenant IS NULL OR l.tenant_id = p_tenant)
        WINDOW w AS (PARTITION BY l.tenant_id ORDER BY l.seq, l.id)
    ), checked AS (
        SELECT c.tenant_id, c.seq, c.id, c.occurred_at,
               CASE WHEN c.recomputed <> c.hash THEN 'content does not match its hash'
                    WHEN c.position > 1 AND c.before_seq = c.seq THEN 'sequence number is used twice'
                    WHEN c.position > 1 AND c.before_seq <> c.seq - 1
                        THEN format('records %s to %s are missing', c.before_seq + 1, c.seq - 1)
                    WHEN c.position > 1 AND c.prev_hash <> c.before_hash THEN 'prev_hash is not the previous record''s hash'
                    WHEN c.position = 1 AND c.seq = 1 AND c.prev_hash <> decode(repeat('00', 32), 'hex')
                        THEN 'first record does not start the chain'
               END AS problem
          FROM chain c
    ), heads AS (
        SELECT h.tenant_id, h.seq, NULL::bigint AS id, NULL::timestamptz AS occurred_at,
               'the chain head''s record is missing or changed' AS problem
          FROM audit.chain_heads h
         WHERE (p_tenant IS NULL OR h.tenant_id = p_tenant)
           AND NOT EXISTS (SELECT 1 FROM chain c WHERE c.tenant_id = h.tenant_id AND c.seq = h.seq AND c.hash = h.hash)
           -- Retention drops the oldest months first: a tenant with no record left had all of
           -- them in dropped months.
           AND EXISTS (SELECT 1 FROM chain c WHERE c.tenant_id = h.tenant_id)
    )
    SELECT DISTINCT ON (x.tenant_id) x.tenant_id, x.seq, x.id, x.occurred_at, x.problem
      FROM (SELECT * FROM checked k WHERE k.problem IS NOT NULL
            UNION ALL
            SELECT * FROM heads) x
     ORDER BY x.tenant_id, x.seq, x.id NULLS LAST;
END
$$;

CREATE OR REPLACE FUNCTION audit.maintain(
    p_ahead integer DEFAULT NULL,
    p_retention_months integer DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (action text, partition text)
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
DECLARE
    v_ahead integer;
    v_retention integer;
    v_month date := date_trunc('month', p_now AT TIME ZONE 'UTC')::date;
    v_name text;
    v_part record;
BEGIN
    SELECT coalesce(p_ahead, s.premake_months), coalesce(p_retention_months, s.retention_months)
      INTO v_ahead, v_retention
      FROM audit.settings s;
    IF v_ahead IS NULL OR v_ahead < 1 THEN
        RAISE EXCEPTION 'audit.maintain: months ahead must be at least 1, got %', v_ahead USING ERRCODE = '22023';
    END IF;
    IF v_retention IS NOT NULL AND v_retention < 1 THEN
        RAISE EXCEPTION 'audit.maintain: retention must be at least 1 month, got %', v_retention USING ERRCODE = '22023';
    END IF;
    FOR i IN 0..v_ahead LOOP
        v_name := format('records_p%s', to_char(v_month + make_interval(months => i), 'YYYYMM'));
        IF to_regclass(format('audit.%I', v_name)) IS NULL THEN
            PERFORM audit.create_partition((v_month + make_interval(months => i))::date);
            action := 'created';
            partition := v_name;
            RETURN NEXT;
        END IF;
    END LOOP;
    IF v_retention IS NOT NULL THEN
        FOR v_part IN SELECT p.name, p.upper_bound FROM audit.partitions() p
                       WHERE p.upper_bound <= p_now - make_interval(months => v_retention)
        LOOP
            EXECUTE format('DROP TABLE audit.%I', v_part.name);
            action := 'dropped';
            partition := v_part.name;
            RETURN NEXT;
        END LOOP;
    END IF;
END
$$;

DROP FUNCTION audit.content(uuid, bigint, timestamptz, xid8, uuid, text, text, text, text, jsonb, jsonb, jsonb, text);
ALTER TABLE audit.records DROP COLUMN origin;
ALTER FUNCTION audit.content(uuid, bigint, timestamptz, xid8, uuid, text, text, text, text, jsonb, jsonb, jsonb) RESET search_path;
ALTER FUNCTION audit.link_hash(bytea, bigint, text) RESET search_path;
ALTER FUNCTION audit.create_partition(date) SET search_path = '';
ALTER FUNCTION audit.partitions() SET search_path = '';
ALTER FUNCTION audit.enable(regclass, text[], text[]) SET search_path = '';
ALTER FUNCTION audit.disable(regclass) SET search_path = '';
ALTER FUNCTION audit.enable_defaults() SET search_path = '';
ALTER FUNCTION audit.maintain(integer, integer, timestamptz) SECURITY INVOKER RESET lock_timeout;
ALTER FUNCTION audit.capture() SECURITY INVOKER;
ALTER FUNCTION audit.record(text, text, text, jsonb) SECURITY INVOKER;
ALTER FUNCTION audit.seal(integer) SECURITY INVOKER;
ALTER FUNCTION audit.verify(uuid) SECURITY INVOKER;
GRANT EXECUTE ON FUNCTION audit.capture(), audit.record(text, text, text, jsonb) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION audit.seal(integer), audit.maintain(integer, integer, timestamptz), audit.verify(uuid)
    FROM pgstrata_worker, pgstrata_operator;
REVOKE USAGE ON SCHEMA audit FROM pgstrata_worker, pgstrata_operator;
GRANT INSERT (tenant_id, action, resource_type, resource_id, old_values, new_values, details)
    ON audit.records TO pgstrata_app;
