-- tenancy V5: turn one of the application's own tables into a tenant table.
--
-- Teams get RLS wrong on their own tables, not on pgstrata's: a policy that forgets WITH CHECK,
-- RLS enabled but not forced (the owner reads everything), a primary key that Citus cannot
-- distribute. tenancy.make_tenant_table() applies the same rules pgstrata's tables follow and
-- reports, one row per step, what it did and what it could not fix by itself (keys that other
-- objects depend on are the application's to change). It runs as the caller, who must own the
-- table: it is a migration tool, not something the request path may call.

CREATE FUNCTION tenancy.make_tenant_table(p_table regclass, p_add_column boolean DEFAULT false)
RETURNS TABLE (step text, done boolean, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind       "char";
    v_schema     name;
    v_type       text;
    v_not_null   boolean;
    v_has_rows   boolean;
    v_policy     record;
    v_index      record;
    v_fk         record;
    v_pk_first   name;
BEGIN
    SELECT c.relkind, n.nspname INTO v_kind, v_schema
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = p_table;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', p_table USING ERRCODE = 'PS422';
    END IF;
    IF to_regclass(format('pgstrata.%I', v_schema || '_history')) IS NOT NULL THEN
        RAISE EXCEPTION '% belongs to the pgstrata module %; its migrations own its rules', p_table, v_schema
            USING ERRCODE = 'PS422';
    END IF;

    -- 1. The column.
    SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull INTO v_type, v_not_null
      FROM pg_attribute a
     WHERE a.attrelid = p_table AND a.attname = 'tenant_id' AND NOT a.attisdropped;
    IF NOT FOUND THEN
        IF NOT p_add_column THEN
            step := 'column'; done := false;
            detail := 'no tenant_id column: call again with p_add_column => true, or add '
                      'tenant_id uuid NOT NULL REFERENCES tenancy.tenants (id) and fill it';
            RETURN NEXT;
            RETURN;
        END IF;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', p_table) INTO v_has_rows;
        IF v_has_rows THEN
            RAISE EXCEPTION '% has rows: add tenant_id yourself, fill it with each row''s tenant, then call this again', p_table
                USING ERRCODE = 'PS422';
        END IF;
        EXECUTE format('ALTER TABLE %s ADD COLUMN tenant_id uuid NOT NULL DEFAULT tenancy.current_tenant_id() '
                       'REFERENCES tenancy.tenants (id)', p_table);
        step := 'column'; done := true;
        detail := 'added tenant_id uuid NOT NULL REFERENCES tenancy.tenants (id), defaulting to the tenant in context';
        RETURN NEXT;
    ELSIF v_type <> 'uuid' THEN
        RAISE EXCEPTION '%.tenant_id is %, not uuid', p_table, v_type USING ERRCODE = 'PS422';
    ELSIF NOT v_not_null THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE tenant_id IS NULL)', p_table) INTO v_has_rows;
        IF v_has_rows THEN
            step := 'column'; done := false;
            detail := 'tenant_id has NULLs: give those rows their tenant, then call this again';
            RETURN NEXT;
            RETURN;
        END IF;
        EXECUTE format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL', p_table);
        step := 'column'; done := true; detail := 'tenant_id is now NOT NULL';
        RETURN NEXT;
    END IF;

    -- 2. Row-level security, forced so that the table's owner is filtered too.
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    step := 'rls'; done := true; detail := 'row-level security enabled and forced';
    RETURN NEXT;

    -- 3. The policy: one, for every command, testing the tenant on read and on write.
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = p_table AND p.polname = 'tenant_isolation') THEN
        EXECUTE format('CREATE POLICY tenant_isolation ON %s '
                       'USING (tenant_id = (SELECT tenancy.current_tenant_id())) '
                       'WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))', p_table);
        step := 'policy'; done := true; detail := 'created policy tenant_isolation';
        RETURN NEXT;
    END IF;
    FOR v_policy IN
        SELECT p.polname, pg_get_expr(p.polqual, p.polrelid) AS using_expr,
               pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
          FROM pg_policy p
         WHERE p.polrelid = p_table AND p.polpermissive
           AND (0 = ANY (p.polroles) OR EXISTS (SELECT 1 FROM pg_roles r
                                                 WHERE r.oid = ANY (p.polroles) AND r.rolname = 'pgstrata_app'))
         ORDER BY p.polname
    LOOP
        -- The same test as pgstrata doctor's: the expression compares tenant_id with the context.
        IF (v_policy.using_expr IS NOT NULL
            AND NOT (strpos(v_policy.using_expr, 'tenant_id = ') > 0
                     AND strpos(v_policy.using_expr, 'tenancy.current_tenant_id()') > 0))
           OR (v_policy.check_expr IS NOT NULL
               AND NOT (strpos(v_policy.check_expr, 'tenant_id = ') > 0
                        AND strpos(v_policy.check_expr, 'tenancy.current_tenant_id()') > 0)) THEN
            step := 'policy'; done := false;
            detail := format('policy %I lets rows through without testing the tenant (permissive policies add up): drop it or add the test',
                             v_policy.polname);
            RETURN NEXT;
        END IF;
    END LOOP;

    -- 4. Keys: led by tenant_id (the index every tenant query uses, and what Citus requires).
    --    Changing them would break what depends on them, so they are reported, not changed.
    SELECT a.attname INTO v_pk_first
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid = p_table AND i.indisprimary;
    IF v_pk_first IS NULL THEN
        step := 'primary key'; done := false; detail := 'no primary key: add PRIMARY KEY (tenant_id, id)';
        RETURN NEXT;
    ELSIF v_pk_first <> 'tenant_id' THEN
        step := 'primary key'; done := false;
        detail := format('the primary key leads with %I: make it (tenant_id, %I, ...)', v_pk_first, v_pk_first);
        RETURN NEXT;
    END IF;
    FOR v_index IN
        SELECT ic.relname
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = p_table AND i.indisunique AND NOT i.indisprimary
           AND i.indkey[0] IS DISTINCT FROM (SELECT a.attnum FROM pg_attribute a
                                              WHERE a.attrelid = p_table AND a.attname = 'tenant_id')
         ORDER BY 1
    LOOP
        step := 'unique'; done := false;
        detail := format('unique index %I does not lead with tenant_id: uniqueness across tenants leaks that a value exists elsewhere; recreate it on (tenant_id, ...)',
                         v_index.relname);
        RETURN NEXT;
    END LOOP;
    FOR v_fk IN
        SELECT k.conname, k.confrelid::regclass AS target
          FROM pg_constraint k
         WHERE k.conrelid = p_table AND k.contype = 'f'
           AND EXISTS (SELECT 1 FROM pg_attribute fa WHERE fa.attrelid = k.confrelid
                          AND fa.attname = 'tenant_id' AND NOT fa.attisdropped)
           AND NOT EXISTS (
               SELECT 1 FROM unnest(k.conkey, k.confkey) AS m(src, dst)
                 JOIN pg_attribute sa ON sa.attrelid = k.conrelid AND sa.attnum = m.src
                 JOIN pg_attribute da ON da.attrelid = k.confrelid AND da.attnum = m.dst
                WHERE sa.attname = 'tenant_id' AND da.attname = 'tenant_id')
         ORDER BY 1
    LOOP
        step := 'foreign key'; done := false;
        detail := format('foreign key %I to tenant table %s does not include tenant_id: a row could point into another tenant; make it (tenant_id, ...) REFERENCES %s (tenant_id, ...)',
                         v_fk.conname, v_fk.target, v_fk.target);
        RETURN NEXT;
    END LOOP;

    -- 5. The application role.
    IF to_regrole('pgstrata_app') IS NOT NULL
       AND NOT has_table_privilege('pgstrata_app', p_table, 'SELECT') THEN
        step := 'grant'; done := false;
        detail := format('pgstrata_app cannot read %s: GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO pgstrata_app (what the application needs)',
                         p_table, p_table);
        RETURN NEXT;
    END IF;
END;
$$;

COMMENT ON FUNCTION tenancy.make_tenant_table(regclass, boolean) IS
    'Makes an application table a tenant table (tenant_id, forced RLS, the tenant policy) and reports the keys it cannot fix. Run as the table''s owner, in a migration.';

-- A migration tool: the roles of the request path and of background work never call it.
REVOKE ALL ON FUNCTION tenancy.make_tenant_table(regclass, boolean) FROM PUBLIC;
