-- audit V3: an audited write costs less, and a record is written once.
--
-- - Sealing no longer rewrites records. Until V3 the sealer set each record's chain columns: a
--   second copy of every row, new entries in three indexes and a dead tuple for vacuum, so the
--   log was written about twice. From V3 it appends one row per tenant and month to
--   audit.seals, with the records' ids and link hashes in chain order. The link formula is the
--   same, so chains sealed before V3 go on where they stopped; audit.links shows every
--   record's link from either place.
-- - The sealer's work list is no longer a partial index that a record leaves when sealed (which
--   needed the update): it seals, in (txid, id) order, the records of transactions older than
--   every running one of this database, and keeps its position in audit.seal_locks. A long
--   writing transaction delays sealing until it ends; no record is skipped.
-- - The CHECK constraints of audit.records are dropped: PostgreSQL prepares a table's CHECK
--   constraints again for every INSERT statement, and the capture trigger runs one per row, so
--   the five cost about as much as the insert itself. Only two SECURITY DEFINER functions write
--   records (V2); they enforce the same limits with a 22023 naming the field.
-- - audit.enable passes the table's columns to the trigger, which compares them one by one in
--   PL/pgSQL instead of joining two jsonb_each sets per row. A column added after audit.enable
--   is still compared, by the old query, until audit.enable runs again; triggers attached
--   before V3 take that path for every column. This migration re-attaches the triggers of the
--   tables its role owns.
-- - Building the (txid, id) index reads every partition under a lock that blocks audited
--   writes: minutes on a log of tens of millions of records. Plan the upgrade accordingly.

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

-- ---------------------------------------------------------------------------------------------
-- Seals: the chain's links, appended beside the records
-- ---------------------------------------------------------------------------------------------

-- One row per tenant, month and sealing round. Record i of record_ids (1-based) has position
-- first_seq + i - 1 in its tenant's chain and link hash hashes[i]; the link before the first is
-- prev_hash. Every record of a seal is in the month partition starting at `month`, so retention
-- removes a month's seals with the month.
CREATE TABLE audit.seals (
    tenant_id   uuid        NOT NULL,
    first_seq   bigint      NOT NULL,
    month       timestamptz NOT NULL,
    prev_hash   bytea       NOT NULL,
    record_ids  bigint[]    NOT NULL,
    hashes      bytea[]     NOT NULL,
    sealed_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT seals_pkey PRIMARY KEY (tenant_id, first_seq),
    CONSTRAINT seals_links_match CHECK (cardinality(record_ids) > 0 AND cardinality(record_ids) = cardinality(hashes))
);
COMMENT ON TABLE audit.seals IS
    'citus: distributed. Links of each tenant''s audit chain, one row per tenant, month and sealing round; written by audit.seal';
CREATE INDEX seals_month_idx ON audit.seals (month);
ALTER TABLE audit.seals ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.seals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.seals
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT ON audit.seals TO pgstrata_app;
DO $$
BEGIN
    EXECUTE format('CREATE POLICY owner_access ON audit.seals TO %s USING (true) WITH CHECK (true)',
                   (SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c WHERE c.oid = 'audit.records'::regclass));
END
$$;

-- Seals are never changed; one is removed only once its month's partition is gone (by
-- audit.maintain, right after dropping the month).
CREATE FUNCTION audit.refuse_seal_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW'
       AND NOT EXISTS (SELECT 1 FROM audit.partitions() p WHERE p.lower_bound = OLD.month) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit.seals is append-only: % is not allowed', TG_OP
        USING ERRCODE = '42501',
              HINT = 'A month''s seals are removed by audit.maintain, with the month.';
END
$$;
CREATE TRIGGER seals_append_only BEFORE UPDATE OR DELETE ON audit.seals
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_seal_change();
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON audit.seals
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_seal_change();

-- Every record's link: chain columns of records sealed before V3, and the seals' elements.
-- security_invoker: the reader's own row-level security applies.
CREATE VIEW audit.links WITH (security_invoker = true) AS
    SELECT l.tenant_id, l.seq, l.id, l.prev_hash, l.hash
      FROM audit.records l
     WHERE l.hash IS NOT NULL
    UNION ALL
    SELECT s.tenant_id, s.first_seq + e.ord - 1, e.id,
           CASE WHEN e.ord = 1 THEN s.prev_hash ELSE s.hashes[e.ord - 1] END, e.hash
      FROM audit.seals s
     CROSS JOIN LATERAL unnest(s.record_ids, s.hashes) WITH ORDINALITY AS e(id, hash, ord);
COMMENT ON VIEW audit.links IS 'Each sealed record''s position (seq) and link in its tenant''s audit chain';
GRANT SELECT ON audit.links TO pgstrata_app;

-- The sealer's position: every record before (after_txid, after_id) in (txid, id) order is
-- sealed. It starts at the oldest record V2 left unsealed, or at the oldest running
-- transaction, whichever is older.
ALTER TABLE audit.seal_locks
    ADD COLUMN after_txid xid8 NOT NULL DEFAULT '0',
    ADD COLUMN after_id bigint NOT NULL DEFAULT 0;
COMMENT ON TABLE audit.seal_locks IS
    'citus: local. The sealer''s lock and position: one row, locked and moved by audit.seal; no grants';
UPDATE audit.seal_locks
   SET after_txid = least(pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()),
                          (SELECT min(l.txid) FROM audit.records l WHERE l.hash IS NULL));

DROP INDEX audit.records_unsealed_idx;
-- The sealer's work list, in its order.
CREATE INDEX records_seal_order_idx ON audit.records (txid, id);

-- Chains up to p_limit records, in (txid, id) order, of transactions older than every
-- transaction of this database still running, so no record can commit behind the sealer's
-- position. Within a round each tenant's records are chained month by month. Returns how many.
CREATE OR REPLACE FUNCTION audit.seal(p_limit integer DEFAULT 10000) RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_snapshot pg_snapshot;
    v_horizon xid8;
    v_after_txid xid8;
    v_after_id bigint;
    v_last_txid xid8;
    v_last_id bigint;
    v_n integer := 0;
    v_rec record;
    v_tenant uuid;
    v_month timestamptz;
    v_first_seq bigint;
    v_seq bigint;
    v_prev bytea;
    v_hash bytea;
    v_ids bigint[] := '{}';
    v_hashes bytea[] := '{}';
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- The work list must be read with a snapshot taken after the horizon.
        RAISE EXCEPTION 'audit.seal must run at READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25000';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'audit.seal: limit must be at least 1, got %', p_limit USING ERRCODE = '22023';
    END IF;
    BEGIN
        SELECT s.after_txid, s.after_id INTO v_after_txid, v_after_id FROM audit.seal_locks s FOR UPDATE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'audit.seal: another sealer is running (it holds audit.seal_locks until its transaction ends)'
            USING ERRCODE = '55P03',
                  HINT = 'Run one sealer; this round may be skipped and retried at the next interval.';
    END;
    -- The horizon: the oldest transaction still running that could write here, or the next
    -- transaction id. Every transaction below it has ended, and the next statement's snapshot
    -- sees all of their records. Transactions positively seen in another database, or in an
    -- autovacuum worker (whose ANALYZE takes a transaction id and never writes records), by
    -- their transaction id lock, are passed over, so they do not hold sealing back; anything
    -- not identified counts as this database's.
    v_snapshot := pg_current_snapshot();
    SELECT coalesce(min(x), pg_snapshot_xmax(v_snapshot)) INTO v_horizon
      FROM pg_snapshot_xip(v_snapshot) x
     WHERE (x::text::numeric % 4294967296)::bigint NOT IN (
               SELECT l.transactionid::text::bigint
                 FROM pg_locks l
                 JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
                  AND (a.datid <> (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
                       OR a.backend_type = 'autovacuum worker'));
    FOR v_rec IN
        SELECT b.*
          FROM (SELECT l.tenant_id, l.txid, l.id,
                       date_trunc('month', l.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month,
                       -- audit.content(...), written out: a function with its own search_path
                       -- is not inlined.
                       (CASE WHEN l.origin IS NULL THEN c.a ELSE c.a || to_jsonb(l.origin) END)::text AS content
                  FROM audit.records l
                 CROSS JOIN LATERAL (
                       SELECT jsonb_build_array(l.tenant_id, l.id, l.occurred_at AT TIME ZONE 'UTC', l.txid::text,
                                                l.actor_id, l.request_id, l.action, l.resource_type, l.resource_id,
                                                l.old_values, l.new_values, l.details) AS a) c
                 WHERE (l.txid, l.id) > (v_after_txid, v_after_id) AND l.txid < v_horizon
                   AND l.hash IS NULL -- sealed before V3
                 ORDER BY l.txid, l.id
                 LIMIT p_limit) b
         ORDER BY b.tenant_id, b.month, b.txid, b.id
    LOOP
        IF v_tenant IS DISTINCT FROM v_rec.tenant_id OR v_month IS DISTINCT FROM v_rec.month THEN
            IF v_n > 0 THEN
                INSERT INTO audit.seals (tenant_id, first_seq, month, prev_hash, record_ids, hashes)
                VALUES (v_tenant, v_first_seq, v_month, v_prev, v_ids, v_hashes);
            END IF;
            IF v_tenant IS DISTINCT FROM v_rec.tenant_id THEN
                IF v_n > 0 THEN
                    INSERT INTO audit.chain_heads AS h (tenant_id, seq, hash) VALUES (v_tenant, v_seq, v_hash)
                    ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, sealed_at = now();
                END IF;
                v_tenant := v_rec.tenant_id;
                SELECT h.seq, h.hash INTO v_seq, v_hash FROM audit.chain_heads h WHERE h.tenant_id = v_tenant;
                IF NOT FOUND THEN
                    v_seq := 0;
                    v_hash := decode(repeat('00', 32), 'hex');
                END IF;
            END IF;
            v_month := v_rec.month;
            v_first_seq := v_seq + 1;
            v_prev := v_hash;
            v_ids := '{}';
            v_hashes := '{}';
        END IF;
        v_seq := v_seq + 1;
        v_hash := sha256(v_hash || int8send(v_seq) || convert_to(v_rec.content, 'UTF8')); -- audit.link_hash
        v_ids := v_ids || v_rec.id;
        v_hashes := v_hashes || v_hash;
        v_n := v_n + 1;
        IF (v_rec.txid, v_rec.id) > (v_last_txid, v_last_id) OR v_last_txid IS NULL THEN
            v_last_txid := v_rec.txid;
            v_last_id := v_rec.id;
        END IF;
    END LOOP;
    IF v_n > 0 THEN
        INSERT INTO audit.seals (tenant_id, first_seq, month, prev_hash, record_ids, hashes)
        VALUES (v_tenant, v_first_seq, v_month, v_prev, v_ids, v_hashes);
        INSERT INTO audit.chain_heads AS h (tenant_id, seq, hash) VALUES (v_tenant, v_seq, v_hash)
        ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, sealed_at = now();
    END IF;
    -- A full batch may have stopped inside the window: go on after its last record. Otherwise
    -- the whole window is sealed.
    IF v_n = p_limit THEN
        UPDATE audit.seal_locks SET after_txid = v_last_txid, after_id = v_last_id;
    ELSIF v_horizon > v_after_txid THEN
        UPDATE audit.seal_locks SET after_txid = v_horizon, after_id = 0;
    END IF;
    RETURN v_n;
END
$$;

-- Records not sealed yet, and the oldest one's time.
CREATE OR REPLACE FUNCTION audit.unsealed(OUT unsealed bigint, OUT oldest timestamptz)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT count(*), min(l.occurred_at)
      FROM audit.records l, audit.seal_locks s
     WHERE (l.txid, l.id) > (s.after_txid, s.after_id) AND l.hash IS NULL
$$;

-- As V2, reading the links from audit.links (the records' own chain columns before V3, the
-- seals after).
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
                UNION SELECT l.tenant_id FROM audit.links l) t
          LEFT JOIN audit.chain_heads h ON h.tenant_id = t.tenant_id
          LEFT JOIN audit.checkpoints k ON k.tenant_id = t.tenant_id
         WHERE p_tenant IS NULL OR t.tenant_id = p_tenant
    ), chain AS (
        -- A link whose record is gone leaves a gap in seq, reported like a missing record.
        SELECT k.tenant_id, k.seq, k.id, l.occurred_at, k.prev_hash, k.hash, a.first_seq, a.first_prev,
               -- audit.link_hash(prev_hash, seq, audit.content(...)), written out as in seal.
               sha256(k.prev_hash || int8send(k.seq)
                      || convert_to((CASE WHEN l.origin IS NULL THEN c.a ELSE c.a || to_jsonb(l.origin) END)::text,
                                    'UTF8')) AS recomputed,
               lag(k.seq) OVER w AS before_seq,
               lag(k.hash) OVER w AS before_hash,
               row_number() OVER w AS position,
               count(*) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
          FROM audit.links k
          JOIN anchors a ON a.tenant_id = k.tenant_id
          JOIN audit.records l ON l.tenant_id = k.tenant_id AND l.id = k.id
         CROSS JOIN LATERAL (
               SELECT jsonb_build_array(l.tenant_id, l.id, l.occurred_at AT TIME ZONE 'UTC', l.txid::text,
                                        l.actor_id, l.request_id, l.action, l.resource_type, l.resource_id,
                                        l.old_values, l.new_values, l.details) AS a) c
         WHERE k.seq >= a.first_seq
        WINDOW w AS (PARTITION BY k.tenant_id ORDER BY k.seq, k.id)
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

-- As V2: the unsealed records of a month are those past the sealer's position, the checkpoint
-- comes from the month's last seal, and the month's seals are removed with it.
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
        FOR v_part IN SELECT p.name, p.lower_bound, p.upper_bound FROM audit.partitions() p
                       WHERE p.upper_bound <= p_now - make_interval(months => v_retention)
                       ORDER BY p.lower_bound
        LOOP
            EXECUTE format('SELECT count(*) FROM audit.%I l, audit.seal_locks s
                             WHERE (l.txid, l.id) > (s.after_txid, s.after_id) AND l.hash IS NULL', v_part.name)
               INTO v_unsealed;
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
            -- The last link of each tenant in the month: the end of its last seal of the month,
            -- or, for records sealed before V3, the chain columns of its last record.
            EXECUTE format(
                'INSERT INTO audit.checkpoints AS k (tenant_id, first_seq, prev_hash, reason)
                 SELECT DISTINCT ON (x.tenant_id) x.tenant_id, x.next_seq, x.hash, ''retention''
                   FROM (SELECT s.tenant_id, s.first_seq + cardinality(s.record_ids) AS next_seq,
                                s.hashes[cardinality(s.hashes)] AS hash
                           FROM audit.seals s WHERE s.month = $1
                         UNION ALL
                         SELECT l.tenant_id, l.seq + 1, l.hash FROM audit.%I l WHERE l.hash IS NOT NULL) x
                  ORDER BY x.tenant_id, x.next_seq DESC, x.hash
                 ON CONFLICT (tenant_id) DO UPDATE
                    SET first_seq = excluded.first_seq, prev_hash = excluded.prev_hash,
                        recorded_at = now(), reason = excluded.reason
                  WHERE excluded.first_seq > k.first_seq', v_part.name)
              USING v_part.lower_bound;
            EXECUTE format('DROP TABLE audit.%I', v_part.name);
            -- Its seals go with it (the seals' trigger allows it once the month is gone).
            DELETE FROM audit.seals s WHERE s.month = v_part.lower_bound;
            action := 'dropped';
            partition := v_part.name;
            RETURN NEXT;
        END LOOP;
    END IF;
END
$$;
