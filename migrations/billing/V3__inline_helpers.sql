-- billing V3: the one-expression SQL helpers go back to being inlined (D-046).
--
-- V2 pinned search_path = pg_catalog, pg_temp on every billing function. On these six helpers
-- the SET clause stops PostgreSQL from inlining them into the calling statement and adds a
-- configuration save and restore to every call: they run several times per webhook event, and
-- concurrent webhook throughput fell by more than half (measured with pgstrata-bench billing).
-- Without it they are still safe: each is one IMMUTABLE SQL expression naming only pg_catalog
-- built-ins and billing's own functions, inlined into (and parsed under the search_path of) its
-- caller, and every billing function that runs as the owner pins that path. The other
-- functions keep the pin; tests/attacks.rs lists the exempt ones, so no other function can
-- lose it unnoticed.

ALTER FUNCTION billing.ts(jsonb) RESET search_path;
ALTER FUNCTION billing.ref(jsonb) RESET search_path;
ALTER FUNCTION billing.state_rank(text, text, boolean) RESET search_path;
ALTER FUNCTION billing.event_kind(text) RESET search_path;
ALTER FUNCTION billing.object_customer(text, jsonb) RESET search_path;
ALTER FUNCTION billing.grants_access(text, timestamptz, timestamptz, interval, timestamptz) RESET search_path;
