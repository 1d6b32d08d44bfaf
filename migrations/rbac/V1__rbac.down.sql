-- Reverts rbac V1: the schema holds every rbac object, including the system roles.
DROP SCHEMA rbac CASCADE;
