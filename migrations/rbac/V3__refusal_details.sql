-- rbac V3: the three refusals of the escalation rule are told apart by their DETAIL.
--
-- rbac.authorize_change raised PS403 with the same DETAIL (`missing=<pattern>`) for three
-- different refusals, so a client could tell them apart only by reading the message text. Each
-- now has its own key, beside the `missing=` that clients may already read:
--   the actor does not hold the pattern it confers or denies    missing=<pattern>
--   it holds it, but for less time than it would confer it      outlives=<pattern>, missing=<pattern>
--   it does not hold what a deny it removes restricts           lift=<pattern>, missing=<pattern>
-- Nothing else changes: the same checks, in the same order, with the same messages.

CREATE OR REPLACE FUNCTION rbac.authorize_change(
    p_tenant uuid,
    p_confer text[],
    p_until timestamptz[],
    p_deny text[],
    p_lift text[]
) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_actor uuid := tenancy.current_actor_id();
    v_bad record;
BEGIN
    IF coalesce(cardinality(p_confer), 0) + coalesce(cardinality(p_deny), 0) + coalesce(cardinality(p_lift), 0) = 0 THEN
        RETURN;
    END IF;
    IF v_actor IS NULL THEN
        RAISE EXCEPTION 'changing authorization data needs an acting user: set app.actor_id in this transaction'
            USING ERRCODE = 'PS403';
    END IF;
    WITH s AS MATERIALIZED (
        SELECT r.permission, r.effect, r.resource_type, r.expires_at
          FROM rbac.resolve(p_tenant, 'user', v_actor, NULL, NULL, true, false) r
    ),
    wanted(kind, pattern, until) AS (
        SELECT 'confer', w.p, w.u FROM unnest(p_confer, p_until) w(p, u) WHERE w.p IS NOT NULL
        UNION ALL
        SELECT 'deny', d.p, NULL::timestamptz FROM unnest(p_deny) d(p) WHERE d.p IS NOT NULL
        UNION ALL
        SELECT 'lift', l.p, NULL::timestamptz FROM unnest(p_lift) l(p) WHERE l.p IS NOT NULL
    ),
    judged AS (
        SELECT w.kind, w.pattern, w.until,
               EXISTS (SELECT 1 FROM s WHERE s.effect = 'allow' AND s.resource_type IS NULL
                          AND rbac.covers(s.permission, w.pattern))
               AND NOT EXISTS (SELECT 1 FROM s WHERE s.effect = 'deny' AND rbac.overlaps(s.permission, w.pattern))
                   AS held,
               (SELECT max(coalesce(s.expires_at, 'infinity')) FROM s
                 WHERE s.effect = 'allow' AND s.resource_type IS NULL AND rbac.covers(s.permission, w.pattern))
                   AS held_until
          FROM wanted w
    )
    SELECT j.kind, j.pattern, j.until, j.held, j.held_until INTO v_bad
      FROM judged j
     WHERE NOT j.held OR (j.kind = 'confer' AND j.held_until < coalesce(j.until, 'infinity'))
     ORDER BY j.held, j.kind, j.pattern
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_bad.kind = 'lift' THEN
        RAISE EXCEPTION 'deny removal refused: user % does not hold %, so it cannot lift a deny on it', v_actor, v_bad.pattern
            USING ERRCODE = 'PS403', DETAIL = format('lift=%s, missing=%s', v_bad.pattern, v_bad.pattern);
    ELSIF v_bad.held THEN
        RAISE EXCEPTION 'escalation refused: user % holds % only until %, so it cannot grant it for longer', v_actor,
                v_bad.pattern, v_bad.held_until
            USING ERRCODE = 'PS403', DETAIL = format('outlives=%s, missing=%s', v_bad.pattern, v_bad.pattern);
    ELSE
        RAISE EXCEPTION 'escalation refused: user % does not hold %, so it cannot grant it', v_actor, v_bad.pattern
            USING ERRCODE = 'PS403', DETAIL = format('missing=%s', v_bad.pattern);
    END IF;
END
$$;
