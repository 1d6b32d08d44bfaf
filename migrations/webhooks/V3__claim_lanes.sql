-- webhooks V3: one endpoint's claims run in parallel, in lanes (D-237).
--
-- In V2 a claim locked the endpoint's row and held it until its commit was flushed, so one busy
-- endpoint got one claim per WAL flush and most dispatchers waited on its row (D-212). Now an
-- endpoint's cap (max_in_flight) is split into lanes: webhooks.lanes holds a row per endpoint
-- and lane (8, made with the endpoint), a claim locks one lane at a time (SKIP LOCKED), and
-- takes at most that lane's share of the cap minus the deliveries running in it. Each
-- delivery records the lane that claimed it (deliveries.lane), so a lane's count is exact under
-- its lock and the lanes' shares add up to max_in_flight: the cap holds across lanes.
-- - webhooks.lane_count: how many lanes an endpoint's claims use. One for a FIFO or rate-limited
--   endpoint (their rules read the endpoint as a whole, so those stay exact as in V2), else one
--   per 8 of max_in_flight, 1 to 8 (the default cap of 8 is one lane, as before).
-- - A lane's running count is of the deliveries whose lane, modulo the lanes in use, is that
--   lane: after max_in_flight is lowered, the deliveries still running in lanes no longer used
--   count against the lanes that are.
-- - The claim no longer locks the endpoint's row, so it no longer waits for (nor delays) a
--   complete that writes the endpoint's failure run.

CREATE TABLE webhooks.lanes (
    tenant_id    uuid     NOT NULL,
    endpoint_id  uuid     NOT NULL,
    lane         smallint NOT NULL,
    CONSTRAINT lanes_pkey PRIMARY KEY (tenant_id, endpoint_id, lane),
    CONSTRAINT lanes_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhooks.endpoints (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT lanes_lane_range CHECK (lane BETWEEN 0 AND 7)
);
COMMENT ON TABLE webhooks.lanes IS
    'citus: distributed. The rows a claim locks (SKIP LOCKED) to take from an endpoint: 8 per endpoint, of which webhooks.lane_count says how many are used';
-- The endpoints there are get their lanes. An owner that is not a superuser is bound by the
-- endpoints' forced RLS (and would read none of them without a tenant in context), so the
-- force is lifted around the copy and restored in the same transaction (the migration's).
ALTER TABLE webhooks.endpoints NO FORCE ROW LEVEL SECURITY;
INSERT INTO webhooks.lanes (tenant_id, endpoint_id, lane)
SELECT e.tenant_id, e.id, g.lane FROM webhooks.endpoints e, generate_series(0, 7) AS g(lane);
ALTER TABLE webhooks.endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE webhooks.lanes ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.lanes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks.lanes
    USING (tenant_id = (SELECT tenancy.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()));
CREATE POLICY worker_dispatch ON webhooks.lanes TO pgstrata_worker USING (true) WITH CHECK (true);
-- The application's insert is the endpoint trigger's (its lanes come with it); it cannot lock,
-- change or remove a lane (no UPDATE or DELETE), so it cannot hold back the dispatcher.
GRANT SELECT, INSERT (tenant_id, endpoint_id, lane) ON webhooks.lanes TO pgstrata_app;
-- The worker locks lanes (FOR NO KEY UPDATE needs an UPDATE privilege); it never updates one.
GRANT SELECT, UPDATE (lane) ON webhooks.lanes TO pgstrata_worker;

-- The lane that claimed the delivery (its last claim); 0 until then.
ALTER TABLE webhooks.deliveries ADD COLUMN lane smallint NOT NULL DEFAULT 0;
ALTER TABLE webhooks.deliveries ADD CONSTRAINT deliveries_lane_range CHECK (lane BETWEEN 0 AND 7);
GRANT UPDATE (lane) ON webhooks.deliveries TO pgstrata_worker;
-- A lane's running count, index only.
DROP INDEX webhooks.deliveries_running_idx;
CREATE INDEX deliveries_running_idx ON webhooks.deliveries (tenant_id, endpoint_id, lane) WHERE state = 'running';

-- How many lanes an endpoint's claims use (1 to 8).
CREATE FUNCTION webhooks.lane_count(p_max_in_flight integer, p_fifo boolean, p_rate_limit integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE WHEN p_fifo OR p_rate_limit IS NOT NULL THEN 1
                ELSE least(8, greatest(1, coalesce(p_max_in_flight, 1) / 8)) END;
REVOKE EXECUTE ON FUNCTION webhooks.lane_count(integer, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks.lane_count(integer, boolean, integer) TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- A new endpoint gets its first key, so it can sign from the start, and its lanes.
CREATE OR REPLACE FUNCTION webhooks.after_endpoint_insert() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO webhooks.secrets (tenant_id, endpoint_id) VALUES (NEW.tenant_id, NEW.id);
    INSERT INTO webhooks.lanes (tenant_id, endpoint_id, lane)
    SELECT NEW.tenant_id, NEW.id, g.lane FROM generate_series(0, 7) AS g(lane);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION webhooks.claim(p_limit integer, p_worker text, p_lease interval DEFAULT interval '1 minute')
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
    v_want bigint;
    v_first integer;
    v_lane integer;
    v_cap integer;
    v_running bigint;
    v_recent bigint;
    v_take bigint;
    v_head bigint;
    v_keys bytea[];
    v_keys_read boolean;
    v_n integer;
    v_locked boolean := false;
    v_skip_tenant uuid;
    v_skip_id uuid;
    v_skip_lane integer;
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

    -- Pass 1 skips the lanes other claims hold. Pass 2 runs only when pass 1 claimed nothing and
    -- locked no lane, and some lane was skipped: it waits for the first one skipped (the other
    -- claim commits in a few milliseconds) rather than leave the dispatcher idle. A claim that
    -- waits holds no lane, so two claims never wait on each other.
    <<passes>>
    FOR v_pass IN 1..2 LOOP
    FOR v_ep IN
        WITH due AS (
            -- One probe of deliveries_due_idx per enabled endpoint (LIMIT 1 keeps the planner
            -- from turning it into a semi-join that reads every pending delivery).
            SELECT e.tenant_id, e.id, e.url, e.headers, e.rate_limit, e.max_in_flight, e.fifo,
                   webhooks.lane_count(e.max_in_flight, e.fifo, e.rate_limit) AS lanes
              FROM webhooks.endpoints e
             CROSS JOIN LATERAL (SELECT 1 FROM webhooks.deliveries d
                                  WHERE d.tenant_id = e.tenant_id AND d.endpoint_id = e.id
                                    AND d.state = 'pending' AND d.next_attempt_at <= now()
                                  LIMIT 1) AS has_due
             WHERE e.enabled AND (v_pass = 1 OR (e.tenant_id = v_skip_tenant AND e.id = v_skip_id))
             ORDER BY e.id < v_pivot, e.id
             LIMIT p_limit
        )
        SELECT due.*,
               ceil(p_limit::numeric / (SELECT count(DISTINCT d2.tenant_id) FROM due d2)
                    / count(*) OVER (PARTITION BY due.tenant_id))::bigint AS share
          FROM due
    LOOP
        v_want := least(v_ep.share, v_left);
        v_keys_read := false;
        -- The lanes from a random one, so that concurrent claims start apart.
        v_first := floor(random() * v_ep.lanes)::integer;
        FOR v_i IN 0..v_ep.lanes - 1 LOOP
            v_lane := (v_first + v_i) % v_ep.lanes;
            IF v_pass = 1 THEN
                PERFORM 1 FROM webhooks.lanes l JOIN webhooks.endpoints e ON e.tenant_id = l.tenant_id AND e.id = l.endpoint_id
                 WHERE l.tenant_id = v_ep.tenant_id AND l.endpoint_id = v_ep.id AND l.lane = v_lane AND e.enabled
                   FOR NO KEY UPDATE OF l SKIP LOCKED;
                IF NOT FOUND THEN
                    IF v_skip_id IS NULL THEN
                        v_skip_tenant := v_ep.tenant_id;
                        v_skip_id := v_ep.id;
                        v_skip_lane := v_lane;
                    END IF;
                    CONTINUE;
                END IF;
            ELSE
                CONTINUE WHEN v_lane <> v_skip_lane;
                PERFORM 1 FROM webhooks.lanes l JOIN webhooks.endpoints e ON e.tenant_id = l.tenant_id AND e.id = l.endpoint_id
                 WHERE l.tenant_id = v_ep.tenant_id AND l.endpoint_id = v_ep.id AND l.lane = v_lane AND e.enabled
                   FOR NO KEY UPDATE OF l;
                CONTINUE WHEN NOT FOUND;
            END IF;
            v_locked := true;
            -- The lane's share of the cap (the shares add up to max_in_flight; FIFO: one).
            v_cap := CASE WHEN v_ep.fifo THEN 1
                          ELSE v_ep.max_in_flight / v_ep.lanes
                               + CASE WHEN v_lane < v_ep.max_in_flight % v_ep.lanes THEN 1 ELSE 0 END END;
            SELECT count(*) INTO v_running FROM webhooks.deliveries d
             WHERE d.tenant_id = v_ep.tenant_id AND d.endpoint_id = v_ep.id AND d.state = 'running'
               AND d.lane % v_ep.lanes = v_lane;
            v_take := least(v_want, v_cap - v_running);
            IF v_ep.rate_limit IS NOT NULL AND v_take > 0 THEN
                -- Attempts started in the last second, among the latest rate_limit ones (ids grow
                -- with time), so the count reads at most rate_limit index entries. A rate-limited
                -- endpoint has one lane, so this count is exact under its lock.
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
                -- Only the oldest open delivery may go, and only when it is due (one lane).
                SELECT d.id INTO v_head FROM webhooks.deliveries d
                 WHERE d.tenant_id = v_ep.tenant_id AND d.endpoint_id = v_ep.id AND d.state IN ('pending', 'running')
                 ORDER BY d.id LIMIT 1;
            END IF;
            IF NOT v_keys_read THEN
                SELECT array_agg(s.key ORDER BY s.expires_at IS NOT NULL, s.created_at DESC) INTO v_keys
                  FROM webhooks.secrets s
                 WHERE s.tenant_id = v_ep.tenant_id AND s.endpoint_id = v_ep.id
                   AND (s.expires_at IS NULL OR s.expires_at > now());
                v_keys_read := true;
            END IF;
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
                           worker = p_worker, lane = v_lane
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
            v_want := v_want - v_n;
            EXIT passes WHEN v_left <= 0;
            -- Fewer due deliveries than the lane allowed: the endpoint has no more to give.
            EXIT WHEN v_want <= 0 OR v_n < v_take;
        END LOOP;
    END LOOP;
    EXIT WHEN v_locked OR v_skip_id IS NULL;
    END LOOP;
END
$$;
