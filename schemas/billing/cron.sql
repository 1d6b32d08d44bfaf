-- pgstrata billing: its periodic work scheduled with pg_cron. Load it in the database pg_cron
-- lives in (cron.database_name), as a superuser, naming the application's database and a login
-- role that holds pgstrata_billing_sync (the webhook endpoint's role, never the request path's):
--
--   psql -d postgres -v db=myapp -v sync=myapp_stripe -f schemas/billing/cron.sql
--
-- Without -v db / -v sync it schedules in the current database as the current role. Jobs are
-- named after the database, so loading it again updates them instead of adding more.
\set ON_ERROR_STOP 1
\if :{?db}
\else
\set db :DBNAME
\endif
\if :{?sync}
\else
\set sync :USER
\endif

-- Events whose application failed (recorded with their error) are applied again, 100 at a
-- time; Stripe also redelivers them, for three days. Deferred events need no timer: linking
-- their customer applies them.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':billing.retry_failed', '*/10 * * * *',
                                 'SELECT billing.retry_failed()', :'db', :'sync');
