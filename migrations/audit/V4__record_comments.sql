-- audit V4: the columns of audit.records say what they hold. The Rust row type is generated from
-- the catalog and its field docs are these comments, so a reader of either learns the same
-- thing. Comments only: no lock beyond a brief SHARE UPDATE EXCLUSIVE, no rewrite.

COMMENT ON COLUMN audit.records.tenant_id IS
    'The tenant: the audited row''s, or the writing transaction''s context (app.tenant_id)';
COMMENT ON COLUMN audit.records.id IS
    'Increasing in insertion order, unique across tenants';
COMMENT ON COLUMN audit.records.occurred_at IS
    'The writing transaction''s start (now()): records of one transaction share it';
COMMENT ON COLUMN audit.records.txid IS
    'The writing transaction (pg_current_xact_id()), xid8; read as txid::text::bigint';
COMMENT ON COLUMN audit.records.actor_id IS
    'The acting user of the writing transaction (app.actor_id); NULL: none';
COMMENT ON COLUMN audit.records.request_id IS
    'The request of the writing transaction (app.request_id); NULL: none';
COMMENT ON COLUMN audit.records.action IS
    'insert, update or delete for a captured change; the event''s lowercase dotted name for an event';
COMMENT ON COLUMN audit.records.resource_type IS
    'schema.table for a captured change; the event''s resource type for an event';
COMMENT ON COLUMN audit.records.resource_id IS
    'The changed row''s key without tenant_id (columns joined by commas), or the event''s resource id';
COMMENT ON COLUMN audit.records.old_values IS
    'Update and delete: the columns before the change (update: only those that changed)';
COMMENT ON COLUMN audit.records.new_values IS
    'Insert and update: the columns after the change (update: only those that changed)';
COMMENT ON COLUMN audit.records.details IS
    'An event''s details (at most 64 KiB of JSON text)';
COMMENT ON COLUMN audit.records.seq IS
    'Sealed before audit V3: the record''s position in its tenant''s chain; NULL since V3 (audit.links)';
COMMENT ON COLUMN audit.records.prev_hash IS
    'Sealed before audit V3: the previous link''s hash; NULL since V3 (audit.links)';
COMMENT ON COLUMN audit.records.hash IS
    'Sealed before audit V3: this link''s hash; NULL since V3 (audit.links)';
