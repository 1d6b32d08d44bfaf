-- Demo data for the eventstore module: the first order of Acme's shop, placed, prepared and
-- handed to a courier, appended as the application appends (eventstore.append with the version
-- it read). Idempotent: a stream that already has events is left alone.
-- Load inside one transaction: psql -v ON_ERROR_STOP=1 --single-transaction -f seed.sql

SELECT set_config('app.tenant_id', '01900000-0000-7000-8000-00000000ac4e', true);
SELECT set_config('app.actor_id', '01900000-0000-7000-8000-00000000a11c', true);
-- The append runs once per row of `fresh`, which is empty when the stream already exists.
SELECT count(*) AS appended
  FROM (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM eventstore.streams s
                                    WHERE s.tenant_id = '01900000-0000-7000-8000-00000000ac4e'
                                      AND s.stream = 'order-01900000-0000-7000-8000-0000000e5001')) AS fresh,
       LATERAL eventstore.append(
           'order-01900000-0000-7000-8000-0000000e5001', 0,
           '[{"event_id": "01900000-0000-7000-8000-0000000e5101", "type": "OrderPlaced",
              "data": {"customer": "01900000-0000-7000-8000-00000000a11c", "items": [{"sku": "margherita", "qty": 2}]}},
             {"event_id": "01900000-0000-7000-8000-0000000e5102", "type": "ItemPrepared", "data": {"sku": "margherita"}},
             {"event_id": "01900000-0000-7000-8000-0000000e5103", "type": "CourierAssigned", "data": {"courier": "courier-7"}}]') AS a;
SELECT set_config('app.tenant_id', '', true), set_config('app.actor_id', '', true);
