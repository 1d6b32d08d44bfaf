-- billing V5: the ledger read page by page.
--
-- billing.ledger(status, limit) returned the newest events and nothing past them, so an
-- operator could not read further than one call's limit. It now also takes where the previous
-- page ended, the (received_at, id) of its last event, and orders by (received_at, id)
-- descending so that the position is one row comparison: each page costs the same however deep
-- it is, and events received meanwhile do not shift the pages already read. A call without a
-- position reads the first page, as before (ties on received_at now go to the greater id).

DROP FUNCTION billing.ledger(text, integer);

CREATE FUNCTION billing.ledger(
    p_status text DEFAULT NULL,
    p_limit integer DEFAULT 50,
    p_after_received_at timestamptz DEFAULT NULL,
    p_after_id text DEFAULT NULL
)
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
    IF (p_after_received_at IS NULL) <> (p_after_id IS NULL) THEN
        RAISE EXCEPTION 'billing.ledger: a page starts after both the received_at and the id of an event, or after neither'
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT e.id, e.type, e.status, e.object_type, e.object_id, e.customer_id, e.tenant_id, e.attempts, e.error,
           e.received_at, e.processed_at
      FROM billing.events e
     WHERE (p_status IS NULL OR e.status = p_status)
       AND (p_after_id IS NULL OR (e.received_at, e.id) < (p_after_received_at, p_after_id))
     ORDER BY e.received_at DESC, e.id DESC
     LIMIT p_limit;
END
$$;
COMMENT ON FUNCTION billing.ledger(text, integer, timestamptz, text) IS
    'The ledger''s events without payloads, newest first, a page after (received_at, id); for the sync role and operators';

REVOKE EXECUTE ON FUNCTION billing.ledger(text, integer, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.ledger(text, integer, timestamptz, text) TO pgstrata_billing_sync, pgstrata_operator;
