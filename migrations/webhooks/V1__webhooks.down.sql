-- Reverts webhooks V1: endpoints, secrets, messages, deliveries and attempts go with the schema.
DROP SCHEMA webhooks CASCADE;
