-- billing V5 down: V4's ledger, the first page only.

DROP FUNCTION billing.ledger(text, integer, timestamptz, text);

CREATE FUNCTION billing.ledger(p_status text DEFAULT NULL, p_limit integer DEFAULT 50)
    RETURNS TABLE (id text, type text, status text, object_type text, object_id text, customer_id text,
                   tenant_id uuid, attempts integer, error text, received_at timestamptz, processed_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_status IS NOT NULL AND p_status NOT IN ('processed', 'ignored', 'deferred', 'failed', 'rejected') THEN
        RAISE EXCEPTION 'billing.ledger: status must be processed, ignored, deferred, failed or rejected, got %', p_status
            USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'billing.ledger: limit must be between 1 and 10000, got %', p_limit USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT e.id, e.type, e.status, e.object_type, e.object_id, e.customer_id, e.tenant_id, e.attempts, e.error,
           e.received_at, e.processed_at
      FROM billing.events e
     WHERE p_status IS NULL OR e.status = p_status
     ORDER BY e.received_at DESC, e.id
     LIMIT p_limit;
END
$$;

REVOKE EXECUTE ON FUNCTION billing.ledger(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.ledger(text, integer) TO pgstrata_billing_sync, pgstrata_operator;
