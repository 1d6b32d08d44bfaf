-- pgstrata outbox: its periodic work scheduled with pg_cron, for installs that run no Rust
-- (or `pgstrata outbox cleanup` from a system cron). Load it in the database pg_cron lives in
-- (cron.database_name), as a superuser, naming the application's database and a login role that
-- holds pgstrata_worker (never the request path's role):
--
--   psql -d postgres -v db=myapp -v worker=myapp_worker -f schemas/outbox/cron.sql
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

-- Messages every sink has passed, published more than 7 days ago: up to 50,000 per run, every
-- five minutes, so each run is a short transaction and vacuum keeps up.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':outbox.cleanup', '*/5 * * * *',
                                 'SELECT outbox.cleanup(make_interval(days => 7), 50000)', :'db', :'worker');
