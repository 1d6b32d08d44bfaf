-- Reverts eventstore V1: the streams, their events and the subscriptions' checkpoints go with
-- the schema. Read models an application built from them are its own to drop.
DROP SCHEMA eventstore CASCADE;
