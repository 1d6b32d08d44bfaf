-- Demo data for the outbox: two messages of the demo tenant's first order, and the sink the
-- quickstart's relay delivers to. Idempotent: loading it again adds nothing.
DO $$
BEGIN
    -- The demo tenant "acme" of tenancy's seed, when it was loaded.
    PERFORM set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', true);
    IF tenancy.current_tenant_id() IS NULL
       OR EXISTS (SELECT 1 FROM outbox.messages m WHERE m.tenant_id = tenancy.current_tenant_id()) THEN
        PERFORM set_config('app.tenant_id', '', true);
        RETURN;
    END IF;
    PERFORM outbox.publish('order', 'order-1', 'OrderPlaced', '{"items": 2, "total_cents": 2400}');
    PERFORM outbox.publish('order', 'order-1', 'OrderPaid', '{"total_cents": 2400}');
    PERFORM set_config('app.tenant_id', '', true);
END
$$;
SELECT outbox.register_sink('demo');
