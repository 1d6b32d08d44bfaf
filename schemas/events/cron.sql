-- pgstrata events: its periodic work scheduled with pg_cron, for installs that run no Rust
-- (or `pgstrata events maintain` / `purge` from a system cron). Load it in the database pg_cron
-- lives in (cron.database_name), as a superuser, naming the application's database and a login
-- role that holds pgstrata_worker (never the request path's role):
--
--   psql -d postgres -v db=myapp -v worker=myapp_worker -f schemas/events/cron.sql
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

-- Create the months events may fall in (an event in a month without a partition is refused,
-- and so is its whole batch) and drop months past events.settings' retention. Daily, so a
-- failed run is retried long before a month runs out.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':events.maintain', '41 2 * * *',
                                 'SELECT * FROM events.maintain()', :'db', :'worker');
-- A tenant's shorter retention: up to 10,000 expired events per run, every five minutes, so
-- each run is a short transaction and vacuum keeps up.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':events.purge', '*/5 * * * *',
                                 'SELECT events.purge(10000)', :'db', :'worker');
