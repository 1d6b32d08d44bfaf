-- eventstore V2: snapshots of long streams (D-222).
--
-- - eventstore.snapshots keeps, per tenant, stream and fold name, the state a fold of the
--   stream reached at a version. Loading an aggregate then reads its snapshot and only the
--   events after it. Optional: a stream without a snapshot is folded from its first event, and
--   a snapshot is only a cache of what the events say (deleting one loses nothing).
-- - The name identifies the fold and the shape of its state ("order.v2"): code that changes
--   the fold takes a new name, and the old snapshots are simply not read (delete them later).
-- - Written only through eventstore.save_snapshot, which refuses a version the stream has not
--   reached (a load would then skip the events appended up to it) and keeps the newest
--   snapshot: an older one never replaces a newer one.

CREATE TABLE eventstore.snapshots (
    tenant_id   uuid        NOT NULL,
    stream      text        NOT NULL,
    name        text        NOT NULL,
    -- The stream's version the state includes (its events 1..version).
    version     bigint      NOT NULL,
    state       jsonb       NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (tenant_id, stream, name),
    CONSTRAINT snapshots_name_format CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    CONSTRAINT snapshots_version_positive CHECK (version > 0),
    -- The stored (binary) size: a snapshot is an aggregate's state, not a document store.
    CONSTRAINT snapshots_state_size CHECK (pg_column_size(state) <= 1048576)
);
COMMENT ON TABLE eventstore.snapshots IS
    'citus: distributed. Per stream and fold, the state the fold reached at a version; a cache of the events, newest kept';
COMMENT ON COLUMN eventstore.snapshots.name IS 'The fold and the shape of its state (e.g. order.v2): a changed fold takes a new name';
COMMENT ON COLUMN eventstore.snapshots.version IS 'The stream''s version the state includes: load it, then the events after it';
ALTER TABLE eventstore.snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE eventstore.snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON eventstore.snapshots
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
-- The request path reads its tenant's snapshots and may drop them (a cache); it writes them
-- only through save_snapshot. The worker (projections, tools) reads across tenants.
GRANT SELECT, DELETE ON eventstore.snapshots TO pgstrata_app;
GRANT SELECT ON eventstore.snapshots TO pgstrata_worker;
CREATE POLICY worker_read ON eventstore.snapshots FOR SELECT TO pgstrata_worker USING (true);
-- The definer's own policy (see V1's owner_access).
DO $$
DECLARE
    v_owner text := (SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c
                      WHERE c.oid = 'eventstore.snapshots'::regclass);
BEGIN
    EXECUTE format('CREATE POLICY owner_access ON eventstore.snapshots TO %s USING (true) WITH CHECK (true)', v_owner);
    PERFORM tenancy.enforce_tenant_status('eventstore.snapshots');
END
$$;

-- Saves the state a fold named p_name reached at version p_version of the stream, in the
-- transaction's tenant. Returns true when stored, false when a snapshot of that version or a
-- newer one is already there (kept). Refused: no tenant in context or a suspended one (42501),
-- a version below 1
-- or beyond the stream's (22023 field=version), a NULL state (22023 field=state), a bad name
-- or a state over 1 MiB (23514 by constraint).
CREATE FUNCTION eventstore.save_snapshot(p_stream text, p_name text, p_version bigint, p_state jsonb)
    RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.checked_context_tenant_id();
    v_current bigint;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'eventstore.save_snapshot: no tenant in this transaction' USING ERRCODE = '42501';
    END IF;
    IF NOT tenancy.current_tenant_active() THEN
        RAISE EXCEPTION 'eventstore.save_snapshot: the tenant is not active (suspended tenants read only)'
            USING ERRCODE = '42501';
    END IF;
    IF p_state IS NULL THEN
        RAISE EXCEPTION 'eventstore.save_snapshot: the state must not be NULL' USING ERRCODE = '22023', DETAIL = 'field=state';
    END IF;
    IF p_version IS NULL OR p_version < 1 THEN
        RAISE EXCEPTION 'eventstore.save_snapshot: a snapshot is of version 1 or more, got %', p_version
            USING ERRCODE = '22023', DETAIL = 'field=version';
    END IF;
    SELECT s.version INTO v_current FROM eventstore.streams s WHERE s.tenant_id = v_tenant AND s.stream = p_stream;
    IF v_current IS NULL OR p_version > v_current THEN
        RAISE EXCEPTION 'eventstore.save_snapshot: stream % is at version %, not at %', p_stream, coalesce(v_current, 0), p_version
            USING ERRCODE = '22023', DETAIL = 'field=version',
                  HINT = 'Snapshot the state a fold of the events read reached, at the last version read.';
    END IF;
    INSERT INTO eventstore.snapshots AS s (tenant_id, stream, name, version, state)
    VALUES (v_tenant, p_stream, p_name, p_version, p_state)
        ON CONFLICT ON CONSTRAINT snapshots_pkey DO UPDATE
        SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = EXCLUDED.taken_at
        WHERE s.version < EXCLUDED.version;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION eventstore.save_snapshot(text, text, bigint, jsonb) IS
    'Saves a fold''s state at a version the stream has reached; keeps the newest; true when stored';
REVOKE EXECUTE ON FUNCTION eventstore.save_snapshot(text, text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventstore.save_snapshot(text, text, bigint, jsonb) TO pgstrata_app;
