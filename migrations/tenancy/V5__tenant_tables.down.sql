-- Reverts tenancy V5. Tables it made tenant tables keep their column, RLS and policy.
DROP FUNCTION tenancy.make_tenant_table(regclass, boolean);
