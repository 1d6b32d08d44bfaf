-- Reverts billing V3: the six helpers pin search_path again, as V2 left them.
ALTER FUNCTION billing.ts(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.ref(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.state_rank(text, text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.event_kind(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.object_customer(text, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION billing.grants_access(text, timestamptz, timestamptz, interval, timestamptz) SET search_path = pg_catalog, pg_temp;
