-- Demo data for the events module: Alice's first session in Acme (a page view, a signup, a
-- project created), as the application tracks them. Idempotent: each event is stored once,
-- keyed by its id, whenever the seed runs again.
-- Load inside one transaction: psql -v ON_ERROR_STOP=1 --single-transaction -f seed.sql

SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', true);
INSERT INTO events.events (tenant_id, event_id, occurred_at, name, actor, properties, session_id, source)
SELECT '01900000-0000-7000-8000-00000000ac4e', e.event_id::uuid, now() - e.ago, e.name,
       '01900000-0000-7000-8000-00000000a11c', e.properties::jsonb, 'seed-session-1', 'web'
  FROM (VALUES ('01900000-0000-7000-8000-0000000e0001', interval '10 minutes', 'page.viewed', '{"path": "/pricing"}'),
               ('01900000-0000-7000-8000-0000000e0002', interval '8 minutes', 'signup', '{"plan": "pro"}'),
               ('01900000-0000-7000-8000-0000000e0003', interval '5 minutes', 'project.created', '{"template": "blank"}'))
       AS e(event_id, ago, name, properties)
 WHERE NOT EXISTS (SELECT 1 FROM events.events x
                    WHERE x.tenant_id = '01900000-0000-7000-8000-00000000ac4e' AND x.event_id = e.event_id::uuid);
SELECT set_config('app.tenant_id', '', true);
