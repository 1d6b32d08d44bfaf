-- Reverts tenancy V1. The pgstrata_app role is cluster-wide and may serve other databases,
-- so it is left in place; dropping the schema removes every grant made to it here.
DROP SCHEMA tenancy CASCADE;
