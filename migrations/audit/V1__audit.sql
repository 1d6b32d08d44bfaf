-- audit V1: an append-only, tamper-evident audit log that stays fast at tens of millions of rows.
--
-- - audit.records holds one record per audited row change (a generic trigger, attached with
--   audit.enable) and per application event (audit.record, e.g. 'user.login'). Who, in which
--   tenant, transaction and request are column defaults read from the transaction's context.
-- - Monthly range partitions on occurred_at, no DEFAULT partition (a default partition blocks
--   cheap attaches and collects stray rows); audit.maintain creates months ahead and drops
--   expired ones. A month without a partition makes every audited write fail, so doctor warns
--   when fewer than two future months exist.
-- - Append-only: the application role may only SELECT and INSERT (content columns); UPDATE and
--   DELETE raise for everyone except the one sealing UPDATE (hash columns from NULL to a value,
--   content unchanged); TRUNCATE raises.
-- - Tamper evidence: records are written unsealed (no lock, no hashing on the write path);
--   audit.seal chains committed records per tenant afterwards (seq, prev_hash, hash), in the
--   order it seals them. audit.verify recomputes every link and returns the first broken one.

CREATE SCHEMA IF NOT EXISTS audit;
COMMENT ON SCHEMA audit IS 'pgstrata audit: append-only, tamper-evident audit log with monthly partitions';
GRANT USAGE ON SCHEMA audit TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- The log
-- ---------------------------------------------------------------------------------------------

CREATE TABLE audit.records (
    tenant_id      uuid        NOT NULL,
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    -- The transaction's start time (now()), so every record of a transaction falls in the same
    -- month and the application cannot back-date a record (it may not write this column).
    occurred_at    timestamptz NOT NULL DEFAULT now(),
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    actor_id       uuid                 DEFAULT tenancy.current_actor_id(),
    request_id     text                 DEFAULT nullif(current_setting('app.request_id', true), ''),
    -- 'insert', 'update', 'delete' for row changes; a dotted name such as 'user.login' for events.
    action         text        NOT NULL,
    -- 'schema.table' for row changes; the application's own type name for events.
    resource_type  text        NOT NULL,
    resource_id    text,
    -- Row changes: the whole row on insert (new) and delete (old); on update only the columns
    -- that changed, old and new. Ignored columns are left out, redacted ones read '[redacted]'.
    old_values     jsonb,
    new_values     jsonb,
    -- Application events: whatever the application records with the event.
    details        jsonb,
    -- Set once by audit.seal: position in the tenant's chain, the previous record's hash, and
    -- sha256(prev_hash || seq || content).
    seq            bigint,
    prev_hash      bytea,
    hash           bytea,
    CONSTRAINT records_pkey PRIMARY KEY (tenant_id, occurred_at, id),
    CONSTRAINT records_action_format CHECK (length(action) <= 100 AND action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    CONSTRAINT records_resource_type_length CHECK (length(resource_type) BETWEEN 1 AND 200),
    CONSTRAINT records_resource_id_length CHECK (length(resource_id) <= 500),
    CONSTRAINT records_request_id_length CHECK (length(request_id) <= 200),
    CONSTRAINT records_sealed_together CHECK ((seq IS NULL) = (hash IS NULL) AND (seq IS NULL) = (prev_hash IS NULL))
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE audit.records IS 'Audit records: row changes and application events; append-only, chained per tenant by audit.seal';

-- "What happened to this record": a resource's history, newest first, keyset by (occurred_at, id).
CREATE INDEX records_resource_idx ON audit.records (tenant_id, resource_type, resource_id, occurred_at, id);
-- "What did this person do".
CREATE INDEX records_actor_idx ON audit.records (tenant_id, actor_id, occurred_at, id) WHERE actor_id IS NOT NULL;
-- "What happened between these times" is the primary key (tenant_id, occurred_at, id). Across
-- tenants (an operator's question) a BRIN index on the time is a few pages per month.
CREATE INDEX records_occurred_brin ON audit.records USING brin (occurred_at);
-- The sealer's work list: it only ever holds the records not sealed yet.
CREATE INDEX records_unsealed_idx ON audit.records (id) WHERE hash IS NULL;

ALTER TABLE audit.records ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.records
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));

-- Read, and append the content columns only: who, when, in which transaction and request come
-- from the defaults, and the chain columns belong to the sealer.
GRANT SELECT ON audit.records TO pgstrata_app;
GRANT INSERT (tenant_id, action, resource_type, resource_id, old_values, new_values, details)
    ON audit.records TO pgstrata_app;

-- The head of each tenant's chain: the last sealed seq and hash. A tenant may read its own (to
-- anchor it elsewhere); only the sealer writes.
CREATE TABLE audit.chain_heads (
    tenant_id  uuid        NOT NULL,
    seq        bigint      NOT NULL,
    hash       bytea       NOT NULL,
    sealed_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chain_heads_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT chain_heads_seq_positive CHECK (seq > 0),
    CONSTRAINT chain_heads_hash_length CHECK (length(hash) = 32)
);
COMMENT ON TABLE audit.chain_heads IS 'Last sealed record of each tenant''s audit chain';
ALTER TABLE audit.chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.chain_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.chain_heads
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
GRANT SELECT ON audit.chain_heads TO pgstrata_app;

-- Audited tables and their options (the source of truth audit.enable turns into a trigger).
CREATE TABLE audit.tables (
    table_name     text        NOT NULL,
    -- Where a record's tenant comes from: the row's tenant_id ('column'), the row's id for the
    -- tenant root ('self'), or the transaction's tenant ('context').
    tenant_source  text        NOT NULL,
    key_columns    text[]      NOT NULL,
    ignored        text[]      NOT NULL DEFAULT '{}',
    redacted       text[]      NOT NULL DEFAULT '{}',
    enabled_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tables_pkey PRIMARY KEY (table_name),
    CONSTRAINT tables_tenant_source_valid CHECK (tenant_source IN ('column', 'self', 'context'))
);
COMMENT ON TABLE audit.tables IS 'Tables audited by audit.capture, with their ignored and redacted columns';

-- Partition maintenance settings (one row).
CREATE TABLE audit.settings (
    singleton         boolean NOT NULL DEFAULT true,
    -- Months created ahead of the current one.
    premake_months    integer NOT NULL DEFAULT 3,
    -- Months kept; a partition is dropped once all of its month is older. NULL keeps everything.
    retention_months  integer          DEFAULT 12,
    CONSTRAINT settings_pkey PRIMARY KEY (singleton),
    CONSTRAINT settings_singleton CHECK (singleton),
    CONSTRAINT settings_premake_range CHECK (premake_months BETWEEN 1 AND 120),
    CONSTRAINT settings_retention_range CHECK (retention_months BETWEEN 1 AND 1200)
);
INSERT INTO audit.settings DEFAULT VALUES;

-- ---------------------------------------------------------------------------------------------
-- Append-only
-- ---------------------------------------------------------------------------------------------

-- Refuses UPDATE, DELETE and TRUNCATE, except the sealing UPDATE: chain columns from NULL to a
-- value with the content untouched. The application role has no UPDATE privilege at all; this
-- also holds the owner to the rule. (A superuser can disable triggers: audit.verify finds that.)
CREATE FUNCTION audit.refuse_change() RETURNS trigger
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

CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON audit.records
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON audit.records
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- ---------------------------------------------------------------------------------------------
-- Partitions
-- ---------------------------------------------------------------------------------------------

-- Creates the partition of the (UTC) month containing p_month, if missing; returns its name.
-- Statement triggers are not inherited, so each partition gets its own TRUNCATE guard.
CREATE FUNCTION audit.create_partition(p_month date) RETURNS text
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_name text := format('records_p%s', to_char(v_start, 'YYYYMM'));
BEGIN
    IF to_regclass(format('audit.%I', v_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE audit.%I PARTITION OF audit.records FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_start::timestamp AT TIME ZONE 'UTC',
                       (v_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON audit.%I
                            FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()', v_name);
        -- An actor and a resource belong to one tenant. Without these statistics the planner
        -- multiplies the selectivities, expects a handful of rows per month and sorts the
        -- whole history of an actor instead of reading the months newest first and stopping
        -- at the page size. Partitions are planned with their own statistics, hence per
        -- partition (autovacuum's ANALYZE keeps them current).
        EXECUTE format('CREATE STATISTICS audit.%I (dependencies, ndistinct)
                            ON tenant_id, actor_id FROM audit.%I', v_name || '_actor_stats', v_name);
        EXECUTE format('CREATE STATISTICS audit.%I (dependencies, ndistinct)
                            ON tenant_id, resource_type, resource_id FROM audit.%I', v_name || '_resource_stats', v_name);
    END IF;
    RETURN v_name;
END
$$;

-- The partitions of audit.records with their bounds.
CREATE FUNCTION audit.partitions() RETURNS TABLE (name text, lower_bound timestamptz, upper_bound timestamptz)
    LANGUAGE sql STABLE
    SET search_path = ''
    AS $$
    SELECT c.relname::text,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'audit.records'::regclass
     ORDER BY 2
$$;

-- Creates the current month and p_ahead months after it, and drops every partition whose whole
-- month is older than p_retention_months (never a partition that could still receive rows).
-- Defaults come from audit.settings. Returns what it did. p_now exists for tests.
CREATE FUNCTION audit.maintain(
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

-- ---------------------------------------------------------------------------------------------
-- Capture
-- ---------------------------------------------------------------------------------------------

-- The generic row trigger. Its options are trigger arguments (written by audit.enable from
-- audit.tables), so the write path reads no configuration table:
--   TG_ARGV[0] tenant source ('column', 'self', 'context'), [1] key columns, [2] ignored
--   columns, [3] redacted columns (text[] literals).
-- It runs as the writing role, under the log's row-level security: a record can only be written
-- into the tenant of the transaction.
CREATE FUNCTION audit.capture() RETURNS trigger
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

-- Audits every insert, update and delete of p_table. Ignored columns are never recorded (and an
-- update that only touches them records nothing); redacted columns are recorded as
-- '[redacted]', never their value. Calling it again replaces the options. Run as the owner of
-- p_table (it creates a trigger).
CREATE FUNCTION audit.enable(
    p_table regclass,
    p_ignored text[] DEFAULT '{}',
    p_redacted text[] DEFAULT '{}'
) RETURNS void
    LANGUAGE plpgsql
    SET search_path = ''
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

-- Stops auditing p_table (its records stay).
CREATE FUNCTION audit.disable(p_table regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS audit_capture ON %s', p_table);
    DELETE FROM audit.tables t WHERE t.table_name = p_table::text;
END
$$;

-- Audits the pgstrata tables that exist and are not audited yet: tenancy's tenant tables and,
-- when the rbac module is installed, its tenant tables. Idempotent; options set with
-- audit.enable are kept. (tenancy.users is a global identity table: its changes happen before
-- any tenant exists, and every audit record belongs to a tenant.)
CREATE FUNCTION audit.enable_defaults() RETURNS integer
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
DECLARE
    v_spec record;
    v_n integer := 0;
BEGIN
    FOR v_spec IN
        SELECT * FROM (VALUES
            ('tenancy.tenants', '{updated_at,version}'::text[], '{}'::text[]),
            ('tenancy.memberships', '{updated_at,version}', '{}'),
            ('tenancy.invitations', '{updated_at,version}', '{token_hash}'),
            ('rbac.roles', '{}', '{}'),
            ('rbac.role_permissions', '{}', '{}'),
            ('rbac.role_parents', '{}', '{}'),
            ('rbac.group_members', '{}', '{}'),
            ('rbac.grants', '{}', '{}')
        ) AS s(table_name, ignored, redacted)
    LOOP
        IF to_regclass(v_spec.table_name) IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM audit.tables t WHERE t.table_name = v_spec.table_name) THEN
            PERFORM audit.enable(v_spec.table_name::regclass, v_spec.ignored, v_spec.redacted);
            v_n := v_n + 1;
        END IF;
    END LOOP;
    RETURN v_n;
END
$$;

-- Records an application event ('user.login', 'role.granted', ...) in the current tenant, in
-- the caller's transaction. Returns the record's id.
CREATE FUNCTION audit.record(
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

GRANT EXECUTE ON FUNCTION audit.record(text, text, text, jsonb) TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Sealing and verification
-- ---------------------------------------------------------------------------------------------

-- The chained content of a record: every column but the chain's own, as canonical jsonb text.
-- The time is rendered in UTC so the text does not depend on the session's TimeZone. Names are
-- qualified instead of SET search_path, which would keep the planner from inlining it.
CREATE FUNCTION audit.content(
    p_tenant_id uuid, p_id bigint, p_occurred_at timestamptz, p_txid xid8, p_actor_id uuid,
    p_request_id text, p_action text, p_resource_type text, p_resource_id text,
    p_old_values jsonb, p_new_values jsonb, p_details jsonb
) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT pg_catalog.jsonb_build_array(p_tenant_id, p_id, p_occurred_at AT TIME ZONE 'UTC', p_txid::pg_catalog.text, p_actor_id,
                             p_request_id, p_action, p_resource_type, p_resource_id,
                             p_old_values, p_new_values, p_details)::pg_catalog.text
$$;

-- hash(n) = sha256(hash(n-1) || seq as 8 bytes || content); the first link starts from 32 zero
-- bytes.
CREATE FUNCTION audit.link_hash(p_prev bytea, p_seq bigint, p_content text) RETURNS bytea
    LANGUAGE sql STABLE
    AS $$
    SELECT pg_catalog.sha256(p_prev OPERATOR(pg_catalog.||) pg_catalog.int8send(p_seq)
                             OPERATOR(pg_catalog.||) pg_catalog.convert_to(p_content, 'UTF8'))
$$;

-- Sealing, verifying and cross-tenant maintenance read every tenant's records, so they must run
-- as a role that row-level security does not filter (a superuser or a BYPASSRLS role, such as
-- the operator's); under forced RLS they would silently see nothing.
CREATE FUNCTION audit.require_rls_bypass(p_what text) RETURNS void
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

-- Chains up to p_limit committed, unsealed records into their tenants' chains and returns how
-- many it sealed. Records of transactions still open are invisible here and are sealed by a
-- later call, so the chain order is the seal order (by id within a batch), not occurred_at.
-- One sealer at a time (a transaction-level advisory lock); a concurrent call returns 0.
CREATE FUNCTION audit.seal(p_limit integer DEFAULT 10000) RETURNS integer
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

-- Recomputes the chains (of p_tenant, or of every tenant) and returns the first broken link of
-- each broken chain: the record whose content no longer matches its hash, whose prev_hash is
-- not its predecessor's hash, or which follows a gap; and a chain head whose record is gone.
-- The oldest retained record of a chain is its anchor (older months may have been dropped).
-- Unsealed records (younger than the seal interval) are not covered yet.
CREATE FUNCTION audit.verify(p_tenant uuid DEFAULT NULL)
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

-- Operator functions: not for every role (PostgreSQL grants EXECUTE to PUBLIC by default).
-- Each would fail for the application role anyway (ownership, privileges, the RLS-bypass
-- check); revoking says so up front.
REVOKE EXECUTE ON FUNCTION audit.seal(integer), audit.verify(uuid),
                           audit.maintain(integer, integer, timestamptz), audit.create_partition(date),
                           audit.enable(regclass, text[], text[]), audit.disable(regclass),
                           audit.enable_defaults()
    FROM PUBLIC;

GRANT EXECUTE ON FUNCTION audit.content(uuid, bigint, timestamptz, xid8, uuid, text, text, text, text, jsonb, jsonb, jsonb),
                          audit.link_hash(bytea, bigint, text)
    TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- At migrate time: this month and the next ones exist, and tenancy (and rbac) are audited.
-- ---------------------------------------------------------------------------------------------

SELECT count(*) FROM audit.maintain();
SELECT audit.enable_defaults();
