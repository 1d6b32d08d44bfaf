-- audit V4 down: the columns of audit.records lose the comments V4 gave them (origin keeps V2's).

COMMENT ON COLUMN audit.records.tenant_id IS NULL;
COMMENT ON COLUMN audit.records.id IS NULL;
COMMENT ON COLUMN audit.records.occurred_at IS NULL;
COMMENT ON COLUMN audit.records.txid IS NULL;
COMMENT ON COLUMN audit.records.actor_id IS NULL;
COMMENT ON COLUMN audit.records.request_id IS NULL;
COMMENT ON COLUMN audit.records.action IS NULL;
COMMENT ON COLUMN audit.records.resource_type IS NULL;
COMMENT ON COLUMN audit.records.resource_id IS NULL;
COMMENT ON COLUMN audit.records.old_values IS NULL;
COMMENT ON COLUMN audit.records.new_values IS NULL;
COMMENT ON COLUMN audit.records.details IS NULL;
COMMENT ON COLUMN audit.records.seq IS NULL;
COMMENT ON COLUMN audit.records.prev_hash IS NULL;
COMMENT ON COLUMN audit.records.hash IS NULL;
