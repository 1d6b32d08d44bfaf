-- Reverts outbox V1: messages, heads, sinks and checkpoints go with the schema.
DROP SCHEMA outbox CASCADE;
