-- Reverts tenancy V2. The roles are cluster-wide and may serve other databases, so they stay;
-- only this database's grants to them go.
REVOKE EXECUTE ON FUNCTION tenancy.current_tenant_id(), tenancy.current_actor_id(), tenancy.uuid_v7()
    FROM pgstrata_worker, pgstrata_operator;
REVOKE USAGE ON SCHEMA tenancy FROM pgstrata_worker, pgstrata_operator;
