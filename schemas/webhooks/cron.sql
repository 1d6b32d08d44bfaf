-- pgstrata webhooks: its periodic work scheduled with pg_cron, for installs that run no Rust.
-- Load it in the database pg_cron lives in (cron.database_name), as a superuser, naming the
-- application's database and a login role that holds pgstrata_worker (never the request path's
-- role):
--
--   psql -d postgres -v db=myapp -v worker=myapp_worker -f schemas/webhooks/cron.sql
--
-- Without -v db / -v worker it schedules in the current database as the current role. Jobs are
-- named after the database, so loading it again updates them instead of adding more.
\set ON_ERROR_STOP 1
\if :{?db}
\else
\set db :DBNAME
\endif
\if :{?worker}
\else
\set worker :USER
\endif

-- Messages and attempts past their tenant's retention: up to 1,000 per run, every minute, so
-- each run is a short transaction.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':webhooks.prune', '* * * * *',
                                 'SELECT webhooks.prune(1000)', :'db', :'worker');
