-- webhooks V1: outbound webhooks sent from the business transaction, signed per the Standard
-- Webhooks specification, retried, logged, replayable.
--
-- - webhooks.endpoints: a tenant's receivers (url, event type patterns with wildcards, an
--   optional payload filter, custom headers, rate limit, concurrency cap, FIFO flag), enabled
--   or disabled with a reason. webhooks.secrets: the signing keys (whsec_), the current one and
--   older ones still valid during a rotation's grace period; every live key signs.
-- - webhooks.send(event_type, payload, idempotency_key) runs in the caller's transaction: it
--   stores the message (the payload as the exact bytes that get signed and sent) and one
--   delivery per enabled endpoint whose patterns and filter match, so the message exists if and
--   only if the business write committed (D-148: fan-out at send).
-- - The dispatcher (pgstrata_worker) claims due deliveries with webhooks.claim (SKIP LOCKED, a
--   lease, an attempt row written in the same transaction), posts them, and reports with
--   webhooks.complete, guarded by the attempt number. A worker that dies mid-request leaves a
--   running attempt whose lease expires: the next claim marks it lost and schedules the
--   delivery again, with the same message id (the receiver's webhook-id), so a receiver that
--   deduplicates on it acts once.
-- - Retries follow webhooks.settings.retry_schedule (the Standard Webhooks schedule) with
--   jitter; Retry-After and 429/503 push the next attempt later; 410 disables the endpoint; an
--   endpoint whose every attempt failed for disable_after_s is disabled, recorded in
--   webhooks.notices and announced with NOTIFY (D-152).
-- - Erasure: deleting an endpoint removes its deliveries and attempts and the payloads no other
--   endpoint still needs; webhooks.erase removes all of a tenant's messages; webhooks.prune
--   deletes messages past their retention, with their deliveries and attempts.

CREATE SCHEMA IF NOT EXISTS webhooks;
COMMENT ON SCHEMA webhooks IS 'pgstrata webhooks: outbound webhooks sent in the business transaction, signed, retried and logged';
GRANT USAGE ON SCHEMA webhooks TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- ---------------------------------------------------------------------------------------------
-- Settings
-- ---------------------------------------------------------------------------------------------

-- One row. The operator (or the owner) changes it.
CREATE TABLE webhooks.settings (
    singleton           boolean   NOT NULL DEFAULT true,
    -- Seconds to wait after attempt n before attempt n + 1; the first attempt is immediate.
    -- The Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h
    -- (ten attempts over about three days).
    retry_schedule      integer[] NOT NULL DEFAULT '{5,300,1800,7200,18000,36000,50400,72000,86400}',
    -- Each wait is multiplied by a random factor in [1 - jitter, 1 + jitter], so endpoints
    -- that failed together do not come back together.
    jitter              real      NOT NULL DEFAULT 0.2,
    -- After 429 or 503 without Retry-After, wait at least this long.
    throttle_delay_s    integer   NOT NULL DEFAULT 60,
    -- A Retry-After longer than this is cut to it.
    max_retry_after_s   integer   NOT NULL DEFAULT 86400,
    -- An endpoint whose every attempt failed for this many seconds (no success in between) is
    -- disabled at its next failed attempt (D-152). 5 days.
    disable_after_s     integer   NOT NULL DEFAULT 432000,
    -- Per attempt: connect, send and read the answer within this time.
    timeout_ms          integer   NOT NULL DEFAULT 15000,
    -- The largest payload send accepts (the bytes signed and sent).
    max_payload_bytes   integer   NOT NULL DEFAULT 262144,
    -- Days a message, its deliveries and attempts are kept (a tenant's own in tenant_settings).
    retention_days      integer   NOT NULL DEFAULT 30,
    -- Endpoints per tenant, and live secrets per endpoint (each live secret signs every
    -- attempt, so their number is bounded for the dispatcher's sake).
    max_endpoints       integer   NOT NULL DEFAULT 100,
    max_secrets         integer   NOT NULL DEFAULT 10,
    CONSTRAINT settings_pkey PRIMARY KEY (singleton),
    CONSTRAINT settings_singleton CHECK (singleton),
    CONSTRAINT settings_retry_schedule_range CHECK (
        cardinality(retry_schedule) BETWEEN 0 AND 50 AND array_position(retry_schedule, NULL) IS NULL
        AND 0 <= ALL (retry_schedule) AND 604800 >= ALL (retry_schedule)),
    CONSTRAINT settings_jitter_range CHECK (jitter BETWEEN 0 AND 0.5),
    CONSTRAINT settings_throttle_delay_range CHECK (throttle_delay_s BETWEEN 0 AND 86400),
    CONSTRAINT settings_max_retry_after_range CHECK (max_retry_after_s BETWEEN 0 AND 604800),
    CONSTRAINT settings_disable_after_range CHECK (disable_after_s BETWEEN 0 AND 7776000),
    CONSTRAINT settings_timeout_range CHECK (timeout_ms BETWEEN 100 AND 300000),
    CONSTRAINT settings_max_payload_range CHECK (max_payload_bytes BETWEEN 1 AND 4194304),
    CONSTRAINT settings_retention_range CHECK (retention_days BETWEEN 1 AND 3660),
    CONSTRAINT settings_max_endpoints_range CHECK (max_endpoints BETWEEN 1 AND 100000),
    CONSTRAINT settings_max_secrets_range CHECK (max_secrets BETWEEN 1 AND 100)
);
COMMENT ON TABLE webhooks.settings IS 'citus: reference. Retry schedule, auto-disable window, limits and retention of the webhooks module (one row)';
INSERT INTO webhooks.settings DEFAULT VALUES;
GRANT SELECT ON webhooks.settings TO pgstrata_app, pgstrata_worker, pgstrata_operator;
GRANT UPDATE ON webhooks.settings TO pgstrata_operator;

-- A tenant's retention (its plan's), set by the operator.
CREATE TABLE webhooks.tenant_settings (
    tenant_id       uuid    NOT NULL,
    retention_days  integer NOT NULL,
    CONSTRAINT tenant_settings_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT tenant_settings_retention_range CHECK (retention_days BETWEEN 1 AND 3660)
);
COMMENT ON TABLE webhooks.tenant_settings IS 'citus: distributed. A tenant''s message retention (operator)';
COMMENT ON COLUMN webhooks.tenant_settings.retention_days IS
    'operator field: the tenant''s plan decides how long its messages and attempts are kept';
ALTER TABLE webhooks.tenant_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.tenant_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks.tenant_settings
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
CREATE POLICY operator_retention ON webhooks.tenant_settings TO pgstrata_operator USING (true) WITH CHECK (true);
GRANT SELECT ON webhooks.tenant_settings TO pgstrata_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks.tenant_settings TO pgstrata_operator;

-- ---------------------------------------------------------------------------------------------
-- Helpers of the CHECK constraints (immutable, pure)
-- ---------------------------------------------------------------------------------------------

-- An event type: dotted segments of letters, digits, '_' and '-' ("invoice.paid").
CREATE FUNCTION webhooks.event_type_valid(p_type text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN p_type IS NOT NULL AND length(p_type) <= 200 AND p_type ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$';

-- Event type patterns: an event type whose segments may be '*'. A '*' inside matches exactly
-- one segment; a final '*' matches one or more ("invoice.*" matches "invoice.paid" and
-- "invoice.payment.failed"); "*" alone matches every type.
CREATE FUNCTION webhooks.patterns_valid(p_patterns text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN p_patterns IS NOT NULL AND cardinality(p_patterns) BETWEEN 1 AND 50
       AND NOT EXISTS (SELECT 1 FROM unnest(p_patterns) AS p(pattern)
                        WHERE p.pattern IS NULL OR length(p.pattern) > 200
                           OR p.pattern !~ '^([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*$');

-- The anchored regular expression equivalent to a list of valid patterns, stored beside them
-- so that send matches an endpoint with one regex test. Segments hold no regex metacharacter
-- ('-' outside brackets is literal), so only '.' and '*' are translated.
CREATE FUNCTION webhooks.patterns_regex(p_patterns text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN '^(?:' || (
        SELECT string_agg((
            SELECT string_agg(CASE WHEN s.segment = '*' AND s.n = cardinality(string_to_array(p.pattern, '.')) THEN '.+'
                                   WHEN s.segment = '*' THEN '[^.]+'
                                   ELSE s.segment END, '\.' ORDER BY s.n)
              FROM unnest(string_to_array(p.pattern, '.')) WITH ORDINALITY AS s(segment, n)), '|')
          FROM unnest(p_patterns) AS p(pattern)) || ')$';

-- Custom headers: a JSON object of at most 20 string values, names that are HTTP tokens and
-- none the dispatcher sets or that change how the request is framed or routed.
CREATE FUNCTION webhooks.headers_valid(p_headers jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE WHEN p_headers IS NULL OR jsonb_typeof(p_headers) <> 'object' THEN false
                ELSE pg_column_size(p_headers) <= 8192
                 AND (SELECT count(*) FROM jsonb_each(p_headers)) <= 20
                 AND NOT EXISTS (
                     SELECT 1 FROM jsonb_each(p_headers) AS h(name, value)
                      WHERE h.name !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,100}$'
                         OR lower(h.name) ~ '^(webhook-|content-|proxy-|host$|connection$|transfer-encoding$|te$|trailer$|upgrade$|keep-alive$|expect$|user-agent$)'
                         OR jsonb_typeof(h.value) <> 'string'
                         OR length(h.value #>> '{}') > 1000
                         OR (h.value #>> '{}') ~ '[[:cntrl:]]')
           END;

-- 32 bytes from PostgreSQL's strong random source (two v4 UUIDs: 244 random bits), for
-- installs without pgcrypto. The Rust API makes its own keys with the operating system's.
CREATE FUNCTION webhooks.random_key() RETURNS bytea
    LANGUAGE sql VOLATILE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');

-- ---------------------------------------------------------------------------------------------
-- Endpoints and their secrets
-- ---------------------------------------------------------------------------------------------

CREATE TABLE webhooks.endpoints (
    tenant_id         uuid        NOT NULL,
    id                uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    -- http(s) only, no credentials in the URL; the dispatcher also refuses private addresses
    -- when it resolves the host (SSRF guard), at every attempt.
    url               text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    event_types       text[]      NOT NULL DEFAULT '{*}',
    event_regex       text        GENERATED ALWAYS AS (webhooks.patterns_regex(event_types)) STORED,
    -- When set, a message is sent only if its payload contains this JSON (jsonb @>).
    payload_filter    jsonb,
    enabled           boolean     NOT NULL DEFAULT true,
    disabled_reason   text,
    disabled_at       timestamptz,
    -- Start of the current run of failed attempts (no success since); NULL when the last
    -- attempt succeeded. The auto-disable rule reads it.
    first_failure_at  timestamptz,
    -- Attempts started per second, at most (NULL: no limit).
    rate_limit        integer,
    -- Attempts in flight at once, at most: a slow endpoint holds this many workers, no more.
    max_in_flight     integer     NOT NULL DEFAULT 8,
    -- Deliver in send order, one at a time: a failing message holds back the ones after it.
    fifo              boolean     NOT NULL DEFAULT false,
    headers           jsonb       NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT endpoints_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT endpoints_url_format CHECK (
        length(url) <= 2048 AND url ~ '^https?://[^/?#@[:space:][:cntrl:]]+(/[^[:space:][:cntrl:]]*)?$'),
    CONSTRAINT endpoints_description_length CHECK (length(description) <= 1000),
    CONSTRAINT endpoints_event_types_format CHECK (webhooks.patterns_valid(event_types)),
    CONSTRAINT endpoints_payload_filter_object CHECK (
        jsonb_typeof(payload_filter) = 'object' AND pg_column_size(payload_filter) <= 4096),
    CONSTRAINT endpoints_rate_limit_range CHECK (rate_limit BETWEEN 1 AND 10000),
    CONSTRAINT endpoints_max_in_flight_range CHECK (max_in_flight BETWEEN 1 AND 100),
    CONSTRAINT endpoints_headers_valid CHECK (webhooks.headers_valid(headers)),
    CONSTRAINT endpoints_disabled_reason_length CHECK (length(disabled_reason) <= 1000)
);
COMMENT ON TABLE webhooks.endpoints IS 'citus: distributed. A tenant''s webhook receivers: URL, event type patterns, filter, headers, limits, enabled state';

CREATE TABLE webhooks.secrets (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    endpoint_id  uuid        NOT NULL,
    -- The raw HMAC key (shown to the tenant as whsec_ + base64). Stored as is: signing needs
    -- the key itself, so it cannot be hashed (D-150).
    key          bytea       NOT NULL DEFAULT webhooks.random_key(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL for the current key; a rotated key signs until this time, then is deleted.
    expires_at   timestamptz,
    CONSTRAINT secrets_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT secrets_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhooks.endpoints (tenant_id, id) ON DELETE CASCADE,
    -- Standard Webhooks: 24 to 64 bytes.
    CONSTRAINT secrets_key_length CHECK (octet_length(key) BETWEEN 24 AND 64)
);
COMMENT ON TABLE webhooks.secrets IS 'citus: distributed. Signing keys of each endpoint: the current one and rotated ones in their grace period';
CREATE UNIQUE INDEX secrets_current_key ON webhooks.secrets (tenant_id, endpoint_id) WHERE expires_at IS NULL;
CREATE INDEX secrets_endpoint_idx ON webhooks.secrets (tenant_id, endpoint_id, created_at);

-- ---------------------------------------------------------------------------------------------
-- Messages, deliveries, attempts, notices
-- ---------------------------------------------------------------------------------------------

CREATE TABLE webhooks.messages (
    tenant_id        uuid        NOT NULL,
    -- The webhook-id header: stable across retries and replays.
    id               uuid        NOT NULL DEFAULT tenancy.uuid_v7(),
    event_type       text        NOT NULL,
    -- The exact bytes that are signed and sent (JSON, UTF-8): never re-serialised.
    payload          bytea       NOT NULL,
    -- The caller's key: a second send with the same key returns the first message.
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Set by webhooks.check_message from the retention settings.
    expires_at       timestamptz NOT NULL,
    CONSTRAINT messages_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT messages_idempotency_key UNIQUE (tenant_id, idempotency_key),
    CONSTRAINT messages_event_type_format CHECK (webhooks.event_type_valid(event_type)),
    -- The hard ceiling; settings.max_payload_bytes is the limit in force.
    CONSTRAINT messages_payload_size CHECK (octet_length(payload) <= 4194304),
    CONSTRAINT messages_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 200)
);
COMMENT ON TABLE webhooks.messages IS 'citus: distributed. Messages sent, with the exact payload bytes that are signed; pruned after retention';
CREATE INDEX messages_expires_idx ON webhooks.messages (expires_at);
CREATE INDEX messages_created_idx ON webhooks.messages (tenant_id, created_at, id);

CREATE TABLE webhooks.deliveries (
    tenant_id         uuid        NOT NULL,
    id                bigint      GENERATED BY DEFAULT AS IDENTITY,
    message_id        uuid        NOT NULL,
    endpoint_id       uuid        NOT NULL,
    -- pending (waiting for next_attempt_at), running (claimed, under a lease), succeeded,
    -- failed (retries exhausted, a manual attempt failed, or the endpoint was disabled).
    state             text        NOT NULL DEFAULT 'pending',
    -- Attempts started, lost ones included; the running attempt's number while running.
    attempts          integer     NOT NULL DEFAULT 0,
    -- The next attempt is a manual one (a replay): one attempt, no automatic retry.
    manual            boolean     NOT NULL DEFAULT false,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_expires_at  timestamptz,
    worker            text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CONSTRAINT deliveries_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT deliveries_message_endpoint UNIQUE (tenant_id, message_id, endpoint_id),
    CONSTRAINT deliveries_message_fkey FOREIGN KEY (tenant_id, message_id)
        REFERENCES webhooks.messages (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT deliveries_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhooks.endpoints (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT deliveries_state_check CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    CONSTRAINT deliveries_running_leased CHECK ((state = 'running') = (lease_expires_at IS NOT NULL)),
    CONSTRAINT deliveries_attempts_range CHECK (attempts >= 0)
);
COMMENT ON TABLE webhooks.deliveries IS
    'citus: distributed. One row per message and endpoint: its state and next attempt; claimed across tenants by pgstrata_worker';
-- The claim: an endpoint's due deliveries in time order.
CREATE INDEX deliveries_due_idx ON webhooks.deliveries (tenant_id, endpoint_id, next_attempt_at, id) WHERE state = 'pending';
-- The concurrency cap counts an endpoint's running deliveries (a few entries, whatever the
-- backlog); FIFO finds its oldest open one.
CREATE INDEX deliveries_running_idx ON webhooks.deliveries (tenant_id, endpoint_id) WHERE state = 'running';
CREATE INDEX deliveries_open_idx ON webhooks.deliveries (tenant_id, endpoint_id, id) WHERE state IN ('pending', 'running');
-- The rescue of expired leases.
CREATE INDEX deliveries_lease_idx ON webhooks.deliveries (lease_expires_at) WHERE state = 'running';
-- Replay of the failed deliveries since a time.
CREATE INDEX deliveries_failed_idx ON webhooks.deliveries (tenant_id, created_at) WHERE state = 'failed';

CREATE TABLE webhooks.attempts (
    tenant_id      uuid        NOT NULL,
    id             bigint      GENERATED BY DEFAULT AS IDENTITY,
    delivery_id    bigint      NOT NULL,
    message_id     uuid        NOT NULL,
    endpoint_id    uuid        NOT NULL,
    attempt        integer     NOT NULL,
    -- scheduled (the first attempt and automatic retries) or manual (a replay).
    trigger        text        NOT NULL,
    -- running (written by the claim), succeeded, failed, lost (the worker's lease expired
    -- before it reported: the receiver may or may not have seen it).
    state          text        NOT NULL DEFAULT 'running',
    url            text        NOT NULL,
    worker         text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    status_code    integer,
    -- The first 20 kB of the answer's body.
    response_body  text,
    duration_ms    integer,
    error          text,
    CONSTRAINT attempts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT attempts_delivery_attempt UNIQUE (tenant_id, delivery_id, attempt),
    CONSTRAINT attempts_delivery_fkey FOREIGN KEY (tenant_id, delivery_id)
        REFERENCES webhooks.deliveries (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT attempts_trigger_check CHECK (trigger IN ('scheduled', 'manual')),
    CONSTRAINT attempts_state_check CHECK (state IN ('running', 'succeeded', 'failed', 'lost')),
    CONSTRAINT attempts_response_body_size CHECK (octet_length(response_body) <= 20480),
    CONSTRAINT attempts_error_length CHECK (length(error) <= 2000)
);
COMMENT ON TABLE webhooks.attempts IS 'citus: distributed. Every attempt of every delivery: outcome, status, the first 20 kB of the answer, duration';
-- An endpoint's attempts newest first (ids grow with time), and the rate limit's look at its
-- latest rate_limit attempts (index only, through started_at).
CREATE INDEX attempts_endpoint_idx ON webhooks.attempts (tenant_id, endpoint_id, id) INCLUDE (started_at);
-- A message's attempts.
CREATE INDEX attempts_message_idx ON webhooks.attempts (tenant_id, message_id, id);

-- What the tenant should be told by another channel (an endpoint was disabled).
CREATE TABLE webhooks.notices (
    tenant_id    uuid        NOT NULL,
    id           bigint      GENERATED BY DEFAULT AS IDENTITY,
    kind         text        NOT NULL,
    endpoint_id  uuid        NOT NULL,
    reason       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notices_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT notices_kind_check CHECK (kind IN ('endpoint_disabled'))
);
COMMENT ON TABLE webhooks.notices IS 'citus: distributed. Notices for the tenant (an endpoint disabled, and why), also sent with NOTIFY pgstrata_webhooks_notices';
CREATE INDEX notices_created_brin ON webhooks.notices USING brin (created_at);

-- ---------------------------------------------------------------------------------------------
-- Isolation, roles and privileges
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['endpoints', 'secrets', 'messages', 'deliveries', 'attempts', 'notices'] LOOP
        EXECUTE format('ALTER TABLE webhooks.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('ALTER TABLE webhooks.%I FORCE ROW LEVEL SECURITY', v_table);
        EXECUTE format('CREATE POLICY tenant_isolation ON webhooks.%I
                            USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))', v_table);
        EXECUTE format('GRANT SELECT ON webhooks.%I TO pgstrata_app', v_table);
    END LOOP;
    -- A suspended tenant reads its endpoints and history but changes nothing (tenancy V3).
    FOREACH v_table IN ARRAY ARRAY['endpoints', 'secrets', 'messages', 'deliveries'] LOOP
        PERFORM tenancy.enforce_tenant_status(format('webhooks.%I', v_table)::regclass);
    END LOOP;
END
$$;

-- The request path manages its endpoints (never the dispatcher's columns: first_failure_at,
-- disabled_reason, disabled_at, which the triggers and the worker keep).
GRANT INSERT (tenant_id, id, url, description, event_types, payload_filter, enabled, rate_limit,
              max_in_flight, fifo, headers),
      UPDATE (url, description, event_types, payload_filter, enabled, rate_limit, max_in_flight, fifo, headers),
      DELETE
   ON webhooks.endpoints TO pgstrata_app;
-- Its keys: add one (or rotate_secret), end one's validity, remove one.
GRANT INSERT (tenant_id, id, endpoint_id, key, expires_at), UPDATE (expires_at), DELETE
   ON webhooks.secrets TO pgstrata_app;
-- Send (the content; id, time and expiry are the database's) and erase.
GRANT INSERT (tenant_id, event_type, payload, idempotency_key), DELETE ON webhooks.messages TO pgstrata_app;
-- Fan-out (send) and replay: a delivery starts pending; a finished one may become pending
-- again. Never a running one, never its attempt count or lease (the claim's).
GRANT INSERT (tenant_id, message_id, endpoint_id, manual),
      UPDATE (state, manual, next_attempt_at, finished_at)
   ON webhooks.deliveries TO pgstrata_app;
CREATE POLICY app_replay_only ON webhooks.deliveries AS RESTRICTIVE FOR UPDATE TO pgstrata_app
    USING (state IN ('succeeded', 'failed'))
    WITH CHECK (state = 'pending' AND lease_expires_at IS NULL);
CREATE POLICY app_insert_pending ON webhooks.deliveries AS RESTRICTIVE FOR INSERT TO pgstrata_app
    WITH CHECK (state = 'pending' AND attempts = 0 AND lease_expires_at IS NULL);

-- The dispatcher works across tenants: it reads what it sends, claims and completes
-- deliveries, writes attempts and notices, keeps the endpoints' failure state, and prunes.
GRANT SELECT ON webhooks.endpoints, webhooks.secrets, webhooks.messages, webhooks.deliveries,
                webhooks.attempts, webhooks.notices, webhooks.tenant_settings TO pgstrata_worker;
GRANT UPDATE (enabled, disabled_reason, disabled_at, first_failure_at) ON webhooks.endpoints TO pgstrata_worker;
GRANT UPDATE (state, attempts, manual, next_attempt_at, lease_expires_at, worker, finished_at)
   ON webhooks.deliveries TO pgstrata_worker;
GRANT INSERT, UPDATE (state, finished_at, status_code, response_body, duration_ms, error)
   ON webhooks.attempts TO pgstrata_worker;
GRANT INSERT (tenant_id, kind, endpoint_id, reason) ON webhooks.notices TO pgstrata_worker;
-- Retention (prune): UPDATE only so that it may lock the rows it deletes (SKIP LOCKED).
GRANT UPDATE (expires_at), DELETE ON webhooks.messages TO pgstrata_worker;
GRANT DELETE ON webhooks.notices TO pgstrata_worker;
DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['endpoints', 'secrets', 'messages', 'deliveries', 'attempts', 'notices'] LOOP
        EXECUTE format('CREATE POLICY worker_dispatch ON webhooks.%I TO pgstrata_worker USING (true) WITH CHECK (true)',
                       v_table);
    END LOOP;
    EXECUTE 'CREATE POLICY worker_read ON webhooks.tenant_settings FOR SELECT TO pgstrata_worker USING (true)';
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------------------------

-- Before an endpoint is written: the per-tenant cap on insert, and the disabled bookkeeping
-- (a tenant's disable is recorded with a reason; enabling clears the reason and the failure
-- run, so the auto-disable window starts over).
CREATE FUNCTION webhooks.before_endpoint() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_max integer;
    v_count bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT s.max_endpoints INTO v_max FROM webhooks.settings s;
        SELECT count(*) INTO v_count FROM webhooks.endpoints e WHERE e.tenant_id = NEW.tenant_id;
        IF v_count >= v_max THEN
            RAISE EXCEPTION 'webhooks: a tenant has at most % endpoints', v_max
                USING ERRCODE = 'PS413', DETAIL = format('limit=%s field=endpoints', v_max),
                      HINT = 'delete an endpoint, or ask the operator to raise webhooks.settings.max_endpoints';
        END IF;
        NEW.first_failure_at := NULL;
        IF NOT NEW.enabled THEN
            NEW.disabled_reason := 'disabled by the tenant';
            NEW.disabled_at := now();
        ELSE
            NEW.disabled_reason := NULL;
            NEW.disabled_at := NULL;
        END IF;
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    IF OLD.enabled AND NOT NEW.enabled THEN
        NEW.disabled_reason := coalesce(NEW.disabled_reason, 'disabled by the tenant');
        NEW.disabled_at := coalesce(NEW.disabled_at, now());
    ELSIF NOT OLD.enabled AND NEW.enabled THEN
        NEW.disabled_reason := NULL;
        NEW.disabled_at := NULL;
        NEW.first_failure_at := NULL;
    END IF;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION webhooks.before_endpoint() FROM PUBLIC;
CREATE TRIGGER endpoints_before BEFORE INSERT OR UPDATE ON webhooks.endpoints
    FOR EACH ROW EXECUTE FUNCTION webhooks.before_endpoint();

-- A new endpoint gets its first key, so it can sign from the start.
CREATE FUNCTION webhooks.after_endpoint_insert() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO webhooks.secrets (tenant_id, endpoint_id) VALUES (NEW.tenant_id, NEW.id);
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION webhooks.after_endpoint_insert() FROM PUBLIC;
CREATE TRIGGER endpoints_first_secret AFTER INSERT ON webhooks.endpoints
    FOR EACH ROW EXECUTE FUNCTION webhooks.after_endpoint_insert();

-- Deleting endpoints removes their deliveries and attempts (foreign keys); this removes the
-- payloads that no remaining endpoint will receive, so an endpoint's deletion erases what was
-- sent only to it.
CREATE FUNCTION webhooks.after_endpoint_delete() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    DELETE FROM webhooks.messages m
     WHERE m.tenant_id IN (SELECT DISTINCT g.tenant_id FROM gone g)
       AND NOT EXISTS (SELECT 1 FROM webhooks.deliveries d WHERE d.tenant_id = m.tenant_id AND d.message_id = m.id);
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION webhooks.after_endpoint_delete() FROM PUBLIC;
CREATE TRIGGER endpoints_erase_payloads AFTER DELETE ON webhooks.endpoints
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.after_endpoint_delete();

-- A new key: expired keys of the endpoint go, and the live ones stay within max_secrets
-- (every live key signs every attempt). The endpoint row is locked so that concurrent
-- rotations count each other.
CREATE FUNCTION webhooks.before_secret_insert() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_max integer;
    v_live bigint;
BEGIN
    PERFORM 1 FROM webhooks.endpoints e WHERE e.tenant_id = NEW.tenant_id AND e.id = NEW.endpoint_id FOR NO KEY UPDATE;
    DELETE FROM webhooks.secrets s
     WHERE s.tenant_id = NEW.tenant_id AND s.endpoint_id = NEW.endpoint_id AND s.expires_at <= now();
    SELECT s.max_secrets INTO v_max FROM webhooks.settings s;
    SELECT count(*) INTO v_live FROM webhooks.secrets s
     WHERE s.tenant_id = NEW.tenant_id AND s.endpoint_id = NEW.endpoint_id;
    IF v_live >= v_max THEN
        RAISE EXCEPTION 'webhooks: an endpoint has at most % live secrets', v_max
            USING ERRCODE = 'PS413', DETAIL = format('limit=%s field=secrets', v_max),
                  HINT = 'expire an old secret (set its expires_at) before adding another';
    END IF;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION webhooks.before_secret_insert() FROM PUBLIC;
CREATE TRIGGER secrets_before_insert BEFORE INSERT ON webhooks.secrets
    FOR EACH ROW EXECUTE FUNCTION webhooks.before_secret_insert();

-- Every message, whoever inserts it: the payload is JSON in UTF-8 and within the limit in
-- force, and it expires after the tenant's retention. (A message inserted directly, not
-- through send, reaches no endpoint.)
CREATE FUNCTION webhooks.check_message() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_max integer;
    v_days integer;
BEGIN
    SELECT s.max_payload_bytes, coalesce(t.retention_days, s.retention_days) INTO v_max, v_days
      FROM webhooks.settings s LEFT JOIN webhooks.tenant_settings t ON t.tenant_id = NEW.tenant_id;
    IF octet_length(NEW.payload) > v_max THEN
        RAISE EXCEPTION 'webhooks: the payload has % bytes, more than the limit of %', octet_length(NEW.payload), v_max
            USING ERRCODE = 'PS413', DETAIL = format('limit=%s field=payload', v_max),
                  HINT = 'send a thin payload (ids the receiver fetches) instead';
    END IF;
    IF NOT webhooks.event_type_valid(NEW.event_type) THEN
        RAISE EXCEPTION 'webhooks: % is not an event type (dotted segments of letters, digits, _ and -)',
                        coalesce(quote_literal(left(NEW.event_type, 100)), 'NULL')
            USING ERRCODE = '22023', DETAIL = 'field=event_type';
    END IF;
    -- Refuses what is not UTF-8 (22021) or not JSON (22P02).
    PERFORM convert_from(NEW.payload, 'UTF8')::jsonb;
    NEW.created_at := now();
    NEW.expires_at := now() + make_interval(days => v_days);
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION webhooks.check_message() FROM PUBLIC;
CREATE TRIGGER messages_check BEFORE INSERT ON webhooks.messages
    FOR EACH ROW EXECUTE FUNCTION webhooks.check_message();

-- ---------------------------------------------------------------------------------------------
-- The request path's functions (invoker: they run under the tenant's policies)
-- ---------------------------------------------------------------------------------------------

-- Sends a message from the current transaction: stores it and queues one delivery per
-- enabled endpoint of the tenant whose patterns match the event type and whose filter the
-- payload contains. Returns the message id. With an idempotency key already used by the
-- tenant, returns that message and queues nothing; with other content under the same key,
-- refuses (PS422, DETAIL field=idempotency_key).
CREATE FUNCTION webhooks.send(p_event_type text, p_payload bytea, p_idempotency_key text DEFAULT NULL)
RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_id uuid;
    v_type text;
    v_payload bytea;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'webhooks.send: no tenant in context' USING ERRCODE = '42501';
    END IF;
    IF p_payload IS NULL THEN
        RAISE EXCEPTION 'webhooks.send: the payload is NULL' USING ERRCODE = '22023', DETAIL = 'field=payload';
    END IF;
    INSERT INTO webhooks.messages (tenant_id, event_type, payload, idempotency_key)
    VALUES (v_tenant, p_event_type, p_payload, p_idempotency_key)
    ON CONFLICT ON CONSTRAINT messages_idempotency_key DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT m.id, m.event_type, m.payload INTO v_id, v_type, v_payload
          FROM webhooks.messages m WHERE m.tenant_id = v_tenant AND m.idempotency_key = p_idempotency_key;
        IF v_type IS DISTINCT FROM p_event_type OR v_payload IS DISTINCT FROM p_payload THEN
            RAISE EXCEPTION 'webhooks.send: idempotency key % was used for another message', quote_literal(p_idempotency_key)
                USING ERRCODE = 'PS422', DETAIL = format('field=idempotency_key message=%s', v_id),
                      HINT = 'a key names one message: reuse it only to send the same message again';
        END IF;
        RETURN v_id;
    END IF;
    INSERT INTO webhooks.deliveries (tenant_id, message_id, endpoint_id)
    SELECT v_tenant, v_id, e.id
      FROM webhooks.endpoints e
     WHERE e.tenant_id = v_tenant AND e.enabled AND p_event_type ~ e.event_regex
       AND (e.payload_filter IS NULL OR convert_from(p_payload, 'UTF8')::jsonb @> e.payload_filter);
    IF FOUND THEN
        -- Wakes idle dispatchers at commit (one notification per transaction: same payload).
        PERFORM pg_notify('pgstrata_webhooks', '');
    END IF;
    RETURN v_id;
END
$$;

-- Rotates an endpoint's key: the current key stays valid (and signs) for p_grace, the new one
-- (p_key, or a random one) becomes current. Returns the new key's id.
CREATE FUNCTION webhooks.rotate_secret(p_endpoint uuid, p_grace interval DEFAULT interval '24 hours', p_key bytea DEFAULT NULL)
RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_id uuid;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'webhooks.rotate_secret: no tenant in context' USING ERRCODE = '42501';
    END IF;
    IF p_grace IS NULL OR p_grace < interval '0' OR p_grace > interval '30 days' THEN
        RAISE EXCEPTION 'webhooks.rotate_secret: grace % is out of range', coalesce(p_grace::text, 'NULL')
            USING ERRCODE = '22023', DETAIL = 'field=grace', HINT = 'a grace period is 0 to 30 days';
    END IF;
    PERFORM 1 FROM webhooks.endpoints e WHERE e.tenant_id = v_tenant AND e.id = p_endpoint FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhooks.rotate_secret: no endpoint %', p_endpoint
            USING ERRCODE = 'PS404', DETAIL = format('endpoint=%s', p_endpoint);
    END IF;
    UPDATE webhooks.secrets s SET expires_at = now() + p_grace
     WHERE s.tenant_id = v_tenant AND s.endpoint_id = p_endpoint AND s.expires_at IS NULL;
    INSERT INTO webhooks.secrets (tenant_id, endpoint_id, key)
    VALUES (v_tenant, p_endpoint, coalesce(p_key, webhooks.random_key()))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Replays one message: its finished deliveries (to enabled endpoints) get one more attempt,
-- now, marked manual (no automatic retry after it). With p_endpoint, only that endpoint's, and
-- a delivery is created when the message never went to it (an endpoint added later). Returns
-- how many deliveries were queued.
CREATE FUNCTION webhooks.replay(p_message uuid, p_endpoint uuid DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_enabled boolean;
    v_count integer;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'webhooks.replay: no tenant in context' USING ERRCODE = '42501';
    END IF;
    PERFORM 1 FROM webhooks.messages m WHERE m.tenant_id = v_tenant AND m.id = p_message;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhooks.replay: no message %', p_message
            USING ERRCODE = 'PS404', DETAIL = format('message=%s', p_message);
    END IF;
    IF p_endpoint IS NOT NULL THEN
        SELECT e.enabled INTO v_enabled FROM webhooks.endpoints e WHERE e.tenant_id = v_tenant AND e.id = p_endpoint;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'webhooks.replay: no endpoint %', p_endpoint
                USING ERRCODE = 'PS404', DETAIL = format('endpoint=%s', p_endpoint);
        ELSIF NOT v_enabled THEN
            RAISE EXCEPTION 'webhooks.replay: endpoint % is disabled', p_endpoint
                USING ERRCODE = 'PS410', DETAIL = 'status=disabled', HINT = 'enable the endpoint first';
        END IF;
        INSERT INTO webhooks.deliveries (tenant_id, message_id, endpoint_id, manual)
        VALUES (v_tenant, p_message, p_endpoint, true)
        ON CONFLICT ON CONSTRAINT deliveries_message_endpoint DO NOTHING;
        IF FOUND THEN
            PERFORM pg_notify('pgstrata_webhooks', '');
            RETURN 1;
        END IF;
    END IF;
    UPDATE webhooks.deliveries d
       SET state = 'pending', manual = true, next_attempt_at = now(), finished_at = NULL
      FROM webhooks.endpoints e
     WHERE d.tenant_id = v_tenant AND d.message_id = p_message
       AND (p_endpoint IS NULL OR d.endpoint_id = p_endpoint)
       AND d.state IN ('succeeded', 'failed')
       AND e.tenant_id = d.tenant_id AND e.id = d.endpoint_id AND e.enabled;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pg_notify('pgstrata_webhooks', '');
    END IF;
    RETURN v_count;
END
$$;

-- Replays every failed delivery of messages sent since p_since (to enabled endpoints; with
-- p_endpoint, to that one only): one manual attempt each. The recovery after an outage or a
-- disabled endpoint. Returns how many deliveries were queued.
CREATE FUNCTION webhooks.replay_failed(p_since timestamptz, p_endpoint uuid DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_count integer;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'webhooks.replay_failed: no tenant in context' USING ERRCODE = '42501';
    END IF;
    IF p_since IS NULL THEN
        RAISE EXCEPTION 'webhooks.replay_failed: since is NULL' USING ERRCODE = '22023', DETAIL = 'field=since';
    END IF;
    UPDATE webhooks.deliveries d
       SET state = 'pending', manual = true, next_attempt_at = now(), finished_at = NULL
      FROM webhooks.endpoints e
     WHERE d.tenant_id = v_tenant AND d.state = 'failed' AND d.created_at >= p_since
       AND (p_endpoint IS NULL OR d.endpoint_id = p_endpoint)
       AND e.tenant_id = d.tenant_id AND e.id = d.endpoint_id AND e.enabled;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pg_notify('pgstrata_webhooks', '');
    END IF;
    RETURN v_count;
END
$$;

-- Erases every message of the tenant in context, with its deliveries and attempts (the
-- tenant's erasure request). Endpoints and their secrets stay. Returns how many messages.
CREATE FUNCTION webhooks.erase() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_count bigint;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'webhooks.erase: no tenant in context' USING ERRCODE = '42501';
    END IF;
    DELETE FROM webhooks.messages m WHERE m.tenant_id = v_tenant;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- The dispatcher's functions (pgstrata_worker, across tenants)
-- ---------------------------------------------------------------------------------------------

-- Claims up to p_limit due deliveries for p_worker under a lease, writes each one's attempt
-- row (state running) in the same transaction, and returns what the worker needs to post it:
-- the endpoint's URL and headers, the message, and the live keys (current first).
--
-- First, deliveries whose lease expired (their worker died or hung) are rescued: the attempt
-- is marked lost and the delivery is due again at once (or failed, if it was the last one).
--
-- Fairness: due endpoints are visited from a random point of their ids; each tenant gets an
-- equal share of p_limit, split between its due endpoints. An endpoint is locked while it is
-- claimed (SKIP LOCKED: two claims never visit the same endpoint at once), then takes at most
-- its share, what its max_in_flight leaves (one at a time for FIFO, and only its oldest open
-- delivery) and what its rate_limit leaves for the current second.
CREATE FUNCTION webhooks.claim(p_limit integer, p_worker text, p_lease interval DEFAULT interval '1 minute')
RETURNS TABLE (
    tenant_id    uuid,
    delivery_id  bigint,
    attempt      integer,
    attempt_id   bigint,
    message_id   uuid,
    event_type   text,
    payload      bytea,
    endpoint_id  uuid,
    url          text,
    headers      jsonb,
    keys         bytea[],
    trigger      text
)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_schedule integer[];
    v_left integer := p_limit;
    v_pivot uuid := gen_random_uuid();
    v_ep record;
    v_running bigint;
    v_recent bigint;
    v_take bigint;
    v_head bigint;
    v_keys bytea[];
    v_n integer;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
        RAISE EXCEPTION 'webhooks.claim: limit % is out of range', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', DETAIL = 'field=limit', HINT = 'claim 1 to 1000 deliveries at a time';
    END IF;
    IF p_lease IS NULL OR p_lease < interval '1 second' OR p_lease > interval '1 hour' THEN
        RAISE EXCEPTION 'webhooks.claim: lease % is out of range', coalesce(p_lease::text, 'NULL')
            USING ERRCODE = '22023', DETAIL = 'field=lease', HINT = 'a lease is 1 second to 1 hour, longer than the attempt timeout';
    END IF;
    IF p_worker IS NULL OR length(p_worker) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'webhooks.claim: worker name must have 1 to 200 characters'
            USING ERRCODE = '22023', DETAIL = 'field=worker';
    END IF;
    SELECT s.retry_schedule INTO v_schedule FROM webhooks.settings s;

    -- Rescue: the lost attempt keeps its number; the retry is due now.
    WITH expired AS (
        SELECT d.tenant_id, d.id FROM webhooks.deliveries d
         WHERE d.state = 'running' AND d.lease_expires_at < now()
         ORDER BY d.lease_expires_at
         LIMIT 1000
           FOR UPDATE SKIP LOCKED
    ),
    rescued AS (
        UPDATE webhooks.deliveries d
           SET state = CASE WHEN d.manual OR d.attempts > cardinality(v_schedule) THEN 'failed' ELSE 'pending' END,
               finished_at = CASE WHEN d.manual OR d.attempts > cardinality(v_schedule) THEN now() END,
               next_attempt_at = now(), lease_expires_at = NULL, worker = NULL
          FROM expired x
         WHERE d.tenant_id = x.tenant_id AND d.id = x.id
        RETURNING d.tenant_id, d.id, d.attempts
    )
    UPDATE webhooks.attempts a
       SET state = 'lost', finished_at = now(),
           error = 'the worker''s lease expired before it reported an outcome; the receiver may have received this attempt'
      FROM rescued r
     WHERE a.tenant_id = r.tenant_id AND a.delivery_id = r.id AND a.attempt = r.attempts AND a.state = 'running';

    FOR v_ep IN
        WITH due AS (
            SELECT e.tenant_id, e.id, e.url, e.headers, e.rate_limit, e.max_in_flight, e.fifo
              FROM webhooks.endpoints e
             WHERE e.enabled
               AND EXISTS (SELECT 1 FROM webhooks.deliveries d
                            WHERE d.tenant_id = e.tenant_id AND d.endpoint_id = e.id
                              AND d.state = 'pending' AND d.next_attempt_at <= now())
             ORDER BY e.id < v_pivot, e.id
             LIMIT p_limit
        )
        SELECT due.*,
               ceil(p_limit::numeric / (SELECT count(DISTINCT d2.tenant_id) FROM due d2)
                    / count(*) OVER (PARTITION BY due.tenant_id)) AS share
          FROM due
    LOOP
        PERFORM 1 FROM webhooks.endpoints e
         WHERE e.tenant_id = v_ep.tenant_id AND e.id = v_ep.id AND e.enabled
           FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT count(*) INTO v_running FROM webhooks.deliveries d
         WHERE d.tenant_id = v_ep.tenant_id AND d.endpoint_id = v_ep.id AND d.state = 'running';
        v_take := least(v_ep.share, v_left, CASE WHEN v_ep.fifo THEN 1 ELSE v_ep.max_in_flight END - v_running);
        IF v_ep.rate_limit IS NOT NULL AND v_take > 0 THEN
            -- Attempts started in the last second, among the latest rate_limit ones (ids grow
            -- with time), so the count reads at most rate_limit index entries.
            SELECT count(*) INTO v_recent FROM (
                SELECT a.started_at FROM webhooks.attempts a
                 WHERE a.tenant_id = v_ep.tenant_id AND a.endpoint_id = v_ep.id
                 ORDER BY a.id DESC LIMIT v_ep.rate_limit) latest
             WHERE latest.started_at > now() - interval '1 second';
            v_take := least(v_take, v_ep.rate_limit - v_recent);
        END IF;
        CONTINUE WHEN v_take <= 0;
        v_head := NULL;
        IF v_ep.fifo THEN
            -- Only the oldest open delivery may go, and only when it is due.
            SELECT d.id INTO v_head FROM webhooks.deliveries d
             WHERE d.tenant_id = v_ep.tenant_id AND d.endpoint_id = v_ep.id AND d.state IN ('pending', 'running')
             ORDER BY d.id LIMIT 1;
        END IF;
        SELECT array_agg(s.key ORDER BY s.expires_at IS NOT NULL, s.created_at DESC) INTO v_keys
          FROM webhooks.secrets s
         WHERE s.tenant_id = v_ep.tenant_id AND s.endpoint_id = v_ep.id
           AND (s.expires_at IS NULL OR s.expires_at > now());
        RETURN QUERY
            WITH picked AS (
                SELECT d.id FROM webhooks.deliveries d
                 WHERE d.tenant_id = v_ep.tenant_id AND d.endpoint_id = v_ep.id
                   AND d.state = 'pending' AND d.next_attempt_at <= now()
                   AND (v_head IS NULL OR d.id = v_head)
                 ORDER BY d.next_attempt_at, d.id
                 LIMIT v_take
                   FOR UPDATE SKIP LOCKED
            ),
            claimed AS (
                UPDATE webhooks.deliveries d
                   SET state = 'running', attempts = d.attempts + 1, lease_expires_at = now() + p_lease,
                       worker = p_worker
                  FROM picked
                 WHERE d.tenant_id = v_ep.tenant_id AND d.id = picked.id
                RETURNING d.tenant_id, d.id, d.message_id, d.endpoint_id, d.attempts, d.manual
            ),
            logged AS (
                INSERT INTO webhooks.attempts AS a (tenant_id, delivery_id, message_id, endpoint_id, attempt, trigger, url, worker)
                SELECT c.tenant_id, c.id, c.message_id, c.endpoint_id, c.attempts,
                       CASE WHEN c.manual THEN 'manual' ELSE 'scheduled' END, v_ep.url, p_worker
                  FROM claimed c
                RETURNING a.id, a.delivery_id, a.trigger
            )
            SELECT c.tenant_id, c.id, c.attempts, l.id, c.message_id, m.event_type, m.payload,
                   c.endpoint_id, v_ep.url, v_ep.headers, coalesce(v_keys, '{}'), l.trigger
              FROM claimed c
              JOIN logged l ON l.delivery_id = c.id
              JOIN webhooks.messages m ON m.tenant_id = c.tenant_id AND m.id = c.message_id;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_left := v_left - v_n;
        EXIT WHEN v_left <= 0;
    END LOOP;
END
$$;

-- Reports the outcome of attempt p_attempt of a delivery, if the delivery is still in that
-- attempt (else NULL: the lease expired and the attempt was rescued, or the message was
-- erased). Returns the delivery's new state: succeeded, pending (a retry is scheduled) or
-- failed; 'disabled' when this attempt disabled the endpoint.
--
-- A 2xx status is success; anything else, or no status (p_error says why: timeout, refused
-- address, connection), is a failure. A failure starts or continues the endpoint's failure
-- run; 410 disables the endpoint at once, and so does any failure once the run is
-- disable_after_s old (D-152). The next attempt waits retry_schedule[n] seconds with jitter, at
-- least p_retry_after_s (the receiver's Retry-After, capped at max_retry_after_s), and at
-- least throttle_delay_s after 429 or 503 without one. A manual attempt, the last one of the
-- schedule, or one to an endpoint now disabled ends the delivery as failed.
CREATE FUNCTION webhooks.complete(
    p_tenant uuid,
    p_delivery bigint,
    p_attempt integer,
    p_status_code integer,
    p_response_body text,
    p_duration_ms integer,
    p_error text,
    p_retry_after_s integer DEFAULT NULL
) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_delivery record;
    v_settings webhooks.settings;
    v_first timestamptz;
    v_enabled boolean;
    v_disable text;
    v_delay double precision;
    v_body text := p_response_body;
BEGIN
    SELECT d.endpoint_id, d.attempts, d.manual INTO v_delivery
      FROM webhooks.deliveries d
     WHERE d.tenant_id = p_tenant AND d.id = p_delivery AND d.state = 'running' AND d.attempts = p_attempt
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_settings FROM webhooks.settings;
    -- The dispatcher cuts the body at 20 kB on a character boundary; this is the fallback.
    IF octet_length(v_body) > 20480 THEN
        v_body := left(v_body, 5120);
    END IF;
    UPDATE webhooks.attempts a
       SET state = CASE WHEN p_status_code BETWEEN 200 AND 299 THEN 'succeeded' ELSE 'failed' END,
           finished_at = now(), status_code = p_status_code, response_body = v_body,
           duration_ms = greatest(p_duration_ms, 0), error = left(p_error, 2000)
     WHERE a.tenant_id = p_tenant AND a.delivery_id = p_delivery AND a.attempt = p_attempt AND a.state = 'running';

    IF p_status_code BETWEEN 200 AND 299 THEN
        UPDATE webhooks.deliveries d
           SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL
         WHERE d.tenant_id = p_tenant AND d.id = p_delivery;
        -- Written only when a failure run ends, not at every success.
        UPDATE webhooks.endpoints e SET first_failure_at = NULL
         WHERE e.tenant_id = p_tenant AND e.id = v_delivery.endpoint_id AND e.first_failure_at IS NOT NULL;
        RETURN 'succeeded';
    END IF;

    SELECT e.first_failure_at, e.enabled INTO v_first, v_enabled
      FROM webhooks.endpoints e WHERE e.tenant_id = p_tenant AND e.id = v_delivery.endpoint_id;
    IF v_first IS NULL THEN
        v_first := now();
        UPDATE webhooks.endpoints e SET first_failure_at = v_first
         WHERE e.tenant_id = p_tenant AND e.id = v_delivery.endpoint_id;
    END IF;
    IF p_status_code = 410 THEN
        v_disable := 'the endpoint answered 410 Gone';
    ELSIF v_first <= now() - make_interval(secs => v_settings.disable_after_s) THEN
        v_disable := format('every attempt failed from %s to %s (the limit is %s s without a success)',
                            v_first, now(), v_settings.disable_after_s);
    END IF;
    IF v_disable IS NOT NULL AND v_enabled THEN
        UPDATE webhooks.endpoints e SET enabled = false, disabled_reason = v_disable, disabled_at = now()
         WHERE e.tenant_id = p_tenant AND e.id = v_delivery.endpoint_id;
        INSERT INTO webhooks.notices (tenant_id, kind, endpoint_id, reason)
        VALUES (p_tenant, 'endpoint_disabled', v_delivery.endpoint_id, v_disable);
        PERFORM pg_notify('pgstrata_webhooks_notices',
                          json_build_object('kind', 'endpoint_disabled', 'tenant_id', p_tenant,
                                            'endpoint_id', v_delivery.endpoint_id, 'reason', v_disable)::text);
    END IF;
    IF v_disable IS NOT NULL OR NOT v_enabled OR v_delivery.manual
       OR v_delivery.attempts > cardinality(v_settings.retry_schedule) THEN
        UPDATE webhooks.deliveries d
           SET state = 'failed', finished_at = now(), lease_expires_at = NULL
         WHERE d.tenant_id = p_tenant AND d.id = p_delivery;
        RETURN CASE WHEN v_disable IS NOT NULL AND v_enabled THEN 'disabled' ELSE 'failed' END;
    END IF;
    v_delay := v_settings.retry_schedule[v_delivery.attempts]
               * (1 - v_settings.jitter + 2 * v_settings.jitter * random());
    IF p_retry_after_s IS NOT NULL THEN
        v_delay := greatest(v_delay, least(greatest(p_retry_after_s, 0), v_settings.max_retry_after_s));
    ELSIF p_status_code IN (429, 503) THEN
        v_delay := greatest(v_delay, v_settings.throttle_delay_s);
    END IF;
    UPDATE webhooks.deliveries d
       SET state = 'pending', next_attempt_at = now() + make_interval(secs => v_delay),
           lease_expires_at = NULL, worker = NULL
     WHERE d.tenant_id = p_tenant AND d.id = p_delivery;
    RETURN 'pending';
END
$$;

-- Deletes up to p_limit messages past their retention (with their deliveries and attempts)
-- and notices as old; returns how many messages. Rows another pruner holds are skipped, so
-- pruners on several instances never wait on each other.
CREATE FUNCTION webhooks.prune(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_count integer;
    v_days integer;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
        RAISE EXCEPTION 'webhooks.prune: limit % is out of range', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', DETAIL = 'field=limit', HINT = 'prune 1 to 100000 messages at a time';
    END IF;
    WITH old AS (
        SELECT m.tenant_id, m.id FROM webhooks.messages m
         WHERE m.expires_at < now()
         ORDER BY m.expires_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    )
    DELETE FROM webhooks.messages m USING old WHERE m.tenant_id = old.tenant_id AND m.id = old.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    SELECT s.retention_days INTO v_days FROM webhooks.settings s;
    DELETE FROM webhooks.notices n WHERE n.created_at < now() - make_interval(days => v_days);
    RETURN v_count;
END
$$;

-- Functions run only by the roles named here.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA webhooks FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks.event_type_valid(text), webhooks.patterns_valid(text[]),
                          webhooks.patterns_regex(text[]), webhooks.headers_valid(jsonb), webhooks.random_key()
    TO pgstrata_app, pgstrata_worker, pgstrata_operator;
GRANT EXECUTE ON FUNCTION webhooks.send(text, bytea, text), webhooks.rotate_secret(uuid, interval, bytea),
                          webhooks.replay(uuid, uuid), webhooks.replay_failed(timestamptz, uuid), webhooks.erase()
    TO pgstrata_app;
GRANT EXECUTE ON FUNCTION webhooks.claim(integer, text, interval),
                          webhooks.complete(uuid, bigint, integer, integer, text, integer, text, integer),
                          webhooks.prune(integer)
    TO pgstrata_worker;
