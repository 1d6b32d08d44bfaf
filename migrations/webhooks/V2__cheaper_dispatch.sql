-- webhooks V2: the dispatcher's path, cheaper per delivery (D-211).
--
-- - webhooks.claim finds the endpoints with a due delivery by one index probe per endpoint. In
--   V1 the planner turned that EXISTS into a semi-join that read every pending delivery on
--   every claim (about 30 ms at a backlog of 50,000, so a drain was quadratic in the backlog).
-- - A claim that finds every due endpoint locked by other claims, and so would return nothing,
--   waits for the first of them instead: with one busy endpoint, V1's dispatchers mostly got
--   nothing and went idle while one of them claimed.
-- - webhooks.complete_many reports a batch of outcomes in one transaction: the successes in
--   three set-based statements, the failures through webhooks.complete one by one (their
--   retry, Retry-After and auto-disable rules), in endpoint order. The dispatcher reports what
--   its finished requests have produced at once, so a busy dispatcher commits one transaction
--   per batch rather than one per delivery.

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

-- Reports a batch of outcomes, each as webhooks.complete would (the arrays are parallel: one
-- element per attempt). Returns each delivery's new state; a delivery that is no longer in the
-- reported attempt (its lease expired and it was rescued, or its message was erased) is
-- returned with a NULL state, or not at all when it reported a success.
CREATE FUNCTION webhooks.complete_many(
    p_tenants         uuid[],
    p_deliveries      bigint[],
    p_attempts        integer[],
    p_status_codes    integer[],
    p_response_bodies text[],
    p_durations_ms    integer[],
    p_errors          text[],
    p_retry_after_s   integer[]
) RETURNS TABLE (delivery_id bigint, state text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_n integer := coalesce(cardinality(p_deliveries), 0);
    v_failed record;
BEGIN
    IF v_n > 1000 THEN
        RAISE EXCEPTION 'webhooks.complete_many: % outcomes, more than 1000', v_n
            USING ERRCODE = '22023', DETAIL = 'field=deliveries', HINT = 'report at most 1000 outcomes at a time';
    END IF;
    IF coalesce(cardinality(p_tenants), 0) <> v_n OR coalesce(cardinality(p_attempts), 0) <> v_n
       OR coalesce(cardinality(p_status_codes), 0) <> v_n OR coalesce(cardinality(p_response_bodies), 0) <> v_n
       OR coalesce(cardinality(p_durations_ms), 0) <> v_n OR coalesce(cardinality(p_errors), 0) <> v_n
       OR coalesce(cardinality(p_retry_after_s), 0) <> v_n THEN
        RAISE EXCEPTION 'webhooks.complete_many: the arrays have different lengths'
            USING ERRCODE = '22023', DETAIL = 'field=deliveries', HINT = 'pass one element per outcome in every array';
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;

    -- Successes: the delivery, its attempt, and the endpoint's failure run when one was open.
    RETURN QUERY
        WITH input AS (
            SELECT u.tenant_id, u.id, u.attempt, u.status_code, u.body, u.duration_ms
              FROM unnest(p_tenants, p_deliveries, p_attempts, p_status_codes, p_response_bodies, p_durations_ms)
                   AS u(tenant_id, id, attempt, status_code, body, duration_ms)
             WHERE u.status_code BETWEEN 200 AND 299
        ),
        done AS (
            UPDATE webhooks.deliveries d
               SET state = 'succeeded', finished_at = now(), lease_expires_at = NULL
              FROM input i
             WHERE d.tenant_id = i.tenant_id AND d.id = i.id AND d.state = 'running' AND d.attempts = i.attempt
            RETURNING d.tenant_id, d.id, d.endpoint_id, d.attempts
        ),
        logged AS (
            UPDATE webhooks.attempts a
               SET state = 'succeeded', finished_at = now(), status_code = i.status_code,
                   -- The dispatcher cuts the body at 20 kB on a character boundary; this is the fallback.
                   response_body = CASE WHEN octet_length(i.body) > 20480 THEN left(i.body, 5120) ELSE i.body END,
                   duration_ms = greatest(i.duration_ms, 0)
              FROM done x JOIN input i ON i.tenant_id = x.tenant_id AND i.id = x.id
             WHERE a.tenant_id = x.tenant_id AND a.delivery_id = x.id AND a.attempt = x.attempts AND a.state = 'running'
            RETURNING a.id
        ),
        healed AS (
            UPDATE webhooks.endpoints e SET first_failure_at = NULL
              FROM (SELECT DISTINCT x.tenant_id, x.endpoint_id FROM done x) x
             WHERE e.tenant_id = x.tenant_id AND e.id = x.endpoint_id AND e.first_failure_at IS NOT NULL
            RETURNING e.id
        )
        SELECT x.id, 'succeeded'::text FROM done x;

    -- Failures: the rules of webhooks.complete, in endpoint order (two reporters that both
    -- write the same endpoints' failure runs lock them in the same order).
    FOR v_failed IN
        SELECT u.tenant_id, u.id, u.attempt, u.status_code, u.body, u.duration_ms, u.error, u.retry_after_s
          FROM unnest(p_tenants, p_deliveries, p_attempts, p_status_codes, p_response_bodies, p_durations_ms,
                      p_errors, p_retry_after_s)
               AS u(tenant_id, id, attempt, status_code, body, duration_ms, error, retry_after_s)
          LEFT JOIN webhooks.deliveries d ON d.tenant_id = u.tenant_id AND d.id = u.id
         WHERE u.status_code IS NULL OR u.status_code NOT BETWEEN 200 AND 299
         ORDER BY u.tenant_id, d.endpoint_id, u.id
    LOOP
        delivery_id := v_failed.id;
        state := webhooks.complete(v_failed.tenant_id, v_failed.id, v_failed.attempt, v_failed.status_code,
                                   v_failed.body, v_failed.duration_ms, v_failed.error, v_failed.retry_after_s);
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION webhooks.complete_many(uuid[], bigint[], integer[], integer[], text[], integer[], text[], integer[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks.complete_many(uuid[], bigint[], integer[], integer[], text[], integer[], text[], integer[])
    TO pgstrata_worker;
