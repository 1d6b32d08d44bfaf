-- Reverts audit V1. Dropping the schema drops the capture triggers on audited tables too (they
-- depend on audit.capture), so audited tables are left as they were before.
DROP SCHEMA audit CASCADE;
