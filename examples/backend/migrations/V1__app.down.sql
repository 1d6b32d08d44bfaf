-- Reverts V1: the example's schema goes with its tables; audit.records keep their history.
-- The permissions stay in rbac.permissions: grants and roles may name them, and the catalog
-- only describes them.
SELECT audit.disable('app.projects');
DROP SCHEMA app CASCADE;
