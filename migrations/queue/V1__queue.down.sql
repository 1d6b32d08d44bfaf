-- Reverts queue V1: every queue object lives in the schema.
DROP SCHEMA queue CASCADE;
