-- Reverts eventstore V2: the snapshots (a cache of the events) go; the events stay.
DROP FUNCTION eventstore.save_snapshot(text, text, bigint, jsonb);
DROP TABLE eventstore.snapshots;
