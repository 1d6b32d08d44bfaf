-- Reverts webhooks V3: V2's claim (the endpoint's row is its one lock), no lanes.
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
    v_running bigint;
    v_recent bigint;
    v_take bigint;
    v_head bigint;
    v_keys bytea[];
    v_n integer;
    v_locked boolean := false;
    v_skip_tenant uuid;
    v_skip_id uuid;
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

    -- Pass 1 skips the endpoints another claim holds. Pass 2 runs only when pass 1 claimed
    -- nothing and locked no endpoint, and some endpoint was skipped: it waits for the first one
    -- skipped (the other claim commits in a few milliseconds) rather than leave the dispatcher
    -- idle while one busy endpoint serialises every claim. A claim that waits holds no endpoint
    -- lock, so two claims never wait on each other.
    <<passes>>
    FOR v_pass IN 1..2 LOOP
    FOR v_ep IN
        WITH due AS (
            -- One probe of deliveries_due_idx per enabled endpoint (LIMIT 1 keeps the planner
            -- from turning it into a semi-join that reads every pending delivery).
            SELECT e.tenant_id, e.id, e.url, e.headers, e.rate_limit, e.max_in_flight, e.fifo
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
        IF v_pass = 1 THEN
            PERFORM 1 FROM webhooks.endpoints e
             WHERE e.tenant_id = v_ep.tenant_id AND e.id = v_ep.id AND e.enabled
               FOR NO KEY UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                IF v_skip_id IS NULL THEN
                    v_skip_tenant := v_ep.tenant_id;
                    v_skip_id := v_ep.id;
                END IF;
                CONTINUE;
            END IF;
        ELSE
            PERFORM 1 FROM webhooks.endpoints e
             WHERE e.tenant_id = v_ep.tenant_id AND e.id = v_ep.id AND e.enabled
               FOR NO KEY UPDATE;
            CONTINUE WHEN NOT FOUND;
        END IF;
        v_locked := true;
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
        EXIT passes WHEN v_left <= 0;
    END LOOP;
    EXIT WHEN v_locked OR v_skip_id IS NULL;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION webhooks.after_endpoint_insert() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO webhooks.secrets (tenant_id, endpoint_id) VALUES (NEW.tenant_id, NEW.id);
    RETURN NULL;
END
$$;

DROP FUNCTION webhooks.lane_count(integer, boolean, integer);
DROP INDEX webhooks.deliveries_running_idx;
ALTER TABLE webhooks.deliveries DROP COLUMN lane;
CREATE INDEX deliveries_running_idx ON webhooks.deliveries (tenant_id, endpoint_id) WHERE state = 'running';
DROP TABLE webhooks.lanes;
