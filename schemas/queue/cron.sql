-- pgstrata queue: its periodic work scheduled with pg_cron, for installs that run no Rust
-- Worker (the Worker's maintenance task does the same). Load it in the database pg_cron lives in
-- (cron.database_name), as a superuser, naming the application's database and a login role that
-- holds pgstrata_worker (never the request path's role):
--
--   psql -d postgres -v db=myapp -v worker=myapp_worker -f schemas/queue/cron.sql
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

-- Scheduled and retryable jobs whose time has come become available (the claim only takes
-- available jobs). pg_cron's finest schedule is a minute; a Worker promotes every second.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':queue.promote_due', '* * * * *',
                                 'SELECT queue.promote_due()', :'db', :'worker');
-- Running jobs whose lease ran out (a worker died) go back to the queue, attempt counted.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':queue.rescue', '* * * * *',
                                 'SELECT queue.rescue()', :'db', :'worker');
-- Finished jobs and old cron periods older than a day are deleted, 10,000 at a time.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':queue.prune', '17 * * * *',
                                 'SELECT queue.prune()', :'db', :'worker');
