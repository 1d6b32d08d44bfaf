-- Reverts events V1: the events, their rollups, batches and catalog go with the schema.
DROP SCHEMA events CASCADE;
