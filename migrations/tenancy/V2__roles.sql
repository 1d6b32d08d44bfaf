-- tenancy V2: the roles every module shares (SECURITY.md lists what each may do).
--
-- pgstrata_worker runs background work across tenants (queue workers, delivery, sealing,
-- retention): each module grants it what it needs and gives it policies of its own, never
-- BYPASSRLS. The application's request path must not hold it.
-- pgstrata_operator changes the fields only the business may change (a tenant's status and
-- plan settings); the request path must not hold it either.
-- Roles are cluster-wide: another database may have created them already, and two migrators
-- in two databases may race, hence the exception handler.
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['pgstrata_worker', 'pgstrata_operator'] LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS', r);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA tenancy TO pgstrata_worker, pgstrata_operator;
GRANT EXECUTE ON FUNCTION tenancy.current_tenant_id(), tenancy.current_actor_id(), tenancy.uuid_v7()
    TO pgstrata_worker, pgstrata_operator;
