-- audit V3 down: the seals written back into the records' chain columns, V2's sealer, work
-- list and functions, the CHECK constraints, and V2's writers and enable. Triggers attached by
-- V3's enable keep their fifth argument, which V2's capture ignores.

-- V3's refuse_change still allows this one update: all three chain columns, from NULL.
UPDATE audit.records l
   SET seq = k.seq, prev_hash = k.prev_hash, hash = k.hash
  FROM (SELECT s.tenant_id, s.first_seq + e.ord - 1 AS seq, e.id,
               CASE WHEN e.ord = 1 THEN s.prev_hash ELSE s.hashes[e.ord - 1] END AS prev_hash, e.hash
          FROM audit.seals s
         CROSS JOIN LATERAL unnest(s.record_ids, s.hashes) WITH ORDINALITY AS e(id, hash, ord)) k
 WHERE l.tenant_id = k.tenant_id AND l.id = k.id AND l.hash IS NULL;

DROP VIEW audit.links;
DROP TABLE audit.seals;
DROP FUNCTION audit.refuse_seal_change();
DROP INDEX audit.records_seal_order_idx;
CREATE INDEX records_unsealed_idx ON audit.records (id) WHERE hash IS NULL;
ALTER TABLE audit.seal_locks DROP COLUMN after_txid, DROP COLUMN after_id;
COMMENT ON TABLE audit.seal_locks IS 'citus: local. The sealer''s lock: one row, locked by audit.seal; no grants';

CREATE OR REPLACE FUNCTION audit.seal(p_limit integer DEFAULT 10000) RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
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
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot older than the previous sealer's commit would chain its records again.
        RAISE EXCEPTION 'audit.seal must run at READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25000';
    END IF;
    BEGIN
        PERFORM 1 FROM audit.seal_locks s FOR UPDATE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'audit.seal: another sealer is running (it holds audit.seal_locks until its transaction ends)'
            USING ERRCODE = '55P03',
                  HINT = 'Run one sealer; this round may be skipped and retried at the next interval.';
    END;
    -- The links are computed in order, one after the other (each hash needs the previous one);
    -- the records are then updated in one statement.
    FOR v_rec IN
        SELECT b.*
          FROM (SELECT l.tenant_id, l.occurred_at, l.id,
                       -- audit.content(...), written out: a function with its own search_path
                       -- is not inlined, and a call per record cost more than half the rate.
                       (CASE WHEN l.origin IS NULL THEN c.a ELSE c.a || to_jsonb(l.origin) END)::text AS content
                  FROM audit.records l
                 CROSS JOIN LATERAL (
                       SELECT jsonb_build_array(l.tenant_id, l.id, l.occurred_at AT TIME ZONE 'UTC', l.txid::text,
                                                l.actor_id, l.request_id, l.action, l.resource_type, l.resource_id,
                                                l.old_values, l.new_values, l.details) AS a) c
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
        v_hash := sha256(v_hash || int8send(v_seq) || convert_to(v_rec.content, 'UTF8')); -- audit.link_hash
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
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_zero bytea := decode(repeat('00', 32), 'hex');
BEGIN
    RETURN QUERY
    WITH anchors AS (
        SELECT t.tenant_id, coalesce(k.first_seq, 1) AS first_seq, coalesce(k.prev_hash, v_zero) AS first_prev,
               h.seq AS head_seq, h.hash AS head_hash
          FROM (SELECT h.tenant_id FROM audit.chain_heads h
                UNION SELECT k.tenant_id FROM audit.checkpoints k
                UNION SELECT l.tenant_id FROM audit.records l WHERE l.hash IS NOT NULL) t
          LEFT JOIN audit.chain_heads h ON h.tenant_id = t.tenant_id
          LEFT JOIN audit.checkpoints k ON k.tenant_id = t.tenant_id
         WHERE p_tenant IS NULL OR t.tenant_id = p_tenant
    ), chain AS (
        SELECT l.tenant_id, l.seq, l.id, l.occurred_at, l.prev_hash, l.hash, a.first_seq, a.first_prev,
               -- audit.link_hash(prev_hash, seq, audit.content(...)), written out as in seal.
               sha256(l.prev_hash || int8send(l.seq)
                      || convert_to((CASE WHEN l.origin IS NULL THEN c.a ELSE c.a || to_jsonb(l.origin) END)::text,
                                    'UTF8')) AS recomputed,
               lag(l.seq) OVER w AS before_seq,
               lag(l.hash) OVER w AS before_hash,
               row_number() OVER w AS position,
               count(*) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
          FROM audit.records l
          JOIN anchors a ON a.tenant_id = l.tenant_id
         CROSS JOIN LATERAL (
               SELECT jsonb_build_array(l.tenant_id, l.id, l.occurred_at AT TIME ZONE 'UTC', l.txid::text,
                                        l.actor_id, l.request_id, l.action, l.resource_type, l.resource_id,
                                        l.old_values, l.new_values, l.details) AS a) c
         WHERE l.hash IS NOT NULL AND l.seq >= a.first_seq
        WINDOW w AS (PARTITION BY l.tenant_id ORDER BY l.seq, l.id)
    ), checked AS (
        SELECT c.tenant_id, c.seq, c.id, c.occurred_at,
               CASE WHEN c.recomputed <> c.hash THEN 'content does not match its hash'
                    WHEN c.position = 1 AND c.seq > c.first_seq
                        THEN format('records %s to %s are missing (the start of the chain)', c.first_seq, c.seq - 1)
                    WHEN c.position = 1 AND c.prev_hash <> c.first_prev
                        THEN CASE WHEN c.first_seq = 1 THEN 'first record does not start the chain'
                                  ELSE 'first record does not continue the checkpoint' END
                    WHEN c.position > 1 AND c.before_seq = c.seq THEN 'sequence number is used twice'
                    WHEN c.position > 1 AND c.before_seq <> c.seq - 1
                        THEN format('records %s to %s are missing', c.before_seq + 1, c.seq - 1)
                    WHEN c.position > 1 AND c.prev_hash <> c.before_hash THEN 'prev_hash is not the previous record''s hash'
               END AS problem
          FROM chain c
    ), ends AS (
        SELECT a.tenant_id,
               CASE WHEN a.head_seq IS NULL THEN coalesce(c.seq, a.first_seq)
                    WHEN c.seq IS NULL THEN a.first_seq
                    WHEN c.seq < a.head_seq THEN c.seq + 1
                    ELSE a.head_seq END AS seq,
               NULL::bigint AS id, NULL::timestamptz AS occurred_at,
               CASE WHEN a.head_seq IS NULL THEN 'the chain has no head'
                    WHEN a.head_seq < a.first_seq - 1 THEN 'the checkpoint is ahead of the chain head'
                    WHEN c.seq IS NULL AND a.head_seq >= a.first_seq
                        THEN format('records %s to %s are missing (every record of the chain)', a.first_seq, a.head_seq)
                    WHEN c.seq < a.head_seq
                        THEN format('records %s to %s are missing (the end of the chain)', c.seq + 1, a.head_seq)
                    WHEN c.seq > a.head_seq THEN 'records follow the chain head'
                    WHEN c.seq = a.head_seq AND c.hash <> a.head_hash THEN 'the chain head''s record is missing or changed'
               END AS problem
          FROM anchors a
          LEFT JOIN chain c ON c.tenant_id = a.tenant_id AND c.position = c.total
    )
    SELECT DISTINCT ON (x.tenant_id) x.tenant_id, x.seq, x.id, x.occurred_at, x.problem
      FROM (SELECT k.tenant_id, k.seq, k.id, k.occurred_at, k.problem FROM checked k WHERE k.problem IS NOT NULL
            UNION ALL
            SELECT e.tenant_id, e.seq, e.id, e.occurred_at, e.problem FROM ends e WHERE e.problem IS NOT NULL) x
     ORDER BY x.tenant_id, x.seq, x.id NULLS LAST;
END
$$;

CREATE OR REPLACE FUNCTION audit.maintain(
    p_ahead integer DEFAULT NULL,
    p_retention_months integer DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (action text, partition text)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
    AS $$
DECLARE
    v_ahead integer;
    v_retention integer;
    v_month date := date_trunc('month', p_now AT TIME ZONE 'UTC')::date;
    v_name text;
    v_part record;
    v_unsealed bigint;
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
                       ORDER BY p.lower_bound
        LOOP
            EXECUTE format('SELECT count(*) FROM audit.%I l WHERE l.hash IS NULL', v_part.name) INTO v_unsealed;
            IF v_unsealed > 0 THEN
                RAISE WARNING 'audit.maintain: kept audit.% past its retention: % record(s) in it are not sealed yet',
                        v_part.name, v_unsealed
                    USING HINT = 'Run a sealer (audit.seal()), then audit.maintain() again.';
                action := 'kept_unsealed';
                partition := v_part.name;
                RETURN NEXT;
                -- Later months are kept too, so the checkpoints only ever move forward.
                EXIT;
            END IF;
            -- The last sealed record of each tenant in the month: a hash aggregate and a hash
            -- join (two scans, no sort of the month).
            EXECUTE format(
                'INSERT INTO audit.checkpoints AS k (tenant_id, first_seq, prev_hash, reason)
                 SELECT DISTINCT ON (l.tenant_id) l.tenant_id, l.seq + 1, l.hash, ''retention''
                   FROM audit.%I l
                   JOIN (SELECT m.tenant_id, max(m.seq) AS seq FROM audit.%I m GROUP BY m.tenant_id) last
                     ON last.tenant_id = l.tenant_id AND last.seq = l.seq
                  ORDER BY l.tenant_id, l.hash
                 ON CONFLICT (tenant_id) DO UPDATE
                    SET first_seq = excluded.first_seq, prev_hash = excluded.prev_hash,
                        recorded_at = now(), reason = excluded.reason
                  WHERE excluded.first_seq > k.first_seq', v_part.name, v_part.name);
            EXECUTE format('DROP TABLE audit.%I', v_part.name);
            action := 'dropped';
            partition := v_part.name;
            RETURN NEXT;
        END LOOP;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION audit.unsealed(OUT unsealed bigint, OUT oldest timestamptz)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT count(*), min(l.occurred_at) FROM audit.records l WHERE l.hash IS NULL
$$;

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
