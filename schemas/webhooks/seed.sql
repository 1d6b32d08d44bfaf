-- Demo data for the webhooks module: an endpoint of Acme (disabled, so nothing is ever posted
-- to the example URL) and one message sent with an idempotency key. Idempotent: the endpoint
-- has a fixed id and the key returns the first message when the seed runs again.
-- Load inside one transaction: psql -v ON_ERROR_STOP=1 --single-transaction -f seed.sql

SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', true);
INSERT INTO webhooks.endpoints (tenant_id, id, url, description, event_types, enabled)
VALUES ('01900000-0000-7000-8000-00000000ac4e', '01900000-0000-7000-8000-0000000000e1',
        'https://example.com/webhooks', 'Demo receiver (disabled)', '{invoice.*,member.created}', false)
ON CONFLICT DO NOTHING;
SELECT webhooks.send('member.created',
                     convert_to('{"member": "01900000-0000-7000-8000-000000000b0b", "role": "member"}', 'UTF8'),
                     'seed-member-bob');
SELECT set_config('app.tenant_id', '', true);
