-- Demo data for the audit module. The other modules' seeds are audited as they load (audit
-- migrates after them and audits their tables); this adds one application event, Alice logging
-- in to Acme. Idempotent: the event is recorded once, keyed by its request id.
-- Load inside one transaction: psql -v ON_ERROR_STOP=1 --single-transaction -f seed.sql

SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', true),
       set_config('app.actor_id', '01900000-0000-7000-8000-00000000a11c', true),
       set_config('app.request_id', 'seed-login-1', true);
SELECT audit.record('user.login', 'user', '01900000-0000-7000-8000-00000000a11c', '{"method": "password"}')
 WHERE NOT EXISTS (SELECT 1 FROM audit.records l
                    WHERE l.tenant_id = '01900000-0000-7000-8000-00000000ac4e' AND l.request_id = 'seed-login-1');
SELECT set_config('app.tenant_id', '', true), set_config('app.actor_id', '', true),
       set_config('app.request_id', '', true);
