-- Reverts billing V1. The pgstrata_billing_sync role is cluster-wide and may serve other
-- databases, so it is left in place; dropping the schema removes every grant made to it here.
DROP SCHEMA billing CASCADE;
