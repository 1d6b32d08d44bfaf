-- pgstrata audit: its periodic work scheduled with pg_cron, for installs that run no Rust
-- Sealer (or `pgstrata audit maintain` from a system cron). Load it in the database pg_cron lives
-- in (cron.database_name), as a superuser, naming the application's database and a login role
-- that holds pgstrata_worker (never the request path's role):
--
--   psql -d postgres -v db=myapp -v worker=myapp_worker -f schemas/audit/cron.sql
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

-- Chain the records committed since the last round (a record is tamper-evident once sealed,
-- so this interval is the window; doctor warns past 60 s). A round that finds another sealer
-- holding the lock fails with 55P03 and the next one catches up.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':audit.seal', '* * * * *',
                                 'SELECT audit.seal()', :'db', :'worker');
-- Create the months ahead (an insert into a month without a partition fails, and so does the
-- write that caused it) and drop expired months past audit.settings' retention, checkpointing
-- each tenant's chain first. Daily, so a failed run is retried long before a month runs out.
SELECT cron.schedule_in_database('pgstrata:' || :'db' || ':audit.maintain', '23 2 * * *',
                                 'SELECT * FROM audit.maintain()', :'db', :'worker');
